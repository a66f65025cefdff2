//! `skein bench` against a real broker (and a real ZooKeeper): produce, consume, e2e, rate,
//! compression (also read back by kcat), verification that catches a gap, report and plot files,
//! consumption through a consumer group (checked with `skein groups describe`) and OffsetCommit
//! throughput.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::{
    kcat, kcat_with_input, skein_cli, try_skein_cli, wait_until, Broker, BrokerOpts, ZooKeeper,
};
use serde_json::Value;

fn bench(broker: &Broker, args: &[&str]) -> std::process::Output {
    let bootstrap = broker.bootstrap();
    let mut all = vec!["bench", args[0], "--bootstrap", &bootstrap, "--quiet"];
    all.extend_from_slice(&args[1..]);
    skein_cli(&all)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{text}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("report key '{key}' is not an integer: {v}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("report key '{key}' is not a number: {v}"))
}

/// The keys the issue asks for, with sane values; percentiles ordered.
fn check_report(report: &Value, mode: &str, records: u64, record_size: u64) {
    assert_eq!(report["mode"], mode, "{report}");
    assert_eq!(u(report, "records"), records, "{report}");
    let bytes = u(report, "bytes");
    assert!(
        bytes >= records * record_size && bytes <= records * (record_size + 16),
        "bytes {bytes} for {records} x {record_size}"
    );
    assert!(f(report, "duration_s") > 0.0);
    assert!(f(report, "records_per_s") > 0.0);
    assert!(f(report, "mb_per_s") > 0.0);
    assert_eq!(u(report, "errors"), 0, "{report}");
    let l = &report["latency_us"];
    let chain = ["p50", "p90", "p99", "p999", "p9999", "max"].map(|k| u(l, k));
    assert!(chain[0] > 0, "p50 of 0 us is not a measurement: {l}");
    assert!(
        chain.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {l}"
    );
    assert!(report["config"]["topic"].is_string(), "{report}");
    assert!(report["config"]["record_size"].is_u64(), "{report}");
}

#[test]
fn produce_then_consume_verifies_and_writes_report_and_plot() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let dir = tempfile::tempdir().unwrap();
    let (report, plot) = (dir.path().join("p.json"), dir.path().join("p.svg"));

    let out = bench(
        &broker,
        &[
            "produce",
            "--topic",
            "bench-a",
            "--create-topic",
            "3:1",
            "--records",
            "60000",
            "--record-size",
            "100",
            "--report",
            report.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("p99.99"), "final table:\n{table}");
    let r = read_report(&report);
    check_report(&r, "produce", 60_000, 100);
    assert_eq!(r["config"]["acks"], 1);

    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("<polyline"), "no lines in the plot");
    assert!(svg.trim_end().ends_with("</svg>"));

    let consumed = dir.path().join("c.json");
    bench(
        &broker,
        &[
            "consume",
            "--topic",
            "bench-a",
            "--report",
            consumed.to_str().unwrap(),
        ],
    );
    let c = read_report(&consumed);
    check_report(&c, "consume", 60_000, 100);
    assert_eq!(u(&c["verification"], "bench_records"), 60_000, "{c}");
    assert_eq!(u(&c["verification"], "violations"), 0, "{c}");

    // A real client sees the same records.
    let b = broker.bootstrap();
    let out = kcat(&["-b", &b, "-t", "bench-a", "-C", "-e", "-q", "-f", "%o\n"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60_000);
}

#[test]
fn e2e_measures_delivery_and_rate_caps_the_load() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("e2e.json");
    bench(
        &broker,
        &[
            "e2e",
            "--topic",
            "bench-e2e",
            "--create-topic",
            "2:1",
            "--records",
            "20000",
            "--rate",
            "10000",
            "--key-space",
            "50",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = read_report(&report);
    check_report(&r, "e2e", 20_000, 100);
    assert_eq!(u(&r["produce"], "records"), 20_000, "{r}");
    assert_eq!(u(&r["verification"], "violations"), 0, "{r}");
    // 20k records at 10k/s take about 2 s; throughput stays under the cap (loose bounds).
    assert!(f(&r, "duration_s") >= 1.8, "{r}");
    assert!(f(&r, "records_per_s") <= 11_000.0, "{r}");
    assert!(r["timeline"].as_array().is_some_and(|t| !t.is_empty()));
}

#[test]
fn partitions_led_by_two_brokers_are_produced_and_consumed_through_each_leader() {
    let zk = ZooKeeper::start(1);
    let one = Broker::start(&zk, BrokerOpts::id(1).shards(1));
    let two = Broker::start(&zk, BrokerOpts::id(2).shards(1));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("two.json");
    // Bootstrap from the second broker first: leaders must come from metadata, not the list order.
    let brokers = [two, one];
    let bootstrap = harness::bootstrap_all(&brokers);
    skein_cli(&[
        "bench",
        "e2e",
        "--bootstrap",
        &bootstrap,
        "--quiet",
        "--topic",
        "bench-two",
        "--create-topic",
        "4:1",
        "--records",
        "40000",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--report",
        report.to_str().unwrap(),
    ]);
    let r = read_report(&report);
    check_report(&r, "e2e", 40_000, 100);
    assert_eq!(u(&r["verification"], "bench_records"), 40_000, "{r}");
}

#[test]
fn every_codec_produces_data_that_bench_and_kcat_read() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"] {
        let topic = format!("bench-{codec}");
        bench(
            &broker,
            &[
                "produce",
                "--topic",
                &topic,
                "--create-topic",
                "2:1",
                "--records",
                "5000",
                "--record-size",
                "200",
                "--key-space",
                "10",
                "--compression",
                codec,
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("c.json");
        bench(
            &broker,
            &[
                "consume",
                "--topic",
                &topic,
                "--records",
                "5000",
                "--report",
                report.to_str().unwrap(),
            ],
        );
        let r = read_report(&report);
        assert_eq!(u(&r, "records"), 5000, "{codec}: {r}");
        assert_eq!(u(&r, "errors"), 0, "{codec}: {r}");
        assert_eq!(u(&r["verification"], "bench_records"), 5000, "{codec}");

        let out = kcat(&[
            "-b", &b, "-t", &topic, "-C", "-e", "-q", "-c", "5000", "-f", "%k\n",
        ]);
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            keys.len(),
            5000,
            "{codec}: kcat read {} records",
            keys.len()
        );
        assert!(
            keys.iter()
                .all(|k| k.len() == 8 && k.parse::<u64>().is_ok_and(|k| k < 10)),
            "{codec}: keys outside the key space: {:?}",
            &keys[..5]
        );
    }
}

#[test]
fn consume_reports_sequence_gaps_and_exits_non_zero() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(1));
    let b = broker.bootstrap();
    bench(
        &broker,
        &[
            "produce",
            "--topic",
            "bench-v",
            "--create-topic",
            "1:1",
            "--records",
            "1000",
        ],
    );
    // Records without the bench header are read and counted, never flagged.
    kcat_with_input(&["-b", &b, "-t", "bench-v", "-P"], b"plain-1\nplain-2\n");
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.json");
    bench(
        &broker,
        &[
            "consume",
            "--topic",
            "bench-v",
            "--report",
            clean.to_str().unwrap(),
        ],
    );
    let r = read_report(&clean);
    assert_eq!(u(&r, "records"), 1002);
    assert_eq!(u(&r["verification"], "foreign_records"), 2, "{r}");

    // A second producer that skips sequence 10 (a test-only flag) leaves a gap to find.
    bench(
        &broker,
        &[
            "produce",
            "--topic",
            "bench-v",
            "--records",
            "500",
            "--debug-skip-sequence-at",
            "10",
        ],
    );
    let report = dir.path().join("gap.json");
    let out = try_skein_cli(&[
        "bench",
        "consume",
        "--bootstrap",
        &b,
        "--quiet",
        "--topic",
        "bench-v",
        "--report",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a gap must fail the run:\n{stdout}");
    assert!(
        stdout.contains("sequence gap"),
        "table names the gap:\n{stdout}"
    );
    let r = read_report(&report);
    assert_eq!(u(&r, "records"), 1502);
    assert_eq!(u(&r["verification"], "violations"), 1, "{r}");
    assert!(u(&r, "errors") >= 1);
    let messages = r["error_messages"].to_string();
    assert!(
        messages.contains("sequence gap, 1 record(s) 10..10 missing"),
        "{messages}"
    );
}

/// `skein groups describe --group G --json`: the group's part of it.
fn describe_group(bootstrap: &str, group: &str) -> Value {
    let out = skein_cli(&[
        "groups",
        "describe",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--json",
    ]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "describe printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    all["groups"][0].clone()
}

/// Every partition of `topic` in a describe report: (committed offset, log end offset, lag).
fn group_offsets(described: &Value, topic: &str) -> Vec<(i64, i64, i64)> {
    described["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("no offsets: {described}"))
        .iter()
        .filter(|row| row["topic"] == topic)
        .map(|row| {
            let n = |k: &str| {
                row[k]
                    .as_i64()
                    .unwrap_or_else(|| panic!("'{k}' is not a number: {row}"))
            };
            (n("current_offset"), n("log_end_offset"), n("lag"))
        })
        .collect()
}

#[test]
fn group_consume_reads_every_record_once_and_commits_it_all() {
    let zk = ZooKeeper::start(1);
    // A short initial delay (Kafka's is 3 s): members that start together join one generation
    // even on a loaded machine, where without it the first could read everything alone before
    // the others are in (a correct run, but one that never has a stable group of three).
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("group.initial.rebalance.delay.ms", "500"),
    );
    let b = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    bench(
        &broker,
        &[
            "produce",
            "--topic",
            "grouped",
            "--create-topic",
            "6:1",
            "--records",
            "60000",
        ],
    );

    // Three members join at once; the leader's range assignment gives each two partitions.
    let report = dir.path().join("group.json");
    bench(
        &broker,
        &[
            "consume",
            "--topic",
            "grouped",
            "--group",
            "readers",
            "--consumers",
            "3",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = read_report(&report);
    check_report(&r, "consume", 60_000, 100);
    assert_eq!(u(&r["verification"], "bench_records"), 60_000, "{r}");
    assert_eq!(u(&r["verification"], "violations"), 0, "{r}");
    let g = &r["group"];
    assert_eq!(u(g, "members"), 3, "{g}");
    let rebalance_ms = f(g, "rebalance_ms");
    assert!(rebalance_ms > 0.0 && rebalance_ms < 10_000.0, "{g}");
    assert!(u(g, "rebalances") >= 1, "{g}");
    assert!(
        u(g, "commits") >= 3,
        "every member commits when it stops: {g}"
    );
    let described = describe_group(&b, "readers");
    assert_eq!(
        described["state"], "Empty",
        "every member left: {described}"
    );
    assert_eq!(described["total_lag"], 0, "{described}");
    let offsets = group_offsets(&described, "grouped");
    assert_eq!(offsets.len(), 6, "{described}");
    assert!(
        offsets.iter().all(|&(c, e, lag)| c == e && lag == 0),
        "{offsets:?}"
    );
    assert_eq!(offsets.iter().map(|o| o.0).sum::<i64>(), 60_000);

    // Members trickling in (every 1.5 s, well after the initial delay) while records keep coming: partitions change hands
    // mid-stream, and each record is still read exactly once across the handovers.
    let producer = {
        let (b, report) = (b.clone(), dir.path().join("more.json"));
        std::thread::spawn(move || {
            skein_cli(&[
                "bench",
                "produce",
                "--bootstrap",
                &b,
                "--quiet",
                "--topic",
                "grouped",
                "--records",
                "80000",
                "--rate",
                "20000",
                "--report",
                report.to_str().unwrap(),
            ]);
            read_report(&report)
        })
    };
    let report = dir.path().join("trickle.json");
    bench(
        &broker,
        &[
            "consume",
            "--topic",
            "grouped",
            "--group",
            "trickle",
            "--consumers",
            "3",
            "--join-stagger-ms",
            "1500",
            "--heartbeat-ms",
            "100",
            "--commit-interval-ms",
            "200",
            "--records",
            "140000",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let produced = producer.join().expect("the producer thread");
    assert_eq!(u(&produced, "errors"), 0, "{produced}");
    let r = read_report(&report);
    check_report(&r, "consume", 140_000, 100);
    assert_eq!(u(&r["verification"], "violations"), 0, "{r}");
    let g = &r["group"];
    assert!(
        u(g, "rebalances") >= 2 && u(g, "joins") >= 4,
        "members joining one by one rebalance the group: {g}"
    );
    let described = describe_group(&b, "trickle");
    assert_eq!(described["total_lag"], 0, "{described}");
    assert_eq!(
        group_offsets(&described, "grouped")
            .iter()
            .map(|o| o.0)
            .sum::<i64>(),
        140_000
    );
}

#[test]
fn commit_measures_offset_commits_and_they_stick() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("group.initial.rebalance.delay.ms", "0"),
    );
    let b = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("commit.json");
    bench(
        &broker,
        &[
            "commit",
            "--topic",
            "positions",
            "--create-topic",
            "6:1",
            "--group",
            "committer",
            "--partitions-per-commit",
            "4",
            "--connections",
            "2",
            "--max-in-flight",
            "8",
            "--duration",
            "2",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = read_report(&report);
    assert_eq!(r["mode"], "commit", "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    let c = &r["commit"];
    let requests = u(c, "requests");
    assert!(requests > 0, "{c}");
    assert_eq!(u(c, "partition_commits"), requests * 4, "{c}");
    assert_eq!(u(&r, "records"), requests * 4, "{r}");
    assert!(f(c, "partition_commits_per_s") > 0.0, "{c}");
    let l = &r["latency_us"];
    assert!(u(l, "p50") > 0 && u(l, "p50") <= u(l, "p999"), "{l}");
    // The last commit set every partition to the number of requests answered.
    assert_eq!(c["final_offset"].as_u64(), Some(requests), "{c}");
    let described = describe_group(&b, "committer");
    let offsets = group_offsets(&described, "positions");
    assert_eq!(offsets.len(), 6, "{described}");
    assert!(
        offsets.iter().all(|o| o.0 == requests as i64),
        "{offsets:?}, expected {requests} everywhere"
    );

    // A group with members takes no commits from outside it: each is refused, counted, and
    // the run fails.
    let member = {
        let b = b.clone();
        std::thread::spawn(move || {
            try_skein_cli(&[
                "bench",
                "consume",
                "--bootstrap",
                &b,
                "--quiet",
                "--topic",
                "positions",
                "--group",
                "busy",
                "--duration",
                "8",
            ])
        })
    };
    wait_until("group 'busy' to be stable", Duration::from_secs(30), || {
        let out = try_skein_cli(&[
            "groups",
            "describe",
            "--bootstrap",
            &b,
            "--group",
            "busy",
            "--json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["groups"][0]["state"] == "Stable").then_some(())
    });
    let refused = dir.path().join("refused.json");
    let out = try_skein_cli(&[
        "bench",
        "commit",
        "--bootstrap",
        &b,
        "--quiet",
        "--topic",
        "positions",
        "--group",
        "busy",
        "--commits",
        "50",
        "--report",
        refused.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "refused commits must fail the run:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = read_report(&refused);
    assert!(u(&r, "errors") >= 50, "{r}");
    assert_eq!(u(&r, "records"), 0, "{r}");
    assert!(
        r["error_messages"]
            .to_string()
            .contains("UNKNOWN_MEMBER_ID"),
        "{r}"
    );
    let out = member.join().expect("the member thread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn help_describes_every_flag() {
    let out = skein_cli(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bootstrap",
        "--topic",
        "--records",
        "--duration",
        "--record-size",
        "--key-space",
        "--rate",
        "--acks",
        "--batch-bytes",
        "--linger-ms",
        "--compression",
        "--producers",
        "--consumers",
        "--cores",
        "--create-topic",
        "--quiet",
        "--report",
        "--plot",
        "--group",
        "--heartbeat-ms",
        "--session-timeout-ms",
        "--commit-interval-ms",
        "--join-stagger-ms",
        "--partitions-per-commit",
        "--connections",
        "--commits",
    ] {
        assert!(
            help.contains(flag),
            "`skein bench --help` lacks {flag}:\n{help}"
        );
    }
    assert!(
        !help.contains("debug-skip"),
        "the test-only flag stays hidden"
    );
}

/// librdkafka's mock cluster (inside confluent-kafka), killed by pid when the test ends.
struct MockCluster {
    child: std::process::Child,
    bootstrap: String,
}

impl MockCluster {
    fn start() -> MockCluster {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mock_cluster.py");
        let mut child = std::process::Command::new(harness::python_bin())
            .arg(script)
            .args(["--brokers", "1", "--seconds", "120"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the mock cluster");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let mock = MockCluster {
            child,
            bootstrap: line.trim().to_owned(),
        };
        assert!(
            read.is_ok() && mock.bootstrap.contains(':'),
            "mock cluster printed {line:?}"
        );
        mock
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bench_drives_another_kafka_compatible_broker() {
    // The mock has no CreateTopics; it creates topics on a producer's metadata request.
    let mock = MockCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("mock.json");
    skein_cli(&[
        "bench",
        "produce",
        "--bootstrap",
        &mock.bootstrap,
        "--topic",
        "on-mock",
        "--records",
        "20000",
        "--record-size",
        "100",
        "--acks",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    check_report(&read_report(&report), "produce", 20000, 100);
    skein_cli(&[
        "bench",
        "consume",
        "--bootstrap",
        &mock.bootstrap,
        "--topic",
        "on-mock",
        "--records",
        "20000",
        "--quiet",
    ]);
    skein_cli(&[
        "bench",
        "e2e",
        "--bootstrap",
        &mock.bootstrap,
        "--topic",
        "e2e-on-mock",
        "--records",
        "5000",
        "--record-size",
        "100",
        "--quiet",
    ]);
}

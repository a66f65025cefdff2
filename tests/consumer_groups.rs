//! Consumer groups with real clients in real processes: subscribe, rebalance, commit, resume.
//! Every consumer here is `tests/clients/group_consumer.py` (or kcat -G) against a real broker
//! registered in a real ZooKeeper.

mod harness;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use harness::{kcat, kcat_with_input, wait_until, BackgroundClient, Broker, BrokerOpts, ZooKeeper};

/// What one consumer reported: its assignments in order, records (partition, offset, value)
/// and last committed offset per partition.
#[derive(Debug, Default)]
struct Report {
    assignments: Vec<Vec<i64>>,
    records: Vec<(i64, i64, String)>,
    committed: BTreeMap<i64, i64>,
    done: bool,
}

fn report(client: &BackgroundClient) -> Report {
    let mut report = Report::default();
    for line in client.stdout().lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match event["ev"].as_str() {
            Some("assign") => report.assignments.push(
                event["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap())
                    .collect(),
            ),
            Some("rec") => report.records.push((
                event["p"].as_i64().unwrap(),
                event["o"].as_i64().unwrap(),
                event["v"].as_str().unwrap().to_owned(),
            )),
            Some("commit") => {
                for (p, o) in event["offsets"].as_object().unwrap() {
                    report
                        .committed
                        .insert(p.parse().unwrap(), o.as_i64().unwrap());
                }
            }
            Some("done") => report.done = true,
            _ => {}
        }
    }
    report
}

fn current_assignment(client: &BackgroundClient) -> Vec<i64> {
    report(client)
        .assignments
        .last()
        .cloned()
        .unwrap_or_default()
}

fn consumer(
    name: &str,
    broker: &Broker,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> BackgroundClient {
    let bootstrap = broker.bootstrap();
    let mut args = vec![
        "--bootstrap",
        &bootstrap,
        "--topic",
        topic,
        "--group",
        group,
    ];
    args.extend_from_slice(extra);
    BackgroundClient::python(name, "group_consumer.py", &args)
}

/// Produces `values` with kcat, keyed so they spread over the partitions.
fn produce(broker: &Broker, topic: &str, values: impl Iterator<Item = String>) {
    let input: String = values
        .enumerate()
        .map(|(i, v)| format!("k{i}:{v}\n"))
        .collect();
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", topic, "-P", "-K:"],
        input.as_bytes(),
    );
}

/// [`wait_until`] that shows what every consumer did when it times out.
fn wait_for(
    what: &str,
    timeout: Duration,
    clients: &[&BackgroundClient],
    mut check: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n{}",
        describe(clients)
    );
}

fn describe(clients: &[&BackgroundClient]) -> String {
    clients
        .iter()
        .map(|c| format!("{:?}\n{}", report(c).assignments, c.stderr_tail()))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn three_consumers_split_six_partitions_and_survivors_take_over_a_killed_ones() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("group.initial.rebalance.delay.ms", "0"),
    );
    broker.create_topic("six", 6, &[]);
    let mut consumers: Vec<BackgroundClient> = (0..3)
        .map(|i| consumer(&format!("c{i}"), &broker, "six", "trio", &[]))
        .collect();
    wait_for(
        "three consumers with two partitions each",
        Duration::from_secs(60),
        &consumers.iter().collect::<Vec<_>>(),
        || {
            let assignments: Vec<Vec<i64>> = consumers.iter().map(current_assignment).collect();
            let all: BTreeSet<i64> = assignments.iter().flatten().copied().collect();
            assignments.iter().all(|a| a.len() == 2) && all.len() == 6
        },
    );
    produce(&broker, "six", (0..600).map(|i| format!("first-{i}")));
    let consumed = |consumers: &[BackgroundClient]| -> BTreeSet<String> {
        consumers
            .iter()
            .flat_map(|c| report(c).records.into_iter().map(|r| r.2))
            .collect()
    };
    wait_until("the first 600 consumed", Duration::from_secs(60), || {
        (consumed(&consumers).len() == 600).then_some(())
    });

    let mut killed = consumers.remove(2);
    killed.kill();
    let killed_report = report(&killed);
    let killed_partitions = killed_report.assignments.last().cloned().unwrap();
    produce(&broker, "six", (0..600).map(|i| format!("second-{i}")));
    wait_until(
        "the survivors to own all six partitions and consume everything",
        Duration::from_secs(60),
        || {
            let owned: BTreeSet<i64> = consumers.iter().flat_map(current_assignment).collect();
            let all = consumed(&consumers)
                .union(&killed_report.records.iter().map(|r| r.2.clone()).collect())
                .count();
            (owned.len() == 6 && all == 1200).then_some(())
        },
    );
    for c in &mut consumers {
        c.stop();
    }
    let survivors: Vec<Report> = consumers.iter().map(report).collect();
    assert!(
        survivors.iter().all(|r| r.done),
        "{}",
        describe(&[&consumers[0], &consumers[1]])
    );

    // Every record at least once; a record read twice only from the killed consumer's
    // partitions at or past what it had committed.
    let mut reads: HashMap<String, Vec<(i64, i64, &str)>> = HashMap::new();
    for (who, r) in survivors
        .iter()
        .map(|r| ("survivor", r))
        .chain([("killed", &killed_report)])
    {
        for (p, o, v) in &r.records {
            reads.entry(v.clone()).or_default().push((*p, *o, who));
        }
    }
    assert_eq!(reads.len(), 1200, "every produced record was consumed");
    for (value, seen) in &reads {
        if seen.len() == 1 {
            continue;
        }
        let (p, o, _) = seen[0];
        assert!(
            killed_partitions.contains(&p),
            "{value} read twice ({seen:?}) on partition {p}, not one of the killed consumer's"
        );
        let committed = killed_report.committed.get(&p).copied().unwrap_or(0);
        assert!(
            o >= committed,
            "{value} at offset {o} read again though the killed consumer had committed {committed}"
        );
    }
}

#[test]
fn kafka_python_and_aiokafka_share_a_group_and_read_a_topic_exactly_once() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    broker.create_topic("mixed", 4, &[]);
    let mut consumers = [
        consumer(
            "kp",
            &broker,
            "mixed",
            "mixed-group",
            &["--client", "kafka-python"],
        ),
        consumer(
            "aio",
            &broker,
            "mixed",
            "mixed-group",
            &["--client", "aiokafka"],
        ),
    ];
    wait_until(
        "both clients with two partitions each",
        Duration::from_secs(60),
        || {
            let a: Vec<Vec<i64>> = consumers.iter().map(current_assignment).collect();
            (a.iter().all(|a| a.len() == 2)).then_some(())
        },
    );
    produce(&broker, "mixed", (0..400).map(|i| format!("m-{i}")));
    wait_until("400 records consumed", Duration::from_secs(60), || {
        let n: usize = consumers.iter().map(|c| report(c).records.len()).sum();
        (n >= 400).then_some(())
    });
    for c in &mut consumers {
        c.stop();
    }
    let mut values: Vec<String> = consumers
        .iter()
        .flat_map(|c| report(c).records.into_iter().map(|r| r.2))
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..400).map(|i| format!("m-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "each record exactly once");
    for c in &consumers {
        assert!(!report(c).records.is_empty(), "both clients consumed");
    }
}

#[test]
fn kcat_group_consumers_resume_from_the_committed_offsets() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1).set("group.initial.rebalance.delay.ms", "0"),
    );
    broker.create_topic("kc", 3, &[]);
    produce(&broker, "kc", (0..90).map(|i| format!("a-{i}")));
    let b = broker.bootstrap();
    let read = |count: &str| -> Vec<String> {
        let out = kcat(&[
            "-b",
            &b,
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-c",
            count,
            "-q",
            "-f",
            "%s\n",
            "kc",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let mut first = read("90");
    first.sort();
    let mut expected: Vec<String> = (0..90).map(|i| format!("a-{i}")).collect();
    expected.sort();
    assert_eq!(first, expected);
    produce(&broker, "kc", (0..30).map(|i| format!("b-{i}")));
    let mut second = read("30");
    second.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("b-{i}")).collect();
    expected.sort();
    assert_eq!(
        second, expected,
        "the second run starts where the first committed"
    );
}

#[test]
fn committed_offsets_survive_a_broker_sigkill() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("group.initial.rebalance.delay.ms", "0"),
    );
    broker.create_topic("durable", 2, &[]);
    produce(&broker, "durable", (0..100).map(|i| format!("d-{i}")));
    let mut first = consumer(
        "first",
        &broker,
        "durable",
        "durable-group",
        &["--max-records", "100"],
    );
    first.wait(Duration::from_secs(60));
    let first = report(&first);
    assert_eq!(first.records.len(), 100);
    assert_eq!(
        first.committed.values().sum::<i64>(),
        100,
        "{:?}",
        first.committed
    );

    broker.kill();
    broker.restart();
    produce(&broker, "durable", (0..20).map(|i| format!("e-{i}")));
    let mut second = consumer(
        "second",
        &broker,
        "durable",
        "durable-group",
        &["--max-records", "20", "--seconds", "60"],
    );
    second.wait(Duration::from_secs(90));
    let mut values: Vec<String> = report(&second).records.into_iter().map(|r| r.2).collect();
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("e-{i}")).collect();
    expected.sort();
    assert_eq!(
        values, expected,
        "after the restart the group resumes at its commits"
    );
    assert!(broker.log_text().contains("loaded 1 group(s)"));
}

#[test]
fn a_static_member_restarted_within_its_session_rejoins_without_a_rebalance() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1).set("group.initial.rebalance.delay.ms", "0"),
    );
    broker.create_topic("static", 4, &[]);
    let start = |name: &str, instance: &str| {
        consumer(
            name,
            &broker,
            "static",
            "static-group",
            &["--instance-id", instance, "--session-timeout-ms", "30000"],
        )
    };
    let stays = start("stays", "instance-a");
    let mut restarts = start("restarts", "instance-b");
    wait_until(
        "two members, two partitions each",
        Duration::from_secs(60),
        || {
            (current_assignment(&stays).len() == 2 && current_assignment(&restarts).len() == 2)
                .then_some(())
        },
    );
    let before = current_assignment(&restarts);
    let stays_assignments = report(&stays).assignments.len();
    restarts.kill();
    let restarted = start("restarted", "instance-b");
    wait_until(
        "the restarted member's assignment",
        Duration::from_secs(30),
        || (current_assignment(&restarted).len() == 2).then_some(()),
    );
    assert_eq!(
        current_assignment(&restarted),
        before,
        "same partitions as before"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        report(&stays).assignments.len(),
        stays_assignments,
        "the member that stayed saw no rebalance: {:?}",
        report(&stays).assignments
    );
}

/// Until log compaction exists, the coordinator keeps `__consumer_offsets` bounded by
/// rewriting the live offsets and deleting older segments; what it loads after a crash is still
/// the last commit of every partition.
#[test]
fn the_offsets_topic_stays_bounded_and_keeps_the_last_commits() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .set("offsets.topic.num.partitions", "1")
            .set("offsets.topic.segment.bytes", "4096"),
    );
    broker.create_topic("bounded", 4, &[]);
    let summary = harness::python_json(
        "commit_loop.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--group",
            "busy",
            "--topic",
            "bounded",
            "--partitions",
            "4",
            "--commits",
            "1500",
        ],
    );
    assert_eq!(summary["ok"], true, "{summary}");
    let dir = broker.log_dir().join("__consumer_offsets-0");
    let segments = || {
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .count()
            })
            .unwrap_or(0)
    };
    // 1,500 commits take ~50 segments of 4 KiB; the rewrites keep a handful.
    wait_until(
        "the offsets partition to be rewritten",
        Duration::from_secs(30),
        || {
            (broker
                .log_text()
                .contains("live groups and offsets rewritten")
                && segments() <= 6)
                .then_some(())
        },
    );
    broker.kill();
    broker.restart();
    // A commit of another group first: the coordinator has loaded the partition again.
    let fetched = harness::python_json(
        "commit_loop.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--group",
            "other",
            "--topic",
            "bounded",
            "--partitions",
            "1",
            "--commits",
            "1",
        ],
    );
    assert_eq!(fetched["ok"], true);
    let described = harness::skein_cli(&[
        "groups",
        "describe",
        "--group",
        "busy",
        "--bootstrap",
        &broker.bootstrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    let offsets: BTreeMap<i64, i64> = report["groups"][0]["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"].as_i64().unwrap(),
                o["current_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        BTreeMap::from([(0, 1496), (1, 1497), (2, 1498), (3, 1499)]),
        "the last commit of each partition survives the rewrites and the crash"
    );
}

/// A group coordinated by another broker than the one a client bootstraps from: the client
/// is sent there (FindCoordinator) and consumes and commits through it.
#[test]
fn a_group_coordinated_by_another_broker_is_found_and_served() {
    let zk = ZooKeeper::start(1);
    let opts = |id| {
        BrokerOpts::id(id)
            .shards(1)
            .set("group.initial.rebalance.delay.ms", "0")
    };
    let first = Broker::start(&zk, opts(1));
    let second = Broker::start(&zk, opts(2));
    first.create_topic("spread", 4, &[]);
    produce(&first, "spread", (0..200).map(|i| format!("s-{i}")));
    // The first group request creates __consumer_offsets; its leaders say where groups live.
    harness::try_skein_cli(&[
        "groups",
        "describe",
        "--group",
        "warm-up",
        "--bootstrap",
        &first.bootstrap(),
    ]);
    let leaders: BTreeMap<i64, i64> = wait_until(
        "__consumer_offsets with leaders",
        Duration::from_secs(30),
        || {
            let listing = kcat(&[
                "-b",
                &first.bootstrap(),
                "-L",
                "-J",
                "-t",
                "__consumer_offsets",
            ]);
            let json: serde_json::Value = serde_json::from_slice(&listing.stdout).ok()?;
            let partitions = json["topics"][0]["partitions"].as_array()?;
            let leaders: BTreeMap<i64, i64> = partitions
                .iter()
                .map(|p| {
                    (
                        p["partition"].as_i64().unwrap(),
                        p["leader"].as_i64().unwrap(),
                    )
                })
                .collect();
            (leaders.len() == 50 && leaders.values().all(|&l| l > 0)).then_some(leaders)
        },
    );
    let group = (0..100)
        .map(|i| format!("remote-{i}"))
        .find(|g| leaders[&i64::from(skein::group::partition_for(g, 50))] == 2)
        .expect("some group lands on broker 2");
    let mut consumer = consumer(
        "remote",
        &first,
        "spread",
        &group,
        &["--max-records", "200"],
    );
    consumer.wait(Duration::from_secs(60));
    let seen = report(&consumer);
    assert_eq!(seen.records.len(), 200, "{}", consumer.stderr_tail());
    assert_eq!(seen.committed.values().sum::<i64>(), 200);
    let described = harness::skein_cli(&[
        "groups",
        "describe",
        "--group",
        &group,
        "--bootstrap",
        &first.bootstrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(report["groups"][0]["coordinator"]["id"], 2, "{report}");
    drop(second);
}

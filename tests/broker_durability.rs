//! Crash safety of a real broker process: SIGKILL and restart loses nothing acknowledged, serves
//! nothing twice, scans only the active segment, and truncates a torn tail instead of serving it.

mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};

use std::time::Duration;

use harness::{kcat, kcat_with_input, python_json, wait_until, Broker, BrokerOpts, ZooKeeper};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

fn consume_all(broker: &Broker, topic: &str) -> Vec<String> {
    let out = kcat(&[
        "-b",
        &broker.bootstrap(),
        "-t",
        topic,
        "-C",
        "-e",
        "-q",
        "-f",
        "%p %o %s\n",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sigkill_loses_nothing_acknowledged_and_recovery_scans_only_the_active_segment() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("log.segment.bytes", "16384")
            .set("zookeeper.session.timeout.ms", "6000"),
    );
    broker.create_topic("durable", 2, &[]);
    // Many small batches (kcat waits for every delivery report before it exits), so the
    // partitions roll through many segments.
    let input: String = (0..2000)
        .map(|i| format!("key{}:value-{i:04}-{}\n", i % 10, "x".repeat(80)))
        .collect();
    kcat_with_input(
        &[
            "-b",
            &broker.bootstrap(),
            "-t",
            "durable",
            "-P",
            "-K:",
            "-X",
            "batch.num.messages=20",
            "-X",
            "acks=all",
        ],
        input.as_bytes(),
    );
    let before = consume_all(&broker, "durable");
    assert_eq!(before.len(), 2000);
    let rolled = segments(&broker.log_dir().join("durable-0"));
    assert!(rolled.len() > 2, "small segments roll: {rolled:?}");

    broker.kill();
    broker.restart();
    let after = consume_all(&broker, "durable");
    assert_eq!(
        after, before,
        "the same records at the same offsets, nothing twice, nothing lost"
    );

    // One recovery scan per partition, of its last segment only.
    let log = broker.log_text();
    let scans: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recovered the active segment"))
        .collect();
    let restart_scans = &scans[scans.len() - 2..];
    let active = segments(&broker.log_dir().join("durable-0")).pop().unwrap();
    assert!(
        restart_scans
            .iter()
            .any(|l| l.contains(&*active.to_string_lossy())),
        "the active segment {active:?} is scanned: {restart_scans:?}"
    );
    let first = &rolled[0];
    assert!(
        !log.contains(&format!("{} ", first.display())),
        "rolled segment {first:?} must not be rescanned"
    );

    // After a clean stop (SIGTERM) there is nothing to recover: the restart trusts the indexes.
    broker.stop();
    broker.restart();
    assert!(
        broker
            .log_text()
            .contains("opened the active segment after a clean shutdown (no recovery scan)"),
        "a clean restart skips the scan"
    );
    assert_eq!(consume_all(&broker, "durable"), before);

    // Producing continues at the right offsets.
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", "durable", "-p", "0", "-P"],
        b"after-restart\n",
    );
    let last = consume_all(&broker, "durable")
        .into_iter()
        .rfind(|l| l.starts_with("0 "))
        .unwrap();
    let expected_offset = before.iter().filter(|l| l.starts_with("0 ")).count();
    assert_eq!(last, format!("0 {expected_offset} after-restart"));
}

/// SIGTERM while producers keep many requests in flight: appends queued or being written when the
/// stop arrives either land before the partitions close or are refused, so every acknowledged
/// record is there after the restart, at its acknowledged offset, and the restart needs no
/// recovery scan (the clean-shutdown marker vouches for files that no late write changed).
#[test]
fn clean_stop_under_produce_load_keeps_every_acknowledged_record() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    broker.create_topic("busy", 2, &[]);
    let bootstrap = broker.bootstrap();
    let producer = std::thread::spawn(move || {
        python_json(
            "produce_until_stopped.py",
            &[
                "--bootstrap",
                &bootstrap,
                "--topic",
                "busy",
                "--seconds",
                "30",
            ],
        )
    });
    // Stop once the partitions hold a few megabytes, with the producer still going.
    let stored_bytes = |broker: &Broker| -> u64 {
        (0..2)
            .flat_map(|p| segments(&broker.log_dir().join(format!("busy-{p}"))))
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum()
    };
    wait_until("the producer to get going", Duration::from_secs(30), || {
        (stored_bytes(&broker) > 2 << 20).then_some(())
    });
    let status = broker.stop().expect("the broker was running");
    assert!(status.success(), "clean stop: {status:?}");
    let summary = producer.join().expect("producer thread");
    let acked = summary["acked"].as_array().expect("acked list");
    assert!(acked.len() > 10_000, "acknowledged {}", acked.len());

    let scans_before = broker.log_text().matches("no recovery scan").count();
    broker.restart();
    assert_eq!(
        broker.log_text().matches("no recovery scan").count() - scans_before,
        2,
        "both partitions open without a scan after the clean stop"
    );
    let stored: std::collections::HashMap<(u64, u64), String> = consume_all(&broker, "busy")
        .into_iter()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let p = parts.next().unwrap().parse().unwrap();
            let o = parts.next().unwrap().parse().unwrap();
            ((p, o), parts.next().unwrap_or_default().to_owned())
        })
        .collect();
    for entry in acked {
        let (p, o, v) = (
            entry[0].as_u64().unwrap(),
            entry[1].as_u64().unwrap(),
            entry[2].as_str().unwrap(),
        );
        assert_eq!(
            stored.get(&(p, o)).map(String::as_str),
            Some(v),
            "acknowledged record at partition {p} offset {o}"
        );
    }
}

#[test]
fn garbage_at_a_segment_tail_is_truncated_on_restart() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(1)
            .set("zookeeper.session.timeout.ms", "6000"),
    );
    broker.create_topic("torn", 1, &[]);
    let input: String = (0..100).map(|i| format!("record-{i}\n")).collect();
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", "torn", "-P"],
        input.as_bytes(),
    );
    let before = consume_all(&broker, "torn");
    assert_eq!(before.len(), 100);

    broker.kill();
    let active = segments(&broker.log_dir().join("torn-0")).pop().unwrap();
    let clean_len = std::fs::metadata(&active).unwrap().len();
    // A torn write: a plausible batch header promising more bytes than follow, then noise.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap();
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&100i64.to_be_bytes());
    garbage.extend_from_slice(&4000i32.to_be_bytes());
    garbage.extend_from_slice(&[0xAB; 333]);
    file.write_all(&garbage).unwrap();
    drop(file);

    broker.restart();
    assert!(
        broker
            .log_text()
            .contains("truncating torn or corrupt tail"),
        "recovery says what it cut"
    );
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        clean_len,
        "the garbage is gone from disk"
    );
    assert_eq!(
        consume_all(&broker, "torn"),
        before,
        "only the good records are served"
    );
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", "torn", "-P"],
        b"record-100\n",
    );
    let after = consume_all(&broker, "torn");
    assert_eq!(after.last().unwrap(), "0 100 record-100");
}

#[test]
fn retention_deletes_old_segments_and_advances_the_log_start() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .set("log.retention.check.interval.ms", "500")
            .set("log.segment.bytes", "2048"),
    );
    broker.create_topic("short-lived", 1, &["retention.ms=1000"]);
    let input: String = (0..200)
        .map(|i| format!("record-{i}-{}\n", "y".repeat(50)))
        .collect();
    kcat_with_input(
        &[
            "-b",
            &broker.bootstrap(),
            "-t",
            "short-lived",
            "-P",
            "-X",
            "batch.num.messages=10",
        ],
        input.as_bytes(),
    );
    let dir = broker.log_dir().join("short-lived-0");
    assert!(segments(&dir).len() > 3);
    // Everything but the active segment ages past retention.ms and is deleted; the log start moves
    // to the active segment's base offset, and consumers from the beginning start there.
    harness::wait_until(
        "retention to delete old segments",
        std::time::Duration::from_secs(20),
        || (segments(&dir).len() == 1).then_some(()),
    );
    let remaining = consume_all(&broker, "short-lived");
    assert!(
        !remaining.is_empty() && remaining.len() < 200,
        "{} records left",
        remaining.len()
    );
    let first_offset: usize = remaining[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        first_offset,
        200 - remaining.len(),
        "what is left is the newest records"
    );
    assert!(remaining
        .last()
        .unwrap()
        .ends_with(&format!("record-199-{}", "y".repeat(50))));
}

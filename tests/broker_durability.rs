//! Crash safety of a real broker process: SIGKILL and restart loses nothing acknowledged, serves
//! nothing twice, recovers only from the recovery point on, and truncates a torn tail instead of
//! serving it; after a power loss (files torn past the recovery point) it serves every batch
//! before the tear and nothing torn; data of another topic id is left alone.

mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};

use std::time::Duration;

use harness::{kcat, kcat_with_input, python_json, wait_until, Broker, BrokerOpts, ZooKeeper};
use skein::record::BatchHeader;
use skein::storage::recovery_point_checkpoint;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// The partition's entry in the broker's recovery-point checkpoint.
fn recovery_point(broker: &Broker, topic: &str, partition: i32) -> Option<i64> {
    let entries = recovery_point_checkpoint::read(&broker.log_dir()).expect("checkpoint");
    entries.get(&(topic.to_string(), partition)).copied()
}

/// Base offset of a segment file, from its name.
fn base_offset(segment: &Path) -> i64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a segment file name")
}

/// (byte position, base offset, last offset) of each batch of a segment file.
fn batches(segment: &Path) -> Vec<(u64, i64, i64)> {
    let bytes = std::fs::read(segment).expect("read segment");
    let mut batches = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).expect("a whole batch");
        batches.push((position as u64, header.base_offset, header.last_offset()));
        position += header.total_bytes();
    }
    batches
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
fn sigkill_loses_nothing_acknowledged_and_recovery_starts_at_the_recovery_point() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("log.segment.bytes", "16384")
            .set("log.flush.offset.checkpoint.interval.ms", "200")
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
    let dir = broker.log_dir().join("durable-0");
    let rolled = segments(&dir);
    assert!(rolled.len() > 3, "small segments roll: {rolled:?}");
    // Every roll is fsynced off the executor and moves the recovery point to the new segment;
    // the checkpoint thread writes it down.
    let last_base = base_offset(rolled.last().unwrap());
    wait_until(
        "the checkpoint to reach the last roll",
        Duration::from_secs(20),
        || (recovery_point(&broker, "durable", 0) == Some(last_base)).then_some(()),
    );

    broker.kill();
    let point = recovery_point(&broker, "durable", 0).expect("a recovery point");
    let log_before_restart = broker.log_text().len();
    broker.restart();
    let after = consume_all(&broker, "durable");
    assert_eq!(
        after, before,
        "the same records at the same offsets, nothing twice, nothing lost"
    );
    // Looked up by timestamp (ListOffsets through the time indexes, off the executor), from
    // before the first record: the same again.
    let by_time = kcat(&[
        "-b",
        &broker.bootstrap(),
        "-t",
        "durable",
        "-C",
        "-e",
        "-q",
        "-o",
        "s@0",
        "-f",
        "%p %o %s\n",
    ]);
    let mut by_time: Vec<String> = String::from_utf8_lossy(&by_time.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let mut sorted_before = before.clone();
    by_time.sort();
    sorted_before.sort();
    assert_eq!(by_time, sorted_before);

    // Partition 0 recovered its segments from the one holding the recovery point on: here the
    // last one only. The rolled ones below it are trusted as they are.
    let restart_log = &broker.log_text()[log_before_restart..];
    let recovered: Vec<&str> = restart_log
        .lines()
        .filter(|l| l.contains("recovered segment") && l.contains("durable-0"))
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(
        recovered[0].contains(&format!("{point:020}.log")),
        "the segment holding the recovery point {point} is recovered: {recovered:?}"
    );
    for segment in &rolled[..rolled.len() - 1] {
        assert!(
            !restart_log.contains(&format!("{} ", segment.display())),
            "rolled segment {segment:?} below the recovery point must not be scanned"
        );
    }

    // After a clean stop (SIGTERM) there is nothing to recover: the restart trusts the indexes,
    // and the final checkpoint has every partition at its log end.
    broker.stop();
    let end_0 = before.iter().filter(|l| l.starts_with("0 ")).count() as i64;
    assert_eq!(recovery_point(&broker, "durable", 0), Some(end_0));
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
    assert_eq!(last, format!("0 {end_0} after-restart"));
}

/// A power loss keeps what was fsynced (everything below the recovery point) and an arbitrary
/// part of the rest. Simulated on a killed broker by tearing a segment past the recovery point
/// and an index below it: the restart serves every record before the tear, exactly, and nothing of the
/// torn batch or after it.
#[test]
fn power_loss_past_the_recovery_point_serves_what_precedes_the_tear_and_nothing_torn() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(1)
            .set("log.segment.bytes", "16384")
            .set("log.flush.offset.checkpoint.interval.ms", "300")
            .set("zookeeper.session.timeout.ms", "6000"),
    );
    broker.create_topic("power", 1, &[]);
    let produce = |from: usize, to: usize| {
        let input: String = (from..to)
            .map(|i| format!("record-{i:05}-{}\n", "p".repeat(100)))
            .collect();
        kcat_with_input(
            &[
                "-b",
                &broker.bootstrap(),
                "-t",
                "power",
                "-P",
                "-X",
                "batch.num.messages=20",
                "-X",
                "acks=all",
            ],
            input.as_bytes(),
        );
    };
    produce(0, 600);
    wait_until(
        "a recovery point in the checkpoint",
        Duration::from_secs(20),
        || recovery_point(&broker, "power", 0).filter(|&p| p > 0),
    );
    produce(600, 1200);
    // A few more, so the active segment surely holds batches past the recovery point (only rolls
    // move it here: no flush policy).
    produce(1200, 1230);
    let before = consume_all(&broker, "power");
    assert_eq!(before.len(), 1230);
    broker.kill();

    let point = recovery_point(&broker, "power", 0).expect("a recovery point");
    let dir = broker.log_dir().join("power-0");
    let files = segments(&dir);
    let holding = files
        .iter()
        .rposition(|f| base_offset(f) <= point)
        .expect("the segment holding the recovery point");
    // Tear the first segment after the one holding the recovery point, or that one itself past
    // the recovery point, in the middle of a batch: 30 bytes into it.
    let (torn, torn_batch) = match files.get(holding + 1) {
        Some(next) => (next.clone(), batches(next).len() / 2),
        None => {
            let layout = batches(&files[holding]);
            let after = layout.iter().filter(|(_, base, _)| *base >= point).count();
            assert!(
                after >= 1,
                "the active segment has batches past the recovery point"
            );
            (files[holding].clone(), layout.len() - after + after / 2)
        }
    };
    let (position, kept_end, _) = batches(&torn)[torn_batch];
    let file = std::fs::OpenOptions::new().write(true).open(&torn).unwrap();
    file.set_len(position + 30).unwrap();
    drop(file);
    // And the index of a segment below the recovery point (one the restart would trust without
    // reading its data) ends in half an entry: it must be noticed and rebuilt.
    assert!(holding >= 1, "a rolled segment below the recovery point");
    let index = files[holding - 1].with_extension("index");
    let mut entries = std::fs::read(&index).unwrap();
    entries.extend_from_slice(&[0x5a; 5]);
    std::fs::write(&index, entries).unwrap();

    broker.restart();
    let after = consume_all(&broker, "power");
    let expected: Vec<String> = before
        .iter()
        .filter(|l| l.split(' ').nth(1).unwrap().parse::<i64>().unwrap() < kept_end)
        .cloned()
        .collect();
    assert!(
        expected.len() as i64 >= point,
        "everything below the recovery point {point} precedes the tear at {kept_end}"
    );
    assert_eq!(
        after, expected,
        "every record before the tear, and nothing torn"
    );
    let log = broker.log_text();
    assert!(
        log.contains("truncating torn or corrupt tail"),
        "recovery says what it cut"
    );
    assert!(
        log.contains("the segment's files disagree: recovering it"),
        "the torn index of a trusted segment is noticed"
    );
    if torn != *files.last().unwrap() {
        assert!(log.contains("deleting a segment after the truncated one"));
    }
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", "power", "-P"],
        b"after-the-loss\n",
    );
    let last = consume_all(&broker, "power").pop().unwrap();
    assert_eq!(last, format!("0 {kept_end} after-the-loss"));
}

/// Data whose partition.metadata names another topic id (a deleted topic's, or copied from
/// elsewhere) is left on disk untouched and the partition is not opened; the log says why.
#[test]
fn data_of_another_topic_id_is_left_untouched_and_not_served() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(&zk, BrokerOpts::id(1).shards(1));
    broker.create_topic("owned", 1, &[]);
    kcat_with_input(
        &["-b", &broker.bootstrap(), "-t", "owned", "-P"],
        b"one\ntwo\n",
    );
    assert_eq!(consume_all(&broker, "owned").len(), 2);
    broker.stop();
    let dir = broker.log_dir().join("owned-0");
    let metadata = dir.join("partition.metadata");
    let ours = std::fs::read_to_string(&metadata).unwrap();
    let theirs = "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAA\n";
    std::fs::write(&metadata, theirs).unwrap();
    let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with(".clean-shutdown"))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let files = snapshot(&dir);

    broker.restart();
    let our_id = ours.trim().rsplit(' ').next().unwrap().to_string();
    wait_until("the refusal in the log", Duration::from_secs(20), || {
        broker
            .log_text()
            .lines()
            .any(|l| {
                l.contains("cannot open partition owned-0")
                    && l.contains(&*dir.to_string_lossy())
                    && l.contains("AAAAAAAAAAAAAAAAAAAAAA")
                    && l.contains(&our_id)
            })
            .then_some(())
    });
    assert_eq!(snapshot(&dir), files, "nothing in the directory changed");
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

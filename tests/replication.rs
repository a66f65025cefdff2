//! Replication across real brokers (issue 9), end to end: one ZooKeeper, three `skein broker`
//! processes, topics of replication factor 3 with `min.insync.replicas=2`, and real clients:
//! confluent-kafka in `tests/clients/acked_producer.py` (idempotent, acks=all, writes down every
//! acknowledged record) and `read_all.py` (reads every partition up to its high watermark), kazoo
//! in `zk_dump.py` (leaders and ISRs as the controller wrote them to ZooKeeper).
//!
//! - `acks_all_survives_leader_kill`: a leader SIGKILLed under load; every acknowledged record is
//!   read back exactly once, in produce order, at the offset its acknowledgement named, and the
//!   restarted broker rejoins every ISR.
//! - `not_enough_replicas_when_two_of_three_are_down`: acks=all is refused at once with
//!   NOT_ENOUGH_REPLICAS (acks=1 still works), and all is well again once the brokers return.
//! - `consumers_never_see_past_the_high_watermark`: followers frozen with SIGSTOP hold the high
//!   watermark back; records only the leader has are not served until the followers fetch them.
//! - `chaos`: issue 9's "What it must show": ~60 s of produce while leaders are SIGKILLed, the
//!   controller is killed twice and one broker is bounced cleanly (its leaderships gone before it
//!   exits: controlled shutdown); nothing acknowledged is lost.
//!
//! Short ZooKeeper sessions (4 s; the harness's ZooKeeper accepts 1-60 s) and
//! `replica.lag.time.max.ms` = 5 s keep failover and ISR shrink/expand within seconds. The tests
//! of this file take turns (three brokers each on two cores: run side by side, their timing-bound
//! steps would be judged on a starved machine). Every wait is bounded; every process is stopped
//! by its pid when the test ends, passed or failed, and a failure prints the brokers' log tails.

mod harness;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use harness::acked::{
    assert_no_problems, longest_gap, produce, producer_problems, producer_summary, read_acked,
    read_back_problems, read_topic, start_producer, unix_now, work_dir, FLUSH_SECS,
};
use harness::cluster::{Cluster, Frozen, PartitionState, BROKERS, FAST_FAILOVER, ISR_TIMEOUT};
use harness::wait_until;

/// One test of this file at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn acks_all_survives_leader_kill() {
    const TOPIC: &str = "survives";
    const PARTITIONS: u32 = 6;
    const PRODUCE_SECS: u64 = 16;
    let _serial = serial();
    let mut cluster = Cluster::start(FAST_FAILOVER);
    cluster.create_topic(TOPIC, PARTITIONS);
    cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);

    let dir = work_dir("survives");
    let acked_path = dir.path().join("acked");
    let mut producer = start_producer(
        "survives",
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        &acked_path,
        &["--seconds", &PRODUCE_SECS.to_string(), "--rate", "1000"],
    );
    wait_until(
        "acknowledgements from every partition",
        Duration::from_secs(30),
        || {
            let acked = read_acked(&acked_path);
            let partitions: std::collections::BTreeSet<i64> =
                acked.iter().map(|a| a.partition).collect();
            (partitions.len() == PARTITIONS as usize).then_some(())
        },
    );
    sleep(Duration::from_secs(2));

    let victim = cluster.leader(TOPIC, 0);
    let killed_at = Instant::now();
    let killed_unix = unix_now();
    cluster.broker(victim).kill();
    eprintln!("SIGKILLed broker {victim}, the leader of partition 0");
    let successor = wait_until(
        "partition 0 to get a new leader",
        Duration::from_secs(30),
        || {
            cluster
                .state(TOPIC, 0)
                .map(|s| s.leader)
                .filter(|&l| l >= 0 && l != victim)
        },
    );
    eprintln!(
        "broker {successor} leads partition 0 {:.1?} after the kill",
        killed_at.elapsed()
    );
    // Down a while longer, under load, then back: it must catch up and rejoin.
    sleep(Duration::from_secs(6).saturating_sub(killed_at.elapsed()));
    cluster.broker(victim).restart();
    eprintln!(
        "broker {victim} serving again {:.1?} after the kill",
        killed_at.elapsed()
    );

    let summary = producer_summary(
        &mut producer,
        Duration::from_secs(PRODUCE_SECS + FLUSH_SECS + 30),
    );
    eprintln!("producer: {summary}");
    let mut problems = producer_problems(&summary);
    let acked = read_acked(&acked_path);
    assert_eq!(
        Some(acked.len() as i64),
        summary["acked"].as_i64(),
        "every acknowledgement is in the file"
    );
    let after_kill = acked
        .iter()
        .filter(|a| a.partition == 0 && a.unix_s > killed_unix)
        .count();
    if after_kill == 0 {
        problems.push("no record of partition 0 was acknowledged after its leader died".into());
    }
    eprintln!(
        "partition 0: {after_kill} acknowledged after the kill; longest pause between \
         acknowledgements {}s",
        summary["longest_ack_gap_s"]["0"]
    );

    let states = cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    eprintln!("ISR whole again: {states:?}");
    let log = read_topic(&cluster.bootstrap(), TOPIC, dir.path(), 0.0);
    problems.extend(read_back_problems(&acked, &log));
    eprintln!(
        "{} acknowledged records, all checked against {} read back",
        acked.len(),
        log.records.values().map(Vec::len).sum::<usize>()
    );
    assert_no_problems("acks=all across a leader's SIGKILL", &problems, dir);
}

#[test]
fn not_enough_replicas_when_two_of_three_are_down() {
    const TOPIC: &str = "scarce";
    const PARTITIONS: u32 = 3;
    let _serial = serial();
    let mut cluster = Cluster::start(FAST_FAILOVER);
    cluster.create_topic(TOPIC, PARTITIONS);
    cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    let dir = work_dir("scarce");
    let acked_path = dir.path().join("acked");

    let before = produce(
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        &acked_path,
        &["--count", "30", "--prefix", "before", "--seconds", "30"],
    );
    assert_eq!(before["acked"], 30, "with every replica in sync: {before}");

    // Keep partition 0's leader; kill both of its followers.
    let survivor = cluster.leader(TOPIC, 0);
    for id in (1..=BROKERS).filter(|&id| id != survivor) {
        cluster.broker(id).kill();
    }
    let killed_at = Instant::now();
    // The leader drops the silent followers from the ISR after replica.lag.time.max.ms, or the
    // controller does once their ZooKeeper sessions expire.
    let shrunk = wait_until(
        "partition 0's ISR to shrink to its leader alone",
        Duration::from_secs(40),
        || {
            cluster
                .state(TOPIC, 0)
                .filter(|s| s.leader == survivor && s.isr == [survivor])
        },
    );
    eprintln!(
        "partition 0: ISR {:?} {:.1?} after the kill",
        shrunk.isr,
        killed_at.elapsed()
    );

    // acks=all with an ISR of 1 < min.insync.replicas: refused at once, not held until a
    // timeout. No retries, so the delivery report carries the broker's error. An answer other
    // than NOT_ENOUGH_REPLICAS that comes quickly (the leader not yet told the new ISR) is tried
    // again, a few times, within a bound.
    let single = dir.path().join("refused");
    let mut refused_values = Vec::new();
    let mut attempts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    for attempt in 0.. {
        let prefix = format!("refused{attempt}");
        let out = produce(
            &cluster.bootstrap(),
            TOPIC,
            PARTITIONS,
            &single,
            &[
                "--partition",
                "0",
                "--count",
                "1",
                "--prefix",
                &prefix,
                "--no-idempotence",
                "--retries",
                "0",
                "--message-timeout-ms",
                "20000",
                "--seconds",
                "25",
            ],
        );
        refused_values.push(format!("{prefix}:0:0"));
        assert_eq!(
            out["acked"], 0,
            "acks=all was acknowledged with 1 replica in sync and min.insync.replicas=2: {out}"
        );
        let failure = &out["failures"][0];
        let latency = failure["latency_s"].as_f64().unwrap_or(f64::MAX);
        if failure["error"] == "NOT_ENOUGH_REPLICAS" {
            assert!(
                latency < 5.0,
                "NOT_ENOUGH_REPLICAS came, but only after {latency} s: {out}"
            );
            eprintln!("acks=all refused with NOT_ENOUGH_REPLICAS after {latency} s");
            break;
        }
        attempts.push(out.clone());
        assert!(
            latency < 5.0 && Instant::now() < deadline,
            "acks=all to partition 0 (ISR {:?}, min.insync.replicas 2) was not refused with \
             NOT_ENOUGH_REPLICAS within 5 s; attempts: {attempts:#?}",
            shrunk.isr
        );
        sleep(Duration::from_secs(1));
    }

    // acks=1 asks only the leader: still accepted.
    let one = produce(
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        &acked_path,
        &[
            "--partition",
            "0",
            "--count",
            "5",
            "--prefix",
            "leaderonly",
            "--no-idempotence",
            "--acks",
            "1",
            "--message-timeout-ms",
            "20000",
            "--seconds",
            "25",
        ],
    );
    assert_eq!(
        one["acked"], 5,
        "acks=1 is answered by the leader alone: {one}"
    );

    // Both back: they catch up, rejoin every ISR, and acks=all works again.
    for id in (1..=BROKERS).filter(|&id| id != survivor) {
        cluster.broker(id).restart();
    }
    cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    let after = produce(
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        &acked_path,
        &["--count", "30", "--prefix", "after", "--seconds", "30"],
    );
    assert_eq!(after["acked"], 30, "with every replica back: {after}");

    let acked = read_acked(&acked_path);
    assert_eq!(acked.len(), 65);
    let log = read_topic(&cluster.bootstrap(), TOPIC, dir.path(), 0.0);
    let mut problems = read_back_problems(&acked, &log);
    for refused in &refused_values {
        if log.records.values().flatten().any(|(_, v)| v == refused) {
            problems.push(format!(
                "'{refused}' was refused with an error, yet it is in the log"
            ));
        }
    }
    assert_no_problems("after NOT_ENOUGH_REPLICAS", &problems, dir);
}

#[test]
fn consumers_never_see_past_the_high_watermark() {
    const TOPIC: &str = "watermark";
    let _serial = serial();
    // Long sessions and a long lag allowance: frozen followers stay registered and in the ISR,
    // so the high watermark can only move when they fetch.
    let mut cluster = Cluster::start(&[
        ("zookeeper.session.timeout.ms", "30000"),
        ("replica.lag.time.max.ms", "60000"),
        ("min.insync.replicas", "2"),
        ("unclean.leader.election.enable", "false"),
    ]);
    cluster.create_topic(TOPIC, 1);
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    let dir = work_dir("watermark");
    let acked_path = dir.path().join("acked");
    let committed = produce(
        &cluster.bootstrap(),
        TOPIC,
        1,
        &acked_path,
        &["--count", "20", "--prefix", "committed", "--seconds", "30"],
    );
    assert_eq!(committed["acked"], 20, "{committed}");
    // Read once with every broker up: the baseline, and the reader's group gets its coordinator
    // (and __consumer_offsets its replicas) now rather than while followers are frozen.
    let baseline = read_topic(&cluster.bootstrap(), TOPIC, dir.path(), 0.0);
    assert_eq!(
        baseline.high_watermarks.get(&0),
        Some(&20),
        "acks=all answered: the high watermark covers all 20"
    );

    let leader = cluster.leader(TOPIC, 0);
    let leader_bootstrap = cluster.broker(leader).bootstrap();
    let follower_pids: Vec<u32> = (1..=BROKERS)
        .filter(|&id| id != leader)
        .map(|id| cluster.broker(id).pid().expect("follower running"))
        .collect();
    let frozen = Frozen::pause(follower_pids);

    // acks=1: the leader appends and answers; no follower has these records.
    let pending_path = dir.path().join("pending");
    let pending = produce(
        &leader_bootstrap,
        TOPIC,
        1,
        &pending_path,
        &[
            "--count",
            "20",
            "--prefix",
            "pending",
            "--acks",
            "1",
            "--no-idempotence",
            "--message-timeout-ms",
            "20000",
            "--seconds",
            "25",
        ],
    );
    assert_eq!(pending["acked"], 20, "{pending}");
    let pending_acked = read_acked(&pending_path);
    assert!(
        pending_acked.iter().all(|a| a.offset >= 20),
        "{pending_acked:?}"
    );

    // A consumer gets the committed records and, even fetching 3 s longer, nothing past them.
    let seen = read_topic(&leader_bootstrap, TOPIC, dir.path(), 3.0);
    assert_eq!(
        seen.high_watermarks.get(&0),
        Some(&20),
        "the high watermark stays at what every ISR member has; ListOffsets answered {:?}",
        seen.high_watermarks
    );
    let values: Vec<&str> = seen.records[&0].iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("committed:0:{i}")).collect();
    assert_eq!(values, expected, "records up to the high watermark");
    assert!(
        seen.beyond_high_watermark.values().all(Vec::is_empty),
        "served records past the high watermark: {:?}",
        seen.beyond_high_watermark
    );

    // The followers fetch, the high watermark moves, and the records are served.
    drop(frozen);
    let healed = wait_until(
        "the high watermark to reach 40 once the followers fetch",
        Duration::from_secs(30),
        || {
            let log = read_topic(&cluster.bootstrap(), TOPIC, dir.path(), 0.0);
            (log.high_watermarks.get(&0) == Some(&40)).then_some(log)
        },
    );
    let mut acked = read_acked(&acked_path);
    acked.extend(pending_acked);
    let problems = read_back_problems(&acked, &healed);
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    assert_no_problems("high watermark", &problems, dir);
}

/// xorshift64*: small, and the same choices again from the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL the leader of a random partition; restart it 1-6 s later (before or after its
    /// ZooKeeper session expires).
    KillLeader,
    /// SIGKILL the controller; restart it once another broker has taken over.
    KillController,
    /// SIGTERM the leader of a random partition (controlled shutdown), then start it again.
    CleanBounce,
}

/// The faults every chaos run makes, in order; past them, leaders are killed until the time is up.
const CHAOS_PLAN: [Fault; 6] = [
    Fault::KillController,
    Fault::KillLeader,
    Fault::CleanBounce,
    Fault::KillLeader,
    Fault::KillController,
    Fault::KillLeader,
];
const CHAOS_SEED: u64 = 0x5EED_0009;

/// Each partition's leader epoch and controller epoch in ZooKeeper only grow (an older one would
/// come from a stale controller that was not fenced). Per partition: a partition no later
/// controller touched keeps the epoch of the one that last wrote it.
#[derive(Default)]
struct EpochWatch {
    /// Partition -> (leader epoch, controller epoch) last seen.
    seen: HashMap<usize, (i64, i64)>,
}

impl EpochWatch {
    fn check(&mut self, states: &[Option<PartitionState>], problems: &mut Vec<String>) {
        for (partition, state) in states.iter().enumerate() {
            let Some(state) = state else { continue };
            let now = (state.leader_epoch, state.controller_epoch);
            let last = self.seen.entry(partition).or_insert(now);
            if now.0 < last.0 || now.1 < last.1 {
                problems.push(format!(
                    "partition {partition}: (leader epoch, controller epoch) went back from \
                     {last:?} to {now:?}"
                ));
            }
            *last = (now.0.max(last.0), now.1.max(last.1));
        }
    }
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok()?.parse().ok()
}

#[test]
fn chaos() {
    const TOPIC: &str = "chaos";
    const PARTITIONS: u32 = 6;
    let _serial = serial();
    let seed = env_u64("SKEIN_CHAOS_SEED").unwrap_or(CHAOS_SEED);
    let run = Duration::from_secs(env_u64("SKEIN_CHAOS_SECS").unwrap_or(60));
    eprintln!(
        "chaos: seed {seed} (SKEIN_CHAOS_SEED={seed} makes the same choices again; the timing \
         still varies), faults for {run:?} (SKEIN_CHAOS_SECS)"
    );
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::start(FAST_FAILOVER);
    cluster.create_topic(TOPIC, PARTITIONS);
    let mut epochs = EpochWatch::default();
    let mut problems = Vec::new();
    let states = cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    epochs.check(
        &states.into_iter().map(Some).collect::<Vec<_>>(),
        &mut problems,
    );

    let dir = work_dir("chaos");
    let acked_path = dir.path().join("acked");
    let stop_path = dir.path().join("stop");
    let (limit, stop_arg) = (
        (run.as_secs() + 150).to_string(),
        stop_path.display().to_string(),
    );
    let mut producer = start_producer(
        "chaos",
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        &acked_path,
        &[
            "--seconds",
            &limit,
            "--stop-file",
            &stop_arg,
            "--rate",
            "1000",
        ],
    );
    let started = Instant::now();
    let mut faults = Vec::new();
    for round in 0.. {
        let planned = CHAOS_PLAN.get(round).copied();
        if planned.is_none() && started.elapsed() >= run {
            break;
        }
        assert!(
            started.elapsed() < run + Duration::from_secs(120),
            "the chaos plan did not fit: {round} faults in {:?}",
            started.elapsed()
        );
        let fault = planned.unwrap_or(Fault::KillLeader);
        assert!(
            producer.is_running(),
            "the producer stopped early:\n{}",
            producer.stderr_tail()
        );
        // Each fault starts from a healthy cluster: every replica back in every ISR.
        let states = cluster.wait_isr_whole(TOPIC, PARTITIONS, Duration::from_secs(45));
        epochs.check(
            &states.into_iter().map(Some).collect::<Vec<_>>(),
            &mut problems,
        );
        sleep(rng.millis(1500, 4000));
        let at = started.elapsed().as_secs_f64();
        let controller = cluster.controller();
        match fault {
            Fault::KillLeader => {
                let partition = rng.below(u64::from(PARTITIONS)) as u32;
                let victim = cluster.leader(TOPIC, partition);
                let down = rng.millis(1000, 6000);
                cluster.broker(victim).kill();
                eprintln!(
                    "chaos t={at:>5.1}s: SIGKILL broker {victim} (leader of partition \
                     {partition}{}), down {down:.1?}",
                    if controller == Some(victim) {
                        ", and controller"
                    } else {
                        ""
                    }
                );
                sleep(down);
                cluster.broker(victim).restart();
                faults.push((fault, victim));
            }
            Fault::KillController => {
                let victim = wait_until("a controller", Duration::from_secs(30), || {
                    cluster.controller()
                });
                cluster.broker(victim).kill();
                let killed = Instant::now();
                let successor = wait_until(
                    "another broker to become controller",
                    Duration::from_secs(30),
                    || cluster.controller().filter(|&c| c != victim),
                );
                eprintln!(
                    "chaos t={at:>5.1}s: SIGKILL controller {victim}; broker {successor} took \
                     over after {:.1?}",
                    killed.elapsed()
                );
                sleep(rng.millis(500, 2500));
                cluster.broker(victim).restart();
                faults.push((fault, victim));
            }
            Fault::CleanBounce => {
                let partition = rng.below(u64::from(PARTITIONS)) as u32;
                let victim = cluster.leader(TOPIC, partition);
                let stopping = Instant::now();
                let status = cluster.broker(victim).stop();
                let took = stopping.elapsed();
                if !status.is_some_and(|s| s.success()) {
                    problems.push(format!(
                        "clean bounce: broker {victim} did not exit 0 within {:?} of SIGTERM: \
                         {status:?}",
                        harness::STOP_GRACE
                    ));
                }
                // Controlled shutdown: the controller moved its leaderships before it exited.
                let states = cluster.states(TOPIC, PARTITIONS);
                let still_led: Vec<usize> = states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.as_ref().is_some_and(|s| s.leader == victim))
                    .map(|(p, _)| p)
                    .collect();
                if !still_led.is_empty() {
                    problems.push(format!(
                        "clean bounce: broker {victim} exited still named leader of partitions \
                         {still_led:?} (controlled shutdown should have moved them)"
                    ));
                }
                epochs.check(&states, &mut problems);
                eprintln!(
                    "chaos t={at:>5.1}s: SIGTERM broker {victim} (leader of partition \
                     {partition}), stopped in {took:.1?}"
                );
                sleep(rng.millis(1000, 3000));
                cluster.broker(victim).restart();
                faults.push((fault, victim));
            }
        }
    }

    // Healed: every replica in sync, a last stretch of produce, then stop and flush.
    let states = cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    epochs.check(
        &states.into_iter().map(Some).collect::<Vec<_>>(),
        &mut problems,
    );
    sleep(Duration::from_secs(2));
    std::fs::write(&stop_path, b"stop").expect("write the stop file");
    let summary = producer_summary(&mut producer, Duration::from_secs(FLUSH_SECS + 60));
    problems.extend(producer_problems(&summary));
    let acked = read_acked(&acked_path);
    assert_eq!(
        Some(acked.len() as i64),
        summary["acked"].as_i64(),
        "every acknowledgement is in the file"
    );
    for partition in 0..i64::from(PARTITIONS) {
        if !acked.iter().any(|a| a.partition == partition) {
            problems.push(format!("nothing was acknowledged in partition {partition}"));
        }
    }

    let log = read_topic(&cluster.bootstrap(), TOPIC, dir.path(), 0.0);
    problems.extend(read_back_problems(&acked, &log));
    cluster.assert_all_running();
    let states = cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    let (gap_partition, gap) = longest_gap(&summary);
    eprintln!(
        "chaos: {} faults {faults:?}; produced {}, acknowledged {}, read back {}; longest pause \
         between acknowledgements {gap} s (partition {gap_partition}); final states {states:?}",
        faults.len(),
        summary["produced"],
        acked.len(),
        log.records.values().map(Vec::len).sum::<usize>()
    );
    assert_no_problems(&format!("chaos (seed {seed})"), &problems, dir);
}

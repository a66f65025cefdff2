//! The controller's word to brokers (issue 9): LeaderAndIsr, UpdateMetadata and StopReplica over
//! each broker's listener, fenced by the controller epoch, and controlled shutdown. Real
//! processes: one ZooKeeper, three `skein broker`s; requests sent as a deposed controller would
//! send them, with skein's own Kafka client.
//!
//! - `a_stale_controller_epoch_is_refused`: a request of an older controller epoch is refused
//!   with STALE_CONTROLLER_EPOCH and changes nothing, one claiming an epoch no controller took is
//!   refused too; a partition state older than the broker's
//!   is refused partition by partition; after the controller fails over, every broker refuses the
//!   deposed controller's epoch.
//! - `controlled_shutdown_moves_leaders_first`: a SIGTERM'd broker (a follower-side one and then
//!   the controller itself) has given up every leadership before its process exits.
//! - `a_follower_behind_the_leaders_log_start_starts_over_there`: a follower down while the
//!   leader's retention deleted what it would fetch next empties its log, starts at the leader's
//!   log start, and rejoins the ISR.

mod harness;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::leader_and_isr_request::{
    LeaderAndIsrPartitionState, LeaderAndIsrTopicState,
};
use kafka_protocol::messages::{BrokerId, LeaderAndIsrRequest, LeaderAndIsrResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use harness::cluster::{Cluster, FAST_FAILOVER, ISR_TIMEOUT};
use harness::{kcat_with_input, skein_cli, wait_until};

/// Kafka's STALE_CONTROLLER_EPOCH and INVALID_REQUEST.
const STALE_CONTROLLER_EPOCH: i16 = 11;
const INVALID_REQUEST: i16 = 42;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn controller_epoch(cluster: &Cluster) -> i32 {
    let path = "/controller_epoch".to_owned();
    let nodes = cluster.znodes(std::slice::from_ref(&path));
    nodes[path.as_str()]["data"]
        .as_i64()
        .unwrap_or_else(|| panic!("no /controller_epoch: {nodes}")) as i32
}

/// Sends a LeaderAndIsr naming `topic`-0 with `leader` in `leader_epoch`, as controller
/// `controller_epoch` would, to the broker on `port`.
fn leader_and_isr(
    port: u16,
    controller_epoch: i32,
    topic: &str,
    topic_id: uuid::Uuid,
    leader: i32,
    leader_epoch: i32,
) -> LeaderAndIsrResponse {
    let request = LeaderAndIsrRequest::default()
        .with_controller_id(BrokerId(leader))
        .with_controller_epoch(controller_epoch)
        .with_broker_epoch(-1)
        .with_topic_states(vec![LeaderAndIsrTopicState::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_topic_id(topic_id)
            .with_partition_states(vec![LeaderAndIsrPartitionState::default()
                .with_partition_index(0)
                .with_controller_epoch(controller_epoch)
                .with_leader(BrokerId(leader))
                .with_leader_epoch(leader_epoch)
                .with_isr(vec![BrokerId(leader)])
                .with_partition_epoch(0)
                .with_replicas(vec![BrokerId(1), BrokerId(2), BrokerId(3)])])]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut conn = skein::client::Connection::connect(&format!("127.0.0.1:{port}"))
            .await
            .expect("connect to the broker");
        conn.send_version(request, 5)
            .await
            .expect("a LeaderAndIsr answer")
    })
}

fn partition_codes(response: &LeaderAndIsrResponse) -> Vec<i16> {
    response
        .topics
        .iter()
        .flat_map(|t| t.partition_errors.iter().map(|p| p.error_code))
        .collect()
}

/// The topic id ZooKeeper holds for `topic`.
fn topic_id(cluster: &Cluster, topic: &str) -> uuid::Uuid {
    let path = format!("/brokers/topics/{topic}");
    let nodes = cluster.znodes(std::slice::from_ref(&path));
    let text = nodes[path.as_str()]["data"]["topic_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no topic id: {nodes}"))
        .to_owned();
    skein::metadata::decode_topic_id(&text).expect("a Kafka topic id")
}

#[test]
fn a_stale_controller_epoch_is_refused() {
    const TOPIC: &str = "fenced";
    let _serial = serial();
    let mut cluster = Cluster::start(FAST_FAILOVER);
    cluster.create_topic(TOPIC, 1);
    let states = cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    let before = states[0].clone();
    let id = topic_id(&cluster, TOPIC);
    let epoch = controller_epoch(&cluster);
    let follower = (1..=3).find(|&b| b != before.leader).unwrap();
    let port = cluster.broker(follower).port();

    // An older controller epoch: refused whole, nothing applied (the broker would otherwise
    // believe itself leader in a far-future leader epoch).
    let response = leader_and_isr(port, epoch - 1, TOPIC, id, follower as i32, 1000);
    assert_eq!(response.error_code, STALE_CONTROLLER_EPOCH, "{response:?}");
    // An epoch no controller has taken (a client posing as a future controller): refused, or
    // the broker would refuse the real controller from then on.
    let response = leader_and_isr(port, epoch + 100, TOPIC, id, follower as i32, 1000);
    assert_eq!(response.error_code, INVALID_REQUEST, "{response:?}");
    // The current epoch, but a leader epoch older than the broker's: that partition is refused.
    let response = leader_and_isr(
        port,
        epoch,
        TOPIC,
        id,
        follower as i32,
        before.leader_epoch as i32 - 1,
    );
    assert_eq!(response.error_code, 0, "{response:?}");
    assert_eq!(
        partition_codes(&response),
        vec![STALE_CONTROLLER_EPOCH],
        "{response:?}"
    );
    // Nothing moved: the real leader still leads, and the follower still follows it.
    let after = cluster.state(TOPIC, 0).expect("a state");
    assert_eq!(after.leader, before.leader);
    assert_eq!(after.leader_epoch, before.leader_epoch);
    assert!(cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT)[0].whole());

    // The controller fails over: the new one takes a higher epoch, and every broker hears of it
    // and refuses the deposed controller's epoch from then on.
    let old_controller = cluster.controller().expect("a controller");
    cluster.broker(old_controller).kill();
    let successor = wait_until(
        "another broker to become controller",
        Duration::from_secs(30),
        || cluster.controller().filter(|&c| c != old_controller),
    );
    let new_epoch = controller_epoch(&cluster);
    assert!(new_epoch > epoch, "epoch {epoch} -> {new_epoch}");
    for broker in (1..=3).filter(|&b| b != old_controller) {
        let port = cluster.broker(broker).port();
        // Bounded: the new controller's first requests may still be on their way.
        let refused = wait_until(
            &format!("broker {broker} to follow controller {successor}"),
            Duration::from_secs(20),
            || {
                let response = leader_and_isr(port, epoch, TOPIC, id, broker as i32, 1000);
                (response.error_code == STALE_CONTROLLER_EPOCH).then_some(response)
            },
        );
        assert_eq!(refused.error_code, STALE_CONTROLLER_EPOCH);
    }
    cluster.broker(old_controller).restart();
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
}

/// The partitions of `topic` ZooKeeper names `broker` leader of.
fn led_by(cluster: &Cluster, topic: &str, partitions: u32, broker: i64) -> Vec<u32> {
    cluster
        .states(topic, partitions)
        .iter()
        .enumerate()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.leader == broker))
        .map(|(p, _)| p as u32)
        .collect()
}

#[test]
fn controlled_shutdown_moves_leaders_first() {
    const TOPIC: &str = "handover";
    const PARTITIONS: u32 = 6;
    let _serial = serial();
    let mut cluster = Cluster::start(FAST_FAILOVER);
    cluster.create_topic(TOPIC, PARTITIONS);
    cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);

    // A broker that is not the controller asks the controller over the network; then the
    // controller stops, and hands its own leaderships over before it resigns.
    let controller = cluster.controller().expect("a controller");
    let other = (1..=3).find(|&b| b != controller).unwrap();
    for victim in [other, controller] {
        // Make sure the victim leads something: preferred leaders are spread, so it normally
        // does; if not, the check below is still that it leads nothing after stopping.
        let led = led_by(&cluster, TOPIC, PARTITIONS, victim);
        let stopping = Instant::now();
        let status = cluster.broker(victim).stop();
        let took = stopping.elapsed();
        assert!(
            status.is_some_and(|s| s.success()),
            "broker {victim} did not stop cleanly: {status:?}"
        );
        // Read the moment the process is gone: nothing may still be led by it.
        let still = led_by(&cluster, TOPIC, PARTITIONS, victim);
        assert!(
            still.is_empty(),
            "broker {victim} (leader of {led:?}) exited after {took:?} still leading {still:?}"
        );
        let log = cluster.broker(victim).log_text();
        if victim != controller {
            assert!(
                log.contains("the controller moved every leadership away"),
                "broker {victim} log says nothing of its controlled shutdown:\n{}",
                cluster.broker(victim).log_tail()
            );
        }
        eprintln!("broker {victim} handed over {led:?} and stopped in {took:.1?}");
        cluster.broker(victim).restart();
        cluster.wait_isr_whole(TOPIC, PARTITIONS, ISR_TIMEOUT);
    }
}

/// The base offset of the first segment in a partition directory (its log start).
fn first_segment(dir: &std::path::Path) -> Option<i64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        })
        .min()
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    const TOPIC: &str = "trimmed";
    let _serial = serial();
    let mut settings = FAST_FAILOVER.to_vec();
    settings.push(("log.retention.check.interval.ms", "300"));
    let mut cluster = Cluster::start(&settings);
    let bootstrap = cluster.bootstrap();
    skein_cli(&[
        "topics",
        "create",
        "--bootstrap",
        &bootstrap,
        "--topic",
        TOPIC,
        "--partitions",
        "1",
        "--replication-factor",
        "3",
        "--config",
        "segment.bytes=2000",
        "--config",
        "retention.bytes=4000",
        "--config",
        "min.insync.replicas=1",
    ]);
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    let produce = |from: usize, to: usize| {
        let input: String = (from..to)
            .map(|i| format!("record-{i:06}-{}\n", "x".repeat(80)))
            .collect();
        kcat_with_input(
            &[
                // Batches of 10 records (~1 KB): a batch larger than segment.bytes is refused.
                "-b",
                &bootstrap,
                "-t",
                TOPIC,
                "-P",
                "-p",
                "0",
                "-X",
                "acks=all",
                "-X",
                "batch.num.messages=10",
            ],
            input.as_bytes(),
        );
    };
    produce(0, 20);
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    let leader = cluster.leader(TOPIC, 0);
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    let follower_dir = cluster
        .broker(follower)
        .log_dir()
        .join(format!("{TOPIC}-0"));
    let leader_dir = cluster.broker(leader).log_dir().join(format!("{TOPIC}-0"));
    cluster.broker(follower).kill();

    // While it is down, retention at the leader deletes the segments it would fetch next.
    produce(20, 400);
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader_start = loop {
        if let Some(start) = first_segment(&leader_dir).filter(|&start| start > 20) {
            break start;
        }
        let listing: Vec<String> = std::fs::read_dir(&leader_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the leader's retention did not delete past offset 20 within 30 s; {}: {listing:?}\n{}",
            leader_dir.display(),
            cluster.broker(leader).log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    cluster.broker(follower).restart();
    cluster.wait_isr_whole(TOPIC, 1, ISR_TIMEOUT);
    let log = cluster.broker(follower).log_text();
    assert!(
        log.contains("emptying the log to start there"),
        "the follower says it started over:\n{}",
        cluster.broker(follower).log_tail()
    );
    let start = first_segment(&follower_dir).expect("the follower's log");
    assert!(
        start >= leader_start,
        "the follower's log starts at {start}, below the leader's {leader_start}"
    );
}

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

mod harness;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::leader_and_isr_request::{
    LeaderAndIsrPartitionState, LeaderAndIsrTopicState,
};
use kafka_protocol::messages::{BrokerId, LeaderAndIsrRequest, LeaderAndIsrResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use harness::cluster::{Cluster, FAST_FAILOVER, ISR_TIMEOUT};
use harness::wait_until;

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

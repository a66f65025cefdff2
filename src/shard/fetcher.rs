//! Replica fetchers: how a shard's follower replicas keep up with their leaders. One fetcher per
//! (leader broker, shard), running on the shard that owns the follower replicas, with one
//! connection to the leader's listener that carries every partition this shard follows there, as
//! Kafka's `ReplicaFetcherThread` does with `num.replica.fetchers` = one per shard.
//!
//! A partition that starts following (a new leader, or a new leader epoch) first asks the leader
//! where its own latest epoch ends (OffsetForLeaderEpoch, KIP-101/279) and truncates a divergent
//! tail there; then it is fetched (Fetch with this broker's id as replica id, from its log end)
//! and the leader's batches are appended byte for byte, keeping the leader's offsets. The
//! leader's high watermark comes back with every answer. The connection is glommio's, so a
//! fetcher is just another task on the shard's executor.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::{decode_allowance, Request, StrBytes};
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::Shard;
use crate::client::pipeline::{decode_response, encode_request};
use crate::metadata::{Metadata, TopicPartition};
use crate::record::batch::split_batches;

/// The Fetch version followers send: the last without topic ids that skein serves.
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v3 carries the replica id and the current leader epoch.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// Beyond the fetch's own wait: how long an answer may take before the connection is dropped
/// (Kafka's `replica.socket.timeout.ms` default).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to a leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one followed partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Followed {
    /// The leader epoch this broker follows the partition in.
    epoch: i32,
    /// Its tail was checked against the leader in this epoch (truncated where it diverged).
    truncated: bool,
}

/// One fetcher: the partitions this shard follows on one leader.
struct Fetcher {
    leader: i32,
    partitions: RefCell<BTreeMap<TopicPartition, Followed>>,
    stopped: Cell<bool>,
}

/// A shard's fetchers, by leader broker id.
#[derive(Default)]
pub struct Fetchers {
    by_leader: RefCell<HashMap<i32, Rc<Fetcher>>>,
}

impl Fetchers {
    /// Makes the fetchers match the partitions this shard now follows: partitions join the
    /// fetcher of their leader (to be checked for divergence first when their epoch is new),
    /// leave the others, and fetchers with nothing left stop.
    pub fn reconcile(&self, shard: &Rc<Shard>, metadata: &Metadata) {
        let mut wanted: HashMap<i32, BTreeMap<TopicPartition, i32>> = HashMap::new();
        for partition in shard.partitions() {
            let Some(leader) = partition.following() else {
                continue;
            };
            if metadata.brokers.contains_key(&leader) {
                wanted
                    .entry(leader)
                    .or_default()
                    .insert(partition.tp.clone(), partition.leader_epoch());
            }
        }
        let mut by_leader = self.by_leader.borrow_mut();
        by_leader.retain(|leader, fetcher| {
            let keep = wanted.contains_key(leader);
            if !keep {
                fetcher.stopped.set(true);
            }
            keep
        });
        for (leader, partitions) in wanted {
            let fetcher = by_leader.entry(leader).or_insert_with(|| {
                let fetcher = Rc::new(Fetcher {
                    leader,
                    partitions: RefCell::new(BTreeMap::new()),
                    stopped: Cell::new(false),
                });
                info!(
                    "shard {}: replica fetcher for leader {leader} started",
                    shard.id
                );
                glommio::spawn_local(run(shard.clone(), fetcher.clone())).detach();
                fetcher
            });
            let mut current = fetcher.partitions.borrow_mut();
            current.retain(|tp, _| partitions.contains_key(tp));
            for (tp, epoch) in partitions {
                let entry = current.entry(tp).or_insert(Followed {
                    epoch,
                    truncated: false,
                });
                if entry.epoch != epoch {
                    *entry = Followed {
                        epoch,
                        truncated: false,
                    };
                }
            }
        }
    }

    /// Stops every fetcher (the shard is shutting down).
    pub fn stop_all(&self) {
        for (_, fetcher) in self.by_leader.borrow_mut().drain() {
            fetcher.stopped.set(true);
        }
    }
}

/// A connection to a leader, Kafka-framed, one request at a time.
struct LeaderConnection {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
    max_response_bytes: usize,
    buf: BytesMut,
}

impl LeaderConnection {
    async fn connect(addr: &str, me: i32, max_response_bytes: usize) -> anyhow::Result<Self> {
        let stream = futures::select! {
            s = TcpStream::connect(addr).fuse() => s.map_err(|e| anyhow::anyhow!("{e}"))?,
            _ = glommio::timer::sleep(CONNECT_TIMEOUT).fuse() => anyhow::bail!("connect timed out"),
        };
        stream
            .set_nodelay(true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(LeaderConnection {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(format!("skein-replica-{me}")),
            max_response_bytes,
            buf: BytesMut::with_capacity(4096),
        })
    }

    async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> anyhow::Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        encode_request(
            &mut self.buf,
            request,
            version,
            correlation_id,
            &self.client_id,
        )?;
        let exchange = async {
            self.stream.write_all(&self.buf).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if len < 4 || len as usize > self.max_response_bytes {
                anyhow::bail!("response frame of {len} bytes");
            }
            let mut frame = BytesMut::zeroed(len as usize);
            self.stream.read_exact(&mut frame).await?;
            let frame: Bytes = frame.freeze();
            // Bounded like a request: a peer's answer is still bytes off the network.
            let allowance = frame.len().saturating_mul(8).saturating_add(1 << 20);
            let (decoded, _) = decode_allowance::with(allowance, || {
                decode_response::<R>(frame, correlation_id, version)
            });
            decoded
        };
        futures::select! {
            r = exchange.fuse() => r,
            _ = glommio::timer::sleep(timeout).fuse() => anyhow::bail!("no answer within {timeout:?}"),
        }
    }
}

/// The fetcher's task: until stopped, keeps a connection to the leader and alternates divergence
/// checks for newly followed partitions with fetches for the rest.
async fn run(shard: Rc<Shard>, fetcher: Rc<Fetcher>) {
    let config = shard.config.clone();
    let me = config.broker_id;
    let backoff = Duration::from_millis(config.replica_fetch_backoff_ms.max(10) as u64);
    let max_response = config.replica_fetch_response_max_bytes as usize + (1 << 20);
    let mut connection: Option<LeaderConnection> = None;
    while !fetcher.stopped.get() {
        if fetcher.partitions.borrow().is_empty() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if connection.is_none() {
            let metadata = shard.metadata();
            let Some(broker) = metadata.brokers.get(&fetcher.leader) else {
                glommio::timer::sleep(backoff).await;
                continue;
            };
            let addr = format!("{}:{}", broker.host, broker.port);
            match LeaderConnection::connect(&addr, me, max_response).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    debug!(
                        "replica fetcher: cannot connect to leader {} at {addr}: {e}",
                        fetcher.leader
                    );
                    glommio::timer::sleep(backoff).await;
                    continue;
                }
            }
        }
        let conn = connection.as_mut().expect("connected above");
        let unchecked: HashMap<TopicPartition, i32> = fetcher
            .partitions
            .borrow()
            .iter()
            .filter(|(_, f)| !f.truncated)
            .map(|(tp, f)| (tp.clone(), f.epoch))
            .collect();
        let step = if unchecked.is_empty() {
            fetch(&shard, &fetcher, conn).await
        } else {
            truncate(&shard, &fetcher, conn, unchecked).await
        };
        match step {
            Ok(true) => {}
            Ok(false) => glommio::timer::sleep(backoff).await,
            Err(e) => {
                if !fetcher.stopped.get() {
                    warn!(
                        "shard {}: replica fetcher for leader {}: {e}; reconnecting",
                        shard.id, fetcher.leader
                    );
                }
                connection = None;
                glommio::timer::sleep(backoff).await;
            }
        }
    }
    info!(
        "shard {}: replica fetcher for leader {} stopped",
        shard.id, fetcher.leader
    );
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Whether `tp` is still followed in `epoch` by this fetcher.
fn still_followed(fetcher: &Fetcher, tp: &TopicPartition, epoch: i32) -> bool {
    fetcher
        .partitions
        .borrow()
        .get(tp)
        .is_some_and(|f| f.epoch == epoch)
}

/// Asks the leader where each partition's latest local epoch ends and cuts the log there (KIP-279):
/// the leader's answer is (the largest epoch it has <= ours, where that epoch ends in its log);
/// the cut is the smaller of that and where that epoch ends here. With no epochs to compare, the
/// follower cuts at its high watermark, as Kafka did before KIP-101.
async fn truncate(
    shard: &Rc<Shard>,
    fetcher: &Rc<Fetcher>,
    conn: &mut LeaderConnection,
    unchecked: HashMap<TopicPartition, i32>,
) -> anyhow::Result<bool> {
    let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut by_high_watermark = Vec::new();
    for (tp, epoch) in &unchecked {
        let Some(partition) = shard.partition(tp) else {
            continue;
        };
        match partition.latest_epoch() {
            Some(latest) => topics.entry(tp.topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(*epoch)
                    .with_leader_epoch(latest),
            ),
            None => by_high_watermark.push((tp.clone(), *epoch)),
        }
    }
    let mut progressed = false;
    for (tp, epoch) in by_high_watermark {
        if let Some(partition) = shard.partition(&tp) {
            partition.truncate_to(partition.high_watermark()).await?;
            mark_truncated(fetcher, &tp, epoch);
            progressed = true;
        }
    }
    if topics.is_empty() {
        return Ok(progressed);
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.config.broker_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(name(&topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response: OffsetForLeaderEpochResponse = conn
        .send(&request, OFFSET_FOR_LEADER_EPOCH_VERSION, SOCKET_TIMEOUT)
        .await?;
    for topic in response.topics {
        for p in topic.partitions {
            let tp = TopicPartition {
                topic: topic.topic.0.to_string(),
                partition: p.partition,
            };
            let Some(&epoch) = unchecked.get(&tp) else {
                continue;
            };
            let Some(partition) = shard.partition(&tp) else {
                continue;
            };
            if p.error_code != 0 {
                debug!("{tp}: OffsetForLeaderEpoch error {}", p.error_code);
                continue;
            }
            if !still_followed(fetcher, &tp, epoch) {
                continue;
            }
            let local_end = if p.end_offset < 0 {
                None
            } else {
                Some(partition.end_offset_for_epoch(p.leader_epoch)?.1)
            };
            let cut = divergence_cut(p.end_offset, local_end, partition.high_watermark());
            let before = partition.log_end_offset();
            partition.truncate_to(cut).await?;
            if cut < before {
                info!(
                    "{tp}: divergent tail cut at {cut} (leader {} epoch {} ends at {})",
                    fetcher.leader, p.leader_epoch, p.end_offset
                );
            }
            mark_truncated(fetcher, &tp, epoch);
            progressed = true;
        }
    }
    Ok(progressed)
}

/// Where a follower cuts its log after the leader answered OffsetForLeaderEpoch (KIP-279):
/// `leader_end` is the end offset the leader gave for the largest epoch both may share (its
/// answer's epoch), `local_end` this replica's own end offset for that epoch. The log agrees
/// with the leader's up to the smaller; past it the tail diverges. A leader that knows no epoch
/// this old (`leader_end` < 0: its log starts after ours ended) leaves only the high watermark
/// as known-good.
fn divergence_cut(leader_end: i64, local_end: Option<i64>, high_watermark: i64) -> i64 {
    match local_end {
        _ if leader_end < 0 => high_watermark,
        Some(local_end) if local_end >= 0 => leader_end.min(local_end),
        _ => leader_end,
    }
}

fn mark_truncated(fetcher: &Fetcher, tp: &TopicPartition, epoch: i32) {
    if let Some(f) = fetcher.partitions.borrow_mut().get_mut(tp) {
        if f.epoch == epoch {
            f.truncated = true;
        }
    }
}

/// One Fetch of every checked partition from its log end; appends what comes back. `Ok(false)`
/// when every partition answered with an error (wait before asking again).
async fn fetch(
    shard: &Rc<Shard>,
    fetcher: &Rc<Fetcher>,
    conn: &mut LeaderConnection,
) -> anyhow::Result<bool> {
    let config = &shard.config;
    let followed: HashMap<TopicPartition, i32> = fetcher
        .partitions
        .borrow()
        .iter()
        .map(|(tp, f)| (tp.clone(), f.epoch))
        .collect();
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, epoch) in &followed {
        let Some(partition) = shard.partition(tp) else {
            continue;
        };
        topics.entry(tp.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(partition.log_end_offset())
                .with_log_start_offset(partition.log_start_offset())
                .with_partition_max_bytes(config.replica_fetch_max_bytes),
        );
    }
    if topics.is_empty() {
        return Ok(false);
    }
    let wait = config.replica_fetch_wait_max_ms.max(0);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(config.broker_id))
        .with_max_wait_ms(wait as i32)
        .with_min_bytes(1)
        .with_max_bytes(config.replica_fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    FetchTopic::default()
                        .with_topic(name(&topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response: FetchResponse = conn
        .send(
            &request,
            FETCH_VERSION,
            Duration::from_millis(wait as u64) + SOCKET_TIMEOUT,
        )
        .await?;
    let mut any_ok = false;
    for topic in response.responses {
        for p in topic.partitions {
            let tp = TopicPartition {
                topic: topic.topic.0.to_string(),
                partition: p.partition_index,
            };
            let Some(&epoch) = followed.get(&tp) else {
                continue;
            };
            let Some(partition) = shard.partition(&tp) else {
                continue;
            };
            if !still_followed(fetcher, &tp, epoch) {
                continue;
            }
            match ResponseError::try_from_code(p.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange)
                    if partition.log_end_offset() < p.log_start_offset =>
                {
                    // Below the leader's log start: what we would fetch next is gone there
                    // (retention), so nothing of our log continues the leader's. Kafka's
                    // handleOutOfRangeError: truncate fully and start at the leader's start.
                    warn!(
                        "{tp}: log end {} is below leader {}'s log start {}; emptying the log to start there",
                        partition.log_end_offset(),
                        fetcher.leader,
                        p.log_start_offset
                    );
                    if let Err(e) = partition
                        .truncate_fully_and_start_at(p.log_start_offset)
                        .await
                    {
                        warn!("{tp}: cannot empty the log: {e}");
                    }
                    continue;
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    // Our log end is past the leader's (a tail the epoch check missed): check the
                    // tail against the leader again.
                    warn!(
                        "{tp}: fetch offset {} out of range at leader {} (log start {}); checking the tail again",
                        partition.log_end_offset(),
                        fetcher.leader,
                        p.log_start_offset
                    );
                    if let Some(f) = fetcher.partitions.borrow_mut().get_mut(&tp) {
                        f.truncated = false;
                    }
                    continue;
                }
                Some(e) => {
                    debug!("{tp}: fetch from leader {}: {e:?}", fetcher.leader);
                    continue;
                }
            }
            any_ok = true;
            if let Some(records) = p.records.filter(|r| !r.is_empty()) {
                let batches = split_batches(&records)
                    .map_err(|e| anyhow::anyhow!("{tp}: leader sent a bad batch: {e}"))?;
                if let Err(e) = partition.append_replicated(batches).await {
                    // A role change or a closed log: the next snapshot decides what happens.
                    warn!(
                        "{tp}: cannot append batches replicated from leader {}: {e}",
                        fetcher.leader
                    );
                    continue;
                }
            }
            partition.follow_high_watermark(p.high_watermark);
        }
    }
    Ok(any_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, BatchSpec};
    use crate::record::Batch;
    use crate::storage::log::{AppendOrigin, AppendOutcome, Log, LogConfig};

    fn records(fill: u8) -> Batch {
        batch(&BatchSpec {
            records: 2,
            value_bytes: 40,
            fill,
            ..BatchSpec::default()
        })
    }

    /// Appends one batch as leader in `epoch`; returns the stored batch as a follower fetches it.
    fn lead(log: &mut Log, epoch: i32, fill: u8) -> Batch {
        let base = log.log_end_offset();
        match log.append(&[records(fill)], epoch, 0).expect("append") {
            AppendOutcome::Appended { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
        let bytes = log
            .read(base, usize::MAX, i64::MAX, true)
            .expect("read")
            .to_bytes()
            .expect("bytes");
        let mut batches = crate::record::split_batches(&bytes).expect("whole batches");
        assert_eq!(batches.len(), 1);
        batches.pop().expect("one batch")
    }

    fn replicate(log: &mut Log, batch: &Batch) {
        log.append_from(std::slice::from_ref(batch), AppendOrigin::Replica, 0)
            .expect("replica append");
    }

    fn contents(log: &Log) -> Vec<u8> {
        log.read(0, usize::MAX, i64::MAX, true)
            .expect("read")
            .to_bytes()
            .expect("bytes")
            .to_vec()
    }

    /// Kafka's classic divergence: the follower led briefly in epoch 1 and wrote records nobody
    /// else has; the new leader (epoch 2) never saw them. OffsetForLeaderEpoch(1) at the leader
    /// ends epoch 0 where epoch 2 begins; the follower cuts there and then holds exactly the
    /// leader's log, byte for byte, epochs included.
    #[test]
    fn a_divergent_tail_is_cut_where_the_leaders_epoch_ends() {
        let (leader_dir, follower_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = Log::open(leader_dir.path(), LogConfig::default()).unwrap();
        let mut follower = Log::open(follower_dir.path(), LogConfig::default()).unwrap();
        for fill in 0..3 {
            let shared = lead(&mut leader, 0, fill);
            replicate(&mut follower, &shared);
        }
        let agreed = leader.log_end_offset();
        // The follower's own epoch-1 tail, and the leader's epoch-2 records.
        lead(&mut follower, 1, 0xEE);
        lead(&mut follower, 1, 0xEF);
        let mut leaders_tail = vec![lead(&mut leader, 2, 7)];
        assert!(follower.log_end_offset() > agreed);

        let asked = follower.epochs().latest_epoch().expect("an epoch");
        assert_eq!(asked, 1);
        let (answered_epoch, leader_end) = leader.end_offset_for_epoch(asked);
        assert_eq!((answered_epoch, leader_end), (0, agreed));
        let (_, local_end) = follower.end_offset_for_epoch(answered_epoch);
        let cut = divergence_cut(leader_end, Some(local_end), 0);
        assert_eq!(cut, agreed);
        follower.truncate_to(cut).unwrap();
        assert_eq!(follower.log_end_offset(), agreed);
        assert_eq!(follower.epochs().latest_epoch(), Some(0));

        for batch in leaders_tail.drain(..) {
            replicate(&mut follower, &batch);
        }
        assert_eq!(contents(&follower), contents(&leader));
        assert_eq!(
            follower.end_offset_for_epoch(2),
            leader.end_offset_for_epoch(2)
        );
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    }

    #[test]
    fn cuts_follow_kafkas_rules() {
        // The leader's epoch ends before ours: its end.
        assert_eq!(divergence_cut(10, Some(15), 3), 10);
        // Ours ends first (we missed the end of that epoch): ours.
        assert_eq!(divergence_cut(15, Some(10), 3), 10);
        // We do not know the epoch it answered: its end.
        assert_eq!(divergence_cut(10, Some(-1), 3), 10);
        // The leader knows no epoch this old: the high watermark.
        assert_eq!(divergence_cut(-1, None, 3), 3);
    }
}

//! The group coordinator of one shard: the groups of every `__consumer_offsets` partition this
//! shard leads. A group lives on the shard that owns partition `partition_for(group)` of
//! `__consumer_offsets` (Kafka's placement), so its state needs no lock: handlers on any shard
//! route group requests here with `invoke_on`.
//!
//! Offsets and group metadata are written to that partition (Kafka's record formats,
//! `group::log_format`) before they take effect, and loaded back from it when the shard opens
//! the partition; until a partition is loaded its groups answer COORDINATOR_LOAD_IN_PROGRESS.
//! Every 100 ms [`tick`] checks the groups' deadlines (sessions, rebalance and initial delays);
//! every `offsets.retention.check.interval.ms` it expires offsets of empty groups.
//!
//! Bounds: `group.max.count` groups per broker shard, `group.max.size` members per group, and
//! one committed offset per existing partition per group (commits for partitions that do not
//! exist are refused, as Kafka does).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use crate::storage::AppendOutcome;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::{Partition, Shard};
use crate::clock::now_ms;
use crate::config::GroupConfig;
use crate::group::log_format::{self, Key, OffsetValue};
use crate::group::state::{
    Committed, GroupDescription, JoinRequest, JoinResult, Limits, SyncRequest, SyncResult,
};
use crate::group::{Group, GroupState, OFFSETS_TOPIC};
use crate::metadata::TopicPartition;
use crate::record::{BatchBuilder, BatchHeader};

/// How often group deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Bytes of member metadata and assignments one shard's groups may hold together; a join that
/// would pass it is refused (COORDINATOR_NOT_AVAILABLE, retriable) and logged.
pub const GROUP_METADATA_BUDGET: usize = 256 << 20;

/// How often (in ticks) the shard's group metadata bytes are counted again.
const RECOUNT_TICKS: u64 = 10;

/// How often (in ticks) the coordinator looks for a partition to rewrite (see [`rewrite`]).
const REWRITE_CHECK_TICKS: u64 = 20;

/// Bytes read from `__consumer_offsets` at a time while loading.
const LOAD_CHUNK_BYTES: usize = 1 << 20;

/// The most a stored batch may inflate to while loading.
const LOAD_INFLATE_LIMIT: u64 = 64 << 20;

enum Slot {
    Loading,
    Loaded(HashMap<String, Group>),
}

/// Every group of every loaded partition.
fn loaded_groups(partitions: &HashMap<i32, Slot>) -> impl Iterator<Item = &Group> {
    partitions
        .values()
        .filter_map(|slot| match slot {
            Slot::Loaded(groups) => Some(groups.values()),
            Slot::Loading => None,
        })
        .flatten()
}

/// A record of `__consumer_offsets`: key, and value or tombstone.
type Record = (Bytes, Option<Bytes>);

/// Why a group request cannot be served here.
pub type NotHere = ResponseError;

pub struct Coordinator {
    config: GroupConfig,
    limits: Limits,
    /// By `__consumer_offsets` partition.
    partitions: RefCell<HashMap<i32, Slot>>,
    next_expiry_ms: Cell<i64>,
    /// When a refused new group was last logged (at most one line per 10 s).
    last_refusal_logged_ms: Cell<i64>,
    /// Appends to each partition not yet complete (see [`rewrite`]).
    in_flight: RefCell<HashMap<i32, usize>>,
    /// Bytes the last rewrite of each partition wrote (see [`rewrite_due`]).
    rewritten_bytes: RefCell<HashMap<i32, u64>>,
    /// A rewrite is under way (one at a time per shard).
    rewriting: Cell<bool>,
    /// Member metadata and assignment bytes of every group here: counted every
    /// [`RECOUNT_TICKS`], raised by each join in between (see [`GROUP_METADATA_BUDGET`]).
    metadata_bytes: Cell<usize>,
}

/// A group as a metrics scrape sees it: state, members and committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGauges {
    pub group: String,
    pub state: GroupState,
    pub members: usize,
    /// (topic, partition, committed offset).
    pub committed: Vec<(String, i32, i64)>,
}

/// One group's committed offset as OffsetFetch reports it.
pub type FetchedOffset = ((String, i32), Option<Committed>);

/// A listed group: id, protocol type, state.
pub type ListedGroup = (String, String, GroupState);

impl Coordinator {
    pub fn new(config: &GroupConfig) -> Coordinator {
        Coordinator {
            limits: Limits {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                max_size: config.group_max_size,
            },
            next_expiry_ms: Cell::new(now_ms() + config.offsets_retention_check_interval_ms),
            last_refusal_logged_ms: Cell::new(0),
            in_flight: RefCell::new(HashMap::new()),
            rewritten_bytes: RefCell::new(HashMap::new()),
            rewriting: Cell::new(false),
            metadata_bytes: Cell::new(0),
            config: config.clone(),
            partitions: RefCell::new(HashMap::new()),
        }
    }

    /// Runs `f` on group `id` of partition `partition`; `create` makes an Empty group when
    /// there is none (`Ok(None)` from `f`'s caller's view is "no such group" otherwise).
    fn with_group<R>(
        &self,
        partition: i32,
        id: &str,
        create: bool,
        f: impl FnOnce(Option<&mut Group>) -> R,
    ) -> Result<R, NotHere> {
        let mut partitions = self.partitions.borrow_mut();
        let inserting = create
            && matches!(partitions.get(&partition), Some(Slot::Loaded(groups)) if !groups.contains_key(id));
        let full = inserting && loaded_groups(&partitions).count() >= self.config.group_max_count;
        match partitions.get_mut(&partition) {
            None => Err(ResponseError::NotCoordinator),
            Some(Slot::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            Some(Slot::Loaded(groups)) => {
                if inserting {
                    if full {
                        let now = now_ms();
                        if now - self.last_refusal_logged_ms.get() >= 10_000 {
                            self.last_refusal_logged_ms.set(now);
                            warn!(
                                "refusing group '{id}': this shard coordinates group.max.count \
                                 ({}) groups already",
                                self.config.group_max_count
                            );
                        }
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                    groups.insert(id.to_owned(), Group::new(id.to_owned(), now_ms()));
                }
                Ok(f(groups.get_mut(id)))
            }
        }
    }

    fn in_flight(&self, partition: i32) -> usize {
        self.in_flight
            .borrow()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn in_flight_change(&self, partition: i32, by: isize) {
        let mut in_flight = self.in_flight.borrow_mut();
        let count = in_flight.entry(partition).or_insert(0);
        *count = count
            .checked_add_signed(by)
            .expect("in-flight appends never go negative");
    }

    /// Groups of every loaded partition, for ListGroups.
    pub fn list(&self) -> Vec<ListedGroup> {
        let partitions = self.partitions.borrow();
        loaded_groups(&partitions)
            .filter(|g| g.state() != GroupState::Dead)
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type().unwrap_or_default().to_owned(),
                    g.state(),
                )
            })
            .collect()
    }

    /// Every group's gauges, for a metrics scrape.
    pub fn gauges(&self) -> Vec<GroupGauges> {
        let partitions = self.partitions.borrow();
        loaded_groups(&partitions)
            .map(|g| GroupGauges {
                group: g.id.clone(),
                state: g.state(),
                members: g.member_count(),
                committed: g
                    .offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.offset))
                    .collect(),
            })
            .collect()
    }

    /// Whether some partition is still loading (ListGroups reports it).
    pub fn is_loading(&self) -> bool {
        self.partitions
            .borrow()
            .values()
            .any(|slot| matches!(slot, Slot::Loading))
    }

    pub fn describe(&self, partition: i32, id: &str) -> Result<Option<GroupDescription>, NotHere> {
        self.with_group(partition, id, false, |g| g.map(|g| g.describe()))
    }

    pub fn heartbeat(
        &self,
        partition: i32,
        id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        self.with_group(partition, id, false, |g| match g {
            Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms()),
            None => Some(ResponseError::UnknownMemberId),
        })
        .unwrap_or_else(Some)
    }

    /// Committed offsets of `id`: those of `which`, or every one when `which` is `None`.
    pub fn fetch_offsets(
        &self,
        partition: i32,
        id: &str,
        which: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<FetchedOffset>, NotHere> {
        self.with_group(partition, id, false, |g| match (g, which) {
            (Some(g), None) => g
                .offsets
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            (Some(g), Some(which)) => which
                .into_iter()
                .map(|k| {
                    let v = g.offsets.get(&k).cloned();
                    (k, v)
                })
                .collect(),
            (None, None) => Vec::new(),
            (None, Some(which)) => which.into_iter().map(|k| (k, None)).collect(),
        })
    }

    /// Forgets the groups of a partition this shard no longer leads; their waiting members are
    /// answered NOT_COORDINATOR (their channels close) and find the new coordinator.
    pub fn unload(&self, partition: i32) {
        if self.partitions.borrow_mut().remove(&partition).is_some() {
            info!("{OFFSETS_TOPIC}-{partition}: groups unloaded");
        }
    }
}

/// The `__consumer_offsets` partition of `partition`, if this shard holds it.
fn offsets_partition(shard: &Shard, partition: i32) -> Option<Rc<Partition>> {
    shard.partition(&TopicPartition {
        topic: OFFSETS_TOPIC.to_owned(),
        partition,
    })
}

/// Batches of `records` (key, value or tombstone), each at most `max_batch_bytes` unless a
/// single record is larger (then it is alone in its batch, and refused by the caller's size
/// check).
fn batches(records: &[Record], max_batch_bytes: usize) -> anyhow::Result<Vec<Bytes>> {
    let now = now_ms();
    let mut out = Vec::new();
    let mut builder = BatchBuilder::new(Compression::None, 256);
    for (key, value) in records {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len) + 32;
        if !builder.is_empty() && builder.size_bytes() + size > max_batch_bytes {
            out.push(builder.finish()?);
        }
        match value {
            Some(value) => builder.append(now, Some(key), &[value]),
            None => builder.append_tombstone(now, key),
        }
    }
    if !builder.is_empty() {
        out.push(builder.finish()?);
    }
    Ok(out)
}

/// Appends `records` to `__consumer_offsets`-`partition`, in order, as one append (so nothing
/// else lands between its batches). Counted in flight until it completes: a rewrite waits for
/// none to be (see [`rewrite`]).
async fn append(
    shard: &Rc<Shard>,
    partition: i32,
    records: Vec<Record>,
) -> Result<(), ResponseError> {
    if records.is_empty() {
        return Ok(());
    }
    let Some(log) = offsets_partition(shard, partition) else {
        return Err(ResponseError::NotCoordinator);
    };
    let max = shard
        .metadata()
        .topic(OFFSETS_TOPIC)
        .map_or(1 << 20, |t| t.config.values.max_message_bytes)
        .max(1024) as usize;
    let batches = batches(&records, max / 2).map_err(|_| ResponseError::UnknownServerError)?;
    let mut parsed = Vec::with_capacity(batches.len());
    for bytes in batches {
        if bytes.len() > max {
            return Err(ResponseError::RecordListTooLarge);
        }
        let header = BatchHeader::parse(&bytes).map_err(|_| ResponseError::UnknownServerError)?;
        parsed.push(crate::record::Batch { header, bytes });
    }
    let coordinator = &shard.coordinator;
    coordinator.in_flight_change(partition, 1);
    let appended = match log.append(parsed).await {
        // As Kafka's coordinator appends with acks=all: what it answers must survive the
        // leader's failover.
        Ok(outcome) => {
            let (AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. }) = outcome;
            let reached = log.wait_for_high_watermark(last_offset + 1);
            futures::select! {
                r = futures::FutureExt::fuse(reached) => match r {
                    Ok(Ok(())) | Ok(Err(ResponseError::NotEnoughReplicasAfterAppend)) => Ok(()),
                    _ => Err(ResponseError::NotCoordinator),
                },
                // Kafka's coordinator answers a write its replicas did not take in time so.
                _ = futures::FutureExt::fuse(glommio::timer::sleep(REPLICATION_WAIT)) => {
                    Err(ResponseError::CoordinatorNotAvailable)
                }
            }
        }
        Err(e) => {
            warn!("{OFFSETS_TOPIC}-{partition}: cannot write: {e}");
            Err(ResponseError::NotCoordinator)
        }
    };
    coordinator.in_flight_change(partition, -1);
    match appended {
        Ok(()) => Ok(()),
        // Kafka's mapping for a failed write of the coordinator: find it again.
        Err(e) => Err(e),
    }
}

/// How long a coordinator write waits for the offsets topic's ISR (Kafka's
/// `offsets.commit.timeout.ms`).
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps a `__consumer_offsets` partition bounded until log compaction exists: once it holds
/// at least three segments and four times what its last rewrite wrote, every live group and
/// committed offset is written again at the log end and the segments wholly below that point
/// are deleted. Loading replays the log in order, so the rewritten values win over anything
/// older still left in the segment where the rewrite starts.
///
/// Correct only if the state rewritten is the state of every record before it: so it runs when
/// no write of this coordinator to the partition is in flight (its effect on the state is
/// applied in the same step as its completion), computes the records and queues the append in
/// one step, and nothing else writes to the partition (clients may not produce to it).
async fn rewrite(shard: Rc<Shard>, partition: i32) {
    let Some(log) = offsets_partition(&shard, partition) else {
        return;
    };
    let coordinator = &shard.coordinator;
    if coordinator.in_flight(partition) > 0 || coordinator.rewriting.get() {
        return;
    }
    let records: Vec<Record> = {
        let partitions = coordinator.partitions.borrow();
        let Some(Slot::Loaded(groups)) = partitions.get(&partition) else {
            return;
        };
        let mut records = Vec::new();
        for g in groups.values().filter(|g| g.state() != GroupState::Dead) {
            if g.generation() > 0 || g.protocol_type().is_some() {
                records.push((
                    log_format::group_key(&g.id),
                    Some(log_format::group_value(&g.stored_value())),
                ));
            }
            for ((topic, p), committed) in &g.offsets {
                records.push((
                    log_format::offset_key(&g.id, topic, *p),
                    Some(log_format::offset_value(committed)),
                ));
            }
        }
        records
    };
    let start = log.log_end_offset();
    let bytes: u64 = records
        .iter()
        .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Bytes::len)) as u64)
        .sum();
    coordinator.rewriting.set(true);
    let written = append(&shard, partition, records).await;
    coordinator.rewriting.set(false);
    match written {
        Ok(()) => {
            coordinator
                .rewritten_bytes
                .borrow_mut()
                .insert(partition, bytes.max(1));
            let deleted = log.delete_segments_below(start);
            info!(
                "{OFFSETS_TOPIC}-{partition}: live groups and offsets rewritten ({bytes} bytes) \
                 at offset {start}; {deleted} older segment(s) deleted"
            );
        }
        Err(e) => warn!("{OFFSETS_TOPIC}-{partition}: rewrite failed: {e:?}"),
    }
}

/// Whether `__consumer_offsets`-`partition` has grown enough for a [`rewrite`].
fn rewrite_due(shard: &Shard, partition: i32) -> bool {
    let Some(log) = offsets_partition(shard, partition) else {
        return false;
    };
    let last = shard
        .coordinator
        .rewritten_bytes
        .borrow()
        .get(&partition)
        .copied()
        .unwrap_or(1);
    log.segment_count() >= 3 && log.size_bytes() > 4 * last
}

/// Writes what a group asked to store (see [`Group::take_store`]) and tells it the result.
fn store_if_asked(shard: &Rc<Shard>, partition: i32, id: &str) {
    let asked = shard
        .coordinator
        .with_group(partition, id, false, |g| {
            let g = g?;
            let store = g.take_store()?;
            let value = log_format::group_value(&g.stored_value());
            Some((store, value))
        })
        .ok()
        .flatten();
    let Some((store, value)) = asked else {
        return;
    };
    let (shard, id) = (shard.clone(), id.to_owned());
    glommio::spawn_local(async move {
        let key = log_format::group_key(&id);
        let written = append(&shard, partition, vec![(key, Some(value))]).await;
        if let Err(e) = written {
            warn!("group '{id}': cannot store its metadata: {e:?}");
        }
        let _ = shard.coordinator.with_group(partition, &id, false, |g| {
            if let Some(g) = g {
                g.store_done(store, written, now_ms());
            }
        });
        // A failed store starts a rebalance, which may complete at once and store again.
        store_if_asked(&shard, partition, &id);
    })
    .detach();
}

pub async fn join(
    shard: &Rc<Shard>,
    partition: i32,
    id: String,
    request: JoinRequest,
) -> JoinResult {
    let member_id = request.member_id.clone();
    let asked: usize = request
        .protocols
        .iter()
        .map(|(n, m)| n.len() + m.len())
        .sum();
    let coordinator = &shard.coordinator;
    if coordinator.metadata_bytes.get() + asked > GROUP_METADATA_BUDGET {
        let now = now_ms();
        if now - coordinator.last_refusal_logged_ms.get() >= 10_000 {
            coordinator.last_refusal_logged_ms.set(now);
            warn!(
                "refusing a join to group '{id}': the groups of this shard hold {} bytes of \
                 member metadata already",
                coordinator.metadata_bytes.get()
            );
        }
        return JoinResult::error(ResponseError::CoordinatorNotAvailable, &member_id);
    }
    coordinator
        .metadata_bytes
        .set(coordinator.metadata_bytes.get() + asked);
    let (reply, answer) = oneshot::channel();
    let limits = shard.coordinator.limits;
    let joined = shard
        .coordinator
        .with_group(partition, &id, request.member_id.is_empty(), |g| match g {
            Some(g) => g.join(request, reply, &limits, now_ms()),
            None => {
                let _ = reply.send(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &request.member_id,
                ));
            }
        });
    if let Err(e) = joined {
        return JoinResult::error(e, &member_id);
    }
    store_if_asked(shard, partition, &id);
    answer
        .await
        .unwrap_or_else(|_| JoinResult::error(ResponseError::NotCoordinator, &member_id))
}

pub async fn sync(
    shard: &Rc<Shard>,
    partition: i32,
    id: String,
    request: SyncRequest,
) -> SyncResult {
    let (reply, answer) = oneshot::channel();
    let synced = shard
        .coordinator
        .with_group(partition, &id, false, |g| match g {
            Some(g) => g.sync(request, reply),
            None => {
                let _ = reply.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        });
    if let Err(e) = synced {
        return SyncResult::error(e);
    }
    store_if_asked(shard, partition, &id);
    answer
        .await
        .unwrap_or_else(|_| SyncResult::error(ResponseError::NotCoordinator))
}

/// LeaveGroup for each `(member id, instance id)`.
pub fn leave(
    shard: &Rc<Shard>,
    partition: i32,
    id: &str,
    members: Vec<(String, Option<String>)>,
) -> Result<Vec<Option<ResponseError>>, NotHere> {
    let results = shard.coordinator.with_group(partition, id, false, |mut g| {
        members
            .iter()
            .map(|(member, instance)| match g.as_deref_mut() {
                Some(g) => g.leave(member, instance.as_deref(), now_ms()),
                None => Some(ResponseError::UnknownMemberId),
            })
            .collect::<Vec<_>>()
    });
    if results.is_ok() {
        store_if_asked(shard, partition, id);
    }
    results
}

/// One offset to commit: topic, partition, what to store.
pub type CommitEntry = (String, i32, OffsetValue);

/// OffsetCommit: checks the member, writes the offsets, then applies them. Per-partition
/// results in the order given.
#[allow(clippy::too_many_arguments)]
pub async fn commit(
    shard: &Rc<Shard>,
    partition: i32,
    id: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
    offsets: Vec<CommitEntry>,
) -> Result<Vec<Option<ResponseError>>, ResponseError> {
    let checked = shard
        .coordinator
        .with_group(partition, &id, generation < 0, |g| match g {
            Some(g) => {
                let checked = g.check_commit(&member_id, instance_id.as_deref(), generation);
                if checked.is_ok() {
                    g.touch(&member_id, now_ms());
                }
                checked
            }
            None => Err(ResponseError::IllegalGeneration),
        })?;
    checked?;
    let records = offsets
        .iter()
        .map(|(topic, p, value)| {
            (
                log_format::offset_key(&id, topic, *p),
                Some(log_format::offset_value(value)),
            )
        })
        .collect();
    append(shard, partition, records)
        .await
        .map_err(|e| match e {
            ResponseError::RecordListTooLarge => ResponseError::InvalidCommitOffsetSize,
            other => other,
        })?;
    shard.coordinator.with_group(partition, &id, true, |g| {
        if let Some(g) = g {
            for (topic, p, value) in &offsets {
                g.offsets.insert((topic.clone(), *p), value.clone());
            }
        }
    })?;
    Ok(offsets.iter().map(|_| None).collect())
}

/// DeleteGroups for one group: only an Empty (or never joined) group goes.
pub async fn delete(shard: &Rc<Shard>, partition: i32, id: String) -> Option<ResponseError> {
    let doomed = shard
        .coordinator
        .with_group(partition, &id, false, |g| match g {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if g.state() == GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            Some(g) if g.state() != GroupState::Empty => Err(ResponseError::NonEmptyGroup),
            Some(g) => {
                let offsets: Vec<(String, i32)> = g.offsets.keys().cloned().collect();
                g.mark_dead(now_ms());
                Ok(offsets)
            }
        });
    let offsets = match doomed {
        Err(e) => return Some(e),
        Ok(Err(e)) => return Some(e),
        Ok(Ok(offsets)) => offsets,
    };
    let mut records: Vec<Record> = offsets
        .iter()
        .map(|(t, p)| (log_format::offset_key(&id, t, *p), None))
        .collect();
    records.push((log_format::group_key(&id), None));
    let written = append(shard, partition, records).await;
    if let Slot::Loaded(groups) = shard
        .coordinator
        .partitions
        .borrow_mut()
        .entry(partition)
        .or_insert(Slot::Loading)
    {
        groups.remove(&id);
    }
    written.err()
}

/// OffsetDelete: removes committed offsets of a group that no member subscribes to.
pub async fn delete_offsets(
    shard: &Rc<Shard>,
    partition: i32,
    id: String,
    which: Vec<(String, i32)>,
) -> Result<Vec<Option<ResponseError>>, ResponseError> {
    let decided = shard.coordinator.with_group(partition, &id, false, |g| {
        let Some(g) = g else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if g.state() == GroupState::Dead {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed = match g.state() {
            GroupState::Empty => Vec::new(),
            _ => match g.subscribed_topics() {
                Some(topics) => topics,
                None => return Err(ResponseError::NonEmptyGroup),
            },
        };
        Ok(which
            .iter()
            .map(|(topic, _)| {
                subscribed
                    .contains(topic)
                    .then_some(ResponseError::GroupSubscribedToTopic)
            })
            .collect::<Vec<_>>())
    })??;
    let records = which
        .iter()
        .zip(&decided)
        .filter(|(_, refused)| refused.is_none())
        .map(|((t, p), _)| (log_format::offset_key(&id, t, *p), None))
        .collect();
    append(shard, partition, records).await?;
    shard.coordinator.with_group(partition, &id, false, |g| {
        if let Some(g) = g {
            for ((t, p), refused) in which.iter().zip(&decided) {
                if refused.is_none() {
                    g.offsets.remove(&(t.clone(), *p));
                }
            }
        }
    })?;
    Ok(decided)
}

/// Loads the groups of `__consumer_offsets`-`partition` (just opened on this shard) from its
/// log, replaying every record in order: the last value of each key wins, a tombstone removes.
pub async fn load(shard: Rc<Shard>, log: Rc<Partition>) {
    let partition = log.tp.partition;
    shard
        .coordinator
        .partitions
        .borrow_mut()
        .insert(partition, Slot::Loading);
    let started = std::time::Instant::now();
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut tombstoned: BTreeSet<String> = BTreeSet::new();
    let mut offset = log.log_start_offset();
    // To the log end, as Kafka's loader reads: a new leader's high watermark catches up with
    // its log only once the followers fetch again.
    let end = log.log_end_offset();
    let mut records = 0u64;
    while offset < end {
        let slice = match log.read_upto(offset, LOAD_CHUNK_BYTES, true, end).await {
            Ok(slice) if !slice.is_empty() => slice,
            Ok(_) => break,
            Err(e) => {
                warn!("{}: cannot load groups past offset {offset}: {e}", log.tp);
                break;
            }
        };
        let bytes = match glommio::executor()
            .spawn_blocking(move || slice.to_bytes())
            .await
        {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!("{}: cannot load groups past offset {offset}: {e}", log.tp);
                break;
            }
        };
        let before = offset;
        let mut at = 0usize;
        while at < bytes.len() {
            let Ok(header) = BatchHeader::parse(&bytes[at..]) else {
                break;
            };
            let total = header.total_bytes();
            if at + total > bytes.len() {
                break;
            }
            let batch = bytes.slice(at..at + total);
            at += total;
            offset = header.last_offset() + 1;
            if header.is_control() {
                continue;
            }
            let section =
                match crate::record::codec::records_section(&header, &batch, LOAD_INFLATE_LIMIT) {
                    Ok(section) => section,
                    Err(e) => {
                        warn!(
                            "{}: skipping an unreadable batch at {}: {e}",
                            log.tp, header.base_offset
                        );
                        continue;
                    }
                };
            let walked =
                crate::record::walk::for_each_record(&section, header.records_count, |r| {
                    records += 1;
                    if let Some(key) = r.key {
                        replay(&mut groups, &mut tombstoned, key, r.value);
                    }
                });
            if let Err(e) = walked {
                warn!("{}: a damaged batch at {}: {e}", log.tp, header.base_offset);
            }
        }
        if offset == before {
            break;
        }
        glommio::yield_if_needed().await;
    }
    let now = now_ms();
    groups.retain(|id, g| !(tombstoned.contains(id) && g.is_removable() && g.generation() == 0));
    // The members stored with a group must heartbeat again within their session timeouts.
    for g in groups.values_mut() {
        g.tick(now);
    }
    let count = groups.len();
    let mut partitions = shard.coordinator.partitions.borrow_mut();
    // Still ours (not unloaded while loading)?
    if let Some(slot @ Slot::Loading) = partitions.get_mut(&partition) {
        *slot = Slot::Loaded(groups);
        info!(
            "{}: loaded {count} group(s) from {records} record(s) in {:?}",
            log.tp,
            started.elapsed()
        );
    }
}

/// Applies one stored record to the groups being loaded.
fn replay(
    groups: &mut HashMap<String, Group>,
    tombstoned: &mut BTreeSet<String>,
    key: &[u8],
    value: Option<&[u8]>,
) {
    let now = now_ms();
    match log_format::parse_key(key) {
        Ok(Key::Offset {
            group,
            topic,
            partition,
        }) => match value {
            Some(value) => match log_format::parse_offset_value(value) {
                Ok(committed) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, now))
                        .offsets
                        .insert((topic, partition), committed);
                }
                Err(e) => warn!("group '{group}': skipping a stored offset: {e}"),
            },
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
        },
        Ok(Key::Group { group }) => match value {
            Some(value) => match log_format::parse_group_value(value) {
                Ok(stored) => {
                    let offsets = groups.remove(&group).map(|g| g.offsets).unwrap_or_default();
                    let mut loaded = Group::loaded(group.clone(), stored, now);
                    loaded.offsets = offsets;
                    tombstoned.remove(&group);
                    groups.insert(group, loaded);
                }
                Err(e) => warn!("group '{group}': skipping stored metadata: {e}"),
            },
            None => {
                let offsets = groups.remove(&group).map(|g| g.offsets).unwrap_or_default();
                let mut empty = Group::new(group.clone(), now);
                empty.offsets = offsets;
                groups.insert(group.clone(), empty);
                tombstoned.insert(group);
            }
        },
        Err(e) => warn!("{OFFSETS_TOPIC}: skipping a record: {e}"),
    }
}

/// Checks every group's deadlines, every [`TICK`]; expires offsets every
/// `offsets.retention.check.interval.ms`. Runs for the shard's life.
pub async fn tick(shard: Rc<Shard>) {
    let mut ticks = 0u64;
    loop {
        glommio::timer::sleep(TICK).await;
        ticks += 1;
        let now = now_ms();
        if ticks.is_multiple_of(RECOUNT_TICKS) {
            let counted: usize = loaded_groups(&shard.coordinator.partitions.borrow())
                .map(Group::metadata_bytes)
                .sum();
            shard.coordinator.metadata_bytes.set(counted);
        }
        if ticks.is_multiple_of(REWRITE_CHECK_TICKS) {
            let loaded: Vec<i32> = shard
                .coordinator
                .partitions
                .borrow()
                .keys()
                .copied()
                .collect();
            if let Some(&partition) = loaded.iter().find(|&&p| rewrite_due(&shard, p)) {
                glommio::spawn_local(rewrite(shard.clone(), partition)).detach();
            }
        }
        let mut to_store = Vec::new();
        {
            let mut partitions = shard.coordinator.partitions.borrow_mut();
            for (partition, slot) in partitions.iter_mut() {
                let Slot::Loaded(groups) = slot else { continue };
                for g in groups.values_mut().filter(|g| g.is_active()) {
                    g.tick(now);
                    if g.wants_store() {
                        to_store.push((*partition, g.id.clone()));
                    }
                }
            }
        }
        for (partition, id) in to_store {
            store_if_asked(&shard, partition, &id);
        }
        if now >= shard.coordinator.next_expiry_ms.get() {
            let interval = shard.coordinator.config.offsets_retention_check_interval_ms;
            shard.coordinator.next_expiry_ms.set(now + interval);
            expire_offsets(&shard, now).await;
        }
    }
}

/// Removes offsets whose retention ran out, and groups left with nothing, writing tombstones.
async fn expire_offsets(shard: &Rc<Shard>, now: i64) {
    let retention = shard.coordinator.config.offsets_retention_ms;
    let mut tombstones: Vec<(i32, Vec<Record>)> = Vec::new();
    {
        let mut partitions = shard.coordinator.partitions.borrow_mut();
        for (partition, slot) in partitions.iter_mut() {
            let Slot::Loaded(groups) = slot else { continue };
            let mut records = Vec::new();
            let mut gone = Vec::new();
            for g in groups.values_mut() {
                for (topic, p) in g.expire_offsets(retention, now) {
                    records.push((log_format::offset_key(&g.id, &topic, p), None));
                }
                if g.is_removable() {
                    g.mark_dead(now);
                    records.push((log_format::group_key(&g.id), None));
                    gone.push(g.id.clone());
                }
            }
            for id in &gone {
                groups.remove(id);
            }
            if !records.is_empty() {
                info!(
                    "{OFFSETS_TOPIC}-{partition}: expired {} offset(s) and group(s)",
                    records.len()
                );
                tombstones.push((*partition, records));
            }
        }
    }
    for (partition, records) in tombstones {
        if let Err(e) = append(shard, partition, records).await {
            warn!("{OFFSETS_TOPIC}-{partition}: cannot write expiry tombstones: {e:?}");
        }
    }
}

//! A partition as its owning shard holds it: the log, the leader epoch, the high watermark, the
//! appends waiting to be written and the fetches waiting for new data. Lives on one shard's
//! thread only.
//!
//! Appends are group-committed: produce requests queue their batches, and one writer task per
//! partition takes everything queued, lays it out in the log ([`Log::prepare`]), writes it with one
//! `pwritev` on the shard's writer thread and then makes it visible ([`Log::complete`]). The
//! executor never waits on the page cache, so a write throttled by dirty-page writeback delays that
//! partition's acknowledgements instead of stalling every connection on the shard, and appends
//! arriving during a write share the next one.
//!
//! Nothing that touches a file runs on the executor. Besides the writes, the log's durability
//! work (fsyncs of rolled segments and of the flush policy, index entries, producer snapshots,
//! files retention dropped) goes to the shard's blocking pool as one sync job at a time
//! ([`Log::take_sync`]), and reads beyond the tail cache scan the segment files there too
//! ([`Log::plan_read`]). Opening (recovery) and closing run there as well.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::replica::Leadership;
use super::writer::SegmentWriter;
use super::ControlHandle;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, ShardTuning, TopicConfig};
use crate::metadata::TopicPartition;
use crate::metadata::{PartitionState, TopicMetadata};
use crate::record::Batch;
use crate::storage::partition_metadata;
use crate::storage::{
    AppendOrigin, AppendOutcome, Log, LogConfig, ReadPlan, ReadSlice, StorageError,
};

/// What this broker is for the partition, as the latest metadata snapshot says.
pub enum Role {
    Leader(Leadership),
    /// Replicates from `leader` (-1: none now).
    Follower {
        leader: i32,
    },
}

/// How a snapshot changed this broker's role for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Unchanged,
    BecameLeader,
    /// Was leader, now follows (or nobody leads).
    LostLeadership,
    /// Follows another leader, or the same one in a new epoch.
    NewLeader,
}

/// acks=all appends waiting for the high watermark, by the offset it must reach.
type HighWatermarkWaiters = BTreeMap<i64, Vec<oneshot::Sender<Result<(), ResponseError>>>>;

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: uuid::Uuid,
    log: RefCell<Option<Log>>,
    leader_epoch: Cell<i32>,
    high_watermark: Cell<i64>,
    /// This broker's id.
    me: i32,
    role: RefCell<Role>,
    /// The topic's `min.insync.replicas`.
    min_insync_replicas: Cell<i64>,
    replica_lag_time_max_ms: i64,
    /// Where ISR changes are asked for.
    control: ControlHandle,
    /// acks=all appends waiting for the high watermark to pass them: one per partition of a
    /// produce request in flight, so bounded by the request budget and the pipeline depth.
    hw_waiters: RefCell<HighWatermarkWaiters>,
    /// Followers' fetches waiting for the log to grow.
    append_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Long-polling consumer fetches waiting for the high watermark to move.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Appends waiting for the writer, in arrival order.
    queue: RefCell<VecDeque<QueuedAppend>>,
    /// A writer task is running (it clears this when the queue is empty).
    writing: Cell<bool>,
    /// The shard's writer thread, where the group writes run.
    writer: SegmentWriter,
    /// Appends in the group being written.
    appends_in_write: Cell<usize>,
    /// Group writes done, and the time they took from hand-off to the writer thread to its
    /// answer (queueing behind other partitions' writes and the kernel's throttling included).
    segment_writes: Cell<u64>,
    segment_write_us: Cell<u64>,
    /// A sync task is running (it clears this when the log has no sync work left).
    syncing: Cell<bool>,
    /// Held while a sync job runs, so that closing waits for it: the log must not be closed
    /// under a job that writes its files.
    sync_lane: futures::lock::Mutex<()>,
}

struct QueuedAppend {
    batches: Vec<Batch>,
    /// A producer's append (as leader) or the leader's batches (as follower).
    replicated: bool,
    done: oneshot::Sender<Result<AppendOutcome, StorageError>>,
}

fn not_leader_error(tp: &TopicPartition) -> StorageError {
    StorageError::Io {
        path: PathBuf::from(tp.to_string()),
        source: std::io::Error::other("this replica's role changed"),
    }
}

fn closed_error(tp: &TopicPartition) -> StorageError {
    StorageError::Io {
        path: PathBuf::from(tp.to_string()),
        source: std::io::Error::other("the partition is closed"),
    }
}

pub fn log_config(config: &TopicConfig, tuning: &ShardTuning) -> LogConfig {
    let v = &config.values;
    // A topic stored with cleanup.policy=compact keeps everything until compaction exists:
    // deleting its old segments by time or size would lose keys' only values.
    let (retention_ms, retention_bytes) = if config.deletes_old_segments() {
        (v.retention_ms, v.retention_bytes)
    } else {
        (-1, -1)
    };
    LogConfig {
        segment_bytes: v.segment_bytes as u64,
        segment_ms: v.segment_ms,
        index_interval_bytes: v.index_interval_bytes.clamp(0, u32::MAX as i64) as u32,
        segment_index_bytes: v.segment_index_bytes.clamp(0, u32::MAX as i64) as u32,
        retention_ms,
        retention_bytes,
        flush_messages: v.flush_messages as u64,
        flush_ms: v.flush_ms,
        cache_bytes: tuning.partition_cache_bytes,
    }
}

impl Partition {
    pub fn dir(config: &BrokerConfig, tp: &TopicPartition) -> PathBuf {
        config.log_dir.join(tp.to_string())
    }

    /// Opens (after a crash: recovers) the partition's log; blocking, for the shard's blocking
    /// pool. `recovery_point` is the partition's entry in the log directory's recovery-point
    /// checkpoint. A directory whose `partition.metadata` names another topic id (data of a
    /// deleted topic of the same name, or a directory copied from elsewhere) is left untouched and
    /// the partition is not opened, as Kafka refuses with InconsistentTopicIdException.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        config: &BrokerConfig,
        tuning: &ShardTuning,
        writer: SegmentWriter,
        control: ControlHandle,
        tp: TopicPartition,
        topic: &TopicMetadata,
        state: &PartitionState,
        recovery_point: Option<i64>,
        high_watermark: Option<i64>,
    ) -> Result<Partition, StorageError> {
        let dir = Self::dir(config, &tp);
        let wanted = crate::metadata::encode_topic_id(topic.topic_id);
        let found = partition_metadata::read(&dir)?;
        if let Some(found) = &found {
            if *found != wanted {
                return Err(StorageError::InconsistentTopicId {
                    dir,
                    expected: wanted,
                    found: found.clone(),
                });
            }
        }
        // A checkpoint entry is trusted only for the directory it was written for: one without
        // `partition.metadata` is new (or from before skein wrote it), and an entry left from a
        // deleted topic of the same name must not mark its segments as already recovered.
        let recovery_point = recovery_point.filter(|_| found.is_some());
        let log =
            Log::open_with_recovery_point(&dir, log_config(&topic.config, tuning), recovery_point)?;
        if found.is_none() {
            partition_metadata::write(&dir, &wanted)?;
        }
        info!(
            "{tp}: opened, log start {} end {} ({} segment(s)), recovery point {}",
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count(),
            log.recovery_point()
        );
        // The high watermark from the replication checkpoint, within the log; none (a new
        // partition, or one from before replication) is the log start, as Kafka does. A leader
        // that is the only in-sync replica moves it to its log end at once.
        let high_watermark = high_watermark
            .unwrap_or(0)
            .clamp(log.log_start_offset(), log.log_end_offset());
        let me = config.broker_id;
        let now = now_ms();
        let role = if state.leader == me {
            Role::Leader(Leadership::new(me, &state.replicas, &state.isr, now))
        } else {
            Role::Follower {
                leader: state.leader,
            }
        };
        let partition = Partition {
            tp,
            topic_id: topic.topic_id,
            high_watermark: Cell::new(high_watermark),
            log: RefCell::new(Some(log)),
            leader_epoch: Cell::new(state.leader_epoch),
            me,
            role: RefCell::new(role),
            min_insync_replicas: Cell::new(topic.config.values.min_insync_replicas),
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
            control,
            hw_waiters: RefCell::new(BTreeMap::new()),
            append_waiters: RefCell::new(Vec::new()),
            waiters: RefCell::new(Vec::new()),
            queue: RefCell::new(VecDeque::new()),
            writing: Cell::new(false),
            writer,
            appends_in_write: Cell::new(0),
            segment_writes: Cell::new(0),
            segment_write_us: Cell::new(0),
            syncing: Cell::new(false),
            sync_lane: futures::lock::Mutex::new(()),
        };
        partition.advance_high_watermark();
        Ok(partition)
    }

    /// Takes a new snapshot's leader, ISR and epoch, and topic settings (a changed
    /// `/config/topics/<t>`). Says how this broker's role changed.
    pub fn update_state(
        &self,
        state: &PartitionState,
        config: &TopicConfig,
        tuning: &ShardTuning,
    ) -> RoleChange {
        let new_epoch = state.leader_epoch != self.leader_epoch.get();
        self.leader_epoch.set(state.leader_epoch);
        self.min_insync_replicas
            .set(config.values.min_insync_replicas);
        let now = now_ms();
        let change = {
            let mut role = self.role.borrow_mut();
            match (&mut *role, state.leader == self.me) {
                (Role::Leader(leadership), true) if !new_epoch => {
                    leadership.update(&state.replicas, &state.isr, now);
                    RoleChange::Unchanged
                }
                (_, true) => {
                    *role =
                        Role::Leader(Leadership::new(self.me, &state.replicas, &state.isr, now));
                    RoleChange::BecameLeader
                }
                (Role::Leader(_), false) => {
                    *role = Role::Follower {
                        leader: state.leader,
                    };
                    RoleChange::LostLeadership
                }
                (Role::Follower { leader }, false) => {
                    let changed = *leader != state.leader || new_epoch;
                    *leader = state.leader;
                    if changed {
                        RoleChange::NewLeader
                    } else {
                        RoleChange::Unchanged
                    }
                }
            }
        };
        match change {
            RoleChange::BecameLeader => info!(
                "{}: leader in epoch {} (ISR {:?})",
                self.tp, state.leader_epoch, state.isr
            ),
            RoleChange::LostLeadership | RoleChange::NewLeader => info!(
                "{}: following broker {} in epoch {}",
                self.tp, state.leader, state.leader_epoch
            ),
            RoleChange::Unchanged => {}
        }
        if change == RoleChange::LostLeadership {
            // acks=all appends still waiting cannot be answered by this broker any more.
            for (_, waiters) in std::mem::take(&mut *self.hw_waiters.borrow_mut()) {
                for waiter in waiters {
                    let _ = waiter.send(Err(ResponseError::NotLeaderOrFollower));
                }
            }
        }
        self.advance_high_watermark();
        let wanted = log_config(config, tuning);
        let _ = self.with_log(|log| {
            if log.config() != &wanted {
                info!("{}: applying changed topic settings", self.tp);
                log.set_config(wanted);
            }
            Ok(())
        });
        change
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }

    /// As leader: the ISR's size and each follower's lag behind this log's end in offsets (a
    /// follower that has not fetched since this broker became leader lags by the whole log).
    /// `None` as a follower.
    pub fn replication_gauges(&self) -> Option<(usize, Vec<(i32, i64)>)> {
        let log_end = self.log_end_offset();
        match &*self.role.borrow() {
            Role::Leader(l) => Some((
                l.isr().len(),
                l.follower_log_ends()
                    .map(|(r, end)| (r, (log_end - end.max(0)).max(0)))
                    .collect(),
            )),
            Role::Follower { .. } => None,
        }
    }

    /// Moves the high watermark up to what the ISR holds (as leader), never down, and wakes
    /// what waits for it: consumers' long polls and acks=all appends now covered.
    fn advance_high_watermark(&self) {
        let log_end = self.log_end_offset();
        let (bound, isr_len) = match &*self.role.borrow() {
            Role::Leader(l) => (l.high_watermark_bound(log_end), l.isr().len() as i64),
            Role::Follower { .. } => return,
        };
        if bound <= self.high_watermark.get() {
            return;
        }
        self.set_high_watermark(bound);
        let covered = {
            let mut waiters = self.hw_waiters.borrow_mut();
            let later = waiters.split_off(&(bound + 1));
            std::mem::replace(&mut *waiters, later)
        };
        // Kafka's DelayedProduce: reached, but the ISR that has it is below
        // min.insync.replicas.
        let outcome = if isr_len < self.min_insync_replicas.get() {
            Err(ResponseError::NotEnoughReplicasAfterAppend)
        } else {
            Ok(())
        };
        for waiter in covered.into_values().flatten() {
            let _ = waiter.send(outcome);
        }
    }

    fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.set(offset);
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Resolves once the high watermark reaches `offset` (the end of an acks=all append):
    /// `Err` if this broker stops leading first, or the ISR that reached it is smaller than
    /// `min.insync.replicas`. Closing the partition drops the wait.
    pub fn wait_for_high_watermark(
        &self,
        offset: i64,
    ) -> oneshot::Receiver<Result<(), ResponseError>> {
        let (tx, rx) = oneshot::channel();
        if self.high_watermark.get() >= offset {
            let _ = tx.send(Ok(()));
        } else if !self.is_leader() {
            let _ = tx.send(Err(ResponseError::NotLeaderOrFollower));
        } else {
            self.hw_waiters
                .borrow_mut()
                .entry(offset)
                .or_default()
                .push(tx);
        }
        rx
    }

    /// A follower's fetch at `fetch_offset` (its log end), as leader: records its progress,
    /// moves the high watermark, and asks for its return to the ISR if it caught up.
    pub fn follower_fetched(
        self: &Rc<Self>,
        replica: i32,
        fetch_offset: i64,
    ) -> Result<(), ResponseError> {
        let now = now_ms();
        let log_end = self.log_end_offset();
        let expansion = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                return Err(ResponseError::NotLeaderOrFollower);
            };
            if !l.fetched(replica, fetch_offset, log_end, now) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            l.expansion(replica, self.high_watermark.get(), now)
        };
        self.advance_high_watermark();
        if let Some(isr) = expansion {
            self.ask_isr(isr, now);
        }
        Ok(())
    }

    /// Asks ZooKeeper (through the control thread) for a new ISR, fenced by this leader's epoch.
    fn ask_isr(self: &Rc<Self>, isr: Vec<i32>, now: i64) {
        let Role::Leader(l) = &mut *self.role.borrow_mut() else {
            return;
        };
        l.asked(isr.clone(), now);
        let epoch = self.leader_epoch.get();
        let partition = Rc::clone(self);
        glommio::spawn_local(async move {
            let result = partition
                .control
                .alter_isr(partition.tp.clone(), epoch, isr.clone())
                .await;
            if let Role::Leader(l) = &mut *partition.role.borrow_mut() {
                match &result {
                    Ok(()) => l.written(&isr),
                    Err(e) => {
                        warn!(
                            "{}: ISR change to {isr:?} refused: {}",
                            partition.tp, e.message
                        );
                        l.refused(&isr);
                    }
                }
            }
            if result.is_ok() {
                info!("{}: ISR is now {isr:?}", partition.tp);
            }
            partition.advance_high_watermark();
        })
        .detach();
    }

    /// The leader's high watermark, as a follower heard it: ours follows, within our log.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let wanted = leader_high_watermark.min(self.log_end_offset());
        if wanted > self.high_watermark.get() {
            self.set_high_watermark(wanted);
        }
    }

    /// The leader this broker follows for the partition (`None` as leader or with no leader).
    pub fn following(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Follower { leader } if *leader >= 0 => Some(*leader),
            _ => None,
        }
    }

    /// Kafka's OffsetForLeaderEpoch on this replica: where `epoch` ends in its log.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64), StorageError> {
        self.with_log(|log| Ok(log.end_offset_for_epoch(epoch)))
    }

    /// The newest leader epoch in this replica's log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.with_log(|log| Ok(log.epochs().latest_epoch()))
            .ok()
            .flatten()
    }

    /// Cuts the log at `offset` (a follower's divergent tail), on the blocking pool, once no
    /// write or sync job is under way; the high watermark comes down with it if it must.
    pub async fn truncate_to(self: &Rc<Self>, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let (log_end, result) = self
            .cut_blocking(move |log| log.truncate_to(offset))
            .await?;
        if self.high_watermark.get() > log_end {
            self.high_watermark.set(log_end);
        }
        info!("{}: truncated to offset {log_end}", self.tp);
        result
    }

    /// Kafka's `truncateFullyAndStartAt` on this replica (see
    /// [`Log::truncate_fully_and_start_at`]): for a follower whose log ends below the leader's
    /// log start. The high watermark moves to `offset`, which the leader's is at or past.
    pub async fn truncate_fully_and_start_at(
        self: &Rc<Self>,
        offset: i64,
    ) -> Result<(), StorageError> {
        if self.is_leader() {
            // Became leader while the fetcher decided: a leader's log is never emptied.
            return Ok(());
        }
        let (log_end, result) = self
            .cut_blocking(move |log| log.truncate_fully_and_start_at(offset))
            .await?;
        self.high_watermark.set(log_end);
        info!("{}: emptied, starting over at offset {log_end}", self.tp);
        result
    }

    /// Runs a truncation of the log on the blocking pool once no write or sync job is under
    /// way, then has the sync job record it; returns the new log end and the cut's result.
    async fn cut_blocking(
        self: &Rc<Self>,
        cut: impl FnOnce(&mut Log) -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(i64, Result<(), StorageError>), StorageError> {
        let _lane = self.sync_lane.lock().await;
        while self.writing.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut log = self
            .log
            .borrow_mut()
            .take()
            .ok_or_else(|| closed_error(&self.tp))?;
        let (log, result) = glommio::executor()
            .spawn_blocking(move || {
                let result = cut(&mut log);
                (log, result)
            })
            .await;
        let log_end = log.log_end_offset();
        *self.log.borrow_mut() = Some(log);
        self.kick_sync();
        Ok((log_end, result))
    }

    fn with_log<R>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        match self.log.borrow_mut().as_mut() {
            Some(log) => f(log),
            None => Err(closed_error(&self.tp)),
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.with_log(|log| Ok(log.log_start_offset())).unwrap_or(0)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.with_log(|log| Ok(log.log_end_offset())).unwrap_or(0)
    }

    /// Everything below it is durable, for the log directory's recovery-point checkpoint;
    /// `None` once closed.
    pub fn recovery_point(&self) -> Option<i64> {
        self.with_log(|log| Ok(log.recovery_point())).ok()
    }

    /// Starts the sync task if the log has durability work waiting.
    fn kick_sync(self: &Rc<Self>) {
        let wanted = self
            .with_log(|log| Ok(log.has_sync_work()))
            .unwrap_or(false);
        if wanted && !self.syncing.replace(true) {
            glommio::spawn_local(Rc::clone(self).sync_pending()).detach();
        }
    }

    /// The sync task: job after job on the blocking pool until the log has nothing left.
    async fn sync_pending(self: Rc<Self>) {
        let _lane = self.sync_lane.lock().await;
        loop {
            let job = self.with_log(|log| Ok(log.take_sync())).ok().flatten();
            let Some(job) = job else {
                break;
            };
            let done = glommio::executor().spawn_blocking(move || job.run()).await;
            let _ = self.with_log(|log| {
                log.synced(done);
                Ok(())
            });
        }
        self.syncing.set(false);
    }

    /// Appends once the batches are written and, as the only replica, advances the high watermark
    /// to the new log end. Appends of one partition are written in the order they were called.
    pub async fn append(
        self: &Rc<Self>,
        batches: Vec<Batch>,
    ) -> Result<AppendOutcome, StorageError> {
        self.enqueue(batches, false).await
    }

    /// Appends the leader's batches as they are (offsets, epochs), as a follower.
    pub async fn append_replicated(
        self: &Rc<Self>,
        batches: Vec<Batch>,
    ) -> Result<AppendOutcome, StorageError> {
        self.enqueue(batches, true).await
    }

    async fn enqueue(
        self: &Rc<Self>,
        batches: Vec<Batch>,
        replicated: bool,
    ) -> Result<AppendOutcome, StorageError> {
        let (done, outcome) = oneshot::channel();
        if self.log.borrow().is_none() {
            return Err(closed_error(&self.tp));
        }
        if self.is_leader() == replicated {
            return Err(not_leader_error(&self.tp));
        }
        self.queue.borrow_mut().push_back(QueuedAppend {
            batches,
            replicated,
            done,
        });
        if !self.writing.replace(true) {
            glommio::spawn_local(Rc::clone(self).write_queued()).detach();
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(closed_error(&self.tp)))
    }

    /// The writer: group after group until the queue is empty.
    async fn write_queued(self: Rc<Self>) {
        loop {
            // One group holds appends of one origin: a role change between them splits it.
            let mut queued: Vec<QueuedAppend> = {
                let mut queue = self.queue.borrow_mut();
                let Some(first) = queue.front() else {
                    self.writing.set(false);
                    return;
                };
                let replicated = first.replicated;
                let same = queue
                    .iter()
                    .take_while(|q| q.replicated == replicated)
                    .count();
                queue.drain(..same).collect()
            };
            let replicated = queued[0].replicated;
            if self.is_leader() == replicated {
                // Queued before the role changed: a producer's append must not reach a
                // follower's log, nor a fetched batch a leader's.
                for q in queued {
                    let _ = q.done.send(Err(not_leader_error(&self.tp)));
                }
                continue;
            }
            let origin = if replicated {
                AppendOrigin::Replica
            } else {
                AppendOrigin::Leader {
                    leader_epoch: self.leader_epoch.get(),
                }
            };
            let prepared = self.with_log(|log| {
                let appends: Vec<&[Batch]> = queued.iter().map(|q| &q.batches[..]).collect();
                Ok(log.prepare_from(&appends, origin, now_ms()))
            });
            let mut prepared = match prepared {
                Ok(prepared) => prepared,
                Err(_) => {
                    // Closed: nothing more will be written.
                    for q in queued {
                        let _ = q.done.send(Err(closed_error(&self.tp)));
                    }
                    continue;
                }
            };
            // What the group did not take goes back in front of what arrived meanwhile.
            let rest = queued.split_off(prepared.taken());
            {
                let mut queue = self.queue.borrow_mut();
                for q in rest.into_iter().rev() {
                    queue.push_front(q);
                }
            }
            let written = match prepared.take_write() {
                Some(write) => {
                    let started = std::time::Instant::now();
                    self.appends_in_write.set(queued.len());
                    let written = self.writer.write(write).await;
                    self.appends_in_write.set(0);
                    self.segment_writes.set(self.segment_writes.get() + 1);
                    let took = started.elapsed().as_micros() as u64;
                    self.segment_write_us
                        .set(self.segment_write_us.get() + took);
                    written
                }
                None => Ok(()),
            };
            let completed = self.with_log(|log| {
                let outcomes = log.complete(prepared, written);
                Ok((outcomes, log.log_end_offset()))
            });
            // A roll or flush.messages left durability work: it runs beside the next writes.
            self.kick_sync();
            let outcomes = match completed {
                Ok((outcomes, log_end)) => {
                    assert!(log_end >= self.high_watermark.get(), "offsets only grow");
                    for waiter in self.append_waiters.borrow_mut().drain(..) {
                        let _ = waiter.send(());
                    }
                    self.advance_high_watermark();
                    outcomes
                }
                Err(_) => queued.iter().map(|_| Err(closed_error(&self.tp))).collect(),
            };
            for (q, outcome) in queued.into_iter().zip(outcomes) {
                let _ = q.done.send(outcome);
            }
        }
    }

    /// Whether a write is queued or under way.
    pub fn is_writing(&self) -> bool {
        self.writing.get()
    }

    /// Appends not yet acknowledged: queued, or in the group being written.
    pub fn appends_waiting(&self) -> usize {
        self.queue.borrow().len() + self.appends_in_write.get()
    }

    /// Group writes done, and the microseconds they took in all.
    pub fn segment_write_totals(&self) -> (u64, u64) {
        (self.segment_writes.get(), self.segment_write_us.get())
    }

    /// Batches from `offset` up to the high watermark (see [`Log::read`]). From the tail cache
    /// right away; beyond it, the segment files are scanned on the shard's blocking pool.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadSlice, StorageError> {
        self.read_upto(offset, max_bytes, min_one, self.high_watermark.get())
            .await
    }

    /// Batches from `offset` below `upto` (a follower's fetch reads up to the log end).
    pub async fn read_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        upto: i64,
    ) -> Result<ReadSlice, StorageError> {
        let plan = self.with_log(|log| log.plan_read(offset, max_bytes, upto, min_one))?;
        match plan {
            ReadPlan::Ready(slice) => Ok(slice),
            ReadPlan::Cold(cold) => {
                let done = glommio::executor()
                    .spawn_blocking(move || cold.run())
                    .await?;
                self.with_log(|log| Ok(log.finish_read(done)))
            }
        }
    }

    /// The first batch at or after `timestamp` (see [`Log::find_batch_by_timestamp`]), looked
    /// up on the shard's blocking pool.
    pub async fn find_batch_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        let lookup = self.with_log(|log| Ok(log.plan_find_batch_by_timestamp(timestamp)))?;
        glommio::executor()
            .spawn_blocking(move || lookup.run())
            .await
    }

    /// Resolves once the log end is past `seen` (at once if it already is), or when the
    /// partition closes: followers' fetches wait on this.
    pub fn wait_for_log_growth(&self, seen: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.log_end_offset() > seen {
            let _ = tx.send(());
            return rx;
        }
        let mut waiters = self.append_waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// Resolves once the high watermark is past `seen` (at once if it already is), or when
    /// the partition closes: consumers' long polls wait on this.
    pub fn wait_for_append(&self, seen: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.high_watermark() > seen {
            let _ = tx.send(());
            return rx;
        }
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// Background upkeep: time-based roll, flush.ms, retention. Decided here, in memory; the
    /// fsyncs and deletions they call for run as the log's next sync job.
    pub fn maintain(self: &Rc<Self>, now_ms: i64, retention_due: bool) {
        // Kafka's isr-expiration task: followers that stopped keeping up leave the ISR.
        let shrink = match &*self.role.borrow() {
            Role::Leader(l) => {
                l.shrink(self.log_end_offset(), now_ms, self.replica_lag_time_max_ms)
            }
            Role::Follower { .. } => None,
        };
        if let Some(isr) = shrink {
            self.ask_isr(isr, now_ms);
        }
        let result = self.with_log(|log| {
            log.roll_if_due(now_ms)?;
            log.flush_if_due(now_ms);
            if retention_due {
                let deleted = log.enforce_retention(now_ms);
                if deleted > 0 {
                    info!(
                        "{}: retention deletes {deleted} segment(s); log start is now {}",
                        self.tp,
                        log.log_start_offset()
                    );
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            warn!("{}: background upkeep failed: {e}", self.tp);
        }
        self.kick_sync();
    }

    /// Drops the rolled segments wholly below `offset` (see [`Log::delete_segments_below`]).
    pub fn delete_segments_below(self: &Rc<Self>, offset: i64) -> usize {
        let deleted = self
            .with_log(|log| Ok(log.delete_segments_below(offset)))
            .unwrap_or(0);
        if deleted > 0 {
            info!(
                "{}: {deleted} segment(s) below offset {offset} deleted; log start is now {}",
                self.tp,
                self.log_start_offset()
            );
        }
        self.kick_sync();
        deleted
    }

    pub fn size_bytes(&self) -> u64 {
        self.with_log(|log| Ok(log.size_bytes())).unwrap_or(0)
    }

    pub fn segment_count(&self) -> usize {
        self.with_log(|log| Ok(log.segment_count())).unwrap_or(0)
    }

    /// Closes the log; with `delete`, removes its data (topic deleted or replica moved away).
    /// A write under way when this is called still lands in the file, after the close: the next
    /// open finds it past the indexes and keeps it (it was never acknowledged). Wait for
    /// [`Partition::is_writing`] to clear first for an exact clean stop. A sync job under way is
    /// waited for. The close itself (everything made durable, snapshot, marker; or removing the
    /// data) runs on the shard's blocking pool. Returns the recovery point the log directory's
    /// checkpoint should keep for the partition: its log end after a clean close, else what was
    /// durable before it (`None` if it was closed already or deleted).
    pub async fn shut_down(&self, delete: bool) -> Option<i64> {
        self.waiters.borrow_mut().clear();
        self.append_waiters.borrow_mut().clear();
        self.hw_waiters.borrow_mut().clear();
        for q in self.queue.borrow_mut().drain(..) {
            let _ = q.done.send(Err(closed_error(&self.tp)));
        }
        let _no_sync_under_way = self.sync_lane.lock().await;
        let log = self.log.borrow_mut().take()?;
        let (log_end_offset, recovery_point) = (log.log_end_offset(), log.recovery_point());
        let result = glommio::executor()
            .spawn_blocking(move || if delete { log.delete() } else { log.close() })
            .await;
        match result {
            Ok(()) if delete => {
                info!("{}: deleted", self.tp);
                None
            }
            Ok(()) => {
                info!("{}: closed", self.tp);
                Some(log_end_offset)
            }
            Err(e) => {
                warn!("{}: closing failed: {e}", self.tp);
                (!delete).then_some(recovery_point)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicDefaults;
    use std::collections::BTreeMap;

    #[test]
    fn a_stored_compact_policy_turns_retention_off() {
        let overrides = |policy: &str| {
            BTreeMap::from([
                ("cleanup.policy".to_owned(), policy.to_owned()),
                ("retention.ms".to_owned(), "1000".to_owned()),
            ])
        };
        let tuning = ShardTuning::default();
        let (compact, _) = TopicConfig::resolve(&TopicDefaults::default(), &overrides("compact"));
        let config = log_config(&compact, &tuning);
        assert_eq!((config.retention_ms, config.retention_bytes), (-1, -1));
        let (delete, _) = TopicConfig::resolve(&TopicDefaults::default(), &overrides("delete"));
        assert_eq!(log_config(&delete, &tuning).retention_ms, 1000);
    }
}

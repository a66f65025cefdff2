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
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use futures::channel::oneshot;
use tracing::{info, warn};

use super::writer::SegmentWriter;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, ShardTuning, TopicConfig};
use crate::metadata::TopicPartition;
use crate::metadata::{PartitionState, TopicMetadata};
use crate::record::Batch;
use crate::storage::partition_metadata;
use crate::storage::{AppendOutcome, Log, LogConfig, ReadPlan, ReadSlice, StorageError};

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: uuid::Uuid,
    log: RefCell<Option<Log>>,
    leader_epoch: Cell<i32>,
    high_watermark: Cell<i64>,
    /// Long-polling fetches waiting for the next append.
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
    done: oneshot::Sender<Result<AppendOutcome, StorageError>>,
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
    pub fn open(
        config: &BrokerConfig,
        tuning: &ShardTuning,
        writer: SegmentWriter,
        tp: TopicPartition,
        topic: &TopicMetadata,
        state: &PartitionState,
        recovery_point: Option<i64>,
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
        let partition = Partition {
            tp,
            topic_id: topic.topic_id,
            high_watermark: Cell::new(log.log_end_offset()),
            log: RefCell::new(Some(log)),
            leader_epoch: Cell::new(state.leader_epoch),
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
        Ok(partition)
    }

    /// Takes a new snapshot's leader epoch and topic settings (a changed `/config/topics/<t>`).
    pub fn update_state(&self, state: &PartitionState, config: &TopicConfig, tuning: &ShardTuning) {
        self.leader_epoch.set(state.leader_epoch);
        let wanted = log_config(config, tuning);
        let _ = self.with_log(|log| {
            if log.config() != &wanted {
                info!("{}: applying changed topic settings", self.tp);
                log.set_config(wanted);
            }
            Ok(())
        });
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
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
        let (done, outcome) = oneshot::channel();
        if self.log.borrow().is_none() {
            return Err(closed_error(&self.tp));
        }
        self.queue
            .borrow_mut()
            .push_back(QueuedAppend { batches, done });
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
            let mut queued: Vec<QueuedAppend> = self.queue.borrow_mut().drain(..).collect();
            if queued.is_empty() {
                self.writing.set(false);
                return;
            }
            let epoch = self.leader_epoch.get();
            let prepared = self.with_log(|log| {
                let appends: Vec<&[Batch]> = queued.iter().map(|q| &q.batches[..]).collect();
                Ok(log.prepare(&appends, epoch, now_ms()))
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
                    if log_end > self.high_watermark.get() {
                        self.high_watermark.set(log_end);
                        for waiter in self.waiters.borrow_mut().drain(..) {
                            let _ = waiter.send(());
                        }
                    }
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
        let high_watermark = self.high_watermark.get();
        let plan =
            self.with_log(|log| log.plan_read(offset, max_bytes, high_watermark, min_one))?;
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

    /// Resolves on the next append (or when the partition closes).
    pub fn wait_for_append(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// Background upkeep: time-based roll, flush.ms, retention. Decided here, in memory; the
    /// fsyncs and deletions they call for run as the log's next sync job.
    pub fn maintain(self: &Rc<Self>, now_ms: i64, retention_due: bool) {
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

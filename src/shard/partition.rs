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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use futures::channel::oneshot;
use tracing::{info, warn};

use super::writer::SegmentWriter;
use crate::cluster::control::now_ms;
use crate::cluster::metadata::{PartitionState, TopicMetadata};
use crate::cluster::TopicPartition;
use crate::config::{BrokerConfig, ShardTuning, TopicConfig};
use crate::record::Batch;
use crate::storage::{AppendOutcome, Log, LogConfig, ReadSlice, StorageError};

/// Kafka's `partition.metadata`: which topic id the folder's data belongs to, so data of a deleted
/// topic is never served under a new topic of the same name.
const PARTITION_METADATA: &str = "partition.metadata";

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
    LogConfig {
        segment_bytes: v.segment_bytes as u64,
        segment_ms: v.segment_ms,
        index_interval_bytes: v.index_interval_bytes.clamp(0, u32::MAX as i64) as u32,
        segment_index_bytes: v.segment_index_bytes.clamp(0, u32::MAX as i64) as u32,
        retention_ms: v.retention_ms,
        retention_bytes: v.retention_bytes,
        flush_messages: v.flush_messages as u64,
        flush_ms: v.flush_ms,
        cache_bytes: tuning.partition_cache_bytes,
    }
}

impl Partition {
    pub fn dir(config: &BrokerConfig, tp: &TopicPartition) -> PathBuf {
        config.log_dir.join(tp.to_string())
    }

    pub fn open(
        config: &BrokerConfig,
        tuning: &ShardTuning,
        writer: SegmentWriter,
        tp: TopicPartition,
        topic: &TopicMetadata,
        state: &PartitionState,
    ) -> Result<Partition, StorageError> {
        let dir = Self::dir(config, &tp);
        let id_file = dir.join(PARTITION_METADATA);
        let io = |source| StorageError::Io {
            path: id_file.clone(),
            source,
        };
        let wanted = format!(
            "version: 0\ntopic_id: {}\n",
            crate::cluster::zookeeper::encode_topic_id(topic.topic_id)
        );
        match std::fs::read_to_string(&id_file) {
            Ok(found) if found == wanted => {}
            Ok(_) => {
                warn!(
                    "{tp}: data in {} belongs to an earlier topic of that name; removing it",
                    dir.display()
                );
                std::fs::remove_dir_all(&dir).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let log = Log::open(&dir, log_config(&topic.config, tuning))?;
        if !id_file.exists() {
            std::fs::write(&id_file, &wanted).map_err(io)?;
        }
        info!(
            "{tp}: opened, log start {} end {} ({} segment(s))",
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
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

    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadSlice, StorageError> {
        let high_watermark = self.high_watermark.get();
        self.with_log(|log| log.read(offset, max_bytes, high_watermark, min_one))
    }

    pub fn find_batch_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        self.with_log(|log| log.find_batch_by_timestamp(timestamp))
    }

    /// Resolves on the next append (or when the partition closes).
    pub fn wait_for_append(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// Background upkeep: time-based roll, flush.ms, retention.
    pub fn maintain(&self, now_ms: i64, retention_due: bool) {
        let result = self.with_log(|log| {
            log.roll_if_due(now_ms)?;
            log.flush_if_due(now_ms)?;
            if retention_due {
                let deleted = log.enforce_retention(now_ms)?;
                if deleted > 0 {
                    info!(
                        "{}: retention deleted {deleted} segment(s); log start is now {}",
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
    /// [`Partition::is_writing`] to clear first for an exact clean stop.
    /// The close itself (snapshot, fsync, marker; or removing the data) runs on the shard's
    /// blocking pool.
    pub async fn shut_down(&self, delete: bool) {
        self.waiters.borrow_mut().clear();
        for q in self.queue.borrow_mut().drain(..) {
            let _ = q.done.send(Err(closed_error(&self.tp)));
        }
        let Some(log) = self.log.borrow_mut().take() else {
            return;
        };
        let result = glommio::executor()
            .spawn_blocking(move || if delete { log.delete() } else { log.close() })
            .await;
        match result {
            Ok(()) if delete => info!("{}: deleted", self.tp),
            Ok(()) => info!("{}: closed", self.tp),
            Err(e) => warn!("{}: closing failed: {e}", self.tp),
        }
    }
}

//! One partition's log: an ordered list of segments under `<log.dirs>/<topic>-<partition>/`, the
//! last of which is active (appended to). Offsets are assigned here, idempotent-producer
//! sequences are checked here, and reads for Fetch are answered here as byte ranges.
//!
//! A `Log` lives on the shard that owns the partition and is not shared. The shard's executor
//! must never block, so a `Log` does no file I/O there: its work that touches files is handed out
//! as self-contained jobs the shard runs elsewhere and then hands back. An append's data write is
//! a [`SegmentWrite`] for the shard's writer thread ([`Log::prepare`], the write,
//! [`Log::complete`]); index entries, fsyncs, producer snapshots and deleting files are a
//! [`SyncJob`] for a blocking thread ([`Log::take_sync`], [`SyncJob::run`], [`Log::synced`]); a
//! read beyond the tail cache is a [`ColdRead`] ([`Log::plan_read`], [`ColdRead::run`],
//! [`Log::finish_read`]). Opening (recovery), closing and truncating are whole blocking calls,
//! made on a blocking thread. The synchronous conveniences ([`Log::append`], [`Log::read`],
//! [`Log::sync_now`]) run those jobs inline, for tools and tests.
//!
//! Durability follows Kafka: fsync is governed by the topic's flush policy (`flush.messages`,
//! `flush.ms`; acks=all durability comes from replication), every rolled segment is fsynced, and
//! the recovery point (everything below it is durable) bounds what start-up after a power loss
//! must recover.
//!
//! By concern: this file holds the `Log` itself (open, close, accessors); `append.rs` validation,
//! offset assignment, group commit and roll; `read.rs` Fetch reads and lookups; `sync.rs` the
//! flush policy, sync jobs and the recovery point; `retention.rs` retention and truncation.
//! Opening recovers through [`crate::storage::recovery`].
//!
//! [`SegmentWrite`]: crate::storage::SegmentWrite

mod append;
mod read;
mod retention;
mod sync;
#[cfg(test)]
pub(crate) mod test_util;

pub use append::{AppendOrigin, AppendOutcome, PreparedAppends};
pub use read::{ColdRead, ColdReadDone, ReadChunk, ReadPlan, ReadSlice, TimestampLookup};
pub use sync::{SyncDone, SyncJob};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::clock::now_ms;
use crate::storage::atomic_file::sync_dir;
use crate::storage::batch_cache::BatchCache;
use crate::storage::error::{io_error, StorageError};
use crate::storage::leader_epoch::LeaderEpochCache;
use crate::storage::producer_state::ProducerStateManager;
use crate::storage::recovery::{load_segments, restore_producer_state, take_clean_shutdown_marker};
use crate::storage::segment::Segment;

/// Per-topic log settings, named after Kafka's (`segment.bytes`, `segment.ms`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u32,
    pub segment_index_bytes: u32,
    /// -1 keeps data forever.
    pub retention_ms: i64,
    /// -1 means no size limit.
    pub retention_bytes: i64,
    pub flush_messages: u64,
    pub flush_ms: i64,
    /// Budget of the tail batch cache.
    pub cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            cache_bytes: 8 << 20,
        }
    }
}

/// How [`Log::open`] brought the log up: start-up cost, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOpened {
    /// The partition directory had no segment: an empty one was created.
    Created,
    /// After a clean shutdown: nothing recovered. Indexes were trusted, and of the active segment
    /// only the `tail_bytes` after its last offset-index entry were read.
    Clean { tail_bytes: u64 },
    /// After a crash or power loss (or when files disagreed): `segments` segments, from the one
    /// holding the recovery point on, had every batch read and CRC-checked; `scanned_bytes` of
    /// them survived and `truncated_bytes` were cut.
    Recovered {
        segments: usize,
        scanned_bytes: u64,
        truncated_bytes: u64,
    },
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Ascending by base offset, never empty; the last one is active.
    segments: Vec<Segment>,
    cache: BatchCache,
    producer_state: ProducerStateManager,
    /// Offsets of the producer snapshot files on disk (or being written by a sync job), so that
    /// nothing on the executor has to list the directory.
    snapshots: BTreeSet<i64>,
    /// Everything below this offset is durable: data and indexes fsynced, directory entries too.
    recovery_point: i64,
    sync: sync::SyncState,
    opened: LogOpened,
    /// Between [`Log::prepare`] and [`Log::complete`] of a write.
    write_in_flight: bool,
    /// Where each leader epoch starts (see [`crate::storage::leader_epoch`]).
    epochs: LeaderEpochCache,
}

impl Log {
    /// Opens the partition directory, creating it if needed, with no known recovery point: after
    /// an unclean stop every segment is recovered. See [`Log::open_with_recovery_point`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        Self::open_with_recovery_point(dir, config, None)
    }

    /// Opens the partition directory, creating it if needed (see [`crate::storage::recovery`]
    /// for what is trusted and what recovered). `recovery_point` is the partition's entry in the
    /// log directory's recovery-point checkpoint. Torn or corrupt data is cut with a warning
    /// naming file, position and reason. Producer state comes from the newest snapshot (after a
    /// clean close, one at the log end) plus a replay of later batches. Blocking: call it on a
    /// blocking thread.
    pub fn open_with_recovery_point(
        dir: &Path,
        config: LogConfig,
        recovery_point: Option<i64>,
    ) -> Result<Log, StorageError> {
        assert!(config.segment_bytes > 0 && config.segment_index_bytes > 0);
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        if created {
            if let Some(parent) = dir.parent() {
                // IMPORTANT: the new directory's name lives in its parent.
                sync_dir(parent)?;
            }
        }
        // Taken (and the removal fsynced) before anything can change the files it vouches for.
        let clean_shutdown = take_clean_shutdown_marker(dir)?;
        let loaded = load_segments(
            dir,
            config.index_interval_bytes,
            clean_shutdown,
            recovery_point,
        )?;
        if loaded.dir_changed {
            sync_dir(dir)?;
        }
        let (mut producer_state, snapshots) = restore_producer_state(dir, &loaded.segments)?;
        // A snapshot taken before retention moved the log start may name producers whose data
        // is gone.
        if let Some(first) = loaded.segments.first() {
            producer_state.evict_below(first.base_offset);
        }
        // Entries past what recovery kept (a torn tail) or below the log start go.
        let mut epochs = LeaderEpochCache::load(dir)?;
        let epochs_changed = match (loaded.segments.first(), loaded.segments.last()) {
            (Some(first), Some(last)) => {
                let end = epochs.truncate_from_end(last.next_offset);
                epochs.truncate_from_start(first.base_offset) || end
            }
            _ => false,
        };
        let mut log = Log {
            dir: dir.to_path_buf(),
            cache: BatchCache::new(config.cache_bytes),
            config,
            segments: loaded.segments,
            producer_state,
            snapshots: snapshots.into_iter().collect(),
            recovery_point: loaded.recovery_point,
            sync: sync::SyncState::new(now_ms()),
            opened: loaded.opened,
            write_in_flight: false,
            epochs,
        };
        if epochs_changed {
            log.epochs_changed();
        }
        Ok(log)
    }

    /// The leader-epoch cache (for OffsetForLeaderEpoch).
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Kafka's `endOffsetFor` on this log (see [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// How [`Log::open`] brought the log up.
    pub fn opened(&self) -> LogOpened {
        self.opened
    }

    #[cfg(test)]
    pub(crate) fn active_segment_state(&self) -> crate::storage::segment::SegmentState {
        self.active().state()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Everything below this offset is durable (Kafka's recovery point): what the log
    /// directory's recovery-point checkpoint records for this partition.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies changed topic settings (roll, retention, flush, index interval) from the next append
    /// or upkeep pass on. The tail cache keeps the budget it was opened with: that is shard tuning,
    /// not a topic setting.
    pub fn set_config(&mut self, config: LogConfig) {
        assert!(config.segment_bytes > 0 && config.segment_index_bytes > 0);
        self.config = LogConfig {
            cache_bytes: self.config.cache_bytes,
            ..config
        };
    }

    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Removes the partition directory and everything in it. Blocking.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))
    }
}

//! One partition's log: an ordered list of segments under `<log.dirs>/<topic>-<partition>/`, the
//! last of which is active (appended to). Offsets are assigned here, idempotent-producer
//! sequences are checked here, and reads for Fetch are answered here as byte ranges.
//!
//! Runs on the shard that owns the partition, and only there: `Log` is not shared. Appends are
//! split so that their data write can run on another thread ([`Log::prepare`], a
//! [`SegmentWrite`], [`Log::complete`]): a buffered write can sleep in the kernel's dirty-page
//! throttling. The rest (index entries, rolls, snapshots, retention) is small synchronous file
//! I/O; fsync is governed by the topic's flush policy (durability for acks=all comes from
//! replication).
//!
//! By concern: this file holds the `Log` itself (open, close, accessors); `append.rs` validation,
//! offset assignment, group commit and roll; `read.rs` Fetch reads and lookups; `retention.rs`
//! retention, truncation and flush. Opening recovers through [`crate::storage::recovery`].
//!
//! [`SegmentWrite`]: crate::storage::SegmentWrite

mod append;
mod read;
mod retention;
#[cfg(test)]
pub(crate) mod test_util;

pub use append::{AppendOutcome, PreparedAppends};
pub use read::{ReadChunk, ReadSlice};

use std::path::{Path, PathBuf};

use crate::storage::batch_cache::BatchCache;
use crate::storage::error::{io_error, StorageError};
use crate::storage::producer_state::ProducerStateManager;
use crate::storage::recovery::{
    list_segments, open_segments, restore_producer_state, take_clean_shutdown_marker,
    write_clean_shutdown_marker,
};
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

/// How [`Log::open`] brought up the active segment: start-up cost, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveSegmentOpen {
    /// The partition directory had no segment: an empty one was created.
    Created,
    /// After a clean shutdown: indexes trusted, only the `tail_bytes` after the last offset-index
    /// entry were read.
    Trusted { tail_bytes: u64 },
    /// After a crash (or when a clean shutdown's files disagreed): every batch was read and
    /// CRC-checked, `scanned_bytes` of them survived.
    Recovered { scanned_bytes: u64 },
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Ascending by base offset, never empty; the last one is active.
    segments: Vec<Segment>,
    cache: BatchCache,
    producer_state: ProducerStateManager,
    messages_since_flush: u64,
    last_flush_ms: i64,
    /// Snapshot files written but not yet fsynced.
    unsynced_snapshots: Vec<PathBuf>,
    /// Files were created or deleted since the directory was last fsynced.
    dir_dirty: bool,
    active_segment_open: ActiveSegmentOpen,
    /// Between [`Log::prepare`] and [`Log::complete`] of a write.
    write_in_flight: bool,
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Opens the partition directory, creating it if needed. Rolled segments are trusted (indexes
    /// mapped and sanity-checked). After a crash the active segment is scanned and a torn or
    /// corrupt tail is truncated (with a warning naming file, position and reason); after a clean
    /// [`Log::close`] it is trusted like a rolled segment, as Kafka does. Producer state comes
    /// from the newest snapshot (after a clean close, one at the log end) plus a replay of later
    /// batches.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        assert!(config.segment_bytes > 0 && config.segment_index_bytes > 0);
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        // Taken (and the removal fsynced) before anything can change the files it vouches for.
        let clean_shutdown = take_clean_shutdown_marker(dir)?;
        let bases = list_segments(dir)?;
        let mut dir_dirty = false;
        let (segments, active_segment_open) = if bases.is_empty() {
            dir_dirty = true;
            (vec![Segment::create(dir, 0)?], ActiveSegmentOpen::Created)
        } else {
            open_segments(dir, &bases, config.index_interval_bytes, clean_shutdown)?
        };
        let producer_state = restore_producer_state(dir, &segments)?;
        Ok(Log {
            dir: dir.to_path_buf(),
            cache: BatchCache::new(config.cache_bytes),
            config,
            segments,
            producer_state,
            messages_since_flush: 0,
            last_flush_ms: wall_clock_ms(),
            unsynced_snapshots: Vec::new(),
            dir_dirty,
            active_segment_open,
            write_in_flight: false,
        })
    }

    /// Which path [`Log::open`] took for the active segment.
    pub fn active_segment_open(&self) -> ActiveSegmentOpen {
        self.active_segment_open
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

    /// Clean shutdown: a producer snapshot at the log end (so the next open replays nothing),
    /// then a full flush, then the clean-shutdown marker that lets the next open skip the
    /// recovery scan. Index files need no trimming: they are never preallocated.
    pub fn close(mut self) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        let path = self
            .producer_state
            .write_snapshot(&self.dir, log_end_offset)?;
        self.unsynced_snapshots.push(path);
        self.dir_dirty = true;
        self.flush()?;
        // Last, and only once the flush succeeded: a marker must never vouch for data, indexes
        // or a snapshot that could still be lost.
        write_clean_shutdown_marker(&self.dir)
    }

    /// Removes the partition directory and everything in it.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))
    }
}

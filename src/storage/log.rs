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

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::record::batch::{patched_prefix, Batch, BatchHeader};
use crate::storage::batch_cache::{BatchCache, CachedBatch};
use crate::storage::error::{io_error, StorageError};
use crate::storage::producer_state::{
    list_snapshots, snapshot_path, ProducerEntry, ProducerStateManager, SequenceCheck,
};
use crate::storage::recovery::{
    list_segments, open_segments, restore_producer_state, sync_dir, take_clean_shutdown_marker,
    write_clean_shutdown_marker,
};
use crate::storage::retention::{segments_to_delete, SegmentSummary};
use crate::storage::segment::{ScanStep, Segment, SegmentWrite, LOOKUP_WINDOW_BYTES};

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

/// Result of [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// `log_append_time_ms` is -1 unless a batch uses LogAppendTime (Kafka's ProduceResponse).
    Appended {
        base_offset: i64,
        last_offset: i64,
        log_append_time_ms: i64,
    },
    /// A retried idempotent batch already in the log, acknowledged with its original offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
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

/// Record data for a Fetch, as pieces to send in order.
#[derive(Debug, Default)]
pub struct ReadSlice {
    pub chunks: Vec<ReadChunk>,
    pub bytes: usize,
}

#[derive(Debug)]
pub enum ReadChunk {
    /// Batches from the tail cache: alternating 16-byte prefixes and bodies (zero copy).
    Cached(Vec<Bytes>),
    /// A byte range of a segment file, for sendfile/splice.
    File {
        file: Arc<File>,
        position: u64,
        len: u32,
    },
}

impl ReadSlice {
    /// Materializes the slice into one buffer (pread for file chunks). For tests and for fetch
    /// paths that cannot splice yet.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let mut out = BytesMut::with_capacity(self.bytes);
        for chunk in &self.chunks {
            match chunk {
                ReadChunk::Cached(pieces) => pieces.iter().for_each(|p| out.extend_from_slice(p)),
                ReadChunk::File {
                    file,
                    position,
                    len,
                } => {
                    let start = out.len();
                    out.resize(start + *len as usize, 0);
                    file.read_exact_at(&mut out[start..], *position)?;
                }
            }
        }
        Ok(out.freeze())
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
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

/// Largest group write: enough to amortise the hand-off to the writer thread, small enough that
/// one partition's write does not hold back the next group for long.
const MAX_GROUP_WRITE_BYTES: u64 = 4 << 20;

/// Appends laid out by [`Log::prepare`], waiting for their write and [`Log::complete`].
pub struct PreparedAppends {
    /// One per append taken, in order. `Appended` becomes true only once the write succeeds.
    outcomes: Vec<Result<AppendOutcome, StorageError>>,
    /// The one write of every new batch taken, until [`PreparedAppends::take_write`].
    write: Option<SegmentWrite>,
    /// What is written (empty: no write, and `complete` changes nothing): stored headers, and the
    /// batches as the tail cache will hold them.
    stored: Vec<(BatchHeader, CachedBatch)>,
    producer_updates: HashMap<i64, ProducerEntry>,
    records: u64,
    now_ms: i64,
    /// The log end offset when the group was laid out: offsets from here on are the group's own.
    first_offset: i64,
}

impl PreparedAppends {
    /// How many appends (from the front of those offered) this group took.
    pub fn taken(&self) -> usize {
        self.outcomes.len()
    }

    /// The write to run before [`Log::complete`]; `None` if no append brought new batches.
    pub fn take_write(&mut self) -> Option<SegmentWrite> {
        self.write.take()
    }
}

enum Validated<'b> {
    Duplicate { base_offset: i64, last_offset: i64 },
    New(Layout<'b>),
}

/// One append's new batches with their assigned offsets.
struct Layout<'b> {
    headers: Vec<(BatchHeader, &'b Batch)>,
    /// One past the last offset of the append.
    next_offset: i64,
    bytes: u64,
    records: u64,
    log_append_time_ms: i64,
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

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Appends validated batches at the log end and writes them before returning: [`Log::prepare`],
    /// the write on this thread, [`Log::complete`]. Sequence checks run first for every batch, so
    /// on any error nothing is appended. For tools and tests; the broker writes off its executor.
    pub fn append(
        &mut self,
        batches: &[Batch],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let mut prepared = self.prepare(&[batches], leader_epoch, now_ms);
        let written = prepared
            .take_write()
            .as_ref()
            .map_or(Ok(()), SegmentWrite::run);
        let mut outcomes = self.complete(prepared, written);
        debug_assert_eq!(outcomes.len(), 1);
        outcomes.pop().expect("one outcome per append")
    }

    /// Group commit, first half: takes appends from the front of `appends` (each one producer
    /// request's batches for this partition) as long as they go into the active segment in one
    /// write, and lays them out: sequences checked, offsets assigned, stored prefixes built. The
    /// log itself does not change until [`Log::complete`], so reads keep seeing only written data
    /// while the write runs elsewhere. At least one append is taken when `appends` is not empty;
    /// an append that fails validation fails alone, as if sent by itself.
    ///
    /// Between `prepare` and `complete` the log must not be appended to, rolled or truncated
    /// (reads, flushes and retention of rolled segments are fine).
    pub fn prepare(
        &mut self,
        appends: &[&[Batch]],
        leader_epoch: i32,
        now_ms: i64,
    ) -> PreparedAppends {
        assert!(!self.write_in_flight, "one group write at a time");
        let mut prepared = PreparedAppends {
            outcomes: Vec::with_capacity(appends.len()),
            write: None,
            stored: Vec::new(),
            producer_updates: HashMap::new(),
            records: 0,
            now_ms,
            first_offset: self.log_end_offset(),
        };
        let mut next_offset = self.log_end_offset();
        let mut group_bytes = 0u64;
        let mut pieces = Vec::new();
        for batches in appends {
            let mut producers = prepared.producer_updates.clone();
            let validated = self.validate(batches, &mut producers, next_offset, now_ms);
            let layout = match validated {
                Err(e) => {
                    prepared.outcomes.push(Err(e));
                    continue;
                }
                Ok(Validated::Duplicate {
                    base_offset,
                    last_offset,
                }) => {
                    prepared.outcomes.push(Ok(AppendOutcome::Duplicate {
                        base_offset,
                        last_offset,
                    }));
                    continue;
                }
                Ok(Validated::New(layout)) => layout,
            };
            if group_bytes == 0 {
                if self.should_roll(layout.bytes, layout.next_offset, now_ms) {
                    if let Err(e) = self.roll() {
                        prepared.outcomes.push(Err(e));
                        break;
                    }
                }
            } else if group_bytes + layout.bytes > MAX_GROUP_WRITE_BYTES
                || self.active_would_overflow(group_bytes + layout.bytes, layout.next_offset)
            {
                break;
            }
            for (header, batch) in &layout.headers {
                let prefix = patched_prefix(&batch.bytes, header.base_offset, leader_epoch);
                let prefix = Bytes::copy_from_slice(&prefix);
                let body = batch.bytes.slice(16..);
                pieces.push(prefix.clone());
                pieces.push(body.clone());
                prepared.stored.push((
                    *header,
                    CachedBatch {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        prefix,
                        body,
                    },
                ));
            }
            prepared.outcomes.push(Ok(AppendOutcome::Appended {
                base_offset: next_offset,
                last_offset: layout.next_offset - 1,
                log_append_time_ms: layout.log_append_time_ms,
            }));
            prepared.producer_updates = producers;
            prepared.records += layout.records;
            group_bytes += layout.bytes;
            next_offset = layout.next_offset;
        }
        if !pieces.is_empty() {
            prepared.write = Some(self.active().write_at_end(pieces));
            self.write_in_flight = true;
        }
        prepared
    }

    /// Group commit, second half: once `prepared.write` ran (`written` is its result), makes the
    /// appended batches part of the log (indexes, tail cache, producer state, flush policy) and
    /// returns one outcome per append taken, in order. A failed write fails every append of it.
    pub fn complete(
        &mut self,
        prepared: PreparedAppends,
        written: Result<(), StorageError>,
    ) -> Vec<Result<AppendOutcome, StorageError>> {
        let PreparedAppends {
            mut outcomes,
            stored,
            producer_updates,
            records,
            now_ms,
            first_offset,
            ..
        } = prepared;
        if stored.is_empty() {
            return outcomes;
        }
        self.write_in_flight = false;
        let failure = written.and_then(|()| {
            let interval = self.config.index_interval_bytes;
            self.active_mut().record_appended(
                stored.iter().map(|(header, _)| header),
                interval,
                now_ms,
            )?;
            for (_, batch) in stored {
                self.cache.push(batch);
            }
            self.producer_state.commit(producer_updates);
            self.messages_since_flush = self.messages_since_flush.saturating_add(records);
            if self.messages_since_flush >= self.config.flush_messages {
                self.flush()?;
                self.last_flush_ms = now_ms;
            }
            Ok(())
        });
        if let Err(e) = failure {
            for outcome in &mut outcomes {
                // A retry of a batch earlier in this same group was matched against the group's
                // own pending state: it fails with the batch it repeats.
                let lost = match outcome {
                    Ok(AppendOutcome::Appended { .. }) => true,
                    Ok(AppendOutcome::Duplicate { base_offset, .. }) => {
                        *base_offset >= first_offset
                    }
                    Err(_) => false,
                };
                if lost {
                    *outcome = Err(StorageError::Io {
                        path: self.dir.clone(),
                        source: io::Error::other(e.to_string()),
                    });
                }
            }
        }
        outcomes
    }

    /// Checks one append's batches against the log's and the group's producer state (`producers`
    /// gains this append's sequences) and assigns offsets from `next_offset`.
    fn validate<'b>(
        &self,
        batches: &'b [Batch],
        producers: &mut HashMap<i64, ProducerEntry>,
        mut next_offset: i64,
        now_ms: i64,
    ) -> Result<Validated<'b>, StorageError> {
        if batches.is_empty() {
            return Err(self.invalid_append("no batches".to_string()));
        }
        let mut duplicates = Vec::new();
        let mut headers = Vec::with_capacity(batches.len());
        let mut bytes = 0u64;
        let mut records = 0u64;
        let mut log_append_time_ms = -1;
        for batch in batches {
            if batch.bytes.len() != batch.header.total_bytes() {
                return Err(self.invalid_append(format!(
                    "batch is {} bytes but its header says {}",
                    batch.bytes.len(),
                    batch.header.total_bytes()
                )));
            }
            match self
                .producer_state
                .check(&self.dir, &batch.header, producers)?
            {
                SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    duplicates.push((base_offset, last_offset));
                    continue;
                }
                SequenceCheck::Append => {}
            }
            let mut header = batch.header;
            header.base_offset = next_offset;
            if header.has_producer_id() && !header.is_control() {
                let before = producers
                    .get(&header.producer_id)
                    .or(self.producer_state.get(header.producer_id));
                let after = ProducerStateManager::applied(before, &header);
                producers.insert(header.producer_id, after);
            }
            if header.timestamp_type_is_log_append() {
                log_append_time_ms = now_ms;
            }
            next_offset = header.last_offset() + 1;
            bytes += batch.bytes.len() as u64;
            records += header.records_count as u64;
            headers.push((header, batch));
        }
        if !duplicates.is_empty() {
            if duplicates.len() != batches.len() {
                return Err(self.invalid_append(
                    "retried batches mixed with new ones in one append".to_string(),
                ));
            }
            let (base_offset, _) = duplicates[0];
            let (_, last_offset) = duplicates[duplicates.len() - 1];
            return Ok(Validated::Duplicate {
                base_offset,
                last_offset,
            });
        }
        Ok(Validated::New(Layout {
            headers,
            next_offset,
            bytes,
            records,
            log_append_time_ms,
        }))
    }

    fn invalid_append(&self, reason: String) -> StorageError {
        StorageError::InvalidAppend {
            dir: self.dir.clone(),
            reason,
        }
    }

    /// Kafka's roll rules, for an append of `append_bytes` ending before `next_offset`: size,
    /// age, index full, or positions/relative offsets about to overflow their u32 index fields.
    fn should_roll(&self, append_bytes: u64, next_offset: i64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        self.active_would_overflow(append_bytes, next_offset)
            || self.segment_is_old(now_ms)
            || active.offset_index.is_full(self.config.segment_index_bytes)
    }

    /// Whether `append_bytes` more, ending before `next_offset`, would outgrow the active
    /// segment's size limit or its index fields.
    fn active_would_overflow(&self, append_bytes: u64, next_offset: i64) -> bool {
        let active = self.active();
        let size_after = active.size_bytes + append_bytes;
        size_after > self.config.segment_bytes
            || size_after > u64::from(u32::MAX)
            || next_offset - active.base_offset > i64::from(u32::MAX)
    }

    fn segment_is_old(&self, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && active
                .roll_base_ms
                .is_some_and(|base| now_ms.saturating_sub(base) > self.config.segment_ms)
    }

    /// Starts a new active segment at the log end. Writes a producer snapshot for the new base
    /// offset so that recovery only replays the new active segment.
    fn roll(&mut self) -> Result<(), StorageError> {
        let base_offset = self.log_end_offset();
        self.active_mut().seal()?;
        let snapshot = self.producer_state.write_snapshot(&self.dir, base_offset)?;
        self.unsynced_snapshots.push(snapshot);
        let segment = Segment::create(&self.dir, base_offset)?;
        self.segments.push(segment);
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled new segment");
        Ok(())
    }

    /// Time-based roll check, for the background task.
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        if !self.write_in_flight && self.segment_is_old(now_ms) {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            dir: self.dir.clone(),
            offset,
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
        }
    }

    /// Batches whose last offset is >= `offset`, whole batches only, up to `max_bytes` (but at
    /// least one batch when `min_one`), and only batches entirely below `max_offset` (e.g. the
    /// high watermark). Served from the tail cache when it covers `offset`, else as file ranges.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<ReadSlice, StorageError> {
        if offset < self.log_start_offset() || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        let mut slice = ReadSlice::default();
        if offset >= self.log_end_offset() || offset >= max_offset {
            return Ok(slice);
        }
        let fits = |slice: &ReadSlice, len: usize| {
            slice.bytes + len <= max_bytes || (min_one && slice.bytes == 0)
        };
        let cache_start = self.cache.start_offset().unwrap_or(i64::MAX);
        let mut from_cache_at = None;
        if offset < cache_start {
            let first = self
                .segments
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            let mut want = offset;
            'segments: for segment in &self.segments[first..] {
                let Some((start, _)) = segment.find_batch(want)? else {
                    continue;
                };
                let mut scanner = segment.scanner(start, LOOKUP_WINDOW_BYTES);
                let mut len = 0u64;
                let mut done = false;
                loop {
                    match scanner.next_step()? {
                        ScanStep::End => break,
                        ScanStep::Invalid { position, reason } => {
                            return Err(StorageError::Corrupt {
                                path: segment.log_path.clone(),
                                position,
                                reason,
                            })
                        }
                        ScanStep::Batch { header, .. } => {
                            if header.last_offset() >= max_offset {
                                done = true;
                                break;
                            }
                            if header.base_offset >= cache_start {
                                from_cache_at = Some(header.base_offset);
                                done = true;
                                break;
                            }
                            let batch_len = header.total_bytes();
                            if !fits(&slice, batch_len) {
                                done = true;
                                break;
                            }
                            len += batch_len as u64;
                            slice.bytes += batch_len;
                            want = header.last_offset() + 1;
                        }
                    }
                }
                if len > 0 {
                    slice.chunks.push(ReadChunk::File {
                        file: Arc::clone(&segment.file),
                        position: start,
                        len: u32::try_from(len).expect("a segment is smaller than 4 GiB"),
                    });
                }
                if done {
                    break 'segments;
                }
            }
        } else {
            from_cache_at = Some(offset);
        }
        if let Some(at) = from_cache_at {
            let mut pieces = Vec::new();
            for batch in self.cache.from_offset(at) {
                if batch.last_offset >= max_offset || !fits(&slice, batch.len()) {
                    break;
                }
                slice.bytes += batch.len();
                pieces.push(batch.prefix.clone());
                pieces.push(batch.body.clone());
            }
            if !pieces.is_empty() {
                slice.chunks.push(ReadChunk::Cached(pieces));
            }
        }
        Ok(slice)
    }

    /// The first batch whose maxTimestamp is >= `timestamp` (time index, then a short scan),
    /// returned whole so the caller can find the exact record. `None` if every batch is older.
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, StorageError> {
        for segment in self
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= timestamp)
        {
            if let Some((position, header)) = segment.find_batch_by_timestamp(timestamp)? {
                return segment.read_bytes(position, header.total_bytes()).map(Some);
            }
        }
        Ok(None)
    }

    /// Deletes whole rolled segments past `retention_ms` (by their largest timestamp) or beyond
    /// `retention_bytes`, oldest first, and the producer snapshots below the new log start.
    /// Returns how many segments were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        let rolled = &self.segments[..self.segments.len() - 1];
        let mut summaries = Vec::with_capacity(rolled.len());
        for segment in rolled {
            let largest_timestamp_ms = if segment.max_timestamp >= 0 {
                segment.max_timestamp
            } else {
                file_mtime_ms(&segment.file).map_err(|e| io_error(&segment.log_path, e))?
            };
            summaries.push(SegmentSummary {
                largest_timestamp_ms,
                size_bytes: segment.size_bytes,
            });
        }
        let count = segments_to_delete(
            &summaries,
            self.size_bytes(),
            self.config.retention_ms,
            self.config.retention_bytes,
            now_ms,
        );
        if count == 0 {
            return Ok(0);
        }
        let deleted: Vec<Segment> = self.segments.drain(..count).collect();
        for segment in deleted {
            tracing::info!(segment = %segment.log_path.display(), "deleting segment past retention");
            segment.delete_files()?;
        }
        self.dir_dirty = true;
        let log_start_offset = self.log_start_offset();
        if self
            .cache
            .start_offset()
            .is_some_and(|s| s < log_start_offset)
        {
            self.cache.clear();
        }
        self.delete_snapshots(|offset| offset < log_start_offset)?;
        Ok(count)
    }

    fn delete_snapshots(&mut self, doomed: impl Fn(i64) -> bool) -> Result<(), StorageError> {
        for offset in list_snapshots(&self.dir)? {
            if doomed(offset) {
                let path = snapshot_path(&self.dir, offset);
                std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                self.unsynced_snapshots.retain(|p| p != &path);
                self.dir_dirty = true;
            }
        }
        Ok(())
    }

    /// fsyncs every segment's data and indexes, pending snapshots, and the directory.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        for segment in &mut self.segments {
            segment.sync()?;
        }
        for path in std::mem::take(&mut self.unsynced_snapshots) {
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            file.sync_all().map_err(|e| io_error(&path, e))?;
        }
        if self.dir_dirty {
            // IMPORTANT: fsync the directory too, or a crash can lose a new segment's or
            // snapshot's name even though its data was synced.
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.messages_since_flush = 0;
        Ok(())
    }

    /// Applies the `flush.ms` policy.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if self.messages_since_flush > 0
            && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
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

    /// Drops everything at or after `offset` (for replicas whose tail diverged from the
    /// leader). The cut is at a batch boundary: a batch containing `offset` goes entirely, so
    /// the new log end offset is that batch's base offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let interval = self.config.index_interval_bytes;
        if offset <= self.log_start_offset() {
            // Everything goes: start over with one empty segment at `offset`.
            for segment in self.segments.drain(..) {
                segment.delete_files()?;
            }
            self.segments.push(Segment::create(&self.dir, offset)?);
        } else {
            while self.segments.len() > 1 && self.active().base_offset >= offset {
                let segment = self.segments.pop().expect("more than one segment");
                segment.delete_files()?;
            }
            let dir = self.dir.clone();
            self.active_mut().truncate_to(&dir, offset, interval)?;
        }
        self.dir_dirty = true;
        let log_end_offset = self.log_end_offset();
        self.cache.truncate_to(log_end_offset);
        self.delete_snapshots(|o| o > log_end_offset)?;
        self.producer_state = restore_producer_state(&self.dir, &self.segments)?;
        Ok(())
    }

    /// Header of the batch containing `offset` (for replication's epoch lookups and tests).
    pub fn batch_header_at(&self, offset: i64) -> Result<Option<BatchHeader>, StorageError> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            if let Some((_, header)) = segment.find_batch(offset)? {
                return Ok(Some(header));
            }
        }
        Ok(None)
    }
}

fn file_mtime_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    Ok(modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, patched, BatchSpec};
    use crate::storage::time_index::TimeIndex;

    const EPOCH: i32 = 3;

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 1_000,
            index_interval_bytes: 200,
            ..LogConfig::default()
        }
    }

    fn spec(i: usize) -> BatchSpec {
        BatchSpec {
            records: 1 + (i % 4) as i32,
            value_bytes: 20 + (i * 37) % 150,
            base_timestamp: 1_000 + 10 * i as i64,
            fill: i as u8,
            ..BatchSpec::default()
        }
    }

    /// Appends `n` batches one call each; returns (base offset, stored bytes) per batch.
    fn fill(log: &mut Log, n: usize) -> Vec<(i64, Vec<u8>)> {
        let mut stored = Vec::new();
        for i in 0..n {
            let b = batch(&spec(i));
            match log
                .append(std::slice::from_ref(&b), EPOCH, 0)
                .expect("append")
            {
                AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                    ..
                } => {
                    assert_eq!(
                        last_offset - base_offset + 1,
                        i64::from(b.header.records_count)
                    );
                    stored.push((base_offset, patched(&b.bytes, base_offset, EPOCH)));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        stored
    }

    fn appended(outcome: &Result<AppendOutcome, StorageError>) -> (i64, i64) {
        match outcome {
            Ok(AppendOutcome::Appended {
                base_offset,
                last_offset,
                ..
            }) => (*base_offset, *last_offset),
            other => panic!("expected Appended, got {other:?}"),
        }
    }

    #[test]
    fn group_commit_writes_several_appends_at_once_and_fails_only_the_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        log.append(&[idem(7, 0, 0, 2)], EPOCH, 0).expect("first");
        let a = [batch(&spec(1)), batch(&spec(2))];
        let gap = [idem(7, 0, 5, 1)]; // producer 7 expects sequence 2
        let c = [idem(7, 0, 2, 3)];
        let mut prepared = log.prepare(&[&a, &gap, &c], EPOCH, 0);
        assert_eq!(prepared.taken(), 3);
        // Laid out but not written: the log does not show any of it yet.
        assert_eq!(log.log_end_offset(), 2);
        assert!(read_all(&log, 2).is_empty());
        let write = prepared.take_write().expect("a write");
        write.run().expect("write");
        let outcomes = log.complete(prepared, Ok(()));
        let records = |b: &[Batch]| b.iter().map(|b| i64::from(b.records_count())).sum::<i64>();
        let a_records = records(&a);
        assert_eq!(appended(&outcomes[0]), (2, 2 + a_records - 1));
        assert!(matches!(
            outcomes[1],
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert_eq!(appended(&outcomes[2]), (2 + a_records, 2 + a_records + 2));
        assert_eq!(log.log_end_offset(), 2 + a_records + 3);
        let mut expected = patched(&a[0].bytes, 2, EPOCH);
        expected.extend(patched(
            &a[1].bytes,
            2 + i64::from(a[0].records_count()),
            EPOCH,
        ));
        expected.extend(patched(&c[0].bytes, 2 + a_records, EPOCH));
        let all = read_all(&log, 2);
        assert_eq!(all, expected);
        // The same bytes come from the file as from the tail cache.
        drop(log);
        let reopened = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(read_all(&reopened, 2), expected);
        assert_eq!(
            reopened
                .producer_state()
                .get(7)
                .and_then(|e| e.batches.back())
                .map(|b| b.last_seq),
            Some(4)
        );
    }

    #[test]
    fn a_group_stops_where_the_segment_must_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let big = |fill: u8| {
            batch(&BatchSpec {
                value_bytes: 400,
                fill,
                ..BatchSpec::default()
            })
        };
        let (a, b, c) = ([big(1)], [big(2)], [big(3)]);
        let mut first = log.prepare(&[&a, &b, &c], EPOCH, 0);
        assert_eq!(
            first.taken(),
            2,
            "a third 400-byte value outgrows 1000-byte segments"
        );
        let written = first.take_write().expect("write").run();
        log.complete(first, written);
        assert_eq!(log.segment_count(), 1);
        let mut second = log.prepare(&[&c], EPOCH, 0);
        let written = second.take_write().expect("write").run();
        assert_eq!(appended(&log.complete(second, written)[0]), (2, 2));
        assert_eq!(log.segment_count(), 2, "the next group rolled first");
    }

    #[test]
    fn a_failed_group_write_fails_every_append_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 3);
        let end = log.log_end_offset();
        let (a, b) = ([idem(9, 0, 0, 1)], [batch(&spec(5))]);
        // The third append retries the first, within the same group.
        let mut prepared = log.prepare(&[&a, &b, &a], EPOCH, 0);
        assert!(
            matches!(
                prepared.outcomes[2],
                Ok(AppendOutcome::Duplicate { base_offset, .. }) if base_offset == end
            ),
            "{:?}",
            prepared.outcomes
        );
        drop(prepared.take_write());
        let failed = StorageError::Io {
            path: dir.path().to_path_buf(),
            source: io::Error::other("disk full"),
        };
        let outcomes = log.complete(prepared, Err(failed));
        assert!(outcomes.iter().all(|o| o.is_err()), "{outcomes:?}");
        assert_eq!(log.log_end_offset(), end);
        assert!(log.producer_state().get(9).is_none());
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
        // The same appends succeed afterwards, at the same offsets.
        assert_eq!(
            appended(&Ok(log.append(&a, EPOCH, 0).expect("retry"))).0,
            end
        );
    }

    #[test]
    fn changed_settings_apply_to_an_open_log() {
        let dir = tempfile::tempdir().unwrap();
        let big = LogConfig {
            segment_bytes: 1 << 20,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), big.clone()).expect("open");
        fill(&mut log, 10);
        assert_eq!(
            log.segment_count(),
            1,
            "1 MiB segments hold ten small batches"
        );
        log.set_config(LogConfig {
            segment_bytes: 200,
            cache_bytes: 0,
            ..big
        });
        fill(&mut log, 10);
        assert!(
            log.segment_count() > 3,
            "smaller segment.bytes rolls from the next append on"
        );
        assert_eq!(
            log.config().cache_bytes,
            small_config().cache_bytes,
            "the cache budget stays"
        );
    }

    fn expected_from(stored: &[(i64, Vec<u8>)], offset: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for (base, bytes) in stored {
            let header = BatchHeader::parse(bytes).expect("header");
            if *base + i64::from(header.last_offset_delta) >= offset {
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    fn read_all(log: &Log, offset: i64) -> Vec<u8> {
        log.read(offset, usize::MAX, i64::MAX, true)
            .expect("read")
            .to_bytes()
            .expect("bytes")
            .to_vec()
    }

    #[test]
    fn append_read_round_trip_across_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orders-0");
        let mut log = Log::open(&path, small_config()).expect("open");
        let stored = fill(&mut log, 40);
        assert!(log.segment_count() > 3, "tiny segment_bytes must roll");
        let leo = log.log_end_offset();
        assert_eq!(
            leo,
            (0..40).map(|i| i64::from(spec(i).records)).sum::<i64>()
        );
        for offset in 0..leo {
            assert_eq!(
                read_all(&log, offset),
                expected_from(&stored, offset),
                "offset {offset}"
            );
        }
        assert!(log.read(leo, 100, i64::MAX, true).expect("read").is_empty());
        assert!(matches!(
            log.read(leo + 1, 100, i64::MAX, true),
            Err(StorageError::OffsetOutOfRange { offset, .. }) if offset == leo + 1
        ));

        // The same answers from the files alone (fresh log: empty cache).
        drop(log);
        let log = Log::open(&path, small_config()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        for offset in 0..leo {
            let slice = log.read(offset, usize::MAX, i64::MAX, true).expect("read");
            assert!(slice
                .chunks
                .iter()
                .all(|c| matches!(c, ReadChunk::File { .. })));
            assert_eq!(
                slice.to_bytes().expect("bytes").to_vec(),
                expected_from(&stored, offset)
            );
        }
    }

    #[test]
    fn read_honours_max_bytes_max_offset_and_min_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 10);
        let first_len = stored[0].1.len();
        let two = first_len + stored[1].1.len();
        for log in [
            &log,
            &Log::open(dir.path(), small_config()).expect("reopen"),
        ] {
            let slice = log.read(0, two, i64::MAX, false).expect("read");
            assert_eq!(slice.bytes, two);
            assert!(log
                .read(0, first_len - 1, i64::MAX, false)
                .expect("read")
                .is_empty());
            assert_eq!(
                log.read(0, 1, i64::MAX, true).expect("read").bytes,
                first_len
            );
            // max_offset is exclusive: batch 1 starts at stored[1].0, so only batch 0 is below.
            let slice = log.read(0, usize::MAX, stored[1].0, true).expect("read");
            assert_eq!(slice.to_bytes().expect("bytes").to_vec(), stored[0].1);
            assert!(log.read(0, usize::MAX, 0, true).expect("read").is_empty());
        }
    }

    #[test]
    fn cache_serves_tail_reads_zero_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let b = batch(&spec(1));
        log.append(std::slice::from_ref(&b), EPOCH, 0)
            .expect("append");
        let slice = log.read(0, usize::MAX, i64::MAX, true).expect("read");
        let [ReadChunk::Cached(pieces)] = slice.chunks.as_slice() else {
            panic!("expected one cached chunk, got {:?}", slice.chunks);
        };
        assert_eq!(
            pieces[1].as_ptr(),
            b.bytes[16..].as_ptr(),
            "body is the produced Bytes"
        );
        assert_eq!(
            slice.to_bytes().expect("bytes").to_vec(),
            patched(&b.bytes, 0, EPOCH)
        );
    }

    #[test]
    fn find_batch_by_timestamp_uses_time_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        for log in [
            &log,
            &Log::open(dir.path(), small_config()).expect("reopen"),
        ] {
            for (i, (base, bytes)) in stored.iter().enumerate() {
                let s = spec(i);
                // Any timestamp in (previous max, this max] finds this batch.
                for ts in [
                    s.base_timestamp,
                    s.base_timestamp + i64::from(s.records) - 1,
                ] {
                    let found = log
                        .find_batch_by_timestamp(ts)
                        .expect("find")
                        .expect("some");
                    assert_eq!(found.to_vec(), *bytes, "ts {ts} batch at {base}");
                }
            }
            assert_eq!(log.find_batch_by_timestamp(1_000_000).expect("find"), None);
            let first = log.find_batch_by_timestamp(0).expect("find").expect("some");
            assert_eq!(first.to_vec(), stored[0].1);
        }
    }

    #[test]
    fn retention_deletes_old_segments_and_advances_log_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_ms: 100,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        let stored = fill(&mut log, 40);
        let segments = log.segment_count();
        assert_eq!(log.enforce_retention(1_000).expect("retention"), 0);
        // Batch i has max timestamp ~1000 + 10 i; at now = 1250 those below 1150 are expired.
        let deleted = log.enforce_retention(1_250).expect("retention");
        assert!(deleted >= 1 && deleted < segments);
        assert_eq!(log.segment_count(), segments - deleted);
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(0, 10, i64::MAX, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, start), expected_from(&stored, start));
        // Everything expired: only the active segment survives.
        log.enforce_retention(i64::MAX).expect("retention");
        assert_eq!(log.segment_count(), 1);
        for offset in list_snapshots(dir.path()).expect("list") {
            assert!(offset >= log.log_start_offset());
        }
        let leo = log.log_end_offset();
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);

        // By size.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_bytes: 1_500,
            retention_ms: -1,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), config).expect("open");
        fill(&mut log, 40);
        assert!(log.enforce_retention(0).expect("retention") > 0);
        assert!(log.size_bytes() >= 1_500 && log.size_bytes() < 1_500 + 1_000);
    }

    #[test]
    fn garbage_tail_is_truncated_and_acknowledged_data_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 12);
        let leo = log.log_end_offset();
        let active = log.active().log_path.clone();
        let size = log.size_bytes();
        drop(log);
        let mut bytes = std::fs::read(&active).expect("read");
        bytes.extend_from_slice(&[0xab; 100]);
        std::fs::write(&active, &bytes).expect("write");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.size_bytes(), size);
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
    }

    #[test]
    fn half_written_and_corrupt_tail_batches_are_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 5);
        let active = log.active().log_path.clone();
        let leo = log.log_end_offset();
        drop(log);
        // A sixth batch, written only half-way.
        let torn = patched(&batch(&spec(5)).bytes, leo, EPOCH);
        let mut file = std::fs::read(&active).expect("read");
        let good_len = file.len();
        file.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&active, &file).expect("write");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(
            std::fs::metadata(&active).expect("meta").len() as usize,
            good_len
        );
        // Appends continue at the right offset after recovery.
        let more = fill(&mut log, 1);
        assert_eq!(more[0].0, leo);
        drop(log);

        // A whole last batch whose body was flipped: CRC catches it.
        let mut file = std::fs::read(&active).expect("read");
        let last = file.len() - 3;
        file[last] ^= 0x55;
        std::fs::write(&active, &file).expect("write");
        let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
    }

    #[test]
    fn implausible_base_offset_outside_crc_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 4);
        let active = log.active().log_path.clone();
        drop(log);
        // baseOffset is not covered by the CRC: recovery must still refuse a batch whose
        // offset jumps past what a segment can index.
        let mut file = std::fs::read(&active).expect("read");
        let last_start = file.len() - stored[3].1.len();
        file[last_start..last_start + 8].copy_from_slice(&(1i64 << 40).to_be_bytes());
        std::fs::write(&active, &file).expect("write");
        let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), stored[3].0);
        assert_eq!(read_all(&log, 0), expected_from(&stored[..3], 0));
    }

    #[test]
    fn broken_rolled_index_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        let first_index = log.segments[0].offset_index.path().to_path_buf();
        let first_time_index = log.segments[0].time_index.path().to_path_buf();
        log.close().expect("close");
        std::fs::write(&first_index, [1u8; 13]).expect("tear index");
        std::fs::remove_file(&first_time_index).expect("remove time index");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
        assert_eq!(std::fs::metadata(&first_index).expect("meta").len() % 8, 0);
        assert!(first_time_index.exists());
        assert_eq!(
            log.find_batch_by_timestamp(spec(1).base_timestamp)
                .expect("find")
                .expect("some")
                .to_vec(),
            stored[1].1
        );
    }

    fn idem(pid: i64, epoch: i16, seq: i32, records: i32) -> Batch {
        batch(&BatchSpec {
            records,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            ..BatchSpec::default()
        })
    }

    #[test]
    fn idempotent_producer_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let first = idem(7, 0, 0, 3);
        assert!(matches!(
            log.append(std::slice::from_ref(&first), EPOCH, 0)
                .expect("append"),
            AppendOutcome::Appended {
                base_offset: 0,
                last_offset: 2,
                ..
            }
        ));
        // Retry: acknowledged with the original offsets, nothing written.
        let size = log.size_bytes();
        assert_eq!(
            log.append(std::slice::from_ref(&first), EPOCH, 0)
                .expect("dup"),
            AppendOutcome::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(log.size_bytes(), size);
        // All-or-nothing: a good batch followed by a gap appends nothing.
        let err = log
            .append(&[idem(7, 0, 3, 1), idem(7, 0, 9, 1)], EPOCH, 0)
            .expect_err("gap");
        assert!(matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 4,
                got: 9,
                ..
            }
        ));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        assert_eq!(log.log_end_offset(), 3);
        // Two in-order batches in one call are both accepted.
        assert!(matches!(
            log.append(&[idem(7, 0, 3, 1), idem(7, 0, 4, 2)], EPOCH, 0)
                .expect("append"),
            AppendOutcome::Appended {
                base_offset: 3,
                last_offset: 5,
                ..
            }
        ));
        assert!(matches!(
            log.append(&[idem(8, 0, 1, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            log.append(&[idem(7, 1, 5, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 5,
                ..
            })
        ));
        log.append(&[idem(7, 1, 0, 1)], EPOCH, 0)
            .expect("new epoch restarts at 0");
        assert!(matches!(
            log.append(&[idem(7, 0, 6, 1)], EPOCH, 0),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        // Non-idempotent producers are never checked.
        log.append(&[batch(&BatchSpec::default())], EPOCH, 0)
            .expect("plain");
        log.append(&[batch(&BatchSpec::default())], EPOCH, 0)
            .expect("plain again");
        assert_eq!(log.log_end_offset(), 9);
    }

    fn producer_state_survives(crash: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        let mut seq = 0;
        for i in 0..10 {
            log.append(&[idem(5, 2, seq, 2)], EPOCH, 0).expect("append");
            seq += 2;
            log.append(&[idem(6, 0, i, 1)], EPOCH, 0).expect("append");
        }
        assert!(log.segment_count() > 2);
        let last = idem(5, 2, seq - 2, 2);
        let leo = log.log_end_offset();
        if crash {
            drop(log);
        } else {
            log.close().expect("close");
        }
        let mut log = Log::open(dir.path(), config).expect("reopen");
        // After a clean close producer state comes from the close's snapshot alone: the active
        // segment is not even scanned, so nothing could have been replayed.
        assert_eq!(
            matches!(log.active_segment_open(), ActiveSegmentOpen::Trusted { .. }),
            !crash
        );
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(
            log.append(&[last], EPOCH, 0).expect("dup"),
            AppendOutcome::Duplicate {
                base_offset: leo - 3,
                last_offset: leo - 2
            }
        );
        assert!(matches!(
            log.append(&[idem(5, 2, seq + 1, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        log.append(&[idem(5, 2, seq, 1)], EPOCH, 0)
            .expect("next in sequence");
        log.append(&[idem(6, 0, 10, 1)], EPOCH, 0)
            .expect("next in sequence");
        assert!(matches!(
            log.append(&[idem(6, 0, 0, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn producer_state_survives_close_and_reopen() {
        producer_state_survives(false);
    }

    #[test]
    fn producer_state_survives_crash() {
        producer_state_survives(true);
    }

    #[test]
    fn truncate_to_drops_tail_and_producer_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        log.append(&[idem(1, 0, 0, 1)], EPOCH, 0).expect("append");
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        let cut = stored[13].0; // batch 13 holds two records
        log.truncate_to(cut + 1).expect("truncate");
        assert_eq!(
            log.log_end_offset(),
            cut,
            "the batch containing the offset goes"
        );
        assert_eq!(read_all(&log, 0), expected_from(&stored[..13], 0));
        // The producer's batch is gone, so it must start again at 0.
        log.append(&[idem(1, 0, 0, 1)], EPOCH, 0)
            .expect("sequence 0 again");
        let refill = fill(&mut log, 3);
        assert_eq!(refill[0].0, cut + 1, "after the producer's one record");
        drop(log);
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.log_end_offset(),
            refill[2].0 + i64::from(spec(2).records)
        );
        let mut log = log;
        log.truncate_to(0).expect("truncate all");
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.segment_count()
            ),
            (0, 0, 1)
        );
    }

    #[test]
    fn flush_policies_and_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-1");
        let config = LogConfig {
            flush_messages: 2,
            flush_ms: 1_000,
            ..small_config()
        };
        let mut log = Log::open(&path, config).expect("open");
        fill(&mut log, 3);
        log.flush_if_due(i64::MAX).expect("flush.ms");
        assert_eq!(log.messages_since_flush, 0);
        assert!(log.roll_if_due(0).is_ok());
        // segment.ms: the active segment's clock starts at its first batch's timestamp.
        let before = log.segment_count();
        assert!(log.roll_if_due(i64::MAX).expect("roll"));
        assert_eq!(log.segment_count(), before + 1);
        assert!(!log.roll_if_due(i64::MAX).expect("empty active never rolls"));
        log.delete().expect("delete");
        assert!(!path.exists());
    }

    /// One segment with many index entries, so the tail after the last entry is short.
    fn one_segment_config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 200,
            ..LogConfig::default()
        }
    }

    fn marker(dir: &Path) -> PathBuf {
        dir.join(crate::storage::recovery::CLEAN_SHUTDOWN_MARKER)
    }

    /// Opens a copy of `dir` without its clean-shutdown marker: the full recovery scan's view
    /// of the same files, to compare the trusted open against.
    fn recovered_copy(dir: &Path, config: LogConfig) -> (tempfile::TempDir, Log) {
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path != marker(dir) {
                std::fs::copy(&path, copy.path().join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
        let log = Log::open(copy.path(), config).expect("open copy");
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Recovered { .. }
        ));
        (copy, log)
    }

    /// Every read a consumer could make lands on the right batch: from each batch's base
    /// offset, from inside it, and by timestamp.
    fn assert_reads(log: &Log, stored: &[(i64, Vec<u8>)]) {
        assert_eq!(
            read_all(log, log.log_start_offset()),
            expected_from(stored, 0)
        );
        for (i, (base, bytes)) in stored.iter().enumerate() {
            let header = BatchHeader::parse(bytes).expect("header");
            for offset in [*base, base + i64::from(header.last_offset_delta)] {
                let one = log.read(offset, 1, i64::MAX, true).expect("read");
                assert_eq!(one.to_bytes().expect("bytes").to_vec(), *bytes, "batch {i}");
            }
            let found = log
                .find_batch_by_timestamp(header.max_timestamp)
                .expect("find")
                .expect("some");
            // Timestamps repeat across fill() calls: the first batch reaching it is found.
            let first = stored
                .iter()
                .find(|(_, b)| {
                    BatchHeader::parse(b).expect("header").max_timestamp >= header.max_timestamp
                })
                .expect("some");
            assert_eq!(found.to_vec(), first.1);
        }
    }

    #[test]
    fn clean_close_skips_the_recovery_scan_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = one_segment_config();
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        assert_eq!(log.active_segment_open(), ActiveSegmentOpen::Created);
        let mut stored = fill(&mut log, 40);
        assert_eq!(log.segment_count(), 1);
        let size = log.size_bytes();
        log.close().expect("close");
        assert!(marker(dir.path()).exists());

        let (_copy, recovered) = recovered_copy(dir.path(), config.clone());
        let mut log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert!(
            !marker(dir.path()).exists(),
            "the marker is gone before anything is served"
        );
        let ActiveSegmentOpen::Trusted { tail_bytes } = log.active_segment_open() else {
            panic!(
                "expected a trusted open, got {:?}",
                log.active_segment_open()
            );
        };
        assert!(
            tail_bytes < size / 4,
            "{tail_bytes} of {size} bytes were read"
        );
        // The trusted open must be indistinguishable from recovery, except that it holds the
        // indexes it found on disk instead of rebuilding them.
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_eq!(log.active_segment_state().indexes_mapped, (false, false));
        assert_reads(&log, &stored);

        // Appends continue at the log end, and the index keeps growing as recovery would build it.
        let leo = log.log_end_offset();
        let entries = log.active_segment_state().offset_index.len();
        let more = fill(&mut log, 40);
        assert_eq!(more[0].0, leo);
        stored.extend(more);
        assert!(log.active_segment_state().offset_index.len() > entries);
        assert_reads(&log, &stored);
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), config.clone());
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // The marker was consumed: a crash now means a full scan again.
        let size = log.size_bytes();
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen after crash");
        assert_eq!(
            log.active_segment_open(),
            ActiveSegmentOpen::Recovered {
                scanned_bytes: size
            }
        );
        assert_reads(&log, &stored);
    }

    #[test]
    fn clean_close_with_rolled_segments_and_an_empty_active_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        assert!(log.segment_count() > 2);
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), small_config());
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // A segment rolled by segment.ms and closed empty reopens empty, still appendable.
        assert!(log.roll_if_due(i64::MAX).expect("roll"));
        let leo = log.log_end_offset();
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { tail_bytes: 0 }
        );
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.active_segment_state().roll_base_ms, None);
        assert_eq!(fill(&mut log, 1)[0].0, leo);
    }

    #[test]
    fn crash_without_close_runs_the_recovery_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
        let stored = fill(&mut log, 20);
        let size = log.size_bytes();
        drop(log);
        assert!(!marker(dir.path()).exists());
        let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
        assert_eq!(
            log.active_segment_open(),
            ActiveSegmentOpen::Recovered {
                scanned_bytes: size
            }
        );
        assert_reads(&log, &stored);
    }

    /// A marker vouches for the files; when they disagree anyway, open falls back to the
    /// full scan (which truncates what is invalid) instead of serving from a bad index.
    #[test]
    fn marker_with_inconsistent_files_falls_back_to_the_scan() {
        type Damage = fn(&Path, &SegmentPaths);
        struct SegmentPaths {
            log: PathBuf,
            index: PathBuf,
            time_index: PathBuf,
        }
        let damages: [(&str, Damage); 5] = [
            ("garbage after the last batch", |_, p| {
                let mut bytes = std::fs::read(&p.log).expect("read");
                bytes.extend_from_slice(&[0xab; 100]);
                std::fs::write(&p.log, &bytes).expect("write");
            }),
            ("last batch torn", |_, p| {
                let len = std::fs::metadata(&p.log).expect("meta").len();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p.log)
                    .expect("open");
                file.set_len(len - 7).expect("cut");
            }),
            ("index entry off a batch boundary", |_, p| {
                let mut bytes = std::fs::read(&p.index).expect("read");
                let last = bytes.len() - 4;
                let position = u32::from_le_bytes(bytes[last..].try_into().expect("4"));
                bytes[last..].copy_from_slice(&(position + 1).to_le_bytes());
                std::fs::write(&p.index, &bytes).expect("write");
            }),
            ("time index missing", |_, p| {
                std::fs::remove_file(&p.time_index).expect("remove");
            }),
            ("time index past the end", |_, p| {
                let mut index = TimeIndex::create(&p.time_index, 0).expect("create");
                index.maybe_append(1, 1_000_000).expect("append");
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
            let stored = fill(&mut log, 20);
            let leo = log.log_end_offset();
            let paths = SegmentPaths {
                log: log.active().log_path.clone(),
                index: log.active().offset_index.path().to_path_buf(),
                time_index: log.active().time_index.path().to_path_buf(),
            };
            log.close().expect("close");
            damage(dir.path(), &paths);
            let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
            assert!(
                matches!(
                    log.active_segment_open(),
                    ActiveSegmentOpen::Recovered { .. }
                ),
                "{what}: {:?}",
                log.active_segment_open()
            );
            assert!(!marker(dir.path()).exists(), "{what}");
            if what == "last batch torn" {
                assert_eq!(log.log_end_offset(), stored[19].0, "{what}");
                assert_reads(&log, &stored[..19]);
            } else {
                assert_eq!(log.log_end_offset(), leo, "{what}");
                assert_reads(&log, &stored);
            }
        }
    }

    /// The price of skipping the scan, which Kafka pays too: damage inside the active segment
    /// (before the short tail that is still read) done while the broker was down is not found
    /// at start-up, just as it never is for rolled segments. After a crash the same damage is
    /// found and the log cut before it.
    #[test]
    fn damage_while_cleanly_stopped_is_not_scanned_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
        let stored = fill(&mut log, 40);
        let leo = log.log_end_offset();
        let active = log.active().log_path.clone();
        log.close().expect("close");
        let middle = stored[5].0;
        let position: usize = stored[..5].iter().map(|(_, b)| b.len()).sum();
        let mut bytes = std::fs::read(&active).expect("read");
        let inside = position + stored[5].1.len() - 3;
        bytes[inside] ^= 0x55; // a record byte, covered only by the CRC
        std::fs::write(&active, &bytes).expect("write");

        let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.log_end_offset(), leo, "not detected");
        drop(log);
        let log = Log::open(dir.path(), one_segment_config()).expect("reopen after crash");
        assert_eq!(
            log.log_end_offset(),
            middle,
            "the scan cuts at the damaged batch"
        );
    }

    #[test]
    fn rolled_segment_made_active_again_by_truncation_gets_active_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        // Cut exactly at the second segment's base: the first becomes active again, uncut.
        let second_base = log.segments[1].base_offset;
        log.truncate_to(second_base).expect("truncate");
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_end_offset(), second_base);
        let kept: Vec<_> = stored
            .iter()
            .filter(|(base, _)| *base < second_base)
            .cloned()
            .collect();
        // Without the rebuild it would keep its seal entry and have no segment.ms clock.
        let reactivated = log.active_segment_state();
        assert!(reactivated.roll_base_ms.is_some());
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), small_config());
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_eq!(log.active_segment_state(), reactivated);
        assert_reads(&log, &kept);
    }
}

//! One segment of a partition's log: `<base offset>.log` with batches exactly as produced (only
//! baseOffset and partitionLeaderEpoch rewritten), plus its `.index` and `.timeindex`.
//!
//! Runs on the partition's owning shard, with synchronous file I/O, except for appends: those are
//! a [`SegmentWrite`], one `pwritev` at the segment's end of the patched 16-byte prefix of each
//! batch and the body straight from the request's `Bytes` (batch bodies are never copied in user
//! space), which the shard runs on its writer thread. Everything that needs batch boundaries
//! (index rebuild, recovery, read, lookup by time) goes through [`Scanner`], which reads headers
//! through a bounded window.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::record::batch::{crc_matches, BatchHeader, BATCH_HEADER_BYTES, MIN_BATCH_LENGTH};
use crate::storage::error::{io_error, StorageError};
use crate::storage::offset_index::OffsetIndex;
use crate::storage::time_index::TimeIndex;

/// Read window when scanning a whole segment (recovery, index rebuild).
pub(crate) const RECOVERY_WINDOW_BYTES: usize = 1 << 20;
/// Read window for the short header scans of reads and lookups.
pub(crate) const LOOKUP_WINDOW_BYTES: usize = 16 << 10;

/// Linux's IOV_MAX: the most iovecs one pwritev accepts.
const IOV_MAX: usize = 1024;

pub(crate) fn segment_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// One batch seen by a scan.
pub(crate) enum ScanStep {
    Batch {
        position: u64,
        header: BatchHeader,
    },
    /// The bytes at `position` are not a whole valid batch.
    Invalid {
        position: u64,
        reason: String,
    },
    End,
}

/// Walks a segment batch by batch from a start position, reading through a window buffer so
/// that small batches cost one read per window, not one per batch.
pub(crate) struct Scanner<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    position: u64,
    window: Vec<u8>,
    window_start: u64,
    window_bytes: usize,
    verify_crc: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(
        file: &'a File,
        path: &'a Path,
        end: u64,
        position: u64,
        window_bytes: usize,
        verify_crc: bool,
    ) -> Scanner<'a> {
        Scanner {
            file,
            path,
            end,
            position,
            window: Vec::new(),
            window_start: 0,
            window_bytes,
            verify_crc,
        }
    }

    /// Makes `[at, at + len)` available in the window; `len` is within the file.
    fn fill(&mut self, at: u64, len: usize) -> Result<&[u8], StorageError> {
        let have = at >= self.window_start
            && at + len as u64 <= self.window_start + self.window.len() as u64;
        if !have {
            let want = len
                .max(self.window_bytes)
                .min((self.end - at) as usize)
                .max(len);
            self.window.resize(want, 0);
            self.file
                .read_exact_at(&mut self.window, at)
                .map_err(|e| io_error(self.path, e))?;
            self.window_start = at;
        }
        let from = (at - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }

    pub(crate) fn next_step(&mut self) -> Result<ScanStep, StorageError> {
        let position = self.position;
        if position >= self.end {
            return Ok(ScanStep::End);
        }
        let left = self.end - position;
        if left < BATCH_HEADER_BYTES as u64 {
            return Ok(ScanStep::Invalid {
                position,
                reason: format!("{left} trailing bytes, shorter than a batch header"),
            });
        }
        let header = match BatchHeader::parse(self.fill(position, BATCH_HEADER_BYTES)?) {
            Ok(header) => header,
            Err(_) => {
                return Ok(ScanStep::Invalid {
                    position,
                    reason: format!("batchLength below the minimum {MIN_BATCH_LENGTH}"),
                })
            }
        };
        if header.magic != 2 {
            return Ok(ScanStep::Invalid {
                position,
                reason: format!("magic {}", header.magic),
            });
        }
        let total = header.total_bytes() as u64;
        if total > left {
            return Ok(ScanStep::Invalid {
                position,
                reason: format!("batch of {total} bytes but only {left} bytes left (torn write)"),
            });
        }
        if self.verify_crc {
            let bytes = self.fill(position, total as usize)?;
            if crc_matches(&header, bytes).is_err() {
                return Ok(ScanStep::Invalid {
                    position,
                    reason: "CRC-32C mismatch".to_string(),
                });
            }
        }
        self.position += total;
        Ok(ScanStep::Batch { position, header })
    }
}

/// baseOffset lies outside the CRC, so a scan checks it is plausible before it reaches the
/// index (relative offsets are u32). Returns why `header` cannot be the next batch, when the
/// previous one ended before `expected`, of the segment based at `base_offset`.
fn implausible_offsets(header: &BatchHeader, base_offset: i64, expected: i64) -> Option<String> {
    if header.base_offset < expected
        || header.last_offset_delta < 0
        || header.last_offset() - base_offset > i64::from(u32::MAX)
    {
        return Some(format!(
            "batch offsets {}..={} are out of place (expected from {expected})",
            header.base_offset,
            header.last_offset()
        ));
    }
    None
}

/// Writes all of `slices` at `offset` with pwritev, resuming after short writes.
fn pwritev_all(file: &File, mut slices: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    while !slices.is_empty() {
        let count = slices.len().min(IOV_MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the slices outlive the call.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr() as *const libc::iovec,
                count as libc::c_int,
                offset as libc::off_t,
            )
        };
        if written < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        IoSlice::advance_slices(&mut slices, written as usize);
        offset += written as u64;
    }
    Ok(())
}

/// One vectored write at a segment's end: each batch's rewritten 16-byte prefix followed by the
/// rest of it as received. Owns what it writes (`Bytes` handles, no copies), so it can run on any
/// thread: the shard hands it to its writer thread, because a buffered write can sleep for a long
/// time in the kernel's dirty-page throttling and the shard's executor must not sleep with it.
pub struct SegmentWrite {
    file: Arc<File>,
    path: PathBuf,
    position: u64,
    pieces: Vec<Bytes>,
}

impl SegmentWrite {
    /// Writes everything with pwritev. On an error the file is cut back to where the write
    /// started, so nothing of it becomes visible.
    pub fn run(&self) -> Result<(), StorageError> {
        let mut slices: Vec<IoSlice<'_>> = self.pieces.iter().map(|p| IoSlice::new(p)).collect();
        if let Err(e) = pwritev_all(&self.file, &mut slices, self.position) {
            // Best effort: a failed cut leaves bytes that recovery would truncate on restart.
            let _ = self.file.set_len(self.position);
            return Err(io_error(&self.path, e));
        }
        Ok(())
    }
}

#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SegmentState {
    pub(crate) base_offset: i64,
    pub(crate) size_bytes: u64,
    pub(crate) next_offset: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) offset_of_max_timestamp: i64,
    pub(crate) bytes_since_last_index_entry: u64,
    pub(crate) roll_base_ms: Option<i64>,
    pub(crate) offset_index: Vec<crate::storage::offset_index::OffsetIndexEntry>,
    pub(crate) time_index: Vec<crate::storage::time_index::TimeIndexEntry>,
    pub(crate) indexes_mapped: (bool, bool),
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) log_path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) size_bytes: u64,
    /// One past the last offset stored (== base_offset when empty).
    pub(crate) next_offset: i64,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// Largest batch maxTimestamp in the segment, -1 if none.
    pub(crate) max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: u64,
    /// When the segment.ms clock started: the first batch's timestamp, as in Kafka, or the
    /// append time when the batch carries none.
    pub(crate) roll_base_ms: Option<i64>,
    /// Data written since the last fsync.
    dirty: bool,
}

fn open_log_file(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error(path, e))
}

impl Segment {
    /// Creates a new, empty segment (its files are truncated if they exist).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        let log_path = segment_path(dir, base_offset, "log");
        let file = open_log_file(&log_path, true)?;
        file.set_len(0).map_err(|e| io_error(&log_path, e))?;
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size_bytes: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::create(
                &segment_path(dir, base_offset, "index"),
                base_offset,
            )?,
            time_index: TimeIndex::create(
                &segment_path(dir, base_offset, "timeindex"),
                base_offset,
            )?,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            roll_base_ms: None,
            dirty: true,
        })
    }

    fn open_files(dir: &Path, base_offset: i64) -> Result<(PathBuf, File, u64), StorageError> {
        let log_path = segment_path(dir, base_offset, "log");
        let file = open_log_file(&log_path, false)?;
        let size = file.metadata().map_err(|e| io_error(&log_path, e))?.len();
        // Index positions are u32 and segments roll well before 4 GiB; a bigger file is foreign.
        if size > u64::from(u32::MAX) {
            return Err(StorageError::Corrupt {
                path: log_path,
                position: size,
                reason: "segment larger than 4 GiB".to_string(),
            });
        }
        Ok((log_path, file, size))
    }

    /// Opens a rolled segment without reading its batches: indexes are mapped and sanity-checked
    /// (rebuilt from a header scan if they fail), and the end offset comes from a short scan
    /// after the last index entry.
    pub(crate) fn open_rolled(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, StorageError> {
        let (log_path, file, size) = Self::open_files(dir, base_offset)?;
        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        let Some(offset_index) = OffsetIndex::open_checked(&index_path, base_offset, size)? else {
            tracing::warn!(index = %index_path.display(), "offset index missing or invalid, rebuilding");
            return Self::rebuild(log_path, file, size, dir, base_offset, index_interval_bytes);
        };
        let (last_indexed, position) = offset_index.lookup(i64::MAX);
        let mut next_offset = last_indexed;
        let mut scanner = Scanner::new(
            &file,
            &log_path,
            size,
            u64::from(position),
            LOOKUP_WINDOW_BYTES,
            false,
        );
        loop {
            match scanner.next_step()? {
                ScanStep::Batch { header, .. } => next_offset = header.last_offset() + 1,
                ScanStep::End => break,
                ScanStep::Invalid { .. } => {
                    tracing::warn!(segment = %log_path.display(), "rolled segment has an invalid tail, rebuilding its indexes");
                    return Self::rebuild(
                        log_path,
                        file,
                        size,
                        dir,
                        base_offset,
                        index_interval_bytes,
                    );
                }
            }
        }
        let Some(time_index) = TimeIndex::open_checked(&time_path, base_offset, next_offset)?
        else {
            tracing::warn!(index = %time_path.display(), "time index missing or invalid, rebuilding");
            return Self::rebuild(log_path, file, size, dir, base_offset, index_interval_bytes);
        };
        let max_timestamp = time_index.last().map_or(-1, |e| e.timestamp);
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size_bytes: size,
            next_offset,
            offset_index,
            time_index,
            max_timestamp,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            roll_base_ms: None,
            dirty: false,
        })
    }

    /// Rebuilds a rolled segment's indexes from a header scan (no CRC check: rolled data is
    /// trusted; only the index was found wanting).
    fn rebuild(
        log_path: PathBuf,
        file: File,
        size: u64,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, StorageError> {
        let mut segment = Self::with_fresh_indexes(log_path, file, size, dir, base_offset)?;
        segment.scan_and_index(index_interval_bytes, false)?;
        segment.seal()?;
        Ok(segment)
    }

    fn with_fresh_indexes(
        log_path: PathBuf,
        file: File,
        size: u64,
        dir: &Path,
        base_offset: i64,
    ) -> Result<Segment, StorageError> {
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size_bytes: size,
            next_offset: base_offset,
            offset_index: OffsetIndex::create(
                &segment_path(dir, base_offset, "index"),
                base_offset,
            )?,
            time_index: TimeIndex::create(
                &segment_path(dir, base_offset, "timeindex"),
                base_offset,
            )?,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            roll_base_ms: None,
            dirty: true,
        })
    }

    /// Opens the active segment and recovers it: every batch's framing, magic and CRC is checked,
    /// the first invalid batch and everything after it is truncated away, and both indexes are
    /// rebuilt for what remains. Returns the segment and the headers of its batches (for
    /// producer-state replay).
    pub(crate) fn recover_active(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, StorageError> {
        let (log_path, file, size) = Self::open_files(dir, base_offset)?;
        let mut segment = Self::with_fresh_indexes(log_path, file, size, dir, base_offset)?;
        if let Some((position, reason)) = segment.scan_and_index(index_interval_bytes, true)? {
            tracing::warn!(
                segment = %segment.log_path.display(),
                position,
                reason = %reason,
                truncated_bytes = segment.size_bytes - position,
                "truncating torn or corrupt tail of the active segment"
            );
            segment
                .file
                .set_len(position)
                .map_err(|e| io_error(&segment.log_path, e))?;
            segment.size_bytes = position;
        }
        // Start-up cost is this one scan: rolled segments are trusted as they are.
        tracing::info!(
            segment = %segment.log_path.display(),
            scanned_bytes = segment.size_bytes,
            "recovered the active segment"
        );
        Ok(segment)
    }

    /// Opens the active segment after a clean shutdown without the recovery scan: its indexes are
    /// trusted as a rolled segment's are, and only the batches after the last offset-index entry
    /// are read (and CRC-checked, which is cheap for so few bytes). The in-memory state is then
    /// derived from the indexes so that it equals what [`Self::recover_active`] would rebuild:
    /// appends, roll checks and lookups cannot tell which path opened the segment.
    ///
    /// `Ok(Err(reason))` means the files are not consistent with each other; the caller then
    /// runs the full recovery scan, which never trusts the indexes.
    pub(crate) fn open_active_trusted(
        dir: &Path,
        base_offset: i64,
    ) -> Result<Result<Segment, String>, StorageError> {
        let (log_path, file, size) = Self::open_files(dir, base_offset)?;
        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        let Some(mut offset_index) = OffsetIndex::open_checked(&index_path, base_offset, size)?
        else {
            return Ok(Err(format!("{} missing or invalid", index_path.display())));
        };
        // Where the scan-based paths would have left the summary after the last indexed batch:
        // that batch starts the byte count towards the next entry, and the time index's last
        // entry is the largest timestamp up to it (written together with each offset-index
        // entry; an active segment has no seal entry). The tail scan finishes from there.
        let (last_indexed, tail_position) = offset_index.lookup(i64::MAX);
        let Some(mut time_index) = TimeIndex::open_checked(&time_path, base_offset, i64::MAX)?
        else {
            return Ok(Err(format!("{} missing or invalid", time_path.display())));
        };
        let (mut max_timestamp, mut offset_of_max_timestamp) = match time_index.last() {
            Some(e) => (e.timestamp, base_offset + i64::from(e.relative_offset)),
            None => (-1, base_offset),
        };
        let mut next_offset = base_offset;
        let mut scanner = Scanner::new(
            &file,
            &log_path,
            size,
            u64::from(tail_position),
            LOOKUP_WINDOW_BYTES,
            true,
        );
        loop {
            match scanner.next_step()? {
                ScanStep::End => break,
                ScanStep::Invalid { position, reason } => {
                    return Ok(Err(format!("{reason} at byte {position}")))
                }
                ScanStep::Batch { position, header } => {
                    if position == u64::from(tail_position)
                        && tail_position > 0
                        && header.base_offset != last_indexed
                    {
                        return Ok(Err(format!(
                            "index points at offset {last_indexed} but byte {position} holds {}",
                            header.base_offset
                        )));
                    }
                    let expected = next_offset.max(base_offset);
                    if let Some(reason) = implausible_offsets(&header, base_offset, expected) {
                        return Ok(Err(format!("{reason} at byte {position}")));
                    }
                    if header.max_timestamp > max_timestamp {
                        max_timestamp = header.max_timestamp;
                        offset_of_max_timestamp = header.base_offset;
                    }
                    next_offset = header.last_offset() + 1;
                }
            }
        }
        // Checked only now that the end offset is known: no entry may point past it.
        if time_index
            .last()
            .is_some_and(|e| base_offset + i64::from(e.relative_offset) >= next_offset)
        {
            return Ok(Err(format!(
                "{} points past the segment's end offset {next_offset}",
                time_path.display()
            )));
        }
        // segment.ms counts from the first batch carrying a timestamp. Usually that is the
        // first batch, one short read; if no batch has one there is nothing to look for.
        let mut roll_base_ms = None;
        if max_timestamp >= 0 {
            let mut scanner = Scanner::new(&file, &log_path, size, 0, LOOKUP_WINDOW_BYTES, false);
            while roll_base_ms.is_none() {
                match scanner.next_step()? {
                    ScanStep::Batch { header, .. } if header.max_timestamp >= 0 => {
                        roll_base_ms = Some(header.max_timestamp);
                    }
                    ScanStep::Batch { .. } => {}
                    ScanStep::Invalid { position, reason } => {
                        return Ok(Err(format!("{reason} at byte {position}")))
                    }
                    ScanStep::End => {
                        return Ok(Err(format!(
                            "the time index has timestamp {max_timestamp} but no batch has one"
                        )))
                    }
                }
            }
        }
        // The active segment holds its indexes in memory, not mapped (see index_file.rs): copy
        // them now rather than on the first append, which is on the produce path.
        offset_index.make_owned();
        time_index.make_owned();
        let tail_bytes = size - u64::from(tail_position);
        tracing::info!(
            segment = %log_path.display(),
            tail_bytes,
            "opened the active segment after a clean shutdown (no recovery scan)"
        );
        Ok(Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size_bytes: size,
            next_offset,
            offset_index,
            time_index,
            max_timestamp,
            offset_of_max_timestamp,
            bytes_since_last_index_entry: tail_bytes,
            roll_base_ms,
            dirty: false,
        }))
    }

    /// Scans the whole segment, (re)building both indexes and the in-memory summary. Returns
    /// the first invalid position and why, if the scan stopped early.
    fn scan_and_index(
        &mut self,
        index_interval_bytes: u32,
        verify_crc: bool,
    ) -> Result<Option<(u64, String)>, StorageError> {
        let file = Arc::clone(&self.file);
        let log_path = self.log_path.clone();
        let mut scanner = Scanner::new(
            &file,
            &log_path,
            self.size_bytes,
            0,
            RECOVERY_WINDOW_BYTES,
            verify_crc,
        );
        let mut expected = self.base_offset;
        loop {
            match scanner.next_step()? {
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => return Ok(Some((position, reason))),
                ScanStep::Batch { position, header } => {
                    if let Some(reason) = implausible_offsets(&header, self.base_offset, expected) {
                        return Ok(Some((position, reason)));
                    }
                    expected = header.last_offset() + 1;
                    self.index_batch(&header, position, index_interval_bytes, None)?;
                }
            }
        }
    }

    /// Index bookkeeping for one stored batch at `position` (as Kafka's LogSegment.append).
    fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u32,
        now_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = if header.max_timestamp >= 0 {
                Some(header.max_timestamp)
            } else {
                now_ms
            };
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_last_index_entry > u64::from(index_interval_bytes) {
            let position = u32::try_from(position).expect("segments roll before 4 GiB");
            self.offset_index.append(header.base_offset, position)?;
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.total_bytes() as u64;
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    /// The write that puts `pieces` (prefix, body, prefix, body, ...) at the segment's end.
    pub(crate) fn write_at_end(&self, pieces: Vec<Bytes>) -> SegmentWrite {
        SegmentWrite {
            file: Arc::clone(&self.file),
            path: self.log_path.clone(),
            position: self.size_bytes,
            pieces,
        }
    }

    /// Index bookkeeping once batches written by [`Segment::write_at_end`] are in the file.
    pub(crate) fn record_appended<'h>(
        &mut self,
        headers: impl Iterator<Item = &'h BatchHeader>,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.dirty = true;
        let mut position = self.size_bytes;
        for header in headers {
            // Advance the size as we go, so an index error leaves size and indexes agreeing.
            self.index_batch(header, position, index_interval_bytes, Some(now_ms))?;
            position += header.total_bytes() as u64;
            self.size_bytes = position;
        }
        Ok(())
    }

    /// Called when the segment stops being the active one: a final time-index entry makes the
    /// last entry the segment's largest timestamp.
    pub(crate) fn seal(&mut self) -> Result<(), StorageError> {
        if self.max_timestamp >= 0 {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    pub(crate) fn scanner(&self, position: u64, window_bytes: usize) -> Scanner<'_> {
        Scanner::new(
            &self.file,
            &self.log_path,
            self.size_bytes,
            position,
            window_bytes,
            false,
        )
    }

    /// Position and header of the first batch whose last offset is >= `offset`, if any.
    pub(crate) fn find_batch(
        &self,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let (_, position) = self.offset_index.lookup(offset);
        let mut scanner = self.scanner(u64::from(position), LOOKUP_WINDOW_BYTES);
        loop {
            match scanner.next_step()? {
                ScanStep::Batch { position, header } if header.last_offset() >= offset => {
                    return Ok(Some((position, header)))
                }
                ScanStep::Batch { .. } => {}
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => {
                    return Err(StorageError::Corrupt {
                        path: self.log_path.clone(),
                        position,
                        reason,
                    })
                }
            }
        }
    }

    /// First batch whose max timestamp is >= `timestamp`, as (position, header).
    pub(crate) fn find_batch_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let start_offset = self.time_index.lookup(timestamp);
        let (_, position) = self.offset_index.lookup(start_offset);
        let mut scanner = self.scanner(u64::from(position), LOOKUP_WINDOW_BYTES);
        loop {
            match scanner.next_step()? {
                ScanStep::Batch { position, header } if header.max_timestamp >= timestamp => {
                    return Ok(Some((position, header)))
                }
                ScanStep::Batch { .. } => {}
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => {
                    return Err(StorageError::Corrupt {
                        path: self.log_path.clone(),
                        position,
                        reason,
                    })
                }
            }
        }
    }

    pub(crate) fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes, StorageError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| io_error(&self.log_path, e))?;
        Ok(Bytes::from(buf))
    }

    /// Drops the batch containing `offset` and everything after it. Rare (replication
    /// divergence), so the indexes are simply rebuilt from a scan of what remains.
    pub(crate) fn truncate_to(
        &mut self,
        dir: &Path,
        offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        // Nothing to cut means a rolled segment is becoming active again (the segments after it
        // were dropped). It is rebuilt all the same: that drops its seal entry and gives it the
        // active segment's in-memory state (segment.ms clock, bytes towards the next index
        // entry), exactly as recovery or a trusted open after a clean shutdown would.
        let position = match self.find_batch(offset)? {
            Some((position, _)) => position,
            None => self.size_bytes,
        };
        self.file
            .set_len(position)
            .map_err(|e| io_error(&self.log_path, e))?;
        let file = (*self.file)
            .try_clone()
            .map_err(|e| io_error(&self.log_path, e))?;
        let mut fresh =
            Self::with_fresh_indexes(self.log_path.clone(), file, position, dir, self.base_offset)?;
        fresh.scan_and_index(index_interval_bytes, false)?;
        *self = fresh;
        Ok(())
    }

    /// Everything appends, rolls and lookups depend on, to compare the ways a segment is opened.
    #[cfg(test)]
    pub(crate) fn state(&self) -> SegmentState {
        SegmentState {
            base_offset: self.base_offset,
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            bytes_since_last_index_entry: self.bytes_since_last_index_entry,
            roll_base_ms: self.roll_base_ms,
            offset_index: (0..self.offset_index.len())
                .map(|i| self.offset_index.entry(i))
                .collect(),
            time_index: (0..self.time_index.len())
                .map(|i| self.time_index.entry(i))
                .collect(),
            indexes_mapped: (self.offset_index.is_mapped(), self.time_index.is_mapped()),
        }
    }

    /// fsyncs the data and both indexes if anything was written since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| io_error(&self.log_path, e))?;
            self.dirty = false;
        }
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    /// Removes the segment's three files. Open read chunks keep their `Arc<File>` and stay
    /// readable: on Linux an unlinked file lives until its last descriptor closes.
    pub(crate) fn delete_files(self) -> Result<(), StorageError> {
        let paths = [
            self.log_path.clone(),
            self.offset_index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
        ];
        drop(self);
        for path in paths {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        Ok(())
    }
}

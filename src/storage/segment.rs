//! One segment of a partition's log: `<base offset>.log` with batches exactly as produced (only
//! baseOffset and partitionLeaderEpoch rewritten), plus its `.index` and `.timeindex`.
//!
//! A `Segment` lives on the partition's owning shard, which only does memory work with it: index
//! entries are added in memory, reads find their start in the in-memory or mapped index. Every
//! syscall happens elsewhere: the append's data write is a [`SegmentWrite`] (one `pwritev` at the
//! segment's end of the patched 16-byte prefix of each batch and the body straight from the
//! request's `Bytes`, never copied in user space) on the shard's writer thread; writing index
//! entries and fsyncing is a [`SegmentSync`] in a log's sync job on a blocking thread; opening,
//! recovering, scanning and deleting run on blocking threads too. The exception is
//! [`Segment::create`] at a roll (three file creations), which the append path cannot defer.
//! Everything that needs batch boundaries goes through [`Scanner`].

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::clock::now_ms;
use crate::record::batch::BatchHeader;
use crate::storage::error::{io_error, StorageError};
use crate::storage::index_file::IndexSync;
use crate::storage::offset_index::OffsetIndex;
use crate::storage::scanner::{
    OffsetBounds, ScanStep, Scanner, LOOKUP_WINDOW_BYTES, RECOVERY_WINDOW_BYTES,
};
use crate::storage::time_index::TimeIndex;

/// Linux's IOV_MAX: the most iovecs one pwritev accepts.
const IOV_MAX: usize = 1024;

/// Largest base offset a segment file may be named with. Far beyond any real log, and far enough
/// from `i64::MAX` that offset arithmetic on a segment (base + u32 relative offset + delta) can
/// never overflow, whatever a file name or a stored batch says.
pub(crate) const MAX_BASE_OFFSET: i64 = i64::MAX / 4;

pub(crate) fn segment_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
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
    /// The data may not be durable: written since the last fsync, or recovered from a file
    /// whose durability nobody vouched for.
    dirty: bool,
    /// When the file last changed, for retention of segments whose batches carry no timestamp
    /// (Kafka uses the file's mtime): read at open, the wall clock when the segment rolls.
    pub(crate) modified_ms: i64,
}

/// A segment's durability work, run by a log's sync job off the executor.
pub(crate) struct SegmentSync {
    data: Option<(Arc<File>, PathBuf)>,
    indexes: Vec<IndexSync>,
}

impl SegmentSync {
    /// fsyncs the data, then writes and fsyncs the indexes: an index on disk never points past
    /// durable data.
    pub(crate) fn run(&self) -> Result<(), StorageError> {
        if let Some((file, path)) = &self.data {
            file.sync_data().map_err(|e| io_error(path, e))?;
        }
        for index in &self.indexes {
            index.run()?;
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_none() && self.indexes.is_empty()
    }
}

/// A recovery scan stopped early: the bytes cut off the segment's end.
pub(crate) struct Truncation {
    pub(crate) truncated_bytes: u64,
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

fn file_mtime_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    Ok(modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

impl Segment {
    /// Creates a new, empty segment (its files are truncated if they exist).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        let log_path = segment_path(dir, base_offset, "log");
        if !(0..=MAX_BASE_OFFSET).contains(&base_offset) {
            // Only a log whose stored offsets were already absurd gets here; refuse the roll.
            return Err(StorageError::Corrupt {
                path: log_path,
                position: 0,
                reason: format!("no segment can start at offset {base_offset}"),
            });
        }
        let file = open_log_file(&log_path, true)?;
        file.set_len(0).map_err(|e| io_error(&log_path, e))?;
        Self::with_fresh_indexes(log_path, file, 0, dir, base_offset, now_ms())
    }

    fn open_files(dir: &Path, base_offset: i64) -> Result<(PathBuf, File, u64, i64), StorageError> {
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
        let modified_ms = file_mtime_ms(&file).map_err(|e| io_error(&log_path, e))?;
        Ok((log_path, file, size, modified_ms))
    }

    /// Opens a segment below the recovery point without reading its batches: its data is
    /// durable, so the indexes are mapped and sanity-checked, and the end offset comes from a
    /// short scan after the last index entry (framing and offsets checked, not CRCs).
    /// `limit_offset` is the next segment's base offset (`i64::MAX` for the last segment).
    ///
    /// `Ok(Err(reason))` means the files cannot be trusted (an index missing, torn or pointing
    /// where no batch is, a tail that is not whole batches); the caller recovers the segment.
    pub(crate) fn open_trusted(
        dir: &Path,
        base_offset: i64,
        limit_offset: i64,
    ) -> Result<Result<Segment, String>, StorageError> {
        let (log_path, file, size, modified_ms) = Self::open_files(dir, base_offset)?;
        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        let Some(offset_index) = OffsetIndex::open_checked(&index_path, base_offset, size)? else {
            return Ok(Err(format!("{} missing or invalid", index_path.display())));
        };
        let (last_indexed, position) = offset_index.lookup(i64::MAX);
        let mut next_offset = base_offset;
        // The largest timestamp after the last index entry: a rolled segment's time index ends
        // with it (the seal entry), unless the roll's sync job never ran.
        let (mut tail_max_timestamp, mut tail_offset_of_max) = (-1, base_offset);
        let bounds = OffsetBounds {
            base_offset,
            first_offset: last_indexed,
            limit_offset,
        };
        let mut scanner = Scanner::new(
            &file,
            &log_path,
            size,
            u64::from(position),
            LOOKUP_WINDOW_BYTES,
            false,
            bounds,
        );
        loop {
            match scanner.next_step()? {
                ScanStep::Batch { header, .. } => {
                    if header.max_timestamp > tail_max_timestamp {
                        tail_max_timestamp = header.max_timestamp;
                        tail_offset_of_max = header.base_offset;
                    }
                    next_offset = header.last_offset() + 1;
                }
                ScanStep::End => break,
                ScanStep::Invalid { position, reason } => {
                    return Ok(Err(format!("{reason} at byte {position}")))
                }
            }
        }
        let max_time_entries = offset_index.len() + 1;
        let Some(mut time_index) =
            TimeIndex::open_checked(&time_path, base_offset, next_offset, max_time_entries)?
        else {
            return Ok(Err(format!("{} missing or invalid", time_path.display())));
        };
        let (mut max_timestamp, mut offset_of_max_timestamp) = match time_index.last() {
            Some(e) => (e.timestamp, base_offset + i64::from(e.relative_offset)),
            None => (-1, base_offset),
        };
        if tail_max_timestamp > max_timestamp {
            // A segment that was active at a clean shutdown and rolled, right after the next
            // start, at the offset the recovery point already covered: its data and index
            // entries were durable, only the seal entry was not. Sealed again here; a sync job
            // writes it.
            max_timestamp = tail_max_timestamp;
            offset_of_max_timestamp = tail_offset_of_max;
            time_index.maybe_append(max_timestamp, offset_of_max_timestamp);
        }
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
            bytes_since_last_index_entry: 0,
            roll_base_ms: None,
            dirty: false,
            modified_ms,
        }))
    }

    fn with_fresh_indexes(
        log_path: PathBuf,
        file: File,
        size: u64,
        dir: &Path,
        base_offset: i64,
        modified_ms: i64,
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
            modified_ms,
        })
    }

    /// Recovers a segment, as Kafka's `LogSegment.recover`: every batch's framing, magic, offsets
    /// and CRC are checked, the first invalid batch and everything after it is cut off the file,
    /// and both indexes are rebuilt (in memory; a sync job writes them) for what remains.
    /// `limit_offset` is the next segment's base offset (`i64::MAX` for the last segment). The
    /// segment comes back as an active one would be; the caller seals it if it is not the last.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        limit_offset: i64,
        may_truncate: bool,
    ) -> Result<(Segment, Option<Truncation>), StorageError> {
        let (log_path, file, size, modified_ms) = Self::open_files(dir, base_offset)?;
        let mut segment =
            Self::with_fresh_indexes(log_path, file, size, dir, base_offset, modified_ms)?;
        let truncation = match segment.scan_and_index(index_interval_bytes, true, limit_offset)? {
            None => None,
            // Below the recovery point every byte was durable: damage there is not a torn
            // write to cut, but data to leave on disk and report.
            Some((position, reason)) if !may_truncate => {
                return Err(StorageError::Corrupt {
                    path: segment.log_path.clone(),
                    position,
                    reason: format!(
                    "{reason}, below the recovery point: left on disk, the partition is not opened"
                ),
                })
            }
            Some((position, reason)) => {
                let truncated_bytes = segment.size_bytes - position;
                tracing::warn!(
                    segment = %segment.log_path.display(),
                    position,
                    reason = %reason,
                    truncated_bytes,
                    "truncating torn or corrupt tail"
                );
                segment
                    .file
                    .set_len(position)
                    .map_err(|e| io_error(&segment.log_path, e))?;
                segment.size_bytes = position;
                Some(Truncation { truncated_bytes })
            }
        };
        tracing::info!(
            segment = %segment.log_path.display(),
            scanned_bytes = segment.size_bytes,
            "recovered segment"
        );
        Ok((segment, truncation))
    }

    /// Opens the active segment after a clean shutdown without the recovery scan: its indexes are
    /// trusted as a rolled segment's are, and only the batches after the last offset-index entry
    /// are read (and CRC-checked, which is cheap for so few bytes). The in-memory state is then
    /// derived from the indexes so that it equals what [`Self::recover`] would rebuild:
    /// appends, roll checks and lookups cannot tell which path opened the segment.
    ///
    /// `Ok(Err(reason))` means the files are not consistent with each other; the caller then
    /// runs the full recovery scan, which never trusts the indexes.
    pub(crate) fn open_active_trusted(
        dir: &Path,
        base_offset: i64,
    ) -> Result<Result<Segment, String>, StorageError> {
        let (log_path, file, size, modified_ms) = Self::open_files(dir, base_offset)?;
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
        let max_time_entries = offset_index.len() + 1;
        let Some(mut time_index) =
            TimeIndex::open_checked(&time_path, base_offset, i64::MAX, max_time_entries)?
        else {
            return Ok(Err(format!("{} missing or invalid", time_path.display())));
        };
        let (mut max_timestamp, mut offset_of_max_timestamp) = match time_index.last() {
            Some(e) => (e.timestamp, base_offset + i64::from(e.relative_offset)),
            None => (-1, base_offset),
        };
        let mut next_offset = base_offset;
        let bounds = OffsetBounds {
            base_offset,
            first_offset: last_indexed,
            limit_offset: i64::MAX,
        };
        let mut scanner = Scanner::new(
            &file,
            &log_path,
            size,
            u64::from(tail_position),
            LOOKUP_WINDOW_BYTES,
            true,
            bounds,
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
            let mut scanner = Scanner::new(
                &file,
                &log_path,
                size,
                0,
                LOOKUP_WINDOW_BYTES,
                false,
                OffsetBounds::segment(base_offset, i64::MAX),
            );
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
            modified_ms,
        }))
    }

    /// Scans the whole segment, (re)building both indexes and the in-memory summary. Returns
    /// the first invalid position and why, if the scan stopped early.
    fn scan_and_index(
        &mut self,
        index_interval_bytes: u32,
        verify_crc: bool,
        limit_offset: i64,
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
            OffsetBounds::segment(self.base_offset, limit_offset),
        );
        loop {
            match scanner.next_step()? {
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => return Ok(Some((position, reason))),
                ScanStep::Batch { position, header } => {
                    self.index_batch(&header, position, index_interval_bytes, None);
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
    ) {
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
            self.offset_index.append(header.base_offset, position);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.total_bytes() as u64;
        self.next_offset = header.last_offset() + 1;
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
    /// Memory only: the entries reach the index files with the next sync job.
    pub(crate) fn record_appended<'h>(
        &mut self,
        headers: impl Iterator<Item = &'h BatchHeader>,
        index_interval_bytes: u32,
        now_ms: i64,
    ) {
        self.dirty = true;
        let mut position = self.size_bytes;
        for header in headers {
            self.index_batch(header, position, index_interval_bytes, Some(now_ms));
            position += header.total_bytes() as u64;
        }
        self.size_bytes = position;
    }

    /// Called when the segment stops being the active one: a final time-index entry makes the
    /// last entry the segment's largest timestamp.
    pub(crate) fn seal(&mut self, now_ms: i64) {
        if self.max_timestamp >= 0 {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        }
        self.modified_ms = now_ms;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// A scan of this segment from `position`, where a batch at or after `first_offset` starts.
    pub(crate) fn scanner(
        &self,
        position: u64,
        first_offset: i64,
        window_bytes: usize,
    ) -> Scanner<'_> {
        Scanner::new(
            &self.file,
            &self.log_path,
            self.size_bytes,
            position,
            window_bytes,
            false,
            OffsetBounds {
                base_offset: self.base_offset,
                first_offset,
                limit_offset: i64::MAX,
            },
        )
    }

    /// Position and header of the first batch whose last offset is >= `offset`, if any.
    /// Reads the file: off the executor only.
    pub(crate) fn find_batch(
        &self,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let (indexed, position) = self.offset_index.lookup(offset);
        let mut scanner = self.scanner(u64::from(position), indexed, LOOKUP_WINDOW_BYTES);
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

    /// Drops the batch containing `offset` and everything after it. Rare (replication
    /// divergence), so the indexes are simply rebuilt from a scan of what remains. Reads and
    /// rewrites files: off the executor only.
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
        let mut fresh = Self::with_fresh_indexes(
            self.log_path.clone(),
            file,
            position,
            dir,
            self.base_offset,
            now_ms(),
        )?;
        fresh.scan_and_index(index_interval_bytes, false, i64::MAX)?;
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

    /// What must reach the disk for this segment's data (and, with `indexes`, its index files)
    /// to be durable. From here on it counts as done: a failed sync job stops the log's recovery
    /// point for good, so nothing relies on it.
    pub(crate) fn take_sync(&mut self, indexes: bool) -> SegmentSync {
        let data = std::mem::take(&mut self.dirty)
            .then(|| (Arc::clone(&self.file), self.log_path.clone()));
        let indexes = if indexes {
            [self.offset_index.take_sync(), self.time_index.take_sync()]
                .into_iter()
                .flatten()
                .collect()
        } else {
            Vec::new()
        };
        SegmentSync { data, indexes }
    }

    /// Removes the segment's three files and closes them. Open read chunks keep their
    /// `Arc<File>` and stay readable: on Linux an unlinked file lives until its last descriptor
    /// closes.
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

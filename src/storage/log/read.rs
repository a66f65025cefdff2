//! Reading a log: Fetch's byte ranges (from the tail cache or the segment files) and lookups by
//! timestamp and offset.
//!
//! Reads that the tail cache answers are done on the shard's executor, in memory. A read that
//! needs the segment files is planned on the executor ([`Log::plan_read`]: the range checks and
//! the index lookup, both in memory) and scanned elsewhere ([`ColdRead::run`], on a blocking
//! thread: it reads batch headers to find whole batches within the limits), then finished on the
//! executor ([`Log::finish_read`]: the tail cache may continue where the files stop). Lookups by
//! timestamp go the same way ([`TimestampLookup`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Log;
use crate::record::batch::BatchHeader;
use crate::storage::error::{io_error, StorageError};
use crate::storage::scanner::{OffsetBounds, ScanStep, Scanner, LOOKUP_WINDOW_BYTES};
use crate::storage::segment::Segment;

/// Segments a timestamp lookup is prepared to look through: the first segment whose largest
/// timestamp reaches the target holds the batch, so more are only a fallback.
const TIMESTAMP_CANDIDATES: usize = 4;

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

/// How [`Log::plan_read`] answers: right away, or after a scan of the segment files.
pub enum ReadPlan {
    Ready(ReadSlice),
    Cold(ColdRead),
}

/// A segment as a read off the executor sees it: its file, the bytes written when the read was
/// planned, and where in it to start.
struct SegmentFile {
    file: Arc<File>,
    path: PathBuf,
    base_offset: i64,
    size_bytes: u64,
    /// Position to scan from, where a batch at or after `first_offset` starts.
    start: u64,
    first_offset: i64,
}

impl SegmentFile {
    fn from_position(segment: &Segment, start: u64, first_offset: i64) -> SegmentFile {
        SegmentFile {
            file: Arc::clone(&segment.file),
            path: segment.log_path.clone(),
            base_offset: segment.base_offset,
            size_bytes: segment.size_bytes,
            start,
            first_offset,
        }
    }

    /// Where to start looking for `offset`: the index entry at or before it (memory only).
    fn at_offset(segment: &Segment, offset: i64) -> SegmentFile {
        let (indexed, position) = segment.offset_index.lookup(offset);
        Self::from_position(segment, u64::from(position), indexed)
    }

    fn scanner(&self) -> Scanner<'_> {
        Scanner::new(
            &self.file,
            &self.path,
            self.size_bytes,
            self.start,
            LOOKUP_WINDOW_BYTES,
            false,
            OffsetBounds {
                base_offset: self.base_offset,
                first_offset: self.first_offset,
                limit_offset: i64::MAX,
            },
        )
    }

    fn corrupt(&self, position: u64, reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            position,
            reason,
        }
    }
}

/// The limits of one read.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_bytes: usize,
    max_offset: i64,
    min_one: bool,
}

impl Limits {
    /// Whether a batch of `len` more bytes may join `slice`.
    fn fits(&self, slice: &ReadSlice, len: usize) -> bool {
        slice.bytes + len <= self.max_bytes || (self.min_one && slice.bytes == 0)
    }
}

/// The part of a read that scans segment files; [`ColdRead::run`] it on a blocking thread.
pub struct ColdRead {
    segments: Vec<SegmentFile>,
    offset: i64,
    limits: Limits,
    /// Where the tail cache started when the read was planned: the files are read up to there.
    cache_start: i64,
}

/// What a [`ColdRead`] found, for [`Log::finish_read`].
pub struct ColdReadDone {
    slice: ReadSlice,
    /// The files stopped where the tail cache starts: continue there.
    from_cache_at: Option<i64>,
    limits: Limits,
}

impl ColdRead {
    /// Scans batch headers from the planned positions and returns the whole batches within the
    /// limits as file ranges. Blocking file I/O.
    pub fn run(self) -> Result<ColdReadDone, StorageError> {
        let limits = self.limits;
        let mut slice = ReadSlice::default();
        let mut want = self.offset;
        let mut from_cache_at = None;
        let mut done = false;
        for segment in &self.segments {
            let mut scanner = segment.scanner();
            let mut start = None;
            let mut len = 0u64;
            loop {
                let header = match scanner.next_step()? {
                    ScanStep::End => break,
                    ScanStep::Invalid { position, reason } => {
                        return Err(segment.corrupt(position, reason))
                    }
                    ScanStep::Batch { position, header } => {
                        if header.last_offset() < want {
                            continue;
                        }
                        start.get_or_insert(position);
                        header
                    }
                };
                if header.last_offset() >= limits.max_offset {
                    done = true;
                    break;
                }
                if header.base_offset >= self.cache_start {
                    from_cache_at = Some(header.base_offset);
                    done = true;
                    break;
                }
                let batch_len = header.total_bytes();
                if !limits.fits(&slice, batch_len) {
                    done = true;
                    break;
                }
                len += batch_len as u64;
                slice.bytes += batch_len;
                want = header.last_offset() + 1;
            }
            if let (Some(position), true) = (start, len > 0) {
                slice.chunks.push(ReadChunk::File {
                    file: Arc::clone(&segment.file),
                    position,
                    len: u32::try_from(len).expect("a segment is smaller than 4 GiB"),
                });
            }
            if done {
                break;
            }
        }
        if !done && want >= self.cache_start {
            // The planned segments end where the tail cache starts.
            from_cache_at = Some(want);
        }
        Ok(ColdReadDone {
            slice,
            from_cache_at,
            limits,
        })
    }
}

/// A lookup by timestamp; [`TimestampLookup::run`] it on a blocking thread.
pub struct TimestampLookup {
    timestamp: i64,
    candidates: Vec<SegmentFile>,
}

impl TimestampLookup {
    /// The first batch whose maxTimestamp is >= the timestamp, read whole. Blocking file I/O.
    pub fn run(self) -> Result<Option<Bytes>, StorageError> {
        for segment in &self.candidates {
            let mut scanner = segment.scanner();
            loop {
                match scanner.next_step()? {
                    ScanStep::Batch { position, header }
                        if header.max_timestamp >= self.timestamp =>
                    {
                        let mut buf = vec![0u8; header.total_bytes()];
                        segment
                            .file
                            .read_exact_at(&mut buf, position)
                            .map_err(|e| io_error(&segment.path, e))?;
                        return Ok(Some(Bytes::from(buf)));
                    }
                    ScanStep::Batch { .. } => {}
                    ScanStep::End => break,
                    ScanStep::Invalid { position, reason } => {
                        return Err(segment.corrupt(position, reason))
                    }
                }
            }
        }
        Ok(None)
    }
}

impl Log {
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
    /// Reads the files on this thread: tools and tests; the broker uses [`Log::plan_read`].
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<ReadSlice, StorageError> {
        match self.plan_read(offset, max_bytes, max_offset, min_one)? {
            ReadPlan::Ready(slice) => Ok(slice),
            ReadPlan::Cold(cold) => Ok(self.finish_read(cold.run()?)),
        }
    }

    /// [`Log::read`]'s first half, in memory: answers from the tail cache, or plans the scan of
    /// the segment files from the index entry at or before `offset`, through as many segments as
    /// `max_bytes` can reach.
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<ReadPlan, StorageError> {
        if offset < self.log_start_offset() || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        let limits = Limits {
            max_bytes,
            max_offset,
            min_one,
        };
        let mut slice = ReadSlice::default();
        if offset >= self.log_end_offset() || offset >= max_offset {
            return Ok(ReadPlan::Ready(slice));
        }
        let cache_start = self.cache.start_offset().unwrap_or(i64::MAX);
        if offset >= cache_start {
            self.read_cache(&mut slice, offset, limits);
            return Ok(ReadPlan::Ready(slice));
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        // Segments after the first are read whole, so once they hold more than `max_bytes` the
        // read ends inside them. (The first one's bytes before `offset` do not count.)
        let mut segments = Vec::new();
        let mut reach = 0u64;
        for (i, segment) in self.segments[first..].iter().enumerate() {
            if reach > max_bytes as u64 || segment.base_offset >= cache_start {
                break;
            }
            if i == 0 {
                segments.push(SegmentFile::at_offset(segment, offset));
            } else {
                reach += segment.size_bytes;
                segments.push(SegmentFile::from_position(segment, 0, segment.base_offset));
            }
        }
        Ok(ReadPlan::Cold(ColdRead {
            segments,
            offset,
            limits,
            cache_start,
        }))
    }

    /// [`Log::read`]'s last half: the scanned file ranges, continued from the tail cache if the
    /// files stopped where it starts (and it still does).
    pub fn finish_read(&self, done: ColdReadDone) -> ReadSlice {
        let ColdReadDone {
            mut slice,
            from_cache_at,
            limits,
        } = done;
        if let Some(at) = from_cache_at {
            if self.cache.start_offset().is_some_and(|start| start <= at) {
                self.read_cache(&mut slice, at, limits);
            }
        }
        slice
    }

    fn read_cache(&self, slice: &mut ReadSlice, at: i64, limits: Limits) {
        let mut pieces = Vec::new();
        for batch in self.cache.from_offset(at) {
            if batch.last_offset >= limits.max_offset || !limits.fits(slice, batch.len()) {
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

    /// The first batch whose maxTimestamp is >= `timestamp` (time index, then a short scan),
    /// returned whole so the caller can find the exact record. `None` if every batch is older.
    /// Reads the files on this thread: tools and tests; the broker uses
    /// [`Log::plan_find_batch_by_timestamp`].
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, StorageError> {
        self.plan_find_batch_by_timestamp(timestamp).run()
    }

    /// The lookup by timestamp, planned in memory (time index, then offset index).
    pub fn plan_find_batch_by_timestamp(&self, timestamp: i64) -> TimestampLookup {
        let candidates = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= timestamp)
            .take(TIMESTAMP_CANDIDATES)
            .map(|segment| SegmentFile::at_offset(segment, segment.time_index.lookup(timestamp)))
            .collect();
        TimestampLookup {
            timestamp,
            candidates,
        }
    }

    /// Header of the batch containing `offset` (for replication's epoch lookups and tests).
    /// Reads the files: call it off the executor.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, patched};
    use crate::storage::log::test_util::*;
    use crate::storage::log::LogConfig;
    use crate::storage::StorageError;

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
}

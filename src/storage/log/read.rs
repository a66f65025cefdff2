//! Reading a log: Fetch's byte ranges (from the tail cache or the segment files) and lookups by
//! offset and by timestamp.
//!
//! Runs on the shard that owns the partition.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Log;
use crate::record::batch::BatchHeader;
use crate::storage::error::StorageError;
use crate::storage::segment::{ScanStep, LOOKUP_WINDOW_BYTES};

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

//! Walking a segment file batch by batch: the one place that turns bytes on disk into batch
//! headers, so the one place that must hold whatever those bytes are.
//!
//! Runs wherever its caller runs: on a blocking thread for recovery, reads beyond the tail cache
//! and lookups; the shard's executor never scans a file. A scan reads headers through a bounded
//! window (small batches cost one read per window, not one per batch) and checks each batch before
//! anyone sees it: framing (`batchLength` within what is left of the file), magic, offsets
//! (baseOffset lies outside the CRC, so it must be exactly where the previous batch ended, within
//! the segment's u32 relative range and below the next segment's base) and, when asked, the
//! CRC-32C, computed over the window piece by piece. Memory is bounded by the window whatever `batchLength` says:
//! a stored batch can never make a scan allocate without bound or overflow an offset.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::record::batch::{BatchHeader, BATCH_HEADER_BYTES, CRC_START, MIN_BATCH_LENGTH};
use crate::storage::error::{io_error, StorageError};

/// Read window when scanning a whole segment (recovery, index rebuild, producer-state replay).
pub(crate) const RECOVERY_WINDOW_BYTES: usize = 1 << 20;
/// Read window for the short header scans of reads and lookups.
pub(crate) const LOOKUP_WINDOW_BYTES: usize = 16 << 10;

/// One batch seen by a scan.
#[derive(Debug)]
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

/// Which offsets a batch of a segment may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetBounds {
    /// The segment's base offset: relative offsets (u32 in the indexes) count from here.
    pub(crate) base_offset: i64,
    /// The offset the first batch seen must start at (the segment's base, or the offset of the
    /// index entry or batch the scan starts from); each later one starts right after its
    /// predecessor. skein writes offsets without gaps (there is no compaction yet), so a gap is
    /// damage: a flipped bit in a baseOffset, which no CRC covers.
    pub(crate) first_offset: i64,
    /// Offsets must stay below this: the next segment's base offset (`i64::MAX` for the last).
    pub(crate) limit_offset: i64,
}

impl OffsetBounds {
    /// Bounds of a whole segment scanned from position 0.
    pub(crate) fn segment(base_offset: i64, limit_offset: i64) -> OffsetBounds {
        OffsetBounds {
            base_offset,
            first_offset: base_offset,
            limit_offset,
        }
    }
}

/// Walks a segment batch by batch from a start position.
pub(crate) struct Scanner<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    position: u64,
    window: Vec<u8>,
    window_start: u64,
    window_bytes: usize,
    verify_crc: bool,
    bounds: OffsetBounds,
    /// The next batch's base offset.
    next_offset: i64,
}

impl<'a> Scanner<'a> {
    /// Scans `[position, end)` of `file`. `end` is what the caller knows to be written; a file
    /// shorter than that (cut by someone else) ends the scan with an I/O error.
    pub(crate) fn new(
        file: &'a File,
        path: &'a Path,
        end: u64,
        position: u64,
        window_bytes: usize,
        verify_crc: bool,
        bounds: OffsetBounds,
    ) -> Scanner<'a> {
        assert!(window_bytes >= BATCH_HEADER_BYTES);
        Scanner {
            file,
            path,
            end,
            position,
            window: Vec::new(),
            window_start: 0,
            window_bytes,
            verify_crc,
            bounds,
            next_offset: bounds.first_offset,
        }
    }

    /// Makes `[at, at + len)` available in the window; `len` is at most the window size and the
    /// range lies within `end`.
    fn fill(&mut self, at: u64, len: usize) -> Result<&[u8], StorageError> {
        debug_assert!(len <= self.window_bytes && at + len as u64 <= self.end);
        let have = at >= self.window_start
            && at + len as u64 <= self.window_start + self.window.len() as u64;
        if !have {
            let want = (self.end - at).min(self.window_bytes as u64) as usize;
            self.window.resize(want, 0);
            self.file
                .read_exact_at(&mut self.window, at)
                .map_err(|e| io_error(self.path, e))?;
            self.window_start = at;
        }
        let from = (at - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }

    /// CRC-32C of `[from, to)`, read through the window.
    fn crc(&mut self, from: u64, to: u64) -> Result<u32, StorageError> {
        let mut crc = 0;
        let mut at = from;
        while at < to {
            let len = (to - at).min(self.window_bytes as u64) as usize;
            crc = crc32c::crc32c_append(crc, self.fill(at, len)?);
            at += len as u64;
        }
        Ok(crc)
    }

    /// Why `header` cannot be the next batch, if it cannot. Checked before anything computes
    /// with its offsets, which lie outside the CRC.
    fn implausible_offsets(&self, header: &BatchHeader) -> Option<String> {
        let OffsetBounds {
            base_offset,
            limit_offset,
            ..
        } = self.bounds;
        let relative_last = header
            .base_offset
            .checked_sub(base_offset)
            .and_then(|relative| relative.checked_add(i64::from(header.last_offset_delta)));
        let fits = header.base_offset == self.next_offset
            && header.last_offset_delta >= 0
            && relative_last.is_some_and(|r| r <= i64::from(u32::MAX))
            && header.last_offset() < limit_offset;
        (!fits).then(|| {
            format!(
                "batch offsets {}+{} are out of place (expected {}, below {limit_offset})",
                header.base_offset, header.last_offset_delta, self.next_offset
            )
        })
    }

    pub(crate) fn next_step(&mut self) -> Result<ScanStep, StorageError> {
        let position = self.position;
        if position >= self.end {
            return Ok(ScanStep::End);
        }
        let invalid = |reason: String| Ok(ScanStep::Invalid { position, reason });
        let left = self.end - position;
        if left < BATCH_HEADER_BYTES as u64 {
            return invalid(format!(
                "{left} trailing bytes, shorter than a batch header"
            ));
        }
        let header = match BatchHeader::parse(self.fill(position, BATCH_HEADER_BYTES)?) {
            Ok(header) => header,
            Err(_) => return invalid(format!("batchLength below the minimum {MIN_BATCH_LENGTH}")),
        };
        if header.magic != 2 {
            return invalid(format!("magic {}", header.magic));
        }
        let total = header.total_bytes() as u64;
        if total > left {
            return invalid(format!(
                "batch of {total} bytes but only {left} bytes left (torn write)"
            ));
        }
        if let Some(reason) = self.implausible_offsets(&header) {
            return invalid(reason);
        }
        if self.verify_crc {
            let crc = self.crc(position + CRC_START as u64, position + total)?;
            if crc != header.crc {
                return invalid("CRC-32C mismatch".to_string());
            }
        }
        self.position += total;
        self.next_offset = header.last_offset() + 1;
        Ok(ScanStep::Batch { position, header })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, patched, BatchSpec};

    /// Three batches at offsets 10.., stored as a segment based at 10.
    fn segment_file() -> (tempfile::NamedTempFile, Vec<Vec<u8>>) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        let mut stored = Vec::new();
        let mut offset = 10;
        for i in 0..3 {
            let b = batch(&BatchSpec {
                records: 2,
                value_bytes: 100 + 50 * i,
                ..BatchSpec::default()
            });
            let bytes = patched(&b.bytes, offset, 0);
            std::io::Write::write_all(&mut file, &bytes).expect("write");
            stored.push(bytes);
            offset += 2;
        }
        (file, stored)
    }

    fn steps(file: &File, end: u64, window: usize, bounds: OffsetBounds) -> Vec<ScanStep> {
        let path = Path::new("segment");
        let mut scanner = Scanner::new(file, path, end, 0, window, true, bounds);
        let mut steps = Vec::new();
        for _ in 0..10 {
            let step = scanner.next_step().expect("scan");
            let last = !matches!(step, ScanStep::Batch { .. });
            steps.push(step);
            if last {
                break;
            }
        }
        steps
    }

    #[test]
    fn a_crc_spanning_many_windows_is_checked_with_window_sized_reads() {
        let (file, stored) = segment_file();
        let end: u64 = stored.iter().map(|b| b.len() as u64).sum();
        // A window barely larger than a header: every CRC is computed in several pieces.
        let steps = steps(
            file.as_file(),
            end,
            BATCH_HEADER_BYTES,
            OffsetBounds::segment(10, i64::MAX),
        );
        assert_eq!(steps.len(), 4);
        assert!(matches!(steps[3], ScanStep::End));
    }

    #[test]
    fn offsets_outside_the_segment_or_going_backwards_are_invalid() {
        let (file, stored) = segment_file();
        let end: u64 = stored.iter().map(|b| b.len() as u64).sum();
        // The next segment starts at 14: the third batch (14..=15) belongs there.
        let steps = steps(
            file.as_file(),
            end,
            LOOKUP_WINDOW_BYTES,
            OffsetBounds::segment(10, 14),
        );
        assert!(
            matches!(steps[2], ScanStep::Invalid { position, .. } if position == (stored[0].len() + stored[1].len()) as u64),
            "{steps:?}"
        );
        // A segment based at 11 cannot hold offset 10.
        let steps = steps_at(&file, end, OffsetBounds::segment(11, i64::MAX));
        assert!(matches!(steps[0], ScanStep::Invalid { position: 0, .. }));
        // Relative offsets must fit the index's u32.
        let far = OffsetBounds::segment(10 - (1i64 << 33), i64::MAX);
        assert!(matches!(
            steps_at(&file, end, far)[0],
            ScanStep::Invalid { .. }
        ));
    }

    fn steps_at(file: &tempfile::NamedTempFile, end: u64, bounds: OffsetBounds) -> Vec<ScanStep> {
        steps(file.as_file(), end, LOOKUP_WINDOW_BYTES, bounds)
    }

    #[test]
    fn hostile_headers_end_the_scan_without_allocating_what_they_claim() {
        let (file, stored) = segment_file();
        let mut bytes: Vec<u8> = stored.concat();
        let first = stored[0].len();
        type Damage = fn(&mut [u8]);
        let cases: [(&str, Damage); 4] = [
            ("batchLength i32::MAX", |b| {
                b[8..12].copy_from_slice(&i32::MAX.to_be_bytes())
            }),
            ("negative batchLength", |b| {
                b[8..12].copy_from_slice(&(-1i32).to_be_bytes())
            }),
            ("baseOffset i64::MAX", |b| {
                b[0..8].copy_from_slice(&i64::MAX.to_be_bytes())
            }),
            ("negative lastOffsetDelta", |b| {
                b[23..27].copy_from_slice(&(-5i32).to_be_bytes())
            }),
        ];
        for (what, damage) in cases {
            let mut damaged = bytes.clone();
            damage(&mut damaged[first..]);
            std::fs::write(file.path(), &damaged).expect("write");
            let steps = steps_at(
                &file,
                damaged.len() as u64,
                OffsetBounds::segment(10, i64::MAX),
            );
            assert!(matches!(steps[0], ScanStep::Batch { .. }), "{what}");
            assert!(
                matches!(steps[1], ScanStep::Invalid { position, .. } if position == first as u64),
                "{what}: {steps:?}"
            );
        }
        bytes.truncate(first + 30);
        std::fs::write(file.path(), &bytes).expect("write");
        let steps = steps_at(
            &file,
            bytes.len() as u64,
            OffsetBounds::segment(10, i64::MAX),
        );
        assert!(matches!(steps[1], ScanStep::Invalid { .. }));
    }
}

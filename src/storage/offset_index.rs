//! Sparse offset index of one segment: `relative offset -> file position`, one entry per
//! `index_interval_bytes` of appended batches (Kafka's `log.index.interval.bytes`).
//!
//! Runs on the partition's owning shard. Entries are rkyv archives read in place; a lookup is a
//! binary search that yields a position at or before the wanted batch, and the caller finishes
//! with a short scan of batch headers from there.

use std::path::Path;

use crate::record::batch::BATCH_HEADER_BYTES;
use crate::storage::error::StorageError;
use crate::storage::index_file::{last_at_or_below, IndexFile, IndexSync};

/// One index entry as written: offsets are relative to the segment's base offset so that an
/// entry stays 8 bytes (a segment's positions and offset span both fit in u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
pub struct OffsetIndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Size of one archived entry on disk.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = std::mem::size_of::<ArchivedOffsetIndexEntry>();

pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
}

impl OffsetIndex {
    pub(crate) fn create(path: &Path, base_offset: i64) -> Result<OffsetIndex, StorageError> {
        Ok(OffsetIndex {
            file: IndexFile::create(path, OFFSET_INDEX_ENTRY_BYTES)?,
            base_offset,
        })
    }

    /// Opens a segment's index and sanity-checks it against the segment's size: entries must be
    /// strictly increasing, past the segment's first batch (which never gets an entry: it sits at
    /// position 0) and inside the segment. `Ok(None)` means the index is missing or fails the
    /// check (a torn or zero-filled tail after a power loss fails it) and must be rebuilt.
    pub(crate) fn open_checked(
        path: &Path,
        base_offset: i64,
        segment_bytes: u64,
    ) -> Result<Option<OffsetIndex>, StorageError> {
        // Each entry points at a different batch, and batches are at least a header apart.
        let max_entries = (segment_bytes / BATCH_HEADER_BYTES as u64) as usize;
        let Some(file) = IndexFile::open(path, OFFSET_INDEX_ENTRY_BYTES, max_entries)? else {
            return Ok(None);
        };
        let index = OffsetIndex { file, base_offset };
        let n = index.len();
        for i in 0..n {
            let e = index.entry(i);
            if e.position == 0 || e.relative_offset == 0 || u64::from(e.position) >= segment_bytes {
                return Ok(None);
            }
            if i > 0 {
                let prev = index.entry(i - 1);
                if e.relative_offset <= prev.relative_offset || e.position <= prev.position {
                    return Ok(None);
                }
            }
        }
        Ok(Some(index))
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.file.size_bytes()
    }

    pub(crate) fn entry(&self, i: usize) -> OffsetIndexEntry {
        let bytes = self.file.entry(i);
        // SAFETY: `bytes` is exactly one entry, at an offset that is a multiple of the entry size
        // in a 16-byte (owned) or page (mapped) aligned buffer, so it is aligned; every bit
        // pattern is a valid pair of little-endian u32s, so no validation can fail and the
        // checked `access` would only cost time on the lookup path.
        let archived = unsafe { rkyv::access_unchecked::<ArchivedOffsetIndexEntry>(bytes) };
        OffsetIndexEntry {
            relative_offset: archived.relative_offset.to_native(),
            position: archived.position.to_native(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        self.file.is_mapped()
    }

    /// Holds the entries in memory instead of a map (see [`IndexFile::make_owned`]).
    pub(crate) fn make_owned(&mut self) {
        self.file.make_owned();
    }

    pub(crate) fn append(&mut self, offset: i64, position: u32) {
        let relative_offset = u32::try_from(offset - self.base_offset)
            .expect("segment rolls before relative offsets overflow u32");
        if let Some(last) = self.len().checked_sub(1).map(|i| self.entry(i)) {
            assert!(relative_offset > last.relative_offset && position > last.position);
        }
        let entry = OffsetIndexEntry {
            relative_offset,
            position,
        };
        let bytes =
            rkyv::to_bytes::<rkyv::rancor::Error>(&entry).expect("archiving two u32s cannot fail");
        self.file.append(&bytes);
    }

    /// The last entry with offset <= `offset`, as (absolute offset, position); `(base, 0)` when
    /// none, since a segment's first batch sits at position 0.
    pub(crate) fn lookup(&self, offset: i64) -> (i64, u32) {
        let found = last_at_or_below(self.len(), offset - self.base_offset, |i| {
            i64::from(self.entry(i).relative_offset)
        });
        match found {
            Some(i) => {
                let e = self.entry(i);
                (self.base_offset + i64::from(e.relative_offset), e.position)
            }
            None => (self.base_offset, 0),
        }
    }

    pub(crate) fn is_full(&self, max_bytes: u32) -> bool {
        self.size_bytes() + OFFSET_INDEX_ENTRY_BYTES as u64 > u64::from(max_bytes)
    }

    /// See [`IndexFile::take_sync`].
    pub(crate) fn take_sync(&mut self) -> Option<IndexSync> {
        self.file.take_sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_eight_bytes_and_lookup_finds_floor() {
        assert_eq!(OFFSET_INDEX_ENTRY_BYTES, 8);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let mut index = OffsetIndex::create(&path, 100).expect("create");
        for i in 1..=1000u32 {
            index.append(100 + i64::from(i) * 10, i * 4096);
        }
        assert_eq!(index.lookup(50), (100, 0));
        assert_eq!(index.lookup(105), (100, 0));
        assert_eq!(index.lookup(110), (110, 4096));
        assert_eq!(index.lookup(119), (110, 4096));
        assert_eq!(index.lookup(1_000_000), (10_100, 1000 * 4096));
        index
            .take_sync()
            .expect("pending entries")
            .run()
            .expect("write");
        assert!(index.take_sync().is_none(), "nothing left to write");
        drop(index);

        // Reopened through the map, the same answers; a bound below the last entry is rejected.
        let index = OffsetIndex::open_checked(&path, 100, 1001 * 4096)
            .expect("open")
            .expect("ok");
        assert_eq!(index.len(), 1000);
        assert_eq!(index.lookup(555), (550, 45 * 4096));
        assert!(OffsetIndex::open_checked(&path, 100, 4096)
            .expect("open")
            .is_none());
    }

    #[test]
    fn torn_or_zero_filled_index_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::create(&path, 0).expect("create");
        index.append(5, 100);
        index
            .take_sync()
            .expect("pending entries")
            .run()
            .expect("write");
        drop(index);
        assert!(OffsetIndex::open_checked(&path, 0, 1000)
            .expect("open")
            .is_some());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &bytes).expect("write");
        assert!(OffsetIndex::open_checked(&path, 0, 1000)
            .expect("open")
            .is_none());
        bytes.push(1);
        std::fs::write(&path, &bytes).expect("write");
        assert!(OffsetIndex::open_checked(&path, 0, 1000)
            .expect("open")
            .is_none());
        // A whole entry of zeros where the first one should be: position 0 is never indexed.
        std::fs::write(&path, [0u8; 8]).expect("write");
        assert!(OffsetIndex::open_checked(&path, 0, 1000)
            .expect("open")
            .is_none());
    }
}

//! Sparse time index of one segment: `max timestamp so far -> relative offset of the batch that
//! first reached it`. An entry is added at the offset index's interval, only when the segment's
//! max timestamp has grown (as Kafka does), plus a final entry when the segment rolls, so the
//! last entry of a rolled segment is its largest timestamp (used by time-based retention).
//!
//! Runs on the partition's owning shard. Because every batch before an entry's offset has a
//! smaller max timestamp, "the last entry with timestamp <= ts" is a safe place to start scanning
//! for the first batch whose max timestamp is >= ts.

use std::path::Path;

use crate::storage::error::StorageError;
use crate::storage::index_file::{last_at_or_below, IndexFile, IndexSync};

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
pub struct TimeIndexEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Size of one archived entry on disk (16: rkyv pads the 12 bytes to the i64's alignment).
pub const TIME_INDEX_ENTRY_BYTES: usize = std::mem::size_of::<ArchivedTimeIndexEntry>();

pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
}

impl TimeIndex {
    pub(crate) fn create(path: &Path, base_offset: i64) -> Result<TimeIndex, StorageError> {
        Ok(TimeIndex {
            file: IndexFile::create(path, TIME_INDEX_ENTRY_BYTES)?,
            base_offset,
        })
    }

    /// Opens a segment's time index; `Ok(None)` if missing, torn, not increasing, longer than
    /// `max_entries` (entries come with offset-index entries, plus the seal entry), or if an
    /// entry points past `next_offset` (the segment's end): such an index is rebuilt, never
    /// trusted.
    pub(crate) fn open_checked(
        path: &Path,
        base_offset: i64,
        next_offset: i64,
        max_entries: usize,
    ) -> Result<Option<TimeIndex>, StorageError> {
        let Some(file) = IndexFile::open(path, TIME_INDEX_ENTRY_BYTES, max_entries)? else {
            return Ok(None);
        };
        let index = TimeIndex { file, base_offset };
        for i in 0..index.len() {
            let e = index.entry(i);
            if base_offset + i64::from(e.relative_offset) >= next_offset.max(base_offset + 1) {
                return Ok(None);
            }
            if i > 0 {
                let prev = index.entry(i - 1);
                if e.timestamp <= prev.timestamp || e.relative_offset < prev.relative_offset {
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

    pub(crate) fn entry(&self, i: usize) -> TimeIndexEntry {
        let bytes = self.file.entry(i);
        // SAFETY: exactly one entry, aligned (entry size is a multiple of its alignment and the
        // buffer is 16-byte or page aligned); the padding is never read, and every bit pattern
        // of an i64 and a u32 is valid, so validation could not reject anything.
        let archived = unsafe { rkyv::access_unchecked::<ArchivedTimeIndexEntry>(bytes) };
        TimeIndexEntry {
            timestamp: archived.timestamp.to_native(),
            relative_offset: archived.relative_offset.to_native(),
        }
    }

    pub(crate) fn last(&self) -> Option<TimeIndexEntry> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        self.file.is_mapped()
    }

    /// Holds the entries in memory instead of a map (see [`IndexFile::make_owned`]).
    pub(crate) fn make_owned(&mut self) {
        self.file.make_owned();
    }

    /// Appends `(timestamp, offset)` if `timestamp` is larger than the last entry's.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if self.last().is_some_and(|last| timestamp <= last.timestamp) {
            return;
        }
        let relative_offset = u32::try_from(offset - self.base_offset)
            .expect("segment rolls before relative offsets overflow u32");
        let entry = TimeIndexEntry {
            timestamp,
            relative_offset,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&entry)
            .expect("archiving an i64 and a u32 cannot fail");
        self.file.append(&bytes);
    }

    /// Offset to start scanning from for the first batch with max timestamp >= `timestamp`.
    pub(crate) fn lookup(&self, timestamp: i64) -> i64 {
        match last_at_or_below(self.len(), timestamp, |i| self.entry(i).timestamp) {
            Some(i) => self.base_offset + i64::from(self.entry(i).relative_offset),
            None => self.base_offset,
        }
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
    fn lookup_returns_safe_scan_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000001000.timeindex");
        let mut index = TimeIndex::create(&path, 1000).expect("create");
        index.maybe_append(100, 1000);
        index.maybe_append(90, 1005); // not larger: skipped
        index.maybe_append(200, 1010);
        index.maybe_append(300, 1020);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(50), 1000);
        assert_eq!(index.lookup(150), 1000);
        assert_eq!(index.lookup(200), 1010);
        assert_eq!(index.lookup(10_000), 1020);
        index
            .take_sync()
            .expect("pending entries")
            .run()
            .expect("write");
        drop(index);
        let index = TimeIndex::open_checked(&path, 1000, 1030, 3)
            .expect("open")
            .expect("valid");
        assert_eq!(
            index.last(),
            Some(TimeIndexEntry {
                timestamp: 300,
                relative_offset: 20
            })
        );
        assert!(TimeIndex::open_checked(&path, 1000, 1015, 3)
            .expect("open")
            .is_none());
        assert!(
            TimeIndex::open_checked(&path, 1000, 1030, 2)
                .expect("open")
                .is_none(),
            "more entries than the offset index allows"
        );
    }
}

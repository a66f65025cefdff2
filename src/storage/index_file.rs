//! The file and memory behind a sparse index (offset index or time index): a flat array of
//! fixed-size rkyv-archived entries.
//!
//! Runs on the partition's owning shard. The active segment's index lives in an aligned buffer;
//! a new entry is only added there (no syscall on the append path). Entries reach the file in
//! order, appended at its end by an [`IndexSync`] that a log's sync job runs on a blocking thread
//! (when the segment rolls, and on close), so the file is always a prefix of the entries, exactly
//! `entries * entry_bytes` long: no preallocation, hence no zero-filled tail to tell apart from real
//! entries after a crash. An index that is not yet complete on disk belongs to a segment above the
//! recovery point, which start-up after a crash rebuilds anyway. Rolled segments' indexes are
//! memory-mapped read-only on open, so a broker with thousands of segments pays only for the
//! pages it touches.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::storage::error::{io_error, StorageError};

enum Backing {
    /// Entries held in memory (active segment, or a rebuilt index).
    Owned(AlignedVec<16>),
    /// A rolled segment's index, mapped read-only. Page alignment satisfies any entry alignment.
    Mapped(memmap2::Mmap),
}

pub(crate) struct IndexFile {
    path: PathBuf,
    file: Arc<File>,
    backing: Backing,
    entry_bytes: usize,
    entries: usize,
    /// Entries already handed to an [`IndexSync`] (in the file, or about to be).
    persisted: usize,
    /// The file changed (created, emptied, or entries handed over) since its last fsync.
    dirty: bool,
}

/// An index's pending entries and its fsync, run off the executor by a log's sync job.
pub(crate) struct IndexSync {
    file: Arc<File>,
    path: PathBuf,
    /// Entries to append: (file position, bytes).
    append: Option<(u64, Vec<u8>)>,
}

impl IndexSync {
    /// Appends the pending entries, then fsyncs the file.
    pub(crate) fn run(&self) -> Result<(), StorageError> {
        if let Some((position, bytes)) = &self.append {
            self.file
                .write_all_at(bytes, *position)
                .map_err(|e| io_error(&self.path, e))?;
        }
        self.file.sync_data().map_err(|e| io_error(&self.path, e))
    }
}

impl IndexFile {
    /// Creates (or empties) the index file at `path`.
    pub(crate) fn create(path: &Path, entry_bytes: usize) -> Result<IndexFile, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            backing: Backing::Owned(AlignedVec::new()),
            entry_bytes,
            entries: 0,
            persisted: 0,
            dirty: true,
        })
    }

    /// Opens an existing index. Returns `Ok(None)` when the file is missing, its size is not a
    /// multiple of the entry size, or it holds more than `max_entries` (the caller rebuilds it
    /// from the segment): what a segment can have indexed bounds what is mapped and copied.
    pub(crate) fn open(
        path: &Path,
        entry_bytes: usize,
        max_entries: usize,
    ) -> Result<Option<IndexFile>, StorageError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
        };
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        // Index positions are u32 and entries are a few bytes: a bigger file is not an index.
        if len > u64::from(u32::MAX)
            || !len.is_multiple_of(entry_bytes as u64)
            || len / entry_bytes as u64 > max_entries as u64
        {
            return Ok(None);
        }
        let len = len as usize;
        let backing = if len == 0 {
            Backing::Owned(AlignedVec::new())
        } else {
            // SAFETY: the map is read-only and only this process writes index files; a rolled
            // index is never modified in place (truncate_to converts it to Owned first).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
            Backing::Mapped(map)
        };
        Ok(Some(IndexFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            backing,
            entry_bytes,
            entries: len / entry_bytes,
            persisted: len / entry_bytes,
            dirty: false,
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        (self.entries * self.entry_bytes) as u64
    }

    fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Owned(v) => &v[..self.entries * self.entry_bytes],
            Backing::Mapped(m) => &m[..self.entries * self.entry_bytes],
        }
    }

    /// Raw bytes of entry `i`, aligned to the entry's archived alignment.
    pub(crate) fn entry(&self, i: usize) -> &[u8] {
        debug_assert!(i < self.entries);
        &self.bytes()[i * self.entry_bytes..(i + 1) * self.entry_bytes]
    }

    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mapped(_))
    }

    /// Copies a mapped index into memory, as the active segment holds its indexes. Appends
    /// call it first, so a map is never written through or read past a change of the file.
    pub(crate) fn make_owned(&mut self) {
        if let Backing::Mapped(map) = &self.backing {
            let mut owned = AlignedVec::with_capacity(map.len());
            owned.extend_from_slice(&map[..self.entries * self.entry_bytes]);
            self.backing = Backing::Owned(owned);
        }
    }

    /// Appends one archived entry (exactly `entry_bytes` long) in memory; the file gets it from
    /// the next [`IndexFile::take_sync`].
    pub(crate) fn append(&mut self, entry: &[u8]) {
        assert_eq!(entry.len(), self.entry_bytes);
        self.make_owned();
        if let Backing::Owned(v) = &mut self.backing {
            v.extend_from_slice(entry);
        }
        self.entries += 1;
    }

    /// The entries not yet in the file and the fsync that makes them durable, or `None` when the
    /// file is already durable and complete. From here on they count as written: a sync job that
    /// fails stops the log from advancing its recovery point, so nothing relies on them.
    pub(crate) fn take_sync(&mut self) -> Option<IndexSync> {
        if self.persisted == self.entries && !self.dirty {
            return None;
        }
        let append = (self.persisted < self.entries).then(|| {
            let bytes = self.bytes()[self.persisted * self.entry_bytes..].to_vec();
            ((self.persisted * self.entry_bytes) as u64, bytes)
        });
        self.persisted = self.entries;
        self.dirty = false;
        Some(IndexSync {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            append,
        })
    }
}

/// Binary search over entries `0..len` for the last entry whose key is <= `target`, where
/// `key(i)` is non-decreasing. Returns `None` when every key is greater (or there are none).
pub(crate) fn last_at_or_below(
    len: usize,
    target: i64,
    key: impl Fn(usize) -> i64,
) -> Option<usize> {
    // partition_point: first index whose key > target.
    let (mut lo, mut hi) = (0usize, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(mid) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

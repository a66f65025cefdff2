//! The file and memory behind a sparse index (offset index or time index): a flat array of
//! fixed-size rkyv-archived entries.
//!
//! Runs on the partition's owning shard. The active segment's index lives in an aligned buffer
//! and every new entry is also `pwrite`n at the file's end, so an append is O(1) and the file is
//! always exactly `entries * entry_bytes` long (no preallocation, hence no zero-filled tail to
//! tell apart from real entries after a crash). Rolled segments' indexes are memory-mapped
//! read-only on open, so a broker with thousands of segments pays only for the pages it touches.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
    file: File,
    backing: Backing,
    entry_bytes: usize,
    entries: usize,
    /// Entries written since the last fsync.
    dirty: bool,
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
            file,
            backing: Backing::Owned(AlignedVec::new()),
            entry_bytes,
            entries: 0,
            dirty: true,
        })
    }

    /// Opens an existing index. Returns `Ok(None)` when the file is missing or its size is not a
    /// multiple of the entry size (the caller rebuilds it from the segment).
    pub(crate) fn open(path: &Path, entry_bytes: usize) -> Result<Option<IndexFile>, StorageError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
        };
        let len = file.metadata().map_err(|e| io_error(path, e))?.len() as usize;
        if !len.is_multiple_of(entry_bytes) {
            return Ok(None);
        }
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
            file,
            backing,
            entry_bytes,
            entries: len / entry_bytes,
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

    /// Appends one archived entry (exactly `entry_bytes` long) to memory and to the file.
    pub(crate) fn append(&mut self, entry: &[u8]) -> Result<(), StorageError> {
        assert_eq!(entry.len(), self.entry_bytes);
        self.make_owned();
        let at = self.size_bytes();
        self.file
            .write_all_at(entry, at)
            .map_err(|e| io_error(&self.path, e))?;
        if let Backing::Owned(v) = &mut self.backing {
            v.extend_from_slice(entry);
        }
        self.entries += 1;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
            self.dirty = false;
        }
        Ok(())
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

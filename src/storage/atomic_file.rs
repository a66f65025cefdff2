//! Writing a small file so that a crash or a power loss leaves either the old file or the new
//! one, never a torn mix: write a temporary file beside it, fsync it, rename it over the target,
//! fsync the directory. Used for every metadata and checkpoint file (partition.metadata,
//! producer-state snapshots, the recovery-point checkpoint, the clean-shutdown marker).
//!
//! Blocking file I/O: runs on blocking threads (a log's sync job, partition open and close, the
//! checkpoint thread), never on a shard's executor. A leftover `*.tmp` from an interrupted write
//! is removed when the directory is next loaded.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::storage::error::{io_error, StorageError};

/// Suffix of the temporary file an atomic write goes through.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// fsyncs the directory itself.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    // IMPORTANT: creating, renaming or deleting a file changes the directory, not the file:
    // without this a crash can lose a new file's name (or resurrect a deleted one) even though
    // its data was synced.
    let file = File::open(dir).map_err(|e| io_error(dir, e))?;
    file.sync_all().map_err(|e| io_error(dir, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically, without the final directory fsync: the rename is
/// durable once the caller fsyncs the directory (a sync job renames several files, then fsyncs
/// the directory once).
pub(crate) fn write_and_rename(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    // Before the rename: a name that points at data still in flight is the torn file this
    // module exists to prevent.
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    write_and_rename(path, bytes)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition.metadata");
        write_atomically(&path, b"one").expect("write");
        write_atomically(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("partition.metadata")]);
    }
}

//! Kafka's `partition.metadata`: the file in a partition directory naming the topic id its data
//! belongs to, so that data of a deleted topic is never served under a new topic of the same
//! name (Kafka's `PartitionMetadataFile`). Format, as Kafka writes it:
//!
//! ```text
//! version: 0
//! topic_id: <topic id, base64 as Kafka prints it>
//! ```
//!
//! Blocking file I/O: read and written on a blocking thread when the partition is opened.
//! Written atomically, so a crash leaves the old file or the new one.

use std::io;
use std::path::{Path, PathBuf};

use crate::storage::atomic_file::write_atomically;
use crate::storage::error::{io_error, StorageError};

pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Far more than the two short lines the file holds: a larger file is not one, and is not read.
const MAX_FILE_BYTES: u64 = 4096;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(PARTITION_METADATA_FILE)
}

fn contents(topic_id: &str) -> String {
    format!("version: 0\ntopic_id: {topic_id}\n")
}

/// The topic id the directory's data belongs to; `None` if it has no `partition.metadata`. A
/// file that is not in Kafka's format (another version, a torn or foreign file) is an error that
/// names it: what it guards is not guessed at.
pub fn read(dir: &Path) -> Result<Option<String>, StorageError> {
    let path = path(dir);
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        position: 0,
        reason,
    };
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, e)),
    };
    if len > MAX_FILE_BYTES {
        return Err(corrupt(format!("{len} bytes is too large")));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("version: 0") => {}
        other => return Err(corrupt(format!("expected 'version: 0', found {other:?}"))),
    }
    let topic_id = match lines
        .next()
        .and_then(|l| l.trim().strip_prefix("topic_id:"))
    {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => return Err(corrupt("no 'topic_id: <id>' line".to_string())),
    };
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(corrupt("unexpected lines after the topic id".to_string()));
    }
    Ok(Some(topic_id))
}

/// Writes the file atomically and durably.
pub fn write(dir: &Path, topic_id: &str) -> Result<(), StorageError> {
    write_atomically(&path(dir), contents(topic_id).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_kafkas_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), "rJ3nXMaETGOdvF4bTnv1Gw").expect("write");
        assert_eq!(
            std::fs::read_to_string(path(dir.path())).expect("read"),
            "version: 0\ntopic_id: rJ3nXMaETGOdvF4bTnv1Gw\n"
        );
        assert_eq!(
            read(dir.path()).expect("read").as_deref(),
            Some("rJ3nXMaETGOdvF4bTnv1Gw")
        );
    }

    #[test]
    fn anything_else_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "",
            "version: 1\ntopic_id: x\n",
            "version: 0\n",
            "version: 0\ntopic_id: \n",
            "version: 0\ntopic_id: a\nmore\n",
            "\u{0}\u{0}\u{0}",
        ] {
            std::fs::write(path(dir.path()), bad).expect("write");
            let error = read(dir.path()).expect_err(bad);
            assert!(
                error.to_string().contains(PARTITION_METADATA_FILE),
                "{error}"
            );
        }
        std::fs::write(path(dir.path()), vec![b'x'; 10_000]).expect("write");
        assert!(read(dir.path()).is_err());
    }
}

//! Kafka's `recovery-point-offset-checkpoint`: one file per log directory holding, for every
//! partition in it, the offset below which its log is durable (fsynced). After a power loss,
//! start-up recovers each partition from its recovery point on instead of from its first segment.
//! Format, as Kafka's `OffsetCheckpointFile` writes it:
//!
//! ```text
//! 0                      <- version
//! 2                      <- number of entries
//! orders 0 1200          <- topic partition offset
//! orders 1 873
//! ```
//!
//! Blocking file I/O on a blocking thread: read once at broker start, before any shard opens a
//! partition, and written by the broker's checkpoint thread (periodically and at shutdown),
//! atomically (temp file, fsync, rename, directory fsync), so a crash leaves the old file or the
//! new one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::storage::atomic_file::write_atomically;
use crate::storage::error::{io_error, StorageError};

pub const RECOVERY_POINT_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";

/// A partition of the log directory: (topic, partition).
pub type PartitionKey = (String, i32);

/// A hundred thousand partitions take a few MB; a larger file is not a checkpoint.
const MAX_FILE_BYTES: u64 = 64 << 20;

pub fn path(log_dir: &Path) -> PathBuf {
    log_dir.join(RECOVERY_POINT_CHECKPOINT_FILE)
}

/// The entries of `log_dir`'s checkpoint; empty if there is none. A file that is not in Kafka's
/// format is an error naming the file and line (the caller decides what to do; the broker then
/// starts with no recovery points, which recovers every log, as Kafka does).
pub fn read(log_dir: &Path) -> Result<BTreeMap<PartitionKey, i64>, StorageError> {
    read_file(&path(log_dir))
}

/// `replication-offset-checkpoint`: the same format, holding each partition's high watermark
/// (Kafka's `replica.high.watermark.checkpoint.interval.ms` file), so that a restarted broker
/// neither exposes records the ISR never had nor hides ones it had.
pub const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

pub fn high_watermark_path(log_dir: &Path) -> PathBuf {
    log_dir.join(HIGH_WATERMARK_CHECKPOINT_FILE)
}

pub fn read_high_watermarks(log_dir: &Path) -> Result<BTreeMap<PartitionKey, i64>, StorageError> {
    read_file(&high_watermark_path(log_dir))
}

pub fn write_high_watermarks(
    log_dir: &Path,
    entries: &BTreeMap<PartitionKey, i64>,
) -> Result<(), StorageError> {
    write_file(&high_watermark_path(log_dir), entries)
}

fn read_file(path: &Path) -> Result<BTreeMap<PartitionKey, i64>, StorageError> {
    let path = path.to_path_buf();
    let corrupt = |line: usize, reason: String| StorageError::Corrupt {
        path: path.clone(),
        position: line as u64,
        reason: format!("line {line}: {reason}"),
    };
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(&path, e)),
    };
    if len > MAX_FILE_BYTES {
        return Err(corrupt(0, format!("{len} bytes is too large")));
    }
    let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| corrupt(0, "not UTF-8".to_string()))?;
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("0") => {}
        other => return Err(corrupt(1, format!("unknown version {other:?}"))),
    }
    let expected: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(2, "no entry count".to_string()))?;
    let mut entries = BTreeMap::new();
    let mut found = 0usize;
    for (i, line) in lines.enumerate() {
        let number = i + 3;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [topic, partition, offset] = fields[..] else {
            return Err(corrupt(number, format!("malformed entry {line:?}")));
        };
        let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(corrupt(number, format!("malformed entry {line:?}")));
        };
        if partition < 0 || offset < 0 {
            return Err(corrupt(number, format!("negative value in {line:?}")));
        }
        entries.insert((topic.to_string(), partition), offset);
        found += 1;
    }
    if found != expected {
        return Err(corrupt(
            2,
            format!("{expected} entries announced, {found} found"),
        ));
    }
    Ok(entries)
}

/// Replaces `log_dir`'s checkpoint with `entries`, atomically and durably.
pub fn write(log_dir: &Path, entries: &BTreeMap<PartitionKey, i64>) -> Result<(), StorageError> {
    write_file(&path(log_dir), entries)
}

fn write_file(path: &Path, entries: &BTreeMap<PartitionKey, i64>) -> Result<(), StorageError> {
    let mut text = format!("0\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_kafkas_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).expect("no file").is_empty());
        let entries: BTreeMap<PartitionKey, i64> = [
            (("orders".to_string(), 1), 873),
            (("orders".to_string(), 0), 1200),
            (("__consumer_offsets".to_string(), 7), 0),
        ]
        .into_iter()
        .collect();
        write(dir.path(), &entries).expect("write");
        assert_eq!(
            std::fs::read_to_string(path(dir.path())).expect("read"),
            "0\n3\n__consumer_offsets 7 0\norders 0 1200\norders 1 873\n"
        );
        assert_eq!(read(dir.path()).expect("read"), entries);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\norders 0 5\n",
            "0\n1\norders 0\n",
            "0\n1\norders x 5\n",
            "0\n1\norders 0 -5\n",
            "0\n1\norders 0 5 6\n",
        ] {
            std::fs::write(path(dir.path()), bad).expect("write");
            let error = read(dir.path()).expect_err(bad);
            assert!(
                error.to_string().contains(RECOVERY_POINT_CHECKPOINT_FILE),
                "{error}"
            );
        }
    }
}

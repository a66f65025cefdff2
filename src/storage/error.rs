//! Errors of the storage layer. Every message names the partition directory or file and, where
//! it applies, the offset or byte position, so an operator can find the problem on disk.

use std::path::{Path, PathBuf};

use crate::record::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: producer {producer_id}: out of order sequence number, expected {expected}, got {got}")]
    OutOfOrderSequence {
        dir: PathBuf,
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "{dir}: producer {producer_id}: epoch {got} is older than the current epoch {current}"
    )]
    InvalidProducerEpoch {
        dir: PathBuf,
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("{path}: corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{dir}: offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        dir: PathBuf,
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(
        "{dir}: the log stopped after a failed sync (restart the broker to recover it): {reason}"
    )]
    LogFailed { dir: PathBuf, reason: String },
    #[error(
        "{dir}: belongs to topic id {found}, not {expected}: left untouched, the partition is not opened"
    )]
    InconsistentTopicId {
        dir: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{dir}: invalid append: {reason}")]
    InvalidAppend { dir: PathBuf, reason: String },
    #[error("{dir}: {source}")]
    Batch {
        dir: PathBuf,
        #[source]
        source: BatchError,
    },
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

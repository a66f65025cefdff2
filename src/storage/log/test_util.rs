//! Helpers shared by the log's unit tests: batches of varied sizes, filling a log, reading it
//! back, and comparing a trusted open with the recovery scan of the same files.

use std::path::{Path, PathBuf};

use crate::record::test_util::{batch, patched, BatchSpec};
use crate::record::{Batch, BatchHeader};
use crate::storage::log::{AppendOutcome, Log, LogConfig, LogOpened};
use crate::storage::StorageError;

pub(crate) const EPOCH: i32 = 3;

pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

pub(crate) fn spec(i: usize) -> BatchSpec {
    BatchSpec {
        records: 1 + (i % 4) as i32,
        value_bytes: 20 + (i * 37) % 150,
        base_timestamp: 1_000 + 10 * i as i64,
        fill: i as u8,
        ..BatchSpec::default()
    }
}

/// Appends `n` batches one call each; returns (base offset, stored bytes) per batch.
pub(crate) fn fill(log: &mut Log, n: usize) -> Vec<(i64, Vec<u8>)> {
    let mut stored = Vec::new();
    for i in 0..n {
        let b = batch(&spec(i));
        match log
            .append(std::slice::from_ref(&b), EPOCH, 0)
            .expect("append")
        {
            AppendOutcome::Appended {
                base_offset,
                last_offset,
                ..
            } => {
                assert_eq!(
                    last_offset - base_offset + 1,
                    i64::from(b.header.records_count)
                );
                stored.push((base_offset, patched(&b.bytes, base_offset, EPOCH)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    stored
}

pub(crate) fn appended(outcome: &Result<AppendOutcome, StorageError>) -> (i64, i64) {
    match outcome {
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
            ..
        }) => (*base_offset, *last_offset),
        other => panic!("expected Appended, got {other:?}"),
    }
}

pub(crate) fn expected_from(stored: &[(i64, Vec<u8>)], offset: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (base, bytes) in stored {
        let header = BatchHeader::parse(bytes).expect("header");
        if *base + i64::from(header.last_offset_delta) >= offset {
            out.extend_from_slice(bytes);
        }
    }
    out
}

pub(crate) fn read_all(log: &Log, offset: i64) -> Vec<u8> {
    log.read(offset, usize::MAX, i64::MAX, true)
        .expect("read")
        .to_bytes()
        .expect("bytes")
        .to_vec()
}

pub(crate) fn idem(pid: i64, epoch: i16, seq: i32, records: i32) -> Batch {
    batch(&BatchSpec {
        records,
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        ..BatchSpec::default()
    })
}

/// One segment with many index entries, so the tail after the last entry is short.
pub(crate) fn one_segment_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

pub(crate) fn marker(dir: &Path) -> PathBuf {
    dir.join(crate::storage::recovery::CLEAN_SHUTDOWN_MARKER)
}

/// Opens a copy of `dir` without its clean-shutdown marker: the full recovery scan's view
/// of the same files, to compare the trusted open against.
pub(crate) fn recovered_copy(dir: &Path, config: LogConfig) -> (tempfile::TempDir, Log) {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path != marker(dir) {
            std::fs::copy(&path, copy.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let log = Log::open(copy.path(), config).expect("open copy");
    assert!(matches!(log.opened(), LogOpened::Recovered { .. }));
    (copy, log)
}

/// Every read a consumer could make lands on the right batch: from each batch's base
/// offset, from inside it, and by timestamp.
pub(crate) fn assert_reads(log: &Log, stored: &[(i64, Vec<u8>)]) {
    assert_eq!(
        read_all(log, log.log_start_offset()),
        expected_from(stored, 0)
    );
    for (i, (base, bytes)) in stored.iter().enumerate() {
        let header = BatchHeader::parse(bytes).expect("header");
        for offset in [*base, base + i64::from(header.last_offset_delta)] {
            let one = log.read(offset, 1, i64::MAX, true).expect("read");
            assert_eq!(one.to_bytes().expect("bytes").to_vec(), *bytes, "batch {i}");
        }
        let found = log
            .find_batch_by_timestamp(header.max_timestamp)
            .expect("find")
            .expect("some");
        // Timestamps repeat across fill() calls: the first batch reaching it is found.
        let first = stored
            .iter()
            .find(|(_, b)| {
                BatchHeader::parse(b).expect("header").max_timestamp >= header.max_timestamp
            })
            .expect("some");
        assert_eq!(found.to_vec(), first.1);
    }
}

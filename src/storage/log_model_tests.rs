//! Property test: random operations on a [`Log`] checked against a plain in-memory model (a Vec
//! of stored batches with their offsets), as TiKV tests its engines against a reference.
//! Covers appends of random sizes, rolls (tiny segment_bytes), sync jobs, reopen after a close, a
//! crash or a power loss, reads at random offsets with random limits, lookups by timestamp, and
//! truncation. A reopen after close takes the trusted path (no recovery scan) and must leave the
//! active segment in exactly the state the recovery scan of the same files builds. A crash
//! reopens from the recovery point and loses nothing; a power loss may lose what was not fsynced,
//! and the model then keeps the prefix the log still serves, which reaches the recovery point.

use proptest::prelude::*;

use std::path::Path;

use crate::record::test_util::{batch, patched, BatchSpec};
use crate::record::{Batch, BatchHeader};
use crate::storage::power_loss_tests::{lose_power, loss, Loss};
use crate::storage::recovery::CLEAN_SHUTDOWN_MARKER;
use crate::storage::{AppendOutcome, Log, LogConfig, LogOpened};

const EPOCH: i32 = 4;

#[derive(Debug, Clone)]
enum Op {
    /// One append call of (records, value bytes, base timestamp) batches.
    Append(Vec<(i32, usize, i64)>),
    /// Several one-batch appends offered together, written in as many groups as the log takes
    /// ([`Log::prepare`] / [`Log::complete`], as the broker's writer does).
    Group(Vec<(i32, usize, i64)>),
    Reopen {
        close: bool,
    },
    /// The pending sync job runs (fsyncs, snapshots; the recovery point moves).
    Sync,
    /// A crash, then the power goes: what was not fsynced is lost, as `losses` pick.
    PowerLoss(Vec<Loss>),
    Read {
        at: usize,
        max_bytes: usize,
        limit_at: Option<usize>,
        min_one: bool,
    },
    FindByTimestamp(i64),
    Truncate {
        at: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1..6i32, 0..400usize, 0..2_000i64), 1..4).prop_map(Op::Append),
        3 => prop::collection::vec((1..6i32, 0..400usize, 0..2_000i64), 1..8).prop_map(Op::Group),
        1 => any::<bool>().prop_map(|close| Op::Reopen { close }),
        2 => Just(Op::Sync),
        1 => prop::collection::vec(loss(), 1..6).prop_map(Op::PowerLoss),
        4 => (any::<usize>(), 0..3_000usize, prop::option::of(any::<usize>()), any::<bool>())
            .prop_map(|(at, max_bytes, limit_at, min_one)| Op::Read { at, max_bytes, limit_at, min_one }),
        2 => (0..2_500i64).prop_map(Op::FindByTimestamp),
        1 => any::<usize>().prop_map(|at| Op::Truncate { at }),
    ]
}

struct Stored {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    bytes: Vec<u8>,
}

/// Opens a copy of `dir` without its clean-shutdown marker, so the copy is recovered by a scan.
fn recovered_copy(dir: &Path, config: LogConfig) -> (tempfile::TempDir, Log) {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if name != CLEAN_SHUTDOWN_MARKER {
            std::fs::copy(&path, copy.path().join(name)).expect("copy");
        }
    }
    let log = Log::open(copy.path(), config).expect("open copy");
    (copy, log)
}

/// Batches for (records, value bytes, base timestamp) specs, each filled with the next byte.
fn build(specs: &[(i32, usize, i64)], fill: &mut u8) -> Vec<Batch> {
    specs
        .iter()
        .map(|&(records, value_bytes, base_timestamp)| {
            *fill = fill.wrapping_add(1);
            batch(&BatchSpec {
                records,
                value_bytes,
                base_timestamp,
                fill: *fill,
                ..BatchSpec::default()
            })
        })
        .collect()
}

fn check(config: LogConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Some(Log::open(dir.path(), config.clone()).expect("open"));
    let mut model: Vec<Stored> = Vec::new();
    let mut fill = 0u8;
    for op in ops {
        let l = log.as_mut().expect("log is open");
        let model_end = model.last().map_or(0, |b| b.last_offset + 1);
        match op {
            Op::Append(specs) => {
                let batches = build(&specs, &mut fill);
                let outcome = l.append(&batches, EPOCH, 0).expect("append");
                let mut next = model_end;
                for b in &batches {
                    model.push(Stored {
                        base_offset: next,
                        last_offset: next + i64::from(b.header.last_offset_delta),
                        max_timestamp: b.header.max_timestamp,
                        bytes: patched(&b.bytes, next, EPOCH),
                    });
                    next += i64::from(b.header.records_count);
                }
                prop_assert_eq!(
                    outcome,
                    AppendOutcome::Appended {
                        base_offset: model_end,
                        last_offset: next - 1,
                        log_append_time_ms: -1
                    }
                );
            }
            Op::Group(specs) => {
                let batches = build(&specs, &mut fill);
                let mut offered: Vec<&[_]> = batches.iter().map(std::slice::from_ref).collect();
                let mut next = model_end;
                while !offered.is_empty() {
                    let mut prepared = l.prepare(&offered, EPOCH, 0);
                    let taken = prepared.taken();
                    prop_assert!(taken >= 1);
                    let written = prepared.take_write().expect("new batches").run();
                    let outcomes = l.complete(prepared, written);
                    for (append, outcome) in offered.drain(..taken).zip(outcomes) {
                        let b = &append[0];
                        let last = next + i64::from(b.header.last_offset_delta);
                        prop_assert_eq!(
                            outcome.expect("append"),
                            AppendOutcome::Appended {
                                base_offset: next,
                                last_offset: last,
                                log_append_time_ms: -1
                            }
                        );
                        model.push(Stored {
                            base_offset: next,
                            last_offset: last,
                            max_timestamp: b.header.max_timestamp,
                            bytes: patched(&b.bytes, next, EPOCH),
                        });
                        next = last + 1;
                    }
                }
            }
            Op::Reopen { close } => {
                let l = log.take().expect("log is open");
                let recovery_point = l.recovery_point();
                if close {
                    l.close().expect("close");
                } else {
                    drop(l);
                }
                let recovered = if close {
                    Some(recovered_copy(dir.path(), config.clone()))
                } else {
                    None
                };
                let l =
                    Log::open_with_recovery_point(dir.path(), config.clone(), Some(recovery_point))
                        .expect("reopen");
                prop_assert_eq!(matches!(l.opened(), LogOpened::Clean { .. }), close);
                if let Some((_copy, recovered)) = recovered {
                    prop_assert_eq!(l.active_segment_state(), recovered.active_segment_state());
                }
                log = Some(l);
            }
            Op::Sync => l.sync_now().expect("sync"),
            Op::PowerLoss(losses) => {
                let l = log.take().expect("log is open");
                let recovery_point = l.recovery_point();
                drop(l);
                let layout: Vec<(i64, u64)> = model
                    .iter()
                    .map(|b| (b.base_offset, b.bytes.len() as u64))
                    .collect();
                lose_power(dir.path(), &layout, recovery_point, &losses);
                let l =
                    Log::open_with_recovery_point(dir.path(), config.clone(), Some(recovery_point))
                        .expect("reopen after power loss");
                let log_end_offset = l.log_end_offset();
                prop_assert!(log_end_offset >= recovery_point);
                // The log keeps a prefix of what was appended: the model follows it (the
                // checks below compare every byte).
                model.retain(|b| b.last_offset < log_end_offset);
                log = Some(l);
            }
            Op::Read {
                at,
                max_bytes,
                limit_at,
                min_one,
            } => {
                let offset = if model_end == 0 {
                    0
                } else {
                    (at as i64).rem_euclid(model_end + 1)
                };
                let max_offset = limit_at.map_or(i64::MAX, |x| {
                    if model_end == 0 {
                        0
                    } else {
                        (x as i64).rem_euclid(model_end + 1)
                    }
                });
                let mut expected = Vec::new();
                for b in model.iter().filter(|b| b.last_offset >= offset) {
                    if b.last_offset >= max_offset {
                        break;
                    }
                    if expected.len() + b.bytes.len() > max_bytes
                        && !(min_one && expected.is_empty())
                    {
                        break;
                    }
                    expected.extend_from_slice(&b.bytes);
                }
                let slice = l
                    .read(offset, max_bytes, max_offset, min_one)
                    .expect("read");
                prop_assert_eq!(slice.bytes, expected.len());
                prop_assert_eq!(slice.to_bytes().expect("materialize").to_vec(), expected);
            }
            Op::FindByTimestamp(ts) => {
                let expected = model
                    .iter()
                    .find(|b| b.max_timestamp >= ts)
                    .map(|b| b.bytes.clone());
                let found = l
                    .find_batch_by_timestamp(ts)
                    .expect("find")
                    .map(|b| b.to_vec());
                prop_assert_eq!(found, expected);
            }
            Op::Truncate { at } => {
                if model_end > 0 {
                    let offset = (at as i64).rem_euclid(model_end);
                    l.truncate_to(offset).expect("truncate");
                    model.retain(|b| b.last_offset < offset);
                }
            }
        }
        let l = log.as_ref().expect("log is open");
        prop_assert_eq!(
            l.log_end_offset(),
            model.last().map_or(0, |b| b.last_offset + 1)
        );
        prop_assert_eq!(
            l.size_bytes(),
            model.iter().map(|b| b.bytes.len() as u64).sum::<u64>()
        );
    }
    // Every stored batch is intact, with its rewritten header.
    let l = log.as_ref().expect("log is open");
    let all = l
        .read(0, usize::MAX, i64::MAX, true)
        .expect("read")
        .to_bytes()
        .expect("bytes");
    let mut position = 0;
    for b in &model {
        let header = BatchHeader::parse(&all[position..]).expect("header");
        prop_assert_eq!(header.base_offset, b.base_offset);
        prop_assert_eq!(header.partition_leader_epoch, EPOCH);
        position += header.total_bytes();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        segment_bytes in 200..3_000u64,
        index_interval_bytes in 0..600u32,
        cache_bytes in 0..3_000usize,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let config = LogConfig { segment_bytes, index_interval_bytes, cache_bytes, ..LogConfig::default() };
        check(config, ops)?;
    }
}

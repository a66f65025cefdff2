//! Crash, power-loss and corruption tests of the log as a whole, against a model of what was
//! appended.
//!
//! A power loss keeps what was fsynced and an arbitrary part of the rest. The log's recovery point
//! says what was fsynced: every segment wholly below it (data and indexes), the segment holding it
//! up to its byte position, the producer snapshots up to it. [`lose_power`] keeps exactly that and
//! picks the rest: each later byte range cut anywhere, zero-filled in places, index files torn,
//! later files gone entirely. Reopened with that recovery point, the log must serve every batch
//! below it intact, serve nothing torn (what it serves is a prefix of what was appended, batch for
//! batch), and take appends again.
//!
//! The corruption property goes further: random damage anywhere (flipped bytes, cut files,
//! garbage tails, torn indexes and snapshots) after a clean close or a crash. Opening and reading
//! must then succeed or fail with an error, never panic; and when all the damage lies past the
//! recovery point, every batch before the first damaged byte must still be served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::record::test_util::{batch, patched, BatchSpec};
use crate::record::BatchHeader;
use crate::storage::log::test_util::EPOCH;
use crate::storage::segment::segment_path;
use crate::storage::{AppendOutcome, Log, LogConfig, LogOpened};

/// A batch as appended: its offsets and its stored bytes.
#[derive(Debug, Clone)]
struct Stored {
    base_offset: i64,
    last_offset: i64,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    /// One append of batches of (records, value bytes).
    Append(Vec<(i32, usize)>),
    /// Run the pending sync job (as the broker does beside the appends).
    Sync,
    /// flush.messages or flush.ms asks for everything, then the job runs.
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((1..5i32, 0..300usize), 1..4).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => Just(Op::Flush),
    ]
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 150,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

/// Runs `ops` on a fresh log in `dir`; returns the log and the model of what it holds.
fn build(dir: &Path, config: LogConfig, ops: &[Op]) -> (Log, Vec<Stored>) {
    let mut log = Log::open(dir, config).expect("open");
    let mut model: Vec<Stored> = Vec::new();
    let mut fill = 0u8;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Append(specs) => {
                let batches: Vec<_> = specs
                    .iter()
                    .map(|&(records, value_bytes)| {
                        fill = fill.wrapping_add(1);
                        batch(&BatchSpec {
                            records,
                            value_bytes,
                            base_timestamp: 1_000 + i as i64,
                            fill,
                            ..BatchSpec::default()
                        })
                    })
                    .collect();
                let outcome = log.append(&batches, EPOCH, 0).expect("append");
                let AppendOutcome::Appended { base_offset, .. } = outcome else {
                    panic!("unexpected {outcome:?}");
                };
                let mut next = base_offset;
                for b in &batches {
                    let last = next + i64::from(b.header.last_offset_delta);
                    model.push(Stored {
                        base_offset: next,
                        last_offset: last,
                        bytes: patched(&b.bytes, next, EPOCH),
                    });
                    next = last + 1;
                }
            }
            Op::Sync => log.sync_now().expect("sync"),
            Op::Flush => {
                log.flush(0);
                log.sync_now().expect("sync");
            }
        }
    }
    (log, model)
}

/// Where each segment starts and how large it is, from the files (base offset, length).
fn segment_files(dir: &Path) -> Vec<(i64, u64)> {
    let mut segments: Vec<(i64, u64)> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let base = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((base, std::fs::metadata(&path).expect("meta").len()))
        })
        .collect();
    segments.sort_unstable();
    segments
}

/// Each appended batch's base offset and stored length, in order: what a power loss needs to
/// know of a model.
pub(crate) type Layout = [(i64, u64)];

fn layout(model: &[Stored]) -> Vec<(i64, u64)> {
    model
        .iter()
        .map(|b| (b.base_offset, b.bytes.len() as u64))
        .collect()
}

/// Byte position of `offset` in the segment holding it (batches are contiguous).
fn position_of(layout: &Layout, segment_base: i64, offset: i64) -> u64 {
    layout
        .iter()
        .filter(|(base, _)| *base >= segment_base && *base < offset)
        .map(|(_, len)| len)
        .sum()
}

/// The durable part of the log: the segment holding the recovery point, and its position there.
fn durable_boundary(dir: &Path, layout: &Layout, recovery_point: i64) -> (i64, u64) {
    let segments = segment_files(dir);
    let (base, _) = *segments
        .iter()
        .rev()
        .find(|(base, _)| *base <= recovery_point)
        .unwrap_or(&segments[0]);
    (base, position_of(layout, base, recovery_point))
}

/// How a power loss treats one non-durable byte range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loss {
    /// Keep this fraction (per mille) of the non-durable bytes.
    pub(crate) keep_per_mille: u16,
    /// Zero-fill this many bytes just before the cut (blocks written out of order).
    pub(crate) zero_bytes: u16,
    /// The file vanishes altogether (its creation was never made durable).
    pub(crate) vanish: bool,
}

pub(crate) fn loss() -> impl Strategy<Value = Loss> {
    // Nothing kept, everything kept (the loss fell elsewhere) or anything between.
    let keep = prop_oneof![1 => Just(0u16), 1 => Just(1000u16), 2 => 0..=1000u16];
    (
        keep,
        prop_oneof![3 => Just(0u16), 1 => 1..200u16],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(keep_per_mille, zero_bytes, vanish)| Loss {
            keep_per_mille,
            zero_bytes,
            vanish,
        })
}

/// Cuts `path` somewhere past its first `durable` bytes. `may_vanish`: its creation may not be
/// durable either.
fn cut_file(path: &Path, durable: u64, may_vanish: bool, loss: Loss) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let len = meta.len();
    if may_vanish && loss.vanish {
        std::fs::remove_file(path).expect("remove");
        return;
    }
    if len <= durable {
        return;
    }
    let keep = durable + (len - durable) * u64::from(loss.keep_per_mille) / 1000;
    let mut bytes = std::fs::read(path).expect("read");
    bytes.truncate(keep as usize);
    let zero_from = keep.saturating_sub(u64::from(loss.zero_bytes)).max(durable) as usize;
    bytes[zero_from..].fill(0);
    std::fs::write(path, &bytes).expect("write");
}

/// Simulates a power loss after a crash: keeps what `recovery_point` says is durable, and for
/// every other byte range picks what survives from `losses` (used round robin).
pub(crate) fn lose_power(dir: &Path, layout: &Layout, recovery_point: i64, losses: &[Loss]) {
    let (durable_base, durable_position) = durable_boundary(dir, layout, recovery_point);
    let mut losses = losses.iter().copied().cycle();
    for (base, _) in segment_files(dir) {
        if base < durable_base {
            continue;
        }
        // The segment holding the recovery point was created before the recovery point reached
        // it (a roll's sync job fsyncs the directory), so only later segments may vanish.
        let (durable, may_vanish) = if base == durable_base {
            (durable_position, false)
        } else {
            (0, true)
        };
        let loss = losses.next().expect("losses");
        cut_file(&segment_path(dir, base, "log"), durable, may_vanish, loss);
        for extension in ["index", "timeindex"] {
            let path = segment_path(dir, base, extension);
            let loss = losses.next().expect("losses");
            // An index above the recovery point is rebuilt, so anything may be left of it;
            // tear it mid-entry too.
            cut_file(&path, 0, may_vanish, loss);
            if loss.zero_bytes % 3 == 1 {
                if let Ok(mut bytes) = std::fs::read(&path) {
                    bytes.extend_from_slice(&[0xff; 3]);
                    std::fs::write(&path, bytes).expect("write");
                }
            }
        }
    }
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let snapshot_offset = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".snapshot"))
            .and_then(|n| n.parse::<i64>().ok());
        // Written atomically: present whole or not at all.
        if snapshot_offset.is_some_and(|o| o > recovery_point) && losses.next().expect("l").vanish {
            std::fs::remove_file(&path).expect("remove");
        }
    }
}

/// Everything the log serves, split into batches.
fn served(log: &Log) -> Vec<Vec<u8>> {
    let all = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .expect("read")
        .to_bytes()
        .expect("bytes");
    let mut batches = Vec::new();
    let mut at = 0;
    while at < all.len() {
        let header = BatchHeader::parse(&all[at..]).expect("header");
        batches.push(all[at..at + header.total_bytes()].to_vec());
        at += header.total_bytes();
    }
    batches
}

/// The log serves a prefix of `model`, batch for batch, that covers every batch below
/// `at_least`, and it takes appends again at its end.
fn check_prefix_served(
    log: &mut Log,
    model: &[Stored],
    at_least: i64,
) -> Result<(), TestCaseError> {
    let served = served(log);
    prop_assert!(served.len() <= model.len());
    for (i, bytes) in served.iter().enumerate() {
        prop_assert!(
            bytes == &model[i].bytes,
            "batch {} differs from what was appended",
            i
        );
    }
    let below = model.iter().filter(|b| b.last_offset < at_least).count();
    prop_assert!(
        served.len() >= below,
        "{} batches served, {} were below offset {}",
        served.len(),
        below,
        at_least
    );
    let leo = log.log_end_offset();
    prop_assert_eq!(
        leo,
        served
            .len()
            .checked_sub(1)
            .map_or(0, |i| model[i].last_offset + 1)
    );
    let more = batch(&BatchSpec::default());
    let outcome = log
        .append(std::slice::from_ref(&more), EPOCH, 0)
        .expect("append");
    let appended_at =
        matches!(outcome, AppendOutcome::Appended { base_offset, .. } if base_offset == leo);
    prop_assert!(
        appended_at,
        "the next append goes to the log end {}: {:?}",
        leo,
        outcome
    );
    Ok(())
}

fn power_loss_case(
    segment_bytes: u64,
    ops: Vec<Op>,
    losses: Vec<Loss>,
    forget_checkpoint: bool,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = build(dir.path(), config(segment_bytes), &ops);
    let recovery_point = log.recovery_point();
    drop(log); // the crash
    lose_power(dir.path(), &layout(&model), recovery_point, &losses);
    // The checkpoint may lag behind the log's recovery point, or be missing: both only mean
    // recovering more.
    let checkpoint = if forget_checkpoint {
        None
    } else {
        Some(recovery_point)
    };
    let mut log = Log::open_with_recovery_point(dir.path(), config(segment_bytes), checkpoint)
        .expect("open after power loss");
    prop_assert!(log.log_end_offset() >= recovery_point);
    check_prefix_served(&mut log, &model, recovery_point)?;
    // And once more after a plain crash of the recovered log.
    drop(log);
    let log = Log::open_with_recovery_point(dir.path(), config(segment_bytes), checkpoint)
        .expect("reopen");
    prop_assert!(log.log_end_offset() >= recovery_point);
    Ok(())
}

/// A torn file at each place a power loss can tear, in one readable scenario.
#[test]
fn power_loss_keeps_what_was_fsynced_and_serves_nothing_torn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appends = |n: usize| Op::Append(vec![(2, 100 + n); 2]);
    let mut ops: Vec<Op> = (0..12).map(appends).collect();
    ops.push(Op::Sync); // the segments rolled so far are durable
    ops.extend((12..20).map(appends));
    let (log, model) = build(dir.path(), config(1_500), &ops);
    let recovery_point = log.recovery_point();
    assert!(recovery_point > 0 && recovery_point < log.log_end_offset());
    let segments = log.segment_count();
    drop(log);
    // Keep a third of what was not synced, zero-fill its last 50 bytes, tear every index.
    let losses = [Loss {
        keep_per_mille: 333,
        zero_bytes: 50,
        vanish: false,
    }];
    lose_power(dir.path(), &layout(&model), recovery_point, &losses);
    let mut log = Log::open_with_recovery_point(dir.path(), config(1_500), Some(recovery_point))
        .expect("open");
    let LogOpened::Recovered {
        segments: recovered,
        truncated_bytes,
        ..
    } = log.opened()
    else {
        panic!("expected recovery, got {:?}", log.opened());
    };
    assert!(truncated_bytes > 0);
    assert!(
        recovered < segments,
        "segments below the recovery point are trusted ({recovered} of {segments} recovered)"
    );
    assert!(
        log.segment_count() < segments,
        "segments after the tear are gone"
    );
    check_prefix_served(&mut log, &model, recovery_point).expect("prefix");
}

/// The damage [`corrupt`] does to one file.
#[derive(Debug, Clone)]
enum Damage {
    Flip {
        at: u32,
        xor: u8,
    },
    /// A byte of a batch header (baseOffset, batchLength, lastOffsetDelta, ...: the fields
    /// everything computes with), in a segment file; elsewhere like `Flip`.
    FlipHeader {
        batch: u32,
        at: u8,
        xor: u8,
    },
    Cut {
        keep_per_mille: u16,
    },
    Extend {
        garbage: Vec<u8>,
    },
    /// An index's last entry torn: a few bytes off its end.
    Tear {
        bytes: u8,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<u32>(), 1..=255u8).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        // baseOffset (outside the CRC) as often as all the other header fields together.
        3 => (any::<u32>(), prop_oneof![0..8u8, 8..61u8], 1..=255u8)
            .prop_map(|(batch, at, xor)| Damage::FlipHeader { batch, at, xor }),
        2 => (0..1000u16).prop_map(|keep_per_mille| Damage::Cut { keep_per_mille }),
        2 => prop::collection::vec(any::<u8>(), 1..300).prop_map(|garbage| Damage::Extend { garbage }),
        1 => Just(Damage::Extend {
            // A header claiming i32::MAX bytes.
            garbage: [&[0u8; 8][..], &i32::MAX.to_be_bytes(), &[2u8; 60]].concat(),
        }),
        1 => (1..8u8).prop_map(|bytes| Damage::Tear { bytes }),
    ]
}

/// Applies `damage` to `path`; returns the first damaged byte position (the old length for an
/// extension), or `None` if the file was too short to change.
fn corrupt(path: &Path, damage: &Damage) -> Option<u64> {
    let mut bytes = std::fs::read(path).expect("read");
    let len = bytes.len() as u64;
    let first = match damage {
        Damage::Flip { at, xor } => {
            if bytes.is_empty() {
                return None;
            }
            let at = *at as usize % bytes.len();
            bytes[at] ^= xor;
            at as u64
        }
        Damage::FlipHeader { batch, at, xor } => {
            // Batch boundaries, from the lengths in the (still valid) headers.
            let mut starts = Vec::new();
            let mut position = 0usize;
            while position + 61 <= bytes.len() {
                starts.push(position);
                let length =
                    i32::from_be_bytes(bytes[position + 8..position + 12].try_into().ok()?);
                position += 12 + usize::try_from(length).ok()?;
            }
            let is_log = path.extension().is_some_and(|e| e == "log");
            if bytes.is_empty() || starts.is_empty() || !is_log {
                return corrupt(
                    path,
                    &Damage::Flip {
                        at: *batch,
                        xor: *xor,
                    },
                );
            }
            let at = starts[*batch as usize % starts.len()] + usize::from(*at);
            bytes[at] ^= xor;
            at as u64
        }
        Damage::Cut { keep_per_mille } => {
            let keep = len * u64::from(*keep_per_mille) / 1000;
            bytes.truncate(keep as usize);
            if keep == len {
                return None;
            }
            keep
        }
        Damage::Extend { garbage } => {
            bytes.extend_from_slice(garbage);
            len
        }
        Damage::Tear { bytes: n } => {
            let keep = len.saturating_sub(u64::from(*n));
            if keep == len {
                return None;
            }
            bytes.truncate(keep as usize);
            keep
        }
    };
    std::fs::write(path, &bytes).expect("write");
    Some(first)
}

/// How many batches of `model`, from the first, lie wholly before the first damaged byte of the
/// segment holding them (`segments`: base offset and length of each segment file before the
/// damage; `first_damage`: base offset -> first damaged byte of that segment's data).
fn intact_batches(
    model: &[Stored],
    segments: &[(i64, u64)],
    first_damage: &BTreeMap<i64, u64>,
) -> usize {
    let mut position_in_segment = 0u64;
    let mut segment = None;
    for (i, b) in model.iter().enumerate() {
        let base = segments
            .iter()
            .rev()
            .find(|(base, _)| *base <= b.base_offset)
            .map_or(0, |(base, _)| *base);
        if segment != Some(base) {
            segment = Some(base);
            position_in_segment = 0;
        }
        position_in_segment += b.bytes.len() as u64;
        if first_damage
            .get(&base)
            .is_some_and(|&at| at < position_in_segment)
        {
            return i;
        }
    }
    model.len()
}

/// Opens, reads everything every way, appends, closes and reopens: any of it may fail with an
/// error, none of it may panic.
fn exercise(dir: &Path, config: LogConfig, checkpoint: Option<i64>, model_end: i64) {
    let Ok(mut log) = Log::open_with_recovery_point(dir, config.clone(), checkpoint) else {
        return;
    };
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    // Bounded whatever the damage made of the offsets: the model's range, then a few beyond.
    let offsets = (start..=end.min(start + model_end + 1)).chain([end, end + 1, model_end + 5]);
    for offset in offsets {
        if let Ok(slice) = log.read(offset, 1 + (offset as usize * 37) % 2_000, i64::MAX, true) {
            let _ = slice.to_bytes();
        }
    }
    for timestamp in [-1, 0, 1_000, 1_010, 1_050, i64::MAX] {
        let _ = log.find_batch_by_timestamp(timestamp);
    }
    let _ = log.batch_header_at(start);
    let _ = log.append(&[batch(&BatchSpec::default())], EPOCH, 0);
    let _ = log.sync_now();
    if log.close().is_ok() {
        let _ = Log::open_with_recovery_point(dir, config, None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_serves_everything_below_the_recovery_point(
        segment_bytes in 300..2_500u64,
        ops in prop::collection::vec(op(), 1..40),
        losses in prop::collection::vec(loss(), 1..8),
        forget_checkpoint in prop::bool::weighted(0.2),
    ) {
        power_loss_case(segment_bytes, ops, losses, forget_checkpoint)?;
    }

    #[test]
    fn damaged_files_never_make_open_or_read_panic(
        segment_bytes in 300..2_500u64,
        ops in prop::collection::vec(op(), 1..30),
        close in any::<bool>(),
        damages in prop::collection::vec((any::<prop::sample::Index>(), damage()), 1..5),
        past_recovery_point_only in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(segment_bytes);
        let (log, model) = build(dir.path(), config.clone(), &ops);
        let recovery_point = if close { log.log_end_offset() } else { log.recovery_point() };
        let model_end = log.log_end_offset();
        if close {
            log.close().expect("close");
        } else {
            drop(log);
        }
        let (durable_base, durable_position) =
            durable_boundary(dir.path(), &layout(&model), recovery_point);
        let segments_before = segment_files(dir.path());
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        // Where each segment's data is first damaged: (base offset, byte position).
        let mut first_damage: BTreeMap<i64, u64> = BTreeMap::new();
        let mut damaged_before_recovery_point = false;
        for (pick, damage) in &damages {
            let path = pick.get(&files);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let base = name.split('.').next().and_then(|b| b.parse::<i64>().ok());
            let is_log = name.ends_with(".log");
            let is_index = name.ends_with(".index") || name.ends_with(".timeindex");
            let past = match base {
                Some(base) if is_log => base > durable_base,
                Some(base) if is_index => base >= durable_base,
                _ => false,
            };
            if past_recovery_point_only && !(past || (is_log && base == Some(durable_base))) {
                continue;
            }
            let Some(at) = corrupt(path, damage) else { continue };
            if is_log {
                let base = base.expect("a segment name");
                if base == durable_base && at < durable_position {
                    damaged_before_recovery_point = true;
                }
                let entry = first_damage.entry(base).or_insert(at);
                *entry = (*entry).min(at);
            } else if !past {
                damaged_before_recovery_point = true;
            }
        }
        if past_recovery_point_only && !damaged_before_recovery_point && !close {
            // Every batch before the first damaged byte is still served, and nothing torn.
            let intact = intact_batches(&model, &segments_before, &first_damage);
            let mut log = Log::open_with_recovery_point(dir.path(), config.clone(), Some(recovery_point))
                .expect("damage past the recovery point must not stop the open");
            let served = served(&log);
            prop_assert!(served.len() >= intact, "{} served, {} intact", served.len(), intact);
            for (i, bytes) in served.iter().take(intact).enumerate() {
                prop_assert!(bytes == &model[i].bytes, "batch {} before the damage differs", i);
            }
            // Whatever is served after the damage is whole: CRC intact, offsets contiguous.
            let mut next = log.log_start_offset();
            for bytes in &served {
                let header = BatchHeader::parse(bytes).expect("header");
                prop_assert!(crate::record::batch::crc_matches(&header, bytes).is_ok(), "torn batch served");
                prop_assert_eq!(header.base_offset, next, "offsets served out of place");
                next = header.last_offset() + 1;
            }
            prop_assert_eq!(next, log.log_end_offset());
            let _ = log.append(&[batch(&BatchSpec::default())], EPOCH, 0);
            drop(log);
        }
        exercise(dir.path(), config, Some(recovery_point), model_end);
    }
}

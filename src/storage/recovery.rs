//! Loading a partition directory at open, as Kafka's `LogLoader`: find the segments, trust those
//! whose data is known to be durable, recover the rest, and rebuild producer state.
//!
//! Runs on a blocking thread of the partition's owning shard when the partition is opened.
//!
//! What is trusted depends on how the broker stopped:
//! - After a clean shutdown ([`Log::close`] leaves a `.clean-shutdown` marker once everything is
//!   durable) nothing is recovered: every segment's indexes are trusted, and of the active
//!   segment only the few batches after its last index entry are read. As in Kafka, bytes damaged
//!   on disk while the broker was down are not looked for; clients that check CRCs find them.
//! - After a crash or a power loss, the segments below the partition's recovery point (from the
//!   log directory's `recovery-point-offset-checkpoint`: everything below it was fsynced) are
//!   trusted, and every segment from the one containing the recovery point on is recovered:
//!   each batch's framing, offsets and CRC checked, indexes rebuilt. The first invalid batch and
//!   everything after it, in its segment and in every later one, is deleted, so the log never
//!   has a hole. No recovery point (a partition missing from the checkpoint, or a log written
//!   before skein kept one) means recovering every segment, as Kafka does.
//!
//! Either way a segment whose files fail the trusted open's checks (an index missing, torn or
//! pointing where no batch is, an end that does not meet the next segment's base) is recovered
//! instead, and if that cuts it, everything after it goes too.
//!
//! [`Log::close`]: crate::storage::Log::close

use std::fs;
use std::io;
use std::path::Path;

use crate::storage::atomic_file::{sync_dir, write_atomically, TMP_SUFFIX};
use crate::storage::error::{io_error, StorageError};
use crate::storage::log::LogOpened;
use crate::storage::producer_state::{list_snapshots, snapshot_path, ProducerStateManager};
use crate::storage::scanner::{ScanStep, RECOVERY_WINDOW_BYTES};
use crate::storage::segment::{segment_path, Segment, MAX_BASE_OFFSET};

/// Name of the marker [`write_clean_shutdown_marker`] leaves in a partition directory. It starts
/// with a dot so that nothing listing segments or snapshots mistakes it for one.
pub(crate) const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// Records that everything in `dir` is durable and consistent. Call only after the final flush:
/// the marker is what lets the next open skip recovery.
pub(crate) fn write_clean_shutdown_marker(dir: &Path) -> Result<(), StorageError> {
    write_atomically(&dir.join(CLEAN_SHUTDOWN_MARKER), b"")
}

/// Removes the marker if present and says whether it was. The removal is made durable before
/// the log serves anything: from then on the files may change, and a crash must not leave a
/// marker vouching for them.
pub(crate) fn take_clean_shutdown_marker(dir: &Path) -> Result<bool, StorageError> {
    let path = dir.join(CLEAN_SHUTDOWN_MARKER);
    match fs::remove_file(&path) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Base offsets of the `.log` files in `dir`, ascending. Removes leftover temporary files of
/// interrupted atomic writes. A segment name whose offset is negative or absurdly large is an
/// error naming the file: no arithmetic may be done with it.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            // An atomic write that did not finish; the previous file is still in place.
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        } else if let Some(stem) = name.strip_suffix(".log") {
            let Ok(base) = stem.parse::<i64>() else {
                continue;
            };
            if !(0..=MAX_BASE_OFFSET).contains(&base) {
                return Err(StorageError::Corrupt {
                    path: entry.path(),
                    position: 0,
                    reason: format!("segment base offset {base} is out of range"),
                });
            }
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The segments of a loaded directory and how they were brought up.
pub(crate) struct LoadedSegments {
    pub(crate) segments: Vec<Segment>,
    pub(crate) opened: LogOpened,
    /// Everything below it is durable: the log's recovery point from now on.
    pub(crate) recovery_point: i64,
    /// Files were created or deleted: the directory needs an fsync.
    pub(crate) dir_changed: bool,
}

/// Opens every segment of `dir` (see the module doc). `recovery_point` is the partition's entry
/// in the checkpoint, if it has one; it only matters after an unclean stop.
pub(crate) fn load_segments(
    dir: &Path,
    index_interval_bytes: u32,
    clean_shutdown: bool,
    recovery_point: Option<i64>,
) -> Result<LoadedSegments, StorageError> {
    let bases = list_segments(dir)?;
    if bases.is_empty() {
        return Ok(LoadedSegments {
            segments: vec![Segment::create(dir, 0)?],
            opened: LogOpened::Created,
            recovery_point: 0,
            dir_changed: true,
        });
    }
    let recover_from = if clean_shutdown {
        bases.len()
    } else {
        // The segment containing the recovery point; before the first segment (or unknown)
        // means every segment.
        let point = recovery_point.unwrap_or(0);
        bases
            .partition_point(|&base| base <= point)
            .saturating_sub(1)
    };
    let loaded = open_segments(dir, &bases, index_interval_bytes, recover_from)?;
    let log_end_offset = loaded.log_end_offset();
    let stale = !clean_shutdown
        && recover_from > 0
        && recovery_point.is_some_and(|point| point > log_end_offset);
    let loaded = if stale {
        // Everything below a recovery point is durable, so the log cannot end before it: the
        // checkpoint describes an older log of this name (truncated or deleted and created
        // again since it was written). Trust nothing it says.
        tracing::warn!(
            dir = %dir.display(),
            recovery_point = recovery_point.unwrap_or(0),
            log_end_offset,
            "the recovery point is past the log end: recovering every segment"
        );
        drop(loaded);
        open_segments(dir, &list_segments(dir)?, index_interval_bytes, 0)?
    } else {
        loaded
    };
    let log_end_offset = loaded.log_end_offset();
    // Recovery read the data but made nothing durable, and rebuilt indexes that are not on
    // disk yet: the recovery point stays at the first segment recovered (at or below the old
    // one), so a crash before the next flush recovers the same segments again. (Kafka keeps
    // min(checkpoint, log end), which after its per-segment recovery amounts to the same.)
    let recovery_point = match loaded.first_recovered_base {
        None => log_end_offset,
        Some(base) => base.min(log_end_offset),
    };
    let opened = if loaded.recovered == 0 {
        let active = loaded.segments.last().expect("at least one segment");
        let (_, last_indexed_position) = active.offset_index.lookup(i64::MAX);
        LogOpened::Clean {
            tail_bytes: active.size_bytes - u64::from(last_indexed_position),
        }
    } else {
        LogOpened::Recovered {
            segments: loaded.recovered,
            scanned_bytes: loaded.scanned_bytes,
            truncated_bytes: loaded.truncated_bytes,
        }
    };
    Ok(LoadedSegments {
        segments: loaded.segments,
        opened,
        recovery_point,
        dir_changed: loaded.deleted > 0,
    })
}

struct Opened {
    segments: Vec<Segment>,
    recovered: usize,
    first_recovered_base: Option<i64>,
    scanned_bytes: u64,
    truncated_bytes: u64,
    deleted: usize,
}

impl Opened {
    fn log_end_offset(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }
}

/// Opens the segments at `bases`, trusting those before index `recover_from` (the last one
/// through the clean-shutdown path) and recovering the rest.
fn open_segments(
    dir: &Path,
    bases: &[i64],
    index_interval_bytes: u32,
    recover_from: usize,
) -> Result<Opened, StorageError> {
    let mut opened = Opened {
        segments: Vec::with_capacity(bases.len()),
        recovered: 0,
        first_recovered_base: None,
        scanned_bytes: 0,
        truncated_bytes: 0,
        deleted: 0,
    };
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let limit_offset = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        if i < recover_from {
            let trusted = if last {
                Segment::open_active_trusted(dir, base)?
            } else {
                Segment::open_trusted(dir, base, limit_offset)?.and_then(|segment| {
                    if segment.next_offset == limit_offset {
                        Ok(segment)
                    } else {
                        Err(format!(
                            "it ends at offset {} but the next segment starts at {limit_offset}",
                            segment.next_offset
                        ))
                    }
                })
            };
            match trusted {
                Ok(segment) => {
                    opened.segments.push(segment);
                    continue;
                }
                Err(reason) => tracing::warn!(
                    segment = %segment_path(dir, base, "log").display(),
                    reason = %reason,
                    "the segment's files disagree: recovering it"
                ),
            }
        }
        // A rolled segment below the recovery point whose files disagree gets its indexes
        // rebuilt, but is never cut, nor anything after it deleted: its data and everything
        // after it were durable, so what does not match there is reported and left on disk
        // (see `Segment::recover`), not repaired by throwing newer data away. The last segment
        // may still lose a damaged tail: nothing comes after it.
        let durable = i < recover_from && !last;
        let (mut segment, truncation) =
            Segment::recover(dir, base, index_interval_bytes, limit_offset, !durable)?;
        if durable && segment.next_offset != limit_offset {
            return Err(StorageError::Corrupt {
                path: segment_path(dir, base, "log"),
                position: segment.size_bytes,
                reason: format!(
                    "ends at offset {} but the next segment starts at {limit_offset}, below the \
                     recovery point: left on disk, the partition is not opened",
                    segment.next_offset
                ),
            });
        }
        opened.recovered += 1;
        opened.first_recovered_base.get_or_insert(base);
        opened.scanned_bytes += segment.size_bytes;
        // Rolled segments always end where the next one starts; ending earlier means the data
        // in between was lost (a power loss before it was fsynced). A rolled segment that still
        // reaches the next one lost nothing, whatever junk was cut after its last batch.
        let lost_end = !last && segment.next_offset != limit_offset;
        let cut = if last { truncation.is_some() } else { lost_end };
        if let Some(truncation) = &truncation {
            opened.truncated_bytes += truncation.truncated_bytes;
        }
        if !last && !cut {
            segment.seal(segment.modified_ms);
        }
        opened.segments.push(segment);
        if cut {
            // As Kafka's LogLoader: nothing after the first lost batch is kept, so the log has
            // no hole and nothing after a torn batch is ever served.
            for &later in &bases[i + 1..] {
                tracing::warn!(
                    segment = %segment_path(dir, later, "log").display(),
                    "deleting a segment after the truncated one"
                );
                for extension in ["log", "index", "timeindex"] {
                    let path = segment_path(dir, later, extension);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error(&path, e)),
                    }
                }
                opened.deleted += 1;
            }
            break;
        }
    }
    Ok(opened)
}

/// Rebuilds producer state: the newest readable snapshot at or below the log end offset, then a
/// replay of every batch header from its offset on. Snapshots beyond the log end (left by a
/// truncation) are deleted, since they describe batches that no longer exist. Returns the state
/// and the offsets of the snapshot files kept.
pub(crate) fn restore_producer_state(
    dir: &Path,
    segments: &[Segment],
) -> Result<(ProducerStateManager, Vec<i64>), StorageError> {
    let log_start_offset = segments.first().map_or(0, |s| s.base_offset);
    let log_end_offset = segments.last().map_or(0, |s| s.next_offset);
    let mut state = ProducerStateManager::new();
    let mut replay_from = log_start_offset;
    let mut snapshots = list_snapshots(dir)?;
    for offset in snapshots.iter().rev().filter(|&&o| o > log_end_offset) {
        let path = snapshot_path(dir, *offset);
        fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
    }
    snapshots.retain(|&o| o <= log_end_offset);
    for &offset in snapshots.iter().rev() {
        let path = snapshot_path(dir, offset);
        match ProducerStateManager::read_snapshot(&path) {
            Ok((archived, _)) if archived != offset => tracing::warn!(
                snapshot = %path.display(),
                "skipping a producer snapshot that says it is for offset {archived}"
            ),
            Ok((_, loaded)) => {
                state = loaded;
                replay_from = offset;
                break;
            }
            Err(e) => tracing::warn!(error = %e, "skipping unreadable producer snapshot"),
        }
    }
    for segment in segments.iter().filter(|s| s.next_offset > replay_from) {
        let (start, first) = match segment.find_batch(replay_from.max(segment.base_offset))? {
            Some((position, header)) => (position, header.base_offset),
            None => continue,
        };
        let mut scanner = segment.scanner(start, first, RECOVERY_WINDOW_BYTES);
        loop {
            match scanner.next_step()? {
                ScanStep::Batch { header, .. } => {
                    if header.base_offset >= replay_from {
                        state.replay(&header);
                    }
                }
                ScanStep::End => break,
                ScanStep::Invalid { position, reason } => {
                    return Err(StorageError::Corrupt {
                        path: segment.log_path.clone(),
                        position,
                        reason,
                    })
                }
            }
        }
    }
    Ok((state, snapshots))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::record::test_util::{batch, patched};
    use crate::storage::log::test_util::*;
    use crate::storage::log::{Log, LogConfig, LogOpened};
    use crate::storage::time_index::TimeIndex;

    #[test]
    fn garbage_tail_is_truncated_and_acknowledged_data_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 12);
        let leo = log.log_end_offset();
        let active = log.active().log_path.clone();
        let size = log.size_bytes();
        drop(log);
        let mut bytes = std::fs::read(&active).expect("read");
        bytes.extend_from_slice(&[0xab; 100]);
        std::fs::write(&active, &bytes).expect("write");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.size_bytes(), size);
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
    }

    #[test]
    fn half_written_and_corrupt_tail_batches_are_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 5);
        let active = log.active().log_path.clone();
        let leo = log.log_end_offset();
        drop(log);
        // A sixth batch, written only half-way.
        let torn = patched(&batch(&spec(5)).bytes, leo, EPOCH);
        let mut file = std::fs::read(&active).expect("read");
        let good_len = file.len();
        file.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&active, &file).expect("write");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(
            std::fs::metadata(&active).expect("meta").len() as usize,
            good_len
        );
        // Appends continue at the right offset after recovery.
        let more = fill(&mut log, 1);
        assert_eq!(more[0].0, leo);
        drop(log);

        // A whole last batch whose body was flipped: CRC catches it.
        let mut file = std::fs::read(&active).expect("read");
        let last = file.len() - 3;
        file[last] ^= 0x55;
        std::fs::write(&active, &file).expect("write");
        let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
    }

    #[test]
    fn implausible_base_offset_outside_crc_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 4);
        let active = log.active().log_path.clone();
        drop(log);
        // baseOffset is not covered by the CRC: recovery must still refuse a batch whose
        // offset jumps past what a segment can index.
        let mut file = std::fs::read(&active).expect("read");
        let last_start = file.len() - stored[3].1.len();
        file[last_start..last_start + 8].copy_from_slice(&(1i64 << 40).to_be_bytes());
        std::fs::write(&active, &file).expect("write");
        let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.log_end_offset(), stored[3].0);
        assert_eq!(read_all(&log, 0), expected_from(&stored[..3], 0));
    }

    /// Recovers after a crash from `recovery_point`, returning how many segments it recovered.
    fn recovered_segments(log: &Log) -> usize {
        match log.opened() {
            LogOpened::Recovered { segments, .. } => segments,
            other => panic!("expected recovery, got {other:?}"),
        }
    }

    #[test]
    fn recovery_starts_at_the_segment_holding_the_recovery_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let mut stored = fill(&mut log, 30);
        log.sync_now().expect("sync");
        let recovery_point = log.recovery_point();
        assert_eq!(
            recovery_point,
            log.active().base_offset,
            "the rolls are durable"
        );
        stored.extend(fill(&mut log, 12));
        let total = log.segment_count();
        let from = log
            .segments()
            .iter()
            .position(|s| s.base_offset == recovery_point)
            .expect("the segment holding the recovery point");
        drop(log);
        let log = Log::open_with_recovery_point(dir.path(), small_config(), Some(recovery_point))
            .expect("reopen");
        assert_eq!(recovered_segments(&log), total - from);
        assert!(
            log.segments()[..from]
                .iter()
                .all(|s| s.offset_index.is_mapped() || s.offset_index.len() == 0),
            "segments below the recovery point are trusted as they are"
        );
        assert_eq!(log.recovery_point(), recovery_point);
        assert_reads(&log, &stored);
        // Without a checkpoint entry (a log from before skein kept one) everything is recovered.
        drop(log);
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(recovered_segments(&log), total);
        assert_eq!(log.recovery_point(), 0);
        // A recovery point past the log end is stale (a log deleted and created again since):
        // nothing it says is trusted.
        let end = log.log_end_offset();
        drop(log);
        let log = Log::open_with_recovery_point(dir.path(), small_config(), Some(end + 100))
            .expect("reopen");
        assert_eq!(recovered_segments(&log), total);
        assert_reads(&log, &stored);
    }

    #[test]
    fn torn_index_tails_below_the_recovery_point_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 40);
        log.sync_now().expect("sync");
        let recovery_point = log.recovery_point();
        let segments: Vec<(PathBuf, PathBuf)> = log.segments()[..3]
            .iter()
            .map(|s| {
                (
                    s.offset_index.path().to_path_buf(),
                    s.time_index.path().to_path_buf(),
                )
            })
            .collect();
        drop(log);
        let append = |path: &Path, bytes: &[u8]| {
            let mut all = std::fs::read(path).expect("read");
            all.extend_from_slice(bytes);
            std::fs::write(path, all).expect("write");
        };
        // Half an entry more; a last entry zero-filled (written out of order, then lost); a time
        // index entry pointing past the segment.
        append(&segments[0].0, &[7; 4]);
        append(&segments[1].0, &[0; 8]);
        let mut past = Vec::new();
        past.extend_from_slice(&i64::MAX.to_le_bytes());
        past.extend_from_slice(&1_000u32.to_le_bytes());
        past.extend_from_slice(&[0; 4]);
        append(&segments[2].1, &past);
        let log = Log::open_with_recovery_point(dir.path(), small_config(), Some(recovery_point))
            .expect("reopen");
        // The three damaged segments, and the one holding the recovery point.
        assert_eq!(recovered_segments(&log), 4);
        assert_reads(&log, &stored);
    }

    #[test]
    fn junk_after_a_rolled_segment_is_cut_without_losing_the_segments_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        let leo = log.log_end_offset();
        let first = log.segments()[0].log_path.clone();
        let size = log.segments()[0].size_bytes;
        drop(log);
        let mut bytes = std::fs::read(&first).expect("read");
        bytes.extend_from_slice(&[0xab; 100]);
        std::fs::write(&first, bytes).expect("write");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(std::fs::metadata(&first).expect("meta").len(), size);
        assert_reads(&log, &stored);
    }

    #[test]
    fn a_torn_segment_ends_the_log_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        let second = log.segments()[1].log_path.clone();
        let second_base = log.segments()[1].base_offset;
        let count = log.segment_count();
        drop(log);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&second)
            .expect("open");
        let len = file.metadata().expect("meta").len();
        file.set_len(len - 10).expect("cut");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.segment_count(),
            2,
            "the {} segments after it are gone",
            count - 2
        );
        let kept: Vec<_> = stored
            .iter()
            .filter(|(base, _)| *base < log.log_end_offset())
            .cloned()
            .collect();
        assert!(kept.last().is_some_and(|(base, _)| *base >= second_base));
        assert_eq!(read_all(&log, 0), expected_from(&kept, 0));
    }

    #[test]
    fn broken_rolled_index_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        let first_index = log.segments()[0].offset_index.path().to_path_buf();
        let first_time_index = log.segments()[0].time_index.path().to_path_buf();
        log.close().expect("close");
        std::fs::write(&first_index, [1u8; 13]).expect("tear index");
        std::fs::remove_file(&first_time_index).expect("remove time index");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
        assert_eq!(std::fs::metadata(&first_index).expect("meta").len() % 8, 0);
        assert!(first_time_index.exists());
        assert_eq!(
            log.find_batch_by_timestamp(spec(1).base_timestamp)
                .expect("find")
                .expect("some")
                .to_vec(),
            stored[1].1
        );
    }

    #[test]
    fn clean_close_skips_the_recovery_scan_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = one_segment_config();
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        assert_eq!(log.opened(), LogOpened::Created);
        let mut stored = fill(&mut log, 40);
        assert_eq!(log.segment_count(), 1);
        let size = log.size_bytes();
        log.close().expect("close");
        assert!(marker(dir.path()).exists());

        let (_copy, recovered) = recovered_copy(dir.path(), config.clone());
        let mut log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert!(
            !marker(dir.path()).exists(),
            "the marker is gone before anything is served"
        );
        let LogOpened::Clean { tail_bytes } = log.opened() else {
            panic!("expected a trusted open, got {:?}", log.opened());
        };
        assert!(
            tail_bytes < size / 4,
            "{tail_bytes} of {size} bytes were read"
        );
        // The trusted open must be indistinguishable from recovery, except that it holds the
        // indexes it found on disk instead of rebuilding them.
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_eq!(log.active_segment_state().indexes_mapped, (false, false));
        assert_reads(&log, &stored);

        // Appends continue at the log end, and the index keeps growing as recovery would build it.
        let leo = log.log_end_offset();
        let entries = log.active_segment_state().offset_index.len();
        let more = fill(&mut log, 40);
        assert_eq!(more[0].0, leo);
        stored.extend(more);
        assert!(log.active_segment_state().offset_index.len() > entries);
        assert_reads(&log, &stored);
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), config.clone());
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert!(matches!(log.opened(), LogOpened::Clean { .. }));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // The marker was consumed: a crash now means a full scan again.
        let size = log.size_bytes();
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen after crash");
        assert_eq!(
            log.opened(),
            LogOpened::Recovered {
                segments: 1,
                scanned_bytes: size,
                truncated_bytes: 0,
            }
        );
        assert_reads(&log, &stored);
    }

    #[test]
    fn clean_close_with_rolled_segments_and_an_empty_active_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        assert!(log.segment_count() > 2);
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), small_config());
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert!(matches!(log.opened(), LogOpened::Clean { .. }));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // A segment rolled by segment.ms and closed empty reopens empty, still appendable.
        assert!(log.roll_if_due(i64::MAX).expect("roll"));
        let leo = log.log_end_offset();
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(log.opened(), LogOpened::Clean { tail_bytes: 0 });
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.active_segment_state().roll_base_ms, None);
        assert_eq!(fill(&mut log, 1)[0].0, leo);
    }

    #[test]
    fn crash_without_close_runs_the_recovery_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
        let stored = fill(&mut log, 20);
        let size = log.size_bytes();
        drop(log);
        assert!(!marker(dir.path()).exists());
        let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
        assert_eq!(
            log.opened(),
            LogOpened::Recovered {
                segments: 1,
                scanned_bytes: size,
                truncated_bytes: 0,
            }
        );
        assert_reads(&log, &stored);
    }

    /// A marker vouches for the files; when they disagree anyway, open falls back to the
    /// full scan (which truncates what is invalid) instead of serving from a bad index.
    #[test]
    fn marker_with_inconsistent_files_falls_back_to_the_scan() {
        type Damage = fn(&Path, &SegmentPaths);
        struct SegmentPaths {
            log: PathBuf,
            index: PathBuf,
            time_index: PathBuf,
        }
        let damages: [(&str, Damage); 5] = [
            ("garbage after the last batch", |_, p| {
                let mut bytes = std::fs::read(&p.log).expect("read");
                bytes.extend_from_slice(&[0xab; 100]);
                std::fs::write(&p.log, &bytes).expect("write");
            }),
            ("last batch torn", |_, p| {
                let len = std::fs::metadata(&p.log).expect("meta").len();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p.log)
                    .expect("open");
                file.set_len(len - 7).expect("cut");
            }),
            ("index entry off a batch boundary", |_, p| {
                let mut bytes = std::fs::read(&p.index).expect("read");
                let last = bytes.len() - 4;
                let position = u32::from_le_bytes(bytes[last..].try_into().expect("4"));
                bytes[last..].copy_from_slice(&(position + 1).to_le_bytes());
                std::fs::write(&p.index, &bytes).expect("write");
            }),
            ("time index missing", |_, p| {
                std::fs::remove_file(&p.time_index).expect("remove");
            }),
            ("time index past the end", |_, p| {
                let mut index = TimeIndex::create(&p.time_index, 0).expect("create");
                index.maybe_append(1, 1_000_000);
                index.take_sync().expect("an entry").run().expect("write");
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
            let stored = fill(&mut log, 20);
            let leo = log.log_end_offset();
            let paths = SegmentPaths {
                log: log.active().log_path.clone(),
                index: log.active().offset_index.path().to_path_buf(),
                time_index: log.active().time_index.path().to_path_buf(),
            };
            log.close().expect("close");
            damage(dir.path(), &paths);
            let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
            assert!(
                matches!(log.opened(), LogOpened::Recovered { .. }),
                "{what}: {:?}",
                log.opened()
            );
            assert!(!marker(dir.path()).exists(), "{what}");
            if what == "last batch torn" {
                assert_eq!(log.log_end_offset(), stored[19].0, "{what}");
                assert_reads(&log, &stored[..19]);
            } else {
                assert_eq!(log.log_end_offset(), leo, "{what}");
                assert_reads(&log, &stored);
            }
        }
    }

    /// A rolled segment whose data was durable (here: after a clean close) and is found damaged
    /// later is reported and left on disk with everything after it: no later segment, fsynced and
    /// acknowledged, is thrown away to repair it.
    #[test]
    fn damage_below_the_recovery_point_is_left_on_disk_not_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        fill(&mut log, 40);
        assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
        log.close().expect("close");
        let bases = list_segments(dir.path()).expect("list");
        let sizes = |bases: &[i64]| -> Vec<u64> {
            bases
                .iter()
                .map(|&b| {
                    let path = segment_path(dir.path(), b, "log");
                    std::fs::metadata(path).expect("meta").len()
                })
                .collect()
        };
        let first = segment_path(dir.path(), bases[0], "log");
        // A flipped byte inside the first segment's first batch, and its index gone, so the
        // trusted open fails and the segment must be scanned.
        let mut bytes = std::fs::read(&first).expect("read");
        bytes[70] ^= 0xff;
        std::fs::write(&first, &bytes).expect("write");
        std::fs::remove_file(segment_path(dir.path(), bases[0], "index")).expect("remove");
        let before = sizes(&bases);
        let err = Log::open(dir.path(), small_config())
            .err()
            .expect("refused");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("below the recovery point"),
            "{err}"
        );
        let after = sizes(&list_segments(dir.path()).expect("list"));
        assert_eq!(after, before, "every segment left as it was");
    }

    /// The price of skipping the scan, which Kafka pays too: damage inside the active segment
    /// (before the short tail that is still read) done while the broker was down is not found
    /// at start-up, just as it never is for rolled segments. After a crash the same damage is
    /// found and the log cut before it.
    #[test]
    fn damage_while_cleanly_stopped_is_not_scanned_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), one_segment_config()).expect("open");
        let stored = fill(&mut log, 40);
        let leo = log.log_end_offset();
        let active = log.active().log_path.clone();
        log.close().expect("close");
        let middle = stored[5].0;
        let position: usize = stored[..5].iter().map(|(_, b)| b.len()).sum();
        let mut bytes = std::fs::read(&active).expect("read");
        let inside = position + stored[5].1.len() - 3;
        bytes[inside] ^= 0x55; // a record byte, covered only by the CRC
        std::fs::write(&active, &bytes).expect("write");

        let log = Log::open(dir.path(), one_segment_config()).expect("reopen");
        assert!(matches!(log.opened(), LogOpened::Clean { .. }));
        assert_eq!(log.log_end_offset(), leo, "not detected");
        drop(log);
        let log = Log::open(dir.path(), one_segment_config()).expect("reopen after crash");
        assert_eq!(
            log.log_end_offset(),
            middle,
            "the scan cuts at the damaged batch"
        );
    }
}

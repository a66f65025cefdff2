//! Start-up recovery of a partition directory: find the segments, trust the rolled ones (their
//! indexes are mapped and sanity-checked, never their batches), scan only the active segment
//! batch by batch and cut a torn or corrupt tail, then rebuild producer state from the newest
//! snapshot plus the batches after it.
//!
//! Runs on the partition's owning shard when the partition is opened. Only the active segment is
//! scanned because every rolled segment was complete when it rolled; a crash can only tear the
//! segment that was being written.
//!
//! After a clean shutdown even that scan is skipped, as Kafka does: [`Log::close`] leaves a
//! `.clean-shutdown` marker once everything is durable, and the next open trusts the active
//! segment's indexes like a rolled segment's (only the few batches after its last index entry
//! are read). The trade-off is Kafka's too: bytes damaged on disk while the broker was down are
//! not found at start-up, exactly as they are not for rolled segments; clients that check CRCs
//! (the Java consumer's `check.crcs`) find them.
//!
//! [`Log::close`]: crate::storage::Log::close

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::storage::error::{io_error, StorageError};
use crate::storage::log::ActiveSegmentOpen;
use crate::storage::producer_state::{list_snapshots, snapshot_path, ProducerStateManager};
use crate::storage::segment::{ScanStep, Segment, RECOVERY_WINDOW_BYTES};

/// Name of the marker [`write_clean_shutdown_marker`] leaves in a partition directory. It starts
/// with a dot so that nothing listing segments or snapshots mistakes it for one.
pub(crate) const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// fsyncs the directory itself.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    // IMPORTANT: creating, renaming or deleting a file changes the directory, not the file:
    // without this a crash can lose a new file's name (or resurrect a deleted one) even though
    // its data was synced.
    let file = File::open(dir).map_err(|e| io_error(dir, e))?;
    file.sync_all().map_err(|e| io_error(dir, e))
}

/// Records that everything in `dir` is durable and consistent. Call only after the final flush:
/// the marker is what lets the next open skip the recovery scan.
pub(crate) fn write_clean_shutdown_marker(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(CLEAN_SHUTDOWN_MARKER);
    let file = File::create(&path).map_err(|e| io_error(&path, e))?;
    file.sync_all().map_err(|e| io_error(&path, e))?;
    sync_dir(dir)
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

/// Base offsets of the `.log` files in `dir`, ascending. Removes leftover temp files.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // A snapshot whose write was interrupted; the previous one is still in place.
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        } else if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens every segment: rolled ones trusted, the last one trusted too after a clean shutdown,
/// else (or if its files disagree) recovered by a full scan.
pub(crate) fn open_segments(
    dir: &Path,
    bases: &[i64],
    index_interval_bytes: u32,
    clean_shutdown: bool,
) -> Result<(Vec<Segment>, ActiveSegmentOpen), StorageError> {
    let Some((&active_base, rolled)) = bases.split_last() else {
        panic!("open_segments needs at least one segment");
    };
    let mut segments = Vec::with_capacity(bases.len());
    for &base in rolled {
        segments.push(Segment::open_rolled(dir, base, index_interval_bytes)?);
    }
    if clean_shutdown {
        match Segment::open_active_trusted(dir, active_base)? {
            Ok(active) => {
                let (_, last_indexed_position) = active.offset_index.lookup(i64::MAX);
                let tail_bytes = active.size_bytes - u64::from(last_indexed_position);
                segments.push(active);
                return Ok((segments, ActiveSegmentOpen::Trusted { tail_bytes }));
            }
            Err(reason) => tracing::warn!(
                dir = %dir.display(),
                reason = %reason,
                "clean shutdown, but the active segment's files disagree: running the recovery scan"
            ),
        }
    }
    let active = Segment::recover_active(dir, active_base, index_interval_bytes)?;
    let scanned_bytes = active.size_bytes;
    segments.push(active);
    Ok((segments, ActiveSegmentOpen::Recovered { scanned_bytes }))
}

/// Rebuilds producer state: the newest readable snapshot at or below the log end offset, then a
/// replay of every batch header from its offset on. Snapshots beyond the log end (left by a
/// truncation) are deleted, since they describe batches that no longer exist.
pub(crate) fn restore_producer_state(
    dir: &Path,
    segments: &[Segment],
) -> Result<ProducerStateManager, StorageError> {
    let log_start_offset = segments.first().map_or(0, |s| s.base_offset);
    let log_end_offset = segments.last().map_or(0, |s| s.next_offset);
    let mut state = ProducerStateManager::new();
    let mut replay_from = log_start_offset;
    for offset in list_snapshots(dir)?.into_iter().rev() {
        let path = snapshot_path(dir, offset);
        if offset > log_end_offset {
            fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            continue;
        }
        match ProducerStateManager::read_snapshot(&path) {
            Ok((_, loaded)) => {
                state = loaded;
                replay_from = offset;
                break;
            }
            Err(e) => tracing::warn!(error = %e, "skipping unreadable producer snapshot"),
        }
    }
    for segment in segments.iter().filter(|s| s.next_offset > replay_from) {
        let start = match segment.find_batch(replay_from.max(segment.base_offset))? {
            Some((position, _)) => position,
            None => continue,
        };
        let mut scanner = segment.scanner(start, RECOVERY_WINDOW_BYTES);
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
    Ok(state)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::record::test_util::{batch, patched};
    use crate::storage::log::test_util::*;
    use crate::storage::log::{ActiveSegmentOpen, Log, LogConfig};
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
        assert_eq!(log.active_segment_open(), ActiveSegmentOpen::Created);
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
        let ActiveSegmentOpen::Trusted { tail_bytes } = log.active_segment_open() else {
            panic!(
                "expected a trusted open, got {:?}",
                log.active_segment_open()
            );
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
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // The marker was consumed: a crash now means a full scan again.
        let size = log.size_bytes();
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen after crash");
        assert_eq!(
            log.active_segment_open(),
            ActiveSegmentOpen::Recovered {
                scanned_bytes: size
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
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_reads(&log, &stored);

        // A segment rolled by segment.ms and closed empty reopens empty, still appendable.
        assert!(log.roll_if_due(i64::MAX).expect("roll"));
        let leo = log.log_end_offset();
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { tail_bytes: 0 }
        );
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
            log.active_segment_open(),
            ActiveSegmentOpen::Recovered {
                scanned_bytes: size
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
                index.maybe_append(1, 1_000_000).expect("append");
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
                matches!(
                    log.active_segment_open(),
                    ActiveSegmentOpen::Recovered { .. }
                ),
                "{what}: {:?}",
                log.active_segment_open()
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
        assert!(matches!(
            log.active_segment_open(),
            ActiveSegmentOpen::Trusted { .. }
        ));
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

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

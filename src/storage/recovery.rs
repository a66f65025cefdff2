//! Start-up recovery of a partition directory: find the segments, trust the rolled ones (their
//! indexes are mapped and sanity-checked, never their batches), scan only the active segment
//! batch by batch and cut a torn or corrupt tail, then rebuild producer state from the newest
//! snapshot plus the batches after it.
//!
//! Runs on the partition's owning shard when the partition is opened. Only the active segment is
//! scanned because every rolled segment was complete when it rolled; a crash can only tear the
//! segment that was being written.

use std::fs;
use std::path::Path;

use crate::storage::error::{io_error, StorageError};
use crate::storage::producer_state::{list_snapshots, snapshot_path, ProducerStateManager};
use crate::storage::segment::{ScanStep, Segment, RECOVERY_WINDOW_BYTES};

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

/// Opens every segment: rolled ones trusted, the last one recovered.
pub(crate) fn open_segments(
    dir: &Path,
    bases: &[i64],
    index_interval_bytes: u32,
) -> Result<Vec<Segment>, StorageError> {
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        if i + 1 == bases.len() {
            segments.push(Segment::recover_active(dir, base, index_interval_bytes)?);
        } else {
            segments.push(Segment::open_rolled(dir, base, index_interval_bytes)?);
        }
    }
    Ok(segments)
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

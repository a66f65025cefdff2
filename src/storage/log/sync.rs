//! Making a log durable: the flush policy (`flush.messages`, `flush.ms`), the fsync of every
//! rolled segment, producer snapshots, deleting what retention dropped, and the recovery point
//! that all of it advances.
//!
//! The log itself only records what must reach the disk ([`Log::flush`], and the roll and
//! retention code); the shard takes it as one [`SyncJob`] ([`Log::take_sync`]) and runs it on a
//! blocking thread, because fsync, unlink and even writing a small file can sleep in the kernel
//! for as long as the disk wants. One job at a time per log, in order; what piles up meanwhile
//! goes into the next one. Once a job succeeded, [`Log::synced`] moves the recovery point to what
//! the job made durable. A job that fails leaves the log failed: fsync errors cannot be retried
//! (the kernel may have dropped the dirty pages it could not write), so the recovery point never
//! moves again and appends are refused until the broker restarts and recovers the log, as
//! Kafka takes a failed log directory offline.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use super::Log;
use crate::storage::atomic_file::{sync_dir, write_and_rename};
use crate::storage::error::{io_error, StorageError};
use crate::storage::producer_state::snapshot_path;
use crate::storage::recovery::write_clean_shutdown_marker;
use crate::storage::segment::{Segment, SegmentSync};

/// What a log still has to make durable, and its flush-policy counters.
pub(super) struct SyncState {
    pending: Pending,
    /// A job was taken and its result not yet handed back.
    in_flight: bool,
    /// Why the log stopped: a sync job failed.
    failed: Option<String>,
    messages_since_flush: u64,
    last_flush_ms: i64,
}

#[derive(Default)]
struct Pending {
    /// Make every segment below this offset durable, data and indexes; the recovery point then
    /// moves here. A roll asks for the segments before the new one, a flush for the whole log.
    upto: Option<i64>,
    /// Producer snapshots to write atomically, by offset.
    snapshots: BTreeMap<i64, Vec<u8>>,
    /// Segments retention or truncation dropped from the log: their files go, off the executor.
    doomed: Vec<Segment>,
    /// Other files to remove (producer snapshots below the log start).
    remove: Vec<PathBuf>,
    /// Directory entries changed (a segment created) since the directory's last fsync.
    dir: bool,
    /// The leader-epoch checkpoint's new contents.
    epochs: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.upto.is_none()
            && self.snapshots.is_empty()
            && self.doomed.is_empty()
            && self.remove.is_empty()
            && !self.dir
            && self.epochs.is_none()
    }
}

impl SyncState {
    pub(super) fn new(now_ms: i64) -> SyncState {
        SyncState {
            pending: Pending::default(),
            in_flight: false,
            failed: None,
            messages_since_flush: 0,
            last_flush_ms: now_ms,
        }
    }
}

/// A log's durability work, self-contained so it can run on any thread: segment fsyncs with
/// their index entries, producer snapshots, files to delete, the directory fsync.
pub struct SyncJob {
    dir: PathBuf,
    segments: Vec<SegmentSync>,
    snapshots: Vec<(PathBuf, Vec<u8>)>,
    doomed: Vec<Segment>,
    remove: Vec<PathBuf>,
    sync_dir: bool,
    recovery_point: Option<i64>,
}

/// A [`SyncJob`]'s result, for [`Log::synced`].
#[derive(Debug)]
pub struct SyncDone {
    recovery_point: Option<i64>,
    result: Result<(), StorageError>,
}

impl SyncDone {
    pub fn result(&self) -> &Result<(), StorageError> {
        &self.result
    }
}

impl SyncJob {
    /// Runs the job: blocking file I/O, never on an executor. The order matters for what a
    /// crash can leave behind: data before the indexes that point into it, both before a
    /// snapshot that vouches for the batches below its offset, and the directory last, so that
    /// every name created, renamed or removed is durable before the recovery point moves.
    pub fn run(mut self) -> SyncDone {
        let result = self.run_steps();
        SyncDone {
            recovery_point: self.recovery_point,
            result,
        }
    }

    fn run_steps(&mut self) -> Result<(), StorageError> {
        for segment in &self.segments {
            segment.run()?;
        }
        for (path, bytes) in &self.snapshots {
            write_and_rename(path, bytes)?;
        }
        // Closed here too: closing the last descriptor of an unlinked file frees its blocks,
        // which takes as long as the file is large.
        for segment in self.doomed.drain(..) {
            tracing::info!(segment = %segment.log_path.display(), "deleting segment");
            segment.delete_files()?;
        }
        for path in &self.remove {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path, e)),
            }
        }
        if self.sync_dir {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Log {
    /// Asks for everything below `offset` to be made durable by the next sync job.
    pub(super) fn sync_upto(&mut self, offset: i64) {
        let pending = &mut self.sync.pending;
        pending.upto = Some(pending.upto.map_or(offset, |upto| upto.max(offset)));
    }

    /// Queues a producer snapshot at `offset` of the current state (taken at a roll, before
    /// anything is appended to the new segment).
    pub(super) fn snapshot_at(&mut self, offset: i64) {
        let bytes = self.producer_state.snapshot_bytes(offset);
        self.sync.pending.snapshots.insert(offset, bytes);
        self.snapshots.insert(offset);
    }

    /// Forgets the producer snapshots at the offsets `doomed` picks: one not written yet is
    /// never written, the files of the others go with the next sync job.
    pub(super) fn forget_snapshots(&mut self, doomed: impl Fn(i64) -> bool) {
        let offsets: Vec<i64> = self
            .snapshots
            .iter()
            .copied()
            .filter(|&o| doomed(o))
            .collect();
        for offset in offsets {
            self.snapshots.remove(&offset);
            if self.sync.pending.snapshots.remove(&offset).is_none() {
                self.remove_file_later(snapshot_path(&self.dir, offset));
            }
        }
    }

    /// Snapshots queued for the sync job are not written after all (the log was emptied).
    pub(super) fn forget_pending_snapshots(&mut self) {
        self.sync.pending.snapshots.clear();
    }

    /// After a truncation to `log_end_offset`: nothing pending may reach past it, and the
    /// recovery point comes down to it.
    pub(super) fn truncated(&mut self, log_end_offset: i64) {
        assert!(!self.sync.in_flight, "truncation with a sync job under way");
        let pending = &mut self.sync.pending;
        pending.upto = pending.upto.map(|upto| upto.min(log_end_offset));
        pending
            .snapshots
            .retain(|&offset, _| offset <= log_end_offset);
        self.recovery_point = self.recovery_point.min(log_end_offset);
    }

    pub(super) fn doom(&mut self, segments: impl IntoIterator<Item = Segment>) {
        self.sync.pending.doomed.extend(segments);
    }

    pub(super) fn remove_file_later(&mut self, path: PathBuf) {
        self.sync.pending.remove.push(path);
    }

    pub(super) fn directory_changed(&mut self) {
        self.sync.pending.dir = true;
    }

    /// The leader-epoch cache changed: the next sync job writes its checkpoint.
    pub(super) fn epochs_changed(&mut self) {
        self.sync.pending.epochs = Some(self.epochs.to_bytes());
    }

    /// Counts appended records against `flush.messages`.
    pub(super) fn count_appended(&mut self, records: u64, now_ms: i64) {
        let sync = &mut self.sync;
        sync.messages_since_flush = sync.messages_since_flush.saturating_add(records);
        if sync.messages_since_flush >= self.config.flush_messages {
            self.flush(now_ms);
        }
    }

    /// Asks for the whole log to be made durable (Kafka's flush): the next sync job fsyncs
    /// every segment not yet durable, and the recovery point moves to the current log end.
    pub fn flush(&mut self, now_ms: i64) {
        self.sync_upto(self.log_end_offset());
        self.sync.messages_since_flush = 0;
        self.sync.last_flush_ms = now_ms;
    }

    /// Applies the `flush.ms` policy.
    pub fn flush_if_due(&mut self, now_ms: i64) {
        if self.sync.messages_since_flush > 0
            && now_ms.saturating_sub(self.sync.last_flush_ms) >= self.config.flush_ms
        {
            self.flush(now_ms);
        }
    }

    /// Why the log stopped accepting appends, if it did (a sync job failed).
    pub fn failed(&self) -> Option<&str> {
        self.sync.failed.as_deref()
    }

    pub(super) fn failed_error(&self) -> Option<StorageError> {
        self.sync
            .failed
            .as_ref()
            .map(|reason| StorageError::LogFailed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            })
    }

    /// Whether [`Log::take_sync`] has a job to give.
    pub fn has_sync_work(&self) -> bool {
        !self.sync.in_flight && self.sync.failed.is_none() && !self.sync.pending.is_empty()
    }

    /// Everything that must reach the disk, as one job to run off the executor and hand back to
    /// [`Log::synced`]; `None` if there is nothing to do or a job is still under way.
    pub fn take_sync(&mut self) -> Option<SyncJob> {
        if !self.has_sync_work() {
            return None;
        }
        Some(self.build_job(false))
    }

    /// `whole`: the active segment's indexes too (on close). Otherwise they stay in memory: after
    /// a crash the active segment is recovered anyway, and a clean close writes them.
    fn build_job(&mut self, whole: bool) -> SyncJob {
        let pending = std::mem::take(&mut self.sync.pending);
        let active_base = self.active().base_offset;
        let mut segments = Vec::new();
        if let Some(upto) = pending.upto {
            for segment in &mut self.segments {
                let active = segment.base_offset == active_base;
                if segment.base_offset >= upto && !(whole && active) {
                    break;
                }
                let sync = segment.take_sync(whole || !active);
                if !sync.is_empty() {
                    segments.push(sync);
                }
            }
        }
        let mut snapshots: Vec<(PathBuf, Vec<u8>)> = pending
            .snapshots
            .into_iter()
            .map(|(offset, bytes)| (snapshot_path(&self.dir, offset), bytes))
            .collect();
        if let Some(epochs) = pending.epochs {
            snapshots.push((crate::storage::leader_epoch::path(&self.dir), epochs));
        }
        let sync_dir = pending.dir
            || !snapshots.is_empty()
            || !pending.doomed.is_empty()
            || !pending.remove.is_empty();
        self.sync.in_flight = true;
        SyncJob {
            dir: self.dir.clone(),
            segments,
            snapshots,
            doomed: pending.doomed,
            remove: pending.remove,
            sync_dir,
            recovery_point: pending.upto,
        }
    }

    /// Takes back a job's result: the recovery point moves to what it made durable, or, if it
    /// failed, the log stops (see the module doc).
    pub fn synced(&mut self, done: SyncDone) {
        assert!(self.sync.in_flight, "a sync result without a job");
        self.sync.in_flight = false;
        match done.result {
            Ok(()) => {
                if let Some(point) = done.recovery_point {
                    assert!(point <= self.log_end_offset(), "durable past the log end");
                    self.recovery_point = self.recovery_point.max(point);
                }
            }
            Err(e) => {
                tracing::error!(
                    dir = %self.dir.display(),
                    error = %e,
                    "a sync failed: the log takes no more appends and its recovery point stays at {} until the broker restarts",
                    self.recovery_point
                );
                self.sync.failed = Some(e.to_string());
            }
        }
    }

    /// Runs the pending sync job on this thread (tools and tests; the broker runs it on a
    /// blocking thread).
    pub fn sync_now(&mut self) -> Result<(), StorageError> {
        if let Some(job) = self.take_sync() {
            let done = job.run();
            let result = match &done.result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::LogFailed {
                    dir: self.dir.clone(),
                    reason: e.to_string(),
                }),
            };
            self.synced(done);
            return result;
        }
        self.failed_error().map_or(Ok(()), Err)
    }

    /// Clean shutdown: everything made durable (every segment with its indexes, whatever was
    /// pending, a producer snapshot at the log end so the next open replays nothing), then the
    /// clean-shutdown marker that lets the next open skip recovery. Blocking: call it on a
    /// blocking thread, after the sync job under way (if any) came back. Index files need no
    /// trimming: they are never preallocated. A failed log gets no marker: its next open
    /// recovers it.
    pub fn close(mut self) -> Result<(), StorageError> {
        assert!(
            !self.sync.in_flight,
            "close waits for the sync job under way"
        );
        if let Some(error) = self.failed_error() {
            return Err(error);
        }
        let log_end_offset = self.log_end_offset();
        self.snapshot_at(log_end_offset);
        self.sync_upto(log_end_offset);
        let done = self.build_job(true).run();
        self.sync.in_flight = false;
        done.result?;
        // Last, and only once everything else is durable: a marker must never vouch for data,
        // indexes or a snapshot that could still be lost.
        write_clean_shutdown_marker(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log::test_util::*;
    use crate::storage::log::LogConfig;

    #[test]
    fn flush_policies_and_rolls_advance_the_recovery_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-1");
        let config = LogConfig {
            flush_messages: 4,
            flush_ms: 1_000,
            ..one_segment_config()
        };
        let mut log = Log::open(&path, config).expect("open");
        // A new directory: its creation is made durable at once, nothing else is pending.
        assert_eq!(log.recovery_point(), 0);
        assert!(!log.has_sync_work());
        // spec(0..2) hold 1 and 2 records: below flush.messages, nothing to sync but the
        // leader-epoch checkpoint the first batch's epoch asks for.
        fill(&mut log, 2);
        let job = log.take_sync().expect("the epoch checkpoint");
        let recovery_point = log.recovery_point();
        log.synced(job.run());
        assert_eq!(log.recovery_point(), recovery_point, "no data made durable");
        assert!(path.join(crate::storage::leader_epoch::FILE_NAME).exists());
        assert!(!log.has_sync_work());
        // A third batch (3 records) reaches it: the whole log is flushed.
        fill(&mut log, 3);
        let leo = log.log_end_offset();
        assert!(log.has_sync_work());
        let job = log.take_sync().expect("a job");
        assert!(log.take_sync().is_none(), "one job at a time");
        assert_eq!(log.recovery_point(), 0, "not before the job ran");
        log.synced(job.run());
        assert_eq!(log.recovery_point(), leo);
        // flush.ms counts from the last flush.
        let mut log_path = log.dir().to_path_buf();
        log_path.push("unused");
        fill(&mut log, 1);
        log.flush_if_due(1);
        assert!(!log.has_sync_work(), "flush.ms not reached");
        log.flush_if_due(i64::MAX);
        log.sync_now().expect("sync");
        assert_eq!(log.recovery_point(), log.log_end_offset());
        // segment.ms: the active segment's clock starts at its first batch's timestamp. A roll
        // makes the rolled segment durable and moves the recovery point to the new base.
        fill(&mut log, 1);
        assert!(log.roll_if_due(0).is_ok());
        let before = log.segment_count();
        assert!(log.roll_if_due(i64::MAX).expect("roll"));
        assert_eq!(log.segment_count(), before + 1);
        assert!(!log.roll_if_due(i64::MAX).expect("empty active never rolls"));
        let base = log.log_end_offset();
        assert!(log.recovery_point() < base);
        log.sync_now().expect("sync");
        assert_eq!(log.recovery_point(), base);
        assert!(path.join(format!("{base:020}.snapshot")).exists());
        log.delete().expect("delete");
        assert!(!path.exists());
    }
}

//! Shrinking a log: retention (which of the oldest rolled segments may go, by age and by size)
//! and truncation of a diverged tail.
//!
//! Retention runs on the shard that owns the partition, from its low-priority background task
//! queue, in memory: the segments leave the log at once and their files are deleted by the next
//! sync job, off the executor. Truncation (replication, when a follower's tail diverged) rewrites
//! files and runs on a blocking thread.

use super::Log;
use crate::storage::error::{io_error, StorageError};
use crate::storage::producer_state::snapshot_path;
use crate::storage::recovery::restore_producer_state;
use crate::storage::segment::Segment;

/// What retention needs to know about one rolled segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSummary {
    /// Largest record timestamp in the segment (the file's mtime when it has none).
    pub(crate) largest_timestamp_ms: i64,
    pub(crate) size_bytes: u64,
}

/// How many of the oldest `rolled` segments to delete. Deletion stops at the first segment that
/// must be kept, so the log stays a contiguous range of offsets (as in Kafka).
pub(crate) fn segments_to_delete(
    rolled: &[SegmentSummary],
    log_size_bytes: u64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> usize {
    let mut count = 0;
    if retention_ms >= 0 {
        count = rolled
            .iter()
            .take_while(|s| now_ms.saturating_sub(s.largest_timestamp_ms) > retention_ms)
            .count();
    }
    if retention_bytes >= 0 {
        let mut remaining: u64 =
            log_size_bytes - rolled[..count].iter().map(|s| s.size_bytes).sum::<u64>();
        let limit = retention_bytes as u64;
        for s in &rolled[count..] {
            if remaining >= s.size_bytes && remaining - s.size_bytes >= limit {
                remaining -= s.size_bytes;
                count += 1;
            } else {
                break;
            }
        }
    }
    count
}

impl Log {
    /// Drops whole rolled segments past `retention_ms` (by their largest timestamp, or when the
    /// file was last changed if no batch carries one, as Kafka does) or beyond `retention_bytes`,
    /// oldest first, with the producer snapshots below the new log start. Returns how many
    /// segments were dropped; the next sync job deletes their files.
    pub fn enforce_retention(&mut self, now_ms: i64) -> usize {
        let rolled = &self.segments[..self.segments.len() - 1];
        let summaries: Vec<SegmentSummary> = rolled
            .iter()
            .map(|segment| SegmentSummary {
                largest_timestamp_ms: if segment.max_timestamp >= 0 {
                    segment.max_timestamp
                } else {
                    segment.modified_ms
                },
                size_bytes: segment.size_bytes,
            })
            .collect();
        let count = segments_to_delete(
            &summaries,
            self.size_bytes(),
            self.config.retention_ms,
            self.config.retention_bytes,
            now_ms,
        );
        if count == 0 {
            return 0;
        }
        let dropped: Vec<Segment> = self.segments.drain(..count).collect();
        for segment in &dropped {
            tracing::info!(segment = %segment.log_path.display(), "segment past retention");
        }
        self.doom(dropped);
        self.log_start_moved();
        count
    }

    /// After segments were dropped from the front: what refers to offsets below the new log
    /// start goes (cached batches, producer snapshots and producers, leader epochs).
    fn log_start_moved(&mut self) {
        let log_start_offset = self.log_start_offset();
        if self
            .cache
            .start_offset()
            .is_some_and(|s| s < log_start_offset)
        {
            self.cache.clear();
        }
        self.forget_snapshots(|offset| offset < log_start_offset);
        self.producer_state.evict_below(log_start_offset);
        if self.epochs.truncate_from_start(log_start_offset) {
            self.epochs_changed();
        }
    }

    /// Drops the rolled segments that lie wholly below `offset` (the next segment starts at or
    /// before it), advancing the log start, as retention does. For a log whose owner has
    /// rewritten everything it still needs at or after `offset` (the group coordinator's
    /// `__consumer_offsets`, until compaction exists). Returns how many segments were dropped;
    /// the next sync job deletes their files.
    pub fn delete_segments_below(&mut self, offset: i64) -> usize {
        let count = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= offset)
            .count();
        if count == 0 {
            return 0;
        }
        let dropped: Vec<Segment> = self.segments.drain(..count).collect();
        self.doom(dropped);
        self.log_start_moved();
        count
    }

    /// Kafka's `truncateFullyAndStartAt`: drops every segment, and with them the producer
    /// state, the snapshots and the leader epochs, and starts the log empty at `offset`. For a
    /// follower whose log ends below the leader's log start (retention at the leader deleted what
    /// it would have fetched next): nothing of its log can continue the leader's. Blocking, with
    /// no write and no sync job under way, like [`Log::truncate_to`].
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        assert!(!self.write_in_flight, "truncation with a write under way");
        for segment in self.segments.drain(..) {
            segment.delete_files()?;
        }
        self.segments.push(Segment::create(&self.dir, offset)?);
        self.directory_changed();
        self.cache.clear();
        self.forget_pending_snapshots();
        self.truncated(offset);
        // Nothing below `offset` exists to recover: the new (empty) segment is the start.
        self.recovery_point = offset;
        self.after_truncation(i64::MIN)
    }

    /// Drops everything at or after `offset` (for replicas whose tail diverged from the
    /// leader). The cut is at a batch boundary: a batch containing `offset` goes entirely, so
    /// the new log end offset is that batch's base offset. Blocking: call it on a blocking
    /// thread, with no write and no sync job under way. The recovery point comes down to the
    /// new log end; the caller must have the recovery-point checkpoint written before the log
    /// grows past the old one again (Kafka writes it right after a truncation), or a crash could
    /// trust segments that were never fsynced.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        assert!(!self.write_in_flight, "truncate_to with a write under way");
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let interval = self.config.index_interval_bytes;
        if offset <= self.log_start_offset() {
            // Everything goes: start over with one empty segment at `offset`.
            for segment in self.segments.drain(..) {
                segment.delete_files()?;
            }
            self.segments.push(Segment::create(&self.dir, offset)?);
        } else {
            while self.segments.len() > 1 && self.active().base_offset >= offset {
                let segment = self.segments.pop().expect("more than one segment");
                segment.delete_files()?;
            }
            let dir = self.dir.clone();
            self.active_mut().truncate_to(&dir, offset, interval)?;
        }
        self.directory_changed();
        let log_end_offset = self.log_end_offset();
        self.cache.truncate_to(log_end_offset);
        self.truncated(log_end_offset);
        self.after_truncation(log_end_offset)
    }

    /// What a truncation leaves to redo, for a log cut at `kept_below` (everything from it on is
    /// gone; `i64::MIN`: everything): producer snapshots past the cut deleted, producer state
    /// rebuilt from what remains, leader epochs from the cut on dropped.
    fn after_truncation(&mut self, kept_below: i64) -> Result<(), StorageError> {
        let past_cut = match kept_below.checked_add(1) {
            Some(from) if kept_below != i64::MIN => self.snapshots.split_off(&from),
            _ => std::mem::take(&mut self.snapshots),
        };
        for offset in past_cut {
            let path = snapshot_path(&self.dir, offset);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        let (producer_state, _) = restore_producer_state(&self.dir, &self.segments)?;
        self.producer_state = producer_state;
        if self.epochs.truncate_from_end(kept_below) {
            self.epochs_changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log::test_util::*;
    use crate::storage::log::AppendOrigin;

    #[test]
    fn a_log_truncated_fully_starts_empty_at_the_offset_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        fill(&mut log, 30);
        assert!(log.segment_count() > 1 && log.epochs().latest_epoch().is_some());
        let start = log.log_end_offset() + 500;
        log.truncate_fully_and_start_at(start)
            .expect("truncate fully");
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start, start)
        );
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.epochs().latest_epoch(), None);
        assert!(read_all(&log, start).is_empty());
        // The leader's batches continue it from there, offsets kept: a leader log whose own
        // start is there too (its retention deleted the rest) hands them out.
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let mut leader = Log::open(leader_dir.path(), small_config()).expect("open");
        leader
            .truncate_fully_and_start_at(start)
            .expect("leader start");
        fill(&mut leader, 2);
        let bytes = bytes::Bytes::from(read_all(&leader, start));
        let batches = crate::record::split_batches(&bytes).expect("batches");
        log.append_from(&batches, AppendOrigin::Replica, 0)
            .expect("replica append");
        let end = log.log_end_offset();
        assert_eq!(end, leader.log_end_offset());
        log.close().expect("close");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
        assert_eq!(log.epochs().latest_epoch(), Some(EPOCH));
    }
    use crate::storage::log::{LogConfig, LogOpened};
    use crate::storage::producer_state::list_snapshots;
    use crate::storage::StorageError;

    #[test]
    fn retention_deletes_old_segments_and_advances_log_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_ms: 100,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        let stored = fill(&mut log, 40);
        let segments = log.segment_count();
        assert_eq!(log.enforce_retention(1_000), 0);
        // Batch i has max timestamp ~1000 + 10 i; at now = 1250 those below 1150 are expired.
        let deleted = log.enforce_retention(1_250);
        assert!(deleted >= 1 && deleted < segments);
        assert_eq!(log.segment_count(), segments - deleted);
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(0, 10, i64::MAX, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, start), expected_from(&stored, start));
        // Everything expired: only the active segment survives.
        log.enforce_retention(i64::MAX);
        log.sync_now().expect("delete files");
        assert_eq!(log.segment_count(), 1);
        for offset in list_snapshots(dir.path()).expect("list") {
            assert!(offset >= log.log_start_offset());
        }
        let leo = log.log_end_offset();
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);

        // By size.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_bytes: 1_500,
            retention_ms: -1,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), config).expect("open");
        fill(&mut log, 40);
        assert!(log.enforce_retention(0) > 0);
        assert!(log.size_bytes() >= 1_500 && log.size_bytes() < 1_500 + 1_000);
    }

    #[test]
    fn segments_wholly_below_an_offset_go_and_the_rest_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 40);
        let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
        assert!(bases.len() >= 4);
        assert_eq!(
            log.delete_segments_below(bases[1] - 1),
            0,
            "none wholly below"
        );
        // An offset inside the third segment: the first two go.
        let deleted = log.delete_segments_below(bases[2] + 1);
        assert_eq!(deleted, 2);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(read_all(&log, bases[2]), expected_from(&stored, bases[2]));
        // Never the active segment.
        log.delete_segments_below(i64::MAX);
        assert_eq!(log.segment_count(), 1);
        log.sync_now().expect("delete files");
        let leo = log.log_end_offset();
        drop(log);
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.log_start_offset(), *bases.last().unwrap());
    }

    #[test]
    fn producers_whose_data_is_gone_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        log.append(&[idem(1, 0, 0, 2)], EPOCH, 0)
            .expect("early producer");
        fill(&mut log, 40);
        log.append(&[idem(2, 0, 0, 2)], EPOCH, 0)
            .expect("late producer");
        assert_eq!(log.producer_state().len(), 2);
        log.delete_segments_below(log.log_end_offset());
        assert!(
            log.producer_state().get(1).is_none(),
            "its batch was deleted"
        );
        assert!(
            log.producer_state().get(2).is_some(),
            "its batch is in the active segment"
        );
        // Forgotten means unknown: it must start again at sequence 0.
        assert!(matches!(
            log.append(&[idem(1, 0, 2, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence { expected: 0, .. })
        ));
        // And it stays forgotten across a reopen.
        log.close().expect("close");
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert!(log.producer_state().get(1).is_none());
        assert!(log.producer_state().get(2).is_some());
    }

    #[test]
    fn truncate_to_drops_tail_and_producer_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        log.append(&[idem(1, 0, 0, 1)], EPOCH, 0).expect("append");
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        let cut = stored[13].0; // batch 13 holds two records
        log.truncate_to(cut + 1).expect("truncate");
        assert_eq!(
            log.log_end_offset(),
            cut,
            "the batch containing the offset goes"
        );
        assert_eq!(read_all(&log, 0), expected_from(&stored[..13], 0));
        // The producer's batch is gone, so it must start again at 0.
        log.append(&[idem(1, 0, 0, 1)], EPOCH, 0)
            .expect("sequence 0 again");
        let refill = fill(&mut log, 3);
        assert_eq!(refill[0].0, cut + 1, "after the producer's one record");
        drop(log);
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.log_end_offset(),
            refill[2].0 + i64::from(spec(2).records)
        );
        let mut log = log;
        log.truncate_to(0).expect("truncate all");
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.segment_count()
            ),
            (0, 0, 1)
        );
    }

    #[test]
    fn rolled_segment_made_active_again_by_truncation_gets_active_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let stored = fill(&mut log, 30);
        log.close().expect("close");
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        // Cut exactly at the second segment's base: the first becomes active again, uncut.
        let second_base = log.segments[1].base_offset;
        log.truncate_to(second_base).expect("truncate");
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_end_offset(), second_base);
        let kept: Vec<_> = stored
            .iter()
            .filter(|(base, _)| *base < second_base)
            .cloned()
            .collect();
        // Without the rebuild it would keep its seal entry and have no segment.ms clock.
        let reactivated = log.active_segment_state();
        assert!(reactivated.roll_base_ms.is_some());
        log.close().expect("close");
        let (_copy, recovered) = recovered_copy(dir.path(), small_config());
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert!(matches!(log.opened(), LogOpened::Clean { .. }));
        assert_eq!(log.active_segment_state(), recovered.active_segment_state());
        assert_eq!(log.active_segment_state(), reactivated);
        assert_reads(&log, &kept);
    }

    fn s(ts: i64, size: u64) -> SegmentSummary {
        SegmentSummary {
            largest_timestamp_ms: ts,
            size_bytes: size,
        }
    }

    #[test]
    fn by_time_stops_at_first_young_segment() {
        let rolled = [s(100, 10), s(5_000, 10), s(200, 10)];
        assert_eq!(segments_to_delete(&rolled, 40, 1_000, -1, 5_500), 1);
        assert_eq!(segments_to_delete(&rolled, 40, 1_000, -1, 50), 0);
        assert_eq!(segments_to_delete(&rolled, 40, -1, -1, i64::MAX), 0);
    }

    #[test]
    fn by_size_keeps_at_least_the_limit() {
        let rolled = [s(0, 10), s(0, 10), s(0, 10)];
        // 40 bytes total (10 active): deleting 2 leaves 20 >= 15; a third would leave 10 < 15.
        assert_eq!(segments_to_delete(&rolled, 40, -1, 15, 0), 2);
        assert_eq!(segments_to_delete(&rolled, 40, -1, 0, 0), 3);
        assert_eq!(segments_to_delete(&rolled, 40, -1, 100, 0), 0);
    }
}

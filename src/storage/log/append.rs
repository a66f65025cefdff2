//! Appending to a log: validation against idempotent-producer state, offset assignment, the
//! group commit's two halves around the off-thread data write, and segment rolls.
//!
//! Runs on the shard that owns the partition; only the [`SegmentWrite`] that [`Log::prepare`]
//! returns runs elsewhere (the shard's writer thread).

use std::collections::HashMap;
use std::io;

use bytes::Bytes;

use super::Log;
use crate::record::batch::{patched_prefix, Batch, BatchHeader};
use crate::storage::batch_cache::CachedBatch;
use crate::storage::error::StorageError;
use crate::storage::producer_state::{ProducerEntry, ProducerStateManager, SequenceCheck};
use crate::storage::segment::{Segment, SegmentWrite};

/// Result of [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// `log_append_time_ms` is -1 unless a batch uses LogAppendTime (Kafka's ProduceResponse).
    Appended {
        base_offset: i64,
        last_offset: i64,
        log_append_time_ms: i64,
    },
    /// A retried idempotent batch already in the log, acknowledged with its original offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Where an append comes from, which decides what [`Log::prepare`] checks and rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// Producers, through this replica as the partition's leader: offsets are assigned here,
    /// every batch is stamped with `leader_epoch`, idempotent sequences are checked.
    Leader { leader_epoch: i32 },
    /// The leader's batches, fetched by this replica as a follower: kept byte for byte (the
    /// leader's offsets and epochs), producer state updated without sequence checks, as Kafka's
    /// `appendAsFollower`. Offsets must not go below the log end.
    Replica,
}

/// Largest group write: enough to amortise the hand-off to the writer thread, small enough that
/// one partition's write does not hold back the next group for long.
const MAX_GROUP_WRITE_BYTES: u64 = 4 << 20;

/// Appends laid out by [`Log::prepare`], waiting for their write and [`Log::complete`].
pub struct PreparedAppends {
    /// One per append taken, in order. `Appended` becomes true only once the write succeeds.
    outcomes: Vec<Result<AppendOutcome, StorageError>>,
    /// The one write of every new batch taken, until [`PreparedAppends::take_write`].
    write: Option<SegmentWrite>,
    /// What is written (empty: no write, and `complete` changes nothing): stored headers, and the
    /// batches as the tail cache will hold them.
    stored: Vec<(BatchHeader, CachedBatch)>,
    producer_updates: HashMap<i64, ProducerEntry>,
    records: u64,
    now_ms: i64,
    /// The log end offset when the group was laid out: offsets from here on are the group's own.
    first_offset: i64,
}

impl PreparedAppends {
    /// How many appends (from the front of those offered) this group took.
    pub fn taken(&self) -> usize {
        self.outcomes.len()
    }

    /// The write to run before [`Log::complete`]; `None` if no append brought new batches.
    pub fn take_write(&mut self) -> Option<SegmentWrite> {
        self.write.take()
    }
}

enum Validated<'b> {
    Duplicate { base_offset: i64, last_offset: i64 },
    New(Layout<'b>),
}

/// One append's new batches with their assigned offsets.
struct Layout<'b> {
    headers: Vec<(BatchHeader, &'b Batch)>,
    /// One past the last offset of the append.
    next_offset: i64,
    bytes: u64,
    records: u64,
    log_append_time_ms: i64,
}

impl Log {
    /// Appends validated batches at the log end and writes them before returning: [`Log::prepare`],
    /// the write on this thread, [`Log::complete`]. Sequence checks run first for every batch, so
    /// on any error nothing is appended. For tools and tests; the broker writes off its executor.
    pub fn append(
        &mut self,
        batches: &[Batch],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.append_from(batches, AppendOrigin::Leader { leader_epoch }, now_ms)
    }

    /// [`Log::append`] from any origin (a follower's appends: [`AppendOrigin::Replica`]).
    pub fn append_from(
        &mut self,
        batches: &[Batch],
        origin: AppendOrigin,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let mut prepared = self.prepare_from(&[batches], origin, now_ms);
        let written = prepared
            .take_write()
            .as_ref()
            .map_or(Ok(()), SegmentWrite::run);
        let mut outcomes = self.complete(prepared, written);
        debug_assert_eq!(outcomes.len(), 1);
        outcomes.pop().expect("one outcome per append")
    }

    /// Group commit, first half: takes appends from the front of `appends` (each one producer
    /// request's batches for this partition) as long as they go into the active segment in one
    /// write, and lays them out: sequences checked, offsets assigned, stored prefixes built. The
    /// log itself does not change until [`Log::complete`], so reads keep seeing only written data
    /// while the write runs elsewhere. At least one append is taken when `appends` is not empty;
    /// an append that fails validation fails alone, as if sent by itself.
    ///
    /// Between `prepare` and `complete` the log must not be appended to, rolled or truncated
    /// (reads, flushes and retention of rolled segments are fine).
    pub fn prepare(
        &mut self,
        appends: &[&[Batch]],
        leader_epoch: i32,
        now_ms: i64,
    ) -> PreparedAppends {
        self.prepare_from(appends, AppendOrigin::Leader { leader_epoch }, now_ms)
    }

    /// [`Log::prepare`] for appends of any origin.
    pub fn prepare_from(
        &mut self,
        appends: &[&[Batch]],
        origin: AppendOrigin,
        now_ms: i64,
    ) -> PreparedAppends {
        assert!(!self.write_in_flight, "one group write at a time");
        let mut prepared = PreparedAppends {
            outcomes: Vec::with_capacity(appends.len()),
            write: None,
            stored: Vec::new(),
            producer_updates: HashMap::new(),
            records: 0,
            now_ms,
            first_offset: self.log_end_offset(),
        };
        if self.failed().is_some() {
            prepared.outcomes = appends
                .iter()
                .map(|_| Err(self.failed_error().expect("the log failed")))
                .collect();
            return prepared;
        }
        let mut next_offset = self.log_end_offset();
        let mut group_bytes = 0u64;
        let mut pieces = Vec::new();
        for batches in appends {
            let mut producers = prepared.producer_updates.clone();
            let validated = self.validate(batches, origin, &mut producers, next_offset, now_ms);
            let layout = match validated {
                Err(e) => {
                    prepared.outcomes.push(Err(e));
                    continue;
                }
                Ok(Validated::Duplicate {
                    base_offset,
                    last_offset,
                }) => {
                    prepared.outcomes.push(Ok(AppendOutcome::Duplicate {
                        base_offset,
                        last_offset,
                    }));
                    continue;
                }
                Ok(Validated::New(layout)) => layout,
            };
            if group_bytes == 0 {
                if self.should_roll(layout.bytes, layout.next_offset, now_ms) {
                    if let Err(e) = self.roll(now_ms) {
                        prepared.outcomes.push(Err(e));
                        break;
                    }
                }
            } else if group_bytes + layout.bytes > MAX_GROUP_WRITE_BYTES
                || self.active_would_overflow(group_bytes + layout.bytes, layout.next_offset)
            {
                break;
            }
            for (header, batch) in &layout.headers {
                let prefix = patched_prefix(
                    &batch.bytes,
                    header.base_offset,
                    header.partition_leader_epoch,
                );
                let prefix = Bytes::copy_from_slice(&prefix);
                let body = batch.bytes.slice(16..);
                pieces.push(prefix.clone());
                pieces.push(body.clone());
                prepared.stored.push((
                    *header,
                    CachedBatch {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        prefix,
                        body,
                    },
                ));
            }
            prepared.outcomes.push(Ok(AppendOutcome::Appended {
                base_offset: next_offset,
                last_offset: layout.next_offset - 1,
                log_append_time_ms: layout.log_append_time_ms,
            }));
            prepared.producer_updates = producers;
            prepared.records += layout.records;
            group_bytes += layout.bytes;
            next_offset = layout.next_offset;
        }
        if !pieces.is_empty() {
            prepared.write = Some(self.active().write_at_end(pieces));
            self.write_in_flight = true;
        }
        prepared
    }

    /// Group commit, second half: once `prepared.write` ran (`written` is its result), makes the
    /// appended batches part of the log (indexes, tail cache, producer state, flush policy) and
    /// returns one outcome per append taken, in order. A failed write fails every append of it.
    pub fn complete(
        &mut self,
        prepared: PreparedAppends,
        written: Result<(), StorageError>,
    ) -> Vec<Result<AppendOutcome, StorageError>> {
        let PreparedAppends {
            mut outcomes,
            stored,
            producer_updates,
            records,
            now_ms,
            first_offset,
            ..
        } = prepared;
        if stored.is_empty() {
            return outcomes;
        }
        self.write_in_flight = false;
        let failure = written.map(|()| {
            let mut epochs_changed = false;
            for (header, _) in &stored {
                epochs_changed |= self
                    .epochs
                    .assign(header.partition_leader_epoch, header.base_offset);
            }
            if epochs_changed {
                self.epochs_changed();
            }
            let interval = self.config.index_interval_bytes;
            self.active_mut().record_appended(
                stored.iter().map(|(header, _)| header),
                interval,
                now_ms,
            );
            for (_, batch) in stored {
                self.cache.push(batch);
            }
            self.producer_state.commit(producer_updates);
            self.count_appended(records, now_ms);
        });
        if let Err(e) = failure {
            for outcome in &mut outcomes {
                // A retry of a batch earlier in this same group was matched against the group's
                // own pending state: it fails with the batch it repeats.
                let lost = match outcome {
                    Ok(AppendOutcome::Appended { .. }) => true,
                    Ok(AppendOutcome::Duplicate { base_offset, .. }) => {
                        *base_offset >= first_offset
                    }
                    Err(_) => false,
                };
                if lost {
                    *outcome = Err(StorageError::Io {
                        path: self.dir.clone(),
                        source: io::Error::other(e.to_string()),
                    });
                }
            }
        }
        outcomes
    }

    /// Checks one append's batches against the log's and the group's producer state (`producers`
    /// gains this append's sequences) and assigns offsets from `next_offset`.
    fn validate<'b>(
        &self,
        batches: &'b [Batch],
        origin: AppendOrigin,
        producers: &mut HashMap<i64, ProducerEntry>,
        mut next_offset: i64,
        now_ms: i64,
    ) -> Result<Validated<'b>, StorageError> {
        if batches.is_empty() {
            return Err(self.invalid_append("no batches".to_string()));
        }
        let mut duplicates = Vec::new();
        let mut headers = Vec::with_capacity(batches.len());
        let mut bytes = 0u64;
        let mut records = 0u64;
        let mut log_append_time_ms = -1;
        for batch in batches {
            if batch.bytes.len() != batch.header.total_bytes() {
                return Err(self.invalid_append(format!(
                    "batch is {} bytes but its header says {}",
                    batch.bytes.len(),
                    batch.header.total_bytes()
                )));
            }
            let mut header = batch.header;
            match origin {
                AppendOrigin::Leader { leader_epoch } => {
                    header.base_offset = next_offset;
                    header.partition_leader_epoch = leader_epoch;
                }
                AppendOrigin::Replica if header.base_offset < next_offset => {
                    return Err(self.invalid_append(format!(
                        "replicated batch at offset {} is below the log end {next_offset}",
                        header.base_offset
                    )));
                }
                AppendOrigin::Replica => {}
            }
            let check = match origin {
                AppendOrigin::Leader { .. } => {
                    self.producer_state
                        .check(&self.dir, &batch.header, producers)?
                }
                // The leader checked; a follower keeps what the leader kept.
                AppendOrigin::Replica => SequenceCheck::Append,
            };
            match check {
                SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    duplicates.push((base_offset, last_offset));
                    continue;
                }
                SequenceCheck::Append => {}
            }
            if header.has_producer_id() && !header.is_control() {
                let before = producers
                    .get(&header.producer_id)
                    .or(self.producer_state.get(header.producer_id));
                let after = ProducerStateManager::applied(before, &header);
                producers.insert(header.producer_id, after);
            }
            if header.timestamp_type_is_log_append() {
                log_append_time_ms = now_ms;
            }
            next_offset = header.last_offset() + 1;
            bytes += batch.bytes.len() as u64;
            records += header.records_count as u64;
            headers.push((header, batch));
        }
        if !duplicates.is_empty() {
            if duplicates.len() != batches.len() {
                return Err(self.invalid_append(
                    "retried batches mixed with new ones in one append".to_string(),
                ));
            }
            let (base_offset, _) = duplicates[0];
            let (_, last_offset) = duplicates[duplicates.len() - 1];
            return Ok(Validated::Duplicate {
                base_offset,
                last_offset,
            });
        }
        Ok(Validated::New(Layout {
            headers,
            next_offset,
            bytes,
            records,
            log_append_time_ms,
        }))
    }

    fn invalid_append(&self, reason: String) -> StorageError {
        StorageError::InvalidAppend {
            dir: self.dir.clone(),
            reason,
        }
    }

    /// Kafka's roll rules, for an append of `append_bytes` ending before `next_offset`: size,
    /// age, index full, or positions/relative offsets about to overflow their u32 index fields.
    fn should_roll(&self, append_bytes: u64, next_offset: i64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        self.active_would_overflow(append_bytes, next_offset)
            || self.segment_is_old(now_ms)
            || active.offset_index.is_full(self.config.segment_index_bytes)
    }

    /// Whether `append_bytes` more, ending before `next_offset`, would outgrow the active
    /// segment's size limit or its index fields.
    fn active_would_overflow(&self, append_bytes: u64, next_offset: i64) -> bool {
        let active = self.active();
        let size_after = active.size_bytes + append_bytes;
        size_after > self.config.segment_bytes
            || size_after > u64::from(u32::MAX)
            || next_offset - active.base_offset > i64::from(u32::MAX)
    }

    fn segment_is_old(&self, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && active
                .roll_base_ms
                .is_some_and(|base| now_ms.saturating_sub(base) > self.config.segment_ms)
    }

    /// Starts a new active segment at the log end (creating its files is the one file operation
    /// left on the append path). The rolled segment, with a producer snapshot at the new base
    /// offset (so that recovery only replays from there), is made durable by the next sync job,
    /// which then moves the recovery point to the new base offset, as Kafka flushes a rolled
    /// segment in the background.
    fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let base_offset = self.log_end_offset();
        // Created first: if that fails, the active segment stays exactly as it was.
        let segment = Segment::create(&self.dir, base_offset)?;
        self.active_mut().seal(crate::clock::now_ms());
        self.segments.push(segment);
        self.directory_changed();
        self.snapshot_at(base_offset);
        self.sync_upto(base_offset);
        tracing::debug!(dir = %self.dir.display(), base_offset, now_ms, "rolled new segment");
        Ok(())
    }

    /// Time-based roll check, for the background task.
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        if !self.write_in_flight && self.segment_is_old(now_ms) {
            self.roll(now_ms)?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, patched, BatchSpec};
    use crate::storage::log::test_util::*;
    use crate::storage::log::{LogConfig, LogOpened};

    #[test]
    fn group_commit_writes_several_appends_at_once_and_fails_only_the_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        log.append(&[idem(7, 0, 0, 2)], EPOCH, 0).expect("first");
        let a = [batch(&spec(1)), batch(&spec(2))];
        let gap = [idem(7, 0, 5, 1)]; // producer 7 expects sequence 2
        let c = [idem(7, 0, 2, 3)];
        let mut prepared = log.prepare(&[&a, &gap, &c], EPOCH, 0);
        assert_eq!(prepared.taken(), 3);
        // Laid out but not written: the log does not show any of it yet.
        assert_eq!(log.log_end_offset(), 2);
        assert!(read_all(&log, 2).is_empty());
        let write = prepared.take_write().expect("a write");
        write.run().expect("write");
        let outcomes = log.complete(prepared, Ok(()));
        let records = |b: &[Batch]| b.iter().map(|b| i64::from(b.records_count())).sum::<i64>();
        let a_records = records(&a);
        assert_eq!(appended(&outcomes[0]), (2, 2 + a_records - 1));
        assert!(matches!(
            outcomes[1],
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert_eq!(appended(&outcomes[2]), (2 + a_records, 2 + a_records + 2));
        assert_eq!(log.log_end_offset(), 2 + a_records + 3);
        let mut expected = patched(&a[0].bytes, 2, EPOCH);
        expected.extend(patched(
            &a[1].bytes,
            2 + i64::from(a[0].records_count()),
            EPOCH,
        ));
        expected.extend(patched(&c[0].bytes, 2 + a_records, EPOCH));
        let all = read_all(&log, 2);
        assert_eq!(all, expected);
        // The same bytes come from the file as from the tail cache.
        drop(log);
        let reopened = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(read_all(&reopened, 2), expected);
        assert_eq!(
            reopened
                .producer_state()
                .get(7)
                .and_then(|e| e.batches.back())
                .map(|b| b.last_seq),
            Some(4)
        );
    }

    #[test]
    fn a_group_stops_where_the_segment_must_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let big = |fill: u8| {
            batch(&BatchSpec {
                value_bytes: 400,
                fill,
                ..BatchSpec::default()
            })
        };
        let (a, b, c) = ([big(1)], [big(2)], [big(3)]);
        let mut first = log.prepare(&[&a, &b, &c], EPOCH, 0);
        assert_eq!(
            first.taken(),
            2,
            "a third 400-byte value outgrows 1000-byte segments"
        );
        let written = first.take_write().expect("write").run();
        log.complete(first, written);
        assert_eq!(log.segment_count(), 1);
        let mut second = log.prepare(&[&c], EPOCH, 0);
        let written = second.take_write().expect("write").run();
        assert_eq!(appended(&log.complete(second, written)[0]), (2, 2));
        assert_eq!(log.segment_count(), 2, "the next group rolled first");
    }

    #[test]
    fn a_failed_group_write_fails_every_append_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let stored = fill(&mut log, 3);
        let end = log.log_end_offset();
        let (a, b) = ([idem(9, 0, 0, 1)], [batch(&spec(5))]);
        // The third append retries the first, within the same group.
        let mut prepared = log.prepare(&[&a, &b, &a], EPOCH, 0);
        assert!(
            matches!(
                prepared.outcomes[2],
                Ok(AppendOutcome::Duplicate { base_offset, .. }) if base_offset == end
            ),
            "{:?}",
            prepared.outcomes
        );
        drop(prepared.take_write());
        let failed = StorageError::Io {
            path: dir.path().to_path_buf(),
            source: io::Error::other("disk full"),
        };
        let outcomes = log.complete(prepared, Err(failed));
        assert!(outcomes.iter().all(|o| o.is_err()), "{outcomes:?}");
        assert_eq!(log.log_end_offset(), end);
        assert!(log.producer_state().get(9).is_none());
        assert_eq!(read_all(&log, 0), expected_from(&stored, 0));
        // The same appends succeed afterwards, at the same offsets.
        assert_eq!(
            appended(&Ok(log.append(&a, EPOCH, 0).expect("retry"))).0,
            end
        );
    }

    #[test]
    fn changed_settings_apply_to_an_open_log() {
        let dir = tempfile::tempdir().unwrap();
        let big = LogConfig {
            segment_bytes: 1 << 20,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), big.clone()).expect("open");
        fill(&mut log, 10);
        assert_eq!(
            log.segment_count(),
            1,
            "1 MiB segments hold ten small batches"
        );
        log.set_config(LogConfig {
            segment_bytes: 200,
            cache_bytes: 0,
            ..big
        });
        fill(&mut log, 10);
        assert!(
            log.segment_count() > 3,
            "smaller segment.bytes rolls from the next append on"
        );
        assert_eq!(
            log.config().cache_bytes,
            small_config().cache_bytes,
            "the cache budget stays"
        );
    }

    #[test]
    fn idempotent_producer_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let first = idem(7, 0, 0, 3);
        assert!(matches!(
            log.append(std::slice::from_ref(&first), EPOCH, 0)
                .expect("append"),
            AppendOutcome::Appended {
                base_offset: 0,
                last_offset: 2,
                ..
            }
        ));
        // Retry: acknowledged with the original offsets, nothing written.
        let size = log.size_bytes();
        assert_eq!(
            log.append(std::slice::from_ref(&first), EPOCH, 0)
                .expect("dup"),
            AppendOutcome::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(log.size_bytes(), size);
        // All-or-nothing: a good batch followed by a gap appends nothing.
        let err = log
            .append(&[idem(7, 0, 3, 1), idem(7, 0, 9, 1)], EPOCH, 0)
            .expect_err("gap");
        assert!(matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 4,
                got: 9,
                ..
            }
        ));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        assert_eq!(log.log_end_offset(), 3);
        // Two in-order batches in one call are both accepted.
        assert!(matches!(
            log.append(&[idem(7, 0, 3, 1), idem(7, 0, 4, 2)], EPOCH, 0)
                .expect("append"),
            AppendOutcome::Appended {
                base_offset: 3,
                last_offset: 5,
                ..
            }
        ));
        assert!(matches!(
            log.append(&[idem(8, 0, 1, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            log.append(&[idem(7, 1, 5, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 5,
                ..
            })
        ));
        log.append(&[idem(7, 1, 0, 1)], EPOCH, 0)
            .expect("new epoch restarts at 0");
        assert!(matches!(
            log.append(&[idem(7, 0, 6, 1)], EPOCH, 0),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        // Non-idempotent producers are never checked.
        log.append(&[batch(&BatchSpec::default())], EPOCH, 0)
            .expect("plain");
        log.append(&[batch(&BatchSpec::default())], EPOCH, 0)
            .expect("plain again");
        assert_eq!(log.log_end_offset(), 9);
    }

    fn producer_state_survives(crash: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        let mut seq = 0;
        for i in 0..10 {
            log.append(&[idem(5, 2, seq, 2)], EPOCH, 0).expect("append");
            seq += 2;
            log.append(&[idem(6, 0, i, 1)], EPOCH, 0).expect("append");
        }
        assert!(log.segment_count() > 2);
        let last = idem(5, 2, seq - 2, 2);
        let leo = log.log_end_offset();
        if crash {
            drop(log);
        } else {
            log.close().expect("close");
        }
        let mut log = Log::open(dir.path(), config).expect("reopen");
        // After a clean close producer state comes from the close's snapshot alone: the active
        // segment is not even scanned, so nothing could have been replayed.
        assert_eq!(matches!(log.opened(), LogOpened::Clean { .. }), !crash);
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(
            log.append(&[last], EPOCH, 0).expect("dup"),
            AppendOutcome::Duplicate {
                base_offset: leo - 3,
                last_offset: leo - 2
            }
        );
        assert!(matches!(
            log.append(&[idem(5, 2, seq + 1, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        log.append(&[idem(5, 2, seq, 1)], EPOCH, 0)
            .expect("next in sequence");
        log.append(&[idem(6, 0, 10, 1)], EPOCH, 0)
            .expect("next in sequence");
        assert!(matches!(
            log.append(&[idem(6, 0, 0, 1)], EPOCH, 0),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn producer_state_survives_close_and_reopen() {
        producer_state_survives(false);
    }

    #[test]
    fn producer_state_survives_crash() {
        producer_state_survives(true);
    }
}

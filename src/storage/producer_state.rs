//! Idempotent-producer state of one partition: per producer id, its epoch and the last five
//! batches it appended, so a retried batch is acknowledged with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused.
//!
//! Runs on the partition's owning shard. Survives restarts through `<offset>.snapshot` files (a
//! CRC-32C, then an rkyv archive of the whole map, valid as of that offset; the CRC, as in
//! Kafka's snapshot files, because a flipped bit in a sequence number would still be a valid
//! archive) taken at each roll and on close: the shard
//! archives the state, a sync job writes the file atomically off the executor, after the data
//! below its offset is durable. On open the newest usable snapshot is loaded and the batches
//! after it are replayed.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use crate::record::BatchHeader;
use crate::storage::error::{io_error, StorageError};

/// Kafka remembers this many batches per producer for duplicate detection.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// A snapshot file starts with the CRC-32C (little endian) of the archive that follows.
const SNAPSHOT_CRC_BYTES: usize = 4;

/// A snapshot file larger than this is not one skein wrote (a producer takes ~150 bytes): it is
/// skipped rather than read into memory whole.
const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerEntry {
    pub producer_epoch: i16,
    /// Oldest first; at most [`PRODUCER_BATCHES_REMEMBERED`].
    pub batches: VecDeque<BatchMetadata>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct SnapshotProducer {
    producer_id: i64,
    producer_epoch: i16,
    batches: Vec<BatchMetadata>,
}

/// The snapshot file's root object.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct ProducerSnapshot {
    /// Log end offset the snapshot is valid for (also the file name).
    offset: i64,
    producers: Vec<SnapshotProducer>,
}

/// Result of checking one batch against the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it (also for non-idempotent batches).
    Append,
    /// Already in the log with these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Default, Clone)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(last_seq: i32) -> i32 {
    if last_seq == i32::MAX {
        0
    } else {
        last_seq + 1
    }
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks `header` (not yet appended) against the producer's entry, which `pending`
    /// overrides for batches earlier in the same append call.
    pub(crate) fn check(
        &self,
        dir: &Path,
        header: &BatchHeader,
        pending: &HashMap<i64, ProducerEntry>,
    ) -> Result<SequenceCheck, StorageError> {
        // Control batches (transaction markers) carry no sequence.
        if !header.has_producer_id() || header.is_control() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        let first_seq = header.base_sequence;
        let entry = pending
            .get(&producer_id)
            .or_else(|| self.producers.get(&producer_id));
        let Some(entry) = entry else {
            if first_seq != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    dir: dir.to_path_buf(),
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.producer_epoch {
            return Err(StorageError::InvalidProducerEpoch {
                dir: dir.to_path_buf(),
                producer_id,
                current: entry.producer_epoch,
                got: header.producer_epoch,
            });
        }
        if header.producer_epoch > entry.producer_epoch {
            if first_seq != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    dir: dir.to_path_buf(),
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_seq = header.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_seq));
        if first_seq != expected {
            return Err(StorageError::OutOfOrderSequence {
                dir: dir.to_path_buf(),
                producer_id,
                expected,
                got: first_seq,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// The producer's entry after `header` (stored, with its final offsets) is applied to
    /// `entry` (its entry before). Used for appends and for replay.
    pub(crate) fn applied(entry: Option<&ProducerEntry>, header: &BatchHeader) -> ProducerEntry {
        let mut entry = match entry {
            Some(e) if e.producer_epoch == header.producer_epoch => e.clone(),
            _ => ProducerEntry {
                producer_epoch: header.producer_epoch,
                batches: VecDeque::new(),
            },
        };
        if entry.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        entry
    }

    /// Replays one stored batch (recovery): no checks, the log is the truth.
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        let entry = Self::applied(self.producers.get(&header.producer_id), header);
        self.producers.insert(header.producer_id, entry);
    }

    /// Forgets the producers none of whose remembered batches is still in the log (their last
    /// one ends below `log_start_offset`), as Kafka's `evictUnretainedProducers` does when
    /// retention moves the log start: the state stays proportional to the data kept. A
    /// producer forgotten this way that writes again starts over at sequence 0, as it would
    /// have to after its data expired in Kafka. Returns how many were forgotten.
    pub(crate) fn evict_below(&mut self, log_start_offset: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
        before - self.producers.len()
    }

    pub(crate) fn commit(&mut self, pending: HashMap<i64, ProducerEntry>) {
        self.producers.extend(pending);
    }

    /// The state archived as `<offset>.snapshot`'s contents: cheap, on the shard; the file is
    /// written atomically by a sync job ([`crate::storage::atomic_file`]).
    pub(crate) fn snapshot_bytes(&self, offset: i64) -> Vec<u8> {
        let mut producers: Vec<SnapshotProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| SnapshotProducer {
                producer_id,
                producer_epoch: e.producer_epoch,
                batches: e.batches.iter().copied().collect(),
            })
            .collect();
        producers.sort_by_key(|p| p.producer_id);
        let snapshot = ProducerSnapshot { offset, producers };
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot)
            .expect("archiving plain integers cannot fail");
        let mut bytes = Vec::with_capacity(SNAPSHOT_CRC_BYTES + archive.len());
        bytes.extend_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
        bytes.extend_from_slice(&archive);
        bytes
    }

    /// Loads a snapshot written from [`Self::snapshot_bytes`]. The CRC is checked, then the
    /// archive is validated (checked `access`): unlike index entries it has variable-length parts
    /// whose relative pointers a torn or foreign file could send out of bounds.
    pub(crate) fn read_snapshot(path: &Path) -> Result<(i64, ProducerStateManager), StorageError> {
        let len = fs::metadata(path).map_err(|e| io_error(path, e))?.len();
        if len > MAX_SNAPSHOT_BYTES {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: format!("{len} bytes is too large for a producer snapshot"),
            });
        }
        let raw = fs::read(path).map_err(|e| io_error(path, e))?;
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason,
        };
        let Some((crc, archive)) = raw.split_first_chunk::<SNAPSHOT_CRC_BYTES>() else {
            return Err(corrupt("shorter than its CRC".to_string()));
        };
        if u32::from_le_bytes(*crc) != crc32c::crc32c(archive) {
            return Err(corrupt("producer snapshot CRC-32C mismatch".to_string()));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        let archived = rkyv::access::<ArchivedProducerSnapshot, rkyv::rancor::Error>(&aligned)
            .map_err(|e| StorageError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: format!("invalid producer snapshot: {e}"),
            })?;
        let mut state = ProducerStateManager::new();
        for p in archived.producers.iter() {
            let batches = p
                .batches
                .iter()
                .map(|b| BatchMetadata {
                    first_seq: b.first_seq.to_native(),
                    last_seq: b.last_seq.to_native(),
                    base_offset: b.base_offset.to_native(),
                    last_offset: b.last_offset.to_native(),
                })
                .collect();
            state.producers.insert(
                p.producer_id.to_native(),
                ProducerEntry {
                    producer_epoch: p.producer_epoch.to_native(),
                    batches,
                },
            );
        }
        Ok((archived.offset.to_native(), state))
    }
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(offset) = stem.parse::<i64>() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, BatchSpec};

    fn header(pid: i64, epoch: i16, seq: i32, records: i32, base_offset: i64) -> BatchHeader {
        let mut h = batch(&BatchSpec {
            records,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            ..BatchSpec::default()
        })
        .header;
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn sequence_rules() {
        let dir = Path::new("/tmp/t-0");
        let none = HashMap::new();
        let mut state = ProducerStateManager::new();
        // Unknown producer must start at 0.
        assert!(matches!(
            state.check(dir, &header(1, 0, 5, 1, 0), &none),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 5,
                ..
            })
        ));
        let first = header(1, 0, 0, 3, 0);
        assert_eq!(
            state.check(dir, &first, &none).expect("ok"),
            SequenceCheck::Append
        );
        state.replay(&first);
        // Retry -> duplicate with original offsets.
        assert_eq!(
            state
                .check(dir, &header(1, 0, 0, 3, 99), &none)
                .expect("ok"),
            SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
        // Gap -> out of order.
        assert!(matches!(
            state.check(dir, &header(1, 0, 4, 1, 3), &none),
            Err(StorageError::OutOfOrderSequence {
                expected: 3,
                got: 4,
                ..
            })
        ));
        // Lower epoch is fenced; higher epoch must restart at 0.
        let mut bumped = state.clone();
        bumped.replay(&header(1, 2, 0, 1, 3));
        assert!(matches!(
            bumped.check(dir, &header(1, 1, 1, 1, 4), &none),
            Err(StorageError::InvalidProducerEpoch {
                current: 2,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            state.check(dir, &header(1, 1, 7, 1, 3), &none),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 7,
                ..
            })
        ));
        assert_eq!(
            state.check(dir, &header(1, 1, 0, 1, 3), &none).expect("ok"),
            SequenceCheck::Append
        );
        // Non-idempotent batches are never checked.
        assert_eq!(
            state
                .check(dir, &header(-1, -1, -1, 1, 3), &none)
                .expect("ok"),
            SequenceCheck::Append
        );
    }

    #[test]
    fn sequence_wraps_and_only_five_batches_are_remembered() {
        let dir = Path::new("/tmp/t-0");
        let none = HashMap::new();
        let mut state = ProducerStateManager::new();
        state.replay(&header(9, 0, 0, 1, 0));
        let wrap = header(9, 0, i32::MAX - 1, 2, 1);
        let mut entry = state.get(9).expect("entry").clone();
        entry.batches.back_mut().expect("one").last_seq = i32::MAX - 2;
        state.producers.insert(9, entry);
        assert_eq!(
            state.check(dir, &wrap, &none).expect("ok"),
            SequenceCheck::Append
        );
        state.replay(&wrap);
        assert_eq!(
            state
                .check(dir, &header(9, 0, 0, 1, 3), &none)
                .expect("wraps"),
            SequenceCheck::Append
        );
        for i in 0..6 {
            state.replay(&header(9, 0, i, 1, 3 + i64::from(i)));
        }
        assert_eq!(
            state.get(9).expect("entry").batches.len(),
            PRODUCER_BATCHES_REMEMBERED
        );
        assert_eq!(state.get(9).expect("entry").batches[0].first_seq, 1);
    }

    #[test]
    fn snapshot_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = ProducerStateManager::new();
        state.replay(&header(1, 3, 0, 2, 10));
        state.replay(&header(2, 0, 0, 1, 12));
        state.replay(&header(1, 3, 2, 1, 13));
        let path = snapshot_path(dir.path(), 14);
        crate::storage::atomic_file::write_atomically(&path, &state.snapshot_bytes(14))
            .expect("write");
        assert!(path.ends_with("00000000000000000014.snapshot"));
        let (offset, loaded) = ProducerStateManager::read_snapshot(&path).expect("read");
        assert_eq!(offset, 14);
        assert_eq!(loaded.producers, state.producers);
        assert_eq!(list_snapshots(dir.path()).expect("list"), vec![14]);
        let mut flipped = fs::read(&path).expect("read");
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        for bad in [b"garbage".to_vec(), b"ab".to_vec(), flipped] {
            fs::write(&path, bad).expect("write");
            assert!(matches!(
                ProducerStateManager::read_snapshot(&path),
                Err(StorageError::Corrupt { .. })
            ));
        }
    }
}

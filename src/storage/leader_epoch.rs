//! The leader-epoch cache: for every leader epoch a partition's log has seen, the offset of its
//! first batch, as Kafka's `LeaderEpochFileCache` keeps it (KIP-101). It answers
//! OffsetForLeaderEpoch: "where does epoch E end in this log?", which is how a follower finds
//! where its tail diverged from a new leader's and truncates there instead of at its high
//! watermark (which can lose acknowledged records or keep divergent ones).
//!
//! Kept in memory by the [`Log`](super::Log) and written as `leader-epoch-checkpoint` in the
//! partition directory, in Kafka's text format (version 0, entry count, one `epoch offset` line
//! per entry), whenever it changes: by a sync job, never on the executor. A log opened without
//! the file (new, or written by a build before this one) starts with an empty cache and gains
//! entries as batches of new epochs are appended.

use std::path::{Path, PathBuf};

use crate::storage::error::{io_error, StorageError};

pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// Entries a checkpoint file may hold: a leader change per second for more than a day. Older
/// entries are dropped from the front (the log start moved past them long ago in any real log).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// (epoch, start offset), both strictly ascending.
    entries: Vec<(i32, i64)>,
}

/// Kafka's answer for an epoch the cache cannot place (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED: (i32, i64) = (-1, -1);

impl LeaderEpochCache {
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// Records that `epoch` starts at `start_offset`. An epoch not newer than the latest is
    /// ignored (a leader appends with one epoch; a follower sees each epoch's first batch
    /// first). Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(&(latest, latest_start)) = self.entries.last() {
            if epoch <= latest {
                return false;
            }
            if start_offset < latest_start {
                // Kafka removes the entries a new epoch's start offset overtakes.
                self.entries.retain(|&(_, start)| start < start_offset);
            }
        }
        self.entries.push((epoch, start_offset));
        if self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested` this log has, and the offset
    /// where that epoch ends (the next epoch's start offset, or `log_end_offset` if it is the
    /// latest). [`UNDEFINED`] if `requested` is older than every epoch the cache knows.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        match self.latest_epoch() {
            None => UNDEFINED,
            Some(latest) if requested == latest => (latest, log_end_offset),
            Some(_) => {
                // The first entry with epoch > requested ends the answer's epoch.
                let after = self.entries.partition_point(|&(e, _)| e <= requested);
                if after == 0 {
                    return UNDEFINED;
                }
                let (epoch, _) = self.entries[after - 1];
                match self.entries.get(after) {
                    Some(&(_, next_start)) => (epoch, next_start),
                    None => (epoch, log_end_offset),
                }
            }
        }
    }

    /// Drops the epochs that start at or after `offset` (the log was truncated to `offset`).
    /// Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < offset);
        self.entries.len() != before
    }

    /// The log start moved to `offset`: epochs that end below it go, and the epoch that holds it
    /// now starts there. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, offset: i64) -> bool {
        let keep_from = self.entries.partition_point(|&(_, start)| start <= offset);
        if keep_from == 0 {
            return false;
        }
        let holder = keep_from - 1;
        let changed = holder > 0 || self.entries[holder].1 != offset;
        self.entries.drain(..holder);
        self.entries[0].1 = offset;
        changed
    }

    /// The checkpoint file's contents, in Kafka's format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        text.into_bytes()
    }

    /// Parses a checkpoint file; `Err` names what is wrong with it.
    pub fn parse(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        match lines.next() {
            Some("0") => {}
            other => return Err(format!("unknown version {other:?}")),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("missing entry count")?;
        if count > MAX_ENTRIES {
            return Err(format!("{count} entries, more than {MAX_ENTRIES}"));
        }
        let mut cache = LeaderEpochCache::default();
        for i in 0..count {
            let line = lines.next().ok_or(format!("entry {i} missing"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("entry {i}: malformed line {line:?}"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| format!("entry {i}: bad epoch"))?;
            let offset: i64 = offset
                .parse()
                .map_err(|_| format!("entry {i}: bad offset"))?;
            if cache
                .entries
                .last()
                .is_some_and(|&(e, o)| epoch <= e || offset < o)
            {
                return Err(format!("entry {i}: epochs and offsets must ascend"));
            }
            cache.entries.push((epoch, offset));
        }
        Ok(cache)
    }

    /// Reads `dir`'s checkpoint: an empty cache if there is none; a corrupt one is reported and
    /// replaced by an empty cache (epochs are relearnt from appends; a follower then truncates
    /// by its high watermark, as Kafka before KIP-101).
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, StorageError> {
        let path = path(dir);
        // Read no more than the largest valid file (every line fits in 32 bytes), so a damaged
        // one cannot take memory by its size.
        let limit = (MAX_ENTRIES as u64 + 2) * 32;
        let read = std::fs::File::open(&path).and_then(|file| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(file, limit), &mut text)?;
            Ok(text)
        });
        match read {
            Ok(text) => Ok(LeaderEpochCache::parse(&text).unwrap_or_else(|reason| {
                tracing::warn!("{}: {reason}; starting with no epochs", path.display());
                LeaderEpochCache::default()
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LeaderEpochCache::default()),
            Err(e) => Err(io_error(&path, e)),
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(
            c.end_offset_for(4, 40),
            (4, 40),
            "latest epoch ends at the log end"
        );
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(
            c.end_offset_for(2, 40),
            (1, 10),
            "unknown epoch: the one below it"
        );
        assert_eq!(c.end_offset_for(9, 40), (4, 40));
        assert_eq!(c.end_offset_for(0, 40), UNDEFINED, "older than all");
        assert_eq!(LeaderEpochCache::default().end_offset_for(1, 5), UNDEFINED);
    }

    #[test]
    fn assign_ignores_old_epochs_and_overtaken_entries_go() {
        let mut c = cache(&[(1, 0), (2, 10)]);
        assert!(!c.assign(2, 20));
        assert!(!c.assign(1, 30));
        assert!(c.assign(5, 5));
        assert_eq!(c.entries(), &[(1, 0), (5, 5)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (2, 10), (3, 20)]);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[(1, 0), (2, 10)]);
        assert!(!c.truncate_from_end(15));
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(2, 12)]);
        assert!(!c.truncate_from_start(5));
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_refused() {
        let c = cache(&[(0, 0), (7, 1234)]);
        let text = String::from_utf8(c.to_bytes()).expect("utf8");
        assert_eq!(text, "0\n2\n0 0\n7 1234\n");
        assert_eq!(LeaderEpochCache::parse(&text), Ok(c));
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\nx 1\n",
            "0\n2\n3 0\n2 5\n",
            "0\n1\n1 2 3\n",
        ] {
            assert!(LeaderEpochCache::parse(bad).is_err(), "{bad:?}");
        }
    }
}

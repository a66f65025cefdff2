//! Tail batch cache of one partition: the most recently appended batches, held as the `Bytes`
//! they arrived in (plus their 16-byte rewritten prefix), so fetches that keep up with the
//! producers are served without touching the file and without copying.
//!
//! Runs on the partition's owning shard. The cache always covers a contiguous offset range ending
//! at the log end offset, which is what lets a read decide "cached or not" by one comparison.
//! Note: a cached body is a slice of the produce request's frame, so it keeps that frame alive
//! until evicted; the byte budget counts the batch, not the frame.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The stored first 16 bytes (baseOffset and partitionLeaderEpoch rewritten).
    pub prefix: Bytes,
    /// Bytes 16.. of the batch as received.
    pub body: Bytes,
}

impl CachedBatch {
    pub fn len(&self) -> usize {
        self.prefix.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
pub struct BatchCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    budget_bytes: usize,
}

impl BatchCache {
    pub fn new(budget_bytes: usize) -> BatchCache {
        BatchCache {
            batches: VecDeque::new(),
            bytes: 0,
            budget_bytes,
        }
    }

    /// Adds the newest batch, evicting the oldest to stay within budget. A batch larger than the
    /// whole budget empties the cache (it must stay contiguous up to the log end).
    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert!(
                batch.base_offset > last.last_offset,
                "cache offsets only grow"
            );
        }
        if batch.len() > self.budget_bytes {
            self.clear();
            return;
        }
        self.bytes += batch.len();
        self.batches.push_back(batch);
        while self.bytes > self.budget_bytes {
            if let Some(old) = self.batches.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Lowest offset the cache can serve, if any.
    pub fn start_offset(&self) -> Option<i64> {
        self.batches.front().map(|b| b.base_offset)
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Drops cached batches whose offsets reach `offset` or beyond.
    pub fn truncate_to(&mut self, offset: i64) {
        while self.batches.back().is_some_and(|b| b.last_offset >= offset) {
            if let Some(old) = self.batches.pop_back() {
                self.bytes -= old.len();
            }
        }
    }

    /// Batches from the one containing `offset` on (`offset` must be >= start_offset).
    pub fn from_offset(&self, offset: i64) -> impl Iterator<Item = &CachedBatch> {
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        self.batches.range(first..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(base: i64, last: i64, body_bytes: usize) -> CachedBatch {
        CachedBatch {
            base_offset: base,
            last_offset: last,
            prefix: Bytes::from(vec![0; 16]),
            body: Bytes::from(vec![1; body_bytes]),
        }
    }

    #[test]
    fn evicts_oldest_and_stays_contiguous() {
        let mut cache = BatchCache::new(100);
        cache.push(cached(0, 1, 34));
        cache.push(cached(2, 2, 34));
        assert_eq!(cache.start_offset(), Some(0));
        cache.push(cached(3, 5, 34));
        assert_eq!(cache.start_offset(), Some(2));
        assert_eq!(
            cache
                .from_offset(4)
                .map(|b| b.base_offset)
                .collect::<Vec<_>>(),
            vec![3]
        );
        cache.push(cached(6, 6, 500));
        assert_eq!(cache.start_offset(), None);
        cache.push(cached(7, 7, 10));
        cache.truncate_to(7);
        assert_eq!(cache.size_bytes(), 0);
    }
}

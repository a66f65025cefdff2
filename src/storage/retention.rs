//! Retention policy: which of a partition's oldest rolled segments may be deleted, by age
//! (`retention.ms`, judged by each segment's largest timestamp) and by size (`retention.bytes`).
//!
//! Pure decision logic; the caller (the partition's owning shard, from its low-priority
//! background task queue) deletes the files. The active segment is never a candidate.

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

#[cfg(test)]
mod tests {
    use super::*;

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

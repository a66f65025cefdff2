//! Consumer-group settings: Kafka's names and defaults (`offsets.*`, `group.*`), plus the two
//! bounds skein adds where Kafka has none (`group.max.size` defaults to a number, not to
//! `Int.MaxValue`, and `group.max.count` bounds the groups one broker keeps).

use super::{ConfigError, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: asked for when `__consumer_offsets` is created; with
    /// fewer live brokers (or until replication exists) it gets as many as it can, with a warning.
    pub offsets_topic_replication_factor: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: i64,
    /// `offsets.retention.minutes`: how long an empty group's committed offsets are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`: how long an empty group waits for more members before
    /// its first rebalance completes.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`: members one group holds (Kafka: unbounded by default; skein: 1,000).
    pub group_max_size: usize,
    /// `group.max.count` (skein's): groups one broker coordinates at once; a new group beyond it
    /// is refused with COORDINATOR_NOT_AVAILABLE and logged.
    pub group_max_count: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 104_857_600,
            offsets_retention_ms: 10_080 * 60_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1000,
            group_max_count: 100_000,
        }
    }
}

impl GroupConfig {
    /// Takes `key` if it is a group setting: `Ok(true)` when it was one.
    pub(crate) fn set(&mut self, v: &Value<'_>) -> Result<bool, ConfigError> {
        match v.key {
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = v.i32_at_least(1)?;
                if self.offsets_topic_num_partitions > 10_000 {
                    return Err(v.error("at most 10000 partitions"));
                }
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = v.i32_at_least(1)?
            }
            "offsets.topic.segment.bytes" => {
                self.offsets_topic_segment_bytes = v.i64_at_least(14)?
            }
            "offsets.retention.minutes" => {
                self.offsets_retention_ms = v.i64_at_least(1)?.saturating_mul(60_000)
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms = v.i64_at_least(1)?
            }
            "offset.metadata.max.bytes" => {
                let max = v.i32_at_least(0)?;
                // Stored as an int16-length string in __consumer_offsets.
                if max > i32::from(i16::MAX) {
                    return Err(v.error("at most 32767 (the stored string's length is an int16)"));
                }
                self.offset_metadata_max_bytes = max as usize
            }
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = v.i64_at_least(0)?
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = v.i32_at_least(1)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = v.i32_at_least(1)?
            }
            "group.max.size" => self.group_max_size = v.i32_at_least(1)? as usize,
            "group.max.count" => self.group_max_count = v.i32_at_least(1)? as usize,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

//! Consumer groups (Kafka's group coordinator), the parts that do no I/O: the records of
//! `__consumer_offsets` ([`log_format`]) and one group's state machine ([`state`]). The shard
//! that leads a group's `__consumer_offsets` partition runs its groups (`shard::coordinator`);
//! the request handlers route each group request there.

pub mod log_format;
pub mod state;

#[cfg(test)]
mod state_tests;

pub use log_format::partition_for;
pub use state::{Group, GroupState};

/// Kafka's internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether clients may not produce to `topic` (Kafka refuses appends to internal topics).
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

//! Storage: each partition's log on local disk, Kafka-compatible on the inside.
//!
//! A partition is a directory of segments (`<base offset>.log` holding v2 record batches exactly
//! as produced, with sparse `.index` and `.timeindex` beside them) plus producer-state snapshots.
//! This module assigns offsets and enforces idempotent-producer sequences ([`Log::append`]),
//! answers Fetch with byte ranges from the tail cache or the segment files ([`Log::read`]), and
//! runs recovery, roll, retention and flush. The batch format itself is [`crate::record`]'s.
//!
//! Everything here is synchronous, std-only file I/O and runs on the thread of the shard that
//! owns the partition; a `Log` is never shared between shards. The one exception is an append's
//! data write, a [`SegmentWrite`] that owns its buffers and runs on the shard's writer thread. Background work (retention,
//! time-based roll, flush.ms) is driven by that shard's low-priority task queue calling
//! [`Log::enforce_retention`], [`Log::roll_if_due`] and [`Log::flush_if_due`].

mod atomic_file;
pub mod batch_cache;
pub mod error;
mod index_file;
pub mod log;
#[cfg(test)]
mod log_model_tests;
pub mod offset_index;
pub mod partition_metadata;
pub mod producer_state;
mod recovery;
pub mod recovery_point_checkpoint;
pub mod segment;
pub mod time_index;

pub use error::StorageError;
pub use log::{
    ActiveSegmentOpen, AppendOutcome, Log, LogConfig, PreparedAppends, ReadChunk, ReadSlice,
};
pub use producer_state::ProducerStateManager;
pub use segment::SegmentWrite;

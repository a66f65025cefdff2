//! Storage: each partition's log on local disk, Kafka-compatible on the inside.
//!
//! A partition is a directory of segments (`<base offset>.log` holding v2 record batches exactly
//! as produced, with sparse `.index` and `.timeindex` beside them) plus producer-state snapshots
//! and `partition.metadata`; a log directory also holds the `recovery-point-offset-checkpoint`
//! of all its partitions. This module assigns offsets and enforces idempotent-producer sequences
//! ([`Log::append`]), answers Fetch with byte ranges from the tail cache or the segment files
//! ([`Log::read`]), and runs recovery, roll, retention and flush. The batch format itself is
//! [`crate::record`]'s.
//!
//! A `Log` lives on the shard that owns the partition and is never shared between shards. It
//! does no file I/O on that shard's executor: the work that touches files comes out of it as
//! self-contained jobs that the shard runs on its writer thread ([`SegmentWrite`]) or its blocking
//! pool ([`SyncJob`], [`ColdRead`], [`TimestampLookup`], and whole calls such as [`Log::open`] and
//! [`Log::close`]); see [`log`] for how. The checkpoint files are read and written by blocking
//! threads only.

mod atomic_file;
pub mod batch_cache;
pub mod error;
mod index_file;
pub mod leader_epoch;
pub mod log;
#[cfg(test)]
mod log_model_tests;
pub mod offset_index;
pub mod partition_metadata;
#[cfg(test)]
mod power_loss_tests;
pub mod producer_state;
mod recovery;
pub mod recovery_point_checkpoint;
mod scanner;
pub mod segment;
pub mod time_index;

pub use error::StorageError;
pub use log::{
    AppendOrigin, AppendOutcome, ColdRead, ColdReadDone, Log, LogConfig, LogOpened,
    PreparedAppends, ReadChunk, ReadPlan, ReadSlice, SyncDone, SyncJob, TimestampLookup,
};
pub use producer_state::ProducerStateManager;
pub use segment::SegmentWrite;

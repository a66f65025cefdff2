//! Kafka's v2 record batch format, as Kafka's `org.apache.kafka.common.record` holds it: the
//! batch header and splitting a Produce request's records into batches ([`batch`]), varints,
//! records inside a batch ([`walk`]), codecs with bounded decompression ([`codec`]), building
//! batches ([`builder`]), and what a leader checks of a produced batch ([`validate`]).
//!
//! Pure CPU work over byte slices, on whichever thread calls it. A leaf: it imports nothing else
//! of skein, and storage, the request handlers, the client and the tools all use it, so there
//! is one encoder and one decoder of the format.

pub mod batch;
pub mod builder;
pub mod codec;
#[cfg(test)]
pub(crate) mod test_util;
pub mod validate;
pub mod varint;
pub mod walk;

pub use batch::{split_batches, Batch, BatchError, BatchHeader, BATCH_HEADER_BYTES};
pub use builder::{compression_from_name, BatchBuilder, ProducerIds};

//! Batches for unit tests and property tests, built with [`BatchBuilder`] from a short
//! description. Compiled only for tests.

use bytes::Bytes;

use super::batch::{Batch, BatchHeader};
use super::builder::{BatchBuilder, ProducerIds};
use kafka_protocol::records::Compression;

/// What to put in a batch. `Default` is one 10-byte record from a non-idempotent producer.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub records: i32,
    pub value_bytes: usize,
    /// Timestamp of the first record; record `i` gets `base_timestamp + i`.
    pub base_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    /// Byte each value is filled with, so tests can tell batches apart.
    pub fill: u8,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            records: 1,
            value_bytes: 10,
            base_timestamp: 1_700_000_000_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            fill: b'x',
        }
    }
}

/// Builds one uncompressed v2 batch with base offset 0, leader epoch -1 and a correct CRC-32C.
pub fn build_batch(spec: &BatchSpec) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, spec.value_bytes + 80);
    builder.set_producer(ProducerIds {
        producer_id: spec.producer_id,
        producer_epoch: spec.producer_epoch,
        base_sequence: spec.base_sequence,
    });
    builder.set_transactional(spec.transactional);
    let value = vec![spec.fill; spec.value_bytes];
    for i in 0..spec.records {
        builder.append(spec.base_timestamp + i64::from(i), None, &[&value]);
    }
    builder.finish().expect("uncompressed batches always build")
}

/// Builds a batch and wraps it as a [`Batch`].
pub fn batch(spec: &BatchSpec) -> Batch {
    let bytes = build_batch(spec);
    let header = BatchHeader::parse(&bytes).expect("test batch header parses");
    Batch { header, bytes }
}

/// The bytes storage is expected to hand back for `bytes` stored at `base_offset` with
/// `leader_epoch`: the batch with those two fields rewritten.
pub fn patched(bytes: &[u8], base_offset: i64, leader_epoch: i32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[0..8].copy_from_slice(&base_offset.to_be_bytes());
    out[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    out
}

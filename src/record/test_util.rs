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

/// The varint of `value` written in exactly `len` bytes, zero-padded with continuation bytes
/// past what it needs: how a careless encoder writes a small value long.
pub fn padded_varint(value: i64, len: usize) -> Vec<u8> {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let more = if i + 1 < len { 0x80 } else { 0 };
        out.push((zigzag & 0x7f) as u8 | more);
        zigzag >>= 7;
    }
    assert_eq!(zigzag, 0, "{value} does not fit {len} varint bytes");
    out
}

/// A record with key "k", value "v" and one header ("h", "x"), its varints zero-padded to
/// `widths`: timestamp delta, offset delta, key length, value length, header count, header
/// key length, header value length, and last the record's own length.
pub fn padded_record(widths: [usize; 8]) -> Vec<u8> {
    let [timestamp, offset, key, value, headers, header_key, header_value, length] = widths;
    let mut body = vec![0u8];
    body.extend(padded_varint(5, timestamp));
    body.extend(padded_varint(0, offset));
    body.extend(padded_varint(1, key));
    body.push(b'k');
    body.extend(padded_varint(1, value));
    body.push(b'v');
    body.extend(padded_varint(1, headers));
    body.extend(padded_varint(1, header_key));
    body.push(b'h');
    body.extend(padded_varint(1, header_value));
    body.push(b'x');
    let mut out = padded_varint(body.len() as i64, length);
    out.extend(body);
    out
}

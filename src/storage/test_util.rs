//! Builds valid Kafka v2 record batches by hand, for unit tests, property tests, benches and
//! integration tests. Not used on any serving path; it is a plain public module (not behind
//! `cfg(test)`) because benches and `tests/` link the crate as an ordinary library.
//!
//! Records are real v2 varint records (length, attributes, timestamp delta, offset delta, null
//! key, value, no headers) so that a real client could decode what storage hands back.

use bytes::Bytes;

use crate::storage::batch::CRC_START;

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

/// Appends a zigzag varint (Kafka's `varint`/`varlong` encoding).
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds one v2 batch with base offset 0, leader epoch -1 and a correct CRC-32C.
pub fn build_batch(spec: &BatchSpec) -> Bytes {
    assert!(
        spec.records >= 1,
        "a produced batch has at least one record"
    );
    let mut records = Vec::with_capacity(spec.records as usize * (spec.value_bytes + 16));
    let value = vec![spec.fill; spec.value_bytes];
    for i in 0..spec.records {
        let mut body = Vec::with_capacity(spec.value_bytes + 12);
        body.push(0); // attributes
        put_varint(&mut body, i64::from(i)); // timestamp delta
        put_varint(&mut body, i64::from(i)); // offset delta
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, spec.value_bytes as i64);
        body.extend_from_slice(&value);
        put_varint(&mut body, 0); // no headers
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let attributes: i16 = if spec.transactional { 1 << 4 } else { 0 };
    let total = 61 + records.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    out.extend_from_slice(&((total - 12) as i32).to_be_bytes()); // batchLength
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(spec.records - 1).to_be_bytes()); // lastOffsetDelta
    out.extend_from_slice(&spec.base_timestamp.to_be_bytes());
    let max_timestamp = spec.base_timestamp + i64::from(spec.records - 1);
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&spec.producer_id.to_be_bytes());
    out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
    out.extend_from_slice(&spec.base_sequence.to_be_bytes());
    out.extend_from_slice(&spec.records.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// Builds a batch and wraps it as a validated [`crate::storage::Batch`].
pub fn batch(spec: &BatchSpec) -> crate::storage::Batch {
    let bytes = build_batch(spec);
    let header = crate::storage::BatchHeader::parse(&bytes).expect("test batch header parses");
    crate::storage::Batch { header, bytes }
}

/// The bytes storage is expected to hand back for `bytes` stored at `base_offset` with
/// `leader_epoch`: the batch with those two fields rewritten.
pub fn patched(bytes: &[u8], base_offset: i64, leader_epoch: i32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[0..8].copy_from_slice(&base_offset.to_be_bytes());
    out[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    out
}

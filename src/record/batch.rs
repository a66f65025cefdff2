//! The v2 RecordBatch header: parse its 61 bytes, find the batches of a Produce request's
//! `records` by their framing ([`frames`]: header, magic, length), and split them into whole
//! batches whose record count and CRC-32C are checked too ([`split_batches`]). The records
//! inside are [`super::walk`]'s business.

use std::ops::Range;

use bytes::Bytes;

/// Size of the v2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before `batchLength`'s coverage starts: `baseOffset` (8) + `batchLength` (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;

/// The smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;

/// Where the CRC-covered part of a batch starts (the `attributes` field).
pub const CRC_START: usize = 21;

/// Offsets of header fields the broker rewrites (both lie before [`CRC_START`]).
pub const BASE_OFFSET_AT: usize = 0;
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;

/// Kafka's `RecordBatch.NO_TIMESTAMP`: the timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = -1;

pub(crate) const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 1 << 3;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 1 << 4;
pub(crate) const ATTR_CONTROL: i16 = 1 << 5;

/// Why a batch was rejected. `position` is the byte position of the batch within the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch at byte {position}: only {available} bytes left, a batch header needs {BATCH_HEADER_BYTES}")]
    ShortHeader { position: usize, available: usize },
    #[error("batch at byte {position}: batchLength {batch_length} is smaller than the minimum {MIN_BATCH_LENGTH}")]
    InvalidLength { position: usize, batch_length: i32 },
    #[error("batch at byte {position}: batchLength {batch_length} runs past the end of the input ({available} bytes left)")]
    Truncated {
        position: usize,
        batch_length: i32,
        available: usize,
    },
    #[error("batch at byte {position}: unsupported magic {magic}, only v2 batches (magic 2) are accepted")]
    UnsupportedMagic { position: usize, magic: i8 },
    #[error("batch at byte {position}: CRC-32C mismatch, header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch {
        position: usize,
        expected: u32,
        actual: u32,
    },
    #[error("batch at byte {position}: recordsCount {records_count} does not match lastOffsetDelta {last_offset_delta} + 1")]
    InvalidRecordCount {
        position: usize,
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("produce request carries no record batch")]
    Empty,
}

/// The v2 RecordBatch header, decoded from big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after this field (so the whole batch is `batch_length + 12` bytes).
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Decodes the header from the first 61 bytes of `buf`. Checks only that enough bytes are
    /// there and that `batchLength` is plausible; magic is [`frames`]' job, the CRC
    /// [`Frame::check_crc`]'s.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::ShortHeader {
                position: 0,
                available: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidLength {
                position: 0,
                batch_length: header.batch_length,
            });
        }
        Ok(header)
    }

    /// Whole size of the batch on disk and on the wire.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence of the batch's last record. Sequences wrap from i32::MAX to 0, as in Kafka.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn timestamp_type_is_log_append(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    /// True when a producer id is set, i.e. the producer is idempotent or transactional.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// One whole batch exactly as received. `bytes` is a slice of the request (cheap clone).
#[derive(Debug, Clone)]
pub struct Batch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

impl Batch {
    pub fn records_count(&self) -> i32 {
        self.header.records_count
    }
}

/// Checks the CRC-32C of one whole batch (`buf` is exactly the batch).
pub(crate) fn crc_matches(header: &BatchHeader, buf: &[u8]) -> Result<(), u32> {
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual == header.crc {
        Ok(())
    } else {
        Err(actual)
    }
}

/// One batch as the framing of a request's `records` places it: a whole header, magic 2, and a
/// `batchLength` that stays within the input. What framing does not cover, the CRC-32C and the
/// record count, [`Frame::check_crc`] and [`Frame::check_record_count`] check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where the batch starts in the input.
    pub position: usize,
    pub header: BatchHeader,
}

impl Frame {
    /// The batch's bytes in the input.
    pub fn range(&self) -> Range<usize> {
        self.position..self.position + self.header.total_bytes()
    }

    /// Checks the batch's CRC-32C; `records` is the input the frame was found in.
    pub fn check_crc(&self, records: &[u8]) -> Result<(), BatchError> {
        crc_matches(&self.header, &records[self.range()]).map_err(|actual| {
            BatchError::CrcMismatch {
                position: self.position,
                expected: self.header.crc,
                actual,
            }
        })
    }

    /// Checks `recordsCount == lastOffsetDelta + 1 >= 1` (producer input is never compacted, so
    /// a gap means a broken client).
    pub fn check_record_count(&self) -> Result<(), BatchError> {
        let header = &self.header;
        if header.records_count < 1
            || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
        {
            return Err(BatchError::InvalidRecordCount {
                position: self.position,
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(())
    }
}

/// The batches of `records`, in order, with only their framing checked: cheap (61 bytes read
/// per batch), so a caller can count the batches and look at their headers before it spends a
/// pass over every byte on the CRC. Ends after the first error.
pub fn frames(records: &[u8]) -> Frames<'_> {
    Frames {
        records,
        position: 0,
    }
}

/// See [`frames`].
pub struct Frames<'a> {
    records: &'a [u8],
    position: usize,
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.records.len() {
            return None;
        }
        let position = self.position;
        match frame_at(self.records, position) {
            Ok(header) => {
                self.position += header.total_bytes();
                Some(Ok(Frame { position, header }))
            }
            Err(e) => {
                self.position = self.records.len();
                Some(Err(e))
            }
        }
    }
}

/// The header of the batch at `position` in `records`, its framing checked.
fn frame_at(records: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let rest = &records[position..];
    if rest.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::ShortHeader {
            position,
            available: rest.len(),
        });
    }
    let header = BatchHeader::parse(rest).map_err(|e| with_position(e, position))?;
    // Magic first: a v0/v1 message set has a different layout, so its "length" is meaningless.
    if header.magic != 2 {
        return Err(BatchError::UnsupportedMagic {
            position,
            magic: header.magic,
        });
    }
    if header.total_bytes() > rest.len() {
        return Err(BatchError::Truncated {
            position,
            batch_length: header.batch_length,
            available: rest.len(),
        });
    }
    Ok(header)
}

/// Splits a Produce request's `records` into batches and validates each: magic 2, consistent
/// sizes (no short or truncated batch), CRC-32C, and `recordsCount == lastOffsetDelta + 1 >= 1`.
/// Zero copy: every `Batch.bytes` is a slice of `records`.
pub fn split_batches(records: &Bytes) -> Result<Vec<Batch>, BatchError> {
    let mut batches = Vec::new();
    for frame in frames(records) {
        let frame = frame?;
        frame.check_crc(records)?;
        frame.check_record_count()?;
        batches.push(Batch {
            header: frame.header,
            bytes: records.slice(frame.range()),
        });
    }
    if batches.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(batches)
}

fn with_position(error: BatchError, position: usize) -> BatchError {
    match error {
        BatchError::ShortHeader { available, .. } => BatchError::ShortHeader {
            position,
            available,
        },
        BatchError::InvalidLength { batch_length, .. } => BatchError::InvalidLength {
            position,
            batch_length,
        },
        other => other,
    }
}

/// The first 16 bytes of a stored batch: `baseOffset` and `partitionLeaderEpoch` rewritten,
/// `batchLength` kept. Both rewritten fields lie outside the CRC, so the batch stays valid.
pub(crate) fn patched_prefix(bytes: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; 16] {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&bytes[..16]);
    prefix[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{build_batch, BatchSpec};

    fn two_batches() -> Bytes {
        let a = build_batch(&BatchSpec {
            records: 3,
            ..BatchSpec::default()
        });
        let b = build_batch(&BatchSpec {
            records: 1,
            value_bytes: 100,
            ..BatchSpec::default()
        });
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        Bytes::from(all)
    }

    #[test]
    fn splits_good_input_zero_copy() {
        let records = two_batches();
        let batches = split_batches(&records).expect("valid batches");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].header.records_count, 3);
        assert_eq!(batches[0].header.last_offset_delta, 2);
        assert_eq!(batches[1].header.records_count, 1);
        assert_eq!(
            batches[0].bytes.len() + batches[1].bytes.len(),
            records.len()
        );
        // Zero copy: the batch bytes point into the request buffer.
        assert_eq!(batches[0].bytes.as_ptr(), records.as_ptr());
        assert_eq!(
            batches[1].bytes.as_ptr(),
            records[batches[0].bytes.len()..].as_ptr()
        );
    }

    #[test]
    fn rejects_crc_corruption_with_position() {
        let records = two_batches();
        let first_len = split_batches(&records).expect("valid")[0].bytes.len();
        let mut corrupt = records.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let err = split_batches(&Bytes::from(corrupt)).expect_err("corrupt");
        assert!(matches!(err, BatchError::CrcMismatch { position, .. } if position == first_len));
        assert!(err.to_string().contains(&format!("byte {first_len}")));
    }

    #[test]
    fn frames_check_the_framing_only() {
        let records = two_batches();
        let mut corrupt = records.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let found: Vec<Frame> = frames(&corrupt)
            .collect::<Result<_, _>>()
            .expect("the framing is intact");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].position, 0);
        assert_eq!(found[1].position, found[0].range().end);
        assert_eq!(found[1].range().end, corrupt.len());
        assert_eq!(found[1].header.records_count, 1);
        assert_eq!(found[0].check_crc(&corrupt), Ok(()));
        assert!(matches!(
            found[1].check_crc(&corrupt),
            Err(BatchError::CrcMismatch { position, .. }) if position == found[0].range().end
        ));
        // Nothing after the first error.
        let truncated = &records[..records.len() - 5];
        let found: Vec<_> = frames(truncated).collect();
        assert_eq!(found.len(), 2);
        assert!(matches!(found[1], Err(BatchError::Truncated { .. })));
        let mut short = frames(&[0u8; 10]);
        assert!(matches!(
            short.next(),
            Some(Err(BatchError::ShortHeader { available: 10, .. }))
        ));
        assert!(short.next().is_none());
        assert!(frames(&[]).next().is_none());
    }

    #[test]
    fn rejects_truncated_and_short() {
        let records = two_batches();
        let truncated = records.slice(..records.len() - 5);
        assert!(matches!(
            split_batches(&truncated),
            Err(BatchError::Truncated { .. })
        ));
        let first_len = split_batches(&records).expect("valid")[0].bytes.len();
        let short = records.slice(..first_len + 30);
        assert!(matches!(
            split_batches(&short),
            Err(BatchError::ShortHeader { position, available: 30 }) if position == first_len
        ));
        assert_eq!(split_batches(&Bytes::new()).err(), Some(BatchError::Empty));
    }

    #[test]
    fn rejects_magic_1() {
        let mut bytes = build_batch(&BatchSpec::default()).to_vec();
        bytes[16] = 1;
        let err = split_batches(&Bytes::from(bytes)).expect_err("magic 1");
        assert_eq!(
            err,
            BatchError::UnsupportedMagic {
                position: 0,
                magic: 1
            }
        );
    }

    #[test]
    fn rejects_bad_length_and_record_count() {
        let mut bytes = build_batch(&BatchSpec::default()).to_vec();
        bytes[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            split_batches(&Bytes::from(bytes)),
            Err(BatchError::InvalidLength {
                batch_length: 10,
                ..
            })
        ));
        let mut bytes = build_batch(&BatchSpec {
            records: 2,
            ..BatchSpec::default()
        })
        .to_vec();
        bytes[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_batches(&Bytes::from(bytes)),
            Err(BatchError::InvalidRecordCount {
                records_count: 5,
                last_offset_delta: 1,
                ..
            })
        ));
    }

    #[test]
    fn header_fields_and_flags() {
        let spec = BatchSpec {
            records: 4,
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: i32::MAX - 1,
            base_timestamp: 1_000,
            transactional: true,
            ..BatchSpec::default()
        };
        let header = BatchHeader::parse(&build_batch(&spec)).expect("parse");
        assert_eq!(header.producer_id, 7);
        assert_eq!(header.producer_epoch, 2);
        assert_eq!(header.max_timestamp, 1_003);
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.timestamp_type_is_log_append());
        // MAX-1, MAX, 0, 1
        assert_eq!(header.last_sequence(), 1);
    }

    #[test]
    fn patch_keeps_crc_valid() {
        let bytes = build_batch(&BatchSpec::default());
        let mut patched = bytes.to_vec();
        patched[..16].copy_from_slice(&patched_prefix(&bytes, 1234, 9));
        let batches = split_batches(&Bytes::from(patched)).expect("still valid");
        assert_eq!(batches[0].header.base_offset, 1234);
        assert_eq!(batches[0].header.partition_leader_epoch, 9);
    }
}

//! What a partition leader checks of a produced batch before it appends it, as Kafka's
//! `LogValidator` (and `ProduceRequest.validateRecords`, `UnifiedLog.analyzeAndValidateRecords`)
//! do for a client's v2 batches:
//!
//! - exactly one batch per partition, whole, magic 2, base offset 0, at most
//!   `max.message.bytes`, CRC-32C intact (in that order, as Kafka checks them);
//! - `recordsCount` = `lastOffsetDelta` + 1 >= 1, and the records really there are that many,
//!   each well formed with offset deltas 0, 1, 2, ...;
//! - no control batches from clients, no transactional batches (skein has no transactions), a
//!   producer id only with a sequence;
//! - timestamps within `message.timestamp.difference.max.ms`, and with
//!   `message.timestamp.type=LogAppendTime` the batch's timestamp set to the broker's clock;
//! - stored with the topic's `compression.type` when that is not `producer`.
//!
//! A compressed batch is decompressed as a stream, never past [`inflate_limit`], so a small
//! batch cannot make the broker allocate or work without bound. Pure CPU work, on the shard that
//! read the request.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

use super::batch::{
    frames, Batch, BatchError, ATTR_TIMESTAMP_TYPE_LOG_APPEND, BATCH_HEADER_BYTES, CRC_START,
    NO_TIMESTAMP,
};
use super::builder::recompress;
use super::codec::{compression_of, inflate, inflate_all};
use super::walk::{try_for_each_record, try_for_each_record_read, RecordError, RecordView};

/// What the topic and the request ask of a produced batch.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub produce_version: i16,
    /// `max.message.bytes`: the largest batch, as sent.
    pub max_batch_bytes: i64,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `message.timestamp.difference.max.ms`.
    pub timestamp_difference_max_ms: i64,
    /// `compression.type`: the codec to store batches with; `None` keeps the producer's.
    pub store_as: Option<Compression>,
    pub now_ms: i64,
}

/// Why a produced batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBatch {
    #[error(transparent)]
    Framing(#[from] BatchError),
    #[error("{0} record batches where Kafka allows exactly one per partition")]
    MoreThanOneBatch(usize),
    #[error("batch of {bytes} bytes exceeds max.message.bytes {max}")]
    TooLarge { bytes: usize, max: i64 },
    #[error("the batch's base offset is {0}; a client's batch starts at 0")]
    BaseOffset(i64),
    #[error("clients may not write control batches")]
    Control,
    #[error("transactional batch: skein does not support transactions")]
    Transactional,
    #[error("producer id {producer_id} with invalid base sequence {base_sequence}")]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("zstd needs Produce v7 or later, the request is v{0}")]
    ZstdBeforeV7(i16),
    #[error("compressed records: {0}")]
    Inflate(String),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("the producer set the timestamp type to LogAppendTime")]
    ProducerLogAppendTime,
    #[error("record {index}: timestamp {timestamp} is more than message.timestamp.difference.max.ms ({max_ms}) from the broker's clock")]
    Timestamp {
        index: u32,
        timestamp: i64,
        max_ms: i64,
    },
}

/// The only reading that can fail under validation is decompressing the records.
impl From<std::io::Error> for InvalidBatch {
    fn from(error: std::io::Error) -> Self {
        InvalidBatch::Inflate(error.to_string())
    }
}

impl InvalidBatch {
    /// Kafka's error code for it. INVALID_RECORD is not retriable, so a client does not send a
    /// broken batch again; a CRC mismatch stays CORRUPT_MESSAGE (retriable: the bytes may have
    /// been damaged on the way) as in Kafka. A magic other than 2 is INVALID_RECORD too: Kafka's
    /// `ProduceRequest.validateRecords` throws `InvalidRecordException` for it from Produce v3 on,
    /// the only versions skein serves.
    pub fn error_code(&self) -> ResponseError {
        match self {
            InvalidBatch::Framing(BatchError::CrcMismatch { .. }) => ResponseError::CorruptMessage,
            InvalidBatch::TooLarge { .. } => ResponseError::MessageTooLarge,
            InvalidBatch::Transactional => ResponseError::InvalidTxnState,
            InvalidBatch::ZstdBeforeV7(_) => ResponseError::UnsupportedCompressionType,
            InvalidBatch::ProducerLogAppendTime | InvalidBatch::Timestamp { .. } => {
                ResponseError::InvalidTimestamp
            }
            _ => ResponseError::InvalidRecord,
        }
    }
}

/// The most a compressed batch may decompress to: 64 times its own size, and at least 16 MiB.
/// Far beyond what real data compresses by, small enough that a bomb costs at most a few tens of
/// milliseconds of one shard's time.
pub fn inflate_limit(compressed_bytes: usize) -> u64 {
    (compressed_bytes as u64).saturating_mul(64).max(16 << 20)
}

/// A validated batch, ready to append.
#[derive(Debug, Clone)]
pub struct Validated {
    pub batch: Batch,
    /// The broker's clock written into the batch (LogAppendTime), else -1.
    pub log_append_time_ms: i64,
}

/// Validates one partition's `records` from a Produce request.
pub fn validate_produced(records: &Bytes, rules: &Rules) -> Result<Validated, InvalidBatch> {
    // Kafka's order: the request's framing and its one batch (`ProduceRequest.validateRecords`),
    // then base offset, size and CRC (`UnifiedLog.analyzeAndValidateRecords`), then the rest
    // (`LogValidator`). So a second batch is INVALID_RECORD even when its CRC is broken too, and
    // neither an oversized batch nor a broken client's gets a pass over every byte for its CRC.
    let mut frames = frames(records);
    let frame = frames.next().unwrap_or(Err(BatchError::Empty))?;
    let mut batch_count = 1;
    for other in frames {
        other?;
        batch_count += 1;
    }
    if batch_count != 1 {
        return Err(InvalidBatch::MoreThanOneBatch(batch_count));
    }
    let header = frame.header;
    if header.base_offset != 0 {
        return Err(InvalidBatch::BaseOffset(header.base_offset));
    }
    let batch_bytes = header.total_bytes();
    if batch_bytes as i64 > rules.max_batch_bytes {
        return Err(InvalidBatch::TooLarge {
            bytes: batch_bytes,
            max: rules.max_batch_bytes,
        });
    }
    frame.check_crc(records)?;
    frame.check_record_count()?;
    let batch = Batch {
        header,
        bytes: records.slice(frame.range()),
    };
    if header.is_control() {
        return Err(InvalidBatch::Control);
    }
    if header.is_transactional() {
        return Err(InvalidBatch::Transactional);
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(InvalidBatch::InvalidSequence {
            producer_id: header.producer_id,
            base_sequence: header.base_sequence,
        });
    }
    if header.timestamp_type_is_log_append() {
        return Err(InvalidBatch::ProducerLogAppendTime);
    }
    let compression = compression_of(header.attributes)
        .ok_or(InvalidBatch::UnknownCodec(header.attributes & 7))?;
    if compression == Compression::Zstd && rules.produce_version < 7 {
        return Err(InvalidBatch::ZstdBeforeV7(rules.produce_version));
    }
    let check_timestamps = !rules.log_append_time && rules.timestamp_difference_max_ms < i64::MAX;
    let mut check = |index: u32, record: RecordView<'_>| -> Result<(), InvalidBatch> {
        if record.offset_delta as i64 != index as i64 {
            return Err(RecordError::OffsetDelta {
                index,
                found: record.offset_delta,
            }
            .into());
        }
        if check_timestamps {
            let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
            let max_ms = rules.timestamp_difference_max_ms;
            // A record without a timestamp has none to check, as in Kafka's `validateTimestamp`.
            if timestamp != NO_TIMESTAMP && timestamp.abs_diff(rules.now_ms) > max_ms as u64 {
                return Err(InvalidBatch::Timestamp {
                    index,
                    timestamp,
                    max_ms,
                });
            }
        }
        Ok(())
    };
    let records_section = &batch.bytes[BATCH_HEADER_BYTES..];
    let limit = inflate_limit(batch.bytes.len());
    let batch = match rules.store_as.filter(|&c| c != compression) {
        None if compression == Compression::None => {
            try_for_each_record(records_section, header.records_count, &mut check)?;
            batch
        }
        None => {
            let reader = inflate(compression, records_section, limit)?;
            try_for_each_record_read(reader, header.records_count, &mut check)?;
            batch
        }
        // The topic stores another codec: the records are needed whole, to compress again.
        Some(store_as) => {
            let records = inflate_all(compression, records_section, limit)?;
            try_for_each_record(&records, header.records_count, &mut check)?;
            recompress(&header, &records, store_as)
                .map_err(|e| InvalidBatch::Inflate(format!("{e:#}")))?
        }
    };
    if !rules.log_append_time {
        return Ok(Validated {
            batch,
            log_append_time_ms: -1,
        });
    }
    Ok(Validated {
        batch: with_log_append_time(&batch, rules.now_ms),
        log_append_time_ms: rules.now_ms,
    })
}

/// The batch with LogAppendTime set: the timestamp-type bit, `maxTimestamp` = `now_ms` and the
/// CRC-32C computed again (both fields lie inside it). One copy of the batch, made only for
/// topics that ask for LogAppendTime, as Kafka rewrites the batch in place.
fn with_log_append_time(batch: &Batch, now_ms: i64) -> Batch {
    let mut bytes = BytesMut::from(&batch.bytes[..]);
    let mut header = batch.header;
    header.attributes |= ATTR_TIMESTAMP_TYPE_LOG_APPEND;
    header.max_timestamp = now_ms;
    bytes[21..23].copy_from_slice(&header.attributes.to_be_bytes());
    bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
    header.crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&header.crc.to_be_bytes());
    Batch {
        header,
        bytes: bytes.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::batch::{split_batches, BatchHeader};
    use crate::record::builder::{BatchBuilder, ProducerIds};
    use crate::record::codec::ATTR_COMPRESSION_MASK;
    use crate::record::test_util::padded_record;

    const NOW: i64 = 1_700_000_000_000;

    fn rules() -> Rules {
        Rules {
            produce_version: 9,
            max_batch_bytes: 1 << 20,
            log_append_time: false,
            timestamp_difference_max_ms: i64::MAX,
            store_as: None,
            now_ms: NOW,
        }
    }

    fn build(compression: Compression, records: i32, value_bytes: usize) -> Bytes {
        let mut builder = BatchBuilder::new(compression, 1024);
        let value = vec![b'v'; value_bytes];
        for i in 0..records {
            builder.append(NOW + i64::from(i), Some(b"key"), &[&value]);
        }
        builder.finish().expect("builds")
    }

    /// `bytes` with `edit` applied and the CRC made valid again, so only the edit is wrong.
    fn tampered(bytes: &Bytes, edit: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut out = bytes.to_vec();
        edit(&mut out);
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// A batch of `count` records whose records section is `section` (before compression).
    fn batch_around(section: &[u8], count: i32, compression: Compression) -> Bytes {
        let template = BatchHeader::parse(&build(Compression::None, count, 1)).unwrap();
        recompress(&template, section, compression).unwrap().bytes
    }

    fn error(records: &Bytes, rules: &Rules) -> InvalidBatch {
        validate_produced(records, rules).expect_err("refused")
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn batches_from_every_codec_pass_unchanged() {
        for compression in CODECS {
            let bytes = build(compression, 20, 50);
            let validated = validate_produced(&bytes, &rules()).expect("valid");
            assert_eq!(validated.batch.bytes, bytes, "{compression:?}");
            assert_eq!(validated.log_append_time_ms, -1);
            // Zero copy: the batch is the request's bytes.
            assert_eq!(validated.batch.bytes.as_ptr(), bytes.as_ptr());
        }
    }

    #[test]
    fn exactly_one_batch_per_partition() {
        let one = build(Compression::None, 1, 1);
        let two = Bytes::from([one.to_vec(), one.to_vec()].concat());
        assert_eq!(error(&two, &rules()), InvalidBatch::MoreThanOneBatch(2));
        assert_eq!(
            error(&two, &rules()).error_code(),
            ResponseError::InvalidRecord
        );
    }

    #[test]
    fn the_framing_and_the_one_batch_rule_come_before_the_crc() {
        let one = build(Compression::None, 2, 5);
        let mut broken = one.to_vec();
        *broken.last_mut().unwrap() ^= 1;
        // A broken CRC in either batch of two: still "more than one batch", not retriable.
        for two in [[&one[..], &broken].concat(), [&broken, &one[..]].concat()] {
            let e = error(&Bytes::from(two), &rules());
            assert_eq!(e, InvalidBatch::MoreThanOneBatch(2));
            assert_eq!(e.error_code(), ResponseError::InvalidRecord);
        }
        let three = Bytes::from([&one[..], &one, &broken].concat());
        assert_eq!(error(&three, &rules()), InvalidBatch::MoreThanOneBatch(3));
        // A second batch whose framing is broken: that is the answer, whatever else is wrong.
        let cut = Bytes::from([&broken[..], &one[..one.len() - 1]].concat());
        assert!(matches!(
            error(&cut, &rules()),
            InvalidBatch::Framing(BatchError::Truncated { position, .. }) if position == one.len()
        ));
    }

    #[test]
    fn base_offset_and_size_come_before_the_crc() {
        let big = build(Compression::None, 3, 500);
        let mut broken = big.to_vec();
        *broken.last_mut().unwrap() ^= 1;
        let broken = Bytes::from(broken);
        assert!(matches!(
            error(&broken, &rules()),
            InvalidBatch::Framing(BatchError::CrcMismatch { .. })
        ));
        let small = Rules {
            max_batch_bytes: 1000,
            ..rules()
        };
        let e = error(&broken, &small);
        assert_eq!(
            e,
            InvalidBatch::TooLarge {
                bytes: big.len(),
                max: 1000
            }
        );
        assert_eq!(e.error_code(), ResponseError::MessageTooLarge);
        // baseOffset lies outside the CRC: only the tampered record byte breaks it.
        let mut offset = broken.to_vec();
        offset[0..8].copy_from_slice(&7i64.to_be_bytes());
        assert_eq!(
            error(&Bytes::from(offset), &small),
            InvalidBatch::BaseOffset(7)
        );
    }

    #[test]
    fn a_declared_count_the_records_do_not_match_is_refused() {
        // 3 records, declared as 2 and as 4, uncompressed and compressed (walked as a stream).
        for compression in [Compression::None, Compression::Zstd] {
            let bytes = build(compression, 3, 5);
            for (declared, expected) in [
                (2i32, RecordError::MoreThanDeclared { declared: 2 }),
                (
                    4,
                    RecordError::FewerThanDeclared {
                        declared: 4,
                        found: 3,
                    },
                ),
            ] {
                let lying = tampered(&bytes, |b| {
                    b[23..27].copy_from_slice(&(declared - 1).to_be_bytes());
                    b[57..61].copy_from_slice(&declared.to_be_bytes());
                });
                let e = error(&lying, &rules());
                assert_eq!(
                    e,
                    InvalidBatch::Records(expected),
                    "{compression:?}, {declared} declared"
                );
                assert_eq!(e.error_code(), ResponseError::InvalidRecord);
            }
        }
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        let bytes = build(Compression::None, 2, 5);
        // Record 0: length, attributes, timestamp delta 0, then its offset delta: make it 1.
        let shifted = tampered(&bytes, |b| b[BATCH_HEADER_BYTES + 3] = 2);
        assert_eq!(
            error(&shifted, &rules()),
            InvalidBatch::Records(RecordError::OffsetDelta { index: 0, found: 1 })
        );
    }

    #[test]
    fn a_magic_other_than_2_is_an_invalid_record() {
        let bytes = build(Compression::None, 1, 1);
        for magic in [0u8, 1, 3] {
            let mut other = bytes.to_vec();
            other[16] = magic;
            let e = error(&Bytes::from(other), &rules());
            assert_eq!(
                e,
                InvalidBatch::Framing(BatchError::UnsupportedMagic {
                    position: 0,
                    magic: magic as i8
                })
            );
            assert_eq!(
                e.error_code(),
                ResponseError::InvalidRecord,
                "magic {magic}"
            );
        }
    }

    #[test]
    fn a_record_field_in_a_varint_longer_than_java_reads_is_refused() {
        for compression in [Compression::None, Compression::Gzip] {
            let five = batch_around(&padded_record([1, 1, 1, 5, 1, 1, 1, 5]), 1, compression);
            assert!(
                validate_produced(&five, &rules()).is_ok(),
                "{compression:?}"
            );
            // The value length, then the record length (which a compressed batch reads from
            // the stream), in 6 bytes.
            for widths in [[1, 1, 1, 6, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 6]] {
                let six = batch_around(&padded_record(widths), 1, compression);
                let e = error(&six, &rules());
                assert!(
                    matches!(
                        e,
                        InvalidBatch::Records(RecordError::Malformed { index: 0, .. })
                    ),
                    "{compression:?} {widths:?}: {e}"
                );
                assert_eq!(e.error_code(), ResponseError::InvalidRecord);
            }
        }
    }

    #[test]
    fn control_transactional_and_sequence_rules() {
        let bytes = build(Compression::None, 1, 1);
        let control = tampered(&bytes, |b| b[22] |= 1 << 5);
        assert_eq!(error(&control, &rules()), InvalidBatch::Control);
        let transactional = tampered(&bytes, |b| b[22] |= 1 << 4);
        assert_eq!(
            error(&transactional, &rules()).error_code(),
            ResponseError::InvalidTxnState
        );
        let mut builder = BatchBuilder::new(Compression::None, 128);
        builder.set_producer(ProducerIds {
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: -1,
        });
        builder.append(NOW, None, &[b"x"]);
        let no_sequence = builder.finish().unwrap();
        assert!(matches!(
            error(&no_sequence, &rules()),
            InvalidBatch::InvalidSequence { producer_id: 5, .. }
        ));
        let offset = tampered(&bytes, |b| b[0..8].copy_from_slice(&7i64.to_be_bytes()));
        assert_eq!(error(&offset, &rules()), InvalidBatch::BaseOffset(7));
    }

    #[test]
    fn framing_errors_keep_their_codes() {
        let bytes = build(Compression::None, 2, 5);
        let mut corrupt = bytes.to_vec();
        *corrupt.last_mut().unwrap() ^= 1;
        let e = error(&Bytes::from(corrupt), &rules());
        assert_eq!(e.error_code(), ResponseError::CorruptMessage, "{e}");
        let big = build(Compression::None, 1, 2000);
        let small = Rules {
            max_batch_bytes: 1000,
            ..rules()
        };
        assert_eq!(
            error(&big, &small).error_code(),
            ResponseError::MessageTooLarge
        );
        let unknown = tampered(&bytes, |b| b[22] |= ATTR_COMPRESSION_MASK as u8);
        assert_eq!(error(&unknown, &rules()), InvalidBatch::UnknownCodec(7));
        let zstd = build(Compression::Zstd, 1, 1);
        let v6 = Rules {
            produce_version: 6,
            ..rules()
        };
        assert_eq!(
            error(&zstd, &v6).error_code(),
            ResponseError::UnsupportedCompressionType
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_limit() {
        // 1 record of 40 MiB of one byte: compresses to a few KiB, inflates past 16 MiB.
        // (Snappy cannot compress by more than ~21x, so no snappy batch inflates past 64x its
        // size; its lying block lengths are codec::tests' business.)
        for compression in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let bomb = build(compression, 1, 40 << 20);
            assert!(
                bomb.len() < (40 << 20) / 64,
                "{compression:?}: {} bytes",
                bomb.len()
            );
            let e = error(&bomb, &rules());
            assert!(
                matches!(e, InvalidBatch::Inflate(_)),
                "{compression:?}: {e}"
            );
            assert_eq!(e.error_code(), ResponseError::InvalidRecord);
        }
    }

    #[test]
    fn log_append_time_rewrites_the_timestamp_and_keeps_the_crc_valid() {
        let bytes = build(Compression::Lz4, 3, 5);
        let append_time = Rules {
            log_append_time: true,
            now_ms: NOW + 99,
            ..rules()
        };
        let validated = validate_produced(&bytes, &append_time).expect("valid");
        assert_eq!(validated.log_append_time_ms, NOW + 99);
        let again = split_batches(&validated.batch.bytes).expect("CRC still valid");
        assert_eq!(again[0].header.max_timestamp, NOW + 99);
        assert!(again[0].header.timestamp_type_is_log_append());
        assert_eq!(again[0].header, validated.batch.header);
        // A producer may not claim LogAppendTime itself.
        assert_eq!(
            error(&validated.batch.bytes, &rules()),
            InvalidBatch::ProducerLogAppendTime
        );
    }

    #[test]
    fn a_topic_codec_other_than_the_producers_recompresses_the_records_unchanged() {
        for (from, to) in [
            (Compression::None, Compression::Zstd),
            (Compression::Gzip, Compression::None),
            (Compression::Snappy, Compression::Lz4),
        ] {
            let bytes = build(from, 7, 30);
            let stored = Rules {
                store_as: Some(to),
                ..rules()
            };
            let validated = validate_produced(&bytes, &stored).expect("valid");
            let header = validated.batch.header;
            assert_eq!(
                compression_of(header.attributes),
                Some(to),
                "{from:?} -> {to:?}"
            );
            let again = split_batches(&validated.batch.bytes).expect("CRC valid");
            assert_eq!(again[0].header, header);
            let original = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(
                (
                    header.records_count,
                    header.base_timestamp,
                    header.max_timestamp
                ),
                (
                    original.records_count,
                    original.base_timestamp,
                    original.max_timestamp
                )
            );
            let section = |b: &Bytes, h: &BatchHeader| {
                crate::record::codec::records_section(h, b, 1 << 20).unwrap()
            };
            assert_eq!(
                section(&validated.batch.bytes, &header),
                section(&bytes, &original),
                "the same records"
            );
        }
        // The producer's codec already: the batch is kept as sent.
        let zstd = build(Compression::Zstd, 2, 5);
        let same = Rules {
            store_as: Some(Compression::Zstd),
            ..rules()
        };
        let kept = validate_produced(&zstd, &same).unwrap();
        assert_eq!(kept.batch.bytes.as_ptr(), zstd.as_ptr());
    }

    #[test]
    fn timestamps_far_from_the_broker_clock_are_refused_when_the_topic_says_so() {
        let bytes = build(Compression::None, 3, 5);
        let strict = Rules {
            timestamp_difference_max_ms: 1,
            now_ms: NOW + 100,
            ..rules()
        };
        assert!(matches!(
            error(&bytes, &strict),
            InvalidBatch::Timestamp { index: 0, .. }
        ));
        let loose = Rules {
            timestamp_difference_max_ms: 100,
            now_ms: NOW + 100,
            ..rules()
        };
        assert!(validate_produced(&bytes, &loose).is_ok());
    }

    #[test]
    fn records_without_a_timestamp_are_not_held_to_the_difference() {
        let strict = Rules {
            timestamp_difference_max_ms: 1,
            ..rules()
        };
        // Every record at NO_TIMESTAMP: base timestamp -1, deltas 0.
        let mut builder = BatchBuilder::new(Compression::None, 1024);
        for _ in 0..3 {
            builder.append(NO_TIMESTAMP, None, &[b"v"]);
        }
        let untimed = builder.finish().unwrap();
        assert!(validate_produced(&untimed, &strict).is_ok());
        // One record without a timestamp among timed ones: only the timed ones are checked.
        let mut builder = BatchBuilder::new(Compression::Gzip, 1024);
        builder.append(NOW, None, &[b"v"]);
        builder.append(NO_TIMESTAMP, None, &[b"v"]);
        let mixed = builder.finish().unwrap();
        let now = Rules {
            now_ms: NOW,
            ..strict
        };
        assert!(validate_produced(&mixed, &now).is_ok());
        // A timestamp of -2 is no marker: it is checked like any other.
        let mut builder = BatchBuilder::new(Compression::None, 1024);
        builder.append(-2, None, &[b"v"]);
        assert!(matches!(
            error(&builder.finish().unwrap(), &strict),
            InvalidBatch::Timestamp {
                index: 0,
                timestamp: -2,
                ..
            }
        ));
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::record::builder::BatchBuilder;

    /// For `valgrind --tool=callgrind`: validates a 10,000-record batch of 100-byte values 100
    /// times (instruction counts are repeatable where timings on a shared machine are not).
    #[test]
    #[ignore = "a cost probe, run by hand under callgrind"]
    fn validation_cost() {
        let mut builder = BatchBuilder::new(Compression::None, 1 << 21);
        let value = [b'v'; 100];
        for i in 0..10_000 {
            builder.append(1_700_000_000_000 + i, None, &[&value]);
        }
        let batch = builder.finish().unwrap();
        let rules = Rules {
            produce_version: 9,
            max_batch_bytes: 16 << 20,
            log_append_time: false,
            timestamp_difference_max_ms: i64::MAX,
            store_as: None,
            now_ms: 0,
        };
        for _ in 0..100 {
            std::hint::black_box(validate_produced(std::hint::black_box(&batch), &rules).unwrap());
        }
    }
}

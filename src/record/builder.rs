//! [`BatchBuilder`]: encodes records straight into a v2 batch buffer (varint records after the
//! 61-byte header, optional compression, CRC-32C over the rest). The load generator and the mirror
//! produce with it, and tests build the batches they send or store with it.

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::Compression;

use super::batch::{Batch, BatchHeader, ATTR_TRANSACTIONAL, BATCH_HEADER_BYTES, CRC_START};
use super::codec::ATTR_COMPRESSION_MASK;
use super::varint::{put_varint, varint_len};

/// Parses a codec name the way Kafka spells it (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn compression_from_name(name: &str) -> Option<Compression> {
    Some(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// Who produces the batch: Kafka's producer id, epoch and first sequence (all -1 for a producer
/// that is not idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIds {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerIds {
    pub const NONE: ProducerIds = ProducerIds {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Builds one v2 batch at a time for one partition. Reused: [`BatchBuilder::finish`] hands the
/// bytes out and starts the next batch.
pub struct BatchBuilder {
    compression: Compression,
    /// For an uncompressed batch this holds the header's 61 bytes followed by the records, so
    /// the finished batch is split off without a copy; compressed, only the records.
    buf: BytesMut,
    records: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    capacity_hint: usize,
    producer: ProducerIds,
    transactional: bool,
}

impl BatchBuilder {
    pub fn new(compression: Compression, capacity_hint: usize) -> BatchBuilder {
        let mut builder = BatchBuilder {
            compression,
            buf: BytesMut::new(),
            records: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
            capacity_hint: capacity_hint.max(BATCH_HEADER_BYTES + 64),
            producer: ProducerIds::NONE,
            transactional: false,
        };
        builder.reset();
        builder
    }

    /// Sets the producer fields of the batches finished from now on.
    pub fn set_producer(&mut self, producer: ProducerIds) {
        self.producer = producer;
    }

    /// Marks the batches finished from now on as transactional.
    pub fn set_transactional(&mut self, transactional: bool) {
        self.transactional = transactional;
    }

    fn header_room(&self) -> usize {
        if self.compression == Compression::None {
            BATCH_HEADER_BYTES
        } else {
            0
        }
    }

    fn reset(&mut self) {
        self.records = 0;
        self.buf.clear();
        // A fresh allocation for each batch: the previous one now belongs to an in-flight request.
        if self.buf.capacity() < self.capacity_hint {
            self.buf.reserve(self.capacity_hint);
        }
        self.buf.put_bytes(0, self.header_room());
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn records(&self) -> i32 {
        self.records
    }

    /// Uncompressed size so far, header included: what `--batch-bytes` is compared with.
    pub fn size_bytes(&self) -> usize {
        self.buf.len() + BATCH_HEADER_BYTES - self.header_room()
    }

    /// Appends one record whose value is the concatenation of `value_parts` (so a caller can
    /// write a small header and a slice of shared padding without assembling them first).
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]]) {
        if self.records == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.records);
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum();
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body_len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, |k| k.len())
            + varint_len(value_len as i64)
            + value_len
            + 1;
        self.buf.reserve(body_len + 5);
        put_varint(&mut self.buf, body_len as i64);
        self.buf.put_u8(0); // attributes
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.put_slice(k);
        }
        put_varint(&mut self.buf, value_len as i64);
        for part in value_parts {
            self.buf.put_slice(part);
        }
        put_varint(&mut self.buf, 0); // no headers
        self.records += 1;
    }

    /// Appends one record with a null value (a tombstone: for a compacted topic, "this key is
    /// gone").
    pub fn append_tombstone(&mut self, timestamp_ms: i64, key: &[u8]) {
        if self.records == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.records);
        let body_len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + varint_len(key.len() as i64)
            + key.len()
            + varint_len(-1)
            + 1;
        self.buf.reserve(body_len + 5);
        put_varint(&mut self.buf, body_len as i64);
        self.buf.put_u8(0); // attributes
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key.len() as i64);
        self.buf.put_slice(key);
        put_varint(&mut self.buf, -1);
        put_varint(&mut self.buf, 0); // no headers
        self.records += 1;
    }

    /// Finishes the batch (base offset 0, leader epoch -1, CRC-32C set) and starts the next one.
    pub fn finish(&mut self) -> anyhow::Result<Bytes> {
        assert!(self.records > 0, "finish() called on an empty batch");
        let mut batch = if self.compression == Compression::None {
            self.buf.split()
        } else {
            compressed_batch(self.compression, self.buf.split())?
        };
        let mut attributes = self.compression as i16;
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        let header = BatchHeader {
            base_offset: 0,
            batch_length: 0, // written from the length below
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: self.records - 1,
            base_timestamp: self.base_timestamp_ms,
            max_timestamp: self.max_timestamp_ms,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            records_count: self.records,
        };
        write_header(&mut batch, &header);
        self.reset();
        Ok(batch.freeze())
    }
}

/// `records` (an uncompressed records section) compressed after 61 bytes of room for a header.
fn compressed_batch(compression: Compression, mut records: BytesMut) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len() / 2);
    out.put_bytes(0, BATCH_HEADER_BYTES);
    let hand_over = |tmp: &mut BytesMut| {
        std::mem::swap(tmp, &mut records);
        Ok(())
    };
    match compression {
        Compression::Gzip => Gzip::compress(&mut out, hand_over),
        Compression::Snappy => Snappy::compress(&mut out, hand_over),
        Compression::Lz4 => Lz4::compress(&mut out, hand_over),
        Compression::Zstd => Zstd::compress(&mut out, hand_over),
        Compression::None => {
            out.extend_from_slice(&records);
            Ok(())
        }
    }
    .with_context(|| format!("compressing a batch with {compression:?}"))?;
    Ok(out)
}

/// Writes `header` into the first 61 bytes of `batch`, with `batchLength` from the buffer's
/// length and the CRC-32C over the rest.
fn write_header(batch: &mut BytesMut, header: &BatchHeader) {
    let total = batch.len();
    let h = &mut batch[..BATCH_HEADER_BYTES];
    h[0..8].copy_from_slice(&header.base_offset.to_be_bytes());
    h[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
    h[12..16].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
    h[16] = 2;
    h[21..23].copy_from_slice(&header.attributes.to_be_bytes());
    h[23..27].copy_from_slice(&header.last_offset_delta.to_be_bytes());
    h[27..35].copy_from_slice(&header.base_timestamp.to_be_bytes());
    h[35..43].copy_from_slice(&header.max_timestamp.to_be_bytes());
    h[43..51].copy_from_slice(&header.producer_id.to_be_bytes());
    h[51..53].copy_from_slice(&header.producer_epoch.to_be_bytes());
    h[53..57].copy_from_slice(&header.base_sequence.to_be_bytes());
    h[57..61].copy_from_slice(&header.records_count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A batch with `header`'s fields around `records` (its uncompressed records section), stored
/// with `compression`: what the broker writes when a topic's `compression.type` differs from
/// the producer's codec. The record bodies do not change (offset and timestamp deltas are
/// relative to the header), so nothing is decoded and encoded again; only the codec bits,
/// `batchLength` and the CRC are new.
pub fn recompress(
    header: &BatchHeader,
    records: &[u8],
    compression: Compression,
) -> anyhow::Result<Batch> {
    let mut batch = compressed_batch(compression, BytesMut::from(records))?;
    let mut header = *header;
    header.attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | compression as i16;
    write_header(&mut batch, &header);
    let header = BatchHeader::parse(&batch).context("a rebuilt batch parses")?;
    Ok(Batch {
        header,
        bytes: batch.freeze(),
    })
}

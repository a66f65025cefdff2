//! Kafka v2 record batches on the client side: [`BatchBuilder`] encodes records straight into the
//! batch buffer (varint records after a 61-byte header, CRC-32C over the rest, optional
//! compression through `kafka-protocol`'s codecs), and [`for_each_record`] walks the records of a
//! fetched batch without allocating per record.
//!
//! Pure CPU work; runs on whichever bench thread owns the connection. Nothing here panics on bad
//! input: a malformed fetched batch is an error value.

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::Compression;

use crate::storage::batch::{BatchHeader, BATCH_HEADER_BYTES, CRC_START};

/// The attributes bits that name the codec.
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// Bytes a zigzag varint of `value` takes.
pub fn varint_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a zigzag varint from `buf` at `*at`, advancing `*at`.
fn get_varint(buf: &[u8], at: &mut usize) -> anyhow::Result<i64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&b) = buf.get(*at) else {
            bail!("record varint runs past the end of the batch");
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("record varint longer than 10 bytes");
        }
    }
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Parses `--compression` names the way Kafka spells them.
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
        };
        builder.reset();
        builder
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

    /// Finishes the batch (base offset 0, no producer id, CRC-32C set) and starts the next one.
    pub fn finish(&mut self) -> anyhow::Result<Bytes> {
        assert!(self.records > 0, "finish() called on an empty batch");
        let mut batch = if self.compression == Compression::None {
            self.buf.split()
        } else {
            let mut records = self.buf.split();
            let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len() / 2);
            out.put_bytes(0, BATCH_HEADER_BYTES);
            let hand_over = |tmp: &mut BytesMut| {
                std::mem::swap(tmp, &mut records);
                Ok(())
            };
            match self.compression {
                Compression::Gzip => Gzip::compress(&mut out, hand_over),
                Compression::Snappy => Snappy::compress(&mut out, hand_over),
                Compression::Lz4 => Lz4::compress(&mut out, hand_over),
                Compression::Zstd => Zstd::compress(&mut out, hand_over),
                Compression::None => unreachable!("handled above"),
            }
            .with_context(|| format!("compressing a batch with {:?}", self.compression))?;
            out
        };
        let total = batch.len();
        let header = &mut batch[..BATCH_HEADER_BYTES];
        header[0..8].copy_from_slice(&0i64.to_be_bytes()); // baseOffset
        header[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes()); // batchLength
        header[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        header[16] = 2; // magic
        header[21..23].copy_from_slice(&(self.compression as i16).to_be_bytes()); // attributes
        header[23..27].copy_from_slice(&(self.records - 1).to_be_bytes()); // lastOffsetDelta
        header[27..35].copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        header[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producerId
        header[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        header[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        header[57..61].copy_from_slice(&self.records.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        self.reset();
        Ok(batch.freeze())
    }
}

/// The codec a batch's attributes name.
pub fn batch_compression(header: &BatchHeader) -> anyhow::Result<Compression> {
    Ok(match header.attributes & ATTR_COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => bail!("unknown compression codec {other} in batch attributes"),
    })
}

/// The records section of a whole batch, decompressed if the batch is compressed.
pub fn batch_records(header: &BatchHeader, batch: &Bytes) -> anyhow::Result<Bytes> {
    let mut body = batch.slice(BATCH_HEADER_BYTES..header.total_bytes().min(batch.len()));
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    Ok(match batch_compression(header)? {
        Compression::None => body,
        Compression::Gzip => Gzip::decompress(&mut body, take)?,
        Compression::Snappy => Snappy::decompress(&mut body, take)?,
        Compression::Lz4 => Lz4::decompress(&mut body, take)?,
        Compression::Zstd => Zstd::decompress(&mut body, take)?,
    })
}

/// One record of a batch, borrowed from the records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

fn get_bytes<'a>(buf: &'a [u8], at: &mut usize, len: i64) -> anyhow::Result<Option<&'a [u8]>> {
    if len < 0 {
        return Ok(None);
    }
    let end = at
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .context("record field runs past the end of its record")?;
    let slice = &buf[*at..end];
    *at = end;
    Ok(Some(slice))
}

/// Walks `count` varint records in `records` (a batch's records section, uncompressed).
pub fn for_each_record(
    records: &[u8],
    count: i32,
    mut f: impl FnMut(RecordView<'_>),
) -> anyhow::Result<()> {
    let mut at = 0usize;
    for i in 0..count {
        let length = get_varint(records, &mut at)?;
        let Some(record) = get_bytes(records, &mut at, length)? else {
            bail!("record {i} has a negative length {length}");
        };
        let mut r = 0usize;
        if record.is_empty() {
            bail!("record {i} is empty");
        }
        r += 1; // attributes
        let timestamp_delta = get_varint(record, &mut r)?;
        let offset_delta = get_varint(record, &mut r)?;
        let key_len = get_varint(record, &mut r)?;
        let key = get_bytes(record, &mut r, key_len)?;
        let value_len = get_varint(record, &mut r)?;
        let value = get_bytes(record, &mut r, value_len)?;
        // Headers are not looked at; the record's length already bounds them.
        f(RecordView {
            offset_delta: i32::try_from(offset_delta)
                .with_context(|| format!("record {i}: offset delta {offset_delta}"))?,
            timestamp_delta,
            key,
            value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::split_batches;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(compression: Compression, n: i32) -> Bytes {
        let mut builder = BatchBuilder::new(compression, 4096);
        for i in 0..n {
            let key = format!("k{i}");
            let value = format!("value-{i}");
            builder.append(
                1_700_000_000_000 + i64::from(i),
                (i % 2 == 0).then_some(key.as_bytes()),
                &[value.as_bytes(), b"-pad"],
            );
        }
        builder.finish().expect("finish")
    }

    #[test]
    fn varint_lengths() {
        for v in [0i64, 1, -1, 63, -64, 64, 1000, -1000, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "value {v}");
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at).unwrap(), v);
        }
    }

    #[test]
    fn batches_pass_broker_validation_and_decode_with_kafka_protocol() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = build(compression, 5);
            let batches = split_batches(&bytes).expect("broker accepts the batch");
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].header.records_count, 5);
            assert_eq!(batch_compression(&batches[0].header).unwrap(), compression);

            let mut buf = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes it");
            assert_eq!(set.compression, compression);
            assert_eq!(set.records.len(), 5);
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                let value = format!("value-{i}-pad");
                assert_eq!(r.value.as_deref(), Some(value.as_bytes()));
                let key = format!("k{i}");
                assert_eq!(r.key.as_deref(), (i % 2 == 0).then_some(key.as_bytes()));
            }

            let records = batch_records(&batches[0].header, &bytes).expect("records");
            let mut seen = Vec::new();
            for_each_record(&records, 5, |r| {
                seen.push((r.offset_delta, r.value.map(|v| v.to_vec())));
            })
            .expect("walk");
            assert_eq!(seen.len(), 5);
            assert_eq!(seen[3].0, 3);
            assert_eq!(seen[3].1.as_deref(), Some(&b"value-3-pad"[..]));
        }
    }

    #[test]
    fn builder_is_reusable() {
        let mut builder = BatchBuilder::new(Compression::None, 128);
        builder.append(1, None, &[b"a"]);
        let first = builder.finish().unwrap();
        assert!(builder.is_empty());
        builder.append(2, None, &[b"b"]);
        builder.append(3, None, &[b"c"]);
        let second = builder.finish().unwrap();
        assert_eq!(split_batches(&first).unwrap()[0].header.records_count, 1);
        let header = split_batches(&second).unwrap()[0].header;
        assert_eq!(header.records_count, 2);
        assert_eq!(header.base_timestamp, 2);
        assert_eq!(header.max_timestamp, 3);
    }

    #[test]
    fn malformed_records_are_errors() {
        let bytes = build(Compression::None, 3);
        let header = BatchHeader::parse(&bytes).unwrap();
        let records = batch_records(&header, &bytes).unwrap();
        // Claim more records than there are.
        assert!(for_each_record(&records, 4, |_| {}).is_err());
        // Cut a record short.
        assert!(for_each_record(&records[..records.len() - 3], 3, |_| {}).is_err());
        assert!(for_each_record(&[0xff; 12], 1, |_| {}).is_err());
    }
}

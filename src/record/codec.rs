//! Batch compression: which codec a batch names, and streaming decompression with a bound on
//! what comes out, so a small compressed batch cannot make the broker allocate or spin without
//! limit (a decompression bomb). Kafka's codecs: gzip, snappy (raw or in snappy-java's framing,
//! as the Java client writes it), lz4 (frame format) and zstd.

use std::io::{self, Read};

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::batch::{BatchHeader, BATCH_HEADER_BYTES};

/// The attributes bits that name the codec.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// The codec a batch's attributes name; `None` for an id Kafka does not define.
pub fn compression_of(attributes: i16) -> Option<Compression> {
    Some(match attributes & ATTR_COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => return None,
    })
}

/// A reader of the decompressed bytes of `compressed` that fails with `InvalidData` once more
/// than `limit` bytes come out (or a snappy block claims more).
pub fn inflate<'a>(
    compression: Compression,
    compressed: &'a [u8],
    limit: u64,
) -> io::Result<Box<dyn Read + 'a>> {
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(compressed)),
        Compression::Snappy => Box::new(SnappyReader::new(compressed, limit)),
        Compression::Lz4 => Box::new(lz4::Decoder::new(compressed)?),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(compressed)?),
    };
    Ok(Box::new(Bounded {
        inner: reader,
        left: limit,
    }))
}

/// Decompresses all of `compressed` (at most `limit` bytes out).
pub fn inflate_all(compression: Compression, compressed: &[u8], limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    inflate(compression, compressed, limit)?.read_to_end(&mut out)?;
    Ok(out)
}

/// The records section of `batch` (exactly one whole batch), decompressed if the batch is
/// compressed, at most `limit` bytes of it. Uncompressed, it is a slice of `batch`.
pub fn records_section(header: &BatchHeader, batch: &Bytes, limit: u64) -> io::Result<Bytes> {
    let body =
        batch.slice(BATCH_HEADER_BYTES.min(batch.len())..header.total_bytes().min(batch.len()));
    match compression_of(header.attributes) {
        Some(Compression::None) => Ok(body),
        Some(compression) => inflate_all(compression, &body, limit).map(Bytes::from),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unknown compression codec {} in batch attributes",
                header.attributes & ATTR_COMPRESSION_MASK
            ),
        )),
    }
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decompresses to more than {limit} bytes"),
    )
}

struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than allowed is asked for, so going past the limit is seen as an error
        // rather than as a clean end.
        let want = buf.len().min(self.left.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(too_large(self.left));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// snappy-java's stream header: magic, then version 1 and minimum compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Snappy as Kafka clients write it: snappy-java's framing (the header, then blocks of a
/// big-endian u32 length and a raw snappy block), or one raw snappy block. Every block's
/// decompressed length is read from its own header and checked against the limit before
/// anything is allocated for it.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
    limit: u64,
    error: Option<String>,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limit: u64) -> Self {
        let framed = input.starts_with(XERIAL_HEADER);
        SnappyReader {
            input: if framed {
                &input[XERIAL_HEADER.len()..]
            } else {
                input
            },
            framed,
            block: Vec::new(),
            at: 0,
            limit,
            error: None,
        }
    }

    fn next_block(&mut self) -> io::Result<bool> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            if self.input.len() < 4 {
                return Err(invalid("snappy block length cut short".into()));
            }
            let len =
                u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
                    as usize;
            let block = self.input.get(4..4 + len).ok_or_else(|| {
                invalid(format!("snappy block of {len} bytes runs past the batch"))
            })?;
            self.input = &self.input[4 + len..];
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let len = snap::raw::decompress_len(compressed)
            .map_err(|e| invalid(format!("snappy block header: {e}")))?;
        if len as u64 > self.limit {
            return Err(too_large(self.limit));
        }
        self.limit -= len as u64;
        self.block.clear();
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| invalid(format!("snappy block: {e}")))?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.error {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
        }
        while self.at == self.block.len() {
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.error = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let hand_over = |tmp: &mut BytesMut| {
            tmp.extend_from_slice(data);
            Ok(())
        };
        match compression {
            Compression::Gzip => Gzip::compress(&mut out, hand_over),
            Compression::Snappy => Snappy::compress(&mut out, hand_over),
            Compression::Lz4 => Lz4::compress(&mut out, hand_over),
            Compression::Zstd => Zstd::compress(&mut out, hand_over),
            Compression::None => return data.to_vec(),
        }
        .expect("compress");
        out.to_vec()
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_within_the_limit() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for compression in ALL {
            let compressed = compress(compression, &data);
            let out = inflate_all(compression, &compressed, data.len() as u64).expect("inflates");
            assert_eq!(out, data, "{compression:?}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        for compression in ALL {
            let compressed = compress(compression, &zeros);
            let err = inflate_all(compression, &compressed, 1 << 20).expect_err("too large");
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{compression:?}: {err}"
            );
        }
    }

    #[test]
    fn raw_snappy_with_a_lying_length_is_refused_before_allocating() {
        // A raw snappy block whose header claims 2^32-1 bytes.
        let lying = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = inflate_all(Compression::Snappy, &lying, 1 << 20).expect_err("refused");
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 256) as u8).collect();
        for compression in ALL.into_iter().skip(1) {
            for cut in [0, 1, 7, 16, 100, garbage.len()] {
                let _ = inflate_all(compression, &garbage[..cut], 1 << 20);
            }
        }
    }
}

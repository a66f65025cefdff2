//! Kafka's zigzag varints as records use them: a `varint` holds an int32 (a record's length,
//! offset delta, key and value lengths, header count and header lengths) in at most 5 bytes, a
//! `varlong` an int64 (the timestamp delta) in at most 10. Java's `ByteUtils.readVarint` throws
//! at a 6th byte however small the value, so a batch skein stored with a longer varint would
//! stop every Java consumer of the partition at it: readers here keep to both limits.

use std::io::{self, BufRead};

use bytes::BufMut;

/// A varint that does not decode: it runs past the end of its input, is longer than its type
/// allows, or holds more than 32 bits where an int32 is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed varint")]
pub struct BadVarint;

/// Why a varint could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadVarintError {
    /// Malformed, or cut short by the end of the stream.
    #[error(transparent)]
    Malformed(#[from] BadVarint),
    #[error(transparent)]
    Io(#[from] io::Error),
}

const VARINT_MAX_BYTES: usize = 5;
const VARLONG_MAX_BYTES: usize = 10;

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline(always)]
fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[inline(always)]
fn unzigzag_int32(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

/// The raw value of a varint that is to hold an int32, which must fit 32 bits. Java's
/// `readVarint` would drop what a 5th byte holds past bit 32; refusing it instead means skein
/// never stores a value that Java reads differently.
#[inline(always)]
fn int32_raw(raw: u64) -> Result<u32, BadVarint> {
    u32::try_from(raw).map_err(|_| BadVarint)
}

/// Bytes the varint (or varlong) of `value` takes.
pub fn varint_len(value: i64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (zigzag(value) | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the varint (or varlong) of `value`: the zigzag encoding of an i32 is the same
/// whether it is written as one or the other.
pub fn put_varint(out: &mut impl BufMut, value: i64) {
    let mut v = zigzag(value);
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// The rule every reader decodes by, wherever its bytes come from: 7 bits a byte, least
/// significant first, the top bit set on every byte but the last, at most `max_bytes` bytes.
/// Bits past the 64th are dropped, as Java's `readVarlong` drops them. Returns the raw value,
/// still zigzagged.
#[inline(always)]
fn decode<E: From<BadVarint>>(
    max_bytes: usize,
    mut next_byte: impl FnMut() -> Result<u8, E>,
) -> Result<u64, E> {
    let mut raw = 0u64;
    for i in 0..max_bytes {
        let byte = next_byte()?;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(raw);
        }
    }
    Err(BadVarint.into())
}

/// The varints of up to three bytes that record fields nearly always are (lengths below 1 MiB,
/// deltas), decoded inline: [`decode`]'s first three rounds unrolled, for the raw value and
/// where it ends. `None` leaves the rest, longer or cut short, to [`get_long`].
#[inline(always)]
fn get_short(buf: &[u8], at: usize) -> Option<(u32, usize)> {
    let &b0 = buf.get(at)?;
    if b0 < 0x80 {
        return Some((u32::from(b0), at + 1));
    }
    let &b1 = buf.get(at + 1)?;
    let low = u32::from(b0 & 0x7f);
    if b1 < 0x80 {
        return Some((low | u32::from(b1) << 7, at + 2));
    }
    let &b2 = buf.get(at + 2)?;
    if b2 < 0x80 {
        return Some((
            low | u32::from(b1 & 0x7f) << 7 | u32::from(b2) << 14,
            at + 3,
        ));
    }
    None
}

/// Any varint of at most `max_bytes` at `at` in `buf`: the raw value and where it ends. Positions
/// go in and out by value, so a caller's position can stay in a register.
#[inline(never)]
fn get_long(buf: &[u8], at: usize, max_bytes: usize) -> Result<(u64, usize), BadVarint> {
    let mut end = at;
    let raw = decode(max_bytes, || {
        let &byte = buf.get(end).ok_or(BadVarint)?;
        end += 1;
        Ok(byte)
    })?;
    Ok((raw, end))
}

/// Reads the raw value of a varint (an int32) from `buf` at `*at`, advancing `*at` past it.
#[inline(always)]
fn get_int32_raw(buf: &[u8], at: &mut usize) -> Result<u32, BadVarint> {
    match get_short(buf, *at) {
        Some((raw, end)) => {
            *at = end;
            Ok(raw)
        }
        None => {
            let (raw, end) = get_long(buf, *at, VARINT_MAX_BYTES)?;
            *at = end;
            int32_raw(raw)
        }
    }
}

/// Reads a varint (an int32) from `buf` at `*at`, advancing `*at` past it.
#[inline(always)]
pub fn get_varint(buf: &[u8], at: &mut usize) -> Result<i32, BadVarint> {
    Ok(unzigzag_int32(get_int32_raw(buf, at)?))
}

/// Reads a varint (an int32) that holds a length or a count from `buf` at `*at`, advancing
/// `*at` past it: `None` if it is negative, as Kafka writes -1 for a null key or value. Cheaper
/// than [`get_varint`] and a sign test, on the hot path of every record: the zigzag's low bit is
/// the sign.
#[inline(always)]
pub fn get_varint_len(buf: &[u8], at: &mut usize) -> Result<Option<usize>, BadVarint> {
    let raw = get_int32_raw(buf, at)?;
    Ok((raw & 1 == 0).then_some((raw >> 1) as usize))
}

/// Reads a varlong (an int64) from `buf` at `*at`, advancing `*at` past it.
#[inline(always)]
pub fn get_varlong(buf: &[u8], at: &mut usize) -> Result<i64, BadVarint> {
    let raw = match get_short(buf, *at) {
        Some((raw, end)) => {
            *at = end;
            u64::from(raw)
        }
        None => {
            let (raw, end) = get_long(buf, *at, VARLONG_MAX_BYTES)?;
            *at = end;
            raw
        }
    };
    Ok(unzigzag(raw))
}

/// Reads a varint (an int32) from a stream, by the same rule as [`get_varint`].
pub fn read_varint(reader: &mut impl BufRead) -> Result<i32, ReadVarintError> {
    let raw = decode(VARINT_MAX_BYTES, || -> Result<u8, ReadVarintError> {
        // The end of the stream inside a varint cuts it short.
        let &byte = reader.fill_buf()?.first().ok_or(BadVarint)?;
        reader.consume(1);
        Ok(byte)
    })?;
    Ok(unzigzag_int32(int32_raw(raw)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(value: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, value);
        b
    }

    fn read(bytes: &[u8]) -> Result<i32, BadVarint> {
        let mut reader = bytes;
        read_varint(&mut reader).map_err(|e| match e {
            ReadVarintError::Malformed(bad) => bad,
            ReadVarintError::Io(e) => panic!("no I/O here: {e}"),
        })
    }

    #[test]
    fn round_trip_and_lengths() {
        for v in [0i64, 1, -1, 63, -64, 64, 1000, -1000, i64::MAX, i64::MIN] {
            let b = varint(v);
            assert_eq!(b.len(), varint_len(v), "value {v}");
            let mut at = 0;
            assert_eq!(get_varlong(&b, &mut at), Ok(v));
            assert_eq!(at, b.len());
        }
        // Every length the unrolled reader decodes and the first the loop does, both signs.
        let edges = [
            0i32,
            63,
            64,
            8191,
            8192,
            (1 << 20) - 1,
            1 << 20,
            1 << 27,
            i32::MAX,
        ];
        for v in edges.into_iter().flat_map(|v| [v, -v - 1]) {
            let b = varint(i64::from(v));
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Ok(v), "value {v}");
            assert_eq!(at, b.len());
            assert_eq!(read(&b), Ok(v), "value {v}");
            assert_eq!(get_varlong(&b, &mut 0), Ok(i64::from(v)), "value {v}");
        }
    }

    #[test]
    fn a_negative_length_is_none() {
        for (v, len) in [
            (0i64, Some(0)),
            (1, Some(1)),
            (8191, Some(8191)),
            (-1, None),
            (-7, None),
        ] {
            let b = varint(v);
            let mut at = 0;
            assert_eq!(get_varint_len(&b, &mut at), Ok(len), "value {v}");
            assert_eq!(at, b.len());
        }
        let max = varint(i64::from(i32::MAX));
        assert_eq!(get_varint_len(&max, &mut 0), Ok(Some(i32::MAX as usize)));
        let min = varint(i64::from(i32::MIN));
        assert_eq!(get_varint_len(&min, &mut 0), Ok(None));
        assert_eq!(get_varint_len(&[0x80; 6], &mut 0), Err(BadVarint));
    }

    #[test]
    fn truncated_and_overlong_varlongs_are_errors() {
        assert_eq!(get_varlong(&[0x80], &mut 0), Err(BadVarint));
        assert_eq!(get_varlong(&[], &mut 0), Err(BadVarint));
        assert_eq!(get_varlong(&[0xff; 11], &mut 0), Err(BadVarint));
        // Ten bytes is the most a varlong takes, zero padded or not.
        let mut ten = [0x80; 10];
        ten[9] = 0;
        assert_eq!(get_varlong(&ten, &mut 0), Ok(0));
        let mut eleven = [0x80; 11];
        eleven[10] = 0;
        assert_eq!(get_varlong(&eleven, &mut 0), Err(BadVarint));
    }

    #[test]
    fn a_varint_is_at_most_five_bytes_and_32_bits() {
        // Zero padded to five bytes still decodes, as in Java.
        let five = [0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(get_varint(&five, &mut 0), Ok(0));
        assert_eq!(read(&five), Ok(0));
        // Six bytes do not, even for a value that fits: Java's readVarint throws at the 6th.
        let six = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(get_varint(&six, &mut 0), Err(BadVarint));
        assert_eq!(read(&six), Err(BadVarint));
        assert_eq!(get_varlong(&six, &mut 0), Ok(0), "a varlong may be longer");
        // Five bytes holding 33 bits or more: too big for an int32.
        let wide = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(get_varint(&wide, &mut 0), Err(BadVarint));
        assert_eq!(read(&wide), Err(BadVarint));
        let widest = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(get_varint(&widest, &mut 0), Ok(i32::MIN));
        // Cut short.
        assert_eq!(get_varint(&[0xff, 0xff], &mut 0), Err(BadVarint));
        assert_eq!(read(&[0xff, 0xff]), Err(BadVarint));
        assert_eq!(read(&[]), Err(BadVarint));
    }

    #[test]
    fn a_stream_error_is_not_a_malformed_varint() {
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::InvalidData, "inflate failed"))
            }
        }
        let mut reader = io::BufReader::new(Failing);
        assert!(matches!(
            read_varint(&mut reader),
            Err(ReadVarintError::Io(_))
        ));
    }
}

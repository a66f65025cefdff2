//! Kafka's zigzag varints (`varint`/`varlong` in the protocol spec), as records use them for
//! lengths, deltas and counts.

use bytes::BufMut;

/// A varint that does not decode: it runs past the end of its buffer, or is longer than 10 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed varint")]
pub struct BadVarint;

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Bytes the varint of `value` takes.
pub fn varint_len(value: i64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (zigzag(value) | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the varint of `value`.
pub fn put_varint(out: &mut impl BufMut, value: i64) {
    let mut v = zigzag(value);
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a varint from `buf` at `*at`, advancing `*at` past it.
#[inline(always)]
pub fn get_varint(buf: &[u8], at: &mut usize) -> Result<i64, BadVarint> {
    // Record fields are mostly one or two varint bytes (deltas, lengths below 8 KiB): decode those
    // without a loop, the rest in one.
    let i = *at;
    let &b0 = buf.get(i).ok_or(BadVarint)?;
    if b0 < 0x80 {
        *at = i + 1;
        return Ok(unzigzag(u64::from(b0)));
    }
    let &b1 = buf.get(i + 1).ok_or(BadVarint)?;
    if b1 < 0x80 {
        *at = i + 2;
        return Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7));
    }
    get_varint_slow(buf, at)
}

#[inline(always)]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cold]
fn get_varint_slow(buf: &[u8], at: &mut usize) -> Result<i64, BadVarint> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let &b = buf.get(*at).ok_or(BadVarint)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(unzigzag(v));
        }
        shift += 7;
        if shift > 63 {
            return Err(BadVarint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lengths() {
        for v in [0i64, 1, -1, 63, -64, 64, 1000, -1000, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "value {v}");
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Ok(v));
            assert_eq!(at, b.len());
        }
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        assert_eq!(get_varint(&[0x80], &mut 0), Err(BadVarint));
        assert_eq!(get_varint(&[], &mut 0), Err(BadVarint));
        assert_eq!(get_varint(&[0xff; 11], &mut 0), Err(BadVarint));
    }
}

//! Reading the records inside a batch: each is a varint length followed by that many bytes of
//! attributes, timestamp delta, offset delta, key, value and headers. [`parse_record`] checks
//! that every field fits its record and that the fields fill it exactly, as Kafka's
//! `DefaultRecord.readFrom` does, and reads every field with the varint or varlong Java reads it
//! with; nothing is allocated per record.
//!
//! [`try_for_each_record`] walks a records section in memory, [`try_for_each_record_read`] one
//! that a decompressing reader delivers; both check that the batch holds exactly the records it
//! declares.

use std::io::{self, BufRead, BufReader, Read};

use super::varint::{get_varint, get_varint_len, get_varlong, read_varint, ReadVarintError};

/// One record, borrowed from the batch's (decompressed) records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u32,
}

/// Why a record does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index}: {reason}")]
    Malformed { index: u32, reason: &'static str },
    #[error("the batch declares {declared} records but holds {found}")]
    FewerThanDeclared { declared: i32, found: u32 },
    /// How many more is not worth reading on to count.
    #[error("the batch holds more records than the {declared} it declares")]
    MoreThanDeclared { declared: i32 },
    #[error("record {index} has offset delta {found}, expected {index}")]
    OffsetDelta { index: u32, found: i32 },
}

/// The field of `len` bytes at `*at` in `buf`, `None` for a null one, advancing `*at` past it.
#[inline(always)]
fn take<'a>(buf: &'a [u8], at: &mut usize, len: Option<usize>) -> Option<Option<&'a [u8]>> {
    let Some(len) = len else {
        return Some(None);
    };
    // No overflow: `*at` is within `buf` (at most isize::MAX) and `len` below 2^31.
    let field = buf.get(*at..*at + len)?;
    *at += len;
    Some(Some(field))
}

/// Parses one record's body (what follows its length varint).
#[inline]
pub fn parse_record(body: &[u8]) -> Result<RecordView<'_>, &'static str> {
    // The common case decodes with `Option`s only; why a record does not parse is worked out
    // again, slowly, on the rare path that needs a message.
    match parse_fast(body) {
        Some(record) => Ok(record),
        None => Err(why_malformed(body)),
    }
}

#[inline(always)]
fn parse_fast(body: &[u8]) -> Option<RecordView<'_>> {
    let varint = |at: &mut usize| get_varint(body, at).ok();
    let len = |at: &mut usize| get_varint_len(body, at).ok();
    // Attributes (byte 0) are unused in v2; any value is kept as sent.
    let mut at = 1;
    if body.is_empty() {
        return None;
    }
    let timestamp_delta = get_varlong(body, &mut at).ok()?;
    let offset_delta = varint(&mut at)?;
    let key_len = len(&mut at)?;
    let key = take(body, &mut at, key_len)?;
    let value_len = len(&mut at)?;
    let value = take(body, &mut at, value_len)?;
    // A negative count is as malformed as one the record has no room for.
    let header_count = len(&mut at)?.filter(|&count| count <= body.len())?;
    for _ in 0..header_count {
        // A header's key may not be null.
        let key_len = len(&mut at)?;
        take(body, &mut at, Some(key_len?))?;
        let value_len = len(&mut at)?;
        take(body, &mut at, value_len)?;
    }
    (at == body.len()).then_some(RecordView {
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count: header_count as u32,
    })
}

/// Why [`parse_fast`] refused `body`.
#[cold]
fn why_malformed(body: &[u8]) -> &'static str {
    let len = |at: &mut usize| get_varint_len(body, at).map_err(|_| "malformed varint");
    let field = |at: &mut usize, len: Option<usize>| {
        take(body, at, len).ok_or("a field runs past the end of its record")
    };
    let check = || -> Result<&'static str, &'static str> {
        let mut at = 1;
        if body.is_empty() {
            return Err("empty record");
        }
        get_varlong(body, &mut at).map_err(|_| "malformed timestamp delta")?;
        get_varint(body, &mut at).map_err(|_| "malformed offset delta")?;
        let key_len = len(&mut at)?;
        field(&mut at, key_len)?;
        let value_len = len(&mut at)?;
        field(&mut at, value_len)?;
        let header_count = len(&mut at)?
            .filter(|&count| count <= body.len())
            .ok_or("impossible header count")?;
        for _ in 0..header_count {
            let key_len = len(&mut at)?.ok_or("header with a null key")?;
            field(&mut at, Some(key_len))?;
            let value_len = len(&mut at)?;
            field(&mut at, value_len)?;
        }
        Ok("record length does not match its fields")
    };
    check().unwrap_or_else(|reason| reason)
}

/// Splits the next record off `records` at `*at`: its body, advancing `*at` past it.
pub fn next_record<'a>(records: &'a [u8], at: &mut usize) -> Result<&'a [u8], &'static str> {
    let length = get_varint_len(records, at)
        .map_err(|_| "malformed record length")?
        .ok_or("negative record length")?;
    take(records, at, Some(length))
        .flatten()
        .ok_or("record runs past the end of the batch")
}

/// Walks the `count` records of an uncompressed records section, calling `f` on each with its
/// index; checks that exactly `count` records fill it. Stops at the first error, the walk's or
/// `f`'s.
#[inline]
pub fn try_for_each_record<'a, E: From<RecordError>>(
    records: &'a [u8],
    count: i32,
    mut f: impl FnMut(u32, RecordView<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = 0usize;
    let mut index = 0u32;
    while at < records.len() {
        expect_another(count, index)?;
        let malformed = |reason| RecordError::Malformed { index, reason };
        let body = next_record(records, &mut at).map_err(malformed)?;
        f(index, parse_record(body).map_err(malformed)?)?;
        index += 1;
    }
    Ok(expect_all(count, index)?)
}

/// [`try_for_each_record`] for a callback that cannot fail.
pub fn for_each_record<'a>(
    records: &'a [u8],
    count: i32,
    mut f: impl FnMut(RecordView<'a>),
) -> Result<(), RecordError> {
    try_for_each_record(records, count, |_, record| {
        f(record);
        Ok(())
    })
}

/// [`try_for_each_record`] over the records section `reader` delivers (a decompressing reader):
/// each record's body is read into one reused buffer, so memory stays at the largest record
/// whatever the section inflates to. The reader's own errors come back through
/// `E: From<io::Error>`.
pub fn try_for_each_record_read<E>(
    reader: impl Read,
    count: i32,
    mut f: impl FnMut(u32, RecordView<'_>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<RecordError> + From<io::Error>,
{
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let mut body = Vec::new();
    let mut index = 0u32;
    while !reader.fill_buf()?.is_empty() {
        expect_another(count, index)?;
        let malformed = |reason| RecordError::Malformed { index, reason };
        let length = match read_varint(&mut reader) {
            Ok(length) if length < 0 => return Err(malformed("negative record length").into()),
            Ok(length) => length as u64,
            Err(ReadVarintError::Malformed(_)) => {
                return Err(malformed("malformed record length").into())
            }
            Err(ReadVarintError::Io(e)) => return Err(e.into()),
        };
        body.clear();
        // The reader's own bound (the inflate limit) bounds what `take` delivers, so this
        // allocation is bounded too.
        let read = (&mut reader).take(length).read_to_end(&mut body)?;
        if read as u64 != length {
            return Err(malformed("record cut short").into());
        }
        f(index, parse_record(&body).map_err(malformed)?)?;
        index += 1;
    }
    Ok(expect_all(count, index)?)
}

/// Before record `index` (counting from 0): the batch declares at least `index + 1` records.
#[inline(always)]
fn expect_another(declared: i32, index: u32) -> Result<(), RecordError> {
    if i64::from(index) >= i64::from(declared) {
        return Err(RecordError::MoreThanDeclared { declared });
    }
    Ok(())
}

/// After the last record: `found` is all the batch declares.
fn expect_all(declared: i32, found: u32) -> Result<(), RecordError> {
    if i64::from(found) != i64::from(declared) {
        return Err(RecordError::FewerThanDeclared { declared, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::padded_record;
    use crate::record::varint::put_varint;

    fn record(key: Option<&[u8]>, value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varint(&mut body, 5);
        put_varint(&mut body, 0);
        put_varint(&mut body, key.map_or(-1, |k| k.len() as i64));
        body.extend_from_slice(key.unwrap_or_default());
        put_varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varint(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_varint(&mut body, k.len() as i64);
            body.extend_from_slice(k);
            put_varint(&mut body, v.len() as i64);
            body.extend_from_slice(v);
        }
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn parses_keys_values_and_headers() {
        let bytes = record(Some(b"k"), b"value", &[(b"h", b"v"), (b"h2", b"")]);
        let mut seen = Vec::new();
        for_each_record(&bytes, 1, |r| seen.push(r)).expect("valid");
        assert_eq!(seen[0].key, Some(&b"k"[..]));
        assert_eq!(seen[0].value, Some(&b"value"[..]));
        assert_eq!(seen[0].header_count, 2);
        assert_eq!(seen[0].timestamp_delta, 5);
    }

    #[test]
    fn count_must_match_what_the_section_holds() {
        let mut bytes = record(None, b"a", &[]);
        bytes.extend(record(None, b"b", &[]));
        assert!(for_each_record(&bytes, 2, |_| {}).is_ok());
        assert_eq!(
            for_each_record(&bytes, 3, |_| {}),
            Err(RecordError::FewerThanDeclared {
                declared: 3,
                found: 2
            })
        );
        // More than declared: the walk stops at the first record too many, so it says no more
        // than that (not "holds 2", when it holds 5).
        for _ in 0..3 {
            bytes.extend(record(None, b"c", &[]));
        }
        let e = for_each_record(&bytes, 1, |_| {}).expect_err("5 records, 1 declared");
        assert_eq!(e, RecordError::MoreThanDeclared { declared: 1 });
        assert_eq!(
            e.to_string(),
            "the batch holds more records than the 1 it declares"
        );
    }

    #[test]
    fn a_record_whose_fields_do_not_fill_its_length_is_malformed() {
        let mut bytes = record(None, b"abc", &[]);
        // Claim one byte more than the body holds, and append that byte.
        bytes[0] += 2; // zigzag: +1
        bytes.push(0);
        assert!(matches!(
            for_each_record(&bytes, 1, |_| {}),
            Err(RecordError::Malformed { index: 0, .. })
        ));
        assert!(for_each_record(&[0xff; 12], 1, |_| {}).is_err());
        assert!(for_each_record(&bytes[..bytes.len() - 3], 1, |_| {}).is_err());
    }

    #[test]
    fn int32_fields_take_at_most_five_varint_bytes() {
        let record = padded_record([10, 5, 5, 5, 5, 5, 5, 5]);
        let mut seen = Vec::new();
        for_each_record(&record, 1, |r| seen.push(r)).expect("5-byte varints, a 10-byte varlong");
        assert_eq!(seen[0].timestamp_delta, 5);
        assert_eq!(seen[0].value, Some(&b"v"[..]));
        // Every field but the timestamp delta is an int32, which Java's readVarint refuses to
        // read past 5 bytes.
        for field in 1..8 {
            let mut widths = [1; 8];
            widths[field] = 6;
            let e = for_each_record(&padded_record(widths), 1, |_| {}).expect_err("6 bytes");
            assert!(
                matches!(e, RecordError::Malformed { index: 0, .. }),
                "field {field}: {e}"
            );
        }
        let mut widths = [1; 8];
        widths[0] = 11;
        assert!(for_each_record(&padded_record(widths), 1, |_| {}).is_err());
    }

    /// What the walkers' callers get back: the walk's errors, the reader's, and their own.
    #[derive(Debug, PartialEq)]
    enum Stopped {
        Record(RecordError),
        Read(io::ErrorKind),
        Callback(u32),
    }

    impl From<RecordError> for Stopped {
        fn from(e: RecordError) -> Self {
            Stopped::Record(e)
        }
    }

    impl From<io::Error> for Stopped {
        fn from(e: io::Error) -> Self {
            Stopped::Read(e.kind())
        }
    }

    #[test]
    fn a_reader_is_walked_as_its_bytes_would_be() {
        let mut bytes = record(Some(b"k"), b"value", &[(b"h", b"v")]);
        bytes.extend(record(None, b"", &[]));
        bytes.extend(padded_record([1; 8]));
        let walk_slice = |count: i32| {
            let mut seen = Vec::new();
            let result = try_for_each_record(&bytes, count, |index, r| {
                seen.push((
                    index,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                ));
                Ok::<_, Stopped>(())
            });
            (result, seen)
        };
        let walk_reader = |count: i32, reader: &[u8]| {
            let mut seen = Vec::new();
            let result = try_for_each_record_read(reader, count, |index, r| {
                seen.push((
                    index,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                ));
                Ok::<_, Stopped>(())
            });
            (result, seen)
        };
        for count in [2, 3, 4] {
            assert_eq!(
                walk_slice(count),
                walk_reader(count, &bytes),
                "{count} declared"
            );
        }
        assert_eq!(walk_slice(3).1.len(), 3);
        // Cut inside the last record, and inside its length.
        for cut in [
            bytes.len() - 1,
            bytes.len() - padded_record([1; 8]).len() + 1,
        ] {
            let (result, _) = walk_reader(3, &bytes[..cut]);
            assert!(
                matches!(
                    result,
                    Err(Stopped::Record(RecordError::Malformed { index: 2, .. }))
                ),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn a_walk_stops_at_the_callers_error_and_at_the_readers() {
        let mut bytes = record(None, b"a", &[]);
        bytes.extend(record(None, b"b", &[]));
        let stop_at_1 = |index: u32, _: RecordView<'_>| {
            if index == 1 {
                return Err(Stopped::Callback(index));
            }
            Ok(())
        };
        assert_eq!(
            try_for_each_record(&bytes, 2, stop_at_1),
            Err(Stopped::Callback(1))
        );
        assert_eq!(
            try_for_each_record_read(&bytes[..], 2, stop_at_1),
            Err(Stopped::Callback(1))
        );
        let failing = io::Read::chain(&bytes[..], Failing);
        assert_eq!(
            try_for_each_record_read(failing, 3, |_, _| Ok(())),
            Err(Stopped::Read(io::ErrorKind::InvalidData))
        );
    }

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::InvalidData, "inflate failed"))
        }
    }
}

//! What a bench record carries. Each value starts with a 32-byte header:
//!
//! ```text
//! 0   magic "SKBH"   4 bytes
//! 4   version 1      u16 BE
//! 6   reserved       u16
//! 8   producer id    u64 BE   unique per producer connection and run
//! 16  sequence       u64 BE   per (producer, partition), from 0, +1 per record
//! 24  due time       u64 BE   ns since the Unix epoch: when the record was scheduled
//! ```
//!
//! followed by padding up to `--record-size`: random capital letters (like Kafka's own
//! producer-perf-test), so compression has realistic rather than trivial work.

use bytes::Bytes;

pub const HEADER_BYTES: usize = 32;
pub const MAGIC: [u8; 4] = *b"SKBH";
const VERSION: u16 = 1;

/// Size of the shared padding pool; records take slices at varying offsets.
const PADDING_POOL_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchHeader {
    pub producer_id: u64,
    pub sequence: u64,
    pub due_ns: u64,
}

impl BenchHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_be_bytes());
        out[8..16].copy_from_slice(&self.producer_id.to_be_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_be_bytes());
        out[24..32].copy_from_slice(&self.due_ns.to_be_bytes());
        out
    }

    /// The header of a bench record, or None for any other value.
    pub fn decode(value: &[u8]) -> Option<BenchHeader> {
        if value.len() < HEADER_BYTES
            || value[0..4] != MAGIC
            || value[4..6] != VERSION.to_be_bytes()
        {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(BenchHeader {
            producer_id: u64_at(8),
            sequence: u64_at(16),
            due_ns: u64_at(24),
        })
    }
}

/// xorshift64*: fast, good enough to spread keys and padding offsets; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Random capital letters, shared by all producers; a record's padding is a slice of it.
pub fn padding_pool(record_size: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let len = PADDING_POOL_BYTES + record_size;
    let mut pool = Vec::with_capacity(len);
    while pool.len() < len {
        let mut r = rng.next_u64();
        for _ in 0..8 {
            pool.push(b'A' + (r % 26) as u8);
            r >>= 8;
        }
    }
    pool.truncate(len);
    Bytes::from(pool)
}

/// Where a record's padding starts in the pool.
pub fn padding_offset(rng: &mut Rng) -> usize {
    rng.below(PADDING_POOL_BYTES as u64) as usize
}

/// Writes key `k` as at least 8 decimal digits into `out`; returns the digits used.
pub fn format_key(k: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    let mut v = k;
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 && out.len() - i >= 8 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_foreign_values() {
        let h = BenchHeader {
            producer_id: 0xdead_beef_0000_0007,
            sequence: 42,
            due_ns: 1_700_000_000_123_456_789,
        };
        let mut value = h.encode().to_vec();
        value.extend_from_slice(b"padding");
        assert_eq!(BenchHeader::decode(&value), Some(h));
        assert_eq!(BenchHeader::decode(b"hello"), None);
        assert_eq!(BenchHeader::decode(&[b'x'; 40]), None);
    }

    #[test]
    fn keys_and_padding() {
        let mut buf = [0u8; 20];
        assert_eq!(format_key(42, &mut buf), b"00000042");
        assert_eq!(format_key(123_456_789, &mut buf), b"123456789");
        let pool = padding_pool(100, 1);
        assert!(pool.iter().all(|b| b.is_ascii_uppercase()));
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
            assert!(padding_offset(&mut rng) + 100 <= pool.len());
        }
    }
}

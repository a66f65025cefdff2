//! Record batches for tests that speak the protocol themselves, built with skein's one
//! [`BatchBuilder`].

use bytes::Bytes;
use kafka_protocol::records::Compression;
use skein::record::{BatchBuilder, ProducerIds};

/// What to put in a batch. `Default` is one 10-byte record from a non-idempotent producer.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub records: i32,
    pub value_bytes: usize,
    pub producer: ProducerIds,
    /// Byte each value is filled with, so tests can tell batches apart.
    pub fill: u8,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            records: 1,
            value_bytes: 10,
            producer: ProducerIds::NONE,
            fill: b'x',
        }
    }
}

/// One uncompressed v2 batch; record `i` has timestamp 1_700_000_000_000 + i.
pub fn build_batch(spec: &BatchSpec) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, spec.value_bytes + 80);
    builder.set_producer(spec.producer);
    let value = vec![spec.fill; spec.value_bytes];
    for i in 0..spec.records {
        builder.append(1_700_000_000_000 + i64::from(i), None, &[&value]);
    }
    builder.finish().expect("uncompressed batches always build")
}

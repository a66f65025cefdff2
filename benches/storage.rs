//! Micro-benchmarks of storage's hot paths: batch validation (CRC-32C), append, offset-index
//! lookup and tail-cache reads. Kept short (a few seconds each) so they can run on the 2-core
//! dev machine; they are not tests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use skein::record::validate::{validate_produced, Rules};
use skein::record::{split_batches, Batch, BatchBuilder, BatchHeader};
use skein::storage::{Log, LogConfig};

/// One uncompressed batch of `records` records of `value_bytes` each.
fn build_batch(records: usize, value_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, records * (value_bytes + 16) + 61);
    let value = vec![b'x'; value_bytes];
    for i in 0..records {
        builder.append(1_700_000_000_000 + i as i64, None, &[&value]);
    }
    builder.finish().expect("uncompressed batches always build")
}

fn batch(records: usize, value_bytes: usize) -> Batch {
    let bytes = build_batch(records, value_bytes);
    let header = BatchHeader::parse(&bytes).expect("header");
    Batch { header, bytes }
}

/// (records, value bytes) of a 16-record batch of about `total_bytes`; each record adds ~8 bytes
/// of framing around its value.
fn of_bytes(total_bytes: usize) -> (usize, usize) {
    let records = 16;
    (
        records,
        (total_bytes.saturating_sub(61) / records).saturating_sub(8),
    )
}

fn bench_split_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_batches");
    for size in [16 << 10, 1 << 20] {
        let (n, value_bytes) = of_bytes(size);
        let records: Bytes = build_batch(n, value_bytes);
        group.throughput(Throughput::Bytes(records.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &records, |b, records| {
            b.iter(|| split_batches(records).expect("valid"))
        });
    }
    group.finish();
}

fn bench_validate_produced(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_produced");
    let rules = Rules {
        produce_version: 9,
        max_batch_bytes: 16 << 20,
        log_append_time: false,
        timestamp_difference_max_ms: i64::MAX,
        store_as: None,
        now_ms: 1_700_000_000_000,
    };
    // 100-byte records as `skein bench` sends them: the walk over records is the cost.
    for (records, value_bytes) in [(160, 100), (10_000, 100)] {
        let batch = build_batch(records, value_bytes);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(
            BenchmarkId::new("records_of_100B", records),
            &batch,
            |b, batch| b.iter(|| validate_produced(batch, &rules).expect("valid")),
        );
        // The framing and CRC alone, to see what walking the records adds.
        group.bench_with_input(BenchmarkId::new("crc_only", records), &batch, |b, batch| {
            b.iter(|| split_batches(batch).expect("valid"))
        });
    }
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    for size in [1 << 10, 16 << 10] {
        let (n, value_bytes) = of_bytes(size);
        let one = batch(n, value_bytes);
        group.throughput(Throughput::Bytes(one.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &one, |b, one| {
            let dir = tempfile::tempdir().expect("tempdir");
            // Small segments so the bench also pays for rolls and does not fill the disk.
            let config = LogConfig {
                segment_bytes: 64 << 20,
                ..LogConfig::default()
            };
            let mut log = Log::open(dir.path(), config).expect("open");
            let batches = std::slice::from_ref(one);
            // Timed: what a broker's append costs on the executor and the writer thread (the
            // roll included). Not timed: the sync jobs (fsync of rolled segments, deleting them),
            // which a broker runs on its blocking pool beside the appends.
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    log.append(batches, 1, 0).expect("append");
                    timed += started.elapsed();
                    if log.segment_count() > 4 {
                        log.enforce_retention(i64::MAX);
                        log.sync_now().expect("sync");
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

fn bench_index_lookup(c: &mut Criterion) {
    // ~64k index entries in one segment (interval 0: one entry per batch), read from files.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        index_interval_bytes: 0,
        cache_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let one = batch(4, 16);
    let chunk: Vec<_> = std::iter::repeat_n(one, 256).collect();
    for _ in 0..256 {
        log.append(&chunk, 1, 0).expect("append");
    }
    log.close().expect("close");
    let log = Log::open(dir.path(), config).expect("reopen");
    let end = log.log_end_offset();
    let mut offset = 0i64;
    c.bench_function("offset_index_lookup_read_one_batch", |b| {
        b.iter(|| {
            offset = (offset + 7_919) % end;
            log.read(offset, 1, i64::MAX, true).expect("read")
        })
    });
}

fn bench_read_from_cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
    let (n, value_bytes) = of_bytes(1 << 10);
    let one = batch(n, value_bytes);
    for _ in 0..1_000 {
        log.append(std::slice::from_ref(&one), 1, 0)
            .expect("append");
    }
    let start = log.log_end_offset() - 16 * 64;
    let mut group = c.benchmark_group("read_from_cache");
    group.throughput(Throughput::Bytes(64 << 10));
    group.bench_function("64KiB", |b| {
        b.iter(|| log.read(start, 64 << 10, i64::MAX, true).expect("read"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_split_batches, bench_validate_produced, bench_append, bench_index_lookup, bench_read_from_cache
}
criterion_main!(benches);

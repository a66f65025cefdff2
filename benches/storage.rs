//! Micro-benchmarks of storage's hot paths: batch validation (CRC-32C), append, offset-index
//! lookup and tail-cache reads. Kept short (a few seconds each) so they can run on the 2-core
//! dev machine; they are not tests.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use skein::storage::test_util::{batch, build_batch, BatchSpec};
use skein::storage::{split_batches, Log, LogConfig};

fn spec_of_bytes(total_bytes: usize) -> BatchSpec {
    // 16 records; each record adds ~8 bytes of framing around its value.
    let records = 16;
    let value_bytes = (total_bytes.saturating_sub(61) / records).saturating_sub(8);
    BatchSpec {
        records: records as i32,
        value_bytes,
        ..BatchSpec::default()
    }
}

fn bench_split_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_batches");
    for size in [16 << 10, 1 << 20] {
        let records: Bytes = build_batch(&spec_of_bytes(size));
        group.throughput(Throughput::Bytes(records.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &records, |b, records| {
            b.iter(|| split_batches(records).expect("valid"))
        });
    }
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    for size in [1 << 10, 16 << 10] {
        let one = batch(&spec_of_bytes(size));
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
            b.iter(|| {
                log.append(batches, 1, 0).expect("append");
                if log.segment_count() > 4 {
                    log.enforce_retention(i64::MAX).expect("retention");
                }
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
    let one = batch(&BatchSpec {
        records: 4,
        value_bytes: 16,
        ..BatchSpec::default()
    });
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
    let one = batch(&spec_of_bytes(1 << 10));
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
    targets = bench_split_batches, bench_append, bench_index_lookup, bench_read_from_cache
}
criterion_main!(benches);

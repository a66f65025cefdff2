//! One consumer connection: fetches its partitions from their leader (one Fetch in flight, long
//! polling), walks every batch (header, CRC-32C, then each record, decompressed if needed) and
//! hands each record to the [`Verifier`]. In e2e mode it also measures produce-to-consume latency
//! from the due time in each bench record's header; in consume mode it measures fetch round trips.
//!
//! Runs as one future on its bench thread's current-thread runtime.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::ResponseError;

use super::clock;
use super::verify::Verifier;
use super::{Shared, Target};
use crate::client::cluster::topic_name;
use crate::client::pipeline::{PipelineReader, PipelineWriter};
use crate::client::Connection;
use crate::record::codec::records_section;
use crate::record::walk::for_each_record;
use crate::record::{BatchHeader, BATCH_HEADER_BYTES};

/// The newest Fetch version that still names topics (v13 uses topic ids only).
pub(super) const FETCH_VERSION_MAX: i16 = 12;
/// How long the broker may hold a fetch that has nothing to return.
const MAX_WAIT_MS: i32 = 500;

/// What one consumer connection is to do.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub addr: String,
    pub partitions: Vec<i32>,
    /// Where reading starts, per partition.
    pub start_offsets: BTreeMap<i32, i64>,
    /// Where reading stops, per partition (consume mode without `--records`/`--duration`).
    pub end_offsets: Option<BTreeMap<i32, i64>>,
    /// Every producer's output is read from its first record, so sequences start at 0.
    pub sequences_from_zero: bool,
}

pub struct Consumer {
    spec: ConsumerSpec,
    writer: PipelineWriter,
    reader: PipelineReader,
    version: i16,
}

pub async fn connect(spec: ConsumerSpec) -> anyhow::Result<Consumer> {
    let conn = Connection::connect(&spec.addr).await?;
    let version = conn.version_of::<FetchRequest>()?.min(FETCH_VERSION_MAX);
    let (writer, reader) = conn.into_pipeline();
    Ok(Consumer {
        spec,
        writer,
        reader,
        version,
    })
}

/// Runs until the target is reached, time is up, or nothing new came for `--idle-timeout-s`.
/// Returns the verifier, whose violations the caller reports.
pub async fn run(consumer: Consumer, shared: Arc<Shared>, start_ns: u64) -> Verifier {
    let Consumer {
        spec,
        mut writer,
        mut reader,
        version,
    } = consumer;
    let mut verifier = Verifier::new(
        spec.start_offsets.iter().map(|(&p, &o)| (p, o)),
        spec.sequences_from_zero,
    );
    if let Err(e) = fetch_loop(
        &spec,
        &mut writer,
        &mut reader,
        version,
        &shared,
        &mut verifier,
        start_ns,
    )
    .await
    {
        shared
            .consume
            .error(format!("consumer of {}: {e:#}", spec.addr));
    }
    verifier
}

async fn fetch_loop(
    spec: &ConsumerSpec,
    writer: &mut PipelineWriter,
    reader: &mut PipelineReader,
    version: i16,
    shared: &Shared,
    verifier: &mut Verifier,
    start_ns: u64,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let e2e = config.mode.produces();
    // In e2e `--duration` bounds the producers; consumers then read what they wrote.
    let end_ns = config
        .duration_s
        .filter(|_| !e2e)
        .map(|d| start_ns + (d * 1e9) as u64);
    let idle_ns = (config.idle_timeout_s * 1e9) as u64;
    let mut active: Vec<i32> = spec.partitions.clone();
    let topic = topic_name(&config.topic);
    let mut last_progress_ns = clock::now_ns();
    let mut latencies: Vec<u64> = Vec::new();

    loop {
        if let Some(end) = &spec.end_offsets {
            active.retain(|p| {
                verifier.next_offset(*p).unwrap_or(0) < end.get(p).copied().unwrap_or(0)
            });
        }
        let now = clock::now_ns();
        if active.is_empty()
            || shared.stop.load(Ordering::Relaxed)
            || end_ns.is_some_and(|end| now >= end)
            || shared.consume_target_reached()
        {
            return Ok(());
        }
        if now.saturating_sub(last_progress_ns) > idle_ns {
            // Not an error by itself: the final count check says whether anything is missing.
            tracing::warn!(
                "consumer of {} partitions {:?}: nothing new for {} s, stopping",
                spec.addr,
                active,
                config.idle_timeout_s
            );
            return Ok(());
        }
        let request = fetch_request(
            config.fetch_max_bytes,
            &topic,
            active
                .iter()
                .map(|&p| (p, verifier.next_offset(p).unwrap_or(0))),
        );
        let sent_ns = clock::now_ns();
        let correlation_id = writer.send(&request, version).await?;
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            reader.receive::<FetchRequest>(correlation_id, version),
        )
        .await
        .map_err(|_| anyhow!("no Fetch response within 60 s"))??;
        let received_ns = clock::now_ns();
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            bail!("Fetch failed: {error:?}");
        }
        let (mut records, mut bytes) = (0u64, 0u64);
        latencies.clear();
        for t in &response.responses {
            for p in &t.partitions {
                if let Some(error) = ResponseError::try_from_code(p.error_code) {
                    shared.consume.error(format!(
                        "topic '{}' partition {}: Fetch: {error:?}; no longer read",
                        config.topic, p.partition_index
                    ));
                    active.retain(|&a| a != p.partition_index);
                    continue;
                }
                let data = p.records.clone().unwrap_or_default();
                let (r, b) = read_batches(
                    p.partition_index,
                    &data,
                    verifier,
                    e2e.then_some((&mut latencies, received_ns)),
                );
                records += r;
                bytes += b;
            }
        }
        if records > 0 {
            last_progress_ns = received_ns;
            shared.consume.latencies(|h| {
                if e2e {
                    for &l in &latencies {
                        h.saturating_record(l / 1_000);
                    }
                } else {
                    h.saturating_record(received_ns.saturating_sub(sent_ns) / 1_000);
                }
            });
            shared.consume.add(records, bytes);
        }
    }
}

/// A long-polling Fetch of `(partition, fetch offset)`s of `topic`, `fetch_max_bytes` in all,
/// shared fairly (but at least 1 MiB each).
pub(super) fn fetch_request(
    fetch_max_bytes: i32,
    topic: &TopicName,
    partitions: impl ExactSizeIterator<Item = (i32, i64)>,
) -> FetchRequest {
    let partition_max_bytes = (fetch_max_bytes / partitions.len().max(1) as i32).max(1 << 20);
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(fetch_max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic.clone())
            .with_partitions(
                partitions
                    .map(|(p, offset)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max_bytes)
                    })
                    .collect(),
            )])
}

/// The most a fetched batch may decompress to: far beyond anything the producers write.
const INFLATE_LIMIT_BYTES: u64 = 1 << 30;

/// Walks the batches fetched for one partition; returns (records, payload bytes) that were new.
/// A partial batch at the end (cut by the fetch size limit) is left for the next fetch.
pub(super) fn read_batches(
    partition: i32,
    data: &Bytes,
    verifier: &mut Verifier,
    mut e2e: Option<(&mut Vec<u64>, u64)>,
) -> (u64, u64) {
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut position = 0usize;
    let mut first = true;
    while data.len() - position >= BATCH_HEADER_BYTES {
        let header = match BatchHeader::parse(&data[position..]) {
            Ok(h) => h,
            Err(e) => {
                verifier.violation(format!("partition {partition}: bad batch header: {e}"));
                break;
            }
        };
        if header.magic != 2 {
            verifier.violation(format!(
                "partition {partition} offset {}: message format v{} (only v2 is read)",
                header.base_offset, header.magic
            ));
            break;
        }
        let total = header.total_bytes();
        if position + total > data.len() {
            break;
        }
        let batch = data.slice(position..position + total);
        position += total;
        let next = verifier
            .next_offset(partition)
            .unwrap_or(header.base_offset);
        // The first batch may start before the fetch offset; its earlier records were read before.
        let skip_below = if first { next } else { i64::MIN };
        first = false;
        if header.last_offset() < skip_below {
            continue;
        }
        if crate::record::batch::crc_matches(&header, &batch).is_err() {
            verifier.violation(format!(
                "partition {partition} offset {}: batch CRC-32C mismatch",
                header.base_offset
            ));
            continue;
        }
        if header.is_control() {
            if header.base_offset >= skip_below {
                verifier.observe_control(partition, header.base_offset, header.last_offset());
            }
            continue;
        }
        let body = match records_section(&header, &batch, INFLATE_LIMIT_BYTES) {
            Ok(b) => b,
            Err(e) => {
                verifier.violation(format!(
                    "partition {partition} offset {}: cannot read records: {e:#}",
                    header.base_offset
                ));
                continue;
            }
        };
        let walked = for_each_record(&body, header.records_count, |r| {
            let offset = header.base_offset + i64::from(r.offset_delta);
            if offset < skip_below {
                return;
            }
            records += 1;
            bytes += (r.value.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len)) as u64;
            let bench = verifier.observe(partition, offset, r.value);
            if let (Some(h), Some((latencies, now_ns))) = (bench, e2e.as_mut()) {
                latencies.push(now_ns.saturating_sub(h.due_ns));
            }
        });
        if let Err(e) = walked {
            verifier.violation(format!(
                "partition {partition} offset {}: malformed records: {e:#}",
                header.base_offset
            ));
        }
    }
    (records, bytes)
}

/// The consume-side target, for the final count check.
pub fn describe_target(target: &Target) -> String {
    match target {
        Target::Records(n) => format!("{n} records"),
        Target::EndOffsets => "the log end offsets seen at the start".to_owned(),
        Target::Produced => "every record produced".to_owned(),
        Target::Duration => "the duration".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::payload::BenchHeader;
    use crate::record::BatchBuilder;
    use kafka_protocol::records::Compression;

    fn batch(base_offset: i64, producer: u64, sequences: std::ops::Range<u64>) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::Lz4, 1024);
        for s in sequences {
            let h = BenchHeader {
                producer_id: producer,
                sequence: s,
                due_ns: 5,
            }
            .encode();
            b.append(0, None, &[&h, b"xxxx"]);
        }
        let mut bytes = b.finish().unwrap().to_vec();
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes
    }

    #[test]
    fn reads_verifies_and_leaves_partial_batches() {
        let mut data = batch(0, 1, 0..3);
        data.extend(batch(3, 1, 3..5));
        let partial = batch(5, 1, 5..6);
        data.extend_from_slice(&partial[..partial.len() - 4]);
        let mut v = Verifier::new([(0, 1)], false);
        let mut latencies = Vec::new();
        let (records, bytes) =
            read_batches(0, &Bytes::from(data), &mut v, Some((&mut latencies, 1005)));
        assert_eq!(
            records, 4,
            "offset 0 lies before the fetch offset, 5 is cut"
        );
        assert_eq!(bytes, 4 * 36);
        assert_eq!(latencies, vec![1000; 4]);
        assert_eq!(v.violations, 0, "{:?}", v.messages);
        assert_eq!(v.next_offset(0), Some(5));
    }

    #[test]
    fn corrupt_and_gapped_batches_are_violations() {
        let mut data = batch(0, 1, 0..2);
        let last = data.len() - 1;
        data[last] ^= 0xff;
        data.extend(batch(2, 1, 2..3));
        let mut v = Verifier::new([(0, 0)], true);
        read_batches(0, &Bytes::from(data), &mut v, None);
        assert!(v.violations >= 2, "{:?}", v.messages);
        assert!(v.messages[0].contains("CRC"), "{:?}", v.messages);
    }
}

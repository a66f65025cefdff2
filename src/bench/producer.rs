//! One producer connection: generates records on schedule, builds one v2 batch per partition,
//! sends a Produce request whenever a batch reaches `--batch-bytes` (or `--linger-ms` passes), keeps
//! up to `--max-in-flight` requests in flight, and measures each record's latency from its due time
//! to the acknowledgement (acks=0: to the moment the request was written).
//!
//! Runs as two futures on its bench thread's current-thread runtime: the writer (generate, batch,
//! send) and the reader (responses in order, accounting). A producer talks to one broker: the
//! leader of the partitions it was given.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, Semaphore};

use super::clock;
use super::payload::{self, BenchHeader, Rng};
use super::schedule::{Next, Schedule};
use super::Shared;
use crate::client::cluster::topic_name;
use crate::client::pipeline::{PipelineReader, PipelineWriter};
use crate::client::Connection;
use crate::record::BatchBuilder;

/// The newest Produce version that still names topics (v13 uses topic ids only).
const PRODUCE_VERSION_MAX: i16 = 12;

/// Picks keys for a producer: uniform over those of the `key_space` keys that the default
/// partitioning (`key % partitions`) sends to this producer's partitions.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    total_partitions: u64,
    /// Per slot (index into the producer's partitions): (partition, cumulative key count).
    cumulative: Vec<(u64, u64)>,
}

impl KeyPicker {
    pub fn new(key_space: u64, total_partitions: u32, partitions: &[i32]) -> KeyPicker {
        let p_total = u64::from(total_partitions);
        let mut sum = 0;
        let cumulative = partitions
            .iter()
            .map(|&p| {
                let p = p as u64;
                // Keys k < key_space with k % p_total == p.
                sum += if p < key_space {
                    (key_space - p).div_ceil(p_total)
                } else {
                    0
                };
                (p, sum)
            })
            .collect();
        KeyPicker {
            total_partitions: p_total,
            cumulative,
        }
    }

    /// Keys that land on this producer's partitions.
    pub fn keys(&self) -> u64 {
        self.cumulative.last().map_or(0, |c| c.1)
    }

    /// (slot, key).
    pub fn pick(&self, rng: &mut Rng) -> (usize, u64) {
        let r = rng.below(self.keys());
        let slot = self.cumulative.partition_point(|&(_, c)| c <= r);
        let before = if slot == 0 {
            0
        } else {
            self.cumulative[slot - 1].1
        };
        let partition = self.cumulative[slot].0;
        (slot, partition + (r - before) * self.total_partitions)
    }
}

/// What one producer connection is to do.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    /// Carried in every record's header; unique per connection and run.
    pub producer_id: u64,
    pub addr: String,
    pub partitions: Vec<i32>,
    pub keys: Option<KeyPicker>,
    /// This producer's share of `--records` and `--rate`.
    pub records: Option<u64>,
    pub rate: Option<f64>,
}

pub struct Producer {
    spec: ProducerSpec,
    writer: PipelineWriter,
    reader: PipelineReader,
    version: i16,
}

/// Opens the connection and settles the Produce version.
pub async fn connect(spec: ProducerSpec) -> anyhow::Result<Producer> {
    let conn = Connection::connect(&spec.addr).await?;
    let version = conn
        .version_of::<ProduceRequest>()?
        .min(PRODUCE_VERSION_MAX);
    if version < 3 {
        bail!(
            "{}: Produce v{version} cannot carry v2 record batches",
            spec.addr
        );
    }
    let (writer, reader) = conn.into_pipeline();
    Ok(Producer {
        spec,
        writer,
        reader,
        version,
    })
}

/// One batch inside a request, for accounting when its response comes.
struct SentBatch {
    partition: i32,
    records: u64,
    bytes: u64,
    due_ns: Vec<u64>,
}

struct InFlight {
    correlation_id: i32,
    batches: Vec<SentBatch>,
}

/// Per-partition state of the writer.
struct Slot {
    partition: i32,
    builder: BatchBuilder,
    next_sequence: u64,
    due_ns: Vec<u64>,
    bytes: u64,
}

pub async fn run(producer: Producer, shared: Arc<Shared>, start_ns: u64) {
    let Producer {
        spec,
        writer,
        reader,
        version,
    } = producer;
    let acks = shared.config.acks;
    let in_flight = Semaphore::new(shared.config.max_in_flight.max(1));
    let (tx, rx) = mpsc::unbounded_channel::<InFlight>();
    let addr = spec.addr.clone();
    // The writer half outlives the write loop: dropping a tokio OwnedWriteHalf shuts the socket's
    // sending side down, and some brokers (librdkafka's mock cluster) close the whole connection
    // on that FIN before the last responses are out.
    let mut writer = writer;
    let write = write_loop(
        spec,
        &mut writer,
        version,
        &shared,
        &in_flight,
        tx,
        start_ns,
    );
    if acks == 0 {
        // No responses come for acks=0; the reader half just stays idle.
        if let Err(e) = write.await {
            shared.produce.error(format!("producer to {addr}: {e:#}"));
        }
        drop(reader);
        drop(writer);
        return;
    }
    let read = read_loop(reader, version, &shared, &in_flight, rx);
    let (w, r) = tokio::join!(write, read);
    drop(writer);
    if let Err(e) = w {
        shared.produce.error(format!("producer to {addr}: {e:#}"));
    }
    if let Err(e) = r {
        shared.produce.error(format!("producer to {addr}: {e:#}"));
    }
}

async fn write_loop(
    spec: ProducerSpec,
    writer: &mut PipelineWriter,
    version: i16,
    shared: &Shared,
    in_flight: &Semaphore,
    tx: mpsc::UnboundedSender<InFlight>,
    start_ns: u64,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let end_ns = config.duration_s.map(|d| start_ns + (d * 1e9) as u64);
    let mut schedule = Schedule::new(start_ns, spec.rate, spec.records, end_ns);
    let mut slots: Vec<Slot> = spec
        .partitions
        .iter()
        .map(|&partition| Slot {
            partition,
            builder: BatchBuilder::new(
                shared.compression,
                config.batch_bytes + config.record_size + 64,
            ),
            next_sequence: 0,
            due_ns: Vec::new(),
            bytes: 0,
        })
        .collect();
    assert!(
        !slots.is_empty(),
        "a producer is given at least one partition"
    );
    let padding_len = config.record_size - payload::HEADER_BYTES;
    let mut rng = Rng::new(spec.producer_id);
    let mut key_buf = [0u8; 20];
    let linger_ns = config.linger_ms * 1_000_000;
    let topic = topic_name(&config.topic);
    let mut pending_records = 0u64;
    let mut pending_since_ns = 0u64;
    let mut round_robin = 0usize;

    loop {
        if acks_expected(config.acks) {
            // A closed semaphore means the reader failed; it has reported why.
            in_flight
                .acquire()
                .await
                .map_err(|_| anyhow!("stopped"))?
                .forget();
        }
        let mut done = false;
        'fill: loop {
            if shared.stop.load(Ordering::Relaxed) {
                done = true;
                break;
            }
            let now = clock::now_ns();
            loop {
                match schedule.poll(now) {
                    Next::Due { due_ns, .. } => {
                        let (slot_index, key) = match &spec.keys {
                            Some(picker) => {
                                let (slot, key) = picker.pick(&mut rng);
                                (slot, Some(key))
                            }
                            None => {
                                let slot = round_robin;
                                round_robin = (round_robin + 1) % slots.len();
                                (slot, None)
                            }
                        };
                        let slot = &mut slots[slot_index];
                        let sequence = slot.next_sequence;
                        slot.next_sequence += 1;
                        if config.debug_skip_sequence_at == Some(slot.next_sequence) {
                            slot.next_sequence += 1;
                        }
                        let header = BenchHeader {
                            producer_id: spec.producer_id,
                            sequence,
                            due_ns,
                        }
                        .encode();
                        let offset = payload::padding_offset(&mut rng);
                        let padding = &shared.padding[offset..offset + padding_len];
                        let key = key.map(|k| payload::format_key(k, &mut key_buf));
                        slot.builder
                            .append((due_ns / 1_000_000) as i64, key, &[&header, padding]);
                        slot.due_ns.push(due_ns);
                        slot.bytes += (config.record_size + key.map_or(0, <[u8]>::len)) as u64;
                        if pending_records == 0 {
                            pending_since_ns = now;
                        }
                        pending_records += 1;
                        if slot.builder.size_bytes() >= config.batch_bytes {
                            break 'fill;
                        }
                    }
                    Next::Wait { until_ns } => {
                        if pending_records > 0 {
                            let linger_end = pending_since_ns + linger_ns;
                            if linger_end <= now {
                                break 'fill;
                            }
                            clock::sleep_until(until_ns.min(linger_end)).await;
                        } else {
                            // Wake at least every 100 ms to notice a stop.
                            clock::sleep_until(until_ns.min(now + 100_000_000)).await;
                        }
                        continue 'fill;
                    }
                    Next::Done => {
                        done = true;
                        break 'fill;
                    }
                }
            }
        }
        if pending_records > 0 {
            send(writer, version, shared, &topic, &mut slots, &tx).await?;
            pending_records = 0;
            // Socket writes rarely block, so without this the writer could hog the thread and
            // acknowledgements would wait for the reader to be polled, inflating latency.
            tokio::task::yield_now().await;
        } else if acks_expected(config.acks) {
            in_flight.add_permits(1);
        }
        if done {
            return Ok(());
        }
    }
}

fn acks_expected(acks: i16) -> bool {
    acks != 0
}

async fn send(
    writer: &mut PipelineWriter,
    version: i16,
    shared: &Shared,
    topic: &kafka_protocol::messages::TopicName,
    slots: &mut [Slot],
    tx: &mpsc::UnboundedSender<InFlight>,
) -> anyhow::Result<()> {
    let mut partition_data = Vec::new();
    let mut batches = Vec::new();
    for slot in slots.iter_mut().filter(|s| !s.builder.is_empty()) {
        let records = u64::from(slot.builder.records() as u32);
        let batch: Bytes = slot.builder.finish()?;
        partition_data.push(
            PartitionProduceData::default()
                .with_index(slot.partition)
                .with_records(Some(batch)),
        );
        batches.push(SentBatch {
            partition: slot.partition,
            records,
            bytes: std::mem::take(&mut slot.bytes),
            due_ns: std::mem::take(&mut slot.due_ns),
        });
    }
    let request = ProduceRequest::default()
        .with_acks(shared.config.acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(partition_data)]);
    let correlation_id = writer.send(&request, version).await?;
    if acks_expected(shared.config.acks) {
        // The reader may already have failed and gone; then this request is simply not accounted.
        let _ = tx.send(InFlight {
            correlation_id,
            batches,
        });
    } else {
        // acks=0: the broker never answers; "acknowledged" is "written to the socket".
        let now = clock::now_ns();
        account(shared, &batches, now);
    }
    Ok(())
}

/// Counts acknowledged batches and records each record's latency from its due time.
fn account<'a>(shared: &Shared, batches: impl IntoIterator<Item = &'a SentBatch>, ack_ns: u64) {
    let (mut records, mut bytes) = (0, 0);
    shared.produce.latencies(|h| {
        for b in batches {
            for &due in &b.due_ns {
                h.saturating_record(ack_ns.saturating_sub(due) / 1_000);
            }
            records += b.records;
            bytes += b.bytes;
        }
    });
    shared.produce.add(records, bytes);
}

async fn read_loop(
    mut reader: PipelineReader,
    version: i16,
    shared: &Shared,
    in_flight: &Semaphore,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
) -> anyhow::Result<()> {
    let result = async {
        while let Some(request) = rx.recv().await {
            let response = tokio::time::timeout(
                Duration::from_secs(60),
                reader.receive::<ProduceRequest>(request.correlation_id, version),
            )
            .await
            .map_err(|_| anyhow!("no Produce response within 60 s"))??;
            let ack_ns = clock::now_ns();
            let mut ok: Vec<&SentBatch> = Vec::with_capacity(request.batches.len());
            for batch in &request.batches {
                let answer = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == batch.partition);
                match answer.map(|p| p.error_code) {
                    Some(0) => ok.push(batch),
                    Some(code) => {
                        let error = ResponseError::try_from_code(code)
                            .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"));
                        shared.produce.error(format!(
                            "topic '{}' partition {}: {} record(s) not acknowledged: {error}",
                            shared.config.topic, batch.partition, batch.records
                        ));
                    }
                    None => shared.produce.error(format!(
                        "topic '{}' partition {}: missing from the Produce response",
                        shared.config.topic, batch.partition
                    )),
                }
            }
            account(shared, ok, ack_ns);
            in_flight.add_permits(1);
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // Let the writer stop instead of waiting for permits that will never come back.
        in_flight.close();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_picker_stays_in_the_key_space_and_on_its_partitions() {
        let picker = KeyPicker::new(10, 4, &[1, 3]);
        // Keys 1, 5, 9 -> partition 1; 3, 7 -> partition 3.
        assert_eq!(picker.keys(), 5);
        let mut rng = Rng::new(9);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let (slot, key) = picker.pick(&mut rng);
            assert!(key < 10);
            assert_eq!(key % 4, [1, 3][slot]);
            seen.insert(key);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3, 5, 7, 9]);
        assert_eq!(KeyPicker::new(2, 4, &[3]).keys(), 0);
    }
}

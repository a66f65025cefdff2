//! Broker metrics, served as Prometheus text at `metrics.listener`/metrics.
//!
//! What runs where:
//! - Every shard counts its own traffic in its [`ShardMetrics`] (a field of `Shard`, defined in
//!   `shard::metrics`): plain `Cell` increments and one hdrhistogram record per produce or fetch,
//!   on that shard's thread only. No atomics, no locks, nothing shared.
//! - The control thread (tokio) serves HTTP ([`http`]). For each scrape it sends every shard a
//!   [`Job`] that copies that shard's counters and reads its partitions' gauges (log end offset,
//!   high watermark, size, segments) into a [`ShardSnapshot`], waits for all of them, and renders
//!   them ([`exposition`]). A scrape costs the shards one short job each; the text is built on the
//!   control thread.

pub mod exposition;
pub mod http;

pub use crate::shard::metrics::{
    ApiRequests, ClosedBy, LatencyHistogram, LatencySnapshot, PartitionTraffic, ShardCounters,
    ShardMetrics, LATENCY_BUCKETS_US,
};

use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;

use crate::shard::{Job, Shard, ShardSenders};

/// A partition's state as its owner shard sees it at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionGauges {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub segments: u64,
    /// Appends queued or being written, not yet acknowledged.
    pub appends_waiting: u64,
    /// Group writes of the partition's data, and their total time in microseconds.
    pub segment_writes: u64,
    pub segment_write_us: u64,
    /// Replicas assigned to the partition.
    pub replicas: u64,
    /// As its leader: the ISR's size and each follower's lag in offsets; `None` as a follower
    /// (Kafka reports both on the leader only).
    pub leading: Option<Leading>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leading {
    pub isr: u64,
    pub follower_lag: Vec<(i32, i64)>,
}

/// A group this shard coordinates, at scrape time.
pub use crate::shard::coordinator::GroupGauges;

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// The controller as this shard's metadata names it (-1: none known).
    pub controller_id: i32,
    pub counters: ShardCounters,
    /// The partitions this shard owns.
    pub partitions: Vec<PartitionGauges>,
    /// The groups this shard coordinates, with their committed offsets.
    pub groups: Vec<GroupGauges>,
}

impl ShardSnapshot {
    /// Runs on the shard's own thread.
    pub fn take(shard: &Shard) -> ShardSnapshot {
        let metadata = shard.metadata();
        let partitions = shard
            .partitions()
            .iter()
            .map(|p| {
                let (segment_writes, segment_write_us) = p.segment_write_totals();
                let replicas = metadata
                    .partition(&p.tp.topic, p.tp.partition)
                    .map_or(0, |state| state.replicas.len() as u64);
                let leading = p.replication_gauges().map(|(isr, follower_lag)| Leading {
                    isr: isr as u64,
                    follower_lag,
                });
                PartitionGauges {
                    replicas,
                    leading,
                    topic: p.tp.topic.clone(),
                    partition: p.tp.partition,
                    log_start_offset: p.log_start_offset(),
                    log_end_offset: p.log_end_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: p.size_bytes(),
                    segments: p.segment_count() as u64,
                    appends_waiting: p.appends_waiting() as u64,
                    segment_writes,
                    segment_write_us,
                }
            })
            .collect();
        ShardSnapshot {
            controller_id: metadata.controller_id,
            shard: shard.id,
            counters: shard.metrics.snapshot(&metadata),
            partitions,
            groups: shard.coordinator.gauges(),
        }
    }
}

/// A scrape that could not be answered whole.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("shard {0} has stopped")]
    ShardStopped(usize),
    #[error("shard {0} did not answer within {1:?}")]
    Timeout(usize, Duration),
}

/// Asks every shard for its snapshot and waits for all of them. A partial answer would make
/// counters summed across shards seem to go backwards, so one missing shard fails the scrape.
pub async fn collect(
    shards: &ShardSenders,
    timeout: Duration,
) -> Result<Vec<ShardSnapshot>, ScrapeError> {
    let mut answers = Vec::with_capacity(shards.len());
    for id in 0..shards.len() {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |shard: &Rc<Shard>| {
            let _ = reply.send(ShardSnapshot::take(shard));
        });
        shards
            .send(id, job)
            .await
            .map_err(|_| ScrapeError::ShardStopped(id))?;
        answers.push(answer);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut snapshots = Vec::with_capacity(answers.len());
    for (id, answer) in answers.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(snapshot)) => snapshots.push(snapshot),
            Ok(Err(_)) => return Err(ScrapeError::ShardStopped(id)),
            Err(_) => return Err(ScrapeError::Timeout(id, timeout)),
        }
    }
    Ok(snapshots)
}

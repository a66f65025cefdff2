//! One shard's counters and latency histograms. Owned by its [`Shard`](crate::shard::Shard) and
//! touched only on that shard's thread, so every update is a plain `Cell` write: no atomics, no
//! locks, no allocation in steady state (a topic's entry is allocated the first time this shard
//! handles a request for it).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metadata::Metadata;

/// Raw API keys below this get their own request counters; Kafka's keys end in the 90s today.
const API_SLOTS: usize = 128;

/// Latency histogram buckets (Prometheus `le` bounds), in microseconds: 50 us to 10 s.
pub const LATENCY_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Longest latency the histograms tell apart; longer requests are recorded as this.
const LATENCY_MAX_US: u64 = 60_000_000;

#[derive(Default)]
struct ApiCounts {
    requests: Cell<u64>,
    errors: Cell<u64>,
}

/// A request-latency histogram: hdrhistogram (2 significant digits, up to 60 s) for the buckets,
/// plus the exact sum Prometheus wants as `_sum`.
pub struct LatencyHistogram {
    histogram: RefCell<Histogram<u64>>,
    sum_us: Cell<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            histogram: RefCell::new(
                Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds"),
            ),
            sum_us: Cell::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.borrow_mut().saturating_record(us);
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }

    /// Cumulative counts at each of [`LATENCY_BUCKETS_US`], to within the histogram's 1%
    /// resolution.
    pub fn snapshot(&self) -> LatencySnapshot {
        let histogram = self.histogram.borrow();
        LatencySnapshot {
            buckets: LATENCY_BUCKETS_US
                .iter()
                .map(|&le| histogram.count_between(0, le))
                .collect(),
            count: histogram.len(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// Why the broker closed a client connection because of a limit (README, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// `connections.max.idle.ms`.
    Idle,
    /// `connections.max.stall.ms`.
    Stalled,
    /// A frame longer than `socket.request.max.bytes`, or too short for a header.
    FrameSize,
    /// A request that does not decode, or an API or version skein does not serve.
    Malformed,
    /// A request naming more partitions than the request budget could hold at the time.
    Busy,
    /// An acks=0 produce that failed: closing is the only way to tell the producer.
    Acks0Error,
}

impl ClosedBy {
    pub const ALL: [ClosedBy; 6] = [
        ClosedBy::Idle,
        ClosedBy::Stalled,
        ClosedBy::FrameSize,
        ClosedBy::Malformed,
        ClosedBy::Busy,
        ClosedBy::Acks0Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ClosedBy::Idle => "idle",
            ClosedBy::Stalled => "stalled",
            ClosedBy::FrameSize => "frame_size",
            ClosedBy::Malformed => "malformed",
            ClosedBy::Busy => "busy",
            ClosedBy::Acks0Error => "acks0_error",
        }
    }
}

/// Produce and fetch traffic of one partition, as seen by one shard.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionTraffic {
    pub produce_requests: u64,
    pub produce_errors: u64,
    pub bytes_in: u64,
    pub fetch_requests: u64,
    pub fetch_errors: u64,
    pub bytes_out: u64,
}

impl PartitionTraffic {
    pub fn add(&mut self, other: &PartitionTraffic) {
        self.produce_requests += other.produce_requests;
        self.produce_errors += other.produce_errors;
        self.bytes_in += other.bytes_in;
        self.fetch_requests += other.fetch_requests;
        self.fetch_errors += other.fetch_errors;
        self.bytes_out += other.bytes_out;
    }
}

/// A topic's traffic on this shard. The topic id tells a re-created topic of the same name apart,
/// so its counters start again from zero instead of continuing the old topic's.
struct TopicTraffic {
    topic_id: uuid::Uuid,
    /// Index = partition number.
    partitions: Vec<PartitionTraffic>,
}

/// Everything one shard counts.
pub struct ShardMetrics {
    /// By raw API key; keys outside `0..API_SLOTS` share the last slot.
    requests: [ApiCounts; API_SLOTS],
    pub produce_latency: LatencyHistogram,
    pub fetch_latency: LatencyHistogram,
    connections_active: Cell<u64>,
    connections_accepted: Cell<u64>,
    connections_refused: Cell<u64>,
    /// By [`ClosedBy`], in the order of [`ClosedBy::ALL`].
    connections_closed: [Cell<u64>; 6],
    request_budget_waits: Cell<u64>,
    forwards_sent: Cell<u64>,
    jobs_received: Cell<u64>,
    /// Per-partition traffic, counted on the shard that handled the client's request (where the
    /// bytes really came in and went out), by topic name.
    traffic: RefCell<HashMap<String, TopicTraffic>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: std::array::from_fn(|_| ApiCounts::default()),
            produce_latency: LatencyHistogram::default(),
            fetch_latency: LatencyHistogram::default(),
            connections_active: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            connections_closed: Default::default(),
            request_budget_waits: Cell::new(0),
            forwards_sent: Cell::new(0),
            jobs_received: Cell::new(0),
            traffic: RefCell::new(HashMap::new()),
        }
    }
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

impl ShardMetrics {
    /// One request handled (or refused, `failed`), and how long it took.
    pub fn record_request(&self, api_key: i16, failed: bool, latency: Duration) {
        let slot = usize::try_from(api_key)
            .ok()
            .filter(|&k| k < API_SLOTS - 1)
            .unwrap_or(API_SLOTS - 1);
        let counts = &self.requests[slot];
        bump(&counts.requests);
        if failed {
            bump(&counts.errors);
        }
        match api_key {
            0 => self.produce_latency.record(latency),
            1 => self.fetch_latency.record(latency),
            _ => {}
        }
    }

    pub fn connection_opened(&self) {
        bump(&self.connections_accepted);
        bump(&self.connections_active);
    }

    pub fn connection_closed(&self) {
        let active = self.connections_active.get();
        debug_assert!(active > 0, "more connections closed than opened");
        self.connections_active.set(active.saturating_sub(1));
    }

    pub fn connection_refused(&self) {
        bump(&self.connections_refused);
    }

    pub fn connection_closed_by(&self, why: ClosedBy) {
        bump(&self.connections_closed[why as usize]);
    }

    /// A request frame waited for the shard's request budget.
    pub fn request_budget_wait(&self) {
        bump(&self.request_budget_waits);
    }

    pub fn connections_active(&self) -> u64 {
        self.connections_active.get()
    }

    pub fn forward_sent(&self) {
        bump(&self.forwards_sent);
    }

    pub fn job_received(&self) {
        bump(&self.jobs_received);
    }

    /// Updates one partition's traffic counters. Allocates only the first time this shard sees the
    /// topic (or a higher partition number of it).
    pub fn record_partition(
        &self,
        topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
        update: impl FnOnce(&mut PartitionTraffic),
    ) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        let mut traffic = self.traffic.borrow_mut();
        let entry = match traffic.get_mut(topic) {
            Some(entry) => entry,
            None => traffic.entry(topic.to_owned()).or_insert(TopicTraffic {
                topic_id,
                partitions: Vec::new(),
            }),
        };
        if entry.topic_id != topic_id {
            entry.topic_id = topic_id;
            entry.partitions.clear();
        }
        if entry.partitions.len() <= index {
            entry
                .partitions
                .resize(index + 1, PartitionTraffic::default());
        }
        update(&mut entry.partitions[index]);
    }

    /// A copy of the counters for the scrape. Traffic of topics that no longer exist (or exist
    /// under a new id) is dropped here, so deleted topics do not linger in the output forever.
    pub fn snapshot(&self, metadata: &Metadata) -> ShardCounters {
        let mut traffic = self.traffic.borrow_mut();
        traffic.retain(|name, t| {
            metadata
                .topic(name)
                .is_some_and(|topic| topic.topic_id == t.topic_id)
        });
        let traffic = traffic
            .iter()
            .flat_map(|(name, t)| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p != PartitionTraffic::default())
                    .map(move |(i, p)| (name.clone(), i as i32, *p))
            })
            .collect();
        let requests = self
            .requests
            .iter()
            .enumerate()
            .filter(|(_, c)| c.requests.get() > 0)
            .map(|(key, c)| ApiRequests {
                api_key: (key < API_SLOTS - 1).then_some(key as i16),
                requests: c.requests.get(),
                errors: c.errors.get(),
            })
            .collect();
        ShardCounters {
            requests,
            produce_latency: self.produce_latency.snapshot(),
            fetch_latency: self.fetch_latency.snapshot(),
            connections_active: self.connections_active.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
            connections_closed: std::array::from_fn(|i| self.connections_closed[i].get()),
            request_budget_waits: self.request_budget_waits.get(),
            forwards_sent: self.forwards_sent.get(),
            jobs_received: self.jobs_received.get(),
            traffic,
        }
    }
}

/// Requests of one API on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequests {
    /// `None` for keys skein does not know.
    pub api_key: Option<i16>,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Cumulative counts, one per [`LATENCY_BUCKETS_US`] bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

/// A shard's counters at scrape time, sent from the shard to the control thread.
#[derive(Debug, Clone, Default)]
pub struct ShardCounters {
    pub requests: Vec<ApiRequests>,
    pub produce_latency: LatencySnapshot,
    pub fetch_latency: LatencySnapshot,
    pub connections_active: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_closed: [u64; 6],
    pub request_budget_waits: u64,
    pub forwards_sent: u64,
    pub jobs_received: u64,
    pub traffic: Vec<(String, i32, PartitionTraffic)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        for us in [10, 60, 60, 700, 3_000_000, 90_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets[0], 1, "50 us: only the 10 us request");
        assert_eq!(s.buckets[1], 3, "100 us");
        assert_eq!(s.buckets[3], 3, "500 us");
        assert_eq!(s.buckets[4], 4, "1 ms");
        assert_eq!(*s.buckets.last().unwrap(), 5, "10 s: all but the 90 s one");
        assert!(s.buckets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s.sum_us, 10 + 60 + 60 + 700 + 3_000_000 + 90_000_000);
    }

    #[test]
    fn traffic_of_a_recreated_topic_starts_from_zero() {
        let m = ShardMetrics::default();
        let (old, new) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        m.record_partition("t", old, 2, |p| p.bytes_in += 10);
        m.record_partition("t", new, 0, |p| p.bytes_in += 5);
        let mut metadata = Metadata::default();
        metadata.topics.insert(
            "t".to_owned(),
            std::sync::Arc::new(crate::metadata::TopicMetadata {
                name: "t".to_owned(),
                topic_id: new,
                partitions: Vec::new(),
                config: crate::config::TopicConfig::resolve(
                    &Default::default(),
                    &Default::default(),
                )
                .0,
            }),
        );
        let s = m.snapshot(&metadata);
        assert_eq!(s.traffic.len(), 1);
        assert_eq!((s.traffic[0].1, s.traffic[0].2.bytes_in), (0, 5));
        // Gone from the metadata: dropped.
        assert!(m.snapshot(&Metadata::default()).traffic.is_empty());
    }

    #[test]
    fn unknown_api_keys_share_one_slot() {
        let m = ShardMetrics::default();
        m.record_request(0, false, Duration::from_micros(5));
        m.record_request(500, true, Duration::ZERO);
        m.record_request(-2, true, Duration::ZERO);
        let s = m.snapshot(&Metadata::default());
        assert_eq!(s.requests.len(), 2);
        assert_eq!(s.requests[0].api_key, Some(0));
        assert_eq!(s.requests[1].api_key, None);
        assert_eq!((s.requests[1].requests, s.requests[1].errors), (2, 2));
        assert_eq!(s.produce_latency.count, 1);
    }
}

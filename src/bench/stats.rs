//! Counting and latency, shared between the bench threads and the main thread.
//!
//! Each measured stream (produce acks, fetched records, end-to-end delivery) has a [`Meter`]:
//! atomic counters, plus an *interval* histogram that bench threads record into (one short lock
//! per response, never per record) and that the main thread drains once a second into the
//! cumulative histogram and the per-second timeline. So the progress line, the plot's latency over
//! time and the final percentiles all come from the same samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 us .. 1 hour, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Error messages kept verbatim per meter.
const MAX_ERROR_MESSAGES: usize = 20;

pub struct Meter {
    pub name: &'static str,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    interval: Mutex<Histogram<u64>>,
    messages: Mutex<Vec<String>>,
}

impl Meter {
    pub fn new(name: &'static str) -> Meter {
        Meter {
            name,
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
            messages: Mutex::new(Vec::new()),
        }
    }

    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Records latencies (in microseconds) under one lock.
    pub fn latencies(&self, f: impl FnOnce(&mut Histogram<u64>)) {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h);
    }

    /// Counts `count` errors and keeps the message (the first few only).
    pub fn errors_with(&self, count: u64, message: String) {
        self.errors.fetch_add(count, Ordering::Relaxed);
        let mut m = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() < MAX_ERROR_MESSAGES {
            m.push(message);
        }
    }

    /// Counts errors already described by an earlier message.
    pub fn count_errors(&self, count: u64) {
        self.errors.fetch_add(count, Ordering::Relaxed);
    }

    pub fn error(&self, message: String) {
        self.errors_with(1, message);
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the interval histogram, leaving an empty one.
    fn drain_interval(&self) -> Histogram<u64> {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        let out = h.clone();
        h.reset();
        out
    }
}

/// Latency percentiles in microseconds, the report's `latency_us`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
    /// How many latencies were measured.
    pub count: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
            count: h.len(),
        }
    }
}

/// One second of one meter.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start, at the end of the interval.
    pub t_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What the main thread accumulates for one meter.
pub struct Series {
    pub total: Histogram<u64>,
    pub samples: Vec<Sample>,
    last_t_s: f64,
    last_records: u64,
    last_bytes: u64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            total: new_histogram(),
            samples: Vec::new(),
            last_t_s: 0.0,
            last_records: 0,
            last_bytes: 0,
        }
    }
}

impl Series {
    /// Drains the meter's interval into the totals and appends a sample ending at `t_s`.
    pub fn sample(&mut self, meter: &Meter, t_s: f64) -> &Sample {
        let interval = meter.drain_interval();
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.total.add(&interval);
        let (records, bytes) = (meter.records(), meter.bytes());
        let dt = (t_s - self.last_t_s).max(1e-9);
        let p = Percentiles::of(&interval);
        self.samples.push(Sample {
            t_s,
            records_per_s: (records - self.last_records) as f64 / dt,
            mb_per_s: (bytes - self.last_bytes) as f64 / dt / 1e6,
            errors: meter.errors(),
            p50_us: p.p50,
            p99_us: p.p99,
            max_us: p.max,
        });
        self.last_t_s = t_s;
        self.last_records = records;
        self.last_bytes = bytes;
        self.samples.last().expect("just pushed")
    }
}

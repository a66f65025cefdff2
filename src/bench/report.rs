//! The result of a run: the progress line, the final table (stdout) and the JSON report
//! (`--report`). Runs on the main thread after the bench threads have finished.
//!
//! Units: MB is 10^6 bytes; bytes count record payload (value and key), not protocol framing.

use serde::Serialize;

use super::config::{BenchConfig, Mode};
use super::stats::{Meter, Percentiles, Sample, Series};
use super::Shared;

/// One measured stream (produce acknowledgements or consumed records).
#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    pub records: u64,
    pub bytes: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
    /// What the latency measures.
    pub latency: &'static str,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Verification {
    /// Records that carried the bench header (their sequences were checked).
    pub bench_records: u64,
    /// Records without it (only their offsets were checked).
    pub foreign_records: u64,
    pub violations: u64,
}

/// The report. The top-level throughput and latency are the mode's main stream: produce
/// acknowledgements for `produce`, consumed records for `consume` and `e2e`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub mode: Mode,
    pub topic: String,
    pub records: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Errors of every kind: broker error codes, failed connections, verification violations,
    /// missing records.
    pub errors: u64,
    pub latency: &'static str,
    pub latency_us: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce: Option<StreamResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<StreamResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    pub error_messages: Vec<String>,
    /// Per second, for the main stream.
    pub timeline: Vec<Sample>,
    pub config: BenchConfig,
}

fn stream(meter: &Meter, series: &Series, duration_s: f64, latency: &'static str) -> StreamResult {
    let d = duration_s.max(1e-9);
    StreamResult {
        records: meter.records(),
        bytes: meter.bytes(),
        records_per_s: meter.records() as f64 / d,
        mb_per_s: meter.bytes() as f64 / d / 1e6,
        errors: meter.errors(),
        latency,
        latency_us: Percentiles::of(&series.total),
    }
}

pub fn outcome(
    shared: &Shared,
    duration_s: f64,
    produce_series: &Series,
    consume_series: &Series,
    verification: Verification,
) -> Outcome {
    let config = &shared.config;
    let mode = config.mode;
    let produce = mode.produces().then(|| {
        stream(
            &shared.produce,
            produce_series,
            duration_s,
            "produce: due time to acknowledgement",
        )
    });
    let consume = mode.consumes().then(|| {
        let latency = if mode == Mode::E2e {
            "end to end: due time (in the record) to consumed"
        } else {
            "fetch round trip (fetches that returned records)"
        };
        stream(&shared.consume, consume_series, duration_s, latency)
    });
    let (main, series) = match mode {
        Mode::Produce => (
            produce.clone().expect("produce mode measures produce"),
            produce_series,
        ),
        _ => (consume.clone().expect("this mode consumes"), consume_series),
    };
    let mut error_messages = shared.produce.messages();
    error_messages.extend(shared.consume.messages());
    Outcome {
        mode,
        topic: config.topic.clone(),
        records: main.records,
        bytes: main.bytes,
        duration_s,
        records_per_s: main.records_per_s,
        mb_per_s: main.mb_per_s,
        errors: shared.produce.errors() + shared.consume.errors(),
        latency: main.latency,
        latency_us: main.latency_us,
        produce,
        consume,
        verification: mode.consumes().then_some(verification),
        error_messages,
        timeline: series.samples.clone(),
        config: config.clone(),
    }
}

/// "1,234,567"
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, shown in the unit that reads best.
pub fn us(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2} s", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.2} ms", v as f64 / 1e3)
    } else {
        format!("{v} us")
    }
}

/// One stream's part of the live progress line.
pub fn progress_part(name: &str, s: &Sample) -> String {
    format!(
        "  {name} {:>11} rec/s {:>8.1} MB/s  p99 {:>9}  errors {}",
        thousands(s.records_per_s as u64),
        s.mb_per_s,
        us(s.p99_us),
        s.errors
    )
}

/// The final table, for stdout.
pub fn table(o: &Outcome) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "skein bench {}  topic '{}'  {:.2} s\n",
        o.mode.name(),
        o.topic,
        o.duration_s
    ));
    out.push_str(&format!(
        "{:<9} {:>13} {:>13} {:>9}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
        "stream",
        "records",
        "records/s",
        "MB/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "errors"
    ));
    let row = |name: &str, s: &StreamResult| {
        let l = &s.latency_us;
        format!(
            "{:<9} {:>13} {:>13} {:>9.1}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            name,
            thousands(s.records),
            thousands(s.records_per_s as u64),
            s.mb_per_s,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.p9999),
            us(l.max),
            s.errors
        )
    };
    let mut notes = Vec::new();
    if let Some(p) = &o.produce {
        out.push_str(&row("produce", p));
        notes.push(format!("produce latency: {}", p.latency));
    }
    if let Some(c) = &o.consume {
        out.push_str(&row("consume", c));
        notes.push(format!("consume latency: {}", c.latency));
    }
    for n in notes {
        out.push_str(&format!("  {n}\n"));
    }
    if let Some(v) = &o.verification {
        out.push_str(&format!(
            "verification: {} bench record(s) with sequences checked, {} other record(s), {} violation(s)\n",
            thousands(v.bench_records),
            thousands(v.foreign_records),
            v.violations
        ));
    }
    if o.errors > 0 {
        out.push_str(&format!("errors: {}\n", o.errors));
        for m in &o.error_messages {
            out.push_str(&format!("  {m}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(us(12), "12 us");
        assert_eq!(us(1_500), "1.50 ms");
        assert_eq!(us(2_000_000), "2.00 s");
    }
}

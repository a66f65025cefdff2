//! The result of a run: the progress line, the final table (stdout) and the JSON report
//! (`--report`). Runs on the main thread after the bench threads have finished.
//!
//! Units: MB is 10^6 bytes; bytes count record payload (value and key), not protocol framing.

use serde::Serialize;

use super::commit::CommitResult;
use super::config::{BenchConfig, Mode};
use super::group::GroupResult;
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
/// acknowledgements for `produce`, consumed records for `consume` and `e2e`, committed partition
/// offsets for `commit` (whose `bytes` are 0).
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
    /// consume --group: rebalances and commits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupResult>,
    /// commit: requests and partition offsets per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitResult>,
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

/// What the main thread sampled of each stream once a second.
#[derive(Default)]
pub struct AllSeries {
    pub produce: Series,
    pub consume: Series,
    pub commit: Series,
}

impl AllSeries {
    /// The mode's main stream.
    pub fn main(&self, mode: Mode) -> &Series {
        match mode {
            Mode::Produce => &self.produce,
            Mode::Consume | Mode::E2e => &self.consume,
            Mode::Commit => &self.commit,
        }
    }
}

pub fn outcome(
    shared: &Shared,
    duration_s: f64,
    series: &AllSeries,
    verification: Verification,
    group: Option<GroupResult>,
    commit: Option<CommitResult>,
) -> Outcome {
    let (produce_series, consume_series) = (&series.produce, &series.consume);
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
    let main = match mode {
        Mode::Produce => produce.clone().expect("produce mode measures produce"),
        Mode::Consume | Mode::E2e => consume.clone().expect("this mode consumes"),
        Mode::Commit => stream(
            &shared.commit,
            &series.commit,
            duration_s,
            "OffsetCommit round trip",
        ),
    };
    let mut error_messages = shared.produce.messages();
    error_messages.extend(shared.consume.messages());
    error_messages.extend(shared.commit.messages());
    Outcome {
        mode,
        topic: config.topic.clone(),
        records: main.records,
        bytes: main.bytes,
        duration_s,
        records_per_s: main.records_per_s,
        mb_per_s: main.mb_per_s,
        errors: shared.produce.errors() + shared.consume.errors() + shared.commit.errors(),
        latency: main.latency,
        latency_us: main.latency_us,
        produce,
        consume,
        verification: mode.consumes().then_some(verification),
        group,
        commit,
        error_messages,
        timeline: series.main(mode).samples.clone(),
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
    if o.mode == Mode::Commit {
        let main = StreamResult {
            records: o.records,
            bytes: o.bytes,
            records_per_s: o.records_per_s,
            mb_per_s: o.mb_per_s,
            errors: o.errors,
            latency: o.latency,
            latency_us: o.latency_us,
        };
        out.push_str(&row("commit", &main));
        notes.push(format!(
            "commit: records are partition offsets committed; latency: {}",
            o.latency
        ));
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
    if let Some(g) = &o.group {
        let stable = g.rebalance_ms.map_or_else(
            || "never stable".to_owned(),
            |ms| format!("stable {ms:.1} ms after the first JoinGroup"),
        );
        out.push_str(&format!(
            "group '{}': {} members, {stable}; {} rebalance(s), {} join(s), {} commit(s) \
             ({} refused)\n",
            g.group, g.members, g.rebalances, g.joins, g.commits, g.commits_refused
        ));
    }
    if let Some(c) = &o.commit {
        out.push_str(&format!(
            "group '{}': {} OffsetCommit requests ({}/s) of {} partition(s) each over {} \
             connection(s), {} in flight each: {} partition offsets/s; {}\n",
            c.group,
            thousands(c.requests),
            thousands(c.requests_per_s as u64),
            c.partitions_per_commit,
            c.connections,
            c.max_in_flight,
            thousands(c.partition_commits_per_s as u64),
            c.final_offset.map_or_else(
                || "the final commit failed".to_owned(),
                |o| format!("final offset {o} committed and read back")
            )
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

//! `skein bench produce|consume|e2e|commit --bootstrap HOST:PORT[,...] --topic T ...`: the load
//! generator.
//! This file holds the flags; the logic is in `src/bench/`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::bench::{self, BenchConfig, Mode};

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Produce records and measure throughput and acknowledgement latency.
    Produce,
    /// Read a topic from the start, verify it, measure throughput.
    Consume,
    /// Produce and consume at once; measure produce-to-consume latency per record.
    E2e,
    /// Commit offsets for --group as fast as its coordinator takes them (OffsetCommit
    /// throughput and latency).
    Commit,
}

#[derive(Args)]
#[command(
    about = "Load generator: produce, consume, both (e2e) or commit offsets against any \
             Kafka-compatible broker",
    long_about = "Load generator: produce, consume, both (e2e) or commit offsets against any \
        Kafka-compatible broker.\n\n\
        Every produced value starts with a 32-byte header (producer id, per-partition sequence, \
        due time); consumers check offsets are contiguous and sequences have no gaps, and count \
        violations as errors. Latency is measured from each record's scheduled (due) time, so a \
        stalled broker shows up as latency (no coordinated omission). Exits non-zero if there \
        were errors.\n\n\
        consume --group G reads through Kafka's group protocol (JoinGroup, SyncGroup with a range \
        assignment, committed offsets, heartbeats, commits, LeaveGroup) and reports the time to a \
        stable group. commit --group G measures OffsetCommit throughput with commits from outside \
        the group (generation -1), which the coordinator takes only while the group has no \
        members."
)]
pub struct BenchArgs {
    /// What to run.
    #[arg(value_enum)]
    mode: ModeArg,
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to produce to / consume from / commit offsets of.
    #[arg(long)]
    topic: String,
    /// Records to produce (produce, e2e) or to consume (consume). Consume without it reads up to
    /// the log end offsets seen at the start.
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Run for this many seconds instead of (or as well as) a record count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Value size of each record, header included (at least 32).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    record_size: usize,
    /// Give records keys spread over K distinct keys (partition = key % partitions); without it
    /// records have no key and go round-robin over the partitions.
    #[arg(long, value_name = "K")]
    key_space: Option<u64>,
    /// Offered load cap in records per second over all producers; latency is measured from each
    /// record's scheduled time. Without it, as fast as possible.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Acknowledgements to ask for: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// Send a partition's batch once it reaches this many (uncompressed) bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Send batches that are not full after this long (only matters below full speed, i.e. with
    /// --rate).
    #[arg(long, value_name = "MS", default_value_t = 5)]
    linger_ms: u64,
    /// Compression codec of produced batches.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    /// Producer connections (each writes to every partition, one connection per leader broker).
    #[arg(long, value_name = "N", default_value_t = 1)]
    producers: usize,
    /// Consumer connections (partitions are split among them); with --group, group members
    /// (each with its own connections; the group's leader assigns the partitions).
    #[arg(long, value_name = "N", default_value_t = 1)]
    consumers: usize,
    /// Produce (commit: OffsetCommit) requests in flight per connection.
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_in_flight: usize,
    /// consume: read as members of this consumer group, from its committed offsets (the log
    /// start where it has none). commit: the group to commit offsets for.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// consume --group: members heartbeat this often.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// consume --group: the session timeout members join with.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    session_timeout_ms: i32,
    /// consume --group: members commit their positions this often, and when they give
    /// partitions up or stop.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    commit_interval_ms: u64,
    /// consume --group: member i joins i times this long after the start (members trickling
    /// in, as in a rolling restart); without it they all join at once.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    join_stagger_ms: u64,
    /// commit: partitions named in each OffsetCommit request (at most the topic's partitions;
    /// requests take them in turn).
    #[arg(long, value_name = "P", default_value_t = 1)]
    partitions_per_commit: usize,
    /// commit: connections to the group's coordinator.
    #[arg(long, value_name = "C", default_value_t = 1)]
    connections: usize,
    /// commit: OffsetCommit requests to send in all (or run for --duration).
    #[arg(long, value_name = "N")]
    commits: Option<u64>,
    /// CPUs to run the bench's threads on, one pinned thread each: a list and/or ranges, e.g.
    /// "2,3" or "0-3". Without it: one unpinned thread per CPU (at most one per connection).
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Create the topic first with PARTITIONS:REPLICATION_FACTOR (an existing topic is used as is).
    #[arg(long, value_name = "PARTITIONS:RF")]
    create_topic: Option<String>,
    /// Largest Fetch response to ask for, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    fetch_max_bytes: i32,
    /// A consumer stops after this many seconds without a new record (the final count check
    /// then reports what is missing).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    idle_timeout: f64,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Draw latency over time and the percentile distribution to this file (.svg or .html).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// TEST ONLY: producers skip sequence number N in every partition, so consumers have a gap
    /// to find. Hidden from --help; used by tests/bench.rs.
    #[arg(long, value_name = "N", hide = true)]
    debug_skip_sequence_at: Option<u64>,
}

fn parse_cores(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim()
                        .parse()
                        .with_context(|| format!("--cores: '{part}'"))?,
                    b.trim()
                        .parse()
                        .with_context(|| format!("--cores: '{part}'"))?,
                );
                if a > b {
                    bail!("--cores: range '{part}' runs backwards");
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().with_context(|| format!("--cores: '{part}'"))?),
        }
    }
    Ok(cores)
}

fn parse_create_topic(spec: &str) -> anyhow::Result<(i32, i16)> {
    let (p, rf) = spec
        .split_once(':')
        .with_context(|| format!("--create-topic {spec}: expected PARTITIONS:RF"))?;
    let partitions: i32 = p
        .parse()
        .with_context(|| format!("--create-topic {spec}: partitions"))?;
    let rf: i16 = rf
        .parse()
        .with_context(|| format!("--create-topic {spec}: replication factor"))?;
    if partitions < 1 || rf < 1 {
        bail!("--create-topic {spec}: partitions and replication factor must be at least 1");
    }
    Ok((partitions, rf))
}

impl BenchArgs {
    fn into_config(self) -> anyhow::Result<BenchConfig> {
        Ok(BenchConfig {
            mode: match self.mode {
                ModeArg::Produce => Mode::Produce,
                ModeArg::Consume => Mode::Consume,
                ModeArg::E2e => Mode::E2e,
                ModeArg::Commit => Mode::Commit,
            },
            bootstrap: self.bootstrap,
            topic: self.topic,
            records: self.records,
            duration_s: self.duration,
            record_size: self.record_size,
            key_space: self.key_space,
            rate: self.rate,
            acks: match self.acks.as_str() {
                "0" => 0,
                "1" => 1,
                _ => -1,
            },
            batch_bytes: self.batch_bytes,
            linger_ms: self.linger_ms,
            compression: self.compression,
            producers: self.producers,
            consumers: self.consumers,
            max_in_flight: self.max_in_flight,
            cores: self.cores.as_deref().map(parse_cores).transpose()?,
            create_topic: self
                .create_topic
                .as_deref()
                .map(parse_create_topic)
                .transpose()?,
            fetch_max_bytes: self.fetch_max_bytes,
            idle_timeout_s: self.idle_timeout,
            quiet: self.quiet,
            report: self.report,
            plot: self.plot,
            group: self.group,
            heartbeat_ms: self.heartbeat_ms,
            session_timeout_ms: self.session_timeout_ms,
            commit_interval_ms: self.commit_interval_ms,
            join_stagger_ms: self.join_stagger_ms,
            partitions_per_commit: self.partitions_per_commit,
            connections: self.connections,
            commits: self.commits,
            debug_skip_sequence_at: self.debug_skip_sequence_at,
        })
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Piped into `head`, stop quietly rather than panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let config = args.into_config()?;
    let outcome = bench::run(config)?;
    print!("{}", bench::report::table(&outcome));
    if outcome.errors > 0 {
        bail!("{} error(s) during the run", outcome.errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_and_topic_specs() {
        assert_eq!(parse_cores("2,3").unwrap(), vec![2, 3]);
        assert_eq!(parse_cores("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").is_err());
        assert_eq!(parse_create_topic("6:1").unwrap(), (6, 1));
        assert!(parse_create_topic("6").is_err());
        assert!(parse_create_topic("0:1").is_err());
    }
}

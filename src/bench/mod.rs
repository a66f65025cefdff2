//! `skein bench`: the bundled load generator. It speaks the Kafka protocol through skein's lean
//! client, so it measures skein or any Kafka-compatible broker.
//!
//! Threads: the main thread sets up (metadata, topic creation, offsets), starts one bench thread
//! per `--cores` entry (pinned with core_affinity; unpinned, one per CPU, without `--cores`),
//! then prints progress once a second and finally the table, report and plot. Each bench thread
//! runs a tokio current-thread runtime with its share of the producer and consumer connections;
//! connections never move between threads. Threads share only atomic counters and histograms
//! behind short locks ([`stats::Meter`]).
//!
//! - [`producer`]: schedule, batches, pipelined Produce requests, ack latency.
//! - [`consumer`]: Fetch, batch walking, e2e latency; [`verify`]: offsets and sequences.
//! - [`member`]: one member of a consumer group (`consume --group`); [`group`]: what the
//!   members share, verification across owners, rebalance timing.
//! - [`commit`]: pipelined OffsetCommit requests (`commit`).
//! - [`schedule`]: `--rate` without coordinated omission; [`payload`]: the record header.
//! - [`report`]: the final table and JSON; [`plot`]: the SVG/HTML picture.

pub mod clock;
pub mod commit;
pub mod config;
pub mod consumer;
pub mod group;
pub mod member;
pub mod payload;
pub mod plot;
pub mod producer;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod verify;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::records::Compression;

pub use config::{BenchConfig, Mode};
use consumer::ConsumerSpec;
use producer::{KeyPicker, ProducerSpec};
use report::Outcome;
use stats::Meter;
use verify::Verifier;

use crate::client::cluster::{self, TopicLayout, EARLIEST, LATEST};
use crate::client::groups::GroupAdmin;
use crate::record::compression_from_name;

/// When a consumer is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `--records N` consumed.
    Records(u64),
    /// Each partition read up to the end offset it had at the start.
    EndOffsets,
    /// e2e: the producers finished and everything they wrote was read.
    Produced,
    /// `--duration` elapsed.
    Duration,
}

/// What bench threads share.
pub struct Shared {
    pub config: BenchConfig,
    pub compression: Compression,
    pub padding: Bytes,
    /// Produce acknowledgements (latency: due time -> ack).
    pub produce: Meter,
    /// Records read (latency: fetch round trip, or due time -> read in e2e).
    pub consume: Meter,
    /// commit: partition offsets committed (latency: OffsetCommit round trip).
    pub commit: Meter,
    /// commit: OffsetCommit requests answered.
    pub commit_requests: AtomicU64,
    /// consume --group: what the members share.
    pub group: Option<group::GroupRun>,
    pub stop: AtomicBool,
    pub producers_running: AtomicUsize,
    pub target: Target,
    start_ns: AtomicU64,
}

impl Shared {
    pub fn consume_target_reached(&self) -> bool {
        match self.target {
            Target::Records(n) => self.consume.records() >= n,
            Target::Produced => {
                self.producers_running.load(Ordering::Acquire) == 0
                    && self.consume.records() >= self.produce.records()
            }
            Target::EndOffsets | Target::Duration => false,
        }
    }
}

/// One connection's work, before it connects.
enum Task {
    Produce(ProducerSpec),
    Consume(ConsumerSpec),
    Member(member::MemberSpec),
    Commit(commit::CommitSpec),
}

/// Checks the flags that clap cannot.
fn validate(config: &BenchConfig) -> anyhow::Result<()> {
    if config.record_size < payload::HEADER_BYTES {
        bail!(
            "--record-size {} is too small: every bench record carries a {}-byte header",
            config.record_size,
            payload::HEADER_BYTES
        );
    }
    if config.mode.produces() && config.records.is_none() && config.duration_s.is_none() {
        bail!(
            "{} needs --records N or --duration SECS",
            config.mode.name()
        );
    }
    if config.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of records per second");
    }
    if config
        .duration_s
        .is_some_and(|d| !(d > 0.0 && d.is_finite()))
    {
        bail!("--duration must be a positive number of seconds");
    }
    if config.key_space == Some(0) {
        bail!("--key-space must be at least 1");
    }
    if config.producers == 0 || config.consumers == 0 {
        bail!("--producers and --consumers must be at least 1");
    }
    if config.group.as_deref() == Some("") {
        bail!("--group must name a group");
    }
    if config.group.is_some() && !matches!(config.mode, Mode::Consume | Mode::Commit) {
        bail!("--group goes with consume or commit");
    }
    if config.mode == Mode::Commit {
        if config.group.is_none() {
            bail!("commit needs --group G");
        }
        if config.commits.is_none() && config.duration_s.is_none() {
            bail!("commit needs --commits N or --duration SECS");
        }
        if config.partitions_per_commit == 0 || config.connections == 0 {
            bail!("--partitions-per-commit and --connections must be at least 1");
        }
    }
    if config.group.is_some() {
        if config.heartbeat_ms == 0 || config.commit_interval_ms == 0 {
            bail!("--heartbeat-ms and --commit-interval-ms must be at least 1");
        }
        if config.session_timeout_ms <= 0 || config.heartbeat_ms >= config.session_timeout_ms as u64
        {
            bail!(
                "--session-timeout-ms ({}) must be longer than --heartbeat-ms ({})",
                config.session_timeout_ms,
                config.heartbeat_ms
            );
        }
    }
    if compression_from_name(&config.compression).is_none() {
        bail!("--compression must be none, gzip, snappy, lz4 or zstd");
    }
    if config.cores.as_ref().is_some_and(|c| c.is_empty()) {
        bail!("--cores names no CPU");
    }
    Ok(())
}

/// Splits `total` by `weights` so the parts add up to exactly `total`.
fn split_by_weight(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|&w| (u128::from(total) * u128::from(w) / u128::from(sum)) as u64)
        .collect();
    let mut rest = total - parts.iter().sum::<u64>();
    for (part, &w) in parts.iter_mut().zip(weights) {
        if rest == 0 {
            break;
        }
        if w > 0 {
            *part += 1;
            rest -= 1;
        }
    }
    parts
}

fn producer_specs(
    config: &BenchConfig,
    layout: &TopicLayout,
    run_id: u64,
) -> anyhow::Result<Vec<ProducerSpec>> {
    let by_leader = layout.by_leader();
    let mut specs = Vec::new();
    let mut weights = Vec::new();
    for _ in 0..config.producers {
        for (&leader, partitions) in &by_leader {
            let keys = config
                .key_space
                .map(|k| KeyPicker::new(k, layout.partitions.len() as u32, partitions));
            let weight = keys
                .as_ref()
                .map_or(partitions.len() as u64, KeyPicker::keys);
            if weight == 0 {
                continue;
            }
            weights.push(weight);
            specs.push(ProducerSpec {
                producer_id: (run_id & !0xffff) | specs.len() as u64,
                addr: layout.broker_addr(leader)?.to_owned(),
                partitions: partitions.clone(),
                keys,
                records: None,
                rate: None,
            });
        }
    }
    if let Some(records) = config.records {
        for (spec, share) in specs.iter_mut().zip(split_by_weight(records, &weights)) {
            spec.records = Some(share);
        }
    }
    if let Some(rate) = config.rate {
        let sum: u64 = weights.iter().sum();
        for (spec, w) in specs.iter_mut().zip(&weights) {
            spec.rate = Some(rate * *w as f64 / sum as f64);
        }
    }
    specs.retain(|s| s.records != Some(0));
    Ok(specs)
}

fn commit_specs(
    config: &BenchConfig,
    coordinator: &str,
    layout: &TopicLayout,
) -> anyhow::Result<Vec<commit::CommitSpec>> {
    let partitions: Vec<i32> = layout.partitions.iter().map(|p| p.partition).collect();
    if config.partitions_per_commit > partitions.len() {
        bail!(
            "--partitions-per-commit {} is more than topic '{}' has ({}); create a topic with \
             enough (--create-topic {}:1)",
            config.partitions_per_commit,
            config.topic,
            partitions.len(),
            config.partitions_per_commit
        );
    }
    let shares = config
        .commits
        .map(|n| split_by_weight(n, &vec![1; config.connections]));
    Ok((0..config.connections)
        .map(|i| commit::CommitSpec {
            addr: coordinator.to_owned(),
            partitions: partitions.clone(),
            first: i * config.partitions_per_commit,
            requests: shares.as_ref().map(|s| s[i]),
        })
        .filter(|s| s.requests != Some(0))
        .collect())
}

fn consumer_specs(
    config: &BenchConfig,
    layout: &TopicLayout,
    start: &BTreeMap<i32, i64>,
    end: Option<&BTreeMap<i32, i64>>,
) -> anyhow::Result<Vec<ConsumerSpec>> {
    // Consumer i reads every consumers-th partition, from each partition's leader.
    let sequences_from_zero = config.mode == Mode::E2e || start.values().all(|&o| o == 0);
    let mut specs = Vec::new();
    for i in 0..config.consumers {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in layout.partitions.iter().skip(i).step_by(config.consumers) {
            by_leader.entry(p.leader_id).or_default().push(p.partition);
        }
        for (leader, partitions) in by_leader {
            let pick = |m: &BTreeMap<i32, i64>| {
                partitions
                    .iter()
                    .map(|p| (*p, m.get(p).copied().unwrap_or(0)))
                    .collect()
            };
            specs.push(ConsumerSpec {
                addr: layout.broker_addr(leader)?.to_owned(),
                start_offsets: pick(start),
                end_offsets: end.map(pick),
                partitions,
                sequences_from_zero,
            });
        }
    }
    Ok(specs)
}

/// Runs the bench described by `config` and returns its outcome (also written to `--report` and
/// `--plot` if asked). Errors found during the run are in the outcome, not an `Err`.
pub fn run(config: BenchConfig) -> anyhow::Result<Outcome> {
    validate(&config)?;
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (layout, start_offsets, end_offsets, coordinator) = setup.block_on(async {
        let mut conn = cluster::connect_bootstrap(&config.bootstrap).await?;
        if let Some((partitions, replication_factor)) = config.create_topic {
            let created = cluster::create_topic(&mut conn, &config.topic, partitions, replication_factor).await?;
            if !config.quiet {
                if created {
                    eprintln!("created topic '{}' ({partitions} partitions, replication factor {replication_factor})", config.topic);
                } else {
                    eprintln!("topic '{}' exists already; using it as it is", config.topic);
                }
            }
        }
        // Producing modes may auto-create the topic, as Kafka producers do; consume and commit
        // never do.
        let auto_create = config.mode.produces();
        let layout =
            cluster::wait_for_topic(&mut conn, &config.topic, auto_create, Duration::from_secs(30)).await?;
        cluster::wait_for_leaders(&layout, Duration::from_secs(30)).await?;
        let (start, end) = match config.mode {
            Mode::Produce | Mode::Commit => (BTreeMap::new(), None),
            Mode::E2e => (cluster::all_offsets(&layout, LATEST).await?, None),
            Mode::Consume => {
                let earliest = cluster::all_offsets(&layout, EARLIEST).await?;
                let start = match &config.group {
                    Some(g) => group::start_offsets(&config.bootstrap, g, &config.topic, &earliest).await?,
                    None => earliest,
                };
                let end = if config.records.is_none() && config.duration_s.is_none() {
                    Some(cluster::all_offsets(&layout, LATEST).await?)
                } else {
                    None
                };
                (start, end)
            }
        };
        let coordinator = match (&config.group, config.mode) {
            (Some(g), Mode::Commit) => {
                Some(GroupAdmin::connect(&config.bootstrap).await?.coordinator(g).await?.addr())
            }
            _ => None,
        };
        anyhow::Ok((layout, start, end, coordinator))
    })?;
    drop(setup);

    let run_id = uuid::Uuid::new_v4().as_u64_pair().0;
    let producers = if config.mode.produces() {
        producer_specs(&config, &layout, run_id)?
    } else {
        Vec::new()
    };
    let consumers = if config.mode.consumes() && config.group.is_none() {
        consumer_specs(&config, &layout, &start_offsets, end_offsets.as_ref())?
            .into_iter()
            .map(Task::Consume)
            .collect()
    } else if config.mode.consumes() {
        (0..config.consumers)
            .map(|index| Task::Member(member::MemberSpec { index }))
            .collect()
    } else {
        Vec::new()
    };
    let committers = match &coordinator {
        Some(addr) => commit_specs(&config, addr, &layout)?,
        None => Vec::new(),
    };
    let group_run = match (&config.group, config.mode) {
        (Some(g), Mode::Consume) => Some(group::GroupRun::new(
            g,
            config.consumers,
            &layout,
            &start_offsets,
            end_offsets.as_ref(),
            start_offsets.values().all(|&o| o == 0),
        )?),
        _ => None,
    };
    let target = match (config.mode, config.records, &end_offsets) {
        (Mode::E2e, _, _) => Target::Produced,
        (_, Some(n), _) => Target::Records(n),
        (_, None, Some(_)) => Target::EndOffsets,
        _ => Target::Duration,
    };
    let expected_offsets: u64 = match &end_offsets {
        Some(end) => end
            .iter()
            .map(|(p, e)| (e - start_offsets.get(p).copied().unwrap_or(0)).max(0) as u64)
            .sum(),
        None => 0,
    };

    let compression = compression_from_name(&config.compression).context("--compression")?;
    let shared = Arc::new(Shared {
        padding: payload::padding_pool(config.record_size, run_id),
        compression,
        produce: Meter::new("produce"),
        consume: Meter::new("consume"),
        commit: Meter::new("commit"),
        commit_requests: AtomicU64::new(0),
        group: group_run,
        stop: AtomicBool::new(false),
        producers_running: AtomicUsize::new(producers.len()),
        target,
        start_ns: AtomicU64::new(0),
        config,
    });

    // Interleave producers and consumers so each thread gets some of both in e2e.
    let mut tasks: Vec<Task> = Vec::new();
    let (mut p, mut c) = (producers.into_iter(), consumers.into_iter());
    loop {
        let (a, b) = (p.next(), c.next());
        if a.is_none() && b.is_none() {
            break;
        }
        tasks.extend(a.map(Task::Produce));
        tasks.extend(b);
    }
    tasks.extend(committers.into_iter().map(Task::Commit));
    let cores = shared.config.cores.clone();
    let threads = match &cores {
        Some(c) => c.len(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
    .min(tasks.len())
    .max(1);
    let mut per_thread: Vec<Vec<Task>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        per_thread[i % threads].push(task);
    }

    let connected = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for (i, tasks) in per_thread.into_iter().enumerate() {
        let core = cores.as_ref().map(|c| c[i]);
        let (shared, connected, go) = (shared.clone(), connected.clone(), go.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || bench_thread(tasks, core, shared, connected, go))
            .context("starting a bench thread")?;
        handles.push(handle);
    }

    connected.wait();
    if shared.produce.errors() + shared.consume.errors() + shared.commit.errors() > 0 {
        // A connection failed: stop at once rather than measure a partial setup.
        shared.stop.store(true, Ordering::Relaxed);
    }
    let start_ns = clock::now_ns();
    shared.start_ns.store(start_ns, Ordering::Release);
    go.wait();

    let started = Instant::now();
    let mut series = report::AllSeries::default();
    let progress = !shared.config.quiet;
    let terminal = std::io::stderr().is_terminal();
    let mut next_tick = started + Duration::from_secs(1);
    loop {
        let all_done = handles.iter().all(|h| h.is_finished());
        let now = Instant::now();
        if all_done || now >= next_tick {
            let t_s = now.duration_since(started).as_secs_f64();
            let mut line = format!("[{t_s:6.1}s]");
            let mode = shared.config.mode;
            if mode.produces() {
                let s = series.produce.sample(&shared.produce, t_s);
                line.push_str(&report::progress_part("produce", s));
            }
            if mode.consumes() {
                let s = series.consume.sample(&shared.consume, t_s);
                line.push_str(&report::progress_part("consume", s));
            }
            if mode == Mode::Commit {
                let s = series.commit.sample(&shared.commit, t_s);
                line.push_str(&report::progress_part("commit", s));
            }
            if progress {
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r{line}\x1b[K");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
            next_tick += Duration::from_secs(1);
        }
        if all_done {
            break;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(next_tick.saturating_duration_since(Instant::now())),
        );
    }
    if progress && terminal {
        eprintln!();
    }
    let duration_s = started.elapsed().as_secs_f64();

    let mut verifiers = Vec::new();
    for h in handles {
        match h.join() {
            Ok(v) => verifiers.extend(v),
            Err(_) => shared.consume.error("a bench thread panicked".to_owned()),
        }
    }
    let group_result = shared.group.as_ref().map(|run| {
        let (result, partition_verifiers) = run.finish_run();
        verifiers.extend(partition_verifiers);
        result
    });
    let commit_result =
        (shared.config.mode == Mode::Commit).then(|| finish_commits(&shared, &layout, duration_s));
    let (mut bench_records, mut foreign_records, mut violations) = (0, 0, 0);
    for v in &verifiers {
        bench_records += v.bench_records;
        foreign_records += v.foreign_records;
        violations += v.violations;
        for m in &v.messages {
            shared.consume.errors_with(1, format!("verification: {m}"));
        }
        let unreported = v.violations.saturating_sub(v.messages.len() as u64);
        if unreported > 0 {
            shared.consume.errors_with(
                unreported,
                format!("verification: {unreported} more violation(s)"),
            );
        }
    }
    // The final count check.
    let config = &shared.config;
    let consumed = shared.consume.records();
    match target {
        _ if !config.mode.consumes() => {}
        Target::Records(n) if consumed < n => shared
            .consume
            .error(format!("consumed {consumed} records, expected {n}")),
        Target::Produced if consumed != shared.produce.records() => shared.consume.error(format!(
            "consumed {consumed} records, {} were produced and acknowledged",
            shared.produce.records()
        )),
        Target::EndOffsets => {
            let reached: u64 = verifiers
                .iter()
                .flat_map(|v| {
                    start_offsets
                        .keys()
                        .filter_map(|p| v.next_offset(*p).map(|o| (*p, o)))
                })
                .map(|(p, o)| (o - start_offsets[&p]).max(0) as u64)
                .sum();
            if reached < expected_offsets {
                shared.consume.error(format!(
                    "read {reached} offsets of the {expected_offsets} up to the end offsets seen at the start ({})",
                    consumer::describe_target(&target)
                ));
            }
        }
        _ => {}
    }

    let outcome = report::outcome(
        &shared,
        duration_s,
        &series,
        report::Verification {
            bench_records,
            foreign_records,
            violations,
        },
        group_result,
        commit_result,
    );
    if let Some(path) = &shared.config.report {
        std::fs::write(path, serde_json::to_string_pretty(&outcome)?)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if let Some(path) = &shared.config.plot {
        plot::write(path, &outcome, series.main(shared.config.mode))
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    Ok(outcome)
}

/// commit: the last commit and its read-back ([`commit::finish`]), and the figures.
fn finish_commits(shared: &Shared, layout: &TopicLayout, duration_s: f64) -> commit::CommitResult {
    let config = &shared.config;
    let group = config.group.clone().unwrap_or_default();
    let requests = shared.commit_requests.load(Ordering::Relaxed);
    let final_offset = requests as i64;
    let partitions: Vec<i32> = layout.partitions.iter().map(|p| p.partition).collect();
    let finished = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(commit::finish(
                &config.bootstrap,
                &group,
                &config.topic,
                &partitions,
                final_offset,
            ))
        });
    let final_offset = match finished {
        Ok(()) => Some(final_offset),
        Err(e) => {
            shared.commit.error(format!("the final commit: {e:#}"));
            None
        }
    };
    let d = duration_s.max(1e-9);
    commit::CommitResult {
        group,
        partitions_per_commit: config.partitions_per_commit,
        connections: config.connections,
        max_in_flight: config.max_in_flight,
        requests,
        requests_per_s: requests as f64 / d,
        partition_commits: shared.commit.records(),
        partition_commits_per_s: shared.commit.records() as f64 / d,
        final_offset,
    }
}

/// Body of one bench thread: pin, connect every task, wait for the common start, run them all.
fn bench_thread(
    tasks: Vec<Task>,
    core: Option<usize>,
    shared: Arc<Shared>,
    connected: Arc<Barrier>,
    go: Arc<Barrier>,
) -> Vec<Verifier> {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::warn!("cannot pin a bench thread to CPU {core}; it runs unpinned");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            shared.produce.error(format!("cannot start a runtime: {e}"));
            connected.wait();
            go.wait();
            return Vec::new();
        }
    };
    enum Ready {
        Produce(producer::Producer),
        Consume(consumer::Consumer),
        Member(member::Member),
        Commit(commit::Committer),
    }
    let ready: Vec<Ready> = runtime.block_on(async {
        let mut ready = Vec::new();
        for task in tasks {
            match task {
                Task::Produce(spec) => {
                    let addr = spec.addr.clone();
                    match producer::connect(spec).await {
                        Ok(p) => ready.push(Ready::Produce(p)),
                        Err(e) => {
                            shared.producers_running.fetch_sub(1, Ordering::AcqRel);
                            shared.produce.error(format!("producer to {addr}: {e:#}"));
                        }
                    }
                }
                Task::Consume(spec) => {
                    let addr = spec.addr.clone();
                    match consumer::connect(spec).await {
                        Ok(c) => ready.push(Ready::Consume(c)),
                        Err(e) => shared.consume.error(format!("consumer of {addr}: {e:#}")),
                    }
                }
                Task::Member(spec) => {
                    let index = spec.index;
                    match member::connect(spec, &shared).await {
                        Ok(m) => ready.push(Ready::Member(m)),
                        Err(e) => shared.consume.error(format!("group member {index}: {e:#}")),
                    }
                }
                Task::Commit(spec) => {
                    let addr = spec.addr.clone();
                    match commit::connect(spec).await {
                        Ok(c) => ready.push(Ready::Commit(c)),
                        Err(e) => shared
                            .commit
                            .error(format!("OffsetCommit connection to {addr}: {e:#}")),
                    }
                }
            }
        }
        ready
    });
    connected.wait();
    go.wait();
    let start_ns = shared.start_ns.load(Ordering::Acquire);
    runtime.block_on(async {
        let runs = ready.into_iter().map(|r| {
            let shared = shared.clone();
            async move {
                match r {
                    Ready::Produce(p) => {
                        producer::run(p, shared.clone(), start_ns).await;
                        shared.producers_running.fetch_sub(1, Ordering::AcqRel);
                        None
                    }
                    Ready::Consume(c) => Some(consumer::run(c, shared, start_ns).await),
                    Ready::Member(m) => {
                        member::run(m, shared, start_ns).await;
                        None
                    }
                    Ready::Commit(c) => {
                        commit::run(c, shared, start_ns).await;
                        None
                    }
                }
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_weight_is_exact() {
        assert_eq!(split_by_weight(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(split_by_weight(7, &[2, 0, 1]), vec![5, 0, 2]);
        assert_eq!(split_by_weight(0, &[1, 2]), vec![0, 0]);
        let parts = split_by_weight(1_000_003, &[5, 7, 11, 13]);
        assert_eq!(parts.iter().sum::<u64>(), 1_000_003);
    }
}

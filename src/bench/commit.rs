//! `skein bench commit`: OffsetCommit throughput of a group's coordinator. Each connection keeps
//! `--max-in-flight` OffsetCommit requests in flight (pipelined), each naming
//! `--partitions-per-commit` partitions of the topic, taken in turn so that every partition is
//! committed, with "simple" commits (generation -1, no member id: what a client that assigns its
//! own partitions sends; the coordinator takes them only while the group has no members). Each
//! request's round trip is measured; refused partitions are errors.
//!
//! When the connections are done, one more commit sets every partition to the count of requests
//! answered and an OffsetFetch reads it back ([`finish`]): the coordinator must serve what it
//! acknowledged.
//!
//! Runs as two futures per connection (writer and reader) on its bench thread's current-thread
//! runtime, like a producer.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use kafka_protocol::messages::OffsetCommitRequest;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::clock;
use super::Shared;
use crate::client::groups::{self, error_name, GroupAdmin, TopicPartition};
use crate::client::pipeline::{PipelineReader, PipelineWriter};
use crate::client::Connection;

/// The commit mode's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CommitResult {
    pub group: String,
    pub partitions_per_commit: usize,
    pub connections: usize,
    pub max_in_flight: usize,
    /// OffsetCommit requests answered, and per second.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Partition offsets the coordinator accepted, and per second (the headline figure).
    pub partition_commits: u64,
    pub partition_commits_per_s: f64,
    /// What the final commit set every partition to, and OffsetFetch then read back; None if
    /// that failed (an error says why).
    pub final_offset: Option<i64>,
}

/// What one connection is to do.
#[derive(Debug, Clone)]
pub struct CommitSpec {
    /// The group's coordinator.
    pub addr: String,
    /// Every partition of the topic; each request takes the next `--partitions-per-commit`.
    pub partitions: Vec<i32>,
    /// Where in `partitions` this connection begins, so connections spread over them.
    pub first: usize,
    /// This connection's share of `--commits`.
    pub requests: Option<u64>,
}

pub struct Committer {
    spec: CommitSpec,
    writer: PipelineWriter,
    reader: PipelineReader,
    version: i16,
}

pub async fn connect(spec: CommitSpec) -> anyhow::Result<Committer> {
    let conn = Connection::connect(&spec.addr).await?;
    let version = conn.version_of::<OffsetCommitRequest>()?;
    let (writer, reader) = conn.into_pipeline();
    Ok(Committer {
        spec,
        writer,
        reader,
        version,
    })
}

struct InFlight {
    correlation_id: i32,
    sent_ns: u64,
    partitions: u64,
}

pub async fn run(committer: Committer, shared: Arc<Shared>, start_ns: u64) {
    let Committer {
        spec,
        writer,
        reader,
        version,
    } = committer;
    let in_flight = Semaphore::new(shared.config.max_in_flight.max(1));
    let (tx, rx) = mpsc::unbounded_channel::<InFlight>();
    let addr = spec.addr.clone();
    // As in the producer: the writer half outlives the loop, so its FIN cannot cut off the last
    // answers.
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
    let read = read_loop(reader, version, &shared, &in_flight, rx);
    let (w, r) = tokio::join!(write, read);
    drop(writer);
    for result in [w, r] {
        if let Err(e) = result {
            shared
                .commit
                .error(format!("OffsetCommit connection to {addr}: {e:#}"));
        }
    }
}

async fn write_loop(
    spec: CommitSpec,
    writer: &mut PipelineWriter,
    version: i16,
    shared: &Shared,
    in_flight: &Semaphore,
    tx: mpsc::UnboundedSender<InFlight>,
    start_ns: u64,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let group = config.group.as_deref().expect("commit mode has a group");
    let per_commit = config.partitions_per_commit;
    let end_ns = config.duration_s.map(|d| start_ns + (d * 1e9) as u64);
    let n = spec.partitions.len();
    assert!(
        per_commit >= 1 && per_commit <= n,
        "checked against the topic before the run"
    );
    let mut next = spec.first % n;
    let mut sent = 0u64;
    loop {
        // A closed semaphore means the reader failed; it has reported why.
        in_flight
            .acquire()
            .await
            .map_err(|_| anyhow!("stopped"))?
            .forget();
        if shared.stop.load(Ordering::Relaxed)
            || end_ns.is_some_and(|end| clock::now_ns() >= end)
            || spec.requests.is_some_and(|r| sent >= r)
        {
            return Ok(());
        }
        sent += 1;
        // Each request commits its own number: later commits of a partition carry larger offsets.
        let offsets = (0..per_commit).map(|i| {
            let p = spec.partitions[(next + i) % n];
            ((config.topic.clone(), p), sent as i64)
        });
        let request = groups::offset_commit_request(group, -1, "", offsets);
        next = (next + per_commit) % n;
        let sent_ns = clock::now_ns();
        let correlation_id = writer.send(&request, version).await?;
        // The reader may have failed and gone; its error is reported.
        let _ = tx.send(InFlight {
            correlation_id,
            sent_ns,
            partitions: per_commit as u64,
        });
    }
}

async fn read_loop(
    mut reader: PipelineReader,
    version: i16,
    shared: &Shared,
    in_flight: &Semaphore,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
) -> anyhow::Result<()> {
    let mut reported = HashSet::new();
    let result = async {
        while let Some(request) = rx.recv().await {
            let response = tokio::time::timeout(
                Duration::from_secs(60),
                reader.receive::<OffsetCommitRequest>(request.correlation_id, version),
            )
            .await
            .map_err(|_| anyhow!("no OffsetCommit response within 60 s"))??;
            let received_ns = clock::now_ns();
            let refused = groups::refused_commits(&response);
            if let Some(((topic, partition), code)) = refused.first() {
                // Every refusal counts; each code is described once per connection.
                if reported.insert(*code) {
                    shared.commit.errors_with(
                        refused.len() as u64,
                        format!(
                            "OffsetCommit refused: topic '{topic}' partition {partition}: {} \
                             (further refusals with this code are only counted)",
                            error_name(*code)
                        ),
                    );
                } else {
                    shared.commit.count_errors(refused.len() as u64);
                }
            }
            let accepted = request.partitions.saturating_sub(refused.len() as u64);
            shared.commit.latencies(|h| {
                h.saturating_record(received_ns.saturating_sub(request.sent_ns) / 1_000);
            });
            shared.commit.add(accepted, 0);
            shared.commit_requests.fetch_add(1, Ordering::Relaxed);
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

/// The last commit: every partition set to `final_offset`, then read back with OffsetFetch.
/// Fails naming the partitions that do not read back as committed.
pub async fn finish(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
    final_offset: i64,
) -> anyhow::Result<()> {
    let mut admin = GroupAdmin::connect(bootstrap).await?;
    let offsets: BTreeMap<TopicPartition, i64> = partitions
        .iter()
        .map(|&p| ((topic.to_owned(), p), final_offset))
        .collect();
    admin.commit_offsets(group, &offsets).await?;
    let committed = admin.committed_offsets(group).await?;
    let wrong: Vec<String> = offsets
        .keys()
        .filter(|tp| committed.get(*tp) != Some(&final_offset))
        .map(|(t, p)| match committed.get(&(t.clone(), *p)) {
            Some(o) => format!("{t}:{p} at {o}"),
            None => format!("{t}:{p} without one"),
        })
        .collect();
    if !wrong.is_empty() {
        bail!(
            "group '{group}': committed offset {final_offset} of every partition, OffsetFetch \
             then answered {}",
            wrong.join(", ")
        );
    }
    Ok(())
}

//! One member of `skein bench consume --group G`: one future on its bench thread's runtime with
//! connections of its own (one to the group's coordinator, one to each partition leader for
//! fetches), running the eager protocol with Kafka's range assignor:
//!
//! FindCoordinator; JoinGroup (MEMBER_ID_REQUIRED: again, with the id given); the leader assigns
//! ranges and hands every member's assignment in with SyncGroup; each member reads its partitions
//! from the group's committed offsets (OffsetFetch; where the run started when there are none),
//! heartbeats every `--heartbeat-ms` and commits every `--commit-interval-ms`. When a heartbeat
//! or commit says the group moved on (REBALANCE_IN_PROGRESS: commit what was read, then join
//! again; ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID: join again, nothing to commit for), the member
//! stops fetching and gives its partitions up first. At the end it commits and leaves
//! (LeaveGroup). What the members share, and the verification across owners, is in
//! [`super::group`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::clock;
use super::consumer::{fetch_request, read_batches, FETCH_VERSION_MAX};
use super::group::GroupRun;
use super::verify::Verifier;
use super::Shared;
use crate::client::cluster::topic_name;
use crate::client::groups::{
    self, GroupAdmin, GroupMember, Joined, MemberError, TopicPartition, COORDINATOR_BACKOFF,
};
use crate::client::pipeline::{PipelineReader, PipelineWriter};
use crate::client::Connection;

/// How long a JoinGroup may wait for the other members. Kafka's consumer uses
/// `max.poll.interval.ms` (5 minutes); the bench's members rejoin within a heartbeat.
pub const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// JoinGroup/SyncGroup rounds in a row without an assignment before a member gives up.
const JOIN_ATTEMPTS: u32 = 100;
/// Refusals of OffsetFetch by a coordinator that is not ready, before a member gives up.
const OFFSET_FETCH_ATTEMPTS: u32 = 20;
/// How often a member looks at the stop conditions between its heartbeats and commits.
const STOP_POLL: Duration = Duration::from_millis(20);

/// One group member before the run starts.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// 0..members, for the stable-group bookkeeping.
    pub index: usize,
}

pub struct Member {
    index: usize,
    /// The bootstrap connection: FindCoordinator, and Metadata when this member leads.
    admin: GroupAdmin,
    member: GroupMember,
    /// Fetch connections by leader address.
    fetchers: HashMap<String, Fetcher>,
}

/// Finds the coordinator and connects to it and to every partition leader, so the run measures
/// the protocol rather than connection set-up.
pub async fn connect(spec: MemberSpec, shared: &Shared) -> anyhow::Result<Member> {
    let config = &shared.config;
    let run = shared
        .group
        .as_ref()
        .expect("a group member runs in group mode");
    let mut admin = GroupAdmin::connect(&config.bootstrap).await?;
    let coordinator = admin.coordinator(&run.group).await?;
    let member = GroupMember::connect(
        &coordinator.addr(),
        &run.group,
        config.session_timeout_ms,
        REBALANCE_TIMEOUT_MS,
    )
    .await?;
    let mut fetchers = HashMap::new();
    for addr in run.leaders.values() {
        if !fetchers.contains_key(addr) {
            let mut fetcher = Fetcher::new(addr);
            fetcher.connect().await?;
            fetchers.insert(addr.clone(), fetcher);
        }
    }
    Ok(Member {
        index: spec.index,
        admin,
        member,
        fetchers,
    })
}

/// Runs the member until the run is over, then commits, gives its partitions back and leaves.
/// Errors are counted on the consume meter.
pub async fn run(mut m: Member, shared: Arc<Shared>, start_ns: u64) {
    let run = shared
        .group
        .as_ref()
        .expect("a group member runs in group mode");
    let stop = Stop::new(&shared, start_ns);
    let mut held = BTreeMap::new();
    let stagger_ns = shared.config.join_stagger_ms * 1_000_000;
    if stagger_ns > 0 {
        clock::sleep_until(start_ns + m.index as u64 * stagger_ns).await;
    }
    let result = member_loop(&mut m, &shared, run, &stop, &mut held).await;
    run.give_back(&mut held);
    run.unsynced(m.index);
    if let Err(e) = result {
        shared
            .consume
            .error(format!("group '{}' member {}: {e:#}", run.group, m.index));
    }
    if !m.member.member_id.is_empty() {
        match m.member.leave().await {
            Ok(Ok(())) => {}
            // Dropped already: nothing to leave.
            Ok(Err(e)) if e.error() == Some(ResponseError::UnknownMemberId) => {}
            Ok(Err(e)) => shared.consume.error(format!(
                "group '{}' member {}: LeaveGroup: {e}",
                run.group, m.index
            )),
            Err(e) => shared.consume.error(format!(
                "group '{}' member {}: LeaveGroup: {e:#}",
                run.group, m.index
            )),
        }
    }
}

/// Why a member stopped consuming its assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The run is over.
    Stop,
    /// A rebalance is under way; the member is still in the generation it read for.
    Rebalance,
    /// The group went on without this member's generation: what it read since its last
    /// commit cannot be committed (the next owner reads it again, a violation).
    Dropped(MemberError),
    /// The coordinator is loading or moved: find it, then join again.
    CoordinatorMoved,
}

fn exit_for(e: MemberError) -> anyhow::Result<Exit> {
    match e.error() {
        Some(ResponseError::RebalanceInProgress) => Ok(Exit::Rebalance),
        _ if e.must_rejoin() => Ok(Exit::Dropped(e)),
        _ if e.coordinator_not_ready() => Ok(Exit::CoordinatorMoved),
        _ => bail!("{e}"),
    }
}

/// When the run is over, as every member sees it.
struct Stop {
    end_ns: Option<u64>,
    idle_ns: u64,
    idle_timeout_s: f64,
}

impl Stop {
    fn new(shared: &Shared, start_ns: u64) -> Stop {
        let config = &shared.config;
        Stop {
            end_ns: config.duration_s.map(|d| start_ns + (d * 1e9) as u64),
            idle_ns: (config.idle_timeout_s * 1e9) as u64,
            idle_timeout_s: config.idle_timeout_s,
        }
    }

    fn reached(&self, shared: &Shared, run: &GroupRun) -> bool {
        let now = clock::now_ns();
        if shared.stop.load(Ordering::Relaxed)
            || self.end_ns.is_some_and(|end| now >= end)
            || shared.consume_target_reached()
            || run.all_finished()
        {
            return true;
        }
        let idle = now.saturating_sub(run.last_progress_ns.load(Ordering::Relaxed));
        if idle > self.idle_ns {
            // Not an error by itself: the final count check says whether anything is missing.
            if !run.idle_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "group '{}': nothing new for {} s, stopping",
                    run.group,
                    self.idle_timeout_s
                );
            }
            return true;
        }
        false
    }
}

async fn member_loop(
    m: &mut Member,
    shared: &Shared,
    run: &GroupRun,
    stop: &Stop,
    held: &mut BTreeMap<i32, Verifier>,
) -> anyhow::Result<()> {
    loop {
        let Some(assigned) = join_and_sync(m, shared, run, stop).await? else {
            return Ok(());
        };
        let exit = match take_over(m, shared, run, &assigned, held).await {
            Ok(()) => consume(m, shared, run, stop, held).await,
            Err(e) => Err(e),
        };
        if matches!(exit, Ok(Exit::CoordinatorMoved)) {
            rediscover(m, &run.group).await?;
        }
        // Give the generation up: commit what was read while still a member.
        if !matches!(exit, Ok(Exit::Dropped(_))) && !held.is_empty() {
            let offsets = positions(&shared.config.topic, held);
            match m.member.commit(&offsets).await {
                Ok(Ok(())) => {
                    run.commits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    run.commits_refused.fetch_add(1, Ordering::Relaxed);
                    let what = format!(
                        "OffsetCommit of the positions read ({}) refused: {e}",
                        describe(&offsets)
                    );
                    if matches!(exit, Ok(Exit::Stop)) {
                        shared
                            .consume
                            .error(format!("group '{}' member {}: {what}", run.group, m.index));
                    } else {
                        tracing::warn!("group '{}' member {}: {what}", run.group, m.index);
                    }
                }
                Err(e) => {
                    run.give_back(held);
                    return Err(e.context("OffsetCommit before giving partitions up"));
                }
            }
        }
        run.give_back(held);
        run.unsynced(m.index);
        if exit? == Exit::Stop {
            return Ok(());
        }
    }
}

fn positions(topic: &str, held: &BTreeMap<i32, Verifier>) -> BTreeMap<TopicPartition, i64> {
    held.iter()
        .filter_map(|(&p, v)| v.next_offset(p).map(|o| ((topic.to_owned(), p), o)))
        .collect()
}

fn describe(offsets: &BTreeMap<TopicPartition, i64>) -> String {
    offsets
        .iter()
        .map(|((t, p), o)| format!("{t}:{p}@{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the group's coordinator again and reconnects to it, keeping the member's id.
async fn rediscover(m: &mut Member, group: &str) -> anyhow::Result<()> {
    tokio::time::sleep(COORDINATOR_BACKOFF).await;
    m.admin.forget_coordinator(group);
    let coordinator = m.admin.coordinator(group).await?;
    m.member.reconnect(&coordinator.addr()).await
}

/// What to do about a refusal while joining: join again, or find the coordinator and then
/// join again; anything else ends the member.
async fn recover(m: &mut Member, group: &str, e: MemberError, what: &str) -> anyhow::Result<()> {
    if e.must_rejoin() {
        Ok(())
    } else if e.coordinator_not_ready() {
        rediscover(m, group).await
    } else {
        bail!("{what}: {e}")
    }
}

/// JoinGroup and SyncGroup until the member holds an assignment; None if the run ended first.
async fn join_and_sync(
    m: &mut Member,
    shared: &Shared,
    run: &GroupRun,
    stop: &Stop,
) -> anyhow::Result<Option<Vec<TopicPartition>>> {
    let topic = shared.config.topic.clone();
    let metadata = groups::encode_consumer_subscription(&[topic], &[])?;
    let protocols = [(groups::RANGE_ASSIGNOR.to_owned(), metadata)];
    let mut last_refusal = None;
    for attempt in 0..JOIN_ATTEMPTS {
        if stop.reached(shared, run) {
            return Ok(None);
        }
        if attempt > 1 {
            // Refused twice in a row: let the group settle a little.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        run.join_sent();
        let joined = match m.member.join(&protocols).await? {
            Ok(joined) => joined,
            Err(e) => {
                last_refusal = Some(e);
                recover(m, &run.group, e, "JoinGroup").await?;
                continue;
            }
        };
        run.joined(joined.generation);
        let assignments = if joined.leader == m.member.member_id {
            assign(m, &joined).await?
        } else {
            Vec::new()
        };
        match m.member.sync(assignments).await? {
            Ok(bytes) => {
                let assigned = groups::decode_consumer_assignment(&bytes)
                    .context("the assignment SyncGroup answered")?;
                run.synced(m.index, joined.generation);
                return Ok(Some(assigned));
            }
            Err(e) => {
                last_refusal = Some(e);
                recover(m, &run.group, e, "SyncGroup").await?;
            }
        }
    }
    bail!(
        "no assignment after {JOIN_ATTEMPTS} JoinGroup rounds (last refusal: {})",
        last_refusal.map_or_else(|| "none".to_owned(), |e| e.to_string())
    )
}

/// The leader's part: every member's range assignment of the topics it subscribed to, encoded
/// for SyncGroup.
async fn assign(m: &mut Member, joined: &Joined) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut subscriptions = BTreeMap::new();
    for (member, metadata) in &joined.members {
        let topics = groups::decode_consumer_subscription(metadata).unwrap_or_else(|e| {
            tracing::warn!(
                "member {member}: its subscription does not decode ({e:#}); it gets nothing"
            );
            Vec::new()
        });
        subscriptions.insert(member.clone(), topics);
    }
    let topics: BTreeSet<String> = subscriptions.values().flatten().cloned().collect();
    let mut partition_counts = BTreeMap::new();
    for topic in topics {
        match m.admin.topic_layout(&topic).await {
            Ok(layout) => {
                partition_counts.insert(topic, layout.partitions.len() as i32);
            }
            // As Kafka's assignors do: a topic without metadata is not assigned.
            Err(e) => tracing::warn!("subscribed topic '{topic}': {e:#}; not assigned"),
        }
    }
    groups::range_assign(&subscriptions, &partition_counts)
        .into_iter()
        .map(|(member, partitions)| Ok((member, groups::encode_consumer_assignment(&partitions)?)))
        .collect()
}

/// Takes the verifiers of the assigned partitions and resumes each at the group's committed
/// offset.
async fn take_over(
    m: &mut Member,
    shared: &Shared,
    run: &GroupRun,
    assigned: &[TopicPartition],
    held: &mut BTreeMap<i32, Verifier>,
) -> anyhow::Result<()> {
    let topic = &shared.config.topic;
    let partitions: Vec<i32> = assigned
        .iter()
        .filter(|(t, _)| t == topic)
        .map(|&(_, p)| p)
        .collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let mut attempt = 1;
    let committed = loop {
        match m.member.committed(topic, &partitions).await? {
            Ok(committed) => break committed,
            Err(e) if e.coordinator_not_ready() && attempt < OFFSET_FETCH_ATTEMPTS => {
                attempt += 1;
                rediscover(m, &run.group).await?;
            }
            Err(e) => bail!("OffsetFetch: {e}"),
        }
    };
    let patience = Duration::from_millis(shared.config.session_timeout_ms.max(0) as u64)
        + Duration::from_secs(5);
    for p in partitions {
        let start = committed
            .get(&p)
            .or_else(|| run.start_offsets.get(&p))
            .copied()
            .unwrap_or(0);
        let verifier = match run.take(p, patience).await {
            Some(mut v) => {
                v.resume_at(p, start);
                v
            }
            None => {
                shared.consume.error(format!(
                    "topic '{topic}' partition {p}: still held by a former owner after \
                     {patience:?}; its verification starts afresh"
                ));
                Verifier::new([(p, start)], false)
            }
        };
        held.insert(p, verifier);
    }
    Ok(())
}

/// Reads the held partitions while heartbeating and committing, until the run is over or the
/// group rebalances.
async fn consume(
    m: &mut Member,
    shared: &Shared,
    run: &GroupRun,
    stop: &Stop,
    held: &mut BTreeMap<i32, Verifier>,
) -> anyhow::Result<Exit> {
    let topic = &shared.config.topic;
    // What the heartbeat side commits; the fetch side keeps it up to date.
    let read_up_to = RefCell::new(positions(topic, held));
    let fetch_failed = Cell::new(false);
    let mut by_leader: BTreeMap<&str, Vec<(i32, &mut Verifier)>> = BTreeMap::new();
    for (&p, verifier) in held.iter_mut() {
        let leader = run.leaders.get(&p).ok_or_else(|| {
            anyhow!("topic '{topic}' partition {p}: assigned, but not in the metadata")
        })?;
        by_leader.entry(leader).or_default().push((p, verifier));
    }
    let Member {
        member, fetchers, ..
    } = m;
    for leader in by_leader.keys() {
        if !fetchers.contains_key(*leader) {
            fetchers.insert((*leader).to_owned(), Fetcher::new(leader));
        }
    }
    let fetches = futures::future::try_join_all(fetchers.iter_mut().filter_map(|(addr, f)| {
        by_leader
            .remove(addr.as_str())
            .map(|partitions| fetch_loop(f, partitions, shared, run, &read_up_to))
    }));
    let control = control_loop(member, shared, run, stop, &read_up_to, &fetch_failed);
    tokio::pin!(fetches, control);
    let mut fetching = true;
    let mut failure = None;
    loop {
        tokio::select! {
            done = &mut fetches, if fetching => {
                fetching = false;
                if let Err(e) = done {
                    // The control side stops at its next look and is not cut off mid-request,
                    // so the coordinator connection stays in step.
                    failure = Some(e);
                    fetch_failed.set(true);
                }
            }
            exit = &mut control => {
                return match failure {
                    Some(e) => Err(e),
                    None => exit,
                };
            }
        }
    }
}

/// The member's side towards the coordinator while it consumes: heartbeats and commits.
async fn control_loop(
    member: &mut GroupMember,
    shared: &Shared,
    run: &GroupRun,
    stop: &Stop,
    read_up_to: &RefCell<BTreeMap<TopicPartition, i64>>,
    fetch_failed: &Cell<bool>,
) -> anyhow::Result<Exit> {
    let config = &shared.config;
    let heartbeat_every = Duration::from_millis(config.heartbeat_ms);
    let commit_every = Duration::from_millis(config.commit_interval_ms);
    let mut next_heartbeat = Instant::now() + heartbeat_every;
    let mut next_commit = Instant::now() + commit_every;
    loop {
        let wake = next_heartbeat
            .min(next_commit)
            .min(Instant::now() + STOP_POLL);
        tokio::time::sleep_until(wake.into()).await;
        if fetch_failed.get() || stop.reached(shared, run) {
            return Ok(Exit::Stop);
        }
        let now = Instant::now();
        if now >= next_commit {
            next_commit = now + commit_every;
            // As Kafka's auto-commit does: every interval, whether or not anything moved.
            let offsets = read_up_to.borrow().clone();
            if !offsets.is_empty() {
                match member.commit(&offsets).await? {
                    Ok(()) => {
                        run.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        run.commits_refused.fetch_add(1, Ordering::Relaxed);
                        return exit_for(e).context("OffsetCommit");
                    }
                }
            }
        }
        if now >= next_heartbeat {
            next_heartbeat = now + heartbeat_every;
            if let Err(e) = member.heartbeat().await? {
                return exit_for(e).context("Heartbeat");
            }
        }
    }
}

/// Fetches one leader's share of the held partitions until each is read up to its end offset
/// (when the run has one); the caller drops this future when the group rebalances.
async fn fetch_loop(
    fetcher: &mut Fetcher,
    mut partitions: Vec<(i32, &mut Verifier)>,
    shared: &Shared,
    run: &GroupRun,
    read_up_to: &RefCell<BTreeMap<TopicPartition, i64>>,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let topic = topic_name(&config.topic);
    loop {
        if let Some(end) = &run.end_offsets {
            partitions.retain(|(p, v)| {
                let done = v.next_offset(*p).unwrap_or(0) >= end.get(p).copied().unwrap_or(0);
                if done {
                    run.finish(*p);
                }
                !done
            });
        }
        if partitions.is_empty()
            || shared.stop.load(Ordering::Relaxed)
            || shared.consume_target_reached()
        {
            return Ok(());
        }
        let request = fetch_request(
            config.fetch_max_bytes,
            &topic,
            partitions
                .iter()
                .map(|(p, v)| (*p, v.next_offset(*p).unwrap_or(0))),
        );
        let sent_ns = clock::now_ns();
        let response = fetcher.fetch(&request).await?;
        let received_ns = clock::now_ns();
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            bail!("Fetch from {} failed: {error:?}", fetcher.addr);
        }
        let (mut records, mut bytes) = (0u64, 0u64);
        for p in response.responses.iter().flat_map(|t| &t.partitions) {
            let index = p.partition_index;
            let Some(slot) = partitions.iter().position(|(q, _)| *q == index) else {
                continue;
            };
            if let Some(error) = ResponseError::try_from_code(p.error_code) {
                shared.consume.error(format!(
                    "topic '{}' partition {index}: Fetch: {error:?}; no longer read",
                    config.topic
                ));
                partitions.remove(slot);
                // Given up: the final count check reports what was not read.
                run.finish(index);
                continue;
            }
            let data = p.records.clone().unwrap_or_default();
            let verifier = &mut *partitions[slot].1;
            let (r, b) = read_batches(index, &data, verifier, None);
            records += r;
            bytes += b;
            if let Some(next) = verifier.next_offset(index) {
                read_up_to
                    .borrow_mut()
                    .insert((config.topic.clone(), index), next);
            }
        }
        if records > 0 {
            run.last_progress_ns.store(received_ns, Ordering::Relaxed);
            shared.consume.latencies(|h| {
                h.saturating_record(received_ns.saturating_sub(sent_ns) / 1_000);
            });
            shared.consume.add(records, bytes);
        }
    }
}

/// A fetch connection to one leader. A rebalance may drop a fetch half way (its future is
/// dropped while it waits); the connection is then out of step and is opened afresh before its
/// next use.
struct Fetcher {
    addr: String,
    conn: Option<(PipelineWriter, PipelineReader, i16)>,
    /// A request was begun and not answered yet.
    in_use: bool,
}

impl Fetcher {
    fn new(addr: &str) -> Fetcher {
        Fetcher {
            addr: addr.to_owned(),
            conn: None,
            in_use: false,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let conn = Connection::connect(&self.addr).await?;
        let version = conn.version_of::<FetchRequest>()?.min(FETCH_VERSION_MAX);
        let (writer, reader) = conn.into_pipeline();
        self.conn = Some((writer, reader, version));
        self.in_use = false;
        Ok(())
    }

    async fn fetch(&mut self, request: &FetchRequest) -> anyhow::Result<FetchResponse> {
        if self.in_use || self.conn.is_none() {
            self.connect().await?;
        }
        let (writer, reader, version) = self.conn.as_mut().expect("connected above");
        self.in_use = true;
        let correlation_id = writer.send(request, *version).await?;
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            reader.receive::<FetchRequest>(correlation_id, *version),
        )
        .await
        .map_err(|_| anyhow!("no Fetch response from {} within 60 s", self.addr))??;
        self.in_use = false;
        Ok(response)
    }
}

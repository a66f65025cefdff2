//! `skein bench consume --group G`: the consumers read as members of a consumer group, the way
//! Kafka consumers do, instead of being handed partitions ([`super::member`] runs one member).
//! This module holds what the members share across bench threads ([`GroupRun`]) and the group's
//! part of the report ([`GroupResult`]).
//!
//! Verification follows each partition from owner to owner: its [`Verifier`] waits in the
//! [`GroupRun`]'s ledger while no member holds it, and the member it is assigned to takes it and
//! resumes at the committed offset ([`Verifier::resume_at`]). A record read twice or skipped
//! across a rebalance is then a violation, like a gap within one reader. The ledger hands
//! partitions over within one process: the run's members are taken to be the whole group.
//! Another process consuming in the same group reads records this run never sees, which its
//! verification reports as skipped.
//!
//! The time to a stable group runs from the first JoinGroup any member sends to the moment every
//! member holds its assignment of one and the same generation (with `--join-stagger-ms`, the
//! members' staggered starts are part of it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::clock;
use super::verify::Verifier;
use crate::client::cluster::TopicLayout;
use crate::client::groups::GroupAdmin;

/// What the group's members share across bench threads: the verifiers of partitions nobody
/// holds, and the rebalance and commit counts. Touched on rebalances and commits, never per fetch
/// (except the progress time stamp, one atomic store).
pub struct GroupRun {
    pub group: String,
    members: usize,
    /// Partition -> the address of its leader.
    pub(super) leaders: BTreeMap<i32, String>,
    /// Where a partition without a committed offset is read from: where the run started.
    pub(super) start_offsets: BTreeMap<i32, i64>,
    pub(super) end_offsets: Option<BTreeMap<i32, i64>>,
    ledger: Mutex<BTreeMap<i32, Verifier>>,
    /// Partitions read up to their end offset (or given up after a fetch error).
    finished: Mutex<BTreeSet<i32>>,
    first_join_ns: AtomicU64,
    stable_ns: AtomicU64,
    /// Per member: the generation whose assignment it holds.
    synced: Mutex<Vec<Option<i32>>>,
    generations: Mutex<BTreeSet<i32>>,
    joins: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) commits_refused: AtomicU64,
    pub(super) last_progress_ns: AtomicU64,
    pub(super) idle_warned: AtomicBool,
}

/// The group's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    pub group: String,
    pub members: usize,
    /// From the first JoinGroup sent by any member to the moment every member held its
    /// assignment of one generation (SyncGroup answered); None if that never happened.
    pub rebalance_ms: Option<f64>,
    /// Generations the members joined: each is one completed rebalance.
    pub rebalances: u64,
    /// JoinGroup requests that got a member in (each member's first one included).
    pub joins: u64,
    /// OffsetCommit requests the coordinator accepted.
    pub commits: u64,
    /// OffsetCommit requests it refused (a rebalance under way, a generation gone).
    pub commits_refused: u64,
}

impl GroupRun {
    pub fn new(
        group: &str,
        members: usize,
        layout: &TopicLayout,
        start_offsets: &BTreeMap<i32, i64>,
        end_offsets: Option<&BTreeMap<i32, i64>>,
        sequences_from_zero: bool,
    ) -> anyhow::Result<GroupRun> {
        let mut leaders = BTreeMap::new();
        for p in &layout.partitions {
            leaders.insert(p.partition, layout.broker_addr(p.leader_id)?.to_owned());
        }
        let start = |p: &i32| start_offsets.get(p).copied().unwrap_or(0);
        let ledger = leaders
            .keys()
            .map(|p| (*p, Verifier::new([(*p, start(p))], sequences_from_zero)))
            .collect();
        // Partitions with nothing to read are finished before they start.
        let finished = end_offsets.map_or_else(BTreeSet::new, |end| {
            leaders
                .keys()
                .filter(|p| end.get(p).copied().unwrap_or(0) <= start(p))
                .copied()
                .collect()
        });
        Ok(GroupRun {
            group: group.to_owned(),
            members,
            leaders,
            start_offsets: start_offsets.clone(),
            end_offsets: end_offsets.cloned(),
            ledger: Mutex::new(ledger),
            finished: Mutex::new(finished),
            first_join_ns: AtomicU64::new(0),
            stable_ns: AtomicU64::new(0),
            synced: Mutex::new(vec![None; members]),
            generations: Mutex::new(BTreeSet::new()),
            joins: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commits_refused: AtomicU64::new(0),
            last_progress_ns: AtomicU64::new(clock::now_ns()),
            idle_warned: AtomicBool::new(false),
        })
    }

    /// The partition's verifier, once the member that held it has given it up (it does so
    /// before it joins again, so in an eager rebalance this waits only for a member that was
    /// dropped and has not noticed yet). None after `patience`.
    pub(super) async fn take(&self, partition: i32, patience: Duration) -> Option<Verifier> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(v) = lock(&self.ledger).remove(&partition) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn give_back(&self, held: &mut BTreeMap<i32, Verifier>) {
        lock(&self.ledger).append(held);
    }

    pub(super) fn finish(&self, partition: i32) {
        lock(&self.finished).insert(partition);
    }

    pub(super) fn all_finished(&self) -> bool {
        self.end_offsets.is_some() && lock(&self.finished).len() == self.leaders.len()
    }

    pub(super) fn join_sent(&self) {
        let _ = self.first_join_ns.compare_exchange(
            0,
            clock::now_ns(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub(super) fn joined(&self, generation: i32) {
        self.joins.fetch_add(1, Ordering::Relaxed);
        lock(&self.generations).insert(generation);
    }

    /// Member `index` holds its assignment of `generation`; the first time every member holds
    /// one of the same generation, the group is stable.
    pub(super) fn synced(&self, index: usize, generation: i32) {
        let now = clock::now_ns();
        let mut synced = lock(&self.synced);
        synced[index] = Some(generation);
        if synced.iter().all(|g| *g == Some(generation)) {
            let _ = self
                .stable_ns
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub(super) fn unsynced(&self, index: usize) {
        lock(&self.synced)[index] = None;
    }

    /// The group's report and every partition's verifier (all back in the ledger once the
    /// members are done).
    pub fn finish_run(&self) -> (GroupResult, Vec<Verifier>) {
        let (first, stable) = (
            self.first_join_ns.load(Ordering::Acquire),
            self.stable_ns.load(Ordering::Acquire),
        );
        let result = GroupResult {
            group: self.group.clone(),
            members: self.members,
            rebalance_ms: (first > 0 && stable > 0)
                .then(|| stable.saturating_sub(first) as f64 / 1e6),
            rebalances: lock(&self.generations).len() as u64,
            joins: self.joins.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            commits_refused: self.commits_refused.load(Ordering::Relaxed),
        };
        let verifiers = std::mem::take(&mut *lock(&self.ledger))
            .into_values()
            .collect();
        (result, verifiers)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where group consumption starts: the group's committed offsets, or the log start offset for
/// partitions without one (or with one below the log start, which Kafka's
/// `auto.offset.reset=earliest` also reads from the start).
pub async fn start_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    earliest: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut admin = GroupAdmin::connect(bootstrap).await?;
    let committed = admin.committed_offsets(group).await?;
    Ok(earliest
        .iter()
        .map(|(&p, &log_start)| {
            let offset = match committed.get(&(topic.to_owned(), p)) {
                Some(&c) if c >= log_start => c,
                Some(&c) => {
                    tracing::warn!(
                        "group '{group}' topic '{topic}' partition {p}: committed offset {c} is \
                         below the log start {log_start}; reading from the log start"
                    );
                    log_start
                }
                None => log_start,
            };
            (p, offset)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cluster::PartitionLeader;

    fn layout(partitions: i32) -> TopicLayout {
        TopicLayout {
            topic: "t".to_owned(),
            partitions: (0..partitions)
                .map(|partition| PartitionLeader {
                    partition,
                    leader_id: 1,
                })
                .collect(),
            brokers: BTreeMap::from([(1, "127.0.0.1:9092".to_owned())]),
        }
    }

    #[test]
    fn the_group_is_stable_once_every_member_holds_one_generation() {
        let start = BTreeMap::from([(0, 0), (1, 0)]);
        let run = GroupRun::new("g", 3, &layout(2), &start, None, true).unwrap();
        run.join_sent();
        run.synced(0, 1);
        run.synced(1, 1);
        // Member 0 gives its assignment up for the next generation before member 2 syncs.
        run.unsynced(0);
        run.synced(2, 1);
        assert_eq!(run.stable_ns.load(Ordering::Acquire), 0);
        run.synced(0, 2);
        run.synced(1, 2);
        assert_eq!(run.stable_ns.load(Ordering::Acquire), 0);
        run.synced(2, 2);
        let (result, verifiers) = run.finish_run();
        assert!(
            result.rebalance_ms.is_some_and(|ms| ms >= 0.0),
            "{result:?}"
        );
        assert_eq!(verifiers.len(), 2, "every partition's verifier comes back");
    }

    #[tokio::test]
    async fn partitions_are_handed_over_through_the_ledger() {
        let start = BTreeMap::from([(0, 5), (1, 0)]);
        let end = BTreeMap::from([(0, 10), (1, 0)]);
        let run = GroupRun::new("g", 2, &layout(2), &start, Some(&end), false).unwrap();
        assert!(
            !run.all_finished(),
            "partition 1 has nothing to read, 0 has"
        );
        let v = run.take(0, Duration::ZERO).await.expect("in the ledger");
        assert_eq!(v.next_offset(0), Some(5));
        assert!(
            run.take(0, Duration::from_millis(20)).await.is_none(),
            "held by a member"
        );
        let mut held = BTreeMap::from([(0, v)]);
        run.give_back(&mut held);
        assert!(held.is_empty());
        assert!(run.take(0, Duration::ZERO).await.is_some());
        run.finish(0);
        assert!(run.all_finished());
    }
}

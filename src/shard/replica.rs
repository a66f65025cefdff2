//! What a partition's leader knows of its followers, with no I/O: each follower's log end offset
//! and when it was last caught up, the in-sync replica set, and from them the high watermark and
//! the ISR changes to ask ZooKeeper for. Kafka's `Partition` and `Replica` (ZooKeeper mode), as a
//! plain state machine the [`Partition`](super::Partition) drives and the tests drive alone.
//!
//! The ISR in effect is ZooKeeper's (the latest metadata snapshot) joined with a change this
//! leader asked for and has not seen land yet (Kafka's "maximal ISR"): the high watermark is the
//! smallest log end offset over it, so a pending expansion already holds the watermark back and
//! a pending shrink does not let it run ahead before the smaller ISR is recorded.

use std::collections::BTreeMap;

/// A follower's log end offset nobody has reported yet (Kafka's UnknownOffset).
pub const UNKNOWN: i64 = -1;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end offset: the offset of its last fetch.
    pub log_end_offset: i64,
    /// The last time its log end reached the leader's (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up_ms: i64,
    /// The leader's log end offset and the time of the follower's previous fetch.
    last_fetch_leader_log_end: i64,
    last_fetch_ms: i64,
}

/// A partition led by this broker.
#[derive(Debug, Clone)]
pub struct Leadership {
    me: i32,
    /// The ISR as ZooKeeper holds it (the latest snapshot), leader included.
    isr: Vec<i32>,
    /// An ISR this leader asked ZooKeeper for, with when it asked, until a snapshot shows it or
    /// the request fails.
    pending: Option<(Vec<i32>, i64)>,
    /// Every replica but this one.
    followers: BTreeMap<i32, FollowerProgress>,
}

/// How long a requested ISR change may stay unseen before the leader may ask again.
const PENDING_ISR_TIMEOUT_MS: i64 = 5_000;

impl Leadership {
    /// Leadership as it starts (or the state of a snapshot that kept this broker leader):
    /// followers' log ends are unknown until they fetch, and the ones in the ISR count as caught
    /// up now, so that none is dropped before it had the time to fetch (Kafka resets them so).
    pub fn new(me: i32, replicas: &[i32], isr: &[i32], now_ms: i64) -> Leadership {
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                let in_sync = isr.contains(&r);
                (
                    r,
                    FollowerProgress {
                        log_end_offset: UNKNOWN,
                        last_caught_up_ms: if in_sync { now_ms } else { 0 },
                        last_fetch_leader_log_end: UNKNOWN,
                        last_fetch_ms: 0,
                    },
                )
            })
            .collect();
        Leadership {
            me,
            isr: isr.to_vec(),
            pending: None,
            followers,
        }
    }

    /// Takes a new snapshot's replicas and ISR, keeping what is known of followers that stay.
    pub fn update(&mut self, replicas: &[i32], isr: &[i32], now_ms: i64) {
        self.followers.retain(|r, _| replicas.contains(r));
        for &r in replicas {
            if r != self.me {
                self.followers.entry(r).or_insert(FollowerProgress {
                    log_end_offset: UNKNOWN,
                    last_caught_up_ms: now_ms,
                    last_fetch_leader_log_end: UNKNOWN,
                    last_fetch_ms: 0,
                });
            }
        }
        self.isr = isr.to_vec();
        if self.pending.as_ref().is_some_and(|(p, _)| p == isr) {
            self.pending = None;
        }
    }

    /// The ISR ZooKeeper holds.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    /// The ISR the high watermark waits for: ZooKeeper's, joined with a pending change.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending.iter().flat_map(|(p, _)| p.iter().copied());
        self.isr
            .iter()
            .copied()
            .chain(pending.filter(|r| !self.isr.contains(r)))
    }

    /// The smallest log end offset over the maximal ISR (`leader_log_end` for this broker):
    /// what the high watermark may move up to. [`UNKNOWN`] while an in-sync follower has not
    /// fetched since this broker became leader.
    pub fn high_watermark_bound(&self, leader_log_end: i64) -> i64 {
        self.maximal_isr()
            .map(|r| {
                if r == self.me {
                    leader_log_end
                } else {
                    self.followers.get(&r).map_or(UNKNOWN, |f| f.log_end_offset)
                }
            })
            .min()
            .unwrap_or(leader_log_end)
    }

    /// Each follower's log end offset as last reported (`UNKNOWN` before its first fetch).
    pub fn follower_log_ends(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.followers.iter().map(|(&r, f)| (r, f.log_end_offset))
    }

    /// Records a follower's fetch at `fetch_offset` (its log end), as Kafka's
    /// `updateFollowerFetchState`. Returns false for a broker that is not a replica.
    pub fn fetched(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_log_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(f) = self.followers.get_mut(&replica) else {
            return false;
        };
        if fetch_offset >= leader_log_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_log_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.last_fetch_leader_log_end = leader_log_end;
        f.last_fetch_ms = now_ms;
        true
    }

    /// The ISR to ask for if `replica` has caught up with the high watermark and is not in the
    /// ISR (Kafka's `maybeExpandIsr`), unless another change is pending.
    pub fn expansion(&self, replica: i32, high_watermark: i64, now_ms: i64) -> Option<Vec<i32>> {
        if self.has_pending(now_ms) || self.isr.contains(&replica) {
            return None;
        }
        let f = self.followers.get(&replica)?;
        (f.log_end_offset >= high_watermark).then(|| {
            let mut isr = self.isr.clone();
            isr.push(replica);
            isr
        })
    }

    /// The ISR to ask for without the followers that have not caught up within `lag_max_ms`
    /// (Kafka's `getOutOfSyncReplicas`: behind the leader's log end and not caught up for that
    /// long), unless another change is pending.
    pub fn shrink(&self, leader_log_end: i64, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        if self.has_pending(now_ms) {
            return None;
        }
        let lagging = |r: &i32| {
            *r != self.me
                && self.followers.get(r).is_none_or(|f| {
                    f.log_end_offset != leader_log_end && now_ms - f.last_caught_up_ms > lag_max_ms
                })
        };
        if !self.isr.iter().any(lagging) {
            return None;
        }
        Some(self.isr.iter().copied().filter(|r| !lagging(r)).collect())
    }

    fn has_pending(&self, now_ms: i64) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|(_, asked)| now_ms - asked < PENDING_ISR_TIMEOUT_MS)
    }

    /// Notes that `isr` was asked of ZooKeeper.
    pub fn asked(&mut self, isr: Vec<i32>, now_ms: i64) {
        self.pending = Some((isr, now_ms));
    }

    /// The request for `isr` failed (fenced, or ZooKeeper away): it no longer holds anything
    /// back, and may be asked again.
    pub fn refused(&mut self, isr: &[i32]) {
        if self.pending.as_ref().is_some_and(|(p, _)| p == isr) {
            self.pending = None;
        }
    }

    /// The request for `isr` was written: it is the ISR until the snapshot that shows it.
    pub fn written(&mut self, isr: &[i32]) {
        if self.pending.as_ref().is_some_and(|(p, _)| p == isr) {
            self.pending = None;
            self.isr = isr.to_vec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower() {
        let mut l = Leadership::new(1, &[1, 2, 3], &[1, 2, 3], 0);
        assert_eq!(l.high_watermark_bound(10), UNKNOWN, "nobody fetched yet");
        l.fetched(2, 10, 10, 1);
        assert_eq!(l.high_watermark_bound(10), UNKNOWN);
        l.fetched(3, 7, 10, 1);
        assert_eq!(l.high_watermark_bound(10), 7);
        l.update(&[1, 2, 3], &[1, 2], 2);
        assert_eq!(l.high_watermark_bound(10), 10, "3 left the ISR");
    }

    #[test]
    fn a_lone_replica_is_its_own_high_watermark() {
        let l = Leadership::new(1, &[1], &[1], 0);
        assert_eq!(l.high_watermark_bound(42), 42);
    }

    #[test]
    fn a_pending_expansion_holds_the_watermark_back() {
        let mut l = Leadership::new(1, &[1, 2], &[1], 0);
        l.fetched(2, 5, 9, 1);
        assert_eq!(l.expansion(2, 9, 1), None, "behind the high watermark");
        l.fetched(2, 9, 9, 2);
        let isr = l.expansion(2, 9, 2).expect("caught up");
        assert_eq!(isr, vec![1, 2]);
        l.asked(isr.clone(), 2);
        assert_eq!(l.expansion(2, 9, 3), None, "pending");
        assert_eq!(l.high_watermark_bound(12), 9);
        l.written(&isr);
        assert_eq!(l.isr(), &[1, 2]);
    }

    #[test]
    fn followers_that_stop_fetching_leave_the_isr() {
        let mut l = Leadership::new(1, &[1, 2, 3], &[1, 2, 3], 0);
        l.fetched(2, 10, 10, 100);
        l.fetched(3, 10, 10, 100);
        assert_eq!(l.shrink(10, 20_000, 10_000), None, "caught up: not lagging");
        // 3 stops; the leader's log grows.
        l.fetched(2, 20, 20, 15_000);
        assert_eq!(l.shrink(20, 10_050, 10_000), None, "within the lag time");
        assert_eq!(l.shrink(20, 15_000, 10_000), Some(vec![1, 2]));
        // A follower fetching but never reaching the log end within the lag time goes too.
        let mut m = Leadership::new(1, &[1, 2], &[1, 2], 0);
        for t in 1..=20 {
            m.fetched(2, t * 10 - 5, t * 10, t * 1000);
        }
        assert_eq!(
            m.shrink(200, 20_000, 10_000),
            None,
            "it reaches each previous fetch's log end"
        );
        let mut n = Leadership::new(1, &[1, 2], &[1, 2], 0);
        n.fetched(2, 0, 100, 1);
        n.fetched(2, 1, 200, 2);
        n.fetched(2, 2, 300, 11_000);
        assert_eq!(n.shrink(300, 11_000, 10_000), Some(vec![1]));
    }

    #[test]
    fn a_refused_change_may_be_asked_again() {
        let mut l = Leadership::new(1, &[1, 2], &[1, 2], 0);
        let isr = l.shrink(5, 20_000, 10_000).expect("2 never fetched");
        l.asked(isr.clone(), 20_000);
        assert_eq!(l.shrink(5, 20_001, 10_000), None);
        l.refused(&isr);
        assert_eq!(l.shrink(5, 20_002, 10_000), Some(isr));
    }

    /// Drives a leadership through random fetches, ISR expansions, shrinks and their outcomes,
    /// with the high watermark taken as the partition takes it (up to the bound, never down).
    /// Followers fetch forward only, as in-sync followers do. Then: the high watermark never
    /// passes the log end of a replica in the ISR ZooKeeper holds (what acks=all promised is on
    /// every one of them), and the bound never falls under the high watermark, so it never had
    /// to be held up against it: it would not move backwards even unclamped.
    mod high_watermark {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Produce(i64),
            Fetch { replica: i32, ahead: i64 },
            Expand(i32),
            Shrink,
            Written,
            Refused,
            Tick(i64),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (1..50i64).prop_map(Step::Produce),
                (2..=3i32, 0..60i64).prop_map(|(replica, ahead)| Step::Fetch { replica, ahead }),
                (2..=3i32).prop_map(Step::Expand),
                Just(Step::Shrink),
                Just(Step::Written),
                Just(Step::Refused),
                (1..20_000i64).prop_map(Step::Tick),
            ]
        }

        proptest! {
            #[test]
            fn never_moves_backwards_nor_past_the_isr(steps in proptest::collection::vec(step(), 1..200)) {
                let mut l = Leadership::new(1, &[1, 2, 3], &[1, 2, 3], 0);
                let (mut log_end, mut now, mut hw) = (0i64, 0i64, 0i64);
                let mut fetched = BTreeMap::from([(2, 0i64), (3, 0i64)]);
                let mut asked: Option<Vec<i32>> = None;
                for step in steps {
                    match step {
                        Step::Produce(n) => log_end += n,
                        Step::Tick(ms) => now += ms,
                        Step::Fetch { replica, ahead } => {
                            let at = (fetched[&replica] + ahead).min(log_end);
                            fetched.insert(replica, at);
                            l.fetched(replica, at, log_end, now);
                        }
                        Step::Expand(replica) => {
                            if let Some(isr) = l.expansion(replica, hw, now) {
                                l.asked(isr.clone(), now);
                                asked = Some(isr);
                            }
                        }
                        Step::Shrink => {
                            if let Some(isr) = l.shrink(log_end, now, 10_000) {
                                l.asked(isr.clone(), now);
                                asked = Some(isr);
                            }
                        }
                        Step::Written => {
                            if let Some(isr) = asked.take() {
                                l.written(&isr);
                            }
                        }
                        Step::Refused => {
                            if let Some(isr) = asked.take() {
                                l.refused(&isr);
                            }
                        }
                    }
                    let bound = l.high_watermark_bound(log_end);
                    if bound != UNKNOWN {
                        prop_assert!(bound >= hw, "bound {bound} under the high watermark {hw}");
                        hw = hw.max(bound);
                    }
                    for r in l.isr() {
                        let end = if *r == 1 { log_end } else { fetched[r] };
                        prop_assert!(hw <= end, "high watermark {hw} past replica {r}'s log end {end}");
                    }
                }
            }
        }
    }
}

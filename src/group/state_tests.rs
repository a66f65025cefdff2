//! The group state machine driven as clients drive it, with the time passed in.

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

use super::state::*;

const LIMITS: Limits = Limits {
    min_session_timeout_ms: 6_000,
    max_session_timeout_ms: 1_800_000,
    initial_rebalance_delay_ms: 0,
    max_size: 3,
};

fn join_request(member_id: &str, protocols: &[(&str, &'static [u8])]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(n, m)| ((*n).to_owned(), Bytes::from_static(m)))
            .collect(),
        require_known_member_id: true,
    }
}

fn join(group: &mut Group, request: JoinRequest, now: i64) -> oneshot::Receiver<JoinResult> {
    let (tx, rx) = oneshot::channel();
    group.join(request, tx, &LIMITS, now);
    rx
}

fn ready<T>(rx: &mut oneshot::Receiver<T>) -> T {
    rx.try_recv()
        .expect("not cancelled")
        .expect("answered by now")
}

fn pending<T>(rx: &mut oneshot::Receiver<T>) {
    assert!(matches!(rx.try_recv(), Ok(None)), "still waiting");
}

/// Joins a member from scratch (MEMBER_ID_REQUIRED, then with its id); returns the receiver.
fn new_member(group: &mut Group, now: i64) -> (String, oneshot::Receiver<JoinResult>) {
    let mut first = join(group, join_request("", &[("range", b"r")]), now);
    let answer = ready(&mut first);
    assert_eq!(answer.error, Some(ResponseError::MemberIdRequired));
    let id = answer.member_id;
    assert!(id.starts_with("client-"));
    (
        id.clone(),
        join(group, join_request(&id, &[("range", b"r")]), now),
    )
}

fn sync(
    group: &mut Group,
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> oneshot::Receiver<SyncResult> {
    let (tx, rx) = oneshot::channel();
    group.sync(
        SyncRequest {
            member_id: member.to_owned(),
            group_instance_id: None,
            generation,
            protocol_type: None,
            protocol: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| ((*m).to_owned(), Bytes::from_static(a)))
                .collect(),
        },
        tx,
    );
    rx
}

#[test]
fn one_member_joins_syncs_and_is_stable() {
    let mut group = Group::new("g".into(), 0);
    let (id, mut joined) = new_member(&mut group, 0);
    let answer = ready(&mut joined);
    assert_eq!(answer.error, None);
    assert_eq!(answer.generation, 1);
    assert_eq!(answer.leader, id);
    assert_eq!(answer.protocol.as_deref(), Some("range"));
    assert_eq!(answer.members.len(), 1);
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    let mut synced = sync(&mut group, &id, 1, &[(&id, b"assignment")]);
    pending(&mut synced);
    let store = group.take_store().expect("the assignment is written first");
    assert_eq!(store, Store::Assignment { generation: 1 });
    assert_eq!(
        group.stored_value().members[0].assignment,
        Bytes::from_static(b"assignment")
    );
    group.store_done(store, Ok(()), 1);
    assert_eq!(
        ready(&mut synced).assignment,
        Bytes::from_static(b"assignment")
    );
    assert_eq!(group.state(), GroupState::Stable);
    assert_eq!(group.heartbeat(&id, None, 1, 2), None);
    assert_eq!(
        group.heartbeat(&id, None, 0, 2),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat("nobody", None, 1, 2),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_second_member_makes_the_first_rejoin_and_the_leader_sees_both() {
    let mut group = Group::new("g".into(), 0);
    let (a, mut a_joined) = new_member(&mut group, 0);
    ready(&mut a_joined);
    let mut a_synced = sync(&mut group, &a, 1, &[(&a, b"all")]);
    let store = group.take_store().unwrap();
    group.store_done(store, Ok(()), 0);
    ready(&mut a_synced);

    let (b, mut b_joined) = new_member(&mut group, 10);
    pending(&mut b_joined);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(&a, None, 1, 20),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut a_rejoined = join(&mut group, join_request(&a, &[("range", b"r")]), 30);
    let a_answer = ready(&mut a_rejoined);
    let b_answer = ready(&mut b_joined);
    assert_eq!((a_answer.generation, b_answer.generation), (2, 2));
    assert_eq!(a_answer.leader, a, "the leader stays the leader");
    assert_eq!(a_answer.members.len(), 2);
    assert!(
        b_answer.members.is_empty(),
        "followers do not see the members"
    );
    // The follower syncs first and waits for the leader's assignment.
    let mut b_synced = sync(&mut group, &b, 2, &[]);
    pending(&mut b_synced);
    let mut a_synced = sync(&mut group, &a, 2, &[(&a, b"p0"), (&b, b"p1")]);
    let store = group.take_store().unwrap();
    group.store_done(store, Ok(()), 40);
    assert_eq!(ready(&mut a_synced).assignment, Bytes::from_static(b"p0"));
    assert_eq!(ready(&mut b_synced).assignment, Bytes::from_static(b"p1"));
}

#[test]
fn an_expired_member_is_removed_and_the_rest_rebalance() {
    let mut group = Group::new("g".into(), 0);
    let (a, mut a_joined) = new_member(&mut group, 0);
    let (b, mut b_joined) = new_member(&mut group, 0);
    // a joined alone first (generation 1) and b's join started generation 2.
    let first = ready(&mut a_joined);
    assert_eq!(first.generation, 1);
    let mut a_again = join(&mut group, join_request(&a, &[("range", b"r")]), 1);
    ready(&mut a_again);
    ready(&mut b_joined);
    let mut a_synced = sync(&mut group, &a, 2, &[(&a, b"x"), (&b, b"y")]);
    let store = group.take_store().unwrap();
    group.store_done(store, Ok(()), 1);
    ready(&mut a_synced);
    // Only a heartbeats; b's 10 s session runs out.
    for t in (1_000..=12_000).step_by(1_000) {
        group.heartbeat(&a, None, 2, t);
        group.tick(t);
    }
    assert_eq!(group.member_count(), 1);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    let mut a_rejoined = join(&mut group, join_request(&a, &[("range", b"r")]), 12_500);
    assert_eq!(ready(&mut a_rejoined).generation, 3);
}

#[test]
fn the_last_member_leaving_empties_the_group_and_it_is_stored() {
    let mut group = Group::new("g".into(), 0);
    let (a, mut joined) = new_member(&mut group, 0);
    ready(&mut joined);
    assert_eq!(group.leave(&a, None, 5), None);
    assert_eq!(group.state(), GroupState::Empty);
    assert_eq!(group.generation(), 2);
    assert_eq!(group.take_store(), Some(Store::Metadata));
    assert_eq!(
        group.leave(&a, None, 6),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn unknown_ids_bad_timeouts_and_foreign_protocols_get_kafkas_errors() {
    let mut group = Group::new("g".into(), 0);
    let mut unknown = join(&mut group, join_request("made-up", &[("range", b"r")]), 0);
    assert_eq!(
        ready(&mut unknown).error,
        Some(ResponseError::UnknownMemberId)
    );
    let mut short = join_request("", &[("range", b"r")]);
    short.session_timeout_ms = 10;
    let mut short = join(&mut group, short, 0);
    assert_eq!(
        ready(&mut short).error,
        Some(ResponseError::InvalidSessionTimeout)
    );
    let (_a, mut joined) = new_member(&mut group, 0);
    ready(&mut joined);
    let mut other = join_request("", &[("roundrobin", b"x")]);
    other.require_known_member_id = false;
    let mut other = join(&mut group, other, 0);
    assert_eq!(
        ready(&mut other).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let mut empty = join(&mut group, join_request("", &[]), 0);
    assert_eq!(
        ready(&mut empty).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn the_group_holds_at_most_max_size_members() {
    let mut group = Group::new("g".into(), 0);
    for _ in 0..3 {
        let (_, _rx) = new_member(&mut group, 0);
    }
    let mut fourth = join(&mut group, join_request("", &[("range", b"r")]), 0);
    assert_eq!(
        ready(&mut fourth).error,
        Some(ResponseError::GroupMaxSizeReached)
    );
}

#[test]
fn a_static_member_restarting_keeps_its_assignment_without_a_rebalance() {
    let mut group = Group::new("g".into(), 0);
    let mut request = join_request("", &[("range", b"r")]);
    request.group_instance_id = Some("instance-1".into());
    let mut joined = join(&mut group, request.clone(), 0);
    let first = ready(&mut joined);
    assert_eq!(
        first.error, None,
        "static members need no MEMBER_ID_REQUIRED round"
    );
    let mut synced = sync(
        &mut group,
        &first.member_id,
        1,
        &[(&first.member_id, b"mine")],
    );
    let store = group.take_store().unwrap();
    group.store_done(store, Ok(()), 0);
    ready(&mut synced);
    // Restarted: joins again without its member id.
    let mut again = join(&mut group, request, 100);
    let second = ready(&mut again);
    assert_eq!(second.error, None);
    assert_ne!(second.member_id, first.member_id);
    assert_eq!(second.generation, 1, "no rebalance");
    assert_eq!(group.state(), GroupState::Stable);
    let mut synced = sync(&mut group, &second.member_id, 1, &[]);
    assert_eq!(ready(&mut synced).assignment, Bytes::from_static(b"mine"));
    // The old incarnation is fenced.
    assert_eq!(
        group.heartbeat(&first.member_id, Some("instance-1"), 1, 200),
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn the_initial_delay_waits_for_more_members() {
    let limits = Limits {
        initial_rebalance_delay_ms: 3_000,
        ..LIMITS
    };
    let mut group = Group::new("g".into(), 0);
    let mut a = join_request("", &[("range", b"r")]);
    a.require_known_member_id = false;
    let (tx, mut a_joined) = oneshot::channel();
    group.join(a.clone(), tx, &limits, 0);
    pending(&mut a_joined);
    let (tx, mut b_joined) = oneshot::channel();
    group.join(a, tx, &limits, 1_000);
    group.tick(2_999);
    pending(&mut a_joined);
    // The delay is extended once (a member arrived), then the join completes.
    group.tick(3_000);
    pending(&mut a_joined);
    group.tick(6_000);
    assert_eq!(ready(&mut a_joined).generation, 1);
    assert_eq!(ready(&mut b_joined).members.len(), 0);
}

#[test]
fn commits_are_checked_as_kafka_checks_them() {
    let mut group = Group::new("g".into(), 0);
    assert_eq!(
        group.check_commit("", None, -1),
        Ok(()),
        "an empty group takes simple commits"
    );
    let (a, mut joined) = new_member(&mut group, 0);
    ready(&mut joined);
    assert_eq!(
        group.check_commit(&a, None, 1),
        Err(ResponseError::RebalanceInProgress)
    );
    let mut synced = sync(&mut group, &a, 1, &[(&a, b"x")]);
    let store = group.take_store().unwrap();
    group.store_done(store, Ok(()), 0);
    ready(&mut synced);
    assert_eq!(group.check_commit(&a, None, 1), Ok(()));
    assert_eq!(
        group.check_commit(&a, None, 7),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit("", None, -1),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_failed_store_fails_the_syncs_and_rebalances() {
    let mut group = Group::new("g".into(), 0);
    let (a, mut joined) = new_member(&mut group, 0);
    ready(&mut joined);
    let mut synced = sync(&mut group, &a, 1, &[(&a, b"x")]);
    let store = group.take_store().unwrap();
    group.store_done(store, Err(ResponseError::NotCoordinator), 0);
    assert_eq!(
        ready(&mut synced).error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn empty_groups_lose_their_offsets_after_the_retention() {
    let mut group = Group::new("g".into(), 0);
    group.offsets.insert(
        ("t".into(), 0),
        Committed {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        },
    );
    assert!(group.expire_offsets(1_000, 999).is_empty());
    assert_eq!(
        group.expire_offsets(1_000, 1_000),
        vec![("t".to_owned(), 0)]
    );
    assert!(group.is_removable());
}

#[test]
fn a_follower_waiting_for_the_assignment_outlives_its_session_until_the_leader_goes() {
    let mut group = Group::new("g".into(), 0);
    let (a, mut a_joined) = new_member(&mut group, 0);
    ready(&mut a_joined);
    let (b, mut b_joined) = new_member(&mut group, 0);
    let mut a_again = join(&mut group, join_request(&a, &[("range", b"r")]), 0);
    let generation = ready(&mut a_again).generation;
    ready(&mut b_joined);
    // b waits for the assignment; the leader never sends it nor heartbeats.
    let mut b_synced = sync(&mut group, &b, generation, &[]);
    group.tick(9_999);
    pending(&mut b_synced);
    group.tick(10_001);
    assert_eq!(
        ready(&mut b_synced).error,
        Some(ResponseError::RebalanceInProgress),
        "the leader's session ended the wait"
    );
    assert_eq!(group.member_count(), 1, "b stays: it was waiting");
}

#[test]
fn a_huge_client_id_still_gives_a_member_id_the_stored_record_can_hold() {
    let mut group = Group::new("g".into(), 0);
    let mut request = join_request("", &[("range", b"r")]);
    request.client_id = "é".repeat(16_000);
    let mut joined = join(&mut group, request, 0);
    let id = ready(&mut joined).member_id;
    assert!(
        id.len() <= MAX_CLIENT_ID_IN_MEMBER_ID + 37,
        "{} bytes",
        id.len()
    );
    let mut rejoined = join(&mut group, join_request(&id, &[("range", b"r")]), 0);
    ready(&mut rejoined);
    // Encoding the group for __consumer_offsets does not overflow an int16 length.
    super::log_format::group_value(&group.stored_value());
}

//! One consumer group's state machine, as Kafka's `GroupCoordinator` runs it: Empty,
//! PreparingRebalance, CompletingRebalance, Stable, Dead; members with session and rebalance
//! timeouts; static members (`group.instance.id`); the group's committed offsets.
//!
//! Sans I/O: every call takes the time, answers that are due go out on the oneshot channels the
//! callers handed in, and what must be written to `__consumer_offsets` first is flagged
//! ([`Group::take_store`]) for the coordinator to append and confirm ([`Group::store_done`]).
//! Deadlines are checked by [`Group::tick`]. The broker relays the leader's assignment: any
//! client-side assignor works.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

use super::log_format::{GroupValue, MemberValue, OffsetValue};

/// Kafka's `GroupCoordinator.NewMemberJoinTimeoutMs`: how long a new member waits in a rebalance
/// for the rebalance to complete before it is dropped.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;

/// Bytes of protocol metadata one member may send with a JoinGroup (every protocol together).
pub const MAX_MEMBER_METADATA_BYTES: usize = 1 << 20;

/// Bytes of a client id kept in the member ids made from it.
pub const MAX_CLIENT_ID_IN_MEMBER_ID: usize = 255;

/// Protocols one member may offer.
pub const MAX_PROTOCOLS_PER_MEMBER: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name, as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The group settings the state machine needs (from [`crate::config::GroupConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id gets one with MEMBER_ID_REQUIRED and joins again.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

pub type JoinReply = oneshot::Sender<JoinResult>;

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

pub type SyncReply = oneshot::Sender<SyncResult>;

/// What must be written to `__consumer_offsets` before the group goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The leader's assignment for this generation: the members waiting in SyncGroup get their
    /// assignments once it is written.
    Assignment { generation: i32 },
    /// The group as it is (a new generation with no members, a replaced static member).
    Metadata,
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<JoinReply>,
    awaiting_sync: Option<SyncReply>,
    /// When the member is dropped unless it heartbeats (or joins) again.
    deadline_ms: i64,
    /// Joined in the rebalance under way and not yet part of a generation.
    is_new: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    fn refresh(&mut self, now_ms: i64) {
        self.deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }
}

/// The delay an empty group's first rebalance waits for more members (Kafka's
/// `InitialDelayedJoin`): extended by the delay while members keep arriving, at most up to the
/// rebalance timeout.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    deadline_ms: i64,
    delay_ms: i64,
    remaining_ms: i64,
}

/// A committed offset, as the group keeps it.
pub type Committed = OffsetValue;

#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    state_since_ms: i64,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` -> member id.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending: BTreeMap<String, i64>,
    rebalance_deadline_ms: Option<i64>,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    /// The leader's assignment while it is being written.
    pending_assignment: Option<BTreeMap<String, Bytes>>,
    store: Option<Store>,
    pub offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            state_since_ms: now_ms,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline_ms: None,
            initial_delay: None,
            new_member_added: false,
            pending_assignment: None,
            store: None,
            offsets: BTreeMap::new(),
        }
    }

    /// A group as loaded from `__consumer_offsets`: Stable with its members if it had any (they
    /// must heartbeat within their session timeout to stay), else Empty.
    pub fn loaded(id: String, value: GroupValue, now_ms: i64) -> Group {
        let mut group = Group::new(id, now_ms);
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        group.protocol = value.protocol;
        group.leader = value.leader;
        if value.current_state_timestamp > 0 {
            group.state_since_ms = value.current_state_timestamp;
        }
        let protocol = group.protocol.clone().unwrap_or_default();
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                    is_new: false,
                },
            );
        }
        if group.members.is_empty() {
            group.leader = None;
        } else {
            group.state = GroupState::Stable;
        }
        group
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    /// Bytes the members' protocol metadata and assignments take (what a client controls).
    pub fn metadata_bytes(&self) -> usize {
        self.members
            .values()
            .map(|m| {
                m.protocols
                    .iter()
                    .map(|(n, b)| n.len() + b.len())
                    .sum::<usize>()
                    + m.assignment.len()
            })
            .sum::<usize>()
            + self
                .pending_assignment
                .as_ref()
                .map_or(0, |a| a.values().map(Bytes::len).sum())
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether [`Group::tick`] has anything to watch (members, pending ids, a rebalance).
    /// Whether a write to `__consumer_offsets` is asked for (see [`Group::take_store`]).
    pub fn wants_store(&self) -> bool {
        self.store.is_some()
    }

    pub fn is_active(&self) -> bool {
        !self.members.is_empty() || !self.pending.is_empty() || self.initial_delay.is_some()
    }

    pub fn take_store(&mut self) -> Option<Store> {
        self.store.take()
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    fn is_static_member_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.is_some_and(|instance| {
            self.static_members
                .get(instance)
                .is_some_and(|known| known != member_id)
        })
    }

    /// Whether a member offering `protocol_type` and `protocols` can be in this group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(name, _)| candidates.contains(name))
    }

    /// Protocols every member offers.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    /// Kafka's vote: each member votes for the first of its protocols that every member
    /// offers; the most votes win (ties: the candidate listed first by the first member).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c)
    }

    /// Kafka's `clientId-uuid`. The client id is cut to [`MAX_CLIENT_ID_IN_MEMBER_ID`] bytes:
    /// it comes from the request header (up to 32,767 bytes), and the member id must fit the
    /// int16-length string of the group's stored record.
    fn new_member_id(client_id: &str) -> String {
        let mut end = client_id.len().min(MAX_CLIENT_ID_IN_MEMBER_ID);
        while !client_id.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}-{}", &client_id[..end], uuid::Uuid::new_v4())
    }

    /// JoinGroup. The answer goes out on `reply`, now or when the rebalance completes.
    pub fn join(&mut self, request: JoinRequest, reply: JoinReply, limits: &Limits, now_ms: i64) {
        let fail = |reply: JoinReply, error| {
            let _ = reply.send(JoinResult::error(error, &request.member_id));
        };
        if self.state == GroupState::Dead {
            return fail(reply, ResponseError::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < limits.min_session_timeout_ms
            || request.session_timeout_ms > limits.max_session_timeout_ms
        {
            return fail(reply, ResponseError::InvalidSessionTimeout);
        }
        let metadata_bytes: usize = request
            .protocols
            .iter()
            .map(|(n, m)| n.len() + m.len())
            .sum();
        if request.protocols.len() > MAX_PROTOCOLS_PER_MEMBER
            || metadata_bytes > MAX_MEMBER_METADATA_BYTES
        {
            return fail(reply, ResponseError::InvalidRequest);
        }
        if !self.supports(&request.protocol_type, &request.protocols) {
            return fail(reply, ResponseError::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty() {
            self.join_unknown_member(request, reply, limits, now_ms);
        } else {
            self.join_known_member(request, reply, limits, now_ms);
        }
    }

    fn join_unknown_member(
        &mut self,
        request: JoinRequest,
        reply: JoinReply,
        limits: &Limits,
        now_ms: i64,
    ) {
        let member_id = Self::new_member_id(&request.client_id);
        if let Some(instance) = &request.group_instance_id {
            if let Some(old_id) = self.static_members.get(instance).cloned() {
                return self.replace_static_member(old_id, member_id, request, reply, now_ms);
            }
        }
        if self.members.len() + self.pending.len() >= limits.max_size {
            let _ = reply.send(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
            return;
        }
        if request.require_known_member_id && request.group_instance_id.is_none() {
            // Kafka's KIP-394: the member learns its id first and joins again with it.
            self.pending.insert(
                member_id.clone(),
                now_ms + i64::from(request.session_timeout_ms),
            );
            let _ = reply.send(JoinResult::error(
                ResponseError::MemberIdRequired,
                &member_id,
            ));
            return;
        }
        self.add_member_and_rebalance(member_id, request, reply, limits, now_ms);
    }

    fn join_known_member(
        &mut self,
        request: JoinRequest,
        reply: JoinReply,
        limits: &Limits,
        now_ms: i64,
    ) {
        let member_id = request.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(member_id, request, reply, limits, now_ms);
        }
        if self.is_static_member_fenced(&member_id, request.group_instance_id.as_deref()) {
            let _ = reply.send(JoinResult::error(
                ResponseError::FencedInstanceId,
                &member_id,
            ));
            return;
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            let _ = reply.send(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
            return;
        };
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(request, reply, now_ms);
            }
            GroupState::CompletingRebalance => {
                if member.same_protocols(&request.protocols) {
                    // A join whose answer was lost: answer it again.
                    member.refresh(now_ms);
                    let result = self.join_result(&member_id);
                    let _ = reply.send(result);
                } else {
                    self.update_member_and_rebalance(request, reply, now_ms);
                }
            }
            GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_leader || !member.same_protocols(&request.protocols) {
                    self.update_member_and_rebalance(request, reply, now_ms);
                } else {
                    // A follower with nothing new: the current generation stands.
                    member.refresh(now_ms);
                    let mut result = self.join_result(&member_id);
                    result.members.clear();
                    let _ = reply.send(result);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                let _ = reply.send(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &member_id,
                ));
            }
        }
    }

    /// The answer for `member_id` in the current generation (the leader gets the members).
    fn join_result(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinRequest,
        reply: JoinReply,
        limits: &Limits,
        now_ms: i64,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(reply),
                awaiting_sync: None,
                deadline_ms: now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS,
                is_new: true,
            },
        );
        self.new_member_added = true;
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms);
        } else {
            self.prepare_rebalance(limits.initial_rebalance_delay_ms, now_ms);
        }
    }

    fn update_member_and_rebalance(&mut self, request: JoinRequest, reply: JoinReply, now_ms: i64) {
        let member = self
            .members
            .get_mut(&request.member_id)
            .expect("the caller found the member");
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.refresh(now_ms);
        if let Some(old) = member.awaiting_join.replace(reply) {
            // A member that joins twice in one rebalance: the older request is superseded.
            let _ = old.send(JoinResult::error(
                ResponseError::UnknownMemberId,
                &request.member_id,
            ));
        }
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms);
        } else {
            self.prepare_rebalance(0, now_ms);
        }
    }

    /// A static member rejoined with a new member id (after a restart): it takes the old
    /// member's place. A Stable group keeps its generation and assignment (no rebalance, the
    /// point of static membership); in any other state the rebalance under way goes on.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        request: JoinRequest,
        reply: JoinReply,
        now_ms: i64,
    ) {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(request.group_instance_id.as_deref().unwrap_or(""));
            let _ = reply.send(JoinResult::error(ResponseError::UnknownMemberId, ""));
            return;
        };
        // The old incarnation's pending answers are fenced.
        if let Some(old) = member.awaiting_join.take() {
            let _ = old.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(old) = member.awaiting_sync.take() {
            let _ = old.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        member.id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.refresh(now_ms);
        let instance = request.group_instance_id.clone().expect("a static member");
        self.static_members.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        let protocols_same = member.same_protocols(&request.protocols);
        member.protocols = request.protocols;
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable if protocols_same => {
                self.store = Some(Store::Metadata);
                let result = self.join_result(&new_id);
                let _ = reply.send(result);
            }
            GroupState::PreparingRebalance => {
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .awaiting_join = Some(reply);
                self.try_complete_join(now_ms);
            }
            _ => {
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .awaiting_join = Some(reply);
                self.prepare_rebalance(0, now_ms);
            }
        }
    }

    /// Starts a rebalance; an Empty group's first waits `initial_delay_ms` for more members.
    fn prepare_rebalance(&mut self, initial_delay_ms: i64, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignment_and_fail_syncs(ResponseError::RebalanceInProgress);
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        if self.state == GroupState::Empty && initial_delay_ms > 0 {
            let delay = initial_delay_ms;
            self.initial_delay = Some(InitialDelay {
                deadline_ms: now_ms + delay,
                delay_ms: delay,
                remaining_ms: (rebalance_timeout - delay).max(0),
            });
            self.new_member_added = false;
        }
        self.rebalance_deadline_ms = Some(now_ms + rebalance_timeout);
        self.transition(GroupState::PreparingRebalance, now_ms);
        self.try_complete_join(now_ms);
    }

    fn reset_assignment_and_fail_syncs(&mut self, error: ResponseError) {
        self.pending_assignment = None;
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(waiter) = m.awaiting_sync.take() {
                let _ = waiter.send(SyncResult::error(error));
            }
        }
    }

    /// Completes the join phase once every member has rejoined (and no id handed out is still
    /// expected, and the initial delay is over).
    fn try_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined && self.pending.is_empty() {
            self.complete_join(now_ms);
        }
    }

    fn complete_join(&mut self, now_ms: i64) {
        // Whoever has not rejoined by now is out (Kafka: notYetRejoinedMembers).
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline_ms = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            self.store = Some(Store::Metadata);
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id);
            let member = self.members.get_mut(&id).expect("listed above");
            member.is_new = false;
            member.refresh(now_ms);
            if let Some(waiter) = member.awaiting_join.take() {
                let _ = waiter.send(result);
            }
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(waiter) = member.awaiting_join.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
        }
        if let Some(waiter) = member.awaiting_sync.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// A member left or expired: the group rebalances without it (Kafka's
    /// `removeMemberAndUpdateGroup`).
    fn remove_member_and_update(&mut self, member_id: &str, now_ms: i64) {
        self.remove_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(0, now_ms);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// SyncGroup. The answer goes out on `reply`, now or once the leader's assignment is
    /// written.
    pub fn sync(&mut self, request: SyncRequest, reply: SyncReply) {
        let fail = |reply: SyncReply, error| {
            let _ = reply.send(SyncResult::error(error));
        };
        if self.state == GroupState::Dead {
            return fail(reply, ResponseError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(&request.member_id, request.group_instance_id.as_deref()) {
            return fail(reply, ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(&request.member_id) {
            return fail(reply, ResponseError::UnknownMemberId);
        }
        if request.generation != self.generation {
            return fail(reply, ResponseError::IllegalGeneration);
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = request
            .protocol
            .as_ref()
            .is_some_and(|p| Some(p) != self.protocol.as_ref());
        if type_mismatch || name_mismatch {
            return fail(reply, ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(reply, ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(reply, ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                let member = self
                    .members
                    .get_mut(&request.member_id)
                    .expect("checked above");
                if let Some(old) = member.awaiting_sync.replace(reply) {
                    let _ = old.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
                if is_leader && self.pending_assignment.is_none() {
                    let assignment: BTreeMap<String, Bytes> = request
                        .assignments
                        .into_iter()
                        .filter(|(id, _)| self.members.contains_key(id))
                        .collect();
                    self.pending_assignment = Some(assignment);
                    self.store = Some(Store::Assignment {
                        generation: self.generation,
                    });
                }
            }
            GroupState::Stable => {
                let member = &self.members[&request.member_id];
                let _ = reply.send(SyncResult {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
    }

    /// The group as it is to be written (with the assignment being stored, if any).
    pub fn stored_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: self
                        .pending_assignment
                        .as_ref()
                        .and_then(|a| a.get(&m.id).cloned())
                        .unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        }
    }

    /// The write asked for by [`Group::take_store`] finished. An assignment that was written
    /// goes to the members waiting in SyncGroup and the group is Stable; one that was not fails
    /// them and the group rebalances (as Kafka does).
    pub fn store_done(&mut self, store: Store, result: Result<(), ResponseError>, now_ms: i64) {
        let Store::Assignment { generation } = store else {
            return;
        };
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        match result {
            Ok(()) => {
                let assignment = self.pending_assignment.take().unwrap_or_default();
                for m in self.members.values_mut() {
                    m.assignment = assignment.get(&m.id).cloned().unwrap_or_default();
                    if let Some(waiter) = m.awaiting_sync.take() {
                        let _ = waiter.send(SyncResult {
                            error: None,
                            protocol_type: self.protocol_type.clone(),
                            protocol: self.protocol.clone(),
                            assignment: m.assignment.clone(),
                        });
                    }
                }
                self.transition(GroupState::Stable, now_ms);
            }
            Err(error) => {
                self.reset_assignment_and_fail_syncs(error);
                self.prepare_rebalance(0, now_ms);
            }
        }
    }

    /// Heartbeat: Kafka's checks in Kafka's order.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(member_id, instance_id) {
            return Some(ResponseError::FencedInstanceId);
        }
        let state = self.state;
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        match state {
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.refresh(now_ms);
                None
            }
            GroupState::PreparingRebalance => {
                member.refresh(now_ms);
                Some(ResponseError::RebalanceInProgress)
            }
        }
    }

    /// LeaveGroup for one member (`member_id` may be empty when `instance_id` names it).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let member_id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(known) if member_id.is_empty() || known == member_id => known.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_owned(),
        };
        if self.pending.remove(&member_id).is_some() {
            self.try_complete_join(now_ms);
            return None;
        }
        if !self.members.contains_key(&member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member_and_update(&member_id, now_ms);
        None
    }

    /// Drops members whose session ran out, ends the initial delay or the rebalance timeout.
    pub fn tick(&mut self, now_ms: i64) {
        self.pending.retain(|_, deadline| *deadline > now_ms);
        if let Some(delay) = self.initial_delay {
            if now_ms >= delay.deadline_ms {
                if self.new_member_added && delay.remaining_ms > 0 {
                    let extension = delay.delay_ms.min(delay.remaining_ms);
                    self.initial_delay = Some(InitialDelay {
                        deadline_ms: now_ms + extension,
                        delay_ms: delay.delay_ms,
                        remaining_ms: delay.remaining_ms - extension,
                    });
                    self.new_member_added = false;
                } else {
                    self.initial_delay = None;
                    self.try_complete_join(now_ms);
                }
            }
        }
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.rebalance_deadline_ms.is_some_and(|d| now_ms >= d)
        {
            self.complete_join(now_ms);
        }
        // Members waiting in a rebalance are kept by the rebalance timeout, not the session
        // (new ones by Kafka's 5-minute join timeout), and so are members waiting for the
        // leader's assignment (Kafka's `shouldKeepAlive`): if the leader is gone, its own
        // session ends the wait.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let waiting = (m.awaiting_join.is_some() && !m.is_new) || m.awaiting_sync.is_some();
                !waiting && now_ms >= m.deadline_ms
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member's session timed out");
            self.remove_member_and_update(&id, now_ms);
        }
    }

    /// OffsetCommit's checks (Kafka's `doCommitOffsets`), before anything is written.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // Offsets stored by a client that manages its own partitions.
            return Ok(());
        }
        if self.pending.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if self.is_static_member_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        match self.state {
            GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
        }
    }

    /// A commit by a member keeps it alive, as a heartbeat does.
    pub fn touch(&mut self, member_id: &str, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.refresh(now_ms);
        }
    }

    /// Offsets whose retention ran out (Kafka's `removeExpiredOffsets`): for an Empty group,
    /// all of them once it has been empty for `retention_ms`; for a group that never had
    /// members, each `retention_ms` after it was committed. Removed here; the caller writes
    /// their tombstones.
    pub fn expire_offsets(&mut self, retention_ms: i64, now_ms: i64) -> Vec<(String, i32)> {
        let since_empty = self.state_since_ms;
        let expired: Vec<(String, i32)> = match (self.state, self.protocol_type.as_deref()) {
            (GroupState::Empty, Some(_)) if now_ms - since_empty >= retention_ms => {
                self.offsets.keys().cloned().collect()
            }
            (GroupState::Empty, None) => self
                .offsets
                .iter()
                .filter(|(_, c)| now_ms - c.commit_timestamp >= retention_ms)
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        };
        for key in &expired {
            self.offsets.remove(key);
        }
        expired
    }

    /// Whether the group can go (Empty with nothing committed): the caller marks it Dead and
    /// writes its tombstone.
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty && self.offsets.is_empty() && self.pending.is_empty()
    }

    pub fn mark_dead(&mut self, now_ms: i64) {
        self.transition(GroupState::Dead, now_ms);
    }

    /// Topics the members subscribe to, when the group speaks the consumer protocol (for
    /// OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC). `None` when that cannot be known.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            let mut metadata = m.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            let subscription =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }

    /// What DescribeGroups shows.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    // Kafka shows metadata and assignment only in a Stable group.
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

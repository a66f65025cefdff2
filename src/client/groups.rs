//! Consumer groups as an administrator sees them, from the client side: which broker coordinates a
//! group (FindCoordinator), the groups every broker knows (ListGroups), a group's state and
//! members (DescribeGroups), its committed offsets (OffsetFetch, OffsetCommit) and deleting it
//! (DeleteGroups). `skein groups` is built on this; one request at a time on the tool's tokio
//! runtime.
//!
//! A coordinator that is still loading its groups, has moved, or is not known yet answers
//! COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE. Those are retried
//! (looking the coordinator up again where it may have moved) a bounded number of times with a
//! short backoff, as Kafka's Admin client does, and then reported as an error naming the group.
//!
//! [`GroupMember`] is the other side: a consumer in a group (JoinGroup, SyncGroup, Heartbeat,
//! OffsetFetch and OffsetCommit with its generation, LeaveGroup), with the consumer protocol's
//! subscription and assignment encodings and Kafka's range assignor ([`range_assign`]).
//! `skein bench consume --group` is built on it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::cluster::{self, TopicLayout};
use super::Connection;

/// How many times a request meets a loading, moved or unknown coordinator before we give up.
pub const COORDINATOR_ATTEMPTS: u32 = 20;
/// The wait between two of those attempts.
pub const COORDINATOR_BACKOFF: Duration = Duration::from_millis(250);

/// FindCoordinator key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

/// The protocol type of groups whose members are Kafka consumers, and whose assignments are
/// therefore `ConsumerProtocolAssignment`s.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's name of an error code, as its tools print it: `NOT_COORDINATOR`, `NON_EMPTY_GROUP`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE({code})"),
        // kafka-protocol names its variants after Kafka's, in CamelCase.
        Some(error) => screaming_snake_case(&error.to_string()),
    }
}

fn screaming_snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    let mut previous: Option<char> = None;
    for c in camel.chars() {
        if c.is_ascii_uppercase()
            && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
        previous = Some(c);
    }
    out
}

/// An error the broker answered, with Kafka's name for it.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("{what}: {}{}", error_name(*code), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        what: String,
        code: i16,
        message: Option<String>,
    },
    #[error("{what}: still {} after {attempts} attempts {backoff:?} apart", error_name(*code))]
    CoordinatorNotReady {
        what: String,
        code: i16,
        attempts: u32,
        backoff: Duration,
    },
}

fn broker_error(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> anyhow::Error {
    GroupsError::Broker {
        what: what.into(),
        code,
        message: message.map(|m| m.to_string()),
    }
    .into()
}

/// What to do about an error code from a coordinator.
enum Retry {
    /// Not a coordinator problem (or no error): the answer stands.
    No,
    /// The coordinator is loading: ask it again.
    Same,
    /// The coordinator moved or is unknown: look it up again.
    Rediscover,
}

fn retry_of(code: i16) -> Retry {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::CoordinatorLoadInProgress) => Retry::Same,
        Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
            Retry::Rediscover
        }
        _ => Retry::No,
    }
}

/// The version of `R` to send on `conn`; the error names the API and the broker.
fn version_of<R: Request>(conn: &Connection) -> anyhow::Result<i16> {
    conn.version_of::<R>()
        .with_context(|| match ApiKey::try_from(R::KEY) {
            Ok(api) => format!("{api:?} on {}", conn.addr()),
            Err(_) => format!("API key {} on {}", R::KEY, conn.addr()),
        })
}

/// The broker that coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl Coordinator {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Returned from ListGroups v4 on.
    pub state: Option<String>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Dead` for a group the coordinator does not know.
    pub state: String,
    pub protocol_type: String,
    /// The assignor a consumer group chose (`range`, `cooperative-sticky`, ...).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// Kafka answers a group it does not know as `Dead` (DescribeGroups v6 and later may say
    /// GROUP_ID_NOT_FOUND instead, which [`GroupAdmin::describe_group`] maps to `Dead`).
    pub fn exists(&self) -> bool {
        self.state != "Dead"
    }

    /// Whether offsets may be reset or the group deleted: nobody is in it.
    pub fn is_inactive(&self) -> bool {
        self.state == "Empty" || self.state == "Dead"
    }
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Assignment,
}

/// A member's assignment, decoded when the group is a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Topic and partition pairs, sorted.
    Partitions(Vec<(String, i32)>),
    /// Not a consumer group: the assignment's bytes mean something only to its clients.
    Opaque { bytes: usize },
    /// A consumer group's assignment that does not decode.
    Malformed(String),
}

/// Decodes a consumer group member's assignment: a version (int16) and a
/// `ConsumerProtocolAssignment` of that version. An empty buffer is an empty assignment (a
/// member that has not synced yet).
pub fn decode_consumer_assignment(bytes: &Bytes) -> anyhow::Result<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        bail!("{} byte(s), too short for a version", buf.remaining());
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("version {version}");
    }
    // Newer versions only add fields at the end, so Kafka reads them as the newest it knows.
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version)?;
    let mut out: Vec<(String, i32)> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
        .collect();
    out.sort();
    Ok(out)
}

/// `(topic, partition)`, ordered by topic then partition.
pub type TopicPartition = (String, i32);

/// A session with a cluster for group administration: a bootstrap connection, connections to
/// the brokers met since, and the coordinators found, so each is asked for only once.
pub struct GroupAdmin {
    bootstrap_addr: String,
    /// Open connections by `host:port`.
    connections: HashMap<String, Connection>,
    /// Coordinators found so far, by group id.
    coordinators: HashMap<String, Coordinator>,
    attempts: u32,
    backoff: Duration,
}

impl GroupAdmin {
    /// Connects to the first broker of a comma-separated bootstrap list that answers.
    pub async fn connect(bootstrap: &str) -> anyhow::Result<GroupAdmin> {
        let conn = cluster::connect_bootstrap(bootstrap).await?;
        let bootstrap_addr = conn.addr().to_owned();
        Ok(GroupAdmin {
            connections: HashMap::from([(bootstrap_addr.clone(), conn)]),
            bootstrap_addr,
            coordinators: HashMap::new(),
            attempts: COORDINATOR_ATTEMPTS,
            backoff: COORDINATOR_BACKOFF,
        })
    }

    /// Sets how many attempts a request gets against a loading, moved or unknown coordinator,
    /// and the wait between two (defaults: [`COORDINATOR_ATTEMPTS`], [`COORDINATOR_BACKOFF`]).
    pub fn retries(mut self, attempts: u32, backoff: Duration) -> GroupAdmin {
        assert!(attempts >= 1, "a request needs at least one attempt");
        self.attempts = attempts;
        self.backoff = backoff;
        self
    }

    /// The connection to `addr`, opened on first use.
    async fn connection(&mut self, addr: &str) -> anyhow::Result<&mut Connection> {
        if !self.connections.contains_key(addr) {
            let conn = Connection::connect(addr).await?;
            self.connections.insert(addr.to_owned(), conn);
        }
        Ok(self
            .connections
            .get_mut(addr)
            .expect("the connection was inserted above"))
    }

    async fn bootstrap(&mut self) -> anyhow::Result<&mut Connection> {
        let addr = self.bootstrap_addr.clone();
        self.connection(&addr).await
    }

    /// Every broker of the cluster: id -> `host:port`.
    pub async fn brokers(&mut self) -> anyhow::Result<BTreeMap<i32, String>> {
        let conn = self.bootstrap().await?;
        // An empty topic list asks for brokers only (v1 and later; v0 has no such request).
        let response = conn
            .send(MetadataRequest::default().with_topics(Some(Vec::new())))
            .await
            .context("Metadata")?;
        Ok(response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect())
    }

    /// A topic's partitions and their leaders (see [`cluster::topic_layout`]).
    pub async fn topic_layout(&mut self, topic: &str) -> anyhow::Result<TopicLayout> {
        let conn = self.bootstrap().await?;
        cluster::topic_layout(conn, topic, false).await
    }

    /// The offsets of some of a topic's partitions at `timestamp` (a time in ms, or
    /// [`cluster::EARLIEST`] / [`cluster::LATEST`]), each asked of its leader. A partition with
    /// no record at or after a time gets -1, as Kafka answers.
    pub async fn list_offsets(
        &mut self,
        layout: &TopicLayout,
        partitions: &[i32],
        timestamp: i64,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let leader = layout
                .partitions
                .iter()
                .find(|l| l.partition == p)
                .ok_or_else(|| anyhow!("topic '{}' has no partition {p}", layout.topic))?
                .leader_id;
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = BTreeMap::new();
        for (leader, partitions) in by_leader {
            let addr = layout.broker_addr(leader)?.to_owned();
            let conn = self.connection(&addr).await?;
            out.extend(cluster::list_offsets(conn, &layout.topic, &partitions, timestamp).await?);
        }
        Ok(out)
    }

    /// The groups every broker coordinates (ListGroups to each), merged and sorted by id.
    /// `states` (ListGroups v4 and later) keeps only groups in those states.
    pub async fn list_groups(&mut self, states: &[String]) -> anyhow::Result<Vec<ListedGroup>> {
        let mut groups: BTreeMap<String, ListedGroup> = BTreeMap::new();
        for (broker_id, addr) in self.brokers().await? {
            let what = format!("ListGroups on broker {broker_id} ({addr})");
            let (attempts, backoff) = (self.attempts, self.backoff);
            let conn = self.connection(&addr).await?;
            let version = version_of::<ListGroupsRequest>(conn)?;
            if !states.is_empty() && version < 4 {
                bail!(
                    "{what}: filtering by state needs ListGroups v4, the broker serves v{version}"
                );
            }
            let request = ListGroupsRequest::default().with_states_filter(
                states
                    .iter()
                    .map(|s| StrBytes::from_string(s.clone()))
                    .collect(),
            );
            let mut attempt = 1;
            let response = loop {
                let response = conn
                    .send_version(request.clone(), version)
                    .await
                    .with_context(|| what.clone())?;
                match retry_of(response.error_code) {
                    Retry::No => break response,
                    Retry::Same | Retry::Rediscover if attempt < attempts => {
                        tracing::debug!(
                            "{what}: {}, retrying ({attempt} of {attempts})",
                            error_name(response.error_code)
                        );
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                    }
                    Retry::Same | Retry::Rediscover => {
                        return Err(GroupsError::CoordinatorNotReady {
                            what,
                            code: response.error_code,
                            attempts,
                            backoff,
                        }
                        .into())
                    }
                }
            };
            if response.error_code != 0 {
                return Err(broker_error(what, response.error_code, None));
            }
            for g in response.groups {
                let group_id = g.group_id.0.to_string();
                groups.entry(group_id.clone()).or_insert(ListedGroup {
                    group_id,
                    protocol_type: g.protocol_type.to_string(),
                    state: (version >= 4).then(|| g.group_state.to_string()),
                });
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The group's coordinator, if a request to it has been made.
    pub fn coordinator_of(&self, group: &str) -> Option<&Coordinator> {
        self.coordinators.get(group)
    }

    /// The group's coordinator: the one found before, or looked up (FindCoordinator), retried
    /// while the cluster answers that it has none yet (as [`GroupAdmin::retries`] allows).
    pub async fn coordinator(&mut self, group: &str) -> anyhow::Result<Coordinator> {
        if let Some(c) = self.coordinators.get(group) {
            return Ok(c.clone());
        }
        let mut last_code = 0;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(self.backoff).await;
            }
            match self.find_coordinator_once(group).await? {
                Ok(c) => return Ok(c),
                Err(code) => {
                    tracing::debug!(
                        "group '{group}': FindCoordinator: {}, retrying ({attempt} of {})",
                        error_name(code),
                        self.attempts
                    );
                    last_code = code;
                }
            }
        }
        Err(GroupsError::CoordinatorNotReady {
            what: format!("group '{group}': FindCoordinator"),
            code: last_code,
            attempts: self.attempts,
            backoff: self.backoff,
        }
        .into())
    }

    /// Forgets the group's coordinator, so the next request looks it up again (after
    /// NOT_COORDINATOR from a request made elsewhere).
    pub fn forget_coordinator(&mut self, group: &str) {
        self.coordinators.remove(group);
    }

    /// One FindCoordinator for a group: its coordinator, or the retriable code it answered.
    async fn find_coordinator_once(
        &mut self,
        group: &str,
    ) -> anyhow::Result<Result<Coordinator, i16>> {
        let what = format!("group '{group}': FindCoordinator");
        let conn = self.bootstrap().await?;
        let version = version_of::<FindCoordinatorRequest>(conn)?;
        // v4 batches keys: the key moves into a list, and so does the answer.
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(KEY_TYPE_GROUP)
                .with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())])
        } else {
            FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(group.to_owned()))
                .with_key_type(KEY_TYPE_GROUP)
        };
        let response = conn
            .send_version(request, version)
            .await
            .with_context(|| what.clone())?;
        let (code, message, node_id, host, port) = if version >= 4 {
            let c = response
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| anyhow!("{what}: the answer does not name the group"))?;
            (
                c.error_code,
                c.error_message.clone(),
                c.node_id.0,
                c.host.to_string(),
                c.port,
            )
        } else {
            (
                response.error_code,
                response.error_message.clone(),
                response.node_id.0,
                response.host.to_string(),
                response.port,
            )
        };
        match retry_of(code) {
            Retry::No if code != 0 => Err(broker_error(what, code, message.as_ref())),
            Retry::No => {
                let coordinator = Coordinator {
                    node_id,
                    host,
                    port,
                };
                self.coordinators
                    .insert(group.to_owned(), coordinator.clone());
                Ok(Ok(coordinator))
            }
            Retry::Same | Retry::Rediscover => Ok(Err(code)),
        }
    }

    /// Sends a request to the group's coordinator (found first if need be) and returns its
    /// answer, retrying while `error_of(answer)` says the coordinator is loading, moved or
    /// unknown. `build` makes the request for the version the coordinator speaks.
    async fn on_coordinator<R: Request>(
        &mut self,
        group: &str,
        what: &str,
        build: impl Fn(i16) -> anyhow::Result<R>,
        error_of: impl Fn(&R::Response) -> i16,
    ) -> anyhow::Result<R::Response> {
        let mut last_code = 0;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(self.backoff).await;
            }
            let coordinator = match self.coordinators.get(group) {
                Some(c) => c.clone(),
                None => match self.find_coordinator_once(group).await? {
                    Ok(c) => c,
                    Err(code) => {
                        tracing::debug!(
                            "group '{group}': FindCoordinator: {}, retrying ({attempt} of {})",
                            error_name(code),
                            self.attempts
                        );
                        last_code = code;
                        continue;
                    }
                },
            };
            let addr = coordinator.addr();
            let conn = self.connection(&addr).await.with_context(|| {
                format!(
                    "group '{group}': its coordinator, broker {} ({addr})",
                    coordinator.node_id
                )
            })?;
            let version = version_of::<R>(conn)?;
            let response = conn
                .send_version(build(version)?, version)
                .await
                .with_context(|| format!("group '{group}': {what}"))?;
            let code = error_of(&response);
            let retry = retry_of(code);
            if matches!(retry, Retry::No) {
                return Ok(response);
            }
            tracing::debug!(
                "group '{group}': {what} on broker {}: {}, retrying ({attempt} of {})",
                coordinator.node_id,
                error_name(code),
                self.attempts
            );
            if matches!(retry, Retry::Rediscover) {
                self.coordinators.remove(group);
            }
            last_code = code;
        }
        Err(GroupsError::CoordinatorNotReady {
            what: format!("group '{group}': {what}"),
            code: last_code,
            attempts: self.attempts,
            backoff: self.backoff,
        }
        .into())
    }

    /// The group's state, protocol and members. A group the coordinator does not know comes
    /// back `Dead`.
    pub async fn describe_group(&mut self, group: &str) -> anyhow::Result<GroupDescription> {
        let response = self
            .on_coordinator(
                group,
                "DescribeGroups",
                |_| {
                    Ok(DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]))
                },
                |r| r.groups.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let g = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| anyhow!("group '{group}': DescribeGroups did not answer for it"))?;
        if ResponseError::try_from_code(g.error_code) == Some(ResponseError::GroupIdNotFound) {
            return Ok(GroupDescription {
                group_id: group.to_owned(),
                state: "Dead".to_owned(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        }
        if g.error_code != 0 {
            return Err(broker_error(
                format!("group '{group}': DescribeGroups"),
                g.error_code,
                g.error_message.as_ref(),
            ));
        }
        let protocol_type = g.protocol_type.to_string();
        let members = g
            .members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if protocol_type == CONSUMER_PROTOCOL_TYPE {
                    match decode_consumer_assignment(&m.member_assignment) {
                        Ok(partitions) => Assignment::Partitions(partitions),
                        Err(e) => Assignment::Malformed(format!("{e:#}")),
                    }
                } else {
                    Assignment::Opaque {
                        bytes: m.member_assignment.len(),
                    }
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            protocol_type,
            protocol: g.protocol_data.to_string(),
            members,
        })
    }

    /// Every offset the group has committed (OffsetFetch with no topic list, v2 and later).
    /// Partitions answered without a committed offset (-1) are left out.
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
        let group_id = || GroupId(StrBytes::from_string(group.to_owned()));
        let response = self
            .on_coordinator(
                group,
                "OffsetFetch",
                |version| {
                    if version < 2 {
                        bail!(
                            "OffsetFetch v{version} cannot ask for all of a group's offsets (v2 can)"
                        );
                    }
                    // v8 batches groups: the group and its topics move into a list.
                    Ok(if version >= 8 {
                        OffsetFetchRequest::default().with_groups(vec![
                            OffsetFetchRequestGroup::default()
                                .with_group_id(group_id())
                                .with_topics(None),
                        ])
                    } else {
                        OffsetFetchRequest::default()
                            .with_group_id(group_id())
                            .with_topics(None)
                    })
                },
                |r| {
                    if r.groups.is_empty() {
                        r.error_code
                    } else {
                        r.groups[0].error_code
                    }
                },
            )
            .await?;
        let what = format!("group '{group}': OffsetFetch");
        let mut out = BTreeMap::new();
        let mut add = |topic: &str, partition: i32, offset: i64, code: i16| {
            if code != 0 {
                return Err(broker_error(
                    format!("{what}: topic '{topic}' partition {partition}"),
                    code,
                    None,
                ));
            }
            if offset >= 0 {
                out.insert((topic.to_owned(), partition), offset);
            }
            Ok(())
        };
        if let Some(g) = response.groups.first() {
            if g.error_code != 0 {
                return Err(broker_error(what, g.error_code, None));
            }
            for t in &g.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        } else {
            if response.error_code != 0 {
                return Err(broker_error(what, response.error_code, None));
            }
            for t in &response.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` for the group as an administrator does: generation -1 and no member
    /// id, which a coordinator accepts only while the group has no members. Fails naming every
    /// partition the coordinator refused.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> anyhow::Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), &offset) in offsets {
            by_topic.entry(topic.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(offset),
            );
        }
        let topics: Vec<OffsetCommitRequestTopic> = by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetCommitRequestTopic::default()
                    .with_name(cluster::topic_name(topic))
                    .with_partitions(partitions)
            })
            .collect();
        let response = self
            .on_coordinator(
                group,
                "OffsetCommit",
                |_| {
                    Ok(OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                        .with_generation_id_or_member_epoch(-1)
                        .with_member_id(StrBytes::default())
                        .with_topics(topics.clone()))
                },
                // A coordinator problem is answered for every partition alike.
                |r| {
                    r.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code)
                        .find(|&code| code != 0)
                        .unwrap_or(0)
                },
            )
            .await?;
        let refused: Vec<String> = response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code != 0)
                    .map(move |p| {
                        format!(
                            "{}:{} {}",
                            t.name.0,
                            p.partition_index,
                            error_name(p.error_code)
                        )
                    })
            })
            .collect();
        if !refused.is_empty() {
            bail!(
                "group '{group}': OffsetCommit refused for {}",
                refused.join(", ")
            );
        }
        Ok(())
    }

    /// Deletes the group on its coordinator; returns the code answered for it (0 = deleted,
    /// NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, ...).
    pub async fn delete_group(&mut self, group: &str) -> anyhow::Result<i16> {
        let response = self
            .on_coordinator(
                group,
                "DeleteGroups",
                |_| {
                    Ok(DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_owned()))]))
                },
                |r| r.results.first().map_or(0, |g| g.error_code),
            )
            .await?;
        response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .map(|r| r.error_code)
            .ok_or_else(|| anyhow!("group '{group}': DeleteGroups did not answer for it"))
    }
}

// Membership: what a consumer in a group sends (JoinGroup, SyncGroup, Heartbeat, OffsetFetch,
// OffsetCommit with its generation, LeaveGroup), and the consumer protocol's subscription,
// assignment and range assignor. `skein bench consume --group` is built on it.

/// The assignor a consumer names in JoinGroup for Kafka's `RangeAssignor`.
pub const RANGE_ASSIGNOR: &str = "range";

/// The ConsumerProtocolSubscription and ConsumerProtocolAssignment version written: v1 (topics
/// and owned partitions), which every Kafka consumer since 2.4 reads.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 1;

fn group_by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        out.entry(topic.as_str()).or_default().push(*partition);
    }
    out
}

/// A consumer's JoinGroup metadata: the version (int16), then a ConsumerProtocolSubscription.
pub fn encode_consumer_subscription(
    topics: &[String],
    owned: &[TopicPartition],
) -> anyhow::Result<Bytes> {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as Owned;
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(
            group_by_topic(owned)
                .into_iter()
                .map(|(t, ps)| {
                    Owned::default()
                        .with_topic(cluster::topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let mut buf = BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    subscription.encode(&mut buf, CONSUMER_PROTOCOL_VERSION)?;
    Ok(buf.freeze())
}

/// The topics a consumer subscribes to, from its JoinGroup metadata (any version: newer ones only
/// add fields at the end).
pub fn decode_consumer_subscription(bytes: &Bytes) -> anyhow::Result<Vec<String>> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        bail!("{} byte(s), too short for a version", buf.remaining());
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("version {version}");
    }
    let version = version.min(ConsumerProtocolSubscription::VERSIONS.max);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version)?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// A member's assignment as the leader sends it in SyncGroup: the version (int16), then a
/// ConsumerProtocolAssignment. [`decode_consumer_assignment`] reads it back.
pub fn encode_consumer_assignment(partitions: &[TopicPartition]) -> anyhow::Result<Bytes> {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        group_by_topic(partitions)
            .into_iter()
            .map(|(t, ps)| {
                Assigned::default()
                    .with_topic(cluster::topic_name(t))
                    .with_partitions(ps)
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    assignment.encode(&mut buf, CONSUMER_PROTOCOL_VERSION)?;
    Ok(buf.freeze())
}

/// Kafka's `RangeAssignor`: per topic, its subscribers sorted by member id share the partitions
/// in contiguous ranges, the first `partitions % subscribers` of them one more. Every member gets
/// an entry (maybe empty); topics without a partition count are skipped.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> = subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    for (topic, &count) in partition_counts {
        // BTreeMap keys: already sorted by member id.
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per_member, extra) = (count / n, count % n);
        for (i, member) in subscribers.into_iter().enumerate() {
            let i = i as i32;
            let start = per_member * i + i.min(extra);
            let length = per_member + i32::from(i < extra);
            let assigned = out.get_mut(member).expect("every member has an entry");
            assigned.extend((start..start + length).map(|p| (topic.clone(), p)));
        }
    }
    out
}

/// An OffsetCommit request: offsets of `(topic, partition)`s for a member of `generation`
/// (-1 and an empty member id: a commit from outside the group, which needs it Empty).
pub fn offset_commit_request(
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
) -> OffsetCommitRequest {
    let mut by_topic: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in offsets {
        by_topic.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset),
        );
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(cluster::topic_name(&topic))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// The partitions an OffsetCommit response refused, with their codes.
pub fn refused_commits(response: &OffsetCommitResponse) -> Vec<(TopicPartition, i16)> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.error_code != 0)
                .map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect()
}

/// What a coordinator answered a member instead of what it asked for: Kafka's error code. Most
/// mean "join again" ([`MemberError::must_rejoin`]); the caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberError(pub i16);

impl MemberError {
    pub fn error(self) -> Option<ResponseError> {
        ResponseError::try_from_code(self.0)
    }

    /// The group moved on without this member (a rebalance, a newer generation, or it was
    /// dropped): it must join again (with its id, unless UNKNOWN_MEMBER_ID took it away).
    pub fn must_rejoin(self) -> bool {
        matches!(
            self.error(),
            Some(
                ResponseError::RebalanceInProgress
                    | ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId
                    | ResponseError::MemberIdRequired
            )
        )
    }

    /// The coordinator is loading, moved or unknown: find it again and retry.
    pub fn coordinator_not_ready(self) -> bool {
        !matches!(retry_of(self.0), Retry::No)
    }
}

impl std::fmt::Display for MemberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_name(self.0))
    }
}

/// A member's answer: `Err(MemberError)` is the coordinator's refusal; the outer `Err` a failed
/// connection or a malformed answer.
pub type MemberAnswer<T> = anyhow::Result<Result<T, MemberError>>;

/// What JoinGroup answered a member that got in.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub protocol: String,
    pub leader: String,
    /// For the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A consumer's membership of a group, on its own connection to the group's coordinator, one
/// request at a time (as a Kafka consumer talks to its coordinator).
pub struct GroupMember {
    conn: Connection,
    group: GroupId,
    /// Empty until the coordinator hands one out.
    pub member_id: String,
    /// The generation of the last successful JoinGroup, -1 before.
    pub generation: i32,
    /// The protocol the last JoinGroup chose (SyncGroup v5 names it).
    protocol: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
}

impl GroupMember {
    /// Connects to the group's coordinator at `addr`. JoinGroup waits up to
    /// `rebalance_timeout_ms` for the others; the coordinator drops a member that is silent for
    /// `session_timeout_ms`.
    pub async fn connect(
        addr: &str,
        group: &str,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
    ) -> anyhow::Result<GroupMember> {
        let conn = Connection::connect(addr).await?;
        Ok(GroupMember {
            conn,
            group: GroupId(StrBytes::from_string(group.to_owned())),
            member_id: String::new(),
            generation: -1,
            protocol: String::new(),
            session_timeout_ms,
            rebalance_timeout_ms,
        })
    }

    /// Opens a new connection to the coordinator at `addr` (after NOT_COORDINATOR, or when it
    /// moved), keeping the member id and generation.
    pub async fn reconnect(&mut self, addr: &str) -> anyhow::Result<()> {
        self.conn = Connection::connect(addr).await?;
        Ok(())
    }

    fn what(&self, api: &str) -> String {
        format!("group '{}': {api}", self.group.0)
    }

    /// JoinGroup as a consumer (protocol type "consumer") offering `protocols` (name and
    /// metadata, in order of preference). MEMBER_ID_REQUIRED (JoinGroup v4 and later) is handled
    /// here: the member takes the id it was given and joins again at once. UNKNOWN_MEMBER_ID
    /// clears the member id before it is returned, so the next join starts afresh.
    pub async fn join(&mut self, protocols: &[(String, Bytes)]) -> MemberAnswer<Joined> {
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        let version = version_of::<JoinGroupRequest>(&self.conn)?;
        let protocols: Vec<JoinGroupRequestProtocol> = protocols
            .iter()
            .map(|(name, metadata)| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_metadata(metadata.clone())
            })
            .collect();
        // The coordinator answers once the rebalance completes: give it the rebalance timeout.
        let timeout = self.conn.timeout;
        self.conn.timeout = Duration::from_millis(self.rebalance_timeout_ms.max(0) as u64)
            + Duration::from_secs(10);
        let result = self.join_with(version, protocols).await;
        self.conn.timeout = timeout;
        result
    }

    async fn join_with(
        &mut self,
        version: i16,
        protocols: Vec<kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol>,
    ) -> MemberAnswer<Joined> {
        // One MEMBER_ID_REQUIRED per join is the protocol; a second one is the broker's problem.
        for _ in 0..2 {
            let request = JoinGroupRequest::default()
                .with_group_id(self.group.clone())
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(self.rebalance_timeout_ms)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(protocols.clone());
            let response = self
                .conn
                .send_version(request, version)
                .await
                .with_context(|| self.what("JoinGroup"))?;
            let error = MemberError(response.error_code);
            match error.error() {
                None => {
                    self.member_id = response.member_id.to_string();
                    self.generation = response.generation_id;
                    self.protocol = response
                        .protocol_name
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    return Ok(Ok(Joined {
                        generation: response.generation_id,
                        protocol: self.protocol.clone(),
                        leader: response.leader.to_string(),
                        members: response
                            .members
                            .into_iter()
                            .map(|m| (m.member_id.to_string(), m.metadata))
                            .collect(),
                    }));
                }
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = response.member_id.to_string();
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    return Ok(Err(error));
                }
                Some(_) => return Ok(Err(error)),
            }
        }
        Ok(Err(MemberError(ResponseError::MemberIdRequired.code())))
    }

    /// SyncGroup for the generation joined last: the leader hands in every member's
    /// assignment, the others an empty list. Returns this member's assignment.
    pub async fn sync(&mut self, assignments: Vec<(String, Bytes)>) -> MemberAnswer<Bytes> {
        use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
        let version = version_of::<SyncGroupRequest>(&self.conn)?;
        let request = SyncGroupRequest::default()
            .with_group_id(self.group.clone())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE)))
            .with_protocol_name(Some(StrBytes::from_string(self.protocol.clone())))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(member, assignment)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(member))
                            .with_assignment(assignment)
                    })
                    .collect(),
            );
        // The coordinator holds a follower's SyncGroup until the leader's arrives.
        let timeout = self.conn.timeout;
        self.conn.timeout = Duration::from_millis(self.rebalance_timeout_ms.max(0) as u64)
            + Duration::from_secs(10);
        let response = self.conn.send_version(request, version).await;
        self.conn.timeout = timeout;
        let response = response.with_context(|| self.what("SyncGroup"))?;
        Ok(match response.error_code {
            0 => Ok(response.assignment),
            code => Err(MemberError(code)),
        })
    }

    /// Heartbeat for the generation joined last.
    pub async fn heartbeat(&mut self) -> MemberAnswer<()> {
        let version = version_of::<HeartbeatRequest>(&self.conn)?;
        let request = HeartbeatRequest::default()
            .with_group_id(self.group.clone())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = self
            .conn
            .send_version(request, version)
            .await
            .with_context(|| self.what("Heartbeat"))?;
        Ok(match response.error_code {
            0 => Ok(()),
            code => Err(MemberError(code)),
        })
    }

    /// The group's committed offsets of some of a topic's partitions; partitions without one
    /// are left out.
    pub async fn committed(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> MemberAnswer<BTreeMap<i32, i64>> {
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestTopic, OffsetFetchRequestTopics,
        };
        let version = version_of::<OffsetFetchRequest>(&self.conn)?;
        let request = if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(self.group.clone())
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(cluster::topic_name(topic))
                    .with_partition_indexes(partitions.to_vec())]))])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(self.group.clone())
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(cluster::topic_name(topic))
                    .with_partition_indexes(partitions.to_vec())]))
        };
        let response = self
            .conn
            .send_version(request, version)
            .await
            .with_context(|| self.what("OffsetFetch"))?;
        let mut out = BTreeMap::new();
        let mut first_error = 0;
        let mut add = |offset: i64, code: i16, partition: i32| {
            if code != 0 && first_error == 0 {
                first_error = code;
            }
            if code == 0 && offset >= 0 {
                out.insert(partition, offset);
            }
        };
        if let Some(g) = response.groups.first() {
            add(-1, g.error_code, -1);
            for p in g.topics.iter().flat_map(|t| &t.partitions) {
                add(p.committed_offset, p.error_code, p.partition_index);
            }
        } else {
            add(-1, response.error_code, -1);
            for p in response.topics.iter().flat_map(|t| &t.partitions) {
                add(p.committed_offset, p.error_code, p.partition_index);
            }
        }
        Ok(match first_error {
            0 => Ok(out),
            code => Err(MemberError(code)),
        })
    }

    /// OffsetCommit with this member's id and generation. The first partition refused gives
    /// the error.
    pub async fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> MemberAnswer<()> {
        let request = offset_commit_request(
            &self.group.0,
            self.generation,
            &self.member_id,
            offsets.iter().map(|(tp, &o)| (tp.clone(), o)),
        );
        let version = version_of::<OffsetCommitRequest>(&self.conn)?;
        let response = self
            .conn
            .send_version(request, version)
            .await
            .with_context(|| self.what("OffsetCommit"))?;
        Ok(match refused_commits(&response).first() {
            None => Ok(()),
            Some((_, code)) => Err(MemberError(*code)),
        })
    }

    /// LeaveGroup: the group rebalances without waiting out this member's session.
    pub async fn leave(&mut self) -> MemberAnswer<()> {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        let version = version_of::<LeaveGroupRequest>(&self.conn)?;
        let member_id = StrBytes::from_string(self.member_id.clone());
        // v3 and later name members in a list (a batch); before, the member id alone.
        let request = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(self.group.clone())
                .with_members(vec![MemberIdentity::default().with_member_id(member_id)])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(self.group.clone())
                .with_member_id(member_id)
        };
        let response = self
            .conn
            .send_version(request, version)
            .await
            .with_context(|| self.what("LeaveGroup"))?;
        let code = match response.error_code {
            0 => response.members.first().map_or(0, |m| m.error_code),
            code => code,
        };
        Ok(match code {
            0 => Ok(()),
            code => Err(MemberError(code)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::BufMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
    use kafka_protocol::messages::describe_groups_response::DescribedGroup;
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, DescribeGroupsResponse, FindCoordinatorResponse,
        RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::Encodable;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A broker that answers ApiVersions, FindCoordinator (naming itself) and DescribeGroups
    /// with error codes from a script, and counts what it is asked.
    struct FakeCoordinator {
        addr: String,
        find_calls: Arc<AtomicUsize>,
        describe_calls: Arc<AtomicUsize>,
    }

    type Script = Arc<dyn Fn(usize) -> i16 + Send + Sync>;

    impl FakeCoordinator {
        /// `find_code(n)` and `describe_code(n)` are the codes of the n-th (from 0) answers.
        async fn start(
            find_code: impl Fn(usize) -> i16 + Send + Sync + 'static,
            describe_code: impl Fn(usize) -> i16 + Send + Sync + 'static,
        ) -> FakeCoordinator {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("local addr").port();
            let fake = FakeCoordinator {
                addr: format!("127.0.0.1:{port}"),
                find_calls: Arc::default(),
                describe_calls: Arc::default(),
            };
            let (find_calls, describe_calls) =
                (fake.find_calls.clone(), fake.describe_calls.clone());
            let (find_code, describe_code): (Script, Script) =
                (Arc::new(find_code), Arc::new(describe_code));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (find_calls, describe_calls) = (find_calls.clone(), describe_calls.clone());
                    let (find_code, describe_code) = (find_code.clone(), describe_code.clone());
                    tokio::spawn(async move {
                        let _ = serve(
                            stream,
                            port,
                            (find_calls, find_code),
                            (describe_calls, describe_code),
                        )
                        .await;
                    });
                }
            });
            fake
        }
    }

    async fn serve(
        mut stream: TcpStream,
        port: u16,
        (find_calls, find_code): (Arc<AtomicUsize>, Script),
        (describe_calls, describe_code): (Arc<AtomicUsize>, Script),
    ) -> anyhow::Result<()> {
        loop {
            let len = stream.read_i32().await?;
            let mut body = vec![0; len as usize];
            stream.read_exact(&mut body).await?;
            let mut body = Bytes::from(body);
            let api = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]]))
                .map_err(|_| anyhow!("unknown api key"))?;
            let version = i16::from_be_bytes([body[2], body[3]]);
            let header = RequestHeader::decode(&mut body, api.request_header_version(version))?;
            let mut out = bytes::BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, api.response_header_version(version))?;
            match api {
                ApiKey::ApiVersions => {
                    let served = [
                        (ApiKey::ApiVersions, 3),
                        (ApiKey::FindCoordinator, 3),
                        (ApiKey::DescribeGroups, 5),
                    ];
                    ApiVersionsResponse::default()
                        .with_api_keys(
                            served
                                .into_iter()
                                .map(|(key, max)| {
                                    ApiVersion::default()
                                        .with_api_key(key as i16)
                                        .with_max_version(max)
                                })
                                .collect(),
                        )
                        .encode(&mut out, version)?
                }
                ApiKey::FindCoordinator => {
                    let n = find_calls.fetch_add(1, Ordering::SeqCst);
                    FindCoordinatorResponse::default()
                        .with_error_code(find_code(n))
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port.into())
                        .encode(&mut out, version)?
                }
                ApiKey::DescribeGroups => {
                    let n = describe_calls.fetch_add(1, Ordering::SeqCst);
                    let request = DescribeGroupsRequest::decode(&mut body, version)?;
                    DescribeGroupsResponse::default()
                        .with_groups(
                            request
                                .groups
                                .into_iter()
                                .map(|g| {
                                    DescribedGroup::default()
                                        .with_group_id(g)
                                        .with_error_code(describe_code(n))
                                        .with_group_state(StrBytes::from_static_str("Stable"))
                                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                                })
                                .collect(),
                        )
                        .encode(&mut out, version)?
                }
                other => bail!("the fake coordinator was sent {other:?}"),
            }
            stream.write_i32(out.len() as i32).await?;
            stream.write_all(&out).await?;
        }
    }

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_loading_moved_or_unknown_coordinator_is_retried() {
        // FindCoordinator: not available once. DescribeGroups: loading twice, then "not the
        // coordinator", which sends us to FindCoordinator again.
        let fake = FakeCoordinator::start(
            |n| if n == 0 { 15 } else { 0 },
            |n| [14, 14, 16].get(n).copied().unwrap_or(0),
        )
        .await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(20, FAST);
        let group = admin.describe_group("g").await.unwrap();
        assert_eq!(group.state, "Stable");
        assert_eq!(fake.find_calls.load(Ordering::SeqCst), 3);
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 4);
        assert_eq!(admin.coordinator_of("g").unwrap().node_id, 1);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let fake = FakeCoordinator::start(|_| 0, |_| 14).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(5, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "group 'g': DescribeGroups: still COORDINATOR_LOAD_IN_PROGRESS after 5 attempts \
             1ms apart"
        );
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 5);

        let fake = FakeCoordinator::start(|_| 15, |_| 0).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(3, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("still COORDINATOR_NOT_AVAILABLE after 3 attempts"),
            "{error}"
        );
        assert_eq!(fake.find_calls.load(Ordering::SeqCst), 3);
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn other_errors_are_answers() {
        // GROUP_AUTHORIZATION_FAILED is final; GROUP_ID_NOT_FOUND means a group that is not there.
        let fake = FakeCoordinator::start(|_| 0, |_| 30).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(20, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "group 'g': DescribeGroups: GROUP_AUTHORIZATION_FAILED"
        );
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 1);

        let fake = FakeCoordinator::start(|_| 0, |_| 69).await;
        let mut admin = GroupAdmin::connect(&fake.addr).await.unwrap();
        let group = admin.describe_group("g").await.unwrap();
        assert!(!group.exists() && group.is_inactive(), "{group:?}");
    }

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(14), "COORDINATOR_LOAD_IN_PROGRESS");
        assert_eq!(error_name(16), "NOT_COORDINATOR");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(69), "GROUP_ID_NOT_FOUND");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE(9999)");
    }

    fn encoded_assignment(version: i16, topics: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(t, ps)| {
                    AssignedTopic::default()
                        .with_topic(cluster::topic_name(t))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(version);
        assignment
            .encode(&mut buf, version.min(3))
            .expect("encode an assignment");
        buf.freeze()
    }

    #[test]
    fn range_assignment_is_kafkas() {
        let subscriptions: BTreeMap<String, Vec<String>> = [
            ("c", vec!["t"]),
            ("a", vec!["t", "u"]),
            ("b", vec!["t", "u"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(m, ts)| (m.to_owned(), ts.into_iter().map(str::to_owned).collect()))
        .collect();
        let counts = BTreeMap::from([("t".to_owned(), 7), ("u".to_owned(), 1)]);
        let assigned = range_assign(&subscriptions, &counts);
        let of = |m: &str| assigned[m].clone();
        let tp = |t: &str, ps: &[i32]| ps.iter().map(|&p| (t.to_owned(), p)).collect::<Vec<_>>();
        // 7 partitions over a, b, c: 3, 2, 2, in member id order; u's one partition goes to a.
        assert_eq!(of("a"), [tp("t", &[0, 1, 2]), tp("u", &[0])].concat());
        assert_eq!(of("b"), tp("t", &[3, 4]));
        assert_eq!(of("c"), tp("t", &[5, 6]));
        assert_eq!(
            of("d"),
            Vec::new(),
            "a member subscribed to nothing gets nothing"
        );
        // More members than partitions: the last ones get none.
        let many: BTreeMap<String, Vec<String>> = (0..5)
            .map(|i| (format!("m{i}"), vec!["u".to_owned()]))
            .collect();
        let assigned = range_assign(&many, &counts);
        assert_eq!(assigned["m0"], tp("u", &[0]));
        assert!((1..5).all(|i| assigned[&format!("m{i}")].is_empty()));
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["orders".to_owned(), "audit".to_owned()];
        let owned = vec![("orders".to_owned(), 1), ("orders".to_owned(), 0)];
        let bytes = encode_consumer_subscription(&topics, &owned).unwrap();
        assert_eq!(&bytes[..2], &CONSUMER_PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(decode_consumer_subscription(&bytes).unwrap(), topics);
        // A v0 subscription (topics and user data only), as older clients send it.
        let mut v0 = bytes::BytesMut::new();
        v0.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .encode(&mut v0, 0)
            .unwrap();
        assert_eq!(
            decode_consumer_subscription(&v0.freeze()).unwrap(),
            vec!["t".to_owned()]
        );
        assert!(decode_consumer_subscription(&Bytes::from_static(&[0])).is_err());

        let partitions = vec![
            ("b".to_owned(), 2),
            ("a".to_owned(), 0),
            ("b".to_owned(), 1),
        ];
        let bytes = encode_consumer_assignment(&partitions).unwrap();
        let mut sorted = partitions.clone();
        sorted.sort();
        assert_eq!(decode_consumer_assignment(&bytes).unwrap(), sorted);
    }

    #[test]
    fn member_errors_that_mean_join_again() {
        for code in [27, 22, 25, 79] {
            assert!(MemberError(code).must_rejoin(), "{}", MemberError(code));
        }
        assert!(!MemberError(30).must_rejoin());
        assert!(MemberError(14).coordinator_not_ready());
        assert!(MemberError(16).coordinator_not_ready());
        assert!(!MemberError(27).coordinator_not_ready());
        assert_eq!(MemberError(27).to_string(), "REBALANCE_IN_PROGRESS");
    }

    #[test]
    fn consumer_assignments_decode_sorted() {
        for version in [0, 1, 3] {
            let bytes = encoded_assignment(version, &[("orders", &[2, 0]), ("audit", &[1])]);
            assert_eq!(
                decode_consumer_assignment(&bytes).unwrap(),
                vec![
                    ("audit".to_owned(), 1),
                    ("orders".to_owned(), 0),
                    ("orders".to_owned(), 2)
                ],
                "version {version}"
            );
        }
        // A version newer than we know is read as the newest we know.
        let bytes = encoded_assignment(7, &[("t", &[0])]);
        assert_eq!(
            decode_consumer_assignment(&bytes).unwrap(),
            vec![("t".to_owned(), 0)]
        );
        assert!(decode_consumer_assignment(&Bytes::new())
            .unwrap()
            .is_empty());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }
}

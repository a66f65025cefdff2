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

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, ListGroupsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, Message, Request, StrBytes};
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

//! [`GroupMember`]: a consumer in a group, with the consumer protocol's encodings and Kafka's
//! range assignor (see the module above).

use super::*;

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

//! [`GroupAdmin`]: a group as an administrator sees it (see the module above).

use super::*;

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

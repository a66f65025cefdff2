//! Finding one's way around a cluster from a bootstrap list: the first broker that answers, a
//! topic's partitions and their leaders' addresses (Metadata), topic creation (CreateTopics) and
//! log offsets (ListOffsets). Used before the bench's connections start; one request at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Connection;

/// ListOffsets timestamp for the log start offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the log end offset (the high watermark for a plain consumer).
pub const LATEST: i64 = -1;

/// One partition and the broker that leads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader_id: i32,
}

/// What a client needs to send to a topic: every partition's leader and every broker's address.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub topic: String,
    pub partitions: Vec<PartitionLeader>,
    /// Broker id -> `host:port`.
    pub brokers: BTreeMap<i32, String>,
}

impl TopicLayout {
    /// `host:port` of a broker, or an error naming it.
    pub fn broker_addr(&self, broker_id: i32) -> anyhow::Result<&str> {
        self.brokers
            .get(&broker_id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("metadata names leader {broker_id} but lists no such broker"))
    }

    /// Partitions grouped by leader.
    pub fn by_leader(&self) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &self.partitions {
            out.entry(p.leader_id).or_default().push(p.partition);
        }
        out
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Connects to the first address of a comma-separated bootstrap list that answers.
pub async fn connect_bootstrap(bootstrap: &str) -> anyhow::Result<Connection> {
    let mut last_error = None;
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Connection::connect(addr).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("the bootstrap list '{bootstrap}' is empty")))
        .with_context(|| format!("no broker of '{bootstrap}' answered"))
}

/// The topic's partitions and leaders. Fails if the topic is unknown or a partition has no
/// leader right now (see [`wait_for_topic`] to wait that out). With `auto_create`, the request
/// lets the broker create a missing topic, as a Kafka producer's metadata request does (and as
/// brokers without CreateTopics, such as librdkafka's mock cluster, expect).
pub async fn topic_layout(
    conn: &mut Connection,
    topic: &str,
    auto_create: bool,
) -> anyhow::Result<TopicLayout> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(auto_create);
    let response = conn.send(request).await?;
    let brokers = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let t = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| anyhow!("topic '{topic}': not in the metadata response"))?;
    if let Some(error) = ResponseError::try_from_code(t.error_code) {
        bail!("topic '{topic}': {error:?}");
    }
    if t.partitions.is_empty() {
        bail!("topic '{topic}' has no partitions");
    }
    let mut partitions = Vec::with_capacity(t.partitions.len());
    for p in &t.partitions {
        if let Some(error) = ResponseError::try_from_code(p.error_code) {
            bail!("topic '{topic}' partition {}: {error:?}", p.partition_index);
        }
        if p.leader_id.0 < 0 {
            bail!("topic '{topic}' partition {}: no leader", p.partition_index);
        }
        partitions.push(PartitionLeader {
            partition: p.partition_index,
            leader_id: p.leader_id.0,
        });
    }
    partitions.sort_by_key(|p| p.partition);
    let layout = TopicLayout {
        topic: topic.to_owned(),
        partitions,
        brokers,
    };
    for p in &layout.partitions {
        layout.broker_addr(p.leader_id)?;
    }
    Ok(layout)
}

/// [`topic_layout`], retried until every partition has a leader or `timeout` passes (a topic
/// just created takes a moment to get leaders).
pub async fn wait_for_topic(
    conn: &mut Connection,
    topic: &str,
    auto_create: bool,
    timeout: Duration,
) -> anyhow::Result<TopicLayout> {
    let deadline = Instant::now() + timeout;
    loop {
        match topic_layout(conn, topic, auto_create).await {
            Ok(layout) => return Ok(layout),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("topic '{topic}' not ready after {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits (until `timeout`) until every leader in `layout` names itself leader of its partitions
/// in its own metadata: the broker a client bootstraps from can hear of a new topic's leaders
/// before the leaders themselves have taken over, and a produce sent in between is refused with
/// NOT_LEADER_OR_FOLLOWER.
pub async fn wait_for_leaders(layout: &TopicLayout, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let leaders: BTreeSet<i32> = layout.partitions.iter().map(|p| p.leader_id).collect();
    for leader in leaders {
        let addr = layout.broker_addr(leader)?.to_owned();
        let led: BTreeSet<i32> = layout
            .partitions
            .iter()
            .filter(|p| p.leader_id == leader)
            .map(|p| p.partition)
            .collect();
        let mut conn = Connection::connect(&addr).await?;
        loop {
            let seen = topic_layout(&mut conn, &layout.topic, false).await;
            let agrees = seen.as_ref().is_ok_and(|l| {
                led.iter().all(|p| {
                    l.partitions
                        .iter()
                        .any(|q| q.partition == *p && q.leader_id == leader)
                })
            });
            if agrees {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "broker {leader} ({addr}) does not lead partitions {led:?} of '{}' after {timeout:?}",
                    layout.topic
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Creates a topic. Returns false if it already existed (not an error for the bench).
pub async fn create_topic(
    conn: &mut Connection,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> anyhow::Result<bool> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)]);
    let response = conn.send(request).await?;
    for t in &response.topics {
        match ResponseError::try_from_code(t.error_code) {
            None => {}
            Some(ResponseError::TopicAlreadyExists) => return Ok(false),
            Some(error) => match &t.error_message {
                Some(m) => bail!("creating topic '{topic}': {error:?}: {m}"),
                None => bail!("creating topic '{topic}': {error:?}"),
            },
        }
    }
    Ok(true)
}

/// The offsets of `partitions` at `timestamp` ([`EARLIEST`] or [`LATEST`]), asked of `conn`,
/// which must lead them all.
pub async fn list_offsets(
    conn: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response = conn.send(request).await?;
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if let Some(error) = ResponseError::try_from_code(p.error_code) {
                bail!(
                    "topic '{topic}' partition {}: ListOffsets: {error:?}",
                    p.partition_index
                );
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !out.contains_key(p) {
            bail!("topic '{topic}' partition {p}: missing from the ListOffsets response");
        }
    }
    Ok(out)
}

/// [`list_offsets`] for every partition of the layout, each asked of its leader.
pub async fn all_offsets(
    layout: &TopicLayout,
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (leader, partitions) in layout.by_leader() {
        let mut conn = Connection::connect(layout.broker_addr(leader)?).await?;
        out.extend(list_offsets(&mut conn, &layout.topic, &partitions, timestamp).await?);
    }
    Ok(out)
}

//! The cluster view every shard holds a copy of: live brokers, the controller, topics with their
//! partitions' leaders and ISRs, each topic's settings, and the partition -> shard placement table.
//!
//! Built by the control thread from ZooKeeper and sent whole to every shard (an `Arc`, replaced, never
//! mutated), so a shard answers Metadata and routes a partition's work without asking anyone. A
//! leaf beside `config`: the shards, the request handlers and the control thread all read it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;

use crate::config::TopicConfig;

/// A topic id as Kafka writes it in ZooKeeper and in `partition.metadata`: URL-safe base64
/// without padding.
pub fn encode_topic_id(id: uuid::Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_topic_id(text: &str) -> Option<uuid::Uuid> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    uuid::Uuid::from_slice(&bytes).ok()
}

/// The most partitions a topic may have: CreateTopics refuses more, and a broker takes no
/// partition state beyond it.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: u16,
    /// Kafka's broker epoch: the creation zxid of its registration, new with every start (and
    /// every new ZooKeeper session), so requests meant for an earlier run can be told apart.
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// The version of the partition's state znode (Kafka's zkVersion, the partition epoch): it
    /// grows with every write, so of two states of one leader epoch the higher is newer.
    pub version: i32,
}

impl PartitionState {
    /// A state not known yet: no replicas, no leader, older than any written one.
    pub fn unknown() -> PartitionState {
        PartitionState {
            replicas: Vec::new(),
            leader: -1,
            leader_epoch: -1,
            isr: Vec::new(),
            version: -1,
        }
    }

    /// Whether `self` is a later state of the partition than `other`: a higher leader epoch, or
    /// the same with a later znode version (an ISR change).
    pub fn newer_than(&self, other: &PartitionState) -> bool {
        (self.leader_epoch, self.version) > (other.leader_epoch, other.version)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: uuid::Uuid,
    /// Index = partition number.
    pub partitions: Vec<PartitionState>,
    pub config: TopicConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Grows with every snapshot the control thread sends.
    pub version: u64,
    /// `/cluster/id`, created by the first broker to start against the ensemble.
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, Arc<TopicMetadata>>,
    /// Which shard of this broker owns each partition this broker hosts.
    pub placement: HashMap<TopicPartition, usize>,
}

impl Metadata {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    pub fn shard_of(&self, tp: &TopicPartition) -> Option<usize> {
        self.placement.get(tp).copied()
    }

    /// The shard to send a partition's client requests to: only where `broker_id` leads it.
    pub fn leader_shard(&self, tp: &TopicPartition, broker_id: i32) -> Option<usize> {
        let state = self.partition(&tp.topic, tp.partition)?;
        (state.leader == broker_id)
            .then(|| self.shard_of(tp))
            .flatten()
    }
}

/// Assigns every partition this broker hosts to a shard, keeping earlier assignments (moving a
/// partition between shards means closing and reopening its log) and balancing partition counts.
pub fn place_partitions(
    previous: &HashMap<TopicPartition, usize>,
    hosted: impl IntoIterator<Item = TopicPartition>,
    shard_count: usize,
) -> HashMap<TopicPartition, usize> {
    assert!(shard_count > 0);
    let mut hosted: Vec<TopicPartition> = hosted.into_iter().collect();
    hosted.sort();
    let mut placement = HashMap::with_capacity(hosted.len());
    let mut load = vec![0usize; shard_count];
    let mut unplaced = Vec::new();
    for tp in hosted {
        match previous.get(&tp) {
            Some(&shard) if shard < shard_count => {
                load[shard] += 1;
                placement.insert(tp, shard);
            }
            _ => unplaced.push(tp),
        }
    }
    for tp in unplaced {
        let (shard, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (**n, *i))
            .expect("shard_count > 0");
        load[shard] += 1;
        placement.insert(tp, shard);
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_round_trip_in_kafkas_spelling() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let text = encode_topic_id(id);
        assert_eq!(text.len(), 22, "16 bytes of unpadded base64");
        assert_eq!(decode_topic_id(&text), Some(id));
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    #[test]
    fn placement_balances_and_is_stable() {
        let first = place_partitions(&HashMap::new(), (0..5).map(|p| tp("a", p)), 2);
        let counts = |m: &HashMap<TopicPartition, usize>| {
            (0..2)
                .map(|s| m.values().filter(|v| **v == s).count())
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&first), vec![3, 2]);
        let second = place_partitions(
            &first,
            (0..5).map(|p| tp("a", p)).chain((0..3).map(|p| tp("b", p))),
            2,
        );
        for (k, v) in &first {
            assert_eq!(second[k], *v, "existing partitions keep their shard");
        }
        assert_eq!(counts(&second), vec![4, 4]);
    }
}

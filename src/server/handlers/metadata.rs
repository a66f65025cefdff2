//! Metadata: brokers, controller, topics and partition leaders from the shard's snapshot. Unknown
//! topics are created when the client allows it and `auto.create.topics.enable` is on, as in Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, RequestHeader, TopicName,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::metadata::TopicMetadata;
use crate::shard::CreateTopicSpec;
use crate::shard::Shard;

/// Kafka's answer to `include_*_authorized_operations` without an authorizer: every operation
/// the resource type supports, as a bit field of ACL operation codes. Topic: READ(3), WRITE(4),
/// CREATE(5), DELETE(6), ALTER(7), DESCRIBE(8), DESCRIBE_CONFIGS(10), ALTER_CONFIGS(11).
const TOPIC_OPERATIONS: i32 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;
/// Cluster: CREATE(5), ALTER(7), DESCRIBE(8), CLUSTER_ACTION(9), DESCRIBE_CONFIGS(10),
/// ALTER_CONFIGS(11), IDEMPOTENT_WRITE(12).
const CLUSTER_OPERATIONS: i32 = 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12;
/// "Not asked for" (Kafka's Int.MinValue).
const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let requested: Option<Vec<String>> = match request.topics {
        // In v0 there is no null: an empty list asks for every topic.
        Some(topics) if topics.is_empty() && header.request_api_version == 0 => None,
        topics => topics.map(|topics| {
            topics
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect()
        }),
    };
    // Before v4 the field did not exist and Kafka always auto-created.
    let allow_create = header.request_api_version < 4 || request.allow_auto_topic_creation;
    let mut creation_errors = BTreeMap::new();
    if let Some(names) = &requested {
        if allow_create && shard.config.auto_create_topics_enable {
            let metadata = shard.metadata();
            // `__consumer_offsets` is made by FindCoordinator, with its own settings.
            for name in names
                .iter()
                .filter(|n| metadata.topic(n).is_none() && !crate::group::is_internal(n))
            {
                let spec = CreateTopicSpec {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: BTreeMap::new(),
                    configs: BTreeMap::new(),
                    validate_only: false,
                    internal: false,
                };
                if let Err(e) = shard.control.create_topic(spec).await {
                    if e.code != ResponseError::TopicAlreadyExists {
                        creation_errors.insert(name.clone(), e.code);
                    }
                }
            }
        }
    }

    let version = header.request_api_version;
    // The flags exist from v8 (topic) and v8-v10 (cluster); kafka-protocol decodes them as
    // false in versions without them.
    let topic_operations = if request.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_ASKED
    };
    let metadata = shard.metadata();
    let brokers = metadata
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port as i32)
        })
        .collect();
    let topics = match requested {
        None => metadata
            .topics
            .values()
            .map(|t| describe_topic(t, topic_operations))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| match metadata.topic(name) {
                Some(topic) => describe_topic(topic, topic_operations),
                None => MetadataResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_error_code(
                        creation_errors
                            .get(name)
                            .copied()
                            .unwrap_or(ResponseError::UnknownTopicOrPartition)
                            .code(),
                    ),
            })
            .collect(),
    };
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&metadata.cluster_id)))
        .with_controller_id(BrokerId(metadata.controller_id))
        .with_topics(topics);
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response.with_cluster_authorized_operations(CLUSTER_OPERATIONS)
    } else {
        response
    }
}

fn describe_topic(topic: &TopicMetadata, authorized_operations: i32) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let error = if p.leader == -1 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&topic.name))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(crate::group::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(authorized_operations)
}

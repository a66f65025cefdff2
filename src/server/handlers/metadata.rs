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
use crate::cluster::control::CreateTopicSpec;
use crate::cluster::metadata::TopicMetadata;
use crate::shard::Shard;

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
            for name in names.iter().filter(|n| metadata.topic(n).is_none()) {
                let spec = CreateTopicSpec {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: BTreeMap::new(),
                    configs: BTreeMap::new(),
                    validate_only: false,
                };
                if let Err(e) = shard.control.create_topic(spec).await {
                    if e.code != ResponseError::TopicAlreadyExists {
                        creation_errors.insert(name.clone(), e.code);
                    }
                }
            }
        }
    }

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
            .map(|t| describe_topic(t))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| match metadata.topic(name) {
                Some(topic) => describe_topic(topic),
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
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&metadata.cluster_id)))
        .with_controller_id(BrokerId(metadata.controller_id))
        .with_topics(topics)
}

fn describe_topic(topic: &TopicMetadata) -> MetadataResponseTopic {
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
        .with_partitions(partitions)
}

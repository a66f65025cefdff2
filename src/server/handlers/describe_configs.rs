//! DescribeConfigs for topics (every topic-level setting, overridden or default) and for this
//! broker (the settings it runs with).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard::Shard;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

pub fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let metadata = shard.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |name: &str| {
                // Null or empty both mean "every setting", as Kafka's tools send either.
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
            };
            let entry = |name: &str, value: String, source: i8| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(name))
                    .with_value(Some(str_bytes(&value)))
                    .with_config_source(source);
                if header.request_api_version == 0 {
                    e = e.with_config_source(-1);
                }
                e
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => match metadata.topic(resource.resource_name.as_str()) {
                    Some(topic) => result.with_configs(
                        topic
                            .config
                            .describe()
                            .into_iter()
                            .filter(|(name, _, _)| wanted(name))
                            .map(|(name, value, is_default)| {
                                entry(
                                    name,
                                    value,
                                    if is_default {
                                        SOURCE_DEFAULT_CONFIG
                                    } else {
                                        SOURCE_TOPIC_CONFIG
                                    },
                                )
                            })
                            .collect(),
                    ),
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(str_bytes(&format!(
                            "topic '{}' does not exist",
                            resource.resource_name
                        )))),
                },
                RESOURCE_BROKER
                    if resource.resource_name.as_str() == shard.config.broker_id.to_string() =>
                {
                    let c = &shard.config;
                    let settings = [
                        ("broker.id", c.broker_id.to_string()),
                        ("log.dirs", c.log_dir.display().to_string()),
                        ("zookeeper.connect", c.zookeeper_connect.clone()),
                        ("num.partitions", c.num_partitions.to_string()),
                        (
                            "default.replication.factor",
                            c.default_replication_factor.to_string(),
                        ),
                        (
                            "auto.create.topics.enable",
                            c.auto_create_topics_enable.to_string(),
                        ),
                        ("delete.topic.enable", c.delete_topic_enable.to_string()),
                        (
                            "log.segment.bytes",
                            c.topic_defaults.segment_bytes.to_string(),
                        ),
                        (
                            "log.retention.ms",
                            c.topic_defaults.retention_ms.to_string(),
                        ),
                        (
                            "message.max.bytes",
                            c.topic_defaults.max_message_bytes.to_string(),
                        ),
                        (
                            "min.insync.replicas",
                            c.topic_defaults.min_insync_replicas.to_string(),
                        ),
                        (
                            "socket.request.max.bytes",
                            c.limits.socket_request_max_bytes.to_string(),
                        ),
                        (
                            "queued.max.request.bytes",
                            c.limits
                                .queued_max_request_bytes
                                .map_or(-1, |b| b as i64)
                                .to_string(),
                        ),
                        ("max.connections", c.limits.max_connections.to_string()),
                        (
                            "max.connections.per.ip",
                            c.limits.max_connections_per_ip.to_string(),
                        ),
                        (
                            "connections.max.idle.ms",
                            c.limits.connections_max_idle_ms.to_string(),
                        ),
                        (
                            "connections.max.stall.ms",
                            c.limits.connections_max_stall_ms.to_string(),
                        ),
                    ];
                    result.with_configs(
                        settings
                            .into_iter()
                            .filter(|(name, _)| wanted(name))
                            .map(|(name, value)| entry(name, value, SOURCE_STATIC_BROKER_CONFIG))
                            .collect(),
                    )
                }
                RESOURCE_BROKER => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "DescribeConfigs for another broker must go to that broker",
                    ))),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

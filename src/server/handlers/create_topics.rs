//! CreateTopics: validated and written to ZooKeeper by the control thread; answered once the new
//! topic's partitions are open on this broker.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard::Shard;
use crate::shard::{AdminError, CreateTopicSpec};

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let timeout = Duration::from_millis(request.timeout_ms.clamp(1, 600_000) as u64);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let spec = CreateTopicSpec {
            name: name.clone(),
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments: topic
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: topic
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect::<BTreeMap<_, _>>(),
            validate_only: request.validate_only,
            internal: false,
        };
        let outcome = futures::select! {
            r = futures::FutureExt::fuse(shard.control.create_topic(spec)) => r,
            _ = futures::FutureExt::fuse(glommio::timer::sleep(timeout)) => {
                Err(AdminError::new(ResponseError::RequestTimedOut, "topic creation did not finish within timeout_ms"))
            }
        };
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        match outcome {
            Ok(()) => {
                let metadata = shard.metadata();
                if let Some(created) = metadata.topic(&name) {
                    let replication = created
                        .partitions
                        .first()
                        .map_or(0, |p| p.replicas.len() as i16);
                    result = result
                        .with_topic_id(created.topic_id)
                        .with_num_partitions(created.partitions.len() as i32)
                        .with_replication_factor(replication);
                    // v5+ returns the topic's configs.
                    if header.request_api_version >= 5 {
                        let configs = created
                            .config
                            .describe()
                            .into_iter()
                            .map(|(name, value, is_default)| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(name))
                                    .with_value(Some(str_bytes(&value)))
                                    .with_config_source(if is_default { 5 } else { 1 })
                            })
                            .collect();
                        result = result.with_configs(Some(configs));
                    }
                } else {
                    result = result
                        .with_num_partitions(topic.num_partitions)
                        .with_replication_factor(topic.replication_factor);
                }
            }
            Err(e) => {
                result = result
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

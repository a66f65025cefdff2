//! DeleteTopics: queued under `/admin/delete_topics` and carried out by the controller; the
//! partitions' data is removed by the shards that own them.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader, TopicName,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard::AdminError;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let timeout = Duration::from_millis(request.timeout_ms.clamp(1, 600_000) as u64);
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let metadata = shard.metadata();
    let names: Vec<(Option<String>, uuid::Uuid)> = if header.request_api_version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => (Some(name.0.to_string()), t.topic_id),
                None => (
                    metadata
                        .topics
                        .values()
                        .find(|m| m.topic_id == t.topic_id)
                        .map(|m| m.name.clone()),
                    t.topic_id,
                ),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(names.len());
    for (name, topic_id) in names {
        let outcome = match &name {
            None => Err(AdminError::new(
                ResponseError::UnknownTopicId,
                format!("no topic with id {topic_id}"),
            )),
            Some(name) => futures::select! {
                r = futures::FutureExt::fuse(shard.control.delete_topic(name.clone())) => r,
                _ = futures::FutureExt::fuse(glommio::timer::sleep(timeout)) => {
                    Err(AdminError::new(ResponseError::RequestTimedOut, "topic deletion did not finish within timeout_ms"))
                }
            },
        };
        let mut result = DeletableTopicResult::default()
            .with_name(name.map(|n| TopicName(str_bytes(&n))))
            .with_topic_id(topic_id);
        if let Err(e) = outcome {
            result = result
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message)));
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

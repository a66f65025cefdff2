//! OffsetDelete: removes a group's committed offsets for partitions no member subscribes to
//! (GROUP_SUBSCRIBED_TO_TOPIC otherwise).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::code;
use super::group_route::on_coordinator;
use crate::shard::{coordinator, Shard};

pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    let which: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let asked = which.clone();
    let id = group.clone();
    let deleted = on_coordinator(shard, &group, move |owner, partition| async move {
        coordinator::delete_offsets(&owner, partition, id, asked).await
    })
    .await
    .and_then(|r| r);
    let results = match deleted {
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        Ok(results) => results,
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for ((topic, partition), error) in which.into_iter().zip(results) {
        let row = OffsetDeleteResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code(error));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(row),
            _ => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(super::topic_name(&topic))
                    .with_partitions(vec![row]),
            ),
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

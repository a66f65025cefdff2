//! OffsetFetch: a group's committed offsets (v2+: all of them when no topics are named).
//! A partition without a commit gets offset -1 and no error, as in Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::group_route::on_coordinator;
use super::{code, str_bytes};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let group = request.group_id.to_string();
    let which: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |p| (t.name.to_string(), *p))
            })
            .collect()
    });
    let asked = which.clone();
    let id = group.clone();
    let fetched = on_coordinator(shard, &group, move |owner, partition| async move {
        owner.coordinator.fetch_offsets(partition, &id, asked)
    })
    .await
    .and_then(|r| r);
    let (rows, error) = match fetched {
        Ok(rows) => (rows, None),
        // Before v2 there is no top-level error: each partition asked for carries it.
        Err(e) => (
            which
                .unwrap_or_default()
                .into_iter()
                .map(|k| (k, None))
                .collect(),
            Some(e),
        ),
    };
    let mut topics: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
    for ((topic, partition), committed) in rows {
        let row = match committed {
            Some(c) => OffsetFetchResponsePartition::default()
                .with_partition_index(partition)
                .with_committed_offset(c.offset)
                .with_committed_leader_epoch(c.leader_epoch)
                .with_metadata(Some(str_bytes(&c.metadata))),
            None => OffsetFetchResponsePartition::default()
                .with_partition_index(partition)
                .with_committed_offset(-1)
                .with_committed_leader_epoch(-1)
                .with_metadata(Some(str_bytes("")))
                .with_error_code(if version < 2 { code(error) } else { 0 }),
        };
        topics.entry(topic).or_default().push(row);
    }
    let response = OffsetFetchResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(super::topic_name(&name))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    if version >= 2 {
        response.with_error_code(code(error))
    } else {
        response
    }
}

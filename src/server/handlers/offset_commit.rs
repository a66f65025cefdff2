//! OffsetCommit: a group's consumed positions, written to `__consumer_offsets` before they are
//! acknowledged. Partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION and metadata over
//! `offset.metadata.max.bytes` gets OFFSET_METADATA_TOO_LARGE, as in Kafka; the rest go to the
//! group's coordinator together.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::code;
use super::group_route::on_coordinator;
use crate::clock::now_ms;
use crate::group::log_format::OffsetValue;
use crate::shard::coordinator::{self, CommitEntry};
use crate::shard::Shard;

/// A partition's index and its early error, or the index of its entry to commit.
type PartitionOutcome = (i32, Result<usize, ResponseError>);

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let metadata = shard.metadata();
    let max_metadata = shard.config.groups.offset_metadata_max_bytes;
    let now = now_ms();
    // Per partition, in request order: an early error, or the index of its entry to commit.
    let mut outcome: Vec<(String, Vec<PartitionOutcome>)> = Vec::new();
    let mut entries: Vec<CommitEntry> = Vec::new();
    for topic in &request.topics {
        let name = topic.name.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let meta = p.committed_metadata.as_deref().unwrap_or("");
            let result = if metadata.partition(&name, p.partition_index).is_none() {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if meta.len() > max_metadata {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                entries.push((
                    name.clone(),
                    p.partition_index,
                    OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: meta.to_owned(),
                        commit_timestamp: now,
                    },
                ));
                Ok(entries.len() - 1)
            };
            partitions.push((p.partition_index, result));
        }
        outcome.push((name, partitions));
    }
    let committed: Result<Vec<Option<ResponseError>>, ResponseError> = if entries.is_empty() {
        Ok(Vec::new())
    } else {
        let id = group.clone();
        let member = request.member_id.to_string();
        let instance = request.group_instance_id.map(|i| i.to_string());
        let generation = request.generation_id_or_member_epoch;
        on_coordinator(shard, &group, move |owner, partition| async move {
            coordinator::commit(&owner, partition, id, member, instance, generation, entries).await
        })
        .await
        .and_then(|r| r)
    };
    let topics = outcome
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(super::topic_name(&name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, result)| {
                            let error = match (result, &committed) {
                                (Err(e), _) => Some(e),
                                (Ok(_), Err(e)) => Some(*e),
                                (Ok(i), Ok(results)) => results.get(i).copied().flatten(),
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code(error))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

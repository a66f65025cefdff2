//! ListOffsets: earliest (-2) is the log start, latest (-1) the high watermark, and a timestamp finds
//! the first record at or after it through the time index. That one lookup walks the records of
//! the single batch the index points at, because a batch's records can straddle the timestamp;
//! the walk is bounded like a produced batch's, so a stored batch cannot make it blow up.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::metadata::TopicPartition;
use crate::record::codec::records_section;
use crate::record::validate::inflate_limit;
use crate::record::walk::for_each_record;
use crate::record::BatchHeader;
use crate::shard::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let metadata = shard.metadata();
    // Kafka answers every entry of a partition named more than once with INVALID_REQUEST.
    let mut seen = HashMap::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            *seen
                .entry((topic.name.clone(), p.partition_index))
                .or_insert(0u32) += 1;
        }
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let lookups = topic.partitions.iter().map(|p| {
            let duplicated = seen[&(topic.name.clone(), p.partition_index)] > 1;
            let tp = TopicPartition {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
            };
            let owner = metadata.leader_shard(&tp, shard.config.broker_id);
            let (index, timestamp) = (p.partition_index, p.timestamp);
            let topic_known = metadata.topic(&tp.topic).is_some();
            async move {
                let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
                if duplicated {
                    return response
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_offset(-1)
                        .with_timestamp(-1);
                }
                let Some(owner) = owner else {
                    let code = if !topic_known {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        ResponseError::NotLeaderOrFollower
                    };
                    return response
                        .with_error_code(code.code())
                        .with_offset(-1)
                        .with_timestamp(-1);
                };
                let found = shard
                    .invoke_on(owner, move |owner_shard| async move {
                        lookup(&owner_shard, &tp, timestamp).await
                    })
                    .await
                    .unwrap_or(Err(ResponseError::NotLeaderOrFollower));
                match found {
                    Ok((offset, timestamp, leader_epoch)) => {
                        let response = response.with_offset(offset).with_timestamp(timestamp);
                        // The field exists from v4; kafka-protocol refuses to encode it earlier.
                        if version >= 4 {
                            response.with_leader_epoch(leader_epoch)
                        } else {
                            response
                        }
                    }
                    Err(code) => response
                        .with_error_code(code.code())
                        .with_offset(-1)
                        .with_timestamp(-1),
                }
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, leader epoch) for one partition, on its owner shard.
async fn lookup(
    shard: &Shard,
    tp: &TopicPartition,
    timestamp: i64,
) -> Result<(i64, i64, i32), ResponseError> {
    let partition = shard
        .partition(tp)
        .ok_or(ResponseError::NotLeaderOrFollower)?;
    let epoch = partition.leader_epoch();
    match timestamp {
        LATEST => Ok((partition.high_watermark(), -1, epoch)),
        EARLIEST => Ok((partition.log_start_offset(), -1, epoch)),
        MAX_TIMESTAMP => Err(ResponseError::UnsupportedVersion),
        target if target < 0 => Err(ResponseError::InvalidRequest),
        target => {
            let batch = partition
                .find_batch_by_timestamp(target)
                .await
                .map_err(|e| {
                    tracing::warn!("{tp}: offset lookup by timestamp failed: {e}");
                    ResponseError::KafkaStorageError
                })?;
            // No record at or after the timestamp: Kafka answers offset -1, timestamp -1.
            let Some(batch) = batch else {
                return Ok((-1, -1, epoch));
            };
            let corrupt = |e: String| {
                tracing::warn!("{tp}: cannot read the batch the time index points at: {e}");
                ResponseError::CorruptMessage
            };
            let header = BatchHeader::parse(&batch).map_err(|e| corrupt(e.to_string()))?;
            let records = records_section(&header, &batch, inflate_limit(batch.len()))
                .map_err(|e| corrupt(e.to_string()))?;
            let mut found = None;
            for_each_record(&records, header.records_count, |r| {
                // Under LogAppendTime every record carries the batch's time, as in Kafka.
                let timestamp = if header.timestamp_type_is_log_append() {
                    header.max_timestamp
                } else {
                    header.base_timestamp.saturating_add(r.timestamp_delta)
                };
                if found.is_none() && timestamp >= target {
                    found = Some((header.base_offset + i64::from(r.offset_delta), timestamp));
                }
            })
            .map_err(|e| corrupt(e.to_string()))?;
            found
                .map(|(offset, timestamp)| (offset, timestamp, epoch))
                .ok_or(ResponseError::CorruptMessage)
        }
    }
}

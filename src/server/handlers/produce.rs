//! Produce: each partition's batches are validated (CRC-32C, size, magic) on the shard that read
//! them, then moved (the `Bytes` slices of the request frame, not copies) to the shard that owns the
//! partition, which appends them and answers with the offsets.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::warn;

use super::str_bytes;
use crate::cluster::TopicPartition;
use crate::record::{split_batches, BatchError};
use crate::shard::Shard;
use crate::storage::{AppendOutcome, StorageError};

struct PartitionResult {
    error: Option<ResponseError>,
    message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
}

impl PartitionResult {
    fn error(error: ResponseError, message: impl Into<String>) -> Self {
        PartitionResult {
            error: Some(error),
            message: Some(message.into()),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let metadata = shard.metadata();
    let me = shard.config.broker_id;
    // Every partition of every topic is dispatched before anything is awaited, so partitions are
    // appended in parallel and a partition's batches reach its owner in request order.
    let mut names = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        names.push(topic.name);
        for data in topic.partition_data {
            let tp = TopicPartition {
                topic: name.clone(),
                partition: data.index,
            };
            let index = data.index;
            let records_bytes = data.records.as_ref().map_or(0, |r| r.len() as u64);
            let result = async {
                if !(-1..=1).contains(&acks) {
                    return PartitionResult::error(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks={acks}"),
                    );
                }
                let Some(topic_metadata) = metadata.topic(&tp.topic) else {
                    return PartitionResult::error(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic '{}'", tp.topic),
                    );
                };
                let Some(state) = metadata.partition(&tp.topic, tp.partition) else {
                    return PartitionResult::error(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {tp}"),
                    );
                };
                let Some(owner) = metadata.leader_shard(&tp, me) else {
                    return PartitionResult::error(
                        ResponseError::NotLeaderOrFollower,
                        format!("broker {me} does not lead {tp}"),
                    );
                };
                let Some(records) = data.records else {
                    return PartitionResult::error(ResponseError::CorruptMessage, "no records");
                };
                let batches = match split_batches(&records) {
                    Ok(batches) => batches,
                    Err(e) => {
                        let code = match e {
                            BatchError::UnsupportedMagic { .. } => {
                                ResponseError::UnsupportedForMessageFormat
                            }
                            _ => ResponseError::CorruptMessage,
                        };
                        warn!("{tp}: rejected produce: {e}");
                        return PartitionResult::error(code, e.to_string());
                    }
                };
                let max_bytes = topic_metadata.config.values.max_message_bytes;
                if let Some(batch) = batches.iter().find(|b| b.bytes.len() as i64 > max_bytes) {
                    return PartitionResult::error(
                        ResponseError::MessageTooLarge,
                        format!(
                            "{tp}: batch of {} bytes exceeds max.message.bytes {max_bytes}",
                            batch.bytes.len()
                        ),
                    );
                }
                if acks == -1
                    && (state.isr.len() as i64) < topic_metadata.config.values.min_insync_replicas
                {
                    return PartitionResult::error(
                        ResponseError::NotEnoughReplicas,
                        format!(
                            "{tp}: ISR {:?} is smaller than min.insync.replicas",
                            state.isr
                        ),
                    );
                }
                let appended = shard
                    .invoke_on(owner, move |owner_shard| async move {
                        let Some(partition) = owner_shard.partition(&tp) else {
                            return Err((
                                ResponseError::NotLeaderOrFollower,
                                format!("{tp} is not open on this broker"),
                            ));
                        };
                        match partition.append(batches).await {
                            Ok(outcome) => Ok((outcome, partition.log_start_offset())),
                            Err(e) => Err((storage_error_code(&e), format!("{tp}: {e}"))),
                        }
                    })
                    .await;
                match appended {
                    Ok(Ok((
                        AppendOutcome::Appended { base_offset, .. }
                        | AppendOutcome::Duplicate { base_offset, .. },
                        log_start_offset,
                    ))) => PartitionResult {
                        error: None,
                        message: None,
                        base_offset,
                        log_start_offset,
                    },
                    Ok(Err((code, message))) => PartitionResult::error(code, message),
                    Err(stopped) => PartitionResult::error(
                        ResponseError::NotLeaderOrFollower,
                        stopped.to_string(),
                    ),
                }
            };
            pending.push(async move { (topic_index, index, records_bytes, result.await) });
        }
    }
    let mut topics: Vec<TopicProduceResponse> = names
        .into_iter()
        .map(|name| TopicProduceResponse::default().with_name(name))
        .collect();
    for (topic_index, index, records_bytes, r) in futures::future::join_all(pending).await {
        let name = &*topics[topic_index].name.0;
        if let Some(topic) = metadata.topic(name) {
            shard
                .metrics
                .record_partition(name, topic.topic_id, index, |t| {
                    t.produce_requests += 1;
                    match r.error {
                        None => t.bytes_in += records_bytes,
                        Some(_) => t.produce_errors += 1,
                    }
                });
        }
        topics[topic_index].partition_responses.push(
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(super::code(r.error))
                .with_error_message(r.message.map(|m| str_bytes(&m)))
                .with_base_offset(r.base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(r.log_start_offset),
        );
    }
    // acks=0: the client expects no answer at all.
    (acks != 0).then(|| ProduceResponse::default().with_responses(topics))
}

fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        _ => {
            warn!("storage error: {error}");
            ResponseError::KafkaStorageError
        }
    }
}

//! Produce: each partition's batch is validated as Kafka's LogValidator does
//! ([`crate::record::validate`]) on the shard that read the request, then moved (a `Bytes` slice
//! of the request frame, not a copy) to the shard that owns the partition, which appends it and
//! answers with the offsets. Unknown topics and partitions cost nothing beyond their answer.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::warn;

use super::str_bytes;
use crate::clock::now_ms;
use crate::metadata::TopicPartition;
use crate::record::validate::{validate_produced, Rules};
use crate::record::Batch;
use crate::server::log_limit;
use crate::shard::Shard;
use crate::storage::{AppendOutcome, StorageError};

struct PartitionResult {
    error: Option<ResponseError>,
    message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

impl PartitionResult {
    fn error(error: ResponseError, message: impl Into<String>) -> Self {
        PartitionResult {
            error: Some(error),
            message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// A batch smaller than this fraction of its request's frame is copied out of the frame.
const MIN_SHARE_OF_FRAME: usize = 4;

/// The batch as the partition keeps it. Appended batches stay in the partition's tail cache as
/// slices of the request frame they came in, which keeps the whole frame alive: a small batch in
/// a large frame (many partitions in one request, or a frame padded on purpose) is copied into
/// its own buffer, so a cached batch never keeps more than [`MIN_SHARE_OF_FRAME`] times its size
/// of request memory alive.
fn own_if_small(batch: Batch, frame_bytes: usize) -> Batch {
    if batch.bytes.len().saturating_mul(MIN_SHARE_OF_FRAME) >= frame_bytes {
        return batch;
    }
    Batch {
        header: batch.header,
        bytes: Bytes::copy_from_slice(&batch.bytes),
    }
}

/// Answers a Produce request that arrived in a frame of `frame_bytes`.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ProduceRequest,
    frame_bytes: usize,
) -> Produced {
    let acks = request.acks;
    // How long an acks=all append may wait for the ISR (Kafka's DelayedProduce timeout).
    let replication_timeout = std::time::Duration::from_millis(
        request.timeout_ms.clamp(0, MAX_REPLICATION_WAIT_MS) as u64,
    );
    let metadata = shard.metadata();
    let me = shard.config.broker_id;
    // A partition named more than once is appended once, from its last entry, as Kafka's map of
    // a request's partitions keeps the last: a request cannot multiply its work by repetition.
    let mut earlier: HashSet<(usize, usize)> = HashSet::new();
    let mut last = HashMap::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        for (p, data) in topic.partition_data.iter().enumerate() {
            if let Some(before) = last.insert((&topic.name, data.index), (t, p)) {
                earlier.insert(before);
            }
        }
    }
    drop(last);
    // Every partition of every topic is dispatched before anything is awaited, so partitions are
    // appended in parallel and a partition's batches reach its owner in request order.
    let mut names = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        names.push(topic.name);
        for (p, data) in topic.partition_data.into_iter().enumerate() {
            if earlier.contains(&(topic_index, p)) {
                continue;
            }
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
                let (Some(topic_metadata), Some(state)) = (
                    metadata.topic(&tp.topic),
                    metadata.partition(&tp.topic, tp.partition),
                ) else {
                    return PartitionResult::error(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {tp}"),
                    );
                };
                if crate::group::is_internal(&tp.topic) {
                    // Kafka: only the broker itself appends to an internal topic.
                    return PartitionResult::error(
                        ResponseError::InvalidTopicException,
                        format!("cannot append to internal topic {}", tp.topic),
                    );
                }
                let Some(owner) = metadata.leader_shard(&tp, me) else {
                    return PartitionResult::error(
                        ResponseError::NotLeaderOrFollower,
                        format!("broker {me} does not lead {tp}"),
                    );
                };
                let Some(records) = data.records else {
                    return PartitionResult::error(ResponseError::InvalidRecord, "no records");
                };
                let config = &topic_metadata.config.values;
                let rules = Rules {
                    produce_version: version,
                    max_batch_bytes: config.max_message_bytes,
                    log_append_time: config.log_append_time,
                    timestamp_difference_max_ms: config.message_timestamp_difference_max_ms,
                    store_as: config.compression_type.codec(),
                    now_ms: now_ms(),
                };
                // Inline, even for a large compressed batch: validating elsewhere could let a
                // later request of this connection reach the partition first.
                let validated = match validate_produced(&records, &rules) {
                    Ok(validated) => validated,
                    Err(e) => {
                        log_limit::warn("refused batch", || {
                            format!("{tp}: refused a produced batch: {e}")
                        });
                        return PartitionResult::error(e.error_code(), format!("{tp}: {e}"));
                    }
                };
                if acks == -1 && (state.isr.len() as i64) < config.min_insync_replicas {
                    return PartitionResult::error(
                        ResponseError::NotEnoughReplicas,
                        format!(
                            "{tp}: ISR {:?} is smaller than min.insync.replicas",
                            state.isr
                        ),
                    );
                }
                let log_append_time_ms = validated.log_append_time_ms;
                let batches = vec![own_if_small(validated.batch, frame_bytes)];
                let appended = shard
                    .invoke_on(owner, move |owner_shard| async move {
                        let Some(partition) = owner_shard.partition(&tp) else {
                            return Err((
                                ResponseError::NotLeaderOrFollower,
                                format!("{tp} is not open on this broker"),
                            ));
                        };
                        let outcome = match partition.append(batches).await {
                            Ok(outcome) => outcome,
                            Err(_) if !partition.is_leader() => {
                                return Err((
                                    ResponseError::NotLeaderOrFollower,
                                    format!("{tp}: this broker stopped leading it"),
                                ))
                            }
                            Err(e) => return Err((storage_error_code(&e), format!("{tp}: {e}"))),
                        };
                        if acks == -1 {
                            let (AppendOutcome::Appended { last_offset, .. }
                            | AppendOutcome::Duplicate { last_offset, .. }) = outcome;
                            wait_for_replicas(&partition, last_offset + 1, replication_timeout)
                                .await
                                .map_err(|code| (code, format!("{tp}: {code:?}")))?;
                        }
                        Ok((outcome, partition.log_start_offset()))
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
                        log_append_time_ms,
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
        // Counted only for partitions that exist: a request naming made-up partitions must not
        // grow the metrics.
        if let (Some(topic), Some(_)) = (metadata.topic(name), metadata.partition(name, index)) {
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
                .with_log_append_time_ms(r.log_append_time_ms)
                .with_log_start_offset(r.log_start_offset),
        );
    }
    if acks != 0 {
        return Produced::Answer(ProduceResponse::default().with_responses(topics));
    }
    // acks=0: the client expects no answer at all, so an error can only be told by closing the
    // connection, which makes the producer refresh its metadata (as Kafka does).
    let failed = topics
        .iter()
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.error_code != 0);
    match failed {
        None => Produced::Nothing,
        Some(p) => Produced::Close(format!(
            "an acks=0 produce failed with error code {} on partition {}",
            p.error_code, p.index
        )),
    }
}

/// The longest an acks=all append waits for its replicas, whatever the request's timeout says.
const MAX_REPLICATION_WAIT_MS: i32 = 300_000;

/// Waits until the ISR has everything below `offset` (the high watermark reached it).
async fn wait_for_replicas(
    partition: &crate::shard::Partition,
    offset: i64,
    timeout: std::time::Duration,
) -> Result<(), ResponseError> {
    use futures::FutureExt;
    let reached = partition.wait_for_high_watermark(offset);
    futures::select! {
        result = reached.fuse() => result.unwrap_or(Err(ResponseError::NotLeaderOrFollower)),
        _ = glommio::timer::sleep(timeout).fuse() => Err(ResponseError::RequestTimedOut),
    }
}

/// What a Produce request leads to.
pub enum Produced {
    Answer(ProduceResponse),
    /// acks=0, every partition appended: nothing is sent.
    Nothing,
    /// acks=0 with an error: the connection is closed, saying why in the log.
    Close(String),
}

/// Kafka's code for a failed append. Validation already refused malformed batches, so what is
/// left is the producer state, or the disk.
fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        StorageError::InvalidAppend { .. } | StorageError::Batch { .. } => {
            ResponseError::InvalidRecord
        }
        _ => {
            warn!("storage error: {error}");
            ResponseError::KafkaStorageError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_util::{batch, BatchSpec};

    #[test]
    fn small_batches_are_copied_out_of_large_frames() {
        let one = batch(&BatchSpec {
            value_bytes: 100,
            ..BatchSpec::default()
        });
        let len = one.bytes.len();
        let kept = own_if_small(one.clone(), len * MIN_SHARE_OF_FRAME);
        assert_eq!(
            kept.bytes.as_ptr(),
            one.bytes.as_ptr(),
            "a quarter of its frame: kept"
        );
        let copied = own_if_small(one.clone(), len * MIN_SHARE_OF_FRAME + 1);
        assert_ne!(copied.bytes.as_ptr(), one.bytes.as_ptr(), "less: copied");
        assert_eq!(copied.bytes, one.bytes);
        assert_eq!(copied.header, one.header);
    }
}

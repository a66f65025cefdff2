//! OffsetForLeaderEpoch (KIP-101/279): where a leader epoch ends in this leader's log, so that a
//! follower (or a consumer checking for truncation, KIP-320) can cut a tail that diverged from it.
//! Answered by the partition's leader only, from its leader-epoch cache.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use crate::metadata::TopicPartition;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let metadata = shard.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let lookups = topic.partitions.iter().map(|p| {
            let tp = TopicPartition {
                topic: topic.topic.0.to_string(),
                partition: p.partition,
            };
            let known = metadata.partition(&tp.topic, tp.partition).is_some();
            let owner = metadata.leader_shard(&tp, shard.config.broker_id);
            let (current, requested) = (p.current_leader_epoch, p.leader_epoch);
            async move {
                let answer = EpochEndOffset::default()
                    .with_partition(tp.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                let Some(owner) = owner else {
                    let code = if known {
                        ResponseError::NotLeaderOrFollower
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    return answer.with_error_code(code.code());
                };
                let found = shard
                    .invoke_on(owner, move |owner_shard| async move {
                        let partition = owner_shard
                            .partition(&tp)
                            .filter(|p| p.is_leader())
                            .ok_or(ResponseError::NotLeaderOrFollower)?;
                        if current >= 0 {
                            let epoch = partition.leader_epoch();
                            if current < epoch {
                                return Err(ResponseError::FencedLeaderEpoch);
                            }
                            if current > epoch {
                                return Err(ResponseError::UnknownLeaderEpoch);
                            }
                        }
                        partition
                            .end_offset_for_epoch(requested)
                            .map_err(|_| ResponseError::KafkaStorageError)
                    })
                    .await
                    .unwrap_or(Err(ResponseError::NotLeaderOrFollower));
                match found {
                    Ok((epoch, end_offset)) => {
                        answer.with_leader_epoch(epoch).with_end_offset(end_offset)
                    }
                    Err(code) => answer.with_error_code(code.code()),
                }
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

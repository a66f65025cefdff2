//! Where a group request goes: the shard leading partition `partition_for(group)` of
//! `__consumer_offsets`, on this broker or (NOT_COORDINATOR) elsewhere. Shared by every group
//! API's handler.

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::metadata::{Metadata, TopicPartition};
use crate::shard::Shard;

/// The `__consumer_offsets` partition of `group` and its leader, from `metadata`.
pub fn coordinator_of(metadata: &Metadata, group: &str) -> Result<(i32, i32), ResponseError> {
    let topic = metadata
        .topic(OFFSETS_TOPIC)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let partition = partition_for(group, topic.partitions.len() as i32);
    let leader = topic.partitions[partition as usize].leader;
    if leader < 0 {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    Ok((partition, leader))
}

/// Runs `work` on the shard coordinating `group` with that group's `__consumer_offsets`
/// partition; NOT_COORDINATOR when another broker coordinates it.
pub async fn on_coordinator<F, Fut, R>(
    shard: &Rc<Shard>,
    group: &str,
    work: F,
) -> Result<R, ResponseError>
where
    F: FnOnce(Rc<Shard>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let metadata = shard.metadata();
    let (partition, leader) = coordinator_of(&metadata, group)?;
    if leader != shard.config.broker_id {
        return Err(ResponseError::NotCoordinator);
    }
    let tp = TopicPartition {
        topic: OFFSETS_TOPIC.to_owned(),
        partition,
    };
    let target = metadata
        .shard_of(&tp)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    shard
        .invoke_on(target, move |owner| work(owner, partition))
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// Kafka refuses an empty group id for the membership APIs (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup); the offset and admin APIs take it.
pub fn valid_member_group(group: &str) -> Result<(), ResponseError> {
    if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        Ok(())
    }
}

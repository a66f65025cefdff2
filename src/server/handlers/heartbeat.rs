//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::code;
use super::group_route::{on_coordinator, valid_member_group};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.to_string();
    let error = match valid_member_group(&group) {
        Err(e) => Some(e),
        Ok(()) => {
            let id = group.clone();
            let member = request.member_id.to_string();
            let instance = request.group_instance_id.map(|i| i.to_string());
            let generation = request.generation_id;
            on_coordinator(shard, &group, move |owner, partition| async move {
                owner.coordinator.heartbeat(
                    partition,
                    &id,
                    &member,
                    instance.as_deref(),
                    generation,
                )
            })
            .await
            .unwrap_or_else(Some)
        }
    };
    HeartbeatResponse::default().with_error_code(code(error))
}

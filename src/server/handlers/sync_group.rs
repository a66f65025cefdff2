//! SyncGroup: the leader hands in the assignment; every member waits for its own part.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::group_route::{on_coordinator, valid_member_group};
use super::{code, str_bytes};
use crate::group::state::{SyncRequest, SyncResult};
use crate::shard::{coordinator, Shard};

pub async fn handle(shard: &Rc<Shard>, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.to_string();
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.map(|t| t.to_string()),
        protocol: request.protocol_name.map(|p| p.to_string()),
        assignments: request
            .assignments
            .into_iter()
            // Copied: a slice would keep the whole request frame alive with the assignment.
            .map(|a| {
                (
                    a.member_id.to_string(),
                    bytes::Bytes::copy_from_slice(&a.assignment),
                )
            })
            .collect(),
    };
    let result = match valid_member_group(&group) {
        Err(e) => SyncResult::error(e),
        Ok(()) => {
            let id = group.clone();
            on_coordinator(shard, &group, move |owner, partition| async move {
                coordinator::sync(&owner, partition, id, sync).await
            })
            .await
            .unwrap_or_else(SyncResult::error)
        }
    };
    SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(result.protocol.as_deref().map(str_bytes))
        .with_assignment(result.assignment)
}

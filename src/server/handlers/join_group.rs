//! JoinGroup: a member asks to join (or rejoin) a group and waits until the rebalance
//! completes; the leader gets every member's metadata to compute the assignment.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::group_route::{on_coordinator, valid_member_group};
use super::{code, str_bytes};
use crate::group::state::{JoinRequest, JoinResult};
use crate::shard::{coordinator, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    client_id: &str,
    client_host: &str,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = request.group_id.to_string();
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves as both.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            // Copied: a slice would keep the whole request frame alive for the member's life.
            .map(|p| {
                (
                    p.name.to_string(),
                    bytes::Bytes::copy_from_slice(&p.metadata),
                )
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result = match valid_member_group(&group) {
        Err(e) => JoinResult::error(e, &member_id),
        Ok(()) => {
            let id = group.clone();
            on_coordinator(shard, &group, move |owner, partition| async move {
                coordinator::join(&owner, partition, id, join).await
            })
            .await
            .unwrap_or_else(|e| JoinResult::error(e, &member_id))
        }
    };
    response(version, result)
}

fn response(version: i16, result: JoinResult) -> JoinGroupResponse {
    // Before v7 the protocol name is not nullable (and the type is not sent).
    let protocol = match (result.protocol, version >= 7) {
        (Some(p), _) => Some(str_bytes(&p)),
        (None, true) => None,
        (None, false) => Some(str_bytes("")),
    };
    JoinGroupResponse::default()
        .with_error_code(code(result.error))
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(protocol)
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

//! LeaveGroup: members leave at once (v3+: several, static ones by instance id) instead of
//! waiting out their sessions.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::group_route::{on_coordinator, valid_member_group};
use super::{code, str_bytes};
use crate::shard::{coordinator, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = request.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let results = match valid_member_group(&group) {
        Err(e) => Err(e),
        Ok(()) => {
            let (id, leaving) = (group.clone(), members.clone());
            on_coordinator(shard, &group, move |owner, partition| async move {
                coordinator::leave(&owner, partition, &id, leaving)
            })
            .await
            .and_then(|r| r)
        }
    };
    match results {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if version < 3 => LeaveGroupResponse::default()
            .with_error_code(code(results.into_iter().next().flatten())),
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((member, instance), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&member))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(code(error))
                })
                .collect(),
        ),
    }
}

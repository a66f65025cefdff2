//! DescribeGroups: state, protocol and members of each group (a group nobody knows is "Dead",
//! without an error, as Kafka answers).

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::group_route::on_coordinator;
use super::str_bytes;
use crate::shard::Shard;

/// Kafka's answer to `include_authorized_operations` without an authorizer: every operation a
/// group supports: READ(3), DELETE(6), DESCRIBE(8).
const GROUP_OPERATIONS: i32 = 1 << 3 | 1 << 6 | 1 << 8;

pub async fn handle(shard: &Rc<Shard>, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = if request.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        i32::MIN
    };
    let mut described = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let id = group.to_string();
        let asked = id.clone();
        let found = on_coordinator(shard, &id, move |owner, partition| async move {
            owner.coordinator.describe(partition, &asked)
        })
        .await
        .and_then(|r| r);
        let entry = DescribedGroup::default()
            .with_group_id(GroupId(str_bytes(&id)))
            .with_authorized_operations(operations);
        described.push(match found {
            Err(e) => entry
                .with_error_code(e.code())
                .with_group_state(str_bytes("")),
            Ok(None) => entry.with_group_state(str_bytes("Dead")),
            Ok(Some(d)) => entry
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.as_deref().map(str_bytes),
                                )
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        });
    }
    DescribeGroupsResponse::default().with_groups(described)
}

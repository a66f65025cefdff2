//! ListGroups: every group this broker coordinates, from every shard (v4: filtered by state).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut groups = Vec::new();
    let mut error = None;
    for target in 0..shard.senders.len() {
        let listed = shard
            .invoke_on(target, |owner| async move {
                (owner.coordinator.list(), owner.coordinator.is_loading())
            })
            .await;
        match listed {
            Ok((listed, loading)) => {
                if loading {
                    error = Some(ResponseError::CoordinatorLoadInProgress);
                }
                groups.extend(listed);
            }
            Err(_) => error = Some(ResponseError::CoordinatorNotAvailable),
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    ListGroupsResponse::default()
        .with_error_code(code(error))
        .with_groups(
            groups
                .into_iter()
                .filter(|(_, _, state)| {
                    states.is_empty() || states.contains(&state.name().to_lowercase())
                })
                .map(|(id, protocol_type, state)| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&id)))
                        .with_protocol_type(str_bytes(&protocol_type))
                        .with_group_state(str_bytes(state.name()))
                })
                .collect(),
        )
}

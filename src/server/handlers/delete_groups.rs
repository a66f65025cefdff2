//! DeleteGroups: removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`); a group with members gets NON_EMPTY_GROUP.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};

use super::group_route::on_coordinator;
use super::{code, str_bytes};
use crate::shard::{coordinator, Shard};

pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let id = group.to_string();
        let doomed = id.clone();
        let error = on_coordinator(shard, &id, move |owner, partition| async move {
            coordinator::delete(&owner, partition, doomed).await
        })
        .await
        .unwrap_or_else(Some);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_error_code(code(error)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

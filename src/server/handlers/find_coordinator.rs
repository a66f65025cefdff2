//! FindCoordinator: which broker coordinates a group. The first request for any group creates
//! `__consumer_offsets` (`offsets.topic.num.partitions`, compacted by key), as Kafka does.
//! Transaction coordinators (key type 1) do not exist yet: COORDINATOR_NOT_AVAILABLE.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;
use tracing::warn;

use super::group_route::coordinator_of;
use super::str_bytes;
use crate::group::OFFSETS_TOPIC;
use crate::shard::{CreateTopicSpec, Shard};

/// A key's coordinator (broker id, host, port), or why there is none.
type Found = Result<(i32, String, u16), (ResponseError, String)>;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let found: Vec<(String, Found)> = if request.key_type != 0 {
        let why = if request.key_type == 1 {
            "skein has no transaction coordinator yet"
        } else {
            "unknown key type"
        };
        let error = if request.key_type == 1 {
            ResponseError::CoordinatorNotAvailable
        } else {
            ResponseError::InvalidRequest
        };
        keys.into_iter()
            .map(|k| (k, Err((error, why.to_owned()))))
            .collect()
    } else {
        if shard.metadata().topic(OFFSETS_TOPIC).is_none() {
            create_offsets_topic(shard).await;
        }
        let metadata = shard.metadata();
        keys.into_iter()
            .map(|key| {
                let found = coordinator_of(&metadata, &key)
                    .and_then(|(_, leader)| {
                        metadata
                            .brokers
                            .get(&leader)
                            .map(|b| (b.id, b.host.clone(), b.port))
                            .ok_or(ResponseError::CoordinatorNotAvailable)
                    })
                    .map_err(|e| (e, e.to_string()));
                (key, found)
            })
            .collect()
    };
    if version >= 4 {
        let coordinators = found
            .into_iter()
            .map(|(key, found)| match found {
                Ok((id, host, port)) => Coordinator::default()
                    .with_key(str_bytes(&key))
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(&host))
                    .with_port(i32::from(port)),
                Err((error, message)) => Coordinator::default()
                    .with_key(str_bytes(&key))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(&message))),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (_, found) = found.into_iter().next().expect("one key below v4");
    match found {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(&host))
            .with_port(i32::from(port)),
        Err((error, message)) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(error.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(&message)))
            } else {
                response
            }
        }
    }
}

/// Creates `__consumer_offsets` with Kafka's settings for it. With fewer live brokers than
/// `offsets.topic.replication.factor` it gets what it can, with a warning, where Kafka would
/// refuse until enough brokers are up (so a single broker serves groups out of the box).
async fn create_offsets_topic(shard: &Rc<Shard>) {
    let groups = &shard.config.groups;
    let live = shard.metadata().brokers.len().max(1) as i32;
    let wanted = groups.offsets_topic_replication_factor;
    let factor = wanted.min(live);
    if factor < wanted {
        warn!(
            "creating {OFFSETS_TOPIC} with replication factor {factor}: \
             offsets.topic.replication.factor is {wanted} but {live} broker(s) are alive"
        );
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_owned(), "compact".to_owned()),
        (
            "segment.bytes".to_owned(),
            groups.offsets_topic_segment_bytes.to_string(),
        ),
        ("compression.type".to_owned(), "producer".to_owned()),
    ]);
    let spec = CreateTopicSpec {
        name: OFFSETS_TOPIC.to_owned(),
        num_partitions: groups.offsets_topic_num_partitions,
        replication_factor: factor as i16,
        assignments: BTreeMap::new(),
        configs,
        validate_only: false,
        internal: true,
    };
    match shard.control.create_topic(spec).await {
        Ok(()) => {}
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {}
        Err(e) => warn!("cannot create {OFFSETS_TOPIC}: {}", e.message),
    }
}

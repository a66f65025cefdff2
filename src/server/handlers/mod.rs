//! Request dispatch: one file per Kafka API, as Redpanda's `kafka/server/handlers/`. A reader finds
//! "how is Fetch handled" in `fetch.rs`. [`APIS`] is the one list of what skein serves: ApiVersions
//! advertises exactly its entries and dispatch finds handlers nowhere else, so the two cannot
//! disagree.

mod api_versions;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod group_route;
mod heartbeat;
mod init_producer_id;
mod inter_broker;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod txn_offset_commit;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{
    ApiKey, ControlledShutdownRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest, LeaderAndIsrRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, ResponseKind, StopReplicaRequest, SyncGroupRequest, TopicName,
    TxnOffsetCommitRequest, UpdateMetadataRequest,
};
use kafka_protocol::protocol::{decode_allowance, Decodable};

use super::budget::Reservation;
use super::Response;
use crate::protocol::encode_response;
use crate::shard::control_handle::{InterBroker, InterBrokerAnswer};
use crate::shard::metrics::ClosedBy;
use crate::shard::Shard;

/// A request that cannot be answered; the connection is closed and this is logged.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} is not supported by skein")]
    UnsupportedApi { api: ApiKey },
    #[error("{api:?} v{version} is not supported (skein serves v{min}-v{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {message}")]
    Malformed {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("{api:?} v{version}: {what}, more than the shard's request budget holds free now")]
    Busy {
        api: ApiKey,
        version: i16,
        what: String,
    },
    /// The request was handled, and the connection must close to tell the client so (an
    /// acks=0 produce that failed).
    #[error("{0}")]
    Refused(String),
    #[error("cannot encode {api:?} v{version} response: {message}")]
    Encode {
        api: ApiKey,
        version: i16,
        message: String,
    },
}

impl HandleError {
    /// Why the connection closes, for the metrics.
    pub fn closed_by(&self) -> ClosedBy {
        match self {
            HandleError::Busy { .. } => ClosedBy::Busy,
            HandleError::Refused(_) => ClosedBy::Acks0Error,
            _ => ClosedBy::Malformed,
        }
    }
}

type Handled = Result<Option<Response>, HandleError>;

/// Working memory a request may take per partition (or topic, or resource) it names, beyond its
/// frame: the decoded entry, the work sent to the owning shard, and the entry in the response.
/// Charged to the request's budget reservation once the request is decoded, so a small frame
/// naming many partitions cannot take more memory than the budget allows.
pub const WORKING_BYTES_PER_ENTRY: u64 = 1024;

/// One supported API: the versions skein advertises and serves, and its handler.
pub struct Api {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    serve: for<'a> fn(&'a Rc<Shard>, Request) -> LocalBoxFuture<'a, Handled>,
}

/// Every API skein serves. Max versions stop short of topic-id-only versions (Produce 13,
/// Fetch 13+), because skein's clients address topics by name. Produce starts at v3: v0-v2 carry
/// the old message formats (v0/v1), which skein does not convert, and every client that speaks
/// ApiVersions picks v3 or later when offered.
pub const APIS: &[Api] = &[
    Api {
        key: ApiKey::Produce,
        min_version: 3,
        max_version: 11,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: ProduceRequest = request.decode()?;
                request.charge(
                    body.topic_data
                        .iter()
                        .map(|t| 1 + t.partition_data.len())
                        .sum(),
                )?;
                let frame_bytes = request.frame_bytes;
                match produce::handle(shard, request.version(), body, frame_bytes).await {
                    produce::Produced::Answer(response) => {
                        request.reply(ResponseKind::Produce(response))
                    }
                    produce::Produced::Nothing => Ok(None),
                    produce::Produced::Close(why) => Err(HandleError::Refused(why)),
                }
            })
        },
    },
    Api {
        key: ApiKey::Fetch,
        min_version: 4,
        max_version: 12,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: FetchRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                fetch::handle(shard, &request.header, body, || request.release_frame())
                    .await
                    .map(Some)
            })
        },
    },
    Api {
        key: ApiKey::OffsetForLeaderEpoch,
        min_version: 2,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: OffsetForLeaderEpochRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                let response = offset_for_leader_epoch::handle(shard, body).await;
                request.reply(ResponseKind::OffsetForLeaderEpoch(response))
            })
        },
    },
    Api {
        key: ApiKey::ListOffsets,
        min_version: 1,
        max_version: 8,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: ListOffsetsRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                let response = list_offsets::handle(shard, request.version(), body).await;
                request.reply(ResponseKind::ListOffsets(response))
            })
        },
    },
    Api {
        key: ApiKey::Metadata,
        min_version: 0,
        max_version: 12,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: MetadataRequest = request.decode()?;
                request.charge(body.topics.as_ref().map_or(0, Vec::len))?;
                let response = metadata::handle(shard, &request.header, body).await;
                request.reply(ResponseKind::Metadata(response))
            })
        },
    },
    Api {
        key: ApiKey::ApiVersions,
        min_version: 0,
        max_version: 4,
        serve: |_shard, mut request| {
            Box::pin(async move {
                let body = request.decode()?;
                request.reply(ResponseKind::ApiVersions(api_versions::handle(body)))
            })
        },
    },
    Api {
        key: ApiKey::LeaderAndIsr,
        min_version: 5,
        max_version: 5,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: LeaderAndIsrRequest = request.decode()?;
                request.charge(
                    body.topic_states
                        .iter()
                        .map(|t| 1 + t.partition_states.len())
                        .sum::<usize>()
                        + body.live_leaders.len(),
                )?;
                match inter_broker::handle(shard, InterBroker::LeaderAndIsr(body)).await {
                    InterBrokerAnswer::LeaderAndIsr(r) => {
                        request.reply(ResponseKind::LeaderAndIsr(r))
                    }
                    _ => unreachable!("answered in kind"),
                }
            })
        },
    },
    Api {
        key: ApiKey::StopReplica,
        min_version: 3,
        max_version: 3,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: StopReplicaRequest = request.decode()?;
                request.charge(
                    body.topic_states
                        .iter()
                        .map(|t| 1 + t.partition_states.len())
                        .sum(),
                )?;
                match inter_broker::handle(shard, InterBroker::StopReplica(body)).await {
                    InterBrokerAnswer::StopReplica(r) => {
                        request.reply(ResponseKind::StopReplica(r))
                    }
                    _ => unreachable!("answered in kind"),
                }
            })
        },
    },
    Api {
        key: ApiKey::UpdateMetadata,
        min_version: 7,
        max_version: 7,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: UpdateMetadataRequest = request.decode()?;
                request.charge(
                    body.topic_states
                        .iter()
                        .map(|t| 1 + t.partition_states.len())
                        .sum::<usize>()
                        + body.live_brokers.len(),
                )?;
                match inter_broker::handle(shard, InterBroker::UpdateMetadata(body)).await {
                    InterBrokerAnswer::UpdateMetadata(r) => {
                        request.reply(ResponseKind::UpdateMetadata(r))
                    }
                    _ => unreachable!("answered in kind"),
                }
            })
        },
    },
    Api {
        key: ApiKey::ControlledShutdown,
        min_version: 3,
        max_version: 3,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: ControlledShutdownRequest = request.decode()?;
                match inter_broker::handle(shard, InterBroker::ControlledShutdown(body)).await {
                    InterBrokerAnswer::ControlledShutdown(r) => {
                        request.reply(ResponseKind::ControlledShutdown(r))
                    }
                    _ => unreachable!("answered in kind"),
                }
            })
        },
    },
    Api {
        key: ApiKey::CreateTopics,
        min_version: 2,
        max_version: 7,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: CreateTopicsRequest = request.decode()?;
                request.charge(
                    body.topics
                        .iter()
                        .map(|t| 1 + t.assignments.len() + t.configs.len())
                        .sum(),
                )?;
                let response = create_topics::handle(shard, &request.header, body).await;
                request.reply(ResponseKind::CreateTopics(response))
            })
        },
    },
    Api {
        key: ApiKey::DeleteTopics,
        min_version: 1,
        max_version: 6,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: DeleteTopicsRequest = request.decode()?;
                request.charge(body.topic_names.len() + body.topics.len())?;
                let response = delete_topics::handle(shard, &request.header, body).await;
                request.reply(ResponseKind::DeleteTopics(response))
            })
        },
    },
    Api {
        key: ApiKey::DescribeConfigs,
        min_version: 1,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: DescribeConfigsRequest = request.decode()?;
                request.charge(
                    body.resources
                        .iter()
                        .map(|r| 1 + r.configuration_keys.as_ref().map_or(0, Vec::len))
                        .sum(),
                )?;
                let response = describe_configs::handle(shard, &request.header, body);
                request.reply(ResponseKind::DescribeConfigs(response))
            })
        },
    },
    Api {
        key: ApiKey::InitProducerId,
        min_version: 0,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body = request.decode()?;
                let response = init_producer_id::handle(shard, body).await;
                request.reply(ResponseKind::InitProducerId(response))
            })
        },
    },
    Api {
        key: ApiKey::FindCoordinator,
        min_version: 0,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: FindCoordinatorRequest = request.decode()?;
                request.charge(1 + body.coordinator_keys.len())?;
                let response = find_coordinator::handle(shard, request.version(), body).await;
                request.reply(ResponseKind::FindCoordinator(response))
            })
        },
    },
    Api {
        key: ApiKey::JoinGroup,
        min_version: 0,
        max_version: 9,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: JoinGroupRequest = request.decode()?;
                request.charge(1 + body.protocols.len())?;
                // A join waits for the rebalance: the frame's budget goes back first.
                request.release_frame();
                let client_id = request.header.client_id.as_deref().unwrap_or("").to_owned();
                let host = request.client_host.clone();
                let response =
                    join_group::handle(shard, request.version(), &client_id, &host, body).await;
                request.reply(ResponseKind::JoinGroup(response))
            })
        },
    },
    Api {
        key: ApiKey::SyncGroup,
        min_version: 0,
        max_version: 5,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: SyncGroupRequest = request.decode()?;
                request.charge(1 + body.assignments.len())?;
                request.release_frame();
                let response = sync_group::handle(shard, body).await;
                request.reply(ResponseKind::SyncGroup(response))
            })
        },
    },
    Api {
        key: ApiKey::Heartbeat,
        min_version: 0,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: HeartbeatRequest = request.decode()?;
                let response = heartbeat::handle(shard, body).await;
                request.reply(ResponseKind::Heartbeat(response))
            })
        },
    },
    Api {
        key: ApiKey::LeaveGroup,
        min_version: 0,
        max_version: 5,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: LeaveGroupRequest = request.decode()?;
                request.charge(1 + body.members.len())?;
                let response = leave_group::handle(shard, request.version(), body).await;
                request.reply(ResponseKind::LeaveGroup(response))
            })
        },
    },
    Api {
        key: ApiKey::OffsetCommit,
        min_version: 2,
        max_version: 8,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: OffsetCommitRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                let response = offset_commit::handle(shard, request.version(), body).await;
                request.reply(ResponseKind::OffsetCommit(response))
            })
        },
    },
    Api {
        key: ApiKey::OffsetFetch,
        min_version: 1,
        max_version: 7,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: OffsetFetchRequest = request.decode()?;
                request.charge(
                    body.topics
                        .as_ref()
                        .map_or(1, |t| t.iter().map(|t| 1 + t.partition_indexes.len()).sum()),
                )?;
                let response = offset_fetch::handle(shard, request.version(), body).await;
                request.reply(ResponseKind::OffsetFetch(response))
            })
        },
    },
    Api {
        key: ApiKey::ListGroups,
        min_version: 0,
        max_version: 4,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: ListGroupsRequest = request.decode()?;
                let response = list_groups::handle(shard, body).await;
                request.reply(ResponseKind::ListGroups(response))
            })
        },
    },
    Api {
        key: ApiKey::DescribeGroups,
        min_version: 0,
        max_version: 5,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: DescribeGroupsRequest = request.decode()?;
                request.charge(body.groups.len())?;
                let response = describe_groups::handle(shard, body).await;
                request.reply(ResponseKind::DescribeGroups(response))
            })
        },
    },
    Api {
        key: ApiKey::DeleteGroups,
        min_version: 0,
        max_version: 2,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: DeleteGroupsRequest = request.decode()?;
                request.charge(body.groups_names.len())?;
                let response = delete_groups::handle(shard, body).await;
                request.reply(ResponseKind::DeleteGroups(response))
            })
        },
    },
    Api {
        key: ApiKey::OffsetDelete,
        min_version: 0,
        max_version: 0,
        serve: |shard, mut request| {
            Box::pin(async move {
                let body: OffsetDeleteRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                let response = offset_delete::handle(shard, body).await;
                request.reply(ResponseKind::OffsetDelete(response))
            })
        },
    },
    Api {
        key: ApiKey::TxnOffsetCommit,
        min_version: 0,
        max_version: 3,
        serve: |_shard, mut request| {
            Box::pin(async move {
                let body: TxnOffsetCommitRequest = request.decode()?;
                request.charge(body.topics.iter().map(|t| 1 + t.partitions.len()).sum())?;
                let response = txn_offset_commit::handle(body);
                request.reply(ResponseKind::TxnOffsetCommit(response))
            })
        },
    },
];

fn find(key: ApiKey) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

/// A request whose header is decoded, with the body still to decode by its handler.
pub struct Request {
    pub api: ApiKey,
    pub header: RequestHeader,
    body: Bytes,
    /// The budget the request's frame holds, grown by [`Request::charge`].
    reservation: Rc<Reservation>,
    /// What the frame itself costs of the reservation, until [`Request::release_frame`].
    frame_cost: Cell<u64>,
    /// The frame's real length (the reservation may hold less of a frame larger than large
    /// frames may hold).
    frame_bytes: usize,
    /// The client's address as Kafka shows it ("/127.0.0.1"), for group members.
    client_host: Rc<str>,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    fn malformed(&self, message: String) -> HandleError {
        HandleError::Malformed {
            api: self.api,
            version: self.version(),
            message,
        }
    }

    /// Decodes the body. `kafka-protocol` (patched, see vendor/kafka-protocol/PATCHES.md) checks
    /// every count and length against the bytes left before sizing anything by it, and what it
    /// allocates for the decoded message is charged to the request's reservation: decoding fails
    /// (as [`HandleError::Busy`]) rather than take more than the shard's budget has free. Bytes
    /// after the message are ignored, as Kafka ignores them, and the body is let go.
    fn decode<M: Decodable>(&mut self) -> Result<M, HandleError> {
        let version = self.version();
        let mut body = std::mem::take(&mut self.body);
        let allowance = self.reservation.growable();
        let (decoded, used) =
            decode_allowance::with(allowance as usize, || M::decode(&mut body, version));
        let grown = self.reservation.try_grow(used as u64);
        assert!(
            grown,
            "a shard changes nothing between granting and charging an allowance"
        );
        decoded.map_err(|e| match e.downcast_ref::<decode_allowance::Exceeded>() {
            Some(exceeded) => HandleError::Busy {
                api: self.api,
                version,
                what: format!("decoding it takes over {} bytes", used + exceeded.bytes),
            },
            None => self.malformed(e.to_string()),
        })
    }

    /// Gives back what the frame held of the budget, once nothing refers to it any more (the
    /// header and decoded message own their strings by then).
    fn release_frame(&self) {
        self.reservation.shrink(self.frame_cost.take());
    }

    /// Charges the working memory of `entries` partitions (topics, resources) to the request's
    /// reservation, or refuses the request if the budget cannot hold it now.
    fn charge(&self, entries: usize) -> Result<(), HandleError> {
        let bytes = (entries as u64).saturating_mul(WORKING_BYTES_PER_ENTRY);
        if bytes == 0 || self.reservation.try_grow(bytes) {
            return Ok(());
        }
        Err(HandleError::Busy {
            api: self.api,
            version: self.version(),
            what: format!("handling its {entries} partitions or resources takes {bytes} bytes"),
        })
    }

    fn reply(&self, response: ResponseKind) -> Handled {
        let bytes = encode_response(&self.header, self.api, &response).map_err(|e| {
            HandleError::Encode {
                api: self.api,
                version: self.version(),
                message: e.to_string(),
            }
        })?;
        Ok(Some(Response::bytes(bytes)))
    }
}

/// Decodes one request frame, runs its handler and encodes the answer. `None` = no response is
/// due (Produce with acks=0). `reservation` is the budget the frame holds; the handler grows it
/// by the working memory the request needs. Counts the request and its latency in the shard's
/// metrics.
pub async fn handle(
    shard: &Rc<Shard>,
    frame: Bytes,
    reservation: Rc<Reservation>,
    client_host: Rc<str>,
) -> Handled {
    let started = Instant::now();
    let raw_key = (&frame[0..2]).get_i16();
    let result = dispatch(shard, frame, reservation, client_host).await;
    shard
        .metrics
        .record_request(raw_key, result.is_err(), started.elapsed());
    result
}

async fn dispatch(
    shard: &Rc<Shard>,
    mut frame: Bytes,
    reservation: Rc<Reservation>,
    client_host: Rc<str>,
) -> Handled {
    let frame_bytes = frame.len();
    // The frame reader guarantees the 8 bytes every request header starts with.
    let raw_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let key = ApiKey::try_from(raw_key).map_err(|_| HandleError::UnknownApi(raw_key))?;
    let api = find(key).ok_or(HandleError::UnsupportedApi { api: key })?;
    if !(api.min_version..=api.max_version).contains(&version) {
        if key == ApiKey::ApiVersions {
            // Kafka answers an ApiVersions it cannot parse with UNSUPPORTED_VERSION in v0, listing
            // what it does support, so the client can retry with a version both know.
            let correlation_id = (&frame[4..8]).get_i32();
            return Ok(Some(Response::bytes(api_versions::unsupported(
                correlation_id,
            ))));
        }
        return Err(HandleError::UnsupportedVersion {
            api: key,
            version,
            min: api.min_version,
            max: api.max_version,
        });
    }
    let mut header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| HandleError::Malformed {
            api: key,
            version,
            message: format!("header: {e}"),
        })?;
    // Owned, so that holding the header does not hold the frame (see `Request::release_frame`).
    header.client_id = header
        .client_id
        .map(|id| kafka_protocol::protocol::StrBytes::from_string(id.to_string()));
    header.unknown_tagged_fields.clear();
    let frame_cost = Cell::new(reservation.bytes());
    (api.serve)(
        shard,
        Request {
            api: key,
            header,
            body: frame,
            reservation,
            frame_cost,
            frame_bytes,
            client_host,
        },
    )
    .await
}

/// Kafka's error code for a result, 0 for success.
pub(crate) fn code(error: Option<kafka_protocol::ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub(crate) fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_owned())
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(str_bytes(name))
}

//! Request dispatch: one file per Kafka API, as Redpanda's `kafka/server/handlers/`. A reader finds
//! "how is Fetch handled" in `fetch.rs`.

mod api_versions;
mod create_topics;
mod delete_topics;
mod describe_configs;
mod fetch;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;

use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;

use super::Response;
use crate::protocol::{self, encode_response};
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
    #[error("cannot encode {api:?} v{version} response: {message}")]
    Encode {
        api: ApiKey,
        version: i16,
        message: String,
    },
}

/// Decodes one request frame, runs its handler and encodes the answer. `None` = no response is
/// due (Produce with acks=0). Counts the request and its latency in the shard's metrics.
pub async fn handle(shard: &Rc<Shard>, frame: Bytes) -> Result<Option<Response>, HandleError> {
    let started = Instant::now();
    let raw_key = (&frame[0..2]).get_i16();
    let result = dispatch(shard, frame).await;
    shard
        .metrics
        .record_request(raw_key, result.is_err(), started.elapsed());
    result
}

async fn dispatch(shard: &Rc<Shard>, mut frame: Bytes) -> Result<Option<Response>, HandleError> {
    let raw_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let api = ApiKey::try_from(raw_key).map_err(|_| HandleError::UnknownApi(raw_key))?;
    let Some(supported) = protocol::supported(api) else {
        return Err(HandleError::UnsupportedApi { api });
    };
    if version < supported.min_decodable || version > supported.max_version {
        if api == ApiKey::ApiVersions {
            // Kafka answers an ApiVersions it cannot parse with UNSUPPORTED_VERSION in v0, listing
            // what it does support, so the client can retry with a version both know.
            let correlation_id = (&frame[4..8]).get_i32();
            return Ok(Some(Response::bytes(api_versions::unsupported(
                correlation_id,
            ))));
        }
        return Err(HandleError::UnsupportedVersion {
            api,
            version,
            min: supported.min_decodable,
            max: supported.max_version,
        });
    }
    let malformed = |e: anyhow::Error| HandleError::Malformed {
        api,
        version,
        message: e.to_string(),
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(malformed)?;
    let request = RequestKind::decode(api, &mut frame, version).map_err(malformed)?;
    let response: ResponseKind = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(r)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shard, &header, r).await)
        }
        RequestKind::Produce(r) => match produce::handle(shard, r).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Ok(None),
        },
        RequestKind::Fetch(r) => return fetch::handle(shard, &header, r).await.map(Some),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(shard, version, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(shard, &header, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(shard, &header, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(shard, &header, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(shard, r).await)
        }
        _ => return Err(HandleError::UnsupportedApi { api }),
    };
    let bytes = encode_response(&header, api, &response).map_err(|e| HandleError::Encode {
        api,
        version,
        message: e.to_string(),
    })?;
    Ok(Some(Response::bytes(bytes)))
}

/// Kafka's error code for a result, 0 for success.
pub(crate) fn code(error: Option<kafka_protocol::ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub(crate) fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_owned())
}

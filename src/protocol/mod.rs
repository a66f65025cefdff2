//! The Kafka wire protocol at skein's edge: framing, the one table of supported APIs and versions
//! (as Redpanda's handlers.h), and response encoding. Message codecs come from `kafka-protocol`,
//! generated from Kafka's own specs; nothing here hand-writes a message.
//!
//! Runs on whichever shard accepted the connection.

pub mod frame;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// One supported API: the versions skein advertises and the versions it can actually decode.
#[derive(Debug, Clone, Copy)]
pub struct SupportedApi {
    pub key: ApiKey,
    /// Lowest version advertised in ApiVersions.
    pub min_version: i16,
    pub max_version: i16,
    /// Lowest version `kafka-protocol` decodes; requests between `min_version` and this are refused
    /// with a logged error (see `Produce` below).
    pub min_decodable: i16,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        key,
        min_version,
        max_version,
        min_decodable: min_version,
    }
}

/// Every API skein serves. Max versions stop short of topic-id-only versions (Produce 13, Fetch 13+),
/// because skein's clients address topics by name.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    // Produce is advertised from v0 because some clients read a broker's age from the minimum
    // versions; message formats v0/v1 (Produce v0-2) are not accepted and no client that speaks
    // ApiVersions picks them when v3+ is offered.
    SupportedApi {
        key: ApiKey::Produce,
        min_version: 0,
        max_version: 11,
        min_decodable: 3,
    },
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::InitProducerId, 0, 4),
];

pub fn supported(key: ApiKey) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|api| api.key == key)
}

/// Encodes `response` with its header as a complete frame (4-byte length prefix included).
pub fn encode_response(
    header: &RequestHeader,
    api_key: ApiKey,
    response: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let version = header.request_api_version;
    // ApiVersions always answers with header v0, so a client that sent a version we don't know can
    // still read the error and the list of versions we do.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        response.header_version(version)
    };
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    response_header.encode(&mut buf, header_version)?;
    response.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Encodes a response body that is not a [`ResponseKind`]-wide enum member at a forced version.
pub fn encode_with_header<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> anyhow::Result<Bytes> {
    let response_header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    response_header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

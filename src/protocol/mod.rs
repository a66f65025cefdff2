//! The Kafka wire protocol at skein's edge: framing and response encoding. The table of
//! supported APIs and versions lives beside their handlers (`server::handlers::APIS`). Message codecs come from `kafka-protocol`,
//! generated from Kafka's own specs; nothing here hand-writes a message.
//!
//! Runs on whichever shard accepted the connection.

pub mod frame;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

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

//! Pipelined requests on one connection: a writer half that sends requests without waiting and a
//! reader half that takes responses in the order Kafka guarantees (the order of the requests).
//!
//! The two halves are meant for two tasks on the same tokio runtime (the bench runs one
//! current-thread runtime per core). The caller keeps its own queue of what is in flight (with
//! whatever it needs to account for each request) and hands the reader the correlation id and
//! version it expects next; a mismatch means the stream is out of step and is an error, not a
//! panic.

use anyhow::{anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The largest response frame the reader accepts; anything larger is a broken stream.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// Sends requests; never waits for responses.
pub struct PipelineWriter {
    stream: OwnedWriteHalf,
    next_correlation_id: i32,
    buf: BytesMut,
    client_id: StrBytes,
}

/// Receives responses in request order.
pub struct PipelineReader {
    stream: OwnedReadHalf,
    buf: BytesMut,
}

pub(crate) fn split(
    stream: tokio::net::TcpStream,
    next_correlation_id: i32,
) -> (PipelineWriter, PipelineReader) {
    let (read, write) = stream.into_split();
    (
        PipelineWriter {
            stream: write,
            next_correlation_id,
            buf: BytesMut::with_capacity(64 * 1024),
            client_id: StrBytes::from_static_str("skein-bench"),
        },
        PipelineReader {
            stream: read,
            buf: BytesMut::with_capacity(256 * 1024),
        },
    )
}

impl PipelineWriter {
    /// Encodes and writes one request; returns its correlation id. The request's own buffers
    /// (e.g. a ProduceRequest's record batches) are copied once into the frame.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        encode_request(
            &mut self.buf,
            request,
            version,
            correlation_id,
            &self.client_id,
        )?;
        self.stream.write_all(&self.buf).await?;
        // Keep the buffer from growing without bound after one huge request.
        if self.buf.capacity() > 16 << 20 {
            self.buf = BytesMut::with_capacity(64 * 1024);
        }
        Ok(correlation_id)
    }
}

impl PipelineReader {
    /// Reads the next whole response frame (without its length prefix). The returned `Bytes`
    /// is split off the read buffer, so record data in it is not copied again.
    pub async fn next_frame(&mut self) -> anyhow::Result<Bytes> {
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if len < 0 || len as usize > MAX_FRAME_BYTES {
                    bail!("broker sent a response frame of {len} bytes");
                }
                let len = len as usize;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(self.buf.split_to(len).freeze());
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else {
                self.buf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Reads the next response and decodes it as `R::Response`, checking that it answers the
    /// request with `correlation_id`.
    pub async fn receive<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let frame = self.next_frame().await?;
        decode_response::<R>(frame, correlation_id, version)
    }
}

/// Encodes `request` with its header as one length-prefixed frame into `buf` (cleared first).
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> anyhow::Result<()> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    buf.clear();
    buf.put_i32(0);
    header.encode(buf, api.request_header_version(version))?;
    request.encode(buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes one response frame (length prefix removed) for a request of type `R`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    correlation_id: i32,
    version: i16,
) -> anyhow::Result<R::Response> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
    // ApiVersions responses always carry header v0.
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let response_correlation = if header_version == 0 {
        if frame.remaining() < 4 {
            bail!("{api:?} response of {} bytes has no header", frame.len());
        }
        frame.get_i32()
    } else {
        ResponseHeader::decode(&mut frame, header_version)?.correlation_id
    };
    if response_correlation != correlation_id {
        bail!("{api:?} response correlation id {response_correlation} does not match request {correlation_id}");
    }
    R::Response::decode(&mut frame, version)
}

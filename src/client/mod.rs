//! The lean Kafka client that skein's own tools share (`skein topics`, and later `bench`, `mirror`
//! and `groups`): one TCP connection, requests encoded with `kafka-protocol`, versions negotiated
//! with ApiVersions. Runs on a tokio runtime owned by the tool.
//!
//! - [`Connection`]: one request at a time (admin commands).
//! - [`pipeline`]: the same connection split into a writer and a reader half, several requests in
//!   flight (the bench's producers and consumers).
//! - [`cluster`]: bootstrap, metadata and leader discovery, topic creation, list offsets.
//! - [`groups`]: consumer-group administration (coordinators, describe, offsets, delete).

pub mod cluster;
pub mod groups;
pub mod pipeline;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Connection {
    addr: String,
    stream: TcpStream,
    next_correlation_id: i32,
    /// Highest version the broker serves, per API key.
    broker_versions: HashMap<i16, (i16, i16)>,
    pub timeout: Duration,
}

impl Connection {
    /// Connects to `addr` (host:port) and learns the broker's API versions.
    pub async fn connect(addr: &str) -> anyhow::Result<Connection> {
        let timeout = Duration::from_secs(30);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            addr: addr.to_owned(),
            stream,
            next_correlation_id: 1,
            broker_versions: HashMap::new(),
            timeout,
        };
        let versions: ApiVersionsResponse = connection
            .send_version(ApiVersionsRequest::default(), 0)
            .await?;
        if versions.error_code != 0 {
            bail!(
                "{addr}: ApiVersions failed with error code {}",
                versions.error_code
            );
        }
        connection.broker_versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    /// The highest version of `R` both sides know.
    pub fn version_of<R: Request>(&self) -> anyhow::Result<i16> {
        let (min, max) = self
            .broker_versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| anyhow!("the broker does not serve API key {}", R::KEY))?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            bail!("no common version for API key {}", R::KEY);
        }
        Ok(version)
    }

    pub async fn send<R: Request>(&mut self, request: R) -> anyhow::Result<R::Response> {
        let version = self.version_of::<R>()?;
        self.send_version(request, version).await
    }

    pub async fn send_version<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut buf = BytesMut::with_capacity(256);
        pipeline::encode_request(
            &mut buf,
            &request,
            version,
            correlation_id,
            &StrBytes::from_static_str("skein"),
        )?;
        let frame = tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&buf).await?;
            let len = self.stream.read_i32().await?;
            if len < 0 || len as usize > pipeline::MAX_FRAME_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the broker sent a response frame of {len} bytes"),
                ));
            }
            let len = len as usize;
            // malloc + memset, not calloc (which `vec![0; len]` is): see
            // protocol::frame::read_body.
            #[allow(clippy::slow_vector_initialization)]
            let mut frame = Vec::with_capacity(len);
            frame.resize(len, 0);
            self.stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(Bytes::from(frame))
        })
        .await
        .map_err(|_| anyhow!("{api:?} request timed out"))??;
        pipeline::decode_response::<R>(frame, correlation_id, version)
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Splits the connection into halves for pipelined requests (see [`pipeline`]). Learn the
    /// versions to use with [`Connection::version_of`] first.
    pub fn into_pipeline(self) -> (pipeline::PipelineWriter, pipeline::PipelineReader) {
        pipeline::split(self.stream, self.next_correlation_id)
    }
}

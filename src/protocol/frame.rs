//! Kafka framing: every request and response is a 4-byte big-endian length, then that many bytes.

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt};

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default, 100 MiB); a longer
/// length prefix is a broken or hostile peer and the connection is closed.
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("request frame of {0} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("request frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame. The body is read into its own buffer so that the batches a Produce request
/// carries can be sliced out of it and moved to other shards without copying.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = reader.read_exact(&mut len).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        });
    }
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len).map_err(|_| FrameError::TooShort(0))?;
    if len > MAX_REQUEST_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    // api_key + api_version + correlation_id is the least any request header holds.
    if len < 8 {
        return Err(FrameError::TooShort(len));
    }
    // Not `BytesMut::zeroed`: jemalloc serves a large calloc from a recycled extent by purging
    // it (MADV_DONTNEED), so every page of every request would be faulted in again by the
    // kernel's receive copy (with TLB shootdowns). malloc + memset reuses warm pages.
    let mut body = BytesMut::with_capacity(len);
    body.resize(len, 0);
    reader.read_exact(&mut body).await?;
    Ok(body.freeze())
}

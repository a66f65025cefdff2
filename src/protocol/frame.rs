//! Kafka framing: every request and response is a 4-byte big-endian length, then that many bytes.
//! The length is read and checked first ([`read_length`]), so the caller can reserve memory for
//! the body before [`read_body`] allocates it.

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt};

/// api_key + api_version + correlation_id: the least any request header holds.
pub const MIN_REQUEST_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("request frame of {len} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { len: u64, max: u64 },
    #[error("request frame of {0} bytes is too short for a request header")]
    TooShort(i64),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a frame's length prefix and checks it against `max_bytes` and the smallest header.
pub async fn read_length<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: u64,
) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = reader.read_exact(&mut len).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        });
    }
    let len = i32::from_be_bytes(len);
    if len < MIN_REQUEST_BYTES as i32 {
        return Err(FrameError::TooShort(len.into()));
    }
    if len as u64 > max_bytes {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max_bytes,
        });
    }
    Ok(len as usize)
}

/// Reads a frame's body of `len` bytes into its own buffer, so that the batches a Produce request
/// carries can be sliced out of it and moved to other shards without copying.
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> Result<Bytes, FrameError> {
    // Not `BytesMut::zeroed`: jemalloc serves a large calloc from a recycled extent by purging
    // it (MADV_DONTNEED), so every page of every request would be faulted in again by the
    // kernel's receive copy (with TLB shootdowns). malloc + memset reuses warm pages.
    let mut body = BytesMut::with_capacity(len);
    body.resize(len, 0);
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(body.freeze())
}

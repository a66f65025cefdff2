//! A response as a gather list: encoded framing pieces around record data that is never copied into
//! the response buffer. Cached batches go out with one vectored `sendmsg` when the socket takes
//! them; batches only on disk go from the segment file to the socket with sendfile on the shard's
//! blocking-thread pool, so the executor never waits on it.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use futures::{AsyncWrite, AsyncWriteExt};

pub enum ResponsePiece {
    Bytes(Bytes),
    File {
        file: Arc<std::fs::File>,
        position: u64,
        len: u32,
    },
}

#[derive(Default)]
pub struct Response {
    pub pieces: Vec<ResponsePiece>,
}

impl Response {
    pub fn bytes(bytes: Bytes) -> Self {
        Response {
            pieces: vec![ResponsePiece::Bytes(bytes)],
        }
    }

    /// The response's length if it is all in memory (no segment-file piece), else `None`.
    pub fn in_memory_len(&self) -> Option<usize> {
        self.pieces.iter().try_fold(0, |total, piece| match piece {
            ResponsePiece::Bytes(bytes) => Some(total + bytes.len()),
            ResponsePiece::File { .. } => None,
        })
    }

    /// Writes every piece in order to `stream`, whose descriptor is `socket` (for sendfile).
    pub async fn write_to<W: AsyncWrite + Unpin>(
        self,
        stream: &mut W,
        socket: RawFd,
    ) -> std::io::Result<()> {
        let mut pending: Vec<Bytes> = Vec::new();
        for piece in self.pieces {
            match piece {
                ResponsePiece::Bytes(bytes) => pending.push(bytes),
                ResponsePiece::File {
                    file,
                    position,
                    len,
                } => {
                    write_all_vectored(stream, socket, &mut pending).await?;
                    // The blocking thread gets its own descriptor of the socket: if the
                    // connection is closed meanwhile (its watchdog, a cancelled task), the
                    // number `socket` may be reused for another client's connection, which must
                    // never receive this data. The duplicate keeps this socket until done.
                    // SAFETY: `socket` is this connection's open descriptor for this call.
                    let own = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) }
                        .try_clone_to_owned()?;
                    glommio::executor()
                        .spawn_blocking(move || {
                            sendfile_all(own.as_raw_fd(), &file, position, len as usize)
                        })
                        .await?;
                }
            }
        }
        write_all_vectored(stream, socket, &mut pending).await?;
        stream.flush().await
    }
}

/// Writes `pieces` in order: as much as the socket takes at once with non-blocking `sendmsg`
/// calls (one system call for a whole response in the common case), the rest through the stream,
/// which waits for the socket on the shard's ring.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    stream: &mut W,
    socket: RawFd,
    pieces: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut sent = send_now(socket, pieces)?;
    for piece in pieces.drain(..) {
        if sent >= piece.len() {
            sent -= piece.len();
            continue;
        }
        stream.write_all(&piece[sent..]).await?;
        sent = 0;
    }
    Ok(())
}

/// Linux's UIO_MAXIOV: the most iovecs one sendmsg accepts.
const MAX_IOVECS: usize = 1024;

/// Sends from the front of `pieces` without waiting; returns how many bytes the socket took
/// (0 if its buffer is full).
fn send_now(socket: RawFd, pieces: &[Bytes]) -> std::io::Result<usize> {
    let mut total = 0;
    for group in pieces.chunks(MAX_IOVECS) {
        let mut iovecs: Vec<libc::iovec> = group
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let wanted: usize = group.iter().map(Bytes::len).sum();
        // SAFETY: a zeroed msghdr is valid; it points at `iovecs`, which outlive the call and
        // describe live `Bytes`.
        let sent = unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = iovecs.as_mut_ptr();
            message.msg_iovlen = iovecs.len() as _;
            libc::sendmsg(socket, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(total),
                _ => Err(error),
            };
        }
        total += sent as usize;
        if (sent as usize) < wanted {
            break;
        }
    }
    Ok(total)
}

/// Sends `len` bytes of `file` from `position` to the socket. Runs on the blocking pool: the socket
/// is non-blocking, so a full send buffer is waited out with poll(2) instead of spinning.
fn sendfile_all(
    socket: RawFd,
    file: &std::fs::File,
    position: u64,
    len: usize,
) -> std::io::Result<()> {
    let mut offset = position as libc::off_t;
    let mut remaining = len;
    while remaining > 0 {
        // SAFETY: both descriptors are open for the duration of the call (the caller owns a
        // duplicate of the socket's descriptor; `file` is borrowed); `offset` is a valid off_t.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, remaining) };
        if sent > 0 {
            remaining -= sent as usize;
            continue;
        }
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment file shorter than its index says",
            ));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd: socket,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a 10 s bound so a dead peer cannot pin the thread forever.
                let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
                if ready == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client stopped reading a fetch response",
                    ));
                }
            }
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(error),
        }
    }
    Ok(())
}

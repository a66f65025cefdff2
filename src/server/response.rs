//! A response as a gather list: encoded framing pieces around record data that is never copied into
//! the response buffer. Cached batches go out with a vectored write; batches only on disk go from
//! the segment file to the socket with sendfile on the shard's blocking-thread pool, so the executor
//! never waits on it.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use futures::AsyncWriteExt;
use glommio::net::TcpStream;

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

    /// Writes every piece in order.
    pub async fn write_to(self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut pending: Vec<Bytes> = Vec::new();
        for piece in self.pieces {
            match piece {
                ResponsePiece::Bytes(bytes) => pending.push(bytes),
                ResponsePiece::File {
                    file,
                    position,
                    len,
                } => {
                    write_all_vectored(stream, &mut pending).await?;
                    let socket = stream.as_raw_fd();
                    glommio::executor()
                        .spawn_blocking(move || sendfile_all(socket, &file, position, len as usize))
                        .await?;
                }
            }
        }
        write_all_vectored(stream, &mut pending).await?;
        stream.flush().await
    }
}

async fn write_all_vectored(
    stream: &mut TcpStream,
    pieces: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    for piece in pieces.drain(..) {
        stream.write_all(&piece).await?;
    }
    Ok(())
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
        // SAFETY: both descriptors are open for the duration of the call (the socket is owned by the
        // connection awaiting this closure; `file` is borrowed); `offset` is a valid off_t.
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

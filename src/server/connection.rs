//! One client connection, on the shard that accepted it. Requests are pipelined: a reader task
//! reads frames and starts each request's handler as soon as it arrives, while this task awaits the
//! handlers in arrival order and writes their responses, so responses leave in request order as
//! Kafka requires while a produce waits for its write. Handlers start in arrival order (glommio
//! runs spawned tasks first-in first-out), so a partition's appends from one connection keep their
//! order too.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use futures::channel::mpsc;
use futures::{AsyncReadExt, SinkExt, StreamExt};
use glommio::net::TcpStream;
use tracing::{debug, warn};

use super::handlers;
use crate::protocol::frame::{read_frame, FrameError};
use crate::shard::Shard;

/// Requests of one connection being handled at once; the reader waits when this many are
/// unanswered. Clients keep far fewer in flight (Kafka's default is 5).
const PIPELINE_DEPTH: usize = 64;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown peer".to_owned());
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{peer}: cannot set TCP_NODELAY: {e}");
    }
    shard.wait_ready().await;
    let socket = stream.as_raw_fd();
    let (mut reader, mut writer) = stream.split();
    let (mut started, mut in_order) = mpsc::channel(PIPELINE_DEPTH);
    // Dropped (cancelled) when this function returns, whichever side ended the connection.
    let _reading = glommio::spawn_local({
        let shard = shard.clone();
        let peer = peer.clone();
        async move {
            loop {
                let frame = match read_frame(&mut reader).await {
                    Ok(frame) => frame,
                    Err(FrameError::Closed) => return,
                    Err(e) => {
                        warn!("{peer}: {e}; closing the connection");
                        return;
                    }
                };
                let shard = shard.clone();
                let handling =
                    glommio::spawn_local(async move { handlers::handle(&shard, frame).await });
                if started.send(handling).await.is_err() {
                    return;
                }
            }
        }
    });
    while let Some(handling) = in_order.next().await {
        match handling.await {
            Ok(Some(response)) => {
                if let Err(e) = response.write_to(&mut writer, socket).await {
                    debug!("{peer}: writing a response failed: {e}");
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!("{peer}: {e}; closing the connection");
                return;
            }
        }
    }
}

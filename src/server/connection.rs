//! One client connection, on the shard that accepted it. Requests are read, handled and answered one
//! at a time, so responses leave in request order as Kafka requires.

use std::rc::Rc;

use glommio::net::TcpStream;
use tracing::{debug, warn};

use super::handlers;
use crate::protocol::frame::{read_frame, FrameError};
use crate::shard::Shard;

pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown peer".to_owned());
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{peer}: cannot set TCP_NODELAY: {e}");
    }
    shard.wait_ready().await;
    loop {
        let frame = match read_frame(&mut stream).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return,
            Err(e) => {
                warn!("{peer}: {e}; closing the connection");
                return;
            }
        };
        match handlers::handle(&shard, frame).await {
            Ok(Some(response)) => {
                if let Err(e) = response.write_to(&mut stream).await {
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

//! The `/metrics` endpoint: a deliberately tiny HTTP/1.1 server on the control thread's tokio
//! runtime. It answers `GET /metrics` and nothing else, one request per connection (the response
//! says `Connection: close`), which is all Prometheus and curl need.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::exposition::{self, CONTENT_TYPE};
use crate::shard::ShardSenders;

/// A request head longer than this is refused (Prometheus sends a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client gets to send its request, and a scrape to write its answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shards get to answer a scrape.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more connections wait for a slot. Keeps a flood of scrapers from
/// queueing unbounded jobs on the shards.
const MAX_CONCURRENT: usize = 8;

/// Serves until the process exits. `listener` was bound by the main thread, so a port in use is a
/// start-up error rather than a log line.
pub async fn serve(listener: std::net::TcpListener, broker_id: i32, shards: ShardSenders) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => {
            warn!("metrics.listener: cannot serve metrics: {e}");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!("serving metrics at http://{addr}/metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("metrics.listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let shards = shards.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                CLIENT_TIMEOUT + SHARD_TIMEOUT,
                answer(stream, broker_id, &shards),
            )
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics client {peer}: {e}"),
                Err(_) => debug!("metrics client {peer}: timed out"),
            }
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    broker_id: i32,
    shards: &ShardSenders,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(CLIENT_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match route(head.as_deref()) {
        Route::Metrics => match super::collect(shards, SHARD_TIMEOUT).await {
            Ok(snapshots) => (
                "200 OK",
                CONTENT_TYPE,
                exposition::render(broker_id, &snapshots),
            ),
            Err(e) => {
                warn!("metrics scrape failed: {e}");
                ("503 Service Unavailable", "text/plain", format!("{e}\n"))
            }
        },
        Route::NotFound => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
        Route::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head. `None` if it is too long or the client stops early.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: Option<&[u8]>) -> Route {
    let Some(head) = head else {
        return Route::BadRequest;
    };
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |s: &str| route(Some(s.as_bytes()));
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(r("GET /metrics?name[]=x HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(r("garbage\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(None), Route::BadRequest);
    }
}

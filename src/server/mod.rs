//! A shard's server side: its SO_REUSEPORT listener, the connections it accepted, the job queue other
//! shards and the control thread feed, and its background upkeep. Runs inside one shard's executor.

pub mod budget;
mod connection;
pub mod handlers;
pub mod limits;
mod log_limit;
mod response;

pub use response::{Response, ResponsePiece};

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::{Latency, Shares};
use tracing::{error, warn};

use crate::clock::now_ms;
use crate::shard::{Job, Shard};
use limits::ConnectionLimits;

/// Serves one shard until the process exits. `connection_limits` are `max.connections` and
/// `max.connections.per.ip`, counted across every shard.
pub async fn run_shard(
    shard: Rc<Shard>,
    jobs: flume::Receiver<Job>,
    addr: SocketAddr,
    connection_limits: Arc<ConnectionLimits>,
) {
    let runner = shard.clone();
    glommio::spawn_local(async move {
        while let Ok(job) = jobs.recv_async().await {
            runner.metrics.job_received();
            job(&runner);
        }
    })
    .detach();

    // Retention, flush and time-based rolls run at lower shares so they cannot add tail latency to
    // produce and fetch.
    let background = glommio::executor().create_task_queue(
        Shares::Static(shard.tuning.background_shares),
        Latency::NotImportant,
        "background",
    );
    glommio::spawn_local_into(upkeep(shard.clone()), background)
        .map(|task| task.detach())
        .unwrap_or_else(|e| panic!("shard {}: cannot start background task: {e}", shard.id));

    glommio::spawn_local(crate::shard::coordinator::tick(shard.clone())).detach();

    let budget = budget::RequestBudget::new(
        shard
            .config
            .limits
            .request_budget_per_shard(shard.senders.len()),
    );
    let listener = match bind_with_retries(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            error!("shard {}: cannot listen on {addr}: {e}", shard.id);
            std::process::exit(1);
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                warn!("shard {}: accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.metrics.connections_active() >= shard.tuning.max_connections as u64 {
            shard.metrics.connection_refused();
            log_limit::warn("connection refused", || {
                format!(
                    "shard {}: refusing a connection: max_connections ({}) of this shard reached",
                    shard.id, shard.tuning.max_connections
                )
            });
            continue;
        }
        let peer_ip = stream
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let slot = match connection_limits.admit(peer_ip) {
            Ok(slot) => slot,
            Err(refused) => {
                shard.metrics.connection_refused();
                log_limit::warn("connection refused", || {
                    format!("shard {}: refusing a connection: {refused}", shard.id)
                });
                continue;
            }
        };
        shard.metrics.connection_opened();
        let (shard, budget) = (shard.clone(), budget.clone());
        glommio::spawn_local(async move {
            connection::serve(shard.clone(), stream, budget, slot).await;
            shard.metrics.connection_closed();
        })
        .detach();
    }
}

/// Binds the shard's SO_REUSEPORT listener. The broker has already made sure no other listener
/// holds the port, yet a shard's bind has been seen to fail with EADDRINUSE right beside its
/// sibling's successful one (in CI, once, with sockets of an earlier process still lingering on
/// the port), so EADDRINUSE is retried for a second before giving up.
async fn bind_with_retries(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(glommio::GlommioError::IoError(e))
                if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 20 =>
            {
                attempts += 1;
                warn!("cannot listen on {addr} yet ({e}); retrying");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// Rolls, flushes and enforces retention on this shard's partitions.
async fn upkeep(shard: Rc<Shard>) {
    let retention_interval_ms = shard.config.log_retention_check_interval_ms;
    let mut next_retention_ms = now_ms() + retention_interval_ms.min(30_000);
    loop {
        glommio::timer::sleep(Duration::from_millis(500)).await;
        let now = now_ms();
        let retention_due = now >= next_retention_ms;
        if retention_due {
            next_retention_ms = now + retention_interval_ms;
        }
        for partition in shard.partitions() {
            partition.maintain(now, retention_due);
            glommio::yield_if_needed().await;
        }
    }
}

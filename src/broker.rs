//! Starting and stopping a broker's threads: the shards (glommio executors pinned to their cores),
//! the control thread and the checkpoint thread. The main thread only waits for SIGTERM/SIGINT,
//! then asks every shard to close its partitions cleanly and has the checkpoint thread write the
//! log directory's final recovery-point checkpoint.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};
use tracing::{error, info, warn};

use crate::cluster::control;
use crate::config::BrokerConfig;
use crate::server;
use crate::server::limits::ConnectionLimits;
use crate::shard::{checkpoint, ControlHandle, Job, Shard, ShardSenders};

/// Runs a broker until SIGTERM or SIGINT. Returns an error if it cannot start.
pub fn run_broker(config: BrokerConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let listener = config.listeners[0].clone();
    let addr = listener.socket_addr().map_err(anyhow::Error::msg)?;
    refuse_if_port_taken(addr)?;
    // Bound here, before any thread starts, so a taken port stops the broker with a clear error.
    let metrics_listener = config
        .metrics_listener
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics.listener): {e}"))
        })
        .transpose()?;
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create log.dirs {}: {e}", config.log_dir.display()))?;
    // Held until the process ends: no second broker can use this log directory.
    let _log_dir_lock = crate::cluster::broker_dir::LogDirLock::acquire(&config.log_dir)?;

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let first_core = config.tuning.defaults.first_core;
    let shard_count = config
        .num_shards
        .unwrap_or(cores.len().saturating_sub(first_core).max(1));
    // Block the stop signals before any thread starts, so every thread inherits the mask and only
    // the main thread's sigwait sees them.
    let signals = block_stop_signals();

    let (senders, job_receivers): (ShardSenders, _) = crate::mesh::job_queues(shard_count);
    let (control, control_rx) = ControlHandle::channel();
    let connection_limits = ConnectionLimits::new(&config.limits);
    // Read before any shard opens a partition: it says where each log's recovery starts.
    let (checkpointer, recovery_points) = checkpoint::start(
        config.log_dir.clone(),
        // One thread writes both checkpoints, as often as the more frequent one asks.
        Duration::from_millis(
            config
                .log_flush_offset_checkpoint_interval_ms
                .min(config.replica_high_watermark_checkpoint_interval_ms),
        ),
        senders.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot start the checkpoint thread: {e}"))?;

    let mut shards = Vec::with_capacity(shard_count);
    for (id, jobs) in job_receivers.into_iter().enumerate() {
        let tuning = config.tuning.shard(id);
        let core = tuning.core.unwrap_or(id);
        let (placement, pool) = if core < cores.len().max(1) {
            let this_core = CpuSet::online()
                .map_err(|e| anyhow::anyhow!("cannot list CPUs: {e}"))?
                .filter(|cpu| cpu.cpu == core);
            (
                Placement::Fixed(core),
                PoolPlacement::Custom(vec![this_core; tuning.blocking_threads]),
            )
        } else {
            (
                Placement::Unbound,
                PoolPlacement::Unbound(tuning.blocking_threads),
            )
        };
        let builder = LocalExecutorBuilder::new(placement)
            .blocking_thread_pool_placement(pool)
            .name(&format!("skein-shard-{id}"))
            .io_memory(tuning.io_memory_bytes)
            .ring_depth(tuning.ring_depth)
            .spin_before_park(Duration::from_micros(tuning.spin_before_park_us));
        let (config, senders, control, connection_limits) = (
            config.clone(),
            senders.clone(),
            control.clone(),
            connection_limits.clone(),
        );
        let recovery_points = recovery_points.clone();
        let handle = builder
            .spawn(move || async move {
                let shard = match Shard::new(id, config, tuning, senders, control, recovery_points)
                {
                    Ok(shard) => Rc::new(shard),
                    Err(e) => {
                        error!("shard {id}: cannot start its segment writer thread: {e}");
                        std::process::exit(1);
                    }
                };
                server::run_shard(shard, jobs, addr, connection_limits).await;
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {id} on core {core}: {e}"))?;
        shards.push(handle);
    }
    info!(
        "broker {} started {shard_count} shard(s) listening on {addr}",
        config.broker_id
    );

    let control_core = cores.first().copied();
    control::spawn(
        config.clone(),
        senders.clone(),
        control_rx,
        metrics_listener,
        control_core,
    )?;
    let control_handle = control;

    let signal = wait_for_signal(&signals);
    if config.controlled_shutdown_enable {
        info!("received {signal}; asking the controller to move this broker's leaderships");
        // Each attempt is bounded (10 s) and followed by the backoff.
        let attempts = config.controlled_shutdown_max_retries.clamp(1, 100) as u32;
        let backoff = Duration::from_millis(config.controlled_shutdown_retry_backoff_ms as u64);
        control_handle.controlled_shutdown((Duration::from_secs(10) + backoff) * attempts);
    }
    info!("closing partitions");
    let (ack_tx, ack_rx) = flume::unbounded();
    let mut asked = 0;
    for shard in 0..senders.len() {
        let ack = ack_tx.clone();
        let job: Job = Box::new(move |shard| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let closed = shard.shut_down(Duration::from_secs(10)).await;
                let _ = ack.send(closed);
            })
            .detach();
        });
        asked += usize::from(
            senders
                .send_blocking(shard, job, Duration::from_secs(5))
                .is_ok(),
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut closed = Vec::new();
    for _ in 0..asked {
        match ack_rx.recv_deadline(deadline) {
            Ok(points) => closed.extend(points),
            Err(_) => {
                warn!("a shard did not close its partitions within 20 s");
                break;
            }
        }
    }
    checkpointer.stop(closed, Duration::from_secs(5));
    control_handle.shut_down(Duration::from_secs(5));
    info!("broker {} stopped", config.broker_id);
    // The executors never return on their own (they serve forever); leaving them to process exit is
    // what closes their sockets and rings.
    drop(shards);
    std::process::exit(0);
}

/// glommio binds every listener with SO_REUSEPORT, so a second broker on the same port would bind
/// silently and take half the connections. Refuse to start if anything is listening there.
fn refuse_if_port_taken(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let in_use = match std::net::TcpListener::bind(addr) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => e,
        Err(e) => anyhow::bail!("cannot listen on {addr} (listeners): {e}"),
    };
    // A plain bind also fails while connections of a killed predecessor linger in FIN_WAIT on the
    // port; only a listener answers a connect, so that is the test of "another broker".
    let target = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    // A killed predecessor's listener can also outlive it briefly: io_uring tears a dead
    // process's ring down asynchronously, and a pending accept keeps the socket listening until
    // then. So give it a few seconds to go before deciding another broker holds the port.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "cannot listen on {addr} (listeners): {in_use}; is another broker running there?"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed, then initialised, sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            error!("cannot block SIGTERM/SIGINT; a stop signal will kill the broker without a clean close");
        }
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> &'static str {
    let mut signal = 0;
    // SAFETY: `set` was initialised by block_stop_signals; sigwait writes the caught signal number.
    unsafe { libc::sigwait(set, &mut signal) };
    if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

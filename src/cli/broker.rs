//! `skein broker --config FILE`.

use std::path::PathBuf;

use clap::Args;

use crate::config::BrokerConfig;

#[derive(Args)]
pub struct BrokerArgs {
    /// Broker config (TOML with Kafka's setting names, e.g. `broker.id = 1`).
    #[arg(long, short)]
    config: PathBuf,
}

/// Exit code of a broker stopped by a panic (Rust's own code for a panicking process).
pub const PANIC_EXIT_CODE: i32 = 101;

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(&args.config)?;
    stop_on_panic();
    crate::broker::run_broker(config)
}

/// A panic on any thread (a shard, the control thread, a writer, a blocking-pool thread) stops
/// the whole broker at once: a half-alive broker that stays registered in ZooKeeper and keeps
/// its partitions is worse than a dead one, whose partitions the cluster can move.
pub fn stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        tracing::error!(
            "panic on thread '{}': {info}; stopping the broker",
            thread.name().unwrap_or("unnamed")
        );
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

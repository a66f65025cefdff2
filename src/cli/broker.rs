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

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(&args.config)?;
    crate::shard::run_broker(config)
}

//! The `skein` command line: one file per subcommand.

mod bench;
pub mod broker;
mod groups;
mod topics;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skein",
    version,
    about = "A Kafka-compatible message broker, thread-per-core"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Broker(broker::BrokerArgs),
    /// Create, list, describe and delete topics on a running cluster.
    Topics(topics::TopicsArgs),
    /// List, describe, reset the offsets of and delete consumer groups on a running cluster.
    Groups(groups::GroupsArgs),
    /// Load generator: produce, consume (plain or in a group), e2e or commit against any
    /// Kafka-compatible broker.
    Bench(Box<bench::BenchArgs>),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Groups(args) => groups::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level. Installed before anything else
/// runs, so glommio's own warnings (e.g. about locked memory) are seen.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

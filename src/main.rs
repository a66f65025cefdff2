//! `skein`: a Kafka-compatible message broker, thread-per-core. This file only parses the command
//! line and hands off to `cli`.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    skein::cli::init_logging();
    let cli = skein::cli::Cli::parse();
    match skein::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

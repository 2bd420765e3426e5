//! `herald-bench`: load and memory benchmarks for Herald (and other SSE servers).
//!
//! - `idle`: holds idle SSE streams, or idle WebSockets speaking the Centrifuge
//!   protocol, in steps and reports the server's resident memory per connection.
//!
//! Connections are held by worker processes (copies of this binary) so that a run
//! can exceed one process's open-file limit; see `worker`.

mod args;
mod client;
mod idle;
mod report;
mod rss;
mod target;
mod tls;
mod worker;
mod ws;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks for Herald: memory per idle connection (more scenarios to come).
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold idle SSE streams (http:// and https:// URLs) or idle Centrifuge-protocol
    /// WebSockets (ws:// and wss://) in growing steps and report how much the
    /// server's resident memory (RSS) grows per connection.
    Idle(Box<idle::IdleArgs>),
    /// Hold connections for a coordinating herald-bench (internal; JSON lines on
    /// stdin and stdout).
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Idle(args) => match runtime.block_on(idle::run(*args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herald-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Worker => runtime.block_on(worker::serve()),
    }
}

//! `herald-bench`: load and memory benchmarks for Herald and for other servers
//! (nginx+nchan, Pushpin), measured the same way.
//!
//! - `fanout`: subscribers on channels, publications at fixed rates in steps;
//!   delivery latency (HdrHistogram), losses, duplicates, CPU per delivery.
//! - `storm`: every subscriber connects at once; time until all are subscribed,
//!   then whether each receives a probe.
//! - `idle`: idle connections in steps; the server's memory per connection.
//!
//! Subscribers speak Herald's Centrifuge protocol, SSE or raw WebSocket, over
//! HTTP/1.1 or HTTP/2, and are held by worker processes (copies of this binary, see `worker`) so that a run
//! can exceed one process's open-file limit; the coordinating process publishes.
//! A subscriber URL may carry a token per connection (`{token}`, see `token`).

mod args;
mod chart;
mod client;
mod clock;
mod dial;
mod fanout;
mod h2_stream;
mod http1;
mod http2;
mod idle;
mod latency;
mod measure;
mod payload;
mod procfs;
mod publisher;
mod report;
mod storm;
mod subscriber;
mod tally;
mod target;
mod template;
mod tls;
mod token;
mod worker;
mod ws;
mod ws_frame;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks for Herald and its peers: fan-out latency and throughput,
/// connection storms, memory per idle connection.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N subscribers on C channels, publish at fixed rates (one step per
    /// rate, open loop) and report per step the delivery latency percentiles,
    /// deliveries/s, losses, duplicates, and the CPU per delivery of the server
    /// (--server-pid and its descendants) and of this tool.
    Fanout(Box<fanout::FanoutArgs>),
    /// Open N subscribers all at once and report how long until all are
    /// subscribed and how many failed; then publish one probe per channel and
    /// check that every subscriber receives it.
    Storm(Box<storm::StormArgs>),
    /// Hold idle connections (SSE streams, Centrifuge or raw WebSockets) in growing
    /// steps and report how much the server's resident memory (RSS) grows per
    /// connection.
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
    let result = match cli.command {
        Command::Fanout(args) => runtime.block_on(fanout::run(*args)),
        Command::Storm(args) => runtime.block_on(storm::run(*args)),
        Command::Idle(args) => runtime.block_on(idle::run(*args)).map(|()| true),
        Command::Worker => return runtime.block_on(worker::serve()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("herald-bench: FAILED: deliveries were lost, duplicated or missing");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("herald-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

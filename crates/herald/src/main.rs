//! The `herald` binary: configuration, logging, signals; everything else lives in
//! the library crates.

mod config;
mod duration;
mod open_files;

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match config::load(&cli) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token(args)) = &cli.command {
        return match config::mint_token(&settings, args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("herald: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(settings.log_format);
    // Before the runtime: no other thread exists yet.
    let open_files = open_files::prepare();
    // Connections are served on the server's worker threads; this runtime only
    // handles signals and housekeeping.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings.server, open_files))
}

async fn run(config: herald_server::ServerConfig, open_files: open_files::OpenFiles) -> ExitCode {
    let server = match herald_server::Server::bind(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = server
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    tracing::info!(%addr, tls = server.is_tls(), workers = server.workers(), open_files_limit = ?open_files.limit, descriptor_slots = open_files.reserved_slots, version = env!("CARGO_PKG_VERSION"), "herald listening");
    if open_files.is_low() {
        tracing::warn!(
            limit = ?open_files.limit,
            "the open-files limit allows only a few thousand connections; raise it (ulimit -n, LimitNOFILE=)"
        );
    }
    if let Some(reload) = server.tls_reloader() {
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler");
            return ExitCode::FAILURE;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!("TLS reload failed, keeping the old certificate: {e}")
                    }
                }
            }
        });
    }
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install the SIGTERM/SIGINT handlers");
        return ExitCode::FAILURE;
    };
    server
        .run(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
        })
        .await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

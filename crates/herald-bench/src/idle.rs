//! `herald-bench idle`: holds idle SSE streams or WebSockets in growing steps and
//! reports how much the server's resident memory grows per connection.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::{ConnectArgs, parse_duration};
use crate::measure;
use crate::procfs::tree_rss;
use crate::report::{Fit, kib, table, write_file};
use crate::worker::{Mode, Workers};

/// Options of `herald-bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Connection counts at which memory is measured, increasing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,4000,6000,8000,10000"
    )]
    steps: Vec<usize>,
    /// PID of the server; the resident memory of it and its child processes is
    /// measured.
    #[arg(long)]
    server_pid: u32,
    /// Wait after each step before reading the server's memory.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Connections opened and closed before the baseline, to warm the server up.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What a run measured; the JSON written by `--json`.
#[derive(Debug, Serialize)]
struct IdleResults {
    url: String,
    protocol: String,
    /// `HTTP/1.1` or `HTTP/2`.
    http: String,
    streams_per_connection: u32,
    server_pid: u32,
    workers: u64,
    settle_seconds: f64,
    warmup: usize,
    baseline_rss_bytes: u64,
    steps: Vec<Step>,
    /// Once every connection is closed again (after the settle time).
    after_close_rss_bytes: u64,
    /// The fit's slope: RSS growth per idle connection.
    bytes_per_connection: f64,
    /// Least squares over the baseline (0 connections) and every step.
    fit: Fit,
}

#[derive(Debug, Serialize)]
struct Step {
    connections: usize,
    rss_bytes: u64,
    /// How long opening this step's new connections took.
    open_seconds: f64,
}

/// Runs the scenario and prints the results.
pub async fn run(args: IdleArgs) -> Result<(), String> {
    let steps = &args.steps;
    if steps.first().is_none_or(|&first| first == 0) || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("--steps must be increasing connection counts, e.g. 2000,4000".into());
    }
    let target = args.connect.target()?;
    // The warm-up's connections are closed before the steps open theirs, which
    // start again from index 0.
    let most = args.warmup.max(steps[steps.len() - 1]) as u64;
    let plans = args.connect.spread.plans(&target, Mode::Idle, most, 256)?;
    let rss = || tree_rss(args.server_pid);
    rss()?;
    eprintln!(
        "idle: {target}, server pid {}, {} worker(s), steps {steps:?}",
        args.server_pid, args.connect.spread.workers
    );
    let mut workers = Workers::spawn(plans).await?;
    if args.warmup > 0 {
        workers.hold(args.warmup, |_| {}).await?;
        workers.hold(0, |_| {}).await?;
    }
    tokio::time::sleep(args.settle).await;
    let baseline = rss()?;
    eprintln!("baseline: RSS {} KiB", kib(baseline as f64));

    let mut measured = Vec::new();
    for (k, &count) in steps.iter().enumerate() {
        let bar = measure::bar(count as u64, "{msg} [{bar:40}] {pos}/{len} connections")
            .with_message(format!("step {}/{}", k + 1, steps.len()));
        let started = Instant::now();
        workers
            .hold(count, |open| bar.set_position(open as u64))
            .await?;
        let open_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        tokio::time::sleep(args.settle).await;
        let rss_bytes = rss()?;
        eprintln!(
            "{count} connections (opened in {open_seconds:.1} s): RSS {} KiB, {:.0} bytes per connection over the baseline",
            kib(rss_bytes as f64),
            (rss_bytes as f64 - baseline as f64) / count as f64
        );
        measured.push(Step {
            connections: count,
            rss_bytes,
            open_seconds,
        });
    }
    workers.hold(0, |_| {}).await?;
    workers.close().await;
    tokio::time::sleep(args.settle).await;
    let after_close = rss()?;

    let points: Vec<(f64, f64)> = std::iter::once((0.0, baseline as f64))
        .chain(
            measured
                .iter()
                .map(|s| (s.connections as f64, s.rss_bytes as f64)),
        )
        .collect();
    let fit = Fit::least_squares(&points).ok_or("no connections measured")?;
    let results = IdleResults {
        url: target.url(),
        protocol: target.protocol.to_string(),
        http: target.http.to_string(),
        streams_per_connection: target.streams_per_connection,
        server_pid: args.server_pid,
        workers: args.connect.spread.workers,
        settle_seconds: args.settle.as_secs_f64(),
        warmup: args.warmup,
        baseline_rss_bytes: baseline,
        steps: measured,
        after_close_rss_bytes: after_close,
        bytes_per_connection: fit.slope,
        fit,
    };
    print!("{}", summary(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        write_file(path, json + "\n")?;
    }
    Ok(())
}

/// The printed report: one row per step, then the fit.
fn summary(results: &IdleResults) -> String {
    let baseline = results.baseline_rss_bytes as f64;
    let mut rows = vec![vec![
        "0".to_owned(),
        kib(baseline),
        kib(0.0),
        "-".to_owned(),
    ]];
    rows.extend(results.steps.iter().map(|step| {
        let growth = step.rss_bytes as f64 - baseline;
        vec![
            step.connections.to_string(),
            kib(step.rss_bytes as f64),
            kib(growth),
            format!("{:.0}", growth / step.connections as f64),
        ]
    }));
    format!(
        "{} ({} over {})\n{}{:.0} bytes of server RSS per idle connection (least squares, \
         r² = {:.4}); {} KiB after closing all\n",
        results.url,
        results.protocol,
        results.http,
        table(
            &["connections", "RSS KiB", "growth KiB", "bytes/conn"],
            &rows
        ),
        results.bytes_per_connection,
        results.fit.r_squared,
        kib(results.after_close_rss_bytes as f64),
    )
}

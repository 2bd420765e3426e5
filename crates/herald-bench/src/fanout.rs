//! `herald-bench fanout`: N subscribers on C channels, publications at a fixed rate
//! in steps; per step the delivery latency, losses, duplicates and the CPU each
//! delivery cost the server and this tool.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{PublishArgs, SubscribeArgs, parse_duration};
use crate::chart::{self, Series};
use crate::clock;
use crate::latency::{self, Summary};
use crate::measure::{self, Connected, CpuUsed, Usage};
use crate::publisher::{PublishErrors, Publisher};
use crate::report::{Scenario, table, write_file};
use crate::tally::Counts;
use crate::worker::{Mode, Workers};

/// A step's publishing starts this long after it is planned, so the first
/// publications are not late before they begin.
const LEAD: Duration = Duration::from_millis(20);
/// Draining ends when no delivery arrived for this long.
const QUIET: Duration = Duration::from_secs(1);

/// Options of `herald-bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    subscribe: SubscribeArgs,
    #[command(flatten)]
    publish: PublishArgs,
    /// Publication rates measured, one step each, in publications per second over
    /// all channels (round-robin: publication n goes to channel n % channels).
    #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000")]
    rates: Vec<f64>,
    /// How long each step publishes (and measures) at its rate.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Publishing at the step's rate before measuring; its deliveries are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// After a step's last publication, how long to wait at most for deliveries
    /// (waiting ends sooner once all arrived, or none came for 1 s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// PID of the server; the CPU time and memory of it and its descendants are
    /// measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart of latency by percentile, one line per step, to this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A step passes when its p99 latency is at most this and nothing was lost,
    /// duplicated, misrouted or refused.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    max_p99: Duration,
    /// Stop after the first step that does not pass.
    #[arg(long)]
    stop_on_fail: bool,
    /// Exit non-zero if any delivery was lost, duplicated or misrouted, any
    /// publication refused, or nothing was delivered (for CI).
    #[arg(long)]
    require_no_loss: bool,
}

/// The JSON written by `--json`.
#[derive(Debug, Serialize)]
struct FanoutResults {
    #[serde(flatten)]
    scenario: Scenario,
    size: usize,
    duration_seconds: f64,
    warmup_seconds: f64,
    max_p99_ms: f64,
    connect: Connected,
    steps: Vec<StepResult>,
    /// Deliveries per second of the fastest passing step.
    best_passing_deliveries_per_second: Option<f64>,
}

/// One step's results.
#[derive(Debug, Serialize)]
struct StepResult {
    /// Offered publications per second.
    rate: f64,
    /// Publications measured.
    publications: u64,
    /// Publications per second actually answered by the server, measured part.
    published_per_second: f64,
    #[serde(flatten)]
    publish: PublishErrors,
    #[serde(flatten)]
    counts: Counts,
    deliveries_per_second: f64,
    latency_ms: Summary,
    connections_held: u64,
    first_close: Option<String>,
    #[serde(flatten)]
    cpu: CpuUsed,
    server_rss_bytes: Option<u64>,
    server_cpu_us_per_delivery: Option<f64>,
    tool_cpu_us_per_delivery: Option<f64>,
    pass: bool,
    /// The latency histogram (µs), HdrHistogram V2, base64.
    latency_histogram: String,
    #[serde(skip)]
    histogram: Histogram<u64>,
}

/// Runs the scenario; `Ok(false)` when --require-no-loss is not met.
pub async fn run(args: FanoutArgs) -> Result<bool, String> {
    if args.rates.is_empty() || args.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err("--rates must be positive publication rates, e.g. 100,1000".into());
    }
    let target = args.subscribe.target()?;
    let spec = args.publish.spec(&target)?;
    let total: f64 = args
        .rates
        .iter()
        .map(|r| r * (args.warmup + args.duration).as_secs_f64() + 1.0)
        .sum();
    spec.check_size(total as u64)?;
    let server = args.server_pid;
    Usage::now(server)?;
    let subscribers = args.subscribe.subscribers;
    eprintln!(
        "fanout: {target}, {subscribers} subscribers on {} channel(s), {} worker(s); \
         publishing {} B to {}",
        target.channels, args.subscribe.spread.workers, spec.size, args.publish.publish_url
    );
    let plans = args
        .subscribe
        .spread
        .plans(&target, Mode::Subscribe, subscribers, 256)?;
    let mut workers = Workers::spawn(plans).await?;
    let connect = measure::connect(&mut workers, subscribers, server).await?;
    eprintln!("{}", connect.describe());
    if connect.held == 0 {
        return Err("no subscriber could be opened".into());
    }
    let publisher = Publisher::start(spec)?;
    let held = connect.held;

    let mut steps: Vec<StepResult> = Vec::new();
    let mut next_n = 0;
    for &rate in &args.rates {
        let step = run_step(&args, &mut workers, &publisher, rate, held, &mut next_n).await?;
        eprintln!("{}", describe(&step));
        let pass = step.pass;
        steps.push(step);
        if !pass && args.stop_on_fail {
            break;
        }
    }
    drop(publisher);
    workers.close().await;

    let best = steps
        .iter()
        .filter(|s| s.pass)
        .map(|s| s.deliveries_per_second)
        .fold(None, |best: Option<f64>, d| {
            Some(best.map_or(d, |b| b.max(d)))
        });
    let results = FanoutResults {
        scenario: Scenario::new(
            &target,
            &args.publish.publish_url,
            subscribers,
            args.subscribe.spread.workers,
            server,
        ),
        size: args.publish.size,
        duration_seconds: args.duration.as_secs_f64(),
        warmup_seconds: args.warmup.as_secs_f64(),
        max_p99_ms: args.max_p99.as_secs_f64() * 1000.0,
        connect,
        steps,
        best_passing_deliveries_per_second: best,
    };
    print!("{}", summary(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        write_file(path, json + "\n")?;
    }
    if let Some(path) = &args.chart {
        let series: Vec<Series<'_>> = results
            .steps
            .iter()
            .map(|s| Series {
                label: format!("{} pub/s", s.rate),
                histogram: &s.histogram,
            })
            .collect();
        let title = format!(
            "{} over {} {}: {} subscribers, {} channel(s), {} B",
            results.scenario.protocol,
            results.scenario.http,
            results.scenario.url,
            subscribers,
            results.scenario.channels,
            results.size
        );
        write_file(path, chart::svg(&title, &series))?;
    }
    let clean = results.steps.iter().all(|s| {
        s.counts.lost == 0
            && s.counts.duplicates == 0
            && s.counts.unexpected == 0
            && s.publish.publish_errors == 0
    });
    let delivered = results.steps.iter().any(|s| s.counts.received > 0);
    Ok(!args.require_no_loss || (clean && delivered))
}

/// Publishes at `rate` for the warm-up and the duration, drains, and collects.
async fn run_step(
    args: &FanoutArgs,
    workers: &mut Workers,
    publisher: &Publisher,
    rate: f64,
    held: u64,
    next_n: &mut u64,
) -> Result<StepResult, String> {
    let server = args.server_pid;
    let interval_ns = 1e9 / rate;
    let warm = (rate * args.warmup.as_secs_f64()).round() as u64;
    let count = ((rate * args.duration.as_secs_f64()).round() as u64).max(1);
    let first = *next_n;
    let (from_n, to_n) = (first + warm, first + warm + count);
    *next_n = to_n;
    let expected = workers.arm(from_n, to_n).await?;
    let published_before = publisher.stats();

    let start_ns = clock::now_ns() + LEAD.as_nanos() as u64;
    let measure_ns = start_ns + (warm as f64 * interval_ns) as u64;
    let total = args.warmup + args.duration;
    let bar = measure::bar(
        total.as_millis() as u64,
        "{msg} [{bar:30}] {elapsed} / {duration}",
    );
    let label = format!("{rate} pub/s");
    let started = Instant::now();
    let schedule = publisher.schedule(first, warm + count, start_ns, interval_ns);
    tokio::pin!(schedule);
    let mut before = None;
    let mut received = 0;
    loop {
        tokio::select! {
            () = &mut schedule => break,
            got = workers.received() => {
                received = got?;
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(format!("{label}: {received} of {expected} deliveries"));
            }
            () = tokio::time::sleep_until(clock::instant_at(measure_ns)), if before.is_none() => {
                before = Some(Usage::now(server)?);
            }
        }
    }
    let before = match before {
        Some(usage) => usage,
        None => Usage::now(server)?,
    };
    publisher.settle(args.drain_timeout).await;
    let published_ns = clock::now_ns();

    bar.set_message(format!("{label}: draining"));
    let deadline = Instant::now() + args.drain_timeout;
    let mut last_change = Instant::now();
    while received < expected && last_change.elapsed() < QUIET && Instant::now() < deadline {
        tokio::select! {
            got = workers.received() => {
                let got = got?;
                if got > received {
                    last_change = Instant::now();
                }
                received = got;
                bar.set_message(format!("{label}: {received} of {expected} deliveries (draining)"));
            }
            () = tokio::time::sleep(QUIET) => {}
        }
    }
    let after = Usage::now(server)?;
    bar.finish_and_clear();
    let outcome = workers.finish().await?;

    let publish = publisher.stats().errors_since(&published_before);
    let counts = outcome.counts;
    let latency_ms = Summary::of(&outcome.histogram);
    let cpu = CpuUsed::between(&before, &after);
    let measured_seconds = count as f64 / rate;
    let publish_seconds = published_ns.saturating_sub(measure_ns) as f64 / 1e9;
    let pass = counts.received > 0
        && counts.lost == 0
        && counts.duplicates == 0
        && counts.unexpected == 0
        && publish.publish_errors == 0
        && latency_ms.p99 <= args.max_p99.as_secs_f64() * 1000.0;
    Ok(StepResult {
        rate,
        publications: count,
        published_per_second: count as f64 / publish_seconds.max(measured_seconds),
        publish,
        deliveries_per_second: counts.received as f64 / measured_seconds,
        latency_ms,
        connections_held: held.saturating_sub(outcome.closed),
        first_close: outcome.first_close,
        server_rss_bytes: after.server_rss,
        server_cpu_us_per_delivery: cpu
            .server_cpu_seconds
            .and_then(|s| measure::us_per(s, counts.received)),
        tool_cpu_us_per_delivery: measure::us_per(cpu.tool_cpu_seconds, counts.received),
        counts,
        cpu,
        pass,
        latency_histogram: latency::encode(&outcome.histogram)?,
        histogram: outcome.histogram,
    })
}

/// One line per step, printed as it ends.
fn describe(step: &StepResult) -> String {
    let mut line = format!(
        "{} pub/s: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} lost, {} dup — {}",
        step.rate,
        step.deliveries_per_second,
        step.latency_ms.p50,
        step.latency_ms.p99,
        step.latency_ms.max,
        step.counts.lost,
        step.counts.duplicates,
        if step.pass { "pass" } else { "FAIL" }
    );
    if let Some(error) = &step.publish.first_publish_error {
        line += &format!(
            " ({} publish errors, the first: {error})",
            step.publish.publish_errors
        );
    }
    if let Some(why) = &step.first_close {
        line += &format!(
            " ({} subscribers held; the first close: {why})",
            step.connections_held
        );
    }
    line
}

/// The printed report: one row per step.
fn summary(results: &FanoutResults) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    let rows: Vec<Vec<String>> = results
        .steps
        .iter()
        .map(|s| {
            vec![
                format!("{}", s.rate),
                format!("{:.0}", s.deliveries_per_second),
                format!("{:.2}", s.latency_ms.p50),
                format!("{:.2}", s.latency_ms.p90),
                format!("{:.2}", s.latency_ms.p99),
                format!("{:.2}", s.latency_ms.p999),
                format!("{:.2}", s.latency_ms.max),
                s.counts.lost.to_string(),
                s.counts.duplicates.to_string(),
                opt(s.server_cpu_us_per_delivery, 2),
                opt(s.tool_cpu_us_per_delivery, 2),
                opt(s.server_rss_bytes.map(|b| b as f64 / 1048576.0), 1),
                if s.pass { "pass" } else { "FAIL" }.into(),
            ]
        })
        .collect();
    let best = results
        .best_passing_deliveries_per_second
        .map_or("none".into(), |d| format!("{d:.0} deliveries/s"));
    format!(
        "{} ({} over {}), {} subscribers, {} channel(s), {} B payloads\n{}highest passing \
         step (p99 ≤ {} ms, nothing lost): {best}\n",
        results.scenario.url,
        results.scenario.protocol,
        results.scenario.http,
        results.connect.held,
        results.scenario.channels,
        results.size,
        table(
            &[
                "pub/s",
                "deliv/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "lost",
                "dup",
                "srv µs/dlv",
                "tool µs/dlv",
                "srv RSS MiB",
                "result",
            ],
            &rows
        ),
        results.max_p99_ms
    )
}

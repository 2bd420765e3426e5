//! `herald-bench storm`: N subscribers connect and subscribe all at once; how long
//! until all are subscribed, how many failed, and then whether every one of them
//! receives a probe published to its channel, and how soon.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::{PublishArgs, SubscribeArgs, parse_duration};
use crate::clock;
use crate::latency::Summary;
use crate::measure::{self, Connected, CpuUsed, Usage};
use crate::publisher::{PublishErrors, Publisher};
use crate::report::{Scenario, write_file};
use crate::tally::Counts;
use crate::worker::{Mode, Workers};

/// Options of `herald-bench storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    subscribe: SubscribeArgs,
    #[command(flatten)]
    publish: PublishArgs,
    /// How long to wait for every subscriber to receive its channel's probe.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// PID of the server; the CPU time and memory of it and its descendants are
    /// measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero if any subscriber failed to open or missed its probe, or any
    /// delivery was duplicated or misrouted (for CI).
    #[arg(long)]
    require_no_loss: bool,
}

/// The JSON written by `--json`.
#[derive(Debug, Serialize)]
struct StormResults {
    #[serde(flatten)]
    scenario: Scenario,
    /// Opening all subscribers at once.
    connect: Connected,
    /// One probe per channel.
    probe: Probe,
}

/// The probe phase.
#[derive(Debug, Serialize)]
struct Probe {
    publications: u64,
    #[serde(flatten)]
    publish: PublishErrors,
    /// Deliveries: one expected per open subscriber.
    #[serde(flatten)]
    counts: Counts,
    /// From publishing the probes to the last subscriber receiving its probe; none
    /// unless every subscriber did.
    seconds_until_all: Option<f64>,
    latency_ms: Summary,
    #[serde(flatten)]
    cpu: CpuUsed,
}

/// Runs the scenario; `Ok(false)` when --require-no-loss is not met.
pub async fn run(args: StormArgs) -> Result<bool, String> {
    let target = args.subscribe.target()?;
    let spec = args.publish.spec(&target)?;
    spec.check_size(target.channels)?;
    let server = args.server_pid;
    Usage::now(server)?;
    let subscribers = args.subscribe.subscribers;
    eprintln!(
        "storm: {target}, {subscribers} subscribers on {} channel(s) at once, {} worker(s)",
        target.channels, args.subscribe.spread.workers
    );
    let plans = args
        .subscribe
        .spread
        .plans(&target, Mode::Subscribe, subscribers, subscribers)?;
    let mut workers = Workers::spawn(plans).await?;
    let connect = measure::connect(&mut workers, subscribers, server).await?;
    eprintln!("{}", connect.describe());
    let publisher = Publisher::start(spec)?;
    let probe = probe(&args, &mut workers, &publisher, target.channels).await?;
    drop(publisher);
    workers.close().await;
    match probe.seconds_until_all {
        Some(seconds) => eprintln!(
            "every subscriber received its probe within {:.3} s (p50 {:.2} ms, p99 {:.2} ms)",
            seconds, probe.latency_ms.p50, probe.latency_ms.p99
        ),
        None => eprintln!(
            "{} of {} subscribers received their probe within {:?} ({} duplicates)",
            probe.counts.received, probe.counts.expected, args.timeout, probe.counts.duplicates
        ),
    }
    let counts = &probe.counts;
    let ok = connect.failed == 0
        && counts.expected > 0
        && counts.received == counts.expected
        && counts.duplicates == 0
        && counts.unexpected == 0
        && probe.publish.publish_errors == 0;
    let results = StormResults {
        scenario: Scenario::new(
            &target,
            &args.publish.publish_url,
            subscribers,
            args.subscribe.spread.workers,
            server,
        ),
        connect,
        probe,
    };
    print!("{}", summary(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        write_file(path, json + "\n")?;
    }
    Ok(!args.require_no_loss || ok)
}

/// The printed report.
fn summary(results: &StormResults) -> String {
    let (connect, probe) = (&results.connect, &results.probe);
    let seconds = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.2}"));
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let until_all = match probe.seconds_until_all {
        Some(s) => format!("all within {s:.3} s"),
        None => "NOT ALL".into(),
    };
    format!(
        "{} ({} over {}), {} subscribers on {} channel(s), all at once\n\
         subscribed: {} in {:.2} s ({:.0}/s), {} failed; server RSS {} MiB, \
         server CPU {} s, tool CPU {:.2} s\n\
         probe: {} of {} received, {until_all}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         {} lost, {} duplicates, {} publish errors\n",
        results.scenario.url,
        results.scenario.protocol,
        results.scenario.http,
        results.scenario.subscribers,
        results.scenario.channels,
        connect.held,
        connect.seconds,
        connect.per_second,
        connect.failed,
        mib(connect.server_rss_bytes),
        seconds(connect.cpu.server_cpu_seconds),
        connect.cpu.tool_cpu_seconds,
        probe.counts.received,
        probe.counts.expected,
        probe.latency_ms.p50,
        probe.latency_ms.p99,
        probe.latency_ms.max,
        probe.counts.lost,
        probe.counts.duplicates,
        probe.publish.publish_errors,
    )
}

/// Publishes one probe per channel, all at once, and waits for the deliveries.
async fn probe(
    args: &StormArgs,
    workers: &mut Workers,
    publisher: &Publisher,
    channels: u64,
) -> Result<Probe, String> {
    let server = args.server_pid;
    let expected = workers.arm(0, channels).await?;
    let published_before = publisher.stats();
    let before = Usage::now(server)?;
    let start_ns = clock::now_ns();
    publisher.schedule(0, channels, start_ns, 0.0).await;
    let deadline = Instant::now() + args.timeout;
    publisher.settle(args.timeout).await;
    let mut received = 0;
    while received < expected && Instant::now() < deadline {
        tokio::select! {
            got = workers.received() => received = got?,
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    let after = Usage::now(server)?;
    let outcome = workers.finish().await?;
    let counts = outcome.counts;
    let all = counts.received == counts.expected && counts.expected > 0;
    Ok(Probe {
        publications: channels,
        publish: publisher.stats().errors_since(&published_before),
        counts,
        seconds_until_all: all
            .then(|| outcome.last_delivery_ns.saturating_sub(start_ns) as f64 / 1e9),
        latency_ms: Summary::of(&outcome.histogram),
        cpu: CpuUsed::between(&before, &after),
    })
}

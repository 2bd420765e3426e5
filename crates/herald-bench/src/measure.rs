//! What every load scenario measures around its phases: opening the subscribers,
//! and the CPU time and memory of the server (a process tree) and of this tool
//! (the coordinator and its workers).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::procfs;
use crate::worker::Workers;

/// Redraws per second of a progress bar: often enough to watch, rarely enough not
/// to cost the CPU the server needs.
const BAR_HZ: u8 = 4;

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(BAR_HZ))
        .with_style(style)
}

/// CPU seconds and memory at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// The server tree's CPU seconds so far (without a server pid: none).
    pub server_cpu: Option<f64>,
    /// The server tree's resident memory.
    pub server_rss: Option<u64>,
    /// This tool's CPU seconds so far (coordinator and workers).
    pub tool_cpu: f64,
}

impl Usage {
    /// Reads the usage of `server` (a pid) and of this process tree now.
    pub fn now(server: Option<u32>) -> Result<Usage, String> {
        let (server_cpu, server_rss) = match server {
            Some(pid) => (
                Some(procfs::tree_cpu_seconds(pid)?),
                Some(procfs::tree_rss(pid)?),
            ),
            None => (None, None),
        };
        Ok(Usage {
            server_cpu,
            server_rss,
            tool_cpu: procfs::tree_cpu_seconds(std::process::id())?,
        })
    }
}

/// CPU used between two readings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUsed {
    /// The server's CPU seconds.
    pub server_cpu_seconds: Option<f64>,
    /// This tool's CPU seconds.
    pub tool_cpu_seconds: f64,
}

impl CpuUsed {
    /// The CPU used from `before` to `after`.
    pub fn between(before: &Usage, after: &Usage) -> CpuUsed {
        CpuUsed {
            server_cpu_seconds: after.server_cpu.zip(before.server_cpu).map(|(a, b)| a - b),
            tool_cpu_seconds: after.tool_cpu - before.tool_cpu,
        }
    }
}

/// How opening the subscribers went.
#[derive(Debug, Clone, Serialize)]
pub struct Connected {
    /// Subscribers asked for.
    pub requested: u64,
    /// Subscribers open (and subscribed).
    pub held: u64,
    /// Subscribers that could not be opened.
    pub failed: u64,
    /// Why the first failed one did.
    pub first_error: Option<String>,
    /// From the first connect to the last subscription.
    pub seconds: f64,
    /// Subscribers opened per second.
    pub per_second: f64,
    /// CPU used meanwhile.
    pub cpu: CpuUsed,
    /// The server's resident memory once all are open.
    pub server_rss_bytes: Option<u64>,
}

/// Has the workers open `count` subscribers, with a progress bar.
pub async fn connect(
    workers: &mut Workers,
    count: u64,
    server: Option<u32>,
) -> Result<Connected, String> {
    let before = Usage::now(server)?;
    let bar = bar(
        count,
        "connecting [{bar:40}] {pos}/{len} subscribers, {per_sec}",
    );
    let started = Instant::now();
    let outcome = workers
        .hold(count as usize, |open| bar.set_position(open as u64))
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let after = Usage::now(server)?;
    let held = outcome.open as u64;
    Ok(Connected {
        requested: count,
        held,
        failed: outcome.failed as u64,
        first_error: outcome.first_error,
        seconds,
        per_second: held as f64 / seconds.max(1e-9),
        cpu: CpuUsed::between(&before, &after),
        server_rss_bytes: after.server_rss,
    })
}

impl Connected {
    /// One line for the terminal.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} of {} subscribers open in {:.2} s ({:.0}/s)",
            self.held, self.requested, self.seconds, self.per_second
        );
        if self.failed > 0 {
            line += &format!(
                "; {} failed, the first: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        line
    }
}

/// Microseconds of CPU per delivery.
pub fn us_per(cpu_seconds: f64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu_seconds * 1e6 / deliveries as f64)
}

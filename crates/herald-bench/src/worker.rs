//! Connection holders in child processes. A process may hold at most ~20,000 open
//! files here, so the coordinating `herald-bench` spawns `--workers` copies of itself
//! (the hidden `worker` subcommand) and drives them with JSON lines on stdin; each
//! answers on stdout with JSON lines. Worker `w` of `n` opens the connections of
//! global index `w + n·j`, so the indices of all held connections are `0..total`
//! and `{i}` in a template is unique across workers. A worker answers its plan
//! with `Ready` once set to open connections (`{token}`'s tokens minted).
//!
//! In a step the coordinator arms the workers with the publications to measure,
//! publishes, and then asks each for what its connections received: counts and a
//! latency histogram, merged by the coordinator.

use std::cell::RefCell;
use std::net::IpAddr;
use std::process::{ExitCode, Stdio};
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet, LocalSet};

use crate::client::{Connector, Opened, Stream};
use crate::latency;
use crate::subscriber;
use crate::tally::{Counts, Tally};
use crate::target::Target;
use crate::token::Tokens;

/// How often a worker reports progress (connections opened, deliveries received).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Open files a worker needs besides its connections (stdio, runtime, …).
const SPARE_FILES: u64 = 32;

/// What the connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Held idle (SSE streams unread; WebSockets only answer pings); a connection
    /// that fails or is closed fails the run.
    Idle,
    /// Subscribers reading every delivery; failures and closes are counted.
    Subscribe,
}

/// Everything a worker needs to know, sent as its first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Where to connect.
    pub target: Target,
    /// Source addresses, by connection index (empty: the kernel chooses).
    pub sources: Vec<IpAddr>,
    /// This worker's number, from 0.
    pub worker: u64,
    /// How many workers share the connections.
    pub workers: u64,
    /// Most connections this worker opens at once.
    pub concurrency: usize,
    /// How long opening one connection may take.
    pub timeout: Duration,
    /// What the connections are for.
    pub mode: Mode,
    /// Connections of the whole run, over all workers: their global indices are
    /// below this. With `{token}`, each gets its token before the first opens.
    pub connections: u64,
}

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum Command {
    /// Open (or, idle, close) connections until `count` are held or failed.
    Hold { count: usize },
    /// Start measuring publications `from_n..to_n`.
    Arm { from_n: u64, to_n: u64 },
    /// End the step and report.
    Finish,
}

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
enum Report {
    /// Ready for commands (its tokens minted).
    Ready,
    /// Still opening; `open` held so far.
    Progress { open: usize },
    /// The last `Hold` is done.
    Done {
        open: usize,
        failed: usize,
        first_error: Option<String>,
    },
    /// Armed; the connections should get `expected` deliveries.
    Armed { expected: u64 },
    /// Deliveries so far in the armed step.
    Received { received: u64 },
    /// The step's results.
    Finished {
        counts: Counts,
        /// When the last first delivery arrived (CLOCK_MONOTONIC ns; 0 for none).
        last_delivery_ns: u64,
        /// [`latency::encode`]d.
        histogram: String,
        /// Connections closed so far, and why the first was.
        closed: u64,
        first_close: Option<String>,
    },
    /// The worker gives up.
    Failed { error: String },
}

/// The worker process: reads its plan and commands on stdin until it closes. A
/// failure is reported to the coordinator, which tells the user.
pub async fn serve() -> ExitCode {
    // Connections share the worker's tally through an `Rc`: one thread, no locks.
    LocalSet::new().run_until(serve_local()).await
}

async fn serve_local() -> ExitCode {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let result = match lines.next_line().await {
        Ok(Some(line)) => match serde_json::from_str(&line) {
            Ok(plan) => work(plan, &mut lines, &mut out).await,
            Err(e) => Err(format!("bad plan: {e}")),
        },
        Ok(None) => Ok(()),
        Err(e) => Err(format!("stdin: {e}")),
    };
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    if let Err(unreported) = send(
        &mut out,
        &Report::Failed {
            error: error.clone(),
        },
    )
    .await
    {
        eprintln!("herald-bench worker: {error} ({unreported})");
    }
    ExitCode::FAILURE
}

async fn work(
    plan: Plan,
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    out: &mut tokio::io::Stdout,
) -> Result<(), String> {
    let file_limit =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    // Minted before `Ready`: the coordinator times a connect phase from its first
    // `Hold`, and signing is no part of connecting.
    let tokens = plan.target.token_secret.as_deref().map(|secret| {
        Tokens::mint(
            secret,
            &plan.target,
            plan.worker,
            plan.workers,
            plan.connections,
        )
    });
    let connector = Rc::new(Connector::new(
        plan.target.clone(),
        plan.workers,
        plan.sources.clone(),
        plan.timeout,
        tokens,
    )?);
    send(out, &Report::Ready).await?;
    let streams_per_socket = u64::from(plan.target.streams_per_connection.max(1));
    let tally = Rc::new(RefCell::new(Tally::new(plan.target.channels)));
    let mut holder = Holder {
        plan,
        connector,
        tally: tally.clone(),
        connections: Vec::new(),
        next: 0,
    };
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    let mut armed = false;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.map_err(|e| format!("stdin: {e}"))?,
            _ = progress.tick(), if armed => {
                let received = tally.borrow().received();
                send(out, &Report::Received { received }).await?;
                continue;
            }
        };
        let Some(line) = line else { return Ok(()) };
        let command = serde_json::from_str(&line).map_err(|e| format!("bad command: {e}"))?;
        match command {
            Command::Hold { count } => {
                let sockets = (count as u64).div_ceil(streams_per_socket);
                if sockets + SPARE_FILES > file_limit {
                    return Err(format!(
                        "{count} connections need more open files than this process may \
                         have ({file_limit}); use more --workers"
                    ));
                }
                holder.hold(count, out).await?;
            }
            Command::Arm { from_n, to_n } => {
                let expected = tally.borrow_mut().arm(from_n, to_n);
                armed = true;
                send(out, &Report::Armed { expected }).await?;
            }
            Command::Finish => {
                armed = false;
                let deliveries = tally.borrow_mut().finish();
                let report = {
                    let tally = tally.borrow();
                    Report::Finished {
                        counts: deliveries.counts,
                        last_delivery_ns: deliveries.last_delivery_ns,
                        histogram: latency::encode(&deliveries.histogram)?,
                        closed: tally.closed_count(),
                        first_close: tally.first_close().map(str::to_owned),
                    }
                };
                send(out, &report).await?;
            }
        }
    }
}

/// A held connection; dropping it closes it.
enum Held {
    /// A socket held without reading.
    Parked {
        /// The socket.
        _io: Box<dyn crate::dial::Io>,
    },
    /// A connection read by its own task.
    Reading {
        /// The task.
        _task: AbortOnDrop,
    },
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One worker's connections.
struct Holder {
    plan: Plan,
    connector: Rc<Connector>,
    tally: Rc<RefCell<Tally>>,
    connections: Vec<Held>,
    /// Per-worker sequence number of the next connection; its global index is
    /// `worker + workers · next`. Restarts once nothing is held.
    next: u64,
}

impl Holder {
    /// Opens connections until `count` are held (or failed, subscribing); idle, also
    /// closes connections down to `count`. Reports progress.
    async fn hold(
        &mut self,
        count: usize,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), String> {
        let idle = self.plan.mode == Mode::Idle;
        if idle {
            self.check_lost()?;
            self.connections.truncate(count);
            if self.connections.is_empty() {
                self.next = 0;
            }
        }
        let mut opening = JoinSet::new();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let (mut failed, mut first_error) = (0, None);
        while self.connections.len() + failed < count || !opening.is_empty() {
            while self.connections.len() + failed + opening.len() < count
                && opening.len() < self.plan.concurrency
            {
                let index = self.plan.worker + self.plan.workers * self.next;
                self.next += 1;
                let connector = self.connector.clone();
                opening.spawn_local(async move { (index, connector.open(index).await) });
            }
            tokio::select! {
                Some(opened) = opening.join_next() => {
                    match opened.map_err(|e| format!("connect task: {e}"))? {
                        (index, Ok(opened)) => self.attach(index, opened),
                        (_, Err(e)) if idle => return Err(e),
                        (_, Err(e)) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                _ = progress.tick() => {
                    send(out, &Report::Progress { open: self.connections.len() }).await?;
                }
            }
        }
        if idle {
            self.check_lost()?;
        }
        let open = self.connections.len();
        send(
            out,
            &Report::Done {
                open,
                failed,
                first_error,
            },
        )
        .await
    }

    /// Keeps an open connection: idle SSE streams are parked unread; everything
    /// else is read by a task (WebSockets must answer pings even when idle).
    fn attach(&mut self, index: u64, opened: Opened) {
        if self.plan.mode == Mode::Idle && matches!(opened.stream, Stream::Sse { .. }) {
            self.connections.push(Held::Parked { _io: opened.io });
            return;
        }
        let slot = self.tally.borrow_mut().add(index);
        let task = tokio::task::spawn_local(subscriber::run(opened, slot, self.tally.clone()));
        self.connections.push(Held::Reading {
            _task: AbortOnDrop(task.abort_handle()),
        });
    }

    /// Fails if the server closed any held connection: an idle benchmark must hold
    /// every connection it counts.
    fn check_lost(&self) -> Result<(), String> {
        match self.tally.borrow_mut().take_closed() {
            Some((count, why)) => Err(format!(
                "the server closed {count} held connection(s); the first: {why}"
            )),
            None => Ok(()),
        }
    }
}

async fn send(out: &mut (impl AsyncWrite + Unpin), report: &Report) -> Result<(), String> {
    let mut line = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    line.push(b'\n');
    out.write_all(&line)
        .await
        .and(out.flush().await)
        .map_err(|e| format!("stdout: {e}"))
}

/// What the workers' last `hold` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HoldOutcome {
    /// Connections held.
    pub open: usize,
    /// Connections that could not be opened (subscribing only).
    pub failed: usize,
    /// Why the first failed one did.
    pub first_error: Option<String>,
}

/// What the workers' connections received in a step.
#[derive(Debug)]
pub struct StepOutcome {
    /// Summed counts.
    pub counts: Counts,
    /// When the last first delivery arrived, at any worker (CLOCK_MONOTONIC ns; 0
    /// for none).
    pub last_delivery_ns: u64,
    /// Latencies, merged.
    pub histogram: Histogram<u64>,
    /// Connections closed so far.
    pub closed: u64,
    /// Why the first closed connection was closed.
    pub first_close: Option<String>,
}

/// The coordinator's side: the worker processes and their reports.
pub struct Workers {
    stdins: Vec<ChildStdin>,
    reports: mpsc::UnboundedReceiver<(usize, Report)>,
    /// Each worker's last `Received` figure.
    received: Vec<u64>,
    /// Killed when dropped.
    children: Vec<Child>,
}

impl Workers {
    /// Starts `plans.len()` workers, each with its plan; returns once all are ready
    /// (so that a phase timed from the first command does not include their start).
    pub async fn spawn(plans: Vec<Plan>) -> Result<Workers, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
        let (sender, reports) = mpsc::unbounded_channel();
        let mut stdins = Vec::new();
        let mut children = Vec::new();
        for (w, plan) in plans.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start worker {w}: {e}"))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(format!("worker {w} has no stdio"));
            };
            let mut line = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .map_err(|e| format!("worker {w}: {e}"))?;
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let report = serde_json::from_str(&line).unwrap_or_else(|e| Report::Failed {
                        error: format!("unreadable report {line:?}: {e}"),
                    });
                    let _ = sender.send((w, report));
                }
                let _ = sender.send((
                    w,
                    Report::Failed {
                        error: "exited".into(),
                    },
                ));
            });
            stdins.push(stdin);
            children.push(child);
        }
        let mut workers = Workers {
            received: vec![0; stdins.len()],
            stdins,
            reports,
            children,
        };
        for _ in 0..workers.stdins.len() {
            match workers.next_report().await? {
                (_, Report::Ready) => {}
                (w, other) => return Err(format!("worker {w}: unexpected {other:?}")),
            }
        }
        Ok(workers)
    }

    /// Has the workers hold `total` connections between them (opening or, idle,
    /// closing some); calls `progress` with the number held so far while opening.
    pub async fn hold(
        &mut self,
        total: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<HoldOutcome, String> {
        let n = self.stdins.len();
        for w in 0..n {
            let count = total / n + usize::from(w < total % n);
            self.command(w, &Command::Hold { count }).await?;
        }
        let mut open = vec![0; n];
        let mut outcome = HoldOutcome::default();
        let mut pending = n;
        while pending > 0 {
            let (w, report) = self.next_report().await?;
            match report {
                Report::Progress { open: count } => open[w] = count,
                Report::Done {
                    open: count,
                    failed,
                    first_error,
                } => {
                    open[w] = count;
                    outcome.failed += failed;
                    outcome.first_error = outcome.first_error.or(first_error);
                    pending -= 1;
                }
                other => return Err(format!("worker {w}: unexpected {other:?}")),
            }
            progress(open.iter().sum());
        }
        outcome.open = open.iter().sum();
        Ok(outcome)
    }

    /// Starts measuring publications `from_n..to_n`; returns the deliveries the
    /// connections should get.
    pub async fn arm(&mut self, from_n: u64, to_n: u64) -> Result<u64, String> {
        for w in 0..self.stdins.len() {
            self.command(w, &Command::Arm { from_n, to_n }).await?;
        }
        self.received.fill(0);
        let (mut expected, mut pending) = (0, self.stdins.len());
        while pending > 0 {
            match self.next_report().await? {
                (_, Report::Armed { expected: e }) => {
                    expected += e;
                    pending -= 1;
                }
                // From a worker armed already.
                (_, Report::Received { .. }) => {}
                (w, other) => return Err(format!("worker {w}: unexpected {other:?}")),
            }
        }
        Ok(expected)
    }

    /// Waits for the next progress report of an armed step; returns the deliveries
    /// received so far, over all workers.
    pub async fn received(&mut self) -> Result<u64, String> {
        match self.next_report().await? {
            (_, Report::Received { .. }) => Ok(self.received.iter().sum()),
            (w, other) => Err(format!("worker {w}: unexpected {other:?}")),
        }
    }

    /// Ends the step; returns what the connections received.
    pub async fn finish(&mut self) -> Result<StepOutcome, String> {
        for w in 0..self.stdins.len() {
            self.command(w, &Command::Finish).await?;
        }
        let mut outcome = StepOutcome {
            counts: Counts::default(),
            last_delivery_ns: 0,
            histogram: latency::histogram(),
            closed: 0,
            first_close: None,
        };
        let mut pending = self.stdins.len();
        while pending > 0 {
            match self.next_report().await? {
                // Sent before the worker read `Finish`.
                (_, Report::Received { .. }) => {}
                (
                    _,
                    Report::Finished {
                        counts,
                        last_delivery_ns,
                        histogram,
                        closed,
                        first_close,
                    },
                ) => {
                    outcome.counts.add(&counts);
                    outcome.last_delivery_ns = outcome.last_delivery_ns.max(last_delivery_ns);
                    outcome
                        .histogram
                        .add(latency::decode(&histogram)?)
                        .map_err(|e| format!("histogram: {e:?}"))?;
                    outcome.closed += closed;
                    outcome.first_close = outcome.first_close.or(first_close);
                    pending -= 1;
                }
                (w, other) => return Err(format!("worker {w}: unexpected {other:?}")),
            }
        }
        Ok(outcome)
    }

    /// Ends the workers: closes their stdin (they exit when it ends) and reaps
    /// them, killing any that take more than a few seconds. Dropping [`Workers`]
    /// kills them instead, unreaped if this process exits right after.
    pub async fn close(mut self) {
        self.stdins.clear();
        for child in &mut self.children {
            let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            if exited.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    async fn command(&mut self, w: usize, command: &Command) -> Result<(), String> {
        let mut line = serde_json::to_vec(command).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.stdins[w]
            .write_all(&line)
            .await
            .map_err(|e| format!("worker {w}: {e}"))
    }

    /// The next report; failures become errors and `Received` figures are noted.
    async fn next_report(&mut self) -> Result<(usize, Report), String> {
        let Some((w, report)) = self.reports.recv().await else {
            return Err("all workers are gone".into());
        };
        match report {
            Report::Failed { error } => Err(format!("worker {w}: {error}")),
            Report::Received { received } => {
                self.received[w] = received;
                Ok((w, Report::Received { received }))
            }
            report => Ok((w, report)),
        }
    }
}

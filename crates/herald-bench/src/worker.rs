//! Connection holders in child processes. A process may hold at most ~20,000 open
//! files here, so the coordinating `herald-bench` spawns `--workers` copies of itself
//! (the hidden `worker` subcommand) and tells each, over stdin, how many connections
//! to hold; each answers on stdout with JSON lines. Worker `w` of `n` opens the
//! connections of global index `w + n·j`, so the indices of all held connections are
//! `0..total` and `{i}` in the path template is unique across workers.

use std::net::IpAddr;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Connection, Connector};
use crate::target::Target;

/// How often a worker reports how many connections it holds while opening.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Open files a worker needs besides its connections (stdio, runtime, …).
const SPARE_FILES: u64 = 32;

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
}

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum Command {
    /// Open or close connections until exactly `count` are held.
    Hold { count: usize },
}

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
enum Report {
    /// Still opening; `open` held so far.
    Progress { open: usize },
    /// The last `Hold` is done.
    Done { open: usize },
    /// The worker gives up.
    Failed { error: String },
}

/// The worker process: reads its plan and commands on stdin until it closes. A
/// failure is reported to the coordinator, which tells the user.
pub async fn serve() -> ExitCode {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let result = match lines.next_line().await {
        Ok(Some(line)) => match serde_json::from_str(&line) {
            Ok(plan) => hold_as_told(plan, &mut lines, &mut out).await,
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

async fn hold_as_told(
    plan: Plan,
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    out: &mut tokio::io::Stdout,
) -> Result<(), String> {
    let file_limit =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let connector = Arc::new(Connector::new(plan.target.clone(), plan.sources.clone())?);
    let mut holder = Holder {
        plan,
        connector,
        connections: Vec::new(),
        next: 0,
    };
    while let Some(line) = lines.next_line().await.map_err(|e| format!("stdin: {e}"))? {
        let Command::Hold { count } =
            serde_json::from_str(&line).map_err(|e| format!("bad command: {e}"))?;
        if count as u64 + SPARE_FILES > file_limit {
            return Err(format!(
                "{count} connections need more open files than this process may have \
                 ({file_limit}); use more --workers"
            ));
        }
        holder.hold(count, out).await?;
    }
    Ok(())
}

/// One worker's connections.
struct Holder {
    plan: Plan,
    connector: Arc<Connector>,
    connections: Vec<Connection>,
    /// Per-worker sequence number of the next connection; its global index is
    /// `worker + workers · next`. Restarts once nothing is held.
    next: u64,
}

impl Holder {
    /// Opens or closes connections until `count` are held; reports progress.
    async fn hold(
        &mut self,
        count: usize,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), String> {
        self.check_lost()?;
        self.connections.truncate(count);
        if self.connections.is_empty() {
            self.next = 0;
        }
        let mut opening = JoinSet::new();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        while self.connections.len() < count {
            while self.connections.len() + opening.len() < count
                && opening.len() < self.plan.concurrency
            {
                let index = self.plan.worker + self.plan.workers * self.next;
                self.next += 1;
                let connector = self.connector.clone();
                opening.spawn(async move { connector.open(index).await });
            }
            tokio::select! {
                Some(opened) = opening.join_next() => {
                    let connection = opened.map_err(|e| format!("connect task: {e}"))??;
                    self.connections.push(connection);
                }
                _ = progress.tick() => {
                    send(out, &Report::Progress { open: self.connections.len() }).await?;
                }
            }
        }
        self.check_lost()?;
        send(
            out,
            &Report::Done {
                open: self.connections.len(),
            },
        )
        .await
    }
}

impl Holder {
    /// Fails if the server closed any held WebSocket: an idle benchmark must hold
    /// every connection it counts.
    fn check_lost(&self) -> Result<(), String> {
        match self.connector.lost.take() {
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

/// The coordinator's side: the worker processes and their reports.
pub struct Workers {
    stdins: Vec<ChildStdin>,
    reports: mpsc::UnboundedReceiver<(usize, Report)>,
    /// Killed when dropped.
    _children: Vec<Child>,
}

impl Workers {
    /// Starts `plans.len()` workers, each with its plan.
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
        Ok(Workers {
            stdins,
            reports,
            _children: children,
        })
    }

    /// Has the workers hold `total` connections between them (opening or closing
    /// some); calls `progress` with the number held so far while opening.
    pub async fn hold(
        &mut self,
        total: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<(), String> {
        let n = self.stdins.len();
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            let count = total / n + usize::from(w < total % n);
            let mut line =
                serde_json::to_vec(&Command::Hold { count }).map_err(|e| e.to_string())?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .map_err(|e| format!("worker {w}: {e}"))?;
        }
        let mut open = vec![0; n];
        let mut pending = n;
        while pending > 0 {
            let Some((w, report)) = self.reports.recv().await else {
                return Err("all workers are gone".into());
            };
            match report {
                Report::Progress { open: count } => open[w] = count,
                Report::Done { open: count } => {
                    open[w] = count;
                    pending -= 1;
                }
                Report::Failed { error } => return Err(format!("worker {w}: {error}")),
            }
            progress(open.iter().sum());
        }
        Ok(())
    }
}

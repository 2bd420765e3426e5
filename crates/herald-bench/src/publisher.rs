//! The publisher: an open-loop schedule feeding a small pool of keep-alive HTTP/1.1
//! connections.
//!
//! Publication `n` goes to channel `n % C` as that channel's number `n / C`; its
//! payload carries the time it was *meant* to be sent, so a publisher that falls
//! behind (a slow reply, a busy core) shows up as latency instead of quietly
//! lowering the rate. The pool's connections take publications from one queue, so
//! one slow reply holds up only its own connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::clock;
use crate::dial::{Dialer, Io};
use crate::http1::{self, Dechunker};
use crate::payload::{self, Marker};
use crate::target::{Endpoint, HttpVersion};
use crate::template::{Template, Vars};

/// How long one publish request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a publish response's body.
const MAX_BODY: usize = 64 * 1024;

/// What to publish and where.
#[derive(Debug)]
pub struct PublishSpec {
    /// The server's publish endpoint.
    pub endpoint: Endpoint,
    /// Request path: `{channel}`, `{c}`.
    pub path: Template,
    /// Request body: `{payload}`, `{channel}`, `{c}`.
    pub body: Template,
    /// Extra header lines, each ending with CRLF.
    pub headers: String,
    /// Name of each channel, by index.
    pub channel_names: Vec<String>,
    /// Bytes of each payload.
    pub size: usize,
    /// Connections in the pool.
    pub connections: usize,
}

impl PublishSpec {
    /// Checks that the payload can hold publication `last_n`'s marker (the longest
    /// of a run) with a send time up to a day from now.
    pub fn check_size(&self, last_n: u64) -> Result<(), String> {
        let channels = self.channel_names.len() as u64;
        let marker = Marker {
            seq: last_n / channels,
            channel: channels - 1,
            sent_ns: clock::now_ns() + 86_400 * 1_000_000_000,
        };
        payload::write(&mut Vec::new(), marker, self.size)
    }

    /// Writes the request for publication `n`, meant to be sent at `sent_ns`, into
    /// `request` (`scratch` holds the payload and body on the way).
    fn request(
        &self,
        n: u64,
        sent_ns: u64,
        request: &mut Vec<u8>,
        scratch: &mut (Vec<u8>, Vec<u8>),
    ) -> Result<(), String> {
        let channels = self.channel_names.len() as u64;
        let channel = n % channels;
        let (payload, body) = scratch;
        payload.clear();
        payload::write(
            payload,
            Marker {
                seq: n / channels,
                channel,
                sent_ns,
            },
            self.size,
        )?;
        let vars = Vars {
            index: 0,
            channel_index: channel,
            channel: &self.channel_names[channel as usize],
            payload,
            ..Vars::default()
        };
        body.clear();
        self.body.expand_into(&vars, body);
        request.clear();
        request.extend_from_slice(b"POST ");
        self.path.expand_into(&vars, request);
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(self.endpoint.authority.as_bytes());
        request.extend_from_slice(b"\r\nuser-agent: herald-bench\r\n");
        request.extend_from_slice(self.headers.as_bytes());
        request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        Ok(())
    }
}

/// One publication to send.
struct Job {
    n: u64,
    sent_ns: u64,
}

/// Counters shared by the pool's connections.
#[derive(Debug, Default)]
struct Shared {
    answered: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// What the publisher has done so far.
#[derive(Debug, Clone, Default)]
pub struct PublishStats {
    /// Publications queued by the schedule.
    pub queued: u64,
    /// Publications answered (successfully or not).
    pub answered: u64,
    /// Publications that failed (error status, error body, connection failure).
    pub errors: u64,
    /// Why the first failed one did.
    pub first_error: Option<String>,
}

impl PublishStats {
    /// The failures since `before`, an earlier reading of the same publisher.
    pub fn errors_since(&self, before: &PublishStats) -> PublishErrors {
        let publish_errors = self.errors - before.errors;
        PublishErrors {
            publish_errors,
            first_publish_error: (publish_errors > 0)
                .then(|| self.first_error.clone())
                .flatten(),
        }
    }
}

/// The publications of a phase that failed, in the results (flattened: one field
/// each).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishErrors {
    /// Publications that failed (error status, error body, connection failure).
    pub publish_errors: u64,
    /// Why the publisher's first failed one did, if one of the phase's did.
    pub first_publish_error: Option<String>,
}

/// The publishing pool; dropping it stops its connections.
pub struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
    queued: Arc<AtomicU64>,
    shared: Arc<Shared>,
    _pool: JoinSet<()>,
}

impl Publisher {
    /// Starts the pool's connections (each connects on its first publication).
    pub fn start(spec: PublishSpec) -> Result<Publisher, String> {
        let dialer = Arc::new(Dialer::new(spec.endpoint.clone(), HttpVersion::Http1)?);
        let spec = Arc::new(spec);
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let shared = Arc::new(Shared::default());
        let mut pool = JoinSet::new();
        for _ in 0..spec.connections {
            let connection = Connection {
                spec: spec.clone(),
                dialer: dialer.clone(),
                io: None,
                response: Vec::with_capacity(1024),
            };
            pool.spawn(connection.run(queue.clone(), shared.clone()));
        }
        Ok(Publisher {
            jobs,
            queued: Arc::default(),
            shared,
            _pool: pool,
        })
    }

    /// Queues publications `first..first + count`, the `k`-th at `start_ns + k ·
    /// interval_ns` (nanoseconds of CLOCK_MONOTONIC); returns once the last is
    /// queued.
    pub async fn schedule(&self, first: u64, count: u64, start_ns: u64, interval_ns: f64) {
        let (jobs, queued) = (self.jobs.clone(), self.queued.clone());
        // A thread of its own: tokio's timer fires up to ~2 ms late (millisecond
        // ticks, rounded up), which would add to every latency measured;
        // `thread::sleep` is accurate to tens of microseconds.
        let timed = move || {
            for k in 0..count {
                let sent_ns = start_ns + (k as f64 * interval_ns) as u64;
                let now = clock::now_ns();
                if sent_ns > now {
                    std::thread::sleep(Duration::from_nanos(sent_ns - now));
                }
                queued.fetch_add(1, Ordering::Relaxed);
                let _ = jobs.send(Job {
                    n: first + k,
                    sent_ns,
                });
            }
        };
        let _ = tokio::task::spawn_blocking(timed).await;
    }

    /// Waits until every queued publication is answered, for at most `timeout`;
    /// whether they all were.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if stats.answered >= stats.queued {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PublishStats {
        PublishStats {
            queued: self.queued.load(Ordering::Relaxed),
            answered: self.shared.answered.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            first_error: self
                .shared
                .first_error
                .lock()
                .ok()
                .and_then(|first| first.clone()),
        }
    }
}

/// Why a request failed.
enum Failure {
    /// A reused connection closed before answering: the server closed it while
    /// idle, so the request can be sent again on a new one.
    Stale,
    Other(String),
}

/// One keep-alive connection of the pool.
struct Connection {
    spec: Arc<PublishSpec>,
    dialer: Arc<Dialer>,
    io: Option<Box<dyn Io>>,
    /// The response being read (its allocation is reused).
    response: Vec<u8>,
}

impl Connection {
    /// Publishes jobs from `queue` until the publisher is dropped.
    async fn run(
        mut self,
        queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
        shared: Arc<Shared>,
    ) {
        let mut request = Vec::new();
        let mut scratch = (Vec::new(), Vec::new());
        loop {
            let job = queue.lock().await.recv().await;
            let Some(job) = job else { return };
            let sent = match self
                .spec
                .request(job.n, job.sent_ns, &mut request, &mut scratch)
            {
                Ok(()) => self.publish(&request).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = shared.first_error.lock() {
                    first.get_or_insert(e);
                }
            }
            shared.answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `request` and reads the answer, on this connection or a new one.
    async fn publish(&mut self, request: &[u8]) -> Result<(), String> {
        loop {
            let reused = self.io.is_some();
            let mut io = match self.io.take() {
                Some(io) => io,
                None => self.dialer.dial(None).await?,
            };
            let exchange = exchange(&mut io, request, &mut self.response);
            let result = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Other(format!(
                    "no answer within {REQUEST_TIMEOUT:?}"
                ))),
            };
            return match result {
                Ok(keep_alive) => {
                    self.io = keep_alive.then_some(io);
                    Ok(())
                }
                // Closed while idle: once more on a new connection.
                Err(Failure::Stale) if reused => continue,
                Err(Failure::Stale) => {
                    Err("the server closed the connection without answering".into())
                }
                Err(Failure::Other(e)) => Err(e),
            };
        }
    }
}

/// Writes `request` and reads a complete response into `response`; `Ok(true)` if
/// the connection can be reused. A non-2xx status or a JSON `error` body (Herald's
/// API answers 200 with one for some refusals) is a failure.
async fn exchange(
    io: &mut Box<dyn Io>,
    request: &[u8],
    response: &mut Vec<u8>,
) -> Result<bool, Failure> {
    let other = |e: String| Failure::Other(e);
    response.clear();
    if let Err(e) = io.write_all(request).await {
        return Err(match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Failure::Stale,
            _ => other(format!("write: {e}")),
        });
    }
    let head = loop {
        let read = io
            .read_buf(response)
            .await
            .map_err(|e| other(format!("read: {e}")))?;
        if read == 0 {
            return Err(if response.is_empty() {
                Failure::Stale
            } else {
                other("closed in the middle of a response".into())
            });
        }
        if let Some(head) = http1::parse_head(response, |_, _| Ok(())).map_err(other)? {
            break head;
        }
    };
    let mut keep_alive = !head.close;
    let body_start = head.len;
    let body_end = if head.chunked {
        let mut dechunker = Dechunker::default();
        let mut decoded = body_start;
        loop {
            dechunker.decode(response, &mut decoded).map_err(other)?;
            if dechunker.is_done() {
                break decoded;
            }
            read_more(io, response).await?;
        }
    } else if let Some(length) = head.content_length {
        if length > MAX_BODY {
            return Err(other(format!("a {length}-byte response body")));
        }
        while response.len() < body_start + length {
            read_more(io, response).await?;
        }
        body_start + length
    } else if matches!(head.status, 204 | 304) {
        body_start
    } else {
        // No length: the body ends when the server closes.
        keep_alive = false;
        while io
            .read_buf(response)
            .await
            .map_err(|e| other(format!("read: {e}")))?
            > 0
        {}
        response.len()
    };
    let body = &response[body_start..body_end.min(response.len())];
    if !(200..300).contains(&head.status) || body.trim_ascii_start().starts_with(b"{\"error\"") {
        let body = String::from_utf8_lossy(body);
        return Err(other(format!("HTTP {}: {}", head.status, body.trim())));
    }
    Ok(keep_alive)
}

async fn read_more(io: &mut Box<dyn Io>, response: &mut Vec<u8>) -> Result<(), Failure> {
    if response.len() > MAX_BODY + http1::MAX_HEAD {
        return Err(Failure::Other("response too large".into()));
    }
    match io.read_buf(response).await {
        Ok(0) => Err(Failure::Other("closed in the middle of a response".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Other(format!("read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize) -> PublishSpec {
        PublishSpec {
            endpoint: Endpoint::new("127.0.0.1:8000", false).unwrap(),
            path: "/pub?id={channel}".parse().unwrap(),
            body: Template::lenient(r#"{"channel":"{channel}","data":"{payload}"}"#),
            headers: "x-api-key: k\r\n".into(),
            channel_names: vec!["a".into(), "b".into()],
            size,
            connections: 1,
        }
    }

    #[test]
    fn writes_requests() {
        let (mut request, mut scratch) = (Vec::new(), Default::default());
        spec(24).request(5, 77, &mut request, &mut scratch).unwrap();
        let body = r#"{"channel":"b","data":"hb2.1.77.xxxxxxxxxxxxxxx"}"#;
        let expected = format!(
            "POST /pub?id=b HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nuser-agent: herald-bench\r\n\
             x-api-key: k\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(request).unwrap(), expected);
        assert!(spec(64).check_size(1_000_000_000).is_ok());
        assert!(spec(24).check_size(1_000_000_000).is_err());
    }

    #[tokio::test]
    async fn reads_responses() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut io: Box<dyn Io> = Box::new(client);
        let mut response = Vec::new();
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"error\":{\"code\":1}}",
            b"HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno",
        ];
        let mut outcomes = Vec::new();
        for answer in answers {
            server.write_all(answer).await.unwrap();
            outcomes.push(match exchange(&mut io, b"POST", &mut response).await {
                Ok(keep_alive) => format!("ok {keep_alive}"),
                Err(Failure::Other(e)) => e,
                Err(Failure::Stale) => "stale".into(),
            });
        }
        assert_eq!(
            outcomes,
            [
                "ok true",
                "ok true",
                r#"HTTP 200: {"error":{"code":1}}"#,
                "HTTP 403: no"
            ]
        );
        drop(server);
        assert!(matches!(
            exchange(&mut io, b"POST", &mut response).await,
            Err(Failure::Stale)
        ));
    }
}

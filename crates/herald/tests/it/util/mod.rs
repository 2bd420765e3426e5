//! The test harness: a real `herald` process ([`Herald`]), HTTP clients for each
//! protocol path ([`Proto`]), an SSE reader ([`EventStream`]), a Centrifuge
//! WebSocket client ([`Ws`]) and test certificates.

mod herald;
mod sse;
pub mod tls;
pub mod ws;

use std::time::Duration;

pub use herald::{API_KEY, Herald};
pub use sse::EventStream;
pub use ws::Ws;

/// How long a test waits for something that should happen promptly (an event, a
/// reply). Generous: these are correctness tests, never timing assertions.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// How long a test watches for something that must *not* arrive.
pub const QUIET: Duration = Duration::from_millis(200);

/// A protocol path from client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over plain TCP.
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (h2c).
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN `h2`.
    H2Tls,
}

impl Proto {
    /// Whether the server must be started with a certificate.
    pub fn is_tls(self) -> bool {
        self == Proto::H2Tls
    }

    /// Whether requests travel over HTTP/2.
    pub fn is_h2(self) -> bool {
        self != Proto::Http1
    }

    /// The HTTP version every response on this path must have.
    pub fn version(self) -> reqwest::Version {
        if self.is_h2() {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        }
    }

    /// The `http_version` label Herald's metrics use for this path.
    pub fn metrics_label(self) -> &'static str {
        if self.is_h2() { "2" } else { "1.1" }
    }
}

/// The current time in seconds since the Unix epoch (for token `exp` claims).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Polls `check` every few milliseconds until it returns `Some`, or panics with
/// `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a Prometheus sample `name{labels…}` in a text exposition, where
/// every `(label, value)` given must match (other labels are ignored).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all_match = labels.iter().all(|(label, want)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{label}=\"{want}\""))
            });
            all_match.then(|| value.parse().ok()).flatten()
        })
}

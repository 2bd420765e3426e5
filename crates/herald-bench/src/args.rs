//! Command-line options shared by the scenarios: what to connect to and how.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Args;

use crate::target::{Protocol, Target, Template};
use crate::worker::Plan;

/// Where and how to open connections.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// URL template of each connection: an SSE stream, e.g.
    /// `http://127.0.0.1:8000/events?channel=bench-{i%100}`, or a WebSocket speaking
    /// the Centrifuge protocol, e.g. `ws://127.0.0.1:8000/connection/websocket`;
    /// `{i}` is the connection's index, `{i%K}` that index modulo K; `https://` and
    /// `wss://` speak TLS.
    #[arg(long, conflicts_with_all = ["target", "path"], required_unless_present = "target")]
    pub url: Option<String>,
    /// Server as HOST:PORT (instead of --url).
    #[arg(long)]
    pub target: Option<String>,
    /// Path template with --target.
    #[arg(long, default_value = "/events?channel=bench-{i%100}")]
    pub path: String,
    /// Speak TLS (rustls, any certificate accepted); implied by an https:// or
    /// wss:// URL.
    #[arg(long)]
    pub tls: bool,
    /// With --target: open WebSockets (Centrifuge protocol) at --path instead of
    /// SSE streams; implied by a ws:// or wss:// URL.
    #[arg(long)]
    pub websocket: bool,
    /// Channel each WebSocket subscribes (`{i}`, `{i%K}` as in the URL).
    #[arg(long, default_value = "bench-{i%100}")]
    pub channel: Template,
    /// Source addresses to bind, spread over the connections: ranges and single
    /// addresses, comma-separated (`none`: let the kernel choose). Each address
    /// reaches ~28k ports. [default: 127.0.0.2-127.0.0.20 for an IPv4 loopback
    /// target, else none]
    #[arg(long)]
    pub sources: Option<String>,
    /// Processes holding the connections (each may hold ~20,000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,
    /// Connections being opened at once, over all workers.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
}

impl ConnectArgs {
    /// The target, parsed and resolved.
    pub fn target(&self) -> Result<Target, String> {
        match (&self.url, &self.target) {
            (Some(url), _) => {
                let mut target = Target::from_url(url, &self.channel)?;
                target.tls |= self.tls;
                Ok(target)
            }
            (None, Some(authority)) => {
                let protocol = if self.websocket {
                    Protocol::WebSocket {
                        channel: self.channel.clone(),
                    }
                } else {
                    Protocol::Sse
                };
                Target::new(authority, &self.path, self.tls, protocol)
            }
            (None, None) => Err("give --url or --target".into()),
        }
    }

    /// One plan per worker.
    pub fn plans(&self, target: &Target) -> Result<Vec<Plan>, String> {
        let sources = match &self.sources {
            Some(list) => parse_sources(list)?,
            None => match target.addr.ip() {
                IpAddr::V4(ip) if ip.is_loopback() => (2..=20)
                    .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
                    .collect(),
                _ => Vec::new(),
            },
        };
        let concurrency = self.concurrency.div_ceil(self.workers) as usize;
        Ok((0..self.workers)
            .map(|worker| Plan {
                target: target.clone(),
                sources: sources.clone(),
                worker,
                workers: self.workers,
                concurrency,
            })
            .collect())
    }
}

/// Parses `127.0.0.2-127.0.0.20,10.0.0.1` or `none`.
fn parse_sources(list: &str) -> Result<Vec<IpAddr>, String> {
    if list == "none" {
        return Ok(Vec::new());
    }
    let mut sources = Vec::new();
    for item in list.split(',').map(str::trim) {
        let bad = |e: std::net::AddrParseError| format!("--sources {item}: {e}");
        match item.split_once('-') {
            Some((first, last)) => {
                let first: Ipv4Addr = first.parse().map_err(bad)?;
                let last: Ipv4Addr = last.parse().map_err(bad)?;
                if first > last {
                    return Err(format!("--sources {item}: empty range"));
                }
                sources.extend((first.to_bits()..=last.to_bits()).map(|ip| IpAddr::V4(ip.into())));
            }
            None => sources.push(item.parse().map_err(bad)?),
        }
    }
    Ok(sources)
}

/// Parses `2s`, `500ms`, `1.5s` or `1m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text}: expected a duration such as 2s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text}: unknown unit {unit} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        let sources = parse_sources("127.0.0.2-127.0.0.4, ::1").unwrap();
        let expected: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(sources, expected);
        assert!(parse_sources("none").unwrap().is_empty());
        assert!(parse_sources("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_sources("localhost").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }
}

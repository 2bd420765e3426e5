//! Command-line options shared by the scenarios: what to connect to, how the
//! connections are spread, and what to publish.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Args;

use crate::publisher::PublishSpec;
use crate::target::{Endpoint, HttpVersion, Protocol, Target, Url};
use crate::template::{Placeholder, Template, Vars};
use crate::worker::{Mode, Plan};

/// How connections are spread over source addresses and processes.
#[derive(Debug, Args)]
pub struct Spread {
    /// Source addresses to bind, spread over the connections: ranges and single
    /// addresses, comma-separated (`none`: let the kernel choose). Each address
    /// reaches ~28k ports. [default: 127.0.0.2-127.0.0.20 for an IPv4 loopback
    /// target, else none]
    #[arg(long)]
    pub sources: Option<String>,
    /// Processes holding the connections (each may hold ~20,000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,
    /// Connections being opened at once, over all workers. [default: 256; storm:
    /// all of them]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: Option<u64>,
    /// How long opening one connection (TCP, TLS, upgrade, subscribe) may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

impl Spread {
    /// One plan per worker for a run of `connections` (the most held at once);
    /// `concurrency` applies unless --concurrency is given.
    pub fn plans(
        &self,
        target: &Target,
        mode: Mode,
        connections: u64,
        concurrency: u64,
    ) -> Result<Vec<Plan>, String> {
        let sources = match &self.sources {
            Some(list) => parse_sources(list)?,
            None => match target.endpoint.addr.ip() {
                IpAddr::V4(ip) if ip.is_loopback() => (2..=20)
                    .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
                    .collect(),
                _ => Vec::new(),
            },
        };
        let concurrency = self.concurrency.unwrap_or(concurrency).max(1);
        let per_worker = concurrency.div_ceil(self.workers) as usize;
        Ok((0..self.workers)
            .map(|worker| Plan {
                target: target.clone(),
                sources: sources.clone(),
                worker,
                workers: self.workers,
                concurrency: per_worker,
                timeout: self.connect_timeout,
                mode,
                connections,
            })
            .collect())
    }
}

/// The HTTP version of the connections.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// HTTP version of the subscriber connections.
    #[arg(long, value_enum, default_value = "1.1")]
    pub http: HttpVersion,
    /// With --http 2: subscribers multiplexed as streams on one connection (like
    /// the EventSources and WebSockets of one browser page); counts, and idle's
    /// memory per connection, are then per stream.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub streams_per_connection: u32,
}

impl HttpArgs {
    /// The version and streams per connection, checked.
    fn checked(&self) -> Result<(HttpVersion, u32), String> {
        if self.http == HttpVersion::Http1 && self.streams_per_connection > 1 {
            return Err("--streams-per-connection needs --http 2".into());
        }
        Ok((self.http, self.streams_per_connection))
    }
}

/// Tokens for `{token}`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// HMAC secret (the server's --token-hmac-secret) signing each connection's
    /// `{token}`: an HS256 JWT for user `bench-{i}` that grants the connection's
    /// channel and expires in a day, minted before any connection opens. Required
    /// when the URL has `{token}`. A JWT (base64url and dots) needs no escaping in
    /// a URL: Herald's WebSocket that connects and subscribes in one request is
    /// `ws://127.0.0.1:8000/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D`
    /// (`cf_connect={"token":"{token}"}`, encoded around the placeholder) with
    /// --protocol ws.
    #[arg(long)]
    pub token_secret: Option<String>,
}

impl TokenArgs {
    /// The secret, checked against the URL's `path`: needed if and only if it has
    /// `{token}`.
    fn secret_for(&self, path: &Template) -> Result<Option<String>, String> {
        match (path.uses(Placeholder::Token), &self.token_secret) {
            (true, None) => Err(format!(
                "{path}: {{token}} needs --token-secret (the server's HMAC secret)"
            )),
            (false, Some(_)) => {
                Err("--token-secret is for URLs with {token}; this one has none".into())
            }
            (_, secret) => Ok(secret.clone()),
        }
    }
}

/// Where and how `idle` opens connections.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// URL template of each connection, e.g.
    /// `http://127.0.0.1:8000/events?channel=bench-{i%100}` (Herald SSE),
    /// `ws://127.0.0.1:8000/connection/websocket` (Centrifuge), or with --protocol
    /// sse|ws any server's, e.g. `http://127.0.0.1:8080/sub/{channel}`; `{i}` is
    /// the connection's index, `{i%K}` that index modulo K, `{channel}` its
    /// channel (--channel), `{token}` its token (--token-secret); `https://` and
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
    /// With --target: open Centrifuge WebSockets at --path (same as --protocol
    /// centrifuge).
    #[arg(long, conflicts_with = "protocol")]
    pub websocket: bool,
    /// What the connections speak. [default: from the URL: centrifuge for ws:// and
    /// wss://; for http:// and https:// Herald's SSE, which counts a stream as open
    /// at its `connected` event]
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Channel of each connection (`{i}`, `{i%K}`): subscribed over Centrifuge,
    /// `{channel}` in the URL.
    #[arg(long, default_value = "bench-{i%100}")]
    pub channel: Template,
    /// Tokens for `{token}`.
    #[command(flatten)]
    pub token: TokenArgs,
    /// The HTTP version.
    #[command(flatten)]
    pub http: HttpArgs,
    /// How the connections are spread.
    #[command(flatten)]
    pub spread: Spread,
}

impl ConnectArgs {
    /// The target, parsed and resolved.
    pub fn target(&self) -> Result<Target, String> {
        let (mut endpoint, path, websocket_url) = match (&self.url, &self.target) {
            (Some(url), _) => {
                let url = Url::parse(url)?;
                (url.endpoint, url.path, Some(url.websocket))
            }
            (None, Some(authority)) => {
                (Endpoint::new(authority, self.tls)?, self.path.clone(), None)
            }
            (None, None) => return Err("give --url or --target".into()),
        };
        endpoint.tls |= self.tls;
        let protocol = match (self.protocol, websocket_url) {
            (Some(protocol), _) => protocol,
            (None, Some(true)) => Protocol::Centrifuge,
            (None, _) if self.websocket => Protocol::Centrifuge,
            (None, _) => Protocol::Sse,
        };
        if let Some(websocket) = websocket_url {
            check_scheme(protocol, websocket)?;
        }
        let (http, streams_per_connection) = self.http.checked()?;
        let path = parse_path(&path)?;
        let target = Target {
            endpoint,
            token_secret: self.token.secret_for(&path)?,
            path,
            http,
            streams_per_connection,
            protocol,
            // Herald's SSE streams announce their subscription; a generic one does not.
            ready_event: (protocol == Protocol::Sse && self.protocol.is_none())
                .then(|| "connected".to_owned()),
            channel: self.channel.clone(),
            channels: u64::MAX,
        };
        target.channel.allow_only(
            "--channel",
            &[Placeholder::Index, Placeholder::ChannelIndex],
        )?;
        Ok(target)
    }
}

/// Where and how `fanout` and `storm` open their subscribers.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// URL template of each subscriber, e.g.
    /// `ws://127.0.0.1:8000/connection/websocket` (Herald, Centrifuge),
    /// `http://127.0.0.1:8000/events?channel={channel}` (Herald, SSE),
    /// `http://127.0.0.1:8080/sub/{channel}` (nchan); `{channel}` is the
    /// subscriber's channel name, `{c}` its index, `{i}` the subscriber's index,
    /// `{i%K}` that modulo K, `{token}` its token (--token-secret); `https://` and
    /// `wss://` speak TLS.
    #[arg(long)]
    pub url: String,
    /// What the subscribers speak. [default: centrifuge for ws:// and wss:// URLs,
    /// sse for http:// and https://]
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Subscribers (connections).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u64,
    /// Channels; subscriber i is on channel i % channels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub channels: u64,
    /// Name of channel c (`{c}`).
    #[arg(long, default_value = "bench-{c}")]
    pub channel_name: Template,
    /// Tokens for `{token}`.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Speak TLS (rustls, any certificate accepted); implied by an https:// or
    /// wss:// URL.
    #[arg(long)]
    pub tls: bool,
    /// The HTTP version.
    #[command(flatten)]
    pub http: HttpArgs,
    /// How the connections are spread.
    #[command(flatten)]
    pub spread: Spread,
}

impl SubscribeArgs {
    /// The target, parsed and resolved.
    pub fn target(&self) -> Result<Target, String> {
        let url = Url::parse(&self.url)?;
        let protocol = self.protocol.unwrap_or(if url.websocket {
            Protocol::Centrifuge
        } else {
            Protocol::Sse
        });
        check_scheme(protocol, url.websocket)?;
        self.channel_name
            .allow_only("--channel-name", &[Placeholder::ChannelIndex])?;
        if self.subscribers == 0 {
            return Err("--subscribers must be at least 1".into());
        }
        let (http, streams_per_connection) = self.http.checked()?;
        let mut endpoint = url.endpoint;
        endpoint.tls |= self.tls;
        let path = parse_path(&url.path)?;
        Ok(Target {
            endpoint,
            token_secret: self.token.secret_for(&path)?,
            path,
            http,
            streams_per_connection,
            protocol,
            ready_event: None,
            channel: self.channel_name.clone(),
            channels: self.channels,
        })
    }
}

/// What `fanout` and `storm` publish, and where.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// URL template publications are POSTed to (HTTP/1.1 keep-alive): `{channel}`
    /// is the channel's name, `{c}` its index; e.g.
    /// `http://127.0.0.1:8000/api/publish` (Herald) or
    /// `http://127.0.0.1:8080/pub?id={channel}` (nchan).
    #[arg(long)]
    pub publish_url: String,
    /// Body template: `{payload}`, `{channel}`, `{c}`; other braces are literal, e.g.
    /// `{"channel":"{channel}","data":"{payload}"}` for Herald.
    #[arg(long, default_value = "{payload}")]
    pub publish_body: String,
    /// A header of every publish request, `Name: value` (repeatable), e.g.
    /// `Authorization: apikey KEY` or `X-API-Key: KEY` for Herald. Content-Type
    /// defaults to application/json for a body starting with `{`, else text/plain.
    #[arg(long = "publish-header")]
    pub publish_headers: Vec<String>,
    /// Bytes of each payload: `hb<seq>.<channel>.<send-ns>.` then `x` padding
    /// (ASCII, safe in a JSON string).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Keep-alive connections publishing at once (a slow reply holds up only its
    /// own connection).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub publish_connections: u64,
}

impl PublishArgs {
    /// What to publish, for subscribers of `target`.
    pub fn spec(&self, target: &Target) -> Result<PublishSpec, String> {
        let url = Url::parse(&self.publish_url)?;
        if url.websocket {
            return Err(format!(
                "--publish-url {}: must be http:// or https://",
                self.publish_url
            ));
        }
        let path = parse_path(&url.path)?;
        path.allow_only(
            "--publish-url",
            &[Placeholder::Channel, Placeholder::ChannelIndex],
        )?;
        let body = Template::lenient(&self.publish_body);
        body.allow_only(
            "--publish-body",
            &[
                Placeholder::Payload,
                Placeholder::Channel,
                Placeholder::ChannelIndex,
            ],
        )?;
        if !body.uses(Placeholder::Payload) {
            return Err(format!(
                "--publish-body {}: must contain {{payload}}",
                self.publish_body
            ));
        }
        let mut headers = String::new();
        let mut content_type = false;
        for header in &self.publish_headers {
            let (name, value) = header
                .split_once(':')
                .filter(|(name, _)| !name.trim().is_empty())
                .ok_or_else(|| format!("--publish-header {header:?}: expected 'Name: value'"))?;
            content_type |= name.trim().eq_ignore_ascii_case("content-type");
            headers.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
        }
        if !content_type {
            let sample = body.expand(&Vars {
                payload: b"hb",
                ..Vars::default()
            });
            let json = sample.trim_start().starts_with('{');
            let kind = if json {
                "application/json"
            } else {
                "text/plain"
            };
            headers.push_str(&format!("content-type: {kind}\r\n"));
        }
        Ok(PublishSpec {
            endpoint: url.endpoint,
            path,
            body,
            headers,
            channel_names: (0..target.channels)
                .map(|c| target.channel_of(c).1)
                .collect(),
            size: self.size,
            connections: self.publish_connections as usize,
        })
    }
}

/// Refuses a protocol the URL's scheme cannot carry.
fn check_scheme(protocol: Protocol, websocket_url: bool) -> Result<(), String> {
    match (protocol.is_websocket(), websocket_url) {
        (true, false) => Err(format!("--protocol {protocol} needs a ws:// or wss:// URL")),
        (false, true) => Err(format!(
            "--protocol {protocol} needs an http:// or https:// URL"
        )),
        _ => Ok(()),
    }
}

/// A request path template: `/…`, with the placeholders of a subscriber URL.
fn parse_path(path: &str) -> Result<Template, String> {
    if !path.starts_with('/') {
        return Err(format!("{path}: the path must start with '/'"));
    }
    let template: Template = path.parse()?;
    template.allow_only(
        "the URL",
        &[
            Placeholder::Index,
            Placeholder::ChannelIndex,
            Placeholder::Channel,
            Placeholder::Token,
        ],
    )?;
    Ok(template)
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
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        subscribe: SubscribeArgs,
        #[command(flatten)]
        publish: PublishArgs,
    }

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

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["x"], args].concat()).unwrap()
    }

    #[test]
    fn builds_the_publish_request_parts() {
        let cli = cli(&[
            "--url=http://127.0.0.1:8080/sub/{channel}",
            "--channels=2",
            "--channel-name=room{c}",
            "--publish-url=http://127.0.0.1:8080/pub?id={channel}",
            "--publish-header=Authorization: apikey k",
        ]);
        let target = cli.subscribe.target().unwrap();
        assert_eq!(target.protocol, Protocol::Sse);
        assert_eq!(target.path_of(3, ""), "/sub/room1");
        let spec = cli.publish.spec(&target).unwrap();
        assert_eq!(spec.channel_names, ["room0", "room1"]);
        assert_eq!(
            spec.headers,
            "Authorization: apikey k\r\ncontent-type: text/plain\r\n"
        );
    }

    #[test]
    fn refuses_mismatched_options() {
        let publish = ["--publish-url=http://127.0.0.1/api/publish"];
        let refused = |args: &[&str]| {
            let cli = cli(&[args, &publish].concat());
            cli.subscribe
                .target()
                .and_then(|target| cli.publish.spec(&target))
                .unwrap_err()
        };
        assert!(refused(&["--url=http://127.0.0.1/", "--protocol=ws"]).contains("ws://"));
        assert!(refused(&["--url=ws://127.0.0.1/", "--protocol=sse"]).contains("http://"));
        assert!(refused(&["--url=http://127.0.0.1/{payload}"]).contains("cannot be used"));
        assert!(
            refused(&["--url=http://127.0.0.1/", "--publish-body={channel}"])
                .contains("must contain {payload}")
        );
        assert!(refused(&["--url=http://127.0.0.1/", "--publish-header=nocolon"]).contains("Name"));
        assert!(
            refused(&["--url=http://127.0.0.1/", "--streams-per-connection=2"])
                .contains("--http 2")
        );
        assert!(refused(&["--url=ws://127.0.0.1/?t={token}"]).contains("needs --token-secret"));
        assert!(refused(&["--url=ws://127.0.0.1/", "--token-secret=s"]).contains("has none"));
    }

    #[test]
    fn takes_a_token_secret_for_token_urls() {
        let uni = cli(&[
            "--url=ws://127.0.0.1/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D",
            "--protocol=ws",
            "--token-secret=s3cret",
            "--publish-url=http://127.0.0.1/api/publish",
        ]);
        let target = uni.subscribe.target().unwrap();
        assert_eq!(target.token_secret.as_deref(), Some("s3cret"));
        assert_eq!(
            target.path_of(0, "a.b.c"),
            "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22a.b.c%22%7D"
        );
        // Publications carry no token.
        let tokened_publish = cli(&[
            "--url=ws://127.0.0.1/?t={token}",
            "--token-secret=s3cret",
            "--publish-url=http://127.0.0.1/pub?t={token}",
        ]);
        let target = tokened_publish.subscribe.target().unwrap();
        assert!(
            tokened_publish
                .publish
                .spec(&target)
                .unwrap_err()
                .contains("{token} cannot be used here")
        );
    }

    #[test]
    fn chooses_the_http_version() {
        let publish = "--publish-url=http://127.0.0.1/api/publish";
        let target = |args: &[&str]| cli(&[args, &[publish]].concat()).subscribe.target();
        let default = target(&["--url=ws://127.0.0.1/connection/websocket"]).unwrap();
        assert_eq!(
            (default.http, default.streams_per_connection),
            (HttpVersion::Http1, 1)
        );
        let h2 = target(&[
            "--url=wss://127.0.0.1/connection/websocket",
            "--http=2",
            "--streams-per-connection=8",
        ])
        .unwrap();
        assert_eq!(
            (h2.http, h2.streams_per_connection),
            (HttpVersion::Http2, 8)
        );
        assert!(h2.endpoint.tls);
        assert!(Cli::try_parse_from(["x", "--url=http://a/", "--http=3", publish]).is_err());
    }
}

//! What to connect to: the server's address, the `Host` header, TLS or not, the
//! protocol (SSE or a Centrifuge-protocol WebSocket), and the templates that give
//! each connection its own URL or channel.

use std::fmt::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

/// The server end of every connection of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Address connected to.
    pub addr: SocketAddr,
    /// Host name as written in the URL or `--target`: the `Host` header and the TLS
    /// server name.
    pub host: String,
    /// `Host` header value (host, plus the port when it is not the scheme's default).
    pub authority: String,
    /// Whether to speak TLS.
    pub tls: bool,
    /// Path and query of each request, with `{i}` / `{i%K}` placeholders.
    pub path: Template,
    /// What each connection speaks once open.
    pub protocol: Protocol,
}

/// The protocol of the benchmark's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `GET` an SSE stream and read until its `connected` event.
    Sse,
    /// Upgrade to a WebSocket (HTTP/1.1), send the Centrifuge protocol's `connect`
    /// and `subscribe` commands and wait for both replies; then answer the server's
    /// pings.
    WebSocket {
        /// The channel each connection subscribes, with `{i}` / `{i%K}`
        /// placeholders.
        channel: Template,
    },
}

impl Target {
    /// Parses `http://host[:port]/path` or `https://…` (TLS) for SSE, `ws://…` or
    /// `wss://…` (TLS) for WebSockets (subscribing `channel`).
    pub fn from_url(url: &str, channel: &Template) -> Result<Target, String> {
        let schemes = [
            ("http://", false, false),
            ("https://", true, false),
            ("ws://", false, true),
            ("wss://", true, true),
        ];
        let Some((rest, tls, websocket)) = schemes
            .iter()
            .find_map(|&(scheme, tls, ws)| url.strip_prefix(scheme).map(|rest| (rest, tls, ws)))
        else {
            return Err(format!(
                "{url}: the URL must start with http://, https://, ws:// or wss://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let protocol = if websocket {
            Protocol::WebSocket {
                channel: channel.clone(),
            }
        } else {
            Protocol::Sse
        };
        Target::new(authority, path, tls, protocol)
    }

    /// Builds a target from `host[:port]` (port defaults to 80, or 443 with TLS),
    /// a path template, the TLS choice and the protocol; resolves the host.
    pub fn new(
        authority: &str,
        path: &str,
        tls: bool,
        protocol: Protocol,
    ) -> Result<Target, String> {
        if !path.starts_with('/') {
            return Err(format!("{path}: the path must start with '/'"));
        }
        let (host, port) = split_authority(authority, if tls { 443 } else { 80 })?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Target {
            addr,
            host,
            authority: authority.to_owned(),
            tls,
            path: path.parse()?,
            protocol,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (&self.protocol, self.tls) {
            (Protocol::Sse, false) => "http",
            (Protocol::Sse, true) => "https",
            (Protocol::WebSocket { .. }, false) => "ws",
            (Protocol::WebSocket { .. }, true) => "wss",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.path)?;
        if let Protocol::WebSocket { channel } = &self.protocol {
            write!(f, " (subscribing {channel})")?;
        }
        Ok(())
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without
/// brackets.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("{authority}: expected HOST[:PORT]");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(port) => port.parse().map_err(|_| bad())?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// Text with placeholders replaced per connection: `{i}` is the connection's index
/// (0-based, unique across workers), `{i%K}` that index modulo K (e.g.
/// `channel=bench-{i%100}` spreads connections over 100 channels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The connection index modulo this (`u64::MAX` for a bare `{i}`).
    Index(u64),
}

impl Template {
    /// The text for connection `index`.
    pub fn expand(&self, index: u64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Index(modulus) => {
                    let _ = write!(out, "{}", index % modulus);
                }
            }
        }
        out
    }
}

impl std::str::FromStr for Template {
    type Err = String;

    fn from_str(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("{template}: unclosed '{{'"))?;
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let modulus = match &rest[open + 1..close] {
                "i" => u64::MAX,
                inner => inner
                    .strip_prefix("i%")
                    .and_then(|k| k.parse().ok())
                    .filter(|&k| k > 0)
                    .ok_or_else(|| {
                        format!(
                            "{template}: unknown placeholder {{{inner}}} (use {{i}} or {{i%K}})"
                        )
                    })?,
            };
            parts.push(Part::Index(modulus));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(template: String) -> Result<Self, String> {
        template.parse()
    }
}

impl From<Template> for String {
    fn from(template: Template) -> String {
        template.to_string()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Index(u64::MAX) => f.write_str("{i}")?,
                Part::Index(modulus) => write!(f, "{{i%{modulus}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let template: Template = "/events?channel=bench-{i%3}&n={i}".parse().unwrap();
        assert_eq!(template.expand(7), "/events?channel=bench-1&n=7");
        assert_eq!(template.to_string(), "/events?channel=bench-{i%3}&n={i}");
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in ["/a{i", "/a{j}", "/a{i%0}", "/a{i%x}"] {
            assert!(bad.parse::<Template>().is_err(), "{bad}");
        }
        assert!(Target::new("127.0.0.1", "events", false, Protocol::Sse).is_err());
    }

    #[test]
    fn parses_urls() {
        let channel: Template = "bench-{i%100}".parse().unwrap();
        let target =
            Target::from_url("http://127.0.0.1:8000/events?channel=c-{i%10}", &channel).unwrap();
        assert_eq!(target.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(target.host, "127.0.0.1");
        assert!(!target.tls);
        assert_eq!(target.path.expand(12), "/events?channel=c-2");
        assert_eq!(
            target.to_string(),
            "http://127.0.0.1:8000/events?channel=c-{i%10}"
        );

        assert_eq!(target.protocol, Protocol::Sse);

        let target = Target::from_url("https://[::1]", &channel).unwrap();
        assert_eq!(target.addr, "[::1]:443".parse().unwrap());
        assert_eq!(target.host, "::1");
        assert!(target.tls);
        assert_eq!(target.path.expand(0), "/");

        let target =
            Target::from_url("wss://localhost:8443/connection/websocket", &channel).unwrap();
        assert!(target.tls);
        assert_eq!(target.protocol, Protocol::WebSocket { channel });
        assert_eq!(
            target.to_string(),
            "wss://localhost:8443/connection/websocket (subscribing bench-{i%100})"
        );

        let channel: Template = "c".parse().unwrap();
        assert!(Target::from_url("ftp://127.0.0.1/", &channel).is_err());
        assert!(Target::from_url("http://127.0.0.1:x/", &channel).is_err());
    }
}

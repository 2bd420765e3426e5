//! What to connect to: the server's endpoint (address, `Host`, TLS), the HTTP
//! version and protocol subscribers speak, and the templates that give each
//! connection its URL and channel.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

use crate::template::{Template, Vars};

/// A server as a client reaches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address connected to.
    pub addr: SocketAddr,
    /// Host name as written in the URL: the TLS server name.
    pub host: String,
    /// `Host` header value (host, plus the port when it is not the scheme's default).
    pub authority: String,
    /// Whether to speak TLS.
    pub tls: bool,
}

/// A URL split into its parts.
#[derive(Debug, Clone)]
pub struct Url {
    /// The server.
    pub endpoint: Endpoint,
    /// Path and query (a template).
    pub path: String,
    /// A `ws://` or `wss://` URL.
    pub websocket: bool,
}

impl Url {
    /// Parses `http://host[:port]/path`, `https://…`, `ws://…` or `wss://…` and
    /// resolves the host.
    pub fn parse(url: &str) -> Result<Url, String> {
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
        Ok(Url {
            endpoint: Endpoint::new(authority, tls)?,
            path: path.to_owned(),
            websocket,
        })
    }
}

impl Endpoint {
    /// Resolves `host[:port]` (port 80, or 443 with TLS, by default).
    pub fn new(authority: &str, tls: bool) -> Result<Endpoint, String> {
        let (host, port) = split_authority(authority, if tls { 443 } else { 80 })?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Endpoint {
            addr,
            host,
            authority: authority.to_owned(),
            tls,
        })
    }
}

/// The protocol subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// WebSocket with the Centrifuge client protocol (JSON): `connect`, then
    /// `subscribe` to the connection's channel (Herald's /connection/websocket).
    Centrifuge,
    /// An HTTP GET with `Accept: text/event-stream`; every event is a message
    /// (Herald's /events, nchan's EventSource, Pushpin's http-stream).
    Sse,
    /// A raw WebSocket: every text or binary message is a message (nchan, Pushpin,
    /// Herald's /connection/uni_websocket).
    Ws,
}

impl Protocol {
    /// Whether the protocol runs over a WebSocket.
    pub fn is_websocket(self) -> bool {
        matches!(self, Protocol::Centrifuge | Protocol::Ws)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Centrifuge => "centrifuge",
            Protocol::Sse => "sse",
            Protocol::Ws => "ws",
        })
    }
}

/// The HTTP version subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1: one subscriber per connection; WebSockets by `Upgrade`.
    #[value(name = "1.1")]
    Http1,
    /// HTTP/2: h2 over TLS (ALPN) or h2c with prior knowledge; WebSockets by
    /// extended CONNECT (RFC 8441).
    #[value(name = "2")]
    Http2,
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpVersion::Http1 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        })
    }
}

/// The server end of every connection of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The server.
    pub endpoint: Endpoint,
    /// Path and query of each request: `{i}`, `{i%K}`, `{c}`, `{channel}`,
    /// `{token}`.
    pub path: Template,
    /// The HTTP version connections speak.
    pub http: HttpVersion,
    /// HTTP/2: subscribers sharing one connection (HTTP/1.1: always 1).
    pub streams_per_connection: u32,
    /// What each connection speaks once open.
    pub protocol: Protocol,
    /// SSE only: an event type that must arrive before the stream counts as open
    /// (Herald's `connected`); otherwise the 200 response head is enough.
    pub ready_event: Option<String>,
    /// The name of connection `i`'s channel: `{c}`, `{i}`, `{i%K}`.
    pub channel: Template,
    /// Connection `i` is on channel `i % channels` (`{c}`).
    pub channels: u64,
    /// With `{token}` in the path: the HMAC secret its tokens are signed with.
    pub token_secret: Option<String>,
}

impl Target {
    /// The channel index and name of connection `index`.
    pub fn channel_of(&self, index: u64) -> (u64, String) {
        let channel_index = index % self.channels.max(1);
        let vars = Vars {
            index,
            channel_index,
            ..Vars::default()
        };
        (channel_index, self.channel.expand(&vars))
    }

    /// The request path of connection `index`, whose token (`{token}`) is `token`.
    pub fn path_of(&self, index: u64, token: &str) -> String {
        let (channel_index, channel) = self.channel_of(index);
        self.path.expand(&Vars {
            index,
            channel_index,
            channel: &channel,
            token,
            payload: b"",
        })
    }

    /// The URL template, as given.
    pub fn url(&self) -> String {
        let scheme = match (self.protocol.is_websocket(), self.endpoint.tls) {
            (false, false) => "http",
            (false, true) => "https",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        format!("{scheme}://{}{}", self.endpoint.authority, self.path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} over {}", self.url(), self.protocol, self.http)?;
        if self.streams_per_connection > 1 {
            write!(f, ", {} per connection", self.streams_per_connection)?;
        }
        if self.protocol == Protocol::Centrifuge
            || self.path.uses(crate::template::Placeholder::Channel)
        {
            write!(f, ", channel {}", self.channel)?;
        }
        f.write_str(")")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = Url::parse("http://127.0.0.1:8000/events?channel=c-{i%10}").unwrap();
        assert_eq!(url.endpoint.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(url.endpoint.host, "127.0.0.1");
        assert_eq!(url.endpoint.authority, "127.0.0.1:8000");
        assert!(!url.endpoint.tls && !url.websocket);
        assert_eq!(url.path, "/events?channel=c-{i%10}");

        let url = Url::parse("https://[::1]").unwrap();
        assert_eq!(url.endpoint.addr, "[::1]:443".parse().unwrap());
        assert_eq!(url.endpoint.host, "::1");
        assert!(url.endpoint.tls);
        assert_eq!(url.path, "/");

        let url = Url::parse("wss://localhost:8443/connection/websocket").unwrap();
        assert!(url.endpoint.tls && url.websocket);

        assert!(Url::parse("ftp://127.0.0.1/").is_err());
        assert!(Url::parse("http://127.0.0.1:x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[test]
    fn gives_each_connection_its_channel_and_path() {
        let target = Target {
            endpoint: Endpoint::new("127.0.0.1:80", false).unwrap(),
            path: "/sub/{channel}?i={i}&t={token}".parse().unwrap(),
            http: HttpVersion::Http1,
            streams_per_connection: 1,
            protocol: Protocol::Sse,
            ready_event: None,
            channel: "bench-{c}".parse().unwrap(),
            channels: 3,
            token_secret: Some("secret".into()),
        };
        assert_eq!(target.channel_of(7), (1, "bench-1".to_owned()));
        assert_eq!(target.path_of(7, "a.b.c"), "/sub/bench-1?i=7&t=a.b.c");
        assert_eq!(
            target.to_string(),
            "http://127.0.0.1:80/sub/{channel}?i={i}&t={token} (sse over HTTP/1.1, channel bench-{c})"
        );
    }
}

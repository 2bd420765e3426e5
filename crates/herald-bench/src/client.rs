//! The lean clients: one socket (or TLS stream) per connection and hand-written
//! requests. An SSE stream is read just enough to know the server has subscribed it
//! — the response head and the first `connected` event — and then held without
//! reading; a WebSocket (see `ws`) is upgraded, connected and subscribed, then left
//! to a small task that answers the server's pings. Nothing else is kept per
//! connection, so the client stays cheap at tens of thousands of connections.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::target::{Protocol, Target};
use crate::ws::{self, Held};

/// The event Herald sends first on every stream, once it has subscribed it.
const READY_EVENT: &str = "connected";
/// How long connecting, the TLS handshake and the response may take together.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read before the ready event must have arrived.
const MAX_OPENING_BYTES: usize = 64 * 1024;

/// A byte stream: a TCP socket, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection, held only to keep it open; dropping it closes it.
pub enum Connection {
    /// An SSE stream, held without reading.
    Stream {
        /// The socket.
        _io: Box<dyn Io>,
    },
    /// A WebSocket, held by its own task.
    WebSocket {
        /// The task's handle.
        _held: Held,
    },
}

/// Opens connections to one target.
pub struct Connector {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sources: Vec<IpAddr>,
    /// Why the first WebSocket the server closed ended, if one did.
    pub lost: ws::Lost,
}

impl Connector {
    /// A connector for `target`; connection `i` binds to `sources[i % len]` (the
    /// kernel chooses when `sources` is empty).
    pub fn new(target: Target, sources: Vec<IpAddr>) -> Result<Connector, String> {
        let tls = if target.tls {
            let config = crate::tls::client_config().map_err(|e| format!("TLS: {e}"))?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("{}: not a TLS server name: {e}", target.host))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Connector {
            target,
            tls,
            sources,
            lost: ws::Lost::default(),
        })
    }

    /// Opens connection `index`: connects, sends the request, and returns once the
    /// server has subscribed it (the SSE stream's `connected` event, or the replies
    /// to the WebSocket's `connect` and `subscribe`).
    pub async fn open(&self, index: u64) -> Result<Connection, String> {
        let source = match self.sources.len() {
            0 => None,
            n => Some(self.sources[(index % n as u64) as usize]),
        };
        let path = self.target.path.expand(index);
        match tokio::time::timeout(OPEN_TIMEOUT, self.open_inner(source, index)).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(format!("{path}: {e}")),
            Err(_) => Err(format!("{path}: not subscribed within {OPEN_TIMEOUT:?}")),
        }
    }

    async fn open_inner(&self, source: Option<IpAddr>, index: u64) -> Result<Connection, String> {
        let mut io = self.connect(source).await?;
        let path = self.target.path.expand(index);
        match &self.target.protocol {
            Protocol::Sse => {
                let request = format!(
                    "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\nuser-agent: herald-bench\r\n\r\n",
                    self.target.authority
                );
                io.write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                read_until_ready(&mut io).await?;
                Ok(Connection::Stream { _io: io })
            }
            Protocol::WebSocket { channel } => {
                let channel = channel.expand(index);
                let opened = ws::open(io, &self.target.authority, &path, &channel, index).await?;
                Ok(Connection::WebSocket {
                    _held: ws::hold(opened, self.lost.clone()),
                })
            }
        }
    }

    /// A TCP connection to the target from `source`, with TLS if the target speaks it.
    async fn connect(&self, source: Option<IpAddr>) -> Result<Box<dyn Io>, String> {
        let addr = self.target.addr;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            ),
            None => Box::new(tcp),
        };
        Ok(io)
    }
}

/// Reads the response head (which must say 200) and the body up to the end of the
/// ready event. The buffer is dropped on return: nothing read stays with the
/// connection.
async fn read_until_ready(io: &mut Box<dyn Io>) -> Result<(), String> {
    let mut buffer = Vec::with_capacity(2048);
    let mut body_start = None;
    loop {
        if buffer.len() >= MAX_OPENING_BYTES {
            return Err(format!(
                "no {READY_EVENT} event in the first {MAX_OPENING_BYTES} bytes"
            ));
        }
        let read = io
            .read_buf(&mut buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            let what = if body_start.is_some() {
                "event"
            } else {
                "response"
            };
            return Err(format!("closed before the {READY_EVENT} {what}"));
        }
        let start = match body_start {
            Some(start) => start,
            None => match parse_head(&buffer)? {
                Some(start) => *body_start.insert(start),
                None => continue,
            },
        };
        if has_event(&buffer[start..], READY_EVENT) {
            return Ok(());
        }
    }
}

/// The length of the response head once complete; an error unless it is a 200.
fn parse_head(buffer: &[u8]) -> Result<Option<usize>, String> {
    parse_head_with(buffer, 200, |_| Ok(()))
}

/// The length of the response head once complete; an error unless its status is
/// `status` and `check` accepts its headers.
pub fn parse_head_with(
    buffer: &[u8],
    status: u16,
    check: impl FnOnce(&[httparse::Header<'_>]) -> Result<(), String>,
) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if response.code == Some(status) => {
            check(response.headers).map(|()| Some(len))
        }
        Ok(httparse::Status::Complete(len)) => {
            let body = String::from_utf8_lossy(&buffer[len..]);
            Err(format!(
                "HTTP {} {}: {}",
                response.code.unwrap_or(0),
                response.reason.unwrap_or(""),
                body.trim()
            ))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed response head: {e}")),
    }
}

/// Whether `body` holds a complete event (ended by a blank line) of type `name`.
/// Lines end with LF, as Herald writes them.
fn has_event(body: &[u8], name: &str) -> bool {
    let mut rest = body;
    while let Some(end) = rest.windows(2).position(|pair| pair == b"\n\n") {
        let matches = rest[..end].split(|&b| b == b'\n').any(|line| {
            line.strip_prefix(b"event:")
                .is_some_and(|value| value.trim_ascii() == name.as_bytes())
        });
        if matches {
            return true;
        }
        rest = &rest[end + 2..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_complete_events_only() {
        let body = b"retry: 4000\n\nevent: connected\ndata: {}\nid: x\n\n";
        assert!(has_event(body, "connected"));
        assert!(!has_event(&body[..body.len() - 1], "connected"));
        assert!(!has_event(b"retry: 4000\n\n", "connected"));
        assert!(!has_event(b"event: connectedx\n\n", "connected"));
    }

    #[test]
    fn parses_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nretry";
        assert_eq!(parse_head(head).unwrap(), Some(head.len() - 5));
        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\n\r\ndenied";
        assert_eq!(
            parse_head(refused).unwrap_err(),
            "HTTP 403 Forbidden: denied"
        );
    }
}

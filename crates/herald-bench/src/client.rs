//! The lean clients: over HTTP/1.1 one socket (or TLS stream) per connection and
//! hand-written requests; over HTTP/2 one stream of an h2 connection (see
//! `http2`). A connection counts as open once the server has subscribed it: an SSE
//! stream's `200` head (and, if asked, a first event of a given type), a raw
//! WebSocket's `101` (HTTP/2: `200`), a Centrifuge WebSocket's replies to `connect`
//! and `subscribe`. What happens next (reading deliveries, or holding the socket
//! idle) is the caller's choice.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::{Dialer, Io};
use crate::http1::{self, Dechunker};
use crate::http2::Http2;
use crate::target::{HttpVersion, Protocol, Target};
use crate::token::Tokens;
use crate::ws;
use crate::ws_frame::{FrameReader, Masks};

/// Most body bytes read while waiting for an SSE stream's ready event.
const MAX_OPENING_BYTES: usize = 64 * 1024;

/// An open connection: the stream, the bytes read past what opening needed, and
/// how to read the rest.
pub struct Opened {
    /// The socket, TLS stream or HTTP/2 stream.
    pub io: Box<dyn Io>,
    /// Bytes read but not yet parsed.
    pub buffer: Vec<u8>,
    /// The framing of what follows.
    pub stream: Stream,
}

/// The framing of an open connection's incoming bytes.
pub enum Stream {
    /// An SSE body, chunked or not.
    Sse {
        /// Decodes a chunked body.
        dechunker: Option<Dechunker>,
    },
    /// WebSocket frames.
    WebSocket {
        /// Reads the server's frames.
        frames: FrameReader,
        /// Masks the client's frames.
        masks: Masks,
        /// Speaks the Centrifuge protocol (answer its `{}` pings).
        centrifuge: bool,
    },
}

/// Opens connections to one target.
pub struct Connector {
    target: Target,
    http: Http,
    sources: Vec<IpAddr>,
    timeout: Duration,
    /// The connections' tokens, when the path has `{token}`.
    tokens: Option<Tokens>,
}

/// How subscribers reach the server.
enum Http {
    /// A connection each.
    Http1(Dialer),
    /// A stream each (boxed: its state is large, and there is one per worker).
    Http2(Box<Http2>),
}

impl Connector {
    /// A connector for `target`, for a worker among `workers`; connection `i`
    /// binds to `sources[i % len]` (the kernel chooses when `sources` is empty);
    /// opening may take `timeout`; `tokens` fill in `{token}`.
    pub fn new(
        target: Target,
        workers: u64,
        sources: Vec<IpAddr>,
        timeout: Duration,
        tokens: Option<Tokens>,
    ) -> Result<Self, String> {
        let http = match target.http {
            HttpVersion::Http1 => Http::Http1(Dialer::new(target.endpoint.clone(), target.http)?),
            HttpVersion::Http2 => Http::Http2(Box::new(Http2::new(&target, workers)?)),
        };
        Ok(Connector {
            target,
            http,
            sources,
            timeout,
            tokens,
        })
    }

    /// Opens connection `index` and returns once the server has subscribed it.
    pub async fn open(&self, index: u64) -> Result<Opened, String> {
        let source = match self.sources.len() {
            0 => None,
            n => Some(self.sources[(index % n as u64) as usize]),
        };
        let token = match &self.tokens {
            Some(tokens) => tokens.of(index)?,
            None => "",
        };
        let path = self.target.path_of(index, token);
        match tokio::time::timeout(self.timeout, self.open_inner(source, &path, index)).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(e)) => Err(format!("{path}: {e}")),
            Err(_) => Err(format!("{path}: not subscribed within {:?}", self.timeout)),
        }
    }

    async fn open_inner(
        &self,
        source: Option<IpAddr>,
        path: &str,
        index: u64,
    ) -> Result<Opened, String> {
        let mut masks = Masks::new(index);
        let (mut io, mut buffer, chunked) = match &self.http {
            Http::Http1(dialer) => {
                let mut io = dialer.dial(source).await?;
                let (buffer, chunked) = self.request_http1(&mut io, path, &mut masks).await?;
                (io, buffer, chunked)
            }
            Http::Http2(http2) => {
                let stream: Box<dyn Io> = Box::new(http2.open(source, index, path).await?);
                (stream, Vec::new(), false)
            }
        };
        if self.target.protocol == Protocol::Sse {
            if let Some(event) = &self.target.ready_event {
                read_until_event(&mut io, &mut buffer, event).await?;
            }
            let dechunker = chunked.then(Dechunker::default);
            return Ok(Opened {
                io,
                buffer,
                stream: Stream::Sse { dechunker },
            });
        }
        let mut frames = FrameReader::default();
        let centrifuge = self.target.protocol == Protocol::Centrifuge;
        if centrifuge {
            let (_, channel) = self.target.channel_of(index);
            ws::centrifuge_subscribe(&mut io, &mut buffer, &mut frames, &mut masks, &channel)
                .await?;
        }
        Ok(Opened {
            io,
            buffer,
            stream: Stream::WebSocket {
                frames,
                masks,
                centrifuge,
            },
        })
    }

    /// Sends the HTTP/1.1 request that opens a subscriber (an SSE `GET` or a
    /// WebSocket upgrade) and reads the response head; returns the bytes read after
    /// it and whether the body is chunked.
    async fn request_http1(
        &self,
        io: &mut Box<dyn Io>,
        path: &str,
        masks: &mut Masks,
    ) -> Result<(Vec<u8>, bool), String> {
        let authority = &self.target.endpoint.authority;
        if self.target.protocol.is_websocket() {
            return Ok((ws::upgrade(io, authority, path, masks).await?, false));
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {authority}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\nuser-agent: herald-bench\r\n\r\n"
        );
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let (head, buffer) = http1::read_head(io, 200, |_| Ok(())).await?;
        Ok((buffer, head.chunked))
    }
}

/// Reads the body until it holds a complete event of type `name` (the body must
/// not be chunked, as Herald's is not).
async fn read_until_event(
    io: &mut Box<dyn Io>,
    buffer: &mut Vec<u8>,
    name: &str,
) -> Result<(), String> {
    while !has_event(buffer, name) {
        if buffer.len() >= MAX_OPENING_BYTES {
            return Err(format!(
                "no {name} event in the first {MAX_OPENING_BYTES} bytes"
            ));
        }
        if io
            .read_buf(buffer)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err(format!("closed before the {name} event"));
        }
    }
    Ok(())
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
}

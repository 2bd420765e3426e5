//! HTTP/2 subscribers (the `h2` crate): h2 over TLS agreed by ALPN, or h2c with
//! prior knowledge. An SSE subscriber is a `GET` stream; a WebSocket is an
//! extended CONNECT stream (RFC 8441, `:protocol websocket`). The opened stream is
//! an [`H2Stream`], read and written by the same code as an HTTP/1.1 connection.
//!
//! Subscriber `i` of worker `w` (of `n`) is stream `(i / n) % K` of its worker's
//! connection `(i / n) / K`, with `K` = streams per connection: the first of them
//! to open dials it, the others wait for it.
//!
//! A worker holds up to 20,000 connections, so the settings are modest: a 64 KiB
//! window per stream (what the server may send before the reader takes it; what a
//! stream held unread buffers at most), 16 KiB of response headers and of queued
//! request data, no server push. h2 still gives each connection fixed buffers (16
//! KiB to write, 8 KiB to read, 4 KiB for HPACK): measured, an idle h2 connection
//! costs this tool about 40 KB against 17 KB for HTTP/1.1 over TLS; K streams per
//! connection share them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, RecvStream};
use http::{Method, Request, StatusCode};
use tokio::sync::OnceCell;

use crate::dial::Dialer;
use crate::h2_stream::H2Stream;
use crate::target::{HttpVersion, Target};

/// Flow-control window of each stream.
const STREAM_WINDOW: u32 = 64 * 1024;
/// Most bytes of a response's header block.
const MAX_HEADERS: u32 = 16 * 1024;
/// Most request data queued in a connection (WebSocket frames, pongs).
const MAX_SEND_BUFFER: usize = 16 * 1024;
/// Most bytes of a refusal's body kept for the error message.
const MAX_REFUSAL_BODY: usize = 1024;

/// Opens subscriber streams on HTTP/2 connections to one target.
pub struct Http2 {
    dialer: Dialer,
    builder: h2::client::Builder,
    /// `http://authority` or `https://authority`, before each request's path.
    origin: String,
    websocket: bool,
    /// Streams per connection.
    per_connection: u64,
    /// Workers sharing the subscribers (see the module's documentation).
    workers: u64,
    /// Connections not yet given all their streams, by number.
    filling: RefCell<HashMap<u64, Filling>>,
}

/// A connection being shared: opened by the first stream that needs it.
struct Filling {
    connection: Rc<OnceCell<SendRequest<Bytes>>>,
    /// Streams still to take it.
    left: u64,
}

impl Http2 {
    /// Opens streams to `target` for a worker among `workers`.
    pub fn new(target: &Target, workers: u64) -> Result<Http2, String> {
        let per_connection = u64::from(target.streams_per_connection.max(1));
        let connection_window = u32::try_from(u64::from(STREAM_WINDOW) * per_connection)
            .map_err(|_| "too many streams per connection".to_owned())?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(connection_window)
            .max_header_list_size(MAX_HEADERS)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false);
        let endpoint = &target.endpoint;
        let scheme = if endpoint.tls { "https" } else { "http" };
        Ok(Http2 {
            dialer: Dialer::new(endpoint.clone(), HttpVersion::Http2)?,
            builder,
            origin: format!("{scheme}://{}", endpoint.authority),
            websocket: target.protocol.is_websocket(),
            per_connection,
            workers: workers.max(1),
            filling: RefCell::default(),
        })
    }

    /// Opens subscriber `index`'s stream at `path` (dialing from `source` if its
    /// connection is not open yet); returns it once the server answered `200`.
    pub async fn open(
        &self,
        source: Option<IpAddr>,
        index: u64,
        path: &str,
    ) -> Result<H2Stream, String> {
        let connection = self.connection(source, index).await?;
        let mut connection = connection
            .ready()
            .await
            .map_err(|e| format!("HTTP/2 connection: {e}"))?;
        let uri = format!("{}{path}", self.origin);
        let request = if self.websocket {
            Request::builder()
                .method(Method::CONNECT)
                .uri(uri)
                .extension(h2::ext::Protocol::from_static("websocket"))
                .header("sec-websocket-version", "13")
        } else {
            Request::builder()
                .uri(uri)
                .header("accept", "text/event-stream")
                .header("cache-control", "no-cache")
        }
        .header("user-agent", "herald-bench")
        .body(())
        .map_err(|e| format!("request: {e}"))?;
        // A GET ends its side at once; a WebSocket keeps it for its frames.
        let (response, send) = connection
            .send_request(request, !self.websocket)
            .map_err(|e| format!("HTTP/2 request: {e}"))?;
        let response = response
            .await
            .map_err(|e| format!("HTTP/2 response: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let refusal = refusal_body(&mut body).await;
            return Err(format!("HTTP {}: {}", status.as_u16(), refusal.trim()));
        }
        Ok(H2Stream::new(body, self.websocket.then_some(send)))
    }

    /// The connection of subscriber `index`: a new one, or its share of one.
    async fn connection(
        &self,
        source: Option<IpAddr>,
        index: u64,
    ) -> Result<SendRequest<Bytes>, String> {
        if self.per_connection == 1 {
            return self.connect(source).await;
        }
        let number = index / self.workers / self.per_connection;
        let cell = {
            let mut filling = self.filling.borrow_mut();
            let entry = filling.entry(number).or_insert_with(|| Filling {
                connection: Rc::default(),
                left: self.per_connection,
            });
            entry.left -= 1;
            let cell = entry.connection.clone();
            if entry.left == 0 {
                // Its last stream: the connection lives on in its streams only.
                filling.remove(&number);
            }
            cell
        };
        cell.get_or_try_init(|| self.connect(source)).await.cloned()
    }

    /// Dials a new connection and starts its task, which ends once the server
    /// closes it or every stream and handle of it is gone. For WebSockets, checks
    /// that the server accepts extended CONNECT.
    async fn connect(&self, source: Option<IpAddr>) -> Result<SendRequest<Bytes>, String> {
        let io = self.dialer.dial(source).await?;
        let (connection, mut task) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let pings = task.ping_pong();
        tokio::spawn(async move {
            // Errors reach the streams, which report them.
            let _ = task.await;
        });
        if self.websocket {
            // A server's SETTINGS come before its answer to our PING: after the
            // PONG, the client knows whether it may send extended CONNECT.
            let mut pings = pings.ok_or("HTTP/2: no PING handle")?;
            pings
                .ping(Ping::opaque())
                .await
                .map_err(|e| format!("HTTP/2 PING: {e}"))?;
            if !connection.is_extended_connect_protocol_enabled() {
                return Err("the server does not accept WebSockets over HTTP/2 \
                            (no SETTINGS_ENABLE_CONNECT_PROTOCOL)"
                    .into());
            }
        }
        Ok(connection)
    }
}

/// The start of a refusal's body, for the error message.
async fn refusal_body(body: &mut RecvStream) -> String {
    let mut text = Vec::new();
    while text.len() < MAX_REFUSAL_BODY {
        match body.data().await {
            Some(Ok(data)) => text.extend_from_slice(&data),
            _ => break,
        }
    }
    text.truncate(MAX_REFUSAL_BODY);
    String::from_utf8_lossy(&text).into_owned()
}

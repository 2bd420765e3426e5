//! A Centrifuge-protocol WebSocket client for the tests: tokio-websockets over the
//! harness's sockets — an HTTP/1.1 upgrade on plain TCP or TLS (ALPN `http/1.1`),
//! or an HTTP/2 extended CONNECT (RFC 8441) with the `h2` crate on h2c or TLS (ALPN
//! `h2`).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_websockets::{ClientBuilder, Config, Message, WebSocketStream};

use super::{Herald, PROMPTLY, eventually};

/// The path Herald serves the Centrifuge protocol on.
pub const WS_PATH: &str = "/connection/websocket";

/// A byte stream under the WebSocket: TCP, TLS, or an HTTP/2 stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the WebSocket reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// HTTP/1.1 `Upgrade: websocket` (TLS with ALPN `http/1.1` on a TLS server).
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol websocket` (h2c, or TLS with ALPN
    /// `h2`).
    Http2,
}

/// What the server sent next.
#[derive(Debug)]
pub enum Event {
    /// One protocol message (a reply or a push); server pings are not events.
    Message(Value),
    /// A close frame: its status code and reason.
    Close(u16, String),
    /// The stream ended, or failed, without a close frame.
    End(String),
}

/// One WebSocket connection speaking the Centrifuge JSON protocol.
pub struct Ws {
    stream: WebSocketStream<Box<dyn Io>>,
    /// Messages of frames already read, not yet handed out.
    pending: VecDeque<Value>,
    next_id: u32,
    /// Answer server pings (`{}`) with pongs (`{}`), as SDKs do.
    pub answer_pings: bool,
    /// Server pings seen so far.
    pub pings: usize,
    /// Text frames read so far.
    pub frames: usize,
    what: String,
}

impl Ws {
    /// Opens a WebSocket to `herald` the way its protocol path suggests: HTTP/1.1
    /// for [`super::Proto::Http1`], HTTP/2 extended CONNECT for h2c and h2 over TLS.
    pub async fn open(herald: &Herald) -> Ws {
        let route = if herald.proto().is_h2() {
            Route::Http2
        } else {
            Route::Http1
        };
        Ws::open_with(herald, route, Config::default()).await
    }

    /// Opens a WebSocket to `herald` over `route` (TLS whenever the server speaks
    /// TLS), with the client's framing configuration.
    pub async fn open_with(herald: &Herald, route: Route, config: Config) -> Ws {
        let what = format!("WebSocket over {route:?} ({:?} server)", herald.proto());
        let tcp = TcpStream::connect(herald.addr())
            .await
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let alpn: &[u8] = match route {
            Route::Http1 => b"http/1.1",
            Route::Http2 => b"h2",
        };
        let io: Box<dyn Io> = match herald.tls_config(&[alpn]) {
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(
                    IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
                );
                let tls = TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: TLS handshake: {e}"));
                assert_eq!(
                    tls.get_ref().1.alpn_protocol(),
                    Some(alpn),
                    "{what}: the server must agree on ALPN {}",
                    String::from_utf8_lossy(alpn)
                );
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let scheme = if herald.proto().is_tls() { "wss" } else { "ws" };
        let uri = format!("{scheme}://{}{WS_PATH}", herald.addr());
        let builder = ClientBuilder::new()
            .uri(&uri)
            .expect("a valid URI")
            .config(config);
        let stream = match route {
            Route::Http1 => {
                let (stream, response) = builder
                    .connect_on(io)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: the upgrade failed: {e}"));
                assert_eq!(response.status(), 101, "{what}");
                stream
            }
            Route::Http2 => {
                let io = h2_connect(io, herald, &what).await;
                builder.take_over(Box::new(io) as Box<dyn Io>)
            }
        };
        Ws {
            stream,
            pending: VecDeque::new(),
            next_id: 1,
            answer_pings: true,
            pings: 0,
            frames: 0,
            what,
        }
    }

    /// Opens a WebSocket and connects with `params` (e.g. `{}` or `{"token": …}`);
    /// returns the connection and the connect result.
    pub async fn connected(herald: &Herald, params: Value) -> (Ws, Value) {
        let mut ws = Ws::open(herald).await;
        let result = ws.connect(params).await;
        (ws, result)
    }

    /// Sends a raw WebSocket message.
    pub async fn send(&mut self, message: Message) {
        let what = &self.what;
        self.stream
            .send(message)
            .await
            .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    }

    /// Sends each of `texts` as a text message, all in one write.
    pub async fn send_together(&mut self, texts: &[String]) {
        let what = &self.what;
        for text in texts {
            self.stream
                .feed(Message::text(text.clone()))
                .await
                .unwrap_or_else(|e| panic!("{what}: send: {e}"));
        }
        self.stream
            .flush()
            .await
            .unwrap_or_else(|e| panic!("{what}: flush: {e}"));
    }

    /// Sends `text` as one text message (not checked for UTF-8).
    pub async fn send_text(&mut self, text: impl Into<Bytes>) {
        self.send(Message::text(text.into())).await;
    }

    /// Sends a command; returns its id.
    pub async fn send_command(&mut self, method: &str, params: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, method: params});
        self.send_text(command.to_string()).await;
        id
    }

    /// Sends a command and returns its whole reply (`{"id", method: result}` or
    /// `{"id", "error"}`). Pushes that arrive first stay queued for [`Ws::next`].
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_command(method, params).await;
        self.reply(id).await
    }

    /// Sends a command and returns its result, which must not be an error.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params.clone()).await;
        assert!(
            reply.get("error").is_none(),
            "{}: {method} {params} must succeed, got {reply}",
            self.what
        );
        reply
            .get(method)
            .cloned()
            .unwrap_or_else(|| panic!("{}: {method} reply without result: {reply}", self.what))
    }

    /// `connect` with `params`; returns the result.
    pub async fn connect(&mut self, params: Value) -> Value {
        let result = self.request("connect", params).await;
        assert!(
            result["client"].as_str().is_some_and(|c| !c.is_empty()),
            "{}: connect result has a client id: {result}",
            self.what
        );
        result
    }

    /// `subscribe` to `channel`; returns the result.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.request("subscribe", json!({"channel": channel})).await
    }

    /// Reads until the reply to command `id`; earlier pushes stay queued.
    pub async fn reply(&mut self, id: u32) -> Value {
        let mut skipped = VecDeque::new();
        let reply = loop {
            let message = self.next().await;
            if message["id"] == id {
                break message;
            }
            assert!(
                message.get("id").is_none(),
                "{}: a reply to another command ({message}) came before the reply to {id}",
                self.what
            );
            skipped.push_back(message);
        };
        // Put the skipped pushes back in front, in order.
        while let Some(message) = skipped.pop_back() {
            self.pending.push_front(message);
        }
        reply
    }

    /// The next protocol message; panics on a close, the end or a timeout.
    pub async fn next(&mut self) -> Value {
        match self.next_event(PROMPTLY).await {
            Some(Event::Message(message)) => message,
            Some(Event::Close(code, reason)) => panic!(
                "{}: expected a message, got a close frame {code} {reason:?}",
                self.what
            ),
            Some(Event::End(why)) => {
                panic!("{}: expected a message, the stream ended: {why}", self.what)
            }
            None => panic!("{}: no message within {PROMPTLY:?}", self.what),
        }
    }

    /// The next publication push, which must be for `channel`; returns its `pub`.
    pub async fn expect_publication(&mut self, channel: &str) -> Value {
        let message = self.next().await;
        let push = &message["push"];
        assert_eq!(
            push["channel"], channel,
            "{}: expected a publication push on {channel:?}, got {message}",
            self.what
        );
        assert!(
            push["pub"].is_object(),
            "{}: expected a publication push on {channel:?}, got {message}",
            self.what
        );
        push["pub"].clone()
    }

    /// Reads until the server's close frame, skipping (and answering) pings only;
    /// returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(PROMPTLY).await
    }

    /// [`Ws::expect_close`] with a deadline of `timeout`.
    pub async fn expect_close_within(&mut self, timeout: Duration) -> (u16, String) {
        match self.next_event(timeout).await {
            Some(Event::Close(code, reason)) => (code, reason),
            Some(Event::Message(message)) => {
                panic!("{}: expected a close frame, got {message}", self.what)
            }
            Some(Event::End(why)) => panic!(
                "{}: expected a close frame, the stream ended without one: {why}",
                self.what
            ),
            None => panic!("{}: no close frame within {timeout:?}", self.what),
        }
    }

    /// Reads for `duration`, answering pings if enabled; anything else (a message,
    /// a close, the end) fails the test.
    pub async fn expect_quiet(&mut self, duration: Duration) {
        if let Some(event) = self.next_event(duration).await {
            panic!(
                "{}: expected nothing but pings for {duration:?}, got {event:?}",
                self.what
            );
        }
    }

    /// The next event within `timeout`, `None` if there was none. Server pings are
    /// counted and answered (when `answer_pings`), never returned.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(message) = self.pending.pop_front() {
                if message.as_object().is_some_and(|m| m.is_empty()) {
                    self.pings += 1;
                    if self.answer_pings {
                        self.send_text("{}").await;
                    }
                    continue;
                }
                return Some(Event::Message(message));
            }
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Event::End("end of stream".into())),
                Ok(Some(Err(e))) => return Some(Event::End(format!("error: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Some((code, reason)) = frame.as_close() {
                return Some(Event::Close(code.into(), reason.to_owned()));
            }
            let Some(text) = frame.as_text() else {
                // Ping and pong frames are answered by the codec; Herald sends
                // no binary frames in the JSON protocol.
                assert!(!frame.is_binary(), "{}: unexpected binary frame", self.what);
                continue;
            };
            self.frames += 1;
            for line in text.split('\n') {
                let message: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: a frame line is not JSON ({e}): {line:?}", self.what)
                });
                self.pending.push_back(message);
            }
        }
    }

    /// Closes the connection normally (close frame, then the end of the stream).
    pub async fn close(mut self) {
        let _ = self
            .stream
            .send(Message::close(
                Some(tokio_websockets::CloseCode::NORMAL_CLOSURE),
                "bye",
            ))
            .await;
        let _ = tokio::time::timeout(PROMPTLY, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// Opens an HTTP/2 connection on `io` and a WebSocket stream on it with extended
/// CONNECT, after checking that the server enabled it in its SETTINGS.
async fn h2_connect(io: Box<dyn Io>, herald: &Herald, what: &str) -> H2Stream {
    let (client, connection) = h2::client::handshake(io)
        .await
        .unwrap_or_else(|e| panic!("{what}: HTTP/2 handshake: {e}"));
    // The connection task ends once the stream and the client handle are gone.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client
        .ready()
        .await
        .unwrap_or_else(|e| panic!("{what}: HTTP/2 connection not ready: {e}"));
    eventually(
        PROMPTLY,
        "the server's SETTINGS_ENABLE_CONNECT_PROTOCOL = 1",
        || {
            let enabled = client.is_extended_connect_protocol_enabled();
            async move { enabled.then_some(()) }
        },
    )
    .await;
    let scheme = if herald.proto().is_tls() {
        "https"
    } else {
        "http"
    };
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("{scheme}://{}{WS_PATH}", herald.addr()))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .expect("a valid CONNECT request");
    let (response, send) = client
        .send_request(request, false)
        .unwrap_or_else(|e| panic!("{what}: sending the extended CONNECT: {e}"));
    let response = tokio::time::timeout(PROMPTLY, response)
        .await
        .unwrap_or_else(|_| panic!("{what}: no response to the extended CONNECT"))
        .unwrap_or_else(|e| panic!("{what}: extended CONNECT failed: {e}"));
    assert_eq!(
        response.status(),
        200,
        "{what}: RFC 8441 accepts the WebSocket with 200"
    );
    H2Stream {
        send,
        recv: response.into_body(),
        buffered: Bytes::new(),
    }
}

/// One HTTP/2 stream as a byte stream: DATA frames in, DATA frames out.
struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// The rest of the last DATA frame read.
    buffered: Bytes,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.buffered.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buffered = data;
                }
                // A reset ends the stream as an error; the end of the stream is EOF.
                Some(Err(e)) if e.is_reset() => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.buffered.len().min(buf.remaining());
        buf.put_slice(&self.buffered[..n]);
        self.buffered.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let mut capacity = self.send.capacity();
        while capacity == 0 {
            capacity = match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
        }
        let n = capacity.min(buf.len());
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes DATA frames as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

//! WebSocket transport (RFC 6455, and RFC 8441 over HTTP/2) for the Centrifuge
//! client protocol at `/connection/websocket`.
//!
//! The handshake is ours (HTTP/1.1 lean path, hyper's upgrade for HTTP/1.1 keep-alive
//! connections, extended CONNECT on HTTP/2); so is the framing
//! ([`crate::ws_frame`]), which holds no buffer while a connection is idle. The
//! session (`crate::client`) knows nothing of WebSockets.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use std::time::Duration;

use futures_util::FutureExt;
use herald_protocol::websocket::accept_key;
use http::{HeaderMap, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client::{ClientSession, Disconnect, Output, Wake};
use crate::metrics::{HttpVersion, Transport};
use crate::routes::Context;
use crate::ws_frame::{self, FrameReader, Incoming, OpCode, ReadError};

/// The path SDKs connect to.
pub const PATH: &str = "/connection/websocket";

/// Whether an HTTP/1.1 request head asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// The `101 Switching Protocols` head for an HTTP/1.1 upgrade, or why the request
/// cannot be upgraded.
pub fn switching_protocols(headers: &HeaderMap) -> Result<Vec<u8>, &'static str> {
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("Sec-WebSocket-Version: 13 is required");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("Sec-WebSocket-Key is required")?;
    // Sized for the first messages too: a unidirectional WebSocket sends its
    // connect result in the same write.
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ");
    head.extend_from_slice(accept_key(key.as_bytes()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    Ok(head)
}

/// How long a connection the server closed waits for the client to close too.
const LINGER: Duration = Duration::from_secs(2);

/// Runs the Centrifuge protocol over an established WebSocket stream until either
/// side closes.
///
/// Not an `async fn`: its arguments would be kept twice in the future (as
/// arguments and as locals). The block below uses what it captures in place, and
/// is what an idle connection keeps: the stream, the reader, the session and the
/// wait for either.
pub fn serve<S>(io: S, ctx: Arc<Context>, version: HttpVersion) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(ctx.config.max_message_bytes);
    let mut session = ClientSession::new(ctx, Transport::WebSocket, version);
    let mut io = io;
    async move {
        let mut turn = Turn::default();
        let end = loop {
            let output = match next_event(&mut io, &mut reader, &mut session, &mut turn).await {
                Event::Read(incoming) => {
                    match answer(&mut io, &session, incoming).await {
                        Answer::Message(message) => {
                            // Boxed: the command path's future is large, and the
                            // idle loop's future would otherwise be sized for it.
                            let handled =
                                handle_pipelined(&mut io, &mut reader, &mut session, message);
                            match Box::pin(handled).await {
                                Ok(output) => output,
                                Err(end) => break end,
                            }
                        }
                        Answer::Continue => continue,
                        Answer::End(end) => break end,
                    }
                }
                Event::Wake(wake) => match session.output(wake).await {
                    Some(output) => output,
                    None => continue,
                },
            };
            if let Some(end) = write(&mut io, &session, output).await {
                break end;
            }
        };
        // The session ends (metrics, presence) before any wait for the client.
        drop(session);
        end.finish(&mut io).await;
    }
}

/// What a WebSocket connection does next.
pub(crate) enum Event {
    /// The client sent something (or the read failed).
    Read(Result<Option<Incoming>, ReadError>),
    /// The session has something to send (see [`ClientSession::wait`]).
    Wake(Wake),
}

/// Which of the socket and the session [`next_event`] polls first.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    socket_first: bool,
}

/// Waits for the client's next message or the session's next output.
///
/// The session is polled first, so a task woken for a push writes it without
/// looking at the socket. Right after the session won that way, the socket goes
/// first: a busy session never leaves the client's messages (pongs, commands)
/// unread.
pub(crate) async fn next_event<S>(
    io: &mut S,
    reader: &mut FrameReader,
    session: &mut ClientSession,
    turn: &mut Turn,
) -> Event
where
    S: AsyncRead + Unpin,
{
    let mut read = pin!(reader.read(io));
    let mut wait = pin!(session.wait());
    poll_fn(|cx| {
        let session_first = !turn.socket_first;
        if session_first && let Poll::Ready(wake) = wait.as_mut().poll(cx) {
            turn.socket_first = true;
            return Poll::Ready(Event::Wake(wake));
        }
        turn.socket_first = false;
        if let Poll::Ready(incoming) = read.as_mut().poll(cx) {
            return Poll::Ready(Event::Read(incoming));
        }
        if !session_first && let Poll::Ready(wake) = wait.as_mut().poll(cx) {
            return Poll::Ready(Event::Wake(wake));
        }
        Poll::Pending
    })
    .await
}

/// Most messages answered together in one write.
const MAX_PIPELINED: usize = 16;

/// Answers `message` and the messages the client already sent after it (SDKs send
/// `connect` and `subscribe` back to back), so their replies go out in one write;
/// `Err` when the connection ended meanwhile.
async fn handle_pipelined<S>(
    io: &mut S,
    reader: &mut FrameReader,
    session: &mut ClientSession,
    message: Vec<u8>,
) -> Result<Output, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut output = session.handle_frame(&message).await;
    for _ in 1..MAX_PIPELINED {
        if output.close.is_some() {
            break;
        }
        // `read` is cancel-safe: one that would wait is dropped here, and the
        // connection loop's next read resumes where it stopped.
        let Some(incoming) = reader.read(io).now_or_never() else {
            break;
        };
        match answer(io, session, incoming).await {
            Answer::Message(message) => output.append(session.handle_frame(&message).await),
            Answer::Continue => {}
            Answer::End(end) => return Err(end),
        }
    }
    Ok(output)
}

/// How a WebSocket connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Nothing more to do: the stream ended, failed, or the client closed.
    Done,
    /// The server sent a close frame: wait for the client to close too.
    Closed,
}

impl End {
    /// Ends the connection: after a server close, lingers so the close frame
    /// reaches the client.
    pub(crate) async fn finish<S>(self, io: &mut S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self == End::Closed {
            Box::pin(ws_frame::linger(io, LINGER)).await;
        }
    }
}

/// What the connection loop does after [`answer`].
pub(crate) enum Answer {
    /// Handle this data message.
    Message(Vec<u8>),
    /// Read on (a ping was answered).
    Continue,
    /// Stop.
    End(End),
}

/// Handles what the reader returned: a data message goes back to the caller; a
/// ping is answered with a pong; a close is answered and ends the connection, as
/// does a protocol error (with its close code).
pub(crate) async fn answer<S>(
    io: &mut S,
    session: &ClientSession,
    incoming: Result<Option<Incoming>, ReadError>,
) -> Answer
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reply = Vec::new();
    let end = match incoming {
        Ok(Some(Incoming::Text(message) | Incoming::Binary(message))) => {
            return Answer::Message(message);
        }
        Ok(Some(Incoming::Ping(payload))) => {
            ws_frame::encode_frame(&mut reply, OpCode::Pong, &payload);
            None
        }
        Ok(Some(Incoming::Close(code))) => {
            ws_frame::encode_close(&mut reply, code.unwrap_or(ws_frame::CLOSE_NORMAL), "");
            Some(End::Done)
        }
        Ok(None) => return Answer::End(End::Done),
        Err(ReadError::Io(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            return Answer::End(End::Done);
        }
        Err(ReadError::Protocol { code, reason }) => {
            tracing::debug!(code, reason, "websocket protocol error");
            ws_frame::encode_close(&mut reply, code, reason);
            Some(End::Closed)
        }
    };
    if !send(io, session, &reply).await {
        return Answer::End(End::Done);
    }
    end.map_or(Answer::Continue, Answer::End)
}

/// Writes already encoded frames and flushes, within the session's write
/// timeout; `false` if that failed.
pub(crate) async fn send<S>(io: &mut S, session: &ClientSession, frames: &[u8]) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = async {
        io.write_all(frames).await?;
        io.flush().await
    };
    finish_write(
        session,
        crate::timed::within(session.write_timeout(), pin!(sent)).await,
    )
}

/// Whether a timed write succeeded; counts a timeout as a `write_timeout`
/// disconnect.
pub(crate) fn finish_write(
    session: &ClientSession,
    result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
) -> bool {
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket write failed");
            false
        }
        Err(_) => {
            session.count_disconnect("write_timeout");
            false
        }
    }
}

/// Writes a session output: its frame as one text message, then its close frame;
/// `Some` once the connection is done.
async fn write<S>(io: &mut S, session: &ClientSession, output: Output) -> Option<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut close = Vec::new();
    if let Some(Disconnect { code, reason, .. }) = &output.close {
        ws_frame::encode_close(&mut close, *code, reason);
    }
    let closes = output.close.is_some();
    let sent = async {
        match output.frame {
            Some(frame) => ws_frame::write_frame(io, OpCode::Text, frame, &close).await,
            None => {
                io.write_all(&close).await?;
                io.flush().await
            }
        }
    };
    let result = crate::timed::within(session.write_timeout(), pin!(sent)).await;
    match (finish_write(session, result), closes) {
        (true, false) => None,
        (true, true) => Some(End::Closed),
        (false, _) => Some(End::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    /// Not a test: an echo server for Autobahn|Testsuite's `fuzzingclient`, which
    /// checks the framing of [`crate::ws_frame`] on its own (Herald's session
    /// would close Autobahn's non-JSON echo messages with 3501). Listens on
    /// `HERALD_AUTOBAHN_ADDR` (default `127.0.0.1:9001`) until killed:
    ///
    /// `cargo test --release -p herald-server --lib autobahn_echo_server -- --ignored`
    #[tokio::test]
    #[ignore = "a server for Autobahn|Testsuite, run by hand"]
    async fn autobahn_echo_server() {
        let addr =
            std::env::var("HERALD_AUTOBAHN_ADDR").unwrap_or_else(|_| "127.0.0.1:9001".into());
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(echo(socket));
        }
    }

    /// Upgrades one connection and echoes every message until it closes.
    async fn echo(mut socket: TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0; 1024];
        let end = loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let rest = head.split_off(end);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(&head).unwrap();
        let mut map = HeaderMap::new();
        for header in request.headers.iter() {
            map.append(
                header::HeaderName::from_bytes(header.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(header.value).unwrap(),
            );
        }
        socket
            .write_all(&switching_protocols(&map).unwrap())
            .await
            .unwrap();
        let mut io = crate::prefixed::Prefixed::new(rest, socket);
        let mut reader = FrameReader::new(64 << 20);
        loop {
            let (opcode, payload) = match reader.read(&mut io).await {
                Ok(Some(Incoming::Text(message))) => (OpCode::Text, message),
                Ok(Some(Incoming::Binary(message))) => (OpCode::Binary, message),
                Ok(Some(Incoming::Ping(payload))) => (OpCode::Pong, payload),
                Ok(Some(Incoming::Close(code))) => {
                    let mut close = Vec::new();
                    ws_frame::encode_close(&mut close, code.unwrap_or(ws_frame::CLOSE_NORMAL), "");
                    let _ = io.write_all(&close).await;
                    return;
                }
                Ok(None) | Err(ReadError::Io(_)) => return,
                Err(ReadError::Protocol { code, reason }) => {
                    let mut close = Vec::new();
                    ws_frame::encode_close(&mut close, code, reason);
                    let _ = io.write_all(&close).await;
                    ws_frame::linger(&mut io, LINGER).await;
                    return;
                }
            };
            if ws_frame::write_frame(&mut io, opcode, payload, &[])
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

//! Unidirectional transports for clients with no SDK, as Centrifugo's: the client
//! sends one bare connect request (`{"token":…,"subs":…}`, no command envelope)
//! and then only receives bare push objects — first `{"connect":{…}}` with the
//! connect result, then `{"channel":…,"pub":{…}}`, joins, leaves, server-side
//! subscribes and unsubscribes — with `{}` as a ping every ping interval (no
//! answer expected). Before the server closes it sends `{"disconnect":{…}}`.
//!
//! - `/connection/uni_websocket`: the connect request is the first text message
//!   (or the `cf_connect` query parameter); one push per WebSocket message; the
//!   close frame repeats the disconnect code. Later client messages are ignored.
//! - `/connection/uni_sse`: `GET` with the connect request as JSON in `cf_connect`
//!   (none: an empty request), or `POST` with it as the body; one `data:` event
//!   per push.
//! - `/connection/uni_http_stream`: `POST` with the connect request as the body;
//!   one push per line.
//!
//! A refused connect (bad token, …) opens the stream and closes it with the
//! `disconnect` push: a malformed connect request is answered `400` instead.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::centrifuge::{ConnectRequest, DisconnectCode};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::{ClientSession, Disconnect, Mode, Output};
use crate::emulation::{self, CONNECT_PARAM, Framing, SessionStream};
use crate::http_util::{self, Body, Refusal};
use crate::listener::ConnectionAbort;
use crate::metrics::{HttpVersion, Transport};
use crate::routes::{self, Context};
use crate::ws::{self, Answer, End, Event};
use crate::ws_frame::{self, FrameReader, OpCode};

/// Path of the unidirectional WebSocket.
pub const WEBSOCKET_PATH: &str = "/connection/uni_websocket";
/// Path of the unidirectional SSE stream.
pub const SSE_PATH: &str = "/connection/uni_sse";
/// Path of the unidirectional HTTP stream.
pub const HTTP_STREAM_PATH: &str = "/connection/uni_http_stream";

/// A unidirectional HTTP stream's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniStream {
    /// `/connection/uni_sse`.
    Sse,
    /// `/connection/uni_http_stream`.
    HttpStream,
}

/// Opens a unidirectional stream (`uni_sse`, `uni_http_stream`).
pub async fn open(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
    kind: UniStream,
    abort: ConnectionAbort,
) -> Response<Body> {
    let version = emulation::http_version(&request);
    let connect = match connect_request(ctx, request).await {
        Ok(connect) => connect,
        Err(refusal) => return refusal.into_response(),
    };
    let (transport, framing) = match kind {
        UniStream::Sse => (Transport::UniSse, Framing::Sse),
        UniStream::HttpStream => (Transport::UniHttpStream, Framing::Lines),
    };
    let mut session = new_session(ctx, transport, version);
    let opening = session.connect_unidirectional(connect).await;
    let stream = SessionStream::new(session, framing, opening);
    routes::streaming_response(ctx, framing.response_headers(), stream, abort)
}

/// The connect request of a stream: the `POST` body, or `cf_connect` of a `GET`.
async fn connect_request(
    ctx: &Context,
    request: Request<Incoming>,
) -> Result<ConnectRequest, Refusal> {
    if ctx.draining() {
        return Err(Refusal::new(
            ErrorCode::NotAvailable,
            "server is shutting down; reconnect",
        ));
    }
    emulation::refuse_protobuf(request.headers())?;
    if request.method() == Method::GET {
        return query_connect(request.uri().query()).map(Option::unwrap_or_default);
    }
    let body =
        emulation::read_limited(ctx, request.into_body(), ctx.config.max_message_bytes).await?;
    parse_connect(&body)
}

/// The connect request in the `cf_connect` query parameter, if there is one.
pub fn query_connect(query: Option<&str>) -> Result<Option<ConnectRequest>, Refusal> {
    http_util::query_values(query, CONNECT_PARAM)
        .next()
        .map(|json| parse_connect(json.as_bytes()))
        .transpose()
}

/// Parses a bare connect request (`{}` and an empty body mean no token, no data).
pub fn parse_connect(json: &[u8]) -> Result<ConnectRequest, Refusal> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(ConnectRequest::default());
    }
    serde_json::from_slice(json).map_err(|e| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the connect request is not a JSON connect object: {e}"),
        )
    })
}

fn new_session(ctx: &Arc<Context>, transport: Transport, version: HttpVersion) -> ClientSession {
    let session = crate::client::new_client_id();
    ClientSession::with_mode(
        ctx.clone(),
        transport,
        version,
        Mode::Unidirectional { session },
    )
}

/// Runs a unidirectional WebSocket on an established stream; `connect` is the
/// request from the URL, if it had one (else the first message must be it).
/// `head` is the `101` response when the caller left it to be written here: it
/// then goes out with the connect result, one write for the whole opening.
///
/// Not an `async fn`, for the reason given at [`ws::serve`]: the idle future keeps
/// one copy of the stream, the reader and the session.
pub fn serve_websocket<S>(
    io: S,
    ctx: Arc<Context>,
    version: HttpVersion,
    connect: Option<ConnectRequest>,
    head: Option<Vec<u8>>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(ctx.config.max_message_bytes);
    let mut session = new_session(&ctx, Transport::UniWebSocket, version);
    let mut io = io;
    async move {
        let end = run_websocket(&mut io, &mut reader, &mut session, connect, head).await;
        // The session ends (metrics, presence) before any wait for the client.
        drop(session);
        end.finish(&mut io).await;
    }
}

async fn run_websocket<S>(
    io: &mut S,
    reader: &mut FrameReader,
    session: &mut ClientSession,
    connect: Option<ConnectRequest>,
    head: Option<Vec<u8>>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connected = false;
    if let Some(connect) = connect {
        connected = true;
        // Boxed, as below.
        let output = Box::pin(session.connect_unidirectional(connect)).await;
        if let Some(end) = write(io, session, output, head).await {
            return end;
        }
    } else if let Some(head) = head
        && !ws::send(io, session, &head).await
    {
        return End::Done;
    }
    let mut turn = ws::Turn::default();
    loop {
        let output = match ws::next_event(io, reader, session, &mut turn).await {
            Event::Read(incoming) => match ws::answer(io, session, incoming).await {
                Answer::Message(message) if !connected => {
                    connected = true;
                    match parse_connect(&message) {
                        // Boxed, so the idle loop's future is not sized for it.
                        Ok(connect) => Box::pin(session.connect_unidirectional(connect)).await,
                        Err(refusal) => {
                            tracing::debug!(detail = %refusal.detail, "malformed uni connect request");
                            Output {
                                frame: None,
                                close: Some(Disconnect {
                                    code: DisconnectCode::BadRequest.code(),
                                    reason: DisconnectCode::BadRequest.reason().to_owned(),
                                }),
                            }
                        }
                    }
                }
                // One way: anything after the connect request is ignored, as
                // Centrifugo does.
                Answer::Message(_) | Answer::Continue => continue,
                Answer::End(end) => return end,
            },
            Event::Wake(wake) => match session.output(wake).await {
                Some(output) => output,
                None => continue,
            },
        };
        if let Some(end) = write(io, session, output, None).await {
            return end;
        }
    }
}

/// Writes a session output (after `head`, if any), one WebSocket message per push;
/// a close sends the `disconnect` push, then the close frame. `Some` once the
/// connection is done.
async fn write<S>(
    io: &mut S,
    session: &ClientSession,
    output: Output,
    head: Option<Vec<u8>>,
) -> Option<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let disconnect = output
        .close
        .as_ref()
        .map(|close| session.disconnect_message(close));
    // Pushes are small; one buffer of frames makes one write.
    let mut frames = head.unwrap_or_default();
    let payload: usize = output.frame.iter().chain(&disconnect).map(Vec::len).sum();
    // Messages are split at line breaks; a frame header takes at most 10 bytes and
    // a close frame at most 127.
    let breaks = output
        .frame
        .iter()
        .chain(&disconnect)
        .flatten()
        .filter(|b| **b == b'\n');
    frames.reserve(payload + 10 * (2 + breaks.count()) + 127);
    for frame in output.frame.iter().chain(disconnect.as_ref()) {
        for message in frame.split(|b| *b == b'\n').filter(|m| !m.is_empty()) {
            ws_frame::encode_frame(&mut frames, OpCode::Text, message);
        }
    }
    if let Some(Disconnect { code, reason }) = &output.close {
        ws_frame::encode_close(&mut frames, *code, reason);
    }
    match (ws::send(io, session, &frames).await, output.close.is_some()) {
        (true, false) => None,
        (true, true) => Some(End::Closed),
        (false, _) => Some(End::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_parse_from_json_or_nothing() {
        assert!(parse_connect(b"").unwrap().token.is_empty());
        assert_eq!(parse_connect(br#"{"token":"t"}"#).unwrap().token, "t");
        assert!(parse_connect(b"[1]").is_err());
        assert!(parse_connect(b"{").is_err());
        let query = Some("cf_connect=%7B%22token%22%3A%22abc%22%7D");
        assert_eq!(query_connect(query).unwrap().unwrap().token, "abc");
        assert!(query_connect(Some("x=1")).unwrap().is_none());
    }
}

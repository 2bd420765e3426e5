//! Bidirectional emulation for networks that block WebSocket upgrades, as the npm
//! `centrifuge` SDK uses it when its transport list falls back:
//!
//! - `POST /connection/http_stream`: the body is the first command frame (the
//!   SDK's `connect`); the response streams replies and pushes, one JSON message
//!   per line (`\n` after each).
//! - `GET /connection/sse?cf_connect=<frame>` (or `POST` with the frame as body):
//!   the same as `text/event-stream`, one `data:` event per message.
//! - `POST /emulation` with `{"session":…,"node":…,"data":"<command frame>"}`:
//!   later commands (subscribe, publish, pongs, …). The stream's connect result
//!   gave the SDK `session` and `node`. Answered `204` at once; the replies go
//!   down the stream.
//!
//! Each stream owns its [`ClientSession`] in the task that drives the response
//! body; `POST /emulation` finds that task through [`Sessions`] (session id →
//! bounded channel) and hands it the frame. A session leaves the registry when its
//! stream ends. When the server closes a stream it first sends a `disconnect` push,
//! since a stream has no close code.
//!
//! The unidirectional transports (`crate::uni`) drive their streams with the same
//! [`SessionStream`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use herald_protocol::ErrorCode;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::client::{ClientSession, Mode, Output};
use crate::http_util::{self, Body, Refusal, error_response};
use crate::listener::ConnectionAbort;
use crate::metrics::{HttpVersion, Transport};
use crate::routes::{self, Context};

/// Path of the HTTP-streaming emulation transport.
pub const HTTP_STREAM_PATH: &str = "/connection/http_stream";
/// Path of the SSE emulation transport.
pub const SSE_PATH: &str = "/connection/sse";
/// Path of the emulation endpoint the SDK posts commands to.
pub const EMULATION_PATH: &str = "/emulation";
/// Query parameter carrying the first frame of a `GET` SSE stream.
pub const CONNECT_PARAM: &str = "cf_connect";

/// Command frames a session may have waiting before `POST /emulation` is refused
/// (`429`); each frame is at most `max_message_bytes`.
const COMMAND_QUEUE: usize = 16;

/// The emulation sessions of this node: session id → the stream task's command
/// queue.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Arc<str>, mpsc::Sender<Bytes>>>,
}

impl Sessions {
    /// Registers a new session; it stays until the returned guard is dropped.
    fn register(self: &Arc<Self>, id: Arc<str>) -> (Registration, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.lock().insert(id.clone(), tx);
        let registration = Registration {
            sessions: self.clone(),
            id,
        };
        (registration, rx)
    }

    fn get(&self, id: &str) -> Option<mpsc::Sender<Bytes>> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, mpsc::Sender<Bytes>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps a session in the registry; removes it when dropped.
struct Registration {
    sessions: Arc<Sessions>,
    id: Arc<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

/// How a stream frames each protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The message and `\n` (HTTP streaming).
    Lines,
    /// `data: <message>\n\n`: one SSE event per message.
    Sse,
}

impl Framing {
    /// Appends every message of `frame` (newline-separated, each on one line) to
    /// `out`, framed.
    pub fn append(self, out: &mut Vec<u8>, frame: &[u8]) {
        for message in frame.split(|b| *b == b'\n').filter(|m| !m.is_empty()) {
            match self {
                Framing::Lines => {
                    out.extend_from_slice(message);
                    out.push(b'\n');
                }
                Framing::Sse => {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(message);
                    out.extend_from_slice(b"\n\n");
                }
            }
        }
    }

    /// Headers of the 200 response opening a stream.
    pub fn response_headers(self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let content_type = match self {
            Framing::Lines => "application/x-ndjson",
            Framing::Sse => "text/event-stream",
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        headers
    }
}

/// A client protocol session served as a response stream: what the session says
/// (and, for emulation, what it answers to commands posted to `/emulation`),
/// framed for the stream.
pub struct SessionStream {
    session: ClientSession,
    commands: Option<mpsc::Receiver<Bytes>>,
    framing: Framing,
    /// Output produced while opening (the connect reply or push), sent first.
    opening: Option<Bytes>,
    finished: bool,
    _registration: Option<Registration>,
}

impl SessionStream {
    /// A stream of `session` whose first output (from handling the opening
    /// request) is `opening`.
    pub fn new(session: ClientSession, framing: Framing, opening: Output) -> Self {
        let mut stream = SessionStream {
            session,
            commands: None,
            framing,
            opening: None,
            finished: false,
            _registration: None,
        };
        let opening = stream.encode(opening);
        stream.opening = Some(opening).filter(|o| !o.is_empty());
        stream
    }

    /// The next bytes to write; `None` once the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            if self.finished {
                return None;
            }
            let output = match &mut self.commands {
                Some(commands) => tokio::select! {
                    wake = self.session.wait() => match self.session.output(wake).await {
                        Some(output) => output,
                        None => continue,
                    },
                    frame = commands.recv() => match frame {
                        Some(frame) => self.session.handle_frame(&frame).await,
                        None => {
                            self.commands = None;
                            continue;
                        }
                    },
                },
                None => self.session.next_output().await,
            };
            let chunk = self.encode(output);
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
    }

    /// Frames a session output; a close becomes a final `disconnect` push.
    fn encode(&mut self, output: Output) -> Bytes {
        let mut out = Vec::new();
        if let Some(frame) = &output.frame {
            self.framing.append(&mut out, frame);
        }
        if let Some(close) = &output.close {
            self.framing
                .append(&mut out, &self.session.disconnect_message(close));
            self.finished = true;
        }
        Bytes::from(out)
    }
}

/// An emulation stream's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulated {
    /// `POST /connection/http_stream`.
    HttpStream,
    /// `GET`/`POST /connection/sse`.
    Sse,
}

/// Opens an emulation stream (`/connection/http_stream` or `/connection/sse`).
pub async fn open(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
    kind: Emulated,
    abort: ConnectionAbort,
) -> Response<Body> {
    let version = http_version(&request);
    let first = match first_frame(ctx, request, kind).await {
        Ok(frame) => frame,
        Err(refusal) => return refusal.into_response(),
    };
    let id = crate::client::new_client_id();
    let (registration, commands) = ctx.emulation.register(id.clone());
    let (transport, framing) = match kind {
        Emulated::HttpStream => (Transport::HttpStream, Framing::Lines),
        Emulated::Sse => (Transport::SseEmulation, Framing::Sse),
    };
    let mut session = ClientSession::with_mode(
        ctx.clone(),
        transport,
        version,
        Mode::Emulation { session: id },
    );
    // Registered before the connect reply exists: the SDK posts its next command
    // as soon as it reads the reply.
    let opening = session.handle_frame(&first).await;
    let mut stream = SessionStream::new(session, framing, opening);
    stream.commands = Some(commands);
    stream._registration = Some(registration);
    routes::streaming_response(ctx, framing.response_headers(), stream, abort)
}

/// The first command frame of an emulation stream: the body of a `POST`, or the
/// `cf_connect` query parameter of a `GET`.
async fn first_frame(
    ctx: &Context,
    request: Request<Incoming>,
    kind: Emulated,
) -> Result<Bytes, Refusal> {
    if ctx.draining() {
        return Err(Refusal::new(
            ErrorCode::NotAvailable,
            "server is shutting down; reconnect",
        ));
    }
    refuse_protobuf(request.headers())?;
    if request.method() == Method::GET && kind == Emulated::Sse {
        return http_util::query_values(request.uri().query(), CONNECT_PARAM)
            .next()
            .map(|frame| Bytes::from(frame.into_owned()))
            .filter(|frame| !frame.is_empty())
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "the {CONNECT_PARAM} query parameter (the connect command) is required"
                    ),
                )
            });
    }
    read_limited(ctx, request.into_body(), ctx.config.max_message_bytes).await
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_limited(ctx: &Context, body: Incoming, limit: usize) -> Result<Bytes, Refusal> {
    let bytes = routes::read_body(ctx, body).await?;
    if bytes.len() > limit {
        return Err(Refusal::new(
            ErrorCode::LimitExceeded,
            format!("the message exceeds {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Refuses the Protobuf encoding (`application/octet-stream`): Herald speaks the
/// JSON one only.
pub fn refuse_protobuf(headers: &HeaderMap) -> Result<(), Refusal> {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    if protobuf {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the Protobuf encoding is not supported; use JSON",
        ));
    }
    Ok(())
}

/// The HTTP version label of a request hyper serves.
pub fn http_version<B>(request: &Request<B>) -> HttpVersion {
    match request.version() {
        http::Version::HTTP_2 => HttpVersion::Http2,
        _ => HttpVersion::Http1,
    }
}

/// The body of `POST /emulation`.
#[derive(Deserialize)]
struct EmulationRequest {
    /// The session id from the connect result.
    session: String,
    /// The node id from the connect result.
    #[serde(default)]
    node: String,
    /// The command frame, as a JSON string.
    data: String,
}

/// `POST /emulation`: hands a command frame to its session's stream; `204` at once
/// (replies travel down the stream), `404` when this node has no such session
/// (the SDK then reconnects).
pub async fn post(ctx: &Arc<Context>, request: Request<Incoming>) -> Response<Body> {
    match try_post(ctx, request).await {
        Ok(()) => {
            let mut response = Response::new(http_util::full(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err((status, refusal)) => error_response(status, refusal.code.reply(refusal.detail)),
    }
}

async fn try_post(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
) -> Result<(), (StatusCode, Refusal)> {
    let bad = |refusal: Refusal| {
        let status = match refusal.code {
            ErrorCode::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, refusal)
    };
    refuse_protobuf(request.headers()).map_err(bad)?;
    let body = routes::read_body(ctx, request.into_body())
        .await
        .map_err(bad)?;
    let request: EmulationRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "expected {{\"session\": string, \"node\": string, \"data\": string of commands}}: {e}"
            ),
        ))
    })?;
    if request.data.len() > ctx.config.max_message_bytes {
        return Err(bad(Refusal::new(
            ErrorCode::LimitExceeded,
            format!("the commands exceed {} bytes", ctx.config.max_message_bytes),
        )));
    }
    let not_found = |detail: String| {
        (
            StatusCode::NOT_FOUND,
            Refusal::new(ErrorCode::NotAvailable, detail),
        )
    };
    if !request.node.is_empty() && request.node != ctx.uid {
        return Err(not_found(format!(
            "node {:?} is not this server (restarted?); reconnect",
            request.node
        )));
    }
    let Some(sender) = ctx.emulation.get(&request.session) else {
        return Err(not_found(format!(
            "no session {:?} on this server (its stream ended); reconnect",
            request.session
        )));
    };
    match sender.try_send(Bytes::from(request.data)) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            Refusal::new(
                ErrorCode::TooManyRequests,
                "the session has too many commands waiting",
            ),
        )),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(not_found(format!(
            "session {:?} has ended; reconnect",
            request.session
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_sse_frame_each_message() {
        let mut out = Vec::new();
        Framing::Lines.append(&mut out, b"{\"id\":1}\n{}");
        assert_eq!(out, b"{\"id\":1}\n{}\n");
        let mut out = Vec::new();
        Framing::Sse.append(&mut out, b"{\"id\":1}\n{}");
        assert_eq!(out, b"data: {\"id\":1}\n\ndata: {}\n\n");
    }

    #[test]
    fn emulation_request_needs_a_string_of_commands() {
        let ok: EmulationRequest =
            serde_json::from_str(r#"{"session":"s","node":"n","data":"{\"id\":2}"}"#).unwrap();
        assert_eq!(ok.data, "{\"id\":2}");
        assert!(serde_json::from_str::<EmulationRequest>(r#"{"session":"s","data":{}}"#).is_err());
        assert!(serde_json::from_str::<EmulationRequest>(r#"{"data":"x"}"#).is_err());
    }
}

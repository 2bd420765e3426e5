//! Request routing for everything hyper serves, and the state every route shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_auth::{Claims, TokenVerifier};
use herald_core::{ChannelOptions, Node};
use herald_protocol::{ErrorCode, Payload};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::drain::OpenOutboxes;
use crate::emulation::{self, Emulated};
use crate::http_util::{self, Body, Refusal, error, full, result_response};
use crate::listener::ConnectionAbort;
use crate::metrics::{HttpVersion, Metrics};
use crate::uni::{self, UniStream};
use crate::{api, sse, ws};

/// State shared by every connection.
pub struct Context {
    pub config: ServerConfig,
    pub node: Arc<Node>,
    pub tokens: TokenVerifier,
    pub metrics: Metrics,
    /// Flips to `true` when the server starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Every open connection's outbox, closed when the server starts draining.
    pub open_outboxes: OpenOutboxes,
    pub started: Instant,
    /// Unique id of this process, for `info`; also the `node` of emulation
    /// sessions.
    pub uid: String,
    /// Open bidirectional-emulation sessions, for `POST /emulation`.
    pub emulation: Arc<emulation::Sessions>,
}

impl Context {
    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Who is making a client request.
pub enum Identity {
    /// No token was presented.
    Anonymous,
    /// A valid token was presented.
    User(Claims),
}

impl Identity {
    /// The user id (`sub`), if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User(claims) if !claims.sub.is_empty() => Some(&claims.sub),
            _ => None,
        }
    }
}

/// Reads and verifies the client's token, if it presented one.
pub async fn identify(
    ctx: &Context,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<Identity, Refusal> {
    let Some(token) = herald_auth::token_from_request(headers, query, &ctx.config.token_cookie)
    else {
        return Ok(Identity::Anonymous);
    };
    match ctx.tokens.verify_async(&token).await {
        Ok(claims) => Ok(Identity::User(claims)),
        Err(e) if e.is_expired() => Err(Refusal::new(ErrorCode::TokenExpired, e.to_string())),
        Err(e) if e.is_temporary() => Err(Refusal::new(ErrorCode::NotAvailable, e.to_string())),
        Err(e) => Err(Refusal::new(ErrorCode::Unauthorized, e.to_string())),
    }
}

/// Checks that `identity` may read `channel`, returning the channel's options.
pub fn authorize_read<'a>(
    ctx: &'a Context,
    identity: &Identity,
    channel: &str,
) -> Result<&'a ChannelOptions, Refusal> {
    let options = ctx
        .node
        .options(channel)
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    match identity {
        Identity::User(claims) if claims.can_read(channel) => Ok(options),
        Identity::User(_) if options.allow_anonymous => Ok(options),
        Identity::User(claims) => Err(Refusal::new(
            ErrorCode::PermissionDenied,
            format!(
                "token of {:?} does not grant channel {channel:?}",
                claims.sub
            ),
        )),
        Identity::Anonymous if options.allow_anonymous => Ok(options),
        Identity::Anonymous => Err(Refusal::new(
            ErrorCode::Unauthorized,
            format!(
                "channel {channel:?} needs a token (Authorization: Bearer, cookie, or ?token=)"
            ),
        )),
    }
}

/// Serves one request that reached hyper.
pub async fn handle(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    peer: SocketAddr,
    abort: ConnectionAbort,
) -> Response<Body> {
    let origin_headers = request.headers().clone();
    let mut response = route(&ctx, request, peer, abort).await;
    http_util::add_cors(
        &ctx.config.allowed_origins,
        &origin_headers,
        response.headers_mut(),
    );
    response
}

async fn route(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
    peer: SocketAddr,
    abort: ConnectionAbort,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/events") => {
            let version = emulation::http_version(&request);
            let (parts, _) = request.into_parts();
            match sse::SseStream::open(ctx, &parts, version).await {
                Ok(stream) => {
                    let headers = stream.response_headers();
                    streaming_response(ctx, headers, stream, abort)
                }
                Err(refusal) => refusal.into_response(),
            }
        }
        (&Method::GET | &Method::CONNECT, ws::PATH) => {
            websocket_upgrade(ctx, request, WebSocketKind::Bidirectional)
        }
        (&Method::GET | &Method::CONNECT, uni::WEBSOCKET_PATH) => {
            match uni::query_connect(request.uri().query()) {
                Ok(connect) => websocket_upgrade(ctx, request, WebSocketKind::Uni(connect)),
                Err(refusal) => refusal.into_response(),
            }
        }
        (&Method::POST, emulation::HTTP_STREAM_PATH) => {
            emulation::open(ctx, request, Emulated::HttpStream, abort).await
        }
        (&Method::GET | &Method::POST, emulation::SSE_PATH) => {
            emulation::open(ctx, request, Emulated::Sse, abort).await
        }
        (&Method::POST, emulation::EMULATION_PATH) => emulation::post(ctx, request).await,
        (&Method::GET | &Method::POST, uni::SSE_PATH) => {
            uni::open(ctx, request, UniStream::Sse, abort).await
        }
        (&Method::POST, uni::HTTP_STREAM_PATH) => {
            uni::open(ctx, request, UniStream::HttpStream, abort).await
        }
        (
            _,
            emulation::HTTP_STREAM_PATH
            | emulation::SSE_PATH
            | emulation::EMULATION_PATH
            | uni::SSE_PATH
            | uni::HTTP_STREAM_PATH,
        ) => http_util::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest.reply(format!(
                "{path} takes {}",
                if matches!(path.as_str(), emulation::SSE_PATH | uni::SSE_PATH) {
                    "GET or POST"
                } else {
                    "POST"
                }
            )),
        ),
        (&Method::POST, "/publish") => client_publish(ctx, request).await,
        (&Method::OPTIONS, _) => {
            http_util::preflight(&ctx.config.allowed_origins, request.headers())
        }
        (&Method::POST, p) if p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_owned();
            api::handle(ctx, &method, peer, request).await
        }
        (_, p) if p.starts_with("/api/") => error(
            ErrorCode::BadRequest,
            "the server API takes POST with a JSON body",
        ),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if ctx.draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, ctx.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "Herald real-time server. Subscribe: GET /events?channel=NAME. Publish: POST /api/publish.\n",
        ),
        _ => error(
            ErrorCode::MethodNotFound,
            format!("no route for {} {path}", request.method()),
        ),
    }
}

/// Which protocol a WebSocket speaks.
enum WebSocketKind {
    /// The Centrifuge protocol both ways (`/connection/websocket`).
    Bidirectional,
    /// The unidirectional protocol, with the connect request from the URL if it
    /// had one (`/connection/uni_websocket`).
    Uni(Option<herald_protocol::centrifuge::ConnectRequest>),
}

/// Accepts a WebSocket through hyper: an HTTP/1.1 `Upgrade` on a keep-alive
/// connection (`101`), or an HTTP/2 extended CONNECT with `:protocol websocket`
/// (RFC 8441; answered `200` with an empty body, as Chrome requires).
fn websocket_upgrade(
    ctx: &Arc<Context>,
    mut request: Request<Incoming>,
    kind: WebSocketKind,
) -> Response<Body> {
    let h2 = request.version() == http::Version::HTTP_2;
    let mut response = Response::new(full(Bytes::new()));
    if h2 {
        let websocket = request.method() == Method::CONNECT
            && request
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if !websocket {
            return error(
                ErrorCode::BadRequest,
                "expected CONNECT with :protocol websocket",
            );
        }
    } else {
        let key = request.headers().get(header::SEC_WEBSOCKET_KEY);
        let (true, Some(key)) = (ws::is_upgrade(request.headers()), key) else {
            return error(
                ErrorCode::BadRequest,
                "expected a WebSocket upgrade request",
            );
        };
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let accept = herald_protocol::websocket::accept_key(key.as_bytes());
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            http::HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
    }
    let upgrade = hyper::upgrade::on(&mut request);
    let ctx = ctx.clone();
    let version = if h2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                match kind {
                    WebSocketKind::Bidirectional => ws::serve(io, ctx, version).await,
                    WebSocketKind::Uni(connect) => {
                        uni::serve_websocket(io, ctx, version, connect, None).await
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    response
}

/// A response body produced chunk by chunk (an SSE stream, an emulation or
/// unidirectional session), driven by [`streaming_response`].
pub trait ChunkSource: Send + 'static {
    /// The next bytes to write; `None` ends the body.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
}

impl ChunkSource for sse::SseStream {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Bytes>> + Send {
        sse::SseStream::next_chunk(self)
    }
}

impl ChunkSource for emulation::SessionStream {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Bytes>> + Send {
        emulation::SessionStream::next_chunk(self)
    }
}

/// Serves a stream (SSE, emulation, unidirectional) as a streaming body through
/// hyper, with `headers`.
///
/// hyper polls a body only when it can send (socket writable, HTTP/2 window open),
/// so a client that stops reading would leave the stream unpolled: its outbox
/// overflow and its heartbeats would go unnoticed. A small pump task therefore
/// drives the stream and hands chunks over a one-slot channel; when a chunk waits
/// longer than the write timeout, the pump drops the connection.
pub fn streaming_response(
    ctx: &Arc<Context>,
    headers: http::HeaderMap,
    mut stream: impl ChunkSource,
    abort: ConnectionAbort,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                chunk = stream.next_chunk() => chunk,
                () = tx.closed() => return,
            };
            let Some(chunk) = chunk else { return };
            match tokio::time::timeout(ctx.config.write_timeout, tx.send(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    ctx.metrics.disconnected("write_timeout");
                    abort.abort();
                    return;
                }
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    *response.headers_mut() = headers;
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Reads a request body, refusing more than the configured limit.
pub async fn read_body(ctx: &Context, body: Incoming) -> Result<Bytes, Refusal> {
    match Limited::new(body, ctx.config.max_request_body)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::new(
            ErrorCode::LimitExceeded,
            format!("request body exceeds {} bytes", ctx.config.max_request_body),
        )),
        Err(e) => Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("reading the body failed: {e}"),
        )),
    }
}

/// `POST /publish?channel=NAME`: a client publishes with its own token, in
/// namespaces that allow client publishing. The body is the JSON data, or raw bytes
/// with `Content-Type: application/octet-stream`.
async fn client_publish(ctx: &Arc<Context>, request: Request<Incoming>) -> Response<Body> {
    match try_client_publish(ctx, request).await {
        Ok(result) => {
            ctx.metrics.publications.inc();
            result_response(&result)
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn try_client_publish(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
) -> Result<herald_protocol::api::PublishResult, Refusal> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query();
    let channel = http_util::query_values(query, "channel")
        .next()
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadRequest,
                "the channel query parameter is required",
            )
        })?;
    let identity = identify(ctx, &parts.headers, query).await?;
    let options = authorize_read(ctx, &identity, &channel)?;
    if !options.allow_publish {
        return Err(Refusal::new(
            ErrorCode::PermissionDenied,
            format!("clients may not publish to {channel:?} (namespace option allow_publish)"),
        ));
    }
    let bytes = read_body(ctx, body).await?;
    let binary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let payload = if binary {
        Payload::Binary(bytes)
    } else {
        Payload::json(&bytes).map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?
    };
    let position = ctx
        .node
        .publish(&channel, payload)
        .await
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    Ok(herald_protocol::api::PublishResult {
        offset: position.offset,
        epoch: position.epoch,
    })
}

//! The lean HTTP/1.1 path: read the request head ourselves; serve SSE streams from
//! this small task (socket + outbox, no hyper dispatcher, no parked read buffer);
//! hand everything else — and HTTP/2 prior-knowledge connections — to hyper with
//! the bytes already read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http_util::{Body, add_cors};
use crate::metrics::HttpVersion;
use crate::prefixed::Prefixed;
use crate::routes::Context;
use crate::sse::SseStream;
use crate::{uni, ws};
use herald_protocol::ErrorCode;
use herald_protocol::centrifuge::ConnectRequest;

/// Largest request head accepted on the lean path.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 64;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one HTTP/1.x or h2c connection (after TLS, if any).
pub async fn serve<S>(io: S, ctx: Arc<Context>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Everything before the stream loop is boxed and freed once done: a task's
    // future is as large as its largest state, and an idle stream should pay only
    // for the loop.
    // The WebSocket loops are boxed too, so SSE streams do not pay for their
    // (larger) futures; each transport's idle state is its own allocation.
    match Box::pin(begin(io, &ctx, peer)).await {
        Some(Opened::Sse(io, stream)) => stream_sse(io, &ctx, stream).await,
        Some(Opened::WebSocket(io)) => Box::pin(ws::serve(io, ctx, HttpVersion::Http1)).await,
        Some(Opened::UniWebSocket(io, connect, head)) => {
            Box::pin(uni::serve_websocket(
                io,
                ctx,
                HttpVersion::Http1,
                connect,
                Some(head),
            ))
            .await
        }
        None => {}
    }
}

/// A long-lived connection set up by [`begin`], ready for its loop.
enum Opened<S> {
    /// An SSE stream whose response head was written.
    Sse(S, SseStream),
    /// A WebSocket whose `101` was written; the stream replays any bytes the client
    /// sent right after its request.
    WebSocket(Prefixed<S>),
    /// A unidirectional WebSocket, with the connect request from its URL, if any,
    /// and its `101`, not yet written: it goes out with the connect result.
    UniWebSocket(Prefixed<S>, Option<ConnectRequest>, Vec<u8>),
}

/// Reads the request head. SSE and WebSocket requests are opened and returned for
/// their loops; anything else is served to completion by hyper.
async fn begin<S>(mut io: S, ctx: &Arc<Context>, peer: SocketAddr) -> Option<Opened<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::TooLarge)) => {
            let _ = io
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                .await;
            return None;
        }
        Ok(Err(HeadError::Closed)) | Err(_) => return None,
    };
    match head {
        Head::Sse(parts) => {
            let stream = start_sse(&mut io, ctx, parts).await?;
            Some(Opened::Sse(io, stream))
        }
        Head::WebSocket(parts, rest) => {
            let uni = parts.uri.path() == uni::WEBSOCKET_PATH;
            let accepted = ws::switching_protocols(&parts.headers)
                .map_err(|why| crate::http_util::Refusal::new(ErrorCode::BadRequest, why))
                .and_then(|head| {
                    let connect = match uni {
                        true => uni::query_connect(parts.uri.query())?,
                        false => None,
                    };
                    Ok((head, connect))
                });
            match accepted {
                Ok((head, connect)) if uni => {
                    Some(Opened::UniWebSocket(Prefixed::new(rest, io), connect, head))
                }
                Ok((head, _)) => {
                    write(&mut io, ctx, Bytes::from(head)).await.ok()?;
                    Some(Opened::WebSocket(Prefixed::new(rest, io)))
                }
                Err(refusal) => {
                    let mut response = refusal.into_response();
                    add_cors(
                        &ctx.config.allowed_origins,
                        &parts.headers,
                        response.headers_mut(),
                    );
                    let _ = write_response(&mut io, response).await;
                    None
                }
            }
        }
        Head::Other(buffered) => {
            let prefixed = Prefixed::new(buffered, io);
            Box::pin(crate::listener::serve_hyper(prefixed, ctx.clone(), peer)).await;
            None
        }
    }
}

enum Head {
    /// `GET /events`, parsed.
    Sse(http::request::Parts),
    /// A WebSocket upgrade to `/connection/websocket` or
    /// `/connection/uni_websocket`, parsed, and any bytes read past the head.
    WebSocket(http::request::Parts, Vec<u8>),
    /// Anything else: the bytes read so far, for hyper.
    Other(Vec<u8>),
}

enum HeadError {
    TooLarge,
    Closed,
}

async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Head, HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if io
            .read_buf(&mut buffer)
            .await
            .map_err(|_| HeadError::Closed)?
            == 0
        {
            return Err(HeadError::Closed);
        }
        // HTTP/2 prior knowledge starts with "PRI * HTTP/2.0".
        if buffer.starts_with(b"PRI") {
            return Ok(Head::Other(buffer));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (head_len, lean_route) = match request.parse(&buffer) {
            Ok(httparse::Status::Complete(head_len)) => (head_len, lean_route(&request)),
            Ok(httparse::Status::Partial) => continue,
            // hyper answers malformed requests with a proper 400.
            Err(_) => return Ok(Head::Other(buffer)),
        };
        let Some(route) = lean_route else {
            return Ok(Head::Other(buffer));
        };
        let rest = buffer.split_off(head_len);
        let head = Bytes::from(buffer);
        // Let hyper serve heads `http` refuses (it answers with the error), and
        // GETs of the WebSocket paths that are not upgrades.
        let parts = to_parts(&head).filter(|parts| match route {
            LeanRoute::Sse => true,
            LeanRoute::WebSocket => ws::is_upgrade(&parts.headers),
        });
        return Ok(match (parts, route) {
            (Some(parts), LeanRoute::Sse) => Head::Sse(parts),
            (Some(parts), LeanRoute::WebSocket) => Head::WebSocket(parts, rest),
            (None, _) => {
                let mut all = Vec::from(head);
                all.extend_from_slice(&rest);
                Head::Other(all)
            }
        });
    }
}

/// The requests served on the lean path.
#[derive(Clone, Copy)]
enum LeanRoute {
    /// `GET /events`.
    Sse,
    /// `GET` of a WebSocket path (an upgrade, if its headers say so).
    WebSocket,
}

fn lean_route(request: &httparse::Request<'_, '_>) -> Option<LeanRoute> {
    if request.method != Some("GET") {
        return None;
    }
    match request.path?.split('?').next()? {
        "/events" => Some(LeanRoute::Sse),
        ws::PATH | uni::WEBSOCKET_PATH => Some(LeanRoute::WebSocket),
        _ => None,
    }
}

/// The complete request head in `head` as `http` parts, or `None` if `http`
/// refuses a part of it. The URI and the header values point into `head` instead
/// of copying it: a connect storm opens thousands of these a second. The head is
/// parsed again (well under a microsecond) so that the slices borrow `head`.
fn to_parts(head: &Bytes) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).ok()?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.version = http::Version::HTTP_11;
    parts.uri = http::Uri::from_maybe_shared(head.slice_ref(request.path?.as_bytes())).ok()?;
    parts.headers.reserve(request.headers.len());
    for header in request.headers.iter() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_maybe_shared(head.slice_ref(header.value)).ok()?;
        parts.headers.append(name, value);
    }
    Some(parts)
}

/// Opens the stream and writes the response head; on refusal writes the error
/// response instead and returns `None`.
async fn start_sse<S>(
    io: &mut S,
    ctx: &Arc<Context>,
    parts: http::request::Parts,
) -> Option<SseStream>
where
    S: AsyncWrite + Unpin,
{
    let mut headers = match SseStream::open(ctx, &parts, HttpVersion::Http1).await {
        Ok(mut stream) => {
            let mut headers = stream.response_headers();
            add_cors(&ctx.config.allowed_origins, &parts.headers, &mut headers);
            let mut head = b"HTTP/1.1 200 OK\r\nconnection: close\r\n".to_vec();
            write_headers(&mut head, &headers);
            // The opening events go with the head: one write, one segment.
            if let Some(opening) = stream.take_opening() {
                head.extend_from_slice(&opening);
            }
            return write(io, ctx, Bytes::from(head))
                .await
                .ok()
                .map(|()| stream);
        }
        Err(refusal) => refusal.into_response(),
    };
    add_cors(
        &ctx.config.allowed_origins,
        &parts.headers,
        headers.headers_mut(),
    );
    let _ = write_response(io, headers).await;
    None
}

/// The life of an open stream: write what the stream yields until it ends, the
/// client closes, or a write times out.
async fn stream_sse<S>(mut io: S, ctx: &Context, mut stream: SseStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A few bytes to notice the client closing; an SSE client sends nothing else.
    let mut probe = [0u8; 8];
    loop {
        let chunk = tokio::select! {
            chunk = stream.next_chunk() => chunk,
            read = io.read(&mut probe) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let Some(chunk) = chunk else { break };
        if write(&mut io, ctx, chunk).await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Writes `bytes`, giving up after the write timeout (a client that stopped reading).
async fn write<S: AsyncWrite + Unpin>(io: &mut S, ctx: &Context, bytes: Bytes) -> Result<(), ()> {
    let sent = std::pin::pin!(io.write_all(&bytes));
    match crate::timed::within(ctx.config.write_timeout, sent).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            ctx.metrics.disconnected("write_timeout");
            Err(())
        }
    }
}

fn write_headers(out: &mut Vec<u8>, headers: &http::HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete (non-streaming) response and leaves the connection to close.
async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: Response<Body>,
) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let status: StatusCode = parts.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    write_headers(&mut out, &parts.headers);
    out.extend_from_slice(&body);
    io.write_all(&out).await?;
    io.shutdown().await
}

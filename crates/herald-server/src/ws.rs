//! WebSocket transport (RFC 6455, and RFC 8441 over HTTP/2) for the Centrifuge
//! client protocol at `/connection/websocket`.
//!
//! The handshake is ours (HTTP/1.1 lean path, hyper's upgrade for HTTP/1.1 keep-alive
//! connections, extended CONNECT on HTTP/2); framing is tokio-websockets on the raw
//! stream. The session (`crate::client`) knows nothing of WebSockets.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder, WebSocketStream};

use crate::client::{ClientSession, Disconnect, Output};
use crate::metrics::{HttpVersion, Transport};
use crate::routes::Context;

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

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(GUID);
    BASE64.encode(context.finish())
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
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    )
    .into_bytes())
}

/// Runs the Centrifuge protocol over an established WebSocket stream until either
/// side closes.
pub async fn serve<S>(io: S, ctx: Arc<Context>, version: HttpVersion)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = Limits::default().max_payload_len(Some(ctx.config.max_message_bytes));
    let ws = ServerBuilder::new().limits(limits).serve(io);
    let session = ClientSession::new(ctx.clone(), Transport::WebSocket, version);
    run(ws, session).await;
}

async fn run<S>(mut ws: WebSocketStream<S>, mut session: ClientSession)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let output = tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    session.handle_frame(message.as_payload()).await
                }
                Some(Ok(message)) if message.is_close() => return,
                // Pings and pongs are answered by the codec.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket protocol error");
                    // The codec queues the close frame a framing error calls for
                    // (1007 invalid UTF-8, 1002 protocol error, 1009 over the size
                    // limit); flushing sends it. An oversized fragmented message
                    // is only caught after reassembly, so close it here.
                    if let tokio_websockets::Error::PayloadTooLong { .. } = e {
                        let _ = ws.send(Message::close(Some(CloseCode::MESSAGE_TOO_BIG), "message too big")).await;
                    }
                    let _ = tokio::time::timeout(session.write_timeout(), ws.flush()).await;
                    return;
                }
                None => return,
            },
            output = session.next_output() => output,
        };
        if !write(&mut ws, &session, output).await {
            return;
        }
    }
}

/// Writes a session output; `false` once the connection is done.
async fn write<S>(ws: &mut WebSocketStream<S>, session: &ClientSession, output: Output) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = session.write_timeout();
    let sent = async {
        if let Some(frame) = output.frame {
            ws.feed(Message::text(Bytes::from(frame))).await?;
        }
        if let Some(Disconnect { code, reason, .. }) = &output.close {
            let code = CloseCode::try_from(*code).unwrap_or(CloseCode::POLICY_VIOLATION);
            ws.feed(Message::close(Some(code), reason)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(())) => output.close.is_none(),
        Ok(Err(_)) => false,
        Err(_) => {
            session.count_disconnect("write_timeout");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

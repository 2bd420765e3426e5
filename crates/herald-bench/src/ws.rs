//! Opening WebSockets: the HTTP/1.1 upgrade written by hand on the raw stream
//! (plain or TLS; HTTP/2's extended CONNECT is in `http2`) and, for the Centrifuge
//! client protocol (JSON), `connect` and `subscribe` sent as masked text frames
//! with both replies awaited.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_protocol::websocket::accept_key;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::Io;
use crate::http1;
use crate::ws_frame::{Frame, FrameReader, Masks, OP_PONG, OP_TEXT};

/// Upgrades `io` to a WebSocket at `path`; returns the bytes read after the `101`
/// response head (the first frames, if the server was quick).
pub async fn upgrade(
    io: &mut Box<dyn Io>,
    authority: &str,
    path: &str,
    masks: &mut Masks,
) -> Result<Vec<u8>, String> {
    let key = BASE64.encode(masks.nonce());
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\nuser-agent: herald-bench\r\n\r\n"
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let expected_accept = accept_key(key.as_bytes());
    let check = |headers: &[httparse::Header<'_>]| {
        let accept = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value);
        if accept == Some(expected_accept.as_bytes()) {
            Ok(())
        } else {
            Err(format!(
                "101 with a wrong sec-websocket-accept: {:?}",
                accept.map(String::from_utf8_lossy)
            ))
        }
    };
    let (_, rest) = http1::read_head(io, 101, check).await?;
    Ok(rest)
}

/// Sends the Centrifuge `connect` (anonymous) and `subscribe` to `channel` and
/// waits for both replies, answering pings meanwhile. `buffer` holds the bytes
/// read but not yet parsed, before and after.
pub async fn centrifuge_subscribe(
    io: &mut Box<dyn Io>,
    buffer: &mut Vec<u8>,
    frames: &mut FrameReader,
    masks: &mut Masks,
    channel: &str,
) -> Result<(), String> {
    let mut out = Vec::new();
    masks.frame(OP_TEXT, br#"{"id":1,"connect":{}}"#, &mut out);
    let channel = serde_json::to_string(channel).map_err(|e| e.to_string())?;
    let subscribe = format!(r#"{{"id":2,"subscribe":{{"channel":{channel}}}}}"#);
    masks.frame(OP_TEXT, subscribe.as_bytes(), &mut out);
    let (mut connected, mut subscribed) = (false, false);
    loop {
        if !out.is_empty() {
            io.write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            out.clear();
        }
        if connected && subscribed {
            return Ok(());
        }
        let mut at = 0;
        while let Some(frame) = frames.next(buffer, &mut at)? {
            match frame {
                Frame::Message(text) => {
                    for line in text.split(|&b| b == b'\n') {
                        match reply_id(line)? {
                            Some(1) => connected = true,
                            Some(2) => subscribed = true,
                            Some(_) => {}
                            None => masks.frame(OP_TEXT, b"{}", &mut out),
                        }
                    }
                }
                Frame::Ping(payload) => masks.frame(OP_PONG, payload, &mut out),
                Frame::Close(code, reason) => return Err(closed(code, &reason)),
                Frame::Skip => {}
            }
        }
        buffer.drain(..at);
        if connected && subscribed || !out.is_empty() {
            continue;
        }
        if io
            .read_buf(buffer)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("closed by the server without a close frame".into());
        }
    }
}

/// The `id` of a reply among the messages of a Centrifuge frame: `None` for a ping
/// (`{}`), `Some(0)` for any other push; an error for a refused command.
fn reply_id(line: &[u8]) -> Result<Option<u64>, String> {
    if line == b"{}" {
        return Ok(None);
    }
    let message: Value = serde_json::from_slice(line).map_err(|e| {
        format!(
            "a reply that is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
        )
    })?;
    if let Some(error) = message.get("error") {
        return Err(format!("command {} refused: {error}", message["id"]));
    }
    Ok(Some(message["id"].as_u64().unwrap_or(0)))
}

/// The message for a server's close frame.
pub fn closed(code: Option<u16>, reason: &str) -> String {
    format!(
        "closed by the server with code {} ({reason})",
        code.map_or("none".to_owned(), |c| c.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replies() {
        assert_eq!(reply_id(b"{}").unwrap(), None);
        assert_eq!(reply_id(br#"{"id":2,"subscribe":{}}"#).unwrap(), Some(2));
        assert_eq!(reply_id(br#"{"push":{"channel":"a"}}"#).unwrap(), Some(0));
        let refused = reply_id(br#"{"id":2,"error":{"code":103}}"#).unwrap_err();
        assert_eq!(refused, r#"command 2 refused: {"code":103}"#);
        assert!(reply_id(b"nope").is_err());
    }
}

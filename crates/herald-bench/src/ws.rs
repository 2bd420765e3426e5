//! The lean WebSocket client for the Centrifuge client protocol (JSON): the
//! HTTP/1.1 upgrade written by hand on the raw socket (plain or TLS), `connect` and
//! `subscribe` sent as masked text frames, both replies awaited; then a small task
//! per connection that answers the server's pings (`{}` with `{}`, and control
//! pings with pongs) and otherwise stays idle, as an SDK client would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_protocol::websocket::accept_key;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

use crate::client::{Io, parse_head_with};

/// Most bytes of the `101` response head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 1 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// A WebSocket that is connected and subscribed, with the bytes read past the last
/// reply.
pub struct Opened {
    io: Box<dyn Io>,
    reader: Reader,
    masks: Masks,
}

/// Upgrades `io` to a WebSocket at `path`, connects (anonymously) and subscribes
/// `channel`; returns once the server has answered both.
pub async fn open(
    mut io: Box<dyn Io>,
    authority: &str,
    path: &str,
    channel: &str,
    index: u64,
) -> Result<Opened, String> {
    let mut masks = Masks::new(index);
    let key = BASE64.encode(masks.nonce());
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\nuser-agent: herald-bench\r\n\r\n"
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;

    let expected_accept = accept_key(key.as_bytes());
    let mut buffer = Vec::with_capacity(1024);
    let head_len = loop {
        if buffer.len() >= MAX_HEAD {
            return Err(format!("no complete response head in {MAX_HEAD} bytes"));
        }
        let read = io
            .read_buf(&mut buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("closed before the 101 response".into());
        }
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
        if let Some(len) = parse_head_with(&buffer, 101, check)? {
            break len;
        }
    };
    buffer.drain(..head_len);

    let mut commands = Vec::new();
    let connect = br#"{"id":1,"connect":{}}"#;
    masks.frame(OP_TEXT, connect, &mut commands);
    let channel = serde_json::to_string(channel).map_err(|e| e.to_string())?;
    let subscribe = format!(r#"{{"id":2,"subscribe":{{"channel":{channel}}}}}"#);
    masks.frame(OP_TEXT, subscribe.as_bytes(), &mut commands);
    io.write_all(&commands)
        .await
        .map_err(|e| format!("write: {e}"))?;

    let mut opened = Opened {
        io,
        reader: Reader {
            buffer,
            partial: None,
        },
        masks,
    };
    let (mut connected, mut subscribed) = (false, false);
    while !(connected && subscribed) {
        let incoming = opened.reader.next(&mut opened.io).await?;
        let Incoming::Text(text) = incoming else {
            opened.answer(incoming).await?;
            continue;
        };
        for line in text.split(|&b| b == b'\n') {
            let message: Value = serde_json::from_slice(line).map_err(|e| {
                format!(
                    "a reply that is not JSON ({e}): {}",
                    String::from_utf8_lossy(line)
                )
            })?;
            if let Some(error) = message.get("error") {
                return Err(format!("command {} refused: {error}", message["id"]));
            }
            match message["id"].as_u64() {
                Some(1) => connected = true,
                Some(2) => subscribed = true,
                _ => {}
            }
        }
        opened.answer_pings(&text).await?;
    }
    Ok(opened)
}

impl Opened {
    /// Answers each server ping (`{}`) among the messages of `text` with `{}`.
    async fn answer_pings(&mut self, text: &[u8]) -> Result<(), String> {
        let pings = text.split(|&b| b == b'\n').filter(|l| *l == b"{}").count();
        if pings == 0 {
            return Ok(());
        }
        let mut out = Vec::new();
        for _ in 0..pings {
            self.masks.frame(OP_TEXT, b"{}", &mut out);
        }
        self.io
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Answers a control frame; a close ends the connection.
    async fn answer(&mut self, incoming: Incoming) -> Result<(), String> {
        match incoming {
            Incoming::Text(text) => self.answer_pings(&text).await,
            Incoming::Ping(payload) => {
                let mut out = Vec::new();
                self.masks.frame(OP_PONG, &payload, &mut out);
                self.io
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write: {e}"))
            }
            Incoming::Close(code, reason) => Err(format!(
                "closed by the server with code {} ({reason})",
                code.map_or("none".to_owned(), |c| c.to_string())
            )),
            Incoming::Other => Ok(()),
        }
    }
}

/// Connections the server closed while held: how many, and why the first one
/// ended. Shared by every connection of a worker.
#[derive(Debug, Clone, Default)]
pub struct Lost(Arc<LostInner>);

#[derive(Debug, Default)]
struct LostInner {
    count: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Lost {
    /// Takes the count and first reason recorded so far, if any.
    pub fn take(&self) -> Option<(usize, String)> {
        let count = self.0.count.swap(0, Ordering::Relaxed);
        let first = self.0.first.lock().ok()?.take();
        (count > 0).then(|| (count, first.unwrap_or_default()))
    }

    fn record(&self, why: String) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.0.first.lock() {
            first.get_or_insert(why);
        }
    }
}

/// A WebSocket held by its task; dropping it ends the task and closes the socket.
pub struct Held(AbortHandle);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands `opened` to a task that answers pings until the server closes it (which
/// is recorded in `lost`) or the [`Held`] is dropped.
pub fn hold(mut opened: Opened, lost: Lost) -> Held {
    let task = tokio::spawn(async move {
        let why = loop {
            let answered = match opened.reader.next(&mut opened.io).await {
                Ok(incoming) => opened.answer(incoming).await,
                Err(e) => Err(e),
            };
            if let Err(why) = answered {
                break why;
            }
        };
        lost.record(why);
    });
    Held(task.abort_handle())
}

/// A complete message or control frame from the server.
enum Incoming {
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Close(Option<u16>, String),
    /// Binary messages and pongs, ignored.
    Other,
}

/// Reads frames from the server and reassembles fragmented messages.
struct Reader {
    buffer: Vec<u8>,
    /// The opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
}

impl Reader {
    async fn next(&mut self, io: &mut Box<dyn Io>) -> Result<Incoming, String> {
        loop {
            while let Some((consumed, incoming)) = self.parse()? {
                self.buffer.drain(..consumed);
                if let Some(incoming) = incoming {
                    return Ok(incoming);
                }
            }
            let read = io
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Err("closed by the server without a close frame".into());
            }
        }
    }

    /// One frame from the buffer: the bytes it took and the message it completed.
    fn parse(&mut self) -> Result<Option<(usize, Option<Incoming>)>, String> {
        let Some((fin, opcode, start, end)) = frame_bounds(&self.buffer)? else {
            return Ok(None);
        };
        let payload = &self.buffer[start..end];
        let incoming = match opcode {
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                Some(Incoming::Close(code, reason.into_owned()))
            }
            OP_PING => Some(Incoming::Ping(payload.to_vec())),
            OP_PONG => Some(Incoming::Other),
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let (opcode, mut message) = match (opcode, self.partial.take()) {
                    (OP_CONTINUATION, Some(partial)) => partial,
                    (OP_CONTINUATION, None) => return Err("continuation without a message".into()),
                    (_, Some(_)) => return Err("new message inside a fragmented one".into()),
                    (opcode, None) => (opcode, Vec::new()),
                };
                if message.len() + payload.len() > MAX_MESSAGE {
                    return Err(format!("a message over {MAX_MESSAGE} bytes"));
                }
                message.extend_from_slice(payload);
                if !fin {
                    self.partial = Some((opcode, message));
                    None
                } else if opcode == OP_TEXT {
                    Some(Incoming::Text(message))
                } else {
                    Some(Incoming::Other)
                }
            }
            other => return Err(format!("unknown opcode {other:#x}")),
        };
        Ok(Some((end, incoming)))
    }
}

/// The FIN bit, opcode and payload bounds of the frame at the start of `buffer`,
/// once it is complete.
fn frame_bounds(buffer: &[u8]) -> Result<Option<(bool, u8, usize, usize)>, String> {
    let [first, second, ..] = *buffer else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err("the server sent a masked frame".into());
    }
    let (len, start) = match second & 0x7f {
        126 => match buffer.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match buffer.get(2..10) {
            Some(bytes) => (u64::from_be_bytes(bytes.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(format!("a frame over {MAX_MESSAGE} bytes"));
    }
    let end = start + len as usize;
    Ok((buffer.len() >= end).then_some((first & 0x80 != 0, first & 0x0f, start, end)))
}

/// Handshake nonces and frame masks: not for security (this client talks to a
/// server under test), only so that no two frames share a mask.
struct Masks(u64);

impl Masks {
    fn new(index: u64) -> Masks {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Masks(now ^ u64::from(std::process::id()).rotate_left(32) ^ index)
    }

    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&self.next().to_le_bytes());
        nonce[8..].copy_from_slice(&self.next().to_le_bytes());
        nonce
    }

    /// Appends one final, masked client frame to `out`.
    fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = (self.next() as u32).to_be_bytes();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_client_frames() {
        let mut masks = Masks::new(7);
        let mut out = Vec::new();
        masks.frame(OP_TEXT, b"{}", &mut out);
        assert_eq!(out.len(), 2 + 4 + 2);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 2);
        let mask = &out[2..6];
        assert_eq!([out[6] ^ mask[0], out[7] ^ mask[1]], *b"{}");

        let mut out = Vec::new();
        masks.frame(OP_TEXT, &[b'x'; 300], &mut out);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 300);
        assert_eq!(out.len(), 4 + 4 + 300);
    }

    #[test]
    fn reads_frames_and_fragments() {
        let mut reader = Reader {
            buffer: Vec::new(),
            partial: None,
        };
        assert!(reader.parse().unwrap().is_none());
        // "{}" in two fragments, a ping in between, then a close 3001.
        reader
            .buffer
            .extend_from_slice(&[0x01, 1, b'{', 0x89, 1, b'p', 0x80, 1, b'}']);
        reader.buffer.extend_from_slice(&[0x88, 10, 0x0b, 0xb9]);
        reader.buffer.extend_from_slice(b"shutdown");
        let mut seen = Vec::new();
        while let Some((consumed, incoming)) = reader.parse().unwrap() {
            reader.buffer.drain(..consumed);
            seen.extend(incoming);
        }
        assert!(reader.buffer.is_empty());
        assert!(matches!(&seen[0], Incoming::Ping(p) if p == b"p"));
        assert!(matches!(&seen[1], Incoming::Text(t) if t == b"{}"));
        assert!(matches!(&seen[2], Incoming::Close(Some(3001), r) if r == "shutdown"));

        let mut long = vec![0x81, 126, 0x01, 0x00];
        assert!(frame_bounds(&long).unwrap().is_none());
        long.extend_from_slice(&[b'a'; 256]);
        assert_eq!(frame_bounds(&long).unwrap(), Some((true, OP_TEXT, 4, 260)));
        assert!(frame_bounds(&[0x81, 0x82, 0, 0, 0, 0, 0, 0]).is_err());
    }
}

//! The JSON encoding: one JSON object per message, messages of a frame separated
//! by `\n`. Data fields are embedded JSON, never base64.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::command::WireCommand;
use super::push::ClientInfo;
use super::reply::ServerMessage;
use super::{Command, DecodeError, EncodeError, Object};
use crate::Payload;
use crate::payload::write_json_string;

/// The server's ping, and the client's pong: the empty object.
pub(super) const PING: &[u8] = b"{}";

/// Splits a frame into lines and decodes each non-blank one.
fn decode_lines<W, T>(
    frame: &[u8],
    convert: impl Fn(W) -> Result<T, String>,
) -> Result<Vec<T>, DecodeError>
where
    W: DeserializeOwned,
{
    let mut out = Vec::new();
    for (index, line) in frame.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        let line_number = index + 1;
        let Object(wire) = serde_json::from_slice::<Object<W>>(line)
            .map_err(|e| DecodeError::from_json(line_number, &e))?;
        out.push(convert(wire).map_err(|detail| DecodeError::structure(line_number, detail))?);
    }
    Ok(out)
}

pub(super) fn decode_commands(frame: &[u8]) -> Result<Vec<Command>, DecodeError> {
    decode_lines(frame, |wire: WireCommand| Command::try_from(wire))
}

pub(super) fn decode_server_messages(frame: &[u8]) -> Result<Vec<ServerMessage>, DecodeError> {
    decode_lines(frame, Ok::<ServerMessage, String>)
}

/// Starts a new message in `frame`: a separator unless it is the first.
fn separate(frame: &mut Vec<u8>) {
    if !frame.is_empty() {
        frame.push(b'\n');
    }
}

pub(super) fn append_message(frame: &mut Vec<u8>, message: &[u8]) {
    separate(frame);
    frame.extend_from_slice(message);
}

pub(super) fn append_serialized<T: Serialize + ?Sized>(frame: &mut Vec<u8>, value: &T) {
    separate(frame);
    write_single_line(frame, value);
}

/// Writes `value` as compact JSON with no raw line break, which would split the
/// message: serde never writes one, but embedded raw JSON (data fields) may hold
/// some as whitespace; outside strings a line break is only whitespace and inside
/// them JSON forbids it, so each becomes a space.
fn write_single_line<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Room for a typical reply up front: serde_json grows the buffer a few bytes
    // at a time, and a connect reply would otherwise reallocate five times.
    out.reserve(256);
    let start = out.len();
    serde_json::to_writer(&mut *out, value)
        .expect("protocol types always serialize: string map keys, no custom errors");
    blank_line_breaks(&mut out[start..]);
}

fn blank_line_breaks(bytes: &mut [u8]) {
    for b in bytes {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

pub(super) fn encode_publication_push(
    channel: &str,
    publication: &crate::Publication,
    info: Option<&ClientInfo>,
) -> Result<Bytes, EncodeError> {
    let Payload::Json(data) = &publication.data else {
        return Err(EncodeError::BinaryOverJson);
    };
    let mut out = Vec::with_capacity(64 + channel.len() + data.len());
    out.extend_from_slice(b"{\"push\":{");
    if !channel.is_empty() {
        out.extend_from_slice(b"\"channel\":");
        write_json_string(&mut out, channel);
        out.push(b',');
    }
    out.extend_from_slice(b"\"pub\":{");
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(name);
    };
    if !data.is_empty() {
        field(&mut out, b"\"data\":");
        let start = out.len();
        out.extend_from_slice(data);
        // `Payload::json` already keeps JSON on one line; a payload built by hand
        // may not.
        blank_line_breaks(&mut out[start..]);
    }
    if let Some(info) = info {
        field(&mut out, b"\"info\":");
        write_single_line(&mut out, info);
    }
    if publication.offset != 0 {
        field(&mut out, b"\"offset\":");
        write_u64(&mut out, publication.offset);
    }
    out.extend_from_slice(b"}}}");
    Ok(Bytes::from(out))
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_digits() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}

//! WebSocket framing (RFC 6455) as a client needs it: server frames read in place
//! from a buffer (fragmented messages reassembled), client frames masked.

use std::time::{SystemTime, UNIX_EPOCH};

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 1 << 20;

const OP_CONTINUATION: u8 = 0x0;
/// Text opcode.
pub const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
/// Ping opcode.
pub const OP_PING: u8 = 0x9;
/// Pong opcode.
pub const OP_PONG: u8 = 0xa;

/// A frame or reassembled message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete text or binary message.
    Message(&'a [u8]),
    /// A ping, with its payload.
    Ping(&'a [u8]),
    /// A close frame: the code and reason.
    Close(Option<u16>, String),
    /// Nothing for the caller (a pong, or a fragment of a longer message).
    Skip,
}

/// Reads server frames from a buffer, keeping the start of a fragmented message.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
    /// The last reassembled message (its allocation is reused).
    assembled: Vec<u8>,
}

impl FrameReader {
    /// The frame at `buffer[*at..]`, advancing `*at` past it; `None` until it is
    /// complete.
    pub fn next<'a>(
        &'a mut self,
        buffer: &'a [u8],
        at: &mut usize,
    ) -> Result<Option<Frame<'a>>, String> {
        let Some((fin, opcode, start, end)) = frame_bounds(&buffer[*at..])? else {
            return Ok(None);
        };
        let payload = &buffer[*at + start..*at + end];
        *at += end;
        let frame = match opcode {
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                Frame::Close(code, reason.into_owned())
            }
            OP_PING => Frame::Ping(payload),
            OP_PONG => Frame::Skip,
            OP_TEXT | OP_BINARY if fin && self.partial.is_none() => Frame::Message(payload),
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let (opcode, mut message) = match (opcode, self.partial.take()) {
                    (OP_CONTINUATION, Some(partial)) => partial,
                    (OP_CONTINUATION, None) => return Err("continuation without a message".into()),
                    (_, Some(_)) => return Err("new message inside a fragmented one".into()),
                    (opcode, None) => {
                        let mut message = std::mem::take(&mut self.assembled);
                        message.clear();
                        (opcode, message)
                    }
                };
                if message.len() + payload.len() > MAX_MESSAGE {
                    return Err(format!("a message over {MAX_MESSAGE} bytes"));
                }
                message.extend_from_slice(payload);
                if !fin {
                    self.partial = Some((opcode, message));
                    return Ok(Some(Frame::Skip));
                }
                self.assembled = message;
                Frame::Message(&self.assembled)
            }
            other => return Err(format!("unknown opcode {other:#x}")),
        };
        Ok(Some(frame))
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
#[derive(Debug)]
pub struct Masks(u64);

impl Masks {
    /// A sequence seeded by the time, the process and `index`.
    pub fn new(index: u64) -> Masks {
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

    /// A `Sec-WebSocket-Key` nonce.
    pub fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&self.next().to_le_bytes());
        nonce[8..].copy_from_slice(&self.next().to_le_bytes());
        nonce
    }

    /// Appends one final, masked client frame to `out`.
    pub fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
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
        let mut reader = FrameReader::default();
        // "{}" in two fragments, a ping in between, a whole message, then a close.
        let mut buffer = vec![
            0x01, 1, b'{', 0x89, 1, b'p', 0x80, 1, b'}', 0x82, 2, b'a', b'b',
        ];
        buffer.extend_from_slice(&[0x88, 10, 0x0b, 0xb9]);
        buffer.extend_from_slice(b"shutdown");
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(frame) = reader.next(&buffer, &mut at).unwrap() {
            seen.push(format!("{frame:?}"));
        }
        assert_eq!(at, buffer.len());
        assert_eq!(
            seen,
            [
                "Skip",
                "Ping([112])",
                "Message([123, 125])",
                "Message([97, 98])",
                "Close(Some(3001), \"shutdown\")"
            ]
        );
        assert!(reader.next(&buffer[..1], &mut 0).unwrap().is_none());

        let mut long = vec![0x81, 126, 0x01, 0x00];
        assert!(frame_bounds(&long).unwrap().is_none());
        long.extend_from_slice(&[b'a'; 256]);
        assert_eq!(frame_bounds(&long).unwrap(), Some((true, OP_TEXT, 4, 260)));
        assert!(frame_bounds(&[0x81, 0x82, 0, 0, 0, 0, 0, 0]).is_err());
        let mut stray = FrameReader::default();
        assert!(stray.next(&[0x80, 0], &mut 0).is_err());
    }
}

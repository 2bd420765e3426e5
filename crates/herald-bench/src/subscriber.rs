//! A subscriber's life once open: read everything the server sends, find payload
//! markers in it and record them in the worker's [`Tally`]; answer pings. It ends
//! when the server closes the connection (recorded as a close) or the task is
//! aborted.
//!
//! Cheap on purpose (it shares the CPU with the server under test): one read
//! buffer per connection reused for every read, one clock reading per read, no
//! allocation or JSON parsing per message — the SIMD marker scan runs over the
//! bytes as they are, whatever the framing around them.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Opened, Stream};
use crate::clock;
use crate::http1::Dechunker;
use crate::payload::{self, Marker};
use crate::tally::Tally;
use crate::ws;
use crate::ws_frame::{Frame, FrameReader, Masks, OP_PONG, OP_TEXT};

/// Free space ensured in the read buffer before each read.
const READ_SPACE: usize = 4096;

/// Reads `opened` until it ends, recording its deliveries under `slot`.
pub async fn run(opened: Opened, slot: usize, tally: Rc<RefCell<Tally>>) {
    let Err(why) = read(opened, slot, &tally).await;
    tally.borrow_mut().closed(why);
}

/// Only returns when the connection ends, with why.
async fn read(opened: Opened, slot: usize, tally: &RefCell<Tally>) -> Result<Infallible, String> {
    let Opened {
        mut io,
        mut buffer,
        mut stream,
    } = opened;
    // SSE: how much of `buffer` is decoded body (the rest is chunk framing).
    let mut decoded = 0;
    let mut replies = Vec::new();
    let mut now = clock::now_ns();
    loop {
        let done = {
            let mut tally = tally.borrow_mut();
            let mut deliver = |marker: Marker| tally.deliver(slot, marker, now);
            match &mut stream {
                Stream::Sse { dechunker } => {
                    sse(&mut buffer, &mut decoded, dechunker.as_mut(), &mut deliver)?
                }
                Stream::WebSocket {
                    frames,
                    masks,
                    centrifuge,
                } => websocket(
                    &buffer,
                    frames,
                    masks,
                    *centrifuge,
                    &mut replies,
                    &mut deliver,
                )?,
            }
        };
        buffer.drain(..done);
        if !replies.is_empty() {
            io.write_all(&replies)
                .await
                .map_err(|e| format!("write: {e}"))?;
            replies.clear();
        }
        buffer.reserve(READ_SPACE);
        let read = io
            .read_buf(&mut buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("closed by the server".into());
        }
        now = clock::now_ns();
    }
}

/// Scans an SSE body: returns how many bytes at the front of `buffer` are done
/// with. `decoded` is the length of the decoded body at the front.
fn sse(
    buffer: &mut Vec<u8>,
    decoded: &mut usize,
    dechunker: Option<&mut Dechunker>,
    deliver: &mut impl FnMut(Marker),
) -> Result<usize, String> {
    let ended = match dechunker {
        Some(dechunker) => {
            dechunker.decode(buffer, decoded)?;
            dechunker.is_done()
        }
        None => {
            *decoded = buffer.len();
            false
        }
    };
    let done = payload::scan(&buffer[..*decoded], deliver);
    *decoded -= done;
    if ended {
        return Err("the server ended the stream".into());
    }
    Ok(done)
}

/// Reads the complete WebSocket frames in `buffer`: scans messages for markers,
/// queues pongs (and, for Centrifuge, `{}` answers to `{}` pings) in `replies`;
/// returns how many bytes the frames took.
fn websocket(
    buffer: &[u8],
    frames: &mut FrameReader,
    masks: &mut Masks,
    centrifuge: bool,
    replies: &mut Vec<u8>,
    deliver: &mut impl FnMut(Marker),
) -> Result<usize, String> {
    let mut at = 0;
    while let Some(frame) = frames.next(buffer, &mut at)? {
        match frame {
            Frame::Message(message) => {
                payload::scan(message, &mut *deliver);
                if centrifuge && memmem::find(message, b"{}").is_some() {
                    for _ in message.split(|&b| b == b'\n').filter(|l| *l == b"{}") {
                        masks.frame(OP_TEXT, b"{}", replies);
                    }
                }
            }
            Frame::Ping(payload) => masks.frame(OP_PONG, payload, replies),
            Frame::Close(code, reason) => return Err(ws::closed(code, &reason)),
            Frame::Skip => {}
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        payload::write(
            &mut out,
            Marker {
                seq,
                channel: 0,
                sent_ns: 5,
            },
            32,
        )
        .unwrap();
        out
    }

    #[test]
    fn scans_chunked_sse_across_reads() {
        let mut body = Vec::new();
        for seq in 0..3 {
            let event = [b"data: ".as_slice(), &marker(seq), b"\n\n"].concat();
            body.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
            body.extend_from_slice(&event);
            body.extend_from_slice(b"\r\n");
        }
        let mut dechunker = Dechunker::default();
        let (mut buffer, mut decoded, mut seen) = (Vec::new(), 0, Vec::new());
        for piece in body.chunks(7) {
            buffer.extend_from_slice(piece);
            let done = sse(&mut buffer, &mut decoded, Some(&mut dechunker), &mut |m| {
                seen.push(m.seq)
            })
            .unwrap();
            buffer.drain(..done);
        }
        assert_eq!(seen, [0, 1, 2]);
        buffer.extend_from_slice(b"0\r\n\r\n");
        let end = sse(&mut buffer, &mut decoded, Some(&mut dechunker), &mut |_| {});
        assert_eq!(end.unwrap_err(), "the server ended the stream");
    }

    #[test]
    fn reads_centrifuge_frames_and_answers_pings() {
        let mut buffer = Vec::new();
        let push = [
            b"{\"push\":{\"pub\":{\"data\":\"".as_slice(),
            &marker(7),
            b"\"}}}",
        ]
        .concat();
        let batch = [push.as_slice(), b"\n{}\n", &push].concat();
        buffer.extend_from_slice(&[0x81, batch.len() as u8]);
        buffer.extend_from_slice(&batch);
        buffer.extend_from_slice(&[0x89, 1, b'p', 0x81, 5]); // a ping, a partial frame
        let (mut frames, mut masks, mut replies, mut seen) = (
            FrameReader::default(),
            Masks::new(0),
            Vec::new(),
            Vec::new(),
        );
        let done = websocket(
            &buffer,
            &mut frames,
            &mut masks,
            true,
            &mut replies,
            &mut |m| seen.push(m.seq),
        )
        .unwrap();
        assert_eq!(seen, [7, 7]);
        assert_eq!(done, buffer.len() - 2);
        // A masked "{}" (2 + 4 + 2 bytes) and a masked pong "p" (2 + 4 + 1).
        assert_eq!(replies.len(), 8 + 7);
        assert_eq!((replies[0], replies[8]), (0x81, 0x8a));

        let close = [0x88, 2, 0x03, 0xe8];
        let why = websocket(
            &close,
            &mut frames,
            &mut masks,
            false,
            &mut replies,
            &mut |_| {},
        );
        assert_eq!(why.unwrap_err(), "closed by the server with code 1000 ()");
    }
}

//! The benchmark payload and the scan that finds it again.
//!
//! A payload is ASCII, safe inside a JSON string (no quotes, no backslashes) and
//! exactly `--size` bytes: the marker `hb<seq>.<channel>.<send-ns>.` followed by
//! `x` padding. `seq` is the publication's number within its channel, `channel`
//! the channel's index, `send-ns` the *intended* send time (CLOCK_MONOTONIC).
//! Receivers never parse the server's framing: they scan every byte they get for
//! the marker, so Herald's JSON pushes, SSE `data:` lines and raw WebSocket frames
//! all work the same.

use std::io::Write as _;
use std::sync::LazyLock;

use memchr::memmem::Finder;

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Number of the publication within its channel, from 0.
    pub seq: u64,
    /// Index of the channel published to.
    pub channel: u64,
    /// Intended send time, nanoseconds of CLOCK_MONOTONIC.
    pub sent_ns: u64,
}

/// The bytes a marker starts with.
const PREFIX: &[u8] = b"hb";
/// Most digits of one number (u64::MAX has 20).
const MAX_DIGITS: usize = 20;
/// Padding after the marker.
const PAD: u8 = b'x';

static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PREFIX));

/// Appends the payload for `marker`, exactly `size` bytes; an error if the marker
/// alone is longer.
pub fn write(out: &mut Vec<u8>, marker: Marker, size: usize) -> Result<(), String> {
    let start = out.len();
    let _ = write!(
        out,
        "hb{}.{}.{}.",
        marker.seq, marker.channel, marker.sent_ns
    );
    let len = out.len() - start;
    if len > size {
        out.truncate(start);
        return Err(format!(
            "a {size}-byte payload cannot hold its {len}-byte marker; use a larger --size"
        ));
    }
    out.resize(start + size, PAD);
    Ok(())
}

/// Calls `found` for every complete marker in `data`, in order, and returns how many
/// bytes from the start are done with: all of them, unless `data` ends inside what
/// may be the start of a marker, which the caller keeps for the next read.
pub fn scan(data: &[u8], mut found: impl FnMut(Marker)) -> usize {
    let mut from = 0;
    while let Some(at) = FINDER.find(&data[from..]) {
        let start = from + at;
        match parse(&data[start + PREFIX.len()..]) {
            Parsed::Marker(marker, len) => {
                found(marker);
                from = start + PREFIX.len() + len;
            }
            Parsed::Incomplete => return start,
            Parsed::Not => from = start + 1,
        }
    }
    // A lone `h` at the very end may be the first byte of the next marker.
    if data.len() > from && data.last() == Some(&PREFIX[0]) {
        return data.len() - 1;
    }
    data.len()
}

enum Parsed {
    /// A marker, and the bytes it took after the prefix.
    Marker(Marker, usize),
    /// Could still become a marker with more bytes.
    Incomplete,
    Not,
}

/// Parses `<seq>.<channel>.<send-ns>.` at the start of `data`.
fn parse(data: &[u8]) -> Parsed {
    let mut numbers = [0u64; 3];
    let mut at = 0;
    for number in &mut numbers {
        let mut digits = 0;
        loop {
            let Some(&byte) = data.get(at) else {
                return Parsed::Incomplete;
            };
            at += 1;
            match byte {
                b'0'..=b'9' if digits < MAX_DIGITS => {
                    let Some(value) = number
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(byte - b'0')))
                    else {
                        return Parsed::Not;
                    };
                    *number = value;
                    digits += 1;
                }
                b'.' if digits > 0 => break,
                _ => return Parsed::Not,
            }
        }
    }
    let [seq, channel, sent_ns] = numbers;
    Parsed::Marker(
        Marker {
            seq,
            channel,
            sent_ns,
        },
        at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Marker = Marker {
        seq: 42,
        channel: 3,
        sent_ns: 1_234_567_890_123,
    };

    fn found(data: &[u8]) -> (Vec<Marker>, usize) {
        let mut markers = Vec::new();
        let done = scan(data, |m| markers.push(m));
        (markers, done)
    }

    #[test]
    fn writes_exact_json_safe_payloads() {
        let mut out = b"[".to_vec();
        write(&mut out, M, 64).unwrap();
        assert_eq!(out.len(), 65);
        assert!(out[1..].starts_with(b"hb42.3.1234567890123.xxx"));
        assert!(
            out[1..]
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\')
        );
        let mut short = Vec::new();
        assert!(write(&mut short, M, 10).is_err());
        assert!(short.is_empty());
        write(&mut short, M, 21).unwrap();
        assert_eq!(short, b"hb42.3.1234567890123.");
    }

    #[test]
    fn finds_markers_in_any_framing() {
        let mut payload = Vec::new();
        write(&mut payload, M, 40).unwrap();
        let payload = String::from_utf8(payload).unwrap();
        let sse = format!(
            "event: publication\ndata: {{\"channel\":\"hbx\",\"data\":\"{payload}\"}}\nid: hb1.2\n\n"
        );
        let (markers, done) = found(sse.as_bytes());
        assert_eq!(markers, [M]);
        assert_eq!(done, sse.len());

        let two = format!("{payload}\n{payload}");
        assert_eq!(found(two.as_bytes()).0, [M, M]);
        // Not markers: missing numbers, letters, a number over 20 digits or u64.
        for text in [
            "hb..1.",
            "hb1.2.x.",
            "hb1.2.3x",
            "hbb1.2.3.",
            "hb123456789012345678901.1.1.",
            "hb18446744073709551616.1.1.",
        ] {
            let (markers, done) = found(text.as_bytes());
            assert!(markers.is_empty(), "{text}");
            assert_eq!(done, text.len(), "{text}");
        }
    }

    #[test]
    fn keeps_a_marker_cut_by_a_read() {
        let data = b"data: hb42.3.1234567890123.xx";
        for cut in 0..=data.len() {
            let (markers, done) = found(&data[..cut]);
            // The marker is bytes 6..27: before it is complete, everything before
            // its start is done with and its start is kept.
            let expected: &[Marker] = if cut >= 27 { &[M] } else { &[] };
            assert_eq!(markers, expected, "cut at {cut}");
            let kept = if (7..27).contains(&cut) { 6 } else { cut };
            assert_eq!(done, kept, "cut at {cut}");
        }
    }
}

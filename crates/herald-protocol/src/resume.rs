//! Resume tokens: the SSE `id:` of a stream, recording the position of every channel
//! the stream carries, so the browser's own `Last-Event-ID` resumes all of them.
//!
//! Text form: `<tag>.<epoch>:<offset>,<epoch>:<offset>…`, one position per channel in
//! the stream's canonical (sorted, deduplicated) channel order. `<tag>` is a 32-bit
//! FNV-1a hash of that channel list in hex, so a token presented for another set of
//! channels is refused instead of being applied to the wrong ones.

use crate::StreamPosition;

/// The positions of all channels of one SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    /// Positions in the stream's canonical channel order.
    pub positions: Vec<StreamPosition>,
}

/// Why a `Last-Event-ID` could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeTokenError {
    /// Not of the form described in the module documentation.
    #[error("last event id is malformed")]
    Malformed,
    /// Well formed, but made for a different set of channels.
    #[error("last event id belongs to a different set of channels")]
    OtherChannels,
}

/// Longest epoch accepted in a token; epochs Herald makes are much shorter.
const MAX_EPOCH_LEN: usize = 64;

/// Lowercase hex digits, for the channel-set tag.
const HEX: &[u8; 16] = b"0123456789abcdef";

impl ResumeToken {
    /// Writes the token for `channels` (canonical order) into `out`.
    pub fn encode(channels: &[impl AsRef<str>], positions: &[StreamPosition], out: &mut Vec<u8>) {
        debug_assert_eq!(channels.len(), positions.len());
        // Runs once per event per stream: no `fmt` machinery, no allocation.
        let tag = channel_set_tag(channels);
        out.extend(
            (0..8)
                .rev()
                .map(|nibble| HEX[(tag >> (nibble * 4)) as usize & 0xF]),
        );
        let mut offset = itoa::Buffer::new();
        for (i, position) in positions.iter().enumerate() {
            out.push(if i == 0 { b'.' } else { b',' });
            out.extend_from_slice(position.epoch.as_bytes());
            out.push(b':');
            out.extend_from_slice(offset.format(position.offset).as_bytes());
        }
    }

    /// Parses a token presented for `channels` (canonical order).
    pub fn decode(token: &str, channels: &[impl AsRef<str>]) -> Result<Self, ResumeTokenError> {
        let (tag, rest) = token.split_once('.').ok_or(ResumeTokenError::Malformed)?;
        let tag = u32::from_str_radix(tag, 16).map_err(|_| ResumeTokenError::Malformed)?;
        let positions = rest
            .split(',')
            .map(|entry| {
                let (epoch, offset) = entry.split_once(':').ok_or(ResumeTokenError::Malformed)?;
                let valid_epoch = !epoch.is_empty()
                    && epoch.len() <= MAX_EPOCH_LEN
                    && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
                if !valid_epoch || !offset.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ResumeTokenError::Malformed);
                }
                let offset = offset.parse().map_err(|_| ResumeTokenError::Malformed)?;
                Ok(StreamPosition {
                    offset,
                    epoch: epoch.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if tag != channel_set_tag(channels) || positions.len() != channels.len() {
            return Err(ResumeTokenError::OtherChannels);
        }
        Ok(ResumeToken { positions })
    }
}

/// FNV-1a over the channel names, each followed by a 0 byte.
fn channel_set_tag(channels: &[impl AsRef<str>]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for channel in channels {
        for byte in channel.as_ref().bytes().chain([0]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn round_trips_every_channel_position() {
        let channels = ["a", "news:sport"];
        let positions = vec![pos("Xk3p", 17), pos("q9", 0)];
        let mut out = Vec::new();
        ResumeToken::encode(&channels, &positions, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(
            ResumeToken::decode(&text, &channels).unwrap().positions,
            positions
        );
    }

    #[test]
    fn writes_the_tag_as_eight_hex_digits_then_each_position() {
        let channels = ["a", "news:sport"];
        let positions = [pos("Xk3p", 17), pos("q9", u64::MAX)];
        let mut out = Vec::new();
        ResumeToken::encode(&channels, &positions, &mut out);
        let tag = channel_set_tag(&channels);
        let expected = format!("{tag:08x}.Xk3p:17,q9:{}", u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // A tag with leading zero digits keeps them.
        let small = (0..1000)
            .map(|i| format!("c{i}"))
            .find(|c| channel_set_tag(&[c]) < 0x1000_0000)
            .expect("one in 16 tags starts with a zero digit");
        let mut out = Vec::new();
        ResumeToken::encode(&[&small], &[pos("e", 0)], &mut out);
        let expected = format!("{:08x}.e:0", channel_set_tag(&[&small]));
        assert!(expected.starts_with('0'), "{expected}");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn refuses_tokens_for_other_channels_and_garbage() {
        let mut out = Vec::new();
        ResumeToken::encode(&["a"], &[pos("e", 1)], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            ResumeToken::decode(&text, &["b"]),
            Err(ResumeTokenError::OtherChannels)
        );
        assert_eq!(
            ResumeToken::decode(&text, &["a", "b"]),
            Err(ResumeTokenError::OtherChannels)
        );
        for bad in [
            "",
            "zz",
            "1234.e",
            "0.e:1x",
            "0.:1",
            "0.e:-1",
            "0.e:99999999999999999999999",
        ] {
            assert_eq!(
                ResumeToken::decode(bad, &["a"]),
                Err(ResumeTokenError::Malformed),
                "{bad}"
            );
        }
    }
}

//! Server-Sent Events framing (WHATWG HTML, "Server-sent events").
//!
//! An event is split in two so the expensive part is encoded once per publication and
//! shared by every stream: the **body** (`event:` and `data:` lines, see
//! [`publication_body`]) and the per-stream **id line** closing the event
//! ([`write_resume_id`]) carrying that stream's [`ResumeToken`](crate::ResumeToken).
//!
//! Event types a stream carries, each with a JSON `data:` line:
//! - `connected` — first event: `{"channels":[{"channel","offset","epoch"}…]}`;
//! - `publication` — `{"channel","offset","epoch","data"|"b64data"}`;
//! - `recovery_failed` — `{"channel","reason","epoch","offset"}`: the stream could not
//!   resume this channel without a gap; live data follows from the position given;
//! - `disconnect` — `{"code","reason","reconnect"}`: the server is closing the stream.

use bytes::Bytes;

use crate::payload::write_json_string;
use crate::{Publication, StreamPosition};

/// The comment line sent as a heartbeat; browsers ignore it, proxies see traffic.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// The body (`event:` + `data:` lines) of a `publication` event.
pub fn publication_body(channel: &str, epoch: &str, publication: &Publication) -> Bytes {
    event_body("publication", &publication.to_json(channel, epoch))
}

/// The body of an event of type `event` with a single-line JSON `data`.
pub fn event_body(event: &str, json: &[u8]) -> Bytes {
    debug_assert!(!json.contains(&b'\n') && !json.contains(&b'\r'));
    let mut out = Vec::with_capacity(event.len() + json.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.push(b'\n');
    Bytes::from(out)
}

/// Appends the `id:` line with the resume token of `channels` at `positions`, and
/// the blank line that dispatches the event. Written in place: this runs once per
/// event per stream.
pub fn write_resume_id(
    channels: &[impl AsRef<str>],
    positions: &[StreamPosition],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"id: ");
    crate::ResumeToken::encode(channels, positions, out);
    out.extend_from_slice(b"\n\n");
}

/// The most bytes [`write_resume_id`] writes for `positions` (whatever their
/// offsets), to size a buffer once.
pub fn resume_id_max_len(positions: &[StreamPosition]) -> usize {
    // "id: ", the 8-digit tag, then ".epoch:offset" or ",epoch:offset" per
    // position (an offset has at most 20 digits), then "\n\n".
    let entries: usize = positions.iter().map(|p| 2 + p.epoch.len() + 20).sum();
    4 + 8 + entries + 2
}

/// The `retry:` field telling the browser how long to wait before reconnecting.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// The body of the `connected` event listing every channel's starting position.
pub fn connected_body(channels: &[(&str, &StreamPosition)]) -> Bytes {
    let mut json = b"{\"channels\":[".to_vec();
    for (i, (channel, position)) in channels.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        write_position_object(&mut json, channel, position);
        json.push(b'}');
    }
    json.extend_from_slice(b"]}");
    event_body("connected", &json)
}

/// Why a channel could not be resumed without a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryFailure {
    /// The channel's epoch changed: its history was lost (e.g. a restart).
    EpochChanged,
    /// History no longer holds every publication since the position (trimmed or expired).
    HistoryTrimmed,
    /// The position is ahead of the channel's latest offset in the same epoch.
    UnknownPosition,
    /// The `Last-Event-ID` was not a valid token.
    MalformedLastEventId,
    /// The `Last-Event-ID` was made for a different set of channels.
    OtherChannels,
}

impl RecoveryFailure {
    /// The `reason` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryFailure::EpochChanged => "epoch_changed",
            RecoveryFailure::HistoryTrimmed => "history_trimmed",
            RecoveryFailure::UnknownPosition => "unknown_position",
            RecoveryFailure::MalformedLastEventId => "malformed_last_event_id",
            RecoveryFailure::OtherChannels => "other_channels",
        }
    }
}

/// The body of a `recovery_failed` event; live data resumes from `position`.
pub fn recovery_failed_body(
    channel: &str,
    reason: RecoveryFailure,
    position: &StreamPosition,
) -> Bytes {
    let mut json = Vec::new();
    write_position_object(&mut json, channel, position);
    json.extend_from_slice(b",\"reason\":\"");
    json.extend_from_slice(reason.as_str().as_bytes());
    json.extend_from_slice(b"\"}");
    event_body("recovery_failed", &json)
}

/// The body of a `disconnect` event.
pub fn disconnect_body(code: u32, reason: &str, reconnect: bool) -> Bytes {
    let mut json = format!("{{\"code\":{code},\"reason\":").into_bytes();
    write_json_string(&mut json, reason);
    json.extend_from_slice(format!(",\"reconnect\":{reconnect}}}").as_bytes());
    event_body("disconnect", &json)
}

/// Writes `{"channel":…,"offset":…,"epoch":…` (object left open).
fn write_position_object(json: &mut Vec<u8>, channel: &str, position: &StreamPosition) {
    json.extend_from_slice(b"{\"channel\":");
    write_json_string(json, channel);
    json.extend_from_slice(format!(",\"offset\":{},\"epoch\":", position.offset).as_bytes());
    write_json_string(json, &position.epoch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn data_json(body: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(body).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn publication_event_is_body_then_id() {
        let publication = Publication {
            offset: 3,
            data: Payload::json(b"{\"x\":\n1}").unwrap(),
            info: None,
        };
        let mut event = publication_body("c", "E", &publication).to_vec();
        let position = StreamPosition {
            offset: 3,
            epoch: "E".into(),
        };
        write_resume_id(&["c"], &[position], &mut event);
        let event = String::from_utf8(event).unwrap();
        assert!(
            event.starts_with("event: publication\ndata: {\"channel\":\"c\",\"offset\":3,\"epoch\":\"E\",\"data\":{\"x\": 1}}\nid: "),
            "{event}"
        );
        let id = event.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
        let token = crate::ResumeToken::decode(id, &["c"]).unwrap();
        assert_eq!(token.positions[0].offset, 3);
        assert!(event.ends_with("\n\n"));
    }

    #[test]
    fn resume_ids_fit_their_announced_length() {
        let positions = [
            StreamPosition {
                offset: u64::MAX,
                epoch: "Xk3p".into(),
            },
            StreamPosition {
                offset: 0,
                epoch: "q".into(),
            },
        ];
        let mut id = Vec::new();
        write_resume_id(&["a", "b"], &positions, &mut id);
        assert!(id.len() <= resume_id_max_len(&positions), "{id:?}");
        // Tight for the longest offsets: only the second one's 19 digits spare.
        assert_eq!(resume_id_max_len(&positions) - id.len(), 19);
    }

    #[test]
    fn control_events_are_valid_json() {
        let position = StreamPosition {
            offset: 9,
            epoch: "E".into(),
        };
        let connected = data_json(&connected_body(&[("a", &position), ("b", &position)]));
        assert_eq!(connected["channels"][1]["channel"], "b");
        assert_eq!(connected["channels"][0]["offset"], 9);
        let failed = data_json(&recovery_failed_body(
            "a",
            RecoveryFailure::HistoryTrimmed,
            &position,
        ));
        assert_eq!(failed["reason"], "history_trimmed");
        assert_eq!(failed["epoch"], "E");
        let bye = data_json(&disconnect_body(3001, "shutdown", true));
        assert_eq!(bye["reconnect"], true);
        assert_eq!(bye["code"], 3001);
    }
}

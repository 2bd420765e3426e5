//! Encodings of channel events for client protocol subscribers, made once per
//! event by the hub and shared.

use bytes::Bytes;
use herald_protocol::Publication;
use herald_protocol::centrifuge::{self as wire, Codec, Push, PushBody};

use herald_protocol::ClientInfo;

/// The `pub` push of `publication`, or `None` for a binary payload, which the JSON
/// encoding cannot carry (such subscribers do not get it).
pub fn publication_push(channel: &str, publication: &Publication) -> Option<Bytes> {
    let info = publication.info.as_deref().map(wire::ClientInfo::from);
    Codec::Json
        .encode_publication_push(channel, publication, info.as_ref())
        .ok()
}

/// The `join` push announcing `info` in `channel`.
pub fn join_push(channel: &str, info: &ClientInfo) -> Option<Bytes> {
    let body = PushBody::Join(wire::Join {
        info: wire::ClientInfo::from(info),
    });
    Some(encode_push(channel, body))
}

/// The `leave` push announcing that `info` left `channel`.
pub fn leave_push(channel: &str, info: &ClientInfo) -> Option<Bytes> {
    let body = PushBody::Leave(wire::Leave {
        info: wire::ClientInfo::from(info),
    });
    Some(encode_push(channel, body))
}

fn encode_push(channel: &str, body: PushBody) -> Bytes {
    let mut frame = Vec::new();
    Codec::Json.append_push(&mut frame, &Push::new(channel, body));
    Bytes::from(frame)
}

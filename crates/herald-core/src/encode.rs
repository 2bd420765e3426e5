//! Encodings of channel events for client protocol subscribers, made once per
//! event by the hub and shared.

use bytes::Bytes;
use herald_protocol::Publication;
use herald_protocol::centrifuge::{self as wire, Codec, Push, PushBody};

use crate::presence::ClientInfo;

/// The `pub` push of `publication`, or `None` for a binary payload, which the JSON
/// encoding cannot carry (such subscribers do not get it).
pub fn publication_push(channel: &str, publication: &Publication) -> Option<Bytes> {
    Codec::Json
        .encode_publication_push(channel, publication, None)
        .ok()
}

/// The `join` push announcing `info` in `channel`.
pub fn join_push(channel: &str, info: &ClientInfo) -> Option<Bytes> {
    let body = PushBody::Join(wire::Join {
        info: wire_client_info(info),
    });
    Some(encode_push(channel, body))
}

/// The `leave` push announcing that `info` left `channel`.
pub fn leave_push(channel: &str, info: &ClientInfo) -> Option<Bytes> {
    let body = PushBody::Leave(wire::Leave {
        info: wire_client_info(info),
    });
    Some(encode_push(channel, body))
}

fn encode_push(channel: &str, body: PushBody) -> Bytes {
    let mut frame = Vec::new();
    Codec::Json.append_push(&mut frame, &Push::new(channel, body));
    Bytes::from(frame)
}

/// The wire form of a client's identity; info bytes are JSON validated on entry.
pub fn wire_client_info(info: &ClientInfo) -> wire::ClientInfo {
    let raw = |bytes: &Option<Bytes>| {
        bytes.as_ref().and_then(|b| {
            String::from_utf8(b.to_vec())
                .ok()
                .and_then(|text| serde_json::value::RawValue::from_string(text).ok())
        })
    };
    wire::ClientInfo {
        user: info.user.to_string(),
        client: info.client.to_string(),
        conn_info: raw(&info.conn_info),
        chan_info: raw(&info.chan_info),
    }
}

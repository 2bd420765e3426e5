//! Asynchronous server-to-client messages (`{"push": {...}}`) and the shapes they
//! share with replies: [`Publication`], [`ClientInfo`].

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::reply::ConnectResult;
use super::{Object, is_default, nullable};
use crate::Payload;

/// Who a client is, as publications, joins, leaves and presence report it.
///
/// `user` and `client` are always written, even when empty (SDKs read them
/// unconditionally); the info objects are raw JSON and omitted when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    /// The user id; empty for anonymous clients.
    #[serde(deserialize_with = "nullable")]
    pub user: String,
    /// The connection's unique id.
    #[serde(deserialize_with = "nullable")]
    pub client: String,
    /// Connection info (from the connection token or connect proxy), raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<Box<RawValue>>,
    /// Channel info (from the subscription token or subscribe proxy), raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<Box<RawValue>>,
}

/// One publication of a channel, in a `pub` push, a subscribe result (recovered
/// publications) or a history result.
///
/// Its epoch is not repeated here: the subscribe or history result gives it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Publication {
    /// The published data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The publisher, when a client published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Position in the channel's stream (0, omitted, for channels without history).
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub offset: u64,
    /// Optional string tags.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub tags: BTreeMap<String, String>,
}

impl From<&crate::ClientInfo> for ClientInfo {
    /// The wire form of a client's identity; info bytes are JSON validated on entry
    /// (anything else is left out).
    fn from(info: &crate::ClientInfo) -> Self {
        let raw = |bytes: &Option<bytes::Bytes>| {
            bytes.as_ref().and_then(|b| {
                String::from_utf8(b.to_vec())
                    .ok()
                    .and_then(|text| RawValue::from_string(text).ok())
            })
        };
        ClientInfo {
            user: info.user.to_string(),
            client: info.client.to_string(),
            conn_info: raw(&info.conn_info),
            chan_info: raw(&info.chan_info),
        }
    }
}

impl TryFrom<&crate::Publication> for Publication {
    type Error = super::EncodeError;

    /// Converts a stored publication; binary payloads cannot travel as JSON.
    fn try_from(publication: &crate::Publication) -> Result<Self, Self::Error> {
        let Payload::Json(json) = &publication.data else {
            return Err(super::EncodeError::BinaryOverJson);
        };
        let text = String::from_utf8(json.to_vec()).map_err(|_| super::EncodeError::InvalidJson)?;
        let data = RawValue::from_string(text).map_err(|_| super::EncodeError::InvalidJson)?;
        Ok(Publication {
            data: Some(data),
            info: publication.info.as_deref().map(ClientInfo::from),
            offset: publication.offset,
            tags: BTreeMap::new(),
        })
    }
}

/// A client joined a channel (sent to subscribers that asked for join/leave).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Join {
    /// Who joined.
    pub info: ClientInfo,
}

/// A client left a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Leave {
    /// Who left.
    pub info: ClientInfo,
}

/// The server ended the client's subscription to the push's channel.
///
/// Build it from an [`UnsubscribeCode`](super::UnsubscribeCode). `reason` is always
/// written (SDKs read it unconditionally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unsubscribe {
    /// The unsubscribe code; ≥ 2500 makes the SDK resubscribe.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub code: u32,
    /// Human-readable reason.
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
}

/// The server subscribed the client to the push's channel (server-side
/// subscriptions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Subscribe {
    /// The channel keeps history the client can recover from.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub recoverable: bool,
    /// The channel's epoch.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub epoch: String,
    /// The channel's latest offset.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub offset: u64,
    /// The server tracks the client's position in the stream.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub positioned: bool,
    /// Application data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// An asynchronous message to this client (the answer to nothing), raw JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Message {
    /// The message, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// The server is closing the connection; used on transports without close codes
/// (SSE, HTTP streaming). On WebSocket the close frame carries code and reason.
///
/// Build it from a [`DisconnectCode`](super::DisconnectCode). `reason` is always
/// written (SDKs read it unconditionally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disconnect {
    /// The disconnect code.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub code: u32,
    /// Human-readable reason.
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
    /// Whether the client should reconnect. SDKs decide from `code` (see
    /// [`reconnects`](super::reconnects)); keep the two consistent.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub reconnect: bool,
}

impl Disconnect {
    /// `reason` cut to the 123 bytes a WebSocket close frame can carry (on a
    /// character boundary).
    pub fn close_reason(&self) -> &str {
        let mut end = self.reason.len().min(123);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        &self.reason[..end]
    }
}

/// The connection's credentials were refreshed by the server (unidirectional
/// transports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Refresh {
    /// The connection expires and needs another refresh.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ttl: u32,
}

/// A push: `{"push":{"channel":…,"<kind>":{…}}}` on the wire.
///
/// For publications to many subscribers use
/// [`Codec::encode_publication_push`](super::Codec::encode_publication_push), which
/// encodes once and shares the bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WirePush")]
pub struct Push {
    /// The channel the push is about; empty (and omitted) for connection-level
    /// pushes (`message`, `disconnect`, `connect`, `refresh`).
    pub channel: String,
    /// What happened.
    pub body: PushBody,
}

/// The kinds of [`Push`], each the field name it has on the wire.
#[derive(Debug, Clone)]
pub enum PushBody {
    /// `pub`: a publication in the channel.
    Publication(Publication),
    /// `join`: a client joined the channel.
    Join(Join),
    /// `leave`: a client left the channel.
    Leave(Leave),
    /// `unsubscribe`: the server unsubscribed the client from the channel.
    Unsubscribe(Unsubscribe),
    /// `message`: an asynchronous message to this client.
    Message(Message),
    /// `subscribe`: the server subscribed the client to the channel.
    Subscribe(Subscribe),
    /// `connect`: connection established (unidirectional transports send this
    /// instead of a connect reply).
    Connect(ConnectResult),
    /// `disconnect`: the server is closing the connection.
    Disconnect(Disconnect),
    /// `refresh`: the connection's credentials were refreshed.
    Refresh(Refresh),
}

impl Push {
    /// A push about `channel`.
    pub fn new(channel: impl Into<String>, body: PushBody) -> Self {
        Push {
            channel: channel.into(),
            body,
        }
    }
}

impl Serialize for Push {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if !self.channel.is_empty() {
            map.serialize_entry("channel", &self.channel)?;
        }
        match &self.body {
            PushBody::Publication(p) => map.serialize_entry("pub", p)?,
            PushBody::Join(j) => map.serialize_entry("join", j)?,
            PushBody::Leave(l) => map.serialize_entry("leave", l)?,
            PushBody::Unsubscribe(u) => map.serialize_entry("unsubscribe", u)?,
            PushBody::Message(m) => map.serialize_entry("message", m)?,
            PushBody::Subscribe(s) => map.serialize_entry("subscribe", s)?,
            PushBody::Connect(c) => map.serialize_entry("connect", c)?,
            PushBody::Disconnect(d) => map.serialize_entry("disconnect", d)?,
            PushBody::Refresh(r) => map.serialize_entry("refresh", r)?,
        }
        map.end()
    }
}

/// `Push` as it is on the wire: one optional field per kind.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WirePush {
    #[serde(deserialize_with = "nullable")]
    channel: String,
    #[serde(rename = "pub")]
    publication: Option<Object<Publication>>,
    join: Option<Object<Join>>,
    leave: Option<Object<Leave>>,
    unsubscribe: Option<Object<Unsubscribe>>,
    message: Option<Object<Message>>,
    subscribe: Option<Object<Subscribe>>,
    connect: Option<Object<ConnectResult>>,
    disconnect: Option<Object<Disconnect>>,
    refresh: Option<Object<Refresh>>,
}

impl TryFrom<WirePush> for Push {
    type Error = String;

    fn try_from(wire: WirePush) -> Result<Self, String> {
        let mut bodies = Vec::with_capacity(1);
        let mut names = Vec::new();
        let mut take = |name: &'static str, body: Option<PushBody>| {
            if let Some(body) = body {
                names.push(name);
                bodies.push(body);
            }
        };
        take("pub", wire.publication.map(|o| PushBody::Publication(o.0)));
        take("join", wire.join.map(|o| PushBody::Join(o.0)));
        take("leave", wire.leave.map(|o| PushBody::Leave(o.0)));
        take(
            "unsubscribe",
            wire.unsubscribe.map(|o| PushBody::Unsubscribe(o.0)),
        );
        take("message", wire.message.map(|o| PushBody::Message(o.0)));
        take(
            "subscribe",
            wire.subscribe.map(|o| PushBody::Subscribe(o.0)),
        );
        take("connect", wire.connect.map(|o| PushBody::Connect(o.0)));
        take(
            "disconnect",
            wire.disconnect.map(|o| PushBody::Disconnect(o.0)),
        );
        take("refresh", wire.refresh.map(|o| PushBody::Refresh(o.0)));
        match (bodies.pop(), bodies.is_empty()) {
            (Some(body), true) => Ok(Push {
                channel: wire.channel,
                body,
            }),
            (None, _) => Err("push of no known kind".to_owned()),
            (Some(_), false) => Err(format!("push of several kinds: {}", names.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_fits_a_close_frame() {
        let long = Disconnect {
            code: 4000,
            reason: "é".repeat(100),
            reconnect: true,
        };
        assert_eq!(long.close_reason().len(), 122);
        let short = Disconnect::from(super::super::DisconnectCode::Slow);
        assert_eq!(short.close_reason(), "slow");
    }

    #[test]
    fn binary_publication_does_not_convert() {
        let binary = crate::Publication {
            offset: 1,
            data: Payload::Binary(bytes::Bytes::from_static(b"\0")),
            info: None,
        };
        assert_eq!(
            Publication::try_from(&binary).unwrap_err(),
            super::super::EncodeError::BinaryOverJson
        );
        let json = crate::Publication {
            offset: 2,
            data: Payload::json(b"[1, 2]").unwrap(),
            info: None,
        };
        let converted = Publication::try_from(&json).unwrap();
        assert_eq!(converted.data.unwrap().get(), "[1, 2]");
        assert_eq!(converted.offset, 2);
    }
}

//! Request and reply shapes of the server HTTP API (`POST /api/<method>`), following
//! Centrifugo's server API so its SDKs (e.g. PyPI `cent`) work unchanged.
//!
//! Every reply is `{"result": …}` or `{"error": {"code": …, "message": …}}`. Unknown
//! request fields are ignored, as Centrifugo does.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorReply, Payload, PayloadError, Publication, StreamPosition};

/// `publish`: one publication into one channel.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// Target channel.
    pub channel: String,
    /// JSON data.
    pub data: Option<Box<RawValue>>,
    /// Binary data, base64-encoded; used when `data` is absent.
    pub b64data: Option<String>,
}

/// `broadcast`: the same publication into several channels.
#[derive(Debug, Deserialize)]
pub struct BroadcastRequest {
    /// Target channels.
    pub channels: Vec<String>,
    /// JSON data.
    pub data: Option<Box<RawValue>>,
    /// Binary data, base64-encoded; used when `data` is absent.
    pub b64data: Option<String>,
}

/// Builds the payload of a publish or broadcast from its `data` / `b64data` fields.
pub fn payload_of(data: Option<&RawValue>, b64data: Option<&str>) -> Result<Payload, PayloadError> {
    match (data, b64data) {
        (Some(raw), _) => Payload::json(raw.get().as_bytes()),
        (None, Some(encoded)) => Payload::from_base64(encoded),
        (None, None) => Err(PayloadError::InvalidJson("data is required".into())),
    }
}

/// Reply to `publish`: where the publication landed.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishResult {
    /// Offset given to the publication.
    pub offset: u64,
    /// Epoch of the channel's history.
    pub epoch: String,
}

/// One entry of a broadcast reply, per channel in request order.
#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    /// Set when this channel's publish succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PublishResult>,
    /// Set when this channel's publish failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

/// Reply to `broadcast`.
#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    /// One response per requested channel.
    pub responses: Vec<BroadcastResponse>,
}

/// `history`: publications of a channel.
#[derive(Debug, Deserialize)]
pub struct HistoryRequest {
    /// Channel to read.
    pub channel: String,
    /// Most publications to return; absent or 0 returns only the stream position, and
    /// a negative value returns everything retained.
    #[serde(default)]
    pub limit: i64,
    /// Return only publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

/// One publication in a history reply.
#[derive(Debug, Serialize)]
pub struct HistoryPublication {
    /// JSON data, when the publication is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Base64 data, when the publication is binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64data: Option<String>,
    /// The publication's offset.
    pub offset: u64,
}

impl From<&Publication> for HistoryPublication {
    fn from(publication: &Publication) -> Self {
        let (data, b64data) = match &publication.data {
            Payload::Json(json) => {
                let text = String::from_utf8_lossy(json).into_owned();
                (RawValue::from_string(text).ok(), None)
            }
            Payload::Binary(_) => (None, publication.data.to_base64()),
        };
        HistoryPublication {
            data,
            b64data,
            offset: publication.offset,
        }
    }
}

/// Reply to `history`.
#[derive(Debug, Serialize)]
pub struct HistoryResult {
    /// The publications, oldest first unless `reverse` was asked.
    pub publications: Vec<HistoryPublication>,
    /// The channel's latest offset.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
}

/// Requests naming one channel: `history_remove`, `presence`, `presence_stats`.
#[derive(Debug, Deserialize)]
pub struct ChannelRequest {
    /// The channel.
    pub channel: String,
}

/// `channels`: active channels, optionally filtered.
#[derive(Debug, Deserialize, Default)]
pub struct ChannelsRequest {
    /// A glob (`*` matches any run of characters) the channel names must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// Per-channel entry of the `channels` reply.
#[derive(Debug, Serialize)]
pub struct ChannelInfo {
    /// Subscribers connected to this node.
    pub num_clients: u64,
}

/// Reply to `channels`: name → info.
#[derive(Debug, Serialize)]
pub struct ChannelsResult {
    /// The active channels.
    pub channels: std::collections::BTreeMap<String, ChannelInfo>,
}

/// One node in the `info` reply.
#[derive(Debug, Serialize)]
pub struct NodeInfo {
    /// Unique id of this node's process.
    pub uid: String,
    /// Node name (host name by default).
    pub name: String,
    /// Herald's version.
    pub version: String,
    /// Connected clients.
    pub num_clients: u64,
    /// Distinct users among connected clients.
    pub num_users: u64,
    /// Channels with subscribers on this node.
    pub num_channels: u64,
    /// Subscriptions on this node.
    pub num_subs: u64,
    /// Seconds since start.
    pub uptime: u64,
}

/// Reply to `info`.
#[derive(Debug, Serialize)]
pub struct InfoResult {
    /// Every node (one until an engine shares nodes).
    pub nodes: Vec<NodeInfo>,
}

/// Reply to `presence`: client id → info (empty until presence is tracked).
#[derive(Debug, Serialize, Default)]
pub struct PresenceResult {
    /// Present clients.
    pub presence: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Reply to `presence_stats`.
#[derive(Debug, Serialize, Default)]
pub struct PresenceStatsResult {
    /// Present clients.
    pub num_clients: u64,
    /// Distinct users among them.
    pub num_users: u64,
}

/// `subscribe` and `unsubscribe`: act on a user's live client protocol
/// connections (all of them, or one client).
#[derive(Debug, Deserialize)]
pub struct UserChannelRequest {
    /// The user whose connections are acted on.
    pub user: String,
    /// The channel.
    pub channel: String,
    /// Only this client of the user, when set.
    #[serde(default)]
    pub client: Option<String>,
}

/// `disconnect`: close a user's connections.
#[derive(Debug, Deserialize)]
pub struct DisconnectRequest {
    /// The user whose connections close.
    pub user: String,
    /// Only this client of the user, when set.
    #[serde(default)]
    pub client: Option<String>,
    /// Custom disconnect code and reason; default 3503 `force disconnect` (no
    /// reconnect), as Centrifugo.
    #[serde(default)]
    pub disconnect: Option<DisconnectSpec>,
}

/// A disconnect code and reason given to the server API.
#[derive(Debug, Deserialize)]
pub struct DisconnectSpec {
    /// 3000–4999; 3000–3499 and 4000–4499 tell SDKs to reconnect.
    pub code: u16,
    /// Why, for the client (at most 123 bytes are sent in a close frame).
    #[serde(default)]
    pub reason: String,
}

/// `refresh`: change when a user's connections expire.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    /// The user whose connections are refreshed.
    pub user: String,
    /// Only this client of the user, when set.
    #[serde(default)]
    pub client: Option<String>,
    /// Expire the connections now.
    #[serde(default)]
    pub expired: bool,
    /// New expiry, seconds since the Unix epoch (absent: never expires).
    #[serde(default)]
    pub expire_at: Option<u64>,
}

/// Glob match where `*` matches any run of characters (Centrifugo's `channels` filter).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn glob_matches_like_centrifugo() {
        assert!(glob_match("news:*", "news:sport"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn history_publication_keeps_json_or_base64() {
        let json = HistoryPublication::from(&Publication {
            offset: 1,
            data: Payload::json(b"{\"a\":1}").unwrap(),
            info: None,
        });
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"data":{"a":1},"offset":1}"#
        );
        let binary = HistoryPublication::from(&Publication {
            offset: 2,
            data: Payload::Binary(Bytes::from_static(b"hi")),
            info: None,
        });
        assert_eq!(
            serde_json::to_string(&binary).unwrap(),
            r#"{"b64data":"aGk=","offset":2}"#
        );
    }

    #[test]
    fn payload_needs_data_or_b64data() {
        assert!(payload_of(None, None).is_err());
        assert_eq!(
            payload_of(None, Some("aGk=")).unwrap(),
            Payload::Binary(Bytes::from_static(b"hi"))
        );
    }
}

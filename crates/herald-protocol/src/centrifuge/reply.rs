//! Server-to-client replies: `{"id":N,"<method>":{result}}` or
//! `{"id":N,"error":{…}}`, and [`ServerMessage`], everything a server may send.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::push::{ClientInfo, Publication, Push};
use super::{Object, is_default, nullable};
use crate::ErrorCode;

/// The `error` of a reply: the command failed.
///
/// Build it from an [`ErrorCode`]: `Error::from(ErrorCode::BadRequest)`.
/// `message` is always written (some SDKs read it unconditionally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Error {
    /// One of [`ErrorCode`]'s numbers, or an application's own code. SDKs retry
    /// codes below 100 and 109 (token expired) like temporary errors.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub code: u32,
    /// Human-readable explanation.
    #[serde(deserialize_with = "nullable")]
    pub message: String,
    /// The SDK should retry (with backoff) rather than give up.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub temporary: bool,
}

impl From<ErrorCode> for Error {
    /// The code's standard message; `temporary` as Centrifuge sets it (internal
    /// errors and too-many-requests).
    fn from(code: ErrorCode) -> Self {
        Error {
            code: code.code(),
            message: code.message().to_owned(),
            temporary: super::codes::is_temporary(code),
        }
    }
}

/// Result of `connect`; also the body of a `connect` push.
///
/// SDKs need `client`. `ping` (seconds) turns on the SDK's ping watchdog: it
/// expects a server ping (or any message) at least every `ping` + 10 s, and answers
/// each ping with a pong only if `pong` is true.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    /// The connection's unique id.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub client: String,
    /// Server version.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub version: String,
    /// The connection expires and must be refreshed (`refresh` command) within `ttl`.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub expires: bool,
    /// Seconds until the connection expires. Set it (> 0) whenever `expires` is.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ttl: u32,
    /// Application data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Server-side subscriptions: channel → result.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Server ping interval in seconds (0: the server does not ping).
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ping: u32,
    /// The client must answer each server ping with a pong (`{}`).
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub pong: bool,
    /// Session id (emulation transports route commands by it).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub session: String,
    /// Name of the node that holds the connection (emulation transports).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub node: String,
}

/// Result of `subscribe`; also a server-side subscription in [`ConnectResult::subs`].
///
/// For a client to recover later, answer with `recoverable: true` plus `epoch` and
/// `offset` (the stream's top). When the request had `recover`, set
/// `was_recovering`, and `recovered` if every missed publication is in
/// `publications` (ascending offsets, after the client's position).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    /// The subscription expires and must be refreshed (`sub_refresh`) within `ttl`.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub expires: bool,
    /// Seconds until the subscription expires.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ttl: u32,
    /// The channel keeps history: the client may resubscribe with `recover`.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub recoverable: bool,
    /// The channel's epoch.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub epoch: String,
    /// Recovered publications, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    pub publications: Vec<Publication>,
    /// Recovery succeeded: `publications` holds everything the client missed.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub recovered: bool,
    /// The channel's latest offset.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub offset: u64,
    /// The server tracks the client's position in the stream.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub positioned: bool,
    /// Application data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The client asked to recover (whether or not it succeeded).
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub was_recovering: bool,
    /// Delta compression was negotiated for this subscription.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub delta: bool,
}

/// Result of `unsubscribe`: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

/// Result of `publish`: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {}

/// Result of `presence`: client id → info. `presence` is always written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceResult {
    /// Present clients.
    #[serde(deserialize_with = "nullable")]
    pub presence: BTreeMap<String, ClientInfo>,
}

/// Result of `presence_stats`. Both counts are always written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsResult {
    /// Present connections.
    #[serde(deserialize_with = "nullable")]
    pub num_clients: u32,
    /// Distinct users among them.
    #[serde(deserialize_with = "nullable")]
    pub num_users: u32,
}

/// Result of `history`. Every field is always written (`publications` as `[]` when
/// empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryResult {
    /// The publications asked for.
    #[serde(deserialize_with = "nullable")]
    pub publications: Vec<Publication>,
    /// The channel's epoch.
    #[serde(deserialize_with = "nullable")]
    pub epoch: String,
    /// The channel's latest offset.
    #[serde(deserialize_with = "nullable")]
    pub offset: u64,
}

/// Result of `ping`: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {}

/// Result of `rpc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcResult {
    /// The answer, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// Result of `refresh` (new connection credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    /// The connection's id.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub client: String,
    /// Server version.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub version: String,
    /// The connection still expires.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub expires: bool,
    /// Seconds until it expires. Set it (> 0) whenever `expires` is.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ttl: u32,
}

/// Result of `sub_refresh` (new subscription credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshResult {
    /// The subscription still expires.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub expires: bool,
    /// Seconds until it expires. Set it (> 0) whenever `expires` is.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub ttl: u32,
}

/// The successful result of a command, one variant per method.
///
/// Every reply must carry its result object, even an empty one (`"publish":{}`):
/// the JS SDK reads e.g. `reply.rpc.data` and fails on a missing object.
#[derive(Debug, Clone)]
pub enum ReplyResult {
    /// `connect`.
    Connect(ConnectResult),
    /// `subscribe`.
    Subscribe(SubscribeResult),
    /// `unsubscribe`.
    Unsubscribe(UnsubscribeResult),
    /// `publish`.
    Publish(PublishResult),
    /// `presence`.
    Presence(PresenceResult),
    /// `presence_stats`.
    PresenceStats(PresenceStatsResult),
    /// `history`.
    History(HistoryResult),
    /// `ping`.
    Ping(PingResult),
    /// `rpc`.
    Rpc(RpcResult),
    /// `refresh`.
    Refresh(RefreshResult),
    /// `sub_refresh`.
    SubRefresh(SubRefreshResult),
}

macro_rules! reply_result_from {
    ($($result:ident => $variant:ident),* $(,)?) => {
        $(impl From<$result> for ReplyResult {
            fn from(result: $result) -> Self {
                ReplyResult::$variant(result)
            }
        })*
    };
}

reply_result_from! {
    ConnectResult => Connect,
    SubscribeResult => Subscribe,
    UnsubscribeResult => Unsubscribe,
    PublishResult => Publish,
    PresenceResult => Presence,
    PresenceStatsResult => PresenceStats,
    HistoryResult => History,
    PingResult => Ping,
    RpcResult => Rpc,
    RefreshResult => Refresh,
    SubRefreshResult => SubRefresh,
}

impl ReplyResult {
    /// The field name on the wire (`"connect"`, `"presence_stats"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            ReplyResult::Connect(_) => "connect",
            ReplyResult::Subscribe(_) => "subscribe",
            ReplyResult::Unsubscribe(_) => "unsubscribe",
            ReplyResult::Publish(_) => "publish",
            ReplyResult::Presence(_) => "presence",
            ReplyResult::PresenceStats(_) => "presence_stats",
            ReplyResult::History(_) => "history",
            ReplyResult::Ping(_) => "ping",
            ReplyResult::Rpc(_) => "rpc",
            ReplyResult::Refresh(_) => "refresh",
            ReplyResult::SubRefresh(_) => "sub_refresh",
        }
    }

    fn serialize_entry<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let name = self.name();
        match self {
            ReplyResult::Connect(r) => map.serialize_entry(name, r),
            ReplyResult::Subscribe(r) => map.serialize_entry(name, r),
            ReplyResult::Unsubscribe(r) => map.serialize_entry(name, r),
            ReplyResult::Publish(r) => map.serialize_entry(name, r),
            ReplyResult::Presence(r) => map.serialize_entry(name, r),
            ReplyResult::PresenceStats(r) => map.serialize_entry(name, r),
            ReplyResult::History(r) => map.serialize_entry(name, r),
            ReplyResult::Ping(r) => map.serialize_entry(name, r),
            ReplyResult::Rpc(r) => map.serialize_entry(name, r),
            ReplyResult::Refresh(r) => map.serialize_entry(name, r),
            ReplyResult::SubRefresh(r) => map.serialize_entry(name, r),
        }
    }
}

/// The answer to the command with the same `id`.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The command's id (> 0).
    pub id: u32,
    /// What the command produced.
    pub result: Result<ReplyResult, Error>,
}

impl Reply {
    /// A successful reply to command `id`.
    pub fn ok(id: u32, result: impl Into<ReplyResult>) -> Self {
        Reply {
            id,
            result: Ok(result.into()),
        }
    }

    /// A failed reply to command `id`.
    pub fn error(id: u32, error: impl Into<Error>) -> Self {
        Reply {
            id,
            result: Err(error.into()),
        }
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.id != 0 {
            map.serialize_entry("id", &self.id)?;
        }
        match &self.result {
            Ok(result) => result.serialize_entry(&mut map)?,
            Err(error) => map.serialize_entry("error", error)?,
        }
        map.end()
    }
}

/// Anything a server sends: a reply, a push, or a ping (`{}`).
///
/// Servers write [`Reply`] and [`Push`] directly; this type is for decoding on the
/// client side (tests, load generator, Rust client).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WireReply")]
pub enum ServerMessage {
    /// The answer to a command.
    Reply(Reply),
    /// An asynchronous push.
    Push(Push),
    /// A server ping (`{}`); answer with a pong if the connect result said `pong`.
    Ping,
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerMessage::Reply(reply) => reply.serialize(serializer),
            ServerMessage::Push(push) => PushEnvelope(push).serialize(serializer),
            ServerMessage::Ping => serializer.serialize_map(Some(0))?.end(),
        }
    }
}

/// A push as a message of its own: `{"push":{…}}`.
pub(super) struct PushEnvelope<'a>(pub(super) &'a Push);

impl Serialize for PushEnvelope<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("push", self.0)?;
        map.end()
    }
}

/// A server message as it is on the wire: one optional field per kind.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireReply {
    #[serde(deserialize_with = "nullable")]
    id: u32,
    error: Option<Object<Error>>,
    push: Option<Object<Push>>,
    connect: Option<Object<ConnectResult>>,
    subscribe: Option<Object<SubscribeResult>>,
    unsubscribe: Option<Object<UnsubscribeResult>>,
    publish: Option<Object<PublishResult>>,
    presence: Option<Object<PresenceResult>>,
    presence_stats: Option<Object<PresenceStatsResult>>,
    history: Option<Object<HistoryResult>>,
    ping: Option<Object<PingResult>>,
    rpc: Option<Object<RpcResult>>,
    refresh: Option<Object<RefreshResult>>,
    sub_refresh: Option<Object<SubRefreshResult>>,
}

impl TryFrom<WireReply> for ServerMessage {
    type Error = String;

    fn try_from(wire: WireReply) -> Result<Self, String> {
        let mut results: Vec<ReplyResult> = Vec::with_capacity(1);
        let mut push_result = |result: Option<ReplyResult>| results.extend(result);
        push_result(wire.connect.map(|o| ReplyResult::Connect(o.0)));
        push_result(wire.subscribe.map(|o| ReplyResult::Subscribe(o.0)));
        push_result(wire.unsubscribe.map(|o| ReplyResult::Unsubscribe(o.0)));
        push_result(wire.publish.map(|o| ReplyResult::Publish(o.0)));
        push_result(wire.presence.map(|o| ReplyResult::Presence(o.0)));
        push_result(wire.presence_stats.map(|o| ReplyResult::PresenceStats(o.0)));
        push_result(wire.history.map(|o| ReplyResult::History(o.0)));
        push_result(wire.ping.map(|o| ReplyResult::Ping(o.0)));
        push_result(wire.rpc.map(|o| ReplyResult::Rpc(o.0)));
        push_result(wire.refresh.map(|o| ReplyResult::Refresh(o.0)));
        push_result(wire.sub_refresh.map(|o| ReplyResult::SubRefresh(o.0)));
        if results.len() > 1 {
            let names: Vec<&str> = results.iter().map(ReplyResult::name).collect();
            return Err(format!("reply with several results: {}", names.join(", ")));
        }
        let result = results.pop();
        match (
            wire.id,
            wire.push.map(|o| o.0),
            wire.error.map(|o| o.0),
            result,
        ) {
            (0, None, None, None) => Ok(ServerMessage::Ping),
            (0, Some(push), None, None) => Ok(ServerMessage::Push(push)),
            (0, ..) => Err("reply without id".to_owned()),
            (_, Some(_), ..) => Err("push with an id".to_owned()),
            (id, None, Some(error), None) => Ok(ServerMessage::Reply(Reply::error(id, error))),
            (id, None, None, Some(result)) => Ok(ServerMessage::Reply(Reply::ok(id, result))),
            (id, None, Some(_), Some(_)) => Err(format!("reply {id} has both error and result")),
            (id, None, None, None) => Err(format!("reply {id} has neither error nor result")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_from_code_marks_temporary_like_centrifuge() {
        let internal = Error::from(ErrorCode::Internal);
        assert_eq!((internal.code, internal.temporary), (100, true));
        assert_eq!(internal.message, "internal server error");
        assert!(Error::from(ErrorCode::TooManyRequests).temporary);
        assert!(!Error::from(ErrorCode::PermissionDenied).temporary);
    }

    #[test]
    fn reply_result_names_match_the_wire() {
        assert_eq!(
            ReplyResult::from(PresenceStatsResult::default()).name(),
            "presence_stats"
        );
        assert_eq!(
            ReplyResult::from(SubRefreshResult::default()).name(),
            "sub_refresh"
        );
    }
}

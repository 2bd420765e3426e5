//! Client-to-server commands: `{"id":N,"<method>":{request}}`.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Object, is_default, nullable};

/// `connect`: the first command of every connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    /// Connection token (JWT); empty for anonymous or proxy-authenticated clients.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub token: String,
    /// Application data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Server-side subscriptions to recover: channel → position (`recover`,
    /// `epoch`, `offset` are the fields used).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// SDK name (`js`, `python`, …).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub name: String,
    /// SDK or application version.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub version: String,
    /// Emulated headers (transports that cannot set real ones).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub headers: BTreeMap<String, String>,
}

/// `subscribe`: start receiving a channel, optionally recovering from a position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
    /// Subscription token (JWT), for channels that need one.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub token: String,
    /// Recover missed publications after `epoch`/`offset`.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub recover: bool,
    /// Epoch of the position to recover from; empty means "any epoch".
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub epoch: String,
    /// Offset of the last publication the client has.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub offset: u64,
    /// Application data, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The client asks for position tracking.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub positioned: bool,
    /// The client asks for recovery support.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub recoverable: bool,
    /// The client wants join/leave pushes.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub join_leave: bool,
    /// Delta compression the client supports (`"fossil"`), empty for none.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub delta: String,
    /// Feature bits. The JS SDK always sends 1 (it accepts numeric channel ids in
    /// pushes) and adds 2 (reject unrecovered) when it has a state loader. A
    /// server that never sends channel ids may ignore them.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub flag: i64,
    /// Server-side filter on publication tags, raw JSON. A server without tag
    /// filters should refuse a subscription that has one rather than ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tf: Option<Box<RawValue>>,
    /// Subscription kind: 0 is a stream (the classic kind); newer SDKs use other
    /// values (maps, shared polls) that a server without them should refuse.
    #[serde(
        rename = "type",
        skip_serializing_if = "is_default",
        deserialize_with = "nullable"
    )]
    pub kind: i32,
}

/// `unsubscribe`: stop receiving a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
}

/// `publish`: publish into a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
    /// What to publish, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Publish kind: 0 is a stream publication; newer SDKs send 1 for map
    /// channels, which a server without them should refuse.
    #[serde(
        rename = "type",
        skip_serializing_if = "is_default",
        deserialize_with = "nullable"
    )]
    pub kind: i32,
}

/// `presence`: who is subscribed to a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
}

/// `presence_stats`: how many are subscribed to a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
}

/// A position in a channel's stream, as `history` takes it in `since`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamPosition {
    /// Offset of the last publication seen.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub offset: u64,
    /// The epoch it belongs to; empty means "any epoch".
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub epoch: String,
}

impl From<StreamPosition> for crate::StreamPosition {
    fn from(position: StreamPosition) -> Self {
        crate::StreamPosition {
            offset: position.offset,
            epoch: position.epoch,
        }
    }
}

impl From<crate::StreamPosition> for StreamPosition {
    fn from(position: crate::StreamPosition) -> Self {
        StreamPosition {
            offset: position.offset,
            epoch: position.epoch,
        }
    }
}

/// `history`: publications of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
    /// Most publications to return: 0 returns only the stream position, a negative
    /// value everything retained.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub limit: i32,
    /// Only publications after this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(skip_serializing_if = "is_default", deserialize_with = "nullable")]
    pub reverse: bool,
}

/// `ping`: an explicit client ping (v2 SDKs rely on server pings instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingRequest {}

/// `send`: an asynchronous message to the server; sent without an id, never
/// answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    /// The message, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// `rpc`: a call answered by the server (or its RPC proxy).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    /// Arguments, raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Method name.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub method: String,
}

/// `refresh`: new connection credentials before the connection expires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// The new connection token.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub token: String,
}

/// `sub_refresh`: new subscription credentials before the subscription expires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    /// The channel.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub channel: String,
    /// The new subscription token.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub token: String,
}

/// What a command asks for, one variant per method.
#[derive(Debug, Clone)]
pub enum Request {
    /// `connect`.
    Connect(ConnectRequest),
    /// `subscribe`.
    Subscribe(SubscribeRequest),
    /// `unsubscribe`.
    Unsubscribe(UnsubscribeRequest),
    /// `publish`.
    Publish(PublishRequest),
    /// `presence`.
    Presence(PresenceRequest),
    /// `presence_stats`.
    PresenceStats(PresenceStatsRequest),
    /// `history`.
    History(HistoryRequest),
    /// `ping`.
    Ping(PingRequest),
    /// `send` (no reply).
    Send(SendRequest),
    /// `rpc`.
    Rpc(RpcRequest),
    /// `refresh`.
    Refresh(RefreshRequest),
    /// `sub_refresh`.
    SubRefresh(SubRefreshRequest),
}

impl Request {
    /// The method's name on the wire (`"connect"`, `"presence_stats"`, …), e.g. a
    /// metric label.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Connect(_) => "connect",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::Publish(_) => "publish",
            Request::Presence(_) => "presence",
            Request::PresenceStats(_) => "presence_stats",
            Request::History(_) => "history",
            Request::Ping(_) => "ping",
            Request::Send(_) => "send",
            Request::Rpc(_) => "rpc",
            Request::Refresh(_) => "refresh",
            Request::SubRefresh(_) => "sub_refresh",
        }
    }
}

/// One command from a client.
///
/// `request: None` with `id: 0` is the empty command `{}`: the client's pong to a
/// server ping (see [`is_pong`](Self::is_pong)). Every other command must have an
/// `id` > 0, except `send`; Centrifuge disconnects with
/// [`BadRequest`](super::DisconnectCode::BadRequest) otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WireCommand")]
pub struct Command {
    /// Matches the reply to the command; 0 for `send` and pongs.
    pub id: u32,
    /// What is asked; `None` only for a pong.
    pub request: Option<Request>,
}

impl Command {
    /// A command with `id` asking for `request`.
    pub fn new(id: u32, request: Request) -> Self {
        Command {
            id,
            request: Some(request),
        }
    }

    /// The pong a client sends to answer a server ping: `{}`.
    pub fn pong() -> Self {
        Command {
            id: 0,
            request: None,
        }
    }

    /// Whether this is the empty command `{}`, the answer to a server ping.
    pub fn is_pong(&self) -> bool {
        self.id == 0 && self.request.is_none()
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.id != 0 {
            map.serialize_entry("id", &self.id)?;
        }
        if let Some(request) = &self.request {
            let name = request.method();
            match request {
                Request::Connect(r) => map.serialize_entry(name, r)?,
                Request::Subscribe(r) => map.serialize_entry(name, r)?,
                Request::Unsubscribe(r) => map.serialize_entry(name, r)?,
                Request::Publish(r) => map.serialize_entry(name, r)?,
                Request::Presence(r) => map.serialize_entry(name, r)?,
                Request::PresenceStats(r) => map.serialize_entry(name, r)?,
                Request::History(r) => map.serialize_entry(name, r)?,
                Request::Ping(r) => map.serialize_entry(name, r)?,
                Request::Send(r) => map.serialize_entry(name, r)?,
                Request::Rpc(r) => map.serialize_entry(name, r)?,
                Request::Refresh(r) => map.serialize_entry(name, r)?,
                Request::SubRefresh(r) => map.serialize_entry(name, r)?,
            }
        }
        map.end()
    }
}

/// A command as it is on the wire: one optional field per method. Unknown fields
/// are ignored and `null` counts as absent, as in Centrifuge.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireCommand {
    #[serde(deserialize_with = "nullable")]
    id: u32,
    connect: Option<Object<ConnectRequest>>,
    subscribe: Option<Object<SubscribeRequest>>,
    unsubscribe: Option<Object<UnsubscribeRequest>>,
    publish: Option<Object<PublishRequest>>,
    presence: Option<Object<PresenceRequest>>,
    presence_stats: Option<Object<PresenceStatsRequest>>,
    history: Option<Object<HistoryRequest>>,
    ping: Option<Object<PingRequest>>,
    send: Option<Object<SendRequest>>,
    rpc: Option<Object<RpcRequest>>,
    refresh: Option<Object<RefreshRequest>>,
    sub_refresh: Option<Object<SubRefreshRequest>>,
}

impl TryFrom<WireCommand> for Command {
    type Error = String;

    /// Exactly one request, or none for a pong. Several requests in one command
    /// are refused (Centrifuge would silently take the first).
    fn try_from(wire: WireCommand) -> Result<Self, String> {
        let mut requests: Vec<Request> = Vec::with_capacity(1);
        let mut push = |request: Option<Request>| requests.extend(request);
        push(wire.connect.map(|o| Request::Connect(o.0)));
        push(wire.subscribe.map(|o| Request::Subscribe(o.0)));
        push(wire.unsubscribe.map(|o| Request::Unsubscribe(o.0)));
        push(wire.publish.map(|o| Request::Publish(o.0)));
        push(wire.presence.map(|o| Request::Presence(o.0)));
        push(wire.presence_stats.map(|o| Request::PresenceStats(o.0)));
        push(wire.history.map(|o| Request::History(o.0)));
        push(wire.ping.map(|o| Request::Ping(o.0)));
        push(wire.send.map(|o| Request::Send(o.0)));
        push(wire.rpc.map(|o| Request::Rpc(o.0)));
        push(wire.refresh.map(|o| Request::Refresh(o.0)));
        push(wire.sub_refresh.map(|o| Request::SubRefresh(o.0)));
        if requests.len() > 1 {
            let names: Vec<&str> = requests.iter().map(Request::method).collect();
            return Err(format!(
                "command with several requests: {}",
                names.join(", ")
            ));
        }
        match (wire.id, requests.pop()) {
            (id, None) if id != 0 => Err(format!("command {id} has no known request")),
            (id, request) => Ok(Command { id, request }),
        }
    }
}

//! The Centrifuge client protocol v2 — what Centrifugo speaks, and what the npm
//! `centrifuge` and PyPI `centrifuge-python` SDKs expect — as pure wire types and a
//! codec. Source of truth: `client.proto` of `github.com/centrifugal/protocol`.
//!
//! # Shape
//!
//! A client sends [`Command`]s: `{"id":1,"connect":{…}}`, `{"id":2,"subscribe":{…}}`.
//! The server answers each command that has an `id` with a [`Reply`] of the same
//! `id` carrying a result (`{"id":2,"subscribe":{…}}`, even an empty `{}`) or an
//! [`Error`] (`{"id":2,"error":{"code":103,"message":"permission denied"}}`), and
//! sends [`Push`]es at any time (`{"push":{"channel":"news","pub":{…}}}`).
//!
//! A frame (one WebSocket message, one HTTP body) may hold several messages
//! separated by `\n`, in both directions. SDKs pipeline: the JS SDK sends
//! `connect` and its `subscribe`s in one frame, before the connect reply.
//!
//! **Ping/pong.** The server pings with the empty object `{}` ([`Codec::ping`]) every
//! [`ConnectResult::ping`] seconds; if the connect result said `pong: true`, the
//! client answers with an empty command `{}` ([`Command::is_pong`]).
//!
//! **Data** (`data`, `conn_info`, `chan_info`) is embedded JSON in this encoding,
//! kept as [`RawValue`](serde_json::value::RawValue); binary payloads cannot travel
//! in it ([`EncodeError::BinaryOverJson`]; Centrifugo disconnects such subscribers
//! with [`DisconnectCode::InappropriateProtocol`]).
//!
//! **Closing.** [`DisconnectCode`] gives the WebSocket close code and reason; the
//! SDK decides from the code alone whether to reconnect ([`reconnects`]).
//!
//! # Encoding
//!
//! [`Codec`] is the seam between the server and the encoding: it decodes command
//! frames and appends replies and pushes to outgoing frames. JSON is its only
//! variant today; Protobuf (binary WebSocket frames, varint-length-prefixed
//! messages) can be added as another variant without changing callers.
//!
//! A publication push is the same bytes for every subscriber of a channel:
//! [`Codec::encode_publication_push`] encodes it once into [`Bytes`] to share, and
//! [`Codec::append_message`] adds it (or any encoded message) to a connection's
//! frame.
//!
//! ```
//! use herald_protocol::centrifuge::{Codec, Request, Reply, PublishResult};
//!
//! let codec = Codec::Json;
//! let commands = codec
//!     .decode_commands(b"{\"publish\":{\"channel\":\"news\",\"data\":{\"a\":1}},\"id\":5}\n{}")
//!     .unwrap();
//! assert!(matches!(commands[0].request, Some(Request::Publish(_))));
//! assert!(commands[1].is_pong());
//!
//! let mut frame = Vec::new();
//! codec.append_reply(&mut frame, &Reply::ok(5, PublishResult {}));
//! codec.append_message(&mut frame, codec.ping());
//! assert_eq!(frame, b"{\"id\":5,\"publish\":{}}\n{}");
//! ```

mod codes;
mod command;
mod json;
mod push;
mod reply;
#[cfg(test)]
mod tests;

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

pub use codes::{DisconnectCode, UnsubscribeCode, reconnects};
pub use command::{
    Command, ConnectRequest, HistoryRequest, PingRequest, PresenceRequest, PresenceStatsRequest,
    PublishRequest, RefreshRequest, Request, RpcRequest, SendRequest, StreamPosition,
    SubRefreshRequest, SubscribeRequest, UnsubscribeRequest,
};
pub use push::{
    ClientInfo, Disconnect, Join, Leave, Message, Publication, Push, PushBody, Refresh, Subscribe,
    Unsubscribe,
};
pub use reply::{
    ConnectResult, Error, HistoryResult, PingResult, PresenceResult, PresenceStatsResult,
    PublishResult, RefreshResult, Reply, ReplyResult, RpcResult, ServerMessage, SubRefreshResult,
    SubscribeResult, UnsubscribeResult,
};

/// An encoding of the protocol, chosen per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON: text frames, messages separated by `\n`, data as embedded JSON.
    #[default]
    Json,
}

impl Codec {
    /// The encoding's name (`"json"`), e.g. a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
        }
    }

    /// Whether frames are binary (WebSocket binary messages) rather than text.
    pub fn is_binary(self) -> bool {
        match self {
            Codec::Json => false,
        }
    }

    /// Decodes every command of a frame, in order.
    ///
    /// Blank lines are skipped, so an empty frame gives no command. Fails on the
    /// first line that is not a command (the whole frame is refused: Centrifuge
    /// disconnects with [`DisconnectCode::BadRequest`]). Sizes are not limited here;
    /// no input makes it panic.
    pub fn decode_commands(self, frame: &[u8]) -> Result<Vec<Command>, DecodeError> {
        match self {
            Codec::Json => json::decode_commands(frame),
        }
    }

    /// Appends one reply to `frame`, after a separator if the frame already holds a
    /// message. On an empty `frame` this encodes a standalone message.
    pub fn append_reply(self, frame: &mut Vec<u8>, reply: &Reply) {
        match self {
            Codec::Json => json::append_serialized(frame, reply),
        }
    }

    /// Appends one push (`{"push":{…}}`) to `frame`, like
    /// [`append_reply`](Self::append_reply).
    pub fn append_push(self, frame: &mut Vec<u8>, push: &Push) {
        match self {
            Codec::Json => json::append_serialized(frame, &reply::PushEnvelope(push)),
        }
    }

    /// Encodes the push of one publication to `channel` as a standalone message,
    /// once, to be shared by every subscriber and added to each frame with
    /// [`append_message`](Self::append_message).
    ///
    /// `info` names the publisher when a client published. Fails for binary
    /// payloads, which JSON cannot carry.
    pub fn encode_publication_push(
        self,
        channel: &str,
        publication: &crate::Publication,
        info: Option<&ClientInfo>,
    ) -> Result<Bytes, EncodeError> {
        match self {
            Codec::Json => json::encode_publication_push(channel, publication, info),
        }
    }

    /// Appends one already encoded message (from
    /// [`encode_publication_push`](Self::encode_publication_push), [`ping`](Self::ping),
    /// or an `append_*` call on an empty frame) to `frame`, with the separator the
    /// encoding needs.
    pub fn append_message(self, frame: &mut Vec<u8>, message: &[u8]) {
        match self {
            Codec::Json => json::append_message(frame, message),
        }
    }

    /// The server's ping message (`{}` in JSON), to send every
    /// [`ConnectResult::ping`] seconds.
    pub fn ping(self) -> &'static [u8] {
        match self {
            Codec::Json => json::PING,
        }
    }

    /// Appends one command to `frame` (client side), like
    /// [`append_reply`](Self::append_reply).
    pub fn append_command(self, frame: &mut Vec<u8>, command: &Command) {
        match self {
            Codec::Json => json::append_serialized(frame, command),
        }
    }

    /// Decodes every reply, push and ping of a frame from a server (client side),
    /// like [`decode_commands`](Self::decode_commands).
    pub fn decode_server_messages(self, frame: &[u8]) -> Result<Vec<ServerMessage>, DecodeError> {
        match self {
            Codec::Json => json::decode_server_messages(frame),
        }
    }
}

/// The JSON ping (`{}`): what the server sends as a ping and the client as a pong.
pub const JSON_PING: &[u8] = json::PING;

/// A frame could not be decoded.
///
/// Says which line (1-based, counting blank ones) failed and why. Either way the
/// peer sent something that is not the protocol: close with
/// [`DisconnectCode::BadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}: {detail}", if self.syntax { "malformed JSON" } else { "not a protocol message" })]
pub struct DecodeError {
    line: usize,
    syntax: bool,
    detail: String,
}

impl DecodeError {
    fn from_json(line: usize, error: &serde_json::Error) -> Self {
        DecodeError {
            line,
            syntax: error.is_syntax() || error.is_eof(),
            detail: error.to_string(),
        }
    }

    fn structure(line: usize, detail: String) -> Self {
        DecodeError {
            line,
            syntax: false,
            detail,
        }
    }

    /// The line of the frame that failed (1-based).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The line is not valid JSON.
    pub fn is_syntax(&self) -> bool {
        self.syntax
    }

    /// The line is valid JSON but not a protocol message (wrong types, several
    /// methods in one command, a command with an id but no known method, …).
    pub fn is_structure(&self) -> bool {
        !self.syntax
    }
}

/// A message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Binary data cannot be sent in the JSON encoding; Centrifugo disconnects such
    /// subscribers with [`DisconnectCode::InappropriateProtocol`].
    #[error("binary data cannot be sent over the JSON protocol")]
    BinaryOverJson,
    /// A JSON payload is not valid JSON (a [`Payload`](crate::Payload) built by hand).
    #[error("payload is not valid JSON")]
    InvalidJson,
}

/// `skip_serializing_if` for fields whose default value Centrifugo omits.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Reads `null` as the default value, as Centrifugo's decoder does.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// A `T` read from a JSON object only: derived struct deserializers also accept
/// arrays (fields by position), which would make `[]` a pong.
#[derive(Debug)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

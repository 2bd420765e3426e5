//! Herald's core: channels and what flows through them, with no sockets and no HTTP.
//!
//! A publication goes `Node::publish` → [`Engine`] (assigns the offset, appends to
//! history) → [`Hub`] (this node's subscribers) → each subscriber's bounded
//! [`Outbox`], as bytes encoded once and shared. Transports drain outboxes.
//!
//! A subscriber joins with [`Node::subscribe`], which registers it with the hub
//! *before* reading history, so a publication racing the subscription lands in the
//! outbox, in the history read, or both — never neither; the transport drops
//! duplicates by offset.

mod encode;
mod engine;
mod hub;
mod memory;
mod node;
mod options;
mod outbox;
mod presence;

pub use engine::{Engine, EngineError, HistoryPage, PublicationSink};
pub use herald_protocol::ClientInfo;
pub use hub::{Hub, SubscriberTag, WireFormat};
pub use memory::MemoryEngine;
pub use node::{CoreError, Node, NodeConfig, Resume};
pub use options::{ChannelOptions, Namespaces, channel_users, validate_channel};
pub use outbox::{CloseReason, Control, Delivery, Drained, Outbox, Taken};
pub use presence::{MemoryPresence, PresenceStore};

use std::sync::Arc;

use futures_util::future::BoxFuture;
use herald_protocol::{Payload, Publication, StreamPosition};

use crate::ChannelOptions;
use herald_protocol::ClientInfo;

/// Where a channel's publications are ordered and stored, and how they reach every
/// node: the in-memory engine for one node; Redis or NATS engines past one machine.
///
/// An engine delivers each publication to its [`PublicationSink`] once, in offset
/// order per channel.
pub trait Engine: Send + Sync + 'static {
    /// Appends a publication to `channel`, returning the position it was given.
    /// Once this returns `Ok`, the publication is in history (when history is on)
    /// and on its way to every subscriber.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Payload,
        info: Option<Arc<ClientInfo>>,
        options: &'a ChannelOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>>;

    /// Reads retained publications with offset greater than `since` (all when
    /// `None`), at most `limit` of them (oldest first), together with the stream's
    /// current position. Creates the stream's position when the channel is new.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<u64>,
        limit: Option<usize>,
        options: &'a ChannelOptions,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>>;

    /// Announces that `info` joined `channel` to subscribers on every node.
    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Announces that `info` left `channel` to subscribers on every node.
    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Drops a channel's retained publications; its position stays.
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
}

/// Receives every publication the engine orders, for local fan-out.
pub trait PublicationSink: Send + Sync + 'static {
    /// Called once per publication, in offset order within a channel.
    fn deliver(&self, channel: &str, epoch: &str, publication: &Publication);

    /// Called once per join event of `channel` (a client subscribed).
    fn deliver_join(&self, channel: &str, info: &ClientInfo);

    /// Called once per leave event of `channel` (a client unsubscribed).
    fn deliver_leave(&self, channel: &str, info: &ClientInfo);

    /// Whether this node has subscribers on `channel` (engines keep such channels).
    fn has_subscribers(&self, channel: &str) -> bool;
}

/// A slice of a channel's history and its current position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Publications after the requested offset, oldest first.
    pub publications: Vec<Publication>,
    /// The channel's latest position.
    pub top: StreamPosition,
    /// Offset of the oldest retained publication, if any is retained.
    pub first_retained: Option<u64>,
}

/// An engine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine's backend could not be reached or failed.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::sse::RecoveryFailure;
use herald_protocol::{ErrorCode, Payload, Publication, StreamPosition};

use crate::engine::{Engine, EngineError, HistoryPage};
use crate::hub::{Hub, SubscriberTag};
use crate::memory::MemoryEngine;
use crate::options::{ChannelOptions, Namespaces, validate_channel};
use crate::outbox::Outbox;
use crate::presence::{MemoryPresence, PresenceStore};
use herald_protocol::ClientInfo;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Channel options by namespace.
    pub namespaces: Namespaces,
    /// Largest publication accepted, in bytes.
    pub max_publication_bytes: usize,
    /// How long a quiet channel keeps its epoch and offset after its history is gone.
    pub history_meta_ttl: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            namespaces: Namespaces::default(),
            max_publication_bytes: 64 * 1024,
            history_meta_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// One Herald node: its engine and its hub, behind the operations transports and the
/// server API use.
pub struct Node {
    engine: Arc<dyn Engine>,
    presence: Arc<dyn PresenceStore>,
    memory: Option<Arc<MemoryEngine>>,
    hub: Arc<Hub>,
    config: NodeConfig,
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No position was given: live data from `position` on.
    Fresh {
        /// The channel's position when the subscription began.
        position: StreamPosition,
    },
    /// Every publication since the given position, then live data.
    Recovered {
        /// The missed publications, oldest first.
        publications: Vec<Publication>,
        /// The channel's position after them.
        position: StreamPosition,
    },
    /// The gap cannot be filled; live data from `position` on.
    Failed {
        /// Why not.
        reason: RecoveryFailure,
        /// The channel's current position.
        position: StreamPosition,
    },
}

/// An operation refused by the node, with the protocol error it maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The channel name is invalid or its namespace is not configured.
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    /// The publication is larger than allowed.
    #[error("publication of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused publication.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl CoreError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::UnknownChannel(_) => ErrorCode::UnknownChannel,
            CoreError::TooLarge { .. } => ErrorCode::LimitExceeded,
            CoreError::Engine(_) => ErrorCode::Internal,
        }
    }
}

impl Node {
    /// A node with the in-memory engine, delivering from whichever thread
    /// publishes.
    pub fn with_memory_engine(config: NodeConfig) -> Arc<Self> {
        Node::with_memory_engine_sharded(config, NonZeroUsize::MIN)
    }

    /// A node with the in-memory engine whose fan-out is split over `shards`
    /// threads, each of which must run [`Node::serve_shard`].
    pub fn with_memory_engine_sharded(config: NodeConfig, shards: NonZeroUsize) -> Arc<Self> {
        let hub = Arc::new(Hub::new(shards));
        let memory = Arc::new(MemoryEngine::new(hub.clone(), config.history_meta_ttl));
        Arc::new(Node {
            engine: memory.clone(),
            presence: Arc::new(MemoryPresence::default()),
            memory: Some(memory),
            hub,
            config,
        })
    }

    /// This node's subscribers.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Makes the calling thread fan-out shard `index` ([`Hub::serve_shard`]); run
    /// the returned future on this thread.
    pub fn serve_shard(&self, index: usize) -> impl Future<Output = ()> + 'static {
        self.hub.serve_shard(index)
    }

    /// The options of `channel`, after checking its name.
    pub fn options(&self, channel: &str) -> Result<&ChannelOptions, CoreError> {
        validate_channel(channel)
            .map_err(|why| CoreError::UnknownChannel(format!("{channel:?}: {why}")))?;
        self.config.namespaces.options(channel).ok_or_else(|| {
            CoreError::UnknownChannel(format!("{channel:?}: namespace not configured"))
        })
    }

    /// Publishes `data` to `channel` (from the server API: no publisher info).
    pub async fn publish(&self, channel: &str, data: Payload) -> Result<StreamPosition, CoreError> {
        self.publish_as(channel, data, None).await
    }

    /// Publishes `data` to `channel` on behalf of the client `info`, which
    /// subscribers see as the publisher.
    pub async fn publish_as(
        &self,
        channel: &str,
        data: Payload,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<StreamPosition, CoreError> {
        let options = self.options(channel)?;
        if data.len() > self.config.max_publication_bytes {
            return Err(CoreError::TooLarge {
                size: data.len(),
                limit: self.config.max_publication_bytes,
            });
        }
        Ok(self.engine.publish(channel, data, info, options).await?)
    }

    /// Reads history: publications after `since` (all retained when `None`), at
    /// most `limit`.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, CoreError> {
        let options = self.options(channel)?;
        Ok(self.engine.history(channel, since, limit, options).await?)
    }

    /// Drops a channel's history.
    pub async fn remove_history(&self, channel: &str) -> Result<(), CoreError> {
        self.options(channel)?;
        Ok(self.engine.remove_history(channel).await?)
    }

    /// Subscribes `outbox` to `channel` (as `tag` says) and works out where it starts:
    /// live from now, or from `since` with the missed publications, or an explicit
    /// failure when history cannot fill the gap. The outbox may already hold
    /// publications the returned history also holds; drop those by offset.
    pub async fn subscribe(
        &self,
        channel: &str,
        outbox: &Arc<Outbox>,
        tag: SubscriberTag,
        since: Option<&StreamPosition>,
    ) -> Result<Resume, CoreError> {
        let options = self.options(channel)?;
        self.hub.subscribe(channel, outbox, tag);
        let page = match self
            .engine
            .history(channel, since.map(|s| s.offset), None, options)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                self.hub.unsubscribe(channel, outbox);
                return Err(e.into());
            }
        };
        Ok(resume_from(since, page))
    }

    /// Stops delivering `channel` into `outbox`.
    pub fn unsubscribe(&self, channel: &str, outbox: &Arc<Outbox>) {
        self.hub.unsubscribe(channel, outbox);
    }

    /// Records that `info` subscribed to `channel`: presence and join events, as the
    /// channel's options ask.
    pub async fn join(&self, channel: &str, info: &ClientInfo) -> Result<(), CoreError> {
        let options = self.options(channel)?;
        if options.presence {
            self.presence.add(channel, info.clone()).await?;
        }
        if options.join_leave {
            self.engine.publish_join(channel, info).await?;
        }
        Ok(())
    }

    /// Records that `info` left `channel`.
    pub async fn leave(&self, channel: &str, info: &ClientInfo) -> Result<(), CoreError> {
        let options = self.options(channel)?;
        if options.presence {
            self.presence.remove(channel, &info.client).await?;
        }
        if options.join_leave {
            self.engine.publish_leave(channel, info).await?;
        }
        Ok(())
    }

    /// Clients present in `channel` (empty unless the channel tracks presence).
    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, CoreError> {
        self.options(channel)?;
        Ok(self.presence.presence(channel).await?)
    }

    /// Numbers of clients and of distinct users present in `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<(usize, usize), CoreError> {
        let present = self.presence(channel).await?;
        let users: std::collections::HashSet<&str> = present.iter().map(|c| &*c.user).collect();
        Ok((present.len(), users.len()))
    }

    /// Runs engine housekeeping (history expiry) every `period`, forever.
    pub async fn run_housekeeping(self: Arc<Self>, period: Duration) {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            if let Some(memory) = &self.memory {
                memory.sweep();
            }
        }
    }
}

/// Decides how a subscription starting at `since` resumes, given history after it.
fn resume_from(since: Option<&StreamPosition>, page: HistoryPage) -> Resume {
    let position = page.top;
    let Some(since) = since else {
        return Resume::Fresh { position };
    };
    if since.epoch != position.epoch {
        return Resume::Failed {
            reason: RecoveryFailure::EpochChanged,
            position,
        };
    }
    if since.offset > position.offset {
        return Resume::Failed {
            reason: RecoveryFailure::UnknownPosition,
            position,
        };
    }
    let missed = position.offset - since.offset;
    // History holds consecutive offsets, so a full count means no gap.
    if page.publications.len() as u64 == missed {
        Resume::Recovered {
            publications: page.publications,
            position,
        }
    } else {
        Resume::Failed {
            reason: RecoveryFailure::HistoryTrimmed,
            position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::WireFormat;
    use crate::outbox::Outbox;

    fn tag(slot: u32) -> SubscriberTag {
        SubscriberTag {
            slot,
            format: WireFormat::Sse,
            join_leave: false,
        }
    }

    fn options_with_history(size: usize) -> NodeConfig {
        NodeConfig {
            namespaces: Namespaces::new(ChannelOptions {
                history_size: size,
                ..ChannelOptions::default()
            }),
            ..NodeConfig::default()
        }
    }

    async fn publish_n(node: &Node, channel: &str, n: u32) -> StreamPosition {
        let mut last = StreamPosition::default();
        for i in 0..n {
            last = node
                .publish(channel, Payload::json(i.to_string().as_bytes()).unwrap())
                .await
                .unwrap();
        }
        last
    }

    #[tokio::test]
    async fn resumes_exactly_the_missed_publications() {
        let node = Node::with_memory_engine(options_with_history(100));
        let at_three = publish_n(&node, "c", 3).await;
        publish_n(&node, "c", 4).await;
        let outbox = Outbox::new(1 << 20);
        let resume = node
            .subscribe("c", &outbox, tag(0), Some(&at_three))
            .await
            .unwrap();
        let Resume::Recovered {
            publications,
            position,
        } = resume
        else {
            panic!("expected recovery, got {resume:?}");
        };
        let offsets: Vec<u64> = publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [4, 5, 6, 7]);
        assert_eq!(position.offset, 7);
        publish_n(&node, "c", 1).await;
        assert_eq!(
            outbox.take().deliveries[0].offset,
            8,
            "live data after the subscribe"
        );
    }

    #[tokio::test]
    async fn fails_explicitly_when_history_was_trimmed_or_epoch_changed() {
        let node = Node::with_memory_engine(options_with_history(2));
        let at_one = publish_n(&node, "c", 1).await;
        publish_n(&node, "c", 5).await;
        let outbox = Outbox::new(1 << 20);
        let resume = node
            .subscribe("c", &outbox, tag(0), Some(&at_one))
            .await
            .unwrap();
        assert!(matches!(
            resume,
            Resume::Failed { reason: RecoveryFailure::HistoryTrimmed, ref position } if position.offset == 6
        ));
        let other_epoch = StreamPosition {
            offset: 1,
            epoch: "gone".into(),
        };
        let resume = node
            .subscribe("d", &outbox, tag(1), Some(&other_epoch))
            .await
            .unwrap();
        assert!(matches!(
            resume,
            Resume::Failed {
                reason: RecoveryFailure::EpochChanged,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn resuming_at_the_top_recovers_nothing() {
        let node = Node::with_memory_engine(options_with_history(0));
        let top = publish_n(&node, "c", 3).await;
        let outbox = Outbox::new(1 << 20);
        let resume = node
            .subscribe("c", &outbox, tag(0), Some(&top))
            .await
            .unwrap();
        assert_eq!(
            resume,
            Resume::Recovered {
                publications: vec![],
                position: top
            }
        );
    }

    #[tokio::test]
    async fn refuses_unknown_namespaces_and_large_publications() {
        let node = Node::with_memory_engine(NodeConfig {
            max_publication_bytes: 4,
            ..NodeConfig::default()
        });
        let err = node.publish("nope:x", Payload::json(b"1").unwrap()).await;
        assert!(matches!(err, Err(CoreError::UnknownChannel(_))));
        let err = node.publish("c", Payload::json(b"123456").unwrap()).await;
        assert!(matches!(
            err,
            Err(CoreError::TooLarge { size: 6, limit: 4 })
        ));
    }
}

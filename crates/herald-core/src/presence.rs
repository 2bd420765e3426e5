use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};

use herald_protocol::ClientInfo;

use crate::engine::EngineError;

/// Where presence (who is subscribed to a channel) is kept: in memory for one
/// node; Redis past one machine.
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `info` as present in `channel`.
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Removes client `client` from `channel`.
    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Everyone present in `channel`.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>>;
}

/// Presence in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    channels: DashMap<Arc<str>, HashMap<Arc<str>, ClientInfo>>,
}

impl PresenceStore for MemoryPresence {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.channels
            .entry(Arc::from(channel))
            .or_default()
            .insert(info.client.clone(), info);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.channels.remove_if_mut(channel, |_, present| {
            present.remove(client);
            present.is_empty()
        });
        futures_util::future::ready(Ok(())).boxed()
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>> {
        let present = self
            .channels
            .get(channel)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        futures_util::future::ready(Ok(present)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: user.into(),
            conn_info: None,
            chan_info: None,
        }
    }

    #[tokio::test]
    async fn tracks_clients_per_channel() {
        let store = MemoryPresence::default();
        store.add("c", info("1", "alice")).await.unwrap();
        store.add("c", info("2", "alice")).await.unwrap();
        store.add("d", info("3", "bob")).await.unwrap();
        assert_eq!(store.presence("c").await.unwrap().len(), 2);
        store.remove("c", "1").await.unwrap();
        store.remove("c", "2").await.unwrap();
        assert!(store.presence("c").await.unwrap().is_empty());
        assert!(
            !store.channels.contains_key("c"),
            "empty channels are dropped"
        );
    }
}

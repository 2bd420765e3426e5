use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dashmap::DashMap;
use herald_protocol::{Publication, sse};

use crate::engine::PublicationSink;
use crate::outbox::{CloseReason, Delivery, Outbox};

/// This node's subscribers, by channel, and its connected users.
///
/// Fan-out encodes a publication once and pushes the shared bytes into each
/// subscriber's outbox; it never waits on a connection.
#[derive(Debug, Default)]
pub struct Hub {
    channels: DashMap<Arc<str>, Subscribers>,
    users: DashMap<Box<str>, Vec<Weak<Outbox>>>,
    subscriptions: AtomicU64,
    deliveries: AtomicU64,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    slot: u32,
}

impl Hub {
    /// Starts delivering `channel` into `outbox`, tagged with `slot`.
    pub fn subscribe(&self, channel: &str, outbox: &Arc<Outbox>, slot: u32) {
        // Holding the map entry while adding keeps `unsubscribe` from removing the
        // channel between lookup and insert.
        let entry = self.channels.entry(Arc::from(channel)).or_default();
        lock(&entry).push(Subscriber {
            outbox: Arc::clone(outbox),
            slot,
        });
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops delivering `channel` into `outbox`.
    pub fn unsubscribe(&self, channel: &str, outbox: &Arc<Outbox>) {
        self.channels.remove_if(channel, |_, subscribers| {
            let mut subscribers = lock(subscribers);
            if let Some(at) = subscribers
                .iter()
                .position(|s| Arc::ptr_eq(&s.outbox, outbox))
            {
                subscribers.swap_remove(at);
                self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
            subscribers.is_empty()
        });
    }

    /// Records that `outbox` belongs to `user`, for [`Hub::disconnect_user`].
    pub fn add_user_connection(&self, user: &str, outbox: &Arc<Outbox>) {
        let mut entry = self.users.entry(Box::from(user)).or_default();
        entry.retain(|weak| weak.strong_count() > 0);
        entry.push(Arc::downgrade(outbox));
    }

    /// Forgets `outbox` as a connection of `user`.
    pub fn remove_user_connection(&self, user: &str, outbox: &Arc<Outbox>) {
        self.users.remove_if_mut(user, |_, connections| {
            connections.retain(|weak| {
                weak.strong_count() > 0 && !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(outbox))
            });
            connections.is_empty()
        });
    }

    /// Closes every connection of `user`; returns how many were closed.
    pub fn disconnect_user(&self, user: &str) -> usize {
        let Some(connections) = self.users.get(user) else {
            return 0;
        };
        let live: Vec<Arc<Outbox>> = connections.iter().filter_map(Weak::upgrade).collect();
        drop(connections);
        for outbox in &live {
            outbox.close(CloseReason::Disconnected);
        }
        live.len()
    }

    /// Number of distinct users with at least one connection.
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Subscribers of `channel` on this node.
    pub fn num_subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |s| lock(&s).len())
    }

    /// Channels with at least one subscriber, with their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .map(|entry| (entry.key().to_string(), lock(entry.value()).len()))
            .collect()
    }

    /// Total subscriptions on this node.
    pub fn num_subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Publications handed to outboxes since start.
    pub fn num_deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }
}

impl PublicationSink for Hub {
    fn deliver(&self, channel: &str, epoch: &str, publication: &Publication) {
        let Some(subscribers) = self.channels.get(channel).map(|s| Arc::clone(&s)) else {
            return;
        };
        let subscribers = lock(&subscribers);
        if subscribers.is_empty() {
            return;
        }
        let frame = sse::publication_body(channel, epoch, publication);
        for subscriber in subscribers.iter() {
            subscriber.outbox.push(Delivery {
                slot: subscriber.slot,
                offset: publication.offset,
                frame: frame.clone(),
            });
        }
        self.deliveries
            .fetch_add(subscribers.len() as u64, Ordering::Relaxed);
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }
}

fn lock(subscribers: &Mutex<Vec<Subscriber>>) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
    // Every critical section is a single push/remove/iterate; a poisoned list is intact.
    subscribers.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::Payload;

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            data: Payload::json(b"1").unwrap(),
        }
    }

    #[test]
    fn delivers_one_shared_frame_to_every_subscriber() {
        let hub = Hub::default();
        let (a, b) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
        hub.subscribe("c", &a, 0);
        hub.subscribe("c", &b, 3);
        hub.deliver("c", "E", &publication(1));
        let (ta, tb) = (a.take(), b.take());
        assert_eq!(ta.deliveries[0].slot, 0);
        assert_eq!(tb.deliveries[0].slot, 3);
        assert_eq!(
            ta.deliveries[0].frame.as_ptr(),
            tb.deliveries[0].frame.as_ptr(),
            "frame bytes must be shared, not copied"
        );
        assert_eq!(hub.num_deliveries(), 2);
    }

    #[test]
    fn unsubscribe_removes_empty_channels() {
        let hub = Hub::default();
        let a = Outbox::new(1 << 20);
        hub.subscribe("c", &a, 0);
        assert!(hub.has_subscribers("c"));
        hub.unsubscribe("c", &a);
        assert!(!hub.has_subscribers("c"));
        assert_eq!(hub.num_subscriptions(), 0);
        hub.deliver("c", "E", &publication(1));
        assert!(a.take().deliveries.is_empty());
    }

    #[test]
    fn disconnect_user_closes_only_that_users_connections() {
        let hub = Hub::default();
        let (alice, bob) = (Outbox::new(10), Outbox::new(10));
        hub.add_user_connection("alice", &alice);
        hub.add_user_connection("bob", &bob);
        assert_eq!(hub.disconnect_user("alice"), 1);
        assert_eq!(alice.take().closed, Some(CloseReason::Disconnected));
        assert_eq!(bob.take().closed, None);
        hub.remove_user_connection("alice", &alice);
        assert_eq!(hub.num_users(), 1);
    }
}

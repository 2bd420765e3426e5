use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use dashmap::DashMap;
use herald_protocol::{Publication, sse};

use crate::encode;
use crate::engine::PublicationSink;
use crate::outbox::{Control, Delivery, Outbox};
use herald_protocol::ClientInfo;

/// This node's subscribers, by channel, and its connected users.
///
/// Fan-out encodes a publication once and pushes the shared bytes into each
/// subscriber's outbox; it never waits on a connection.
#[derive(Debug, Default)]
pub struct Hub {
    channels: DashMap<Arc<str>, Subscribers>,
    users: DashMap<Box<str>, Vec<Connection>>,
    subscriptions: AtomicU64,
    deliveries: AtomicU64,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

/// A user's connection, for the server API to reach it.
#[derive(Debug)]
struct Connection {
    /// The client id (client protocol sessions; `None` for SSE streams).
    client: Option<Arc<str>>,
    outbox: Weak<Outbox>,
}

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    tag: SubscriberTag,
}

/// How a subscriber receives a channel: its slot, its wire format, and whether it
/// wants join/leave pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberTag {
    /// The connection's own index for the channel, echoed in each [`Delivery`].
    pub slot: u32,
    /// The encoding the connection writes.
    pub format: WireFormat,
    /// Whether join and leave events are delivered too.
    pub join_leave: bool,
}

/// The encodings a channel event is produced in, each at most once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// An SSE event body (`herald_protocol::sse`).
    Sse,
    /// A Centrifuge protocol push, JSON encoding (`herald_protocol::centrifuge`).
    ClientJson,
}

/// Frames of one event, encoded lazily once per wire format present; `None` when
/// the event has no form in that format.
struct Frames<F> {
    encode: F,
    sse: Option<Option<Bytes>>,
    client_json: Option<Option<Bytes>>,
}

impl<F: Fn(WireFormat) -> Option<Bytes>> Frames<F> {
    fn new(encode: F) -> Self {
        Frames {
            encode,
            sse: None,
            client_json: None,
        }
    }

    fn get(&mut self, format: WireFormat) -> Option<Bytes> {
        let slot = match format {
            WireFormat::Sse => &mut self.sse,
            WireFormat::ClientJson => &mut self.client_json,
        };
        slot.get_or_insert_with(|| (self.encode)(format)).clone()
    }
}

impl Hub {
    /// Starts delivering `channel` into `outbox` as `tag` describes.
    pub fn subscribe(&self, channel: &str, outbox: &Arc<Outbox>, tag: SubscriberTag) {
        // Holding the map entry while adding keeps `unsubscribe` from removing the
        // channel between lookup and insert.
        let entry = self.channels.entry(Arc::from(channel)).or_default();
        lock(&entry).push(Subscriber {
            outbox: Arc::clone(outbox),
            tag,
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

    /// Records that `outbox` belongs to `user` (and is client `client`), so the
    /// server API can reach it ([`Hub::control_user`]).
    pub fn add_user_connection(&self, user: &str, client: Option<&Arc<str>>, outbox: &Arc<Outbox>) {
        let mut entry = self.users.entry(Box::from(user)).or_default();
        entry.retain(|c| c.outbox.strong_count() > 0);
        entry.push(Connection {
            client: client.cloned(),
            outbox: Arc::downgrade(outbox),
        });
    }

    /// Forgets `outbox` as a connection of `user`.
    pub fn remove_user_connection(&self, user: &str, outbox: &Arc<Outbox>) {
        self.users.remove_if_mut(user, |_, connections| {
            connections.retain(|c| {
                c.outbox.strong_count() > 0 && !std::ptr::eq(c.outbox.as_ptr(), Arc::as_ptr(outbox))
            });
            connections.is_empty()
        });
    }

    /// Sends `control` to every connection of `user` (only client `client` when
    /// given); returns how many connections it reached.
    pub fn control_user(&self, user: &str, client: Option<&str>, control: &Control) -> usize {
        let Some(connections) = self.users.get(user) else {
            return 0;
        };
        let reached: Vec<Arc<Outbox>> = connections
            .iter()
            .filter(|c| client.is_none_or(|id| c.client.as_deref() == Some(id)))
            .filter_map(|c| c.outbox.upgrade())
            .collect();
        drop(connections);
        for outbox in &reached {
            outbox.control(control.clone());
        }
        reached.len()
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

impl Hub {
    /// Pushes the event `encode` produces to the subscribers `wanted` selects, with
    /// `offset` (0 for events that are not publications).
    fn fan_out(
        &self,
        channel: &str,
        offset: u64,
        wanted: impl Fn(&SubscriberTag) -> bool,
        encode: impl Fn(WireFormat) -> Option<Bytes>,
    ) {
        let Some(subscribers) = self.channels.get(channel).map(|s| Arc::clone(&s)) else {
            return;
        };
        let subscribers = lock(&subscribers);
        let mut frames = Frames::new(encode);
        let mut delivered = 0;
        for subscriber in subscribers.iter().filter(|s| wanted(&s.tag)) {
            let Some(frame) = frames.get(subscriber.tag.format) else {
                continue;
            };
            subscriber.outbox.push(Delivery {
                slot: subscriber.tag.slot,
                offset,
                frame,
            });
            delivered += 1;
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }
}

impl PublicationSink for Hub {
    fn deliver(&self, channel: &str, epoch: &str, publication: &Publication) {
        self.fan_out(
            channel,
            publication.offset,
            |_| true,
            |format| match format {
                WireFormat::Sse => Some(sse::publication_body(channel, epoch, publication)),
                WireFormat::ClientJson => encode::publication_push(channel, publication),
            },
        );
    }

    fn deliver_join(&self, channel: &str, info: &ClientInfo) {
        self.fan_out(
            channel,
            0,
            |tag| tag.join_leave && tag.format == WireFormat::ClientJson,
            |_| encode::join_push(channel, info),
        );
    }

    fn deliver_leave(&self, channel: &str, info: &ClientInfo) {
        self.fan_out(
            channel,
            0,
            |tag| tag.join_leave && tag.format == WireFormat::ClientJson,
            |_| encode::leave_push(channel, info),
        );
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

    fn sse_tag(slot: u32) -> SubscriberTag {
        SubscriberTag {
            slot,
            format: WireFormat::Sse,
            join_leave: false,
        }
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            data: Payload::json(b"1").unwrap(),
            info: None,
        }
    }

    #[test]
    fn delivers_one_shared_frame_to_every_subscriber() {
        let hub = Hub::default();
        let (a, b) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
        hub.subscribe("c", &a, sse_tag(0));
        hub.subscribe("c", &b, sse_tag(3));
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
    fn client_publications_carry_the_publisher_to_client_protocol_subscribers() {
        let hub = Hub::default();
        let (sse_sub, json_sub) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
        hub.subscribe("c", &sse_sub, sse_tag(0));
        let json_tag = SubscriberTag {
            slot: 1,
            format: WireFormat::ClientJson,
            join_leave: false,
        };
        hub.subscribe("c", &json_sub, json_tag);
        let mut published = publication(4);
        published.info = Some(Arc::new(ClientInfo {
            client: Arc::from("client-1"),
            user: Arc::from("alice"),
            conn_info: None,
            chan_info: None,
        }));
        hub.deliver("c", "E", &published);
        let push = json_sub.take().deliveries[0].frame.clone();
        let push: serde_json::Value = serde_json::from_slice(&push).unwrap();
        assert_eq!(push["push"]["pub"]["info"]["user"], "alice");
        assert_eq!(push["push"]["pub"]["info"]["client"], "client-1");
        assert_eq!(push["push"]["pub"]["offset"], 4);
        let event = sse_sub.take().deliveries[0].frame.clone();
        assert!(
            std::str::from_utf8(&event)
                .unwrap()
                .starts_with("event: publication\n")
        );
    }

    #[test]
    fn unsubscribe_removes_empty_channels() {
        let hub = Hub::default();
        let a = Outbox::new(1 << 20);
        hub.subscribe("c", &a, sse_tag(0));
        assert!(hub.has_subscribers("c"));
        hub.unsubscribe("c", &a);
        assert!(!hub.has_subscribers("c"));
        assert_eq!(hub.num_subscriptions(), 0);
        hub.deliver("c", "E", &publication(1));
        assert!(a.take().deliveries.is_empty());
    }

    #[test]
    fn control_reaches_only_that_users_connections() {
        let hub = Hub::default();
        let (alice, alice2, bob) = (Outbox::new(10), Outbox::new(10), Outbox::new(10));
        let client: Arc<str> = Arc::from("c2");
        hub.add_user_connection("alice", None, &alice);
        hub.add_user_connection("alice", Some(&client), &alice2);
        hub.add_user_connection("bob", None, &bob);
        let bye = Control::Disconnect {
            code: 3503,
            reason: Arc::from("bye"),
        };
        assert_eq!(hub.control_user("alice", Some("c2"), &bye), 1);
        assert!(alice.take().controls.is_empty());
        assert_eq!(alice2.take().controls, std::slice::from_ref(&bye));
        assert_eq!(hub.control_user("alice", None, &bye), 2);
        assert!(bob.take().controls.is_empty());
        hub.remove_user_connection("alice", &alice);
        hub.remove_user_connection("alice", &alice2);
        assert_eq!(hub.num_users(), 1);
    }
}

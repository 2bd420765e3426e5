use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use dashmap::DashMap;
use herald_protocol::{Publication, sse};
use tokio::sync::Notify;

use crate::encode;
use crate::engine::PublicationSink;
use crate::outbox::{Control, Delivery, Outbox};
use herald_protocol::ClientInfo;

/// This node's subscribers, by channel, and its connected users.
///
/// Fan-out encodes an event once and pushes the shared bytes into each
/// subscriber's outbox; it never waits on a connection.
///
/// With more than one shard, a channel's subscribers are split by the thread
/// serving their connections (the thread that subscribed them, see
/// [`Hub::serve_shard`]), and each thread pushes into its own subscribers'
/// outboxes: a publish hands the event to every other thread's shard (one wake-up
/// per thread, not per subscriber) and delivers to its own thread's share at once,
/// so a large fan-out runs on every thread in parallel and a connection is woken
/// by its own thread.
#[derive(Debug)]
pub struct Hub {
    channels: DashMap<Arc<str>, Arc<Channel>>,
    shards: Box<[Shard]>,
    users: DashMap<Box<str>, UserConnections>,
    subscriptions: AtomicU64,
    deliveries: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(NonZeroUsize::MIN)
    }
}

/// A channel's subscribers, one list per shard.
#[derive(Debug)]
struct Channel {
    by_shard: Box<[Mutex<SubscriberList>]>,
}

/// One shard's subscribers of a channel: a dense list for fan-out to walk and,
/// once the list is long, the position of each outbox in it, so that a
/// subscriber leaves in constant time. Scanning instead, 50,000 subscribers of one
/// channel took 152 ms to leave (`benches/hub_churn.rs`); a mass disconnect grows with
/// the square of the channel's size, all under the channel map's lock.
#[derive(Debug, Default)]
struct SubscriberList {
    list: Vec<Subscriber>,
    /// Position in `list` by outbox address, from [`INDEXED_FROM`] subscribers
    /// on (most channels are short, and scanning them costs no memory).
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 48 in each list, and most lists are never indexed"
    )]
    positions: Option<Box<HashMap<usize, usize>>>,
}

/// Subscribers of one channel on one shard from which they are indexed: below,
/// a join (checking the outbox is not there yet) or a leave scans at most 16 KiB,
/// and the index (about 25 bytes a subscriber) would cost more than it saves.
const INDEXED_FROM: usize = 1024;

/// One thread's share of the fan-out: events for its subscribers, in the order
/// they were published.
#[derive(Debug, Default)]
struct Shard {
    inbox: Mutex<Vec<Arc<Event>>>,
    ready: Notify,
}

thread_local! {
    /// The shard whose subscribers this thread serves (`usize::MAX`: none).
    static CURRENT_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A user's connections by the address of their outbox, so that adding and
/// removing one takes the same time however many one user holds (a list scanned
/// on each took 29 ms to add and 44 ms to remove 10,000 connections of one user).
type UserConnections = HashMap<usize, Connection>;

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

/// One channel event on its way to subscribers, encoded lazily, at most once per
/// wire format, by whichever thread needs that format first.
#[derive(Debug)]
struct Event {
    channel: Arc<str>,
    /// The publication's offset; 0 for join and leave.
    offset: u64,
    kind: EventKind,
    sse: OnceLock<Option<Bytes>>,
    client_json: OnceLock<Option<Bytes>>,
}

#[derive(Debug)]
enum EventKind {
    Publication {
        epoch: Box<str>,
        publication: Publication,
    },
    Join(ClientInfo),
    Leave(ClientInfo),
}

impl Event {
    fn new(channel: &str, offset: u64, kind: EventKind) -> Self {
        Event {
            channel: Arc::from(channel),
            offset,
            kind,
            sse: OnceLock::new(),
            client_json: OnceLock::new(),
        }
    }

    /// Whether a subscriber described by `tag` gets this event.
    fn wanted(&self, tag: &SubscriberTag) -> bool {
        match self.kind {
            EventKind::Publication { .. } => true,
            EventKind::Join(_) | EventKind::Leave(_) => {
                tag.join_leave && tag.format == WireFormat::ClientJson
            }
        }
    }

    /// The event in `format`; `None` when it has no form in that format.
    fn frame(&self, format: WireFormat) -> Option<Bytes> {
        let slot = match format {
            WireFormat::Sse => &self.sse,
            WireFormat::ClientJson => &self.client_json,
        };
        slot.get_or_init(|| self.encode(format)).clone()
    }

    fn encode(&self, format: WireFormat) -> Option<Bytes> {
        let channel = &*self.channel;
        match (&self.kind, format) {
            (EventKind::Publication { epoch, publication }, WireFormat::Sse) => {
                Some(sse::publication_body(channel, epoch, publication))
            }
            (EventKind::Publication { publication, .. }, WireFormat::ClientJson) => {
                encode::publication_push(channel, publication)
            }
            (EventKind::Join(info), WireFormat::ClientJson) => encode::join_push(channel, info),
            (EventKind::Leave(info), WireFormat::ClientJson) => encode::leave_push(channel, info),
            (EventKind::Join(_) | EventKind::Leave(_), WireFormat::Sse) => None,
        }
    }
}

impl SubscriberList {
    /// Adds `outbox`'s subscription, or replaces its tag if it has one already;
    /// whether it is new.
    fn insert(&mut self, outbox: &Arc<Outbox>, tag: SubscriberTag) -> bool {
        if let Some(at) = self.position(outbox) {
            self.list[at].tag = tag;
            return false;
        }
        if let Some(positions) = &mut self.positions {
            positions.insert(address(outbox), self.list.len());
        }
        self.list.push(Subscriber {
            outbox: Arc::clone(outbox),
            tag,
        });
        if self.positions.is_none() && self.list.len() >= INDEXED_FROM {
            let positions = self.list.iter().enumerate();
            let positions = positions.map(|(at, s)| (address(&s.outbox), at)).collect();
            self.positions = Some(Box::new(positions));
        }
        true
    }

    /// Removes `outbox`'s subscription; whether it had one.
    fn remove(&mut self, outbox: &Arc<Outbox>) -> bool {
        let Some(at) = self.position(outbox) else {
            return false;
        };
        self.list.swap_remove(at);
        if let Some(positions) = &mut self.positions {
            positions.remove(&address(outbox));
            if let Some(moved) = self.list.get(at) {
                positions.insert(address(&moved.outbox), at);
            }
        }
        true
    }

    fn position(&self, outbox: &Arc<Outbox>) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&address(outbox)).copied(),
            None => self
                .list
                .iter()
                .position(|s| Arc::ptr_eq(&s.outbox, outbox)),
        }
    }
}

/// An outbox's address: who it is while it lives.
fn address(outbox: &Arc<Outbox>) -> usize {
    Arc::as_ptr(outbox).addr()
}

impl Channel {
    fn new(shards: usize) -> Self {
        Channel {
            by_shard: (0..shards).map(|_| Mutex::default()).collect(),
        }
    }

    fn len(&self) -> usize {
        self.by_shard.iter().map(|list| lock(list).list.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.by_shard.iter().all(|list| lock(list).list.is_empty())
    }
}

impl Hub {
    /// A hub whose fan-out is split over `shards` threads. With more than one,
    /// every shard's thread must run [`Hub::serve_shard`].
    pub fn new(shards: NonZeroUsize) -> Self {
        Hub {
            channels: DashMap::default(),
            shards: (0..shards.get()).map(|_| Shard::default()).collect(),
            users: DashMap::default(),
            subscriptions: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
        }
    }

    /// Makes the calling thread shard `index`: the connections it subscribes are
    /// delivered to by this thread. The returned future delivers the events other
    /// threads publish for them; run it on this thread, for as long as the thread
    /// serves connections.
    pub fn serve_shard(self: &Arc<Self>, index: usize) -> impl Future<Output = ()> + 'static {
        assert!(
            index < self.shards.len(),
            "shard {index} of {}",
            self.shards.len()
        );
        CURRENT_SHARD.set(index);
        let hub = Arc::clone(self);
        async move {
            loop {
                hub.shards[index].ready.notified().await;
                hub.drain(index);
            }
        }
    }

    /// Starts delivering `channel` into `outbox` as `tag` describes; subscribing
    /// an outbox again replaces its tag.
    pub fn subscribe(&self, channel: &str, outbox: &Arc<Outbox>, tag: SubscriberTag) {
        // Holding the map entry while adding keeps `unsubscribe` from removing the
        // channel between lookup and insert.
        let entry = self
            .channels
            .entry(Arc::from(channel))
            .or_insert_with(|| Arc::new(Channel::new(self.shards.len())));
        let shard = self.current_shard().unwrap_or(0);
        if lock(&entry.by_shard[shard]).insert(outbox, tag) {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops delivering `channel` into `outbox`.
    pub fn unsubscribe(&self, channel: &str, outbox: &Arc<Outbox>) {
        self.channels.remove_if(channel, |_, subscribers| {
            for list in &subscribers.by_shard {
                if lock(list).remove(outbox) {
                    self.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
            }
            subscribers.is_empty()
        });
    }

    /// Records that `outbox` belongs to `user` (and is client `client`), so the
    /// server API can reach it ([`Hub::control_user`]).
    pub fn add_user_connection(&self, user: &str, client: Option<&Arc<str>>, outbox: &Arc<Outbox>) {
        let mut connections = self.users.entry(Box::from(user)).or_default();
        // Connections that ended unremoved are dropped before the map grows, so
        // the work is spread over the adds that filled it.
        if connections.len() == connections.capacity() {
            connections.retain(|_, c| c.outbox.strong_count() > 0);
        }
        connections.insert(
            Arc::as_ptr(outbox).addr(),
            Connection {
                client: client.cloned(),
                outbox: Arc::downgrade(outbox),
            },
        );
    }

    /// Forgets `outbox` as a connection of `user`.
    pub fn remove_user_connection(&self, user: &str, outbox: &Arc<Outbox>) {
        self.users.remove_if_mut(user, |_, connections| {
            // `outbox` is alive, so no other connection can hold its address.
            connections.remove(&Arc::as_ptr(outbox).addr());
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
            .values()
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
        self.channels.get(channel).map_or(0, |s| s.len())
    }

    /// Channels with at least one subscriber, with their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .map(|entry| (entry.key().to_string(), entry.value().len()))
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
    /// This thread's shard, if it serves one of this hub's.
    fn current_shard(&self) -> Option<usize> {
        let index = CURRENT_SHARD.get();
        (index < self.shards.len()).then_some(index)
    }

    /// Delivers `event` to the channel's subscribers: at once with one shard;
    /// otherwise through the inbox of every shard with subscribers, this thread's
    /// own drained right away (after the others were woken, so they work in
    /// parallel). Every event of a shard goes through its inbox, so a subscriber
    /// gets a channel's events in the order they were published, whichever thread
    /// published them.
    fn fan_out(&self, event: Event) {
        let Some(channel) = self.channels.get(&*event.channel).map(|c| Arc::clone(&c)) else {
            return;
        };
        if self.shards.len() == 1 {
            self.deliver_local(&channel.by_shard[0], &event);
            return;
        }
        let event = Arc::new(event);
        for (index, shard) in self.shards.iter().enumerate() {
            if lock(&channel.by_shard[index]).list.is_empty() {
                continue;
            }
            let mut inbox = lock_inbox(&shard.inbox);
            let wake = inbox.is_empty();
            inbox.push(Arc::clone(&event));
            drop(inbox);
            if wake {
                shard.ready.notify_one();
            }
        }
        if let Some(here) = self.current_shard() {
            self.drain(here);
        }
    }

    /// Delivers every event queued for shard `index` (only ever called on that
    /// shard's thread, so one drain runs at a time and keeps the order).
    fn drain(&self, index: usize) {
        loop {
            let events = std::mem::take(&mut *lock_inbox(&self.shards[index].inbox));
            if events.is_empty() {
                return;
            }
            for event in events {
                if let Some(channel) = self.channels.get(&*event.channel).map(|c| Arc::clone(&c)) {
                    self.deliver_local(&channel.by_shard[index], &event);
                }
            }
        }
    }

    /// Pushes `event` into the outbox of each subscriber in `subscribers` that
    /// wants it.
    fn deliver_local(&self, subscribers: &Mutex<SubscriberList>, event: &Event) {
        let subscribers = lock(subscribers);
        let mut delivered = 0;
        for subscriber in subscribers.list.iter().filter(|s| event.wanted(&s.tag)) {
            let Some(frame) = event.frame(subscriber.tag.format) else {
                continue;
            };
            subscriber.outbox.push(Delivery {
                slot: subscriber.tag.slot,
                offset: event.offset,
                frame,
            });
            delivered += 1;
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }
}

impl PublicationSink for Hub {
    fn deliver(&self, channel: &str, epoch: &str, publication: &Publication) {
        self.fan_out(Event::new(
            channel,
            publication.offset,
            EventKind::Publication {
                epoch: Box::from(epoch),
                publication: publication.clone(),
            },
        ));
    }

    fn deliver_join(&self, channel: &str, info: &ClientInfo) {
        self.fan_out(Event::new(channel, 0, EventKind::Join(info.clone())));
    }

    fn deliver_leave(&self, channel: &str, info: &ClientInfo) {
        self.fan_out(Event::new(channel, 0, EventKind::Leave(info.clone())));
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }
}

fn lock(subscribers: &Mutex<SubscriberList>) -> std::sync::MutexGuard<'_, SubscriberList> {
    // Every critical section is a single push/remove/iterate; a poisoned list is intact.
    subscribers.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_inbox(inbox: &Mutex<Vec<Arc<Event>>>) -> std::sync::MutexGuard<'_, Vec<Arc<Event>>> {
    // Only pushes and takes happen under it; a poisoned inbox is intact.
    inbox.lock().unwrap_or_else(|e| e.into_inner())
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
    fn a_large_channels_subscribers_leave_in_any_order_and_the_rest_still_receive() {
        // Long enough to be indexed; leaving in a scattered order moves entries
        // around the dense list, and each move must keep the index right.
        const N: usize = 3 * INDEXED_FROM;
        let hub = Hub::default();
        let outboxes: Vec<_> = (0..N).map(|_| Outbox::new(1 << 20)).collect();
        for (i, outbox) in outboxes.iter().enumerate() {
            hub.subscribe("c", outbox, sse_tag(i as u32));
        }
        let mut left = vec![false; N];
        let order: Vec<usize> = (0..N).map(|i| (i * 37 + 11) % N).collect(); // a permutation
        for (round, chunk) in order.chunks(N / 6).enumerate() {
            for &i in chunk {
                hub.unsubscribe("c", &outboxes[i]);
                left[i] = true;
            }
            hub.deliver("c", "E", &publication(round as u64 + 1));
            for (i, outbox) in outboxes.iter().enumerate() {
                let got: Vec<_> = outbox.take().deliveries.iter().map(|d| d.slot).collect();
                let expected = if left[i] { vec![] } else { vec![i as u32] };
                assert_eq!(got, expected, "subscriber {i} after round {round}");
            }
        }
        assert_eq!(hub.num_subscriptions(), 0);
        assert!(!hub.has_subscribers("c"));
    }

    #[test]
    fn subscribing_again_replaces_the_tag() {
        for n in [1, 2 * INDEXED_FROM] {
            let hub = Hub::default();
            let outboxes: Vec<_> = (0..n).map(|_| Outbox::new(1 << 20)).collect();
            for outbox in &outboxes {
                hub.subscribe("c", outbox, sse_tag(0));
            }
            hub.subscribe("c", &outboxes[0], sse_tag(7));
            assert_eq!(hub.num_subscriptions(), n as u64, "{n} subscribers");
            hub.deliver("c", "E", &publication(1));
            let slots: Vec<_> = outboxes[0]
                .take()
                .deliveries
                .iter()
                .map(|d| d.slot)
                .collect();
            assert_eq!(
                slots,
                [7],
                "one delivery, in the new slot ({n} subscribers)"
            );
            hub.unsubscribe("c", &outboxes[0]);
            hub.deliver("c", "E", &publication(2));
            assert!(outboxes[0].take().deliveries.is_empty(), "{n} subscribers");
        }
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

    #[test]
    fn a_users_many_connections_come_and_go_one_by_one() {
        let hub = Hub::default();
        let outboxes: Vec<_> = (0..1000).map(|_| Outbox::new(10)).collect();
        for outbox in &outboxes {
            hub.add_user_connection("devices", None, outbox);
        }
        let ping = Control::Unsubscribe(Arc::from("news"));
        assert_eq!(hub.control_user("devices", None, &ping), 1000);
        for outbox in outboxes.iter().step_by(2) {
            hub.remove_user_connection("devices", outbox);
        }
        assert_eq!(hub.control_user("devices", None, &ping), 500);
        for (i, outbox) in outboxes.iter().enumerate() {
            let expected = if i % 2 == 0 { 1 } else { 2 };
            assert_eq!(outbox.take().controls.len(), expected, "connection {i}");
        }
        for outbox in outboxes.iter().skip(1).step_by(2) {
            hub.remove_user_connection("devices", outbox);
        }
        assert_eq!(hub.num_users(), 0, "the user goes with its last connection");
    }

    #[test]
    fn connections_that_ended_unremoved_are_dropped_as_the_user_adds_more() {
        let hub = Hub::default();
        for _ in 0..100 {
            // Dropped at once, never removed.
            hub.add_user_connection("carol", None, &Outbox::new(10));
        }
        let kept = Outbox::new(10);
        hub.add_user_connection("carol", None, &kept);
        let held = hub.users.get("carol").unwrap().len();
        assert!(held <= 8, "{held} connections held for 1 alive");
        let ping = Control::Unsubscribe(Arc::from("news"));
        assert_eq!(hub.control_user("carol", None, &ping), 1);
    }

    #[test]
    fn every_shard_gets_every_event_in_publish_order_whoever_publishes() {
        // Two shard threads with a subscriber each. Offsets 1..=N are published one
        // at a time (as the engine's per-channel lock orders them), by shard 0's
        // thread, shard 1's thread and a thread of no shard in turn, so events
        // reach each shard both inline and through its inbox, interleaved.
        const N: u64 = 3000;
        let hub = Arc::new(Hub::new(NonZeroUsize::new(2).unwrap()));
        let next = Arc::new(Mutex::new(1u64));
        let subscribed = Arc::new(std::sync::Barrier::new(3));
        let publish_turns = |turn: u64| {
            let (hub, next) = (Arc::clone(&hub), Arc::clone(&next));
            move || loop {
                let mut offset = next.lock().unwrap();
                if *offset > N {
                    return;
                }
                if *offset % 3 == turn {
                    hub.deliver("c", "E", &publication(*offset));
                    *offset += 1;
                }
                drop(offset);
                std::thread::yield_now();
            }
        };
        let shards: Vec<_> = (0..2)
            .map(|index| {
                let (hub, subscribed) = (Arc::clone(&hub), Arc::clone(&subscribed));
                let publish = publish_turns(index as u64);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        tokio::spawn(hub.serve_shard(index));
                        let outbox = Outbox::new(1 << 24);
                        hub.subscribe("c", &outbox, sse_tag(index as u32));
                        subscribed.wait();
                        // Publishing blocks this thread; its inbox is drained
                        // inline meanwhile and by `serve_shard` afterwards.
                        publish();
                        let mut offsets = Vec::new();
                        while offsets.len() < N as usize {
                            let waited = std::time::Duration::from_secs(5);
                            tokio::time::timeout(waited, outbox.ready())
                                .await
                                .unwrap_or_else(|_| panic!("shard {index} stalled at {offsets:?}"));
                            let taken = outbox.take().deliveries;
                            offsets.extend(taken.iter().map(|d| d.offset));
                        }
                        offsets
                    })
                })
            })
            .collect();
        subscribed.wait();
        publish_turns(2)();
        let expected: Vec<u64> = (1..=N).collect();
        for (index, shard) in shards.into_iter().enumerate() {
            assert_eq!(
                shard.join().unwrap(),
                expected,
                "shard {index}: every offset, once, in order"
            );
        }
        assert_eq!(hub.num_subscribers("c"), 2);
        assert_eq!(hub.num_deliveries(), 2 * N);
    }
}

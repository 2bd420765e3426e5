use std::collections::{VecDeque, vec_deque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// One publication on its way to one connection: the bytes shared by every
/// subscriber, plus what the connection needs to place it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The connection's own index for the channel (given at subscribe).
    pub slot: u32,
    /// The publication's offset, for dropping duplicates at the live/history seam.
    pub offset: u64,
    /// The encoded event, shared.
    pub frame: Bytes,
}

/// Why an outbox was closed; the transport tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The connection did not drain its queue fast enough; it should resume.
    Slow,
    /// The node is shutting down; reconnect (elsewhere).
    Shutdown,
}

/// An instruction for a connection from the server API, carried by its outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Subscribe the connection to a channel (server-side subscription).
    Subscribe(Arc<str>),
    /// Unsubscribe the connection from a channel.
    Unsubscribe(Arc<str>),
    /// Close the connection with this disconnect code and reason.
    Disconnect {
        /// Disconnect code (also the WebSocket close code).
        code: u16,
        /// Why, for the client.
        reason: Arc<str>,
    },
    /// The connection's credentials now expire at this Unix time (`None`: never),
    /// or have expired already (`expired`).
    Refresh {
        /// New expiry time, seconds since the Unix epoch.
        expire_at: Option<u64>,
        /// Expire the connection now.
        expired: bool,
    },
}

impl CloseReason {
    /// The reason string on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Slow => "slow",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// The Centrifuge disconnect code for this reason.
    pub fn code(self) -> u32 {
        match self {
            CloseReason::Slow => 3008,
            CloseReason::Shutdown => 3001,
        }
    }
}

/// A connection's outbound queue, bounded in bytes.
///
/// The hub pushes into it from publishing tasks; the connection's writer takes
/// everything queued at once and writes it in one go. An idle outbox holds no
/// allocation. When a push would exceed the bound, the queue is dropped and the
/// outbox closes with [`CloseReason::Slow`], so a stalled reader never holds memory
/// or slows anyone else.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// The writer's task, woken when the queue becomes non-empty or the outbox
    /// closes. One waiter only, so no list of waiters to lock (as `Notify` has).
    writer: AtomicWaker,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Delivery>,
    bytes: usize,
    controls: Vec<Control>,
    closed: Option<CloseReason>,
}

/// What a writer took from its outbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Deliveries in queue order.
    pub deliveries: VecDeque<Delivery>,
    /// Server API instructions, in order; act on them after the deliveries.
    pub controls: Vec<Control>,
    /// Set once the outbox is closed; the writer should finish.
    pub closed: Option<CloseReason>,
}

/// What a writer took with [`Outbox::drain`] besides the deliveries.
#[derive(Debug, Default)]
pub struct Drained {
    /// Server API instructions, in order; act on them after the deliveries.
    pub controls: Vec<Control>,
    /// Set once the outbox is closed; the writer should finish.
    pub closed: Option<CloseReason>,
}

impl State {
    fn has_pending(&self) -> bool {
        !self.queue.is_empty() || !self.controls.is_empty() || self.closed.is_some()
    }
}

impl Outbox {
    /// A new, empty outbox holding at most `max_bytes` of frames.
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            writer: AtomicWaker::new(),
            max_bytes,
        })
    }

    /// Queues a delivery; closes the outbox as slow if that exceeds the bound.
    pub fn push(&self, delivery: Delivery) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        let size = delivery.frame.len();
        // The writer was told when the queue became non-empty and takes all of it,
        // so a push onto a non-empty queue needs no wake-up of its own.
        let mut wake = state.queue.is_empty();
        if state.bytes + size > self.max_bytes {
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.closed = Some(CloseReason::Slow);
            wake = true;
        } else {
            state.bytes += size;
            state.queue.push_back(delivery);
        }
        drop(state);
        if wake {
            self.writer.wake();
        }
    }

    /// Queues a server API instruction for the connection.
    pub fn control(&self, control: Control) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        state.controls.push(control);
        drop(state);
        self.writer.wake();
    }

    /// Closes the outbox; what is queued stays for the writer to flush.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        drop(state);
        self.writer.wake();
    }

    /// Takes everything queued (leaving no allocation behind) and the close state.
    pub fn take(&self) -> Taken {
        let mut state = self.lock();
        state.bytes = 0;
        Taken {
            deliveries: std::mem::take(&mut state.queue),
            controls: std::mem::take(&mut state.controls),
            closed: state.closed,
        }
    }

    /// Takes everything queued, like [`Outbox::take`], but hands the deliveries to
    /// `read` in place, under the outbox's lock (so `read` must be quick and must not
    /// use the outbox). The queue keeps its allocation for the next pushes, so a busy
    /// writer does not allocate a queue per write; [`Outbox::ready`] frees it once
    /// the writer waits for more.
    pub fn drain(&self, read: impl FnOnce(vec_deque::Iter<'_, Delivery>)) -> Drained {
        let mut state = self.lock();
        read(state.queue.iter());
        state.queue.clear();
        state.bytes = 0;
        Drained {
            controls: std::mem::take(&mut state.controls),
            closed: state.closed,
        }
    }

    /// Whether a [`Outbox::take`] now would find something: deliveries,
    /// instructions, or the close.
    pub fn has_pending(&self) -> bool {
        self.lock().has_pending()
    }

    /// Waits until a [`Outbox::take`] would find something (see
    /// [`Outbox::has_pending`]). Only one task may wait on an outbox: its writer.
    ///
    /// A writer waiting here has gone quiet, so the allocation an empty queue kept
    /// from its busy writes ([`Outbox::drain`]) is freed: an idle connection holds
    /// none.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            // Registered before looking, so a push in between wakes it.
            self.writer.register(cx.waker());
            let mut state = self.lock();
            if state.has_pending() {
                return Poll::Ready(());
            }
            let kept = std::mem::take(&mut state.queue);
            drop(state);
            drop(kept);
            Poll::Pending
        })
        .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (push/take are
        // single assignments), so poisoning carries no information here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(offset: u64, size: usize) -> Delivery {
        Delivery {
            slot: 0,
            offset,
            frame: Bytes::from(vec![b'x'; size]),
        }
    }

    #[test]
    fn overflow_drops_the_queue_and_closes_as_slow() {
        let outbox = Outbox::new(100);
        outbox.push(delivery(1, 60));
        outbox.push(delivery(2, 60));
        outbox.push(delivery(3, 10));
        let taken = outbox.take();
        assert!(taken.deliveries.is_empty());
        assert_eq!(taken.closed, Some(CloseReason::Slow));
    }

    #[test]
    fn take_empties_and_frees_the_budget() {
        let outbox = Outbox::new(100);
        outbox.push(delivery(1, 60));
        assert_eq!(outbox.take().deliveries.len(), 1);
        outbox.push(delivery(2, 60));
        let taken = outbox.take();
        assert_eq!(taken.deliveries[0].offset, 2);
        assert_eq!(taken.closed, None);
        outbox.close(CloseReason::Shutdown);
        outbox.close(CloseReason::Slow);
        assert_eq!(outbox.take().closed, Some(CloseReason::Shutdown));
    }

    #[test]
    fn drain_reads_in_order_frees_the_budget_and_keeps_the_queue_until_the_writer_waits() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(100);
        outbox.push(delivery(1, 60));
        outbox.push(delivery(2, 30));
        outbox.control(Control::Unsubscribe("a".into()));
        let mut read = Vec::new();
        let drained = outbox.drain(|deliveries| {
            read.extend(deliveries.map(|d| d.offset));
        });
        assert_eq!(read, [1, 2]);
        assert_eq!(drained.controls, [Control::Unsubscribe("a".into())]);
        assert_eq!(drained.closed, None);
        assert!(!outbox.has_pending());
        assert!(
            outbox.lock().queue.capacity() > 0,
            "kept for the next pushes"
        );
        // The whole budget is free again.
        outbox.push(delivery(3, 100));
        outbox.drain(|deliveries| assert_eq!(deliveries.len(), 1));
        // A writer that waits for more has gone quiet: the queue is freed.
        assert!(outbox.ready().now_or_never().is_none());
        assert_eq!(outbox.lock().queue.capacity(), 0, "freed");
        outbox.close(CloseReason::Shutdown);
        assert_eq!(outbox.drain(|_| {}).closed, Some(CloseReason::Shutdown));
    }

    #[tokio::test]
    async fn pushes_after_a_take_wake_the_writer_again() {
        let outbox = Outbox::new(100);
        outbox.push(delivery(1, 1));
        outbox.push(delivery(2, 1));
        outbox.ready().await;
        assert_eq!(outbox.take().deliveries.len(), 2);
        outbox.push(delivery(3, 1));
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("the first push after a take must wake the writer");
        assert_eq!(outbox.take().deliveries[0].offset, 3);
    }

    #[tokio::test]
    async fn ready_waits_while_empty_and_wakes_for_a_push_from_another_thread() {
        let outbox = Outbox::new(100);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), outbox.ready());
        assert!(waiting.await.is_err(), "nothing queued: ready must wait");
        let pusher = Arc::clone(&outbox);
        let push = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            pusher.push(delivery(1, 1));
        });
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("a push from another thread must wake the writer");
        push.join().unwrap();
        outbox.close(CloseReason::Shutdown);
        outbox.take();
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("a closed outbox is always ready");
    }

    #[tokio::test]
    async fn ready_wakes_for_a_push_made_before_waiting() {
        let outbox = Outbox::new(100);
        outbox.push(delivery(1, 1));
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("a push before the wait must not be lost");
    }
}

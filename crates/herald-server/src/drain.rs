//! How a drain reaches every open connection.
//!
//! Each session's outbox is listed while the connection is open, and the drain
//! closes them all with [`CloseReason::Shutdown`]. A session thus waits on its
//! outbox alone: no shutdown signal to register with on every wait, and none
//! held by an idle connection.

use std::sync::{Arc, Mutex, MutexGuard};

use herald_core::{CloseReason, Outbox};
use slab::Slab;

/// Lists are sharded so that connections opening and closing on different
/// workers seldom take the same lock.
const SHARDS: usize = 16;

/// The outboxes of the open connections.
#[derive(Debug, Default)]
pub struct OpenOutboxes {
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Debug, Default)]
struct Shard {
    draining: bool,
    outboxes: Slab<Arc<Outbox>>,
}

/// Where an outbox is listed; give it back to [`OpenOutboxes::remove`].
#[derive(Debug)]
pub struct Listed {
    shard: u8,
    key: u32,
}

impl OpenOutboxes {
    /// Lists `outbox` until [`OpenOutboxes::remove`]. Once the drain has begun,
    /// the outbox is closed at once instead.
    pub fn add(&self, outbox: &Arc<Outbox>) -> Option<Listed> {
        // The allocation's address spreads connections over the shards.
        let shard = (Arc::as_ptr(outbox) as usize >> 8) % SHARDS;
        let mut locked = self.lock(shard);
        if locked.draining {
            drop(locked);
            outbox.close(CloseReason::Shutdown);
            return None;
        }
        let key = locked.outboxes.insert(Arc::clone(outbox));
        Some(Listed {
            shard: shard as u8,
            key: u32::try_from(key).expect("fewer than 2^32 connections per shard"),
        })
    }

    /// Takes an outbox off the list (its connection ended).
    pub fn remove(&self, listed: Listed) {
        let mut locked = self.lock(usize::from(listed.shard));
        locked.outboxes.try_remove(listed.key as usize);
    }

    /// Starts the drain: closes every listed outbox, and every one added later.
    pub fn close_all(&self) {
        for shard in 0..SHARDS {
            let outboxes = {
                let mut locked = self.lock(shard);
                locked.draining = true;
                std::mem::take(&mut locked.outboxes)
            };
            for (_, outbox) in outboxes {
                outbox.close(CloseReason::Shutdown);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        (0..SHARDS)
            .map(|shard| self.lock(shard).outboxes.len())
            .sum()
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every update is a single slab operation, consistent even after a panic.
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Arc<Outbox> {
        Outbox::new(1024)
    }

    fn closed(outbox: &Outbox) -> Option<CloseReason> {
        outbox.take().closed
    }

    #[test]
    fn the_drain_closes_listed_outboxes_and_not_removed_ones() {
        let open = OpenOutboxes::default();
        let (a, b, c) = (outbox(), outbox(), outbox());
        let _a = open.add(&a).expect("listed");
        let listed_b = open.add(&b).expect("listed");
        let _c = open.add(&c).expect("listed");
        assert_eq!(open.len(), 3);
        open.remove(listed_b);
        assert_eq!(open.len(), 2);

        open.close_all();
        assert_eq!(closed(&a), Some(CloseReason::Shutdown));
        assert_eq!(closed(&b), None, "its connection had ended");
        assert_eq!(closed(&c), Some(CloseReason::Shutdown));
        assert_eq!(open.len(), 0, "the drain lets go of the outboxes");
    }

    #[test]
    fn an_outbox_added_during_the_drain_is_closed_at_once() {
        let open = OpenOutboxes::default();
        open.close_all();
        let late = outbox();
        assert!(open.add(&late).is_none());
        assert_eq!(closed(&late), Some(CloseReason::Shutdown));
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn removing_after_the_drain_is_harmless() {
        let open = OpenOutboxes::default();
        let kept = outbox();
        let listed = open.add(&kept).expect("listed");
        open.close_all();
        open.remove(listed);
        assert_eq!(open.len(), 0);
        assert_eq!(closed(&kept), Some(CloseReason::Shutdown));
    }
}

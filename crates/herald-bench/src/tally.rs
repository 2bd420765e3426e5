//! Delivery accounting in a worker: which publications each connection received,
//! which it missed (losses) and which came twice (duplicates), and the latency of
//! each first delivery.
//!
//! Publication `n` of a run goes to channel `n % C` as that channel's number
//! `n / C`, so a connection expects consecutive numbers. A step measures the
//! publications `from_n..to_n`; anything else a connection receives (warm-up
//! publications, late ones of an earlier step) is not counted.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::latency;
use crate::payload::Marker;

/// Numbers ahead of the oldest missing one that a [`Tracker`] remembers: deliveries
/// may arrive out of order by this much (e.g. when concurrent publish requests to
/// one channel are served out of order) before a hole counts as lost.
const WINDOW: u64 = 128;

/// Which of one connection's expected numbers arrived: everything below `base` is
/// settled (received or counted lost); bit `k` of `seen` is number `base + k`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracker {
    base: u64,
    seen: u128,
}

/// What recording one number found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// First delivery of this number (else a duplicate).
    pub new: bool,
    /// Older numbers that fell out of the window unseen: lost.
    pub lost: u64,
}

impl Tracker {
    /// Starts expecting `first` and the numbers after it.
    pub fn reset(&mut self, first: u64) {
        *self = Tracker {
            base: first,
            seen: 0,
        };
    }

    /// Records number `seq`.
    pub fn record(&mut self, seq: u64) -> Recorded {
        if seq < self.base {
            return Recorded {
                new: false,
                lost: 0,
            };
        }
        let mut lost = 0;
        let mut offset = seq - self.base;
        if offset >= WINDOW {
            let shift = offset - (WINDOW - 1);
            lost = shift - u64::from(self.seen_below(shift));
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen >> shift
            };
            self.base += shift;
            offset = WINDOW - 1;
        }
        let bit = 1u128 << offset;
        if self.seen & bit != 0 {
            return Recorded { new: false, lost };
        }
        self.seen |= bit;
        let run = self.seen.trailing_ones();
        self.seen = self.seen.checked_shr(run).unwrap_or(0);
        self.base += u64::from(run);
        Recorded { new: true, lost }
    }

    /// Settles every number below `end`: returns how many of them never arrived.
    pub fn finish(&mut self, end: u64) -> u64 {
        if end <= self.base {
            return 0;
        }
        let span = end - self.base;
        let lost = span - u64::from(self.seen_below(span));
        self.reset(end);
        lost
    }

    /// How many of the numbers `base..base + count` were seen.
    fn seen_below(&self, count: u64) -> u32 {
        if count >= WINDOW {
            self.seen.count_ones()
        } else {
            (self.seen & ((1u128 << count) - 1)).count_ones()
        }
    }
}

/// The first channel number at or after publication `n` on channel `channel` of
/// `channels`: publications `from_n..to_n` are that channel's numbers
/// `first_seq(from_n)..first_seq(to_n)`.
pub fn first_seq(n: u64, channel: u64, channels: u64) -> u64 {
    n.saturating_sub(channel).div_ceil(channels)
}

/// A worker's connections and what they received in the current step.
pub struct Tally {
    channels: u64,
    connections: Vec<Connection>,
    step: Option<Step>,
    closed: u64,
    first_close: Option<String>,
    /// Closes not yet taken by [`Tally::take_closed`].
    closed_untaken: u64,
}

struct Connection {
    channel: u64,
    tracker: Tracker,
}

struct Step {
    from_n: u64,
    to_n: u64,
    deliveries: Deliveries,
}

/// How the deliveries of the publications a step measured went: for one worker's
/// connections, for all of them, and in the results (flattened: one field each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Deliveries the connections should get.
    pub expected: u64,
    /// First deliveries.
    pub received: u64,
    /// Publications a connection never received.
    pub lost: u64,
    /// Deliveries of a publication the connection already had.
    pub duplicates: u64,
    /// Deliveries for a channel the connection is not on.
    pub unexpected: u64,
}

impl Counts {
    /// Adds `other`'s counts (another worker's) to these.
    pub fn add(&mut self, other: &Counts) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.unexpected += other.unexpected;
    }
}

/// What a worker's connections received in one step.
#[derive(Debug)]
pub struct Deliveries {
    /// How many, and how many went wrong.
    pub counts: Counts,
    /// When the last first delivery arrived (CLOCK_MONOTONIC ns; 0 for none).
    pub last_delivery_ns: u64,
    /// The latency of each first delivery, in µs.
    pub histogram: Histogram<u64>,
}

impl Deliveries {
    /// None yet, of `expected`.
    fn new(expected: u64) -> Deliveries {
        Deliveries {
            counts: Counts {
                expected,
                ..Counts::default()
            },
            last_delivery_ns: 0,
            histogram: latency::histogram(),
        }
    }
}

impl Tally {
    /// No connections yet; publications go round-robin over `channels`.
    pub fn new(channels: u64) -> Tally {
        Tally {
            channels: channels.max(1),
            connections: Vec::new(),
            step: None,
            closed: 0,
            first_close: None,
            closed_untaken: 0,
        }
    }

    /// Adds a connection on channel `index % channels`; returns its slot.
    pub fn add(&mut self, index: u64) -> usize {
        self.connections.push(Connection {
            channel: index % self.channels,
            tracker: Tracker::default(),
        });
        self.connections.len() - 1
    }

    /// Starts measuring publications `from_n..to_n`; returns how many deliveries the
    /// connections should get.
    pub fn arm(&mut self, from_n: u64, to_n: u64) -> u64 {
        let mut expected = 0;
        for connection in &mut self.connections {
            let first = first_seq(from_n, connection.channel, self.channels);
            let end = first_seq(to_n, connection.channel, self.channels);
            connection.tracker.reset(first);
            expected += end - first;
        }
        self.step = Some(Step {
            from_n,
            to_n,
            deliveries: Deliveries::new(expected),
        });
        expected
    }

    /// First deliveries so far in the current step.
    pub fn received(&self) -> u64 {
        self.step
            .as_ref()
            .map_or(0, |step| step.deliveries.counts.received)
    }

    /// Records a delivery of `marker` to the connection in `slot`, received at
    /// `now_ns`.
    pub fn deliver(&mut self, slot: usize, marker: Marker, now_ns: u64) {
        let Some(step) = &mut self.step else { return };
        let deliveries = &mut step.deliveries;
        let connection = &mut self.connections[slot];
        let n = marker
            .seq
            .checked_mul(self.channels)
            .and_then(|n| n.checked_add(marker.channel));
        let Some(n) = n.filter(|_| marker.channel == connection.channel) else {
            deliveries.counts.unexpected += 1;
            return;
        };
        if !(step.from_n..step.to_n).contains(&n) {
            return;
        }
        let recorded = connection.tracker.record(marker.seq);
        deliveries.counts.lost += recorded.lost;
        if recorded.new {
            deliveries.counts.received += 1;
            deliveries.last_delivery_ns = deliveries.last_delivery_ns.max(now_ns);
            deliveries
                .histogram
                .saturating_record(now_ns.saturating_sub(marker.sent_ns) / 1000);
        } else {
            deliveries.counts.duplicates += 1;
        }
    }

    /// Ends the step: counts what never arrived and returns what the connections
    /// received (nothing if no step was armed).
    pub fn finish(&mut self) -> Deliveries {
        let Some(mut step) = self.step.take() else {
            return Deliveries::new(0);
        };
        for connection in &mut self.connections {
            let end = first_seq(step.to_n, connection.channel, self.channels);
            step.deliveries.counts.lost += connection.tracker.finish(end);
        }
        step.deliveries
    }

    /// Records that the server closed a connection (or it failed), and why.
    pub fn closed(&mut self, why: String) {
        self.closed += 1;
        self.closed_untaken += 1;
        self.first_close.get_or_insert(why);
    }

    /// Connections closed so far.
    pub fn closed_count(&self) -> u64 {
        self.closed
    }

    /// Closes since the last call, and why the first connection ever closed.
    pub fn take_closed(&mut self) -> Option<(u64, String)> {
        let count = std::mem::take(&mut self.closed_untaken);
        (count > 0).then(|| (count, self.first_close.clone().unwrap_or_default()))
    }

    /// Why the first connection closed, if one did.
    pub fn first_close(&self) -> Option<&str> {
        self.first_close.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tracker: &mut Tracker, seq: u64) -> (bool, u64) {
        let r = tracker.record(seq);
        (r.new, r.lost)
    }

    #[test]
    fn counts_in_order_deliveries() {
        let mut t = Tracker::default();
        t.reset(10);
        for seq in 10..20 {
            assert_eq!(record(&mut t, seq), (true, 0));
        }
        assert_eq!(t.finish(20), 0);
        assert_eq!(
            record(&mut t, 19),
            (false, 0),
            "before the range: a duplicate"
        );
    }

    #[test]
    fn counts_gaps_and_duplicates() {
        let mut t = Tracker::default();
        assert_eq!(record(&mut t, 0), (true, 0));
        assert_eq!(record(&mut t, 3), (true, 0)); // 1 and 2 missing, not yet lost
        assert_eq!(record(&mut t, 3), (false, 0));
        assert_eq!(record(&mut t, 0), (false, 0));
        assert_eq!(record(&mut t, 1), (true, 0)); // late, not lost
        assert_eq!(t.finish(6), 3, "2, 4 and 5 never came");
    }

    #[test]
    fn tolerates_reordering_within_the_window() {
        let mut t = Tracker::default();
        let order: Vec<u64> = (0..1000).map(|s| s ^ 7).collect(); // swapped in blocks of 8
        for &seq in &order {
            assert_eq!(record(&mut t, seq), (true, 0), "{seq}");
        }
        assert_eq!(t.finish(1000), 0);
    }

    #[test]
    fn counts_holes_that_leave_the_window() {
        let mut t = Tracker::default();
        assert_eq!(record(&mut t, 0), (true, 0));
        // 1..=9 missing; 137 pushes 1..=9 out of the window.
        assert_eq!(record(&mut t, 137), (true, 9));
        assert_eq!(record(&mut t, 5), (false, 0), "too late: settled as lost");
        // A jump far past the window settles all but the last 127 numbers at once;
        // those are settled when the step ends.
        let (new, lost_now) = record(&mut t, 10_000);
        assert!(new);
        assert_eq!(lost_now, 10_000 - 127 - 10 - 1);
        assert_eq!(lost_now + t.finish(10_001), 10_000 - 10 - 1);
        assert_eq!(t.finish(10_003), 2);
    }

    #[test]
    fn maps_publications_to_channel_numbers() {
        // 3 channels: publications 0..10 give channel 0 numbers 0..4 (n = 0,3,6,9),
        // channel 1 numbers 0..3 (1,4,7), channel 2 numbers 0..3 (2,5,8).
        assert_eq!((first_seq(0, 0, 3), first_seq(10, 0, 3)), (0, 4));
        assert_eq!((first_seq(0, 1, 3), first_seq(10, 1, 3)), (0, 3));
        assert_eq!((first_seq(0, 2, 3), first_seq(10, 2, 3)), (0, 3));
        // Publications 4..8: channel 0 has 6 (number 2), channel 1 has 4 and 7.
        assert_eq!((first_seq(4, 0, 3), first_seq(8, 0, 3)), (2, 3));
        assert_eq!((first_seq(4, 1, 3), first_seq(8, 1, 3)), (1, 3));
        assert_eq!(first_seq(5, 0, 1), 5);
    }

    #[test]
    fn tallies_a_step() {
        let mut tally = Tally::new(2);
        let a = tally.add(0); // channel 0
        let b = tally.add(3); // channel 1
        // Publications 4..10: channel 0 numbers 2..5, channel 1 numbers 2..5.
        assert_eq!(tally.arm(4, 10), 6);
        let at = |seq, channel| Marker {
            seq,
            channel,
            sent_ns: 1_000_000,
        };
        tally.deliver(a, at(1, 0), 2_000_000); // warm-up: not counted
        tally.deliver(a, at(2, 0), 2_000_000);
        tally.deliver(a, at(2, 0), 2_000_000);
        tally.deliver(a, at(4, 0), 3_000_000);
        tally.deliver(b, at(2, 0), 2_000_000); // wrong channel
        tally.deliver(b, at(2, 1), 2_000_000);
        assert_eq!(tally.received(), 3);
        let deliveries = tally.finish();
        assert_eq!(
            deliveries.counts,
            Counts {
                expected: 6,
                received: 3,
                lost: 3, // a: 3; b: 3 and 4
                duplicates: 1,
                unexpected: 1,
            }
        );
        assert_eq!(deliveries.last_delivery_ns, 3_000_000);
        let histogram = &deliveries.histogram;
        assert_eq!(histogram.len(), 3);
        assert_eq!(histogram.max(), histogram.highest_equivalent(2000));
        assert_eq!(tally.received(), 0);
    }
}

//! Delivery accounting in a worker: which publications each connection received,
//! which it missed (losses) and which came twice (duplicates), and the latency of
//! each first delivery.
//!
//! Publication `n` of a run goes to channel `n % C` as that channel's number
//! `n / C`, so a connection expects consecutive numbers. A step measures the
//! publications `from_n..to_n`; anything else a connection receives (warm-up
//! publications, late ones of an earlier step) is not counted.

use std::ops::Range;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::latency;
use crate::payload::Marker;

/// Numbers ahead of the oldest missing one that a [`Tracker`] keeps in its
/// bitmap; holes behind it move to its list of missed ranges.
const WINDOW: u64 = 128;

/// Missed ranges a [`Tracker`] remembers; holes past that many are still counted
/// lost, but a late delivery of one of them counts as a duplicate. Losses come in
/// a few long runs (a stalled or dropped connection) or as rare stragglers
/// (a publish request served late), so a few ranges cover them.
const MISSED_RANGES: usize = 16;

/// Which of one connection's expected numbers arrived. Everything below `base` is
/// settled: received, or in `missed`. Bit `k` of `seen` is number `base + k`.
/// A missed number is lost only if it has not come by the end of the step: a
/// publication served late (concurrent publish requests are served in any
/// order) is a late delivery, not a loss and a duplicate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    base: u64,
    seen: u128,
    /// Holes behind the bitmap, oldest first, at most [`MISSED_RANGES`].
    missed: Vec<Range<u64>>,
    /// Missed numbers no longer in `missed` (it was full).
    forgotten: u64,
}

impl Tracker {
    /// Starts expecting `first` and the numbers after it.
    pub fn reset(&mut self, first: u64) {
        self.base = first;
        self.seen = 0;
        self.missed.clear();
        self.forgotten = 0;
    }

    /// Records number `seq`: whether it is its first delivery (else a duplicate).
    pub fn record(&mut self, seq: u64) -> bool {
        if seq < self.base {
            return self.fill_missed(seq);
        }
        let mut offset = seq - self.base;
        if offset >= WINDOW {
            self.slide(offset - (WINDOW - 1));
            offset = WINDOW - 1;
        }
        let bit = 1u128 << offset;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        let run = self.seen.trailing_ones();
        self.seen = self.seen.checked_shr(run).unwrap_or(0);
        self.base += u64::from(run);
        true
    }

    /// Settles every number below `end`: returns how many of them never arrived.
    pub fn finish(&mut self, end: u64) -> u64 {
        if end > self.base {
            self.slide(end - self.base);
        }
        let lost = self.forgotten + self.missed.iter().map(|r| r.end - r.start).sum::<u64>();
        self.reset(end);
        lost
    }

    /// Moves `base` up by `shift`, listing the numbers it passes unseen as missed.
    fn slide(&mut self, shift: u64) {
        let mut unseen = !self.seen;
        if shift < WINDOW {
            unseen &= (1u128 << shift) - 1;
        }
        while unseen != 0 {
            let k = u64::from(unseen.trailing_zeros());
            self.miss(self.base + k..self.base + k + 1);
            unseen &= unseen - 1;
        }
        if shift > WINDOW {
            self.miss(self.base + WINDOW..self.base + shift);
        }
        self.seen = self.seen.checked_shr(shift.min(WINDOW) as u32).unwrap_or(0);
        self.base += shift;
    }

    /// Adds `range` (above every missed range so far) to the missed ones.
    fn miss(&mut self, range: Range<u64>) {
        match self.missed.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.missed.push(range),
        }
        self.forget_beyond_capacity();
    }

    /// A late delivery of `seq`, behind the bitmap: new if it was missed.
    fn fill_missed(&mut self, seq: u64) -> bool {
        let Some(i) = self.missed.iter().position(|r| r.contains(&seq)) else {
            return false;
        };
        // The range loses `seq`: what is left of it on either side stays missed.
        let range = self.missed.remove(i);
        let left = [range.start..seq, seq + 1..range.end];
        for (k, piece) in left.into_iter().filter(|r| !r.is_empty()).enumerate() {
            self.missed.insert(i + k, piece);
        }
        self.forget_beyond_capacity();
        true
    }

    /// Keeps at most [`MISSED_RANGES`], counting the oldest ones' numbers instead.
    fn forget_beyond_capacity(&mut self) {
        if self.missed.len() > MISSED_RANGES {
            let oldest = self.missed.remove(0);
            self.forgotten += oldest.end - oldest.start;
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
        if connection.tracker.record(marker.seq) {
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

    #[test]
    fn counts_in_order_deliveries() {
        let mut t = Tracker::default();
        t.reset(10);
        for seq in 10..20 {
            assert!(t.record(seq), "{seq}");
        }
        assert_eq!(t.finish(20), 0);
        assert!(!t.record(19), "before the range: a duplicate");
    }

    #[test]
    fn counts_gaps_and_duplicates() {
        let mut t = Tracker::default();
        assert!(t.record(0));
        assert!(t.record(3)); // 1 and 2 missing, not yet lost
        assert!(!t.record(3));
        assert!(!t.record(0));
        assert!(t.record(1)); // late, not lost
        assert_eq!(t.finish(6), 3, "2, 4 and 5 never came");
    }

    #[test]
    fn tolerates_reordering_within_the_window() {
        let mut t = Tracker::default();
        let order: Vec<u64> = (0..1000).map(|s| s ^ 7).collect(); // swapped in blocks of 8
        for &seq in &order {
            assert!(t.record(seq), "{seq}");
        }
        assert_eq!(t.finish(1000), 0);
    }

    #[test]
    fn a_delivery_later_than_the_window_is_late_not_lost() {
        let mut t = Tracker::default();
        assert!(t.record(0));
        // 1..=9 missing; 137 pushes them behind the window.
        assert!(t.record(137));
        assert!(t.record(5), "late: first delivery");
        assert!(!t.record(5), "then a duplicate");
        assert!(t.record(1), "the start of a missed range");
        assert!(t.record(9), "the end of a missed range");
        // A jump far past the window: everything it passes unseen is missed.
        assert!(t.record(10_000));
        assert!(t.record(500), "late by far more than the window");
        // Missing: 2..=4, 6..=8, 10..=136, 138..=9_999 except 500.
        assert_eq!(t.finish(10_001), 3 + 3 + 127 + 9_862 - 1);
        assert_eq!(t.finish(10_003), 2, "a step ended: nothing carried over");
        assert!(!t.record(10_000), "settled with the step");
    }

    #[test]
    fn remembers_the_latest_missed_ranges_and_still_counts_the_others() {
        let mut t = Tracker::default();
        for seq in (0..=400).step_by(2) {
            assert!(t.record(seq), "{seq}");
        }
        // Every odd number below 273 (= 400 - 127) is behind the window: 136
        // missed ranges, of which the latest MISSED_RANGES are remembered.
        let oldest_remembered = 273 - 2 * MISSED_RANGES as u64;
        assert!(t.record(oldest_remembered));
        assert!(t.record(271));
        assert!(!t.record(1), "forgotten: counted as a duplicate");
        assert_eq!(
            t.finish(401),
            200 - 2,
            "odd numbers below 400, two came late"
        );
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

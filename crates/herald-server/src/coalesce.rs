//! When a busy connection may write next (`write_coalesce`).
//!
//! Deadlines are rounded up to a node-wide grid of a quarter window, so the
//! connections fed by one fan-out wake together: the runtime then handles them in
//! one pass instead of waking a worker thread for each.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The earliest time a connection that wrote at `last_write` writes again, given
/// the coalescing `window`; `last_write` itself when coalescing is off.
pub fn next_write(last_write: Instant, window: Duration) -> Instant {
    if window.is_zero() {
        return last_write;
    }
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let slot = (window / 4).max(Duration::from_millis(1)).as_nanos();
    let earliest = (last_write + window)
        .saturating_duration_since(origin)
        .as_nanos();
    let slots = earliest.div_ceil(slot);
    // u64 nanoseconds cover 584 years of uptime.
    origin + Duration::from_nanos(u64::try_from(slots * slot).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fall_on_a_shared_grid_at_least_a_window_later() {
        let window = Duration::from_millis(20);
        let first = Instant::now();
        let a = next_write(first, window);
        let b = next_write(first + Duration::from_millis(2), window);
        assert!(a >= first + window && a < first + window + window / 4);
        assert!(b >= first + Duration::from_millis(22));
        // Writes 2 ms apart share a slot or land one slot (5 ms) apart.
        let apart = b.saturating_duration_since(a);
        assert!(apart.is_zero() || apart == window / 4, "{apart:?}");
    }

    #[test]
    fn no_window_means_no_wait() {
        let now = Instant::now();
        assert_eq!(next_write(now, Duration::ZERO), now);
    }
}

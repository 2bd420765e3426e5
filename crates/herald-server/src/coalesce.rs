//! When a busy connection may write next (`write_coalesce`).
//!
//! Time is cut into window-long ticks on one node-wide clock. A connection writes
//! at most once per tick as it comes, and what arrives after that waits for the
//! next tick. So a message waits at most one window, and the connections fed by
//! one fan-out flush together at the tick: the runtime handles them in one pass,
//! and a steady stream of one message every T goes out as window/T messages per
//! write instead of the one or two a sliding window gets when T and the window
//! are close.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The earliest time a connection that wrote at `last_write` writes again: the
/// next tick of `window` after it; `last_write` itself when coalescing is off.
pub fn next_write(last_write: Instant, window: Duration) -> Instant {
    if window.is_zero() {
        return last_write;
    }
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // u64 nanoseconds cover 584 years of uptime (and divide faster than u128).
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let tick = nanos(window);
    let since = nanos(last_write.saturating_duration_since(origin));
    origin + Duration::from_nanos((since / tick).saturating_add(1).saturating_mul(tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_one_tick_wait_for_the_same_next_tick() {
        let window = Duration::from_millis(20);
        // The clock starts at the first call.
        next_write(Instant::now(), window);
        let first = Instant::now();
        let a = next_write(first, window);
        assert!(a > first && a <= first + window, "at most one window later");
        // Every write before that tick waits for that same tick...
        assert_eq!(next_write(a - Duration::from_millis(1), window), a);
        // ...and a write at the tick waits a whole window for the next one.
        assert_eq!(next_write(a, window), a + window);
        assert_eq!(next_write(a + Duration::from_millis(3), window), a + window);
    }

    #[test]
    fn no_window_means_no_wait() {
        let now = Instant::now();
        assert_eq!(next_write(now, Duration::ZERO), now);
    }
}

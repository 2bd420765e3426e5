//! The benchmark's clock: CLOCK_MONOTONIC in nanoseconds. It is system-wide on
//! Linux, so a send time written into a payload by the publishing process can be
//! compared with the receive time read in a worker process.

use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// Now, in nanoseconds of CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The tokio instant of a CLOCK_MONOTONIC time (tokio's clock is the same clock,
/// but opaque), for sleeping until a scheduled send.
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let (now, now_ns) = (tokio::time::Instant::now(), now_ns());
    now + Duration::from_nanos(ns.saturating_sub(now_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_clock_of_std_instant() {
        // Both are CLOCK_MONOTONIC, so readings interleave in order.
        let s0 = std::time::Instant::now();
        let c0 = now_ns();
        let s1 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let s2 = std::time::Instant::now();
        let c1 = now_ns();
        let s3 = std::time::Instant::now();
        let ours = Duration::from_nanos(c1 - c0);
        assert!(s2 - s1 <= ours && ours <= s3 - s0, "{ours:?}");
    }
}

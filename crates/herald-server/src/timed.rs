//! Time limits on writes that usually finish at once.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::error::Elapsed;

/// Runs `write`, giving up after `limit`. Most writes to a socket finish on their
/// first poll; those set no timer (a timer costs more than a small write's own
/// user-space work).
///
/// `write` is pinned by the caller, so it is kept once; the timer of a write that
/// has to wait is boxed, so it does not size every connection's future.
pub async fn within<F: Future>(
    limit: Duration,
    mut write: Pin<&mut F>,
) -> Result<F::Output, Elapsed> {
    // Polled once with a no-op waker: a write that is not done registers the
    // real waker when `timeout` polls it again right away.
    match write.as_mut().now_or_never() {
        Some(done) => Ok(done),
        None => Box::pin(tokio::time::timeout(limit, write)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    #[tokio::test]
    async fn a_write_done_at_once_or_in_time_succeeds_and_a_stuck_one_times_out() {
        let limit = Duration::from_millis(50);
        assert_eq!(within(limit, pin!(async { 7 })).await, Ok(7));
        let later = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            8
        };
        assert_eq!(within(limit, pin!(later)).await, Ok(8));
        let stuck = std::future::pending::<()>();
        assert!(within(limit, pin!(stuck)).await.is_err());
    }
}

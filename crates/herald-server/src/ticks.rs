//! Waiting for a write tick (see [`crate::coalesce`]) with one timer per thread.
//!
//! A busy connection sleeps to its next tick after every write. With a timer of its
//! own, that is a timer move and a timer-wheel entry to fire per write, for every
//! connection. The ticks are the same for all of them, so here each thread keeps
//! one list of the tasks waiting for each coming tick, and one task sleeps until
//! the earliest and wakes them all: per write, a connection only adds its waker.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

thread_local! {
    /// This thread's tick list (its driver runs on the runtime the list was
    /// made on; a new one is made if that runtime is gone).
    static TICKS: RefCell<Option<Arc<Ticks>>> = const { RefCell::new(None) };
}

/// Completes once `tick` has passed, as woken by this thread's tick list.
///
/// Cancel-safe. Must run inside a Tokio runtime.
pub fn until(tick: Instant) -> impl Future<Output = ()> {
    // The list waited on, and the waker it will wake.
    let mut registered: Option<(Arc<Ticks>, Waker)> = None;
    poll_fn(move |cx| {
        if let Some((ticks, waker)) = registered.as_ref().filter(|(ticks, _)| ticks.alive()) {
            if ticks.fired(tick) {
                return Poll::Ready(());
            }
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let ticks = current();
        let passed = ticks.wait(tick, cx.waker());
        registered = Some((ticks, cx.waker().clone()));
        match passed {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
}

/// This thread's tick list, made (with its driver task) if there is none alive.
fn current() -> Arc<Ticks> {
    TICKS.with_borrow_mut(|slot| {
        if let Some(ticks) = slot.as_ref().filter(|ticks| ticks.alive()) {
            return ticks.clone();
        }
        let ticks = Arc::new(Ticks::default());
        tokio::spawn(drive(ticks.clone()));
        *slot = Some(ticks.clone());
        ticks
    })
}

/// The tasks waiting for each coming tick, and the driver that wakes them.
#[derive(Debug)]
struct Ticks {
    state: Mutex<State>,
    /// The driver task, woken when a tick earlier than the one it sleeps for is
    /// waited for.
    driver: AtomicWaker,
    /// Cleared when the driver task is dropped (its runtime shut down).
    alive: AtomicBool,
}

impl Default for Ticks {
    fn default() -> Self {
        Ticks {
            state: Mutex::default(),
            driver: AtomicWaker::new(),
            alive: AtomicBool::new(true),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Ticks waited for, earliest first, each with its waiting tasks.
    waiting: Vec<(Instant, Vec<Waker>)>,
    /// The latest tick whose waiters were woken.
    fired: Option<Instant>,
    /// The tick the driver sleeps until.
    target: Option<Instant>,
    /// An emptied waiter list, kept for the next tick.
    spare: Vec<Waker>,
}

impl Ticks {
    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn fired(&self, tick: Instant) -> bool {
        self.lock().fired.is_some_and(|fired| fired >= tick)
    }

    /// Adds `waker` to the waiters of `tick`; `true` if that tick has passed.
    fn wait(&self, tick: Instant, waker: &Waker) -> bool {
        let mut state = self.lock();
        if state.fired.is_some_and(|fired| fired >= tick) {
            return true;
        }
        let at = state.waiting.partition_point(|(t, _)| *t < tick);
        match state.waiting.get_mut(at) {
            Some((t, waiters)) if *t == tick => waiters.push(waker.clone()),
            _ => {
                let mut waiters = std::mem::take(&mut state.spare);
                waiters.push(waker.clone());
                state.waiting.insert(at, (tick, waiters));
            }
        }
        let earlier = at == 0 && state.target != Some(tick);
        drop(state);
        if earlier {
            self.driver.wake();
        }
        false
    }

    /// Sleeps until the earliest tick waited for, then wakes its waiters; never
    /// completes.
    fn poll_drive(&self, sleep: &mut std::pin::Pin<&mut tokio::time::Sleep>, cx: &mut Context<'_>) {
        self.driver.register(cx.waker());
        loop {
            let mut state = self.lock();
            let Some(&(next, _)) = state.waiting.first() else {
                state.target = None;
                return;
            };
            state.target = Some(next);
            drop(state);
            if sleep.deadline() != next {
                sleep.as_mut().reset(next);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return;
            }
            let mut state = self.lock();
            let (tick, mut waiters) = state.waiting.remove(0);
            state.fired = Some(tick);
            drop(state);
            for waiter in waiters.drain(..) {
                waiter.wake();
            }
            self.lock().spare = waiters;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single step; a panic elsewhere leaves the state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The driver task of `ticks`. Not an `async fn`: the guard belongs to the future
/// from the start, so a driver dropped before its first poll (its runtime ended)
/// marks the list dead too.
fn drive(ticks: Arc<Ticks>) -> impl Future<Output = ()> + Send {
    /// Marks the list dead when the task is dropped, so the next wait makes a new one.
    struct Alive(Arc<Ticks>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.alive.store(false, Ordering::Release);
        }
    }
    let alive = Alive(ticks);
    async move {
        let mut sleep = pin!(tokio::time::sleep_until(Instant::now()));
        poll_fn(|cx| {
            alive.0.poll_drive(&mut sleep, cx);
            Poll::<()>::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_at_their_tick_in_order() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let later = tokio::spawn(async move {
            until(start + ms(40)).await;
            Instant::now()
        });
        // Until the driver sleeps for the later tick; it must wake for the sooner.
        tokio::time::sleep(ms(1)).await;
        let sooner = tokio::spawn(async move {
            until(start + ms(20)).await;
            Instant::now()
        });
        let same = tokio::spawn(async move {
            until(start + ms(20)).await;
            Instant::now()
        });
        assert_eq!(sooner.await.unwrap(), start + ms(20));
        assert_eq!(same.await.unwrap(), start + ms(20));
        assert_eq!(later.await.unwrap(), start + ms(40));
        // A tick that has passed is no wait at all.
        until(start + ms(10)).await;
        assert_eq!(Instant::now(), start + ms(40));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waker_of_the_latest_poll_is_woken() {
        let tick = Instant::now() + Duration::from_millis(20);
        let mut wait = pin!(until(tick));
        let other = futures_util::task::noop_waker();
        let pending = wait.as_mut().poll(&mut Context::from_waker(&other));
        assert!(pending.is_pending());
        // Now polled by this task: the tick must wake it, not the first waker
        // (the timeout would, a second later).
        tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| wait.as_mut().poll(cx)))
            .await
            .unwrap();
        assert_eq!(Instant::now(), tick, "woken at the tick");
    }

    #[test]
    fn a_driver_dropped_before_it_ran_is_replaced() {
        use futures_util::FutureExt;
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        // The wait spawns the driver, and the runtime ends before running it.
        runtime().block_on(async {
            let tick = Instant::now() + Duration::from_millis(5);
            assert!(until(tick).now_or_never().is_none());
        });
        runtime().block_on(async {
            let tick = Instant::now() + Duration::from_millis(5);
            tokio::time::timeout(Duration::from_secs(5), until(tick))
                .await
                .expect("the tick must come");
        });
    }

    #[test]
    fn a_new_runtime_on_the_thread_gets_a_new_driver() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let tick = Instant::now() + Duration::from_millis(5);
                tokio::time::timeout(Duration::from_secs(5), until(tick))
                    .await
                    .expect("the tick must come");
            });
        }
    }
}

//! How long connections take to join and leave a large channel, and to be added
//! to and removed from one user, as in a connect storm or a mass disconnect:
//!
//! ```sh
//! cargo bench -p herald-core --bench hub_churn
//! ```
//!
//! Each figure is the best of five rounds; a time that grows faster than the
//! count (the square of it) is what this is here to catch.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::{Hub, Outbox, SubscriberTag, WireFormat};

const ROUNDS: usize = 5;

fn main() {
    let tag = SubscriberTag {
        slot: 0,
        format: WireFormat::ClientJson,
        join_leave: false,
    };
    let client: Arc<str> = Arc::from("client");
    println!("connections  subscribe  unsubscribe  add user  remove user");
    for count in [1_000, 10_000, 50_000, 100_000] {
        let outboxes: Vec<_> = (0..count).map(|_| Outbox::new(1 << 20)).collect();
        let mut best = [Duration::MAX; 4];
        for _ in 0..ROUNDS {
            let hub = Hub::new(NonZeroUsize::new(2).expect("two shards"));
            let timings = [
                time(|| outboxes.iter().for_each(|o| hub.subscribe("news", o, tag))),
                time(|| outboxes.iter().for_each(|o| hub.unsubscribe("news", o))),
                time(|| {
                    for o in &outboxes {
                        hub.add_user_connection("devices", Some(&client), o);
                    }
                }),
                time(|| {
                    for o in &outboxes {
                        hub.remove_user_connection("devices", o);
                    }
                }),
            ];
            assert_eq!(hub.num_subscriptions(), 0);
            assert_eq!(hub.num_users(), 0);
            for (best, timing) in best.iter_mut().zip(timings) {
                *best = (*best).min(timing);
            }
        }
        let [subscribe, unsubscribe, add, remove] = best.map(|d| d.as_secs_f64() * 1000.0);
        println!(
            "{count:>11}  {subscribe:>6.2} ms  {unsubscribe:>8.2} ms  {add:>5.2} ms  {remove:>8.2} ms"
        );
    }
}

fn time(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

//! Write coalescing: a quiet connection's publication goes out at once; what
//! arrives after that waits for the next `--write-coalesce` tick and goes out with
//! the rest in one WebSocket frame, in order, each once.

use std::time::Duration;

use serde_json::json;

use crate::util::ws::Event;
use crate::util::{Herald, Proto, Ws};

over_every_protocol!(a_burst_after_a_write_goes_out_in_one_frame);
over_every_protocol!(a_connection_busy_at_every_tick_still_pings);

async fn a_burst_after_a_write_goes_out_in_one_frame(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect", "--write-coalesce", "2s"])
        .start()
        .await;
    let (mut ws, _) = Ws::connected(&herald, json!({})).await;
    ws.subscribe("burst").await;

    herald.publish("burst", json!(0)).await;
    // Nothing was written from the queue yet, so this one is not held back.
    match ws.next_event(Duration::from_secs(2)).await {
        Some(Event::Message(message)) => {
            assert_eq!(message["push"]["pub"]["data"], 0, "{message}")
        }
        other => panic!("the first publication should come at once, got {other:?}"),
    }

    // This one waits for the next tick (at most 2 s); receiving it tells the test
    // a tick just passed, so the burst below cannot straddle one.
    herald.publish("burst", json!(1)).await;
    let publication = ws.expect_publication("burst").await;
    assert_eq!(publication["data"], 1, "{publication}");

    let frames = ws.frames;
    for n in 2..=21 {
        herald.publish("burst", json!(n)).await;
    }
    for n in 2..=21 {
        let publication = ws.expect_publication("burst").await;
        assert_eq!(publication["data"], n, "in order, each once: {publication}");
    }
    assert_eq!(
        ws.frames - frames,
        1,
        "20 publications made within one tick arrive in one frame"
    );
}

/// A connection with publications queued at every tick is written once per tick
/// without being woken per publication; it must still be pinged on time (and
/// stay connected by answering), and receive everything in order.
async fn a_connection_busy_at_every_tick_still_pings(proto: Proto) {
    let herald = Herald::builder(proto)
        .args([
            "--allow-anonymous-connect",
            "--write-coalesce",
            "100ms",
            "--client-ping-interval",
            "1s",
            "--client-pong-timeout",
            "1s",
        ])
        .start()
        .await;
    let (mut ws, _) = Ws::connected(&herald, json!({})).await;
    ws.subscribe("busy").await;

    // A publication every 20 ms for 3.5 s: several per 100 ms tick, every tick.
    const COUNT: u64 = 175;
    let publisher = async {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        for n in 0..COUNT {
            every.tick().await;
            herald.publish("busy", json!(n)).await;
        }
    };
    let receiver = async {
        for n in 0..COUNT {
            let publication = ws.expect_publication("busy").await;
            assert_eq!(publication["data"], n, "in order, each once: {publication}");
        }
    };
    tokio::join!(publisher, receiver);
    assert!(
        ws.pings >= 2,
        "pinged every second while busy, got {} pings in 3.5 s",
        ws.pings
    );
    assert!(
        ws.frames < COUNT as usize / 2,
        "publications were batched per tick: {} frames for {COUNT}",
        ws.frames
    );
    // Answering those pings kept it connected.
    herald.publish("busy", json!("last")).await;
    assert_eq!(ws.expect_publication("busy").await["data"], "last");
}

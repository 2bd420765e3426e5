//! Subscribe over SSE, publish through the server API, receive exactly that.

use std::time::Duration;

use serde_json::json;

use crate::util::{Herald, Proto, metric};

over_every_protocol!(
    one_channel_receives_exactly_what_was_published,
    one_stream_carries_several_channels,
    binary_publications_arrive_as_b64data,
    a_busy_stream_gets_every_event_in_order_batched_per_tick,
);

async fn one_channel_receives_exactly_what_was_published(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=news").await;

    let connected = stream.expect("connected").await;
    assert!(
        stream.retry().is_some_and(|ms| ms > 0),
        "the stream must tell EventSource how long to wait before reconnecting"
    );
    assert_eq!(connected["channels"][0]["channel"], "news", "{connected}");
    assert_eq!(connected["channels"][0]["offset"], 0, "{connected}");
    assert_eq!(connected["channels"].as_array().map(Vec::len), Some(1));

    let published = herald
        .publish("news", json!({"headline": "hello", "n": 1}))
        .await;
    assert_eq!(published["offset"], 1, "first publication of a channel");
    assert_eq!(
        published["epoch"], connected["channels"][0]["epoch"],
        "the publication is in the epoch the stream announced"
    );

    let received = stream.expect_publication("news", 1).await;
    assert_eq!(
        received,
        json!({
            "channel": "news",
            "offset": 1,
            "epoch": published["epoch"],
            "data": {"headline": "hello", "n": 1},
        }),
        "the subscriber must receive exactly the publication"
    );

    // Exactly once: the next event is the next publication, not a repeat.
    herald.publish("news", json!("second")).await;
    let second = stream.expect_publication("news", 2).await;
    assert_eq!(second["data"], "second");
    stream.expect_quiet().await;
}

async fn one_stream_carries_several_channels(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=b&channel=a").await;
    let connected = stream.expect("connected").await;
    let listed: Vec<&str> = connected["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .filter_map(|c| c["channel"].as_str())
        .collect();
    assert_eq!(
        listed,
        ["a", "b"],
        "connected lists every channel: {connected}"
    );

    // A channel nobody subscribed to must not leak into the stream.
    herald.publish("c", json!("not for this stream")).await;
    herald.publish("b", json!({"to": "b"})).await;
    herald.publish("a", json!({"to": "a"})).await;
    herald.publish("b", json!({"to": "b", "again": true})).await;

    let first = stream.expect_publication("b", 1).await;
    assert_eq!(first["data"], json!({"to": "b"}));
    let second = stream.expect_publication("a", 1).await;
    assert_eq!(second["data"], json!({"to": "a"}));
    let third = stream.expect_publication("b", 2).await;
    assert_eq!(third["data"], json!({"to": "b", "again": true}));
    stream.expect_quiet().await;
}

async fn binary_publications_arrive_as_b64data(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=bin").await;
    stream.expect("connected").await;

    // The bytes 00 01 02 ff, which are not UTF-8.
    let (status, reply) = herald
        .api("publish", json!({"channel": "bin", "b64data": "AAEC/w=="}))
        .await;
    assert_eq!(status, 200, "binary publish: {reply}");

    let received = stream.expect_publication("bin", 1).await;
    assert_eq!(received["b64data"], "AAEC/w==", "{received}");
    assert!(
        received.get("data").is_none(),
        "binary data travels as b64data only: {received}"
    );
}

/// A stream with events queued at every `--write-coalesce` tick is written once
/// per tick: it still gets every event, in order, once, each with its resume id.
async fn a_busy_stream_gets_every_event_in_order_batched_per_tick(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--write-coalesce", "100ms"])
        .start()
        .await;
    let mut stream = herald.subscribe("channel=busy").await;
    stream.expect("connected").await;

    // A publication every 20 ms for 2 s: several per 100 ms tick, every tick.
    const COUNT: u64 = 100;
    let publisher = async {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        for n in 1..=COUNT {
            every.tick().await;
            herald.publish("busy", json!(n)).await;
        }
    };
    let receiver = async {
        for n in 1..=COUNT {
            let publication = stream.expect_publication("busy", n).await;
            assert_eq!(publication["data"], n, "{publication}");
        }
    };
    tokio::join!(publisher, receiver);
    assert!(!stream.last_id().is_empty(), "every event carries its id");

    let text = herald.metrics().await;
    let writes = metric(&text, "herald_writes_total", &[("transport", "sse")])
        .unwrap_or_else(|| panic!("no SSE writes in /metrics:\n{text}"));
    assert!(
        writes <= (COUNT / 2) as f64,
        "{COUNT} events over 2 s go out in about 20 writes of one per tick, not {writes}"
    );
    // After the burst, the stream is quiet and then served at once again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    herald.publish("busy", json!("last")).await;
    assert_eq!(
        stream.expect_publication("busy", COUNT + 1).await["data"],
        "last"
    );
}

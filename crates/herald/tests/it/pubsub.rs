//! Subscribe over SSE, publish through the server API, receive exactly that.

use serde_json::json;

use crate::util::{Herald, Proto};

over_every_protocol!(
    one_channel_receives_exactly_what_was_published,
    one_stream_carries_several_channels,
    binary_publications_arrive_as_b64data,
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

//! `/metrics` reflects the traffic: connections by HTTP version, publications,
//! deliveries, bytes and writes.

use serde_json::json;

use crate::util::{Herald, Proto, metric};

over_every_protocol!(metrics_follow_the_traffic);

async fn metrics_follow_the_traffic(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut first = herald.subscribe("channel=m").await;
    let mut second = herald.subscribe("channel=m&channel=n").await;
    first.expect("connected").await;
    second.expect("connected").await;
    for n in 1..=3 {
        herald.publish("m", json!({"n": n})).await;
    }
    for n in 1..=3 {
        first.expect_publication("m", n).await;
        second.expect_publication("m", n).await;
    }

    let text = herald.metrics().await;
    let version = proto.metrics_label();
    let sample = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| {
            panic!("/metrics over {proto:?} has no sample {name}{labels:?}:\n{text}")
        })
    };
    assert_eq!(
        sample(
            "herald_connections",
            &[("transport", "sse"), ("http_version", version)]
        ),
        2.0,
        "two SSE streams are open over HTTP version {version}"
    );
    assert_eq!(sample("herald_publications_total", &[]), 3.0);
    assert_eq!(
        sample("herald_deliveries_total", &[]),
        6.0,
        "three publications written to two streams"
    );
    assert!(
        sample("herald_bytes_written_total", &[("transport", "sse")]) > 0.0,
        "bytes written are counted"
    );
    // Each stream got its opening and three publications, maybe batched.
    let writes = sample("herald_writes_total", &[("transport", "sse")]);
    assert!(
        (2.0..=8.0).contains(&writes),
        "herald_writes_total counts each stream's writes, at most one per event: {writes}"
    );
    if proto.is_h2() {
        assert!(
            text.contains("http_version=\"2\""),
            "h2 connections are labelled http_version=\"2\":\n{text}"
        );
    }
    let other = if proto.is_h2() { "1.1" } else { "2" };
    let elsewhere = metric(
        &text,
        "herald_connections",
        &[("transport", "sse"), ("http_version", other)],
    );
    assert!(
        elsewhere.is_none_or(|open| open == 0.0),
        "no stream is open over HTTP version {other}:\n{text}"
    );
}

//! Protocol v2 ping/pong: the server pings (`{}`) on an interval; a client that
//! answers (`{}`) stays connected, one that does not is closed with 3012.

use std::time::Duration;

use serde_json::json;

use crate::util::{Herald, Proto, Ws};

over_every_protocol!(clients_that_stop_answering_pings_are_closed);

async fn clients_that_stop_answering_pings_are_closed(proto: Proto) {
    let herald = Herald::builder(proto)
        .args([
            "--allow-anonymous-connect",
            "--client-ping-interval",
            "1s",
            "--client-pong-timeout",
            "1s",
        ])
        .start()
        .await;
    let (mut answering, result) = Ws::connected(&herald, json!({})).await;
    assert_eq!(result["ping"], 1, "the ping interval in seconds: {result}");
    assert_eq!(result["pong"], true, "{result}");
    let (mut silent, _) = Ws::connected(&herald, json!({})).await;
    silent.answer_pings = false;

    let (_, (code, reason)) = tokio::join!(
        answering.expect_quiet(Duration::from_millis(3500)),
        silent.expect_close_within(Duration::from_secs(6)),
    );
    assert_eq!(code, 3012, "no pong: {reason:?}");
    assert_eq!(silent.pings, 1, "closed after one unanswered ping");
    assert!(
        answering.pings >= 2,
        "pinged every second, got {} pings in 3.5 s",
        answering.pings
    );
    // Still connected and served.
    answering.subscribe("alive").await;
    herald.publish("alive", json!(1)).await;
    answering.expect_publication("alive").await;
}

/// A connection that never sends `connect` is closed as stale (3502).
#[tokio::test]
async fn connections_that_never_connect_are_closed() {
    let herald = Herald::builder(Proto::Http1)
        .args([
            "--allow-anonymous-connect",
            "--client-connect-timeout",
            "1s",
        ])
        .start()
        .await;
    let mut ws = Ws::open(&herald).await;
    let (code, reason) = ws.expect_close_within(Duration::from_secs(5)).await;
    assert_eq!(code, 3502, "stale: {reason:?}");
}

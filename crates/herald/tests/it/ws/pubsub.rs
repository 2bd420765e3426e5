//! Connect, subscribe, receive: anonymously and with a token, server-side
//! subscriptions from the token, batched commands, and the connection metrics.

use serde_json::{Value, json};
use tokio_websockets::Config;

use super::{SECRET, token};
use crate::util::ws::Route;
use crate::util::{Herald, Proto, Ws, metric};

over_every_protocol!(
    anonymous_client_receives_publications,
    token_client_receives_publications,
    token_channels_become_server_side_subscriptions,
    batched_commands_are_answered_in_order,
    commands_sent_together_are_answered_in_one_frame,
);

/// Checks the connect result fields every SDK reads.
fn check_connect_result(result: &Value) {
    assert_eq!(result["pong"], true, "the server pings (v2): {result}");
    assert!(
        result["ping"].as_u64().is_some_and(|p| p > 0),
        "connect result has the ping interval: {result}"
    );
    assert!(
        result["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{result}"
    );
}

/// The `herald_connections*` samples for WebSockets over `http_version`.
async fn ws_connections(herald: &Herald, http_version: &str) -> (f64, f64) {
    let text = herald.metrics().await;
    let labels = [("transport", "websocket"), ("http_version", http_version)];
    (
        metric(&text, "herald_connections_accepted_total", &labels).unwrap_or(0.0),
        metric(&text, "herald_connections", &labels).unwrap_or(0.0),
    )
}

async fn anonymous_client_receives_publications(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let (mut ws, result) = Ws::connected(&herald, json!({})).await;
    check_connect_result(&result);
    assert!(
        super::is_false(&result["expires"]),
        "an anonymous connection does not expire: {result}"
    );

    let subscribed = ws.subscribe("news").await;
    assert_eq!(subscribed["recoverable"], true, "{subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert!(!epoch.is_empty(), "{subscribed}");

    let published = herald.publish("news", json!({"text": "hello"})).await;
    let publication = ws.expect_publication("news").await;
    assert_eq!(publication["data"], json!({"text": "hello"}));
    assert_eq!(publication["offset"], published["offset"]);
    assert_eq!(published["epoch"], epoch.as_str());

    // The connection is counted under its transport and HTTP version: RFC 8441
    // extended CONNECT on h2c and h2 over TLS.
    let version = proto.metrics_label();
    let (accepted, open) = ws_connections(&herald, version).await;
    assert_eq!(
        (accepted, open),
        (1.0, 1.0),
        "herald_connections{{transport=\"websocket\",http_version=\"{version}\"}}"
    );
    let second = Ws::open(&herald).await;
    crate::util::eventually(
        crate::util::PROMPTLY,
        "herald_connections_accepted_total to count the second WebSocket",
        || async { (ws_connections(&herald, version).await == (2.0, 2.0)).then_some(()) },
    )
    .await;
    ws.close().await;
    second.close().await;
    crate::util::eventually(
        crate::util::PROMPTLY,
        "herald_connections to drop to 0 after both closed",
        || async { (ws_connections(&herald, version).await == (2.0, 0.0)).then_some(()) },
    )
    .await;
}

async fn token_client_receives_publications(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--token-hmac-secret", SECRET])
        .without_anonymous()
        .start()
        .await;
    let (mut ws, result) =
        Ws::connected(&herald, json!({"token": token("alice", &["team-*"], 3600)})).await;
    check_connect_result(&result);
    assert_eq!(result["expires"], true, "{result}");
    let ttl = result["ttl"].as_u64().expect("a ttl");
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}: {result}");
    assert!(
        result
            .get("subs")
            .is_none_or(|s| s.as_object().is_some_and(|s| s.is_empty())),
        "a prefix grant is no server-side subscription: {result}"
    );

    ws.subscribe("team-red").await;
    herald.publish("team-red", json!("go")).await;
    let publication = ws.expect_publication("team-red").await;
    assert_eq!(publication["data"], "go");
    assert_eq!(publication["offset"], 1);
}

async fn token_channels_become_server_side_subscriptions(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--token-hmac-secret", SECRET])
        .without_anonymous()
        .start()
        .await;
    herald.publish("alerts", json!("earlier")).await;
    let (mut ws, result) = Ws::connected(
        &herald,
        json!({"token": token("bob", &["news", "alerts"], 3600)}),
    )
    .await;
    let subs = result["subs"]
        .as_object()
        .unwrap_or_else(|| panic!("connect result lists server-side subscriptions: {result}"));
    let mut channels: Vec<&str> = subs.keys().map(String::as_str).collect();
    channels.sort_unstable();
    assert_eq!(channels, ["alerts", "news"], "{result}");
    assert_eq!(subs["alerts"]["offset"], 1, "position of alerts: {result}");
    assert!(
        subs["news"]["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{result}"
    );

    herald.publish("news", json!({"n": 1})).await;
    let publication = ws.expect_publication("news").await;
    assert_eq!(publication["data"], json!({"n": 1}));
    herald.publish("alerts", json!("now")).await;
    let publication = ws.expect_publication("alerts").await;
    assert_eq!(publication["data"], "now");
    assert_eq!(publication["offset"], 2);

    // Subscribing again from the client is refused: it is already subscribed.
    let reply = ws.call("subscribe", json!({"channel": "news"})).await;
    assert_eq!(reply["error"]["code"], 105, "already subscribed: {reply}");
}

async fn batched_commands_are_answered_in_order(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let mut ws = Ws::open(&herald).await;
    // One frame, six commands, as SDKs batch them.
    let batch = [
        json!({"id": 1, "connect": {"name": "it"}}),
        json!({"id": 2, "subscribe": {"channel": "a"}}),
        json!({"id": 3, "subscribe": {"channel": "b"}}),
        json!({"id": 4, "ping": {}}),
        json!({"id": 5, "rpc": {"method": "nothing", "data": {}}}),
        json!({"id": 6, "unsubscribe": {"channel": "b"}}),
    ]
    .map(|c| c.to_string())
    .join("\n");
    ws.send_text(batch).await;
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(ws.next().await);
    }
    let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
    assert_eq!(
        ids,
        [1, 2, 3, 4, 5, 6],
        "replies in command order: {replies:?}"
    );
    check_connect_result(&replies[0]["connect"]);
    assert!(
        replies[1]["subscribe"]["epoch"].is_string(),
        "{}",
        replies[1]
    );
    assert!(
        replies[2]["subscribe"]["epoch"].is_string(),
        "{}",
        replies[2]
    );
    assert!(replies[3]["ping"].is_object(), "{}", replies[3]);
    assert_eq!(replies[4]["error"]["code"], 108, "{}", replies[4]);
    assert!(replies[5]["unsubscribe"].is_object(), "{}", replies[5]);

    // Still subscribed to a, no longer to b.
    herald.publish("b", json!("to b")).await;
    herald.publish("a", json!("to a")).await;
    let publication = ws.expect_publication("a").await;
    assert_eq!(publication["data"], "to a");
}

/// On a TLS server, the HTTP/1.1 upgrade (ALPN `http/1.1`) works as well as
/// HTTP/2, and is counted as HTTP/1.1; large messages arrive whole when the
/// client fragments them.
#[tokio::test]
async fn http1_upgrade_over_tls() {
    let herald = Herald::builder(Proto::H2Tls)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let mut ws = Ws::open_with(&herald, Route::Http1, Config::default().frame_size(100)).await;
    check_connect_result(&ws.connect(json!({"name": "x".repeat(300)})).await);
    ws.subscribe("tls").await;
    herald
        .publish("tls", json!({"big": "y".repeat(20_000)}))
        .await;
    let publication = ws.expect_publication("tls").await;
    assert_eq!(
        publication["data"]["big"].as_str().map(str::len),
        Some(20_000)
    );
    assert_eq!(ws_connections(&herald, "1.1").await, (1.0, 1.0));
    assert_eq!(ws_connections(&herald, "2").await.0, 0.0);
}

/// SDKs send `connect` and then `subscribe` as separate messages without waiting;
/// replies to messages that arrived together go out together, in order.
async fn commands_sent_together_are_answered_in_one_frame(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let mut ws = Ws::open(&herald).await;
    ws.send_together(&[
        json!({"id": 1, "connect": {}}).to_string(),
        json!({"id": 2, "subscribe": {"channel": "together"}}).to_string(),
        json!({"id": 3, "presence_stats": {"channel": "together"}}).to_string(),
    ])
    .await;
    let replies = [ws.next().await, ws.next().await, ws.next().await];
    let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [1, 2, 3], "replies in order: {replies:?}");
    assert!(replies[1]["subscribe"].is_object(), "{}", replies[1]);
    assert_eq!(ws.frames, 1, "three replies in one frame: {replies:?}");
}

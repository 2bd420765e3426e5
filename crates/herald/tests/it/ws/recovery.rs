//! Recovery on resubscribe: `subscribe {recover, epoch, offset}` returns exactly
//! the missed publications with `recovered: true`, or `recovered: false` when
//! history cannot cover the gap — never a silent gap.

use serde_json::{Value, json};

use super::is_false;
use crate::util::{Herald, Proto, Ws};

over_every_protocol!(
    reconnect_recovers_missed_publications,
    recovery_fails_when_history_is_too_short,
);

/// How many publications the client misses while away.
const MISSED: u64 = 5;

/// Subscribes a client to `channel`, has it receive one publication, closes it;
/// returns the position it saw last (epoch, offset).
async fn subscribe_then_leave(herald: &Herald, channel: &str) -> (String, u64) {
    let (mut ws, _) = Ws::connected(herald, json!({})).await;
    let subscribed = ws.subscribe(channel).await;
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    herald.publish(channel, json!({"n": 0})).await;
    let publication = ws.expect_publication(channel).await;
    let offset = publication["offset"].as_u64().expect("an offset");
    ws.close().await;
    (epoch, offset)
}

/// Publishes `{"n": 1}` … `{"n": MISSED}`.
async fn publish_missed(herald: &Herald, channel: &str) {
    for n in 1..=MISSED {
        herald.publish(channel, json!({"n": n})).await;
    }
}

async fn resubscribe(ws: &mut Ws, channel: &str, epoch: &str, offset: u64) -> Value {
    ws.request(
        "subscribe",
        json!({"channel": channel, "recover": true, "epoch": epoch, "offset": offset}),
    )
    .await
}

async fn reconnect_recovers_missed_publications(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let (epoch, offset) = subscribe_then_leave(&herald, "rec").await;
    assert_eq!(offset, 1);
    publish_missed(&herald, "rec").await;

    let (mut ws, _) = Ws::connected(&herald, json!({})).await;
    let result = resubscribe(&mut ws, "rec", &epoch, offset).await;
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(result["was_recovering"], true, "{result}");
    assert_eq!(result["epoch"], epoch.as_str(), "{result}");
    assert_eq!(result["offset"], offset + MISSED, "{result}");
    let publications = result["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("recovered publications: {result}"));
    let got: Vec<(u64, u64)> = publications
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().expect("offset"),
                p["data"]["n"].as_u64().expect("n"),
            )
        })
        .collect();
    let want: Vec<(u64, u64)> = (1..=MISSED).map(|n| (offset + n, n)).collect();
    assert_eq!(got, want, "exactly the missed publications, in order");

    // Live publications continue right after, with no duplicate at the seam.
    herald.publish("rec", json!({"n": "live"})).await;
    let live = ws.expect_publication("rec").await;
    assert_eq!(live["offset"], offset + MISSED + 1, "{live}");
    assert_eq!(live["data"]["n"], "live");
}

async fn recovery_fails_when_history_is_too_short(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect", "--history-size", "2"])
        .start()
        .await;
    let (epoch, offset) = subscribe_then_leave(&herald, "short").await;
    publish_missed(&herald, "short").await;
    let top = offset + MISSED;

    let (mut ws, _) = Ws::connected(&herald, json!({})).await;
    let result = resubscribe(&mut ws, "short", &epoch, offset).await;
    assert!(is_false(&result["recovered"]), "{result}");
    assert_eq!(result["was_recovering"], true, "{result}");
    assert_eq!(result["offset"], top, "the current position: {result}");
    assert!(
        result["publications"]
            .as_array()
            .is_none_or(|p| p.is_empty()),
        "no partial recovery that would hide the gap: {result}"
    );

    // A position in an epoch the channel never had cannot be recovered either.
    let result = resubscribe(&mut ws, "other", "not-an-epoch", 1).await;
    assert!(is_false(&result["recovered"]), "{result}");

    herald.publish("short", json!("live")).await;
    let live = ws.expect_publication("short").await;
    assert_eq!(live["offset"], top + 1, "{live}");
}

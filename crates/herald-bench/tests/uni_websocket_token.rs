//! `{token}` against a real Herald (started in-process on a free loopback port):
//! each subscriber opens Herald's unidirectional WebSocket with its own token in
//! the URL (`cf_connect`), so that one request connects and subscribes it to the
//! channel its token grants, as nchan's and Pushpin's bare WebSockets do. A storm
//! and a fan-out, over two worker processes, must deliver every publication to
//! every subscriber exactly once and on its own channel only.

mod common;

use common::{Herald, TOKEN_SECRET};
use serde_json::Value;

/// `{"token":"{token}"}`, URL-encoded around the placeholder.
const UNI_PATH: &str = "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D";

/// The arguments every run shares: `subscribers` on 3 channels, two workers.
fn subscriber_args(herald: &Herald, subscribers: u64) -> Vec<String> {
    vec![
        format!("--url={}", herald.url("ws", UNI_PATH)),
        "--protocol=ws".to_owned(),
        format!("--token-secret={TOKEN_SECRET}"),
        format!("--subscribers={subscribers}"),
        "--channels=3".to_owned(),
        "--workers=2".to_owned(),
    ]
}

/// Asserts that `counts` (a step or a probe) got every delivery, with nothing
/// lost, duplicated, misrouted or refused.
fn assert_complete(counts: &Value, at_least: u64) {
    let expected = counts["expected"].as_u64().expect("expected deliveries");
    assert!(expected >= at_least, "{counts}");
    assert_eq!(counts["received"], expected, "{counts}");
    for count in ["lost", "duplicates", "unexpected", "publish_errors"] {
        assert_eq!(counts[count], 0, "{count}: {counts}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_over_uni_websocket_with_a_token_per_connection() {
    let herald = Herald::start(false).await;
    let subscribers = 120;
    let results = herald
        .results("storm", &subscriber_args(&herald, subscribers))
        .await;
    let connect = &results["connect"];
    assert_eq!(connect["held"], subscribers, "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
    let probe = &results["probe"];
    assert_complete(probe, subscribers);
    assert_eq!(probe["expected"], subscribers, "one probe each: {probe}");
    assert!(probe["seconds_until_all"].is_f64(), "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_uni_websocket_with_a_token_per_connection() {
    let herald = Herald::start(false).await;
    let subscribers = 60;
    let mut args = subscriber_args(&herald, subscribers);
    args.extend(
        [
            "--rates=200",
            "--duration=1s",
            "--warmup=200ms",
            "--drain-timeout=10s",
        ]
        .map(str::to_owned),
    );
    let results = herald.results("fanout", &args).await;
    assert_eq!(results["connect"]["held"], subscribers, "{results}");
    assert_complete(&results["steps"][0], subscribers);
}

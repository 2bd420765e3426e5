//! When history can no longer fill the gap (trimmed by size or expired), a resuming
//! stream is told so explicitly, then live data flows.

use std::time::Duration;

use serde_json::json;

use crate::util::{Herald, PROMPTLY, Proto, eventually};

over_every_protocol!(
    trimmed_history_reports_recovery_failed_then_streams,
    expired_history_reports_recovery_failed_then_streams,
);

async fn trimmed_history_reports_recovery_failed_then_streams(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--history-size", "3"])
        .start()
        .await;
    let mut stream = herald.subscribe("channel=t").await;
    stream.expect("connected").await;
    herald.publish("t", json!(1)).await;
    stream.expect_publication("t", 1).await;
    let last_id = stream.last_id();
    drop(stream);

    // Offsets 2..=6 while away; history keeps only 4, 5 and 6, so 2 and 3 are gone.
    for n in 2..=6 {
        herald.publish("t", json!(n)).await;
    }

    let mut resumed = herald
        .open(
            herald.events("channel=t").header("last-event-id", &last_id),
            "GET /events?channel=t resuming past trimmed history",
        )
        .await;
    resumed.expect("connected").await;
    let failed = resumed.expect("recovery_failed").await;
    assert_eq!(failed["channel"], "t", "{failed}");
    assert_eq!(failed["reason"], "history_trimmed", "{failed}");
    assert_eq!(failed["offset"], 6, "live data resumes after 6: {failed}");

    herald.publish("t", json!(7)).await;
    let live = resumed.expect_publication("t", 7).await;
    assert_eq!(live["data"], 7);
    resumed.expect_quiet().await;
}

async fn expired_history_reports_recovery_failed_then_streams(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--history-ttl", "1s"])
        .start()
        .await;
    let mut stream = herald.subscribe("channel=e").await;
    stream.expect("connected").await;
    herald.publish("e", json!(1)).await;
    stream.expect_publication("e", 1).await;
    let last_id = stream.last_id();
    drop(stream);

    herald.publish("e", json!(2)).await;
    herald.publish("e", json!(3)).await;

    // Wait (polling the API, not sleeping blindly) until history has expired.
    eventually(
        Duration::from_secs(1) + PROMPTLY,
        "history of \"e\" to expire after --history-ttl 1s",
        || async {
            let (_, reply) = herald
                .api("history", json!({"channel": "e", "limit": -1}))
                .await;
            let publications = reply["result"]["publications"].as_array()?;
            publications.is_empty().then_some(())
        },
    )
    .await;

    let mut resumed = herald
        .open(
            herald.events("channel=e").header("last-event-id", &last_id),
            "GET /events?channel=e resuming past expired history",
        )
        .await;
    resumed.expect("connected").await;
    let failed = resumed.expect("recovery_failed").await;
    assert_eq!(failed["channel"], "e", "{failed}");
    assert_eq!(failed["reason"], "history_trimmed", "{failed}");
    assert_eq!(
        failed["offset"], 3,
        "the position outlives the history: {failed}"
    );

    herald.publish("e", json!(4)).await;
    let live = resumed.expect_publication("e", 4).await;
    assert_eq!(live["data"], 4);
    resumed.expect_quiet().await;
}

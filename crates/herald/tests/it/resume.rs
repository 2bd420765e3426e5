//! Resuming with `Last-Event-ID`: the browser's own reconnect gets every missed
//! publication of every channel exactly once, in order — or is told it cannot.

use serde_json::{Value, json};

use crate::util::{EventStream, Herald, Proto};

over_every_protocol!(
    last_event_id_header_resumes_without_gap_or_duplicate,
    last_event_id_query_parameter_resumes,
    resume_token_covers_every_channel_of_the_stream,
    malformed_last_event_id_reports_recovery_failed_then_streams,
    last_event_id_of_other_channels_reports_recovery_failed,
    reconnecting_while_publishing_loses_nothing,
    non_ascii_last_event_id_reports_recovery_failed,
);

/// Publishes `{"n": n}` for each `n` in `range` into `channel`.
async fn publish_range(herald: &Herald, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        let result = herald.publish(channel, json!({"n": n})).await;
        assert_eq!(
            result["offset"], n,
            "offsets in {channel:?} count up from 1"
        );
    }
}

/// Reads the publications `range` of `channel`, checking offset and data.
async fn expect_range(
    stream: &mut EventStream,
    channel: &str,
    range: std::ops::RangeInclusive<u64>,
) {
    for n in range {
        let publication = stream.expect_publication(channel, n).await;
        assert_eq!(publication["data"], json!({"n": n}), "{publication}");
    }
}

async fn last_event_id_header_resumes_without_gap_or_duplicate(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=r").await;
    let connected = stream.expect("connected").await;
    publish_range(&herald, "r", 1..=3).await;
    expect_range(&mut stream, "r", 1..=3).await;
    let last_id = stream.last_id();
    drop(stream);

    publish_range(&herald, "r", 4..=8).await;

    let mut resumed = herald
        .open(
            herald.events("channel=r").header("last-event-id", &last_id),
            "GET /events?channel=r with Last-Event-ID",
        )
        .await;
    let reconnected = resumed.expect("connected").await;
    assert_eq!(
        reconnected["channels"][0]["epoch"], connected["channels"][0]["epoch"],
        "same epoch: nothing was lost"
    );
    expect_range(&mut resumed, "r", 4..=8).await;

    // Then live data, with no duplicate at the history/live seam.
    publish_range(&herald, "r", 9..=9).await;
    expect_range(&mut resumed, "r", 9..=9).await;
    resumed.expect_quiet().await;

    // The id after recovery resumes again from the right place.
    let id_after_recovery = resumed.last_id();
    drop(resumed);
    publish_range(&herald, "r", 10..=10).await;
    let mut again = herald
        .open(
            herald
                .events("channel=r")
                .header("last-event-id", &id_after_recovery),
            "GET /events?channel=r with the Last-Event-ID after recovery",
        )
        .await;
    again.expect("connected").await;
    expect_range(&mut again, "r", 10..=10).await;
    again.expect_quiet().await;
}

async fn last_event_id_query_parameter_resumes(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=q").await;
    stream.expect("connected").await;
    publish_range(&herald, "q", 1..=2).await;
    expect_range(&mut stream, "q", 1..=2).await;
    let last_id = stream.last_id();
    drop(stream);

    publish_range(&herald, "q", 3..=5).await;

    let request = herald
        .client()
        .get(herald.url("/events"))
        .query(&[("channel", "q"), ("last-event-id", last_id.as_str())]);
    let mut resumed = herald
        .open(request, "GET /events?channel=q&last-event-id=…")
        .await;
    resumed.expect("connected").await;
    expect_range(&mut resumed, "q", 3..=5).await;
    publish_range(&herald, "q", 6..=6).await;
    expect_range(&mut resumed, "q", 6..=6).await;
    resumed.expect_quiet().await;
}

async fn resume_token_covers_every_channel_of_the_stream(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=x&channel=y").await;
    stream.expect("connected").await;
    publish_range(&herald, "x", 1..=2).await;
    publish_range(&herald, "y", 1..=1).await;
    expect_range(&mut stream, "x", 1..=2).await;
    expect_range(&mut stream, "y", 1..=1).await;
    let last_id = stream.last_id();
    drop(stream);

    publish_range(&herald, "y", 2..=3).await;
    publish_range(&herald, "x", 3..=3).await;

    // The same channels in another order are the same stream.
    let mut resumed = herald
        .open(
            herald
                .events("channel=y&channel=x")
                .header("last-event-id", &last_id),
            "GET /events?channel=y&channel=x with Last-Event-ID",
        )
        .await;
    resumed.expect("connected").await;
    let mut missed: Vec<(String, u64)> = Vec::new();
    for _ in 0..3 {
        let publication = resumed.expect("publication").await;
        missed.push((
            publication["channel"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            publication["offset"].as_u64().unwrap_or_default(),
        ));
    }
    // Each channel's missed publications in order; channels may interleave.
    let of = |channel: &str| -> Vec<u64> {
        missed
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, o)| *o)
            .collect()
    };
    assert_eq!(of("x"), [3], "missed publications of x: {missed:?}");
    assert_eq!(of("y"), [2, 3], "missed publications of y: {missed:?}");
    publish_range(&herald, "x", 4..=4).await;
    expect_range(&mut resumed, "x", 4..=4).await;
    resumed.expect_quiet().await;
}

/// Checks a `recovery_failed` event for `channel` with `reason`, whose position is
/// the channel's current one.
fn check_recovery_failed(event: &Value, channel: &str, reason: &str, offset: u64) {
    assert_eq!(event["channel"], channel, "{event}");
    assert_eq!(event["reason"], reason, "{event}");
    assert_eq!(
        event["offset"], offset,
        "live data resumes from here: {event}"
    );
    assert!(event["epoch"].is_string(), "{event}");
}

async fn malformed_last_event_id_reports_recovery_failed_then_streams(proto: Proto) {
    let herald = Herald::start(proto).await;
    publish_range(&herald, "m", 1..=2).await;
    for garbage in ["garbage", "zz.Ab:1", "00000000.e:-1", "....", "\u{1F600}"] {
        let what = format!("GET /events?channel=m with Last-Event-ID {garbage:?}");
        let request = herald
            .client()
            .get(herald.url("/events"))
            .query(&[("channel", "m"), ("last-event-id", garbage)]);
        let mut stream = herald.open(request, &what).await;
        stream.expect("connected").await;
        let failed = stream.expect("recovery_failed").await;
        check_recovery_failed(&failed, "m", "malformed_last_event_id", 2);
    }

    let mut stream = herald
        .open(
            herald
                .events("channel=m")
                .header("last-event-id", "garbage"),
            "GET /events?channel=m with header Last-Event-ID: garbage",
        )
        .await;
    stream.expect("connected").await;
    let failed = stream.expect("recovery_failed").await;
    check_recovery_failed(&failed, "m", "malformed_last_event_id", 2);
    publish_range(&herald, "m", 3..=3).await;
    expect_range(&mut stream, "m", 3..=3).await;
    stream.expect_quiet().await;
}

async fn last_event_id_of_other_channels_reports_recovery_failed(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=one").await;
    stream.expect("connected").await;
    publish_range(&herald, "one", 1..=1).await;
    expect_range(&mut stream, "one", 1..=1).await;
    let id_of_one = stream.last_id();
    drop(stream);

    publish_range(&herald, "two", 1..=1).await;
    let mut other = herald
        .open(
            herald
                .events("channel=two")
                .header("last-event-id", &id_of_one),
            "GET /events?channel=two with the Last-Event-ID of channel one",
        )
        .await;
    other.expect("connected").await;
    let failed = other.expect("recovery_failed").await;
    check_recovery_failed(&failed, "two", "other_channels", 1);
    publish_range(&herald, "two", 2..=2).await;
    expect_range(&mut other, "two", 2..=2).await;
}

async fn reconnecting_while_publishing_loses_nothing(proto: Proto) {
    const TOTAL: u64 = 300;
    const PER_CONNECTION: usize = 17;
    let herald = Herald::start(proto).await;
    let mut stream = herald.subscribe("channel=seam").await;
    stream.expect("connected").await;

    // Publications race the reconnections, so some land while a stream is down,
    // some between subscribe and the history read, some live.
    let publisher = async {
        for n in 1..=TOTAL {
            herald.publish("seam", json!({"n": n})).await;
            if n % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let subscriber = async {
        let mut received: Vec<u64> = Vec::new();
        let mut connections = 1;
        loop {
            for _ in 0..PER_CONNECTION {
                if received.len() as u64 == TOTAL {
                    return (received, connections);
                }
                let publication = stream.expect("publication").await;
                let offset = publication["offset"].as_u64().unwrap_or_default();
                assert_eq!(publication["data"], json!({"n": offset}), "{publication}");
                received.push(offset);
            }
            let last_id = stream.last_id();
            stream = herald
                .open(
                    herald
                        .events("channel=seam")
                        .header("last-event-id", &last_id),
                    "GET /events?channel=seam, reconnecting with Last-Event-ID",
                )
                .await;
            stream.expect("connected").await;
            connections += 1;
        }
    };
    let ((), (received, connections)) = tokio::join!(publisher, subscriber);
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert!(
        received == expected,
        "over {connections} connections, every publication must arrive exactly once, \
         in order; got {received:?}"
    );
    stream.expect_quiet().await;
}

async fn non_ascii_last_event_id_reports_recovery_failed(proto: Proto) {
    let herald = Herald::start(proto).await;
    publish_range(&herald, "m", 1..=2).await;
    // A header that is not even ASCII (obs-text bytes) is malformed too, not ignored:
    // ignoring it would start the stream fresh, a silent gap.
    let not_ascii = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe.caf\xe9:1")
        .expect("obs-text is a valid header value");
    let mut stream = herald
        .open(
            herald
                .events("channel=m")
                .header("last-event-id", not_ascii),
            "GET /events?channel=m with a non-ASCII Last-Event-ID header",
        )
        .await;
    stream.expect("connected").await;
    // Publish first, so a server that ignored the header shows it at once.
    publish_range(&herald, "m", 3..=3).await;
    let failed = stream.expect("recovery_failed").await;
    check_recovery_failed(&failed, "m", "malformed_last_event_id", 2);
    expect_range(&mut stream, "m", 3..=3).await;
}

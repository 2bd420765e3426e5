//! The server HTTP API: Centrifugo's request and reply shapes, so its SDKs work
//! unchanged; clear JSON errors for bad requests.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{API_KEY, Herald, Proto};

over_every_protocol!(
    publish_and_broadcast_reply_like_centrifugo,
    history_pages_like_centrifugo,
    channels_info_and_presence_reply_like_centrifugo,
    api_key_is_required,
    bad_requests_get_json_errors,
);

/// Calls `method` and returns the `result` object, failing on anything else.
async fn result_of(herald: &Herald, method: &str, body: Value) -> Value {
    let (status, reply) = herald.api(method, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{method} {body}: {reply}");
    assert!(
        reply.get("error").is_none(),
        "{method} {body} must not fail: {reply}"
    );
    reply
        .get("result")
        .unwrap_or_else(|| panic!("{method} {body} replied without result: {reply}"))
        .clone()
}

fn offsets(history: &Value) -> Vec<u64> {
    history["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("history result without publications: {history}"))
        .iter()
        .map(|p| {
            p["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("publication without offset: {p}"))
        })
        .collect()
}

async fn publish_and_broadcast_reply_like_centrifugo(proto: Proto) {
    let herald = Herald::start(proto).await;
    let reply = result_of(
        &herald,
        "publish",
        json!({"channel": "p", "data": {"x": 1}}),
    )
    .await;
    let epoch = reply["epoch"]
        .as_str()
        .expect("epoch is a string")
        .to_owned();
    assert!(!epoch.is_empty());
    assert_eq!(reply, json!({"offset": 1, "epoch": epoch}));

    // Centrifugo ignores fields it does not know (newer SDKs send more).
    let reply = result_of(
        &herald,
        "publish",
        json!({"channel": "p", "data": 2, "idempotency_key": "k", "tags": {"a": "b"}}),
    )
    .await;
    assert_eq!(reply["offset"], 2);

    // `Authorization: apikey KEY` works as well as X-API-Key.
    let (status, reply) = herald
        .json_reply(
            herald
                .client()
                .post(herald.url("/api/publish"))
                .header("authorization", format!("apikey {API_KEY}"))
                .json(&json!({"channel": "p", "data": 3})),
            "publish with Authorization: apikey",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["result"]["offset"], 3, "{reply}");

    let reply = result_of(
        &herald,
        "broadcast",
        json!({"channels": ["p", "q", "nope:x"], "data": {"all": true}}),
    )
    .await;
    let responses = reply["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("broadcast result has responses: {reply}"));
    assert_eq!(responses.len(), 3, "one response per channel: {reply}");
    assert_eq!(responses[0]["result"]["offset"], 4, "{reply}");
    assert_eq!(responses[0]["result"]["epoch"], epoch.as_str(), "{reply}");
    assert_eq!(responses[1]["result"]["offset"], 1, "{reply}");
    assert!(responses[1].get("error").is_none(), "{reply}");
    assert_eq!(
        responses[2]["error"]["code"], 102,
        "an unknown namespace fails only its own entry: {reply}"
    );
    assert!(responses[2].get("result").is_none(), "{reply}");
}

async fn history_pages_like_centrifugo(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut epoch = String::new();
    for n in 1..=5 {
        let reply = result_of(
            &herald,
            "publish",
            json!({"channel": "h", "data": {"n": n}}),
        )
        .await;
        epoch = reply["epoch"].as_str().unwrap_or_default().to_owned();
    }
    let binary = result_of(
        &herald,
        "publish",
        json!({"channel": "h", "b64data": "AAEC/w=="}),
    )
    .await;
    assert_eq!(binary["offset"], 6);

    let top = result_of(&herald, "history", json!({"channel": "h"})).await;
    assert_eq!(
        top,
        json!({"publications": [], "offset": 6, "epoch": epoch}),
        "without limit, history returns only the stream position"
    );

    let first_two = result_of(&herald, "history", json!({"channel": "h", "limit": 2})).await;
    assert_eq!(offsets(&first_two), [1, 2], "{first_two}");
    assert_eq!(
        first_two["publications"][0],
        json!({"data": {"n": 1}, "offset": 1})
    );
    assert_eq!(
        (&first_two["offset"], &first_two["epoch"]),
        (&json!(6), &json!(epoch))
    );

    let all = result_of(&herald, "history", json!({"channel": "h", "limit": -1})).await;
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5, 6], "{all}");
    assert_eq!(
        all["publications"][5],
        json!({"b64data": "AAEC/w==", "offset": 6}),
        "binary publications come back as b64data"
    );

    let since = result_of(
        &herald,
        "history",
        json!({"channel": "h", "limit": 10, "since": {"offset": 2, "epoch": epoch}}),
    )
    .await;
    assert_eq!(offsets(&since), [3, 4, 5, 6], "after offset 2: {since}");

    let newest = result_of(
        &herald,
        "history",
        json!({"channel": "h", "limit": 2, "reverse": true}),
    )
    .await;
    assert_eq!(
        offsets(&newest),
        [6, 5],
        "reverse gives the newest first: {newest}"
    );

    let (status, reply) = herald
        .api(
            "history",
            json!({"channel": "h", "limit": 10, "since": {"offset": 2, "epoch": "other"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["error"]["code"], 112,
        "a position from another epoch cannot be recovered: {reply}"
    );

    let removed = result_of(&herald, "history_remove", json!({"channel": "h"})).await;
    assert_eq!(removed, json!({}));
    let after = result_of(&herald, "history", json!({"channel": "h", "limit": -1})).await;
    assert_eq!(
        after,
        json!({"publications": [], "offset": 6, "epoch": epoch}),
        "history_remove drops publications but keeps the position"
    );
}

async fn channels_info_and_presence_reply_like_centrifugo(proto: Proto) {
    let herald = Herald::start(proto).await;
    let mut watched = herald.subscribe("channel=watched&channel=room").await;
    watched.expect("connected").await;
    let mut again = herald.subscribe("channel=watched").await;
    again.expect("connected").await;

    let channels = result_of(&herald, "channels", json!({})).await;
    assert_eq!(
        channels,
        json!({"channels": {
            "watched": {"num_clients": 2},
            "room": {"num_clients": 1},
        }}),
    );
    let filtered = result_of(&herald, "channels", json!({"pattern": "wat*"})).await;
    assert_eq!(
        filtered,
        json!({"channels": {"watched": {"num_clients": 2}}})
    );

    let info = result_of(&herald, "info", json!({})).await;
    let nodes = info["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("info lists nodes: {info}"));
    assert_eq!(nodes.len(), 1, "{info}");
    let node = &nodes[0];
    for field in ["uid", "name", "version"] {
        assert!(node[field].is_string(), "info node has {field}: {info}");
    }
    for field in [
        "num_clients",
        "num_users",
        "num_channels",
        "num_subs",
        "uptime",
    ] {
        assert!(node[field].is_u64(), "info node has {field}: {info}");
    }
    assert_eq!(node["num_clients"], 2, "two streams are open: {info}");
    assert_eq!(node["num_channels"], 2, "{info}");
    assert_eq!(node["num_subs"], 3, "{info}");

    let presence = result_of(&herald, "presence", json!({"channel": "watched"})).await;
    assert!(presence["presence"].is_object(), "{presence}");
    let stats = result_of(&herald, "presence_stats", json!({"channel": "watched"})).await;
    assert!(
        stats["num_clients"].is_u64() && stats["num_users"].is_u64(),
        "{stats}"
    );

    // Closing a stream unsubscribes it.
    drop(again);
    drop(watched);
    let herald = &herald;
    crate::util::eventually(
        crate::util::PROMPTLY,
        "closed streams to leave the channels list",
        || async move {
            let channels = result_of(herald, "channels", json!({})).await;
            (channels == json!({"channels": {}})).then_some(())
        },
    )
    .await;
}

async fn api_key_is_required(proto: Proto) {
    let herald = Herald::start(proto).await;
    let body = json!({"channel": "k", "data": 1});
    let cases = [
        ("no API key", None),
        ("a wrong X-API-Key", Some(("x-api-key", "wrong".to_owned()))),
        (
            "a wrong Authorization: apikey",
            Some(("authorization", "apikey wrong".to_owned())),
        ),
        (
            "a bearer token instead of an API key",
            Some(("authorization", format!("Bearer {API_KEY}"))),
        ),
    ];
    for (what, header) in cases {
        let mut request = herald.client().post(herald.url("/api/publish")).json(&body);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let (status, reply) = herald.json_reply(request, what).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], 101, "{what}: {reply}");
    }
    // Nothing was published.
    let top = result_of(&herald, "history", json!({"channel": "k"})).await;
    assert_eq!(top["offset"], 0, "refused requests must not publish: {top}");
}

async fn bad_requests_get_json_errors(proto: Proto) {
    let herald = Herald::start(proto).await;
    let post = |method: &str, body: &'static str| {
        herald
            .client()
            .post(herald.url(&format!("/api/{method}")))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(body)
    };

    for (what, body) in [
        ("a body that is not JSON", "{\"channel\": "),
        ("a body of the wrong shape", "[1, 2, 3]"),
    ] {
        let (status, reply) = herald.json_reply(post("publish", body), what).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], 107, "{what}: {reply}");
    }

    // Valid JSON without a required field: Centrifugo answers 200 with the error,
    // Herald 400; either way the SDK sees error 107.
    let (_, reply) = herald
        .json_reply(post("publish", "{\"data\": 1}"), "publish without channel")
        .await;
    assert_eq!(
        reply["error"]["code"], 107,
        "publish without channel: {reply}"
    );

    let (status, reply) = herald
        .json_reply(post("no_such_method", "{}"), "an unknown API method")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["error"]["code"], 104, "{reply}");

    let (status, reply) = herald
        .api("publish", json!({"channel": "nope:x", "data": 1}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "errors about the content are 200 with error, as in Centrifugo: {reply}"
    );
    assert_eq!(reply["error"]["code"], 102, "unknown namespace: {reply}");
    assert!(reply.get("result").is_none(), "{reply}");
    for method in ["history", "history_remove", "presence", "presence_stats"] {
        let (status, reply) = herald.api(method, json!({"channel": "nope:x"})).await;
        assert_eq!(status, StatusCode::OK, "{method}: {reply}");
        assert_eq!(reply["error"]["code"], 102, "{method} of nope:x: {reply}");
    }

    let (status, reply) = herald
        .api("publish", json!({"channel": "c", "b64data": "not base64!"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["error"]["code"], 107, "invalid b64data: {reply}");

    // A subscription to an unknown namespace is refused the same way.
    let (status, reply) = herald
        .json_reply(
            herald.events("channel=nope:x"),
            "GET /events?channel=nope:x",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["code"], 102, "{reply}");

    // And the server still works.
    let (status, reply) = herald
        .api("publish", json!({"channel": "c", "data": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["result"]["offset"], 1, "{reply}");
}

/// Sends raw bytes on a fresh connection and returns everything the server
/// answers before closing (or within a few seconds).
async fn raw_exchange(herald: &Herald, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(herald.addr())
        .await
        .expect("connect to herald");
    // The server may answer and close before reading everything we send.
    let _ = socket.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(crate::util::PROMPTLY, socket.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn malformed_http_gets_an_error_status_and_harms_nobody() {
    let herald = Herald::start(Proto::Http1).await;
    let mut stream = herald.subscribe("channel=calm").await;
    stream.expect("connected").await;

    let reply = raw_exchange(&herald, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "a request line that is not HTTP gets 400, got {reply:?}"
    );
    let mut huge = b"GET /events?channel=calm HTTP/1.1\r\nx-filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 32 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let reply = raw_exchange(&herald, &huge).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "a request head over the limit gets 431, got {:?}",
        reply.get(..80)
    );

    herald.publish("calm", json!("still here")).await;
    let publication = stream.expect_publication("calm", 1).await;
    assert_eq!(publication["data"], "still here");
}

//! Bidirectional emulation, as the npm `centrifuge` SDK falls back to it when
//! WebSockets are blocked: a stream (`POST /connection/http_stream`, one JSON
//! message per line; `GET /connection/sse?cf_connect=…`, one `data:` event per
//! message) carries replies and pushes, and later commands go to
//! `POST /emulation` with the `session` and `node` of the connect result.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use herald_auth::{MintClaims, mint_hs256};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{EventStream, Herald, PROMPTLY, Proto, unix_now};

over_every_protocol!(
    http_stream_connects_subscribes_and_receives,
    sse_connects_subscribes_and_receives,
    emulation_refuses_bad_requests_with_json_errors,
);

/// The HMAC secret of the servers in these tests (also used by `uni`).
pub const SECRET: &str = "it-emulation-secret";

/// Starts a Herald verifying HS256 tokens signed with [`SECRET`].
pub async fn start(proto: Proto) -> Herald {
    Herald::builder(proto)
        .args(["--token-hmac-secret", SECRET])
        .start()
        .await
}

/// An HS256 connection token for `sub` with `channels` (server-side
/// subscriptions), valid for an hour.
pub fn token(sub: &str, channels: &[&str]) -> String {
    mint_hs256(
        SECRET,
        &MintClaims {
            sub: sub.into(),
            exp: Some(unix_now() + 3600),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        },
    )
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A stream of newline-delimited JSON messages (HTTP streaming).
pub struct Lines {
    body: Body,
    buffer: Vec<u8>,
    what: String,
}

impl Lines {
    /// Reads `response`, which must be a 200 stream.
    pub async fn new(response: reqwest::Response, what: &str) -> Lines {
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            panic!("{what} must open a stream, got {status}: {body}");
        }
        Lines {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            what: what.to_owned(),
        }
    }

    /// The next message, skipping server pings (`{}`).
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PROMPTLY, self.next_line())
                .await
                .unwrap_or_else(|_| panic!("{}: no message within {PROMPTLY:?}", self.what));
            let message = message.unwrap_or_else(|| panic!("{}: the stream ended", self.what));
            if message != json!({}) {
                return message;
            }
        }
    }

    async fn next_line(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                return Some(serde_json::from_slice(line).unwrap_or_else(|e| {
                    panic!(
                        "{}: a line is not JSON ({e}): {:?}",
                        self.what,
                        String::from_utf8_lossy(line)
                    )
                }));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The next SSE message that is not a ping, as JSON.
async fn next_event(stream: &mut EventStream) -> Value {
    loop {
        let event = stream.next_event(PROMPTLY).await;
        assert_eq!(event.event, "message", "emulation sends plain data events");
        let message = event.json();
        if message != json!({}) {
            return message;
        }
    }
}

/// Posts `commands` (newline-separated, as the SDK encodes them) to `/emulation`
/// for the session of `connect` (a connect result); returns the status and body.
async fn emulate(herald: &Herald, connect: &Value, commands: &str) -> (StatusCode, String) {
    let body = json!({
        "session": connect["session"],
        "node": connect["node"],
        "data": commands,
    });
    let response = herald
        .client()
        .post(herald.url("/emulation"))
        .json(&body)
        .send()
        .await
        .expect("POST /emulation");
    assert_eq!(response.version(), herald.proto().version());
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Checks a connect reply over emulation and returns its result.
fn connect_result(reply: &Value) -> Value {
    assert_eq!(reply["id"], 1, "the connect reply comes first: {reply}");
    let result = reply["connect"].clone();
    assert!(
        result["session"].as_str().is_some_and(|s| !s.is_empty()),
        "emulation needs the session id: {reply}"
    );
    assert!(
        result["node"].as_str().is_some_and(|s| !s.is_empty()),
        "emulation needs the node id: {reply}"
    );
    assert_eq!(result["pong"], true, "{reply}");
    result
}

const CONNECT: &str = r#"{"id":1,"connect":{"token":"TOKEN","name":"js"}}"#;
const SUBSCRIBE: &str = r#"{"id":2,"subscribe":{"channel":"news"}}"#;

async fn http_stream_connects_subscribes_and_receives(proto: Proto) {
    let herald = start(proto).await;
    let response = herald
        .client()
        .post(herald.url("/connection/http_stream"))
        .header("content-type", "application/json")
        .body(CONNECT.replace("TOKEN", &token("alice", &[])))
        .send()
        .await
        .expect("POST /connection/http_stream");
    assert_eq!(response.version(), proto.version());
    let mut stream = Lines::new(response, "http_stream").await;
    let connect = connect_result(&stream.next().await);

    let (status, body) = emulate(&herald, &connect, SUBSCRIBE).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let reply = stream.next().await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply["subscribe"].is_object(), "{reply}");

    herald.publish("news", json!({"n": 1})).await;
    let push = stream.next().await;
    assert_eq!(push["push"]["channel"], "news", "{push}");
    assert_eq!(push["push"]["pub"]["data"], json!({"n": 1}), "{push}");
    assert_eq!(push["push"]["pub"]["offset"], 1, "{push}");

    // A pong and a publish in one request, answered down the stream.
    let (status, _) = emulate(
        &herald,
        &connect,
        "{}\n{\"id\":3,\"history\":{\"channel\":\"news\",\"limit\":-1}}",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let reply = stream.next().await;
    assert_eq!(reply["id"], 3, "{reply}");
}

async fn sse_connects_subscribes_and_receives(proto: Proto) {
    let herald = start(proto).await;
    let connect = CONNECT.replace("TOKEN", &token("bob", &[]));
    let query: String = url_encode(&connect);
    let mut stream = herald
        .open(
            herald
                .client()
                .get(herald.url(&format!("/connection/sse?cf_connect={query}"))),
            "GET /connection/sse",
        )
        .await;
    let connect = connect_result(&next_event(&mut stream).await);

    let (status, body) = emulate(&herald, &connect, SUBSCRIBE).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let reply = next_event(&mut stream).await;
    assert_eq!(reply["id"], 2, "{reply}");

    herald.publish("news", json!({"n": 1})).await;
    let push = next_event(&mut stream).await;
    assert_eq!(push["push"]["channel"], "news", "{push}");
    assert_eq!(push["push"]["pub"]["data"], json!({"n": 1}), "{push}");

    // The server API disconnects: the stream tells why, then ends.
    let (status, reply) = herald
        .api(
            "disconnect",
            json!({"user": "bob", "disconnect": {"code": 4000, "reason": "bye"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let push = next_event(&mut stream).await;
    assert_eq!(push["push"]["disconnect"]["code"], 4000, "{push}");
    stream.expect_end(PROMPTLY).await;

    // The session is gone with its stream.
    let (status, body) = emulate(&herald, &connect, SUBSCRIBE).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

async fn emulation_refuses_bad_requests_with_json_errors(proto: Proto) {
    let herald = start(proto).await;
    let post = |body: String| {
        herald
            .client()
            .post(herald.url("/emulation"))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = [
        (
            json!({"session": "nope", "node": "", "data": "{}"}).to_string(),
            StatusCode::NOT_FOUND,
        ),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
        (
            json!({"session": "s", "data": {"id": 1}}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"session": "s", "data": "x".repeat(200_000)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (body, want) in cases {
        let shown: String = body.chars().take(60).collect();
        let (status, reply) = herald.json_reply(post(body), "POST /emulation").await;
        assert_eq!(status, want, "{shown}: {reply}");
        assert!(reply["error"]["code"].is_u64(), "{reply}");
        assert!(reply["error"]["message"].is_string(), "{reply}");
    }

    // Opening a stream: without the connect command, or with a body too large.
    let (status, reply) = herald
        .json_reply(
            herald.client().get(herald.url("/connection/sse")),
            "GET /connection/sse",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = herald
        .json_reply(
            herald
                .client()
                .post(herald.url("/connection/http_stream"))
                .body("x".repeat(200_000)),
            "POST /connection/http_stream",
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
    let (status, reply) = herald
        .json_reply(
            herald.client().get(herald.url("/connection/http_stream")),
            "GET /connection/http_stream",
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{reply}");
}

/// Percent-encodes a query parameter value.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! Unidirectional transports for clients with no SDK (Centrifugo's uni protocol):
//! one bare connect request, then bare pushes only — `{"connect":{…}}` first, then
//! publications of the token's channels — with `{}` as the ping.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

use crate::emulation::{Lines, start, token, url_encode};
use crate::util::{Herald, PROMPTLY, Proto};

over_every_protocol!(
    uni_http_stream_receives_connect_push_and_publications,
    uni_sse_receives_connect_push_and_publications,
    uni_streams_refuse_malformed_connect_requests,
);

/// Checks the `connect` push of a uni connection with server-side channel `news`.
fn check_connect_push(push: &Value) {
    let connect = &push["connect"];
    assert!(
        connect["client"].as_str().is_some_and(|c| !c.is_empty()),
        "the first message is the connect push: {push}"
    );
    assert!(connect["subs"]["news"].is_object(), "{push}");
    assert!(
        connect["pong"].is_null(),
        "uni clients never answer pings: {push}"
    );
    assert!(
        push.get("push").is_none() && push.get("id").is_none(),
        "{push}"
    );
}

/// Checks a bare publication push.
fn check_publication(push: &Value, n: u64) {
    assert_eq!(push["channel"], "news", "{push}");
    assert_eq!(push["pub"]["data"], json!({"n": n}), "{push}");
    assert_eq!(push["pub"]["offset"], n, "{push}");
}

async fn uni_http_stream_receives_connect_push_and_publications(proto: Proto) {
    let herald = start(proto).await;
    let response = post_uni_http_stream(&herald, "carol").await;
    assert_eq!(response.version(), proto.version());
    let mut stream = Lines::new(response, "uni_http_stream").await;
    check_connect_push(&stream.next().await);
    herald.publish("news", json!({"n": 1})).await;
    check_publication(&stream.next().await, 1);
    herald.publish("news", json!({"n": 2})).await;
    check_publication(&stream.next().await, 2);
}

async fn uni_sse_receives_connect_push_and_publications(proto: Proto) {
    let herald = start(proto).await;
    let connect = json!({"token": token("dave", &["news"])}).to_string();
    let url = herald.url(&format!(
        "/connection/uni_sse?cf_connect={}",
        url_encode(&connect)
    ));
    let mut stream = herald
        .open(herald.client().get(url), "GET /connection/uni_sse")
        .await;
    let mut next = async || loop {
        let event = stream.next_event(PROMPTLY).await;
        let message = event.json();
        if message != json!({}) {
            return message;
        }
    };
    check_connect_push(&next().await);
    herald.publish("news", json!({"n": 1})).await;
    check_publication(&next().await, 1);
}

async fn uni_streams_refuse_malformed_connect_requests(proto: Proto) {
    let herald = start(proto).await;
    let (status, reply) = herald
        .json_reply(
            herald
                .client()
                .post(herald.url("/connection/uni_http_stream"))
                .body("{not json"),
            "POST /connection/uni_http_stream",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = herald
        .json_reply(
            herald
                .client()
                .get(herald.url("/connection/uni_sse?cf_connect=%5B")),
            "GET /connection/uni_sse",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");

    // A token the server cannot verify: the stream opens and says why it closes.
    let response = herald
        .client()
        .post(herald.url("/connection/uni_http_stream"))
        .body(r#"{"token":"not-a-jwt"}"#)
        .send()
        .await
        .expect("POST /connection/uni_http_stream");
    let mut stream = Lines::new(response, "uni_http_stream").await;
    let push = stream.next().await;
    assert_eq!(push["disconnect"]["code"], 3500, "{push}");
}

/// The client end of a uni WebSocket.
type UniWebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next frame the server sent on `ws` (within `PROMPTLY`).
async fn next_frame(ws: &mut UniWebSocket) -> Message {
    tokio::time::timeout(PROMPTLY, ws.next())
        .await
        .expect("a frame in time")
        .expect("the socket is open")
        .expect("a valid frame")
}

/// A uni WebSocket (HTTP/1.1 upgrade on plain TCP) of user `sub`, whose token
/// grants channel `news`, with the connect request sent as the first message.
async fn open_uni_websocket(herald: &Herald, sub: &str) -> UniWebSocket {
    let uri = format!("ws://{}/connection/uni_websocket", herald.addr());
    let (mut ws, _) = ClientBuilder::new()
        .uri(&uri)
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect the uni websocket");
    let connect = json!({"token": token(sub, &["news"])}).to_string();
    ws.send(Message::text(connect)).await.expect("send connect");
    ws
}

/// Opens a uni HTTP stream of user `sub`, whose token grants channel `news`.
async fn post_uni_http_stream(herald: &Herald, sub: &str) -> reqwest::Response {
    let body = json!({"token": token(sub, &["news"])}).to_string();
    herald
        .client()
        .post(herald.url("/connection/uni_http_stream"))
        .body(body)
        .send()
        .await
        .expect("POST /connection/uni_http_stream")
}

/// A uni WebSocket: the connect request as the first message, then pushes, one
/// per message.
#[tokio::test]
async fn uni_websocket_receives_connect_push_and_publications() {
    let herald = start(Proto::Http1).await;
    let mut ws = open_uni_websocket(&herald, "erin").await;
    let mut next = async || loop {
        let message = next_frame(&mut ws).await;
        if let Some(text) = message.as_text() {
            let value: Value = serde_json::from_str(text).expect("JSON");
            if value != json!({}) {
                return value;
            }
        }
    };
    check_connect_push(&next().await);
    let (_, info) = herald.api("info", json!({})).await;
    assert_eq!(
        info["result"]["nodes"][0]["num_clients"], 1,
        "the server API counts unidirectional WebSocket clients: {info}"
    );
    herald.publish("news", json!({"n": 1})).await;
    check_publication(&next().await, 1);
}

/// SIGTERM: a uni WebSocket and a uni HTTP stream are both told `shutdown`
/// (3001, reconnect) with the `disconnect` push, then the process exits 0.
#[tokio::test]
async fn the_drain_disconnects_uni_connections_with_shutdown() {
    let mut herald = start(Proto::Http1).await;
    let mut ws = open_uni_websocket(&herald, "erin").await;
    let response = post_uni_http_stream(&herald, "carol").await;
    let mut stream = Lines::new(response, "uni_http_stream").await;
    check_connect_push(&stream.next().await);

    herald.terminate();

    let push = stream.next().await;
    assert_eq!(push["disconnect"]["code"], 3001, "{push}");
    assert_eq!(push["disconnect"]["reason"], "shutdown", "{push}");
    let mut pushes = Vec::new();
    let close = loop {
        let message = next_frame(&mut ws).await;
        if let Some(text) = message.as_text() {
            pushes.push(serde_json::from_str::<Value>(text).expect("JSON"));
        } else if let Some(close) = message.as_close() {
            break (u16::from(close.0), close.1.to_owned());
        }
    };
    assert_eq!(close, (3001, "shutdown".to_owned()), "the close frame");
    let last = pushes.last().expect("pushes before the close");
    assert_eq!(last["disconnect"]["code"], 3001, "{pushes:?}");
    let status = herald
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("herald still running 10 s after SIGTERM"));
    assert!(status.success(), "herald exits 0 after draining: {status}");
}

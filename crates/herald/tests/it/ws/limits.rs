//! Limits and bad input: each gets the protocol's answer — a WebSocket close code
//! for what breaks the connection, an error reply for a refused command — and the
//! server goes on serving everyone else.

use serde_json::json;
use tokio_websockets::{Config, Message};

use super::{SECRET, token};
use crate::util::ws::Route;
use crate::util::{Herald, Proto, Ws};

over_every_protocol!(
    frames_over_the_limit_or_not_utf8_are_closed,
    malformed_commands_are_bad_requests,
    refused_commands_get_error_replies,
    bad_connection_tokens,
);

/// Largest message the servers of these tests accept.
const MAX_MESSAGE: usize = 1024;

/// A Herald with small messages, tokens, anonymous connections but no anonymous
/// subscriptions.
async fn start(proto: Proto) -> Herald {
    Herald::builder(proto)
        .args([
            "--allow-anonymous-connect",
            "--token-hmac-secret",
            SECRET,
            "--max-message-bytes",
            &MAX_MESSAGE.to_string(),
        ])
        .without_anonymous()
        .start()
        .await
}

/// A client subscribed (server-side, from its token) to `watch`, to check that the
/// server still serves others.
async fn watcher(herald: &Herald) -> Ws {
    let (ws, result) =
        Ws::connected(herald, json!({"token": token("watcher", &["watch"], 3600)})).await;
    assert!(result["subs"]["watch"].is_object(), "{result}");
    ws
}

/// Publishes to `watch` and checks the watcher receives it.
async fn still_served(herald: &Herald, watcher: &mut Ws, n: u64) {
    herald.publish("watch", json!({"n": n})).await;
    let publication = watcher.expect_publication("watch").await;
    assert_eq!(
        publication["data"]["n"], n,
        "the server still serves others"
    );
}

/// A connected anonymous client.
async fn client(herald: &Herald) -> Ws {
    Ws::connected(herald, json!({})).await.0
}

async fn frames_over_the_limit_or_not_utf8_are_closed(proto: Proto) {
    let herald = start(proto).await;
    let mut watcher = watcher(&herald).await;

    // A message just under the limit is fine (padding is an unknown field).
    let mut ws = client(&herald).await;
    let fits = json!({"id": 7, "ping": {}, "pad": ""}).to_string();
    let padded = json!({"id": 7, "ping": {}, "pad": "p".repeat(MAX_MESSAGE - fits.len())});
    assert_eq!(padded.to_string().len(), MAX_MESSAGE);
    ws.send_text(padded.to_string()).await;
    assert_eq!(ws.reply(7).await["ping"], json!({}));

    // One byte more in one frame: 1009.
    let over = json!({"id": 8, "ping": {}, "pad": "p".repeat(MAX_MESSAGE + 1 - fits.len())});
    ws.send_text(over.to_string()).await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!(code, 1009, "message too big: {reason:?}");

    // Over the limit in small fragments, each under it: 1009 as well.
    let route = if proto.is_h2() {
        Route::Http2
    } else {
        Route::Http1
    };
    let mut ws = Ws::open_with(&herald, route, Config::default().frame_size(100)).await;
    ws.connect(json!({})).await;
    ws.send_text(json!({"id": 2, "ping": {}, "pad": "p".repeat(3 * MAX_MESSAGE)}).to_string())
        .await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!(code, 1009, "fragmented message too big: {reason:?}");
    still_served(&herald, &mut watcher, 1).await;

    // Invalid UTF-8 in a text frame: 1007, before and after connect.
    let mut ws = Ws::open(&herald).await;
    ws.send_text(&b"{\"id\":1,\"connect\":{\"name\":\"\xff\xfe\"}}"[..])
        .await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!(code, 1007, "invalid UTF-8 before connect: {reason:?}");
    let mut ws = client(&herald).await;
    ws.send_text(&b"{\"id\":2,\"ping\":{}}\xc3"[..]).await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!(code, 1007, "invalid UTF-8 after connect: {reason:?}");

    still_served(&herald, &mut watcher, 2).await;
}

async fn malformed_commands_are_bad_requests(proto: Proto) {
    let herald = start(proto).await;
    let mut watcher = watcher(&herald).await;

    let cases: [(&str, bool, &str); 6] = [
        ("malformed JSON", false, "{\"id\":1,\"connect\":"),
        (
            "malformed JSON after connect",
            true,
            "{\"id\":2,\"ping\":{}",
        ),
        ("not an object", true, "[1,2,3]"),
        ("an unknown method", true, "{\"id\":2,\"frobnicate\":{}}"),
        (
            "an unknown method before connect",
            false,
            "{\"id\":1,\"frobnicate\":{}}",
        ),
        (
            "a command before connect",
            false,
            "{\"id\":1,\"subscribe\":{\"channel\":\"watch\"}}",
        ),
    ];
    for (what, connect_first, frame) in cases {
        let mut ws = if connect_first {
            client(&herald).await
        } else {
            Ws::open(&herald).await
        };
        ws.send_text(frame).await;
        let (code, reason) = ws.expect_close().await;
        assert_eq!(code, 3501, "{what} ({frame}) is a bad request: {reason:?}");
        assert_eq!(reason, "bad request", "{what}");
    }
    // A second connect on a connected client is a bad request too.
    let mut ws = client(&herald).await;
    ws.send_command("connect", json!({})).await;
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 3501, "a second connect");

    still_served(&herald, &mut watcher, 1).await;
}

async fn refused_commands_get_error_replies(proto: Proto) {
    let herald = start(proto).await;
    let mut watcher = watcher(&herald).await;
    let mut ws = client(&herald).await;

    let refusals = [
        (
            "subscribe",
            json!({"channel": "secret"}),
            103,
            "permission denied",
        ),
        (
            "subscribe",
            json!({"channel": "nope:chan"}),
            102,
            "unknown namespace",
        ),
        (
            "rpc",
            json!({"method": "getUser", "data": {"id": 1}}),
            108,
            "no RPC handler",
        ),
        (
            "publish",
            json!({"channel": "watch", "data": {"from": "anon"}}),
            103,
            "client publish not allowed",
        ),
    ];
    for (method, params, code, what) in refusals {
        let reply = ws.call(method, params).await;
        assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: the error says what is wrong: {reply}"
        );
    }
    // The connection survives error replies.
    ws.request("ping", json!({})).await;
    still_served(&herald, &mut watcher, 1).await;
    ws.expect_quiet(crate::util::QUIET).await;
}

async fn bad_connection_tokens(proto: Proto) {
    let herald = start(proto).await;
    let mut watcher = watcher(&herald).await;

    // A token that does not verify: close 3500 (terminal for SDKs).
    let forged = herald_auth::mint_hs256(
        "not-the-secret",
        &herald_auth::MintClaims {
            sub: "mallory".into(),
            exp: None,
            channels: vec!["watch".into()],
        },
    );
    for bad in [forged.as_str(), "not-a-jwt"] {
        let mut ws = Ws::open(&herald).await;
        ws.send_command("connect", json!({"token": bad})).await;
        let (code, reason) = ws.expect_close().await;
        assert_eq!(code, 3500, "invalid token {bad:?}: {reason:?}");
    }

    // An expired token: error 109, so the SDK refreshes it and connects again.
    let mut ws = Ws::open(&herald).await;
    let reply = ws
        .call(
            "connect",
            json!({"token": token("alice", &["watch"], -120)}),
        )
        .await;
    assert_eq!(reply["error"]["code"], 109, "token expired: {reply}");

    still_served(&herald, &mut watcher, 1).await;
    // Nothing was subscribed for the refused clients: the watcher is alone.
    let (_, reply) = herald.api("channels", json!({})).await;
    assert_eq!(
        reply["result"]["channels"]["watch"]["num_clients"], 1,
        "{reply}"
    );
    // Binary frames carry JSON too; a clean close frame from the client is fine.
    let mut ws = client(&herald).await;
    ws.send(Message::binary(&b"{\"id\":9,\"ping\":{}}"[..]))
        .await;
    assert!(ws.reply(9).await["ping"].is_object());
    ws.close().await;
}

/// A plain `GET` of the WebSocket path (no upgrade) is answered with a clear 400,
/// and the bytes the client sent after it (a pipelined request) are not lost: the
/// server reads the head itself first, then hands everything it read on.
#[tokio::test]
async fn a_get_without_upgrade_is_refused_and_the_next_request_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let herald = Herald::start(Proto::Http1).await;
    let mut socket = tokio::net::TcpStream::connect(herald.addr())
        .await
        .expect("connect");
    socket
        .write_all(
            b"GET /connection/websocket HTTP/1.1\r\nHost: herald\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send two requests");
    let mut answer = Vec::new();
    tokio::time::timeout(crate::util::PROMPTLY, socket.read_to_end(&mut answer))
        .await
        .expect("the server answers both and closes")
        .expect("read the answers");
    let answer = String::from_utf8_lossy(&answer);
    // Status lines; the second response follows the first's body directly.
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answer[at..].split("\r\n").next())
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 400 Bad Request", "HTTP/1.1 200 OK"],
        "{answer}"
    );
    assert!(
        answer.contains("expected a WebSocket upgrade request"),
        "the refusal says why: {answer}"
    );
}

//! SIGTERM: every WebSocket, on HTTP/1.1 and HTTP/2, is closed with 3001
//! (`shutdown`, reconnect), then the process exits 0.

use std::time::Duration;

use serde_json::json;
use tokio_websockets::Config;

use crate::util::ws::Route;
use crate::util::{Herald, Proto, Ws};

#[tokio::test]
async fn sigterm_closes_websockets_with_shutdown_plain() {
    sigterm_closes_websockets(Proto::H2c).await;
}

#[tokio::test]
async fn sigterm_closes_websockets_with_shutdown_tls() {
    sigterm_closes_websockets(Proto::H2Tls).await;
}

async fn sigterm_closes_websockets(proto: Proto) {
    let mut herald = Herald::builder(proto)
        .args(["--allow-anonymous-connect"])
        .start()
        .await;
    let mut clients = Vec::new();
    for route in [Route::Http1, Route::Http2] {
        let mut ws = Ws::open_with(&herald, route, Config::default()).await;
        ws.connect(json!({})).await;
        ws.subscribe("drain").await;
        clients.push((route, ws));
    }
    // One more that opened the WebSocket but never connected.
    clients.push((Route::Http1, Ws::open(&herald).await));

    herald.terminate();

    for (route, ws) in &mut clients {
        let (code, reason) = ws.expect_close().await;
        assert_eq!(code, 3001, "{route:?}: shutdown: {reason:?}");
        assert_eq!(reason, "shutdown", "{route:?}");
    }
    let status = herald
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("herald still running 10 s after SIGTERM"));
    assert!(status.success(), "herald exits 0 after draining: {status}");
}

//! SIGTERM drains: every open stream is told to reconnect, then the process exits 0.

use std::time::Duration;

use crate::util::{Herald, PROMPTLY, Proto};

/// On plain TCP an HTTP/1.1 and an h2c stream; on TLS an HTTP/1.1 (ALPN
/// `http/1.1`) and an h2 stream.
#[tokio::test]
async fn sigterm_tells_streams_to_reconnect_and_exits_zero_plain() {
    sigterm_drains(Proto::H2c).await;
}

#[tokio::test]
async fn sigterm_tells_streams_to_reconnect_and_exits_zero_tls() {
    sigterm_drains(Proto::H2Tls).await;
}

async fn sigterm_drains(proto: Proto) {
    let mut herald = Herald::start(proto).await;
    let h1 = herald.new_client(false);
    let h2 = herald.new_client(true);
    let mut streams = Vec::new();
    for (client, version, name) in [
        (&h1, reqwest::Version::HTTP_11, "HTTP/1.1"),
        (&h2, reqwest::Version::HTTP_2, "HTTP/2"),
    ] {
        let what = format!("{name} stream ({proto:?} server)");
        let response = client
            .get(herald.url("/events?channel=drain"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(response.version(), version, "{what}");
        let mut stream = crate::util::EventStream::new(response, what);
        stream.expect("connected").await;
        streams.push(stream);
    }

    herald.terminate();

    for stream in &mut streams {
        let disconnect = stream.expect("disconnect").await;
        assert_eq!(disconnect["reason"], "shutdown", "{disconnect}");
        assert_eq!(disconnect["reconnect"], true, "{disconnect}");
        assert_eq!(disconnect["code"], 3001, "{disconnect}");
        stream.expect_end(PROMPTLY).await;
    }

    let status = herald
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("herald still running 10 s after SIGTERM"));
    assert!(
        status.success(),
        "herald must exit 0 after draining, got {status}"
    );
}

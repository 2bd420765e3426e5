//! A subscriber that stops reading is disconnected; it never holds back the others.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{EventStream, Herald, PROMPTLY, Proto, eventually, metric};

over_every_protocol!(stalled_subscriber_is_disconnected_and_others_get_everything);

const PUBLICATIONS: u64 = 2_000;
/// Roughly 4 KiB per publication: 8 MB in all, more than any socket buffer and
/// HTTP/2 flow-control window between Herald and a client that stopped reading.
const PADDING: usize = 4000;
/// Publications the test sends before reading them from the healthy subscriber:
/// well inside its 64 KiB queue, so the healthy subscriber is never "slow" however
/// the machine schedules the test.
const WINDOW: u64 = 8;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A subscriber that asked for the stream and then never reads.
enum Stalled {
    /// HTTP/1.1: a raw socket with a tiny receive buffer.
    Socket(TcpStream),
    /// HTTP/2: a stream whose body is never polled, so its flow-control window
    /// closes once the client's buffer is full.
    H2(EventStream),
}

impl Stalled {
    async fn open(herald: &Herald, proto: Proto, channel: &str) -> Stalled {
        if proto.is_h2() {
            // Its own connection, so the healthy stream and the API calls never share
            // a connection window with it.
            let client = herald.new_client(true);
            let response = client
                .get(herald.url(&format!("/events?channel={channel}")))
                .send()
                .await
                .expect("open the stalled HTTP/2 stream");
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            Stalled::H2(EventStream::new(response, "the stalled stream".into()))
        } else {
            Stalled::Socket(raw_subscriber(herald.addr(), channel).await)
        }
    }

    /// Reads whatever was buffered for the stalled subscriber and checks that the
    /// server ended the stream: returns the bytes (or events) that got through.
    async fn drain_to_end(self) -> usize {
        match self {
            Stalled::Socket(mut socket) => {
                let mut received = 0usize;
                let mut buffer = vec![0u8; 64 * 1024];
                let drained = tokio::time::timeout(PROMPTLY, async {
                    loop {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => received += n,
                        }
                    }
                })
                .await;
                assert!(
                    drained.is_ok(),
                    "the stalled connection must be closed by the server \
                     (read {received} bytes, no EOF)"
                );
                received
            }
            Stalled::H2(mut stream) => {
                let mut events = 0usize;
                loop {
                    match stream.try_next_event(PROMPTLY).await {
                        Ok(Some(_)) => events += 1,
                        Ok(None) => break,
                        Err(_) => panic!(
                            "the stalled HTTP/2 stream must be ended by the server \
                             (read {events} events, then nothing for {PROMPTLY:?})"
                        ),
                    }
                }
                events * PADDING
            }
        }
    }
}

/// An HTTP/1.1 connection with a tiny receive buffer that sends the stream request
/// and never reads.
async fn raw_subscriber(addr: SocketAddr, channel: &str) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("set SO_RCVBUF before connecting");
    socket.connect(&addr.into()).expect("connect to herald");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut stream = TcpStream::from_std(socket.into()).expect("tokio stream");
    let request = format!(
        "GET /events?channel={channel} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream
}

async fn stalled_subscriber_is_disconnected_and_others_get_everything(proto: Proto) {
    let herald = Herald::builder(proto)
        .args(["--client-queue-max-bytes", "65536", "--write-timeout", "2s"])
        .start()
        .await;
    let stalled = Stalled::open(&herald, proto, "firehose").await;
    let mut healthy = herald.subscribe("channel=firehose").await;
    healthy.expect("connected").await;
    // Both subscribed before the first publication.
    let herald_ref = &herald;
    eventually(PROMPTLY, "both subscribers to be counted", || async move {
        let (_, reply) = herald_ref.api("channels", json!({})).await;
        (reply["result"]["channels"]["firehose"]["num_clients"] == 2).then_some(())
    })
    .await;

    let padding = "x".repeat(PADDING);
    let mut offset = 0;
    while offset < PUBLICATIONS {
        let batch = WINDOW.min(PUBLICATIONS - offset);
        for _ in 0..batch {
            offset += 1;
            let result = herald
                .publish("firehose", json!({"n": offset, "pad": padding}))
                .await;
            assert_eq!(result["offset"], offset);
        }
        for n in offset - batch + 1..=offset {
            let publication = healthy.expect_publication("firehose", n).await;
            assert_eq!(
                publication["data"]["n"], n,
                "the healthy subscriber gets every publication in order"
            );
        }
    }
    healthy.expect_quiet().await;

    // The stalled one was cut off: its queue overflowed ("slow") or a write to it
    // blocked past --write-timeout ("write_timeout"); only the healthy one is open.
    let version = proto.metrics_label();
    let herald_ref = &herald;
    let mut last_metrics = String::new();
    let last = &mut last_metrics;
    let cut_off = tokio::time::timeout(WRITE_TIMEOUT + PROMPTLY, async move {
        loop {
            let text = herald_ref.metrics().await;
            let disconnects: f64 = ["slow", "write_timeout"]
                .iter()
                .filter_map(|reason| {
                    metric(&text, "herald_disconnects_total", &[("reason", reason)])
                })
                .sum();
            let open = metric(
                &text,
                "herald_connections",
                &[("transport", "sse"), ("http_version", version)],
            );
            *last = text;
            if disconnects >= 1.0 && open == Some(1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "a subscriber that stopped reading must be disconnected within \
         --write-timeout {WRITE_TIMEOUT:?} (+{PROMPTLY:?}): expected \
         herald_disconnects_total{{reason=\"slow\"|\"write_timeout\"}} >= 1 and \
         herald_connections{{http_version=\"{version}\"}} == 1 (only the healthy \
         stream); /metrics:\n{last_metrics}"
    );

    // What the stalled subscriber had buffered ends: the server closed its stream,
    // having sent far less than was published.
    let received = stalled.drain_to_end().await;
    assert!(
        received < PUBLICATIONS as usize * PADDING,
        "the stalled subscriber cannot have received everything ({received} bytes)"
    );

    // The healthy stream is still live.
    herald
        .publish("firehose", json!({"n": PUBLICATIONS + 1}))
        .await;
    healthy
        .expect_publication("firehose", PUBLICATIONS + 1)
        .await;
}

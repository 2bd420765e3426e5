//! `herald-bench fanout --http 2` against a real Herald (started in-process on a
//! free loopback port, in cleartext and with TLS): SSE streams, Centrifuge
//! WebSockets and raw WebSockets, each as HTTP/2 streams (WebSockets by extended
//! CONNECT), get every publication exactly once, and the server counts them as
//! HTTP/2 connections.

mod common;

use std::sync::Arc;

use common::{Herald, TOKEN_SECRET};
use herald_auth::MintClaims;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Subscribers of each run.
const SUBSCRIBERS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_h2c() {
    fanout_over_http2(Herald::start(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_h2_with_tls() {
    fanout_over_http2(Herald::start(true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_over_h2_is_reported_with_its_status() {
    let herald = Herald::start(false).await;
    // An SSE request without a channel is refused with 400.
    let args = fanout_args("sse", &herald.url("http", "/events"), &[]);
    let output = herald.run("fanout", &args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("/events: HTTP 400: {"), "{stderr}");
}

async fn fanout_over_http2(herald: Herald) {
    // The raw WebSocket is Herald's unidirectional one: its connection token
    // subscribes it to the one channel, `bench-0`.
    let token = herald_auth::mint_hs256(
        TOKEN_SECRET,
        &MintClaims {
            sub: "bench".into(),
            exp: None,
            channels: vec!["bench-0".into()],
        },
    );
    let uni = format!(
        "/connection/uni_websocket?cf_connect={}",
        percent_encode(&format!(r#"{{"token":"{token}"}}"#))
    );
    let runs: [(&str, &str, &str, &[&str]); 5] = [
        (
            "sse",
            "http",
            "/events?channel={channel}",
            &["--channels=3"],
        ),
        (
            "sse",
            "http",
            "/events?channel={channel}",
            &["--channels=3", "--streams-per-connection=8"],
        ),
        (
            "centrifuge",
            "ws",
            "/connection/websocket",
            &["--channels=3"],
        ),
        (
            "centrifuge",
            "ws",
            "/connection/websocket",
            &["--channels=3", "--streams-per-connection=8"],
        ),
        ("ws", "ws", &uni, &["--channels=1"]),
    ];
    for (protocol, scheme, path, options) in runs {
        let url = herald.url(scheme, path);
        let results = fanout(&herald, protocol, &url, options).await;
        let what = format!("{protocol} {options:?}");
        assert_eq!(results["http"], "HTTP/2", "{what}");
        assert_eq!(results["connect"]["held"], SUBSCRIBERS, "{what}: {results}");
        let step = &results["steps"][0];
        let expected = step["expected"].as_u64().expect("expected deliveries");
        assert!(expected >= SUBSCRIBERS, "{what}: {step}");
        assert_eq!(step["received"], expected, "{what}: {step}");
        for count in ["lost", "duplicates", "unexpected", "publish_errors"] {
            assert_eq!(step[count], 0, "{what}: {count}: {step}");
        }
    }
    let metrics = metrics(&herald).await;
    for (transport, runs) in [("sse", 2), ("websocket", 2), ("uni_websocket", 1)] {
        let line = format!(
            "herald_connections_accepted_total{{transport=\"{transport}\",http_version=\"2\"}} {}",
            runs * SUBSCRIBERS
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in the server's metrics:\n{metrics}"
        );
    }
}

/// Runs `herald-bench fanout --http 2` (one short step, nothing may be lost)
/// and returns its JSON results.
async fn fanout(herald: &Herald, protocol: &str, url: &str, options: &[&str]) -> Value {
    let args = fanout_args(protocol, url, options);
    herald.results("fanout", &args).await
}

/// The arguments of `herald-bench fanout --http 2`: one short step.
fn fanout_args(protocol: &str, url: &str, options: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--http=2".to_owned(),
        format!("--protocol={protocol}"),
        format!("--url={url}"),
        format!("--subscribers={SUBSCRIBERS}"),
        "--rates=200".to_owned(),
        "--duration=1s".to_owned(),
        "--warmup=200ms".to_owned(),
        "--drain-timeout=10s".to_owned(),
    ];
    args.extend(options.iter().map(|&option| option.to_owned()));
    args
}

/// The server's `/metrics` (HTTP/1.1, trusting only its own certificate).
async fn metrics(herald: &Herald) -> String {
    let tcp = TcpStream::connect(herald.addr).await.expect("connect");
    let Some(cert) = &herald.cert else {
        return get_metrics(tcp).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::from(herald.addr.ip());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    get_metrics(tls).await
}

/// `GET /metrics` on a fresh connection; the body.
async fn get_metrics(mut io: impl AsyncRead + AsyncWrite + Unpin) -> String {
    io.write_all(b"GET /metrics HTTP/1.1\r\nhost: herald\r\nconnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    io.read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

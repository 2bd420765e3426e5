//! `herald-bench fanout --http 2` against a real Herald (started in-process on a
//! free loopback port, in cleartext and with TLS): SSE streams, Centrifuge
//! WebSockets and raw WebSockets, each as HTTP/2 streams (WebSockets by extended
//! CONNECT), get every publication exactly once, and the server counts them as
//! HTTP/2 connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use herald_auth::{MintClaims, TokenConfig};
use herald_core::{ChannelOptions, Namespaces, NodeConfig};
use herald_server::{Server, ServerConfig, TlsPaths};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "bench-test-key";
const TOKEN_SECRET: &str = "bench-test-secret";
/// Subscribers of each run.
const SUBSCRIBERS: u64 = 40;
/// How long one run of the tool may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

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
    let url = herald.url("http", "/events");
    let output = herald.run_fanout("sse", &url, &[]).await;
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
        let results = herald.fanout(protocol, &url, options).await;
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
    let metrics = herald.metrics().await;
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

/// A Herald serving in this test's runtime, with anonymous subscribers and
/// connections allowed, and HS256 tokens.
struct Herald {
    addr: SocketAddr,
    /// The certificate it serves, with TLS.
    cert: Option<CertificateDer<'static>>,
    /// Where its certificate files and the tool's results are.
    dir: TempDir,
}

impl Herald {
    async fn start(tls: bool) -> Herald {
        let dir = TempDir::new();
        let mut cert = None;
        let mut config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: Some(API_KEY.into()),
            tokens: TokenConfig {
                hmac_secret: Some(TOKEN_SECRET.into()),
                ..TokenConfig::default()
            },
            allow_anonymous_connect: true,
            node: NodeConfig {
                namespaces: Namespaces::new(ChannelOptions {
                    allow_anonymous: true,
                    ..ChannelOptions::default()
                }),
                ..NodeConfig::default()
            },
            ..ServerConfig::default()
        };
        if tls {
            let certified = rcgen::generate_simple_self_signed(["127.0.0.1".to_owned()])
                .expect("a self-signed certificate");
            let paths = TlsPaths {
                cert: dir.0.join("cert.pem"),
                key: dir.0.join("key.pem"),
            };
            std::fs::write(&paths.cert, certified.cert.pem()).expect("write the certificate");
            std::fs::write(&paths.key, certified.signing_key.serialize_pem())
                .expect("write the key");
            config.tls = Some(paths);
            cert = Some(certified.cert.der().clone());
        }
        let server = Server::bind(config).await.expect("herald binds");
        let addr = server.local_addr().expect("herald's address");
        tokio::spawn(server.run(std::future::pending()));
        Herald { addr, cert, dir }
    }

    /// `scheme://…` (with an `s` under TLS) for `path`.
    fn url(&self, scheme: &str, path: &str) -> String {
        let secure = if self.cert.is_some() { "s" } else { "" };
        format!("{scheme}{secure}://{}{path}", self.addr)
    }

    /// Runs `herald-bench fanout --http 2` (one short step, nothing may be lost)
    /// and returns its JSON results.
    async fn fanout(&self, protocol: &str, url: &str, options: &[&str]) -> Value {
        let json = self.dir.0.join("fanout.json");
        let json_option = format!("--json={}", json.display());
        let output = self
            .run_fanout(protocol, url, &[options, &[json_option.as_str()]].concat())
            .await;
        assert!(
            output.status.success(),
            "herald-bench fanout --protocol {protocol} {options:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&json).expect("read the results");
        serde_json::from_str(&text).expect("results are JSON")
    }

    /// Runs `herald-bench fanout --http 2` with its output captured.
    async fn run_fanout(&self, protocol: &str, url: &str, options: &[&str]) -> Output {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .args(["fanout", "--http=2", "--protocol", protocol, "--url", url])
            .arg(format!("--subscribers={SUBSCRIBERS}"))
            .args(options)
            .args(["--rates=200", "--duration=1s", "--warmup=200ms"])
            .args(["--drain-timeout=10s", "--require-no-loss"])
            .args(["--publish-url", &self.url("http", "/api/publish")])
            .args([
                "--publish-body",
                r#"{"channel":"{channel}","data":"{payload}"}"#,
            ])
            .arg(format!("--publish-header=X-API-Key: {API_KEY}"))
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(RUN_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("{protocol} {options:?}: no result within {RUN_TIMEOUT:?}"))
            .expect("run herald-bench")
    }

    /// The server's `/metrics` (HTTP/1.1, trusting only its own certificate).
    async fn metrics(&self) -> String {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let Some(cert) = &self.cert else {
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
        let name = ServerName::from(self.addr.ip());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        get_metrics(tls).await
    }
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

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "herald-bench-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

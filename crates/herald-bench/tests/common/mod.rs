//! What the end-to-end tests share: a Herald started in-process on a free loopback
//! port, and herald-bench run against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use herald_auth::TokenConfig;
use herald_core::{ChannelOptions, Namespaces, NodeConfig};
use herald_server::{Server, ServerConfig, TlsPaths};
use rustls::pki_types::CertificateDer;
use serde_json::Value;

/// The server API key.
pub const API_KEY: &str = "bench-test-key";
/// The secret verifying HS256 connection tokens.
pub const TOKEN_SECRET: &str = "bench-test-secret";
/// How long one run of the tool may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A Herald serving in the test's runtime, with anonymous subscribers and
/// connections allowed, and HS256 tokens.
pub struct Herald {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The certificate it serves, with TLS.
    pub cert: Option<CertificateDer<'static>>,
    /// Where its certificate files and the tool's results are.
    dir: TempDir,
}

impl Herald {
    /// Starts one, speaking TLS if `tls`.
    pub async fn start(tls: bool) -> Herald {
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
    pub fn url(&self, scheme: &str, path: &str) -> String {
        let secure = if self.cert.is_some() { "s" } else { "" };
        format!("{scheme}{secure}://{}{path}", self.addr)
    }

    /// Runs `herald-bench COMMAND ARGS` publishing to this Herald, where nothing
    /// may be lost, with its output captured.
    pub async fn run(&self, command: &str, args: &[String]) -> Output {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .arg(command)
            .args(args)
            .arg("--require-no-loss")
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
            .unwrap_or_else(|_| panic!("{command} {args:?}: no result within {RUN_TIMEOUT:?}"))
            .expect("run herald-bench")
    }

    /// Runs `herald-bench COMMAND ARGS` as [`Herald::run`], which must succeed, and
    /// returns its JSON results.
    pub async fn results(&self, command: &str, args: &[String]) -> Value {
        let json = self.dir.0.join(format!("{command}.json"));
        let mut args = args.to_vec();
        args.push(format!("--json={}", json.display()));
        let output = self.run(command, &args).await;
        assert!(
            output.status.success(),
            "herald-bench {command} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&json).expect("read the results");
        serde_json::from_str(&text).expect("results are JSON")
    }
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

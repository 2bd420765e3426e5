//! A real `herald` process on a free loopback port, killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::tls::{TestCa, plain_client_config};
use super::{EventStream, PROMPTLY, Proto};

/// The server API key every harness-started Herald is given.
pub const API_KEY: &str = "it-api-key";

/// How long the server may take to start answering `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Builder of a [`Herald`]: extra flags, then [`HeraldBuilder::start`].
pub struct HeraldBuilder {
    proto: Proto,
    args: Vec<String>,
    anonymous: bool,
}

impl HeraldBuilder {
    /// Adds command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts without `--allow-anonymous` (every subscriber then needs a token).
    pub fn without_anonymous(mut self) -> Self {
        self.anonymous = false;
        self
    }

    /// Starts the process and waits until `GET /healthz` answers 200.
    pub async fn start(self) -> Herald {
        // Picking a free port and then letting herald bind it can race with another
        // test; retry on a new port if herald could not listen.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match self.try_start().await {
                Ok(herald) => return herald,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("herald did not start: {last_failure}");
    }

    async fn try_start(&self) -> Result<Herald, String> {
        let dir = TempDir::new();
        let addr = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--api-key", API_KEY]);
        if self.anonymous {
            command.arg("--allow-anonymous");
        }
        let ca = self.proto.is_tls().then(TestCa::new);
        if let Some(ca) = &ca {
            let (cert, key) = ca.write_server_files(&dir.path);
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        command.args(&self.args);
        let stderr_path = dir.path.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr log");
        command
            .env_remove("HERALD_CONFIG")
            .env("HERALD_LOG", "info,herald_server=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command.spawn().expect("spawn the herald binary");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut herald = Herald {
            proto: self.proto,
            addr,
            base: format!("{scheme}://{addr}"),
            client: make_client(ca.as_ref(), self.proto.is_h2()),
            ca,
            child,
            stderr_path,
            _dir: dir,
            args: self.args.clone(),
        };
        herald.wait_healthy().await?;
        Ok(herald)
    }
}

/// A running `herald` process. Dropping it kills the process; if the test is
/// failing, the server's log is printed first.
pub struct Herald {
    proto: Proto,
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
    ca: Option<TestCa>,
    child: Child,
    stderr_path: PathBuf,
    args: Vec<String>,
    /// Holds the certificate and the log; removed after the process is gone.
    _dir: TempDir,
}

impl Herald {
    /// A builder for a Herald served over `proto`, with `--allow-anonymous`.
    pub fn builder(proto: Proto) -> HeraldBuilder {
        HeraldBuilder {
            proto,
            args: Vec::new(),
            anonymous: true,
        }
    }

    /// Starts a Herald with the defaults (API key, anonymous subscribers).
    pub async fn start(proto: Proto) -> Herald {
        Herald::builder(proto).start().await
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocol path this server was started for.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// A TLS client configuration trusting this server's certificate and offering
    /// `alpn`; `None` when the server speaks plain TCP.
    pub fn tls_config(&self, alpn: &[&[u8]]) -> Option<rustls::ClientConfig> {
        self.ca.as_ref().map(|ca| ca.client_config(alpn))
    }

    /// The absolute URL of `path` (which may carry a query).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The client for this server's protocol path.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Another client for this server: HTTP/2 (`h2`) or HTTP/1.1, over TLS when the
    /// server speaks TLS.
    pub fn new_client(&self, h2: bool) -> reqwest::Client {
        make_client(self.ca.as_ref(), h2)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Calls the server API method with `body` and the API key; returns the status
    /// and the JSON reply.
    pub async fn api(&self, method: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(&format!("/api/{method}")))
            .header("x-api-key", API_KEY)
            .json(&body);
        self.json_reply(request, &format!("POST /api/{method}"))
            .await
    }

    /// Sends `request` and returns its status and JSON body, checking the HTTP
    /// version and that the body is JSON.
    pub async fn json_reply(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> (StatusCode, Value) {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} over {:?} failed: {e:?}", self.proto));
        self.check_version(&response, what);
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the reply to {what}: {e:?}"));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{what} answered {status} with a body that is not JSON ({e}): {text:?}")
        });
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{what} answered {status} with JSON but the wrong content-type"
        );
        (status, json)
    }

    /// Publishes JSON `data` into `channel` through the server API and returns the
    /// reply's `result` (`{"offset", "epoch"}`).
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let (status, reply) = self
            .api(
                "publish",
                serde_json::json!({"channel": channel, "data": data}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "publish to {channel:?} failed: {reply}"
        );
        let result = reply
            .get("result")
            .unwrap_or_else(|| panic!("publish to {channel:?} replied without result: {reply}"));
        assert!(
            result["offset"].is_u64() && result["epoch"].is_string(),
            "publish result must have offset and epoch: {reply}"
        );
        result.clone()
    }

    /// A `GET /events?{query}` request, to add headers to before [`Herald::open`].
    pub fn events(&self, query: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(&format!("/events?{query}")))
    }

    /// Opens `GET /events?{query}` and checks it is a 200 event stream.
    pub async fn subscribe(&self, query: &str) -> EventStream {
        self.open(self.events(query), &format!("GET /events?{query}"))
            .await
    }

    /// Sends an events request and checks the answer is a 200 `text/event-stream`
    /// over this server's HTTP version.
    pub async fn open(&self, request: reqwest::RequestBuilder, what: &str) -> EventStream {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} over {:?} failed: {e:?}", self.proto));
        self.check_version(&response, what);
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            panic!("{what} must open a stream, got {status}: {body}");
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            content_type, "text/event-stream",
            "{what} must be an event stream"
        );
        EventStream::new(response, format!("{what} over {:?}", self.proto))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().await.expect("read /metrics")
    }

    /// Sends SIGTERM to the process.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("run kill -{name}: {e}"));
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Replaces the certificate and key files the server was started with by ones
    /// issued by `ca` (the server reads them again on SIGHUP).
    pub fn replace_tls_files(&self, ca: &TestCa) {
        assert!(self.ca.is_some(), "replace_tls_files needs a TLS server");
        ca.write_server_files(&self._dir.path);
    }

    /// A client for this server trusting only `ca`.
    pub fn client_trusting(&self, ca: &TestCa) -> reqwest::Client {
        make_client(Some(ca), true)
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on herald") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_version(&self, response: &reqwest::Response, what: &str) {
        assert_eq!(
            response.version(),
            self.proto.version(),
            "{what} over {:?} answered with the wrong HTTP version",
            self.proto
        );
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "herald {:?} exited with {status} before answering /healthz; its log:\n{}",
                    self.args,
                    self.log()
                ));
            }
            let probe = self
                .client
                .get(self.url("/healthz"))
                .timeout(PROMPTLY)
                .send()
                .await;
            if let Ok(response) = probe
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "herald {:?} did not answer /healthz within {START_TIMEOUT:?}; its log:\n{}",
                    self.args,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- herald log ({:?}, args {:?}) ----\n{}---- end of herald log ----",
                self.proto,
                self.args,
                self.log()
            );
        }
    }
}

/// A reqwest client for one protocol path. Every client gets an aws-lc-rs TLS
/// configuration of ours, so reqwest never looks for a default crypto provider.
fn make_client(ca: Option<&TestCa>, h2: bool) -> reqwest::Client {
    let tls = match ca {
        Some(ca) if h2 => ca.client_config(&[b"h2"]),
        Some(ca) => ca.client_config(&[b"http/1.1"]),
        None => plain_client_config(),
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .connect_timeout(PROMPTLY);
    builder = match (ca.is_some(), h2) {
        (_, false) => builder.http1_only(),
        (false, true) => builder.http2_prior_knowledge(),
        // ALPN (h2 only) decides.
        (true, true) => builder,
    };
    builder.build().expect("build the reqwest client")
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// A directory under Cargo's temporary directory for tests, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "herald-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

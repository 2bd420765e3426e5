use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use herald_auth::TokenConfig;
use herald_core::NodeConfig;

/// Everything the server needs to run; built by the `herald` binary from its
/// config file, environment and flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker threads, each a single-threaded runtime with its own listening
    /// socket; `None`: one per available core.
    pub workers: Option<NonZeroUsize>,
    /// Certificate and key; when set the port speaks TLS.
    pub tls: Option<TlsPaths>,
    /// Key for the server API; without one the API answers loopback clients only.
    pub api_key: Option<String>,
    /// How connection tokens are verified.
    pub tokens: TokenConfig,
    /// Name of the cookie that may carry the token.
    pub token_cookie: String,
    /// Origins allowed to make credentialed cross-origin requests (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// Interval of SSE heartbeat comments.
    pub heartbeat: Duration,
    /// Bound of each connection's outbound queue, in bytes.
    pub client_queue_max_bytes: usize,
    /// How long a write to a client may block before the client is dropped.
    pub write_timeout: Duration,
    /// Write-coalescing window: a connection writes at most once per window-long
    /// tick of a node-wide clock as messages come; what arrives after that goes out
    /// together at the next tick. A quiet connection's message is written at once;
    /// a busy one's waits at most this long, for one write (one syscall, one TCP
    /// segment) per batch.
    pub write_coalesce: Duration,
    /// How long a graceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// Most channels one SSE stream may carry.
    pub max_channels_per_stream: usize,
    /// Largest request body accepted (server API, client publish), in bytes.
    pub max_request_body: usize,
    /// Largest client protocol message (one WebSocket message) accepted, in bytes.
    pub max_message_bytes: usize,
    /// Interval of server pings on client protocol connections.
    pub client_ping_interval: Duration,
    /// How long a client may take to answer a ping before it is disconnected.
    pub client_pong_timeout: Duration,
    /// How long a new client protocol connection may take to send `connect`.
    pub client_connect_timeout: Duration,
    /// Whether clients may connect with no token (as anonymous users).
    pub allow_anonymous_connect: bool,
    /// Channels, history and limits.
    pub node: NodeConfig,
}

/// PEM files of a TLS certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            workers: None,
            tls: None,
            api_key: None,
            tokens: TokenConfig::default(),
            token_cookie: "herald_token".into(),
            allowed_origins: Vec::new(),
            heartbeat: Duration::from_secs(15),
            client_queue_max_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            write_coalesce: Duration::from_millis(20),
            shutdown_timeout: Duration::from_secs(10),
            max_channels_per_stream: 64,
            max_request_body: 1024 * 1024,
            max_message_bytes: 64 * 1024,
            client_ping_interval: Duration::from_secs(25),
            client_pong_timeout: Duration::from_secs(8),
            client_connect_timeout: Duration::from_secs(10),
            allow_anonymous_connect: false,
            node: NodeConfig::default(),
        }
    }
}

//! Configuration: defaults, overridden by a TOML file (`--config`), overridden by
//! environment variables (`HERALD_*`), overridden by flags.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use herald_auth::{MintClaims, TokenConfig};
use herald_core::{ChannelOptions, Namespaces, NodeConfig};
use herald_server::{ServerConfig, TlsPaths};
use serde::Deserialize;

use crate::duration;

/// Herald: a real-time messaging server. Publish to channels over an HTTP API;
/// subscribers receive every publication live over WebSockets (the Centrifuge
/// client protocol) and Server-Sent Events, on HTTP/1.1, HTTP/2 and HTTPS, from one
/// port.
///
/// Every option can also be set in the TOML file given by --config and by the
/// environment variable shown; flags win over the environment, which wins over the
/// file.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address and port to listen on [default: 0.0.0.0:8000].
    #[arg(long, env = "HERALD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Worker threads; each serves its share of the connections on its own
    /// listening socket [default: one per available core].
    #[arg(long, env = "HERALD_WORKERS")]
    pub workers: Option<NonZeroUsize>,
    /// PEM certificate chain; with --tls-key the port serves TLS (ALPN h2, http/1.1).
    /// SIGHUP reloads the files.
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Key for the server API (X-API-Key or Authorization: apikey). Without one the
    /// API answers loopback clients only.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Secret verifying HS256/HS384/HS512 client tokens.
    #[arg(
        long,
        env = "HERALD_TOKEN_HMAC_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub token_hmac_secret: Option<String>,
    /// PEM file of the RSA or EC public key verifying RS256/384/512 or ES256/384 tokens.
    #[arg(long, env = "HERALD_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// URL (http:// or https://) of a JWKS document whose keys verify RS256/384/512 and
    /// ES256/384 tokens by their `kid`; keys are cached per issuer and key id.
    #[arg(long, env = "HERALD_TOKEN_JWKS_URL")]
    pub token_jwks_url: Option<String>,
    /// Tokens must carry this `iss` claim.
    #[arg(long, env = "HERALD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// Tokens must carry this `aud` claim (alone or in a list).
    #[arg(long, env = "HERALD_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// Restrict accepted token algorithms, comma-separated (e.g. HS256,RS256).
    #[arg(long, env = "HERALD_TOKEN_ALGORITHMS", value_delimiter = ',')]
    pub token_algorithms: Option<Vec<String>>,
    /// Name of the cookie that may carry the client token [default: herald_token].
    #[arg(long, env = "HERALD_TOKEN_COOKIE")]
    pub token_cookie: Option<String>,
    /// Let clients without a token subscribe to channels of the default namespace.
    #[arg(long, env = "HERALD_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Let client protocol connections (WebSocket and its fallbacks) connect with no
    /// token, as anonymous users.
    #[arg(long, env = "HERALD_ALLOW_ANONYMOUS_CONNECT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous_connect: Option<bool>,
    /// Interval of server pings on client protocol connections [default: 25s].
    #[arg(long, env = "HERALD_CLIENT_PING_INTERVAL", value_parser = duration::parse)]
    pub client_ping_interval: Option<Duration>,
    /// How long a new client protocol connection may take to send `connect`
    /// before it is closed with 3502 [default: 10s].
    #[arg(long, env = "HERALD_CLIENT_CONNECT_TIMEOUT", value_parser = duration::parse)]
    pub client_connect_timeout: Option<Duration>,
    /// How long a client may take to answer a ping [default: 8s].
    #[arg(long, env = "HERALD_CLIENT_PONG_TIMEOUT", value_parser = duration::parse)]
    pub client_pong_timeout: Option<Duration>,
    /// Largest client protocol message in bytes; larger WebSocket messages are
    /// closed with 1009 [default: 65536].
    #[arg(long, env = "HERALD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Let clients publish to channels of the default namespace (POST /publish).
    #[arg(long, env = "HERALD_ALLOW_CLIENT_PUBLISH", num_args = 0..=1, default_missing_value = "true")]
    pub allow_client_publish: Option<bool>,
    /// Origins allowed for credentialed cross-origin requests, comma-separated; `*`
    /// allows any.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Publications kept per channel for recovery; 0 disables history [default: 1000].
    #[arg(long, env = "HERALD_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// How long publications stay in history [default: 10m].
    #[arg(long, env = "HERALD_HISTORY_TTL", value_parser = duration::parse)]
    pub history_ttl: Option<Duration>,
    /// How long a quiet channel keeps its epoch and offset [default: 24h].
    #[arg(long, env = "HERALD_HISTORY_META_TTL", value_parser = duration::parse)]
    pub history_meta_ttl: Option<Duration>,
    /// Interval of SSE heartbeat comments [default: 15s].
    #[arg(long, env = "HERALD_HEARTBEAT", value_parser = duration::parse)]
    pub heartbeat: Option<Duration>,
    /// Bound of each connection's outbound queue in bytes; a client that falls this
    /// far behind is disconnected and told to resume [default: 1048576].
    #[arg(long, env = "HERALD_CLIENT_QUEUE_MAX_BYTES")]
    pub client_queue_max_bytes: Option<usize>,
    /// How long a write to a client may block before it is dropped [default: 10s].
    #[arg(long, env = "HERALD_WRITE_TIMEOUT", value_parser = duration::parse)]
    pub write_timeout: Option<Duration>,
    /// Write-coalescing window: a connection writes at most once per window; later
    /// messages wait (at most this long) and go out together (0: each at once)
    /// [default: 20ms].
    #[arg(long, env = "HERALD_WRITE_COALESCE", value_parser = duration::parse)]
    pub write_coalesce: Option<Duration>,
    /// Largest publication in bytes [default: 65536].
    #[arg(long, env = "HERALD_MAX_PUBLICATION_BYTES")]
    pub max_publication_bytes: Option<usize>,
    /// How long a graceful shutdown (SIGTERM) may take [default: 10s].
    #[arg(long, env = "HERALD_SHUTDOWN_TIMEOUT", value_parser = duration::parse)]
    pub shutdown_timeout: Option<Duration>,
    /// Log format; the level comes from HERALD_LOG (e.g. `info`, `herald_server=debug`)
    /// [default: text].
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an HS256 client token signed with the configured HMAC secret.
    Token(TokenArgs),
}

/// Arguments of `herald token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// A channel the holder may read (repeat for several; `ns:*` grants a namespace).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Lifetime of the token [default: 1h].
    #[arg(long, value_parser = duration::parse, default_value = "1h")]
    pub ttl: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `--config` file. Field names match the flags with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    workers: Option<NonZeroUsize>,
    tls: Option<FileTls>,
    api_key: Option<String>,
    token: Option<FileToken>,
    allow_anonymous: Option<bool>,
    allow_client_publish: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    history_meta_ttl: Option<String>,
    heartbeat: Option<String>,
    client_queue_max_bytes: Option<usize>,
    write_timeout: Option<String>,
    write_coalesce: Option<String>,
    max_publication_bytes: Option<usize>,
    shutdown_timeout: Option<String>,
    log_format: Option<LogFormat>,
    allow_anonymous_connect: Option<bool>,
    client_ping_interval: Option<String>,
    client_pong_timeout: Option<String>,
    client_connect_timeout: Option<String>,
    max_message_bytes: Option<usize>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    force_recovery: Option<bool>,
    allow_history_for_client: Option<bool>,
    allow_presence_for_client: Option<bool>,
    allow_subscribe_for_client: Option<bool>,
    allow_user_limited_channels: Option<bool>,
    #[serde(default)]
    namespaces: Vec<FileNamespace>,
}

/// Applies the boolean channel options a file section sets onto `base`; the same
/// fields exist at the top level (default namespace) and in `[[namespaces]]`.
macro_rules! apply_channel_flags {
    ($section:expr, $base:expr) => {{
        let mut options: ChannelOptions = $base;
        for (field, value) in [
            (&mut options.presence, $section.presence),
            (&mut options.join_leave, $section.join_leave),
            (&mut options.force_recovery, $section.force_recovery),
            (
                &mut options.allow_history_for_client,
                $section.allow_history_for_client,
            ),
            (
                &mut options.allow_presence_for_client,
                $section.allow_presence_for_client,
            ),
            (
                &mut options.allow_subscribe_for_client,
                $section.allow_subscribe_for_client,
            ),
            (
                &mut options.allow_user_limited_channels,
                $section.allow_user_limited_channels,
            ),
        ] {
            if let Some(value) = value {
                *field = value;
            }
        }
        options
    }};
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    hmac_secret: Option<String>,
    public_key: Option<PathBuf>,
    jwks_url: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    cookie: Option<String>,
}

/// A `[[namespaces]]` entry; unset options inherit the default namespace's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    name: String,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    allow_publish: Option<bool>,
    allow_anonymous: Option<bool>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    force_recovery: Option<bool>,
    allow_history_for_client: Option<bool>,
    allow_presence_for_client: Option<bool>,
    allow_subscribe_for_client: Option<bool>,
    allow_user_limited_channels: Option<bool>,
}

/// Everything the binary needs after configuration is resolved.
pub struct Settings {
    pub server: ServerConfig,
    pub log_format: LogFormat,
}

/// Resolves the configuration from defaults, file, environment and flags.
pub fn load(cli: &Cli) -> Result<Settings, String> {
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let file_token = file.token.unwrap_or_default();
    let file_duration = |value: &Option<String>| value.as_deref().map(duration::parse).transpose();
    let mut server = ServerConfig::default();
    if let Some(listen) = cli.listen.or(file.listen) {
        server.listen = listen;
    }
    server.workers = cli.workers.or(file.workers);
    server.tls = match (&cli.tls_cert, &cli.tls_key, file.tls) {
        (Some(cert), Some(key), _) => Some(TlsPaths {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, Some(tls)) => Some(TlsPaths {
            cert: tls.cert,
            key: tls.key,
        }),
        (None, None, None) => None,
        _ => return Err("--tls-cert and --tls-key must be given together".into()),
    };
    server.api_key = cli
        .api_key
        .clone()
        .or(file.api_key)
        .filter(|k| !k.is_empty());
    let public_key_path = cli.token_public_key.clone().or(file_token.public_key);
    let public_key_pem = public_key_path
        .map(|path| {
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read token public key {}: {e}", path.display()))
        })
        .transpose()?;
    server.tokens = TokenConfig {
        hmac_secret: cli
            .token_hmac_secret
            .clone()
            .or(file_token.hmac_secret)
            .filter(|s| !s.is_empty()),
        public_key_pem,
        algorithms: cli.token_algorithms.clone().or(file_token.algorithms),
        jwks_url: cli
            .token_jwks_url
            .clone()
            .or(file_token.jwks_url)
            .filter(|s| !s.is_empty()),
        issuer: cli
            .token_issuer
            .clone()
            .or(file_token.issuer)
            .filter(|s| !s.is_empty()),
        audience: cli
            .token_audience
            .clone()
            .or(file_token.audience)
            .filter(|s| !s.is_empty()),
        ..TokenConfig::default()
    };
    if let Some(cookie) = cli.token_cookie.clone().or(file_token.cookie) {
        server.token_cookie = cookie;
    }
    if let Some(origins) = cli.allowed_origins.clone().or(file.allowed_origins) {
        server.allowed_origins = origins.into_iter().filter(|o| !o.is_empty()).collect();
    }
    if let Some(heartbeat) = cli.heartbeat.or(file_duration(&file.heartbeat)?) {
        server.heartbeat = heartbeat;
    }
    if let Some(bytes) = cli.client_queue_max_bytes.or(file.client_queue_max_bytes) {
        server.client_queue_max_bytes = bytes;
    }
    if let Some(timeout) = cli.write_timeout.or(file_duration(&file.write_timeout)?) {
        server.write_timeout = timeout;
    }
    if let Some(interval) = cli.write_coalesce.or(file_duration(&file.write_coalesce)?) {
        server.write_coalesce = interval;
    }
    if let Some(timeout) = cli
        .shutdown_timeout
        .or(file_duration(&file.shutdown_timeout)?)
    {
        server.shutdown_timeout = timeout;
    }
    if let Some(allow) = cli.allow_anonymous_connect.or(file.allow_anonymous_connect) {
        server.allow_anonymous_connect = allow;
    }
    if let Some(interval) = cli
        .client_ping_interval
        .or(file_duration(&file.client_ping_interval)?)
    {
        server.client_ping_interval = interval;
    }
    if let Some(timeout) = cli
        .client_pong_timeout
        .or(file_duration(&file.client_pong_timeout)?)
    {
        server.client_pong_timeout = timeout;
    }
    if let Some(timeout) = cli
        .client_connect_timeout
        .or(file_duration(&file.client_connect_timeout)?)
    {
        server.client_connect_timeout = timeout;
    }
    if let Some(bytes) = cli.max_message_bytes.or(file.max_message_bytes) {
        server.max_message_bytes = bytes;
    }

    let mut default = ChannelOptions::default();
    if let Some(size) = cli.history_size.or(file.history_size) {
        default.history_size = size;
    }
    if let Some(ttl) = cli.history_ttl.or(file_duration(&file.history_ttl)?) {
        default.history_ttl = ttl;
    }
    if let Some(allow) = cli.allow_anonymous.or(file.allow_anonymous) {
        default.allow_anonymous = allow;
    }
    if let Some(allow) = cli.allow_client_publish.or(file.allow_client_publish) {
        default.allow_publish = allow;
    }
    let default = apply_channel_flags!(file, default);
    let mut namespaces = Namespaces::new(default.clone());
    for namespace in file.namespaces {
        if namespace.name.is_empty() || namespace.name.contains(':') {
            return Err(format!("invalid namespace name {:?}", namespace.name));
        }
        let options = apply_channel_flags!(
            namespace,
            ChannelOptions {
                history_size: namespace.history_size.unwrap_or(default.history_size),
                history_ttl: file_duration(&namespace.history_ttl)?.unwrap_or(default.history_ttl),
                allow_publish: namespace.allow_publish.unwrap_or(default.allow_publish),
                allow_anonymous: namespace.allow_anonymous.unwrap_or(default.allow_anonymous),
                ..default.clone()
            }
        );
        namespaces.insert(namespace.name, options);
    }
    let mut node = NodeConfig {
        namespaces,
        ..NodeConfig::default()
    };
    if let Some(bytes) = cli.max_publication_bytes.or(file.max_publication_bytes) {
        node.max_publication_bytes = bytes;
    }
    if let Some(ttl) = cli
        .history_meta_ttl
        .or(file_duration(&file.history_meta_ttl)?)
    {
        node.history_meta_ttl = ttl;
    }
    server.node = node;
    Ok(Settings {
        server,
        log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
    })
}

/// Mints a client token for `herald token`.
pub fn mint_token(settings: &Settings, args: &TokenArgs) -> Result<String, String> {
    let secret = settings.server.tokens.hmac_secret.as_deref().ok_or(
        "herald token needs an HMAC secret (--token-hmac-secret or HERALD_TOKEN_HMAC_SECRET)",
    )?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    Ok(herald_auth::mint_hs256(
        secret,
        &MintClaims {
            sub: args.sub.clone(),
            exp: Some((now + args.ttl).as_secs()),
            channels: args.channels.clone(),
        },
    ))
}

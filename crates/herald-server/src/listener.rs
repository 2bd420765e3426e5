//! The listening socket: accept, TLS, protocol detection, graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_auth::TokenVerifier;
use herald_core::Node;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::lean;
use crate::metrics::Metrics;
use crate::routes::{self, Context};
use crate::tls::{self, ReloadableCert, TlsError, TlsStream};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token configuration is unusable.
    #[error("token configuration: {0}")]
    Tokens(String),
}

/// A bound Herald server, ready to run.
pub struct Server {
    ctx: Arc<Context>,
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<ReloadableCert>)>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Binds the listen address and loads certificates and keys.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let tokens =
            TokenVerifier::new(&config.tokens).map_err(|e| ServerError::Tokens(e.to_string()))?;
        let tls = match &config.tls {
            Some(paths) => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let cert = Arc::new(ReloadableCert::load(paths.clone(), provider.clone())?);
                let server_config = tls::server_config(cert.clone(), provider)?;
                Some((Arc::new(server_config), cert))
            }
            None => None,
        };
        let listener = listen(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let node = Node::with_memory_engine(config.node.clone());
        tokio::spawn(node.clone().run_housekeeping(Duration::from_secs(1)));
        let ctx = Arc::new(Context {
            config,
            node,
            tokens,
            metrics: Metrics::default(),
            shutdown: shutdown_rx,
            started: Instant::now(),
            uid: format!("{:016x}", rand::random::<u64>()),
            emulation: Default::default(),
        });
        Ok(Server {
            ctx,
            listener,
            tls,
            shutdown,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the port speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Returns a function that reloads the TLS certificate and key from their files
    /// (call it on SIGHUP); `None` without TLS.
    pub fn tls_reloader(
        &self,
    ) -> Option<impl Fn() -> Result<(), TlsError> + Send + Sync + 'static> {
        self.tls.as_ref().map(|(_, cert)| {
            let cert = cert.clone();
            move || cert.reload()
        })
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, tells
    /// streaming clients to reconnect, lets in-flight requests finish, and returns
    /// once every connection is done or the shutdown timeout passed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let tracker = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let ctx = self.ctx.clone();
                        let tls = self.tls.as_ref().map(|(config, _)| config.clone());
                        tracker.spawn(serve_socket(socket, peer, ctx, tls));
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let open = tracker.len();
        tracing::info!(connections = open, "draining");
        let _ = self.shutdown.send(true);
        tracker.close();
        if tokio::time::timeout(self.ctx.config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tracker.len(),
                "shutdown timeout reached; closing remaining connections"
            );
        }
    }
}

/// Accept-queue length: connect storms of thousands of clients must not overflow
/// it (the default of 128 sends the overflow into 1 s SYN retries).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // Accepted sockets inherit it (Linux clones the listener's TCP state), which
    // saves a setsockopt per connection in a connect storm.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A connection's socket, plain or TLS.
type Socket = Either<TcpStream, Box<TlsStream<TcpStream>>>;

#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` copies its arguments into locals beside its captures, \
              and the copies stay in every state of the task's future (+72 B)"
)]
fn serve_socket(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl Future<Output = ()> {
    async move {
        #[cfg(not(target_os = "linux"))]
        let _ = socket.set_nodelay(true);
        // One connection future type for both: a TLS connection does not pay for a
        // task sized for the plain path plus a boxed future of its own. The TLS
        // stream is boxed (by `tls::accept`), so its ~1 KB is not copied into every
        // state.
        match tls {
            None => lean::serve(Socket::Left(socket), ctx, peer).await,
            Some(config) => {
                let Some(stream) = handshake(socket, config, peer).await else {
                    return;
                };
                if stream.alpn_protocol() == Some(b"h2") {
                    Box::pin(serve_hyper(stream, ctx, peer)).await
                } else {
                    lean::serve(Socket::Right(stream), ctx, peer).await
                }
            }
        }
    }
}

async fn handshake(
    socket: TcpStream,
    config: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
) -> Option<Box<TlsStream<TcpStream>>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls::accept(socket, config)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Lets a response stream drop the whole hyper connection it runs on: when a client
/// stops reading, hyper stops polling the stream's body (flow control), so only the
/// connection's task can end it.
#[derive(Clone, Default)]
pub struct ConnectionAbort(Arc<tokio::sync::Notify>);

impl ConnectionAbort {
    /// Asks the connection's task to drop the connection.
    pub fn abort(&self) {
        self.0.notify_one();
    }

    async fn aborted(&self) {
        self.0.notified().await;
    }
}

/// Serves a connection with hyper (HTTP/1.1 keep-alive or HTTP/2), until it ends or
/// the server drains.
pub async fn serve_hyper<S>(io: S, ctx: Arc<Context>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = ctx.shutdown.clone();
    let abort = ConnectionAbort::default();
    let service = {
        let abort = abort.clone();
        service_fn(move |request| {
            let ctx = ctx.clone();
            let abort = abort.clone();
            async move {
                Ok::<_, std::convert::Infallible>(routes::handle(ctx, request, peer, abort).await)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(Duration::from_secs(20));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        }
        () = abort.aborted() => {
            tracing::debug!(%peer, "connection dropped: a stream's client stopped reading");
        }
        () = async { let _ = shutdown.wait_for(|draining| *draining).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_send_without_delay() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "an accepted socket has TCP_NODELAY (Nagle would hold small pushes)"
        );
    }
}

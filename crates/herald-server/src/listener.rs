//! The listening sockets: a runtime per worker thread, accept, TLS, protocol
//! detection, graceful drain.
//!
//! Each worker thread runs a single-threaded tokio runtime with its own listening
//! socket on the same port (`SO_REUSEPORT`), so the kernel spreads connections over
//! the workers and a connection's task never leaves the thread that accepted it: no
//! work stealing, and no waking of idle workers to look for work (which cost tokio's
//! multi-threaded runtime ~1 futex and ~1 eventfd write per new connection).

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
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
    /// One per worker, all on the same address.
    listeners: Vec<std::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    cert: Option<Arc<ReloadableCert>>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Binds the listen address and loads certificates and keys.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let tokens =
            TokenVerifier::new(&config.tokens).map_err(|e| ServerError::Tokens(e.to_string()))?;
        let (tls, cert) = match &config.tls {
            Some(paths) => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let cert = Arc::new(ReloadableCert::load(paths.clone(), provider.clone())?);
                let server_config = tls::server_config(cert.clone(), provider)?;
                (Some(Arc::new(server_config)), Some(cert))
            }
            None => (None, None),
        };
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
        let listeners = listen(config.listen, workers).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let node = Node::with_memory_engine_sharded(config.node.clone(), workers);
        tokio::spawn(node.clone().run_housekeeping(Duration::from_secs(1)));
        let ctx = Arc::new(Context {
            config,
            node,
            tokens,
            metrics: Metrics::default(),
            shutdown: shutdown_rx,
            open_outboxes: Default::default(),
            started: Instant::now(),
            uid: format!("{:016x}", rand::random::<u64>()),
            emulation: Default::default(),
        });
        Ok(Server {
            ctx,
            listeners,
            tls,
            cert,
            shutdown,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners[0].local_addr()
    }

    /// How many worker threads (runtimes with a listening socket each) serve.
    pub fn workers(&self) -> usize {
        self.listeners.len()
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
        self.cert.clone().map(|cert| move || cert.reload())
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, tells
    /// streaming clients to reconnect, lets in-flight requests finish, and returns
    /// once every connection is done or the shutdown timeout passed.
    ///
    /// The connections are served on the server's own worker threads; the caller's
    /// runtime only waits.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let tracker = TaskTracker::new();
        let (stop, stopped) = watch::channel(false);
        let mut finished = Vec::with_capacity(self.listeners.len());
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let worker = Worker {
                index,
                ctx: self.ctx.clone(),
                tls: self.tls.clone(),
                tracker: tracker.clone(),
                stop: stopped.clone(),
            };
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            finished.push(finished_rx);
            let spawned = std::thread::Builder::new()
                .name(format!("herald-worker-{index}"))
                .spawn(move || {
                    worker.run(listener);
                    let _ = done.send(());
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        shutdown.await;
        let open = tracker.len();
        tracing::info!(connections = open, "draining");
        // Workers stop accepting and connections start closing on this.
        let _ = self.shutdown.send(true);
        self.ctx.open_outboxes.close_all();
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
        // Each worker drops its runtime, and with it whatever connection is left.
        let _ = stop.send(true);
        for worker in finished {
            let _ = worker.await;
        }
    }
}

/// What a worker thread needs to serve its listening socket.
struct Worker {
    /// The worker's fan-out shard.
    index: usize,
    ctx: Arc<Context>,
    tls: Option<Arc<rustls::ServerConfig>>,
    tracker: TaskTracker,
    /// Set once the drain is over (or timed out): the worker returns.
    stop: watch::Receiver<bool>,
}

impl Worker {
    /// Runs a single-threaded runtime on this thread, serving `listener` until the
    /// drain is over.
    fn run(self, listener: std::net::TcpListener) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker runtime");
                return;
            }
        };
        runtime.block_on(self.serve(listener));
    }

    async fn serve(mut self, listener: std::net::TcpListener) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a listening socket");
                return;
            }
        };
        // This thread delivers the publications for the connections it serves.
        tokio::spawn(self.ctx.node.serve_shard(self.index));
        let mut draining = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let serving = serve_socket(socket, peer, self.ctx.clone(), self.tls.clone());
                        self.tracker.spawn(serving);
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = draining.wait_for(|draining| *draining) => break,
            }
        }
        drop(listener);
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

/// Accept-queue length: connect storms of thousands of clients must not overflow
/// it (the default of 128 sends the overflow into 1 s SYN retries).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `workers` listening sockets to `addr` (the first one's port when `addr`
/// asks for port 0).
fn listen(addr: SocketAddr, workers: NonZeroUsize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let shared = workers.get() > 1;
    let mut addr = addr;
    if shared {
        // `SO_REUSEPORT` would also let a second server of the same user share the
        // port without a word: a plain bind first says "in use" instead.
        addr = bind(addr, false)?.local_addr()?;
    }
    let first = bind(addr, shared)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.get() {
        listeners.push(bind(addr, true)?);
    }
    listeners
        .into_iter()
        .map(|socket| socket.listen(LISTEN_BACKLOG)?.into_std())
        .collect()
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    // Accepted sockets inherit it (Linux clones the listener's TCP state), which
    // saves a setsockopt per connection in a connect storm.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    Ok(socket)
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
        let listener = listen("127.0.0.1:0".parse().unwrap(), NonZeroUsize::MIN).unwrap();
        let listener = TcpListener::from_std(listener.into_iter().next().unwrap()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "an accepted socket has TCP_NODELAY (Nagle would hold small pushes)"
        );
    }

    #[tokio::test]
    async fn workers_listen_on_one_port_that_no_other_server_can_share() {
        let two = NonZeroUsize::new(2).unwrap();
        let listeners = listen("127.0.0.1:0".parse().unwrap(), two).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1].local_addr().unwrap(), addr);
        let second = listen(addr, two).expect_err("the port is taken");
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn every_worker_answers_its_share_of_connections_and_drains() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: NonZeroUsize::new(2),
            ..ServerConfig::default()
        };
        let server = Server::bind(config).await.unwrap();
        assert_eq!(server.workers(), 2);
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        // The kernel hashes each connection to one of the two sockets: 32 all
        // landing on the same one has odds of 2^-31, so a worker that does not
        // accept leaves some request unanswered.
        for n in 0..32 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("connection {n} was never answered"))
                .unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "connection {n}: {answer}"
            );
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("an idle server drains at once")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no worker listens after the drain"
        );
    }
}

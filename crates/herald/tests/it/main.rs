//! End-to-end tests of the `herald` binary: each test starts the real server on a
//! free loopback port and talks to it the way users do — `EventSource`-style SSE
//! streams, WebSockets speaking the Centrifuge protocol, the server HTTP API,
//! signals — over HTTP/1.1, h2c and h2 over TLS.
//!
//! One test binary (faster to link on few cores); the harness lives in `util`.

/// Expands each scenario `async fn name(proto: Proto)` into a module `name` with
/// one `#[tokio::test]` per protocol path, so every scenario runs with the same body
/// over HTTP/1.1 (`http1`), h2c (`h2c`) and h2 over TLS (`h2_tls`).
macro_rules! over_every_protocol {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use crate::util::Proto;

            #[tokio::test]
            async fn http1() {
                super::$scenario(Proto::Http1).await
            }

            #[tokio::test]
            async fn h2c() {
                super::$scenario(Proto::H2c).await
            }

            #[tokio::test]
            async fn h2_tls() {
                super::$scenario(Proto::H2Tls).await
            }
        }
    )+};
}

mod util;

mod api;
mod auth;
mod emulation;
mod history;
mod metrics;
mod open_files;
mod pubsub;
mod resume;
mod shutdown;
mod slow;
mod tls_reload;
mod uni;
mod ws;

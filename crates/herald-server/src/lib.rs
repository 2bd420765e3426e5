//! Herald's network side: one port serving HTTP/1.1, h2c and (with a certificate)
//! TLS with ALPN `h2`/`http/1.1`; the SSE transport; the server API; metrics.
//!
//! Long-lived HTTP/1.1 SSE streams take a lean path: the accept loop parses the
//! request head itself and serves the stream from a small task holding only the
//! socket and an outbox. Every other request (and all of HTTP/2) goes to hyper,
//! together with the bytes already read. See docs/ARCHITECTURE.md.

mod api;
mod client;
mod coalesce;
mod config;
mod drain;
mod emulation;
mod http_util;
mod lean;
mod listener;
mod metrics;
mod prefixed;
mod routes;
mod sse;
mod ticks;
mod timed;
mod tls;
mod uni;
mod ws;
mod ws_frame;

pub use config::{ServerConfig, TlsPaths};
pub use listener::Server;
pub use metrics::Metrics;

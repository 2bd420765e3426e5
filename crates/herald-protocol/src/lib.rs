//! Herald's wire formats, kept pure (no I/O) so they can be fuzzed and shared by the
//! server, the client and the load generator.
//!
//! - [`Payload`] and [`Publication`]: what a channel carries.
//! - [`sse`]: Server-Sent Events framing of publications and control events.
//! - [`ResumeToken`]: the SSE `id:` that records every channel's position in a stream.
//! - [`api`]: request and reply shapes of the Centrifugo-compatible server API.
//! - [`centrifuge`]: the Centrifuge client protocol v2 (commands, replies, pushes,
//!   disconnect codes) and its JSON codec.
//! - [`ErrorCode`]: the error codes shared by the API and the client protocol.

pub mod api;
pub mod centrifuge;
mod error;
mod payload;
mod resume;
pub mod sse;
pub mod websocket;

pub use error::{ErrorCode, ErrorReply};
pub use payload::{ClientInfo, Payload, PayloadError, Publication, StreamPosition};
pub use resume::{ResumeToken, ResumeTokenError};

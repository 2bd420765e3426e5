//! WebSockets at `/connection/websocket` speaking the Centrifuge client protocol v2
//! (JSON): an HTTP/1.1 upgrade on plain TCP and TLS, and HTTP/2 extended CONNECT
//! (RFC 8441) on h2c and TLS, with a real WebSocket client (tokio-websockets).

use herald_auth::{MintClaims, mint_hs256};
use serde_json::Value;

use crate::util::unix_now;

mod coalesce;
mod limits;
mod ping;
mod pubsub;
mod recovery;
mod shutdown;

/// The HMAC secret of the servers that verify tokens.
const SECRET: &str = "it-ws-token-secret";

/// An HS256 connection token for `sub` whose `channels` claim lists `channels`
/// (server-side subscriptions, or grants when they end in `*`), expiring `ttl`
/// seconds from now (in the past when negative).
fn token(sub: &str, channels: &[&str], ttl: i64) -> String {
    mint_hs256(
        SECRET,
        &MintClaims {
            sub: sub.into(),
            exp: Some(unix_now().saturating_add_signed(ttl)),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        },
    )
}

/// Whether a boolean result field is false: the protocol leaves defaults out.
fn is_false(value: &Value) -> bool {
    value.is_null() || *value == Value::Bool(false)
}

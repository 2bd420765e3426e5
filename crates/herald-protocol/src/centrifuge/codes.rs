//! Disconnect and unsubscribe codes, as the Centrifuge library defines them
//! (`disconnect.go` and `unsubscribe.go` of `github.com/centrifugal/centrifuge`).
//!
//! The numbers and reconnect rules are part of the wire contract: the SDKs decide
//! from the code alone whether to reconnect or resubscribe.

use super::push::{Disconnect, Unsubscribe};
use crate::ErrorCode;

/// Why the server closes a connection.
///
/// On WebSocket the close frame carries [`code`](Self::code) as its status code and
/// [`reason`](Self::reason) as its reason text; on other transports the same values
/// travel in a `disconnect` push ([`Disconnect`]).
///
/// Reconnect rule (shared by every SDK): codes 3000–3499, 4000–4499 and ≥ 5000
/// reconnect; 3500–3999 and 4500–4999 are terminal. See [`reconnects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectCode {
    /// 3000 `connection closed`: the connection ended without advice from the
    /// server. Centrifuge records it for clients that simply went away; it is not
    /// meant to be sent.
    ConnectionClosed,
    /// 3001 `shutdown`: the node is shutting down; reconnect (elsewhere).
    Shutdown,
    /// 3004 `internal server error`: something failed inside the server.
    ServerError,
    /// 3005 `connection expired`: the connection's credentials expired and were not
    /// refreshed.
    Expired,
    /// 3006 `subscription expired`: a subscription's credentials expired and were
    /// not refreshed.
    SubscriptionExpired,
    /// 3008 `slow`: the client did not read fast enough (its queue overflowed).
    Slow,
    /// 3009 `write error`: writing to the connection failed.
    WriteError,
    /// 3010 `insufficient state`: the server saw a gap in a channel's stream;
    /// reconnecting lets the client recover the missed publications.
    InsufficientState,
    /// 3011 `force reconnect`: the server asks the client to reconnect.
    ForceReconnect,
    /// 3012 `no pong`: the client did not answer the server's ping in time.
    NoPong,
    /// 3013 `too many requests`: the client sent commands too fast.
    TooManyRequests,
    /// 3014 `state invalidated`: the client's cached token and stream state are no
    /// longer valid; SDKs drop their token and resubscribe from scratch (newest
    /// SDKs only; older ones treat it as a plain reconnect).
    StateInvalidated,
    /// 3500 `invalid token`: the connection token is invalid (terminal).
    InvalidToken,
    /// 3501 `bad request`: the client sent a malformed or unexpected frame
    /// (terminal).
    BadRequest,
    /// 3502 `stale`: the connection did not send `connect` in time (terminal).
    Stale,
    /// 3503 `force disconnect`: the server disconnects the client for good
    /// (terminal).
    ForceNoReconnect,
    /// 3504 `connection limit`: too many connections, e.g. for this user (terminal).
    ConnectionLimit,
    /// 3505 `channel limit`: too many subscriptions on this connection (terminal).
    ChannelLimit,
    /// 3506 `inappropriate protocol`: the connection's format cannot carry the data,
    /// e.g. binary publications to a JSON client (terminal).
    InappropriateProtocol,
    /// 3507 `permission denied` (terminal).
    PermissionDenied,
    /// 3508 `not available`: the client used a feature the server has disabled
    /// (terminal).
    NotAvailable,
    /// 3509 `too many errors` (terminal).
    TooManyErrors,
}

impl DisconnectCode {
    /// Every code, in numeric order.
    pub const ALL: [DisconnectCode; 22] = [
        DisconnectCode::ConnectionClosed,
        DisconnectCode::Shutdown,
        DisconnectCode::ServerError,
        DisconnectCode::Expired,
        DisconnectCode::SubscriptionExpired,
        DisconnectCode::Slow,
        DisconnectCode::WriteError,
        DisconnectCode::InsufficientState,
        DisconnectCode::ForceReconnect,
        DisconnectCode::NoPong,
        DisconnectCode::TooManyRequests,
        DisconnectCode::StateInvalidated,
        DisconnectCode::InvalidToken,
        DisconnectCode::BadRequest,
        DisconnectCode::Stale,
        DisconnectCode::ForceNoReconnect,
        DisconnectCode::ConnectionLimit,
        DisconnectCode::ChannelLimit,
        DisconnectCode::InappropriateProtocol,
        DisconnectCode::PermissionDenied,
        DisconnectCode::NotAvailable,
        DisconnectCode::TooManyErrors,
    ];

    /// The number on the wire, also the WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            DisconnectCode::ConnectionClosed => 3000,
            DisconnectCode::Shutdown => 3001,
            DisconnectCode::ServerError => 3004,
            DisconnectCode::Expired => 3005,
            DisconnectCode::SubscriptionExpired => 3006,
            DisconnectCode::Slow => 3008,
            DisconnectCode::WriteError => 3009,
            DisconnectCode::InsufficientState => 3010,
            DisconnectCode::ForceReconnect => 3011,
            DisconnectCode::NoPong => 3012,
            DisconnectCode::TooManyRequests => 3013,
            DisconnectCode::StateInvalidated => 3014,
            DisconnectCode::InvalidToken => 3500,
            DisconnectCode::BadRequest => 3501,
            DisconnectCode::Stale => 3502,
            DisconnectCode::ForceNoReconnect => 3503,
            DisconnectCode::ConnectionLimit => 3504,
            DisconnectCode::ChannelLimit => 3505,
            DisconnectCode::InappropriateProtocol => 3506,
            DisconnectCode::PermissionDenied => 3507,
            DisconnectCode::NotAvailable => 3508,
            DisconnectCode::TooManyErrors => 3509,
        }
    }

    /// The standard reason text, also the WebSocket close reason.
    pub fn reason(self) -> &'static str {
        match self {
            DisconnectCode::ConnectionClosed => "connection closed",
            DisconnectCode::Shutdown => "shutdown",
            DisconnectCode::ServerError => "internal server error",
            DisconnectCode::Expired => "connection expired",
            DisconnectCode::SubscriptionExpired => "subscription expired",
            DisconnectCode::Slow => "slow",
            DisconnectCode::WriteError => "write error",
            DisconnectCode::InsufficientState => "insufficient state",
            DisconnectCode::ForceReconnect => "force reconnect",
            DisconnectCode::NoPong => "no pong",
            DisconnectCode::TooManyRequests => "too many requests",
            DisconnectCode::StateInvalidated => "state invalidated",
            DisconnectCode::InvalidToken => "invalid token",
            DisconnectCode::BadRequest => "bad request",
            DisconnectCode::Stale => "stale",
            DisconnectCode::ForceNoReconnect => "force disconnect",
            DisconnectCode::ConnectionLimit => "connection limit",
            DisconnectCode::ChannelLimit => "channel limit",
            DisconnectCode::InappropriateProtocol => "inappropriate protocol",
            DisconnectCode::PermissionDenied => "permission denied",
            DisconnectCode::NotAvailable => "not available",
            DisconnectCode::TooManyErrors => "too many errors",
        }
    }

    /// Whether clients reconnect after this code (see [`reconnects`]).
    pub fn reconnect(self) -> bool {
        reconnects(u32::from(self.code()))
    }

    /// The code with this number, if it is one of the standard ones.
    pub fn from_code(code: u32) -> Option<DisconnectCode> {
        DisconnectCode::ALL
            .into_iter()
            .find(|known| u32::from(known.code()) == code)
    }
}

impl From<DisconnectCode> for Disconnect {
    fn from(code: DisconnectCode) -> Self {
        Disconnect {
            code: u32::from(code.code()),
            reason: code.reason().to_owned(),
            reconnect: code.reconnect(),
        }
    }
}

/// Whether an SDK reconnects after disconnect code `code`: yes for 3000–3499,
/// 4000–4499 and ≥ 5000 (and, transport-dependent, below 3000); no for 3500–3999
/// and 4500–4999. Applications use 4000–4999 for their own codes.
pub fn reconnects(code: u32) -> bool {
    !matches!(code, 3500..=3999 | 4500..=4999)
}

/// Why the server ended one subscription (the connection stays).
///
/// Codes below 2500 leave the subscription unsubscribed; codes from 2500 up make
/// the SDK subscribe again (see [`resubscribe`](Self::resubscribe)). Applications
/// may use 2100–2499 and 2600–2999 for their own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnsubscribeCode {
    /// 2000 `server unsubscribe`: the server (e.g. the server API) unsubscribed the
    /// client; it stays unsubscribed.
    Server,
    /// 2500 `insufficient state`: the server saw a gap in the stream; the client
    /// resubscribes and recovers from its last position.
    InsufficientState,
    /// 2501 `subscription expired`: the subscription token expired; the client
    /// resubscribes with a new one.
    Expired,
    /// 2502 `state invalidated`: the subscription's token and cached state are no
    /// longer valid; the newest SDKs drop both and resubscribe.
    StateInvalidated,
}

impl UnsubscribeCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            UnsubscribeCode::Server => 2000,
            UnsubscribeCode::InsufficientState => 2500,
            UnsubscribeCode::Expired => 2501,
            UnsubscribeCode::StateInvalidated => 2502,
        }
    }

    /// The standard reason text.
    pub fn reason(self) -> &'static str {
        match self {
            UnsubscribeCode::Server => "server unsubscribe",
            UnsubscribeCode::InsufficientState => "insufficient state",
            UnsubscribeCode::Expired => "subscription expired",
            UnsubscribeCode::StateInvalidated => "state invalidated",
        }
    }

    /// Whether the SDK subscribes again after this code (code ≥ 2500).
    pub fn resubscribe(self) -> bool {
        self.code() >= 2500
    }
}

impl From<UnsubscribeCode> for Unsubscribe {
    fn from(code: UnsubscribeCode) -> Self {
        Unsubscribe {
            code: code.code(),
            reason: code.reason().to_owned(),
        }
    }
}

/// Whether Centrifuge marks errors with this code `temporary`, which makes SDKs
/// retry the command (connect, subscribe) after a backoff instead of giving up.
pub(super) fn is_temporary(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Internal | ErrorCode::TooManyRequests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_codes_follow_the_reconnect_rule() {
        for code in DisconnectCode::ALL {
            assert_eq!(DisconnectCode::from_code(code.code().into()), Some(code));
            assert_eq!(code.reconnect(), code.code() < 3500, "{code:?}");
            assert!(code.reason().len() <= 123, "fits a WebSocket close reason");
        }
        let codes: Vec<u16> = DisconnectCode::ALL.iter().map(|c| c.code()).collect();
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "ALL is sorted, no duplicates"
        );
        assert_eq!(DisconnectCode::from_code(3002), None);
        assert!(reconnects(4000) && reconnects(5000) && reconnects(1001));
        assert!(!reconnects(4500) && !reconnects(3999));
    }

    #[test]
    fn disconnect_push_from_code() {
        let push = Disconnect::from(DisconnectCode::Shutdown);
        assert_eq!(
            (push.code, push.reason.as_str(), push.reconnect),
            (3001, "shutdown", true)
        );
        let push = Disconnect::from(DisconnectCode::BadRequest);
        assert_eq!((push.code, push.reconnect), (3501, false));
    }

    #[test]
    fn unsubscribe_codes() {
        assert!(!UnsubscribeCode::Server.resubscribe());
        assert!(UnsubscribeCode::InsufficientState.resubscribe());
        let push = Unsubscribe::from(UnsubscribeCode::Expired);
        assert_eq!(
            (push.code, push.reason.as_str()),
            (2501, "subscription expired")
        );
    }
}

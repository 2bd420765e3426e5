use serde::{Deserialize, Serialize};

/// Error codes of the Centrifuge protocol and the Centrifugo server API.
///
/// The numbers are part of the wire contract: SDKs branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Something failed inside the server.
    Internal,
    /// Missing or invalid credentials.
    Unauthorized,
    /// The channel name is invalid or its namespace does not exist.
    UnknownChannel,
    /// Credentials are valid but do not allow this action.
    PermissionDenied,
    /// The API method does not exist.
    MethodNotFound,
    /// The client is already subscribed to the channel.
    AlreadySubscribed,
    /// A configured limit was exceeded.
    LimitExceeded,
    /// The request is malformed.
    BadRequest,
    /// The feature is not enabled for this channel or server.
    NotAvailable,
    /// The token has expired.
    TokenExpired,
    /// The connection or subscription has expired.
    Expired,
    /// Too many requests.
    TooManyRequests,
    /// History cannot cover the requested position.
    UnrecoverablePosition,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::MethodNotFound => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::Expired => 110,
            ErrorCode::TooManyRequests => 111,
            ErrorCode::UnrecoverablePosition => 112,
        }
    }

    /// The protocol's standard message for this code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Expired => "expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// An error reply with this code and a message saying what went wrong.
    pub fn reply(self, detail: impl Into<String>) -> ErrorReply {
        let detail = detail.into();
        let message = if detail.is_empty() {
            self.message().to_owned()
        } else {
            format!("{}: {detail}", self.message())
        };
        ErrorReply {
            code: self.code(),
            message,
        }
    }
}

/// The `error` object of API replies: `{"code": 107, "message": "bad request: ..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// One of [`ErrorCode`]'s numbers.
    pub code: u32,
    /// Human-readable explanation.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_keeps_standard_message_and_adds_detail() {
        let reply = ErrorCode::BadRequest.reply("channel is required");
        assert_eq!(reply.code, 107);
        assert_eq!(reply.message, "bad request: channel is required");
        assert_eq!(ErrorCode::Unauthorized.reply("").message, "unauthorized");
    }
}

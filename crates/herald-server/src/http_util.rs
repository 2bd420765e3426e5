//! Small HTTP helpers shared by the routes: JSON replies, errors, CORS, queries.

use std::borrow::Cow;
use std::convert::Infallible;

use bytes::Bytes;
use herald_protocol::{ErrorCode, ErrorReply};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A refused request: the protocol error code and what was wrong. Becomes an error
/// response at the edge (see [`error`]).
#[derive(Debug)]
pub struct Refusal {
    /// The protocol error code.
    pub code: ErrorCode,
    /// What was wrong, for the client.
    pub detail: String,
}

impl Refusal {
    /// A refusal with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            detail: detail.into(),
        }
    }

    /// The error response for this refusal.
    pub fn into_response(self) -> Response<Body> {
        error(self.code, self.detail)
    }
}

/// `{"result": value}` with status 200.
pub fn result_response(value: &impl Serialize) -> Response<Body> {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        result: &'a T,
    }
    json_response(StatusCode::OK, &Reply { result: value })
}

/// `{"error": {"code", "message"}}` with `status`.
pub fn error_response(status: StatusCode, error: ErrorReply) -> Response<Body> {
    #[derive(Serialize)]
    struct Reply {
        error: ErrorReply,
    }
    json_response(status, &Reply { error })
}

/// An error reply whose status follows from the code (see the README's error table).
pub fn error(code: ErrorCode, detail: impl Into<String>) -> Response<Body> {
    let status = match code {
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::MethodNotFound => StatusCode::NOT_FOUND,
        ErrorCode::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NotAvailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, code.reply(detail))
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("reply types always serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds credentialed CORS headers when the request's `Origin` is allowed.
pub fn add_cors(allowed: &[String], request: &HeaderMap, response: &mut HeaderMap) {
    let Some(origin) = request.get(header::ORIGIN) else {
        return;
    };
    let permitted = allowed
        .iter()
        .any(|a| a == "*" || a.as_bytes() == origin.as_bytes());
    if permitted {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        response.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// The answer to a CORS preflight (`OPTIONS`).
pub fn preflight(allowed: &[String], request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    add_cors(allowed, request, headers);
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

/// Percent-decoded values of query parameter `name` (`+` is a space, as in forms).
pub fn query_values<'a>(
    query: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = Cow<'a, str>> {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

/// `text` with `+` and `%XX` decoded, in one allocation when there is anything to
/// decode (a connect request in the URL is mostly escapes); bytes that are not
/// UTF-8 once decoded become U+FFFD.
fn form_decode(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(text);
    }
    let hex = |b: Option<&u8>| char::from(*b?).to_digit(16).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(text.len());
    let mut bytes = text.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => decoded.push(b' '),
            b'%' => {
                let rest = bytes.as_slice();
                match (hex(rest.first()), hex(rest.get(1))) {
                    (Some(high), Some(low)) => {
                        decoded.push(high << 4 | low);
                        bytes.nth(1);
                    }
                    _ => decoded.push(b'%'),
                }
            }
            _ => decoded.push(b),
        }
    }
    match String::from_utf8(decoded) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_echoes_only_allowed_origins() {
        let allowed = vec!["https://app.example".to_owned()];
        let mut request = HeaderMap::new();
        request.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        let mut response = HeaderMap::new();
        add_cors(&allowed, &request, &mut response);
        assert_eq!(
            response[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");

        request.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let mut response = HeaderMap::new();
        add_cors(&allowed, &request, &mut response);
        assert!(response.is_empty());
    }

    #[test]
    fn query_values_are_decoded_and_repeatable() {
        let values: Vec<_> =
            query_values(Some("channel=a&channel=news%3Asport&x=1"), "channel").collect();
        assert_eq!(values, ["a", "news:sport"]);
    }

    #[test]
    fn query_values_decode_as_forms_do() {
        let query = Some("q=a+b%2Bc%20d&q=%zz%4&q=%FF%41&empty&q%3D=x&q=");
        let values: Vec<_> = query_values(query, "q").collect();
        assert_eq!(values, ["a b+c d", "%zz%4", "\u{FFFD}A", ""]);
        assert!(matches!(
            query_values(Some("q=plain"), "q").next(),
            Some(Cow::Borrowed("plain"))
        ));
        assert_eq!(query_values(query, "q=").collect::<Vec<_>>(), ["x"]);
        assert_eq!(query_values(query, "empty").collect::<Vec<_>>(), [""]);
    }
}

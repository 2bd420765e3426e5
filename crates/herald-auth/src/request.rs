//! Finding credentials in HTTP requests.

use std::borrow::Cow;

use aws_lc_rs::{constant_time, digest};
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Finds the client's connection token.
///
/// Looks, in order, at an `Authorization: Bearer <token>` header (scheme
/// case-insensitive), the cookie named `cookie_name`, and the `token` parameter of
/// `query` (the raw query string, without `?`; the value is percent-decoded, `+` is a
/// space). Empty values are skipped.
pub fn token_from_request<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    cookie_name: &str,
) -> Option<Cow<'a, str>> {
    if let Some(token) = authorization(headers, "bearer") {
        return Some(Cow::Borrowed(token));
    }
    if let Some(token) = cookie(headers, cookie_name) {
        return Some(Cow::Borrowed(token));
    }
    query_param(query?, "token")
}

/// Finds the server API key a backend presents: `X-API-Key: <key>` or
/// `Authorization: apikey <key>` (scheme case-insensitive).
pub fn api_key_from_headers(headers: &HeaderMap) -> Option<&str> {
    let x_api_key = headers
        .get_all("x-api-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty());
    x_api_key.or_else(|| authorization(headers, "apikey"))
}

/// Compares a presented API key with the configured one in constant time.
///
/// An empty configured key never matches, so a blank setting cannot open the API.
pub fn api_key_matches(presented: &str, configured: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    // Hash both sides first: the comparison then takes the same time whatever the
    // lengths, so it leaks neither the key's bytes nor its length.
    let presented = digest::digest(&digest::SHA256, presented.as_bytes());
    let configured = digest::digest(&digest::SHA256, configured.as_bytes());
    constant_time::verify_slices_are_equal(presented.as_ref(), configured.as_ref()).is_ok()
}

/// The credentials of the first `Authorization` header using `scheme`.
fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let (s, credentials) = value.to_str().ok()?.trim().split_once(' ')?;
        let credentials = credentials.trim();
        (s.eq_ignore_ascii_case(scheme) && !credentials.is_empty()).then_some(credentials)
    })
}

/// The value of cookie `name`. HTTP/2 clients may split cookies over several
/// `Cookie` headers, so all of them are searched.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            // RFC 6265 allows a value in double quotes.
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
        .find(|v| !v.is_empty())
}

/// The first non-empty value of parameter `name` in a query string, decoded.
fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| form_decode(v))
        .next()
}

/// Decodes `application/x-www-form-urlencoded` text (what `URLSearchParams` writes).
/// Borrows when there is nothing to decode; a malformed `%` escape is kept as is.
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    // Invalid UTF-8 cannot be a JWT anyway; verification will call it malformed.
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn bearer_header_comes_first() {
        let h = headers(&[
            ("authorization", "Bearer abc.def.ghi"),
            ("cookie", "tok=fromcookie"),
        ]);
        assert_eq!(
            token_from_request(&h, Some("token=q"), "tok").as_deref(),
            Some("abc.def.ghi")
        );
        let h = headers(&[("authorization", "bEaReR   spaced  ")]);
        assert_eq!(
            token_from_request(&h, None, "tok").as_deref(),
            Some("spaced")
        );
    }

    #[test]
    fn non_bearer_authorization_is_ignored() {
        let h = headers(&[
            ("authorization", "apikey secret"),
            ("authorization", "Bearer "),
        ]);
        assert_eq!(token_from_request(&h, None, "tok"), None);
        let h = headers(&[("authorization", "Basic dXNlcjpwdw=="), ("cookie", "tok=c")]);
        assert_eq!(token_from_request(&h, None, "tok").as_deref(), Some("c"));
    }

    #[test]
    fn cookie_comes_second() {
        let h = headers(&[("cookie", "a=1; tok=the.cookie.token; b=2")]);
        assert_eq!(
            token_from_request(&h, Some("token=q"), "tok").as_deref(),
            Some("the.cookie.token")
        );
        // Split over several headers (HTTP/2), quoted, and a longer name that merely ends the same.
        let h = headers(&[("cookie", "xtok=no"), ("cookie", "tok=\"quoted\"")]);
        assert_eq!(
            token_from_request(&h, None, "tok").as_deref(),
            Some("quoted")
        );
        let h = headers(&[("cookie", "other=1")]);
        assert_eq!(token_from_request(&h, None, "tok"), None);
    }

    #[test]
    fn query_parameter_comes_last_and_is_decoded() {
        let h = HeaderMap::new();
        assert_eq!(
            token_from_request(&h, Some("channel=a&token=x.y.z"), "tok").as_deref(),
            Some("x.y.z")
        );
        let got = token_from_request(&h, Some("token=a%2Eb%2ec%3D%3d"), "tok");
        assert_eq!(got.as_deref(), Some("a.b.c=="));
        assert!(matches!(got, Some(Cow::Owned(_))));
        assert!(matches!(
            token_from_request(&h, Some("token=plain"), "tok"),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(
            token_from_request(&h, Some("token=a+b%zz%4"), "tok").as_deref(),
            Some("a b%zz%4")
        );
        assert_eq!(
            token_from_request(&h, Some("token=&token=second"), "tok").as_deref(),
            Some("second")
        );
        assert_eq!(token_from_request(&h, Some("xtoken=1&token"), "tok"), None);
        assert_eq!(token_from_request(&h, None, "tok"), None);
    }

    #[test]
    fn api_key_header_forms() {
        assert_eq!(
            api_key_from_headers(&headers(&[("x-api-key", " k1 ")])),
            Some("k1")
        );
        assert_eq!(
            api_key_from_headers(&headers(&[("authorization", "apikey k2")])),
            Some("k2")
        );
        assert_eq!(
            api_key_from_headers(&headers(&[("authorization", "APIKey k3")])),
            Some("k3")
        );
        let both = headers(&[
            ("authorization", "apikey from-auth"),
            ("x-api-key", "from-x"),
        ]);
        assert_eq!(api_key_from_headers(&both), Some("from-x"));
        assert_eq!(
            api_key_from_headers(&headers(&[("authorization", "Bearer t")])),
            None
        );
        assert_eq!(api_key_from_headers(&headers(&[("x-api-key", "")])), None);
        assert_eq!(api_key_from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn api_key_comparison() {
        assert!(api_key_matches("s3cret", "s3cret"));
        assert!(!api_key_matches("s3cre", "s3cret"));
        assert!(!api_key_matches("s3cret!", "s3cret"));
        assert!(!api_key_matches("S3cret", "s3cret"));
        assert!(
            !api_key_matches("", ""),
            "an empty configured key must never match"
        );
    }
}

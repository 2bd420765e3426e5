//! Client authentication for Herald.
//!
//! - [`TokenVerifier`] checks connection tokens (JWTs signed with an HMAC secret, an
//!   RSA key or an EC key) and returns their [`Claims`].
//! - [`token_from_request`] finds a client's token in a request; [`api_key_from_headers`]
//!   and [`api_key_matches`] check the key a backend presents to the server API.
//! - [`mint_hs256`] makes tokens for the `herald token` command and for tests.
//!
//! The only I/O is fetching a configured JWKS URL, from
//! [`TokenVerifier::verify_async`]; everything else is plain functions the server
//! crate calls.
//!
//! # JWKS keys are cached per (issuer, key id)
//!
//! Key ids are unique only within one issuer's key set: two issuers can both call a
//! key `"1"`. Caching JWKS keys by `kid` alone would let a key fetched for issuer A
//! check a token that claims issuer B, so whoever holds one issuer's keys could sign
//! tokens trusted as another's (CVE-2026-49998). Herald keys its cache by the
//! token's `iss` and `kid`; the unverified `iss` only picks the cache slot and is
//! never trusted. Set [`TokenConfig::issuer`] to accept one issuer only.
//!
//! ```
//! use herald_auth::{MintClaims, TokenConfig, TokenVerifier, mint_hs256, token_from_request};
//!
//! let verifier = TokenVerifier::new(&TokenConfig {
//!     hmac_secret: Some("change-me".into()),
//!     ..TokenConfig::default()
//! })?;
//! let token = mint_hs256(
//!     "change-me",
//!     &MintClaims { sub: "alice".into(), channels: vec!["news:*".into()], ..MintClaims::default() },
//! );
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("authorization", format!("Bearer {token}").parse()?);
//! let presented = token_from_request(&headers, None, "herald_token").expect("a token");
//!
//! let claims = verifier.verify(&presented)?;
//! assert_eq!(claims.sub, "alice");
//! assert!(claims.can_read("news:sport") && !claims.can_read("chat"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod jwks;
mod request;
mod token;

pub use request::{api_key_from_headers, api_key_matches, token_from_request};
pub use token::{
    Claims, ConfigError, MintClaims, ReadGrants, TokenConfig, TokenError, TokenVerifier, mint_hs256,
};

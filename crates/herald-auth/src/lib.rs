//! Client authentication for Herald.
//!
//! - [`TokenVerifier`] checks connection tokens (JWTs signed with an HMAC secret, an
//!   RSA key or an EC key) and returns their [`Claims`].
//! - [`token_from_request`] finds a client's token in a request; [`api_key_from_headers`]
//!   and [`api_key_matches`] check the key a backend presents to the server API.
//! - [`mint_hs256`] makes tokens for the `herald token` command and for tests.
//!
//! No sockets, no I/O: the server crate calls these functions.
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

mod request;
mod token;

pub use request::{api_key_from_headers, api_key_matches, token_from_request};
pub use token::{
    Claims, ConfigError, MintClaims, TokenConfig, TokenError, TokenVerifier, mint_hs256,
};

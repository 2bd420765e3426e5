//! Connection tokens: JWTs signed with an HMAC secret, an RSA key or an EC key.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

#[cfg(test)]
mod tests;

/// Clock skew tolerated on `exp` and `nbf`: small, so that an expired token stops
/// working within seconds.
const LEEWAY_SECS: u64 = 5;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
const EC_P256: &[Algorithm] = &[Algorithm::ES256];
const EC_P384: &[Algorithm] = &[Algorithm::ES384];
const SUPPORTED: &str = "HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384";

/// Which keys verify connection tokens, and which algorithms are accepted.
#[derive(Clone, Default)]
pub struct TokenConfig {
    /// Shared secret; enables HS256, HS384 and HS512.
    pub hmac_secret: Option<String>,
    /// PEM text (not a path) of an RSA or EC public key. RSA enables RS256, RS384 and
    /// RS512; an EC P-256 key enables ES256 and a P-384 key ES384.
    pub public_key_pem: Option<String>,
    /// Accept only these algorithms (e.g. `["HS256"]`); each needs its key configured.
    /// `None` accepts every algorithm the configured keys support.
    pub algorithms: Option<Vec<String>>,
}

// Hand-written so the secret never reaches a log.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("public_key_pem", &self.public_key_pem)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// Verifies connection tokens. Build it once at start-up and share it.
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
}

/// One configured key. Each key checks only the algorithms of its own kind, so a
/// token can never pick how a key is used (no HS256 with an RSA key as the secret).
#[derive(Clone, Debug)]
struct VerifyingKey {
    key: DecodingKey,
    /// Algorithms this key can check.
    usable: &'static [Algorithm],
    /// `algorithms` holds the accepted subset of `usable` (maybe empty).
    validation: Validation,
}

impl TokenVerifier {
    /// Checks the configuration and parses the keys.
    ///
    /// Fails on an empty secret, a PEM that is not an RSA or EC (P-256, P-384) public
    /// key, an RSA key outside 2048 to 8192 bits, or an algorithm name that is unknown,
    /// unsupported or has no key configured.
    pub fn new(config: &TokenConfig) -> Result<Self, ConfigError> {
        let mut keys: Vec<(DecodingKey, &'static [Algorithm])> = Vec::new();
        if let Some(secret) = &config.hmac_secret {
            if secret.is_empty() {
                return Err(ConfigError::EmptyHmacSecret);
            }
            keys.push((DecodingKey::from_secret(secret.as_bytes()), HMAC));
        }
        if let Some(pem) = &config.public_key_pem {
            keys.push(parse_public_key(pem)?);
        }

        let usable = || keys.iter().flat_map(|(_, algs)| algs.iter().copied());
        let accepted: Vec<Algorithm> = match &config.algorithms {
            None => usable().collect(),
            Some(names) if names.is_empty() => return Err(ConfigError::EmptyAlgorithms),
            Some(names) => names
                .iter()
                .map(|name| {
                    let alg = parse_algorithm(name)
                        .ok_or_else(|| ConfigError::UnknownAlgorithm { name: name.clone() })?;
                    if usable().any(|a| a == alg) {
                        Ok(alg)
                    } else {
                        Err(ConfigError::AlgorithmWithoutKey { name: name.clone() })
                    }
                })
                .collect::<Result<_, _>>()?,
        };

        let keys = keys
            .into_iter()
            .map(|(key, usable)| VerifyingKey {
                key,
                usable,
                validation: validation(usable.iter().copied().filter(|a| accepted.contains(a))),
            })
            .collect();
        Ok(TokenVerifier { keys })
    }

    /// Whether any key is configured. Without one, every token is rejected.
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies a token's signature, `exp` and `nbf`, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let name = header_alg(token)?;
        // "none" and anything we do not support fail here: no key is ever tried.
        let Some(alg) = parse_algorithm_exact(&name) else {
            return Err(TokenError::AlgorithmNotAccepted { alg: name });
        };
        let Some(key) = self.keys.iter().find(|k| k.usable.contains(&alg)) else {
            return Err(TokenError::NoKeyForAlgorithm { alg: name });
        };
        if !key.validation.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAccepted { alg: name });
        }
        jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map(|data| data.claims)
            .map_err(|e| token_error(e.into_kind(), name))
    }
}

fn validation(algorithms: impl Iterator<Item = Algorithm>) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = algorithms.collect();
    v.required_spec_claims.clear(); // `exp` is optional in Herald tokens
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false; // Herald is no audience; tokens that name one still verify
    v.leeway = LEEWAY_SECS;
    v
}

/// Parses an RSA or EC public key and finds the algorithms it can check. The key is
/// parsed by aws-lc here, so a bad key fails at start-up, not as "bad signature" later.
fn parse_public_key(pem: &str) -> Result<(DecodingKey, &'static [Algorithm]), ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidPublicKey {
        reason: reason.to_owned(),
    };
    if pem.contains("PRIVATE KEY") {
        return Err(invalid(
            "this is a private key; configure its public half (`openssl pkey -in key.pem -pubout`)",
        ));
    }
    let pem = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        let der = key
            .try_get_as_bytes()
            .map_err(|_| invalid("unreadable RSA key"))?;
        let rsa = aws_lc_rs::rsa::PublicKey::from_der(der)
            .map_err(|e| invalid(&format!("not a valid RSA public key: {e}")))?;
        // aws-lc verifies RS* only with 2048- to 8192-bit keys; say so now.
        let n = rsa.modulus();
        let bits =
            n.big_endian_without_leading_zero().len() * 8 - n.first_byte().leading_zeros() as usize;
        if !(2048..=8192).contains(&bits) {
            return Err(invalid(&format!(
                "the RSA key has {bits} bits; use 2048 to 8192"
            )));
        }
        return Ok((key, RSA));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        let point = key
            .try_get_as_bytes()
            .map_err(|_| invalid("unreadable EC key"))?;
        if ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).is_ok() {
            return Ok((key, EC_P256));
        }
        if ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point).is_ok() {
            return Ok((key, EC_P384));
        }
        return Err(invalid(
            "EC keys must be on curve P-256 (ES256) or P-384 (ES384)",
        ));
    }
    Err(invalid(
        "expected the PEM text of an RSA or EC public key (-----BEGIN PUBLIC KEY-----)",
    ))
}

/// Algorithm names in the configuration; case does not matter there.
fn parse_algorithm(name: &str) -> Option<Algorithm> {
    parse_algorithm_exact(&name.trim().to_ascii_uppercase())
}

/// Algorithm names in token headers are case-sensitive (RFC 7515).
fn parse_algorithm_exact(name: &str) -> Option<Algorithm> {
    let alg = Algorithm::from_str(name).ok()?;
    [HMAC, RSA, EC_P256, EC_P384]
        .iter()
        .any(|algs| algs.contains(&alg))
        .then_some(alg)
}

/// Reads the header's `alg` ourselves: jsonwebtoken cannot parse "none", and we want
/// to report that as "not accepted", not as "malformed".
fn header_alg(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let malformed = |reason: &str| TokenError::Malformed {
        reason: reason.to_owned(),
    };
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three base64url parts separated by '.'"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    serde_json::from_slice::<AlgOnly>(&json)
        .map(|h| h.alg)
        .map_err(|_| malformed("the header is not JSON with an \"alg\" string"))
}

fn token_error(kind: ErrorKind, alg: String) -> TokenError {
    let malformed = |reason: String| TokenError::Malformed { reason };
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::AlgorithmNotAccepted { alg }
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            malformed(format!("claim \"{claim}\" has the wrong type"))
        }
        ErrorKind::Json(e) => malformed(format!("invalid header or claims: {e}")),
        ErrorKind::Base64(_) => malformed("a part is not base64url".into()),
        ErrorKind::Utf8(_) => malformed("the claims are not UTF-8".into()),
        ErrorKind::InvalidToken => {
            malformed("expected three base64url parts separated by '.'".into())
        }
        other => malformed(format!("{other:?}")),
    }
}

/// What a verified token says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Claims {
    /// User id; `""` for a user the application does not know.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Optional; checked when present.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
    /// Channels the holder may read. An entry ending in `*` matches every channel
    /// that starts with the rest (`"news:*"`; a lone `"*"` matches all).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Application data passed through to other clients (presence, join/leave).
    #[serde(default)]
    pub info: Option<serde_json::Value>,
    /// `info` as base64 bytes, for binary info (Centrifugo's `b64info`).
    #[serde(default)]
    pub b64info: Option<String>,
    /// Server-side subscriptions of a connection token: channel → options. The
    /// client protocol subscribes them at connect (Centrifugo's `subs`).
    #[serde(default)]
    pub subs: std::collections::BTreeMap<String, serde_json::Value>,
    /// Data kept by the server about the connection, never sent to clients.
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    /// The channel of a subscription token (absent in connection tokens).
    #[serde(default)]
    pub channel: Option<String>,
}

impl Claims {
    /// Whether the token lets its holder read `channel`.
    pub fn can_read(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => allowed == channel,
            })
    }
}

/// `exp` as an integer or, as some JWT libraries write it, a float (rounded the way
/// jsonwebtoken's own check rounds it).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f.round() as u64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("exp must be a non-negative number of seconds"))
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, or its header or claims cannot be read.
    #[error("token is not a valid JWT: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not match the configured key.
    #[error(
        "token signature is invalid: it was not signed with the key this server is configured with"
    )]
    BadSignature,
    /// `exp` has passed.
    #[error("token has expired (its \"exp\" time has passed); get a new token")]
    Expired,
    /// `nbf` is still in the future.
    #[error("token is not valid yet (its \"nbf\" time is in the future); check the clocks")]
    NotYetValid,
    /// The header names an algorithm that is unknown, `none`, or excluded by the
    /// configured `algorithms`.
    #[error("{}", not_accepted_message(alg))]
    AlgorithmNotAccepted {
        /// The header's `alg`.
        alg: String,
    },
    /// The algorithm is supported but the key it needs is not configured.
    #[error(
        "token is signed with {alg}, which needs {}; the server has none configured",
        key_needed(alg)
    )]
    NoKeyForAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
}

impl TokenError {
    /// Whether the token has expired: the client should get a new one and retry.
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired)
    }
}

fn not_accepted_message(alg: &str) -> String {
    if alg.eq_ignore_ascii_case("none") {
        "unsigned tokens (alg \"none\") are never accepted".to_owned()
    } else {
        format!("token algorithm \"{alg}\" is not accepted by this server")
    }
}

fn key_needed(alg: &str) -> &'static str {
    match alg {
        "ES256" => "an EC P-256 public key",
        "ES384" => "an EC P-384 public key",
        a if a.starts_with("HS") => "an HMAC secret",
        a if a.starts_with("RS") => "an RSA public key",
        _ => "a key",
    }
}

/// Why a [`TokenConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The HMAC secret is the empty string.
    #[error("the token HMAC secret is empty; set a long random secret or remove the setting")]
    EmptyHmacSecret,
    /// The public key PEM cannot be used.
    #[error("the token public key cannot be used: {reason}")]
    InvalidPublicKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The algorithm list names an algorithm that is unknown or unsupported.
    #[error("unknown or unsupported token algorithm \"{name}\"; supported: {SUPPORTED}")]
    UnknownAlgorithm {
        /// The name as configured.
        name: String,
    },
    /// The algorithm list names an algorithm whose key is not configured.
    #[error("token algorithm {name} is listed but needs {}, which is not configured", key_needed(&name.trim().to_ascii_uppercase()))]
    AlgorithmWithoutKey {
        /// The name as configured.
        name: String,
    },
    /// The algorithm list is present but empty.
    #[error(
        "the token algorithm list is empty, so no token could verify; remove it to accept every algorithm the configured keys support"
    )]
    EmptyAlgorithms,
}

/// Claims for [`mint_hs256`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct MintClaims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; `None` for a token that never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Channels the holder may read (see [`Claims::channels`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// Makes an HS256 token (for the `herald token` command and for tests).
pub fn mint_hs256(secret: &str, claims: &MintClaims) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .expect("HMAC signing of plain claims cannot fail")
}

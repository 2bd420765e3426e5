//! Connection tokens: JWTs signed with an HMAC secret, an RSA key or an EC key, the
//! public keys configured or found in a JWKS by key id.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeError, DecodeSliceError, Engine};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::jwks::{self, JwksSource};
use hmac::HmacKeys;

mod hmac;
#[cfg(test)]
mod tests;

/// Clock skew tolerated on `exp` and `nbf`: small, so that an expired token stops
/// working within seconds.
const LEEWAY_SECS: u64 = 5;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
pub(crate) const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
pub(crate) const EC_P256: &[Algorithm] = &[Algorithm::ES256];
pub(crate) const EC_P384: &[Algorithm] = &[Algorithm::ES384];
/// What a JWKS can provide keys for: never HMAC.
const JWKS_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
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
    /// `http://` or `https://` URL of a JWKS document (RFC 7517, `{"keys": [...]}`).
    /// Enables RS256/384/512 and ES256/384 tokens whose header `kid` names a key in
    /// it: RSA keys check RS*, EC P-256 keys ES256 and P-384 keys ES384 (only the
    /// JWK's `alg` when it has one); HMAC (`oct`) keys in it are ignored. Keys are
    /// fetched on the first token that needs them, cached per (issuer, key id), and
    /// fetched again after [`jwks_cache_ttl`](Self::jwks_cache_ttl) or when a token
    /// names a key that is not cached. Use [`TokenVerifier::verify_async`].
    pub jwks_url: Option<String>,
    /// How long keys from the JWKS are used before they are fetched again.
    /// `None`: one hour.
    pub jwks_cache_ttl: Option<Duration>,
    /// Least time between two JWKS fetches, however many tokens name unknown keys.
    /// `None`: 10 seconds.
    pub jwks_min_refetch_interval: Option<Duration>,
    /// When set, a token's `iss` must be exactly this.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be this or a list that contains it. When
    /// unset, `aud` is not checked.
    pub audience: Option<String>,
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
            .field("jwks_url", &self.jwks_url)
            .field("jwks_cache_ttl", &self.jwks_cache_ttl)
            .field("jwks_min_refetch_interval", &self.jwks_min_refetch_interval)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Verifies connection tokens. Build it once at start-up and share it (clones share
/// the JWKS cache).
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
    pub(crate) jwks: Option<Arc<JwksSource>>,
    rules: ClaimRules,
}

/// The claims every token must carry, besides a valid signature and time.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClaimRules {
    issuer: Option<String>,
    audience: Option<String>,
}

/// One configured key. Each key checks only the algorithms of its own kind, so a
/// token can never pick how a key is used (no HS256 with an RSA key as the secret).
#[derive(Clone, Debug)]
struct VerifyingKey {
    key: Key,
    /// Algorithms this key can check.
    usable: &'static [Algorithm],
    /// `algorithms` holds the accepted subset of `usable` (maybe empty).
    validation: Validation,
}

/// What checks a token's signature.
#[derive(Clone, Debug)]
enum Key {
    /// The HMAC secret: HS* tokens are verified by [`hmac`], not by jsonwebtoken.
    Hmac(Box<HmacKeys>),
    /// An RSA or EC public key, used through jsonwebtoken.
    Public(DecodingKey),
}

impl TokenVerifier {
    /// Checks the configuration and parses the keys.
    ///
    /// Fails on an empty secret, issuer or audience, a PEM that is not an RSA or EC
    /// (P-256, P-384) public key, an RSA key outside 2048 to 8192 bits, a JWKS URL
    /// that is not `http://` or `https://`, or an algorithm name that is unknown,
    /// unsupported or has no key configured. Fetches nothing: JWKS keys are fetched
    /// when the first token needs them.
    pub fn new(config: &TokenConfig) -> Result<Self, ConfigError> {
        Self::build(config, &[])
    }

    /// [`new`](Self::new), also trusting `extra_roots` for an `https://` JWKS URL.
    pub(crate) fn build(
        config: &TokenConfig,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Self, ConfigError> {
        let rules = ClaimRules {
            issuer: non_empty(&config.issuer, "issuer")?,
            audience: non_empty(&config.audience, "audience")?,
        };
        let mut keys: Vec<(Key, &'static [Algorithm])> = Vec::new();
        if let Some(secret) = &config.hmac_secret {
            if secret.is_empty() {
                return Err(ConfigError::EmptyHmacSecret);
            }
            let hmac = HmacKeys::new(secret.as_bytes());
            keys.push((Key::Hmac(Box::new(hmac)), HMAC));
        }
        if let Some(pem) = &config.public_key_pem {
            let (key, usable) = parse_public_key(pem)?;
            keys.push((Key::Public(key), usable));
        }

        let from_jwks = if config.jwks_url.is_some() {
            JWKS_ALGORITHMS
        } else {
            &[]
        };
        let usable = || {
            keys.iter()
                .flat_map(|(_, algs)| algs.iter().copied())
                .chain(from_jwks.iter().copied())
        };
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
                validation: validation(
                    usable.iter().copied().filter(|a| accepted.contains(a)),
                    &rules,
                ),
            })
            .collect();
        let jwks = match &config.jwks_url {
            None => None,
            Some(url) => {
                let accepted = JWKS_ALGORITHMS
                    .iter()
                    .copied()
                    .filter(|a| accepted.contains(a))
                    .collect();
                let source = JwksSource::new(
                    url,
                    accepted,
                    rules.clone(),
                    config.jwks_cache_ttl.unwrap_or(jwks::DEFAULT_TTL),
                    config
                        .jwks_min_refetch_interval
                        .unwrap_or(jwks::DEFAULT_MIN_REFETCH_INTERVAL),
                    extra_roots,
                )
                .map_err(|reason| ConfigError::InvalidJwksUrl {
                    url: url.clone(),
                    reason,
                })?;
                Some(Arc::new(source))
            }
        };
        Ok(TokenVerifier { keys, jwks, rules })
    }

    /// Whether any key or a JWKS is configured. Without one, every token is rejected.
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty() || self.jwks.is_some()
    }

    /// Whether a JWKS URL is configured, so that tokens may need
    /// [`verify_async`](Self::verify_async).
    pub fn uses_jwks(&self) -> bool {
        self.jwks.is_some()
    }

    /// Verifies a token's signature, `exp`, `nbf` and, when configured, `iss` and
    /// `aud`, and returns its claims.
    ///
    /// Never does I/O: a token whose key comes from a JWKS verifies only if that key
    /// is already cached, and fails with [`TokenError::JwksUnavailable`] otherwise.
    /// Servers with a JWKS configured call [`verify_async`](Self::verify_async).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut buf = PartBuf::new();
        let (jwt, alg) = self.check_header(token, &mut buf)?;
        match self.verify_static(token, &jwt, alg) {
            Static::Done(result) => result,
            Static::TryJwks { jwks, kid } => {
                let iss = self.unverified_issuer(token)?;
                let key = jwks.cached_key(iss.as_deref(), &kid, alg)?;
                self.decode(token, &key.key, &key.validation, &jwt.alg)
            }
        }
    }

    /// Verifies a token like [`verify`](Self::verify), fetching JWKS keys when the
    /// token needs one that is not cached.
    ///
    /// The configured secret and public key come first: an HS* token is only ever
    /// checked with the HMAC secret, and an RS*/ES* token with the configured public
    /// key when there is one. The JWKS is used when no configured key checks the
    /// token's algorithm or the configured key's signature check fails, and the
    /// header's `kid` names the key (a token without `kid` is refused). The key is
    /// looked up by the token's `iss` and `kid` (see the crate docs on why the issuer
    /// matters). Waits at most about 10 seconds, when a fetch is needed and the JWKS
    /// server is slow.
    pub async fn verify_async(&self, token: &str) -> Result<Claims, TokenError> {
        let mut buf = PartBuf::new();
        let (jwt, alg) = self.check_header(token, &mut buf)?;
        match self.verify_static(token, &jwt, alg) {
            Static::Done(result) => result,
            Static::TryJwks { jwks, kid } => {
                let iss = self.unverified_issuer(token)?;
                let key = jwks.key(iss.as_deref(), &kid, alg).await?;
                self.decode(token, &key.key, &key.validation, &jwt.alg)
            }
        }
    }

    /// Reads the header and refuses algorithms that are unknown, `none`, excluded by
    /// the configuration, or have no key: no key is ever tried for those.
    fn check_header<'a>(
        &self,
        token: &'a str,
        buf: &'a mut PartBuf<HEADER_ROOM>,
    ) -> Result<(Jwt<'a>, Algorithm), TokenError> {
        let jwt = read_header(token, buf)?;
        let Some(alg) = parse_algorithm_exact(&jwt.alg) else {
            let alg = jwt.alg.into_owned();
            return Err(TokenError::AlgorithmNotAccepted { alg });
        };
        let static_key = self.keys.iter().find(|k| k.usable.contains(&alg));
        let jwks = self
            .jwks
            .as_ref()
            .filter(|_| JWKS_ALGORITHMS.contains(&alg));
        if static_key.is_none() && jwks.is_none() {
            let alg = jwt.alg.into_owned();
            return Err(TokenError::NoKeyForAlgorithm { alg });
        }
        // The accepted list is the same for a static key and for the JWKS.
        let accepted = static_key.map_or_else(
            || jwks.is_some_and(|j| j.accepts(alg)),
            |k| k.validation.algorithms.contains(&alg),
        );
        if !accepted {
            let alg = jwt.alg.into_owned();
            return Err(TokenError::AlgorithmNotAccepted { alg });
        }
        Ok((jwt, alg))
    }

    /// Tries the configured key for `alg`, if any; says when the JWKS is to be tried:
    /// when no configured key checks `alg`, or the configured key's signature check
    /// failed and the header names a JWKS key.
    fn verify_static<'a>(&'a self, token: &str, jwt: &Jwt<'_>, alg: Algorithm) -> Static<'a> {
        let jwks = self
            .jwks
            .as_deref()
            .filter(|_| JWKS_ALGORITHMS.contains(&alg));
        if let Some(key) = self.keys.iter().find(|k| k.usable.contains(&alg)) {
            let result = match &key.key {
                Key::Hmac(hmac) => hmac.verify(jwt, alg, &self.rules),
                Key::Public(public) => self.decode(token, public, &key.validation, &jwt.alg),
            };
            return match (&result, jwks, &jwt.kid) {
                (Err(TokenError::BadSignature), Some(jwks), Some(kid)) => Static::TryJwks {
                    jwks,
                    kid: kid.to_string(),
                },
                _ => Static::Done(result),
            };
        }
        let alg = jwt.alg.to_string();
        match (jwks, &jwt.kid) {
            (Some(jwks), Some(kid)) => Static::TryJwks {
                jwks,
                kid: kid.to_string(),
            },
            (Some(_), None) => Static::Done(Err(TokenError::MissingKeyId { alg })),
            (None, _) => Static::Done(Err(TokenError::NoKeyForAlgorithm { alg })),
        }
    }

    /// The token's `iss`, unverified: it only chooses the JWKS cache slot, so the
    /// key that then checks the signature is one fetched for that issuer. A token
    /// of another issuer than the configured one is refused here, before any fetch.
    fn unverified_issuer(&self, token: &str) -> Result<Option<String>, TokenError> {
        #[derive(Deserialize)]
        struct IssOnly {
            iss: Option<serde_json::Value>,
        }
        let malformed = |reason: &str| TokenError::Malformed {
            reason: reason.to_owned(),
        };
        let payload = token.split('.').nth(1).unwrap_or_default();
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| malformed("a part is not base64url"))?;
        let claims: IssOnly = serde_json::from_slice(&json)
            .map_err(|_| malformed("the claims are not a JSON object"))?;
        let iss = match claims.iss {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(iss)) => Some(iss),
            Some(_) => return Err(malformed("claim \"iss\" has the wrong type")),
        };
        if let Some(expected) = &self.rules.issuer
            && iss.as_deref() != Some(expected)
        {
            return Err(TokenError::WrongIssuer {
                expected: expected.clone(),
            });
        }
        Ok(iss)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
        alg: &str,
    ) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| token_error(e.into_kind(), alg, &self.rules))
    }
}

/// What the configured keys made of a token.
enum Static<'a> {
    /// Verified or refused.
    Done(Result<Claims, TokenError>),
    /// The JWKS key `kid` is to check it.
    TryJwks { jwks: &'a JwksSource, kid: String },
}

fn non_empty(value: &Option<String>, claim: &'static str) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.is_empty() => Err(ConfigError::EmptyClaimValue { claim }),
        other => Ok(other.clone()),
    }
}

pub(crate) fn validation(
    algorithms: impl Iterator<Item = Algorithm>,
    rules: &ClaimRules,
) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = algorithms.collect();
    v.required_spec_claims.clear(); // `exp` is optional in Herald tokens
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = LEEWAY_SECS;
    if let Some(issuer) = &rules.issuer {
        v.set_issuer(&[issuer]);
        v.required_spec_claims.insert("iss".to_owned());
    }
    match &rules.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            v.required_spec_claims.insert("aud".to_owned());
        }
        // Without a configured audience Herald is no audience: tokens that name one
        // still verify.
        None => v.validate_aud = false,
    }
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

/// A token split into its parts, with the header fields read before verifying.
struct Jwt<'a> {
    alg: Cow<'a, str>,
    kid: Option<Cow<'a, str>>,
    header_json: &'a [u8],
    /// Whether the header is an object with only `alg`, `typ` and `kid`, all strings
    /// (or null for `typ` and `kid`), so that jsonwebtoken's `Header` reads it too.
    plain_header: bool,
    /// `header.payload`, what the signature signs.
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
}

/// Room for the decoded header of any usual token.
const HEADER_ROOM: usize = 256;

/// Splits a token and reads the header's `alg` and `kid` ourselves: jsonwebtoken cannot
/// parse "none", and we want to report that as "not accepted", not as "malformed".
fn read_header<'a>(
    token: &'a str,
    buf: &'a mut PartBuf<HEADER_ROOM>,
) -> Result<Jwt<'a>, TokenError> {
    /// The header of nearly every token, read without allocating (strings with escapes
    /// are left to `Fields`). Reading it tells the HMAC path that the header needs no
    /// further check.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        alg: &'a str,
        kid: Option<&'a str>,
        /// Read only to check that it is a string.
        #[serde(rename = "typ")]
        _typ: Option<&'a str>,
    }
    /// Any header.
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
        kid: Option<String>,
    }
    let malformed = |reason: &str| TokenError::Malformed {
        reason: reason.to_owned(),
    };
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three base64url parts separated by '.'"));
    };
    let json = buf
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    let (alg, kid, plain_header) = match serde_json::from_slice::<Plain>(json) {
        // serde also reads a struct from an array, jsonwebtoken's `Header` does not.
        Ok(h) if json.trim_ascii_start().starts_with(b"{") => {
            (h.alg.into(), h.kid.map(Cow::from), true)
        }
        _ => serde_json::from_slice::<Fields>(json)
            .map(|h| (h.alg, h.kid.map(Cow::from), false))
            .map_err(|_| {
                malformed(
                    "the header is not JSON with an \"alg\" string (and \"kid\", if any, a string)",
                )
            })?,
    };
    Ok(Jwt {
        alg,
        kid,
        header_json: json,
        plain_header,
        signed: &token[..header.len() + 1 + payload.len()],
        payload,
        signature,
    })
}

/// Room to base64url-decode a token part: on the stack when it fits in `N` bytes, else
/// on the heap.
struct PartBuf<const N: usize> {
    stack: [u8; N],
    heap: Vec<u8>,
}

impl<const N: usize> PartBuf<N> {
    fn new() -> Self {
        PartBuf {
            stack: [0; N],
            heap: Vec::new(),
        }
    }

    /// Decodes `part`, accepting exactly what `URL_SAFE_NO_PAD.decode` accepts.
    fn decode(&mut self, part: &str) -> Result<&[u8], DecodeError> {
        match URL_SAFE_NO_PAD.decode_slice(part, &mut self.stack) {
            Ok(len) => Ok(&self.stack[..len]),
            Err(DecodeSliceError::DecodeError(e)) => Err(e),
            Err(DecodeSliceError::OutputSliceTooSmall) => {
                URL_SAFE_NO_PAD.decode_vec(part, &mut self.heap)?;
                Ok(&self.heap)
            }
        }
    }
}

fn token_error(kind: ErrorKind, alg: &str, rules: &ClaimRules) -> TokenError {
    let malformed = |reason: String| TokenError::Malformed { reason };
    let wrong_issuer = || TokenError::WrongIssuer {
        expected: rules.issuer.clone().unwrap_or_default(),
    };
    let wrong_audience = || TokenError::WrongAudience {
        expected: rules.audience.clone().unwrap_or_default(),
    };
    match kind {
        ErrorKind::InvalidIssuer => wrong_issuer(),
        ErrorKind::InvalidAudience => wrong_audience(),
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => wrong_issuer(),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => wrong_audience(),
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::AlgorithmNotAccepted {
                alg: alg.to_owned(),
            }
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
        self.channels.iter().any(|allowed| grants(allowed, channel))
    }
}

/// Whether a `channels` entry (`"news"`, or `"news:*"` for a prefix) covers
/// `channel`.
fn grants(allowed: &str, channel: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => allowed == channel,
    }
}

/// What a connection token lets its holder read: its `channels` and its
/// server-side subscriptions (`subs`). Kept for the connection's life instead of
/// the whole [`Claims`], which are needed only at connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadGrants {
    channels: Box<[String]>,
    subs: Box<[String]>,
}

impl ReadGrants {
    /// Whether the token allows reading `channel`: a `channels` entry covers it
    /// (see [`Claims::can_read`]), or it is one of the token's `subs`.
    pub fn can_read(&self, channel: &str) -> bool {
        self.channels.iter().any(|allowed| grants(allowed, channel))
            || self.subs.iter().any(|sub| sub == channel)
    }
}

impl From<Claims> for ReadGrants {
    fn from(claims: Claims) -> Self {
        ReadGrants {
            channels: claims.channels.into_boxed_slice(),
            subs: claims.subs.into_keys().collect(),
        }
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
    /// The token needs a key from the JWKS, and the JWKS could not be fetched (or,
    /// from [`TokenVerifier::verify`], the key is not cached yet).
    #[error(
        "the keys that verify this token cannot be fetched right now ({reason}); try again later"
    )]
    JwksUnavailable {
        /// Why: the network error, HTTP status or document problem (never the URL).
        reason: String,
    },
    /// The header's `kid` names no key for its algorithm in the JWKS, even after
    /// fetching it again.
    #[error(
        "token key id \"{kid}\" names no {alg} key that this server trusts (its key set was \
         checked again): the token was signed with an unknown or retired key; get a new token"
    )]
    UnknownKeyId {
        /// The header's `kid`.
        kid: String,
        /// The header's `alg`.
        alg: String,
    },
    /// The token's key would come from the JWKS, but its header has no `kid` to find
    /// it by.
    #[error(
        "token signed with {alg} has no \"kid\" header; this server finds such keys in a \
         JWKS by key id, so the issuer must name the key in \"kid\""
    )]
    MissingKeyId {
        /// The header's `alg`.
        alg: String,
    },
    /// `iss` is missing or is not the configured issuer.
    #[error(
        "token issuer (\"iss\") is missing or is not \"{expected}\"; get a token from that issuer"
    )]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
    },
    /// `aud` is missing or does not name the configured audience.
    #[error(
        "token audience (\"aud\") is missing or does not include \"{expected}\"; get a token \
         issued for this server"
    )]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
}

impl TokenError {
    /// Whether the token has expired: the client should get a new one and retry.
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired)
    }

    /// Whether the token may verify if the client retries later with the same
    /// token: the keys could not be fetched ([`TokenError::JwksUnavailable`]).
    pub fn is_temporary(&self) -> bool {
        matches!(self, TokenError::JwksUnavailable { .. })
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
    /// The JWKS URL cannot be used.
    #[error("the token JWKS URL {url:?} cannot be used: {reason}")]
    InvalidJwksUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The expected issuer or audience is the empty string.
    #[error(
        "the expected token {claim} is empty; set the value tokens must carry or remove the setting"
    )]
    EmptyClaimValue {
        /// `"issuer"` or `"audience"`.
        claim: &'static str,
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

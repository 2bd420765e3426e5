//! Verification keys from a JWKS URL (RFC 7517), cached per (issuer, key id).
//!
//! # Why the cache key includes the issuer
//!
//! Key ids are chosen by each issuer and are only unique within that issuer's key
//! set: two issuers can both call a key `"1"`. A cache keyed by `kid` alone lets a
//! key fetched for issuer A check a token that claims issuer B (and the other way
//! round), so whoever controls one issuer's keys can sign tokens another issuer's
//! users are trusted with — the mistake behind CVE-2026-49998. Here a key is found
//! by `(iss, kid)`: the token's unverified `iss` only chooses which cached key set to
//! look in, it is never trusted, and a key set enters an issuer's slot only when it
//! is fetched (or was fetched moments ago, see below) because a token of that issuer
//! missed.
//!
//! With one configured JWKS URL every key it publishes is trusted for every issuer
//! unless `issuer` is configured too (then tokens of other issuers are refused
//! before any lookup); the per-issuer slots still keep a key cached for one issuer
//! from ever checking another issuer's token, e.g. when the document changes between
//! fetches and a `kid` is reused.
//!
//! # Fetching
//!
//! A key set is used for a TTL, then fetched again. A token whose `(iss, kid)` is not
//! in the cache makes the set be fetched again at once, so a new key is picked up
//! with its first token; but at most one fetch starts per minimum interval, whatever
//! the tokens say, and tokens that miss while a fetch is under way wait for that
//! fetch instead of starting their own. When a fetch fails, keys that are past their
//! TTL are still used (the last known good set beats refusing every client while the
//! identity provider is down); a key that a successful fetch no longer lists is
//! dropped at once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::token::{ClaimRules, EC_P256, EC_P384, RSA, TokenError, validation};

/// How long a fetched key set is used before it is fetched again.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Least time between the starts of two fetches.
pub(crate) const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Bound of a whole fetch: connecting, the request, and reading the body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most keys kept from one document.
const MAX_KEYS: usize = 100;
/// Most issuer slots; past it the slot fetched longest ago is dropped. Tokens choose
/// the issuer, so without a bound they could grow the cache without end.
const MAX_ISSUERS: usize = 64;
const MAX_REDIRECTS: usize = 5;

/// The keys of a JWKS URL, cached per (issuer, key id).
pub(crate) struct JwksSource {
    url: reqwest::Url,
    client: reqwest::Client,
    /// Algorithms a JWKS key may check: RS*, ES256, ES384, less those the
    /// configuration's `algorithms` excludes.
    accepted: Vec<Algorithm>,
    rules: ClaimRules,
    ttl: Duration,
    min_refetch_interval: Duration,
    /// Issuer (`None`: tokens without `iss`) → the key set last fetched for it.
    slots: RwLock<HashMap<Option<String>, Arc<KeySet>>>,
    /// Held while deciding whether to fetch and while fetching: one fetch at a time.
    fetch: tokio::sync::Mutex<FetchState>,
    /// Fetch attempts finished; a task that saw it change while it waited for
    /// `fetch` uses that attempt's result instead of fetching again.
    attempts: AtomicU64,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// The last key set fetched successfully, whichever issuer's miss fetched it.
    latest: Option<Arc<KeySet>>,
    /// Why the last attempt failed; `None` after a success.
    last_error: Option<String>,
}

/// One fetched JWKS document: key id → the usable keys with that id.
struct KeySet {
    fetched_at: Instant,
    keys: HashMap<String, Vec<Arc<JwkKey>>>,
}

/// A usable key from a JWKS, with the validation for the only algorithms it may
/// check (those of its `kty` and curve, narrowed by its `alg`).
pub(crate) struct JwkKey {
    pub(crate) key: DecodingKey,
    pub(crate) validation: Validation,
}

enum Lookup {
    Fresh(Arc<JwkKey>),
    Stale(Arc<JwkKey>),
    Missing,
}

impl fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.url.as_str())
            .field("accepted", &self.accepted)
            .field("ttl", &self.ttl)
            .field("min_refetch_interval", &self.min_refetch_interval)
            .finish_non_exhaustive()
    }
}

impl JwksSource {
    /// Checks the URL and builds the HTTP client; fetches nothing yet.
    pub(crate) fn new(
        url: &str,
        accepted: Vec<Algorithm>,
        rules: ClaimRules,
        ttl: Duration,
        min_refetch_interval: Duration,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "the scheme must be http:// or https://, not {}://",
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".to_owned());
        }
        Ok(JwksSource {
            client: http_client(extra_roots)?,
            url: parsed,
            accepted,
            rules,
            ttl,
            min_refetch_interval,
            slots: RwLock::default(),
            fetch: tokio::sync::Mutex::default(),
            attempts: AtomicU64::new(0),
        })
    }

    /// Whether keys from this JWKS may check `alg` at all.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.accepted.contains(&alg)
    }

    /// The cached key `kid` of issuer `iss` for `alg`, without fetching: for the
    /// synchronous [`crate::TokenVerifier::verify`].
    pub(crate) fn cached_key(
        &self,
        iss: Option<&str>,
        kid: &str,
        alg: Algorithm,
    ) -> Result<Arc<JwkKey>, TokenError> {
        match self.lookup(iss, kid, alg) {
            Lookup::Fresh(key) | Lookup::Stale(key) => Ok(key),
            Lookup::Missing => Err(TokenError::JwksUnavailable {
                reason: format!(
                    "key \"{kid}\" has not been fetched yet and this check cannot fetch it \
                     (the server must verify with verify_async)"
                ),
            }),
        }
    }

    /// The key `kid` of issuer `iss` for `alg`, fetching the key set when the cache
    /// has no such key or only one past its TTL.
    pub(crate) async fn key(
        &self,
        iss: Option<&str>,
        kid: &str,
        alg: Algorithm,
    ) -> Result<Arc<JwkKey>, TokenError> {
        // Read before the lookup: an attempt that finishes after it is one we can use.
        let seen_attempts = self.attempts.load(Ordering::Acquire);
        let stale = match self.lookup(iss, kid, alg) {
            Lookup::Fresh(key) => return Ok(key),
            Lookup::Stale(key) => Some(key),
            Lookup::Missing => None,
        };
        // With a stale key in hand, do not wait for someone else's fetch.
        let mut state = match (self.fetch.try_lock(), stale) {
            (Ok(state), _) => state,
            (Err(_), Some(key)) => return Ok(key),
            (Err(_), None) => self.fetch.lock().await,
        };

        let now = Instant::now();
        let finished_while_waiting = self.attempts.load(Ordering::Acquire) != seen_attempts;
        let rate_limited = state
            .last_attempt
            .is_some_and(|at| now.duration_since(at) < self.min_refetch_interval);
        if !finished_while_waiting && !rate_limited {
            state.last_attempt = Some(now);
            match self.fetch_key_set().await {
                Ok(set) => {
                    state.latest = Some(Arc::new(set));
                    state.last_error = None;
                }
                Err(reason) => state.last_error = Some(reason),
            }
            self.attempts.fetch_add(1, Ordering::Release);
        }
        // The set fetched just now, by a task we waited for, or moments ago (within
        // the minimum interval): the freshest this source can know.
        if let Some(latest) = &state.latest {
            self.install(iss, latest);
        }
        match self.lookup(iss, kid, alg) {
            Lookup::Fresh(key) | Lookup::Stale(key) => Ok(key),
            Lookup::Missing => Err(match &state.last_error {
                Some(reason) => TokenError::JwksUnavailable {
                    reason: reason.clone(),
                },
                None => TokenError::UnknownKeyId {
                    kid: kid.to_owned(),
                    alg: format!("{alg:?}"),
                },
            }),
        }
    }

    fn lookup(&self, iss: Option<&str>, kid: &str, alg: Algorithm) -> Lookup {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let Some(set) = slots.get(&iss.map(str::to_owned)) else {
            return Lookup::Missing;
        };
        let Some(key) = set
            .keys
            .get(kid)
            .and_then(|keys| keys.iter().find(|k| k.validation.algorithms.contains(&alg)))
        else {
            return Lookup::Missing;
        };
        if set.fetched_at.elapsed() < self.ttl {
            Lookup::Fresh(Arc::clone(key))
        } else {
            Lookup::Stale(Arc::clone(key))
        }
    }

    /// Puts `set` in the slot of `iss` unless that slot holds a set as new.
    fn install(&self, iss: Option<&str>, set: &Arc<KeySet>) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = iss.map(str::to_owned);
        match slots.get(&slot) {
            Some(current) if current.fetched_at >= set.fetched_at => return,
            Some(_) => {}
            None if slots.len() >= MAX_ISSUERS => {
                let oldest = slots
                    .iter()
                    .min_by_key(|(_, s)| s.fetched_at)
                    .map(|(issuer, _)| issuer.clone());
                if let Some(oldest) = oldest {
                    slots.remove(&oldest);
                }
            }
            None => {}
        }
        slots.insert(slot, Arc::clone(set));
    }

    async fn fetch_key_set(&self) -> Result<KeySet, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the JWKS URL answered HTTP {status}"));
        }
        let too_large = || format!("the JWKS document is larger than {MAX_DOCUMENT_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body, &self.accepted, &self.rules)
    }
}

/// An HTTP/1.1 client whose TLS is rustls on aws-lc-rs, trusting Mozilla's roots,
/// the system's store and `extra_roots`.
fn http_client(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable or unparsable system certificates are skipped: the public roots above
    // still work, and a fetch that needs a missing private CA says so.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(extra_roots.iter().cloned());

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|url| url.scheme() == "https");
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if downgrade {
            attempt.error("refused a redirect from https:// to http://")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .redirect(redirects)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {}", describe(e)))
}

/// A fetch error with its causes, without the URL (the message may reach clients).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = if error.is_timeout() {
        format!("no answer from the JWKS URL within {FETCH_TIMEOUT:?}")
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (trusted: Mozilla's root CAs and the system store; for a private CA, add it \
             to the system store or point SSL_CERT_FILE at it)",
        );
    }
    text
}

/// The fields of a JWK that Herald reads; everything optional, so one odd key does
/// not spoil the document.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document, keeping the keys Herald can use: RSA and EC P-256/P-384
/// signature keys with a `kid`. HMAC (`oct`) keys are never taken from a JWKS.
fn parse_key_set(
    body: &[u8],
    accepted: &[Algorithm],
    rules: &ClaimRules,
) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|e| {
        format!("the JWKS URL did not return a JWKS document ({{\"keys\": [...]}}): {e}")
    })?;
    let mut keys: HashMap<String, Vec<Arc<JwkKey>>> = HashMap::new();
    let usable = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable_key(jwk, accepted, rules))
        .take(MAX_KEYS);
    for (kid, key) in usable {
        keys.entry(kid).or_default().push(Arc::new(key));
    }
    Ok(KeySet {
        fetched_at: Instant::now(),
        keys,
    })
}

/// The key id and key of a JWK, if it is a signature key Herald can use.
fn usable_key(jwk: Jwk, accepted: &[Algorithm], rules: &ClaimRules) -> Option<(String, JwkKey)> {
    let kid = jwk.kid.filter(|k| !k.is_empty())?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig")
        || jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let (key, family): (DecodingKey, &[Algorithm]) = match jwk.kty.as_str() {
        "RSA" => (rsa_key(jwk.n.as_deref()?, jwk.e.as_deref()?)?, RSA),
        "EC" => {
            let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
            match jwk.crv.as_deref()? {
                "P-256" => (ec_key(x, y, 32, EC_P256)?, EC_P256),
                "P-384" => (ec_key(x, y, 48, EC_P384)?, EC_P384),
                _ => return None,
            }
        }
        // "oct" (HMAC secrets), "OKP" and anything else.
        _ => return None,
    };
    // A JWK's "alg" pins it to that one algorithm, which must be of its own family.
    let pinned = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(
            Algorithm::from_str(name)
                .ok()
                .filter(|a| family.contains(a))?,
        ),
    };
    let algorithms = family
        .iter()
        .copied()
        .filter(|a| pinned.is_none_or(|p| p == *a) && accepted.contains(a))
        .collect::<Vec<_>>();
    if algorithms.is_empty() {
        return None;
    }
    let validation = validation(algorithms.into_iter(), rules);
    Some((kid, JwkKey { key, validation }))
}

/// An RSA key of 2048 to 8192 bits (the sizes aws-lc verifies RS* with).
fn rsa_key(n: &str, e: &str) -> Option<DecodingKey> {
    let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
    let exponent = URL_SAFE_NO_PAD.decode(e).ok()?;
    let significant = modulus.iter().position(|b| *b != 0)?;
    let modulus = &modulus[significant..];
    let bits = modulus.len() * 8 - modulus[0].leading_zeros() as usize;
    if !(2048..=8192).contains(&bits) || exponent.iter().all(|b| *b == 0) {
        return None;
    }
    Some(DecodingKey::from_rsa_raw_components(modulus, &exponent))
}

/// An EC key whose point is on the curve of `algorithms`.
fn ec_key(x: &str, y: &str, len: usize, algorithms: &[Algorithm]) -> Option<DecodingKey> {
    let x = URL_SAFE_NO_PAD.decode(x).ok()?;
    let y = URL_SAFE_NO_PAD.decode(y).ok()?;
    if x.len() != len || y.len() != len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let curve = if algorithms == EC_P256 {
        &ECDSA_P256_SHA256_FIXED
    } else {
        &ECDSA_P384_SHA384_FIXED
    };
    ParsedPublicKey::new(curve, &point).ok()?;
    Some(DecodingKey::from_ec_der(&point))
}

#[cfg(test)]
mod tests;

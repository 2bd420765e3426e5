//! JWKS tests against a real HTTP/1.1 server on a loopback port.

use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, OnceLock};

use jsonwebtoken::{EncodingKey, Header};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::{Claims, ConfigError, TokenConfig, TokenVerifier};

/// A key pair: what signs tokens, and the public half's JWK members (`kty`, `n`/`e`
/// or `crv`/`x`/`y`), built from the public key's DER.
struct TestKey {
    signing: EncodingKey,
    public: Value,
}

impl TestKey {
    fn generate(alg: &'static rcgen::SignatureAlgorithm) -> TestKey {
        let pair = rcgen::KeyPair::generate_for(alg).unwrap();
        let pem = pair.serialize_pem();
        let signing = if alg == &rcgen::PKCS_RSA_SHA256 {
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        } else {
            EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
        };
        // RSA: the PKCS#1 RSAPublicKey DER; EC: the uncompressed point 04 || x || y.
        let raw = pair.public_key_raw();
        let public = if alg == &rcgen::PKCS_RSA_SHA256 {
            let rsa = aws_lc_rs::rsa::PublicKey::from_der(raw).unwrap();
            json!({
                "kty": "RSA",
                "n": b64(rsa.modulus().big_endian_without_leading_zero()),
                "e": b64(rsa.exponent().big_endian_without_leading_zero()),
            })
        } else {
            let len = (raw.len() - 1) / 2;
            let crv = if len == 32 { "P-256" } else { "P-384" };
            json!({
                "kty": "EC",
                "crv": crv,
                "x": b64(&raw[1..1 + len]),
                "y": b64(&raw[1 + len..]),
            })
        };
        TestKey { signing, public }
    }

    /// The JWK of the public key with `kid` and any extra members.
    fn jwk(&self, kid: &str, extra: Value) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(kid);
        for (name, value) in extra.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    fn token(&self, alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// Key generation (RSA above all) is slow: each key once per test run.
fn rsa_a() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate(&rcgen::PKCS_RSA_SHA256))
}
fn rsa_b() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate(&rcgen::PKCS_RSA_SHA256))
}
fn p256() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate(&rcgen::PKCS_ECDSA_P256_SHA256))
}
fn p384() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate(&rcgen::PKCS_ECDSA_P384_SHA384))
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// What the test server answers, changeable while it runs.
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
    location: Option<String>,
}

/// A JWKS server: a loopback listener answering every request with the current
/// [`Answer`], counting the requests it reads.
struct Server {
    url: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    async fn start(body: String) -> Server {
        Self::start_with(body, None).await
    }

    /// Serves over TLS with `tls`, if given.
    async fn start_with(body: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body,
            delay: Duration::ZERO,
            location: None,
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (Arc::clone(&answer), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (a, r, tls) = (Arc::clone(&a), Arc::clone(&r), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(socket).await {
                                respond(stream, &a, &r).await;
                            }
                        }
                        None => respond(socket, &a, &r).await,
                    }
                });
            }
        });
        Server {
            url,
            answer,
            requests,
        }
    }

    fn serve(&self, body: String) {
        self.answer.lock().unwrap().body = body;
    }

    fn fail_with(&self, status: u16) {
        self.answer.lock().unwrap().status = status;
    }

    /// Answers with a redirect to `url`.
    fn redirect(&self, url: &str) {
        let mut answer = self.answer.lock().unwrap();
        answer.status = 302;
        answer.location = Some(url.to_owned());
    }

    fn delay(&self, delay: Duration) {
        self.answer.lock().unwrap().delay = delay;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &Mutex<Answer>,
    requests: &AtomicUsize,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let (status, body, delay, location) = {
        let a = answer.lock().unwrap();
        (a.status, a.body.clone(), a.delay, a.location.clone())
    };
    tokio::time::sleep(delay).await;
    let location = location.map_or_else(String::new, |l| format!("location: {l}\r\n"));
    let response = format!(
        "HTTP/1.1 {status} Test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         {location}connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn config(url: &str) -> TokenConfig {
    TokenConfig {
        jwks_url: Some(url.to_owned()),
        ..TokenConfig::default()
    }
}

/// A verifier of `url` that may fetch again at once (rate limit off).
fn eager(url: &str) -> TokenVerifier {
    TokenVerifier::new(&TokenConfig {
        jwks_min_refetch_interval: Some(Duration::ZERO),
        ..config(url)
    })
    .unwrap()
}

fn claims(sub: &str, iss: Option<&str>) -> Value {
    let mut c = json!({"sub": sub, "channels": ["news"]});
    if let Some(iss) = iss {
        c["iss"] = json!(iss);
    }
    c
}

#[tokio::test]
async fn valid_tokens_verify_by_kid_with_one_fetch() {
    let server = Server::start(jwks(&[
        rsa_a().jwk("rsa", json!({"use": "sig"})),
        p256().jwk("ec256", json!({"alg": "ES256"})),
        p384().jwk("ec384", json!({"key_ops": ["verify"]})),
        json!({"kty": "oct", "kid": "secret", "k": b64(b"hmac")}),
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(&[1; 32])}),
    ]))
    .await;
    let v = TokenVerifier::new(&config(&server.url)).unwrap();
    assert!(v.is_configured() && v.uses_jwks());

    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let token = rsa_a().token(alg, Some("rsa"), claims("alice", Some("https://a")));
        let got = v.verify_async(&token).await.unwrap();
        assert_eq!(
            got,
            Claims {
                sub: "alice".into(),
                channels: vec!["news".into()],
                ..Claims::default()
            },
            "{alg:?}"
        );
    }
    let es256 = p256().token(Algorithm::ES256, Some("ec256"), claims("e", None));
    assert_eq!(v.verify_async(&es256).await.unwrap().sub, "e");
    let es384 = p384().token(Algorithm::ES384, Some("ec384"), claims("e", None));
    assert_eq!(v.verify_async(&es384).await.unwrap().sub, "e");
    // Two issuer slots (https://a and none), both filled by the first fetch within
    // the minimum interval: one request in all.
    assert_eq!(server.requests(), 1);

    // Cached keys now verify synchronously too, and a clone shares the cache.
    assert_eq!(v.verify(&es256).unwrap().sub, "e");
    assert_eq!(v.clone().verify_async(&es384).await.unwrap().sub, "e");
    assert_eq!(server.requests(), 1);

    // Signed by another key than the one its kid names.
    let forged = p256().token(Algorithm::ES256, Some("ec256"), claims("m", None));
    let other = TestKey::generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let forged_by_other = other.token(Algorithm::ES256, Some("ec256"), claims("m", None));
    assert!(v.verify_async(&forged).await.is_ok());
    assert_eq!(
        v.verify_async(&forged_by_other).await,
        Err(TokenError::BadSignature)
    );
    // Expiry is checked as for configured keys.
    let expired = rsa_a().token(
        Algorithm::RS256,
        Some("rsa"),
        json!({"sub": "x", "exp": 1_000_000}),
    );
    assert_eq!(v.verify_async(&expired).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_fails_clearly() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    // Long enough that the checks "within the interval" below finish inside it.
    let interval = Duration::from_secs(1);
    let v = TokenVerifier::new(&TokenConfig {
        jwks_min_refetch_interval: Some(interval),
        ..config(&server.url)
    })
    .unwrap();
    let good = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", None));
    v.verify_async(&good).await.unwrap();
    assert_eq!(server.requests(), 1);
    tokio::time::sleep(interval).await;

    let unknown = rsa_a().token(Algorithm::RS256, Some("2"), claims("a", None));
    let err = v.verify_async(&unknown).await.unwrap_err();
    assert_eq!(
        err,
        TokenError::UnknownKeyId {
            kid: "2".into(),
            alg: "RS256".into()
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("\"2\"") && message.contains("get a new token"),
        "{message}"
    );
    assert!(!err.is_temporary());
    assert_eq!(server.requests(), 2, "a miss fetches the key set again");

    // Within the minimum interval (10 s by default) misses do not fetch again, however
    // many tokens name unknown keys; after it they do.
    for kid in ["2", "3", "4"] {
        let token = rsa_a().token(Algorithm::RS256, Some(kid), claims("a", None));
        assert!(matches!(
            v.verify_async(&token).await,
            Err(TokenError::UnknownKeyId { .. })
        ));
    }
    assert_eq!(server.requests(), 2);
    assert!(v.verify_async(&good).await.is_ok());
    tokio::time::sleep(interval).await;
    assert!(v.verify_async(&unknown).await.is_err());
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn key_rotation_is_picked_up_after_a_miss() {
    let server = Server::start(jwks(&[rsa_a().jwk("2026-01", json!({}))])).await;
    let v = eager(&server.url);
    let old = rsa_a().token(Algorithm::RS256, Some("2026-01"), claims("a", None));
    v.verify_async(&old).await.unwrap();

    // The identity provider rotates: the new key appears and the old one goes.
    server.serve(jwks(&[p256().jwk("2026-02", json!({}))]));
    let new = p256().token(Algorithm::ES256, Some("2026-02"), claims("b", None));
    assert_eq!(v.verify_async(&new).await.unwrap().sub, "b");
    assert_eq!(server.requests(), 2);
    // The fetch that found the new key dropped the retired one.
    assert!(matches!(
        v.verify_async(&old).await,
        Err(TokenError::UnknownKeyId { .. })
    ));
}

#[tokio::test]
async fn keys_are_fetched_again_after_their_ttl() {
    let server = Server::start(jwks(&[rsa_a().jwk("k", json!({}))])).await;
    let v = TokenVerifier::new(&TokenConfig {
        jwks_cache_ttl: Some(Duration::from_secs(1)),
        jwks_min_refetch_interval: Some(Duration::ZERO),
        ..config(&server.url)
    })
    .unwrap();
    let token = rsa_a().token(Algorithm::RS256, Some("k"), claims("a", None));
    v.verify_async(&token).await.unwrap();
    v.verify_async(&token).await.unwrap();
    assert_eq!(server.requests(), 1, "fresh keys come from the cache");

    // The key is withdrawn; once the TTL has passed the next token finds out.
    server.serve(jwks(&[]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        v.verify_async(&token).await,
        Err(TokenError::UnknownKeyId { .. })
    ));
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn two_issuers_with_the_same_kid_never_share_a_cache_slot() {
    // Issuer A's key set says kid "1" is key A.
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = eager(&server.url);
    let a = Some("https://a.example");
    let b = Some("https://b.example");
    let from_a = rsa_a().token(Algorithm::RS256, Some("1"), claims("alice", a));
    assert_eq!(v.verify_async(&from_a).await.unwrap().sub, "alice");

    // Now the set says kid "1" is key B. Cached by kid alone, B's token would be
    // checked against key A (and fail), and once key B were cached, A's token signed
    // by B would pass. Per (iss, kid), B's token misses, fetches and gets key B.
    server.serve(jwks(&[rsa_b().jwk("1", json!({}))]));
    let from_b = rsa_b().token(Algorithm::RS256, Some("1"), claims("bob", b));
    assert_eq!(v.verify_async(&from_b).await.unwrap().sub, "bob");
    assert_eq!(server.requests(), 2);

    // A token claiming A signed with B's key meets A's cached key, and the other way
    // round: neither verifies, and neither makes a fetch (their slots hold kid "1").
    let a_signed_by_b = rsa_b().token(Algorithm::RS256, Some("1"), claims("mallory", a));
    let b_signed_by_a = rsa_a().token(Algorithm::RS256, Some("1"), claims("mallory", b));
    assert_eq!(
        v.verify_async(&a_signed_by_b).await,
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        v.verify_async(&b_signed_by_a).await,
        Err(TokenError::BadSignature)
    );
    assert_eq!(v.verify(&a_signed_by_b), Err(TokenError::BadSignature));
    assert_eq!(v.verify(&b_signed_by_a), Err(TokenError::BadSignature));
    // Each issuer's own tokens still verify, from the cache.
    assert_eq!(v.verify_async(&from_a).await.unwrap().sub, "alice");
    assert_eq!(v.verify_async(&from_b).await.unwrap().sub, "bob");
    assert_eq!(server.requests(), 2);

    // A token with no `iss` has a slot of its own as well.
    let no_iss = rsa_b().token(Algorithm::RS256, Some("1"), claims("carol", None));
    assert_eq!(v.verify_async(&no_iss).await.unwrap().sub, "carol");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_configured_issuer_refuses_other_issuers_before_any_fetch() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = TokenVerifier::new(&TokenConfig {
        issuer: Some("https://a.example".into()),
        audience: Some("herald".into()),
        ..config(&server.url)
    })
    .unwrap();
    for iss in [Some("https://b.example"), None] {
        let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("x", iss));
        assert_eq!(
            v.verify_async(&token).await,
            Err(TokenError::WrongIssuer {
                expected: "https://a.example".into()
            })
        );
    }
    assert_eq!(server.requests(), 0);

    let token = |aud: Value| {
        let mut c = claims("x", Some("https://a.example"));
        c["aud"] = aud;
        rsa_a().token(Algorithm::RS256, Some("1"), c)
    };
    assert_eq!(
        v.verify_async(&token(json!(["herald", "other"])))
            .await
            .unwrap()
            .sub,
        "x"
    );
    assert_eq!(
        v.verify_async(&token(json!("other"))).await,
        Err(TokenError::WrongAudience {
            expected: "herald".into()
        })
    );
    // A wrong `iss` type is malformed, not a cache slot.
    let odd = rsa_a().token(Algorithm::RS256, Some("1"), json!({"sub": "x", "iss": 5}));
    assert!(matches!(
        v.verify_async(&odd).await,
        Err(TokenError::Malformed { .. })
    ));
}

#[tokio::test]
async fn fetch_failures_give_clear_errors() {
    // Nothing listens on the port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/jwks.json", listener.local_addr().unwrap())
    };
    let v = TokenVerifier::new(&config(&closed)).unwrap();
    let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", None));
    let err = v.verify_async(&token).await.unwrap_err();
    let TokenError::JwksUnavailable { reason } = &err else {
        panic!("{err:?}")
    };
    assert!(err.is_temporary());
    assert!(err.to_string().contains("try again later"), "{err}");
    assert!(
        !reason.contains("127.0.0.1"),
        "the URL stays private: {reason}"
    );
    assert!(reason.to_lowercase().contains("connect"), "{reason}");

    // An error status, then a body that is no JWKS; each reported as such.
    let server = Server::start(String::new()).await;
    let v = eager(&server.url);
    server.fail_with(503);
    let reason = |e: TokenError| match e {
        TokenError::JwksUnavailable { reason } => reason,
        other => panic!("{other:?}"),
    };
    let got = reason(v.verify_async(&token).await.unwrap_err());
    assert!(got.contains("HTTP 503"), "{got}");
    server.fail_with(200);
    for body in ["<html>", "{\"keys\": 5}", "[]"] {
        server.serve(body.into());
        let got = reason(v.verify_async(&token).await.unwrap_err());
        assert!(
            got.contains("did not return a JWKS document"),
            "{body}: {got}"
        );
    }
    server.serve(format!(
        "{{\"keys\": [\"{}\"]}}",
        "x".repeat(MAX_DOCUMENT_BYTES)
    ));
    let got = reason(v.verify_async(&token).await.unwrap_err());
    assert!(got.contains("larger than"), "{got}");

    // Within the minimum interval a failure is not retried: later tokens get the
    // same answer without a request.
    let slow = TokenVerifier::new(&config(&server.url)).unwrap();
    server.fail_with(500);
    let before = server.requests();
    for _ in 0..3 {
        let got = reason(slow.verify_async(&token).await.unwrap_err());
        assert!(got.contains("HTTP 500"), "{got}");
    }
    assert_eq!(server.requests(), before + 1);
}

#[tokio::test]
async fn the_last_good_keys_are_used_while_the_jwks_is_down() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = TokenVerifier::new(&TokenConfig {
        jwks_cache_ttl: Some(Duration::ZERO), // always stale: every token tries a fetch
        jwks_min_refetch_interval: Some(Duration::ZERO),
        ..config(&server.url)
    })
    .unwrap();
    let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", None));
    v.verify_async(&token).await.unwrap();
    server.fail_with(500);
    assert_eq!(v.verify_async(&token).await.unwrap().sub, "a");
    assert_eq!(server.requests(), 2);
    // An unknown key gets the reason the set could not be checked.
    let unknown = rsa_a().token(Algorithm::RS256, Some("2"), claims("a", None));
    assert!(matches!(
        v.verify_async(&unknown).await,
        Err(TokenError::JwksUnavailable { .. })
    ));
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    server.delay(Duration::from_millis(300));
    // No rate limit: the sharing comes from waiting for the fetch under way.
    let v = eager(&server.url);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let v = v.clone();
            let iss = format!("https://issuer-{}.example", i % 2);
            let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", Some(&iss)));
            tokio::spawn(async move { v.verify_async(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().sub, "a");
    }
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let rsa_jwk = rsa_a().jwk("rsa", json!({}));
    let server = Server::start(jwks(&[
        rsa_jwk.clone(),
        p256().jwk("ec", json!({})),
        rsa_b().jwk("pinned", json!({"alg": "RS256"})),
        p256().jwk("ec-claims-rs", json!({"alg": "RS256"})),
        json!({"kty": "oct", "kid": "oct", "k": b64(b"shared")}),
    ]))
    .await;
    let v = TokenVerifier::new(&config(&server.url)).unwrap();

    // HS256 with the RSA JWK as the secret (its JSON, its modulus): no JWKS key is
    // ever an HMAC key, so there is no key for HS256, and nothing is fetched.
    let n = URL_SAFE_NO_PAD
        .decode(rsa_jwk["n"].as_str().unwrap())
        .unwrap();
    let secrets = [rsa_jwk.to_string().into_bytes(), n, b"shared".to_vec()];
    let forged: Vec<String> = secrets
        .iter()
        .zip(["rsa", "rsa", "oct"])
        .map(|(secret, kid)| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(
                &header,
                &claims("mallory", None),
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        })
        .collect();
    for token in &forged {
        assert_eq!(
            v.verify_async(token).await,
            Err(TokenError::NoKeyForAlgorithm {
                alg: "HS256".into()
            })
        );
    }
    assert_eq!(server.requests(), 0);
    // With an HMAC secret configured as well, they meet that secret only.
    let both = TokenVerifier::new(&TokenConfig {
        hmac_secret: Some("the real secret".into()),
        ..config(&server.url)
    })
    .unwrap();
    for token in &forged {
        assert_eq!(
            both.verify_async(token).await,
            Err(TokenError::BadSignature)
        );
    }
    assert_eq!(server.requests(), 0);

    // An RS256 token naming the EC key, an ES256 token naming an RSA key, an RS512
    // token naming a key pinned to RS256, and a key whose `alg` is not of its own
    // family: no usable key.
    let cases = [
        (
            rsa_a().token(Algorithm::RS256, Some("ec"), claims("m", None)),
            "RS256",
        ),
        (
            p256().token(Algorithm::ES256, Some("rsa"), claims("m", None)),
            "ES256",
        ),
        (
            rsa_b().token(Algorithm::RS512, Some("pinned"), claims("m", None)),
            "RS512",
        ),
        (
            p256().token(Algorithm::ES256, Some("ec-claims-rs"), claims("m", None)),
            "ES256",
        ),
        (
            rsa_a().token(Algorithm::RS256, Some("oct"), claims("m", None)),
            "RS256",
        ),
    ];
    for (token, alg) in &cases {
        let err = v.verify_async(token).await.unwrap_err();
        assert!(
            matches!(&err, TokenError::UnknownKeyId { alg: a, .. } if a == alg),
            "{alg}: {err:?}"
        );
    }
    let pinned = rsa_b().token(Algorithm::RS256, Some("pinned"), claims("ok", None));
    assert_eq!(v.verify_async(&pinned).await.unwrap().sub, "ok");

    // `none` never reaches the JWKS either.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa"}"#),
        b64(claims("m", None).to_string().as_bytes())
    );
    assert!(matches!(
        v.verify_async(&none).await,
        Err(TokenError::AlgorithmNotAccepted { .. })
    ));
}

#[tokio::test]
async fn tokens_without_kid_are_refused_when_only_a_jwks_is_configured() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = TokenVerifier::new(&config(&server.url)).unwrap();
    let token = rsa_a().token(Algorithm::RS256, None, claims("a", None));
    let err = v.verify_async(&token).await.unwrap_err();
    assert_eq!(
        err,
        TokenError::MissingKeyId {
            alg: "RS256".into()
        }
    );
    assert!(err.to_string().contains("\"kid\""), "{err}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn configured_public_key_comes_first_then_the_jwks() {
    let server = Server::start(jwks(&[rsa_b().jwk("b", json!({}))])).await;
    let pem = {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        (pair.public_key_pem(), private)
    };
    let v = TokenVerifier::new(&TokenConfig {
        public_key_pem: Some(pem.0.clone()),
        ..config(&server.url)
    })
    .unwrap();
    // Signed by the configured key, with or without kid: no fetch.
    for kid in [None, Some("whatever")] {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims("pem", None), &pem.1).unwrap();
        assert_eq!(v.verify_async(&token).await.unwrap().sub, "pem");
    }
    assert_eq!(server.requests(), 0);
    // Same family, other key, no kid: the configured key's answer stands.
    let no_kid = p256().token(Algorithm::ES256, None, claims("x", None));
    assert_eq!(v.verify_async(&no_kid).await, Err(TokenError::BadSignature));
    // An RS256 token: no configured RSA key, so the JWKS.
    let from_jwks = rsa_b().token(Algorithm::RS256, Some("b"), claims("jwks", None));
    assert_eq!(v.verify_async(&from_jwks).await.unwrap().sub, "jwks");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn synchronous_verify_uses_cached_keys_only() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = TokenVerifier::new(&config(&server.url)).unwrap();
    let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", None));
    let err = v.verify(&token).unwrap_err();
    assert!(
        matches!(&err, TokenError::JwksUnavailable { reason } if reason.contains("verify_async")),
        "{err:?}"
    );
    assert_eq!(server.requests(), 0);
    v.verify_async(&token).await.unwrap();
    assert_eq!(v.verify(&token).unwrap().sub, "a");
}

#[tokio::test]
async fn https_jwks_uses_rustls_on_aws_lc_and_checks_the_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = Server::start_with(jwks(&[p256().jwk("1", json!({}))]), Some(acceptor)).await;
    let token = p256().token(Algorithm::ES256, Some("1"), claims("tls", None));

    // A self-signed certificate is not trusted by default...
    let v = TokenVerifier::new(&config(&server.url)).unwrap();
    match v.verify_async(&token).await.unwrap_err() {
        TokenError::JwksUnavailable { reason } => {
            assert!(reason.contains("SSL_CERT_FILE"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // ...and is once it is a trusted root.
    let v = TokenVerifier::build(&config(&server.url), std::slice::from_ref(&cert)).unwrap();
    assert_eq!(v.verify_async(&token).await.unwrap().sub, "tls");

    // Redirects are followed, but never from https:// down to http://, where anyone
    // on the path could substitute keys.
    let plain = Server::start(jwks(&[p256().jwk("1", json!({}))])).await;
    server.redirect(&plain.url);
    let v = TokenVerifier::build(&config(&server.url), &[cert]).unwrap();
    match v.verify_async(&token).await.unwrap_err() {
        TokenError::JwksUnavailable { reason } => {
            assert!(reason.contains("https:// to http://"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plain.requests(), 0);
    let hop = Server::start(String::new()).await;
    hop.redirect(&plain.url);
    let v = TokenVerifier::new(&config(&hop.url)).unwrap();
    assert_eq!(v.verify_async(&token).await.unwrap().sub, "tls");
    assert_eq!(plain.requests(), 1);
}

#[test]
fn verifier_and_its_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let v = TokenVerifier::new(&config("https://id.example/jwks")).unwrap();
    send_sync(&v);
    send(v.verify_async("a.b.c"));
}

#[test]
fn bad_jwks_urls_fail_at_start_up() {
    for url in [
        "",
        "not a url",
        "ftp://example.com/jwks",
        "file:///etc/jwks.json",
    ] {
        let err = TokenVerifier::new(&config(url)).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidJwksUrl { url: u, .. } if u == url),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains("JWKS URL"), "{err}");
    }
    let err = TokenVerifier::new(&config("ftp://example.com/")).unwrap_err();
    assert!(err.to_string().contains("http:// or https://"), "{err}");
}

#[test]
fn the_algorithm_list_applies_to_jwks_keys() {
    // A JWKS provides RS* and ES*, never HS*.
    let err = TokenVerifier::new(&TokenConfig {
        algorithms: Some(vec!["HS256".into()]),
        ..config("https://id.example/jwks")
    })
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::AlgorithmWithoutKey {
            name: "HS256".into()
        }
    );
    let v = TokenVerifier::new(&TokenConfig {
        algorithms: Some(vec!["RS256".into()]),
        ..config("https://id.example/jwks")
    })
    .unwrap();
    // Refused from the header alone: no fetch is attempted.
    let es = p256().token(Algorithm::ES256, Some("1"), claims("x", None));
    assert_eq!(
        v.verify(&es),
        Err(TokenError::AlgorithmNotAccepted {
            alg: "ES256".into()
        })
    );
    let accepted = v.jwks.as_ref().unwrap().accepted.clone();
    assert_eq!(accepted, vec![Algorithm::RS256]);
}

#[test]
fn only_usable_signature_keys_are_kept_from_a_document() {
    let accepted = RSA
        .iter()
        .chain(EC_P256)
        .chain(EC_P384)
        .copied()
        .collect::<Vec<_>>();
    let rules = ClaimRules::default();
    let short_rsa = json!({"kty": "RSA", "kid": "short", "n": b64(&[0xc5; 128]), "e": "AQAB"});
    let mut off_curve = p256().jwk("off-curve", json!({}));
    off_curve["y"] = json!(b64(&[7; 32]));
    let mut truncated = p256().jwk("truncated", json!({}));
    truncated["x"] = json!(b64(&[7; 31]));
    let mut no_kid = rsa_a().public.clone();
    no_kid["alg"] = json!("RS256");
    let document = jwks(&[
        rsa_a().jwk("good-rsa", json!({})),
        p384().jwk("good-ec", json!({})),
        rsa_a().jwk("enc", json!({"use": "enc"})),
        rsa_a().jwk("wrap", json!({"key_ops": ["wrapKey"]})),
        rsa_a().jwk("ps", json!({"alg": "PS256"})),
        p384().jwk("wrong-curve-alg", json!({"alg": "ES256"})),
        p256().jwk("p521", json!({"crv": "P-521"})),
        rsa_a().jwk("", json!({})),
        short_rsa,
        off_curve,
        truncated,
        no_kid,
        json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
        json!({"kid": "no-kty"}),
        json!("not an object"),
        json!({"kty": "RSA", "kid": 5}),
    ]);
    let set = parse_key_set(document.as_bytes(), &accepted, &rules).unwrap();
    let mut kids: Vec<&str> = set.keys.keys().map(String::as_str).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["good-ec", "good-rsa"]);
    assert_eq!(
        set.keys["good-rsa"][0].validation.algorithms,
        RSA.to_vec(),
        "an RSA key without alg checks RS256/384/512"
    );
    assert_eq!(
        set.keys["good-ec"][0].validation.algorithms,
        EC_P384.to_vec()
    );

    // The same kid on an RSA and an EC key: each is found for its own algorithms.
    let shared = jwks(&[rsa_a().jwk("k", json!({})), p256().jwk("k", json!({}))]);
    let set = parse_key_set(shared.as_bytes(), &accepted, &rules).unwrap();
    assert_eq!(set.keys["k"].len(), 2);

    // At most MAX_KEYS keys are kept.
    let many: Vec<Value> = (0..MAX_KEYS + 20)
        .map(|i| p256().jwk(&i.to_string(), json!({})))
        .collect();
    let set = parse_key_set(jwks(&many).as_bytes(), &accepted, &rules).unwrap();
    assert_eq!(set.keys.len(), MAX_KEYS);
}

#[tokio::test]
async fn issuer_slots_are_bounded() {
    let server = Server::start(jwks(&[rsa_a().jwk("1", json!({}))])).await;
    let v = TokenVerifier::new(&config(&server.url)).unwrap();
    for i in 0..MAX_ISSUERS + 10 {
        let iss = format!("https://{i}.example");
        let token = rsa_a().token(Algorithm::RS256, Some("1"), claims("a", Some(&iss)));
        v.verify_async(&token).await.unwrap();
    }
    let source = v.jwks.as_ref().unwrap();
    assert_eq!(source.slots.read().unwrap().len(), MAX_ISSUERS);
    // One fetch served them all (minimum interval), each in its own slot.
    assert_eq!(server.requests(), 1);
}

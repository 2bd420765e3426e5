use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

// Public keys that rcgen cannot make, from `openssl genpkey ... | openssl pkey -pubout`.
const RSA_1024_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDIsg4AafVyVi3bfEN2G6iW76Os
Eh+Ok0oM97tnxeLsTTSDskitosyxznmAwpufjeFsJ54JwUrAMlfNF2zyhUBVvDMs
Z6TKczDWjZc1ZyEMm+NFPxSJfs1aduI1udT5ZvYlf8fyq6o2fqjdIlOBCmlWqXFI
8x0DrtKAyTLFxgjEVQIDAQAB
-----END PUBLIC KEY-----
";
const EC_P521_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQB7qUjtu5cp/tA/8pflzpiVKvUquQx
bZRntD4jcsT4f0RcNL8TY58PgaozPttXnf/TTMuZQnjyzIMbLy22XYGYHsgAMihR
LefAnGYRS/mjwoli3xvZQkuFPz+GV79cjWrqYWukvlMr2PZI4oTuuubou0XS2Hbi
uxSXahYO/tAEu69QNek=
-----END PUBLIC KEY-----
";
const ED25519_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAUgZopnqxGn7TXZZ7/7ZEprqoikqT9H1VwRf9DeqosVc=
-----END PUBLIC KEY-----
";

/// A generated key pair as (private PKCS#8 PEM, public SPKI PEM).
struct Pair {
    private: String,
    public: String,
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> Pair {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    Pair {
        private: kp.serialize_pem(),
        public: kp.public_key_pem(),
    }
}

// RSA key generation is slow; make each key once per test run.
fn rsa() -> &'static Pair {
    static KEY: OnceLock<Pair> = OnceLock::new();
    KEY.get_or_init(|| generate(&rcgen::PKCS_RSA_SHA256))
}
fn p256() -> &'static Pair {
    static KEY: OnceLock<Pair> = OnceLock::new();
    KEY.get_or_init(|| generate(&rcgen::PKCS_ECDSA_P256_SHA256))
}
fn p384() -> &'static Pair {
    static KEY: OnceLock<Pair> = OnceLock::new();
    KEY.get_or_init(|| generate(&rcgen::PKCS_ECDSA_P384_SHA384))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hmac_key(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn verifier(hmac: Option<&str>, pem: Option<&str>, algs: Option<&[&str]>) -> TokenVerifier {
    TokenVerifier::new(&config(hmac, pem, algs)).unwrap()
}

fn config(hmac: Option<&str>, pem: Option<&str>, algs: Option<&[&str]>) -> TokenConfig {
    TokenConfig {
        hmac_secret: hmac.map(str::to_owned),
        public_key_pem: pem.map(str::to_owned),
        algorithms: algs.map(|a| a.iter().map(|s| s.to_string()).collect()),
        ..TokenConfig::default()
    }
}

/// A token with any header, as an attacker would write it.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", part(header), part(claims))
}

fn alg_of(e: &TokenError) -> &str {
    match e {
        TokenError::AlgorithmNotAccepted { alg } | TokenError::NoKeyForAlgorithm { alg } => alg,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hmac_algorithms_verify_and_claims_come_through() {
    let v = verifier(Some("s3cret"), None, None);
    assert!(v.is_configured());
    let exp = now() + 3600;
    let claims = json!({
        "sub": "alice", "exp": exp, "channels": ["news:*", "chat"],
        "info": {"name": "Alice"}, "extra": 1,
    });
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let got = v.verify(&sign(alg, &hmac_key("s3cret"), &claims)).unwrap();
        assert_eq!(
            got,
            Claims {
                sub: "alice".into(),
                exp: Some(exp),
                channels: vec!["news:*".into(), "chat".into()],
                info: Some(json!({"name": "Alice"})),
                ..Claims::default()
            },
            "{alg:?}"
        );
    }
}

#[test]
fn minimal_claims_and_minted_tokens() {
    let v = verifier(Some("k"), None, None);
    let got = v
        .verify(&sign(Algorithm::HS256, &hmac_key("k"), &json!({"sub": ""})))
        .unwrap();
    assert_eq!(
        (got.sub.as_str(), got.exp, got.channels.len(), got.info),
        ("", None, 0, None)
    );

    let minted = mint_hs256(
        "k",
        &MintClaims {
            sub: "bob".into(),
            exp: Some(now() + 60),
            channels: vec!["a".into()],
        },
    );
    let got = v.verify(&minted).unwrap();
    assert_eq!(
        (got.sub.as_str(), got.channels),
        ("bob", vec!["a".to_owned()])
    );
    assert!(v.verify(&mint_hs256("k", &MintClaims::default())).is_ok());
}

#[test]
fn rsa_algorithms_verify() {
    let v = verifier(None, Some(&rsa().public), None);
    let key = EncodingKey::from_rsa_pem(rsa().private.as_bytes()).unwrap();
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let got = v.verify(&sign(alg, &key, &json!({"sub": "r"}))).unwrap();
        assert_eq!(got.sub, "r", "{alg:?}");
    }
    // PS256 uses the same key type but is not among the algorithms we accept.
    let pss = sign(Algorithm::PS256, &key, &json!({"sub": "r"}));
    assert_eq!(
        v.verify(&pss),
        Err(TokenError::AlgorithmNotAccepted {
            alg: "PS256".into()
        })
    );
}

#[test]
fn ec_algorithms_verify_and_the_curve_picks_the_algorithm() {
    let claims = json!({"sub": "e"});
    let v256 = verifier(None, Some(&p256().public), None);
    let k256 = EncodingKey::from_ec_pem(p256().private.as_bytes()).unwrap();
    assert_eq!(
        v256.verify(&sign(Algorithm::ES256, &k256, &claims))
            .unwrap()
            .sub,
        "e"
    );

    let v384 = verifier(None, Some(&p384().public), None);
    let k384 = EncodingKey::from_ec_pem(p384().private.as_bytes()).unwrap();
    assert_eq!(
        v384.verify(&sign(Algorithm::ES384, &k384, &claims))
            .unwrap()
            .sub,
        "e"
    );

    // A P-384 token against a P-256 key: no key for it, and no attempt to verify.
    let err = v256
        .verify(&sign(Algorithm::ES384, &k384, &claims))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::NoKeyForAlgorithm {
            alg: "ES384".into()
        }
    );
    assert!(err.to_string().contains("P-384"), "{err}");
    // Right curve, wrong key.
    let other = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let k_other = EncodingKey::from_ec_pem(other.private.as_bytes()).unwrap();
    assert_eq!(
        v256.verify(&sign(Algorithm::ES256, &k_other, &claims)),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn hmac_token_is_never_checked_with_a_public_key_as_the_secret() {
    let claims = json!({"sub": "mallory", "channels": ["*"]});
    for pair in [rsa(), p256()] {
        // The classic forgery: HS256 keyed with the public key's PEM text or its DER.
        let der = jsonwebtoken::DecodingKey::from_rsa_pem(pair.public.as_bytes())
            .or_else(|_| jsonwebtoken::DecodingKey::from_ec_pem(pair.public.as_bytes()))
            .unwrap();
        let forged = [
            sign(Algorithm::HS256, &hmac_key(&pair.public), &claims),
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(der.try_get_as_bytes().unwrap()),
                &claims,
            ),
            sign(Algorithm::HS512, &hmac_key(&pair.public), &claims),
        ];

        let only_public = verifier(None, Some(&pair.public), None);
        for token in &forged {
            let err = only_public.verify(token).unwrap_err();
            assert!(
                matches!(err, TokenError::NoKeyForAlgorithm { .. }),
                "{err:?}"
            );
        }
        // With an HMAC secret also configured, the forged tokens meet that secret only.
        let both = verifier(Some("the real secret"), Some(&pair.public), None);
        for token in &forged {
            assert_eq!(both.verify(token), Err(TokenError::BadSignature));
        }
    }
}

#[test]
fn public_key_token_is_rejected_when_only_a_secret_is_configured() {
    let v = verifier(Some("s"), None, None);
    let key = EncodingKey::from_rsa_pem(rsa().private.as_bytes()).unwrap();
    let err = v
        .verify(&sign(Algorithm::RS256, &key, &json!({"sub": "x"})))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::NoKeyForAlgorithm {
            alg: "RS256".into()
        }
    );
    assert!(err.to_string().contains("RSA public key"), "{err}");
}

#[test]
fn alg_none_is_always_rejected() {
    let claims = json!({"sub": "mallory"});
    let verifiers = [
        verifier(Some("s"), None, None),
        verifier(None, Some(&rsa().public), None),
        verifier(Some("s"), Some(&p256().public), None),
        TokenVerifier::new(&TokenConfig::default()).unwrap(),
    ];
    for v in &verifiers {
        for alg in ["none", "None", "NONE", "nOnE"] {
            for sig in ["", "AAAA"] {
                let token = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims, sig);
                let err = v.verify(&token).unwrap_err();
                assert_eq!(err, TokenError::AlgorithmNotAccepted { alg: alg.into() });
                assert!(err.to_string().contains("never accepted"), "{err}");
            }
        }
    }
}

#[test]
fn algorithm_names_are_case_sensitive_in_tokens() {
    let v = verifier(Some("s"), None, None);
    let good = sign(Algorithm::HS256, &hmac_key("s"), &json!({"sub": "x"}));
    let (_, rest) = good.split_once('.').unwrap();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"hs256"}"#);
    let err = v.verify(&format!("{header}.{rest}")).unwrap_err();
    assert_eq!(alg_of(&err), "hs256");
    assert!(matches!(err, TokenError::AlgorithmNotAccepted { .. }));
}

#[test]
fn expiry() {
    let v = verifier(Some("s"), None, None);
    let token = |exp: Value| {
        sign(
            Algorithm::HS256,
            &hmac_key("s"),
            &json!({"sub": "x", "exp": exp}),
        )
    };

    let err = v.verify(&token(json!(now() - 60))).unwrap_err();
    assert_eq!(err, TokenError::Expired);
    assert!(err.is_expired());
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!TokenError::BadSignature.is_expired());

    assert_eq!(
        v.verify(&token(json!(now() + 60))).unwrap().exp,
        Some(now() + 60)
    );
    // A few seconds of clock skew are tolerated, no more.
    assert!(v.verify(&token(json!(now() - 2))).is_ok());
    assert_eq!(
        v.verify(&token(json!(now() - LEEWAY_SECS - 5))),
        Err(TokenError::Expired)
    );
    // Some libraries write NumericDate as a float.
    assert_eq!(
        v.verify(&token(json!((now() + 100) as f64 + 0.25)))
            .unwrap()
            .exp,
        Some(now() + 100)
    );
    assert_eq!(
        v.verify(&token(json!((now() - 100) as f64))),
        Err(TokenError::Expired)
    );
    // Wrong types are malformed, never "valid forever".
    for bad in [json!("soon"), json!(-1), json!(true)] {
        let err = v.verify(&token(bad.clone())).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn not_before_in_the_future_is_rejected() {
    let v = verifier(Some("s"), None, None);
    let token = |nbf: u64| {
        sign(
            Algorithm::HS256,
            &hmac_key("s"),
            &json!({"sub": "x", "nbf": nbf}),
        )
    };
    assert_eq!(v.verify(&token(now() + 600)), Err(TokenError::NotYetValid));
    assert!(v.verify(&token(now() - 600)).is_ok());
}

#[test]
fn audience_is_not_required_and_does_not_block() {
    let v = verifier(Some("s"), None, None);
    for aud in [json!("some-app"), json!(["a", "b"])] {
        let token = sign(
            Algorithm::HS256,
            &hmac_key("s"),
            &json!({"sub": "x", "aud": aud}),
        );
        assert!(v.verify(&token).is_ok(), "{aud}");
    }
}

#[test]
fn configured_issuer_must_match() {
    let v = TokenVerifier::new(&TokenConfig {
        issuer: Some("https://id.example".into()),
        ..config(Some("s"), Some(&rsa().public), None)
    })
    .unwrap();
    let rsa_key = EncodingKey::from_rsa_pem(rsa().private.as_bytes()).unwrap();
    for key in [
        (Algorithm::HS256, hmac_key("s")),
        (Algorithm::RS256, rsa_key),
    ] {
        let token = |claims: Value| sign(key.0, &key.1, &claims);
        let got = v
            .verify(&token(json!({"sub": "x", "iss": "https://id.example"})))
            .unwrap();
        assert_eq!(got.sub, "x");
        for claims in [
            json!({"sub": "x", "iss": "https://other.example"}),
            json!({"sub": "x", "iss": "https://id.example/"}),
            json!({"sub": "x"}),
        ] {
            let err = v.verify(&token(claims.clone())).unwrap_err();
            assert_eq!(
                err,
                TokenError::WrongIssuer {
                    expected: "https://id.example".into()
                },
                "{claims}"
            );
            assert!(err.to_string().contains("\"iss\""), "{err}");
        }
    }
    // Without a configured issuer any `iss` verifies.
    let open = verifier(Some("s"), None, None);
    let token = sign(
        Algorithm::HS256,
        &hmac_key("s"),
        &json!({"sub": "x", "iss": "anyone"}),
    );
    assert!(open.verify(&token).is_ok());
}

#[test]
fn configured_audience_must_match() {
    let v = TokenVerifier::new(&TokenConfig {
        audience: Some("herald".into()),
        ..config(Some("s"), None, None)
    })
    .unwrap();
    let token = |claims: Value| sign(Algorithm::HS256, &hmac_key("s"), &claims);
    for aud in [json!("herald"), json!(["other", "herald"])] {
        assert!(
            v.verify(&token(json!({"sub": "x", "aud": aud}))).is_ok(),
            "{aud}"
        );
    }
    for claims in [
        json!({"sub": "x", "aud": "other"}),
        json!({"sub": "x", "aud": ["a", "b"]}),
        json!({"sub": "x", "aud": []}),
        json!({"sub": "x"}),
    ] {
        let err = v.verify(&token(claims.clone())).unwrap_err();
        assert_eq!(
            err,
            TokenError::WrongAudience {
                expected: "herald".into()
            },
            "{claims}"
        );
        assert!(err.to_string().contains("\"aud\""), "{err}");
    }
    // A forged token still fails on its signature first.
    let forged = sign(
        Algorithm::HS256,
        &hmac_key("wrong"),
        &json!({"sub": "x", "aud": "herald"}),
    );
    assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn empty_issuer_or_audience_is_a_configuration_error() {
    for (issuer, audience, claim) in [(Some(""), None, "issuer"), (None, Some(""), "audience")] {
        let err = TokenVerifier::new(&TokenConfig {
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ..config(Some("s"), None, None)
        })
        .unwrap_err();
        assert_eq!(err, ConfigError::EmptyClaimValue { claim });
        assert!(err.to_string().contains(claim), "{err}");
    }
}

#[test]
fn wrong_secret_and_tampering_are_bad_signatures() {
    let v = verifier(Some("right"), None, None);
    let claims = json!({"sub": "x", "channels": ["a"]});
    let err = v
        .verify(&sign(Algorithm::HS256, &hmac_key("wrong"), &claims))
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert!(err.to_string().contains("signature"), "{err}");

    let good = sign(Algorithm::HS256, &hmac_key("right"), &claims);
    let parts: Vec<&str> = good.split('.').collect();
    let more = URL_SAFE_NO_PAD.encode(json!({"sub": "x", "channels": ["*"]}).to_string());
    assert_eq!(
        v.verify(&format!("{}.{more}.{}", parts[0], parts[2])),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        v.verify(&format!("{}.{}.", parts[0], parts[1])),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn garbage_is_malformed() {
    let v = verifier(Some("s"), None, None);
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
    let not_json = URL_SAFE_NO_PAD.encode("hello");
    let no_alg = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.e30.sig".into(),
        format!("{not_json}.e30.sig"),
        format!("{no_alg}.e30.sig"),
        format!("{header}.e30.!!!"),
    ];
    for token in &cases {
        let err = v.verify(token).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{token:?}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("token is not a valid JWT"),
            "{err}"
        );
    }
}

#[test]
fn validly_signed_but_unusable_claims_are_malformed() {
    let v = verifier(Some("s"), None, None);
    for claims in [
        json!({}),
        json!({"sub": 5}),
        json!({"sub": "x", "channels": "a"}),
        json!([1]),
    ] {
        let err = v
            .verify(&sign(Algorithm::HS256, &hmac_key("s"), &claims))
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{claims}: {err:?}"
        );
    }
}

#[test]
fn algorithm_list_restricts() {
    let v = verifier(Some("s"), Some(&rsa().public), Some(&["hs512", " RS256 "]));
    let claims = json!({"sub": "x"});
    assert!(
        v.verify(&sign(Algorithm::HS512, &hmac_key("s"), &claims))
            .is_ok()
    );
    let err = v
        .verify(&sign(Algorithm::HS256, &hmac_key("s"), &claims))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::AlgorithmNotAccepted {
            alg: "HS256".into()
        }
    );
    assert!(err.to_string().contains("not accepted"), "{err}");

    let rsa_key = EncodingKey::from_rsa_pem(rsa().private.as_bytes()).unwrap();
    assert!(v.verify(&sign(Algorithm::RS256, &rsa_key, &claims)).is_ok());
    let err = v
        .verify(&sign(Algorithm::RS512, &rsa_key, &claims))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::AlgorithmNotAccepted {
            alg: "RS512".into()
        }
    );
}

#[test]
fn no_key_configured_rejects_everything() {
    let v = TokenVerifier::new(&TokenConfig::default()).unwrap();
    assert!(!v.is_configured());
    let token = mint_hs256("anything", &MintClaims::default());
    assert_eq!(
        v.verify(&token),
        Err(TokenError::NoKeyForAlgorithm {
            alg: "HS256".into()
        })
    );
}

#[test]
fn bad_configurations_fail_with_clear_errors() {
    let err = |hmac: Option<&str>, pem: Option<&str>, algs: Option<&[&str]>| {
        TokenVerifier::new(&config(hmac, pem, algs)).unwrap_err()
    };
    let invalid_key = |pem: &str| match err(None, Some(pem), None) {
        ConfigError::InvalidPublicKey { reason } => reason,
        other => panic!("{other:?}"),
    };

    assert_eq!(err(Some(""), None, None), ConfigError::EmptyHmacSecret);
    assert!(invalid_key("").contains("BEGIN PUBLIC KEY"));
    assert!(invalid_key("not a pem").contains("BEGIN PUBLIC KEY"));
    assert!(
        invalid_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .contains("RSA or EC")
    );
    assert!(invalid_key(&rsa().private).contains("private key"));
    assert!(invalid_key(&p256().private).contains("private key"));
    assert!(invalid_key(RSA_1024_PUB).contains("2048"));
    assert!(invalid_key(EC_P521_PUB).contains("P-256"));
    assert!(invalid_key(ED25519_PUB).contains("RSA or EC"));

    for name in ["none", "PS256", "EdDSA", "HS1024", ""] {
        let e = err(Some("s"), None, Some(&[name]));
        assert_eq!(e, ConfigError::UnknownAlgorithm { name: name.into() });
        assert!(e.to_string().contains("supported: HS256"), "{e}");
    }
    let e = err(Some("s"), None, Some(&["HS256", "RS256"]));
    assert_eq!(
        e,
        ConfigError::AlgorithmWithoutKey {
            name: "RS256".into()
        }
    );
    assert!(e.to_string().contains("RSA public key"), "{e}");
    let e = err(None, Some(&p256().public), Some(&["ES384"]));
    assert_eq!(
        e,
        ConfigError::AlgorithmWithoutKey {
            name: "ES384".into()
        }
    );
    assert_eq!(
        err(None, None, Some(&["HS256"])),
        ConfigError::AlgorithmWithoutKey {
            name: "HS256".into()
        }
    );
    assert_eq!(
        err(Some("s"), None, Some(&[])),
        ConfigError::EmptyAlgorithms
    );
}

#[test]
fn debug_output_hides_the_secret() {
    let cfg = config(Some("hunter2"), None, None);
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let v = TokenVerifier::new(&cfg).unwrap();
    assert!(!format!("{v:?}").contains("hunter2"));
}

#[test]
fn channel_matching() {
    let claims = |channels: &[&str]| Claims {
        sub: "u".into(),
        exp: None,
        channels: channels.iter().map(|s| s.to_string()).collect(),
        ..Claims::default()
    };
    let c = claims(&["news:*", "chat", "exact*ish"]);
    assert!(c.can_read("news:sport"));
    assert!(c.can_read("news:"));
    assert!(!c.can_read("news"));
    assert!(!c.can_read("xnews:sport"));
    assert!(c.can_read("chat"));
    assert!(!c.can_read("chat2"));
    assert!(!c.can_read("cha"));
    assert!(c.can_read("exact*ish"));
    assert!(
        !c.can_read("exactlyish"),
        "'*' is a wildcard only at the end"
    );
    assert!(claims(&["*"]).can_read("anything"));
    assert!(!claims(&[]).can_read("chat"));
}

#[test]
fn read_grants_keep_channels_and_server_side_subscriptions() {
    let mut claims = Claims {
        channels: vec!["news:*".into()],
        ..Claims::default()
    };
    claims.subs.insert("room*".into(), json!({}));
    let grants = ReadGrants::from(claims);
    assert!(grants.can_read("news:sport"), "a channels pattern");
    assert!(grants.can_read("room*"), "a subs channel, exactly");
    assert!(
        !grants.can_read("room1"),
        "subs names channels, not patterns"
    );
    assert!(!grants.can_read("chat"));
    assert!(!ReadGrants::default().can_read("news:sport"));
}

/// A token with this exact header and claims text, signed with `secret` by `key_alg`
/// (which need not be the header's `alg`).
fn signed_raw(
    header: &str,
    claims: &[u8],
    key_alg: aws_lc_rs::hmac::Algorithm,
    secret: &str,
) -> String {
    use aws_lc_rs::hmac;
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = hmac::sign(
        &hmac::Key::new(key_alg, secret.as_bytes()),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// What the verifier said before it checked HMAC tokens itself: jsonwebtoken's `decode`.
fn with_jsonwebtoken(v: &TokenVerifier, secret: &str, token: &str) -> Result<Claims, TokenError> {
    let mut buf = PartBuf::new();
    let (jwt, alg) = v.check_header(token, &mut buf)?;
    let key = v.keys.iter().find(|k| k.usable.contains(&alg)).unwrap();
    let secret = DecodingKey::from_secret(secret.as_bytes());
    let decode = |validation: &Validation| {
        jsonwebtoken::decode::<Claims>(token, &secret, validation)
            .map(|data| data.claims)
            .map_err(|e| e.into_kind())
    };
    // jsonwebtoken checks the required claims in the random order of a HashSet; when
    // both `iss` and `aud` are missing, Herald says `iss`.
    let mut iss_only = key.validation.clone();
    if iss_only.required_spec_claims.remove("aud")
        && let Err(ErrorKind::MissingRequiredClaim(claim)) = decode(&iss_only)
        && claim == "iss"
    {
        return Err(token_error(
            ErrorKind::MissingRequiredClaim(claim),
            &jwt.alg,
            &v.rules,
        ));
    }
    decode(&key.validation).map_err(|kind| token_error(kind, &jwt.alg, &v.rules))
}

#[test]
fn hmac_tokens_verify_as_jsonwebtoken_verifies_them() {
    use aws_lc_rs::hmac::{HMAC_SHA256, HMAC_SHA384, HMAC_SHA512};
    let secret = "s3cret";
    let (past, future) = (now() - 600, now() + 600);
    let headers = [
        r#"{"alg":"ALG","typ":"JWT"}"#,
        r#"{"typ":"JWT","alg":"ALG","kid":"k1"}"#,
        r#" {"alg":"ALG"} "#,
        r#"{"alg":"ALG","typ":null,"kid":null}"#,
        r#"{"alg":"ALG","typ":5}"#,
        r#"{"alg":"ALG","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"ALG","typ":"J\u0057T","kid":"k\u0031"}"#,
        r#"{"alg":"ALG","cty":"JWT","x5t#S256":"abc"}"#,
        r#"{"alg":"ALG","cty":1}"#,
        r#"{"alg":"ALG","custom":[1,{"a":null}],"crit":["custom"]}"#,
        r#"{"alg":"ALG","x5c":"not a list"}"#,
        r#"{"alg":"ALG","jwk":{"kty":"oct","k":"AAAA"}}"#,
        r#"{"alg":"ALG","jwk":5}"#,
        r#"{"alg":"ALG","enc":"A128GCM","zip":7}"#,
        r#"["ALG", "JWT"]"#,
        r#"["ALG", null]"#,
        r#"["ALG", null, "JWT"]"#,
        r#"{"alg":"ALG","kid":5}"#,
    ];
    let claims = [
        json!({"sub": "x"}).to_string(),
        json!({"sub": "x", "exp": future, "nbf": past, "iss": "https://id.example", "aud": "herald"}).to_string(),
        json!({"sub": "x", "iss": ["other", "https://id.example"], "aud": ["herald"]}).to_string(),
        json!({"sub": "x", "iss": ["other"], "aud": ["other"]}).to_string(),
        json!({"sub": "x", "iss": [], "aud": []}).to_string(),
        json!({"sub": "x", "iss": 5, "aud": {"a": 1}}).to_string(),
        json!({"sub": "x", "iss": [1], "aud": [null]}).to_string(),
        json!({"sub": "x", "iss": null, "aud": null}).to_string(),
        json!({"sub": "x", "iss": "other", "aud": "other"}).to_string(),
        json!({"sub": "x", "exp": past}).to_string(),
        json!({"sub": "x", "exp": past, "nbf": future, "iss": "other", "aud": "other"}).to_string(),
        json!({"sub": "x", "nbf": future, "iss": "other"}).to_string(),
        json!({"sub": "x", "exp": null}).to_string(),
        json!({"sub": "x", "exp": -1}).to_string(),
        json!({"sub": "x", "exp": (future as f64) + 0.5}).to_string(),
        json!({"sub": "x", "exp": 1e300}).to_string(),
        json!({"sub": "x", "nbf": null}).to_string(),
        json!({"sub": "x", "nbf": "soon"}).to_string(),
        json!({"sub": "x", "nbf": -1}).to_string(),
        json!({"sub": "x", "nbf": [1], "iss": "https://id.example"}).to_string(),
        json!({"sub": "x", "nbf": {"a": [1]}, "aud": "herald"}).to_string(),
        json!({"sub": "x", "nbf": future}).to_string(),
        json!({"sub": "x", "nbf": (future as f64) + 0.25}).to_string(),
        json!({"sub": "x", "nbf": (past as f64)}).to_string(),
        json!({"sub": "x", "nbf": -0.0}).to_string(),
        // Within the leeway, and beyond it.
        json!({"sub": "x", "exp": now() - 2, "nbf": now() + 2}).to_string(),
        json!({"sub": "x", "exp": now() - 8}).to_string(),
        json!({"sub": "x", "nbf": now() + 8}).to_string(),
        json!({"sub": "x", "exp": null, "nbf": "soon"}).to_string(),
        json!({"sub": "x", "exp": future, "nbf": "soon", "iss": 1}).to_string(),
        format!(r#"{{"sub":"x","nbf":{past},"nbf":{past}}}"#),
        r#"{"sub":"x","iss":"a","iss":"a"}"#.into(),
        r#"{"sub":"x","aud":"a","aud":"a"}"#.into(),
        r#"{"sub":"x","sub":"x"}"#.into(),
        r#"{"sub":"x","iss":"https:\/\/id.example","aud":"her\u0061ld"}"#.into(),
        r#"{"sub":"x"} x"#.into(),
        r#"["x"]"#.into(),
        r#"["x", null, null, null, null]"#.into(),
        r#"["x", null, [], "https://id.example", "herald"]"#.into(),
        r#"["x", 5, null, "https://id.example", "herald"]"#.into(),
        "[]".into(),
        "{}".into(),
        "null".into(),
        json!({"sub": 5}).to_string(),
        json!({"sub": "x", "channels": "a"}).to_string(),
    ];
    let rules = [
        (None, None),
        (Some("https://id.example"), None),
        (None, Some("herald")),
        (Some("https://id.example"), Some("herald")),
    ];
    let mut checked = 0;
    for (issuer, audience) in rules {
        let v = TokenVerifier::new(&TokenConfig {
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ..config(Some(secret), None, None)
        })
        .unwrap();
        for (alg, key_alg) in [
            ("HS256", HMAC_SHA256),
            ("HS384", HMAC_SHA384),
            ("HS512", HMAC_SHA512),
        ] {
            let mut tokens = Vec::new();
            for header in headers {
                let header = header.replace("ALG", alg);
                for claims in &claims {
                    tokens.push(signed_raw(&header, claims.as_bytes(), key_alg, secret));
                }
                // Invalid UTF-8 in an ignored claim and in `aud`.
                tokens.push(signed_raw(
                    &header,
                    b"{\"sub\":\"x\",\"other\":\"\xff\"}",
                    key_alg,
                    secret,
                ));
                tokens.push(signed_raw(
                    &header,
                    b"{\"sub\":\"x\",\"aud\":\"\xff\"}",
                    key_alg,
                    secret,
                ));
            }
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let good = signed_raw(
                &header,
                br#"{"sub":"x","iss":"https://id.example","aud":"herald"}"#,
                key_alg,
                secret,
            );
            let (signed, signature) = good.rsplit_once('.').unwrap();
            let mut long = URL_SAFE_NO_PAD.decode(signature).unwrap();
            long.push(0);
            for signature in [
                String::new(),
                "!!".into(),
                format!("{signature}A"),
                format!("{signature}AAAA"),
                signature[1..].to_owned(),
                URL_SAFE_NO_PAD.encode(&long),
                URL_SAFE_NO_PAD.encode(&long[..long.len() - 2]),
                // Non-zero trailing bits.
                format!(
                    "{}{}",
                    &signature[..signature.len() - 1],
                    if signature.ends_with('B') { 'C' } else { 'B' }
                ),
            ] {
                tokens.push(format!("{signed}.{signature}"));
            }
            // Signed with the wrong hash, or the wrong secret.
            for other in [HMAC_SHA256, HMAC_SHA384, HMAC_SHA512] {
                tokens.push(signed_raw(&header, br#"{"sub":"x"}"#, other, secret));
            }
            tokens.push(signed_raw(&header, br#"{"sub":"x"}"#, key_alg, "other"));

            for token in &tokens {
                // Error messages may name our struct instead of jsonwebtoken's.
                let got = format!("{:?}", v.verify(token))
                    .replace("struct Registered", "struct ClaimsForValidation");
                let want = format!("{:?}", with_jsonwebtoken(&v, secret, token));
                assert_eq!(got, want, "{token} with {issuer:?} {audience:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn hmac_signature_must_have_the_size_of_the_header_algorithm() {
    use aws_lc_rs::hmac::{HMAC_SHA256, HMAC_SHA384, HMAC_SHA512};
    let v = verifier(Some("s"), None, None);
    let claims = br#"{"sub":"x"}"#;
    for (alg, right) in [
        ("HS256", HMAC_SHA256),
        ("HS384", HMAC_SHA384),
        ("HS512", HMAC_SHA512),
    ] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        assert!(
            v.verify(&signed_raw(&header, claims, right, "s")).is_ok(),
            "{alg}"
        );
        for other in [HMAC_SHA256, HMAC_SHA384, HMAC_SHA512] {
            if other != right {
                let token = signed_raw(&header, claims, other, "s");
                assert_eq!(v.verify(&token), Err(TokenError::BadSignature), "{alg}");
            }
        }
        // Valid base64url of the wrong length: a bad signature; not base64url: malformed.
        let good = signed_raw(&header, claims, right, "s");
        let (signed, signature) = good.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes.push(0);
        for wrong_length in [&bytes[..], &bytes[..bytes.len() - 2], &[]] {
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(wrong_length));
            assert_eq!(v.verify(&token), Err(TokenError::BadSignature), "{alg}");
        }
        for not_base64 in [format!("{signature}!"), format!("*{}", &signature[1..])] {
            let err = v.verify(&format!("{signed}.{not_base64}")).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{alg}: {err:?}"
            );
        }
    }
}

#[test]
fn not_before_and_expiry_of_the_wrong_type_are_malformed() {
    let v = verifier(Some("s"), None, None);
    let token = |claims: Value| sign(Algorithm::HS256, &hmac_key("s"), &claims);
    for (claim, bad) in [
        ("nbf", json!("soon")),
        ("nbf", json!(-1)),
        ("nbf", json!(true)),
        ("nbf", json!(null)),
        ("exp", json!(null)),
    ] {
        let err = v
            .verify(&token(json!({"sub": "x", claim: bad})))
            .unwrap_err();
        match &err {
            TokenError::Malformed { reason } => assert!(reason.contains(claim), "{reason}"),
            other => panic!("{claim}: {bad}: {other:?}"),
        }
    }
    // A float is rounded, as for `exp`.
    let nbf = (now() - 100) as f64 + 0.5;
    assert!(v.verify(&token(json!({"sub": "x", "nbf": nbf}))).is_ok());
    let nbf = (now() + 100) as f64 + 0.5;
    assert_eq!(
        v.verify(&token(json!({"sub": "x", "nbf": nbf}))),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn issuer_and_audience_are_checked_for_every_hmac_size() {
    let v = TokenVerifier::new(&TokenConfig {
        issuer: Some("https://id.example".into()),
        audience: Some("herald".into()),
        ..config(Some("s"), None, None)
    })
    .unwrap();
    let wrong_issuer = Err(TokenError::WrongIssuer {
        expected: "https://id.example".into(),
    });
    let wrong_audience = Err(TokenError::WrongAudience {
        expected: "herald".into(),
    });
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = |claims: Value| sign(alg, &hmac_key("s"), &claims);
        let iss = "https://id.example";
        for ok in [
            json!({"sub": "x", "iss": iss, "aud": "herald"}),
            json!({"sub": "x", "iss": iss, "aud": ["other", "herald"]}),
            // RFC 7519 makes `iss` a string, but jsonwebtoken took a list too.
            json!({"sub": "x", "iss": ["other", iss], "aud": "herald"}),
        ] {
            assert!(v.verify(&token(ok.clone())).is_ok(), "{alg:?} {ok}");
        }
        for (claims, want) in [
            (
                json!({"sub": "x", "iss": "other", "aud": "herald"}),
                &wrong_issuer,
            ),
            (
                json!({"sub": "x", "iss": 5, "aud": "herald"}),
                &wrong_issuer,
            ),
            (json!({"sub": "x", "aud": "herald"}), &wrong_issuer),
            // Both missing: the issuer is named.
            (json!({"sub": "x"}), &wrong_issuer),
            (
                json!({"sub": "x", "iss": iss, "aud": "other"}),
                &wrong_audience,
            ),
            (json!({"sub": "x", "iss": iss, "aud": []}), &wrong_audience),
            (json!({"sub": "x", "iss": iss, "aud": 5}), &wrong_audience),
            (json!({"sub": "x", "iss": iss}), &wrong_audience),
            // Time comes before issuer and audience.
            (
                json!({"sub": "x", "iss": "other", "aud": "herald", "exp": now() - 60}),
                &Err(TokenError::Expired),
            ),
        ] {
            assert_eq!(&v.verify(&token(claims.clone())), want, "{alg:?} {claims}");
        }
    }
}

#[test]
fn unusual_headers_and_long_parts() {
    let v = verifier(Some("s"), None, None);
    let claims = br#"{"sub":"x"}"#;
    let sha256 = aws_lc_rs::hmac::HMAC_SHA256;
    for ok in [
        r#"{"alg":"HS256","typ":"JWT","cty":"JWT","custom":[1,{"a":null}]}"#,
        r#"{"alg":"HS\u0032\u0035\u0036","kid":"k\u0031"}"#,
    ] {
        let token = signed_raw(ok, claims, sha256, "s");
        assert!(v.verify(&token).is_ok(), "{ok}");
    }
    // Headers that jsonwebtoken's `Header` refuses, however well signed.
    for bad in [
        r#"{"alg":"HS256","typ":5}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"HS256","x5c":"not a list"}"#,
        r#"["HS256", null, "JWT"]"#,
    ] {
        let err = v.verify(&signed_raw(bad, claims, sha256, "s")).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{bad}: {err:?}"
        );
    }
    // Parts too long for the stack buffers are decoded on the heap.
    let kid = "k".repeat(400);
    let header = format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#);
    let channels: Vec<String> = (0..200).map(|i| format!("channel:{i}")).collect();
    let claims = json!({"sub": "x", "channels": channels}).to_string();
    let got = v.verify(&signed_raw(&header, claims.as_bytes(), sha256, "s"));
    assert_eq!(got.unwrap().channels, channels);
}

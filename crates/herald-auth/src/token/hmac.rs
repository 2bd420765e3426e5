//! HS256/384/512 tokens, verified without jsonwebtoken: its `decode` makes an HMAC key
//! (hashing the secret) per token, and decodes and parses the header and the claims
//! twice. Here the keys are made once, and each part is decoded and parsed once.
//!
//! The result is the one `jsonwebtoken::decode` gives with [`super::validation`]: the
//! same tokens pass, and the others fail with the same error, checked in the same order
//! (header, signature, claims, required claims, `exp`/`nbf` format, `exp`, `nbf`, `iss`,
//! `aud`).

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::hmac;
use jsonwebtoken::{Algorithm, get_current_timestamp};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::{ClaimRules, Claims, Jwt, LEEWAY_SECS, PartBuf, TokenError};

/// Room for an HS512 signature, the longest.
const SIGNATURE_ROOM: usize = 64;
/// Room for the decoded claims of most tokens; longer ones are decoded on the heap.
const PAYLOAD_ROOM: usize = 1024;

/// The HMAC secret as one aws-lc key per hash, made once: making a key hashes the
/// secret.
// aws-lc's `Debug` for a key shows its hash only, never the secret.
#[derive(Clone, Debug)]
pub(super) struct HmacKeys {
    hs256: hmac::Key,
    hs384: hmac::Key,
    hs512: hmac::Key,
}

impl HmacKeys {
    pub(super) fn new(secret: &[u8]) -> Self {
        HmacKeys {
            hs256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            hs384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            hs512: hmac::Key::new(hmac::HMAC_SHA512, secret),
        }
    }

    /// Verifies a token whose header says `alg` (already accepted by the caller) and
    /// returns its claims.
    pub(super) fn verify(
        &self,
        jwt: &Jwt<'_>,
        alg: Algorithm,
        rules: &ClaimRules,
    ) -> Result<Claims, TokenError> {
        if !jwt.plain_header {
            // Refuse what jsonwebtoken's `Header` refuses, e.g. a `typ` that is not a string.
            serde_json::from_slice::<jsonwebtoken::Header>(jwt.header_json).map_err(json_error)?;
        }
        let key = match alg {
            Algorithm::HS256 => &self.hs256,
            Algorithm::HS384 => &self.hs384,
            Algorithm::HS512 => &self.hs512,
            // Not reached: only HMAC algorithms are checked with this key.
            _ => {
                let alg = jwt.alg.to_string();
                return Err(TokenError::AlgorithmNotAccepted { alg });
            }
        };
        // Longer signatures go to the heap, then fail the check for their length.
        let mut signature = PartBuf::<SIGNATURE_ROOM>::new();
        let signature = signature.decode(jwt.signature).map_err(|_| not_base64())?;
        // aws-lc compares in constant time.
        hmac::verify(key, jwt.signed.as_bytes(), signature)
            .map_err(|_| TokenError::BadSignature)?;

        let mut payload = PartBuf::<PAYLOAD_ROOM>::new();
        let payload = payload.decode(jwt.payload).map_err(|_| not_base64())?;
        let claims: Claims = serde_json::from_slice(payload).map_err(json_error)?;
        serde_json::from_slice::<Registered>(payload)
            .map_err(json_error)?
            .check(rules)?;
        Ok(claims)
    }
}

fn not_base64() -> TokenError {
    TokenError::Malformed {
        reason: "a part is not base64url".into(),
    }
}

fn json_error(e: serde_json::Error) -> TokenError {
    TokenError::Malformed {
        reason: format!("invalid header or claims: {e}"),
    }
}

/// The claims that are checked, read as jsonwebtoken reads them to validate a token:
/// the same fields in the same order (which matters for claims written as a JSON
/// array), the same types, and a value of the wrong type counting as absent, except
/// for `exp` and `nbf`.
#[derive(Deserialize)]
struct Registered<'a> {
    #[serde(default, deserialize_with = "numeric_date")]
    exp: TryParse<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: TryParse<u64>,
    /// Not checked (`Claims` needs a string).
    #[serde(borrow, rename = "sub")]
    _sub: TryParse<&'a str>,
    #[serde(borrow)]
    iss: TryParse<OneOrMany<'a>>,
    #[serde(borrow)]
    aud: TryParse<OneOrMany<'a>>,
}

impl Registered<'_> {
    /// jsonwebtoken's `validate` with the settings of [`super::validation`].
    fn check(&self, rules: &ClaimRules) -> Result<(), TokenError> {
        let wrong_issuer = || TokenError::WrongIssuer {
            expected: rules.issuer.clone().unwrap_or_default(),
        };
        let wrong_audience = || TokenError::WrongAudience {
            expected: rules.audience.clone().unwrap_or_default(),
        };
        // A configured issuer or audience makes the claim required. (jsonwebtoken checks
        // required claims in the random order of a HashSet; here `iss` comes first.)
        if rules.issuer.is_some() && !matches!(self.iss, TryParse::Parsed(_)) {
            return Err(wrong_issuer());
        }
        if rules.audience.is_some() && !matches!(self.aud, TryParse::Parsed(_)) {
            return Err(wrong_audience());
        }
        for (name, claim) in [("exp", &self.exp), ("nbf", &self.nbf)] {
            if matches!(claim, TryParse::FailedToParse) {
                return Err(TokenError::Malformed {
                    reason: format!("claim \"{name}\" has the wrong type"),
                });
            }
        }
        let now = get_current_timestamp();
        if let TryParse::Parsed(exp) = self.exp
            && exp < now.saturating_sub(LEEWAY_SECS)
        {
            return Err(TokenError::Expired);
        }
        if let TryParse::Parsed(nbf) = self.nbf
            && nbf > now + LEEWAY_SECS
        {
            return Err(TokenError::NotYetValid);
        }
        if let (Some(expected), TryParse::Parsed(iss)) = (&rules.issuer, &self.iss)
            && !iss.contains(expected)
        {
            return Err(wrong_issuer());
        }
        if let (Some(expected), TryParse::Parsed(aud)) = (&rules.audience, &self.aud)
            && !aud.contains(expected)
        {
            return Err(wrong_audience());
        }
        Ok(())
    }
}

/// A claim read as jsonwebtoken reads it: absent, null or of the wrong type is no error
/// by itself.
#[derive(Default)]
enum TryParse<T> {
    Parsed(T),
    FailedToParse,
    #[default]
    NotPresent,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TryParse<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer) {
            Ok(Some(value)) => TryParse::Parsed(value),
            Ok(None) => TryParse::NotPresent,
            Err(_) => TryParse::FailedToParse,
        })
    }
}

/// `iss` or `aud`: a string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(Vec<String>),
}

impl OneOrMany<'_> {
    fn contains(&self, expected: &str) -> bool {
        match self {
            OneOrMany::One(value) => value == expected,
            OneOrMany::Many(values) => values.iter().any(|v| v == expected),
        }
    }
}

/// `exp` or `nbf` as jsonwebtoken reads it: a non-negative integer, or a float that is
/// rounded. `null` is of the wrong type.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<TryParse<u64>, D::Error> {
    struct NumericDate;

    impl Visitor<'_> for NumericDate {
        type Value = TryParse<u64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative number of seconds")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(TryParse::Parsed(value))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
            if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 {
                Ok(TryParse::Parsed(value.round() as u64))
            } else {
                Err(E::custom("a numeric date must be representable as a u64"))
            }
        }
    }

    Ok(d.deserialize_any(NumericDate)
        .unwrap_or(TryParse::FailedToParse))
}

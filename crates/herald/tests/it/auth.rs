//! Client authentication on `/events`: JWTs from `Authorization: Bearer`, the
//! `herald_token` cookie or `?token=`; every refusal is a status plus a JSON error
//! with the protocol's code.

use std::sync::OnceLock;

use herald_auth::{MintClaims, mint_hs256};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{Herald, Proto, unix_now};

over_every_protocol!(
    subscribers_are_refused_without_a_valid_token,
    token_must_grant_the_channel,
    valid_token_works_from_header_cookie_or_query,
);

const SECRET: &str = "it-token-secret";

/// A Herald that verifies HS256 tokens and admits no anonymous subscriber.
async fn start(proto: Proto) -> Herald {
    Herald::builder(proto)
        .args(["--token-hmac-secret", SECRET])
        .without_anonymous()
        .start()
        .await
}

fn token(secret: &str, sub: &str, channels: &[&str], exp: Option<u64>) -> String {
    mint_hs256(
        secret,
        &MintClaims {
            sub: sub.into(),
            exp,
            channels: channels.iter().map(|c| c.to_string()).collect(),
        },
    )
}

/// An RS256 token granting every channel, signed with a fresh RSA key the server
/// does not know (it has only an HMAC secret).
fn rs256_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("an RSA key");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .expect("jsonwebtoken reads the RSA key");
        let claims = json!({"sub": "rsa-user", "channels": ["*"], "exp": unix_now() + 3600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .expect("sign RS256")
    })
}

/// Sends `request` (an `/events` request that must be refused) and checks the
/// status and the JSON error code.
async fn expect_refusal(
    herald: &Herald,
    request: reqwest::RequestBuilder,
    what: &str,
    status: StatusCode,
    code: u64,
) -> Value {
    let (got, reply) = herald.json_reply(request, what).await;
    assert_eq!(got, status, "{what}: {reply}");
    assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: the error says what is wrong: {reply}"
    );
    reply
}

async fn subscribers_are_refused_without_a_valid_token(proto: Proto) {
    let herald = start(proto).await;
    let hour = Some(unix_now() + 3600);

    expect_refusal(
        &herald,
        herald.events("channel=private"),
        "no token",
        StatusCode::UNAUTHORIZED,
        101,
    )
    .await;

    let forged = token("not-the-secret", "mallory", &["private"], hour);
    expect_refusal(
        &herald,
        herald.events("channel=private").bearer_auth(&forged),
        "a token signed with another secret",
        StatusCode::UNAUTHORIZED,
        101,
    )
    .await;

    let expired = token(SECRET, "alice", &["private"], Some(unix_now() - 120));
    expect_refusal(
        &herald,
        herald.events("channel=private").bearer_auth(&expired),
        "an expired token",
        StatusCode::UNAUTHORIZED,
        109,
    )
    .await;

    expect_refusal(
        &herald,
        herald.events("channel=private").bearer_auth(rs256_token()),
        "an RS256 token when only an HMAC secret is configured",
        StatusCode::UNAUTHORIZED,
        101,
    )
    .await;

    let unsigned =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwiY2hhbm5lbHMiOlsiKiJdfQ.";
    expect_refusal(
        &herald,
        herald.events("channel=private").bearer_auth(unsigned),
        "an unsigned (alg none) token",
        StatusCode::UNAUTHORIZED,
        101,
    )
    .await;

    expect_refusal(
        &herald,
        herald.events("channel=private&token=not-a-jwt"),
        "a ?token= that is not a JWT",
        StatusCode::UNAUTHORIZED,
        101,
    )
    .await;

    // The server is unharmed: a valid token still works afterwards.
    let valid = token(SECRET, "alice", &["private"], hour);
    let mut stream = herald
        .open(
            herald.events("channel=private").bearer_auth(&valid),
            "a valid token after refusals",
        )
        .await;
    stream.expect("connected").await;
}

async fn token_must_grant_the_channel(proto: Proto) {
    let herald = start(proto).await;
    let hour = Some(unix_now() + 3600);
    let alice = token(SECRET, "alice", &["mine", "team-*"], hour);

    expect_refusal(
        &herald,
        herald.events("channel=secret").bearer_auth(&alice),
        "a token whose channels claim lacks the channel",
        StatusCode::FORBIDDEN,
        103,
    )
    .await;
    expect_refusal(
        &herald,
        herald
            .events("channel=mine&channel=secret")
            .bearer_auth(&alice),
        "one granted and one refused channel on a stream",
        StatusCode::FORBIDDEN,
        103,
    )
    .await;

    let mut stream = herald
        .open(
            herald
                .events("channel=mine&channel=team-red")
                .bearer_auth(&alice),
            "channels granted by name and by prefix",
        )
        .await;
    stream.expect("connected").await;
    herald.publish("team-red", json!("go")).await;
    stream.expect_publication("team-red", 1).await;
}

async fn valid_token_works_from_header_cookie_or_query(proto: Proto) {
    let herald = start(proto).await;
    let valid = token(SECRET, "alice", &["private"], Some(unix_now() + 3600));

    let mut by_header = herald
        .open(
            herald
                .events("channel=private")
                .header("authorization", format!("Bearer {valid}")),
            "token in Authorization: Bearer",
        )
        .await;
    let mut by_cookie = herald
        .open(
            herald
                .events("channel=private")
                .header("cookie", format!("theme=dark; herald_token={valid}")),
            "token in the herald_token cookie",
        )
        .await;
    let mut by_query = herald
        .open(
            herald.events(&format!("channel=private&token={valid}")),
            "token in ?token=",
        )
        .await;

    herald.publish("private", json!({"for": "alice"})).await;
    for stream in [&mut by_header, &mut by_cookie, &mut by_query] {
        stream.expect("connected").await;
        let publication = stream.expect_publication("private", 1).await;
        assert_eq!(publication["data"], json!({"for": "alice"}));
    }
}

//! Connection tokens for `{token}`: one HS256 JWT per connection, as an
//! application server would hand each of its clients, so that a server taking the
//! token in the connect request (Herald's `cf_connect`) connects and subscribes a
//! client in one request. A worker mints the tokens of all its connections before
//! the first opens: connect timings must not include signing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_auth::MintClaims;

use crate::target::Target;

/// How long a minted token stays valid: longer than any run.
const LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The tokens of one worker's connections.
pub struct Tokens {
    /// This worker's number.
    worker: u64,
    /// How many workers share the connections.
    workers: u64,
    /// The token of the worker's `j`-th connection (global index `worker + workers · j`).
    minted: Vec<String>,
}

impl Tokens {
    /// Mints, with `secret`, the token of every connection of worker `worker` (of
    /// `workers`) among the run's `connections`: for connection `i`, user
    /// `bench-{i}`, allowed to read its channel of `target`.
    pub fn mint(
        secret: &str,
        target: &Target,
        worker: u64,
        workers: u64,
        connections: u64,
    ) -> Tokens {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(LIFETIME)
            .as_secs();
        let workers = workers.max(1);
        let minted = (worker..connections)
            .step_by(workers as usize)
            .map(|index| {
                let claims = MintClaims {
                    sub: format!("bench-{index}"),
                    exp: Some(exp),
                    channels: vec![target.channel_of(index).1],
                };
                herald_auth::mint_hs256(secret, &claims)
            })
            .collect();
        Tokens {
            worker,
            workers,
            minted,
        }
    }

    /// The token of connection `index` (one of this worker's).
    pub fn of(&self, index: u64) -> Result<&str, String> {
        index
            .checked_sub(self.worker)
            .filter(|offset| offset % self.workers == 0)
            .and_then(|offset| self.minted.get((offset / self.workers) as usize))
            .map(String::as_str)
            .ok_or_else(|| format!("no token was minted for connection {index}"))
    }
}

#[cfg(test)]
mod tests {
    use herald_auth::{TokenConfig, TokenVerifier};

    use super::*;
    use crate::target::{Endpoint, HttpVersion, Protocol};

    #[test]
    fn mints_a_token_per_connection_for_its_channel() {
        let target = Target {
            endpoint: Endpoint::new("127.0.0.1:80", false).unwrap(),
            path: "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D"
                .parse()
                .unwrap(),
            http: HttpVersion::Http1,
            streams_per_connection: 1,
            protocol: Protocol::Ws,
            ready_event: None,
            channel: "room-{c}".parse().unwrap(),
            channels: 3,
            token_secret: Some("s3cret".into()),
        };
        // Worker 1 of 2 among 7 connections holds 1, 3 and 5.
        let tokens = Tokens::mint("s3cret", &target, 1, 2, 7);
        assert_eq!(tokens.minted.len(), 3);
        let verifier = TokenVerifier::new(&TokenConfig {
            hmac_secret: Some("s3cret".into()),
            ..TokenConfig::default()
        })
        .unwrap();
        let token = tokens.of(5).unwrap();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}: not URL-safe as it is"
        );
        let claims = verifier.verify(token).unwrap();
        assert_eq!(claims.sub, "bench-5");
        assert!(claims.can_read("room-2"));
        assert!(!claims.can_read("room-1"));
        assert_ne!(tokens.of(1).unwrap(), tokens.of(3).unwrap());
        for other in [0, 4, 7] {
            assert!(tokens.of(other).is_err(), "{other}");
        }
    }
}

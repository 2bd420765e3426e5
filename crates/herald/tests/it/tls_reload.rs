//! SIGHUP reloads the TLS certificate and key: new handshakes get the new
//! certificate, and streams opened before keep running.

use std::time::Duration;

use serde_json::json;

use crate::util::tls::TestCa;
use crate::util::{API_KEY, Herald, Proto, eventually};

#[tokio::test]
async fn sighup_serves_the_new_certificate_without_dropping_streams() {
    let herald = Herald::start(Proto::H2Tls).await;
    let mut stream = herald.subscribe("channel=reload").await;
    stream.expect("connected").await;

    let next_ca = TestCa::new();
    let next_client = herald.client_trusting(&next_ca);
    let before = next_client.get(herald.url("/healthz")).send().await;
    assert!(
        before.is_err(),
        "a client trusting only the new CA must fail before the reload"
    );

    herald.replace_tls_files(&next_ca);
    herald.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "the new certificate is served",
        || async {
            next_client
                .get(herald.url("/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;

    let reply = next_client
        .post(herald.url("/api/publish"))
        .header("x-api-key", API_KEY)
        .json(&json!({"channel": "reload", "data": {"after": "reload"}}))
        .send()
        .await
        .expect("publish over the new certificate");
    assert_eq!(reply.status(), 200);
    let publication = stream.expect_publication("reload", 1).await;
    assert_eq!(publication["data"], json!({"after": "reload"}));
}

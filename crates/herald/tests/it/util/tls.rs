//! Test certificates (made fresh by rcgen, never checked in) and TLS client
//! configurations, all on aws-lc-rs — the one crypto provider of the tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

/// A throwaway certificate authority and a server certificate it signed for
/// `127.0.0.1` and `localhost`.
pub struct TestCa {
    ca: CertificateDer<'static>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestCa {
    /// Makes a new CA and server certificate (ECDSA P-256: quick to generate).
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Herald test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("generate the server key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");
        TestCa {
            ca: ca_cert.der().clone(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// Writes the server's certificate and key into `dir`; returns their paths.
    pub fn write_server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.server_cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.server_key_pem).expect("write key.pem");
        (cert, key)
    }

    /// A client configuration trusting this CA and offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("trust the test CA");
        client_config_with_roots(roots, alpn)
    }
}

/// A client configuration with no roots at all, for plain-TCP clients (reqwest wants
/// a TLS configuration even when it will never use it, and must not pick a provider
/// on its own).
pub fn plain_client_config() -> rustls::ClientConfig {
    client_config_with_roots(rustls::RootCertStore::empty(), &[])
}

fn client_config_with_roots(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

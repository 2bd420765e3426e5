//! TLS with certificates reloadable at run time (SIGHUP): the resolver hands each
//! new handshake the current certificate; established connections keep theirs.
//! Connections run on [`stream`], which holds no TLS buffers while idle.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsPaths;

mod stream;

pub use stream::{TlsStream, accept};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot load certificate chain from {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or the key is unusable.
    #[error("cannot load private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate currently served, swappable without a restart.
#[derive(Debug)]
pub struct ReloadableCert {
    paths: TlsPaths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    /// Loads the certificate and key named by `paths`.
    pub fn load(paths: TlsPaths, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let current = ArcSwap::from_pointee(load_certified_key(&paths, &provider)?);
        Ok(ReloadableCert {
            paths,
            provider,
            current,
        })
    }

    /// Reads the files again; on success new handshakes use the new certificate.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.paths, &self.provider)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server config serving `cert` with ALPN `h2` then `http/1.1`.
pub fn server_config(
    cert: Arc<ReloadableCert>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn load_certified_key(
    paths: &TlsPaths,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: paths.cert.display().to_string(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: paths.key.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| key_error(e.to_string()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("key does not match the certificate: {e}")))?;
    Ok(certified)
}

//! TLS termination with rustls: a certificate chain and key from PEM files, ALPN offering
//! HTTP/2 and HTTP/1.1, and reloads when the files change — new handshakes get the new
//! certificate, connections already open keep theirs, nothing is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair.
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Where the certificate chain and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files into a server configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let file_err = |path: &Path, reason: String| TlsError::File {
            path: path.to_path_buf(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_err(&self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(&self.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(&self.cert, "no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_err(&self.key, e.to_string()))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }
}

/// The TLS configuration in force, swapped when the files change.
#[derive(Clone)]
pub struct Tls {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads the files now; a mistake here is an error at start.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(ArcSwap::new(files.load()?)),
        })
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads the files when they change, every `every`, until `shutdown`. A pair that does
    /// not load is logged and the one in force stays.
    pub async fn watch(self, files: TlsFiles, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut seen = files.stamp();
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = files.stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match files.load() {
                Ok(config) => {
                    self.current.store(config);
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(err) => tracing::error!(error = %err, "TLS certificate not reloaded; keeping the one in force"),
            }
        }
    }
}

//! The serving certificate, reloaded when its files change.
//!
//! A Kubernetes Secret volume updates by swapping the `..data` symlink, so watching the files
//! themselves misses the change. The files are instead re-read by path at a short interval and
//! compared by content. Each TLS handshake takes the pair current at its start, so handshakes in
//! flight finish with the pair they began with and no connection is dropped. A new pair that
//! cannot be read, or whose key does not match its certificate, is refused and logged; the old
//! pair keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key in {key} cannot be used: {source}")]
    BadKey {
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The crypto provider fluxgate uses everywhere (ring). Installed once as the process default.
pub fn provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Only the first call installs; later calls find it in place, which is fine.
    let _ = provider.as_ref().clone().install_default();
    provider
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let c = std::fs::read(cert).map_err(|source| Error::Read { path: cert.to_path_buf(), source })?;
    let k = std::fs::read(key).map_err(|source| Error::Read { path: key.to_path_buf(), source })?;
    Ok((c, k))
}

fn parse_pair(cert_pem: &[u8], key_pem: &[u8], cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(Error::NoCertificate { path: cert.to_path_buf() });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| Error::NoKey { path: key.to_path_buf() })?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => Error::Mismatch { cert: cert.to_path_buf(), key: key.to_path_buf() },
        source => Error::BadKey { key: key.to_path_buf(), source },
    })?;
    Ok(certified)
}

/// The current serving pair, swapped whole on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
    seen: RwLock<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the pair; an unusable pair at start-up is an error.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, Error> {
        let (c, k) = read_pair(cert, key)?;
        let certified = parse_pair(&c, &k, cert, key)?;
        Ok(Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(certified)),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            seen: RwLock::new((c, k)),
        }))
    }

    /// Re-reads the files; swaps in the new pair when they changed and are usable. Returns
    /// whether a new pair was installed.
    pub fn reload(&self) -> Result<bool, Error> {
        let (c, k) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if seen.0 == c && seen.1 == k {
                return Ok(false);
            }
        }
        let result = parse_pair(&c, &k, &self.cert_path, &self.key_path);
        // Remember the bytes either way, so a broken pair is reported once, not every poll.
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = (c, k);
        let certified = result?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(true)
    }

    /// Polls the files every `every` until the process ends.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %this.cert_path.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "new serving certificate refused; the previous one stays in use")
                    }
                }
            }
        })
    }

    /// The rustls server configuration serving this pair, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

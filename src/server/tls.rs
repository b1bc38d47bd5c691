//! The serving certificate, reloaded when its files change.
//!
//! A Kubernetes Secret volume updates by swapping the `..data` symlink, so watching the files
//! themselves misses the change. The files are instead re-read by path at a short interval and
//! compared by content. Each TLS handshake takes the pair current at its start, so handshakes in
//! flight finish with the pair they began with and no connection is dropped. A new pair that
//! cannot be read, or whose key does not match its certificate, is refused and logged; the old
//! pair keeps serving.
//!
//! With `--client-ca`, the webhook port also requires a client certificate signed by that CA
//! (the API server authenticating itself, see docs/operations.md): [`ReloadingClientCa`] is re-read the
//! same way, and a caller without such a certificate is refused during the handshake, before any
//! request is read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

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
    #[error("{path} holds no usable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
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
        poll(every, move || match this.reload() {
            Ok(true) => tracing::info!(cert = %this.cert_path.display(), "serving certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "new serving certificate refused; the previous one stays in use"),
        })
    }

    /// The rustls server configuration serving this pair, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        self.server_config_with(None)
    }

    /// [`ReloadingCert::server_config`], requiring a client certificate signed by `client_ca`
    /// when one is given.
    pub fn server_config_with(self: &Arc<Self>, client_ca: Option<Arc<ReloadingClientCa>>) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let mut config = match &client_ca {
            Some(ca) => {
                // The other replicas forward reviews with this same certificate (`server::peer`).
                let _ = ca.peers.set(self.clone());
                builder.with_client_cert_verifier(ca.clone()).with_cert_resolver(self.clone())
            }
            None => builder.with_no_client_auth().with_cert_resolver(self.clone()),
        };
        if client_ca.is_some() {
            // A resumed session skips the client certificate: after a CA rotation, a caller
            // authenticated by the old CA could otherwise go on opening connections. The API
            // server keeps its connections open, so full handshakes cost little.
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ReloadingCert {
    /// The pair serving now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `cert` is the certificate this replica serves now: the replicas of one
    /// Deployment mount the same Secret, so another replica presents this same certificate.
    pub fn is_own(&self, cert: &CertificateDer<'_>) -> bool {
        self.current().cert.first().is_some_and(|own| own.as_ref() == cert.as_ref())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Reads the CA certificates of `path` into a verifier of client certificates.
fn parse_client_ca(pem: &[u8], path: &Path) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let bad = |reason: String| Error::BadCa { path: path.to_path_buf(), reason };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(format!("unreadable PEM: {e}")))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(|e| bad(e.to_string()))
}

/// The CA that client certificates must chain to (`--client-ca`), swapped whole when its file
/// changes. Each handshake verifies against the CA current at that moment; connections already
/// open stay open. The serving certificate it is configured with is accepted too: the other
/// replicas present it when they forward a review to the deciding replica (`server::peer`).
#[derive(Debug)]
pub struct ReloadingClientCa {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    path: PathBuf,
    seen: RwLock<Vec<u8>>,
    peers: std::sync::OnceLock<Arc<ReloadingCert>>,
}

impl ReloadingClientCa {
    /// Loads the CA file; an unreadable file, or one without a usable certificate, is an error.
    pub fn load(path: &Path) -> Result<Arc<ReloadingClientCa>, Error> {
        let pem = std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        let verifier = parse_client_ca(&pem, path)?;
        Ok(Arc::new(ReloadingClientCa {
            current: RwLock::new(verifier),
            path: path.to_path_buf(),
            seen: RwLock::new(pem),
            peers: std::sync::OnceLock::new(),
        }))
    }

    /// Re-reads the file by path (a Secret or ConfigMap volume swaps its `..data` symlink, so
    /// the path is what stays stable); swaps in the new CA when the content changed and is
    /// usable. Returns whether a new CA was installed.
    pub fn reload(&self) -> Result<bool, Error> {
        let pem = std::fs::read(&self.path).map_err(|source| Error::Read { path: self.path.clone(), source })?;
        if *self.seen.read().unwrap_or_else(|p| p.into_inner()) == pem {
            return Ok(false);
        }
        let result = parse_client_ca(&pem, &self.path);
        // Remember the bytes either way, so a broken file is reported once, not every poll.
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = pem;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = result?;
        Ok(true)
    }

    /// Polls the file every `every` until the process ends.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        poll(every, move || match this.reload() {
            Ok(true) => tracing::info!(client_ca = %this.path.display(), "client CA reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "new client CA refused; the previous one stays in use"),
        })
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints. The hints would have to borrow from the current CA, which a reload replaces;
    /// and without hints a client offers its certificate whatever its issuer (Go's crypto/tls,
    /// the API server's, sends none when its issuer is not among the hints), so the verdict is
    /// always the verifier's, with an error that names the problem.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.peers.get().is_some_and(|own| own.is_own(end_entity)) {
            return Ok(ClientCertVerified::assertion());
        }
        self.verifier().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// Runs `step` every `every` until the process ends (a late tick is not made up for).
fn poll(every: Duration, mut step: impl FnMut() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            step();
        }
    })
}

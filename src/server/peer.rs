//! Forwarding a review to the deciding replica: HTTP/2 over TLS on the webhook port, the path
//! the API server itself takes, so the NetworkPolicy needs no other.
//!
//! Both ends authenticate with the certificate the replicas share (one Secret, mounted by every
//! pod of the Deployment): the deciding replica is trusted when it presents this replica's own
//! serving certificate, and presents that certificate back when the webhook port asks for a
//! client certificate (`--client-ca`, see `tls::ReloadingClientCa`). One connection to the current
//! decider is kept open and shared by every forwarded review (HTTP/2 multiplexes them).

use std::sync::Arc;

use axum::body::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::tls::{ReloadingCert, provider};
use crate::coordination::decider::{FORWARD_TIMEOUT, Forward};

/// Header naming the replica that forwarded a review: the receiver decides it itself or denies
/// it, and never forwards it again.
pub const FORWARDED_BY: &str = "x-fluxgate-forwarded-by";

/// The forwarding side of one replica.
pub struct Peers {
    from: String,
    connection: tokio::sync::Mutex<Option<(String, SendRequest<Full<Bytes>>)>>,
    tls: Arc<rustls::ClientConfig>,
}

impl Peers {
    /// `cert` is this replica's serving pair; `from` its name.
    pub fn new(cert: Arc<ReloadingCert>, from: &str) -> Peers {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SameCertificate {
                own: cert.clone(),
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_client_cert_resolver(Arc::new(OwnPair(cert.clone())));
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Peers { from: from.to_string(), connection: tokio::sync::Mutex::default(), tls: Arc::new(tls) }
    }

    async fn connect(&self, address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // The certificate is checked by content, not by name: any name will do.
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h).trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string())
            .or_else(|_| ServerName::try_from("fluxgate".to_string()))
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection to the deciding replica ended");
            }
        });
        Ok(sender)
    }

    async fn send(&self, address: &str, review: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut sender = {
            let mut held = self.connection.lock().await;
            match held.as_ref() {
                Some((a, s)) if a == address && !s.is_closed() => s.clone(),
                _ => {
                    let s = self.connect(address).await?;
                    *held = Some((address.to_string(), s.clone()));
                    s
                }
            }
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::post(format!("https://{address}/validate"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(FORWARDED_BY, &self.from)
            .body(Full::new(Bytes::from(review)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body.to_vec())
    }
}

impl Forward for Peers {
    fn forward<'a>(&'a self, address: &'a str, review: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let answer = tokio::time::timeout(FORWARD_TIMEOUT, self.send(address, review)).await;
            let answer = answer.unwrap_or_else(|_| Err(format!("no answer within {FORWARD_TIMEOUT:?}")));
            if answer.is_err() {
                // A broken connection is not reused.
                *self.connection.lock().await = None;
            }
            answer
        })
    }
}

/// Trusts a server presenting this replica's own serving certificate, and no other.
#[derive(Debug)]
struct SameCertificate {
    own: Arc<ReloadingCert>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.own.is_own(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Presents this replica's serving pair when the deciding replica asks for a client certificate.
#[derive(Debug)]
struct OwnPair(Arc<ReloadingCert>);

impl ResolvesClientCert for OwnPair {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

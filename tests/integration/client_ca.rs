//! `--client-ca`: the webhook port requires a client certificate signed by that CA (the API
//! server authenticating itself). The built binary over real TLS on loopback: callers without a
//! certificate, or with one from another CA, are refused in the handshake with the alert that
//! says why; a caller with a certificate from the CA is served; the CA file is rotated the way a
//! Kubernetes volume does it (a `..data` symlink swap) without a restart.

use crate::common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{Client, Http, ServeProcess, admin_get};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::AlertDescription;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const F: &str = "flux-system";

/// A client CA and one client certificate it signed, written as `<name>-ca.crt`,
/// `<name>.crt` and `<name>.key` in `dir`.
struct Issued {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn issue(dir: &Path, name: &str) -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} client CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca).unwrap();
    let issued = Issued {
        ca: dir.join(format!("{name}-ca.crt")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&issued.ca, ca.pem()).unwrap();
    std::fs::write(&issued.cert, cert.pem()).unwrap();
    std::fs::write(&issued.key, key.serialize_pem()).unwrap();
    issued
}

/// Lays `ca` out as a Kubernetes Secret or ConfigMap volume does: `ca.crt` is a symlink into
/// `..data`, itself a symlink to a timestamped folder; an update writes a new folder and swaps
/// `..data` in one rename. Returns the stable path, `volume/ca.crt`.
fn project(volume: &Path, ca: &Path, generation: u32) -> PathBuf {
    std::fs::create_dir_all(volume).unwrap();
    let folder = format!("..2026_12_05_10_00_{generation:02}");
    std::fs::create_dir_all(volume.join(&folder)).unwrap();
    std::fs::copy(ca, volume.join(&folder).join("ca.crt")).unwrap();
    let staged = volume.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(&folder, &staged).unwrap();
    std::fs::rename(&staged, volume.join("..data")).unwrap();
    let stable = volume.join("ca.crt");
    if std::fs::symlink_metadata(&stable).is_err() {
        std::os::unix::fs::symlink("..data/ca.crt", &stable).unwrap();
    }
    stable
}

/// A TLS client config trusting the server's CA, offering `identity` if given, for `version`.
fn client_config(
    server_ca: &Path,
    identity: Option<&Issued>,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(fluxgate::server::tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(&id.cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&id.key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// Runs a handshake and sends one plain HTTP/1.1 request over it. Returns the response's
/// status line, or the I/O error of the first step that failed. In TLS 1.3 the client's side of
/// the handshake ends before the server has judged the client's certificate, so a refusal shows
/// on the first read; in TLS 1.2 it ends the handshake itself.
async fn exchange(addr: SocketAddr, config: rustls::ClientConfig) -> Result<String, std::io::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let body = serde_json::to_vec(&create(&ks(F, "probe", &[]))).unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    // A refused client may find the connection closed while it writes (broken pipe); the
    // server's alert, which says why, is still there to read.
    let written = async {
        tls.write_all(&request).await?;
        tls.flush().await
    }
    .await;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    written?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The TLS alert the server sent, read from the client's error.
fn alert(error: &std::io::Error) -> Option<AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

struct Setup {
    dir: tempfile::TempDir,
    server: ServeProcess,
    /// The CA of the server's own certificate, for clients to trust.
    server_ca: PathBuf,
    /// The `..data`-style volume holding the client CA.
    volume: PathBuf,
    /// The client CA fluxgate was started with, and a certificate it signed.
    trusted: Issued,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let trusted = issue(dir.path(), "trusted");
    let volume = dir.path().join("client-ca");
    let ca_file = project(&volume, &trusted.ca, 1);
    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let (server, server_ca) = ServeProcess::start_tls(
        dir.path(),
        &["--client-ca", ca_file.to_str().unwrap(), "--manifests", fleet.to_str().unwrap()],
    );
    Setup { dir, server, server_ca, volume, trusted }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_client_certificate_is_refused_in_the_handshake() {
    let s = start();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let refused = exchange(s.server.webhook, client_config(&s.server_ca, None, version)).await;
        let error = refused.expect_err("served without a client certificate");
        assert_eq!(alert(&error), Some(AlertDescription::CertificateRequired), "{version:?}: {error}");
    }
    // Nothing reached the webhook: no decision was made or counted.
    let (_, metrics) = admin_get(s.server.admin, "/metrics").await;
    assert!(!metrics.contains("fluxgate_admission_requests_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_in_the_handshake() {
    let s = start();
    let stranger = issue(s.dir.path(), "stranger");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let refused = exchange(s.server.webhook, client_config(&s.server_ca, Some(&stranger), version)).await;
        let error = refused.expect_err("served a certificate from another CA");
        assert_eq!(alert(&error), Some(AlertDescription::UnknownCA), "{version:?}: {error}");
    }
    let (_, metrics) = admin_get(s.server.admin, "/metrics").await;
    assert!(!metrics.contains("fluxgate_admission_requests_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_signed_by_the_ca_is_served_on_http1_and_http2() {
    let s = start();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let status = exchange(s.server.webhook, client_config(&s.server_ca, Some(&s.trusted), version)).await;
        assert_eq!(status.unwrap(), "HTTP/1.1 200 OK", "{version:?}");
    }
    let client = Client::with_identity(&s.server_ca, &s.trusted.cert, &s.trusted.key);
    for http in [Http::One, Http::Two] {
        let mut conn = client.connect(s.server.webhook, http).await;
        let (status, body) = conn.post("/validate", &create(&ks(F, "web", &["nothing-here"]))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], false, "served and judged: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_is_rotated_by_a_symlink_swap_without_a_restart() {
    let s = start();
    let next = issue(s.dir.path(), "next");
    let with = |id: &Issued| client_config(&s.server_ca, Some(id), &rustls::version::TLS13);
    assert!(exchange(s.server.webhook, with(&s.trusted)).await.is_ok());
    assert!(exchange(s.server.webhook, with(&next)).await.is_err());

    project(&s.volume, &next.ca, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while exchange(s.server.webhook, with(&next)).await.is_err() {
        assert!(Instant::now() < deadline, "the new CA was never used: {:?}", s.server.log_lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = exchange(s.server.webhook, with(&s.trusted)).await.expect_err("the old CA no longer admits");
    assert_eq!(alert(&old), Some(AlertDescription::UnknownCA), "{old}");
    assert!(s.server.log_lines().iter().any(|l| l.contains("client CA reloaded")));

    // A broken CA file is refused and logged; the CA in force stays.
    let broken = s.dir.path().join("broken.crt");
    std::fs::write(&broken, "not a certificate\n").unwrap();
    project(&s.volume, &broken, 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.server.log_lines().iter().any(|l| l.contains("new client CA refused")) {
        assert!(Instant::now() < deadline, "the broken CA was not reported: {:?}", s.server.log_lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exchange(s.server.webhook, with(&next)).await.is_ok());
}

#[test]
fn an_unreadable_client_ca_stops_start_up_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.crt");
    let empty = dir.path().join("empty-ca.crt");
    std::fs::write(&empty, "").unwrap();
    let (_, cert, key) = common::process::write_certs(&dir.path().join("certs"));
    for ca in [&missing, &empty] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--manifests"])
            .arg(dir.path())
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--client-ca"])
            .arg(ca)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{log}");
        assert!(log.contains("--client-ca") && log.contains(ca.to_str().unwrap()), "{log}");
        assert!(!log.contains("fluxgate serving"), "{log}");
    }
    assert_eq!(std::fs::metadata(&missing).map_err(|e| e.kind()).unwrap_err(), ErrorKind::NotFound);
}

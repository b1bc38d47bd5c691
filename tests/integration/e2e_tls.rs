//! End to end: the built binary serving over real TLS on loopback, a client that verifies it
//! against the CA, on HTTP/1.1 and HTTP/2.

use crate::common;

use common::process::{Client, Http, ServeProcess, admin_get, write_certs};
use common::*;
use serde_json::Value;

const F: &str = "flux-system";

struct Setup {
    _dir: tempfile::TempDir,
    server: ServeProcess,
    client: Client,
}

fn start(manifests: &[(&str, Vec<Value>)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    for (file, objects) in manifests {
        let text: Vec<String> = objects.iter().map(|o| serde_json::to_string(o).unwrap()).collect();
        std::fs::write(fleet.join(file), text.join("\n---\n")).unwrap();
    }
    let (server, ca) = ServeProcess::start_tls(dir.path(), &["--manifests", fleet.to_str().unwrap()]);
    Setup { client: Client::new(&ca), server, _dir: dir }
}

async fn allowed_over(conn: &mut common::process::Connection, review: &Value) -> bool {
    let (status, body) = conn.post("/validate", review).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    body["response"]["allowed"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_on_http1_and_http2() {
    let s = start(&[("fleet.yaml", vec![ks(F, "crds", &[])])]);
    for http in [Http::One, Http::Two] {
        let mut conn = s.client.connect(s.server.webhook, http).await;
        let db = format!("db-{http:?}").to_lowercase();
        let api = format!("api-{http:?}").to_lowercase();
        // `db` is admitted, then `api` depending on it is allowed before any source knows `db`.
        assert!(allowed_over(&mut conn, &create(&ks(F, &db, &["crds"]))).await);
        assert!(allowed_over(&mut conn, &create(&ks(F, &api, &[&db]))).await);
        // The webhook is judging, not waving through: a missing target is still denied.
        assert!(!allowed_over(&mut conn, &create(&ks(F, "web", &["nothing-here"]))).await);
    }
    let (status, body) = admin_get(s.server.admin, "/readyz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ready\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_updates_never_admit_both_halves_of_a_cycle() {
    const PAIRS: usize = 60;
    let mut objects = Vec::new();
    for i in 0..PAIRS {
        objects.push(ks(F, &format!("a{i}"), &[]));
        objects.push(ks(F, &format!("b{i}"), &[]));
    }
    let s = start(&[("pairs.yaml", objects.clone())]);
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let forward = update(&ks(F, &a, &[&b]), &ks(F, &a, &[]));
        let backward = update(&ks(F, &b, &[&a]), &ks(F, &b, &[]));
        for (review, http) in [(forward, Http::Two), (backward, Http::One)] {
            let client = s.client.clone();
            let addr = s.server.webhook;
            tasks.push(tokio::spawn(async move {
                let mut conn = client.connect(addr, http).await;
                allowed_over(&mut conn, &review).await
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for (i, pair) in results.chunks(2).enumerate() {
        assert!(!(pair[0] && pair[1]), "pair {i}: both a{i} -> b{i} and b{i} -> a{i} were admitted");
        assert!(pair[0] || pair[1], "pair {i}: the first of the two must be admitted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_trust_the_ca_is_refused() {
    let s = start(&[]);
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = write_certs(other.path());
    let client = Client::new(&other_ca);
    let addr = s.server.webhook;
    let error = client.handshake(addr).await.expect_err("a handshake against another CA must fail verification");
    // Both CAs come from the same generator and share a name: rustls finds the issuer by name
    // and the signature does not verify. Any other failure (a panic, a timeout, a protocol error)
    // is not this refusal.
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
        "refused because the server's certificate is not signed by the CA the client trusts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_served() {
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(dir.path());
    let server = ServeProcess::start(&[
        "--manifests",
        dir.path().to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_provider(fluxgate::server::tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.webhook).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_over_tls_gets_400_and_the_server_stays_up() {
    let s = start(&[]);
    let mut conn = s.client.connect(s.server.webhook, Http::Two).await;
    let (status, body) = conn.post_bytes("/validate", b"{\"kind\":".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string());
    assert!(allowed_over(&mut conn, &create(&ks(F, "fine", &[]))).await);
}

/// 5 MiB sent in 64 KiB chunks with no declared length (chunked on HTTP/1.1), so the limit is
/// found while reading rather than from `Content-Length`.
fn streamed_5_mib() -> common::process::RequestBody {
    use http_body_util::{BodyExt, StreamBody};
    let chunk = hyper::body::Bytes::from(vec![b'x'; 64 * 1024]);
    let frames = (0..80).map(move |_| Ok(hyper::body::Frame::data(chunk.clone())));
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_body_gets_a_413_the_client_can_read_over_http1_and_http2() {
    let s = start(&[]);
    for http in [Http::One, Http::Two] {
        for declared in [true, false] {
            let mut conn = s.client.connect(s.server.webhook, http).await;
            let (status, body) = if declared {
                conn.post_bytes("/validate", vec![b'x'; 5 * 1024 * 1024]).await
            } else {
                conn.post_body("/validate", streamed_5_mib()).await
            };
            let case = format!("{http:?}, length declared: {declared}");
            assert_eq!(status, 413, "{case}: {body}");
            assert_eq!(body["error"], "request body exceeds 4194304 bytes", "{case}");
            if http == Http::Two {
                // Only the stream ended: the connection serves the next request.
                assert!(allowed_over(&mut conn, &create(&ks(F, "after-413", &[]))).await);
            }
        }
        // The server is unharmed: a fresh connection is answered.
        let mut conn = s.client.connect(s.server.webhook, http).await;
        assert!(allowed_over(&mut conn, &create(&ks(F, "fine", &[]))).await);
    }
}

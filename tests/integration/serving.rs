//! Serving under operations: certificate rotation through a Kubernetes Secret volume's `..data`
//! symlink swap with requests running, a broken new pair refused, a policy reloaded through a
//! ConfigMap volume's swap under load (a broken one refused), SIGTERM with requests in flight,
//! and a client that trickles its headers.

use crate::common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{Client, Http, RequestBody, ServeProcess, admin_get, write_certs};
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const F: &str = "flux-system";

/// A folder laid out as the kubelet lays out a Secret or ConfigMap volume: the files are
/// symlinks through `..data`, itself a symlink to a timestamped folder, swapped atomically on
/// update.
struct Volume {
    root: PathBuf,
    generation: usize,
}

impl Volume {
    fn new(root: &Path, files: &[(&str, Vec<u8>)]) -> Volume {
        std::fs::create_dir_all(root).unwrap();
        let mut v = Volume { root: root.to_path_buf(), generation: 0 };
        v.publish(files);
        for (name, _) in files {
            symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        v
    }

    /// Writes a new timestamped folder, points `..data` at it with an atomic rename, and removes
    /// the previous folder, as the kubelet does.
    fn publish(&mut self, files: &[(&str, Vec<u8>)]) {
        let previous = format!("..2026_11_25_00_00_{:02}", self.generation);
        self.generation += 1;
        let dir = format!("..2026_11_25_00_00_{:02}", self.generation);
        std::fs::create_dir(self.root.join(&dir)).unwrap();
        for (name, bytes) in files {
            std::fs::write(self.root.join(&dir).join(name), bytes).unwrap();
        }
        let tmp = self.root.join("..data_tmp");
        symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.root.join(previous));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// The files of a `kubernetes.io/tls` Secret holding `cert` and `key`.
fn tls_secret(cert: &Path, key: &Path) -> [(&'static str, Vec<u8>); 2] {
    [("tls.crt", std::fs::read(cert).unwrap()), ("tls.key", std::fs::read(key).unwrap())]
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(pem).unwrap().next().unwrap().unwrap().to_vec()
}

/// `fluxgate serve` reading its certificate from a Secret-style volume under `dir` that starts
/// with `cert`/`key`.
fn serve_from_volume(dir: &Path, cert: &Path, key: &Path) -> (Volume, ServeProcess) {
    let volume = Volume::new(&dir.join("secret"), &tls_secret(cert, key));
    let empty = dir.join("no-manifests");
    std::fs::create_dir_all(&empty).unwrap();
    let server = ServeProcess::start(&[
        "--manifests",
        empty.to_str().unwrap(),
        "--tls-cert",
        volume.path("tls.crt").to_str().unwrap(),
        "--tls-key",
        volume.path("tls.key").to_str().unwrap(),
    ]);
    (volume, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_within_seconds_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = write_certs(&dir.path().join("one"));
    let (ca2, cert2, key2) = write_certs(&dir.path().join("two"));
    let (mut volume, server) = serve_from_volume(dir.path(), &cert1, &key1);
    let client = Client::trusting(&[&ca1, &ca2]);
    let (old_der, new_der) = (der_of(&cert1), der_of(&cert2));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let seen_new_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, stop, done, seen_new_at, new_der, old_der) =
            (client.clone(), stop.clone(), done.clone(), seen_new_at.clone(), new_der.clone(), old_der.clone());
        let addr = server.webhook;
        workers.push(tokio::spawn(async move {
            let http = if w % 2 == 0 { Http::One } else { Http::Two };
            while !stop.load(Ordering::Relaxed) {
                // A fresh connection each time, so every request does a handshake.
                let mut conn = client.connect(addr, http).await;
                assert!(conn.peer_certificate == old_der || conn.peer_certificate == new_der);
                if conn.peer_certificate == new_der {
                    seen_new_at.lock().unwrap().get_or_insert_with(Instant::now);
                }
                let (status, body) = conn.post("/validate", &create(&ks(F, "probe", &[]))).await;
                assert_eq!(status, 200, "{body}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let swapped_at = Instant::now();
    volume.publish(&tls_secret(&cert2, &key2));
    let deadline = swapped_at + Duration::from_secs(10);
    while seen_new_at.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the new certificate was not served within 10 s: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delay = seen_new_at.lock().unwrap().unwrap() - swapped_at;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("no request failed during the rotation");
    }
    eprintln!("new certificate served {delay:?} after the swap; {} requests", done.load(Ordering::Relaxed));
    assert!(done.load(Ordering::Relaxed) > 20);
    assert!(server.log_lines().iter().any(|l| l.contains("serving certificate reloaded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_pair_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = write_certs(&dir.path().join("one"));
    let (_, _, key2) = write_certs(&dir.path().join("two"));
    let (mut volume, server) = serve_from_volume(dir.path(), &cert1, &key1);
    // The certificate of pair one with the key of pair two: they do not belong together.
    volume.publish(&tls_secret(&cert1, &key2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_lines().iter().any(|l| l.contains("new serving certificate refused")) {
        assert!(Instant::now() < deadline, "no error logged: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = server.log_lines().into_iter().find(|l| l.contains("refused")).unwrap();
    assert!(refused.contains("does not match the certificate"), "{refused}");
    assert!(!refused.contains("PRIVATE KEY"), "a key must never reach the logs");
    let mut conn = Client::new(&ca1).connect(server.webhook, Http::Two).await;
    assert_eq!(conn.peer_certificate, der_of(&cert1));
    assert_eq!(conn.post("/validate", &create(&ks(F, "x", &[]))).await.0, 200);
}

/// A body sent in two parts, the second when `rest` fires.
fn trickled(review: &serde_json::Value) -> (RequestBody, tokio::sync::oneshot::Sender<()>) {
    let bytes = serde_json::to_vec(review).unwrap();
    let (first, second) = bytes.split_at(bytes.len() / 2);
    let (first, second) = (Bytes::copy_from_slice(first), Bytes::copy_from_slice(second));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stream = futures::stream::unfold((0, Some(rx)), move |(step, rx)| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            match step {
                0 => Some((Ok(Frame::data(first)), (1, rx))),
                1 => {
                    rx.unwrap().await.ok()?;
                    Some((Ok(Frame::data(second)), (2, None)))
                }
                _ => None,
            }
        }
    });
    (StreamBody::new(stream).boxed(), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(&dir.path().join("certs"));
    let server = ServeProcess::start(&[
        "--manifests",
        dir.path().join("certs").to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let client = Client::new(&ca);
    let mut in_flight = Vec::new();
    let mut releases = Vec::new();
    for (i, http) in [Http::One, Http::Two, Http::One, Http::Two].into_iter().enumerate() {
        let mut conn = client.connect(server.webhook, http).await;
        let (body, release) = trickled(&create(&ks(F, &format!("inflight-{i}"), &[])));
        releases.push(release);
        in_flight.push(tokio::spawn(async move { conn.post_body("/validate", body).await }));
    }
    // Every request has sent its headers and half its body; now the pod is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New connections are no longer accepted while the old ones drain.
    let refused = tokio::net::TcpStream::connect(server.webhook).await;
    assert!(refused.is_err(), "the listener must close on SIGTERM");
    for r in releases {
        r.send(()).unwrap();
    }
    for (i, request) in in_flight.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["response"]["allowed"], true);
    }
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn client_that_trickles_its_headers_is_cut_off() {
    use fluxgate::admission::Webhook;
    use fluxgate::cache::Cache;
    use fluxgate::server::{self, App, Limits, tls::ReloadingCert};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(dir.path());
    let tls = Arc::new(ReloadingCert::load(&cert, &key).unwrap().server_config());
    let app = App::new(Webhook::new(Arc::new(Cache::new()), Arc::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let limits = Limits { header_timeout: Duration::from_millis(300), ..Limits::default() };
    tokio::spawn(server::serve_tls(listener, tls, server::webhook_router(app), stop_rx, limits));

    // A raw TLS stream: send the request line and one header, then nothing.
    let provider = fluxgate::server::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a header-trickling connection open");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "cut off before the timeout: {waited:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// The SHA-256 of `bytes` in hex, as `sha256sum` prints it.
fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the sample `name` in the admin port's metrics.
async fn metric(server: &ServeProcess, name: &str) -> Option<f64> {
    let (_, text) = admin_get(server.admin, "/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// One decision seen by the load: when its request was sent, when the answer came, and
/// whether it was allowed.
struct Seen {
    sent: Instant,
    received: Instant,
    allowed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_through_a_configmap_swap_under_load_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let strict = b"rules: { danglingDependsOn: deny }\n".to_vec();
    let lenient = b"rules: { danglingDependsOn: warn }\ndefaults: { kustomization: { timeout: 10m } }\n".to_vec();
    let mut volume = Volume::new(&dir.path().join("policy"), &[("policy.yaml", strict.clone())]);
    let empty = dir.path().join("no-manifests");
    std::fs::create_dir_all(&empty).unwrap();
    let policy = volume.path("policy.yaml");
    let (server, ca) = ServeProcess::start_tls(
        dir.path(),
        &["--manifests", empty.to_str().unwrap(), "--policy", policy.to_str().unwrap()],
    );
    let report = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
    let policy_in_force = report(admin_get(server.admin, "/report").await.1)["policy"].clone();
    assert_eq!(policy_in_force["sha256"], sha256(&strict));
    assert!(policy_in_force["file"].as_str().unwrap().ends_with("policy/policy.yaml"));

    // Dry-run creates of an object whose dependsOn target does not exist: denied under the
    // strict policy, a warning under the lenient one, and never recorded.
    let client = Client::new(&ca);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, stop, seen) = (client.clone(), stop.clone(), seen.clone());
        let addr = server.webhook;
        workers.push(tokio::spawn(async move {
            let mut conn = client.connect(addr, if w % 2 == 0 { Http::One } else { Http::Two }).await;
            while !stop.load(Ordering::Relaxed) {
                let request = review("CREATE", Some(&ks(F, &format!("app-{w}"), &["missing"])), None, true);
                let sent = Instant::now();
                let (status, body) = conn.post("/validate", &request).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["response"]["uid"], request["request"]["uid"]);
                let allowed = body["response"]["allowed"].as_bool().unwrap();
                if allowed {
                    assert!(warnings(&body["response"]).iter().any(|w| w.starts_with("dangling dependsOn")), "{body}");
                }
                seen.lock().unwrap().push(Seen { sent, received: Instant::now(), allowed });
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen.lock().unwrap().iter().all(|s| !s.allowed), "the strict policy denies");

    let swapped_at = Instant::now();
    volume.publish(&[("policy.yaml", lenient.clone())]);
    let deadline = swapped_at + Duration::from_secs(10);
    let switched_at = loop {
        if let Some(first) = seen.lock().unwrap().iter().filter(|s| s.allowed).map(|s| s.received).min() {
            break first;
        }
        assert!(Instant::now() < deadline, "the new policy was not in force within 10 s: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("new policy in force {:?} after the swap", switched_at.saturating_duration_since(swapped_at));
    assert_eq!(report(admin_get(server.admin, "/report").await.1)["policy"]["sha256"], sha256(&lenient));
    assert_eq!(metric(&server, "fluxgate_policy_reloads_total{result=\"success\"}").await, Some(1.0));
    // Mutation follows the same policy.
    let mut conn = client.connect(server.webhook, Http::Two).await;
    let (_, mutated) = conn.post("/mutate", &create(&ks(F, "defaulted", &[]))).await;
    let patch = String::from_utf8(base64_decode(mutated["response"]["patch"].as_str().unwrap())).unwrap();
    assert!(patch.contains("\"10m\""), "{patch}");

    // A policy with a bad action: refused with its key logged; the lenient one stays.
    volume.publish(&[("policy.yaml", b"rules: { danglingDependsOn: block }\n".to_vec())]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_lines().iter().any(|l| l.contains("new policy refused")) {
        assert!(Instant::now() < deadline, "no error logged: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = server.log_lines().into_iter().find(|l| l.contains("new policy refused")).unwrap();
    assert!(refused.contains("rules.danglingDependsOn"), "the log names the key: {refused}");
    let refused_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("no request failed while the policy changed");
    }
    assert_eq!(metric(&server, "fluxgate_policy_reloads_total{result=\"failure\"}").await, Some(1.0));
    assert_eq!(report(admin_get(server.admin, "/report").await.1)["policy"]["sha256"], sha256(&lenient));

    let seen = seen.lock().unwrap();
    // Once one answer came from the new policy, every request sent after it was judged by the
    // new policy too: no flapping back.
    let after_switch: Vec<&Seen> = seen.iter().filter(|s| s.sent > switched_at).collect();
    assert!(after_switch.iter().all(|s| s.allowed), "a request after the switch was judged by the old policy");
    assert!(seen.iter().filter(|s| s.sent > refused_at).count() > 10, "the load kept running past the refusal");
    assert!(seen.iter().filter(|s| s.sent > refused_at).all(|s| s.allowed), "the broken policy changed nothing");
    eprintln!("{} requests, none failed", seen.len());
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[test]
fn watching_a_cluster_without_a_serving_certificate_refuses_to_start_naming_the_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "text"])
        // No kubeconfig is read: the flags are judged first.
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-cert and --tls-key are required when watching a cluster"), "{stderr}");
    assert!(stderr.contains("--dev-certificates"), "{stderr}");
}

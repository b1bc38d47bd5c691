//! The built `fluxgate` binary as a child process, and an HTTPS client that verifies the
//! server against a CA and speaks HTTP/1.1 or HTTP/2 as ALPN decides.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

/// A running `fluxgate serve`. Killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `fluxgate serve` on loopback ports chosen by the OS with `extra` arguments, and
    /// waits for its "fluxgate serving" log line.
    pub fn start(extra: &[&str]) -> ServeProcess {
        ServeProcess::start_with_env(extra, &[])
    }

    /// Writes a CA and a serving certificate under `dir/certs` and starts `fluxgate serve` with
    /// them and `extra` arguments. Returns the server and the CA certificate file.
    pub fn start_tls(dir: &Path, extra: &[&str]) -> (ServeProcess, PathBuf) {
        let (ca, cert, key) = write_certs(&dir.join("certs"));
        let mut args = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        (ServeProcess::start(&args), ca)
    }

    /// Like [`ServeProcess::start`], with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut args =
            vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fluxgate binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "fluxgate serving"
                {
                    let _ =
                        tx.send((v["webhook"].as_str().unwrap().to_string(), v["admin"].as_str().unwrap().to_string()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (webhook, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!("fluxgate did not start: {:?}", logs.lock().unwrap());
            }
        };
        ServeProcess { child, webhook: webhook.parse().unwrap(), admin: admin.parse().unwrap(), logs }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "fluxgate did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a CA and a serving certificate for localhost/127.0.0.1 into `dir`.
pub fn write_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let bundle = fluxgate::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
    let w = fluxgate::certs::write(&bundle, dir).unwrap();
    (w.ca_cert, w.cert, w.key)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    One,
    Two,
}

/// An HTTPS client trusting only `ca`.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
}

impl Client {
    pub fn new(ca: &Path) -> Client {
        Client::trusting(&[ca])
    }

    /// A client trusting each CA in `cas`.
    pub fn trusting(cas: &[&Path]) -> Client {
        Client::build(cas, None)
    }

    /// A client trusting `ca` that presents the client certificate `cert` with its key `key`.
    pub fn with_identity(ca: &Path, cert: &Path, key: &Path) -> Client {
        Client::build(&[ca], Some((cert, key)))
    }

    fn build(cas: &[&Path], identity: Option<(&Path, &Path)>) -> Client {
        let provider = fluxgate::server::tls::provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        // Full handshakes only: a resumed session shows the certificate of the session it
        // resumes, not the one the server presents now.
        let mut config = config;
        config.resumption = rustls::client::Resumption::disabled();
        Client { connector: TlsConnector::from(Arc::new(config)) }
    }

    /// Opens a verified TLS connection offering only `http` by ALPN; asserts the server chose it.
    pub async fn connect(&self, addr: SocketAddr, http: Http) -> Connection {
        let mut config = (*self.connector_config()).clone();
        config.alpn_protocols = vec![match http {
            Http::One => b"http/1.1".to_vec(),
            Http::Two => b"h2".to_vec(),
        }];
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // As the API server's Go client does: without it, HTTP/2 frames wait for delayed ACKs.
        tcp.set_nodelay(true).unwrap();
        let tls =
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake verifies");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let peer_certificate =
            tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        assert_eq!(
            alpn,
            Some(match http {
                Http::One => b"http/1.1".to_vec(),
                Http::Two => b"h2".to_vec(),
            })
        );
        let io = TokioIo::new(tls);
        let sender = match http {
            Http::One => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Sender::One(sender)
            }
            Http::Two => {
                let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                Sender::Two(sender)
            }
        };
        Connection { sender, peer_certificate }
    }

    pub fn connector_config(&self) -> Arc<rustls::ClientConfig> {
        self.connector.config().clone()
    }

    /// Only the TLS handshake with the server at `addr`: the rustls error when it fails.
    pub async fn handshake(&self, addr: SocketAddr) -> Result<(), rustls::Error> {
        let connector = TlsConnector::from(self.connector_config());
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("the server listens");
        match connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e
                .into_inner()
                .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                .map(|e| *e)
                .unwrap_or_else(|| rustls::Error::General("the handshake failed without a TLS error".into()))),
        }
    }
}

/// A request body: whole, or streamed by the test.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

enum Sender {
    One(hyper::client::conn::http1::SendRequest<RequestBody>),
    Two(hyper::client::conn::http2::SendRequest<RequestBody>),
}

pub struct Connection {
    sender: Sender,
    /// DER of the certificate the server presented.
    pub peer_certificate: Vec<u8>,
}

impl Connection {
    /// POSTs JSON to `path`; returns the status and the parsed body.
    pub async fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post_bytes(path, bytes).await
    }

    pub async fn post_bytes(&mut self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed();
        self.post_body(path, body).await
    }

    /// POSTs any body (a streamed one to keep a request in flight).
    pub async fn post_body(&mut self, path: &str, body: RequestBody) -> (u16, Value) {
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = match &mut self.sender {
            Sender::One(s) => {
                s.ready().await.unwrap();
                s.send_request(request).await.unwrap()
            }
            Sender::Two(s) => {
                s.ready().await.unwrap();
                s.send_request(request).await.unwrap()
            }
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// GET over plain HTTP (the admin port); returns status and body text.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path).header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

//! The network edge: the HTTPS webhook (`/validate`, `/mutate`) and the plain-HTTP admin port
//! (`/healthz`, `/readyz`, `/metrics`, `/report`, `/status`, and the status page at `/`).
//!
//! The routers are plain axum routers over [`App`], so tests drive them in-process; [`serve_tls`]
//! puts the webhook router behind rustls with HTTP/1.1 and HTTP/2, header and body timeouts, a
//! body size limit, and a graceful drain on shutdown.

pub mod metrics;
pub mod peer;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::admission::{AdmissionReview, Webhook};
use crate::audit::Report;
use crate::object::FluxKind;
use metrics::{KindLabels, Metrics, RequestLabels};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest drain of in-flight requests on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Time limits of the webhook server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_timeout: HEADER_TIMEOUT, handshake_timeout: HANDSHAKE_TIMEOUT, drain_timeout: DRAIN_TIMEOUT }
    }
}

/// Everything the handlers share.
pub struct App {
    pub webhook: Webhook,
    pub metrics: Metrics,
    pub report: Arc<RwLock<Report>>,
    /// Whether the registered webhook configurations send what the policy needs.
    pub webhook_config: Arc<crate::webhooks::sync::SyncState>,
}

impl App {
    pub fn new(webhook: Webhook) -> Arc<App> {
        Arc::new(App { webhook, metrics: Metrics::new(), report: Arc::default(), webhook_config: Arc::default() })
    }
}

/// `/validate` and `/mutate`.
pub fn webhook_router(app: Arc<App>) -> Router {
    Router::new().route("/validate", post(validate)).route("/mutate", post(mutate)).with_state(app)
}

/// `/healthz`, `/readyz`, `/metrics`, `/report`, `/status` and the status page at `/`.
pub fn admin_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/report", get(report))
        .route("/status", get(status_json))
        .route("/", get(status_page))
        .with_state(app)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Validate,
    Mutate,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Validate => "validate",
            Hook::Mutate => "mutate",
        }
    }
}

async fn validate(State(app): State<Arc<App>>, request: Request) -> Response {
    handle(&app, request, Hook::Validate).await
}

async fn mutate(State(app): State<Arc<App>>, request: Request) -> Response {
    handle(&app, request, Hook::Mutate).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// At most this many bytes of an oversized body are read and thrown away after its 413.
pub const MAX_DISCARD_BYTES: usize = 16 * 1024 * 1024;

/// The body, or the error response for a body that is too large, too slow, or broken.
async fn read_body(request: Request) -> Result<axum::body::Bytes, Response> {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let version = request.version();
    let mut body = request.into_body();
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large(body, version));
    }
    let mut collected = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if collected.len() + data.len() > MAX_BODY_BYTES {
                    return Ok(false);
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok::<_, axum::Error>(true)
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "request body not received in time")),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, format!("request body could not be read: {e}"))),
        Ok(Ok(false)) => Err(too_large(body, version)),
        Ok(Ok(true)) => Ok(collected.into()),
    }
}

/// The 413 for an oversized body. A client that sends its whole body before reading (most
/// HTTP/1.1 clients) would read a connection reset instead of this answer if the connection
/// closed with its bytes unread, so the rest of the body is read and thrown away in the
/// background, bounded by [`MAX_DISCARD_BYTES`] and [`BODY_TIMEOUT`]. An HTTP/1.1 connection is
/// then closed (`Connection: close`): what follows the body on it cannot be trusted to be framed.
fn too_large(mut body: Body, version: axum::http::Version) -> Response {
    tokio::spawn(async move {
        let mut discarded = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    discarded += data.len();
                    if discarded > MAX_DISCARD_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(BODY_TIMEOUT, drain).await;
    });
    let mut response = error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {MAX_BODY_BYTES} bytes"));
    if version < axum::http::Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

async fn handle(app: &App, request: Request, hook: Hook) -> Response {
    let started = Instant::now();
    let count_error = || {
        app.metrics
            .requests
            .get_or_create(&RequestLabels {
                webhook: hook.as_str(),
                kind: "unknown".into(),
                operation: "UNKNOWN",
                result: "error",
            })
            .inc();
    };
    // A review another replica forwarded to this one as the decider (see `peer`).
    let forwarded_by = request
        .headers()
        .get(peer::FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(253).collect::<String>());
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(response) => {
            count_error();
            return response;
        }
    };
    let read = match hook {
        Hook::Validate => AdmissionReview::from_slice_slim(&body),
        Hook::Mutate => AdmissionReview::from_slice(&body),
    };
    let review = match read {
        Ok(r) => r,
        Err(e) => {
            count_error();
            tracing::warn!(webhook = hook.as_str(), error = %e, "bad admission request");
            return error(StatusCode::BAD_REQUEST, e.0);
        }
    };
    let req = &review.request;
    let outcome = match hook {
        Hook::Validate => {
            let verdict = app.webhook.review_from(req, Instant::now(), forwarded_by.as_deref()).await;
            if verdict.as_ref().is_ok_and(|v| v.not_decided) {
                // Not an answer to the API server: the forwarding replica tries the decider again.
                return error(StatusCode::SERVICE_UNAVAILABLE, "this replica does not decide such changes now");
            }
            verdict.map(|v| (v.response, v.findings))
        }
        Hook::Mutate => app.webhook.mutate(req).map(|r| (r, Vec::new())),
    };
    let (response, findings) = match outcome {
        Ok(o) => o,
        Err(e) => {
            count_error();
            tracing::warn!(webhook = hook.as_str(), uid = %req.uid, error = %e, "bad admission request");
            return error(StatusCode::BAD_REQUEST, e.0);
        }
    };
    let elapsed = started.elapsed();

    let kind = FluxKind::from_group_kind(&req.kind.group, &req.kind.kind).map_or("other", FluxKind::as_str);
    let result = match (hook, response.allowed) {
        (_, false) => "denied",
        (Hook::Mutate, true) if response.patch.is_some() => "mutated",
        (Hook::Validate, true) if !response.warnings.is_empty() => "warned",
        _ => "allowed",
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            webhook: hook.as_str(),
            kind: kind.into(),
            operation: req.operation.as_str(),
            result,
        })
        .inc();
    app.metrics.duration.observe(elapsed.as_secs_f64());
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    rules.dedup();
    let name = if req.name.is_empty() {
        req.object.as_ref().and_then(|o| o["metadata"]["name"].as_str()).unwrap_or_default()
    } else {
        &req.name
    };
    tracing::info!(
        webhook = hook.as_str(),
        uid = %req.uid,
        kind,
        object = %format_args!("{}/{}", req.namespace, name),
        operation = req.operation.as_str(),
        dry_run = req.dry_run,
        allowed = response.allowed,
        rules = %rules.join(","),
        micros = elapsed.as_micros() as u64,
        "admission decision"
    );
    ([(header::CONTENT_TYPE, "application/json")], response.to_review_bytes(&review.api_version, &req.uid))
        .into_response()
}

/// `ready` or `not ready`, then one line per kind: the version watched and whether the source
/// is current. 200 only when every kind is listed and current: a replica whose watch is down,
/// relisting or silent is taken out of the Service once the probe's failure threshold is reached.
/// Then one line per webhook configuration: whether it sends what the policy needs. A
/// configuration that skips some does not make the replica unready (admission itself works, and
/// taking every replica out would stop validation cluster-wide); the line says what is lost.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let state = app.webhook.cache.lock();
    let ready = state.is_ready();
    let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
    for kind in FluxKind::ALL {
        let health = state.health(kind);
        let version = health.api_version.as_ref().map(|v| format!(" ({v})")).unwrap_or_default();
        let line = match &health.lagging {
            None if state.is_synced() => format!("{kind}: current{version}\n"),
            None => format!("{kind}: waiting for the initial lists{version}\n"),
            Some((since, reason)) => {
                format!("{kind}: catching up{version}: {reason}, {} s ago\n", since.elapsed().as_secs())
            }
        };
        body.push_str(&line);
    }
    drop(state);
    for line in app.webhook_config.lines() {
        body.push_str(&line);
        body.push('\n');
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, body).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    {
        let state = app.webhook.cache.lock();
        for graph in state.graphs().iter() {
            let labels = KindLabels { kind: graph.kind().as_str() };
            app.metrics.graph_objects.get_or_create(&labels).set(graph.len() as i64);
            let health = state.health(graph.kind());
            app.metrics.watch_current.get_or_create(&labels).set(i64::from(health.is_current()));
            app.metrics.relists_in_progress.get_or_create(&labels).set(i64::from(health.relisting));
            if let Some(seen) = health.last_seen {
                app.metrics.last_seen_age.get_or_create(&labels).set(seen.elapsed().as_secs_f64());
            }
        }
        app.metrics.cache_ready.set(i64::from(state.is_ready()));
        app.metrics.publish_pending(&state);
        // Under the cache lock too, so that two scrapes never add the same count twice.
        if let Some(d) = &app.webhook.decider {
            app.metrics.publish_coordination(&d.election);
        }
    }
    app.metrics.publish_webhook_config(&app.webhook_config);
    let cache = app.webhook.cache.clone();
    if let Ok(report) = tokio::task::spawn_blocking(move || cache.status_report()).await {
        app.metrics.publish_status(&report);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.encode())
        .into_response()
}

/// `/report`: the last audit and the policy in force now.
#[derive(serde::Serialize)]
struct ReportWithPolicy {
    policy: crate::policy::live::InForce,
    /// The last look at each webhook configuration (cluster mode).
    webhooks: std::collections::BTreeMap<crate::webhooks::Hook, crate::webhooks::sync::Outcome>,
    /// Which replica decides, in cluster mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    coordination: Option<CoordinationReport>,
    #[serde(flatten)]
    report: Report,
}

/// What `/report` says of the coordination between replicas.
#[derive(serde::Serialize)]
struct CoordinationReport {
    /// This replica's name.
    replica: String,
    /// The replica that decides admissions adding an edge, as this one knows it.
    decider: Option<String>,
    /// On the decider: itself and the replicas that forwarded reviews to it in the last five
    /// minutes. Elsewhere 0 (the decider's own report says).
    replicas_recently_deciding: usize,
    decided: u64,
    forwarded: u64,
    failures: u64,
}

async fn report(State(app): State<Arc<App>>) -> Response {
    use crate::coordination::decider::{Failure, Stats};
    let report = app.report.read().unwrap_or_else(|p| p.into_inner()).clone();
    let coordination = app.webhook.decider.as_ref().map(|d| {
        let e = &d.election;
        CoordinationReport {
            replica: e.identity().to_string(),
            decider: e.decider(),
            replicas_recently_deciding: e.taking_part(),
            decided: Stats::get(&e.stats.decided),
            forwarded: Stats::get(&e.stats.forwarded),
            failures: Failure::ALL.iter().map(|&f| e.stats.failures(f)).sum(),
        }
    });
    axum::Json(ReportWithPolicy {
        policy: app.webhook.policy.in_force().as_ref().clone(),
        webhooks: app.webhook_config.outcomes(),
        coordination,
        report,
    })
    .into_response()
}

/// Every object's state and, for waiting ones, their root causes. Computed on a blocking thread
/// from a snapshot: the cache lock is held only to copy the objects' `Arc`s.
async fn status_json(State(app): State<Arc<App>>) -> Response {
    let cache = app.webhook.cache.clone();
    match tokio::task::spawn_blocking(move || cache.status_report()).await {
        Ok(report) => axum::Json(StatusWithNotices { report, notices: app.webhook_config.problems() }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("status could not be computed: {e}")),
    }
}

/// `/status`: the report, and the lines a person must act on (see [`crate::status::page`]).
#[derive(serde::Serialize)]
struct StatusWithNotices {
    #[serde(flatten)]
    report: Arc<crate::status::StatusReport>,
    notices: Vec<String>,
}

/// The status page, live: it refreshes itself from `/status`.
async fn status_page(State(app): State<Arc<App>>) -> Response {
    // The heading says who decides, and how many replicas took part (as of the page's loading).
    let title = match &app.webhook.decider {
        Some(d) => {
            let e = &d.election;
            match e.decider() {
                Some(decider) if decider == e.identity() => {
                    let n = e.taking_part();
                    let replicas = if n == 1 { "replica" } else { "replicas" };
                    format!("fluxgate: Flux dependency status ({n} {replicas} recently deciding, {decider} decides)")
                }
                Some(decider) => format!(
                    "fluxgate: Flux dependency status ({decider} decides, this one {} forwards to it)",
                    e.identity()
                ),
                None => format!("fluxgate: Flux dependency status (no replica decides now, this one {})", e.identity()),
            }
        }
        None => "fluxgate: Flux dependency status".to_string(),
    };
    let cache = app.webhook.cache.clone();
    match tokio::task::spawn_blocking(move || cache.status_report()).await {
        Ok(report) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
            crate::status::page::render_with_notices(&report, &title, true, &app.webhook_config.problems()),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("status could not be computed: {e}")),
    }
}

/// Publishes an audit report into the violation gauges.
pub fn publish_report(app: &App, report: &Report) {
    for (kind, rule, n) in crate::audit::counts(report) {
        let labels = metrics::ViolationLabels { kind: kind.as_str(), rule: rule.as_str() };
        app.metrics.violations.get_or_create(&labels).set(n as i64);
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true, then stops accepting and
/// drains in-flight requests for at most `limits.drain_timeout`.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // The guard `wait_for` returns is not Send: drop it inside the branch's future.
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        };
        // HTTP/2 writes a response as several frames; with Nagle's algorithm the later ones wait
        // for the client's delayed ACK (40 ms on Linux) before they leave.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                router.clone().oneshot(req.map(Body::new))
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}

/// Serves the admin router over plain HTTP until `shutdown` turns true.
pub async fn serve_admin(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

//! Forged AdmissionReviews: anyone who can reach the webhook port can post a non-dry-run
//! review, and fluxgate remembers what it admits before the watch delivers it. These tests post
//! forged reviews straight to `/validate`, over real TLS on loopback, to the webhook watching the
//! fake API server, and check that a real request the forged change would deny is admitted
//! within `STORE_WITHIN` plus a lookup, alone and under a flood; that a real change the watch
//! has not delivered still counts; and that a denial resting on an unconfirmed change says so.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::process::{Client, Http, write_certs};
use common::*;
use fluxgate::admission::{AdmissionReview, StoredObjects, Webhook};
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::cache::{Cache, Dropped};
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use fluxgate::server::{self, App, Limits, tls::ReloadingCert};
use serde_json::Value;

const F: &str = "flux-system";

/// The acceptance bound: a real request is decided within this, forged reviews or not.
const DECIDED_WITHIN: Duration = Duration::from_secs(2);

/// The webhook watching `fake`, served over TLS on loopback as `serve` does.
struct Served {
    fake: FakeApi,
    cache: Arc<Cache>,
    addr: SocketAddr,
    client: Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
    _watch: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(fake: FakeApi) -> Served {
        let cache = Arc::new(Cache::new());
        let served = Arc::new(watch::Served::default());
        let options = WatchOptions {
            watch_timeout: Duration::from_secs(1),
            silence_grace: Duration::from_secs(1),
            ..WatchOptions::default()
        };
        let task = tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), options));
        let webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
            .with_lookup(watch::Lookup::new(fake.client(), served));
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = write_certs(dir.path());
        let tls = Arc::new(ReloadingCert::load(&cert, &key).unwrap().server_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let router = server::webhook_router(App::new(webhook));
        tokio::spawn(server::serve_tls(listener, tls, router, stop_rx, Limits::default()));
        let s = Served { fake, cache, addr, client: Client::new(&ca), _dir: dir, _stop: stop, _watch: task };
        eventually("ready", || s.cache.is_ready()).await;
        // Both watches open: the versions to look up are known.
        eventually("watches open", || s.fake.open_watches() == 2).await;
        s
    }

    /// Posts `review` to `/validate` on a connection of its own, as anyone in the cluster can;
    /// returns the response and how long it took.
    async fn post(&self, review: &Value) -> (Value, Duration) {
        post(&self.client, self.addr, review).await
    }

    fn deps_of(&self, name: &str) -> Option<usize> {
        self.cache
            .lock()
            .graphs()
            .get(FluxKind::Kustomization)
            .get(&ObjectKey::new(F, name))
            .map(|o| o.depends_on.len())
    }

    fn dropped(&self, reason: Dropped) -> u64 {
        self.cache.lock().dropped(reason)
    }
}

async fn post(client: &Client, addr: SocketAddr, review: &Value) -> (Value, Duration) {
    let started = Instant::now();
    let mut conn = client.connect(addr, Http::Two).await;
    let (status, body) = conn.post("/validate", review).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    (body["response"].clone(), took)
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_allowed(response: &Value) -> bool {
    response["allowed"].as_bool().unwrap()
}

fn message(response: &Value) -> String {
    response["status"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_update_does_not_deny_a_real_change_beyond_the_bound() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "a", &[]));
    // A real update names the version it read, and what the API server stores is newer.
    let mut b = ks(F, "b", &[]);
    b["metadata"]["resourceVersion"] = fake.apply(b.clone()).into();
    let s = Served::start(fake).await;

    // Posted straight to the webhook: the API server never sees it.
    let (forged, _) = s.post(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(is_allowed(&forged), "{forged}");
    assert_eq!(s.deps_of("a"), Some(1), "the forged edge is remembered");

    // Nothing stored makes b -> a a cycle.
    let (real, took) = s.post(&update(&ks(F, "b", &["a"]), &b)).await;
    assert!(is_allowed(&real), "{real}");
    assert!(took < DECIDED_WITHIN, "decided in {took:?}");
    eprintln!("real request decided in {took:?} after a forged update");
    assert_eq!(s.deps_of("a"), Some(0), "the forged edge is forgotten");
    assert_eq!(s.dropped(Dropped::Unstored), 1);

    // The API server stores the real change; now a -> b is the cycle it is, forged or not.
    s.fake.apply(ks(F, "b", &["a"]));
    eventually("b -> a delivered", || s.cache.lock().pending_admissions() == 0).await;
    let (again, _) = s.post(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    let text = message(&again);
    assert!(text.contains("dependsOn cycle: flux-system/a -> flux-system/b -> flux-system/a"), "{text}");
    assert!(!text.contains("not yet stored"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_create_does_not_deny_a_real_change_beyond_the_bound() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "a", &[]));
    // w waits for x, which does not exist yet (legitimate during a bootstrap).
    fake.apply(ks(F, "w", &["x"]));
    let s = Served::start(fake).await;

    let (forged, _) = s.post(&create(&ks(F, "x", &["a"]))).await;
    assert!(is_allowed(&forged), "{forged}");

    // a -> w -> x -> a only through the forged x.
    let (real, took) = s.post(&update(&ks(F, "a", &["w"]), &ks(F, "a", &[]))).await;
    assert!(is_allowed(&real), "{real}");
    assert!(took < DECIDED_WITHIN, "decided in {took:?}");
    eprintln!("real request decided in {took:?} after a forged create");
    assert!(s.cache.lock().graphs().get(FluxKind::Kustomization).get(&ObjectKey::new(F, "x")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_half_of_a_real_cycle_is_denied_while_the_watch_lags() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "a", &[]));
    fake.apply(ks(F, "b", &[]));
    let s = Served::start(fake).await;

    let first = update(&ks(F, "a", &["b"]), &ks(F, "a", &[]));
    let (admitted, _) = s.post(&first).await;
    assert!(is_allowed(&admitted));
    // The API server stores it; this replica's watch has not delivered it yet.
    let stored_at = Instant::now();
    s.fake.store_unwatched(ks(F, "a", &["b"]));
    let (second, _) = s.post(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    let text = message(&second);
    assert!(!is_allowed(&second));
    assert!(text.contains("dependsOn cycle: flux-system/b -> flux-system/a -> flux-system/b"), "{text}");
    assert!(!text.contains("not yet stored"), "confirmed with the API server: {text}");
    eprintln!("second half denied {:?} after the first was stored", stored_at.elapsed());
    assert_eq!(s.dropped(Dropped::Unstored), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_forged_edge_does_not_hold_up_a_real_change() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "a", &[]));
    fake.apply(ks(F, "b", &[]));
    let s = Served::start(fake).await;
    let forged = update(&ks(F, "a", &["b"]), &ks(F, "a", &[]));

    // Ten forged requests a second for ten seconds, each on a connection of its own, sent on
    // time whatever the answers to the earlier ones.
    let flood_start = Instant::now();
    let mut flood = Vec::new();
    let mut real = None;
    for i in 0..100u32 {
        let at = flood_start + Duration::from_millis(100) * i;
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let (client, addr, mut review) = (s.client.clone(), s.addr, forged.clone());
        review["request"]["uid"] = format!("forged-{i}").into();
        flood.push(tokio::spawn(async move { (at, post(&client, addr, &review).await.0) }));
        if i == 30 {
            // Three seconds into the flood, the real change; the API server stores it right
            // after its admission.
            let (client, addr, fake) = (s.client.clone(), s.addr, s.fake.clone());
            real = Some(tokio::spawn(async move {
                let answer = post(&client, addr, &update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
                if is_allowed(&answer.0) {
                    fake.apply(ks(F, "b", &["a"]));
                }
                answer
            }));
        }
    }
    let (real, took) = real.unwrap().await.unwrap();
    assert!(is_allowed(&real), "{real}");
    assert!(took < DECIDED_WITHIN, "decided in {took:?} under the flood");
    eprintln!("real request decided in {took:?} under the flood");
    let mut before = 0;
    let mut last = None;
    for task in flood {
        let (at, response) = task.await.unwrap();
        if at < flood_start + Duration::from_secs(3) && is_allowed(&response) {
            before += 1;
        }
        last = Some(response);
    }
    assert!(before > 0, "the flood reached the memory before the real change");
    // Once b -> a is stored, a -> b is a real cycle: the flood is denied as one.
    let last = last.unwrap();
    assert!(!is_allowed(&last), "{last}");
    assert!(message(&last).contains("dependsOn cycle: flux-system/a -> flux-system/b -> flux-system/a"), "{last}");
    assert_eq!(s.deps_of("b"), Some(1));
}

/// The API server, unreachable.
struct Unreachable;

impl StoredObjects for Unreachable {
    fn serves(&self, _: FluxKind) -> bool {
        true
    }

    fn get<'a>(
        &'a self,
        _: FluxKind,
        _: &'a ObjectKey,
    ) -> futures::future::BoxFuture<'a, Result<Option<FluxObject>, String>> {
        Box::pin(async { Err("connection refused".to_string()) })
    }

    fn list(&self, _: FluxKind) -> futures::future::BoxFuture<'_, Result<Vec<FluxObject>, String>> {
        Box::pin(async { Err("connection refused".to_string()) })
    }
}

/// A webhook over a cache holding `objects`, confirming with `lookup` if given.
fn webhook(objects: &[Value], lookup: Option<Unreachable>) -> Webhook {
    let cache = Harness::new(Policy::default(), objects).app.webhook.cache.clone();
    let mut webhook = Webhook::new(cache, Arc::new(Policy::default()));
    webhook.store_within = Duration::from_millis(200);
    match lookup {
        Some(l) => webhook.with_lookup(l),
        None => webhook,
    }
}

async fn judge(webhook: &Webhook, review: &Value) -> fluxgate::admission::Verdict {
    let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
    webhook.review(&parsed.request, Instant::now()).await.unwrap()
}

#[tokio::test]
async fn a_denial_resting_on_an_unconfirmed_change_says_how_old_it_is() {
    let objects = [ks(F, "a", &[]), ks(F, "b", &[])];
    let w = webhook(&objects, Some(Unreachable));
    assert!(judge(&w, &update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await.response.allowed);
    let verdict = judge(&w, &update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    let text = verdict.response.message.unwrap_or_default();
    assert!(!verdict.response.allowed);
    assert!(text.starts_with("dependsOn cycle: flux-system/b -> flux-system/a -> flux-system/b"), "{text}");
    let age = text
        .split("flux-system/a admitted ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" s ago, not yet stored)"))
        .unwrap_or_else(|| panic!("{text}"));
    // The denial waited for the change to be due (0.2 s here), then could not confirm it.
    assert!(age.parse::<f64>().unwrap() >= 0.2, "{text}");
}

#[tokio::test]
async fn without_an_api_server_admitted_changes_count_unconfirmed() {
    // `--manifests` mode: nothing is stored anywhere, nothing to ask.
    let w = webhook(&[ks(F, "a", &[]), ks(F, "b", &[])], None);
    assert!(judge(&w, &update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await.response.allowed);
    let verdict = judge(&w, &update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert_eq!(
        verdict.response.message.as_deref(),
        Some("dependsOn cycle: flux-system/b -> flux-system/a -> flux-system/b")
    );
}

#[tokio::test]
async fn dry_run_reviews_are_judged_but_never_remembered() {
    let w = webhook(&[ks(F, "a", &[])], None);
    let dry = review("CREATE", Some(&ks(F, "b", &["a"])), None, true);
    assert!(judge(&w, &dry).await.response.allowed);
    let dry_update = review("UPDATE", Some(&ks(F, "a", &["b"])), Some(&ks(F, "a", &[])), true);
    assert!(!judge(&w, &dry_update).await.response.allowed, "b does not exist: judged like a real one");
    assert_eq!(w.cache.lock().pending_admissions(), 0);
    assert!(w.cache.lock().graphs().get(FluxKind::Kustomization).get(&ObjectKey::new(F, "b")).is_none());
}

#[tokio::test]
async fn the_audit_reports_only_what_the_watch_delivered() {
    let w = webhook(&[ks(F, "apps", &[])], None);
    // Owner labels make the dangling target a warning: the forged object is admitted.
    let forged = owned_by(ks(F, "forged", &["nowhere"]), "flux-system/apps");
    assert!(judge(&w, &create(&forged)).await.response.allowed);
    assert_eq!(w.cache.lock().pending_admissions(), 1);
    let report = fluxgate::audit::scan(&w.cache, &Policy::default());
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.objects.kustomizations, 1);
}

#[tokio::test]
async fn evicted_admissions_are_counted_in_the_metrics() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let limits = fluxgate::cache::OverlayLimits { max_entries: 3, max_bytes: 1024 * 1024 };
    let app = App::new(Webhook::new(Arc::new(Cache::with_limits(limits)), Arc::new(Policy::default())));
    for i in 0..5 {
        let forged = owned_by(ks(F, &format!("forged-{i}"), &["nowhere"]), "flux-system/apps");
        let body = Body::from(serde_json::to_vec(&create(&forged)).unwrap());
        let request = axum::http::Request::post("/validate").header("content-type", "application/json").body(body);
        let response = server::webhook_router(app.clone()).oneshot(request.unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // Twice: a scrape publishes what was dropped since the last one, never the same drop again.
    for _ in 0..2 {
        let request = axum::http::Request::get("/metrics").body(Body::empty()).unwrap();
        let response = server::admin_router(app.clone()).oneshot(request).await.unwrap();
        let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(text.contains("fluxgate_pending_admissions 3\n"), "{text}");
        assert!(text.contains("fluxgate_pending_admissions_dropped_total{reason=\"evicted\"} 2\n"), "{text}");
        assert!(text.contains("fluxgate_pending_admissions_dropped_total{reason=\"refused\"} 0\n"), "{text}");
    }
}

//! Cluster mode against a fake API server speaking the real list/watch protocol: readiness,
//! decisions following watch events, relists after 410 Gone and dropped connections, bookmarks,
//! malformed objects, missing CRDs, and the read-your-writes overlay meeting the watch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::fake_api::FakeApi;
use common::process::{ServeProcess, admin_get};
use common::*;
use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::object::{FluxKind, ObjectKey};
use fluxgate::policy::Policy;
use serde_json::{Value, json};
use tower::ServiceExt;

const F: &str = "flux-system";

struct Cluster {
    cache: Arc<Cache>,
    webhook: Webhook,
    _watch: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts watching `fake` into a fresh cache.
    fn watch(fake: &FakeApi) -> Cluster {
        let cache = Arc::new(Cache::new());
        let options = WatchOptions { crd_retry: Duration::from_millis(200) };
        let served = Arc::new(watch::Served::default());
        let task = tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), options));
        let webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
            .with_lookup(watch::Lookup::new(fake.client(), served));
        Cluster { cache, webhook, _watch: task }
    }

    /// Whether `review` would be allowed, judged now.
    fn allows(&self, review: &Value) -> bool {
        self.allows_at(review, Instant::now())
    }

    fn allows_at(&self, review: &Value, now: Instant) -> bool {
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
        self.webhook.validate(&parsed.request, now).unwrap().response.allowed
    }

    /// Whether `review` is allowed through the full path, lookups on a dangling target included.
    async fn reviews(&self, review: &Value) -> bool {
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
        self.webhook.review(&parsed.request, Instant::now()).await.unwrap().response.allowed
    }

    fn has(&self, kind: FluxKind, ns: &str, name: &str) -> bool {
        self.cache.lock().graphs().get(kind).get(&ObjectKey::new(ns, name)).is_some()
    }

    fn deps_of(&self, ns: &str, name: &str) -> Option<usize> {
        self.cache
            .lock()
            .graphs()
            .get(FluxKind::Kustomization)
            .get(&ObjectKey::new(ns, name))
            .map(|o| o.depends_on.len())
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dry_run_create(obj: &Value) -> Value {
    review("CREATE", Some(obj), None, true)
}

#[tokio::test]
async fn readiness_flips_only_after_every_initial_list() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "infra", &[]));
    fake.apply(hr(F, "cert-manager", &[]));
    fake.hold_lists(true);
    let c = Cluster::watch(&fake);
    let app = fluxgate::server::App::new(c.webhook.clone());
    let readyz = || async {
        let r =
            fluxgate::server::admin_router(app.clone()).oneshot(Request::get("/readyz").body(Body::empty()).unwrap());
        r.await.unwrap().status().as_u16()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.cache.is_ready());
    assert_eq!(readyz().await, 503);
    fake.hold_lists(false);
    eventually("the initial lists", || c.cache.is_ready()).await;
    assert_eq!(readyz().await, 200);
    assert!(c.has(FluxKind::Kustomization, F, "infra"));
    assert!(c.has(FluxKind::HelmRelease, F, "cert-manager"));
}

#[tokio::test]
async fn an_initial_list_in_pages_is_read_whole() {
    let fake = FakeApi::start(true).await;
    // More than one page of the watcher's list (500 items), the last one short.
    for i in 0..1203 {
        fake.apply(ks(F, &format!("app-{i:04}"), if i > 0 { &["app-0000"] } else { &[] }));
    }
    let c = Cluster::watch(&fake);
    eventually("the initial lists", || c.cache.is_ready()).await;
    assert_eq!(c.cache.lock().graphs().get(FluxKind::Kustomization).len(), 1203);
    assert!(c.has(FluxKind::Kustomization, F, "app-1202"));
    // Two one-item probes, three pages of Kustomizations, one of HelmReleases.
    assert!(fake.lists_served() >= 6, "the list came in pages: {} lists", fake.lists_served());
    // Every page reached the graph: the first app has every other one as a dependent.
    let state = c.cache.lock();
    let graph = state.graphs().get(FluxKind::Kustomization);
    let first = graph.id(&ObjectKey::new(F, "app-0000")).unwrap();
    assert_eq!(graph.dependents(first).len(), 1202);
}

#[tokio::test]
async fn decisions_follow_adds_updates_and_deletes() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    let apps = ks(F, "apps", &["infra"]);
    assert!(!c.allows(&dry_run_create(&apps)), "infra does not exist yet");

    fake.apply(ks(F, "infra", &[]));
    eventually("infra added", || c.allows(&dry_run_create(&apps))).await;

    // infra now depends on apps: creating apps -> infra would close a cycle.
    fake.apply(ks(F, "infra", &["apps"]));
    eventually("infra modified", || c.deps_of(F, "infra") == Some(1)).await;
    assert!(!c.allows(&dry_run_create(&apps)));

    fake.delete(&ks(F, "infra", &["apps"]));
    eventually("infra deleted", || !c.has(FluxKind::Kustomization, F, "infra")).await;
    assert!(!c.allows(&dry_run_create(&apps)), "dangling again");
}

#[tokio::test]
async fn relist_after_410_gone_keeps_the_last_complete_snapshot() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "infra", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;
    let lists_before = fake.lists_served();

    // History is compacted while fluxgate watches; its relist is held, and meanwhile infra goes.
    fake.hold_lists(true);
    fake.compact();
    fake.delete(&ks(F, "infra", &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.cache.is_ready(), "a relist must not make the webhook unready");
    assert!(c.has(FluxKind::Kustomization, F, "infra"), "the last complete snapshot stays in use");
    assert!(c.allows(&dry_run_create(&ks(F, "apps", &["infra"]))));

    fake.hold_lists(false);
    eventually("the relist", || !c.has(FluxKind::Kustomization, F, "infra")).await;
    assert!(fake.lists_served() > lists_before, "410 Gone forces a relist");
    assert!(!c.allows(&dry_run_create(&ks(F, "apps", &["infra"]))));
}

#[tokio::test]
async fn dropped_connection_resumes_from_the_bookmarked_version() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;
    // Objects change elsewhere (other kinds) while nothing changes here: a bookmark moves the
    // watch's resourceVersion forward without an object event.
    fake.apply(hr("other", "unrelated", &[]));
    fake.bookmark();
    let bookmarked = fake.current_version().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let watches_before = fake.watch_versions().len();
    fake.drop_watches();
    fake.apply(ks(F, "late", &[]));
    eventually("the event after the drop", || c.has(FluxKind::Kustomization, F, "late")).await;
    let versions = fake.watch_versions();
    assert!(versions.len() > watches_before, "the watch reconnected");
    assert!(versions[watches_before..].contains(&bookmarked), "rewatch from the bookmark: {versions:?}");
}

#[tokio::test]
async fn malformed_object_is_skipped_and_the_watch_goes_on() {
    let fake = FakeApi::start(true).await;
    fake.apply(with(ks(F, "broken-at-list", &[]), "dependsOn", json!("infra")));
    fake.apply(ks(F, "infra", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    assert!(c.has(FluxKind::Kustomization, F, "infra"));
    assert!(!c.has(FluxKind::Kustomization, F, "broken-at-list"));

    fake.apply(with(ks(F, "broken-in-watch", &[]), "dependsOn", json!([{ "namespace": "x" }])));
    fake.apply(ks(F, "after", &[]));
    eventually("the object after the malformed one", || c.has(FluxKind::Kustomization, F, "after")).await;
    assert!(!c.has(FluxKind::Kustomization, F, "broken-in-watch"));
}

#[tokio::test]
async fn missing_crd_is_skipped_and_picked_up_when_installed() {
    let fake = FakeApi::start(false).await;
    let c = Cluster::watch(&fake);
    eventually("ready without the HelmRelease CRD", || c.cache.is_ready()).await;
    fake.install_helm();
    fake.apply(hr(F, "cert-manager", &[]));
    eventually("HelmReleases once the CRD exists", || c.has(FluxKind::HelmRelease, F, "cert-manager")).await;
    assert!(c.allows(&dry_run_create(&hr(F, "app", &["cert-manager"]))));
}

#[tokio::test]
async fn admitted_object_is_visible_before_the_watch_delivers_it() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    // kubectl apply of infra then apps: the watch has not delivered infra yet.
    assert!(c.allows(&create(&ks(F, "infra", &[]))));
    assert!(c.allows(&create(&ks(F, "apps", &["infra"]))));
    assert_eq!(c.cache.lock().pending_admissions(), 2);

    // The watch confirms (and here replaces) infra: the overlay entry ends, the watch's view wins.
    fake.apply(ks(F, "infra", &["crds"]));
    eventually("the watch's infra", || c.deps_of(F, "infra") == Some(1)).await;
    assert_eq!(c.cache.lock().pending_admissions(), 1);
}

#[tokio::test]
async fn admitted_object_the_watch_never_confirms_expires() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    let t0 = Instant::now();
    // Admitted here, then rejected by a later admission step: it never reaches etcd.
    assert!(c.allows_at(&create(&ks(F, "infra", &[])), t0));
    assert!(c.allows_at(&dry_run_create(&ks(F, "apps", &["infra"])), t0 + Duration::from_secs(59)));
    assert!(!c.allows_at(&dry_run_create(&ks(F, "apps", &["infra"])), t0 + Duration::from_secs(61)));
    assert!(!c.has(FluxKind::Kustomization, F, "infra"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_watches_the_cluster_named_by_kubeconfig() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "infra", &[]));
    fake.hold_lists(true);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let certs = dir.path().join("certs");
    let (_, cert, key) = common::process::write_certs(&certs);
    let server = ServeProcess::start_with_env(
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(admin_get(server.admin, "/readyz").await.0, 503);
    fake.hold_lists(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while admin_get(server.admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_graph_objects{kind=\"Kustomization\"} 1"), "{metrics}");
    assert!(metrics.contains("fluxgate_cache_ready 1"), "{metrics}");
}

#[tokio::test]
async fn a_target_another_replica_admitted_is_confirmed_before_denying() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("the served versions are known", || fake.open_watches() == 2).await;
    // `kubectl apply` sent infra to the other replica; this replica's watch lags behind.
    fake.store_unwatched(ks(F, "infra", &[]));
    assert!(!c.allows(&dry_run_create(&ks(F, "apps", &["infra"]))), "the cache alone does not know infra");
    assert!(c.reviews(&create(&ks(F, "apps", &["infra"]))).await, "the lookup finds infra");
    assert!(c.has(FluxKind::Kustomization, F, "infra"), "and the cache now holds it until the watch confirms it");
    // A target the API server does not have either is still denied.
    assert!(!c.reviews(&create(&ks(F, "web", &["nowhere"]))).await);
}

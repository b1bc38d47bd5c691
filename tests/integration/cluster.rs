//! Cluster mode against a fake API server speaking the real list/watch protocol: readiness,
//! decisions following watch events, relists after 410 Gone and dropped connections, bookmarks,
//! malformed objects, missing CRDs, and the read-your-writes overlay meeting the watch.

use crate::common;

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
    served: Arc<watch::Served>,
    _watch: tokio::task::JoinHandle<()>,
}

/// Watch tuning scaled down for tests: one-second watches, a silence noticed after two.
fn options() -> WatchOptions {
    WatchOptions {
        crd_retry: Duration::from_millis(200),
        watch_timeout: Duration::from_secs(1),
        silence_grace: Duration::from_secs(1),
        ..WatchOptions::default()
    }
}

impl Cluster {
    /// Starts watching `fake` into a fresh cache.
    fn watch(fake: &FakeApi) -> Cluster {
        Cluster::watch_with(fake, options())
    }

    fn watch_with(fake: &FakeApi, options: WatchOptions) -> Cluster {
        let cache = Arc::new(Cache::new());
        let served = Arc::new(watch::Served::default());
        let task = tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), options));
        let mut webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
            .with_lookup(watch::Lookup::new(fake.client(), served.clone()));
        webhook.catch_up_wait = Duration::from_millis(500);
        Cluster { cache, webhook, served, _watch: task }
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
        self.reviews_at(review, Instant::now()).await.response.allowed
    }

    async fn reviews_at(&self, review: &Value, now: Instant) -> fluxgate::admission::Verdict {
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
        self.webhook.review(&parsed.request, now).await.unwrap()
    }

    fn current(&self, kind: FluxKind) -> bool {
        self.cache.lock().health(kind).is_current()
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
    assert_eq!(graph.dependents(first).count(), 1202);
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
    eventually("the relist to start", || !c.current(FluxKind::Kustomization)).await;
    assert!(!c.cache.is_ready(), "readiness says the cache is catching up");
    assert!(c.has(FluxKind::Kustomization, F, "infra"), "the last complete snapshot stays in use");
    assert!(c.allows(&dry_run_create(&ks(F, "apps", &["infra"]))), "the cache alone still knows infra");
    // But a new edge is not decided on a lagging cache: it waits, then is told to retry.
    let verdict = c.reviews_at(&create(&ks(F, "apps", &["infra"])), Instant::now()).await;
    assert!(!verdict.response.allowed);
    assert!(verdict.response.message.unwrap().contains("catching up"));
    assert_eq!(c.cache.lock().pending_admissions(), 0, "nothing was recorded");

    fake.hold_lists(false);
    eventually("the relist", || !c.has(FluxKind::Kustomization, F, "infra")).await;
    assert!(fake.lists_served() > lists_before, "410 Gone forces a relist");
    assert!(!c.allows(&dry_run_create(&ks(F, "apps", &["infra"]))));
}

#[tokio::test]
async fn renewed_watch_resumes_from_the_bookmarked_version() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch_with(&fake, WatchOptions { watch_timeout: Duration::from_secs(3), ..options() });
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;
    // Objects change elsewhere (other kinds) while nothing changes here: a bookmark moves the
    // watch's resourceVersion forward without an object event.
    fake.apply(hr("other", "unrelated", &[]));
    fake.bookmark();
    let bookmarked = fake.current_version().to_string();
    let watches_before = fake.watch_versions().len();
    let lists_before = fake.lists_served();
    // The server ends each watch at its timeout; the renewal starts from the bookmark, no relist.
    eventually("the renewed watches", || fake.watch_versions().len() >= watches_before + 2).await;
    let versions = fake.watch_versions();
    assert!(versions[watches_before..].contains(&bookmarked), "rewatch from the bookmark: {versions:?}");
    assert_eq!(fake.lists_served(), lists_before);
    assert!(c.cache.is_ready());
}

#[tokio::test]
async fn dropped_connection_is_resumed_and_sees_what_changed_meanwhile() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;
    let lists_before = fake.lists_served();
    let watches_before = fake.watch_versions().len();
    let seen = fake.current_version();
    fake.drop_watches();
    fake.apply(ks(F, "late", &[]));
    eventually("the object stored during the drop", || c.has(FluxKind::Kustomization, F, "late")).await;
    eventually("ready again", || c.cache.is_ready()).await;
    // Resumed, not relisted: no list was asked for, and the new watches start from a version
    // fluxgate had seen before the drop (a relist would have started them at the list's).
    assert_eq!(fake.lists_served(), lists_before, "a dropped connection is resumed without a relist");
    let versions = fake.watch_versions();
    assert!(versions.len() >= watches_before + 2, "both watches were opened again: {versions:?}");
    for v in &versions[watches_before..] {
        let v: u64 = v.parse().unwrap_or_else(|_| panic!("a resumed watch names its version: {versions:?}"));
        assert!(v > 0 && v <= seen, "resumed from {v}, at most the {seen} seen before the drop: {versions:?}");
    }
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

    fake.apply(with(ks(F, "broken-in-watch", &[]), "dependsOn", json!({ "name": "x" })));
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
    assert!(metrics.contains("fluxgate_watch_current{kind=\"Kustomization\"} 1"), "{metrics}");
    assert!(metrics.contains("fluxgate_relists_in_progress{kind=\"HelmRelease\"} 0"), "{metrics}");
    assert!(metrics.contains("fluxgate_watch_last_event_age_seconds{kind=\"Kustomization\"}"), "{metrics}");
    let (_, readyz) = admin_get(server.admin, "/readyz").await;
    assert!(readyz.contains("Kustomization: current (kustomize.toolkit.fluxcd.io/v1)"), "{readyz}");
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("watching HelmRelease") && l.contains("helm.toolkit.fluxcd.io/v2")),
        "a log line names the watched version"
    );
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

#[tokio::test]
async fn no_cycle_is_admitted_across_an_outage_and_restart() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "a", &[]));
    fake.apply(ks(F, "c", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;

    // c -> a goes through this replica just before the API server goes down: it reaches etcd,
    // but the watch never delivers it.
    let t0 = Instant::now();
    assert!(c.reviews_at(&update(&ks(F, "c", &["a"]), &ks(F, "c", &[])), t0).await.response.allowed);
    fake.stop();
    fake.store_unwatched(ks(F, "c", &["a"]));
    eventually("the outage noticed", || !c.current(FluxKind::Kustomization)).await;
    assert!(!c.cache.is_ready(), "readiness reports the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The API server returns; its relist is slow.
    fake.hold_lists(true);
    fake.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // a -> c more than the overlay's TTL after c -> a was admitted.
    let later = t0 + Duration::from_secs(61);
    let verdict = c.reviews_at(&update(&ks(F, "a", &["c"]), &ks(F, "a", &[])), later).await;
    assert!(!verdict.response.allowed, "the other half of the cycle must not be admitted while the cache lags");
    assert_eq!(c.deps_of(F, "c"), Some(1), "the admitted c -> a outlives the TTL while the watch lags");

    fake.hold_lists(false);
    let back = Instant::now();
    eventually("the relist after the restart", || c.cache.is_ready()).await;
    eprintln!("current again {:?} after the relist was released", back.elapsed());
    let verdict = c.reviews_at(&update(&ks(F, "a", &["c"]), &ks(F, "a", &[])), later).await;
    assert!(!verdict.response.allowed);
    assert!(verdict.response.message.unwrap().contains("cycle"), "denied as the cycle it is");
}

#[tokio::test]
async fn stalled_watch_is_noticed_and_changes_made_meanwhile_are_seen() {
    let fake = FakeApi::start(true).await;
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    eventually("watches open", || fake.open_watches() == 2).await;
    let lists_before = fake.lists_served();
    // The connections stay open but deliver nothing: no event, no bookmark, no end.
    fake.stall_watches(true);
    fake.apply(ks(F, "late", &[]));
    eventually("the change made during the stall", || c.has(FluxKind::Kustomization, F, "late")).await;
    assert!(fake.lists_served() > lists_before, "a silent watch is replaced by a relist");
    fake.stall_watches(false);
}

#[tokio::test]
async fn a_version_that_stops_being_served_is_replaced_by_the_served_one() {
    let fake = FakeApi::start(true).await;
    fake.serve_only("HelmRelease", "v2beta2");
    fake.apply(hr(F, "cert-manager", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    assert_eq!(c.served.get(FluxKind::HelmRelease).unwrap().version, "v2beta2");

    // A Flux upgrade: the CRD serves v2 only.
    fake.serve_only("HelmRelease", "v2");
    fake.apply(hr(F, "redis", &[]));
    eventually("the HelmRelease created after the upgrade", || c.has(FluxKind::HelmRelease, F, "redis")).await;
    assert_eq!(c.served.get(FluxKind::HelmRelease).unwrap().version, "v2");
    assert_eq!(
        c.cache.lock().health(FluxKind::HelmRelease).api_version.as_deref(),
        Some("helm.toolkit.fluxcd.io/v2"),
        "readiness names the watched version"
    );
    assert!(c.has(FluxKind::HelmRelease, F, "cert-manager"));
    eventually("ready", || c.cache.is_ready()).await;
    // The confirming lookup asks for the served version too.
    fake.store_unwatched(hr(F, "postgres", &[]));
    assert!(c.reviews(&create(&hr(F, "app", &["postgres"]))).await);
}

#[tokio::test]
async fn an_empty_dependency_name_is_a_finding_and_the_object_is_still_recorded() {
    let fake = FakeApi::start(true).await;
    // The CRD accepts `name: ""`; the object's other edges are real.
    let a = with(ks(F, "a", &[]), "dependsOn", json!([{ "name": "" }, { "name": "b" }]));
    fake.apply(a.clone());
    fake.apply(ks(F, "b", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    assert_eq!(c.deps_of(F, "a"), Some(1), "a is recorded with its readable edge");

    // So b -> a is the cycle it is, not a dependency on a missing object.
    let verdict = c.reviews_at(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[])), Instant::now()).await;
    let message = verdict.response.message.unwrap_or_default();
    assert!(message.contains("dependsOn cycle: flux-system/b -> flux-system/a -> flux-system/b"), "{message}");
    assert!(!message.contains("does not exist"), "{message}");

    // The entry itself is the finding, on admission and in the audit.
    let verdict = c
        .reviews_at(&dry_run_create(&with(ks(F, "d", &[]), "dependsOn", json!([{ "name": "" }]))), Instant::now())
        .await;
    assert!(!verdict.response.allowed);
    assert!(verdict.response.message.unwrap().contains("spec.dependsOn[0].name must be a non-empty string"));
    let report = fluxgate::audit::scan(&c.cache, &Policy::default());
    let about_a: Vec<&str> =
        report.findings.iter().filter(|f| &*f.object.name == "a").map(|f| f.message.as_str()).collect();
    assert_eq!(about_a.len(), 1, "{about_a:?}");
    assert!(about_a[0].contains("spec.dependsOn[0].name"), "{about_a:?}");
}

#[tokio::test]
async fn an_admitted_object_the_api_server_never_stored_stops_counting_on_a_deny() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "b", &[]));
    fake.apply(ks(F, "c", &["a"]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    // a -> b is admitted here, then rejected by a later admission step: never stored.
    let t0 = Instant::now();
    assert!(c.reviews_at(&create(&ks(F, "a", &["b"])), t0).await.response.allowed);
    // b -> c closes b -> c -> a -> b through it. The denial waits until a real `a` would have
    // been stored, asks the API server, which does not have it, forgets `a`, and judges again.
    let verdict = c.reviews_at(&update(&ks(F, "b", &["c"]), &ks(F, "b", &[])), t0).await;
    assert!(verdict.response.allowed, "{:?}", verdict.response.message);
    assert!(t0.elapsed() >= c.webhook.store_within, "the API server was asked only once `a` was due");
    assert!(!c.has(FluxKind::Kustomization, F, "a"));
}

#[tokio::test]
async fn an_object_being_deleted_does_not_count_as_present() {
    let fake = FakeApi::start(true).await;
    fake.apply(ks(F, "infra", &[]));
    let c = Cluster::watch(&fake);
    eventually("ready", || c.cache.is_ready()).await;
    assert!(c.has(FluxKind::Kustomization, F, "infra"));
    // Deleted, its finalizer still running: the object is there with a deletionTimestamp.
    let mut terminating = ks(F, "infra", &[]);
    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    terminating["metadata"]["finalizers"] = json!(["finalizers.fluxcd.io"]);
    fake.apply(terminating);
    eventually("infra counted as gone", || !c.has(FluxKind::Kustomization, F, "infra")).await;
    // Neither the cache nor the confirming lookup lets a new dependent wait for it.
    assert!(!c.reviews(&create(&ks(F, "apps", &["infra"]))).await);
}

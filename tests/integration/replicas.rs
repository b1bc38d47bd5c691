//! Several replicas against one fake API server whose watch delivers events late (up to 2 s)
//! and whose Lease writes take 2 ms one at a time: decisions hold for the cluster, not per
//! replica. The test plays the API server's part: it sends each review to one replica and
//! stores the object only when that replica admitted it (and, as the API server does, refuses
//! an update whose object changed since it was read: a later rejection that never reaches
//! storage).
//!
//! `FLUXGATE_TEST_NO_COORDINATION=1` runs the same tests with the shared record switched off,
//! to show that they fail without it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::fake_api::{FakeApi, LeaseFailure};
use common::*;
use fluxgate::admission::{AdmissionReview, Coordinator, Verdict, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::coordination::{LeaseStore, RECORD_NAME};
use fluxgate::policy::Policy;
use serde_json::Value;
use tower::ServiceExt;

const F: &str = "flux-system";
const NS: &str = "fluxgate-system";

fn coordination_on() -> bool {
    std::env::var("FLUXGATE_TEST_NO_COORDINATION").is_err()
}

struct Replica {
    cache: Arc<Cache>,
    webhook: Webhook,
    _watch: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// As `fluxgate serve` starts: the replica's mark in the record first, then the watch.
    async fn start(fake: &FakeApi, name: &str) -> Replica {
        let coordinator = if coordination_on() {
            let store = Arc::new(LeaseStore::new(fake.client(), NS));
            let coordinator = Arc::new(Coordinator::new(store, name));
            coordinator.join().await.unwrap();
            Some(coordinator)
        } else {
            None
        };
        let cache = Arc::new(Cache::new());
        let served = Arc::new(watch::Served::default());
        // Long enough that a lagging event is not taken for a silent watch.
        let options = WatchOptions {
            watch_timeout: Duration::from_secs(5),
            silence_grace: Duration::from_secs(5),
            ..WatchOptions::default()
        };
        let task = tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), options));
        let mut webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
            .with_lookup(watch::Lookup::new(fake.client(), served));
        if let Some(coordinator) = coordinator {
            webhook = webhook.with_coordinator(coordinator);
        }
        Replica { cache, webhook, _watch: task }
    }

    async fn review(&self, review: &Value) -> Verdict {
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
        self.webhook.review(&parsed.request, Instant::now()).await.unwrap()
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fake API server with `names` stored without dependsOn, and `n` replicas watching it
/// with up to `lag` of watch lag, all ready.
async fn cluster(names: &[String], n: usize, lag: Duration, seed: u64) -> (FakeApi, Vec<Arc<Replica>>, Storage) {
    let fake = FakeApi::start(false).await;
    fake.set_lease_write_latency(Duration::from_millis(2));
    let storage = Storage::default();
    for name in names {
        let version = fake.apply(ks(F, name, &[]));
        storage.0.lock().unwrap().insert(name.clone(), (BTreeSet::new(), version));
    }
    fake.set_watch_lag(lag, seed);
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Arc::new(Replica::start(&fake, &format!("replica-{i}")).await));
    }
    for r in &replicas {
        let cache = r.cache.clone();
        eventually("the replicas to be ready", || cache.is_ready()).await;
    }
    (fake, replicas, storage)
}

/// The API server's part: what it stores, each object's dependsOn by name and its
/// `resourceVersion`.
#[derive(Default)]
struct Storage(Mutex<BTreeMap<String, (BTreeSet<String>, String)>>);

impl Storage {
    fn object(name: &str, deps: &BTreeSet<String>, version: &str) -> Value {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        let mut object = ks(F, name, &deps);
        object["metadata"]["resourceVersion"] = version.into();
        object
    }

    /// Sends "`from` now also depends on `to`" to `replica`; stores it when admitted, unless
    /// `reaches_storage` is false or the object changed meanwhile. Returns whether fluxgate
    /// admitted it.
    async fn add_edge(&self, fake: &FakeApi, replica: &Replica, from: &str, to: &str, reaches_storage: bool) -> bool {
        let (old_deps, version) = self.0.lock().unwrap()[from].clone();
        let mut new_deps = old_deps.clone();
        new_deps.insert(to.to_string());
        let old = Self::object(from, &old_deps, &version);
        let new = Self::object(from, &new_deps, &version);
        let asked = Instant::now();
        let verdict = replica.review(&update(&new, &old)).await;
        if std::env::var("REPLICAS_DEBUG").is_ok() {
            eprintln!(
                "{asked:?} {from}->{to} at {:?}: allowed {} after {:?} {:?}",
                Arc::as_ptr(&replica.cache),
                verdict.response.allowed,
                asked.elapsed(),
                verdict.response.message
            );
        }
        if verdict.response.allowed && reaches_storage {
            let mut stored = self.0.lock().unwrap();
            let current = stored.get_mut(from).unwrap();
            // The update names the version it read: a changed object is a 409, never stored.
            if current.1 == version {
                let version = fake.apply(new);
                *current = (new_deps, version);
            }
        }
        verdict.response.allowed
    }

    /// A cycle among the stored edges, if any.
    fn cycle(&self) -> Option<Vec<String>> {
        let stored = self.0.lock().unwrap();
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            path: &mut Vec<String>,
        ) -> bool {
            match state.get(n) {
                Some(1) => {
                    path.push(n.to_string());
                    return true;
                }
                Some(2) => return false,
                _ => {}
            }
            state.insert(n.to_string(), 1);
            path.push(n.to_string());
            for m in g.get(n).into_iter().flatten() {
                if visit(m, g, state, path) {
                    return true;
                }
            }
            path.pop();
            state.insert(n.to_string(), 2);
            false
        }
        let mut state = BTreeMap::new();
        let graph: BTreeMap<String, BTreeSet<String>> =
            stored.iter().map(|(name, (deps, _))| (name.clone(), deps.clone())).collect();
        for n in graph.keys() {
            let mut path = Vec::new();
            if visit(n, &graph, &mut state, &mut path) {
                return Some(path);
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_halves_of_a_cycle_sent_to_two_replicas_at_once_are_never_both_admitted() {
    let names: Vec<String> = (0..20).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    let (fake, replicas, storage) = cluster(&names, 3, Duration::from_secs(2), 7).await;
    let storage = Arc::new(storage);
    let mut both = Vec::new();
    for i in 0..20 {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let (ra, rb) = (replicas[i % 3].clone(), replicas[(i + 1) % 3].clone());
        let (s1, s2, f1, f2) = (storage.clone(), storage.clone(), fake.clone(), fake.clone());
        let (a1, b1, a2, b2) = (a.clone(), b.clone(), a.clone(), b.clone());
        let first = tokio::spawn(async move { s1.add_edge(&f1, &ra, &a1, &b1, true).await });
        let second = tokio::spawn(async move { s2.add_edge(&f2, &rb, &b2, &a2, true).await });
        let (x, y) = (first.await.unwrap(), second.await.unwrap());
        assert!(x || y, "pair {i}: one half is admitted (a single replica admits the first of them)");
        if x && y {
            both.push(i);
        }
    }
    assert_eq!(both, Vec::<usize>::new(), "pairs whose two halves were both admitted");
    assert_eq!(storage.cycle(), None);
    if coordination_on() {
        let (writes, _) = fake.lease_writes();
        assert!(writes >= 20, "each admitted half was recorded: {writes} writes");
        assert!(fake.lease(NS, RECORD_NAME).is_some());
    }
}

/// A small random number generator, so that each case is repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random case: `requests` edge additions among `nodes` objects spread over three
/// replicas, some sent together and some one after another with pauses, some never stored.
/// With `acyclic`, every edge goes down one random order of the nodes, so the whole set is
/// acyclic and must be admitted in full.
async fn random_case(seed: u64, acyclic: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let nodes = 5u64;
    let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
    let (fake, replicas, storage) = cluster(&names, 3, Duration::from_secs(2), seed).await;
    let storage = Arc::new(storage);
    let mut order: Vec<usize> = (0..nodes as usize).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut requests = Vec::new();
    for _ in 0..10 {
        let (mut x, mut y) = (rng.below(nodes) as usize, rng.below(nodes) as usize);
        if acyclic {
            if x == y {
                continue;
            }
            // Down the order: the position of `from` is after that of `to`.
            let (px, py) = (order.iter().position(|&n| n == x).unwrap(), order.iter().position(|&n| n == y).unwrap());
            if px < py {
                std::mem::swap(&mut x, &mut y);
            }
        }
        let replica = rng.below(3) as usize;
        let reaches_storage = rng.below(8) != 0;
        let together = rng.below(2) == 0;
        let pause = Duration::from_millis(rng.below(400));
        requests.push((names[x].clone(), names[y].clone(), replica, reaches_storage, together, pause));
    }
    let mut running: Vec<tokio::task::JoinHandle<(String, String, bool)>> = Vec::new();
    let mut outcomes = Vec::new();
    for (from, to, replica, reaches_storage, together, pause) in requests.clone() {
        if !together {
            for r in running.drain(..) {
                outcomes.push(r.await.unwrap());
            }
            tokio::time::sleep(pause).await;
        }
        let (s, f, r) = (storage.clone(), fake.clone(), replicas[replica].clone());
        running.push(tokio::spawn(async move {
            let admitted = s.add_edge(&f, &r, &from, &to, reaches_storage).await;
            (from, to, admitted)
        }));
    }
    for r in running {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(
        storage.cycle(),
        None,
        "seed {seed}: stored edges hold a cycle; requests {requests:?}, outcomes {outcomes:?}"
    );
    if acyclic {
        let denied: Vec<_> = outcomes.iter().filter(|o| !o.2).collect();
        assert!(denied.is_empty(), "seed {seed}: an acyclic set is admitted in full; denied {denied:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_over_three_replicas_never_store_a_cycle() {
    for seed in 1..=6 {
        random_case(seed, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_acyclic_request_sets_are_admitted_in_full() {
    for seed in 101..=104 {
        random_case(seed, true).await;
    }
}

async fn metrics(webhook: &Webhook) -> String {
    let app = fluxgate::server::App::new(webhook.clone());
    let response = fluxgate::server::admin_router(app.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    String::from_utf8(axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
}

async fn readyz(webhook: &Webhook) -> u16 {
    let app = fluxgate::server::App::new(webhook.clone());
    let response = fluxgate::server::admin_router(app)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status().as_u16()
}

/// With Lease writes failing as `failure`: an edge-adding admission is denied with a message
/// that says why and asks to retry, and counted; what adds no edge, dry-runs and deletes go
/// through; the failed admission leaves nothing behind once writes work again.
async fn record_cannot_be_written(failure: LeaseFailure, reason: &str, says: &str) {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let (fake, replicas, _) = cluster(&names, 1, Duration::ZERO, 1).await;
    let r = &replicas[0];
    fake.fail_lease_writes(Some(failure));

    let verdict = r.review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(!verdict.response.allowed);
    let message = verdict.response.message.unwrap();
    assert!(message.contains("could not record this admission") && message.contains("retry"), "{message}");
    assert!(message.contains(says), "{message}");

    assert!(r.review(&create(&ks(F, "c", &[]))).await.response.allowed, "a create without edges");
    let dry_run = review("UPDATE", Some(&ks(F, "a", &["b"])), Some(&ks(F, "a", &[])), true);
    assert!(r.review(&dry_run).await.response.allowed, "a dry-run never writes");
    assert!(r.review(&delete(&ks(F, "b", &[]))).await.response.allowed, "a delete");
    assert!(r.review(&update(&ks(F, "a", &[]), &ks(F, "a", &[]))).await.response.allowed, "an unchanged re-apply");
    assert_eq!(readyz(&r.webhook).await, 200, "readiness is not the record's business");

    let text = metrics(&r.webhook).await;
    let line = format!("fluxgate_coordination_failures_total{{reason=\"{reason}\"}} 1");
    assert!(text.contains(&line), "{line} in\n{text}");

    fake.fail_lease_writes(None);
    // The denied a -> b is not remembered: b -> a closes no cycle.
    let verdict = r.review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(verdict.response.allowed, "{:?}", verdict.response.message);
    let text = metrics(&r.webhook).await;
    // The mark written at start, then the admission.
    assert!(text.contains("fluxgate_coordination_writes_total 2"), "{text}");
}

#[tokio::test]
async fn a_record_write_that_times_out_denies_only_edge_adding_admissions() {
    record_cannot_be_written(LeaseFailure::Timeout, "timeout", "did not answer in time").await;
}

#[tokio::test]
async fn a_forbidden_record_write_denies_only_edge_adding_admissions() {
    record_cannot_be_written(LeaseFailure::Forbidden, "forbidden", "check fluxgate's RBAC").await;
}

#[tokio::test]
async fn record_writes_that_conflict_forever_deny_only_edge_adding_admissions() {
    record_cannot_be_written(LeaseFailure::ConflictForever, "conflict", "concurrent writes conflicted").await;
}

/// A record entry is only as trustworthy as a pending admission: a forged review admitted by
/// one replica (never stored) must not make another replica deny a real change for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_admission_in_the_record_does_not_deny_a_real_change_on_another_replica() {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let (fake, replicas, _) = cluster(&names, 2, Duration::ZERO, 3).await;
    // Sent straight to replica 0, never to the API server: admitted and recorded, never stored.
    let forged = replicas[0].review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(forged.response.allowed);
    // The real change closes a cycle with the forged one only: replica 1 confirms the entry
    // with the API server, finds it is not stored, and admits.
    let real = replicas[1].review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(real.response.allowed, "{:?}", real.response.message);
    let text = metrics(&replicas[1].webhook).await;
    assert!(text.contains("fluxgate_coordination_rejudged_denials_total 1"), "{text}");
    assert!(text.contains("fluxgate_pending_admissions_dropped_total{reason=\"unstored\"} 1"), "{text}");
    let _ = fake;
}

/// The built binary, twice, as `deploy/` runs it: each replica joins the record at start, and
/// two halves of a cycle posted over TLS to the two at the same moment are never both admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fluxgate_binaries_over_tls_never_admit_both_halves_of_a_cycle() {
    use common::process::{Client, Http, ServeProcess, admin_get, write_certs};
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = (0..10).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    let fake = FakeApi::start(false).await;
    fake.set_lease_write_latency(Duration::from_millis(2));
    for name in &names {
        fake.apply(ks(F, name, &[]));
    }
    fake.set_watch_lag(Duration::from_secs(2), 11);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let (ca, cert, key) = write_certs(&dir.path().join("certs"));
    let servers: Vec<ServeProcess> = (0..2)
        .map(|i| {
            ServeProcess::start_with_env(
                &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
                &[
                    ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                    ("POD_NAME", &format!("fluxgate-{i}")),
                    ("POD_NAMESPACE", NS),
                ],
            )
        })
        .collect();
    for s in &servers {
        let deadline = Instant::now() + Duration::from_secs(20);
        while admin_get(s.admin, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "a replica never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let client = Client::new(&ca);
    let mut conns = Vec::new();
    for s in &servers {
        conns.push(Arc::new(tokio::sync::Mutex::new(client.connect(s.webhook, Http::Two).await)));
    }
    let mut both = Vec::new();
    for i in 0..10 {
        let halves = [
            (ks(F, &format!("a{i}"), &[&format!("b{i}")]), ks(F, &format!("a{i}"), &[])),
            (ks(F, &format!("b{i}"), &[&format!("a{i}")]), ks(F, &format!("b{i}"), &[])),
        ];
        let mut sent = Vec::new();
        for (r, (new, old)) in halves.into_iter().enumerate() {
            let (conn, fake) = (conns[r].clone(), fake.clone());
            sent.push(tokio::spawn(async move {
                let (status, body) = conn.lock().await.post("/validate", &update(&new, &old)).await;
                assert_eq!(status, 200, "{body}");
                let allowed = body["response"]["allowed"] == true;
                if allowed {
                    fake.apply(new);
                }
                allowed
            }));
        }
        let (x, y) = (sent.remove(0).await.unwrap(), sent.remove(0).await.unwrap());
        assert!(x || y, "pair {i}: one half is admitted");
        if x && y {
            both.push(i);
        }
    }
    assert_eq!(both, Vec::<usize>::new(), "pairs whose two halves were both admitted");
    let (_, report) = admin_get(servers[0].admin, "/report").await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["coordination"]["replica"], "fluxgate-0");
    assert_eq!(report["coordination"]["replicas_recently_deciding"], 2, "{report}");
    let (_, page) = admin_get(servers[1].admin, "/").await;
    assert!(page.contains("2 replicas recently deciding, this one fluxgate-1"), "the status page says it too");
    let (_, metrics) = admin_get(servers[1].admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_coordination_recorded_admissions_total"), "{metrics}");
    assert!(fake.lease(NS, RECORD_NAME).is_some());
}

/// A record kept in memory whose next write, once armed, waits until it is opened: a write in
/// flight for as long as a test needs.
struct GatedStore {
    inner: fluxgate::coordination::MemoryStore,
    armed: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Semaphore,
}

impl Default for GatedStore {
    fn default() -> GatedStore {
        GatedStore { inner: Default::default(), armed: Default::default(), gate: tokio::sync::Semaphore::new(0) }
    }
}

impl fluxgate::coordination::RecordStore for GatedStore {
    fn patch<'a>(
        &'a self,
        changes: &'a fluxgate::coordination::Changes,
    ) -> futures::future::BoxFuture<'a, Result<fluxgate::coordination::Record, fluxgate::coordination::WriteError>>
    {
        Box::pin(async move {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let _held = self.gate.acquire().await.expect("the gate stays open");
            }
            self.inner.patch(changes).await
        })
    }
}

/// Two requests on one replica, both judged on a view without another replica's admission:
/// the first one's write brings that admission into view; the second, waiting for the writer
/// meanwhile, is judged again after its own write although that write brings nothing new.
/// Answered on its first judgement, it would close the cycle `a -> c -> a`.
/// A replica with no watch: its cache holds `names` without edges at version 1, and it shares
/// `store` with the others.
fn unwatched_replica(store: Arc<dyn fluxgate::coordination::RecordStore>, name: &str, names: &[&str]) -> Arc<Webhook> {
    let cache = Arc::new(Cache::new());
    for n in names {
        let object =
            fluxgate::object::FluxObject::from_value(fluxgate::object::FluxKind::Kustomization, &ks(F, n, &[]), F, "")
                .unwrap();
        cache.lock().apply(Arc::new(object), Some("1"));
    }
    let coordinator = Arc::new(Coordinator::new(store, name));
    Arc::new(Webhook::new(cache, Arc::new(Policy::default())).with_coordinator(coordinator))
}

/// `name` now depending on `deps`, replacing the version `version` without edges.
async fn edges_update(
    webhook: Arc<Webhook>,
    name: &str,
    deps: &[&str],
    version: &str,
) -> fluxgate::admission::Response {
    let mut old = ks(F, name, &[]);
    old["metadata"]["resourceVersion"] = version.into();
    let mut new = ks(F, name, deps);
    new["metadata"]["resourceVersion"] = version.into();
    let parsed = AdmissionReview::from_slice(&serde_json::to_vec(&update(&new, &old)).unwrap()).unwrap();
    webhook.review(&parsed.request, Instant::now()).await.unwrap().response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waited_for_the_writer_is_judged_again_with_what_came_into_view() {
    let store = Arc::new(GatedStore::default());
    let names = ["a", "b", "c", "x"];
    let (other, this) =
        (unwatched_replica(store.clone(), "other", &names), unwatched_replica(store.clone(), "this", &names));
    // Recorded by the other replica; this one has no watch to deliver it.
    assert!(edges_update(other, "c", &["a"], "1").await.allowed);

    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = tokio::spawn(edges_update(this.clone(), "x", &["b"], "1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(edges_update(this.clone(), "a", &["c"], "1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.gate.add_permits(1);

    assert!(first.await.unwrap().allowed);
    let second = second.await.unwrap();
    assert!(!second.allowed, "{second:?}");
    let message = second.message.unwrap_or_default();
    assert!(message.contains("flux-system/a -> flux-system/c -> flux-system/a"), "{message}");
}

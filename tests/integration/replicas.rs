//! Several replicas against one fake API server whose watch delivers events late (up to 2 s)
//! and whose Lease writes take 2 ms one at a time: decisions hold for the cluster, not per
//! replica. Each replica is a webhook with its own watch cache, served over TLS on loopback
//! (the deciding replica takes forwarded reviews there), taking part in the election of the
//! decider on the fake's Lease. The test plays the API server's part: it sends each review to
//! one replica and stores the object only when that replica admitted it (and, as the API server
//! does, refuses an update whose object changed since it was read: a later rejection that never
//! reaches storage).
//!
//! `FLUXGATE_TEST_NO_COORDINATION=1` runs the same tests with the election switched off (each
//! replica decides alone), to show that they fail without it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::fake_api::{FakeApi, LeaseFailure};
use common::*;
use fluxgate::admission::{AdmissionReview, Verdict, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::coordination::decider::{DECIDER_LEASE, Election, Role, Timing};
use fluxgate::policy::Policy;
use fluxgate::server::peer::Peers;
use fluxgate::server::tls::{ReloadingCert, ReloadingClientCa};
use fluxgate::server::{self, App, Limits};
use serde_json::Value;
use tower::ServiceExt;

const F: &str = "flux-system";
const NS: &str = "fluxgate-system";

/// The election's clock in these tests: short enough that a takeover fits in a test, long
/// enough that a loaded machine renews in time.
const TIMING: Timing =
    Timing { lease: Duration::from_secs(4), renew_deadline: Duration::from_secs(3), retry: Duration::from_millis(200) };

fn coordination_on() -> bool {
    std::env::var("FLUXGATE_TEST_NO_COORDINATION").is_err()
}

/// The serving pair every replica of a test mounts (one Secret in a cluster).
fn shared_cert() -> (Arc<ReloadingCert>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = common::process::write_certs(dir.path());
    (ReloadingCert::load(&cert, &key).unwrap(), dir)
}

struct Replica {
    cache: Arc<Cache>,
    webhook: Webhook,
    election: Option<Arc<Election>>,
    /// Stops the webhook server (the replica's port closes; its election goes on).
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Replica {
    /// As `fluxgate serve` starts: the watch, the webhook port, the election.
    async fn start(fake: &FakeApi, name: &str, cert: &Arc<ReloadingCert>) -> Replica {
        Replica::start_with(fake, name, cert, None, TIMING).await
    }

    /// [`Replica::start`], the webhook port requiring client certificates signed by `client_ca`
    /// (`--client-ca`) when given.
    async fn start_with(
        fake: &FakeApi,
        name: &str,
        cert: &Arc<ReloadingCert>,
        client_ca: Option<Arc<ReloadingClientCa>>,
        timing: Timing,
    ) -> Replica {
        let cache = Arc::new(Cache::new());
        let served = Arc::new(watch::Served::default());
        // Long enough that a lagging event is not taken for a silent watch.
        let options = WatchOptions {
            watch_timeout: Duration::from_secs(5),
            silence_grace: Duration::from_secs(5),
            ..WatchOptions::default()
        };
        let mut tasks = vec![tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), options))];
        let mut webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
            .with_lookup(watch::Lookup::new(fake.client(), served));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut election = None;
        if coordination_on() {
            let e = Arc::new(Election::new(fake.client(), NS, name, &address, timing));
            let forward = Arc::new(Peers::new(cert.clone(), name));
            let (taking_part, task) = webhook.taking_part(e.clone(), forward);
            webhook = taking_part;
            tasks.push(task);
            election = Some(e);
        }
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let router = server::webhook_router(App::new(webhook.clone()));
        tasks.push(tokio::spawn(server::serve_tls(
            listener,
            Arc::new(cert.server_config_with(client_ca)),
            router,
            stop_rx,
            Limits::default(),
        )));
        Replica { cache, webhook, election, stop, tasks }
    }

    async fn review(&self, review: &Value) -> Verdict {
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(review).unwrap()).unwrap();
        self.webhook.review(&parsed.request, Instant::now()).await.unwrap()
    }

    fn decides(&self) -> bool {
        self.election.as_ref().is_some_and(|e| e.role().decides_now())
    }

    fn follows(&self) -> bool {
        self.election.as_ref().is_some_and(|e| matches!(e.role(), Role::Following { .. }))
    }

    /// Reviews this replica forwarded to the decider and answered with its answer.
    fn forwarded(&self) -> u64 {
        self.election.as_ref().map_or(0, |e| e.stats.forwarded.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
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
    cluster_with(names, n, lag, seed, TIMING).await
}

/// [`cluster`] with the election's clock `timing`.
async fn cluster_with(
    names: &[String],
    n: usize,
    lag: Duration,
    seed: u64,
    timing: Timing,
) -> (FakeApi, Vec<Arc<Replica>>, Storage) {
    let fake = FakeApi::start(false).await;
    fake.set_lease_write_latency(Duration::from_millis(2));
    let storage = Storage::default();
    for name in names {
        let version = fake.apply(ks(F, name, &[]));
        storage.0.lock().unwrap().insert(name.clone(), (BTreeSet::new(), version));
    }
    fake.set_watch_lag(lag, seed);
    let (cert, dir) = shared_cert();
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Arc::new(Replica::start_with(&fake, &format!("replica-{i}"), &cert, None, timing).await));
    }
    for r in &replicas {
        let cache = r.cache.clone();
        eventually("the replicas to be ready", || cache.is_ready()).await;
    }
    if coordination_on() {
        eventually("a replica to decide", || replicas.iter().any(|r| r.decides())).await;
        eventually("the others to follow it", || replicas.iter().filter(|r| r.follows()).count() == n - 1).await;
    }
    // The certificate files may go: the pair is in memory.
    drop(dir);
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
        // Two of every three pairs reached a replica that forwarded one half or both.
        let forwarded: u64 = replicas.iter().map(|r| r.forwarded()).sum();
        assert!(forwarded >= 20, "halves were decided by the decider: {forwarded} forwarded");
        assert!(fake.lease_holder(NS, DECIDER_LEASE).is_some());
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

/// What cannot close a cycle is decided by the replica called, decider or not: a create
/// without edges, a dry-run, a delete, an unchanged re-apply; readiness is not the election's
/// business.
async fn everything_else_goes_through(r: &Replica) {
    assert!(r.review(&create(&ks(F, "c", &[]))).await.response.allowed, "a create without edges");
    let dry_run = review("UPDATE", Some(&ks(F, "a", &["b"])), Some(&ks(F, "a", &[])), true);
    assert!(r.review(&dry_run).await.response.allowed, "a dry-run is decided where it arrives");
    assert!(r.review(&delete(&ks(F, "b", &[]))).await.response.allowed, "a delete");
    assert!(r.review(&update(&ks(F, "a", &[]), &ks(F, "a", &[]))).await.response.allowed, "an unchanged re-apply");
    assert_eq!(readyz(&r.webhook).await, 200);
}

/// The fake with `a` and `b` stored without edges and `n` replicas watching it, ready, with
/// Lease writes failing as `failure` from the start (no replica can take the decider Lease).
async fn cluster_without_decider(n: usize, failure: LeaseFailure) -> (FakeApi, Vec<Replica>, tempfile::TempDir) {
    let fake = FakeApi::start(false).await;
    for name in ["a", "b"] {
        fake.apply(ks(F, name, &[]));
    }
    fake.fail_lease_writes(Some(failure));
    let (cert, dir) = shared_cert();
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Replica::start(&fake, &format!("replica-{i}"), &cert).await);
    }
    for r in &replicas {
        let cache = r.cache.clone();
        eventually("the replicas to be ready", || cache.is_ready()).await;
    }
    (fake, replicas, dir)
}

/// With Lease writes failing as `failure`, no replica decides: an edge-adding admission is
/// denied with a message that says so and asks to retry, and counted; everything else goes
/// through; once writes work again a replica decides, and the denied admission left nothing
/// behind.
async fn no_decider_can_be_elected(failure: LeaseFailure) {
    if !coordination_on() {
        return;
    }
    let (fake, replicas, _dir) = cluster_without_decider(2, failure).await;
    let r = &replicas[0];
    let verdict = r.review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(!verdict.response.allowed);
    let message = verdict.response.message.unwrap();
    assert!(message.contains("no fluxgate replica is deciding such changes right now"), "{message}");
    assert!(message.contains("retry"), "{message}");
    everything_else_goes_through(r).await;
    let text = metrics(&r.webhook).await;
    let line = "fluxgate_coordination_failures_total{reason=\"no_decider\"} 1";
    assert!(text.contains(line), "{line} in\n{text}");
    assert!(text.contains("fluxgate_coordination_decider 0"), "{text}");

    fake.fail_lease_writes(None);
    eventually("a replica to decide", || replicas.iter().any(Replica::decides)).await;
    // The denied a -> b is not remembered: b -> a closes no cycle.
    let verdict = r.review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(verdict.response.allowed, "{:?}", verdict.response.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_writes_that_time_out_deny_only_edge_adding_admissions() {
    no_decider_can_be_elected(LeaseFailure::Timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_lease_writes_deny_only_edge_adding_admissions() {
    no_decider_can_be_elected(LeaseFailure::Forbidden).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_writes_that_conflict_forever_deny_only_edge_adding_admissions() {
    no_decider_can_be_elected(LeaseFailure::ConflictForever).await;
}

/// With `--client-ca`, the webhook port refuses callers without a certificate of the API
/// server's CA; the replicas present their shared serving certificate to each other instead,
/// and the decider accepts it: forwarding works, and still keeps the cycle out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_works_where_the_webhook_port_requires_client_certificates() {
    if !coordination_on() {
        return;
    }
    let fake = FakeApi::start(false).await;
    for name in ["a", "b", "c"] {
        fake.apply(ks(F, name, &[]));
    }
    let (cert, _dir) = shared_cert();
    let ca_dir = tempfile::tempdir().unwrap();
    // Another CA: the one the API server's client certificate would be signed by.
    let (api_server_ca, _, _) = common::process::write_certs(ca_dir.path());
    let client_ca = ReloadingClientCa::load(&api_server_ca).unwrap();
    let mut replicas = Vec::new();
    for i in 0..2 {
        replicas
            .push(Replica::start_with(&fake, &format!("replica-{i}"), &cert, Some(client_ca.clone()), TIMING).await);
    }
    eventually("a replica to decide", || replicas.iter().any(Replica::decides)).await;
    eventually("the other to follow", || replicas.iter().any(Replica::follows)).await;
    let decider = replicas.iter().find(|r| r.decides()).unwrap();
    let follower = replicas.iter().find(|r| r.follows()).unwrap();
    assert!(decider.review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await.response.allowed);
    fake.apply(ks(F, "a", &["b"]));
    let verdict = follower.review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(!verdict.response.allowed, "forwarded, and denied by the decider");
    assert!(verdict.response.message.unwrap().contains("cycle"));
    let verdict = follower.review(&update(&ks(F, "b", &["c"]), &ks(F, "b", &[]))).await;
    assert!(verdict.response.allowed, "{:?}", verdict.response.message);
    // b -> c at least went to the decider (b -> a may have been denied by the follower's own
    // watch, had it delivered a -> b by then).
    assert!(follower.forwarded() >= 1, "{}", follower.forwarded());
}

/// A review forwarded to a replica that does not decide (the forwarder's view of the Lease was
/// a moment old) is not answered with a denial the API server would see: the replica answers
/// 503, and the forwarder tries the decider again. After a release, the old decider follows
/// the new one, so reviews still reaching it are decided there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_forwarded_to_a_replica_that_does_not_decide_is_tried_again_elsewhere() {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let (_fake, replicas, _) = cluster(&names, 2, Duration::ZERO, 13).await;
    let old = replicas.iter().position(|r| r.decides()).unwrap();
    let post = |r: &Replica, body: &Value| {
        let router = server::webhook_router(App::new(r.webhook.clone()));
        let request = Request::post("/validate")
            .header("content-type", "application/json")
            .header(fluxgate::server::peer::FORWARDED_BY, "replica-x")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        async move { router.oneshot(request).await.unwrap().status().as_u16() }
    };
    let edge = update(&ks(F, "a", &["b"]), &ks(F, "a", &[]));
    assert_eq!(post(&replicas[1 - old], &edge).await, 503, "the follower does not decide forwarded reviews");
    replicas[old].election.as_ref().unwrap().release().await;
    eventually("the other replica to decide", || replicas[1 - old].decides()).await;
    assert_eq!(post(&replicas[old], &edge).await, 503, "nor does a replica that released the Lease");
    // Sent by the API server to the released replica: forwarded to the new decider.
    eventually("the released replica to follow", || replicas[old].follows()).await;
    let verdict = replicas[old].review(&edge).await;
    assert!(verdict.response.allowed, "{:?}", verdict.response.message);
    assert_eq!(replicas[old].forwarded(), 1);
}

/// The decider holds the Lease but its port is closed (a network partition between pods):
/// the others deny edge-adding admissions, saying the decider did not answer; everything else
/// goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_decider_denies_only_edge_adding_admissions() {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let (_fake, replicas, _) = cluster(&names, 2, Duration::ZERO, 5).await;
    let decider = replicas.iter().find(|r| r.decides()).unwrap();
    let follower = replicas.iter().find(|r| !r.decides()).unwrap();
    decider.stop.send_replace(true);
    let Some(Role::Following { address, .. }) = follower.election.as_ref().map(|e| e.role()) else {
        panic!("the other replica follows the decider")
    };
    eventually("the decider's port to close", || std::net::TcpStream::connect(&address).is_err()).await;
    let verdict = follower.review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(!verdict.response.allowed);
    let message = verdict.response.message.unwrap();
    assert!(message.contains("the fluxgate replica that decides such changes did not answer"), "{message}");
    assert!(message.contains("replica-") && message.contains("retry"), "{message}");
    everything_else_goes_through(follower).await;
    let text = metrics(&follower.webhook).await;
    assert!(text.contains("fluxgate_coordination_failures_total{reason=\"unreachable\"} 1"), "{text}");
}

/// The decider admits `a -> b`, which is stored but which no watch has delivered, and then
/// stops deciding: released on shutdown, or gone without a word (its Lease expires). The
/// replica taking over catches up with the API server before it decides, so `b -> a` is
/// denied although its own watch never showed `a -> b`.
async fn a_new_decider_sees_what_the_old_one_admitted(released: bool) {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    // Released, the Lease is taken at the next look: with a Lease of a minute, a takeover
    // within the test's waits shows that it was not by expiry.
    let timing = if released { Timing { lease: Duration::from_secs(60), ..TIMING } } else { TIMING };
    let (fake, replicas, _) = cluster_with(&names, 2, Duration::ZERO, 9, timing).await;
    let old = replicas.iter().position(|r| r.decides()).unwrap();
    let new = &replicas[1 - old];
    let a_to_b = ks(F, "a", &["b"]);
    assert!(replicas[old].review(&update(&a_to_b, &ks(F, "a", &[]))).await.response.allowed);
    fake.store_unwatched(a_to_b);
    let election = replicas[old].election.clone().unwrap();
    if released {
        // As on SIGTERM: released while its election loop still runs, and with Lease writes
        // slow enough that a renewal is often on its way when the release begins.
        fake.set_lease_write_latency(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        election.release().await;
    } else {
        for t in &replicas[old].tasks {
            t.abort();
        }
    }
    eventually("the other replica to decide", || new.decides()).await;
    let delivered = new
        .cache
        .lock()
        .delivered(fluxgate::object::FluxKind::Kustomization, &fluxgate::object::ObjectKey::new(F, "a"))
        .cloned();
    assert!(delivered.is_some_and(|a| a.depends_on.is_empty()), "the new decider's watch never showed a -> b");
    let verdict = new.review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(!verdict.response.allowed, "b -> a closes a cycle with the old decider's admission");
    assert!(verdict.response.message.unwrap().contains("cycle"));
    if released {
        // The old replica's loop went on running, and never took the Lease back.
        tokio::time::sleep(TIMING.retry * 5).await;
        assert!(!replicas[old].decides());
        let role = replicas[old].election.as_ref().unwrap().role();
        assert!(
            matches!(&role, Role::Following { holder, .. } if *holder == format!("replica-{}", 1 - old)),
            "{role:?}"
        );
        assert_eq!(fake.lease_holder(NS, DECIDER_LEASE).as_deref(), Some(format!("replica-{}", 1 - old).as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_that_shuts_down_hands_over_without_losing_an_admission() {
    a_new_decider_sees_what_the_old_one_admitted(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_that_disappears_is_replaced_without_losing_an_admission() {
    a_new_decider_sees_what_the_old_one_admitted(false).await;
}

/// A forwarded review is only as trustworthy as any other: a forged review sent straight to
/// the decider (never stored) must not make it deny a real change, forwarded by another
/// replica, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_admission_does_not_deny_a_real_change_forwarded_by_another_replica() {
    if !coordination_on() {
        return;
    }
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let (_fake, replicas, _) = cluster(&names, 2, Duration::ZERO, 3).await;
    let decider = replicas.iter().find(|r| r.decides()).unwrap();
    let follower = replicas.iter().find(|r| !r.decides()).unwrap();
    // Sent straight to the decider, never to the API server: admitted, never stored.
    let forged = decider.review(&update(&ks(F, "a", &["b"]), &ks(F, "a", &[]))).await;
    assert!(forged.response.allowed);
    // The real change closes a cycle with the forged one only: the decider confirms it with
    // the API server, finds it is not stored, and admits.
    let real = follower.review(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await;
    assert!(real.response.allowed, "{:?}", real.response.message);
    let text = metrics(&decider.webhook).await;
    assert!(text.contains("fluxgate_pending_admissions_dropped_total{reason=\"unstored\"} 1"), "{text}");
    assert!(text.contains("fluxgate_coordination_decider 1"), "{text}");
}

/// The built binary, twice, as `deploy/` runs it: one takes the decider Lease, the other
/// forwards to it over TLS, and two halves of a cycle posted to the two at the same moment
/// are never both admitted.
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
    let holder = fake.lease_holder(NS, DECIDER_LEASE).expect("a replica holds the decider Lease");
    let (d, f) = if holder == "fluxgate-0" { (0, 1) } else { (1, 0) };
    let (_, report) = admin_get(servers[d].admin, "/report").await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["coordination"]["decider"], holder.as_str(), "{report}");
    assert_eq!(report["coordination"]["replicas_recently_deciding"], 2, "{report}");
    let (_, page) = admin_get(servers[f].admin, "/").await;
    let says = format!("{holder} decides, this one fluxgate-{f} forwards to it");
    assert!(page.contains(&says), "the status page says who decides: {says}");
    let (_, metrics) = admin_get(servers[f].admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_coordination_forwarded_total 10"), "{metrics}");
}

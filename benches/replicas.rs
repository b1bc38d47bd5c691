//! What deciding across replicas costs: a bulk bootstrap as kustomize-controller does it (400
//! edge-adding CREATEs from 4 concurrent clients), through two fluxgate replicas against the fake
//! API server of the tests, whose Lease writes take 2 ms each, one at a time, as etcd serialises
//! the writes of one key. Storing each object also takes 2 ms (different keys, side by side).
//!
//! Three runs of the same bootstrap: no webhook at all (the API server only stores), two
//! replicas deciding on their own caches (no coordination: cycles can slip through), and two
//! replicas of which one decides edge-adding admissions, elected on the fake's Lease, the other
//! forwarding them to it over TLS on loopback. The API server's call to a replica is made
//! in-process (its TLS and HTTP cost every run with a webhook alike and are measured by
//! `benches/load.rs`); the forwarding between replicas is real HTTP/2 over TLS, since only the
//! coordinated run pays for it.
//!
//! `cargo bench --bench replicas` (`-- --objects N --clients N --lag-ms N`). Prints, asserting
//! nothing: total time and its ratio to no webhook (target: at most 1.5x), request latency
//! p50/p99 and throughput, how many reviews were forwarded, and the Lease writes of the election.

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::coordination::decider::{Election, Role, Stats, Timing};
use fluxgate::policy::Policy;
use fluxgate::server::peer::Peers;
use fluxgate::server::tls::ReloadingCert;
use fluxgate::server::{self, App, Limits};
use serde_json::{Value, json};

const NS: &str = "fluxgate-system";
const STORE: Duration = Duration::from_millis(2);

/// App `i` of the bootstrap: owned by a parent Kustomization (as Flux applies it), depending on
/// the app before it and the one four before it (created by another client, maybe not yet).
fn app(i: usize) -> Value {
    let deps: Vec<Value> = [i.checked_sub(1), i.checked_sub(4)]
        .into_iter()
        .flatten()
        .map(|d| json!({ "name": format!("app-{d}") }))
        .collect();
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": { "name": format!("app-{i}"), "namespace": "apps", "uid": format!("uid-{i}"),
                      "labels": { "kustomize.toolkit.fluxcd.io/name": "apps",
                                  "kustomize.toolkit.fluxcd.io/namespace": "flux-system" } },
        "spec": { "interval": "10m", "prune": true, "path": format!("./apps/{i}"),
                  "sourceRef": { "kind": "GitRepository", "name": "flux-system", "namespace": "flux-system" },
                  "dependsOn": deps }
    })
}

fn create_review(object: &Value, i: usize) -> AdmissionReview {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("3f6c2a5e-0000-4000-8000-{i:012}"),
            "kind": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization" },
            "resource": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "resource": "kustomizations" },
            "name": object["metadata"]["name"], "namespace": "apps", "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:flux-system:kustomize-controller" },
            "object": object, "oldObject": null, "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kustomize-controller" }
        }
    });
    AdmissionReview::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoWebhook,
    Alone,
    Coordinated,
    /// Coordinated, and the decider shuts down half-way (a rollout): it releases the Lease, the
    /// other replica takes over, catches up and decides the rest.
    Handover,
}

struct Run {
    took: Duration,
    latencies: Vec<Duration>,
    denied: usize,
    forwarded: u64,
    decided: u64,
    lease_writes: usize,
}

async fn bootstrap(mode: Mode, objects: usize, clients: usize, lag: Duration) -> Run {
    let fake = fake_api::FakeApi::start(false).await;
    fake.set_lease_write_latency(STORE);
    fake.set_watch_lag(lag, 42);
    let dir = tempfile::tempdir().unwrap();
    let bundle = fluxgate::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
    let written = fluxgate::certs::write(&bundle, dir.path()).unwrap();
    let cert = ReloadingCert::load(&written.cert, &written.key).unwrap();
    let mut replicas = Vec::new();
    let mut elections = Vec::new();
    let mut tasks = Vec::new();
    if mode != Mode::NoWebhook {
        for r in 0..2 {
            let cache = Arc::new(Cache::new());
            let served = Arc::new(watch::Served::default());
            tasks.push(tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), WatchOptions::default())));
            let mut webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
                .with_lookup(watch::Lookup::new(fake.client(), served));
            if matches!(mode, Mode::Coordinated | Mode::Handover) {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap().to_string();
                let name = format!("replica-{r}");
                let election = Arc::new(Election::new(fake.client(), NS, &name, &address, Timing::default()));
                let forward = Arc::new(Peers::new(cert.clone(), &name));
                let (taking_part, task) = webhook.taking_part(election.clone(), forward);
                webhook = taking_part;
                tasks.push(task);
                let (stop, stop_rx) = tokio::sync::watch::channel(false);
                std::mem::forget(stop);
                let router = server::webhook_router(App::new(webhook.clone()));
                tasks.push(tokio::spawn(server::serve_tls(
                    listener,
                    Arc::new(cert.server_config()),
                    router,
                    stop_rx,
                    Limits::default(),
                )));
                elections.push(election);
            }
            while !cache.is_ready() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            replicas.push(webhook);
        }
        // One decides, the other follows: the bootstrap starts on a settled election.
        while matches!(mode, Mode::Coordinated | Mode::Handover)
            && !(elections.iter().any(|e| e.role().decides_now())
                && elections.iter().all(|e| e.role().decides_now() || matches!(e.role(), Role::Following { .. })))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (lease_writes_before, _) = fake.lease_writes();
    let replicas = Arc::new(replicas);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if mode == Mode::Handover {
        let (done, elections) = (done.clone(), elections.clone());
        tokio::spawn(async move {
            while done.load(std::sync::atomic::Ordering::Relaxed) < objects / 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if let Some(decider) = elections.iter().find(|e| e.role().decides_now()) {
                decider.release().await;
            }
        });
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..clients {
        let (fake, replicas, done) = (fake.clone(), replicas.clone(), done.clone());
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut denied = 0;
            for i in (c..objects).step_by(clients) {
                let object = app(i);
                if !replicas.is_empty() {
                    let review = create_review(&object, i);
                    let asked = Instant::now();
                    let verdict = replicas[i % replicas.len()].review(&review.request, asked).await.unwrap();
                    latencies.push(asked.elapsed());
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !verdict.response.allowed {
                        if denied == 0 {
                            eprintln!("first denial: {:?}", verdict.response.message);
                        }
                        denied += 1;
                        continue;
                    }
                }
                tokio::time::sleep(STORE).await;
                fake.apply(object);
            }
            (latencies, denied)
        }));
    }
    let mut latencies = Vec::new();
    let mut denied = 0;
    for s in senders {
        let (l, d) = s.await.unwrap();
        latencies.extend(l);
        denied += d;
    }
    let took = started.elapsed();
    let lease_writes = fake.lease_writes().0 - lease_writes_before;
    let forwarded = elections.iter().map(|e| Stats::get(&e.stats.forwarded)).sum();
    let decided = elections.iter().map(|e| Stats::get(&e.stats.decided)).sum();
    for t in tasks {
        t.abort();
    }
    Run { took, latencies, denied, forwarded, decided, lease_writes }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut objects, mut clients, mut lag_ms) = (400, 4, 0u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--objects" => objects = args.next().and_then(|s| s.parse().ok()).expect("--objects N"),
            "--clients" => clients = args.next().and_then(|s| s.parse().ok()).expect("--clients N"),
            "--lag-ms" => lag_ms = args.next().and_then(|s| s.parse().ok()).expect("--lag-ms N"),
            _ => {}
        }
    }
    let lag = Duration::from_millis(lag_ms);
    println!(
        "bootstrap: {objects} edge-adding CREATEs from {clients} clients, 2 replicas, Lease writes 2 ms serialised, \
         object writes 2 ms, watch lag up to {lag_ms} ms"
    );
    let base = bootstrap(Mode::NoWebhook, objects, clients, lag).await;
    println!("  no webhook:             {:>8.1?}", base.took);
    for (mode, name) in [
        (Mode::Alone, "replicas, each alone"),
        (Mode::Coordinated, "replicas, one decides"),
        (Mode::Handover, "decider hands over"),
    ] {
        let mut run = bootstrap(mode, objects, clients, lag).await;
        run.latencies.sort();
        let throughput = run.latencies.len() as f64 / run.took.as_secs_f64();
        println!(
            "  {name:<23} {:>8.1?} ({:.2}x no webhook); webhook p50 {:.2?} p99 {:.2?}; {throughput:.0} requests/s; \
             {} denied",
            run.took,
            run.took.as_secs_f64() / base.took.as_secs_f64(),
            quantile(&run.latencies, 0.5),
            quantile(&run.latencies, 0.99),
            run.denied,
        );
        if mode == Mode::Handover {
            println!(
                "    (released after {} of {objects}) slowest request {:.2?}",
                objects / 2,
                run.latencies.last().copied().unwrap_or_default()
            );
        }
        if mode == Mode::Coordinated {
            println!(
                "    {} forwarded to the decider, {} decided by it; {} Lease writes during the bootstrap (renewals)",
                run.forwarded, run.decided, run.lease_writes
            );
        }
    }
}

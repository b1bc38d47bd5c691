//! What the shared record of decisions costs: a bulk bootstrap as kustomize-controller does it
//! (400 edge-adding CREATEs from 4 concurrent clients), through two fluxgate replicas against the
//! fake API server of the tests, whose Lease writes take 2 ms each, one at a time, as etcd
//! serialises the writes of one key. Storing each object also takes 2 ms (different keys, side
//! by side).
//!
//! Three runs of the same bootstrap: no webhook at all (the API server only stores), two
//! replicas deciding on their own caches (no record), and two replicas coordinating through
//! the record. The replicas are this process's `Webhook`s with their own watch caches and
//! Lease clients, called in-process: TLS and HTTP cost every run with a webhook alike and are
//! measured by `benches/load.rs`.
//!
//! `cargo bench --bench replicas` (`-- --objects N --clients N --lag-ms N --linger-us N`). Prints, asserting
//! nothing: total time and its ratio to no webhook (target: at most 1.5x), request latency
//! p50/p99 and throughput, Lease writes per admission (batching), conflicts, and the largest
//! record seen.

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Coordinator, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::coordination::{LeaseStore, RECORD_NAME, Record, Stats};
use fluxgate::policy::Policy;
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
}

struct Run {
    took: Duration,
    latencies: Vec<Duration>,
    denied: usize,
    writes: u64,
    recorded: u64,
    conflicts: u64,
    largest_record: usize,
}

async fn bootstrap(mode: Mode, objects: usize, clients: usize, lag: Duration, linger: Option<Duration>) -> Run {
    let fake = fake_api::FakeApi::start(false).await;
    fake.set_lease_write_latency(STORE);
    fake.set_watch_lag(lag, 42);
    let mut replicas = Vec::new();
    let mut tasks = Vec::new();
    if mode != Mode::NoWebhook {
        for r in 0..2 {
            let cache = Arc::new(Cache::new());
            let served = Arc::new(watch::Served::default());
            tasks.push(tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), WatchOptions::default())));
            let mut webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()))
                .with_lookup(watch::Lookup::new(fake.client(), served));
            if mode == Mode::Coordinated {
                let store = Arc::new(LeaseStore::new(fake.client(), NS));
                let mut coordinator = Coordinator::new(store, format!("replica-{r}"));
                if let Some(linger) = linger {
                    coordinator.linger = linger;
                }
                coordinator.join().await.unwrap();
                webhook = webhook.with_coordinator(Arc::new(coordinator));
            }
            while !cache.is_ready() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            replicas.push(webhook);
        }
    }
    let replicas = Arc::new(replicas);
    // The largest record seen, sampled while the bootstrap runs.
    let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (fake, largest) = (fake.clone(), largest.clone());
        tokio::spawn(async move {
            loop {
                largest.fetch_max(record_entries(&fake), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..clients {
        let (fake, replicas) = (fake.clone(), replicas.clone());
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
    sampler.abort();
    let largest_record = largest.load(std::sync::atomic::Ordering::Relaxed).max(record_entries(&fake));
    let (mut writes, mut recorded, mut conflicts) = (0, 0, 0);
    for w in replicas.iter() {
        if let Some(c) = &w.coordinator {
            writes += Stats::get(&c.stats.writes);
            recorded += Stats::get(&c.stats.recorded);
            conflicts += Stats::get(&c.stats.conflicts);
        }
    }
    for t in tasks {
        t.abort();
    }
    Run { took, latencies, denied, writes, recorded, conflicts, largest_record }
}

/// Entries of the record as the fake API server stores it.
fn record_entries(fake: &fake_api::FakeApi) -> usize {
    let Some(lease) = fake.lease(NS, RECORD_NAME) else { return 0 };
    let annotations: std::collections::BTreeMap<String, String> =
        serde_json::from_value(lease["metadata"]["annotations"].clone()).unwrap_or_default();
    Record::from_annotations(&annotations).entries.len()
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
    let (mut objects, mut clients, mut lag_ms, mut linger) = (400, 4, 0u64, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--objects" => objects = args.next().and_then(|s| s.parse().ok()).expect("--objects N"),
            "--clients" => clients = args.next().and_then(|s| s.parse().ok()).expect("--clients N"),
            "--lag-ms" => lag_ms = args.next().and_then(|s| s.parse().ok()).expect("--lag-ms N"),
            "--linger-us" => {
                linger = Some(Duration::from_micros(args.next().and_then(|s| s.parse().ok()).expect("--linger-us N")))
            }
            _ => {}
        }
    }
    let lag = Duration::from_millis(lag_ms);
    println!(
        "bootstrap: {objects} edge-adding CREATEs from {clients} clients, 2 replicas, Lease writes 2 ms serialised, \
         object writes 2 ms, watch lag up to {lag_ms} ms"
    );
    let base = bootstrap(Mode::NoWebhook, objects, clients, lag, linger).await;
    println!("  no webhook:             {:>8.1?}", base.took);
    for (mode, name) in [(Mode::Alone, "replicas, no record"), (Mode::Coordinated, "replicas, shared record")] {
        let mut run = bootstrap(mode, objects, clients, lag, linger).await;
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
        if mode == Mode::Coordinated {
            println!(
                "    Lease writes {} for {} admissions ({:.2} per admission), conflicts {}, largest record {} entries",
                run.writes,
                run.recorded,
                run.writes as f64 / run.recorded.max(1) as f64,
                run.conflicts,
                run.largest_record
            );
        }
    }
}

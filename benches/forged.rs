//! Forged AdmissionReviews against the bounds of what fluxgate remembers.
//!
//! `cargo bench --bench forged` (`-- --requests N --namespaces N` to change the flood). Prints,
//! asserting nothing:
//!
//! 1. How long after fluxgate admits a change the fake API server of the tests holds it (a GET
//!    sees it) and the watch delivers it, when the change is stored right after the admission as
//!    the API server does: the figures behind `STORE_WITHIN`.
//! 2. Resident memory of the built `fluxgate serve`, in cluster mode on the fake API server
//!    with 1,000 Kustomizations and the allocator settings of `deploy/`, before and after a
//!    flood of forged non-dry-run CREATEs, each a new name (in one of 1,000 namespaces) with five
//!    `dependsOn` targets that exist nowhere (owner labels make those warnings, so every one is
//!    admitted and remembered), posted straight to `/validate` over TLS; with the
//!    pending-admission metrics.
//! 3. For comparison, what the same objects cost when nothing bounds the memory: an overlay
//!    without limits in this process, filled with them.

mod common;
#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/process.rs"]
mod process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::watch::{self, WatchOptions};
use fluxgate::cache::{Cache, OverlayLimits, State};
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use process::{Client, Http, ServeProcess, admin_get, write_certs};
use serde_json::{Value, json};

const F: &str = "flux-system";

/// A forged CREATE of a new Kustomization `forged-<i>`, as a review straight to the port.
/// Spread over `namespaces` namespaces (1,000 by default): a dangling target's hint looks for a
/// near name in its namespace, and with every forged object in one namespace the flood measures
/// that search (about 100 requests a second at 5,000 namespace-mates) more than memory.
fn forged_create(i: usize, namespaces: usize) -> Value {
    let ns = format!("forged-{:03}", i % namespaces);
    let deps: Vec<(String, String)> = (0..5).map(|d| (ns.clone(), format!("nowhere-{i}-{d}"))).collect();
    let object = common::kustomization(&ns, &format!("forged-{i:06}"), &deps, Some((F, "tenant-00000")));
    review(&object, "CREATE", None, i)
}

fn review(object: &Value, operation: &str, old: Option<&Value>, i: usize) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "kind": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization" },
            "resource": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "resource": "kustomizations" },
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:default:nobody" },
            "object": object,
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
        }
    })
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("median {:.2?}, p99 {:.2?}, max {:.2?}", at(0.5), at(0.99), v[v.len() - 1])
}

/// Part 1: admission answered -> stored -> visible to a GET, and delivered by the watch.
async fn store_and_delivery(samples: usize) {
    let fake = fake_api::FakeApi::start(true).await;
    let cache = Arc::new(Cache::new());
    let served = Arc::new(watch::Served::default());
    let _watch = tokio::spawn(watch::run(fake.client(), cache.clone(), served.clone(), WatchOptions::default()));
    let lookup = watch::Lookup::new(fake.client(), served);
    let webhook = Webhook::new(cache.clone(), Arc::new(Policy::default())).with_lookup(lookup.clone());
    while !(cache.is_ready() && fake.open_watches() == 2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut to_get, mut to_watch) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let object = common::kustomization(F, &format!("real-{i}"), &[], None);
        let parsed = AdmissionReview::from_slice(&serde_json::to_vec(&review(&object, "CREATE", None, i)).unwrap());
        let verdict = webhook.review(&parsed.unwrap().request, Instant::now()).await.unwrap();
        assert!(verdict.response.allowed);
        let answered = Instant::now();
        // The API server writes the object once every webhook has answered.
        fake.apply(object);
        let key = ObjectKey::new(F, format!("real-{i}"));
        while lookup.get(FluxKind::Kustomization, &key).await.unwrap().is_none() {}
        to_get.push(answered.elapsed());
        while cache.lock().pending(FluxKind::Kustomization, &key).is_some() {
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
        to_watch.push(answered.elapsed());
    }
    println!("fake API server, {samples} admissions stored right after their answer:");
    println!("  answer -> a GET sees it:           {}", quantiles(to_get));
    println!("  answer -> the watch delivers it:   {}", quantiles(to_watch));
}

fn pending_metrics(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("fluxgate_pending_admission"))
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Part 2: the built binary under a flood of forged CREATEs.
async fn flood(requests: usize, namespaces: usize) {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_api::FakeApi::start(true).await;
    for o in common::fleet(1_000) {
        fake.apply(o);
    }
    std::fs::create_dir_all(dir.path().join("kube")).unwrap();
    let kubeconfig = fake.kubeconfig(&dir.path().join("kube"));
    let (ca, cert, key) = write_certs(&dir.path().join("certs"));
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, common::shipped_policy()).unwrap();
    let tunables = common::deployed_glibc_tunables();
    let server = ServeProcess::start_with_env(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "warn,fluxgate::cli=info"),
            ("GLIBC_TUNABLES", tunables.as_str()),
        ],
    );
    while admin_get(server.admin, "/readyz").await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = Client::new(&ca);
    // Warm up the connections and the first audit before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.child.id();
    let before = common::status_bytes(pid, "VmRSS:");

    const CONNECTIONS: usize = 4;
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..CONNECTIONS {
        let client = client.clone();
        let addr = server.webhook;
        senders.push(tokio::spawn(async move {
            let mut conn = client.connect(addr, Http::Two).await;
            let mut admitted = 0usize;
            for i in (c..requests).step_by(CONNECTIONS) {
                let (status, body) = conn.post("/validate", &forged_create(i, namespaces)).await;
                assert_eq!(status, 200, "{body}");
                admitted += usize::from(body["response"]["allowed"] == true);
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for s in senders {
        admitted += s.await.unwrap();
    }
    let took = started.elapsed();
    let after = common::status_bytes(pid, "VmRSS:");
    let peak = common::status_bytes(pid, "VmHWM:");
    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    println!(
        "fluxgate serve (cluster mode, 1,000 Kustomizations, as deployed), {requests} forged CREATEs of new names \
         in {namespaces} namespaces in {took:.1?}, {admitted} admitted:"
    );
    println!(
        "  resident before {:.1} MiB, after {:.1} MiB (+{:.1} MiB), peak {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after as f64 - before as f64) / 1048576.0,
        peak as f64 / 1048576.0
    );
    println!("{}", pending_metrics(&metrics));
}

/// Part 3: the same objects in an overlay that nothing bounds, in this process.
fn unbounded(requests: usize, namespaces: usize) {
    let unbounded = OverlayLimits { max_entries: usize::MAX, max_bytes: usize::MAX };
    let objects: Vec<Arc<FluxObject>> = (0..requests)
        .map(|i| {
            let object = &forged_create(i, namespaces)["request"]["object"];
            let ns = object["metadata"]["namespace"].as_str().unwrap();
            Arc::new(FluxObject::from_value(FluxKind::Kustomization, object, ns, "").unwrap())
        })
        .collect();
    let before = common::status_bytes(std::process::id(), "VmRSS:");
    let mut state = State::with_limits(unbounded);
    let now = Instant::now();
    for object in objects {
        state.admit(object, None, now);
    }
    let after = common::status_bytes(std::process::id(), "VmRSS:");
    println!(
        "without a bound (in process): {} remembered, estimated {:.1} MiB, resident +{:.1} MiB",
        state.pending_admissions(),
        state.pending_bytes() as f64 / 1048576.0,
        (after as f64 - before as f64) / 1048576.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut requests, mut namespaces) = (100_000, 1_000);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => requests = args.next().and_then(|s| s.parse().ok()).expect("--requests N"),
            "--namespaces" => namespaces = args.next().and_then(|s| s.parse().ok()).expect("--namespaces N"),
            _ => {}
        }
    }
    store_and_delivery(200).await;
    flood(requests, namespaces).await;
    unbounded(requests, namespaces);
}

//! Benchmark: admission latency while status events stream in. Run with
//! `cargo bench --bench status`. Prints percentiles; asserts nothing.
//!
//! A synthetic cluster of 10,005 Kustomizations; admission decisions (dry-run) are timed back to
//! back for a few seconds, first on a quiet cache, then while another thread delivers 100
//! status-only watch events per second (what `cache/watch.rs` does for a MODIFIED event whose spec
//! did not change: record the status, offer the object to the cache) and builds the status report
//! every 5 seconds (the page's refresh; it never takes the cache lock). It also times one status
//! report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use fluxgate::status::ObjectStatus;
use serde_json::{Value, json};

const TENANTS: usize = 200;
const APPS: usize = 50;

fn cluster() -> (Arc<Cache>, Vec<Arc<FluxObject>>) {
    let cache = Arc::new(Cache::new());
    let mut objects = Vec::new();
    objects.push(Arc::new(FluxObject::new(FluxKind::Kustomization, ObjectKey::new("flux-system", "crds"), vec![])));
    for t in 0..TENANTS {
        let ns = format!("tenant-{t:03}");
        let hub = ObjectKey::new(&ns, "hub");
        objects.push(Arc::new(FluxObject::new(
            FluxKind::Kustomization,
            hub.clone(),
            vec![ObjectKey::new("flux-system", "crds")],
        )));
        for a in 0..APPS {
            let mut deps = vec![hub.clone()];
            if a > 0 {
                deps.push(ObjectKey::new(&ns, format!("app-{:03}", a - 1)));
            }
            objects.push(Arc::new(FluxObject::new(
                FluxKind::Kustomization,
                ObjectKey::new(&ns, format!("app-{a:03}")),
                deps,
            )));
        }
    }
    let status = fluxgate::status::ObjectStatus::default();
    cache.status().replace_all(FluxKind::Kustomization, objects.iter().map(|o| (o.clone(), status.clone())));
    let mut state = cache.lock();
    state.replace_all(FluxKind::Kustomization, objects.iter().map(|o| (o.clone(), None)).collect());
    state.mark_synced(FluxKind::HelmRelease);
    drop(state);
    (cache, objects)
}

/// A watched object with a Ready condition, as the API server sends it.
fn watched(object: &FluxObject, ready: bool, n: u64) -> fluxgate::object::slim::SlimObject {
    let deps: Vec<Value> =
        object.depends_on.iter().map(|d| json!({"name": d.name, "namespace": d.namespace})).collect();
    let (status, reason) = if ready { ("True", "ReconciliationSucceeded") } else { ("False", "DependencyNotReady") };
    serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": object.key.name, "namespace": object.key.namespace, "generation": 1,
                     "resourceVersion": n.to_string()},
        "spec": {"interval": "10m", "dependsOn": deps},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": status, "reason": reason,
                   "message": format!("event {n}"), "lastTransitionTime": "2026-11-26T10:00:00Z"}]}
    }))
    .unwrap()
}

fn review() -> AdmissionReview {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization"},
        "name": "new-app", "namespace": "tenant-007", "operation": "CREATE", "dryRun": true,
        "object": {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                   "metadata": {"name": "new-app", "namespace": "tenant-007"},
                   "spec": {"interval": "10m", "dependsOn": [{"name": "app-049"}, {"name": "hub"}]}}}});
    AdmissionReview::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "  {label:<48} n={:>7}  p50 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}",
        samples.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        samples[samples.len() - 1]
    );
}

fn decisions(webhook: &Webhook, request: &AdmissionReview, for_: Duration) -> Vec<Duration> {
    let mut samples = Vec::new();
    let end = Instant::now() + for_;
    while Instant::now() < end {
        let start = Instant::now();
        let verdict = webhook.validate(&request.request, Instant::now()).unwrap();
        samples.push(start.elapsed());
        assert!(verdict.response.allowed);
        // Leave the other thread room, as requests arriving over the network would.
        std::thread::sleep(Duration::from_micros(200));
    }
    samples
}

fn main() {
    let (cache, objects) = cluster();
    let webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()));
    let request = review();
    println!("admission decisions on {} Kustomizations (dry-run create with two dependsOn):", objects.len());
    percentiles("quiet", decisions(&webhook, &request, Duration::from_secs(4)));

    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (cache, objects, stop) = (cache.clone(), objects.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut reports = Vec::new();
            let mut next_report = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for _ in 0..10 {
                    n += 1;
                    let object = &objects[(n as usize * 7919) % objects.len()];
                    let event = watched(object, !n.is_multiple_of(3), n);
                    // What watch.rs does for a MODIFIED event.
                    let (parsed, version) =
                        fluxgate::cache::watch::read_object(FluxKind::Kustomization, &event.0).unwrap();
                    let parsed = Arc::new(parsed);
                    cache.status().record(parsed.clone(), ObjectStatus::from_value(&event.0));
                    cache.lock().apply(parsed, version.as_deref());
                }
                if Instant::now() >= next_report {
                    let start = Instant::now();
                    std::hint::black_box(cache.status_report());
                    reports.push(start.elapsed());
                    next_report += Duration::from_secs(5);
                }
                // 10 events every 100 ms: 100 per second.
                std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
            }
            (n, reports)
        })
    };
    let busy = decisions(&webhook, &request, Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let (events, reports) = streamer.join().unwrap();
    percentiles("while 100 status events/s stream in", busy);
    println!("  ({events} status events delivered; status report built {} times)", reports.len());

    let mut report = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        std::hint::black_box(cache.status_report());
        report.push(start.elapsed());
    }
    percentiles("status report (no cache lock)", report);
}

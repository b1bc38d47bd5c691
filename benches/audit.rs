//! Benchmark: admission latency while the periodic audit runs. 10,000 Kustomizations depend on
//! one deleted object (the case where hints once grew with the square of the dependents, under
//! the admission lock); admission decisions are timed with no audit, then while audits run back
//! to back on another thread. Run with `cargo bench --bench audit`. Prints the p50/p99 of both
//! phases and the audit's own time, and exits non-zero when the p99 under audit is more than
//! twice the p99 without.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use serde_json::json;

const DEPENDENTS: usize = 10_000;
const REQUESTS: usize = 20_000;

fn cluster() -> Arc<Cache> {
    let cache = Arc::new(Cache::new());
    let list = (0..DEPENDENTS)
        .map(|i| {
            let key = ObjectKey::new("apps", format!("app-{i:05}"));
            let object = FluxObject::new(FluxKind::Kustomization, key, vec![ObjectKey::new("apps", "deleted-base")]);
            (Arc::new(object), None)
        })
        .collect();
    let mut state = cache.lock();
    state.replace_all(FluxKind::Kustomization, list);
    state.mark_synced(FluxKind::HelmRelease);
    drop(state);
    cache
}

/// A Flux-style dry-run: a new object depending on an existing one (allowed).
fn request() -> fluxgate::admission::AdmissionRequest {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization"},
        "name": "new-app", "namespace": "apps", "operation": "CREATE", "dryRun": true,
        "object": {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                   "metadata": {"name": "new-app", "namespace": "apps"},
                   "spec": {"interval": "10m", "dependsOn": [{"name": "app-00042"}]}}}});
    AdmissionReview::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap().request
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

/// Times `REQUESTS` decisions, a little apart as real requests come.
fn decisions(webhook: &Webhook) -> Vec<Duration> {
    let req = request();
    (0..REQUESTS)
        .map(|_| {
            let start = Instant::now();
            let verdict = webhook.validate(&req, Instant::now()).unwrap();
            let took = start.elapsed();
            assert!(verdict.response.allowed);
            std::thread::sleep(Duration::from_micros(50));
            took
        })
        .collect()
}

fn main() {
    let cache = cluster();
    let policy = Arc::new(Policy::default());
    let webhook = Webhook::new(cache.clone(), policy.clone());

    let mut quiet = decisions(&webhook);
    let (quiet_p50, quiet_p99) = (percentile(&mut quiet, 0.50), percentile(&mut quiet, 0.99));

    let stop = Arc::new(AtomicBool::new(false));
    let auditor = {
        let (cache, policy, stop) = (cache.clone(), policy.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let report = fluxgate::audit::scan(&cache, &policy);
                times.push(start.elapsed());
                assert_eq!(report.findings.len(), DEPENDENTS, "one dangling finding per dependent");
            }
            times
        })
    };
    let mut busy = decisions(&webhook);
    stop.store(true, Ordering::Relaxed);
    let mut audits = auditor.join().unwrap();
    let (busy_p50, busy_p99) = (percentile(&mut busy, 0.50), percentile(&mut busy, 0.99));
    let audit_median = percentile(&mut audits, 0.50);

    println!("admission on {DEPENDENTS} Kustomizations depending on one deleted object, {REQUESTS} dry-runs each:");
    println!("  without audit: p50 {quiet_p50:>10.2?}  p99 {quiet_p99:>10.2?}");
    println!("  during audits: p50 {busy_p50:>10.2?}  p99 {busy_p99:>10.2?}");
    println!("  audit: {} runs, median {audit_median:.2?} each", audits.len());
    let ratio = busy_p99.as_secs_f64() / quiet_p99.as_secs_f64();
    println!("  p99 ratio {ratio:.2} (limit 2.00)");
    if ratio > 2.0 {
        eprintln!("admission p99 during audits is more than twice the p99 without");
        std::process::exit(1);
    }
}

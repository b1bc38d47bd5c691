//! Resident memory after many denied dry-runs naming distinct large `dependsOn` targets: every
//! evaluation must leave the graph as it found it, names included. A test binary of its own, so
//! that no other test's allocations move the process's resident size.

use std::sync::Arc;
use std::time::Instant;

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use serde_json::json;

/// Resident set size of this process, from `/proc/self/statm` (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A dry-run CREATE of `apps/web-{i}` depending on a 64 KiB name that exists nowhere.
fn dry_run(i: usize) -> Vec<u8> {
    let target = format!("{i:08}-{}", "x".repeat(64 * 1024));
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("u{i}"), "kind": {"group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization"},
        "name": format!("web-{i}"), "namespace": "apps", "operation": "CREATE", "dryRun": true,
        "object": {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                   "metadata": {"name": format!("web-{i}"), "namespace": "apps"},
                   "spec": {"interval": "10m", "dependsOn": [{"name": "base"}, {"name": target}]}}}}))
    .unwrap()
}

#[test]
fn denied_dry_runs_naming_distinct_large_targets_leave_resident_memory_where_it_was() {
    let cache = Arc::new(Cache::new());
    {
        let base = FluxObject::new(FluxKind::Kustomization, ObjectKey::new("apps", "base"), Vec::new());
        let mut state = cache.lock();
        state.replace_all(FluxKind::Kustomization, vec![(Arc::new(base), None)]);
        state.mark_synced(FluxKind::HelmRelease);
    }
    let webhook = Webhook::new(cache.clone(), Arc::new(Policy::default()));
    let decide = |i: usize| {
        let request = AdmissionReview::from_slice(&dry_run(i)).unwrap().request;
        let verdict = webhook.validate(&request, Instant::now()).unwrap();
        assert!(!verdict.response.allowed, "the target does not exist");
    };
    // Warm-up: the allocator reaches the working set of one request.
    for i in 0..50 {
        decide(i);
    }
    let nodes = cache.lock().graphs().get(FluxKind::Kustomization).node_count();
    let before = rss_bytes();
    for i in 50..1050 {
        decide(i);
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "resident {} KiB before, {} KiB after 1,000 dry-runs (+{} KiB)",
        before / 1024,
        after / 1024,
        grown / 1024
    );
    // Without freeing, each dry-run would keep three copies of its 64 KiB name: about 190 MiB.
    assert!(grown <= 5 * 1024 * 1024, "resident memory grew by {} KiB", grown / 1024);
    assert_eq!(cache.lock().graphs().get(FluxKind::Kustomization).node_count(), nodes, "no node was left behind");
}

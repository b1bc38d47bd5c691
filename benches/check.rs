//! Benchmarks: `fluxgate check` on real repositories, and admission decisions on a large
//! synthetic cluster. Run with `cargo bench --bench check` (optionally `-- PATH...` to time
//! other checkouts). Prints medians; asserts nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use serde_json::{Value, json};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(f());
        samples.push(start.elapsed());
    }
    let min = *samples.iter().min().unwrap();
    (median(samples), min, last.unwrap())
}

fn bench_check(paths: Vec<PathBuf>) {
    println!("fluxgate check (load, resolve namespaces, audit), 10 runs each:");
    println!("{:<45} {:>8} {:>9} {:>12} {:>12}", "repository", "objects", "findings", "median", "min");
    for path in paths {
        let policy = Policy::default();
        let (med, min, out) = time(10, || fluxgate::check::check_paths(std::slice::from_ref(&path), &policy));
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        println!("{name:<45} {:>8} {:>9} {:>12.2?} {:>12.2?}", out.objects, out.findings.len(), med, min);
    }
}

fn review(name: &str, deps: &[String], old_deps: Option<&[String]>, dry_run: bool) -> Vec<u8> {
    let obj = |deps: &[String]| -> Value {
        let deps: Vec<Value> = deps
            .iter()
            .map(|d| {
                let (ns, n) = d.split_once('/').unwrap();
                json!({"name": n, "namespace": ns})
            })
            .collect();
        let (ns, n) = name.split_once('/').unwrap();
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
               "metadata": {"name": n, "namespace": ns}, "spec": {"interval": "10m", "dependsOn": deps}})
    };
    let (ns, n) = name.split_once('/').unwrap();
    let op = if old_deps.is_some() { "UPDATE" } else { "CREATE" };
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization"},
        "name": n, "namespace": ns, "operation": op, "dryRun": dry_run,
        "object": obj(deps), "oldObject": old_deps.map(obj)}}))
    .unwrap()
}

/// A cluster shaped like the real ones, scaled up: `namespaces` tenants of `per_ns` apps, each
/// app depending on a tenant hub and on 0-2 earlier apps; hubs depend on a shared platform chain.
fn synthetic(namespaces: usize, per_ns: usize) -> (Arc<Cache>, Vec<String>) {
    let cache = Arc::new(Cache::new());
    let mut keys = Vec::new();
    let mut objects = Vec::new();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let platform = ["crds", "operators", "storage", "networking", "observability"];
    for (i, p) in platform.iter().enumerate() {
        let deps = if i == 0 { vec![] } else { vec![ObjectKey::new("flux-system", platform[i - 1])] };
        objects.push((ObjectKey::new("flux-system", *p), deps));
    }
    for t in 0..namespaces {
        let ns = format!("tenant-{t:03}");
        objects.push((ObjectKey::new(&ns, "hub"), vec![ObjectKey::new("flux-system", "observability")]));
        for a in 0..per_ns {
            let mut deps = vec![ObjectKey::new(&ns, "hub")];
            for _ in 0..rand(3) {
                if a > 0 {
                    deps.push(ObjectKey::new(&ns, format!("app-{:03}", rand(a))));
                }
            }
            let key = ObjectKey::new(&ns, format!("app-{a:03}"));
            keys.push(key.to_string());
            objects.push((key, deps));
        }
    }
    let list = objects
        .into_iter()
        .map(|(key, depends_on)| (Arc::new(FluxObject::new(FluxKind::Kustomization, key, depends_on)), None))
        .collect();
    let mut state = cache.lock();
    state.replace_all(FluxKind::Kustomization, list);
    state.mark_synced(FluxKind::HelmRelease);
    drop(state);
    (cache, keys)
}

fn bench_admission() {
    let (cache, keys) = synthetic(200, 50);
    let objects = cache.lock().graphs().get(FluxKind::Kustomization).len();
    let webhook = Webhook::new(cache, Arc::new(Policy::default()));
    println!(
        "\nadmission decisions on a synthetic cluster of {objects} Kustomizations (dry-run, so the graph stays as is):"
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unchanged app (Flux drift dry-run)", {
            let k = &keys[1234];
            review(
                k,
                &[format!("{}/hub", k.split('/').next().unwrap())],
                Some(&[format!("{}/hub", k.split('/').next().unwrap())]),
                true,
            )
        }),
        ("new app depending on its hub", review("tenant-007/new-app", &["tenant-007/hub".into()], None, true)),
        (
            "hub gains an edge closing a cycle",
            review("tenant-007/hub", &["tenant-007/app-049".into()], Some(&["flux-system/observability".into()]), true),
        ),
        (
            "crds gains an edge closing a cycle",
            review("flux-system/crds", &["tenant-100/app-010".into()], Some(&[]), true),
        ),
        (
            "dangling target, near name in its namespace",
            review("tenant-007/new-app", &["tenant-007/hubb".into()], None, true),
        ),
        (
            "dangling target, no near name anywhere",
            review("tenant-007/new-app", &["tenant-007/zzzzzzzzzz-qqq".into()], None, true),
        ),
    ];
    for (label, body) in cases {
        let request = AdmissionReview::from_slice(&body).unwrap().request;
        let (med, min, verdict) = time(2000, || webhook.validate(&request, Instant::now()).unwrap());
        println!("  {label:<45} {:>10.2?} median {:>10.2?} min  allowed={}", med, min, verdict.response.allowed);
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).map(PathBuf::from).collect();
    let paths = if args.is_empty() {
        let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fleets");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    } else {
        args
    };
    bench_check(paths);
    bench_admission();
}

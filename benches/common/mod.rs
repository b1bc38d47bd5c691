//! What the serving benchmarks share: a synthetic fleet shaped like the real ones, written as
//! manifests, and the `fluxgate serve` binary started on it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// A UUID for the object, as the API server assigns one (random there; derived from the key here,
/// so that runs are repeatable).
fn uid(ns: &str, name: &str) -> String {
    let fnv =
        |seed: u64| format!("{ns}/{name}").bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let (a, b) = (fnv(0xcbf29ce484222325), fnv(0x84222325cbf29ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// A Kustomization as Flux's sources hold it.
pub fn kustomization(ns: &str, name: &str, deps: &[(String, String)], owner: Option<(&str, &str)>) -> Value {
    let deps: Vec<Value> = deps
        .iter()
        .map(
            |(dns, dname)| {
                if dns == ns { json!({ "name": dname }) } else { json!({ "name": dname, "namespace": dns }) }
            },
        )
        .collect();
    let mut o = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": { "name": name, "namespace": ns, "uid": uid(ns, name), "resourceVersion": "100" },
        "spec": {
            "interval": "10m", "prune": true, "path": format!("./{ns}/{name}"), "timeout": "5m", "wait": false,
            "sourceRef": { "kind": "GitRepository", "name": "flux-system", "namespace": "flux-system" },
            "dependsOn": deps,
        },
    });
    if let Some((pns, pname)) = owner {
        o["metadata"]["labels"] = json!({
            "kustomize.toolkit.fluxcd.io/name": pname,
            "kustomize.toolkit.fluxcd.io/namespace": pns,
        });
    }
    o
}

/// A layered fleet of about `total` Kustomizations: a platform chain in `flux-system`, tenants of
/// 50 apps, each tenant with a hub depending on the platform (a cross-namespace edge), each app on
/// its hub and on 0-2 earlier apps of its tenant; every app carries the owner labels of its
/// tenant's parent Kustomization. Deterministic.
pub fn fleet(total: usize) -> Vec<Value> {
    const PER_TENANT: usize = 50;
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    let f = "flux-system".to_string();
    let platform = ["crds", "operators", "storage", "networking", "observability"];
    let mut objects = Vec::with_capacity(total);
    for (i, p) in platform.iter().enumerate().take(total) {
        let deps = if i == 0 { vec![] } else { vec![(f.clone(), platform[i - 1].to_string())] };
        objects.push(kustomization(&f, p, &deps, None));
    }
    let mut t = 0;
    while objects.len() < total {
        let ns = format!("tenant-{t:05}");
        objects.push(kustomization(&ns, "hub", &[(f.clone(), "observability".into())], None));
        for a in 0..PER_TENANT.min(total - objects.len()) {
            let mut deps = vec![(ns.clone(), "hub".to_string())];
            for _ in 0..rand(3) {
                let dep = (ns.clone(), format!("app-{:03}", rand(a)));
                if a > 0 && !deps.contains(&dep) {
                    deps.push(dep);
                }
            }
            objects.push(kustomization(&ns, &format!("app-{a:03}"), &deps, Some((&f, &format!("tenant-{t:05}")))));
        }
        t += 1;
    }
    objects
}

/// The `GLIBC_TUNABLES` the Deployment in `deploy/` sets on fluxgate's container: the allocator
/// settings of the process as installed.
pub fn deployed_glibc_tunables() -> String {
    let deployment: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/deployment.yaml")).unwrap(),
    )
    .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "GLIBC_TUNABLES"))
        .and_then(|e| e["value"].as_str())
        .expect("the Deployment sets GLIBC_TUNABLES")
        .to_string()
}

/// The policy file `deploy/` ships (the `policy.yaml` of its ConfigMap): the policy as installed.
pub fn shipped_policy() -> String {
    let config_map: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/policy.yaml")).unwrap(),
    )
    .unwrap();
    config_map["data"]["policy.yaml"].as_str().expect("the ConfigMap holds policy.yaml").to_string()
}

/// Writes `objects` as multi-document manifests under `dir`, 1,000 to a file.
pub fn write_manifests(dir: &Path, objects: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, chunk) in objects.chunks(1000).enumerate() {
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("fleet-{i:04}.yaml"))).unwrap());
        for o in chunk {
            writeln!(file, "---\n{o}").unwrap();
        }
    }
}

/// A figure of `/proc/PID/status` in bytes: `VmRSS` (resident now) or `VmHWM` (the peak).
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

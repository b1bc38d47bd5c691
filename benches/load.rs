//! Load on the real TLS server: the built `fluxgate serve` on a synthetic fleet of 10,000
//! Kustomizations, twice side by side, once with the full policy (the one `deploy/` ships) and
//! once with the floor (every rule off, no defaults). 8 connections each send requests back to back, over HTTP/1.1 and
//! over HTTP/2, for two kinds of request: Flux's drift dry-run of an unchanged object and an
//! update adding a `dependsOn` edge (dry-run, so the graph stays as it is). The phases of the
//! two servers alternate, so that a busy machine slows both alike. Both run with the allocator
//! settings the Deployment in `deploy/` sets (`GLIBC_TUNABLES`), as installed.
//!
//! `cargo bench --bench load` (`-- --seconds N` per phase, default 3). Prints p50, p99, p99.9
//! and throughput, and the ratios to the floor; asserts nothing (goal: p99 <= 1.1x the floor's,
//! throughput >= 0.95x).

mod common;
#[path = "../tests/common/process.rs"]
mod process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{Client, Http, ServeProcess, admin_get, write_certs};
use serde_json::{Value, json};

const OBJECTS: usize = 10_000;
const CONNECTIONS: usize = 8;

const FLOOR: &str = "rules:
  cycle: \"off\"
  danglingDependsOn: \"off\"
  crossNamespaceDependsOn: \"off\"
  deleteWithDependents: \"off\"
  duplicateDependsOn: \"off\"
  maxDepth: { action: \"off\" }
defaults: { kustomization: {}, helmRelease: {} }
";

fn update_review(new: &Value, old: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f6c2a5e-0000-4000-8000-000000000001",
            "kind": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "kind": "Kustomization" },
            "resource": { "group": "kustomize.toolkit.fluxcd.io", "version": "v1", "resource": "kustomizations" },
            "name": new["metadata"]["name"],
            "namespace": new["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": { "username": "system:serviceaccount:flux-system:kustomize-controller" },
            "object": new,
            "oldObject": old,
            "dryRun": true,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "PatchOptions", "fieldManager": "kustomize-controller" }
        }
    }))
    .unwrap()
}

/// Request bodies over 1,000 different apps: the unchanged dry-run, and one adding an edge to
/// an earlier app of the same tenant (never a cycle: edges only point to earlier apps).
fn requests(fleet: &[Value]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let apps: Vec<&Value> = fleet
        .iter()
        .filter(|o| o["metadata"]["name"].as_str().unwrap().starts_with("app-") && o["metadata"]["name"] != "app-000")
        .step_by(7)
        .take(1000)
        .collect();
    let unchanged = apps.iter().map(|o| update_review(o, o)).collect();
    let adding = apps
        .iter()
        .filter_map(|o| {
            let mut new = (*o).clone();
            let deps = new["spec"]["dependsOn"].as_array_mut().unwrap();
            let name = o["metadata"]["name"].as_str().unwrap();
            // The first earlier app it does not list yet (app-000 .. its own number).
            let target = (0..name[4..].parse::<usize>().unwrap())
                .map(|i| format!("app-{i:03}"))
                .find(|t| !deps.iter().any(|d| d["name"] == t.as_str()))?;
            deps.push(json!({ "name": target }));
            Some(update_review(&new, o))
        })
        .collect();
    (unchanged, adding)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    per_second: f64,
}

/// `CONNECTIONS` connections sending `bodies` in turn for `seconds`.
async fn drive(client: &Client, server: &ServeProcess, http: Http, bodies: Arc<Vec<Vec<u8>>>, seconds: f64) -> Figures {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for c in 0..CONNECTIONS {
        let mut conn = client.connect(server.webhook, http).await;
        let bodies = bodies.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c * 131;
            while Instant::now() < until {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let sent = Instant::now();
                let (status, answer) = conn.post_bytes("/validate", body).await;
                latencies.push(sent.elapsed());
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["response"]["allowed"], true, "{answer}");
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures { p50: at(0.5), p99: at(0.99), p999: at(0.999), per_second: all.len() as f64 / elapsed }
}

/// The median of each figure over the repeats.
fn summary(runs: &[Figures]) -> Figures {
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let d =
        |f: fn(&Figures) -> Duration| Duration::from_secs_f64(med(runs.iter().map(|r| f(r).as_secs_f64()).collect()));
    Figures {
        p50: d(|r| r.p50),
        p99: d(|r| r.p99),
        p999: d(|r| r.p999),
        per_second: med(runs.iter().map(|r| r.per_second).collect()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 3.0;
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(&dir.path().join("certs"));
    let fleet = common::fleet(OBJECTS);
    common::write_manifests(&dir.path().join("fleet"), &fleet);
    // Both servers run with the allocator settings the Deployment gives the container.
    let tunables = common::deployed_glibc_tunables();
    let start = |name: &str, policy: &str| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, policy).unwrap();
        // Decision log lines off: the harness reads every line of the child's log, which would
        // weigh on the client more than on the server.
        ServeProcess::start_with_env(
            &[
                "--manifests",
                dir.path().join("fleet").to_str().unwrap(),
                "--policy",
                file.to_str().unwrap(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[("RUST_LOG", "info,fluxgate::server=warn"), ("GLIBC_TUNABLES", tunables.as_str())],
        )
    };
    // The full policy is the one deploy/ ships.
    let full = start("full", &common::shipped_policy());
    let floor = start("floor", FLOOR);
    for s in [&full, &floor] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while admin_get(s.admin, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "not ready: {:?}", s.log_lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let client = Client::new(&ca);
    let (unchanged, adding) = requests(&fleet);
    let (unchanged, adding) = (Arc::new(unchanged), Arc::new(adding));

    println!(
        "fluxgate serve --manifests, {OBJECTS} Kustomizations, {CONNECTIONS} connections, {seconds} s per phase, \
         3 alternating phases per server (medians):"
    );
    println!(
        "{:<34} {:<6} {:>10} {:>10} {:>10} {:>10}   {:>8} {:>8}",
        "request", "policy", "p50", "p99", "p99.9", "req/s", "p99/fl", "tput/fl"
    );
    for http in [Http::One, Http::Two] {
        for (label, bodies) in [("drift dry-run, unchanged", &unchanged), ("update adding an edge", &adding)] {
            // Warm both servers' connections and caches before measuring.
            drive(&client, &full, http, bodies.clone(), 0.5).await;
            drive(&client, &floor, http, bodies.clone(), 0.5).await;
            let (mut f, mut fl) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                f.push(drive(&client, &full, http, bodies.clone(), seconds).await);
                fl.push(drive(&client, &floor, http, bodies.clone(), seconds).await);
            }
            let (f, fl) = (summary(&f), summary(&fl));
            let row = |policy: &str, x: &Figures, ratios: Option<(f64, f64)>| {
                let ratios = ratios.map_or(String::new(), |(a, b)| format!("   {a:>7.2}x {b:>7.2}x"));
                println!(
                    "{:<34} {policy:<6} {:>10.2?} {:>10.2?} {:>10.2?} {:>10.0}{ratios}",
                    format!("{label} ({})", if http == Http::One { "HTTP/1.1" } else { "HTTP/2" }),
                    x.p50,
                    x.p99,
                    x.p999,
                    x.per_second
                );
            };
            row("full", &f, Some((f.p99.as_secs_f64() / fl.p99.as_secs_f64(), f.per_second / fl.per_second)));
            row("floor", &fl, None);
        }
    }
}

//! Memory and readiness at scale: resident memory per cached object and time to ready of the
//! built `fluxgate serve`, with 100,000 Kustomizations against 1, in both modes:
//! `serve --manifests` on manifests written to disk, and cluster mode against the fake API server
//! of the tests (`tests/common/fake_api.rs`) listing them.
//!
//! `cargo bench --bench memory` (`-- --objects N` to change the large size). Prints, as the
//! median of three starts of each configuration, bytes per object (the difference in resident
//! memory divided by the difference in objects), the peak resident memory of the large run, and
//! time from start to `/readyz` answering 200; asserts nothing (goal: <= 512 B per object, ready
//! <= 2 s).
//!
//! Each mode runs as installed: with the allocator settings the Deployment in `deploy/` gives the
//! container (`GLIBC_TUNABLES`; the image sets the same) and the policy it ships. Then with
//! glibc's default allocator settings (the binary started by hand), and with the built-in
//! defaults, where every rule is on: on this fleet the `maxDepth` rule then reports about 40 %
//! of the objects, and the audit report holds a message per finding (a chain of a dozen keys),
//! which is memory per finding rather than per cached object.

mod common;
#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{ServeProcess, admin_get, write_certs};

struct Sample {
    ready: Duration,
    resident: u64,
    peak: u64,
}

/// Starts `fluxgate serve` with `args` and `env` [`STARTS`] times and gives the median of each
/// figure: on a shared machine one start's time to ready moves by half a second.
async fn sample(args: &[&str], env: &[(&str, &str)]) -> Sample {
    let mut runs = Vec::new();
    for _ in 0..STARTS {
        runs.push(start(args, env).await);
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    Sample {
        ready: Duration::from_nanos(median(runs.iter().map(|r| r.ready.as_nanos() as u64).collect())),
        resident: median(runs.iter().map(|r| r.resident).collect()),
        peak: median(runs.iter().map(|r| r.peak).collect()),
    }
}

/// Starts of each configuration; the figures printed are their medians.
const STARTS: usize = 3;

/// Starts `fluxgate serve` with `args` and `env`, waits until `/readyz` answers 200, lets the
/// first audit run, and reads its resident memory.
async fn start(args: &[&str], env: &[(&str, &str)]) -> Sample {
    let started = Instant::now();
    let server = ServeProcess::start_with_env(args, env);
    let deadline = started + Duration::from_secs(120);
    while admin_get(server.admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();
    // The first audit starts at once; resident memory is read once it has run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resident = common::status_bytes(server.child.id(), "VmRSS:");
    let peak = common::status_bytes(server.child.id(), "VmHWM:");
    Sample { ready, resident, peak }
}

async fn manifests_mode(dir: &std::path::Path, tls: &[&str], tunables: &str, n: usize) -> Sample {
    let fleet = dir.join(format!("fleet-{n}"));
    if !fleet.exists() {
        common::write_manifests(&fleet, &common::fleet(n));
    }
    let mut args = vec!["--manifests", fleet.to_str().unwrap()];
    args.extend_from_slice(tls);
    sample(&args, &[("RUST_LOG", "warn,fluxgate::cli=info"), ("GLIBC_TUNABLES", tunables)]).await
}

async fn cluster_mode(dir: &std::path::Path, tls: &[&str], tunables: &str, n: usize) -> Sample {
    let fake = fake_api::FakeApi::start(true).await;
    for o in common::fleet(n) {
        fake.apply(o);
    }
    let kubeconfig = fake.kubeconfig(&dir.join(format!("kube-{n}")));
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("RUST_LOG", "warn,fluxgate::cli=info"),
        ("GLIBC_TUNABLES", tunables),
    ];
    sample(tls, &env).await
}

fn row(mode: &str, large: usize, one: &Sample, many: &Sample) {
    let per_object = (many.resident as f64 - one.resident as f64) / (large - 1) as f64;
    println!(
        "{mode:<30} {:>10.1} MiB {:>10.1} MiB {:>10.1} MiB {:>10.0} B {:>12.2?} {:>12.2?}",
        one.resident as f64 / 1048576.0,
        many.resident as f64 / 1048576.0,
        many.peak as f64 / 1048576.0,
        per_object,
        one.ready,
        many.ready
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut large = 100_000;
    while let Some(a) = args.next() {
        if a == "--objects" {
            large = args.next().and_then(|s| s.parse().ok()).expect("--objects N");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = write_certs(&dir.path().join("certs"));
    for sub in ["kube-1".to_string(), format!("kube-{large}")] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, common::shipped_policy()).unwrap();
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let shipped_policy = [&tls[..], &["--policy", policy.to_str().unwrap()]].concat();
    println!("fluxgate serve with 1 and {large} Kustomizations: resident memory after the first audit, time to ready");
    println!(
        "{:<30} {:>14} {:>14} {:>14} {:>12} {:>12} {:>12}",
        "mode",
        "RSS (1)",
        format!("RSS ({large})"),
        "peak",
        "per object",
        "ready (1)",
        format!("ready ({large})")
    );
    let deployed = common::deployed_glibc_tunables();
    println!("as deployed: GLIBC_TUNABLES={deployed}; glibc defaults: GLIBC_TUNABLES empty");
    let runs = [
        ("as deployed", &shipped_policy[..], deployed.as_str()),
        ("glibc defaults", &shipped_policy[..], ""),
        ("every rule on", &tls[..], deployed.as_str()),
    ];
    for (label, args, tunables) in runs {
        let one = manifests_mode(dir.path(), args, tunables, 1).await;
        let many = manifests_mode(dir.path(), args, tunables, large).await;
        row(&format!("--manifests, {label}"), large, &one, &many);
        let one = cluster_mode(dir.path(), args, tunables, 1).await;
        let many = cluster_mode(dir.path(), args, tunables, large).await;
        row(&format!("cluster, {label}"), large, &one, &many);
    }
}

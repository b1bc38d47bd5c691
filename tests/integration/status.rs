//! "Why is it stuck?" end to end: `fluxgate status` and `fluxgate why` through the built binary,
//! on a dump in `kubectl get kustomizations,helmreleases -A -o yaml` form and against the fake API
//! server through a kubeconfig; and `GET /status` of a running `serve` following status-only
//! watch events.
//!
//! One scenario, `examples/status-dump.yaml`, serves all three: a chain whose root failed
//! its health check, a suspended dependency, a missing one, a stale one, a cycle, a diamond with
//! two roots, and a HelmRelease waiting for a failed one.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::process::{ServeProcess, admin_get};
use fluxgate::audit::events::Publisher;
use fluxgate::cache::Cache;
use fluxgate::object::{FluxObject, kind_of};
use serde_json::{Value, json};

fn dump() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/status-dump.yaml")
}

fn dump_items() -> Vec<Value> {
    let text = std::fs::read_to_string(dump()).unwrap();
    let list = fluxgate::manifests::parse_document(&text).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn fluxgate(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    cmd.args(args).env_remove("KUBECONFIG").env("NO_COLOR", "1");
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// The roots of one object in a `/status` or `status --format json` report, as
/// `(root, cause, chain)`.
fn roots_in(report: &Value, kind: &str, id: &str) -> Vec<(String, String, Vec<String>)> {
    let k = report["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == kind).unwrap();
    let o = k["objects"].as_array().unwrap().iter().find(|o| o["id"] == id).unwrap_or_else(|| panic!("{id}"));
    roots_of(o)
}

fn roots_of(o: &Value) -> Vec<(String, String, Vec<String>)> {
    o["roots"]
        .as_array()
        .map(|roots| {
            roots
                .iter()
                .map(|r| {
                    let chain = r["chain"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().into());
                    (r["id"].as_str().unwrap().into(), r["cause"].as_str().unwrap().into(), chain.collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn chain(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|i| format!("flux-system/{i}")).collect()
}

/// The scenario's expected roots, checked on any report.
fn assert_scenario(report: &Value) {
    let ks = |id: &str| roots_in(report, "Kustomization", &format!("flux-system/{id}"));
    let root = |id: &str, cause: &str, c: &[&str]| (format!("flux-system/{id}"), cause.to_string(), chain(c));
    assert_eq!(ks("apps"), [root("crds", "failed", &["apps", "infra", "crds"])]);
    assert_eq!(ks("dashboards"), [root("monitoring", "suspended", &["dashboards", "monitoring"])]);
    assert_eq!(ks("ingress"), [root("certs", "missing", &["ingress", "certs"])]);
    assert_eq!(ks("backend"), [root("db", "stale", &["backend", "db"])]);
    assert_eq!(ks("tenant"), [root("loop-a", "cycle", &["tenant", "loop-a"])]);
    assert_eq!(
        ks("frontend"),
        [
            root("monitoring", "suspended", &["frontend", "dashboards", "monitoring"]),
            root("crds", "failed", &["frontend", "apps", "infra", "crds"]),
        ]
    );
    assert_eq!(ks("crds"), [], "a failed object is a root, not a waiting one");
    assert_eq!(
        roots_in(report, "HelmRelease", "apps/podinfo"),
        [("apps/redis".to_string(), "failed".to_string(), vec!["apps/podinfo".to_string(), "apps/redis".to_string()])]
    );
    let k = &report["kinds"][0];
    let apps = k["objects"].as_array().unwrap().iter().find(|o| o["id"] == "flux-system/apps").unwrap();
    assert_eq!(apps["state"], "waiting");
    assert!(apps["roots"][0]["message"].as_str().unwrap().starts_with("health check failed after 5m0s"), "{apps}");
    // Every Kustomization has `timeout: 5m0s`: five of them in a row.
    assert_eq!(k["rollout"]["worstCaseSeconds"], 1500);
    assert_eq!(k["rollout"]["worstCasePath"], json!(chain(&["namespaces", "crds", "infra", "apps", "frontend"])));
    let tenant = k["objects"].as_array().unwrap().iter().find(|o| o["id"] == "flux-system/tenant").unwrap();
    assert_eq!(tenant["roots"][0]["cycle"], json!(["flux-system/loop-a", "flux-system/loop-b", "flux-system/loop-a"]));
}

#[test]
fn status_and_why_read_a_kubectl_dump() {
    let out = fluxgate(&["status", "--from", dump().to_str().unwrap(), "--format", "json"], None);
    assert_eq!(out.status.code(), Some(1), "stuck objects exit 1: {}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_scenario(&report);
    let states: Vec<(&str, &str)> = report["kinds"][0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["state"].as_str().unwrap()))
        .collect();
    for (id, state) in [
        ("flux-system/namespaces", "ready"),
        ("flux-system/crds", "failed"),
        ("flux-system/monitoring", "suspended"),
        ("flux-system/db", "stale"),
        ("flux-system/infra", "waiting"),
    ] {
        assert!(states.contains(&(id, state)), "{id} should be {state}: {states:?}");
    }

    // The table: waves, states, and the stuck objects with their roots.
    let out = fluxgate(&["status", "--from", dump().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Kustomization (13 objects: 1 failed, 9 waiting, 1 suspended, 1 stale, 1 ready)"), "{text}");
    assert!(text.contains("root cause: flux-system/crds is failed"), "{text}");
    assert!(!text.contains("\x1b["), "no colours off a terminal");

    // why: the chain and the root's own message; exit 1 for a stuck object.
    let out = fluxgate(&["why", "apps", "-n", "flux-system", "--from", dump().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Kustomization flux-system/apps is waiting (DependencyNotReady)"), "{text}");
    assert!(text.contains("chain: flux-system/apps -> flux-system/infra -> flux-system/crds"), "{text}");
    assert!(text.contains("message: health check failed after 5m0s: timeout waiting for: [Deployment/cert-manager/cert-manager status: 'InProgress']"), "{text}");

    let out = fluxgate(
        &["why", "podinfo", "--kind", "helm-release", "--from", dump().to_str().unwrap(), "--format", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(roots_of(&json_of(&out)[0])[0].0, "apps/redis");

    // A ready object exits 0; an unknown name and an unreadable file exit 2.
    let out = fluxgate(&["why", "namespaces", "--from", dump().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = fluxgate(&["why", "nosuch", "--from", dump().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Kustomization or HelmRelease named nosuch"));
    let out = fluxgate(&["status", "--from", "/nonexistent/dump.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dump.yaml"));
}

#[test]
fn status_exits_zero_when_nothing_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let healthy: Vec<Value> = dump_items()
        .into_iter()
        .filter(|o| o["metadata"]["name"] == "namespaces" || o["metadata"]["name"] == "monitoring")
        .collect();
    let file = dir.path().join("healthy.yaml");
    // JSON is YAML: `kubectl get -o json` output is read the same way.
    std::fs::write(&file, json!({"apiVersion": "v1", "kind": "List", "items": healthy}).to_string()).unwrap();
    let out = fluxgate(&["status", "--from", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_why_list_the_cluster_of_the_kubeconfig() {
    let fake = FakeApi::start(true).await;
    for item in dump_items() {
        fake.apply(item);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let k = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || fluxgate(&["status", "--format", "json"], Some(&k))).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_scenario(&json_of(&out));
    let k = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || fluxgate(&["why", "frontend"], Some(&k))).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root cause: flux-system/monitoring is suspended"), "{text}");

    // No cluster to reach: exit 2, naming the way out.
    let bad = dir.path().join("nowhere");
    std::fs::write(&bad, std::fs::read_to_string(&kubeconfig).unwrap().replace(&fake.addr.to_string(), "127.0.0.1:9"))
        .unwrap();
    let out = tokio::task::spawn_blocking(move || fluxgate(&["status"], Some(&bad))).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
}

async fn status_json(server: &ServeProcess) -> Value {
    let (code, body) = admin_get(server.admin, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_status_only_watch_events() {
    let fake = FakeApi::start(true).await;
    let items = dump_items();
    for item in &items {
        fake.apply(item.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let (_, cert, key) = common::process::write_certs(&dir.path().join("certs"));
    let server = ServeProcess::start_with_env(
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin_get(server.admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {:?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_scenario(&status_json(&server).await);

    // crds recovers: a status-only MODIFIED event. Its dependents' roots move on to what still
    // holds them (infra has not reconciled since), and the frontend keeps only the suspended root.
    let mut crds = items.iter().find(|o| o["metadata"]["name"] == "crds").unwrap().clone();
    crds["status"]["conditions"][0] = json!({"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision: main@sha1:5e1b"});
    fake.apply(crds);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = status_json(&server).await;
        let frontend = roots_in(&report, "Kustomization", "flux-system/frontend");
        if frontend.len() == 1 {
            assert_eq!(frontend[0].0, "flux-system/monitoring");
            assert_eq!(roots_in(&report, "Kustomization", "flux-system/apps"), []);
            break;
        }
        assert!(Instant::now() < deadline, "the status event was not applied: {frontend:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_graph_objects{kind=\"Kustomization\"} 13"), "{metrics}");
    // After crds recovered: 2 ready, 9 waiting; roots left: monitoring, certs, db, the cycle's two
    // members.
    for line in [
        "fluxgate_objects{kind=\"Kustomization\",state=\"ready\"} 2",
        "fluxgate_objects{kind=\"Kustomization\",state=\"waiting\"} 9",
        "fluxgate_objects{kind=\"HelmRelease\",state=\"failed\"} 1",
        "fluxgate_blocked_objects{kind=\"Kustomization\"} 9",
        "fluxgate_root_causes{kind=\"Kustomization\",cause=\"failed\"} 0",
        "fluxgate_root_causes{kind=\"Kustomization\",cause=\"suspended\"} 1",
        "fluxgate_root_causes{kind=\"Kustomization\",cause=\"cycle\"} 2",
        "fluxgate_root_causes{kind=\"HelmRelease\",cause=\"failed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("flux-system/"), "no object names in labels");
}

#[tokio::test]
async fn dependency_blocked_events_name_each_root_once_after_the_blocked_time() {
    let fake = FakeApi::start(true).await;
    let cache = Cache::new();
    for item in dump_items() {
        let kind = kind_of(&item).unwrap();
        let ns = item["metadata"]["namespace"].as_str().unwrap();
        let object = FluxObject::from_value(kind, &item, ns, "").unwrap();
        let object = std::sync::Arc::new(object);
        cache.status().record(object.clone(), fluxgate::status::ObjectStatus::from_value(&item));
        cache.lock().apply(object, None);
    }
    let publisher = Publisher::new(fake.client(), "fluxgate-system", "replica-a", Duration::from_secs(30))
        .with_blocked_after(Duration::from_secs(600));
    let report = cache.status_report();
    let at = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
    // Not the Lease holder: nothing.
    assert_eq!(publisher.publish_blocked(&report, at("2026-11-26T10:00:00Z")).await, 0);
    assert!(publisher.acquire_or_renew().await.unwrap());
    // The objects have waited since 09:12: 3 minutes is not long enough.
    assert_eq!(publisher.publish_blocked(&report, at("2026-11-26T09:15:00Z")).await, 0);
    assert_eq!(publisher.publish_blocked(&report, at("2026-11-26T09:30:00Z")).await, 11);
    let events = fake.events();
    let on = |name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                assert_eq!((e["reason"].as_str(), e["type"].as_str()), (Some("DependencyBlocked"), Some("Warning")));
                e["note"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let frontend = on("frontend");
    assert_eq!(frontend.len(), 2, "one per root cause: {frontend:?}");
    assert!(frontend.iter().any(|n| n.starts_with("waiting for flux-system/crds (failed) since 2026-11-26T09:12:00Z: flux-system/frontend -> flux-system/apps -> flux-system/infra -> flux-system/crds; flux-system/crds: health check failed")), "{frontend:?}");
    assert!(on("tenant")[0].contains("cycle: flux-system/loop-a -> flux-system/loop-b -> flux-system/loop-a"));
    assert_eq!(on("podinfo").len(), 1);
    assert_eq!(events[0]["metadata"]["namespace"], events[0]["regarding"]["namespace"]);
    // With the object's uid, or `kubectl describe` does not show them.
    assert!(events.iter().all(|e| e["regarding"]["uid"].as_str().is_some_and(|u| u.starts_with("7d1c0e3a-"))));
    // Once per root while it lasts.
    assert_eq!(publisher.publish_blocked(&report, at("2026-11-26T09:40:00Z")).await, 0);
    assert_eq!(fake.events().len(), 11);
}

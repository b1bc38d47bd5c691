//! fluxgate under the standard Flux bootstrap: a self-managed root `flux-system` that applies
//! itself and every other Kustomization, children that depend on the root or on their parent,
//! and objects re-applied by server-side apply on every reconcile with real `managedFields`.
//!
//! Two promises are checked here: a Kustomization never waits for itself, and a default never
//! causes a denial (mutation adds no `wait` that would deadlock, and takes back an earlier
//! `wait` default of fluxgate's where the rules no longer want it).

use crate::common;

use base64::Engine as _;
use common::*;
use fluxgate::object::field_is_unowned;
use fluxgate::policy::Policy;
use proptest::prelude::*;
use serde_json::{Value, json};

const F: &str = "flux-system";
const ROOT: &str = "flux-system/flux-system";

/// The bootstrap root as Flux applies it: its `spec.path` holds its own manifest, so its owner
/// labels name itself.
fn root(wait: Option<bool>) -> Value {
    let mut r = owned_by(ks(F, "flux-system", &[]), ROOT);
    r["spec"]["path"] = json!("./clusters/prod");
    if let Some(w) = wait {
        r["spec"]["wait"] = json!(w);
    }
    r
}

fn patch_of(response: &Value) -> Vec<Value> {
    assert_eq!(response["allowed"], true, "mutation never denies: {response}");
    match response.get("patch").and_then(Value::as_str) {
        None => Vec::new(),
        Some(b64) => {
            assert_eq!(response["patchType"], "JSONPatch");
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        }
    }
}

fn apply(object: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

/// What the API server stores after `sent` is server-side applied over `stored`: a spec field
/// that no manager owns (a webhook default) stays; everything else is what was sent.
fn ssa_over(stored: Option<&Value>, sent: &Value) -> Value {
    let mut object = sent.clone();
    let Some(spec) = stored.and_then(|s| s["spec"].as_object()) else { return object };
    for (field, value) in spec {
        if sent["spec"].get(field).is_none() && field_is_unowned(&stored.unwrap()["metadata"], &["spec", field]) {
            object["spec"][field] = value.clone();
        }
    }
    object
}

/// Sends `object` (CREATE when `old` is none) through `/mutate` and then, with the patch applied,
/// through `/validate`, as the API server does. Returns the patch, the object as stored, and the
/// validating response.
async fn admit(h: &Harness, object: &Value, old: Option<&Value>, dry_run: bool) -> (Vec<Value>, Value, Value) {
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let ops = patch_of(&h.mutate(&review(operation, Some(object), old, dry_run)).await);
    let mutated = apply(object, &ops);
    let response = h.validate(&review(operation, Some(&mutated), old, dry_run)).await;
    (ops, mutated, response)
}

fn removes_wait(ops: &[Value]) -> bool {
    ops.contains(&json!({"op": "remove", "path": "/spec/wait"}))
}

fn adds_wait(ops: &[Value]) -> bool {
    ops.iter().any(|op| op["op"] == "add" && op["path"] == "/spec/wait")
}

// --- the self-managed root ---------------------------------------------------------------

#[tokio::test]
async fn the_self_managed_root_is_admitted_with_and_without_wait() {
    for wait in [None, Some(true), Some(false)] {
        let h = Harness::new(Policy::default(), &[]);
        let sent = applied_by_flux(root(wait));
        // `flux bootstrap` creates it, then every reconcile re-applies it: a dry-run, then the apply.
        let (ops, stored, response) = admit(&h, &sent, None, false).await;
        assert_eq!(allowed(&response), Vec::<String>::new(), "create, wait {wait:?}");
        assert!(!adds_wait(&ops), "a root gets no wait default: {ops:?}");
        let (_, _, response) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), true).await;
        assert_eq!(allowed(&response), Vec::<String>::new(), "dry-run update, wait {wait:?}");
        let (_, _, response) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), false).await;
        assert_eq!(allowed(&response), Vec::<String>::new(), "update, wait {wait:?}");
    }
}

#[tokio::test]
async fn a_root_with_wait_in_git_and_a_child_depending_on_it_is_a_real_deadlock() {
    // The root waits for everything it applies; a child that depends on the root waits for the
    // root: kustomize-controller deadlocks until the health check times out, every reconcile.
    let h = Harness::new(Policy::default(), &[applied_by_flux(root(Some(true)))]);
    let child = applied_by_flux(owned_by(ks(F, "apps", &["flux-system"]), ROOT));
    let (_, _, response) = admit(&h, &child, None, true).await;
    assert!(
        denied(&response)
            .starts_with("dependsOn cycle: flux-system/apps -> flux-system/flux-system -> flux-system/apps"),
        "{response}"
    );
}

// --- children depending on their parent -----------------------------------------------------

#[tokio::test]
async fn a_child_depending_on_its_parent_without_wait_in_git_is_admitted() {
    let h = Harness::new(Policy::default(), &[]);
    let r = applied_by_flux(root(None));
    admit(&h, &r, None, false).await;
    // `apps` is applied by the root and applies the apps: at its creation nothing names it as
    // owner yet, so it is a leaf and gets the default.
    let apps_sent = applied_by_flux(owned_by(ks(F, "apps", &["flux-system"]), ROOT));
    let (ops, apps, response) = admit(&h, &apps_sent, None, false).await;
    assert_eq!(allowed(&response), Vec::<String>::new());
    assert!(adds_wait(&ops), "{ops:?}");
    // Its children depend on it (and on the root): the defaulted wait is fluxgate's own and is
    // never held against them, dry-run or real.
    let web = applied_by_flux(owned_by(
        ks("apps", "web", &["flux-system/apps", "flux-system/flux-system"]),
        "flux-system/apps",
    ));
    for dry_run in [true, false] {
        let (ops, _, response) = admit(&h, &web, None, dry_run).await;
        assert_eq!(allowed(&response), Vec::<String>::new(), "dry-run {dry_run}");
        assert!(adds_wait(&ops), "web is a leaf");
    }
    // The root re-applies `apps` unchanged from Git: `apps` is a parent now, and the wait that
    // fluxgate added earlier, owned by no field manager, is taken back.
    let (ops, stored, response) = admit(&h, &ssa_over(Some(&apps), &apps_sent), Some(&apps), false).await;
    assert!(removes_wait(&ops), "{ops:?}");
    assert_eq!(stored["spec"].get("wait"), None);
    assert_eq!(allowed(&response), Vec::<String>::new());
    // And it stays gone: the next re-apply changes nothing.
    let (ops, _, _) = admit(&h, &ssa_over(Some(&stored), &apps_sent), Some(&stored), false).await;
    assert_eq!(ops, Vec::<Value>::new());
}

#[tokio::test]
async fn a_child_depending_on_its_parent_with_wait_in_git_is_still_denied() {
    let h = Harness::new(Policy::default(), &[]);
    let apps = applied_by_flux(with(owned_by(ks(F, "apps", &[]), ROOT), "wait", json!(true)));
    let (_, _, response) = admit(&h, &apps, None, false).await;
    allowed(&response);
    let web = applied_by_flux(owned_by(ks("apps", "web", &["flux-system/apps"]), "flux-system/apps"));
    let (_, _, response) = admit(&h, &web, None, true).await;
    assert_eq!(
        denied(&response),
        "dependsOn cycle: apps/web -> flux-system/apps -> apps/web (flux-system/apps -> apps/web is a wait: flux-system/apps has spec.wait: true and applies it)"
    );
}

// --- defaults fluxgate injected earlier leave -----------------------------------------------

/// `sent` as stored after an earlier mutation added `wait: true` that no manager owns.
fn with_unowned_wait(sent: &Value) -> Value {
    let mut stored = sent.clone();
    stored["spec"]["wait"] = json!(true);
    stored
}

#[tokio::test]
async fn an_unowned_wait_is_removed_when_health_checks_appear() {
    let h = Harness::new(Policy::default(), &[]);
    let before = applied_by_flux(owned_by(ks(F, "web", &[]), ROOT));
    let stored = with_unowned_wait(&before);
    let checks = json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "web" }]);
    let sent = applied_by_flux(with(owned_by(ks(F, "web", &[]), ROOT), "healthChecks", checks));
    let (ops, mutated, response) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), false).await;
    assert!(removes_wait(&ops), "{ops:?}");
    assert_eq!(mutated["spec"].get("wait"), None, "Flux ignores healthChecks under wait");
    allowed(&response);
}

#[tokio::test]
async fn an_unowned_wait_is_removed_from_a_root_and_from_a_parent() {
    let h = Harness::new(Policy::default(), &[]);
    let sent = applied_by_flux(root(None));
    let stored = with_unowned_wait(&sent);
    let (ops, _, _) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), false).await;
    assert!(removes_wait(&ops), "root: {ops:?}");

    let child = applied_by_flux(owned_by(ks("apps", "web", &[]), "flux-system/apps"));
    let h = Harness::new(Policy::default(), &[child]);
    let sent = applied_by_flux(owned_by(ks(F, "apps", &[]), ROOT));
    let stored = with_unowned_wait(&sent);
    let (ops, _, _) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), true).await;
    assert!(removes_wait(&ops), "parent: {ops:?}");
}

#[tokio::test]
async fn a_wait_a_field_manager_owns_is_never_touched() {
    let child = applied_by_flux(owned_by(ks("apps", "web", &[]), "flux-system/apps"));
    let checks = json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "web" }]);
    let owned = [
        applied_by_flux(root(Some(true))),
        applied_by_flux(with(owned_by(ks(F, "apps", &[]), ROOT), "wait", json!(true))),
        applied_by_flux(with(with(owned_by(ks(F, "web", &[]), ROOT), "wait", json!(true)), "healthChecks", checks)),
    ];
    let h = Harness::new(Policy::default(), &[child]);
    for object in &owned {
        let (ops, mutated, _) = admit(&h, object, Some(object), true).await;
        assert!(!removes_wait(&ops), "{ops:?}");
        assert_eq!(mutated["spec"]["wait"], true);
    }
    // Without managedFields nothing is known about ownership: nothing is removed either.
    let mut bare = with_unowned_wait(&root(None));
    bare["metadata"].as_object_mut().unwrap().remove("managedFields");
    let (ops, _, _) = admit(&h, &bare, Some(&bare), true).await;
    assert!(!removes_wait(&ops), "{ops:?}");
}

#[tokio::test]
async fn a_leaf_keeps_its_defaulted_wait_across_re_applies() {
    let h = Harness::new(Policy::default(), &[]);
    let sent = applied_by_flux(owned_by(ks(F, "web", &[]), ROOT));
    let (ops, stored, _) = admit(&h, &sent, None, false).await;
    assert!(adds_wait(&ops));
    let (ops, _, _) = admit(&h, &ssa_over(Some(&stored), &sent), Some(&stored), false).await;
    assert_eq!(ops, Vec::<Value>::new(), "idempotent");
}

// --- property: mutation never causes a denial -------------------------------------------------

/// One Flux-style request: an object of 6 names in 2 namespaces, applied by server-side apply.
#[derive(Debug, Clone)]
struct Sent {
    name: u8,
    deps: Vec<u8>,
    wait: Option<bool>,
    owner: Option<u8>,
    health: Vec<u8>,
    dry_run: bool,
}

fn key_of(i: u8) -> (&'static str, String) {
    (if i.is_multiple_of(2) { "a" } else { "b" }, format!("k{}", i % 3))
}

fn sent_object(s: &Sent) -> Value {
    let (ns, name) = key_of(s.name);
    let deps: Vec<String> = s.deps.iter().map(|&d| key_of(d)).map(|(n, m)| format!("{n}/{m}")).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    let mut o = ks(ns, &name, &deps);
    if let Some(w) = s.wait {
        o["spec"]["wait"] = json!(w);
    }
    if let Some(owner) = s.owner {
        let (n, m) = key_of(owner);
        o = owned_by(o, &format!("{n}/{m}"));
    }
    if !s.health.is_empty() {
        let checks: Vec<Value> = s
            .health
            .iter()
            .map(|&h| key_of(h))
            .map(|(n, m)| json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": m, "namespace": n}))
            .collect();
        o["spec"]["healthChecks"] = json!(checks);
    }
    // A real API server always writes managedFields.
    applied_by_flux(o)
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        0u8..6,
        prop::collection::vec(0u8..6, 0..3),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.6, 0u8..6),
        prop::collection::vec(0u8..6, 0..2),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(name, deps, wait, owner, health, dry_run)| Sent { name, deps, wait, owner, health, dry_run })
}

/// Runs `requests` twice: through `/validate` alone, as sent (fluxgate without its mutating
/// webhook), and through `/mutate` then `/validate`, each stored as the API server stores it.
/// Whatever the first admits, the second admits too, with no warning the first did not give.
fn defaults_never_deny(requests: Vec<Sent>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let plain = Harness::new(Policy::default(), &[]);
        let mutating = Harness::new(Policy::default(), &[]);
        let mut stored_plain: std::collections::HashMap<u8, Value> = Default::default();
        let mut stored_mutated: std::collections::HashMap<u8, Value> = Default::default();
        for s in &requests {
            let object = sent_object(s);
            let slot = s.name % 6;
            let old_plain = stored_plain.get(&slot).cloned();
            let operation = if old_plain.is_some() { "UPDATE" } else { "CREATE" };
            let as_sent = plain.validate(&review(operation, Some(&object), old_plain.as_ref(), s.dry_run)).await;
            if as_sent["allowed"] != true {
                continue;
            }
            let old_mutated = stored_mutated.get(&slot).cloned();
            let candidate = ssa_over(old_mutated.as_ref(), &object);
            let (ops, mutated, response) = admit(&mutating, &candidate, old_mutated.as_ref(), s.dry_run).await;
            prop_assert_eq!(
                &response["allowed"],
                &json!(true),
                "{:?}: as sent {}, mutated by {:?}: {}",
                s,
                as_sent,
                ops,
                response
            );
            let before: Vec<String> = warnings(&as_sent);
            for w in warnings(&response) {
                prop_assert!(
                    before.contains(&w),
                    "a new warning after mutation {:?}: {} (as sent: {:?})",
                    ops,
                    w,
                    before
                );
            }
            if !s.dry_run {
                stored_plain.insert(slot, object);
                stored_mutated.insert(slot, mutated);
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn mutation_never_causes_a_denial_or_a_warning(requests in prop::collection::vec(sent(), 1..14)) {
        defaults_never_deny(requests)?;
    }
}

// --- end to end: the example fleet bootstrapped by Flux, through the built binary ------------

/// The example fleet (`examples/fleet`) as Flux applies it under a self-managed root: every
/// object carries owner labels naming the root, and those without a `dependsOn` depend on it.
fn example_fleet_under_the_root() -> Vec<Value> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/fleet");
    let mut objects = Vec::new();
    for file in ["pipeline", "multi-tier", "parallel"] {
        let text = std::fs::read_to_string(dir.join(file).join("flux-kustomizations.yaml")).unwrap();
        for doc in fluxgate::manifests::split_documents(&text) {
            let mut v: Value = serde_saphyr::from_str(doc.text).unwrap();
            v["metadata"]["namespace"] = json!(F);
            if v["spec"].get("dependsOn").is_none() {
                v["spec"]["dependsOn"] = json!([{ "name": "flux-system" }]);
            }
            objects.push(owned_by(v, ROOT));
        }
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_fleet_bootstrapped_by_flux_is_admitted_through_the_binary_twice() {
    use common::process::{Client, Http, ServeProcess};

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("cluster");
    std::fs::create_dir_all(&empty).unwrap();
    let (server, ca) = ServeProcess::start_tls(dir.path(), &["--manifests", empty.to_str().unwrap()]);
    let mut conn = Client::new(&ca).connect(server.webhook, Http::Two).await;
    let mut stored: std::collections::BTreeMap<String, Value> = Default::default();
    let mut requests = 0;

    // Sends one object through /mutate then /validate as the API server does; returns the object
    // as stored. Any denial fails the test, and so does any warning but the one a first rollout
    // earns on a CREATE: a sibling that is not applied yet (the dry-run of the whole stage comes
    // first, and the applies go by name).
    let mut send = async |object: &Value, old: Option<&Value>, dry_run: bool| -> Value {
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let (status, body) = conn.post("/mutate", &review(operation, Some(object), old, dry_run)).await;
        assert_eq!(status, 200, "{body}");
        let mutated = apply(object, &patch_of(&body["response"]));
        let (status, body) = conn.post("/validate", &review(operation, Some(&mutated), old, dry_run)).await;
        assert_eq!(status, 200, "{body}");
        let name = &object["metadata"]["name"];
        assert_eq!(body["response"]["allowed"], true, "{operation} {name} (dry-run {dry_run}) denied: {body}");
        let warnings = warnings(&body["response"]);
        assert!(
            warnings.iter().all(|w| old.is_none() && w.starts_with("dangling dependsOn")),
            "{operation} {name}: {warnings:?}"
        );
        mutated
    };

    // `flux bootstrap` creates the root without owner labels; its first reconcile applies itself.
    let first = applied_by_flux(ks(F, "flux-system", &[]));
    stored.insert("flux-system".into(), send(&first, None, false).await);
    requests += 1;

    let mut stage = vec![applied_by_flux(root(None))];
    stage.extend(example_fleet_under_the_root().into_iter().map(applied_by_flux));
    for _reconcile in 0..2 {
        // A server-side dry-run of every object of the stage, then the applies, sorted by name.
        for object in &stage {
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            let old = stored.get(&name).cloned();
            send(&ssa_over(old.as_ref(), object), old.as_ref(), true).await;
            requests += 1;
        }
        let mut sorted = stage.clone();
        sorted.sort_by_key(|o| o["metadata"]["name"].as_str().unwrap().to_string());
        for object in &sorted {
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            let old = stored.get(&name).cloned();
            let now = send(&ssa_over(old.as_ref(), object), old.as_ref(), false).await;
            stored.insert(name, now);
            requests += 1;
        }
    }
    assert_eq!(requests, 1 + 2 * 2 * stage.len());
    assert!(stored["flux-system"]["spec"].get("wait").is_none(), "the root got no wait default");
}

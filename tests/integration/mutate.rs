//! `/mutate`: the defaults patch on the wire (base64 JSON Patch), idempotence, the health-check
//! exception, user values and metadata untouched, and validity of every mutated object against
//! the real Flux CRD schemas.

use crate::common;

use std::path::PathBuf;

use base64::Engine as _;
use common::crd::{assert_valid, crd_schema};
use common::*;
use fluxgate::policy::Policy;
use serde_json::{Value, json};

const F: &str = "flux-system";

/// Decodes the response's patch; `None` when there is none.
fn patch_of(response: &Value) -> Option<Vec<Value>> {
    assert_eq!(response["allowed"], true);
    let patch = response.get("patch")?.as_str().expect("patch is a base64 string on the wire");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("valid base64");
    Some(serde_json::from_slice(&bytes).expect("a JSON array of operations"))
}

fn apply(object: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

/// Mutates `object` through the router, applies the patch, and checks that mutating the
/// result again yields no patch. Returns the mutated object.
async fn mutate_to_fixpoint(h: &Harness, object: &Value) -> Value {
    let first = h.mutate(&create(object)).await;
    let mutated = match patch_of(&first) {
        Some(ops) => apply(object, &ops),
        None => object.clone(),
    };
    let second = h.mutate(&update(&mutated, object)).await;
    assert_eq!(patch_of(&second), None, "mutating the mutated object must change nothing");
    mutated
}

/// A leaf: a Kustomization applied by the root that applies no Kustomization itself.
fn leaf(name: &str, deps: &[&str]) -> Value {
    owned_by(ks(F, name, deps), "flux-system/flux-system")
}

#[tokio::test]
async fn kustomization_gets_wait_and_timeout_as_a_base64_json_patch() {
    let h = Harness::new(Policy::default(), &[]);
    let mut ops = patch_of(&h.mutate(&create(&leaf("apps", &[]))).await).unwrap();
    ops.sort_by_key(|op| op["path"].to_string());
    assert_eq!(
        ops,
        vec![
            json!({"op": "add", "path": "/spec/timeout", "value": "5m"}),
            json!({"op": "add", "path": "/spec/wait", "value": true}),
        ]
    );
}

#[tokio::test]
async fn roots_and_parents_get_no_wait_default() {
    // A root (nothing applies it) and a parent (it applies Kustomizations) would wait for every
    // app they apply: one failing app would fail the root, and an app depending on it deadlocks.
    let child = owned_by(ks("apps", "web", &[]), "flux-system/apps");
    let h = Harness::new(Policy::default(), &[child]);
    let timeout_only = vec![json!({"op": "add", "path": "/spec/timeout", "value": "5m"})];
    assert_eq!(patch_of(&h.mutate(&create(&ks(F, "flux-system", &[]))).await).unwrap(), timeout_only);
    let self_managed = owned_by(ks(F, "flux-system", &[]), "flux-system/flux-system");
    assert_eq!(patch_of(&h.mutate(&create(&self_managed)).await).unwrap(), timeout_only);
    assert_eq!(patch_of(&h.mutate(&create(&leaf("apps", &[]))).await).unwrap(), timeout_only);
}

#[tokio::test]
async fn mutation_is_idempotent() {
    let h = Harness::new(Policy::default(), &[]);
    let mutated = mutate_to_fixpoint(&h, &leaf("apps", &["infra"])).await;
    assert_eq!(mutated["spec"]["wait"], true);
    assert_eq!(mutated["spec"]["timeout"], "5m");
}

#[tokio::test]
async fn wait_is_not_added_when_health_checks_are_set() {
    let h = Harness::new(Policy::default(), &[]);
    let checks = json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "web" }]);
    let ops = patch_of(&h.mutate(&create(&with(leaf("apps", &[]), "healthChecks", checks))).await).unwrap();
    assert_eq!(ops, vec![json!({"op": "add", "path": "/spec/timeout", "value": "5m"})]);

    let exprs = json!([{ "apiVersion": "example.com/v1", "kind": "Thing", "current": "status.ready == true" }]);
    let ops = patch_of(&h.mutate(&create(&with(leaf("apps", &[]), "healthCheckExprs", exprs))).await).unwrap();
    assert_eq!(ops, vec![json!({"op": "add", "path": "/spec/timeout", "value": "5m"})]);
}

#[tokio::test]
async fn values_the_user_set_are_never_changed() {
    let h = Harness::new(Policy::default(), &[]);
    let obj = with(with(ks(F, "apps", &[]), "wait", json!(false)), "timeout", json!("1h"));
    assert_eq!(patch_of(&h.mutate(&create(&obj)).await), None, "no change, no patch");
}

#[tokio::test]
async fn labels_and_annotations_are_never_touched() {
    let h = Harness::new(Policy::default(), &[]);
    let mut obj = owned_by(ks(F, "apps", &[]), "flux-system/flux-system");
    obj["metadata"]["annotations"] = json!({ "note": "kept" });
    let ops = patch_of(&h.mutate(&create(&obj)).await).unwrap();
    assert!(ops.iter().all(|op| op["path"].as_str().unwrap().starts_with("/spec/")), "{ops:?}");
    let mutated = apply(&obj, &ops);
    assert_eq!(mutated["metadata"], obj["metadata"]);
}

#[tokio::test]
async fn helm_releases_are_mutated_only_with_configured_defaults() {
    let h = Harness::new(Policy::default(), &[]);
    assert_eq!(patch_of(&h.mutate(&create(&hr(F, "podinfo", &[]))).await), None);

    let p = Policy::parse("defaults: { helmRelease: { timeout: 10m, maxHistory: 5 } }", "p").unwrap();
    let h = Harness::new(p, &[]);
    let mutated = mutate_to_fixpoint(&h, &hr(F, "podinfo", &[])).await;
    assert_eq!(mutated["spec"]["timeout"], "10m");
    assert_eq!(mutated["spec"]["maxHistory"], 5);
}

#[tokio::test]
async fn empty_defaults_disable_mutation() {
    let h = Harness::new(Policy::parse("defaults: { kustomization: {} }", "p").unwrap(), &[]);
    assert_eq!(patch_of(&h.mutate(&create(&ks(F, "apps", &[]))).await), None);
}

#[tokio::test]
async fn delete_other_kinds_and_excluded_namespaces_are_not_mutated() {
    let h = Harness::new(Policy::default(), &[]);
    assert_eq!(patch_of(&h.mutate(&delete(&ks(F, "apps", &[]))).await), None);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": F}, "data": {}});
    assert_eq!(patch_of(&h.mutate(&create(&cm)).await), None);
    assert_eq!(patch_of(&h.mutate(&create(&ks("kube-system", "apps", &[]))).await), None);
}

// --- validity against the real CRDs -------------------------------------------------------

#[test]
fn the_strict_schema_rejects_what_the_api_server_rejects() {
    let schema = crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1");
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&ks(F, "ok", &["x"])));
    assert!(!validator.is_valid(&with(ks(F, "bad", &[]), "timeout", json!("5 minutes"))));
    assert!(!validator.is_valid(&with(ks(F, "bad", &[]), "wait", json!("yes"))));
    assert!(!validator.is_valid(&with(ks(F, "bad", &[]), "waitt", json!(true))));
    let mut missing = ks(F, "bad", &[]);
    missing["spec"].as_object_mut().unwrap().remove("prune");
    assert!(!validator.is_valid(&missing));
}

#[tokio::test]
async fn mutated_objects_validate_against_the_real_crd_schemas() {
    let ks_schema = crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1");
    let hr_schema = crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2");
    let p = Policy::parse(
        "defaults: { kustomization: { wait: true, timeout: 5m, retryInterval: 1m30s }, helmRelease: { timeout: 10m, maxHistory: 3 } }",
        "p",
    )
    .unwrap();
    let h = Harness::new(p, &[]);

    // The example fleet: real Kustomizations as users write them.
    let loaded = fluxgate::manifests::load(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/fleet")]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut objects: Vec<Value> = Vec::new();
    for file in ["pipeline", "multi-tier", "parallel"] {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/fleet/{file}/flux-kustomizations.yaml"));
        let text = std::fs::read_to_string(path).unwrap();
        for doc in fluxgate::manifests::split_documents(&text) {
            let mut v: Value = serde_saphyr::from_str(doc.text).unwrap();
            v["metadata"]["namespace"] = json!(F);
            // Applied by the root, so the `wait` default applies too.
            objects.push(owned_by(v, "flux-system/flux-system"));
        }
    }
    assert_eq!(objects.len(), loaded.objects.len());
    objects.push(with(leaf("checked", &[]), "healthChecks", json!([{ "kind": "Deployment", "name": "web" }])));
    objects.push(hr(F, "podinfo", &["cert-manager"]));

    for object in &objects {
        let mutated = mutate_to_fixpoint(&h, object).await;
        let schema = if object["kind"] == "HelmRelease" { &hr_schema } else { &ks_schema };
        assert_valid(schema, &mutated);
    }
}

// --- nested defaults --------------------------------------------------------------------------

/// The defaults platform teams set on HelmReleases, several levels deep, with a list among them.
const NESTED: &str = r#"
defaults:
  kustomization:
    timeout: 5m
    postBuild: { substitute: { cluster_env: prod } }
    commonMetadata: { labels: { team: platform } }
  helmRelease:
    timeout: 10m
    install: { crds: CreateReplace, remediation: { retries: 3 } }
    upgrade: { crds: CreateReplace, cleanupOnFail: true, remediation: { retries: 3, remediateLastFailure: true } }
    driftDetection: { mode: enabled, ignore: [{ paths: ["/spec/replicas"] }] }
namespaces:
  overrides:
    tenant-a:
      defaults:
        helmRelease: { upgrade: { remediation: { retries: 0 } }, driftDetection: null }
"#;

fn helm_release(ns: &str, spec: Value) -> Value {
    let mut hr = hr(ns, "podinfo", &[]);
    for (k, v) in spec.as_object().unwrap() {
        hr["spec"][k] = v.clone();
    }
    hr
}

#[tokio::test]
async fn nested_defaults_fill_every_absent_leaf_and_leave_set_values_and_lists_alone() {
    let h = Harness::new(Policy::parse(NESTED, "p").unwrap(), &[]);
    let partial = helm_release(
        "apps",
        json!({
            "install": { "remediation": { "retries": 1 } },
            "upgrade": { "cleanupOnFail": false },
            "driftDetection": { "ignore": [{ "paths": ["/metadata/annotations"] }] },
        }),
    );
    let ops = patch_of(&h.mutate(&create(&partial)).await).unwrap();
    let mut paths: Vec<&str> = ops.iter().map(|op| op["path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/spec/driftDetection/mode",
            "/spec/install/crds",
            "/spec/timeout",
            "/spec/upgrade/crds",
            "/spec/upgrade/remediation",
        ],
        "only absent leaves, at the depth where they are absent: {ops:?}"
    );
    let mutated = mutate_to_fixpoint(&h, &partial).await;
    let mut expected = partial.clone();
    expected["spec"]["timeout"] = json!("10m");
    expected["spec"]["install"]["crds"] = json!("CreateReplace");
    expected["spec"]["upgrade"]["crds"] = json!("CreateReplace");
    expected["spec"]["upgrade"]["remediation"] = json!({ "retries": 3, "remediateLastFailure": true });
    expected["spec"]["driftDetection"]["mode"] = json!("enabled");
    assert_eq!(mutated, expected, "retries: 1, cleanupOnFail: false and the ignore list are the user's");
    assert_valid(&crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2"), &mutated);

    // An object without any of them gets them all, the list as the policy wrote it.
    let bare = mutate_to_fixpoint(&h, &helm_release("apps", json!({}))).await;
    assert_eq!(bare["spec"]["driftDetection"]["ignore"], json!([{ "paths": ["/spec/replicas"] }]));
    assert_eq!(bare["spec"]["install"]["remediation"]["retries"], 3);
    assert_valid(&crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2"), &bare);
}

#[tokio::test]
async fn nested_kustomization_defaults_complete_maps_the_user_started() {
    let h = Harness::new(Policy::parse(NESTED, "p").unwrap(), &[]);
    let mut object = leaf("apps", &[]);
    object["spec"]["postBuild"] =
        json!({ "substitute": { "app": "web" }, "substituteFrom": [{ "kind": "ConfigMap", "name": "vars" }] });
    let mutated = mutate_to_fixpoint(&h, &object).await;
    assert_eq!(
        mutated["spec"]["postBuild"],
        json!({ "substitute": { "app": "web", "cluster_env": "prod" }, "substituteFrom": [{ "kind": "ConfigMap", "name": "vars" }] })
    );
    assert_eq!(mutated["spec"]["commonMetadata"], json!({ "labels": { "team": "platform" } }));
    assert_eq!(mutated["metadata"], object["metadata"], "the object's own labels are never touched");
    assert!(mutated["spec"].get("wait").is_none(), "this policy sets no wait default");
    assert_valid(&crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1"), &mutated);
}

#[tokio::test]
async fn a_namespace_override_merges_over_the_global_defaults() {
    let h = Harness::new(Policy::parse(NESTED, "p").unwrap(), &[]);
    let tenant = mutate_to_fixpoint(&h, &helm_release("tenant-a", json!({}))).await;
    assert_eq!(tenant["spec"]["upgrade"]["remediation"], json!({ "retries": 0, "remediateLastFailure": true }));
    assert_eq!(tenant["spec"]["install"]["crds"], "CreateReplace", "what the override leaves out is global");
    assert!(tenant["spec"].get("driftDetection").is_none(), "null removes a default: {tenant}");
    assert_valid(&crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2"), &tenant);
    let other = mutate_to_fixpoint(&h, &helm_release("apps", json!({}))).await;
    assert_eq!(other["spec"]["upgrade"]["remediation"]["retries"], 3);
    assert_eq!(other["spec"]["driftDetection"]["mode"], "enabled");
}

#[test]
fn a_default_the_crd_schema_rejects_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "defaults:\n  helmRelease:\n    upgrade: { remediation: { retries: three } }\n").unwrap();
    let key = "defaults.helmRelease.upgrade.remediation.retries";
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "text"])
        .args(["--manifests", dir.path().to_str().unwrap(), "--policy", policy.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(1), "serve must not start");
    let log = String::from_utf8_lossy(&serve.stderr);
    assert!(log.contains(key) && log.contains("must be a whole number"), "{log}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(["check", dir.path().to_str().unwrap(), "--policy", policy.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains(key));
}

/// The spec schemas the binary checks defaults against are those of `../shared/crds`.
/// `FLUXGATE_WRITE_SCHEMAS=1` rewrites them from the CRDs after an upgrade of Flux.
#[test]
fn shipped_spec_schemas_are_the_crds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (crd, version, shipped) in [
        ("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1", "src/policy/schemas/kustomization-v1-spec.json"),
        ("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2", "src/policy/schemas/helmrelease-v2-spec.json"),
    ] {
        let text = std::fs::read_to_string(common::crd::shared().join("crds").join(crd)).unwrap();
        let crd_value: Value = serde_saphyr::from_str(&text).unwrap();
        let served = crd_value["spec"]["versions"].as_array().unwrap().iter().find(|v| v["name"] == version).unwrap();
        let spec = &served["schema"]["openAPIV3Schema"]["properties"]["spec"];
        if std::env::var_os("FLUXGATE_WRITE_SCHEMAS").is_some() {
            std::fs::write(root.join(shipped), format!("{}\n", serde_json::to_string(spec).unwrap())).unwrap();
        }
        let ours: Value = serde_json::from_str(&std::fs::read_to_string(root.join(shipped)).unwrap()).unwrap();
        assert!(&ours == spec, "{shipped} differs from {crd} {version}: run with FLUXGATE_WRITE_SCHEMAS=1");
    }
}

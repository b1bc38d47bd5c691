//! `/mutate`: the defaults patch on the wire (base64 JSON Patch), idempotence, the health-check
//! exception, user values and metadata untouched, and validity of every mutated object against
//! the real Flux CRD schemas.

mod common;

use std::path::PathBuf;

use base64::Engine as _;
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
    let ops = patch_of(&h.mutate(&create(&leaf("apps", &[]))).await).unwrap();
    assert_eq!(
        ops,
        vec![
            json!({"op": "add", "path": "/spec/wait", "value": true}),
            json!({"op": "add", "path": "/spec/timeout", "value": "5m"}),
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

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The openAPIV3Schema of the served version `version` of a CRD file.
fn crd_schema(file: &str, version: &str) -> Value {
    let text = std::fs::read_to_string(shared().join("crds").join(file)).expect("the Flux CRDs are in ../shared/crds");
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} serves {version}"));
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    schema
}

/// Rejects unknown fields the way the API server's strict field validation does: every object
/// schema that lists its properties (and does not preserve unknown fields) gets
/// `additionalProperties: false`.
fn strict(schema: &mut Value) {
    if let Value::Object(map) = schema {
        let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
            map.insert("additionalProperties".into(), json!(false));
        }
        for (_, v) in map.iter_mut() {
            strict(v);
        }
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(strict);
    }
}

fn assert_valid(schema: &Value, object: &Value) {
    let validator = jsonschema::validator_for(schema).expect("the CRD schema compiles");
    let errors: Vec<String> = validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{} is invalid: {errors:?}", object["metadata"]["name"]);
}

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

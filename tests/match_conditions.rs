//! The `matchConditions` of `deploy/base/webhooks.yaml`, evaluated with a CEL interpreter on the
//! AdmissionReviews the API server would build: what is sent to fluxgate and what is skipped.
//!
//! Validation: per rule, a request changing what the rule reads is sent and an unchanged
//! re-apply is not, and nothing skipped could have been denied. Mutation: the shipped expression
//! sends exactly the objects the shipped policy would patch.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use fluxgate::object::{FluxObject, kind_of};
use fluxgate::policy::Policy;
use serde_json::{Value, json};

const F: &str = "flux-system";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    fluxgate::manifests::split_documents(&text).iter().map(|d| serde_saphyr::from_str(d.text).unwrap()).collect()
}

/// The compiled `matchConditions` of one webhook configuration of `deploy/base/webhooks.yaml`.
struct Conditions(Vec<(String, cel::Program)>);

impl Conditions {
    fn of(kind: &str) -> Conditions {
        let config = documents("deploy/base/webhooks.yaml").into_iter().find(|d| d["kind"] == kind).unwrap();
        let conditions = config["webhooks"][0]["matchConditions"].as_array().expect("matchConditions are set");
        Conditions(
            conditions
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap().to_string();
                    let program = cel::Program::compile(c["expression"].as_str().unwrap())
                        .unwrap_or_else(|e| panic!("{name} does not compile: {e:?}"));
                    (name, program)
                })
                .collect(),
        )
    }

    /// Whether the API server sends `review` to the webhook: every condition is true. An
    /// evaluation error fails the test, since under `failurePolicy: Fail` it rejects the request.
    fn sends(&self, review: &Value) -> bool {
        let request = &review["request"];
        self.sends_parts(cel_value(request), cel_value(&request["object"]), cel_value(&request["oldObject"]))
    }

    /// [`Conditions::sends`] with the variables already converted (for loops over many pairs).
    fn sends_parts(&self, request: cel::Value, object: cel::Value, old_object: cel::Value) -> bool {
        let mut context = cel::Context::default();
        context.add_variable_from_value("request", request);
        context.add_variable_from_value("object", object);
        context.add_variable_from_value("oldObject", old_object);
        self.0.iter().all(|(name, program)| match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{name} gave {other:?}"),
        })
    }
}

/// A JSON value as the API server hands it to CEL (integers stay integers).
fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(|| cel::Value::Float(n.as_f64().unwrap()), cel::Value::Int),
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(cel_value).collect())),
        Value::Object(m) => {
            let map: HashMap<cel::objects::Key, cel::Value> =
                m.iter().map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), cel_value(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

/// A Kustomization as it sits in a cluster: applied by a parent, with dependsOn, health checks,
/// status and managedFields.
fn live_kustomization() -> Value {
    let mut o = owned_by(ks(F, "apps", &["infra", "monitoring/prometheus"]), "flux-system/flux-system");
    o["spec"]["healthChecks"] =
        json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "apps" }]);
    o["spec"]["timeout"] = json!("5m");
    o["metadata"]["labels"]["app.kubernetes.io/part-of"] = json!("shop");
    o["metadata"]["managedFields"] = json!([{
        "manager": "kustomize-controller",
        "operation": "Apply",
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "time": "2026-11-26T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": { "f:spec": { "f:dependsOn": {} } }
    }]);
    o["status"] = json!({ "observedGeneration": 1, "lastAppliedRevision": "main@sha1:0123" });
    o
}

/// What Flux's drift dry-run of an unchanged object looks like: the same spec and labels; the
/// bookkeeping around them moved on.
fn reapplied(old: &Value) -> Value {
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("101");
    new["metadata"]["annotations"] = json!({ "reconcile.fluxcd.io/requestedAt": "2026-11-26T10:05:00Z" });
    if let Some(entry) = new["metadata"].get_mut("managedFields").and_then(|m| m.get_mut(0)) {
        entry["time"] = json!("2026-11-26T10:05:00Z");
    }
    new["status"]["lastAppliedRevision"] = json!("main@sha1:4567");
    new
}

/// A cache in which the live Kustomization sits on an old cycle, has a dangling target and a
/// long chain: whatever skipping loses must be at most a warning on it.
fn troubled_harness() -> Harness {
    let policy =
        Policy::parse("rules: { maxDepth: { action: deny, limit: 2 }, crossNamespaceDependsOn: deny }", "p").unwrap();
    Harness::new(policy, &[live_kustomization(), ks(F, "infra", &["apps"])])
}

#[tokio::test]
async fn validation_skips_an_unchanged_reapply_and_loses_no_denial() {
    let validation = Conditions::of("ValidatingWebhookConfiguration");
    let old = live_kustomization();
    let new = reapplied(&old);
    for review in [update(&new, &old), review("UPDATE", Some(&new), Some(&old), true)] {
        assert!(!validation.sends(&review), "an unchanged re-apply must not be sent");
        // Were it sent anyway, it would be allowed: skipping it loses only warnings.
        let response = troubled_harness().validate(&review).await;
        assert!(!allowed(&response).is_empty(), "the old problems are warned about: {response}");
    }
    // A HelmRelease's re-apply is skipped in the same way.
    let old = hr(F, "podinfo", &["cert-manager"]);
    assert!(!validation.sends(&update(&reapplied(&old), &old)));
}

#[test]
fn validation_sends_create_and_delete() {
    let validation = Conditions::of("ValidatingWebhookConfiguration");
    let o = live_kustomization();
    assert!(validation.sends(&create(&o)), "cycle, danglingDependsOn, ...: a CREATE adds every edge");
    assert!(validation.sends(&delete(&o)), "deleteWithDependents reads DELETEs");
    assert!(validation.sends(&create(&hr(F, "podinfo", &[]))));
    assert!(validation.sends(&delete(&hr(F, "podinfo", &[]))));
}

/// A change to an object.
type Edit = Box<dyn Fn(&mut Value)>;

fn push(list: &mut Value, entry: Value) {
    list.as_array_mut().unwrap().push(entry);
}

#[tokio::test]
async fn validation_sends_each_change_a_rule_reads() {
    let validation = Conditions::of("ValidatingWebhookConfiguration");
    let old = live_kustomization();
    let changes: Vec<(&str, Edit)> = vec![
        (
            "cycle, danglingDependsOn: a new dependsOn target",
            Box::new(|o| push(&mut o["spec"]["dependsOn"], json!({ "name": "new" }))),
        ),
        ("cycle: a dependsOn entry removed", Box::new(|o| o["spec"]["dependsOn"] = json!([{ "name": "infra" }]))),
        (
            "every dependsOn removed",
            Box::new(|o| {
                o["spec"].as_object_mut().unwrap().remove("dependsOn");
            }),
        ),
        (
            "crossNamespaceDependsOn: a target moved to another namespace",
            Box::new(|o| o["spec"]["dependsOn"][0]["namespace"] = json!("other")),
        ),
        (
            "duplicateDependsOn: a target listed twice",
            Box::new(|o| push(&mut o["spec"]["dependsOn"], json!({ "name": "infra" }))),
        ),
        ("maxDepth: a dependsOn target renamed", Box::new(|o| o["spec"]["dependsOn"][0]["name"] = json!("infra-v2"))),
        ("cycle: spec.wait turned on", Box::new(|o| o["spec"]["wait"] = json!(true))),
        (
            "cycle: a Kustomization health check added",
            Box::new(|o| {
                push(&mut o["spec"]["healthChecks"], json!({ "kind": "Kustomization", "name": "apps-child" }))
            }),
        ),
        (
            "cycle: health checks removed",
            Box::new(|o| {
                o["spec"].as_object_mut().unwrap().remove("healthChecks");
            }),
        ),
        (
            "cycle, danglingDependsOn: the owner's name label changed",
            Box::new(|o| o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("apps-parent")),
        ),
        (
            "cycle, danglingDependsOn: the owner's namespace label changed",
            Box::new(|o| o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!("apps")),
        ),
        (
            "danglingDependsOn: the owner labels removed",
            Box::new(|o| {
                o["metadata"].as_object_mut().unwrap().remove("labels");
            }),
        ),
    ];
    for (what, change) in &changes {
        let mut new = reapplied(&old);
        change(&mut new);
        assert!(validation.sends(&update(&new, &old)), "{what}: must be sent");
        // And the other way round (the change undone).
        assert!(validation.sends(&update(&old, &new)), "{what}, undone: must be sent");
    }
    // From no wait to wait: false is a change of nothing (absent and false read the same).
    let mut with_false = old.clone();
    with_false["spec"]["wait"] = json!(false);
    assert!(!validation.sends(&update(&with_false, &old)));
    let mut with_true = old.clone();
    with_true["spec"]["wait"] = json!(true);
    assert!(validation.sends(&update(&with_true, &with_false)));
}

/// Oracle: for every pair among many variants of an object, a pair fluxgate reads differently is
/// sent, and a pair whose read fields are written the same is not.
#[test]
fn validation_sends_every_update_fluxgate_reads_differently() {
    let validation = Conditions::of("ValidatingWebhookConfiguration");
    let base = live_kustomization();
    let mut variants = vec![base.clone(), reapplied(&base)];
    let edits: Vec<Edit> = vec![
        Box::new(|o| o["spec"]["wait"] = json!(true)),
        Box::new(|o| o["spec"]["wait"] = json!(false)),
        Box::new(|o| o["spec"]["dependsOn"] = json!([])),
        Box::new(|o| o["spec"]["dependsOn"] = json!([{ "name": "infra", "namespace": F }])),
        Box::new(|o| o["spec"]["healthChecks"] = json!([{ "kind": "Kustomization", "name": "infra" }])),
        Box::new(|o| o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("other")),
        Box::new(|o| {
            o["metadata"]["labels"].as_object_mut().unwrap().remove("kustomize.toolkit.fluxcd.io/namespace");
        }),
        Box::new(|o| o["spec"]["interval"] = json!("1h")),
        Box::new(|o| o["spec"]["suspend"] = json!(true)),
        Box::new(|o| o["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:wait"] = json!({})),
        Box::new(|o| {
            o["metadata"].as_object_mut().unwrap().remove("managedFields");
        }),
    ];
    for i in 0..edits.len() {
        for j in i..edits.len() {
            let mut v = base.clone();
            edits[i](&mut v);
            edits[j](&mut v);
            variants.push(v);
        }
    }
    let read = |o: &Value| FluxObject::from_value(kind_of(o).unwrap(), o, F, "").unwrap();
    let written = |o: &Value| {
        let labels = &o["metadata"]["labels"];
        (
            o["spec"]["dependsOn"].clone(),
            o["spec"]["wait"].as_bool().unwrap_or(false),
            o["spec"]["healthChecks"].clone(),
            labels["kustomize.toolkit.fluxcd.io/name"].clone(),
            labels["kustomize.toolkit.fluxcd.io/namespace"].clone(),
            wait_unowned(o),
        )
    };
    // The request without its objects: the expressions read only its operation and kind.
    let mut request = update(&base, &base)["request"].clone();
    request["object"] = Value::Null;
    request["oldObject"] = Value::Null;
    let request = cel_value(&request);
    let converted: Vec<cel::Value> = variants.iter().map(cel_value).collect();
    let (mut sent, mut skipped) = (0, 0);
    for (old, old_cel) in variants.iter().zip(&converted) {
        for (new, new_cel) in variants.iter().zip(&converted) {
            let sends = validation.sends_parts(request.clone(), new_cel.clone(), old_cel.clone());
            if read(old) != read(new) {
                assert!(sends, "read differently but skipped:\nold {old}\nnew {new}");
            }
            if written(old) == written(new) {
                assert!(!sends, "nothing read changed but sent:\nold {old}\nnew {new}");
            }
            if sends { sent += 1 } else { skipped += 1 }
        }
    }
    assert!(sent > 0 && skipped > variants.len(), "sent {sent}, skipped {skipped}");
}

/// Whether an entry of `metadata.managedFields` owns `spec.wait`.
fn wait_owned(o: &Value) -> bool {
    o["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|entries| entries.iter().any(|e| !e["fieldsV1"]["f:spec"]["f:wait"].is_null()))
}

/// Whether `spec.wait` is unowned as fluxgate reads it: managedFields set, no entry owning it.
fn wait_unowned(o: &Value) -> bool {
    o["metadata"]["managedFields"].as_array().is_some_and(|entries| !entries.is_empty()) && !wait_owned(o)
}

/// The policy `deploy/` ships, from its ConfigMap.
fn shipped_policy() -> Policy {
    let config = documents("deploy/base/policy.yaml").remove(0);
    Policy::parse(config["data"]["policy.yaml"].as_str().unwrap(), "deploy/base/policy.yaml").unwrap()
}

/// Oracle: the shipped mutation expression sends an object exactly when the shipped policy
/// would patch it with some cache (an empty one, or one where the object is a parent), over every
/// combination of the fields the defaults and their exceptions read.
#[tokio::test]
async fn mutation_sends_exactly_what_the_shipped_policy_may_patch() {
    let mutation = Conditions::of("MutatingWebhookConfiguration");
    let caches = [
        Harness::new(shipped_policy(), &[]),
        Harness::new(
            shipped_policy(),
            &[owned_by(ks(F, "child", &[]), "flux-system/apps"), owned_by(hr(F, "child", &[]), "flux-system/podinfo")],
        ),
    ];
    let managed = |owns_wait: bool| {
        let mut spec = json!({ "f:interval": {}, "f:path": {} });
        if owns_wait {
            spec["f:wait"] = json!({});
        }
        json!([{ "manager": "kustomize-controller", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": spec } }])
    };
    let spec_options: [(&str, Vec<Value>); 4] = [
        ("wait", vec![json!(true), json!(false)]),
        ("timeout", vec![json!("5m")]),
        ("healthChecks", vec![json!([]), json!([{ "kind": "Deployment", "name": "web", "namespace": "apps" }])]),
        ("healthCheckExprs", vec![json!([{ "apiVersion": "v1", "kind": "X", "current": "true" }])]),
    ];
    let metadata_options: [(&str, Vec<Value>); 2] = [
        ("managedFields", vec![json!([]), managed(false), managed(true)]),
        (
            "labels",
            vec![
                json!({ "kustomize.toolkit.fluxcd.io/name": "parent", "kustomize.toolkit.fluxcd.io/namespace": F }),
                json!({ "kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": F }),
                json!({ "kustomize.toolkit.fluxcd.io/name": "parent" }),
            ],
        ),
    ];
    // Every field absent or set to one of its values.
    let mut variants = vec![ks(F, "apps", &["infra"]), hr(F, "podinfo", &[])];
    for (section, options) in
        spec_options.iter().map(|o| ("spec", o)).chain(metadata_options.iter().map(|o| ("metadata", o)))
    {
        let (field, values) = options;
        variants = variants
            .into_iter()
            .flat_map(|object| {
                let mut out = vec![object.clone()];
                for v in values {
                    let mut o = object.clone();
                    o[section][*field] = v.clone();
                    out.push(o);
                }
                out
            })
            .collect();
    }
    let (mut sent, mut skipped) = (0, 0);
    for object in &variants {
        for review in [create(object), update(object, object)] {
            let mut patched_by_some_cache = false;
            for h in &caches {
                patched_by_some_cache |= !h.mutate(&review).await["patch"].is_null();
            }
            assert_eq!(mutation.sends(&review), patched_by_some_cache, "{object}");
            if patched_by_some_cache { sent += 1 } else { skipped += 1 }
        }
    }
    assert!(sent > 0 && skipped > 0, "sent {sent}, skipped {skipped}");
}

#[tokio::test]
async fn mutation_skips_a_real_object_once_the_webhook_completed_it() {
    let mutation = Conditions::of("MutatingWebhookConfiguration");
    // The example fleet's Kustomizations as users write them, with the managedFields
    // kustomize-controller's server-side apply gives them: it owns what Git says.
    let mut objects = Vec::new();
    for file in ["pipeline", "multi-tier", "parallel"] {
        for mut o in documents(&format!("examples/fleet/{file}/flux-kustomizations.yaml")) {
            o["metadata"]["namespace"] = json!(F);
            let owned: serde_json::Map<String, Value> =
                o["spec"].as_object().unwrap().keys().map(|k| (format!("f:{k}"), json!({}))).collect();
            o["metadata"]["managedFields"] = json!([{ "manager": "kustomize-controller", "operation": "Apply",
                "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": owned } }]);
            objects.push(o);
        }
    }
    let h = Harness::new(shipped_policy(), &objects);
    let (mut completed_by_the_webhook, mut skipped) = (0, 0);
    for object in &objects {
        let first = create(object);
        let response = h.mutate(&first).await;
        if !response["patch"].is_null() {
            assert!(mutation.sends(&first), "a patch would be lost: {object}");
        }
        let mut completed = object.clone();
        if let Some(patch) = response["patch"].as_str() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut completed, &patch).unwrap();
            completed_by_the_webhook += 1;
        }
        let again = update(&reapplied(&completed), &completed);
        // Only an object carrying fluxgate's own wait default is sent again: the cache decides
        // whether it stays. Sent or not, the completed object gets no patch.
        let own_wait = completed["spec"]["wait"] == true && !wait_owned(&completed);
        assert_eq!(mutation.sends(&again), own_wait, "{completed}");
        assert!(h.mutate(&again).await["patch"].is_null(), "{completed}");
        if !own_wait {
            skipped += 1;
        }
    }
    assert!(completed_by_the_webhook > 0 && skipped > 0, "completed {completed_by_the_webhook}, skipped {skipped}");
}

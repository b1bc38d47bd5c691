//! The `matchConditions` fluxgate derives from a policy (`src/webhooks/`), evaluated with a CEL
//! interpreter on the AdmissionReviews the API server would build: what is sent to fluxgate and
//! what is skipped.
//!
//! Validation: per rule, a request changing what the rule reads is sent and an unchanged
//! re-apply is not, and nothing skipped could have been denied. Mutation: the expression sends
//! exactly the objects the policy would patch. Then the same for a set of policies: for each
//! default and rule, a request that needs it is sent (and the handler acts on it) and an
//! unchanged re-apply is not.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use fluxgate::object::{FluxKind, FluxObject, kind_of};
use fluxgate::policy::Policy;
use fluxgate::webhooks::{Hook, cel_value, match_conditions, needs::needs};
use serde_json::{Value, json};

const F: &str = "flux-system";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    fluxgate::manifests::split_documents(&text).iter().map(|d| serde_saphyr::from_str(d.text).unwrap()).collect()
}

/// The compiled `matchConditions` of one webhook, as fluxgate writes them for a policy.
struct Conditions(Vec<(String, cel::Program)>);

impl Conditions {
    fn of(policy: &Policy, hook: Hook) -> Conditions {
        Conditions(
            match_conditions(policy, hook)
                .into_iter()
                .map(|c| {
                    let program = cel::Program::compile(&c.expression)
                        .unwrap_or_else(|e| panic!("{} does not compile: {e:?}", c.name));
                    (c.name.to_string(), program)
                })
                .collect(),
        )
    }

    /// The conditions for the policy `deploy/` ships.
    fn shipped(hook: Hook) -> Conditions {
        Conditions::of(&shipped_policy(), hook)
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
    let validation = Conditions::shipped(Hook::Validate);
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
    let validation = Conditions::shipped(Hook::Validate);
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
    let validation = Conditions::shipped(Hook::Validate);
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
    let validation = Conditions::shipped(Hook::Validate);
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

/// Whether the mutation conditions send `review`, asserting that they do exactly when some of
/// `caches` patches it (`what` names the case in a failure).
async fn sent_as_patched(mutation: &Conditions, caches: &[Harness], review: &Value, what: &str) -> bool {
    let mut patched_by_some_cache = false;
    for h in caches {
        patched_by_some_cache |= !h.mutate(review).await["patch"].is_null();
    }
    assert_eq!(mutation.sends(review), patched_by_some_cache, "{what}");
    patched_by_some_cache
}

/// Oracle: the shipped mutation expression sends an object exactly when the shipped policy
/// would patch it with some cache (an empty one, or one where the object is a parent), over every
/// combination of the fields the defaults and their exceptions read.
#[tokio::test]
async fn mutation_sends_exactly_what_the_shipped_policy_may_patch() {
    let mutation = Conditions::shipped(Hook::Mutate);
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
            if sent_as_patched(&mutation, &caches, &review, &object.to_string()).await {
                sent += 1
            } else {
                skipped += 1
            }
        }
    }
    assert!(sent > 0 && skipped > 0, "sent {sent}, skipped {skipped}");
}

#[tokio::test]
async fn mutation_skips_a_real_object_once_the_webhook_completed_it() {
    let mutation = Conditions::shipped(Hook::Mutate);
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

// --- generated conditions on a set of policies ------------------------------------------------

/// The policies the generated conditions are held to: the shipped one, every rule on, nested
/// HelmRelease defaults, per-namespace defaults, audit only.
fn policies() -> Vec<(&'static str, Policy)> {
    // The texts are indented with the code: the least indented line starts at column 0.
    let parse = |name: &str, text: &str| {
        let indent = text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
        let text: Vec<&str> = text.lines().map(|l| l.get(indent.unwrap_or(0)..).unwrap_or("")).collect();
        Policy::parse(&text.join("\n"), name).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    vec![
        ("shipped", shipped_policy()),
        (
            "every rule on",
            parse(
                "every rule on",
                "rules: { cycle: deny, danglingDependsOn: deny, crossNamespaceDependsOn: deny, deleteWithDependents: deny, \
                 duplicateDependsOn: deny, maxDepth: { action: deny, limit: 3 } }",
            ),
        ),
        (
            "nested HelmRelease defaults",
            parse(
                "nested HelmRelease defaults",
                "
                 defaults:
                   kustomization: { timeout: 5m }
                   helmRelease:
                     timeout: 10m
                     install: { crds: Create, remediation: { retries: 3 } }
                     upgrade: { cleanupOnFail: true, remediation: { retries: 3, remediateLastFailure: true } }
                     driftDetection: { mode: enabled }
                     values: { nginx-ingress: { enabled: true } }",
            ),
        ),
        (
            "per-namespace defaults",
            parse(
                "per-namespace defaults",
                "
                 defaults: { kustomization: { wait: true, timeout: 5m }, helmRelease: { timeout: 10m } }
                 namespaces:
                   exclude: [kube-system, legacy]
                   overrides:
                     tenant-a: { defaults: { helmRelease: { install: { crds: CreateReplace } } } }
                     tenant-b: { defaults: { kustomization: { wait: null, retryInterval: 2m } } }
                     tenant-c: { enforcement: audit }
                     legacy: { defaults: { helmRelease: { timeout: 30m } } }",
            ),
        ),
        (
            "dependsOn rules only",
            parse(
                "dependsOn rules only",
                "rules: { cycle: off, danglingDependsOn: deny, crossNamespaceDependsOn: deny, deleteWithDependents: off }",
            ),
        ),
        (
            "audit only",
            parse(
                "audit only",
                "
                 enforcement: audit
                 rules: { crossNamespaceDependsOn: warn, maxDepth: { action: deny, limit: 4 } }
                 defaults: { kustomization: {}, helmRelease: { install: { crds: Create } } }",
            ),
        ),
    ]
}

fn patched(object: &Value, response: &Value) -> Value {
    use base64::Engine as _;
    let mut out = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

/// The value at a dotted default path (`helmRelease.install.crds`) of `spec`.
fn leaf<'v>(spec: &'v Value, what: &str) -> Option<&'v Value> {
    let path = what.strip_prefix("default ")?.split(' ').next()?;
    let mut node = spec;
    for key in path.split('.').skip(1) {
        node = node.get(key)?;
    }
    Some(node)
}

#[tokio::test]
async fn each_default_and_rule_of_each_policy_is_sent_and_an_unchanged_reapply_is_not() {
    for (name, policy) in policies() {
        let needs = needs(&policy);
        let defaults = needs.iter().filter(|n| n.what.starts_with("default ")).count();
        let leaves: usize = FluxKind::ALL
            .iter()
            .map(|&k| fluxgate::webhooks::leaves(policy.defaults.of(k)).len())
            .sum::<usize>()
            + policy
                .namespace_defaults
                .iter()
                .filter(|(ns, _)| !policy.is_excluded(ns))
                .map(|(_, d)| FluxKind::ALL.iter().map(|&k| fluxgate::webhooks::leaves(d.of(k)).len()).sum::<usize>())
                .sum::<usize>();
        assert_eq!(defaults, leaves, "{name}: one request per default, per namespace with its own");
        let rules_on =
            fluxgate::policy::Rule::ALL.iter().filter(|&&r| policy.action(r) != fluxgate::policy::Action::Off).count();
        let rule_needs = needs.iter().filter(|n| n.what.starts_with("rule ")).count();
        assert!(rule_needs >= rules_on, "{name}: {rule_needs} requests for {rules_on} rules on");

        for need in &needs {
            let conditions = Conditions::of(&policy, need.hook);
            let what = format!("{name}: {}", need.what);
            assert!(conditions.sends(&need.review), "{what}: a request that needs it must be sent");
            let h = Harness::new(policy.clone(), &need.cache);
            let request = &need.review["request"];
            match need.hook {
                Hook::Mutate => {
                    let response = h.mutate(&need.review).await;
                    assert!(response["patch"].is_string(), "{what}: the handler patches it: {response}");
                    let completed = patched(&request["object"], &response);
                    if need.what.starts_with("default ") {
                        assert!(
                            leaf(&completed["spec"], &need.what).is_some(),
                            "{what}: the patch adds it: {completed}"
                        );
                    }
                    let again = update(&reapplied(&completed), &completed);
                    assert!(!conditions.sends(&again), "{what}: the completed object re-applied is not sent");
                    assert!(h.mutate(&again).await["patch"].is_null(), "{what}: and would get no patch");
                }
                Hook::Validate => {
                    let response = h.validate(&need.review).await;
                    assert!(
                        response["allowed"] == false || !warnings(&response).is_empty(),
                        "{what}: the rule fires: {response}"
                    );
                    if request["operation"] != "DELETE" {
                        let object = &request["object"];
                        let again = update(&reapplied(object), object);
                        assert!(!conditions.sends(&again), "{what}: an unchanged re-apply is not sent");
                    }
                }
            }
        }
    }
}

/// What issue 20 was about: conditions written for one policy hold back what another needs.
/// The check fluxgate runs on a registered configuration finds exactly those.
#[test]
fn conditions_of_the_shipped_policy_hold_back_what_another_policy_adds() {
    let shipped = Conditions::shipped(Hook::Mutate);
    for (name, policy) in policies().into_iter().skip(1) {
        let helm_defaults: Vec<_> =
            needs(&policy).into_iter().filter(|n| n.what.starts_with("default helmRelease")).collect();
        for need in &helm_defaults {
            assert!(!shipped.sends(&need.review), "{name}: {}", need.what);
        }
        let [_, registered] = fluxgate::webhooks::configurations(
            &shipped_policy(),
            "fluxgate-system",
            fluxgate::webhooks::Conditions::Included,
        );
        let skipped = fluxgate::webhooks::registered::skipped(&registered, Hook::Mutate, &needs(&policy));
        let named: Vec<&str> = skipped.iter().map(|s| s.what.as_str()).collect();
        for need in &helm_defaults {
            assert!(named.contains(&need.what.as_str()), "{name}: {} is reported: {named:?}", need.what);
        }
    }
}

/// Oracle, per policy: over objects of both kinds in every namespace the policy treats apart,
/// with every subset of the defaults' leaves already set, the mutation conditions send an
/// object exactly when the handler patches it with some cache (empty, or one where the object
/// is a parent).
#[tokio::test]
async fn mutation_sends_exactly_what_each_policy_may_patch() {
    use fluxgate::webhooks::needs::object;
    for (name, policy) in policies() {
        let mutation = Conditions::of(&policy, Hook::Mutate);
        let mut namespaces: Vec<String> = vec!["apps".into(), "kube-system".into()];
        namespaces.extend(policy.namespace_defaults.keys().cloned());
        namespaces.extend(policy.excluded_namespaces.iter().cloned());
        namespaces.sort();
        namespaces.dedup();
        let (mut sent, mut skipped) = (0, 0);
        for ns in &namespaces {
            let caches = [
                Harness::new(policy.clone(), &[]),
                Harness::new(policy.clone(), &[owned_by(ks(ns, "child", &[]), &format!("{ns}/probe"))]),
            ];
            for kind in FluxKind::ALL {
                // Every default of the kind in any scope, filled in.
                let mut full = serde_json::Map::new();
                let scopes = std::iter::once(&policy.defaults).chain(policy.namespace_defaults.values());
                for d in scopes {
                    fluxgate::policy::defaults::complete(&mut full, d.of(kind));
                }
                let leaves = fluxgate::webhooks::leaves(&full);
                assert!(leaves.len() <= 10, "{name}: too many leaves to try every subset");
                for labelled in [true, false] {
                    for mask in 0..(1u32 << leaves.len()) {
                        let mut o = object(kind, ns, "probe", &[]);
                        if !labelled {
                            o["metadata"].as_object_mut().unwrap().remove("labels");
                        }
                        for (i, path) in leaves.iter().enumerate() {
                            if mask & (1 << i) != 0 {
                                let mut node = &mut o["spec"];
                                for key in path {
                                    node = &mut node[key.as_str()];
                                }
                                let mut value = &Value::Object(full.clone());
                                for key in path {
                                    value = &value[key.as_str()];
                                }
                                *node = value.clone();
                            }
                        }
                        for review in [create(&o), update(&o, &o)] {
                            let what = format!("{name}: {o}");
                            if sent_as_patched(&mutation, &caches, &review, &what).await {
                                sent += 1
                            } else {
                                skipped += 1
                            }
                        }
                    }
                }
            }
        }
        assert!(sent > 0 && skipped > 0, "{name}: sent {sent}, skipped {skipped}");
    }
}

/// Oracle, per policy: over many variants of a live Kustomization in a cache where it sits on
/// an old cycle with a dangling target and a long chain, every UPDATE the validation conditions
/// skip would have been allowed.
#[tokio::test]
async fn validation_skips_nothing_any_policy_would_deny() {
    let base = live_kustomization();
    let edits: Vec<Edit> = vec![
        Box::new(|o| o["spec"]["wait"] = json!(true)),
        Box::new(|o| o["spec"]["dependsOn"] = json!([])),
        Box::new(|o| o["spec"]["dependsOn"] = json!([{ "name": "infra" }, { "name": "infra" }])),
        Box::new(|o| o["spec"]["dependsOn"] = json!([{ "name": "infra", "namespace": "other" }])),
        Box::new(|o| o["spec"]["dependsOn"] = json!([{ "name": "ghost" }])),
        Box::new(|o| o["spec"]["healthChecks"] = json!([{ "kind": "Kustomization", "name": "infra" }])),
        Box::new(|o| o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("other")),
        Box::new(|o| {
            o["metadata"].as_object_mut().unwrap().remove("labels");
        }),
        Box::new(|o| o["spec"]["interval"] = json!("1h")),
        Box::new(|o| o["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:wait"] = json!({})),
    ];
    let mut variants = vec![base.clone()];
    for i in 0..edits.len() {
        for j in i..edits.len() {
            let mut v = base.clone();
            edits[i](&mut v);
            edits[j](&mut v);
            variants.push(v);
        }
    }
    for (name, policy) in policies() {
        let validation = Conditions::of(&policy, Hook::Validate);
        let h = Harness::new(policy.clone(), &[live_kustomization(), ks(F, "infra", &["apps"])]);
        let (mut sent, mut skipped) = (0, 0);
        for old in &variants {
            for new in &variants {
                let review = update(&reapplied(new), old);
                if validation.sends(&review) {
                    sent += 1;
                    continue;
                }
                skipped += 1;
                let response = h.validate(&review).await;
                assert_eq!(
                    response["allowed"], true,
                    "{name}: skipped but would be denied:\nold {old}\nnew {new}\n{response}"
                );
            }
        }
        assert!(sent > 0 && skipped >= variants.len(), "{name}: sent {sent}, skipped {skipped}");
    }
}

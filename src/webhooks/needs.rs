//! One request per default and per rule of a policy that the API server must send to fluxgate
//! for the default or rule to take effect: what a registered configuration is checked against
//! (see [`super::registered`]), and what the tests send through the generated conditions and
//! the handlers.

use serde_json::{Map, Value, json};

use super::{Hook, leaves};
use crate::object::{FluxKind, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};
use crate::policy::defaults::{SpecDefaults, complete};
use crate::policy::{Action, Policy, Rule};

/// A request the policy needs sent, and the objects a cache must hold for the request to make
/// the rule fire (validation only; defaults need none).
#[derive(Clone, Debug)]
pub struct Need {
    pub hook: Hook,
    /// What would not take effect if the request were skipped, as log lines name it:
    /// `default helmRelease.install.crds in namespace tenant-a`, `rule cycle`.
    pub what: String,
    /// The AdmissionReview the API server would send.
    pub review: Value,
    pub cache: Vec<Value>,
}

fn api_version(kind: FluxKind) -> &'static str {
    match kind {
        FluxKind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
        FluxKind::HelmRelease => "helm.toolkit.fluxcd.io/v2",
    }
}

/// A valid object of `kind` as Git would have it, applied by the Kustomization `parent` of
/// its namespace.
pub fn object(kind: FluxKind, namespace: &str, name: &str, depends_on: &[Value]) -> Value {
    let spec = match kind {
        FluxKind::Kustomization => json!({
            "interval": "10m", "prune": true, "path": format!("./{name}"),
            "sourceRef": { "kind": "GitRepository", "name": "flux-system" } }),
        FluxKind::HelmRelease => json!({
            "interval": "10m",
            "chart": { "spec": { "chart": name, "sourceRef": { "kind": "HelmRepository", "name": "charts" } } } }),
    };
    let mut o = json!({
        "apiVersion": api_version(kind), "kind": kind.as_str(),
        "metadata": { "name": name, "namespace": namespace,
            "labels": { OWNER_NAME_LABEL: "parent", OWNER_NAMESPACE_LABEL: namespace } },
        "spec": spec,
    });
    if !depends_on.is_empty() {
        o["spec"]["dependsOn"] = Value::Array(depends_on.to_vec());
    }
    o
}

fn resource(kind: FluxKind) -> &'static str {
    match kind {
        FluxKind::Kustomization => "kustomizations",
        FluxKind::HelmRelease => "helmreleases",
    }
}

/// The AdmissionReview for `operation` as the API server builds it.
pub fn review(operation: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    let o = object.or(old).expect("a request has an object or an old object");
    let kind = if o["kind"] == "HelmRelease" { FluxKind::HelmRelease } else { FluxKind::Kustomization };
    let (group, version) = api_version(kind).split_once('/').expect("group/version");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": { "group": group, "version": version, "kind": kind.as_str() },
            "resource": { "group": group, "version": version, "resource": resource(kind) },
            "requestKind": { "group": group, "version": version, "kind": kind.as_str() },
            "requestResource": { "group": group, "version": version, "resource": resource(kind) },
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:flux-system:kustomize-controller" },
            "object": object.cloned().unwrap_or(Value::Null),
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": match operation {
                "CREATE" => "CreateOptions",
                "UPDATE" => "UpdateOptions",
                _ => "DeleteOptions",
            } },
        }
    })
}

/// A namespace that the policy neither excludes nor gives defaults of its own.
fn plain_namespace(policy: &Policy) -> String {
    (0..)
        .map(|i| if i == 0 { "apps".to_string() } else { format!("apps-{i}") })
        .find(|ns| !policy.is_excluded(ns) && !policy.namespace_defaults.contains_key(ns))
        .expect("some namespace is free")
}

/// Removes the leaf at `path` from `spec`.
fn remove(spec: &mut Map<String, Value>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            spec.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(inner)) = spec.get_mut(first) {
                remove(inner, rest);
            }
        }
    }
}

fn default_needs(out: &mut Vec<Need>, kind: FluxKind, namespace: &str, scope: &str, defaults: &SpecDefaults) {
    let key = match kind {
        FluxKind::Kustomization => "kustomization",
        FluxKind::HelmRelease => "helmRelease",
    };
    for path in leaves(defaults) {
        // Everything else already set, so that the request needs exactly this default.
        let mut o = object(kind, namespace, "probe", &[]);
        let spec = o["spec"].as_object_mut().expect("spec is a mapping");
        complete(spec, defaults);
        remove(spec, &path);
        if kind == FluxKind::Kustomization && path == ["wait"] {
            // Flux ignores health checks under `wait`, so fluxgate adds no `wait` beside them.
            spec.remove("healthChecks");
            spec.remove("healthCheckExprs");
        }
        out.push(Need {
            hook: Hook::Mutate,
            what: format!("default {key}.{}{scope}", path.join(".")),
            review: review("CREATE", Some(&o), None),
            cache: Vec::new(),
        });
    }
}

fn dep(name: &str) -> Value {
    json!({ "name": name })
}

fn rule_needs(out: &mut Vec<Need>, policy: &Policy, ns: &str) {
    let kind = FluxKind::Kustomization;
    let k = |name: &str, deps: &[Value]| object(kind, ns, name, deps);
    let update = |old: &Value, new: &Value| review("UPDATE", Some(new), Some(old));
    let mut need = |rule: Rule, what: &str, review: Value, cache: Vec<Value>| {
        if policy.action(rule) != Action::Off {
            out.push(Need { hook: Hook::Validate, what: format!("rule {rule} ({what})"), review, cache });
        }
    };
    need(
        Rule::Cycle,
        "a dependsOn closing a cycle",
        update(&k("a", &[]), &k("a", &[dep("b")])),
        vec![k("b", &[dep("a")])],
    );
    // `a` starts waiting for the children it applies, one of which depends on it.
    let mut waiting = k("a", &[]);
    waiting["metadata"]["managedFields"] = json!([{ "manager": "kustomize-controller", "operation": "Apply",
        "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:wait": {} } } }]);
    let mut was = waiting.clone();
    waiting["spec"]["wait"] = json!(true);
    was["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"] = json!({ "f:interval": {} });
    let mut child = k("child", &[dep("a")]);
    child["metadata"]["labels"][OWNER_NAME_LABEL] = json!("a");
    need(
        Rule::Cycle,
        "spec.wait making a parent wait for a child that depends on it",
        update(&was, &waiting),
        vec![child],
    );
    need(
        Rule::DanglingDependsOn,
        "a dependsOn naming nothing",
        update(&k("a", &[]), &{
            let mut o = k("a", &[dep("missing")]);
            // Without owner labels a dangling target is denied, not only warned about.
            o["metadata"].as_object_mut().expect("metadata").remove("labels");
            o
        }),
        Vec::new(),
    );
    let mut other = k("x", &[]);
    other["metadata"]["namespace"] = json!("other");
    need(
        Rule::CrossNamespaceDependsOn,
        "a dependsOn in another namespace",
        update(&k("a", &[]), &k("a", &[json!({ "name": "x", "namespace": "other" })])),
        vec![other],
    );
    let chain: Vec<Value> = (0..policy.max_depth_limit)
        .map(|i| if i == 0 { k("c0", &[]) } else { k(&format!("c{i}"), &[dep(&format!("c{}", i - 1))]) })
        .collect();
    let last = format!("c{}", policy.max_depth_limit - 1);
    need(Rule::MaxDepth, "a dependsOn making the chain too long", update(&k("a", &[]), &k("a", &[dep(&last)])), chain);
    need(
        Rule::DuplicateDependsOn,
        "a dependsOn entry listed twice",
        update(&k("a", &[dep("b")]), &k("a", &[dep("b"), dep("b")])),
        vec![k("b", &[])],
    );
    need(
        Rule::DeleteWithDependents,
        "deleting an object others depend on",
        review("DELETE", None, Some(&k("a", &[]))),
        vec![k("a", &[]), k("b", &[dep("a")])],
    );
    let h = |name: &str, deps: &[Value]| {
        let mut o = object(FluxKind::HelmRelease, ns, name, deps);
        o["metadata"].as_object_mut().expect("metadata").remove("labels");
        o
    };
    need(
        Rule::DanglingDependsOn,
        "a HelmRelease dependsOn naming nothing",
        review("UPDATE", Some(&h("a", &[dep("missing")])), Some(&h("a", &[]))),
        Vec::new(),
    );
}

/// The requests `policy` needs sent: one per default leaf in every namespace with defaults of
/// its own and elsewhere, the take-back of fluxgate's own `wait`, and one (or two) per rule
/// that is on.
pub fn needs(policy: &Policy) -> Vec<Need> {
    let mut out = Vec::new();
    let plain = plain_namespace(policy);
    for kind in FluxKind::ALL {
        default_needs(&mut out, kind, &plain, "", policy.defaults.of(kind));
    }
    let mut overridden: Vec<(&String, _)> =
        policy.namespace_defaults.iter().filter(|(ns, _)| !policy.is_excluded(ns)).collect();
    overridden.sort_by_key(|(ns, _)| ns.as_str());
    for (ns, defaults) in overridden {
        for kind in FluxKind::ALL {
            default_needs(&mut out, kind, ns, &format!(" in namespace {ns}"), defaults.of(kind));
        }
    }
    // A root Kustomization carrying a `wait: true` that no manager owns: fluxgate's own
    // default from when it was a leaf, which it takes back.
    let mut root = object(FluxKind::Kustomization, &plain, "probe", &[]);
    root["metadata"].as_object_mut().expect("metadata").remove("labels");
    root["spec"]["wait"] = json!(true);
    root["metadata"]["managedFields"] = json!([{ "manager": "kustomize-controller", "operation": "Apply",
        "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:interval": {} } } }]);
    out.push(Need {
        hook: Hook::Mutate,
        what: "taking back fluxgate's own spec.wait from a Kustomization that no longer wants it".into(),
        review: review("UPDATE", Some(&root), Some(&root)),
        cache: Vec::new(),
    });
    rule_needs(&mut out, policy, &plain);
    out
}

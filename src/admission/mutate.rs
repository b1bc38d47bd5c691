//! The mutating webhook: adds the policy's defaults to fields the user left absent, and takes
//! back a `wait` default that fluxgate added earlier where it is no longer wanted.
//!
//! A value the user set is never changed, labels and annotations are never touched, and the
//! result is idempotent: mutating the mutated object yields no patch.
//!
//! A default never causes a denial. `spec.wait: true` makes a Kustomization wait for every
//! Kustomization it applies, so it is added only to a *leaf*: an object applied by another
//! Kustomization (Flux's owner labels name a parent other than itself) that applies no
//! Kustomization itself (no object in the cache names it as owner). A root (no owner labels, or
//! the self-managed bootstrap `flux-system`) or a parent would otherwise wait for every app it
//! applies, and a child that depends on it would deadlock.
//!
//! A field a mutating webhook adds belongs to no field manager, so Flux's next server-side apply
//! from Git never removes it. An UPDATE (or CREATE) carrying `spec.wait: true` that no entry of
//! `metadata.managedFields` owns is therefore fluxgate's own default, and it is removed when the
//! rules no longer want it (health checks now set, the object is a root or a parent). A value a
//! manager owns is never touched.

use serde_json::{Value, json};

use super::{AdmissionRequest, BadRequest, Operation, Response};
use crate::graph::Graph;
use crate::object::{FluxKind, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL, ObjectKey, field_is_unowned};
use crate::policy::Policy;
use crate::policy::defaults::complete;

/// The mutating webhook's response to `req`. `wait_of` decides [`WaitDefault`] for a
/// Kustomization (with [`wait_default`] on the cached graph), so that the caller holds the cache
/// only for that lookup, not while the patch is computed.
pub fn mutate(
    policy: &Policy,
    req: &AdmissionRequest,
    wait_of: impl FnOnce(&Value) -> WaitDefault,
) -> Result<Response, BadRequest> {
    let Some(kind) = FluxKind::from_group_kind(&req.kind.group, &req.kind.kind) else {
        return Ok(Response::allow());
    };
    if !matches!(req.operation, Operation::Create | Operation::Update) || policy.is_excluded(&req.namespace) {
        return Ok(Response::allow());
    }
    let object = req
        .object
        .as_ref()
        .ok_or_else(|| BadRequest(format!("{} request without an object", req.operation.as_str())))?;
    let wait = match kind {
        FluxKind::Kustomization => wait_of(object),
        FluxKind::HelmRelease => WaitDefault::Wanted,
    };
    let ops = default_patch(policy, kind, &req.namespace, object, wait);
    Ok(Response { allowed: true, patch: (!ops.is_empty()).then_some(ops), ..Response::default() })
}

/// Whether fluxgate's `spec.wait: true` default belongs on a Kustomization, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitDefault {
    Wanted,
    /// `spec.healthChecks` or `spec.healthCheckExprs` is set: Flux ignores them under `wait`.
    HealthChecks,
    /// No owner labels, or owner labels naming itself: nothing (or only itself) applies it.
    Root,
    /// The cache holds Kustomizations whose owner labels name it.
    Parent,
}

/// Decides [`WaitDefault`] for the Kustomization `object` in `namespace` (named `name`, or its
/// `metadata.name` when empty), from the cached graph.
pub fn wait_default(kustomizations: &Graph, object: &Value, namespace: &str, name: &str) -> WaitDefault {
    let spec = object.get("spec");
    let non_empty =
        |field: &str| spec.and_then(|s| s.get(field)).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if non_empty("healthChecks") || non_empty("healthCheckExprs") {
        return WaitDefault::HealthChecks;
    }
    let metadata = object.get("metadata");
    let name = if name.is_empty() {
        metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default()
    } else {
        name
    };
    let key = ObjectKey::new(namespace, name);
    let labels = metadata.and_then(|m| m.get("labels"));
    let label = |l: &str| labels.and_then(|ls| ls.get(l)).and_then(Value::as_str).filter(|v| !v.is_empty());
    let owner = label(OWNER_NAME_LABEL).zip(label(OWNER_NAMESPACE_LABEL)).map(|(n, ns)| ObjectKey::new(ns, n));
    if owner.is_none_or(|o| o == key) {
        return WaitDefault::Root;
    }
    if kustomizations.id(&key).is_some_and(|id| kustomizations.children(id).next().is_some()) {
        return WaitDefault::Parent;
    }
    WaitDefault::Wanted
}

/// JSON Patch operations completing `spec` with the defaults for `kind` in `namespace` (every
/// leaf the object does not set, at any depth; lists are never merged into), except a `wait`
/// that `wait` says is not wanted, and removing an unowned `wait: true` (an earlier default of
/// fluxgate's) that is not wanted any more. The additions are the JSON Patch from the object's
/// `spec` to its completed form.
pub fn default_patch(
    policy: &Policy,
    kind: FluxKind,
    namespace: &str,
    object: &Value,
    wait: WaitDefault,
) -> Vec<Value> {
    // Without a spec object there is nothing to complete; the CRD schema rejects such objects.
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        return Vec::new();
    };
    let is_kustomization = kind == FluxKind::Kustomization;
    let defaults = policy.defaults_for(kind, namespace);
    let mut completed = spec.clone();
    if is_kustomization && wait != WaitDefault::Wanted && defaults.contains_key("wait") {
        let mut without_wait = defaults.clone();
        without_wait.remove("wait");
        complete(&mut completed, &without_wait);
    } else {
        complete(&mut completed, defaults);
    }
    let patch = json_patch::diff(&json!({ "spec": spec }), &json!({ "spec": completed }));
    let mut ops = match serde_json::to_value(patch) {
        Ok(Value::Array(ops)) => ops,
        _ => unreachable!("a JSON Patch serialises to a list of operations"),
    };
    let unowned_wait = is_kustomization
        && spec.get("wait") == Some(&Value::Bool(true))
        && object.get("metadata").is_some_and(|m| field_is_unowned(m, &["spec", "wait"]));
    if unowned_wait && wait != WaitDefault::Wanted {
        ops.push(json!({ "op": "remove", "path": "/spec/wait" }));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::object::FluxObject;

    fn leaf() -> Value {
        json!({"metadata": {"name": "app", "labels": {OWNER_NAME_LABEL: "apps", OWNER_NAMESPACE_LABEL: "ns"}}, "spec": {}})
    }

    #[test]
    fn adds_only_absent_fields() {
        let p = Policy::default();
        let obj = json!({"spec": {"timeout": "10m", "wait": null}});
        let ops = default_patch(&p, FluxKind::Kustomization, "ns", &obj, WaitDefault::Wanted);
        // `null` counts as absent: the member is there, so the patch replaces it.
        assert_eq!(ops, vec![json!({"op": "replace", "path": "/spec/wait", "value": true})]);
    }

    #[test]
    fn no_wait_when_health_checks_are_set() {
        let g = Graph::new(FluxKind::Kustomization);
        let mut obj = leaf();
        obj["spec"] = json!({"healthCheckExprs": [{"apiVersion": "v1", "kind": "X", "current": "true"}]});
        assert_eq!(wait_default(&g, &obj, "ns", ""), WaitDefault::HealthChecks);
    }

    #[test]
    fn roots_and_parents_get_no_wait() {
        let mut g = Graph::new(FluxKind::Kustomization);
        assert_eq!(wait_default(&g, &leaf(), "ns", ""), WaitDefault::Wanted);
        let root = json!({"metadata": {"name": "flux-system"}, "spec": {}});
        assert_eq!(wait_default(&g, &root, "flux-system", ""), WaitDefault::Root);
        let self_managed = json!({"metadata": {"name": "flux-system", "labels": {
            OWNER_NAME_LABEL: "flux-system", OWNER_NAMESPACE_LABEL: "flux-system"}}, "spec": {}});
        assert_eq!(wait_default(&g, &self_managed, "flux-system", ""), WaitDefault::Root);
        let mut child = FluxObject::new(FluxKind::Kustomization, ObjectKey::new("ns", "web"), Vec::new());
        child.owner = Some(ObjectKey::new("ns", "app"));
        g.upsert(Arc::new(child));
        assert_eq!(wait_default(&g, &leaf(), "ns", ""), WaitDefault::Parent);
    }

    #[test]
    fn helm_releases_get_only_configured_defaults() {
        let p = Policy::default();
        assert!(default_patch(&p, FluxKind::HelmRelease, "ns", &json!({"spec": {}}), WaitDefault::Wanted).is_empty());
    }
}

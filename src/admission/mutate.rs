//! The mutating webhook: adds the policy's defaults to fields the user left absent.
//!
//! A value the user set is never changed, labels and annotations are never touched, and the
//! result is idempotent: mutating the mutated object yields no patch.

use serde_json::{Value, json};

use super::{AdmissionRequest, BadRequest, Operation, Response};
use crate::object::FluxKind;
use crate::policy::Policy;

/// The mutating webhook's response to `req`.
pub fn mutate(policy: &Policy, req: &AdmissionRequest) -> Result<Response, BadRequest> {
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
    let ops = default_patch(policy, kind, object);
    Ok(Response { allowed: true, patch: (!ops.is_empty()).then_some(ops), ..Response::default() })
}

/// JSON Patch operations adding each configured default whose field is absent from `spec`.
pub fn default_patch(policy: &Policy, kind: FluxKind, object: &Value) -> Vec<Value> {
    // Without a spec object there is nothing to complete; the CRD schema rejects such objects.
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        return Vec::new();
    };
    let defaults = match kind {
        FluxKind::Kustomization => &policy.kustomization_defaults,
        FluxKind::HelmRelease => &policy.helm_release_defaults,
    };
    let set = |field: &str| spec.get(field).is_some_and(|v| !v.is_null());
    let non_empty = |field: &str| spec.get(field).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    // Flux ignores health checks when `wait` is true: adding it would silently switch them off.
    let has_health_checks = non_empty("healthChecks") || non_empty("healthCheckExprs");
    defaults
        .iter()
        .filter(|d| !set(d.field))
        .filter(|d| !(kind == FluxKind::Kustomization && d.field == "wait" && has_health_checks))
        .map(|d| json!({ "op": "add", "path": format!("/spec/{}", d.field), "value": d.value }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_absent_fields() {
        let p = Policy::default();
        let obj = json!({"spec": {"timeout": "10m", "wait": null}});
        let ops = default_patch(&p, FluxKind::Kustomization, &obj);
        assert_eq!(ops, vec![json!({"op": "add", "path": "/spec/wait", "value": true})]);
    }

    #[test]
    fn no_wait_when_health_checks_are_set() {
        let p = Policy::default();
        let obj = json!({"spec": {"healthCheckExprs": [{"apiVersion": "v1", "kind": "X", "current": "true"}]}});
        let ops = default_patch(&p, FluxKind::Kustomization, &obj);
        assert_eq!(ops, vec![json!({"op": "add", "path": "/spec/timeout", "value": "5m"})]);
    }

    #[test]
    fn helm_releases_get_only_configured_defaults() {
        let p = Policy::default();
        assert!(default_patch(&p, FluxKind::HelmRelease, &json!({"spec": {}})).is_empty());
    }
}

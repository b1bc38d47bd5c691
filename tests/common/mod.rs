//! Builders for Flux objects and AdmissionReviews as the API server sends them, and a harness
//! that drives the webhook router in-process.
#![allow(dead_code)]

pub mod crd;
pub mod fake_api;
pub mod graphviz;
pub mod process;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fluxgate::admission::Webhook;
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, kind_of};
use fluxgate::policy::Policy;
use fluxgate::server::{self, App};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn split(ns: &str, dep: &str) -> (String, String) {
    match dep.split_once('/') {
        Some((n, m)) => (n.to_string(), m.to_string()),
        None => (ns.to_string(), dep.to_string()),
    }
}

fn flux_object(api_version: &str, kind: &str, ns: &str, name: &str, deps: &[&str]) -> Value {
    let depends_on: Vec<Value> = deps
        .iter()
        .map(|d| {
            let (n, m) = split(ns, d);
            if n == ns { json!({ "name": m }) } else { json!({ "name": m, "namespace": n }) }
        })
        .collect();
    let mut spec = json!({ "interval": "10m" });
    if kind == "Kustomization" {
        spec["prune"] = json!(true);
        spec["path"] = json!(format!("./{name}"));
        spec["sourceRef"] = json!({ "kind": "GitRepository", "name": "flux-system", "namespace": "flux-system" });
    } else {
        spec["chart"] =
            json!({ "spec": { "chart": name, "sourceRef": { "kind": "HelmRepository", "name": "charts" } } });
    }
    if !depends_on.is_empty() {
        spec["dependsOn"] = json!(depends_on);
    }
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "resourceVersion": "100", "generation": 1 },
        "spec": spec,
    })
}

/// A Kustomization `ns/name` depending on `deps` (`name` or `ns/name`).
pub fn ks(ns: &str, name: &str, deps: &[&str]) -> Value {
    flux_object("kustomize.toolkit.fluxcd.io/v1", "Kustomization", ns, name, deps)
}

/// A HelmRelease `ns/name` depending on `deps`.
pub fn hr(ns: &str, name: &str, deps: &[&str]) -> Value {
    flux_object("helm.toolkit.fluxcd.io/v2", "HelmRelease", ns, name, deps)
}

/// `obj` with Flux's owner labels naming `parent` (`ns/name`).
pub fn owned_by(mut obj: Value, parent: &str) -> Value {
    let (ns, name) = parent.split_once('/').unwrap();
    obj["metadata"]["labels"] = json!({
        "kustomize.toolkit.fluxcd.io/name": name,
        "kustomize.toolkit.fluxcd.io/namespace": ns,
    });
    obj
}

/// The `fieldsV1` of a server-side apply that sent `value`: every key of a mapping becomes
/// `f:<key>`, and a list is owned whole (Flux's CRDs declare no list type, so lists are atomic).
fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (format!("f:{k}"), fields_v1(v))).collect()),
        _ => json!({}),
    }
}

/// `obj` as the API server stores it after a server-side apply of exactly `obj` by
/// kustomize-controller: `metadata.managedFields` lists the fields it sent (labels and spec),
/// plus the status entry the controller writes. A field added to the result later (by a mutating
/// webhook) is owned by nobody.
pub fn applied_by_flux(mut obj: Value) -> Value {
    let mut sent = json!({ "f:spec": fields_v1(&obj["spec"]) });
    if let Some(labels) = obj["metadata"].get("labels") {
        sent["f:metadata"] = json!({ "f:labels": fields_v1(labels) });
    }
    obj["metadata"]["managedFields"] = json!([
        {
            "manager": "kustomize-controller", "operation": "Apply",
            "apiVersion": obj["apiVersion"], "time": "2026-11-26T10:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": sent
        },
        {
            "manager": "kustomize-controller", "operation": "Update", "subresource": "status",
            "apiVersion": obj["apiVersion"], "time": "2026-11-26T10:00:05Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": { "f:status": { "f:conditions": {}, "f:observedGeneration": {} } }
        }
    ]);
    obj
}

/// `obj` with `spec.<field> = value`.
pub fn with(mut obj: Value, field: &str, value: Value) -> Value {
    obj["spec"][field] = value;
    obj
}

static UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An AdmissionReview for `operation` on `object` (or `old` for DELETE), shaped like the API
/// server's, with a fresh uid.
pub fn review(operation: &str, object: Option<&Value>, old: Option<&Value>, dry_run: bool) -> Value {
    let subject = object.or(old).expect("a review needs an object");
    let api_version = subject["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = subject["kind"].as_str().unwrap();
    let resource = format!("{}s", kind.to_lowercase());
    let uid = format!("7c0f5a3e-0000-4000-8000-{:012}", UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": group, "version": version, "kind": kind },
            "resource": { "group": group, "version": version, "resource": resource },
            "requestKind": { "group": group, "version": version, "kind": kind },
            "requestResource": { "group": group, "version": version, "resource": resource },
            "name": subject["metadata"]["name"],
            "namespace": subject["metadata"]["namespace"],
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:flux-system:kustomize-controller", "groups": ["system:serviceaccounts", "system:authenticated"] },
            "object": object.cloned().unwrap_or(Value::Null),
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": dry_run,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": options_kind, "fieldManager": "kustomize-controller" }
        }
    })
}

pub fn create(obj: &Value) -> Value {
    review("CREATE", Some(obj), None, false)
}

pub fn update(new: &Value, old: &Value) -> Value {
    review("UPDATE", Some(new), Some(old), false)
}

pub fn delete(old: &Value) -> Value {
    review("DELETE", None, Some(old), false)
}

/// The webhook over an in-memory cache, driven through its real router.
pub struct Harness {
    pub app: Arc<App>,
}

impl Harness {
    /// A webhook whose cache holds `objects` (as if listed from a cluster).
    pub fn new(policy: Policy, objects: &[Value]) -> Harness {
        let cache = Arc::new(Cache::new());
        {
            let mut state = cache.lock();
            for kind in FluxKind::ALL {
                let list = objects
                    .iter()
                    .filter(|o| kind_of(o) == Some(kind))
                    .map(|o| {
                        let ns = o["metadata"]["namespace"].as_str().unwrap();
                        (Arc::new(FluxObject::from_value(kind, o, ns, "").unwrap()), None)
                    })
                    .collect();
                state.replace_all(kind, list);
            }
        }
        Harness { app: App::new(Webhook::new(cache, Arc::new(policy))) }
    }

    /// POSTs raw bytes to `path`; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let request = Request::post(path).header("content-type", "application/json").body(Body::from(body)).unwrap();
        let response = server::webhook_router(self.app.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// Sends a review to `/validate` and returns its `response`, checking the envelope.
    pub async fn validate(&self, review: &Value) -> Value {
        self.send("/validate", review).await
    }

    pub async fn mutate(&self, review: &Value) -> Value {
        self.send("/mutate", review).await
    }

    async fn send(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], review["request"]["uid"], "uid must be echoed");
        body["response"].clone()
    }
}

/// The denial message, asserting the denial's shape.
pub fn denied(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "expected a denial: {response}");
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    response["status"]["message"].as_str().unwrap().to_string()
}

/// The warnings of an allowed response.
pub fn allowed(response: &Value) -> Vec<String> {
    assert_eq!(response["allowed"], true, "expected the request to be allowed: {response}");
    assert!(response.get("status").is_none() || response["status"].is_null());
    warnings(response)
}

pub fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|a| a.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The target a dangling-dependsOn message suggests ("... did you mean ns/name?"), if any. The
/// wording itself is pinned once, in `tests/integration/validate.rs`
/// (`dangling_target_is_denied_with_a_near_name_hint`); other tests assert what is suggested.
pub fn suggested(message: &str) -> Option<&str> {
    message.rsplit_once("; did you mean ")?.1.strip_suffix('?')
}

/// A Flux Kustomization document. `extra` is more YAML under `spec` (indented two spaces).
pub fn ks_doc(name: &str, namespace: Option<&str>, path: &str, extra: &str) -> String {
    let ns = namespace.map(|n| format!("  namespace: {n}\n")).unwrap_or_default();
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n{ns}spec:\n  \
         interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n{extra}"
    )
}

/// `flux bootstrap`'s sync file for a cluster folder.
pub fn gotk_sync(cluster: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\n\
         spec:\n  interval: 1m\n  url: ssh://git@example.com/fleet\n---\n{}",
        ks_doc("flux-system", Some("flux-system"), &format!("./{cluster}"), "")
    )
}

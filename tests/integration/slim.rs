//! The slim read ([`fluxgate::object::slim`]) against the whole read: decoding a Flux object through
//! the slim shape and reading it gives the same object, status, resourceVersion and deletion
//! state as reading the whole object, for every Flux object of the real fleets
//! (`../shared/fleets`, or `$FLUXGATE_SHARED/fleets`), of the examples, and for random objects as
//! the API server delivers them (managedFields as kustomize-controller and kubectl write them,
//! status conditions, `deletionTimestamp`, fields of unexpected types, noise everywhere).

use std::path::{Path, PathBuf};

use fluxgate::admission::{AdmissionReview, Webhook};
use fluxgate::cache::Cache;
use fluxgate::cache::watch::read_object;
use fluxgate::manifests::{parse_document, split_documents};
use fluxgate::object::slim::SlimObject;
use fluxgate::object::{FluxKind, FluxObject, kind_of};
use fluxgate::policy::Policy;
use fluxgate::status::ObjectStatus;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Everything fluxgate reads of an object, through the readers the load paths use.
#[derive(Debug, PartialEq)]
struct Read {
    manifest: Result<FluxObject, String>,
    watched: Result<(FluxObject, Option<String>), String>,
    status: ObjectStatus,
    terminating: bool,
}

fn read(kind: FluxKind, value: &Value) -> Read {
    Read {
        manifest: FluxObject::from_value(kind, value, "ns", "").map_err(|e| e.to_string()),
        watched: read_object(kind, value),
        status: ObjectStatus::from_value(value),
        terminating: value.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()),
    }
}

/// The object read whole, and read after each way of decoding it slim: from JSON text (list
/// pages, watch events), from YAML text (manifests), from a whole value (ResourceSet output).
fn assert_slim_reads_the_same(kind: FluxKind, whole: &Value, yaml: Option<&str>, origin: &str) {
    let expected = read(kind, whole);
    let from_json: SlimObject = serde_json::from_str(&whole.to_string()).unwrap();
    assert_eq!(read(kind, &from_json.0), expected, "{origin}: slim from JSON");
    let from_value = SlimObject::from_value(whole.clone());
    assert_eq!(from_value, from_json, "{origin}: slim from a value");
    if let Some(text) = yaml {
        let from_yaml: SlimObject = serde_saphyr::from_str(text).unwrap();
        assert_eq!(read(kind, &from_yaml.0), expected, "{origin}: slim from YAML");
    }
}

/// The Flux objects of a document: itself, or the items of a `kind: List`.
fn flux_items(value: &Value) -> Vec<(FluxKind, &Value)> {
    let items: Vec<&Value> = match value.get("items").and_then(Value::as_array) {
        Some(items) if value.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) => {
            items.iter().collect()
        }
        _ => vec![value],
    };
    items.into_iter().filter_map(|v| kind_of(v).map(|k| (k, v))).collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_flux_object_of_the_fleets_and_examples_reads_the_same_slim() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("FLUXGATE_SHARED").map_or_else(|| root.join("../shared"), PathBuf::from);
    let mut files = Vec::new();
    yaml_files(&shared.join("fleets"), &mut files);
    yaml_files(&root.join("examples"), &mut files);
    let mut objects = 0;
    let mut with_status = 0;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        if !text.contains("toolkit.fluxcd.io/") {
            continue;
        }
        for doc in split_documents(&text) {
            // Templates of other tools do not parse; the loader reports or skips them.
            let Ok(whole) = parse_document(doc.text) else { continue };
            // Plain YAML only: the loader's go-yaml compatibility rewrite is not the subject here.
            let plain = serde_saphyr::from_str::<Value>(doc.text).is_ok_and(|v| v == whole);
            for (kind, item) in flux_items(&whole) {
                let single = std::ptr::eq(item, &whole) && plain;
                let origin = format!("{}:{}", file.display(), doc.line);
                assert_slim_reads_the_same(kind, item, single.then_some(doc.text), &origin);
                objects += 1;
                with_status += usize::from(item.get("status").is_some());
            }
        }
    }
    // The corpus holds thousands of Flux objects, and the status dump some with a status.
    assert!(objects > 1000, "only {objects} Flux objects found under {}", shared.display());
    assert!(with_status > 0);
}

/// Noise the readers never look at, at any level.
fn noise() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!({"a": {"b": [1, 2, {"c": "d"}]}})),
        Just(json!(["x", 1.5, true])),
        Just(json!("${VAR}")),
    ]
}

/// A `metadata.managedFields` list as the API server keeps it: the applier's entry (owning
/// `spec.wait` or not), the controller's status entry, sometimes a kubectl entry.
fn managed_fields() -> impl Strategy<Value = Option<Value>> {
    prop::option::of((any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(owns_wait, kubectl, empty)| {
        if empty {
            return json!([]);
        }
        let mut spec = json!({"f:interval": {}, "f:path": {}, "f:sourceRef": {"f:kind": {}, "f:name": {}}});
        if owns_wait {
            spec["f:wait"] = json!({});
        }
        let mut entries = vec![
            json!({"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                   "time": "2026-11-26T09:00:00Z", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:metadata": {"f:labels": {"f:kustomize.toolkit.fluxcd.io/name": {}}}, "f:spec": spec}}),
            json!({"manager": "kustomize-controller", "operation": "Update", "subresource": "status",
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:observedGeneration": {}}}}),
        ];
        if kubectl {
            entries.push(json!({"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
                                "fieldsV1": {"f:spec": {"f:suspend": {}}}}));
        }
        Value::Array(entries)
    }))
}

fn condition() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["Ready", "Healthy", "Reconciling"]),
        prop::sample::select(vec!["True", "False", "Unknown", ""]),
        prop::sample::select(vec!["ReconciliationSucceeded", "DependencyNotReady", "BuildFailed"]),
    )
        .prop_map(|(t, s, r)| {
            json!({"type": t, "status": s, "reason": r, "message": format!("{t} {s}"), "observedGeneration": 2,
                   "lastTransitionTime": "2026-11-26T09:12:00Z"})
        })
}

/// A field value of the expected type most of the time, of a wrong one sometimes.
fn either(good: impl Strategy<Value = Value>, bad: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop_oneof![4 => good, 1 => bad]
}

prop_compose! {
    fn object()(
        helm in any::<bool>(),
        name in prop::sample::select(vec!["app", "", "infra"]),
        with_namespace in any::<bool>(),
        owner in prop::option::of((any::<bool>(), any::<bool>())),
        managed in managed_fields(),
        generation in prop::option::of(1i64..4),
        deleting in any::<bool>(),
        depends_on in either(
            prop::collection::vec(
                prop_oneof![
                    Just(json!({"name": "a"})),
                    Just(json!({"name": "b", "namespace": "other"})),
                    Just(json!({"name": ""})),
                    Just(json!({"name": "c", "namespace": 7})),
                ],
                0..4,
            ).prop_map(Value::Array),
            noise(),
        ),
        wait in either(any::<bool>().prop_map(Value::Bool), noise()),
        health in prop::collection::vec(
            prop_oneof![
                Just(json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": "h", "namespace": "n"})),
                Just(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "namespace": "n"})),
                Just(json!({"kind": "Kustomization", "name": "h"})),
            ],
            0..3,
        ),
        suspend in prop::option::of(either(any::<bool>().prop_map(Value::Bool), noise())),
        timing in prop::sample::select(vec![(None, Some("10m")), (Some("5m"), Some("1h")), (Some("x"), None), (None, None)]),
        conditions in prop::option::of(prop::collection::vec(condition(), 0..3)),
        observed in prop::option::of(1i64..4),
        spec_whole in prop::sample::select(vec![true, true, true, false]),
        extra in noise(),
    ) -> (FluxKind, Value) {
        let kind = if helm { FluxKind::HelmRelease } else { FluxKind::Kustomization };
        let api_version = if helm { "helm.toolkit.fluxcd.io/v2" } else { "kustomize.toolkit.fluxcd.io/v1" };
        let mut metadata = json!({"name": name, "resourceVersion": "42", "uid": "u-1", "annotations": {"note": extra.clone()},
                                  "finalizers": ["finalizers.fluxcd.io"], "creationTimestamp": "2026-11-26T09:00:00Z"});
        if with_namespace {
            metadata["namespace"] = json!("team");
        }
        if let Some((name_label, ns_label)) = owner {
            let mut labels = json!({"app.kubernetes.io/name": "x"});
            if name_label { labels["kustomize.toolkit.fluxcd.io/name"] = json!("parent"); }
            if ns_label { labels["kustomize.toolkit.fluxcd.io/namespace"] = json!("flux-system"); }
            metadata["labels"] = labels;
        }
        if let Some(m) = managed { metadata["managedFields"] = m; }
        if let Some(g) = generation { metadata["generation"] = json!(g); }
        if deleting { metadata["deletionTimestamp"] = json!("2026-11-26T10:00:00Z"); }
        let mut spec = json!({"interval": timing.1, "dependsOn": depends_on, "wait": wait, "healthChecks": health,
                              "prune": true, "path": "./apps", "values": {"replicas": 3, "image": extra},
                              "postBuild": {"substitute": {"CLUSTER": "prod"}, "substituteFrom": [{"kind": "ConfigMap"}]}});
        if let Some(t) = timing.0 { spec["timeout"] = json!(t); }
        if let Some(s) = suspend { spec["suspend"] = s; }
        let mut object = json!({"apiVersion": api_version, "kind": kind.as_str(), "metadata": metadata,
                                "spec": if spec_whole { spec } else { json!(["not", "an", "object"]) }});
        if conditions.is_some() || observed.is_some() {
            object["status"] = json!({"conditions": conditions, "observedGeneration": observed,
                                      "inventory": {"entries": [{"id": "x", "v": "v1"}]}, "lastAppliedRevision": "main@sha1:1"});
        }
        (kind, object)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn slim_objects_read_as_whole_objects((kind, whole) in object()) {
        // JSON text is YAML too (flow style): the manifest reader's path.
        let yaml = whole.to_string();
        assert_slim_reads_the_same(kind, &whole, Some(&yaml), "generated");
    }

    /// `/validate` decodes the review's objects slim: an UPDATE judged from the slim review gets
    /// the same answer as from the whole one, on webhooks that hold the same objects.
    #[test]
    fn validation_of_a_slim_review_answers_as_of_the_whole_review(
        (kind, new) in object(),
        (_, old) in object(),
        (_, neighbour) in object(),
    ) {
        let api_version = if kind == FluxKind::Kustomization { "kustomize.toolkit.fluxcd.io/v1" } else { "helm.toolkit.fluxcd.io/v2" };
        let (group, _) = api_version.split_once('/').unwrap();
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "u", "kind": { "group": group, "version": "v1", "kind": kind.as_str() },
                         "namespace": "ns", "operation": "UPDATE", "object": new, "oldObject": old, "dryRun": false }
        })
        .to_string();
        let answer = |review: AdmissionReview| {
            let cache = Arc::new(Cache::new());
            if let Ok(o) = FluxObject::from_value(kind, &neighbour, "ns", "") {
                cache.lock().apply(Arc::new(o), None);
            }
            let webhook = Webhook::new(cache, Arc::new(Policy::default()));
            let verdict = webhook.validate(&review.request, Instant::now());
            verdict.map(|v| (v.response.to_review_bytes("admission.k8s.io/v1", "u"), v.adds_edges, v.record))
        };
        let whole = answer(AdmissionReview::from_slice(body.as_bytes()).unwrap());
        let slim = answer(AdmissionReview::from_slice_slim(body.as_bytes()).unwrap());
        prop_assert_eq!(slim, whole);
    }

    /// A list page and a `kind: List` manifest: every item is slimmed the same way.
    #[test]
    fn list_items_read_as_whole_items(items in prop::collection::vec(object(), 1..4)) {
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "9"},
                          "items": items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()});
        let slim: SlimObject = serde_json::from_str(&list.to_string()).unwrap();
        let slim_items = slim.0["items"].as_array().unwrap();
        prop_assert_eq!(slim_items.len(), items.len());
        for ((kind, whole), slim) in items.iter().zip(slim_items) {
            prop_assert_eq!(read(*kind, slim), read(*kind, whole));
        }
    }
}

/// The status read of an API object equals the reader the watch used before the slim path
/// (`from_dynamic`, through kube's typed metadata), on the examples' status dump.
#[test]
fn status_matches_the_typed_reader_on_the_status_dump() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/status-dump.yaml")).unwrap();
    let dump = parse_document(&text).unwrap();
    let items = dump["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for item in items {
        let typed: kube::api::DynamicObject = serde_json::from_value(item.clone()).unwrap();
        let slim: SlimObject = serde_json::from_str(&item.to_string()).unwrap();
        assert_eq!(ObjectStatus::from_value(&slim.0), ObjectStatus::from_dynamic(&typed));
    }
}

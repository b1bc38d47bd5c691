//! The real Flux CRD schemas from `../shared/crds`, strict as the API server's field validation.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Value, json};

/// `../shared` beside the project, as CI lays it out; `FLUXGATE_SHARED` where it lies elsewhere.
pub fn shared() -> PathBuf {
    std::env::var_os("FLUXGATE_SHARED")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"), PathBuf::from)
}

/// The openAPIV3Schema of the served version `version` of a CRD file, strict.
pub fn crd_schema(file: &str, version: &str) -> Value {
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

/// Panics with every schema error of `object`.
pub fn assert_valid(schema: &Value, object: &Value) {
    let validator = jsonschema::validator_for(schema).expect("the CRD schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{} is invalid: {errors:?}", object["metadata"]["name"]);
}

//! The defaults the mutating webhook adds: partial `spec` objects, checked at start-up against
//! the spec schemas of the Flux CRDs (shipped in the binary), merged per namespace, and
//! completed into objects leaf by leaf.
//!
//! The schemas are the `spec` of the `openAPIV3Schema` of the versions Flux serves today
//! (Kustomization `v1`, HelmRelease `v2`), copied from the CRDs; a test checks that they still
//! equal `../shared/crds`.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::object::FluxKind;
use crate::object::is_flux_duration;

/// A partial `spec`: every leaf is a value to add where the object has none.
pub type SpecDefaults = Map<String, Value>;

/// The `spec` schema of the Kustomization CRD, `v1`.
pub const KUSTOMIZATION_SPEC_SCHEMA: &str = include_str!("schemas/kustomization-v1-spec.json");
/// The `spec` schema of the HelmRelease CRD, `v2`.
pub const HELM_RELEASE_SPEC_SCHEMA: &str = include_str!("schemas/helmrelease-v2-spec.json");

/// The `spec` schema of `kind`, parsed once.
pub fn spec_schema(kind: FluxKind) -> &'static Value {
    static KUSTOMIZATION: OnceLock<Value> = OnceLock::new();
    static HELM_RELEASE: OnceLock<Value> = OnceLock::new();
    let (cell, text) = match kind {
        FluxKind::Kustomization => (&KUSTOMIZATION, KUSTOMIZATION_SPEC_SCHEMA),
        FluxKind::HelmRelease => (&HELM_RELEASE, HELM_RELEASE_SPEC_SCHEMA),
    };
    cell.get_or_init(|| serde_json::from_str(text).expect("the shipped spec schema is JSON"))
}

/// The schema of a partial `spec`: `required` dropped from every object a default may leave
/// incomplete (lists are whole values, so their items keep it).
fn partial_validator(kind: FluxKind) -> &'static jsonschema::Validator {
    static KUSTOMIZATION: OnceLock<jsonschema::Validator> = OnceLock::new();
    static HELM_RELEASE: OnceLock<jsonschema::Validator> = OnceLock::new();
    let cell = match kind {
        FluxKind::Kustomization => &KUSTOMIZATION,
        FluxKind::HelmRelease => &HELM_RELEASE,
    };
    cell.get_or_init(|| {
        let mut schema = spec_schema(kind).clone();
        drop_required(&mut schema);
        jsonschema::validator_for(&schema).expect("the shipped spec schema compiles")
    })
}

fn drop_required(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    map.remove("required");
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(drop_required);
    }
    if let Some(additional @ Value::Object(_)) = map.get_mut("additionalProperties") {
        drop_required(additional);
    }
}

/// Why a default cannot be used: the key below the defaults (`install.remediation.retries`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub key: String,
    pub message: String,
}

/// Checks a partial `spec` against `kind`'s CRD schema: every key a field of its object, every
/// value of the field's type, durations, enums and the schema's other constraints. `null`
/// leaves (which remove a default in a namespace override) are not checked.
pub fn check(kind: FluxKind, defaults: &SpecDefaults) -> Result<(), Rejected> {
    let value = without_nulls(&Value::Object(defaults.clone()));
    walk(&value, spec_schema(kind), "")?;
    // What the walk does not check (bounds, lengths, other patterns, required fields of list
    // items), the schema validator does.
    if let Some(e) = partial_validator(kind).iter_errors(&value).next() {
        return Err(Rejected { key: dotted(&e.instance_path().to_string()), message: e.to_string() });
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// A JSON pointer (`/install/remediation/retries`, `/dependsOn/0/name`) as a key path
/// (`install.remediation.retries`, `dependsOn[0].name`).
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            out = join(&out, &segment);
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

fn walk(value: &Value, schema: &Value, path: &str) -> Result<(), Rejected> {
    let reject = |message: String| Err(Rejected { key: path.to_string(), message });
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let ok = match want {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            let want = match want {
                "object" => "a mapping",
                "array" => "a list",
                "string" => "a string",
                "boolean" => "true or false",
                "integer" => "a whole number",
                _ => "a number",
            };
            return reject(format!("must be {want}, not {} {value}", type_name(value)));
        }
    }
    if let (Some(pattern), Some(s)) = (schema.get("pattern").and_then(Value::as_str), value.as_str())
        && pattern.contains("(ms|s|m")
        && !is_flux_duration(s)
    {
        return reject(format!("must be a duration such as 5m, 1h30m or 90s, not {value}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return reject(format!("must be one of {}, not {value}", names.join(", ")));
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    let Some(field) = props.get(k) else {
                        let mut known: Vec<&str> = props.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        return Err(Rejected {
                            key: join(path, k),
                            message: format!("unknown key (expected one of: {})", known.join(", ")),
                        });
                    };
                    walk(v, field, &join(path, k))?;
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in map {
                    walk(v, additional, &join(path, k))?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `value` with every `null` member removed, at any depth (lists are values: left as they are).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// `over` merged over `base`: mappings merge key by key at every depth, anything else in `over`
/// replaces what `base` has, and a `null` in `over` removes the key.
pub fn merge(base: &SpecDefaults, over: &SpecDefaults) -> SpecDefaults {
    let mut out = base.clone();
    for (k, v) in over {
        match (out.get_mut(k), v) {
            (_, Value::Null) => {
                out.remove(k);
            }
            (Some(Value::Object(b)), Value::Object(o)) => *b = merge(b, o),
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Adds to `spec` every leaf of `defaults` it does not have, at any depth. A value already set
/// (anything but `null`) is kept, lists included: a list is one value, never merged into. A
/// default mapping where `spec` holds something else than a mapping is not added.
pub fn complete(spec: &mut Map<String, Value>, defaults: &SpecDefaults) {
    for (k, default) in defaults {
        match spec.get_mut(k) {
            None | Some(Value::Null) => {
                spec.insert(k.clone(), default.clone());
            }
            Some(Value::Object(existing)) => {
                if let Value::Object(d) = default {
                    complete(existing, d);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> SpecDefaults {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn completion_adds_absent_leaves_only_and_never_merges_lists() {
        let mut spec = map(json!({
            "install": { "remediation": { "retries": 1 } },
            "upgrade": null,
            "postRenderers": [{ "kustomize": {} }],
        }));
        let defaults = map(json!({
            "install": { "crds": "Create", "remediation": { "retries": 3, "remediateLastFailure": true } },
            "upgrade": { "cleanupOnFail": true },
            "postRenderers": [{ "kustomize": { "patches": [] } }, {}],
        }));
        complete(&mut spec, &defaults);
        assert_eq!(
            Value::Object(spec),
            json!({
                "install": { "crds": "Create", "remediation": { "retries": 1, "remediateLastFailure": true } },
                "upgrade": { "cleanupOnFail": true },
                "postRenderers": [{ "kustomize": {} }],
            })
        );
    }

    #[test]
    fn overrides_merge_by_leaf_and_null_removes() {
        let global = map(json!({ "timeout": "5m", "install": { "crds": "Create", "remediation": { "retries": 3 } } }));
        let over = map(json!({ "timeout": null, "install": { "remediation": { "retries": 5 } } }));
        assert_eq!(
            Value::Object(merge(&global, &over)),
            json!({ "install": { "crds": "Create", "remediation": { "retries": 5 } } })
        );
    }

    #[test]
    fn defaults_are_checked_against_the_crd_schema() {
        let ok = map(json!({
            "install": { "crds": "CreateReplace", "remediation": { "retries": 3 } },
            "upgrade": { "cleanupOnFail": true, "remediation": { "retries": 3, "remediateLastFailure": true } },
            "driftDetection": { "mode": "enabled" },
            "timeout": "10m",
            "values": { "anything": { "goes": 1 } },
        }));
        assert_eq!(check(FluxKind::HelmRelease, &ok), Ok(()));
        let rejected = |kind, v: Value| check(kind, &map(v)).unwrap_err();
        let e = rejected(FluxKind::HelmRelease, json!({ "install": { "remediaton": { "retries": 3 } } }));
        assert_eq!(e.key, "install.remediaton");
        assert!(e.message.starts_with("unknown key"), "{e:?}");
        let e = rejected(FluxKind::HelmRelease, json!({ "upgrade": { "remediation": { "retries": "three" } } }));
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("upgrade.remediation.retries", "must be a whole number, not string \"three\"")
        );
        let e = rejected(FluxKind::HelmRelease, json!({ "driftDetection": { "mode": "on" } }));
        assert_eq!(e.key, "driftDetection.mode");
        assert!(e.message.starts_with("must be one of \"enabled\", \"warn\", \"disabled\""), "{e:?}");
        let e = rejected(FluxKind::Kustomization, json!({ "timeout": "5 minutes" }));
        assert_eq!(e.key, "timeout");
        assert!(e.message.starts_with("must be a duration"), "{e:?}");
        // Left to the schema validator: a list item missing a required field.
        let e = rejected(FluxKind::Kustomization, json!({ "dependsOn": [{ "namespace": "x" }] }));
        assert_eq!(e.key, "dependsOn[0]");
        assert!(e.message.contains("name"), "{e:?}");
        // A null removes a default in an override: nothing to check.
        assert_eq!(check(FluxKind::Kustomization, &map(json!({ "wait": null }))), Ok(()));
    }

    #[test]
    fn pointers_become_key_paths() {
        assert_eq!(dotted("/install/remediation/retries"), "install.remediation.retries");
        assert_eq!(dotted("/dependsOn/0/name"), "dependsOn[0].name");
        assert_eq!(dotted(""), "");
    }
}

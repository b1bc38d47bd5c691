//! flux-operator `ResourceSet`s (`fluxcd.controlplane.io/v1`): the Kustomizations and
//! HelmReleases they generate, one set per input.
//!
//! flux-operator renders every template of `spec.resources` (and the `spec.resourcesTemplate`
//! string) once per entry of `spec.inputs`, replacing `<< inputs.name >>` expressions (Go
//! templates with `<<` `>>` delimiters). Offline, fluxgate substitutes plain input paths
//! (`<< inputs.app.version >>`, with `| quote` or `| default "x"` allowed), so generated objects
//! join the graph like any other. Inputs that come from `spec.inputsFrom` (a
//! `ResourceSetInputProvider` querying GitHub, GitLab, ...) exist only in the cluster: they are
//! noted, not guessed. A generated object without a namespace lands in the ResourceSet's.

use serde_json::{Map, Value};

/// The API group of flux-operator, as it appears in `apiVersion`.
pub(super) const GROUP: &str = "fluxcd.controlplane.io/";

/// Whether `value` is a flux-operator ResourceSet.
pub(super) fn is_resource_set(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("ResourceSet")
        && value.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v.starts_with(GROUP))
}

/// The objects `set` generates from its inline inputs, and notes on what cannot be expanded.
pub(super) fn expand(set: &Value) -> (Vec<Value>, Vec<String>) {
    let name = set.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let namespace = set.pointer("/metadata/namespace").and_then(Value::as_str);
    let mut notes = Vec::new();
    if set.pointer("/spec/inputsFrom").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        notes.push(format!(
            "ResourceSet {name}: inputs from spec.inputsFrom come from the cluster and are not resolvable offline; \
             only inline spec.inputs are expanded"
        ));
    }
    let inputs: Vec<&Value> = set.pointer("/spec/inputs").and_then(Value::as_array).into_iter().flatten().collect();
    if inputs.is_empty() && !notes.is_empty() {
        return (Vec::new(), notes);
    }
    // Without inputs flux-operator renders the templates once, with no input values.
    let empty = Value::Object(Map::new());
    let inputs = if inputs.is_empty() { vec![&empty] } else { inputs };
    let templates: Vec<&Value> =
        set.pointer("/spec/resources").and_then(Value::as_array).into_iter().flatten().collect();
    let text_template = set.pointer("/spec/resourcesTemplate").and_then(Value::as_str);

    let mut out = Vec::new();
    let mut unresolved = 0;
    for input in inputs {
        let mut rendered: Vec<Value> = Vec::new();
        for template in &templates {
            // Substituted inside the JSON text: every expression sits in a string value.
            let text = template.to_string();
            match render(&text, input, true) {
                Some(t) => rendered.extend(serde_json::from_str::<Value>(&t).ok()),
                None => unresolved += 1,
            }
        }
        if let Some(text) = text_template {
            match render(text, input, false) {
                Some(t) => {
                    for doc in super::split_documents(&t) {
                        match super::parse_document(doc.text) {
                            Ok(v) => rendered.push(v),
                            Err(_) => unresolved += 1,
                        }
                    }
                }
                None => unresolved += 1,
            }
        }
        for mut value in rendered {
            if let (Some(ns), Some(meta)) = (namespace, value.get_mut("metadata").and_then(Value::as_object_mut)) {
                meta.entry("namespace").or_insert_with(|| Value::String(ns.to_string()));
            }
            out.push(value);
        }
    }
    if unresolved > 0 {
        notes.push(format!(
            "ResourceSet {name}: {unresolved} rendered template(s) use template logic fluxgate does not evaluate \
             offline (only << inputs.x >> substitution): not checked"
        ));
    }
    (out, notes)
}

/// `text` with every `<< ... >>` expression replaced by its input value; `None` when an
/// expression is not a plain input path. In JSON text (`json`), values are escaped for a string.
fn render(text: &str, input: &Value, json: bool) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        let len = rest[start..].find(">>")?;
        let raw = &rest[start + 2..start + len];
        // In JSON text the expression's own quotes (`default "x"`) are escaped.
        let unescaped =
            if json { serde_json::from_str::<String>(&format!("\"{raw}\"")).ok()? } else { raw.to_string() };
        let expr = unescaped.trim().trim_start_matches('-').trim_end_matches('-').trim();
        let value = evaluate(expr, input)?;
        if json {
            let quoted = Value::String(value).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        } else {
            out.push_str(&value);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// `inputs.a.b`, optionally piped through `quote` or `default "x"`.
fn evaluate(expr: &str, input: &Value) -> Option<String> {
    let mut parts = expr.split('|').map(str::trim);
    let path = parts.next()?.strip_prefix("inputs.")?;
    let mut value = path.split('.').try_fold(input, |v, key| v.get(key)).filter(|v| !v.is_null()).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    for pipe in parts {
        if pipe == "quote" {
            continue;
        }
        let fallback = pipe.strip_prefix("default ")?.trim().trim_matches('"');
        value = value.filter(|v| !v.is_empty()).or_else(|| Some(fallback.to_string()));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_input_renders_every_template() {
        let set = json!({
            "apiVersion": "fluxcd.controlplane.io/v1", "kind": "ResourceSet",
            "metadata": {"name": "apps", "namespace": "apps"},
            "spec": {
                "inputs": [{"app": {"name": "web"}, "after": "api"}, {"app": {"name": "api"}}],
                "resources": [{
                    "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "<< inputs.app.name >>"},
                    "spec": {"dependsOn": [{"name": "<< inputs.after | default \"db\" >>"}]}
                }]
            }
        });
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        let got: Vec<(String, String, String)> = out
            .iter()
            .map(|v| {
                (
                    v["metadata"]["namespace"].as_str().unwrap().to_string(),
                    v["metadata"]["name"].as_str().unwrap().to_string(),
                    v["spec"]["dependsOn"][0]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, [("apps".into(), "web".into(), "api".into()), ("apps".into(), "api".into(), "db".into())]);
    }

    #[test]
    fn inputs_from_providers_and_template_logic_are_noted() {
        let set = json!({
            "apiVersion": "fluxcd.controlplane.io/v1", "kind": "ResourceSet", "metadata": {"name": "previews"},
            "spec": {
                "inputsFrom": [{"kind": "ResourceSetInputProvider", "name": "prs"}],
                "resources": [{"kind": "HelmRelease", "metadata": {"name": "<< inputs.id | lower >>"}}]
            }
        });
        let (out, notes) = expand(&set);
        assert!(out.is_empty());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("not resolvable offline"));
        // Inline inputs through a template function fluxgate does not evaluate: noted.
        let mut set = set;
        set["spec"]["inputs"] = json!([{"id": "42"}]);
        let (out, notes) = expand(&set);
        assert!(out.is_empty());
        assert!(notes[1].contains("1 rendered template(s) use template logic"), "{notes:?}");
    }
}

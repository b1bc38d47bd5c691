//! Whether a webhook configuration as registered sends the requests a policy needs: its
//! `rules`, `namespaceSelector`, `objectSelector` and `matchConditions` (evaluated with a CEL
//! interpreter) applied to each [`Need`], as the API server applies them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Hook, cel_value, needs::Need};

/// A need the registered configuration does not send (or may not), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub what: String,
    pub why: String,
    /// `false` when a condition could not be evaluated here: one written by someone else may
    /// use a function of the API server's CEL library that this interpreter lacks, so whether
    /// the request is sent is not known.
    pub certain: bool,
}

/// The needs of `hook` that `configuration` (a Validating- or MutatingWebhookConfiguration as
/// JSON) would not send to fluxgate.
pub fn skipped(configuration: &Value, hook: Hook, needs: &[Need]) -> Vec<Skipped> {
    let webhook =
        configuration["webhooks"].as_array().and_then(|ws| ws.iter().find(|w| w["name"] == hook.webhook_name()));
    let mut out = Vec::new();
    for need in needs.iter().filter(|n| n.hook == hook) {
        let why = match webhook {
            None => Some((format!("the configuration has no webhook named {}", hook.webhook_name()), true)),
            Some(w) => why_skipped(w, &need.review["request"]),
        };
        if let Some((why, certain)) = why {
            out.push(Skipped { what: need.what.clone(), why, certain });
        }
    }
    out
}

fn listed(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

/// Why `webhook` would not be called for `request` (and whether that is certain), or `None`
/// when it would.
fn why_skipped(webhook: &Value, request: &Value) -> Option<(String, bool)> {
    let certain = |why: String| Some((why, true));
    let (group, version, resource) = (
        request["resource"]["group"].as_str().unwrap_or_default(),
        request["resource"]["version"].as_str().unwrap_or_default(),
        request["resource"]["resource"].as_str().unwrap_or_default(),
    );
    let operation = request["operation"].as_str().unwrap_or_default();
    let matched = webhook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            listed(&r["apiGroups"], group)
                && listed(&r["apiVersions"], version)
                && listed(&r["resources"], resource)
                && listed(&r["operations"], operation)
                && r["scope"].as_str().is_none_or(|s| s == "*" || s == "Namespaced")
        })
    });
    if !matched {
        return certain(format!("its rules leave out {operation} of {resource}.{group}"));
    }
    let namespace = request["namespace"].as_str().unwrap_or_default();
    // The namespace's other labels are not known here: the selector is judged on the one the
    // API server always sets.
    let ns_labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())]);
    if !selects(&webhook["namespaceSelector"], &ns_labels) {
        return certain(format!("its namespaceSelector leaves out namespace {namespace}"));
    }
    let object = if request["object"].is_null() { &request["oldObject"] } else { &request["object"] };
    let labels: BTreeMap<String, String> =
        serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
    if !selects(&webhook["objectSelector"], &labels) {
        return certain("its objectSelector leaves the object out".to_string());
    }
    let mut context = cel::Context::default();
    context.add_variable_from_value("request", cel_value(request));
    context.add_variable_from_value("object", cel_value(&request["object"]));
    context.add_variable_from_value("oldObject", cel_value(&request["oldObject"]));
    for condition in webhook["matchConditions"].as_array().into_iter().flatten() {
        let name = condition["name"].as_str().unwrap_or_default();
        let expression = condition["expression"].as_str().unwrap_or_default();
        let program = match cel::Program::compile(expression) {
            Ok(p) => p,
            Err(e) => return Some((format!("its matchCondition {name} cannot be read here ({e})"), false)),
        };
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return certain(format!("its matchCondition {name} is false for it")),
            Ok(other) => return certain(format!("its matchCondition {name} gives {other:?}, not a boolean")),
            Err(e) => return Some((format!("its matchCondition {name} cannot be evaluated here ({e})"), false)),
        }
    }
    None
}

/// Whether a label selector (absent: everything) matches `labels`.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let by_label = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str()));
    let by_expression = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::webhooks::{Conditions, configurations, needs::needs};

    #[test]
    fn a_configuration_for_the_policy_sends_every_need_and_one_for_another_does_not() {
        let shipped = Policy::default();
        let with_helm = Policy::parse("defaults: { helmRelease: { install: { crds: Create } } }", "p").unwrap();
        let [validating, mutating] = configurations(&shipped, "fluxgate-system", Conditions::Included);
        let needs = needs(&with_helm);
        assert_eq!(skipped(&validating, Hook::Validate, &needs), []);
        let missed = skipped(&mutating, Hook::Mutate, &needs);
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert_eq!(missed[0].what, "default helmRelease.install.crds");
        assert!(missed[0].why.contains("policy-may-patch"), "{missed:?}");
        assert!(missed[0].certain);
        // A condition this interpreter cannot evaluate leaves the answer open.
        let mut foreign = mutating.clone();
        foreign["webhooks"][0]["matchConditions"] =
            serde_json::json!([{ "name": "foreign", "expression": "request.userInfo.username.lowerAscii() != ''" }]);
        let open = skipped(&foreign, Hook::Mutate, &needs);
        assert!(!open.is_empty() && open.iter().all(|s| !s.certain), "{open:?}");
        // Without conditions everything is sent.
        let [_, bare] = configurations(&shipped, "fluxgate-system", Conditions::LeftToFluxgate);
        assert_eq!(skipped(&bare, Hook::Mutate, &needs), []);
    }
}

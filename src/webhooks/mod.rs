//! The two webhook configurations, derived from the policy.
//!
//! The API server decides what reaches `/validate` and `/mutate` from each configuration's
//! `rules`, `namespaceSelector` and `matchConditions` (CEL). The policy decides what fluxgate
//! would do with a request. Keeping a second copy of the policy in hand-written CEL meant a
//! policy change (a new HelmRelease default, a rule turned on) silently did nothing, so the
//! `matchConditions` are computed here from the policy in force and nowhere else:
//! - [`match_conditions`] gives them for a policy;
//! - [`configurations`] the whole configurations (`fluxgate webhook-config`, and `deploy/`,
//!   which carries everything but the conditions, see [`Conditions`]);
//! - [`owned_fields`] the server-side apply body fluxgate writes under [`FIELD_MANAGER`];
//! - [`needs`] one request per default and rule that the policy needs sent, and
//!   [`registered`] whether a configuration as registered sends each of them;
//! - [`sync`] keeps the registered configurations in step, and says so when it cannot.
//!
//! `rules` stay fixed (every operation on both kinds): they are what Git owns, and a
//! configuration with no conditions sends everything, so a fluxgate that cannot write its
//! conditions costs calls, never a default or a rule.

pub mod needs;
pub mod registered;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::object::{FluxKind, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};
use crate::policy::defaults::SpecDefaults;
use crate::policy::{Action, Defaults, Policy, Rule};

/// Name of both webhook configurations (and of the Service and Deployment in `deploy/`).
pub const CONFIGURATION_NAME: &str = "fluxgate";
/// The field manager under which fluxgate writes its fields of the configurations.
pub const FIELD_MANAGER: &str = "fluxgate";
/// The namespace `deploy/` installs into.
pub const DEFAULT_NAMESPACE: &str = "fluxgate-system";

/// One of the two webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Validate,
    Mutate,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Validate, Hook::Mutate];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Validate => "validate",
            Hook::Mutate => "mutate",
        }
    }

    /// The kind of the configuration holding this webhook.
    pub fn configuration_kind(self) -> &'static str {
        match self {
            Hook::Validate => "ValidatingWebhookConfiguration",
            Hook::Mutate => "MutatingWebhookConfiguration",
        }
    }

    /// The webhook's name inside its configuration.
    pub fn webhook_name(self) -> &'static str {
        match self {
            Hook::Validate => "validate.fluxgate.dev",
            Hook::Mutate => "mutate.fluxgate.dev",
        }
    }
}

/// One entry of `matchConditions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchCondition {
    pub name: &'static str,
    pub expression: String,
}

/// Whether `s` can be written as a CEL field selection (`x.s`): an identifier that is not one
/// of CEL's reserved words. Anything else (`values` keys such as `image.tag`) is indexed.
fn is_cel_identifier(s: &str) -> bool {
    const RESERVED: [&str; 21] = [
        "as",
        "break",
        "const",
        "continue",
        "else",
        "false",
        "for",
        "function",
        "if",
        "import",
        "in",
        "let",
        "loop",
        "namespace",
        "null",
        "package",
        "return",
        "true",
        "var",
        "void",
        "while",
    ];
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&s)
}

/// A CEL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `base.key`, or `base['key']` where `key` is no identifier.
fn select(base: &str, key: &str) -> String {
    if is_cel_identifier(key) { format!("{base}.{key}") } else { format!("{base}[{}]", quote(key)) }
}

/// Whether `base` has `key`: `has(base.key)`, or `('key' in base)` (bracketed: `!` binds
/// tighter than `in`).
fn has(base: &str, key: &str) -> String {
    if is_cel_identifier(key) { format!("has({base}.{key})") } else { format!("({} in {base})", quote(key)) }
}

/// What the validating rules read of an object (see `src/object/mod.rs`), each written so that
/// absent and empty read the same, and every optional field behind `has()`: an expression that
/// fails to evaluate rejects the request under `failurePolicy: Fail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Read {
    DependsOn,
    Wait,
    /// `spec.wait` owned by no field manager (managedFields set): fluxgate's own default,
    /// which draws no edge.
    WaitUnowned,
    HealthChecks,
    OwnerName,
    OwnerNamespace,
}

impl Read {
    fn of(self, o: &str) -> String {
        let label = |l: &str| {
            format!(
                "(has({o}.metadata.labels) && {l} in {o}.metadata.labels ? {o}.metadata.labels[{l}] : '')",
                l = quote(l)
            )
        };
        match self {
            Read::DependsOn => format!("(has({o}.spec) && has({o}.spec.dependsOn) ? {o}.spec.dependsOn : [])"),
            Read::Wait => format!("(has({o}.spec) && has({o}.spec.wait) ? {o}.spec.wait : false)"),
            Read::WaitUnowned => format!("({})", wait_unowned(o)),
            Read::HealthChecks => {
                format!("(has({o}.spec) && has({o}.spec.healthChecks) ? {o}.spec.healthChecks : [])")
            }
            Read::OwnerName => label(OWNER_NAME_LABEL),
            Read::OwnerNamespace => label(OWNER_NAMESPACE_LABEL),
        }
    }
}

/// `o` has managedFields and no entry owns `spec.wait`.
fn wait_unowned(o: &str) -> String {
    format!(
        "has({o}.metadata.managedFields) && size({o}.metadata.managedFields) > 0 \
         && !{o}.metadata.managedFields.exists(m, has(m.fieldsV1) && 'f:spec' in m.fieldsV1 \
         && 'f:wait' in m.fieldsV1['f:spec'])"
    )
}

/// What a rule reads of an UPDATE. The implicit edges (a parent's `wait` or health checks on
/// the Kustomizations it applies) make chains as well as cycles. The rest read `dependsOn`
/// only: a dangling target's action depends on the owner labels only when the request adds
/// the target, which changes `dependsOn`.
fn reads(rule: Rule) -> &'static [Read] {
    const EDGES: &[Read] =
        &[Read::DependsOn, Read::Wait, Read::WaitUnowned, Read::HealthChecks, Read::OwnerName, Read::OwnerNamespace];
    match rule {
        Rule::Cycle | Rule::MaxDepth => EDGES,
        Rule::DanglingDependsOn | Rule::CrossNamespaceDependsOn | Rule::DuplicateDependsOn => &[Read::DependsOn],
        Rule::DeleteWithDependents => &[],
    }
}

fn on(policy: &Policy, rule: Rule) -> bool {
    policy.action(rule) != Action::Off
}

/// The validating expression: CREATE while a rule judging objects is on, UPDATE when it changes
/// a field such a rule reads (an unchanged object can never be denied: what the old object had
/// only warns, and Flux does not show webhook warnings), DELETE while `deleteWithDependents` is
/// on. `false` when every rule is off.
fn validate_expression(policy: &Policy) -> String {
    let fields: BTreeSet<Read> =
        Rule::ALL.into_iter().filter(|&r| on(policy, r)).flat_map(|r| reads(r).iter().copied()).collect();
    let mut parts = Vec::new();
    if !fields.is_empty() {
        parts.push("request.operation == 'CREATE'".to_string());
        let changes: Vec<String> =
            fields.iter().map(|f| format!("{} != {}", f.of("object"), f.of("oldObject"))).collect();
        parts.push(format!("(request.operation == 'UPDATE' && (\n  {}))", changes.join("\n  || ")));
    }
    if on(policy, Rule::DeleteWithDependents) {
        parts.push("request.operation == 'DELETE'".to_string());
    }
    // One line per part, so that `webhook-config` prints a block a person can read.
    if parts.is_empty() { "false".to_string() } else { parts.join("\n|| ") }
}

/// Every leaf of a partial spec as a path of keys: a value that is not a non-empty mapping
/// (lists are values; an empty mapping is added whole).
pub fn leaves(defaults: &SpecDefaults) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in defaults {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for mut rest in leaves(m) {
                    rest.insert(0, k.clone());
                    out.push(rest);
                }
            }
            _ => out.push(vec![k.clone()]),
        }
    }
    out
}

/// `object.spec` lacks the leaf at `path`: some prefix of it is absent (a default is added
/// under mappings the object has, never into another value, as `defaults::complete` does).
fn lacks(path: &[String]) -> String {
    let mut base = "object.spec".to_string();
    let mut parts = Vec::new();
    for key in path {
        parts.push(format!("!{}", has(&base, key)));
        base = select(&base, key);
    }
    parts.join(" || ")
}

/// A Kustomization that gets the `wait` default when it lacks it: no health checks (Flux
/// ignores them under `wait`) and owner labels naming a parent other than itself. Whether it is
/// itself a parent only the cache knows, so those are sent.
fn lacks_wait() -> String {
    format!(
        "!has(object.spec.wait) \
         && !(has(object.spec.healthChecks) && size(object.spec.healthChecks) > 0) \
         && !(has(object.spec.healthCheckExprs) && size(object.spec.healthCheckExprs) > 0) \
         && has(object.metadata.labels) && {name} in object.metadata.labels && {ns} in object.metadata.labels \
         && object.metadata.labels[{name}] != '' && object.metadata.labels[{ns}] != '' \
         && !(object.metadata.labels[{name}] == (has(object.metadata.name) ? object.metadata.name : request.name) \
         && object.metadata.labels[{ns}] == request.namespace)",
        name = quote(OWNER_NAME_LABEL),
        ns = quote(OWNER_NAMESPACE_LABEL),
    )
}

/// `spec.wait: true` that no field manager owns: fluxgate's own earlier default, which it takes
/// back when the object no longer wants it (health checks set, a root, a parent). Independent
/// of the defaults: a policy that drops `wait` still takes back what it added.
fn own_wait() -> String {
    format!("has(object.spec.wait) && object.spec.wait == true && {}", wait_unowned("object"))
}

/// What may be patched on objects under one set of defaults.
fn mutate_scope(defaults: &Defaults) -> String {
    let mut kustomization: Vec<String> = Vec::new();
    for path in leaves(&defaults.kustomization) {
        kustomization.push(if path == ["wait"] { lacks_wait() } else { lacks(&path) });
    }
    kustomization.push(own_wait());
    let helm_release: Vec<String> = leaves(&defaults.helm_release).iter().map(|p| lacks(p)).collect();
    let mut parts = Vec::new();
    for (kind, clauses) in [(FluxKind::Kustomization, kustomization), (FluxKind::HelmRelease, helm_release)] {
        if clauses.is_empty() {
            continue;
        }
        let clauses: Vec<String> = clauses.into_iter().map(|c| format!("({c})")).collect();
        parts.push(format!(
            "(request.kind.kind == {} && has(object.spec) && (\n    {}))",
            quote(kind.as_str()),
            clauses.join("\n    || ")
        ));
    }
    parts.join("\n|| ")
}

/// The mutating expression: the scope of the request's namespace, namespaces whose defaults
/// are the same sharing one branch.
fn mutate_expression(policy: &Policy) -> String {
    let global = mutate_scope(&policy.defaults);
    let mut branches: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (ns, defaults) in &policy.namespace_defaults {
        if policy.is_excluded(ns) {
            continue;
        }
        let scope = mutate_scope(defaults);
        if scope != global {
            branches.entry(scope).or_default().insert(ns);
        }
    }
    let mut expression = String::new();
    // Sorted by the first namespace, so the text is the same for the same policy.
    let mut ordered: Vec<(Vec<&str>, String)> =
        branches.into_iter().map(|(scope, nss)| (nss.into_iter().collect(), scope)).collect();
    ordered.sort();
    for (nss, scope) in ordered {
        let list: Vec<String> = nss.iter().map(|n| quote(n)).collect();
        expression.push_str(&format!("request.namespace in [{}] ? (\n{scope}\n) : ", list.join(", ")));
    }
    expression.push_str(&format!("({global})"));
    expression
}

/// The `matchConditions` of `hook` for `policy`. All must hold for a request to be sent.
pub fn match_conditions(policy: &Policy, hook: Hook) -> Vec<MatchCondition> {
    let mut out = Vec::new();
    if !policy.excluded_namespaces.is_empty() {
        let excluded: BTreeSet<&String> = policy.excluded_namespaces.iter().collect();
        let list: Vec<String> = excluded.iter().map(|n| quote(n)).collect();
        out.push(MatchCondition {
            name: "namespace-not-excluded",
            expression: format!("!(request.namespace in [{}])", list.join(", ")),
        });
    }
    let (name, expression) = match hook {
        Hook::Validate => ("policy-may-judge", validate_expression(policy)),
        Hook::Mutate => ("policy-may-patch", mutate_expression(policy)),
    };
    out.push(MatchCondition { name, expression });
    out
}

/// Whether [`configurations`] writes the `matchConditions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditions {
    /// Written: for manifests that fluxgate does not keep in step.
    Included,
    /// Left to fluxgate (`serve` writes them with server-side apply): for manifests applied from
    /// Git, which then never fight fluxgate over them. `deploy/` is this.
    LeftToFluxgate,
}

/// The validating and mutating configurations for `policy`, fluxgate running in `namespace`.
/// Validation fails closed (a cycle must not slip in while fluxgate is down), mutation open
/// (defaults are a convenience); both skip fluxgate's own namespace and `kube-system`.
pub fn configurations(policy: &Policy, namespace: &str, conditions: Conditions) -> [Value; 2] {
    let excluded: BTreeSet<&str> = [namespace, "kube-system"].into_iter().collect();
    Hook::ALL.map(|hook| {
        let mut operations = vec!["CREATE", "UPDATE"];
        if hook == Hook::Validate {
            operations.push("DELETE");
        }
        let rules: Vec<Value> = [("kustomize.toolkit.fluxcd.io", "kustomizations"), ("helm.toolkit.fluxcd.io", "helmreleases")]
            .into_iter()
            .map(|(group, resource)| {
                json!({ "apiGroups": [group], "apiVersions": ["*"], "resources": [resource],
                        "operations": operations, "scope": "Namespaced" })
            })
            .collect();
        let mut webhook = json!({
            "name": hook.webhook_name(),
            "admissionReviewVersions": ["v1"],
            // Neither writes anything outside fluxgate (a review forwarded to the deciding replica
            // stays inside it). Flux dry-runs every object: a webhook with side effects would
            // have every dry-run refused.
            "sideEffects": "None",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 5,
            "failurePolicy": if hook == Hook::Validate { "Fail" } else { "Ignore" },
            "clientConfig": { "service": {
                "name": CONFIGURATION_NAME, "namespace": namespace, "path": format!("/{}", hook.as_str()), "port": 443 } },
            "namespaceSelector": { "matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded } ] },
            "rules": rules,
        });
        if hook == Hook::Mutate {
            webhook["reinvocationPolicy"] = json!("Never");
        }
        if conditions == Conditions::Included {
            webhook["matchConditions"] = json!(match_conditions(policy, hook));
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": hook.configuration_kind(),
            "metadata": { "name": CONFIGURATION_NAME },
            "webhooks": [webhook],
        })
    })
}

/// The server-side apply body with only the fields fluxgate owns: the webhook's name (the key
/// of its list entry, which Git's manager owns as well) and its `matchConditions`.
pub fn owned_fields(policy: &Policy, hook: Hook, configuration: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": hook.configuration_kind(),
        "metadata": { "name": configuration },
        "webhooks": [{ "name": hook.webhook_name(), "matchConditions": match_conditions(policy, hook) }],
    })
}

/// `configurations` as one YAML stream.
pub fn to_yaml(configurations: &[Value]) -> String {
    configurations
        .iter()
        .map(|c| serde_saphyr::to_string(c).expect("a JSON value serialises to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A JSON value as the API server hands it to CEL (integers stay integers).
pub fn cel_value(v: &Value) -> cel::Value {
    use std::sync::Arc;
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            n.as_i64().map_or_else(|| cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)), cel::Value::Int)
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(cel_value).collect())),
        Value::Object(m) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> =
                m.iter().map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), cel_value(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_no_identifiers_are_indexed() {
        assert_eq!(
            lacks(&["install".into(), "crds".into()]),
            "!has(object.spec.install) || !has(object.spec.install.crds)"
        );
        assert_eq!(
            lacks(&["values".into(), "image.tag".into()]),
            "!has(object.spec.values) || !('image.tag' in object.spec.values)"
        );
        assert_eq!(select("x", "namespace"), "x['namespace']");
        assert_eq!(quote("it's"), "'it\\'s'");
    }

    #[test]
    fn every_rule_off_sends_nothing_to_validate() {
        let mut p = Policy::default();
        for r in Rule::ALL {
            p.set_action(r, Action::Off);
        }
        assert_eq!(validate_expression(&p), "false");
        p.set_action(Rule::DeleteWithDependents, Action::Warn);
        assert_eq!(validate_expression(&p), "request.operation == 'DELETE'");
    }

    #[test]
    fn namespaces_with_the_same_defaults_share_a_branch_and_the_global_ones_need_none() {
        let p = Policy::parse(
            "namespaces: { overrides: {
               a: { defaults: { helmRelease: { timeout: 9m } } },
               b: { defaults: { helmRelease: { timeout: 9m } } },
               c: { enforcement: audit, defaults: { kustomization: { timeout: 5m } } } } }",
            "p",
        )
        .unwrap();
        let expression = mutate_expression(&p);
        assert_eq!(expression.matches("request.namespace in").count(), 1, "{expression}");
        assert!(expression.starts_with("request.namespace in ['a', 'b'] ? ("), "{expression}");
    }

    /// What the API server checks of `matchConditions` besides their CEL: at most 64, names
    /// unique qualified names.
    #[test]
    fn condition_names_are_what_the_api_server_accepts() {
        let qualified = regex::Regex::new("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap();
        for p in [Policy::default(), Policy::parse("namespaces: { exclude: [] }", "p").unwrap()] {
            for hook in Hook::ALL {
                let conditions = match_conditions(&p, hook);
                assert!(!conditions.is_empty() && conditions.len() <= 64);
                let names: BTreeSet<&str> = conditions.iter().map(|c| c.name).collect();
                assert_eq!(names.len(), conditions.len(), "unique");
                assert!(names.iter().all(|n| qualified.is_match(n) && n.len() <= 63), "{names:?}");
            }
        }
    }

    #[test]
    fn every_generated_expression_compiles() {
        let p = Policy::parse(
            "defaults: { helmRelease: { install: { crds: Create }, values: { image.tag: v1 } } }\n\
             namespaces: { exclude: [kube-system], overrides: { t: { defaults: { kustomization: { wait: null } } } } }",
            "p",
        )
        .unwrap();
        for hook in Hook::ALL {
            for c in match_conditions(&p, hook) {
                cel::Program::compile(&c.expression).unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
            }
        }
    }
}

//! The policy file: which rules run at which action, enforcement per namespace, and the
//! defaults the mutating webhook adds.
//!
//! The file is read into a generic YAML tree and walked by hand, so that every mistake (an
//! unknown key, a bad action, a malformed duration) is reported with the full key path.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

pub mod defaults;
pub mod live;

use crate::object::FluxKind;
use defaults::SpecDefaults;

/// What a rule does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deny,
    Warn,
    Off,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Off => "off",
        }
    }
}

/// `enforce` denies what the rules deny; `audit` turns every deny into a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    Enforce,
    Audit,
}

/// The rules, one name each across code, messages, metrics and the policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Rule {
    #[serde(rename = "cycle")]
    Cycle,
    #[serde(rename = "danglingDependsOn")]
    DanglingDependsOn,
    #[serde(rename = "crossNamespaceDependsOn")]
    CrossNamespaceDependsOn,
    #[serde(rename = "maxDepth")]
    MaxDepth,
    #[serde(rename = "deleteWithDependents")]
    DeleteWithDependents,
    #[serde(rename = "duplicateDependsOn")]
    DuplicateDependsOn,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::Cycle,
        Rule::DanglingDependsOn,
        Rule::CrossNamespaceDependsOn,
        Rule::MaxDepth,
        Rule::DeleteWithDependents,
        Rule::DuplicateDependsOn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Cycle => "cycle",
            Rule::DanglingDependsOn => "danglingDependsOn",
            Rule::CrossNamespaceDependsOn => "crossNamespaceDependsOn",
            Rule::MaxDepth => "maxDepth",
            Rule::DeleteWithDependents => "deleteWithDependents",
            Rule::DuplicateDependsOn => "duplicateDependsOn",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The defaults of one namespace: each a partial `spec` (see [`crate::policy::defaults`]).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Defaults {
    pub kustomization: SpecDefaults,
    pub helm_release: SpecDefaults,
}

impl Defaults {
    /// The defaults of `kind`.
    pub fn of(&self, kind: FluxKind) -> &SpecDefaults {
        match kind {
            FluxKind::Kustomization => &self.kustomization,
            FluxKind::HelmRelease => &self.helm_release,
        }
    }
}

/// The whole policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub enforcement: Enforcement,
    actions: HashMap<Rule, Action>,
    /// `maxDepth.limit`: the longest allowed chain, in objects.
    pub max_depth_limit: usize,
    /// `defaults`: what the mutating webhook adds, everywhere but where a namespace overrides it.
    pub defaults: Defaults,
    /// `namespaces.overrides.<ns>.defaults`, already merged over [`Policy::defaults`].
    pub namespace_defaults: HashMap<String, Defaults>,
    pub excluded_namespaces: HashSet<String>,
    pub namespace_enforcement: HashMap<String, Enforcement>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enforcement: Enforcement::Enforce,
            actions: Rule::ALL.iter().map(|&r| (r, default_action(r))).collect(),
            max_depth_limit: 8,
            defaults: Defaults {
                kustomization: Map::from_iter([
                    ("wait".to_string(), Value::Bool(true)),
                    ("timeout".to_string(), Value::String("5m".into())),
                ]),
                helm_release: Map::new(),
            },
            namespace_defaults: HashMap::new(),
            excluded_namespaces: HashSet::from(["kube-system".to_string()]),
            namespace_enforcement: HashMap::new(),
        }
    }
}

fn default_action(rule: Rule) -> Action {
    match rule {
        Rule::Cycle | Rule::DanglingDependsOn => Action::Deny,
        Rule::CrossNamespaceDependsOn | Rule::MaxDepth => Action::Off,
        Rule::DeleteWithDependents | Rule::DuplicateDependsOn => Action::Warn,
    }
}

/// A policy file that cannot be used. `key` is the full path of the offending key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {file}: {key}: {message}")]
    Key { file: String, key: String, message: String },
    #[error("policy {file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("policy {file}: cannot be read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl Policy {
    /// The action of a rule.
    pub fn action(&self, rule: Rule) -> Action {
        self.actions[&rule]
    }

    /// Sets a rule's action (used by tests and by callers that build a policy in code).
    pub fn set_action(&mut self, rule: Rule, action: Action) {
        self.actions.insert(rule, action);
    }

    /// Enforcement for objects in `namespace`.
    pub fn enforcement_for(&self, namespace: &str) -> Enforcement {
        self.namespace_enforcement.get(namespace).copied().unwrap_or(self.enforcement)
    }

    /// The defaults for `kind` objects in `namespace`.
    pub fn defaults_for(&self, kind: FluxKind, namespace: &str) -> &SpecDefaults {
        self.namespace_defaults.get(namespace).unwrap_or(&self.defaults).of(kind)
    }

    pub fn is_excluded(&self, namespace: &str) -> bool {
        self.excluded_namespaces.contains(namespace)
    }

    /// Reads a policy file.
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Io { file: file.clone(), source: std::sync::Arc::new(e) })?;
        Policy::parse(&text, &file)
    }

    /// Parses policy YAML; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
        let root: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| PolicyError::Yaml { file: file.to_string(), message: e.to_string() })?
        };
        let mut p = Parser { file, policy: Policy::default() };
        p.root(&root)?;
        Ok(p.policy)
    }
}

struct Parser<'a> {
    file: &'a str,
    policy: Policy,
}

impl Parser<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::Key { file: self.file.to_string(), key: key.to_string(), message: message.into() }
    }

    fn map<'v>(&self, key: &str, v: &'v Value, allowed: &[&str]) -> Result<&'v Map<String, Value>, PolicyError> {
        let map = match v {
            Value::Object(m) => m,
            _ => return Err(self.err(key, "must be a mapping")),
        };
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                let path = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
                return Err(self.err(&path, format!("unknown key (expected one of: {})", allowed.join(", "))));
            }
        }
        Ok(map)
    }

    fn root(&mut self, v: &Value) -> Result<(), PolicyError> {
        if v.is_null() {
            return Ok(());
        }
        let m = self.map("", v, &["enforcement", "rules", "defaults", "namespaces"])?;
        if let Some(e) = m.get("enforcement") {
            self.policy.enforcement = self.enforcement("enforcement", e)?;
        }
        if let Some(r) = m.get("rules") {
            self.rules(r)?;
        }
        if let Some(d) = m.get("defaults") {
            self.defaults(d)?;
        }
        if let Some(n) = m.get("namespaces") {
            self.namespaces(n)?;
        }
        Ok(())
    }

    fn enforcement(&self, key: &str, v: &Value) -> Result<Enforcement, PolicyError> {
        match v.as_str() {
            Some("enforce") => Ok(Enforcement::Enforce),
            Some("audit") => Ok(Enforcement::Audit),
            _ => Err(self.err(key, format!("must be enforce or audit, not {v}"))),
        }
    }

    fn action(&self, key: &str, v: &Value) -> Result<Action, PolicyError> {
        match v {
            // An unquoted `off` is the boolean false to YAML 1.1 readers.
            Value::Bool(false) => return Ok(Action::Off),
            Value::Bool(true) => {
                return Err(self.err(key, "must be deny, warn or off, not a boolean (write \"deny\" or \"warn\")"));
            }
            _ => {}
        }
        match v.as_str() {
            Some("deny") => Ok(Action::Deny),
            Some("warn") => Ok(Action::Warn),
            Some("off") => Ok(Action::Off),
            _ => Err(self.err(key, format!("must be deny, warn or off, not {v}"))),
        }
    }

    fn rules(&mut self, v: &Value) -> Result<(), PolicyError> {
        let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        let m = self.map("rules", v, &names)?;
        for rule in Rule::ALL {
            let Some(value) = m.get(rule.as_str()) else {
                continue;
            };
            let key = format!("rules.{rule}");
            if rule == Rule::MaxDepth && value.is_object() {
                let md = self.map(&key, value, &["action", "limit"])?;
                if let Some(a) = md.get("action") {
                    let action = self.action(&format!("{key}.action"), a)?;
                    self.policy.set_action(rule, action);
                }
                if let Some(l) = md.get("limit") {
                    let limit = l.as_u64().filter(|&n| n >= 2).ok_or_else(|| {
                        self.err(&format!("{key}.limit"), format!("must be a whole number of at least 2, not {l}"))
                    })?;
                    self.policy.max_depth_limit = limit as usize;
                }
            } else {
                let action = self.action(&key, value)?;
                self.policy.set_action(rule, action);
            }
        }
        Ok(())
    }

    fn defaults(&mut self, v: &Value) -> Result<(), PolicyError> {
        self.policy.defaults = self.defaults_of("defaults", v, &self.policy.defaults)?;
        Ok(())
    }

    /// Reads `kustomization` and `helmRelease` under `key` into `base`: each replaces `base`'s
    /// (`defaults`) or is merged over it (a namespace's override). Every default is checked
    /// against the CRD's spec schema.
    fn defaults_of(&self, key: &str, v: &Value, base: &Defaults) -> Result<Defaults, PolicyError> {
        let mut out = base.clone();
        if v.is_null() {
            return Ok(out);
        }
        let m = self.map(key, v, &["kustomization", "helmRelease"])?;
        let merging = key != "defaults";
        for (name, kind) in [("kustomization", FluxKind::Kustomization), ("helmRelease", FluxKind::HelmRelease)] {
            let Some(d) = m.get(name) else { continue };
            let key = format!("{key}.{name}");
            let d = match d {
                Value::Null => Map::new(),
                Value::Object(d) => d.clone(),
                _ => return Err(self.err(&key, "must be a mapping of spec fields")),
            };
            crate::policy::defaults::check(kind, &d).map_err(|r| {
                self.err(&format!("{key}.{}", r.key), format!("{} (the {kind} CRD's spec schema)", r.message))
            })?;
            let target = match kind {
                FluxKind::Kustomization => &mut out.kustomization,
                FluxKind::HelmRelease => &mut out.helm_release,
            };
            *target = if merging { crate::policy::defaults::merge(target, &d) } else { d };
        }
        Ok(out)
    }

    fn namespaces(&mut self, v: &Value) -> Result<(), PolicyError> {
        let m = self.map("namespaces", v, &["exclude", "overrides"])?;
        if let Some(e) = m.get("exclude") {
            let list = e.as_array().ok_or_else(|| self.err("namespaces.exclude", "must be a list of namespaces"))?;
            let mut set = HashSet::new();
            for (i, ns) in list.iter().enumerate() {
                let ns = ns
                    .as_str()
                    .ok_or_else(|| self.err(&format!("namespaces.exclude[{i}]"), "must be a namespace name"))?;
                set.insert(ns.to_string());
            }
            self.policy.excluded_namespaces = set;
        }
        if let Some(o) = m.get("overrides") {
            let o = match o {
                Value::Object(o) => o,
                Value::Null => return Ok(()),
                _ => {
                    return Err(self.err("namespaces.overrides", "must be a mapping of namespace to settings"));
                }
            };
            for (ns, settings) in o {
                let key = format!("namespaces.overrides.{ns}");
                let s = self.map(&key, settings, &["enforcement", "defaults"])?;
                if let Some(e) = s.get("enforcement") {
                    let e = self.enforcement(&format!("{key}.enforcement"), e)?;
                    self.policy.namespace_enforcement.insert(ns.clone(), e);
                }
                if let Some(d) = s.get("defaults") {
                    let merged = self.defaults_of(&format!("{key}.defaults"), d, &self.policy.defaults)?;
                    self.policy.namespace_defaults.insert(ns.clone(), merged);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
enforcement: enforce            # enforce | audit
rules:
  cycle: deny                   # deny | warn | off
  danglingDependsOn: deny
  crossNamespaceDependsOn: off
  deleteWithDependents: warn
  maxDepth: { action: off, limit: 8 }
defaults:
  kustomization: { wait: true, timeout: 5m }     # {} disables mutation
  helmRelease: {}
namespaces:
  exclude: [kube-system]
  overrides:
    tenant-a: { enforcement: audit }
"#;
        let p = Policy::parse(text, "p.yaml").unwrap();
        assert_eq!(p, {
            let mut d = Policy::default();
            d.namespace_enforcement.insert("tenant-a".into(), Enforcement::Audit);
            d
        });
        assert_eq!(p.enforcement_for("tenant-a"), Enforcement::Audit);
        assert_eq!(p.enforcement_for("other"), Enforcement::Enforce);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("enforcment: audit", "policy p.yaml: enforcment: unknown key"),
            ("rules: { cycle: block }", "policy p.yaml: rules.cycle: must be deny, warn or off, not \"block\""),
            ("rules: { cycles: deny }", "policy p.yaml: rules.cycles: unknown key"),
            ("rules: { maxDepth: { limit: 1 } }", "policy p.yaml: rules.maxDepth.limit: must be a whole number"),
            (
                "defaults: { kustomization: { timeout: 5 minutes } }",
                "policy p.yaml: defaults.kustomization.timeout: must be a duration",
            ),
            ("defaults: { kustomization: { prun: true } }", "policy p.yaml: defaults.kustomization.prun: unknown key"),
            (
                "defaults: { helmRelease: { upgrade: { remediation: { retries: three } } } }",
                "policy p.yaml: defaults.helmRelease.upgrade.remediation.retries: must be a whole number",
            ),
            (
                "namespaces: { overrides: { t: { defaults: { helmRelease: { install: { crds: Always } } } } } }",
                "policy p.yaml: namespaces.overrides.t.defaults.helmRelease.install.crds: must be one of",
            ),
            (
                "namespaces: { overrides: { t: { enforcement: loud } } }",
                "policy p.yaml: namespaces.overrides.t.enforcement: must be enforce or audit",
            ),
            ("enforcement: enforce\n  bad: [", "policy p.yaml: not valid YAML"),
        ];
        for (text, want) in cases {
            let err = Policy::parse(text, "p.yaml").unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: got {err:?}, want prefix {want:?}");
        }
    }

    #[test]
    fn empty_kustomization_defaults_disable_mutation() {
        let p = Policy::parse("defaults: { kustomization: {} }", "p").unwrap();
        assert!(p.defaults.kustomization.is_empty());
        let p = Policy::parse("", "p").unwrap();
        assert_eq!(p.defaults.kustomization.len(), 2);
    }

    #[test]
    fn namespace_defaults_merge_over_the_global_ones() {
        let text = r#"
defaults:
  helmRelease: { timeout: 10m, install: { crds: Create, remediation: { retries: 3 } } }
namespaces:
  overrides:
    tenant-a: { defaults: { helmRelease: { timeout: null, install: { remediation: { retries: 5 } } } } }
"#;
        let p = Policy::parse(text, "p.yaml").unwrap();
        let global = p.defaults_for(FluxKind::HelmRelease, "other");
        assert_eq!(
            Value::Object(global.clone()),
            serde_json::json!({"timeout": "10m", "install": {"crds": "Create", "remediation": {"retries": 3}}})
        );
        let tenant = p.defaults_for(FluxKind::HelmRelease, "tenant-a");
        assert_eq!(
            Value::Object(tenant.clone()),
            serde_json::json!({"install": {"crds": "Create", "remediation": {"retries": 5}}})
        );
        // Kustomization defaults in tenant-a are the global ones.
        assert_eq!(p.defaults_for(FluxKind::Kustomization, "tenant-a"), &Policy::default().defaults.kustomization);
    }
}

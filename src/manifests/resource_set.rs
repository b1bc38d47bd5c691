//! flux-operator `ResourceSet`s (`fluxcd.controlplane.io/v1`): the objects they generate, one
//! set per input, and the objects they wait for (`spec.dependsOn`).
//!
//! flux-operator renders every template of `spec.resources` (each written out as YAML text
//! first) and the `spec.resourcesTemplate` string once per input with Go's text/template:
//! delimiters `<<` `>>`, a missing map key is an error, `inputs` is a function returning the
//! input set, and the functions are slim-sprig's repeatable ones plus `slugify` and `toYaml`.
//! fluxgate renders them the same way with `gotmpl` (a port of text/template) and the functions
//! in [`functions`], so objects generated through `if`, `range` or pipelines join the graph like
//! any other. Inputs that come from `spec.inputsFrom` (a `ResourceSetInputProvider` querying
//! GitHub, GitLab, ...) exist only in the cluster: they are noted, not guessed. A generated
//! object without a namespace lands in the ResourceSet's.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use gotmpl::{FuncMap, MissingKey, Template, TemplateError, Value as TValue};
use serde_json::{Map, Value};

/// The API group of flux-operator, as it appears in `apiVersion`.
pub(super) const GROUP: &str = "fluxcd.controlplane.io/";

/// The annotation that keeps a generated object out of what flux-operator applies.
const RECONCILE_ANNOTATION: &str = "fluxcd.controlplane.io/reconcile";

/// Whether `value` is a flux-operator ResourceSet.
pub(super) fn is_resource_set(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("ResourceSet")
        && value.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v.starts_with(GROUP))
}

/// One entry of a ResourceSet's `spec.dependsOn`: an object of any kind that must exist (and,
/// with `ready`, be ready) before flux-operator applies what the set generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dependency {
    /// `apiVersion` of the object, e.g. `kustomize.toolkit.fluxcd.io/v1`.
    pub api_version: String,
    /// Its `kind`: any kind, Flux's or not.
    pub kind: String,
    /// Its `metadata.name`.
    pub name: String,
    /// As written: flux-operator looks the object up in exactly this namespace and does not
    /// default it to the ResourceSet's, so `None` is kept distinct from the set's namespace.
    pub namespace: Option<String>,
}

/// The objects `set` waits for, from its `spec.dependsOn`. Entries the CRD rejects (no
/// `apiVersion`, `kind` or `name`) are left out: such a ResourceSet never reaches a cluster.
pub(super) fn dependencies(set: &Value) -> Vec<Dependency> {
    let entries = set.pointer("/spec/dependsOn").and_then(Value::as_array).into_iter().flatten();
    entries
        .filter_map(|entry| {
            let field = |key: &str| entry.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
            Some(Dependency {
                api_version: field("apiVersion")?.to_string(),
                kind: field("kind")?.to_string(),
                name: field("name")?.to_string(),
                namespace: field("namespace").map(str::to_string),
            })
        })
        .collect()
}

/// The objects `set` generates from its inline inputs, and notes on what cannot be expanded:
/// inputs from the cluster, and templates that fail to render (named with their input and
/// error). Objects that do render are kept even when another template or input fails, so the
/// rest of the set is still checked; the note says what is missing.
pub(super) fn expand(set: &Value) -> (Vec<Value>, Vec<String>) {
    let name = set.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let namespace = set.pointer("/metadata/namespace").and_then(Value::as_str);
    let mut notes = Vec::new();
    let permute = set.pointer("/spec/inputStrategy/name").and_then(Value::as_str) == Some("Permute");
    let inline: Vec<&Map<String, Value>> = set
        .pointer("/spec/inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    if set.pointer("/spec/inputsFrom").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        // Permuted, every inline input is combined with the providers' inputs: none stands alone.
        let expanded = if permute {
            "with the Permute strategy nothing is expanded"
        } else {
            "only inline spec.inputs are expanded"
        };
        notes.push(format!(
            "ResourceSet {name}: inputs from spec.inputsFrom come from the cluster and are not resolvable offline; \
             {expanded}"
        ));
        if inline.is_empty() || permute {
            return (Vec::new(), notes);
        }
    }
    let inputs = input_sets(set, &inline, permute);

    let mut renderer = Renderer { set: name, functions: functions(), notes: &mut notes };
    let mut out = Vec::new();
    match set.pointer("/spec/steps").and_then(Value::as_array) {
        Some(steps) => {
            for step in steps {
                let step_name = step.get("name").and_then(Value::as_str).unwrap_or("?");
                out.extend(renderer.build(step, &inputs, &format!("step {step_name:?} ")));
            }
        }
        None => out.extend(renderer.build(set.get("spec").unwrap_or(&Value::Null), &inputs, "")),
    }
    for value in &mut out {
        if let (Some(ns), Some(meta)) = (namespace, value.get_mut("metadata").and_then(Value::as_object_mut)) {
            meta.entry("namespace").or_insert_with(|| Value::String(ns.to_string()));
        }
    }
    (out, notes)
}

/// The input sets the templates are rendered with, as flux-operator combines the set's own
/// inputs: each gains `provider` (the ResourceSet itself), and under the `Permute` strategy each
/// is nested under the set's name made a template key.
fn input_sets(set: &Value, inline: &[&Map<String, Value>], permute: bool) -> Vec<InputSet> {
    let meta = |key: &str| set.pointer(&format!("/metadata/{key}")).cloned().unwrap_or(Value::String(String::new()));
    let provider = serde_json::json!({
        "apiVersion": set.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": "ResourceSet",
        "name": meta("name"),
        "namespace": meta("namespace"),
    });
    let scope = permute.then(|| template_key(set.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")));
    inline
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let id = input.get("id").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
            let mut values = (*input).clone();
            values.insert("provider".into(), provider.clone());
            let mut data = Value::Object(values);
            if let Some(key) = &scope {
                data = Value::Object(Map::from_iter([(key.clone(), data)]));
            }
            let label = match id {
                Some(id) => format!("input {i} (id {id:?})"),
                None => format!("input {i}"),
            };
            InputSet { data: to_template_value(&data), label }
        })
        .collect()
}

/// A ResourceSet's name as flux-operator turns it into a template key: lowercase, spaces and
/// punctuation to `_`, anything else outside `[a-z0-9]` dropped, runs of `_` collapsed.
fn template_key(name: &str) -> String {
    let mapped: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            // Unicode punctuation (Go's unicode.IsPunct) in ASCII; ASCII symbols such as `+` are dropped.
            c if c.is_whitespace() || "!\"#%&'()*,-./:;?@[\\]_{}".contains(c) => Some('_'),
            _ => None,
        })
        .collect();
    mapped.split('_').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
}

/// One input set: the value `inputs` returns, and how notes name it.
struct InputSet {
    data: TValue,
    label: String,
}

/// Renders the templates of one ResourceSet (or step), collecting notes on failures.
struct Renderer<'a> {
    set: &'a str,
    functions: FuncMap,
    notes: &'a mut Vec<String>,
}

impl Renderer<'_> {
    /// The objects `spec` (a ResourceSet spec or one of its steps) generates, deduplicated as
    /// flux-operator does: the first object of each group, kind, namespace and name wins, those
    /// of `resources` before those of `resourcesTemplate`; objects annotated
    /// `fluxcd.controlplane.io/reconcile: disabled` are left out.
    fn build(&mut self, spec: &Value, inputs: &[InputSet], prefix: &str) -> Vec<Value> {
        // Without inputs, flux-operator renders each template once with an empty input set.
        let no_input = [InputSet { data: TValue::Map(Arc::new(BTreeMap::new())), label: "no input".into() }];
        let (inputs, dedup) = if inputs.is_empty() { (&no_input[..], false) } else { (inputs, true) };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut add = |value: Value, dedup: bool, out: &mut Vec<Value>| {
            let fresh = seen.insert(object_key(&value));
            if fresh || !dedup {
                out.push(value);
            }
        };

        let resources = spec.get("resources").and_then(Value::as_array).into_iter().flatten();
        for (i, template) in resources.enumerate() {
            let place = format!("{prefix}resources[{i}]");
            // Templates are written out as YAML, as flux-operator does, so that `<< inputs.replicas >>`
            // in a string value renders to a number and `| quote` to a quoted YAML string.
            let text = match serde_saphyr::to_string_with_options(template, yaml_emitter()) {
                Ok(t) => t,
                Err(e) => {
                    self.note(&place, None, &e.to_string());
                    continue;
                }
            };
            let Some(template) = self.compile(&text, &place) else { continue };
            for input in inputs {
                let Some(rendered) = self.execute(&template, input, &place) else { continue };
                match super::parse_document(&rendered) {
                    Ok(value) if value.is_object() => {
                        // Without inputs flux-operator skips the annotation check here too.
                        if !dedup || !is_disabled(&value) {
                            add(value, dedup, &mut out);
                        }
                    }
                    Ok(_) => self.note(&place, Some(input), "the rendered template is not an object"),
                    Err(e) => self.note(&place, Some(input), &format!("the rendered template is not YAML: {e}")),
                }
            }
        }

        if let Some(text) = spec.get("resourcesTemplate").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let place = format!("{prefix}resourcesTemplate");
            let Some(template) = self.compile(text, &place) else { return out };
            for input in inputs {
                let Some(rendered) = self.execute(&template, input, &place) else { continue };
                for doc in super::split_documents(&rendered) {
                    match super::parse_document(doc.text) {
                        Ok(value) if value.is_object() => {
                            if !is_disabled(&value) {
                                add(value, true, &mut out);
                            }
                        }
                        // A document left empty by the template (`<< if >>` around all of it).
                        Ok(Value::Null) => {}
                        Ok(_) => self.note(&place, Some(input), "a rendered document is not an object"),
                        Err(e) => self.note(&place, Some(input), &format!("a rendered document is not YAML: {e}")),
                    }
                }
            }
        }
        out
    }

    /// `text` parsed as flux-operator parses a template, or `None` after a note naming the
    /// error (a syntax error or an unknown function fails for every input alike).
    fn compile(&mut self, text: &str, place: &str) -> Option<Compiled> {
        let input = Arc::new(Mutex::new(TValue::Nil));
        let current = Arc::clone(&input);
        let parsed = Template::new("resourceset")
            .delims("<<", ">>")
            .missing_key(MissingKey::Error)
            .funcs(self.functions.clone())
            .func("inputs", move |args| match args {
                [] => Ok(current.lock().map_or(TValue::Nil, |v| v.clone())),
                _ => Err(TemplateError::Exec(format!("wrong number of args for inputs: want 0 got {}", args.len()))),
            })
            .parse(text);
        parsed
            .map(|template| Compiled { template, input, unusable: Cell::new(false) })
            .map_err(|e| self.note(place, None, &e.to_string()))
            .ok()
    }

    /// `template` rendered with `input`, or `None` after a note naming the error.
    fn execute(&mut self, template: &Compiled, input: &InputSet, place: &str) -> Option<String> {
        if template.unusable.get() {
            return None;
        }
        if let Ok(mut current) = template.input.lock() {
            *current = input.data.clone();
        }
        match template.template.execute_to_string(&TValue::Nil) {
            Ok(text) => Some(text),
            // Go rejects an unknown function when parsing, for every input alike; gotmpl only
            // finds it when running: noted once, for the template.
            Err(e @ TemplateError::UndefinedFunction(_)) => {
                template.unusable.set(true);
                self.note(place, None, &e.to_string());
                None
            }
            Err(e) => {
                self.note(place, Some(input), &e.to_string());
                None
            }
        }
    }

    fn note(&mut self, place: &str, input: Option<&InputSet>, error: &str) {
        let input = input.map(|i| format!(" with {}", i.label)).unwrap_or_default();
        self.notes.push(format!(
            "ResourceSet {}: {place}{input} fails to render: {error}; what it would generate is not checked",
            self.set
        ));
    }
}

/// A parsed template and the input set its `inputs` function returns, set before each run.
struct Compiled {
    template: Template,
    input: Arc<Mutex<TValue>>,
    /// Set once the template calls a function that does not exist.
    unusable: Cell<bool>,
}

/// The identity flux-operator deduplicates by: API group (not version), kind, namespace, name.
fn object_key(value: &Value) -> [String; 4] {
    let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = text("/apiVersion");
    let group = api_version.rsplit_once('/').map(|(g, _)| g.to_string()).unwrap_or_default();
    [group, text("/kind"), text("/metadata/namespace"), text("/metadata/name")]
}

fn is_disabled(value: &Value) -> bool {
    value.pointer("/metadata/annotations").and_then(|a| a.get(RECONCILE_ANNOTATION)).and_then(Value::as_str)
        == Some("disabled")
}

/// YAML written as Go's YAML libraries write it (two-space indent, sequences not indented under
/// their key, multi-line strings as literal blocks, no folding), so that `nindent` in a template
/// lines up as it does in flux-operator.
fn yaml_emitter() -> serde_saphyr::SerializerOptions {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.indent_step = 2;
    options.compact_list_indent = true;
    options.prefer_block_scalars = true;
    options.folded_wrap_chars = usize::MAX;
    options
}

/// A JSON value as template data. Numbers become floats: flux-operator decodes inputs from
/// JSON into Go values, where every number is a float64.
fn to_template_value(value: &Value) -> TValue {
    match value {
        Value::Null => TValue::Nil,
        Value::Bool(b) => TValue::Bool(*b),
        Value::Number(n) => TValue::Float(n.as_f64().unwrap_or_default()),
        Value::String(s) => TValue::String(s.as_str().into()),
        Value::Array(items) => TValue::List(items.iter().map(to_template_value).collect()),
        Value::Object(map) => {
            TValue::Map(Arc::new(map.iter().map(|(k, v)| (Arc::from(k.as_str()), to_template_value(v))).collect()))
        }
    }
}

/// Template data back as JSON, for `toYaml` and `toJson`. A whole float is written as an
/// integer, as Go's encoders write a float64 without a fraction.
fn to_json(value: &TValue) -> Value {
    match value {
        TValue::Bool(b) => Value::Bool(*b),
        TValue::Int(i) => Value::from(*i),
        TValue::Uint(u) => Value::from(*u),
        // 2^53: beyond it an f64 no longer holds every integer, and Go switches to exponents.
        TValue::Float(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Value::from(*f as i64),
        TValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        TValue::String(s) => Value::String(s.to_string()),
        TValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
        TValue::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        _ => Value::Null,
    }
}

/// The functions flux-operator gives its templates beyond text/template's builtins (`eq`, `ne`,
/// `and`, `or`, `not`, `len`, `index`, `printf`, ... come with `gotmpl`): the slim-sprig
/// functions ResourceSets use, `slugify` and `toYaml`. A template calling any other function
/// fails to parse, and the note names the function.
fn functions() -> FuncMap {
    let mut map = FuncMap::new();
    let mut add = |name: &str, f: fn(&[TValue]) -> Result<TValue, TemplateError>| {
        map.insert(name.to_string(), Arc::new(f));
    };
    // Strings.
    add("quote", |a| {
        Ok(string(
            a.iter().filter(|v| !matches!(v, TValue::Nil)).map(|v| go_quote(&strval(v))).collect::<Vec<_>>().join(" "),
        ))
    });
    add("squote", |a| {
        Ok(string(
            a.iter()
                .filter(|v| !matches!(v, TValue::Nil))
                .map(|v| format!("'{}'", strval(v)))
                .collect::<Vec<_>>()
                .join(" "),
        ))
    });
    add("cat", |a| {
        Ok(string(a.iter().filter(|v| !matches!(v, TValue::Nil)).map(strval).collect::<Vec<_>>().join(" ")))
    });
    add("upper", |a| Ok(string(strval(arg(a, "upper", 1, 0)?).to_uppercase())));
    add("lower", |a| Ok(string(strval(arg(a, "lower", 1, 0)?).to_lowercase())));
    add("trim", |a| Ok(string(strval(arg(a, "trim", 1, 0)?).trim().to_string())));
    add("trimAll", |a| {
        let cut: Vec<char> = strval(arg(a, "trimAll", 2, 0)?).chars().collect();
        Ok(string(strval(arg(a, "trimAll", 2, 1)?).trim_matches(&cut[..]).to_string()))
    });
    add("trimPrefix", |a| {
        let (prefix, s) = (strval(arg(a, "trimPrefix", 2, 0)?), strval(arg(a, "trimPrefix", 2, 1)?));
        Ok(string(s.strip_prefix(&prefix).unwrap_or(&s).to_string()))
    });
    add("trimSuffix", |a| {
        let (suffix, s) = (strval(arg(a, "trimSuffix", 2, 0)?), strval(arg(a, "trimSuffix", 2, 1)?));
        Ok(string(s.strip_suffix(&suffix).unwrap_or(&s).to_string()))
    });
    add("contains", |a| Ok(TValue::Bool(strval(arg(a, "contains", 2, 1)?).contains(&strval(&a[0])))));
    add("hasPrefix", |a| Ok(TValue::Bool(strval(arg(a, "hasPrefix", 2, 1)?).starts_with(&strval(&a[0])))));
    add("hasSuffix", |a| Ok(TValue::Bool(strval(arg(a, "hasSuffix", 2, 1)?).ends_with(&strval(&a[0])))));
    add("replace", |a| {
        let s = strval(arg(a, "replace", 3, 2)?);
        Ok(string(s.replace(&strval(&a[0]), &strval(&a[1]))))
    });
    add("repeat", |a| Ok(string(strval(arg(a, "repeat", 2, 1)?).repeat(usize::try_from(int(&a[0])).unwrap_or(0)))));
    add("trunc", |a| {
        let (n, s) = (int(arg(a, "trunc", 2, 0)?), strval(&a[1]));
        let len = s.len() as i64;
        let cut = match n {
            n if n >= 0 && len > n => s.get(..n as usize),
            n if n < 0 && len > -n => s.get((len + n) as usize..),
            _ => None,
        };
        Ok(string(cut.unwrap_or(&s).to_string()))
    });
    add("indent", |a| Ok(string(indent(int(arg(a, "indent", 2, 0)?), &strval(&a[1])))));
    add("nindent", |a| Ok(string(format!("\n{}", indent(int(arg(a, "nindent", 2, 0)?), &strval(&a[1]))))));
    add("join", |a| {
        let sep = strval(arg(a, "join", 2, 0)?);
        Ok(string(strings(&a[1]).join(&sep)))
    });
    add("splitList", |a| {
        let (sep, s) = (strval(arg(a, "splitList", 2, 0)?), strval(&a[1]));
        Ok(TValue::List(s.split(sep.as_str()).map(|p| TValue::String(p.into())).collect()))
    });
    add("toString", |a| Ok(string(strval(arg(a, "toString", 1, 0)?))));
    add("slugify", |a| Ok(string(slugify(&strval(arg(a, "slugify", 1, 0)?)))));
    add("sha256sum", |a| {
        Ok(string(hex(
            ring::digest::digest(&ring::digest::SHA256, strval(arg(a, "sha256sum", 1, 0)?).as_bytes()).as_ref()
        )))
    });
    add("b64enc", |a| Ok(string(base64::engine::general_purpose::STANDARD.encode(strval(arg(a, "b64enc", 1, 0)?)))));
    add("b64dec", |a| {
        // slim-sprig returns the decoding error's text as the result.
        let decoded = base64::engine::general_purpose::STANDARD.decode(strval(arg(a, "b64dec", 1, 0)?));
        Ok(string(match decoded {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        }))
    });
    // Numbers: slim-sprig's conversions read strings and floats and give 0 for anything else.
    add("int", |a| Ok(TValue::Int(int(arg(a, "int", 1, 0)?))));
    add("int64", |a| Ok(TValue::Int(int(arg(a, "int64", 1, 0)?))));
    add("atoi", |a| Ok(TValue::Int(strval(arg(a, "atoi", 1, 0)?).trim().parse().unwrap_or(0))));
    add("float64", |a| Ok(TValue::Float(float(arg(a, "float64", 1, 0)?))));
    add("add", |a| Ok(TValue::Int(a.iter().map(int).fold(0i64, i64::wrapping_add))));
    add("add1", |a| Ok(TValue::Int(int(arg(a, "add1", 1, 0)?).wrapping_add(1))));
    add("sub", |a| Ok(TValue::Int(int(arg(a, "sub", 2, 0)?).wrapping_sub(int(&a[1])))));
    add("mul", |a| Ok(TValue::Int(a.iter().map(int).fold(1i64, i64::wrapping_mul))));
    add("div", |a| {
        let (x, y) = (int(arg(a, "div", 2, 0)?), int(&a[1]));
        x.checked_div(y).map(TValue::Int).ok_or_else(|| TemplateError::Exec("div: integer divide by zero".into()))
    });
    add("mod", |a| {
        let (x, y) = (int(arg(a, "mod", 2, 0)?), int(&a[1]));
        x.checked_rem(y).map(TValue::Int).ok_or_else(|| TemplateError::Exec("mod: integer divide by zero".into()))
    });
    add("max", |a| Ok(TValue::Int(a.iter().map(int).max().unwrap_or(0))));
    add("min", |a| Ok(TValue::Int(a.iter().map(int).min().unwrap_or(0))));
    // Defaults and conditions.
    add("default", |a| match a {
        [] => Err(TemplateError::Exec("wrong number of args for default: want at least 1 got 0".into())),
        [fallback] => Ok(fallback.clone()),
        [fallback, given, ..] => Ok(if is_empty(given) { fallback } else { given }.clone()),
    });
    add("empty", |a| Ok(TValue::Bool(is_empty(arg(a, "empty", 1, 0)?))));
    add("coalesce", |a| Ok(a.iter().find(|v| !is_empty(v)).cloned().unwrap_or(TValue::Nil)));
    add("ternary", |a| {
        let cond = matches!(arg(a, "ternary", 3, 2)?, TValue::Bool(true));
        Ok(a[if cond { 0 } else { 1 }].clone())
    });
    add("fail", |a| Err(TemplateError::Exec(strval(arg(a, "fail", 1, 0)?))));
    // Encoders: slim-sprig's give an empty string on error, the `must` forms fail.
    add("toJson", |a| Ok(string(serde_json::to_string(&to_json(arg(a, "toJson", 1, 0)?)).unwrap_or_default())));
    add("toYaml", |a| Ok(string(to_yaml(arg(a, "toYaml", 1, 0)?).unwrap_or_default())));
    add("mustToYaml", |a| to_yaml(arg(a, "mustToYaml", 1, 0)?).map(string).map_err(TemplateError::Exec));
    // Lists and maps.
    add("list", |a| Ok(TValue::List(a.iter().cloned().collect())));
    add("dict", |a| {
        let pairs =
            a.chunks(2).map(|kv| (Arc::from(strval(&kv[0])), kv.get(1).cloned().unwrap_or(string(String::new()))));
        Ok(TValue::Map(Arc::new(pairs.collect())))
    });
    add("get", |a| {
        let (map, key) = (arg(a, "get", 2, 0)?, strval(&a[1]));
        Ok(map.field(&key).cloned().unwrap_or(string(String::new())))
    });
    add("hasKey", |a| Ok(TValue::Bool(arg(a, "hasKey", 2, 0)?.field(&strval(&a[1])).is_some())));
    add("keys", |a| {
        let keys = a.iter().filter_map(|m| match m {
            TValue::Map(m) => Some(m.keys().map(|k| TValue::String(k.clone())).collect::<Vec<_>>()),
            _ => None,
        });
        Ok(TValue::List(keys.flatten().collect()))
    });
    add("has", |a| {
        let needle = arg(a, "has", 2, 0)?;
        Ok(TValue::Bool(matches!(&a[1], TValue::List(items) if items.contains(needle))))
    });
    add("first", |a| Ok(list(arg(a, "first", 1, 0)?).first().cloned().unwrap_or(TValue::Nil)));
    add("last", |a| Ok(list(arg(a, "last", 1, 0)?).last().cloned().unwrap_or(TValue::Nil)));
    map
}

/// Argument `i` of a function taking `n`, or the error text/template gives for a wrong count.
fn arg<'a>(args: &'a [TValue], name: &str, n: usize, i: usize) -> Result<&'a TValue, TemplateError> {
    if args.len() == n {
        Ok(&args[i])
    } else {
        Err(TemplateError::Exec(format!("wrong number of args for {name}: want {n} got {}", args.len())))
    }
}

fn string(s: String) -> TValue {
    TValue::String(s.into())
}

/// A value as Go's `fmt.Sprint` writes it (slim-sprig's `strval`).
fn strval(value: &TValue) -> String {
    match value {
        TValue::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A value as a list of strings (slim-sprig's `strslice`): a list's non-nil items, nothing for
/// nil, else the value alone.
fn strings(value: &TValue) -> Vec<String> {
    match value {
        TValue::List(items) => items.iter().filter(|v| !matches!(v, TValue::Nil)).map(strval).collect(),
        TValue::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

fn list(value: &TValue) -> &[TValue] {
    match value {
        TValue::List(items) => items,
        _ => &[],
    }
}

/// A value as an integer the way slim-sprig converts: strings parsed (as Go's `ParseInt` with
/// base 0 would, else as a float, else 0), floats truncated, booleans 0 or 1.
fn int(value: &TValue) -> i64 {
    match value {
        TValue::Int(i) => *i,
        TValue::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
        TValue::Float(f) => *f as i64,
        TValue::Bool(b) => i64::from(*b),
        TValue::String(s) => {
            let s = s.trim();
            let (negative, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
            let parsed = match digits.get(..2) {
                Some("0x" | "0X") => i64::from_str_radix(&digits[2..], 16).ok(),
                Some("0o" | "0O") => i64::from_str_radix(&digits[2..], 8).ok(),
                Some("0b" | "0B") => i64::from_str_radix(&digits[2..], 2).ok(),
                _ if digits.len() > 1 && digits.starts_with('0') => i64::from_str_radix(&digits[1..], 8).ok(),
                _ => digits.parse().ok(),
            };
            match parsed {
                Some(i) if negative => -i,
                Some(i) => i,
                None => s.parse::<f64>().map(|f| f as i64).unwrap_or(0),
            }
        }
        _ => 0,
    }
}

fn float(value: &TValue) -> f64 {
    match value {
        TValue::Float(f) => *f,
        TValue::String(s) => s.trim().parse().unwrap_or(0.0),
        other => int(other) as f64,
    }
}

/// slim-sprig's `empty`: nil, false, zero, and empty strings, lists and maps.
fn is_empty(value: &TValue) -> bool {
    match value {
        TValue::Nil => true,
        TValue::Bool(b) => !b,
        TValue::Int(i) => *i == 0,
        TValue::Uint(u) => *u == 0,
        TValue::Float(f) => *f == 0.0,
        TValue::String(s) => s.is_empty(),
        TValue::List(items) => items.is_empty(),
        TValue::Map(map) => map.is_empty(),
        _ => false,
    }
}

/// `s` with every line prefixed by `spaces` spaces (slim-sprig's `indent`).
fn indent(spaces: i64, s: &str) -> String {
    let pad = " ".repeat(usize::try_from(spaces).unwrap_or(0));
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// `s` quoted as Go's `%q` quotes it: double quotes, Go escapes for quotes, backslashes and
/// control characters, printable Unicode as is.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as YAML, as flux-operator's `toYaml` writes it (with a final newline).
fn to_yaml(value: &TValue) -> Result<String, String> {
    serde_saphyr::to_string_with_options(&to_json(value), yaml_emitter()).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `s` as a slug, as flux-operator's `slugify` makes one: `&` and `@` spelled out, lowercase,
/// anything outside `[a-z0-9_-]` a dash, dashes collapsed and trimmed (with underscores) from
/// the ends, at most 63 bytes cut at a dash where there is one. flux-operator also transliterates
/// other letters to ASCII (`é` to `e`); here they become dashes.
fn slugify(s: &str) -> String {
    let spelled = s.trim().replace('&', "and").replace('@', "at").to_lowercase();
    let mut slug = String::with_capacity(spelled.len());
    for c in spelled.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let slug = slug.trim_matches(['-', '_']);
    const MAX: usize = 63;
    if slug.len() <= MAX {
        return slug.to_string();
    }
    match slug.as_bytes()[..=MAX].iter().rposition(|&b| b == b'-') {
        Some(cut) => slug[..cut].to_string(),
        None => slug[..MAX].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "fluxcd.controlplane.io/v1", "kind": "ResourceSet",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": spec,
        })
    }

    fn yaml(text: &str) -> Value {
        super::super::parse_document(text).unwrap()
    }

    fn names(objects: &[Value]) -> Vec<String> {
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("-").to_string();
        objects
            .iter()
            .map(|v| format!("{}/{}/{}", text(v, "/kind"), text(v, "/metadata/namespace"), text(v, "/metadata/name")))
            .collect()
    }

    #[test]
    fn each_input_renders_every_template_into_the_sets_namespace() {
        let set = set(
            "apps",
            json!({
                "inputs": [{"app": {"name": "web"}, "after": "api"}, {"app": {"name": "api"}}],
                "resources": [{
                    "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "<< inputs.app.name >>"},
                    "spec": {"dependsOn": [{"name": "<< get inputs \"after\" | default \"db\" >>"}]}
                }]
            }),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["HelmRelease/apps/web", "HelmRelease/apps/api"]);
        let after: Vec<&Value> = out.iter().map(|v| &v["spec"]["dependsOn"][0]["name"]).collect();
        assert_eq!(after, [&json!("api"), &json!("db")]);
    }

    #[test]
    fn resources_are_templated_as_yaml_text_so_quote_and_numbers_keep_their_type() {
        // As in flux-operator's docs: `| quote` keeps a version a string, `| int` makes a number.
        let set = set(
            "podinfo",
            yaml(
                r#"
inputs:
  - tenant: team1
    app: {version: "1.10", replicas: "2"}
resources:
  - apiVersion: helm.toolkit.fluxcd.io/v2
    kind: HelmRelease
    metadata:
      name: podinfo-<< inputs.tenant >>
    spec:
      chart:
        spec:
          version: << inputs.app.version | quote >>
      values:
        unquoted: << inputs.app.version >>
        replicaCount: << inputs.app.replicas | int >>
"#,
            ),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["HelmRelease/apps/podinfo-team1"]);
        assert_eq!(out[0]["spec"]["chart"]["spec"]["version"], json!("1.10"));
        assert_eq!(out[0]["spec"]["values"]["unquoted"], json!(1.1));
        assert_eq!(out[0]["spec"]["values"]["replicaCount"], json!(2));
    }

    #[test]
    fn if_eq_with_trim_markers_picks_what_each_input_generates() {
        let set = set(
            "tiers",
            yaml(
                r#"
inputs:
  - {name: postgres, tier: db}
  - {name: web, tier: app}
resourcesTemplate: |
  <<- if eq inputs.tier "db" >>
  apiVersion: kustomize.toolkit.fluxcd.io/v1
  kind: Kustomization
  <<- else >>
  apiVersion: helm.toolkit.fluxcd.io/v2
  kind: HelmRelease
  <<- end >>
  metadata:
    name: << inputs.name >>
    annotations:
      tier: << inputs.tier | upper | quote >>
      <<- if or (eq inputs.name "media") (eq inputs.name "postgres") >>
      backup: "true"
      <<- end >>
"#,
            ),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["Kustomization/apps/postgres", "HelmRelease/apps/web"]);
        assert_eq!(out[0]["metadata"]["annotations"], json!({"tier": "DB", "backup": "true"}));
        assert_eq!(out[1]["metadata"]["annotations"], json!({"tier": "APP"}));
    }

    #[test]
    fn range_over_an_input_list_renders_a_depends_on_list() {
        let set = set(
            "stack",
            yaml(
                r#"
inputs:
  - name: frontend
    dependsOn: [backend, cache]
  - name: backend
    dependsOn: []
resourcesTemplate: |
  apiVersion: helm.toolkit.fluxcd.io/v2
  kind: HelmRelease
  metadata:
    name: << inputs.name >>
  spec:
    <<- if inputs.dependsOn >>
    dependsOn:
    <<- range $i, $dep := inputs.dependsOn >>
      - name: << $dep >>
        namespace: << inputs.provider.namespace >>
    <<- end >>
    <<- end >>
    releaseName: << printf "%s-%d" inputs.name (len inputs.dependsOn) >>
"#,
            ),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["HelmRelease/apps/frontend", "HelmRelease/apps/backend"]);
        assert_eq!(
            out[0]["spec"]["dependsOn"],
            json!([{"name": "backend", "namespace": "apps"}, {"name": "cache", "namespace": "apps"}])
        );
        assert_eq!(out[0]["spec"]["releaseName"], json!("frontend-2"));
        assert_eq!(out[1]["spec"].get("dependsOn"), None);
        assert_eq!(out[1]["spec"]["releaseName"], json!("backend-0"));
    }

    #[test]
    fn nested_map_inputs_and_the_provider_render_through_to_yaml_and_nindent() {
        // Shaped like a real fleet's flux-operator-mcp ResourceSet. The `nindent` widths only fit
        // YAML laid out as Go writes it: two spaces a level, lists not indented under their key.
        let set = yaml(
            r#"
apiVersion: fluxcd.controlplane.io/v1
kind: ResourceSet
metadata:
  name: flux-operator-mcp
  namespace: flux-system
spec:
  inputs:
    - readonly: true
      accessFrom: [networking, runners]
      gateway: {class: private, port: 8080}
  resources:
    - apiVersion: helm.toolkit.fluxcd.io/v2
      kind: HelmRelease
      metadata:
        name: << inputs.provider.name >>
        namespace: << inputs.provider.namespace >>
      spec:
        chartRef:
          kind: OCIRepository
          name: << inputs.provider.name >>
        values:
          readonly: << inputs.readonly >>
          gateway: << inputs.gateway | toYaml | nindent 6 >>
          networkPolicy:
            ingress:
              namespaces: << inputs.accessFrom | toYaml | nindent 8 >>
          port: << with inputs.gateway >><< index . "port" >><< end >>
"#,
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["HelmRelease/flux-system/flux-operator-mcp"]);
        let values = &out[0]["spec"]["values"];
        assert_eq!(values["readonly"], json!(true));
        assert_eq!(values["gateway"], json!({"class": "private", "port": 8080}));
        assert_eq!(values["networkPolicy"]["ingress"]["namespaces"], json!(["networking", "runners"]));
        assert_eq!(values["port"], json!(8080));
    }

    #[test]
    fn resources_template_documents_are_deduplicated_across_inputs() {
        // flux-operator's monorepo example: one shared GitRepository, a Kustomization per service.
        let set = set(
            "app1",
            yaml(
                r#"
inputs:
  - {service: frontend, dependsOn: backend}
  - {service: backend, dependsOn: ""}
resourcesTemplate: |
  ---
  apiVersion: source.toolkit.fluxcd.io/v1
  kind: GitRepository
  metadata:
    name: app1
  ---
  apiVersion: kustomize.toolkit.fluxcd.io/v1
  kind: Kustomization
  metadata:
    name: app1-<< inputs.service >>
  spec:
    << if inputs.dependsOn >>
    dependsOn:
      - name: app1-<< inputs.dependsOn >>
    << end >>
    sourceRef: {kind: GitRepository, name: app1}
  ---
  apiVersion: v1
  kind: ConfigMap
  metadata:
    name: skipped-<< inputs.service >>
    annotations:
      fluxcd.controlplane.io/reconcile: disabled
"#,
            ),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            names(&out),
            ["GitRepository/apps/app1", "Kustomization/apps/app1-frontend", "Kustomization/apps/app1-backend"]
        );
        assert_eq!(out[1]["spec"]["dependsOn"], json!([{"name": "app1-backend"}]));
        assert_eq!(out[2]["spec"].get("dependsOn"), None);
    }

    #[test]
    fn a_depends_on_naming_another_kind_is_rendered_for_the_checker() {
        // `db` is generated as a Kustomization only: the HelmRelease's dependsOn names a
        // HelmRelease that does not exist. The old substitution skipped this template (logic).
        let set = set(
            "platform",
            yaml(
                r#"
inputs:
  - {name: db, kind: Kustomization}
  - {name: api, kind: HelmRelease, dependsOn: [db]}
resourcesTemplate: |
  <<- if eq inputs.kind "Kustomization" >>
  apiVersion: kustomize.toolkit.fluxcd.io/v1
  <<- else >>
  apiVersion: helm.toolkit.fluxcd.io/v2
  <<- end >>
  kind: << inputs.kind >>
  metadata:
    name: << inputs.name >>
  <<- if hasKey inputs "dependsOn" >>
  spec:
    dependsOn:
    <<- range $dep := inputs.dependsOn >>
      - name: << $dep | quote >>
    <<- end >>
  <<- end >>
"#,
            ),
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["Kustomization/apps/db", "HelmRelease/apps/api"]);
        assert_eq!(out[1]["apiVersion"], json!("helm.toolkit.fluxcd.io/v2"));
        assert_eq!(out[1]["spec"]["dependsOn"], json!([{"name": "db"}]));
    }

    #[test]
    fn a_template_error_is_noted_with_the_set_the_input_and_the_error() {
        // As in flux-operator, a missing input key is an error (`get` is how to make it optional).
        let set = set(
            "previews",
            yaml(
                r#"
inputs:
  - {id: "42", branch: main, chart: podinfo}
  - {id: "43", branch: fix}
resources:
  - apiVersion: helm.toolkit.fluxcd.io/v2
    kind: HelmRelease
    metadata:
      name: app-<< inputs.id >>
    spec:
      chart: << inputs.chart >>
resourcesTemplate: |
  apiVersion: v1
  kind: ConfigMap
  metadata:
    name: << inputs.branch | kebabcase >>
"#,
            ),
        );
        let (out, notes) = expand(&set);
        // Input 42 still renders its HelmRelease; everything else is noted, not skipped silently.
        assert_eq!(names(&out), ["HelmRelease/apps/app-42"]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("ResourceSet previews: resources[0] with input 1 (id \"43\") fails to render"),
            "{notes:?}"
        );
        assert!(notes[0].contains("map has no entry for key: chart"), "{notes:?}");
        // An unknown function fails every input alike: one note for the template.
        assert!(notes[1].starts_with("ResourceSet previews: resourcesTemplate fails to render"), "{notes:?}");
        assert!(notes[1].contains("undefined function: kebabcase"), "{notes:?}");
    }

    #[test]
    fn without_inputs_the_templates_render_once() {
        let set = set(
            "shared",
            json!({
                "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                               "metadata": {"name": "<< \"infra\" | upper | lower >>"}}],
                "resourcesTemplate": "kind: Kustomization\napiVersion: kustomize.toolkit.fluxcd.io/v1\nmetadata:\n  name: << inputs.name >>\n"
            }),
        );
        let (out, notes) = expand(&set);
        assert_eq!(names(&out), ["GitRepository/apps/infra"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("resourcesTemplate with no input fails to render: map has no entry for key: name"),
            "{notes:?}"
        );
    }

    #[test]
    fn steps_and_the_permute_strategy_render_as_flux_operator_combines_inputs() {
        let set = yaml(
            r#"
apiVersion: fluxcd.controlplane.io/v1
kind: ResourceSet
metadata: {name: db-migrate, namespace: apps}
spec:
  inputStrategy: {name: Permute}
  inputs:
    - {tag: "1.2"}
  steps:
    - name: migrate
      resources:
        - apiVersion: kustomize.toolkit.fluxcd.io/v1
          kind: Kustomization
          metadata: {name: "migrate-<< inputs.db_migrate.tag >>"}
    - name: deploy
      resourcesTemplate: |
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata: {name: app, namespace: << inputs.db_migrate.provider.name >>}
"#,
        );
        let (out, notes) = expand(&set);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&out), ["Kustomization/apps/migrate-1.2", "HelmRelease/db-migrate/app"]);
    }

    #[test]
    fn inputs_from_providers_are_noted() {
        let mut set = set(
            "previews",
            json!({
                "inputsFrom": [{"kind": "ResourceSetInputProvider", "name": "prs"}],
                "resources": [{"kind": "HelmRelease", "apiVersion": "helm.toolkit.fluxcd.io/v2",
                               "metadata": {"name": "app-<< inputs.id | lower >>"}}]
            }),
        );
        let (out, notes) = expand(&set);
        assert!(out.is_empty());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("not resolvable offline"));
        // Flattened, the inline inputs still render; permuted, each combines with the providers'.
        set["spec"]["inputs"] = json!([{"id": "Main"}]);
        let (out, notes) = expand(&set);
        assert_eq!((names(&out), notes.len()), (vec!["HelmRelease/apps/app-main".to_string()], 1));
        set["spec"]["inputStrategy"] = json!({"name": "Permute"});
        let (out, notes) = expand(&set);
        assert_eq!((out.len(), notes.len()), (0, 1));
        assert!(notes[0].ends_with("with the Permute strategy nothing is expanded"), "{notes:?}");
    }

    #[test]
    fn dependencies_are_read_as_written() {
        let set = set(
            "apps",
            yaml(
                r#"
dependsOn:
  - apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    name: infra
    namespace: flux-system
    ready: true
    readyExpr: status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')
  - apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    name: certificates.cert-manager.io
  - {apiVersion: v1, kind: Namespace}
resources: []
"#,
            ),
        );
        assert_eq!(
            dependencies(&set),
            [
                Dependency {
                    api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
                    kind: "Kustomization".into(),
                    name: "infra".into(),
                    namespace: Some("flux-system".into()),
                },
                Dependency {
                    api_version: "apiextensions.k8s.io/v1".into(),
                    kind: "CustomResourceDefinition".into(),
                    name: "certificates.cert-manager.io".into(),
                    namespace: None,
                },
            ]
        );
        assert_eq!(dependencies(&json!({"spec": {}})), []);
    }

    #[test]
    fn functions_behave_as_slim_sprig_and_flux_operator() {
        let render = |text: &str| {
            let data = to_template_value(&json!({"n": 3, "s": "x", "m": {"a": 1}}));
            Template::new("t")
                .delims("<<", ">>")
                .missing_key(MissingKey::Error)
                .funcs(functions())
                .func("inputs", move |_| Ok(data.clone()))
                .parse(text)
                .and_then(|t| t.execute_to_string(&TValue::Nil))
                .map_err(|e| e.to_string())
        };
        let cases = [
            (r#"<< "a\"b" | quote >> << inputs.n | squote >>"#, r#""a\"b" '3'"#),
            (r#"<< "" | default "d" >> << inputs.s | default "d" >> << 0 | default 5 >>"#, "d x 5"),
            (r#"<< list "a" "b" | join "," >> << splitList "/" "a/b" | last >>"#, "a,b b"),
            (r#"<< inputs.m | toJson >> << inputs.m | toYaml >>"#, "{\"a\":1} a: 1\n"),
            (r#"<< "Feature/Login & SSO" | slugify >>"#, "feature-login-and-sso"),
            (r#"<< add 1 inputs.n "2" >> << sub 5 2 >> << "010" | int >> << "x" | int >>"#, "6 3 8 0"),
            (r#"<< ternary "y" "n" (empty "") >> << coalesce "" nil "z" >> << has 2 (list 1 2) >>"#, "y z true"),
            (r#"<< "ab" | sha256sum | trunc 8 >> << "v1.2" | trimPrefix "v" >>"#, "fb8e20fc 1.2"),
            (r#"<< dict "k" "v" | toJson >> << (dict "k" "v").k >>"#, "{\"k\":\"v\"} v"),
        ];
        for (template, want) in cases {
            assert_eq!(render(template).as_deref(), Ok(want), "{template}");
        }
        assert!(render(r#"<< fail "no" >>"#).unwrap_err().contains("no"));
        assert!(render("<< div 1 0 >>").unwrap_err().contains("divide by zero"));
    }

    #[test]
    fn slugify_truncates_long_slugs_at_a_dash_within_63_bytes() {
        let long = format!("{} tail", "word ".repeat(14));
        let slug = slugify(&long);
        assert!(slug.len() <= 63 && slug.ends_with("word") && !slug.contains("tail"), "{slug}");
        assert_eq!(slugify(&"x".repeat(70)), "x".repeat(63));
        assert_eq!(template_key("My App.v2"), "my_app_v2");
    }
}

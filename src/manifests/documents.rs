//! Step 2 of the loader: every file split into YAML documents, each document read for what the
//! later steps need.
//!
//! Each document is parsed on its own, so one broken document is reported (file and line) and
//! the rest still load. A Flux Kustomization or HelmRelease is decoded into the fields the loader
//! and the rules read ([`MANIFEST`]); a ResourceSet is kept whole for its templates; a kustomize
//! `kustomization.yaml` is read as its configuration ([`super::kustomize::KustomizeFile`]); every
//! other document is only checked to be YAML, without building its value (CRD bundles and
//! dashboards are most of the bytes of a repository). Parse errors are kept to be judged once it
//! is known whether Flux applies the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, de::DeserializeSeed};
use serde_json::Value;

use super::entry::Entry;
use super::kustomize::{KUSTOMIZATION_FILES, KustomizeFile};
use super::{LoadError, resource_set};
use crate::object::slim::Shape::{All, Each, Fields};
use crate::object::slim::{MANAGED_FIELDS, STATUS, Shape, Shaped};
use crate::object::{FluxKind, at, kind_of};

/// A Flux object as the loader reads it from a file: the fields of [`crate::object::slim::OBJECT`] and
/// what kustomize and kustomize-controller read when they build a repository (labels and
/// annotations for patch selectors and `substitute: disabled`, name prefixes, patches,
/// components, post-build variables; the `flux-instance` chart's sync path). Helm values and the
/// rest of a HelmRelease are not read.
pub static MANIFEST: Shape = Fields(&[
    ("apiVersion", All),
    ("kind", All),
    (
        "metadata",
        Fields(&[
            ("name", All),
            ("namespace", All),
            ("uid", All),
            ("generation", All),
            ("resourceVersion", All),
            ("deletionTimestamp", All),
            ("labels", All),
            ("annotations", All),
            ("managedFields", MANAGED_FIELDS),
        ]),
    ),
    (
        "spec",
        Fields(&[
            ("dependsOn", All),
            ("wait", All),
            ("healthChecks", All),
            ("suspend", All),
            ("timeout", All),
            ("interval", All),
            ("path", All),
            ("sourceRef", All),
            ("targetNamespace", All),
            ("postBuild", All),
            ("patches", All),
            ("patchesStrategicMerge", All),
            ("patchesJson6902", All),
            ("components", All),
            ("ignoreMissingComponents", All),
            ("namePrefix", All),
            ("nameSuffix", All),
            ("chart", All),
            ("chartRef", All),
            ("values", Fields(&[("instance", Fields(&[("sync", All)]))])),
        ]),
    ),
    ("status", STATUS),
    ("items", Each(&MANIFEST)),
]);

/// A value decoded through [`MANIFEST`].
struct ManifestObject(Value);

impl<'de> Deserialize<'de> for ManifestObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Shaped(&MANIFEST).deserialize(deserializer).map(ManifestObject)
    }
}

/// A document that matters to the loader.
#[derive(Debug, Clone)]
pub(super) struct Doc {
    /// Index of its file in [`Documents::files`].
    pub file: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    /// A Flux Kustomization or HelmRelease: its [`MANIFEST`] fields as compact JSON text in its
    /// file's buffer ([`Documents::value`] reads it), and what finding the clusters needs of it.
    /// A hundred thousand documents cost their text, not a tree of maps each, and the text of a
    /// file's documents is one allocation that goes back to the system when the load ends.
    Flux {
        kind: FluxKind,
        span: std::ops::Range<usize>,
        /// `spec.path`, for Kustomizations.
        path: Option<Box<str>>,
        /// `spec.sourceRef` kind (GitRepository when unset) and name.
        source: Option<(Box<str>, Box<str>)>,
    },
    /// A flux-operator ResourceSet, whole: its templates are rendered once it is placed.
    ResourceSet(Value),
}

/// Everything read from the files: documents in file order.
#[derive(Debug, Default)]
pub(super) struct Documents {
    pub files: Vec<PathBuf>,
    pub docs: Vec<Doc>,
    /// Each file's buffer of the JSON texts of its Flux documents.
    texts: Vec<String>,
    /// For each file, the range of its documents in `docs`.
    pub by_file: Vec<std::ops::Range<usize>>,
    /// Each folder's kustomize configuration.
    pub kustomizations: std::collections::HashMap<PathBuf, KustomizeFile>,
    /// The entry points written in the files (bootstrap sync, FluxInstance, flux-instance values).
    pub entries: Vec<Entry>,
    /// Files that could not be read at all.
    pub errors: Vec<LoadError>,
    /// Parse errors, with whether the file names a Flux API group (then always reported).
    pub unparsed: Vec<(LoadError, bool)>,
}

impl Documents {
    /// The documents of file `file`.
    pub fn of_file(&self, file: usize) -> &[Doc] {
        &self.docs[self.by_file[file].clone()]
    }

    /// Document `d`'s value: a Flux object's [`MANIFEST`] fields, a ResourceSet whole.
    pub fn value(&self, d: usize) -> Value {
        let doc = &self.docs[d];
        match &doc.body {
            Body::Flux { span, .. } => serde_json::from_str(&self.texts[doc.file][span.clone()])
                .unwrap_or_else(|e| unreachable!("a Value's JSON text reads back: {e}")),
            Body::ResourceSet(v) => v.clone(),
        }
    }

    /// Index of `path` among the files read.
    pub fn file_index(&self, path: &Path) -> Option<usize> {
        self.files.binary_search_by(|f| f.as_path().cmp(path)).ok()
    }
}

/// Reads `files` (sorted, deduplicated), spread over the machine's cores.
pub(super) fn read(files: Vec<PathBuf>) -> Documents {
    let numbered: Vec<(usize, &PathBuf)> = files.iter().enumerate().collect();
    let reads = super::parallel_map(&numbered, |&(i, f)| read_file(f, i));
    let mut out = Documents::default();
    for read in reads {
        let start = out.docs.len();
        out.docs.extend(read.docs);
        out.by_file.push(start..out.docs.len());
        out.texts.push(read.text);
        out.errors.extend(read.error);
        out.kustomizations.extend(read.kustomization);
        out.entries.extend(read.entries);
        out.unparsed.extend(read.unparsed);
    }
    out.files = files;
    out
}

/// What one file holds, read on its own.
#[derive(Default)]
struct FileRead {
    error: Option<LoadError>,
    docs: Vec<Doc>,
    text: String,
    kustomization: Option<(PathBuf, KustomizeFile)>,
    entries: Vec<Entry>,
    unparsed: Vec<(LoadError, bool)>,
}

/// How a document is parsed.
enum Parse {
    /// It names no Flux API group: only checked to be YAML, unless it may be the values of the
    /// `flux-instance` chart.
    Check,
    /// Whole: a kustomize configuration, a ResourceSet, a FluxInstance, chart values.
    Whole,
    /// Into the [`MANIFEST`] fields.
    Manifest,
}

fn read_file(file: &Path, index: usize) -> FileRead {
    let mut read = FileRead::default();
    let error = |message: String| LoadError { file: file.to_path_buf(), line: 1, message };
    let text = match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                read.error = Some(error("not UTF-8 text".into()));
                return read;
            }
        },
        Err(e) => {
            read.error = Some(error(format!("cannot be read: {e}")));
            return read;
        }
    };
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let is_kustomize_file = KUSTOMIZATION_FILES.contains(&name);
    // A file naming a Flux API group is meant as a manifest: it never goes unreported.
    let flux = is_kustomize_file || is_flux_text(&text);
    let mut failed = false;
    // An empty kustomization.yaml is still one: kustomize-controller reads it as `{}`.
    if is_kustomize_file && split_documents(&text).is_empty() {
        let dir = file.parent().unwrap_or(Path::new("."));
        read.kustomization = Some((dir.to_path_buf(), KustomizeFile::read(&Value::Null, file)));
    }
    for doc in split_documents(&text) {
        let how = if is_kustomize_file || doc.text.contains(resource_set::GROUP) || is_instance_values(doc.text) {
            Parse::Whole
        } else if is_flux_text(doc.text) {
            Parse::Manifest
        } else {
            Parse::Check
        };
        let parsed = match how {
            Parse::Check => parse_as::<serde::de::IgnoredAny>(doc.text).map(|_| None),
            Parse::Whole => parse_document(doc.text).map(Some),
            Parse::Manifest => parse_manifest(doc.text).map(Some),
        };
        let value = match parsed {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                let (line, message) = yaml_error(&e, &doc);
                // One report per file that is not known to be a manifest.
                if flux || !failed {
                    read.unparsed.push((LoadError { file: file.to_path_buf(), line, message }, flux));
                }
                failed = true;
                continue;
            }
        };
        if is_kustomize_file {
            if super::kustomize::is_config(&value) || value.is_null() {
                let dir = file.parent().unwrap_or(Path::new("."));
                read.kustomization = Some((dir.to_path_buf(), KustomizeFile::read(&value, file)));
            }
            continue;
        }
        let place = |body| Doc { file: index, line: doc.line, body };
        for item in list_items(value) {
            if let Some(entry) = Entry::of_document(&item, file, doc.line, name) {
                read.entries.push(entry);
            }
            if let Some(kind) = kind_of(&item) {
                let start = read.text.len();
                read.text.push_str(&item.to_string());
                let field = |p: &[&str]| at(&item, p).and_then(Value::as_str).map(Box::from);
                let source = field(&["spec", "sourceRef", "name"]).map(|name| {
                    (field(&["spec", "sourceRef", "kind"]).unwrap_or_else(|| "GitRepository".into()), name)
                });
                let body = Body::Flux { kind, span: start..read.text.len(), path: field(&["spec", "path"]), source };
                read.docs.push(place(body));
            } else if resource_set::is_resource_set(&item) {
                read.docs.push(place(Body::ResourceSet(item)));
            }
        }
    }
    read
}

/// Whether a document may hold the `flux-instance` chart's values (`instance.sync`): read whole
/// to find the entry point it describes.
fn is_instance_values(text: &str) -> bool {
    text.starts_with("instance:") || text.contains("\ninstance:")
}

/// Parses one YAML document as Kubernetes tooling does. YAML 1.2 lets an anchor name contain
/// `:`, so `*app: value` reads as the alias `app:`; go-yaml (used by kubectl and Flux) ends the
/// name at the colon. A document that fails for that reason is read again with the colon set
/// apart, so files Flux accepts load here too.
pub fn parse_document(text: &str) -> Result<Value, serde_saphyr::Error> {
    parse_as(text)
}

/// [`parse_document`] into any type (`IgnoredAny` to check the syntax only).
pub(super) fn parse_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(v) => Ok(v),
        Err(e) => match go_yaml_alias_keys(text) {
            Some(fixed) => serde_saphyr::from_str_with_options(&fixed, yaml_options()).map_err(|_| e),
            None => Err(e),
        },
    }
}

/// Parses a Flux document into the fields the loader reads ([`MANIFEST`]). A document written as
/// JSON (as generators and `kubectl get -o json` write them) is read by the JSON parser, many
/// times faster than the YAML one; anything else, or JSON it refuses, is read as YAML. JSON is
/// YAML, and reads the same through either but for duplicate keys: the YAML reader refuses them,
/// the JSON reader keeps the last.
fn parse_manifest(text: &str) -> Result<Value, serde_saphyr::Error> {
    if text.trim_start().starts_with('{')
        && let Ok(ManifestObject(value)) = serde_json::from_str(text)
    {
        return Ok(value);
    }
    parse_as::<ManifestObject>(text).map(|m| m.0)
}

/// Whether `text` names a Flux API group: every Flux object and ResourceSet does.
pub(super) fn is_flux_text(text: &str) -> bool {
    text.contains("toolkit.fluxcd.io/") || text.contains("fluxcd.controlplane.io/")
}

/// Most events one document may expand to through aliases. Real manifests stay far below it
/// (a rules file reusing one anchor 200 times replays a few thousand events); a "billion laughs"
/// bomb needs orders of magnitude more and is refused at this bound.
pub const MAX_ALIAS_EVENTS: usize = 1_000_000;

/// The reader's limits: the bound on expanded size ([`MAX_ALIAS_EVENTS`]) guards against alias
/// bombs, so the alias-to-anchor ratio heuristic, which refuses legitimate files that use one
/// anchor many times, is off.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.enforce_alias_anchor_ratio = false;
    let mut limits = serde_saphyr::options::AliasLimits::default();
    limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = limits;
    options
}

/// `text` with every alias used as a block mapping key (`*name:`) written `*name :`, or `None`
/// when there is none.
fn go_yaml_alias_keys(text: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let (dash, rest) = match body.strip_prefix("- ") {
            Some(r) => ("- ", r),
            None => ("", body),
        };
        let name_len = rest
            .strip_prefix('*')
            .map(|r| r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(r.len()))
            .unwrap_or(0);
        if name_len > 0 && rest[1 + name_len..].starts_with(':') {
            changed = true;
            out.push_str(indent);
            out.push_str(dash);
            out.push_str(&rest[..1 + name_len]);
            out.push(' ');
            out.push_str(&rest[1 + name_len..]);
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

/// The file line of a YAML error and its message without the parser's document-relative
/// position (which would contradict the file line).
fn yaml_error(e: &serde_saphyr::Error, doc: &Document<'_>) -> (usize, String) {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let Some(location) = e.location() else {
        return (doc.line, format!("YAML: {first}"));
    };
    let line = doc.start + (location.line() as usize).saturating_sub(1);
    // "error: line 26 column 13: alias references unknown anchor" -> the part after the position.
    let reason = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .split_once(&format!("column {}: ", location.column()))
        .map_or(first, |(_, rest)| rest);
    (line, format!("YAML: {reason} (column {})", location.column()))
}
/// One YAML document of a file: its text and the 1-based line it starts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Document<'a> {
    pub text: &'a str,
    /// 1-based line of the document's first line with content.
    pub line: usize,
    /// 1-based line of the document text's first line (the parser counts from there).
    pub start: usize,
}

/// Splits a multi-document YAML stream at `---` (and `...`) markers in column 0. Documents with
/// nothing but comments and blank lines are dropped.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        if marker {
            push_document(&mut docs, &text[start..offset], start_line);
            start = offset + line.len();
            start_line = i + 2;
            // `--- {inline: doc}` carries content on the marker line itself.
            if let Some(rest) = bare.strip_prefix("--- ").or_else(|| bare.strip_prefix("---\t"))
                && !rest.trim().is_empty()
                && !rest.trim_start().starts_with('#')
            {
                start = offset + 4;
                start_line = i + 1;
            }
        }
        offset += line.len();
    }
    push_document(&mut docs, &text[start..], start_line);
    docs
}

fn push_document<'a>(docs: &mut Vec<Document<'a>>, text: &'a str, line: usize) {
    // The document's line is that of its first line with content, where an editor would point.
    let mut first = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            first = Some(i);
            break;
        }
    }
    if let Some(skip) = first {
        docs.push(Document { text, line: line + skip, start: line });
    }
}

/// The objects of a document: a `kind: List` gives its items.
pub(super) fn list_items(value: Value) -> Vec<Value> {
    let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        match value {
            Value::Object(mut m) => match m.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    } else {
        vec![value]
    }
}

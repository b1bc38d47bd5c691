//! Steps 3 and 4 of the loader: what a kustomize build of a folder gives, as far as Flux objects
//! go, and what kustomize-controller adds on top of it.
//!
//! The model follows kustomize v5 (the library inside kustomize-controller and `kubectl
//! kustomize`, which a differential test holds it to on every real repository of the corpus):
//! - a folder with a `kustomization.yaml` builds its `resources` (files, and folders built the
//!   same way), then applies its `components` in order (each adds its own resources and runs its
//!   own transformers over everything gathered so far), then its own transformers;
//! - the transformers run in kustomize's order: `patchesStrategicMerge`, `patches`, `namespace`,
//!   `namePrefix`/`nameSuffix`, `patchesJson6902`. So an outer `namespace:` overrides an inner one
//!   and one the object wrote itself, and a patch matches an object by its namespace and name at
//!   that point *or any earlier one* (kustomize keeps previous ids);
//! - a strategic-merge patch on a Flux object is a JSON merge patch (kustomize knows no schema
//!   for custom resources, so lists such as `dependsOn` are replaced whole); a JSON 6902 patch is
//!   applied operation by operation;
//! - a folder without a `kustomization.yaml` gets the one kustomize-controller generates: every
//!   YAML file below it, a subfolder holding a `kustomization.yaml` built through it.
//!
//! kustomize-controller then edits the top kustomization as its generator does:
//! `spec.targetNamespace` replaces `namespace`, `spec.namePrefix`/`nameSuffix` replace the
//! kustomization's, `spec.patches`, `spec.patchesStrategicMerge`, `spec.patchesJson6902` and
//! `spec.components` are appended; after the build, `spec.postBuild.substitute` replaces
//! `${var}`s in every object not annotated `kustomize.toolkit.fluxcd.io/substitute: disabled`.
//!
//! Not modelled (noted, never guessed): remote resources, generators and transformer plugins,
//! `replacements`, Helm charts; a build that kustomize would refuse (a missing file, two objects
//! with one id) is built as far as it goes.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::{Map, Value};

use super::documents::Documents;
use super::files::normalize;
use crate::object::at;

/// File names kustomize reads as a kustomization.
pub(super) const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The annotation by which an object opts out of post-build substitution.
const SUBSTITUTE_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/substitute";

/// Whether a document of a `kustomization.yaml` is a kustomize configuration.
pub(super) fn is_config(value: &Value) -> bool {
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(v) => v.starts_with("kustomize.config.k8s.io/"),
        // kustomize accepts a kustomization without apiVersion and kind.
        None => value.is_object(),
    }
}

/// Where a patch comes from.
#[derive(Debug, Clone)]
enum PatchSource {
    File(PathBuf),
    /// YAML text written inline.
    Text(String),
    /// An object given by a Flux Kustomization's `spec.patchesStrategicMerge`, or the operations
    /// of its `spec.patchesJson6902`.
    Value(Value),
}

/// A kustomize patch target selector. `name` and `namespace` are anchored regular expressions.
#[derive(Debug, Clone, Default)]
struct Selector {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    labels: Option<String>,
    annotations: Option<String>,
}

impl Selector {
    fn read(value: &Value) -> Selector {
        let field = |k: &str| value.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let pattern = |k: &str| field(k).and_then(|p| regex::Regex::new(&format!("^(?:{p})$")).ok());
        Selector {
            group: field("group"),
            version: field("version"),
            kind: field("kind"),
            name: pattern("name"),
            namespace: pattern("namespace"),
            labels: field("labelSelector"),
            annotations: field("annotationSelector"),
        }
    }

    fn matches(&self, item: &Item) -> bool {
        let api_version = item.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = item.value.get("kind").and_then(Value::as_str).unwrap_or_default();
        self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
            && self.kind.as_deref().is_none_or(|k| k == kind)
            && item.ids.iter().any(|(ns, name)| {
                self.name.as_ref().is_none_or(|r| r.is_match(name))
                    && self.namespace.as_ref().is_none_or(|r| r.is_match(ns))
            })
            && self.labels.as_deref().is_none_or(|s| selects(s, at(&item.value, &["metadata", "labels"])))
            && self.annotations.as_deref().is_none_or(|s| selects(s, at(&item.value, &["metadata", "annotations"])))
    }
}

/// Whether a Kubernetes equality-based selector (`a=b,c!=d,e,!f`) selects `map`.
fn selects(selector: &str, map: Option<&Value>) -> bool {
    let get = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
    selector.split(',').map(str::trim).filter(|r| !r.is_empty()).all(|req| {
        if let Some((k, v)) = req.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = req.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(req).is_some()
        }
    })
}

/// One entry of `resources:`.
#[derive(Debug, Clone)]
enum Resource {
    Local(PathBuf),
    Remote(String),
}

/// A `kustomization.yaml` (or one kustomize-controller generated or edited), as far as Flux
/// objects go.
#[derive(Debug, Clone, Default)]
pub(super) struct KustomizeFile {
    /// The file itself; `None` for a generated one.
    pub file: Option<PathBuf>,
    namespace: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
    resources: Vec<Resource>,
    components: Vec<PathBuf>,
    patches_strategic: Vec<PatchSource>,
    patches: Vec<(PatchSource, Option<Selector>)>,
    patches_json: Vec<(PatchSource, Selector)>,
    /// What it uses that the model does not follow (generators, replacements, Helm charts).
    unmodelled: Vec<&'static str>,
}

impl KustomizeFile {
    /// Reads the configuration in `file`; relative paths resolve against its folder.
    pub fn read(value: &Value, file: &Path) -> KustomizeFile {
        let dir = file.parent().unwrap_or(Path::new(""));
        let strings = |field: &str| -> Vec<&str> {
            value.get(field).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
        };
        let text = |field: &str| value.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let mut k = KustomizeFile {
            file: Some(file.to_path_buf()),
            namespace: text("namespace"),
            name_prefix: text("namePrefix"),
            name_suffix: text("nameSuffix"),
            ..KustomizeFile::default()
        };
        for entry in strings("resources").into_iter().chain(strings("bases")) {
            k.resources.push(if is_remote(entry) {
                Resource::Remote(entry.to_string())
            } else {
                Resource::Local(normalize(&dir.join(entry)))
            });
        }
        k.components = strings("components").into_iter().map(|c| normalize(&dir.join(c))).collect();
        let source = |patch: &Value| -> Option<PatchSource> {
            match (patch.get("path").and_then(Value::as_str), patch.get("patch").and_then(Value::as_str)) {
                (Some(path), _) => Some(PatchSource::File(normalize(&dir.join(path)))),
                (None, Some(text)) => Some(PatchSource::Text(text.to_string())),
                _ => None,
            }
        };
        for entry in value.get("patchesStrategicMerge").and_then(Value::as_array).into_iter().flatten() {
            match entry.as_str() {
                // An inline patch is YAML text with newlines; anything else names a file.
                Some(s) if s.contains('\n') => k.patches_strategic.push(PatchSource::Text(s.to_string())),
                Some(s) => k.patches_strategic.push(PatchSource::File(normalize(&dir.join(s)))),
                None => {}
            }
        }
        for patch in value.get("patches").and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = source(patch) {
                k.patches.push((s, patch.get("target").map(Selector::read)));
            }
        }
        for patch in value.get("patchesJson6902").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(s), Some(target)) = (source(patch), patch.get("target")) {
                k.patches_json.push((s, Selector::read(target)));
            }
        }
        for field in ["generators", "transformers", "replacements", "helmCharts"] {
            if value.get(field).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
                k.unmodelled.push(field);
            }
        }
        k
    }

    /// Whether it builds nothing (`resources: []`, as a placeholder for components-only use).
    pub fn applies_nothing(&self) -> bool {
        self.resources.is_empty() && self.components.is_empty()
    }

    /// The patch files it reads: partial objects that change others, never objects of their own.
    pub fn patch_files(&self) -> impl Iterator<Item = &Path> {
        let strategic = self.patches_strategic.iter();
        let others = self.patches.iter().map(|(s, _)| s).chain(self.patches_json.iter().map(|(s, _)| s));
        strategic.chain(others).filter_map(|s| match s {
            PatchSource::File(p) => Some(p.as_path()),
            _ => None,
        })
    }

    /// This kustomization as kustomize-controller edits it for the Flux Kustomization `ks`
    /// (whose `spec.path` is `dir`).
    fn with_flux_steps(mut self, ks: &Value, dir: &Path) -> KustomizeFile {
        let spec = |field: &str| at(ks, &["spec", field]);
        let text = |field: &str| spec(field).and_then(Value::as_str).map(str::to_string);
        if let Some(ns) = text("targetNamespace") {
            self.namespace = Some(ns).filter(|n| !n.is_empty());
        }
        if let Some(p) = text("namePrefix") {
            self.name_prefix = Some(p);
        }
        if let Some(s) = text("nameSuffix") {
            self.name_suffix = Some(s);
        }
        for patch in spec("patches").and_then(Value::as_array).into_iter().flatten() {
            if let Some(p) = patch.get("patch").and_then(Value::as_str) {
                self.patches.push((PatchSource::Text(p.to_string()), patch.get("target").map(Selector::read)));
            }
        }
        for patch in spec("patchesStrategicMerge").and_then(Value::as_array).into_iter().flatten() {
            self.patches_strategic.push(PatchSource::Value(patch.clone()));
        }
        for patch in spec("patchesJson6902").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(ops), Some(target)) = (patch.get("patch"), patch.get("target")) {
                self.patches_json.push((PatchSource::Value(ops.clone()), Selector::read(target)));
            }
        }
        let ignore_missing = spec("ignoreMissingComponents").and_then(Value::as_bool).unwrap_or(false);
        for c in spec("components").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            let path = normalize(&dir.join(c));
            if !ignore_missing || path.exists() {
                self.components.push(path);
            }
        }
        self
    }
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://") || entry.starts_with("github.com/") || entry.starts_with("git@")
}

/// A Flux object (or ResourceSet) during a build: its document and its value so far.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// Index into [`Documents::docs`].
    pub doc: usize,
    pub value: Value,
    /// Every (namespace, name) it has had, the current one last: kustomize matches patches
    /// against all of them.
    ids: Vec<(String, String)>,
}

impl Item {
    fn new(doc: usize, value: Value) -> Item {
        let id = (text_at(&value, &["metadata", "namespace"]), text_at(&value, &["metadata", "name"]));
        Item { doc, value, ids: vec![id] }
    }

    fn set_metadata(&mut self, field: &str, to: String) {
        if let Some(meta) = self.metadata() {
            meta.insert(field.to_string(), Value::String(to));
        }
        let id = (text_at(&self.value, &["metadata", "namespace"]), text_at(&self.value, &["metadata", "name"]));
        if self.ids.last() != Some(&id) {
            self.ids.push(id);
        }
    }

    fn metadata(&mut self) -> Option<&mut Map<String, Value>> {
        let object = self.value.as_object_mut()?;
        object.entry("metadata").or_insert_with(|| Value::Object(Map::new())).as_object_mut()
    }
}

fn text_at(value: &Value, path: &[&str]) -> String {
    at(value, path).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Files and subfolders of each folder that was read.
pub(super) struct Folders {
    files: HashMap<PathBuf, Vec<usize>>,
    children: HashMap<PathBuf, BTreeSet<PathBuf>>,
}

impl Folders {
    pub fn new(files: &[PathBuf]) -> Folders {
        let mut f = Folders { files: HashMap::new(), children: HashMap::new() };
        for (i, file) in files.iter().enumerate() {
            let Some(mut dir) = file.parent() else { continue };
            f.files.entry(dir.to_path_buf()).or_default().push(i);
            while let Some(up) = dir.parent() {
                if !f.children.entry(up.to_path_buf()).or_default().insert(dir.to_path_buf()) {
                    break;
                }
                dir = up;
            }
        }
        f
    }

    /// Whether a file was read in `dir` or below it.
    pub fn knows(&self, dir: &Path) -> bool {
        self.files.contains_key(dir) || self.children.contains_key(dir)
    }

    /// The subfolders of `dir` that hold something read.
    pub fn children(&self, dir: &Path) -> impl Iterator<Item = &PathBuf> {
        self.children.get(dir).into_iter().flatten()
    }
}

/// A build that went wrong in a way kustomize would refuse, or that the model does not follow.
pub(super) type Notes = Vec<String>;

/// A folder's build and the notes it gave.
type Built = (Vec<Item>, Notes);

/// Builds folders of one checkout, remembering each folder's build (bases are shared).
pub(super) struct Builder<'a> {
    docs: &'a Documents,
    folders: &'a Folders,
    built: RefCell<HashMap<PathBuf, Rc<Built>>>,
    /// Every file some build read (resources, generated lists, patches): what Flux applies.
    pub read: RefCell<HashSet<PathBuf>>,
    patch_values: RefCell<HashMap<PathBuf, Vec<Value>>>,
}

impl<'a> Builder<'a> {
    pub fn new(docs: &'a Documents, folders: &'a Folders) -> Builder<'a> {
        Builder { docs, folders, built: RefCell::default(), read: RefCell::default(), patch_values: RefCell::default() }
    }

    /// What kustomize-controller applies for the Flux Kustomization `ks` whose `spec.path` is the
    /// folder `dir`: the Flux objects and ResourceSets, and notes on what was not followed.
    pub fn flux(&self, ks: &Value, dir: &Path) -> (Vec<Item>, Notes) {
        let base = match self.docs.kustomizations.get(dir) {
            Some(k) => k.clone(),
            None => self.generated(dir),
        };
        let k = base.with_flux_steps(ks, dir);
        let mut notes = Vec::new();
        let mut items = self.run(&k, dir, &mut notes);
        if let Some(vars) = substitution(ks) {
            for item in &mut items {
                let disabled = ["labels", "annotations"].iter().any(|field| {
                    at(&item.value, &["metadata", field, SUBSTITUTE_ANNOTATION])
                        .and_then(Value::as_str)
                        .is_some_and(|v| v == "disabled")
                });
                if !disabled {
                    let text = item.value.to_string();
                    let replaced = substitute(&text, &vars);
                    if replaced != text
                        && let Ok(v) = serde_json::from_str(&replaced)
                    {
                        item.value = v;
                    }
                }
            }
        }
        (items, notes)
    }

    /// kustomize's build of folder `dir` through its own kustomization, without any Flux step.
    pub fn plain(&self, dir: &Path) -> Vec<Item> {
        self.folder(dir, &mut Vec::new())
    }

    /// The folders of the kustomizations that no other kustomization includes.
    pub fn top_kustomizations(&self) -> Vec<&'a Path> {
        let included: HashSet<&Path> = self
            .docs
            .kustomizations
            .values()
            .flat_map(|k| {
                let resources = k.resources.iter().filter_map(|r| match r {
                    Resource::Local(p) => Some(p.as_path()),
                    Resource::Remote(_) => None,
                });
                resources.chain(k.components.iter().map(PathBuf::as_path))
            })
            .collect();
        let mut tops: Vec<&Path> =
            self.docs.kustomizations.keys().map(PathBuf::as_path).filter(|d| !included.contains(d)).collect();
        tops.sort();
        tops
    }

    /// The kustomization kustomize-controller writes for a folder without one: every YAML file
    /// below it, a subfolder with a kustomization of its own taken whole.
    fn generated(&self, dir: &Path) -> KustomizeFile {
        let mut k = KustomizeFile::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if d != dir && self.docs.kustomizations.contains_key(&d) {
                k.resources.push(Resource::Local(d));
                continue;
            }
            for &f in self.folders.files.get(&d).into_iter().flatten() {
                k.resources.push(Resource::Local(self.docs.files[f].clone()));
            }
            let mut children: Vec<&PathBuf> = self.folders.children(&d).collect();
            children.reverse();
            stack.extend(children.into_iter().cloned());
        }
        k
    }

    /// The build of folder `dir` through its kustomization (remembered).
    fn folder(&self, dir: &Path, notes: &mut Notes) -> Vec<Item> {
        if let Some(done) = self.built.borrow().get(dir).cloned() {
            notes.extend(done.1.iter().cloned());
            return done.0.clone();
        }
        let mut own = Vec::new();
        let items = match self.docs.kustomizations.get(dir) {
            Some(k) => {
                // A folder including itself through its bases is refused by kustomize; marking it
                // built first ends the loop.
                self.built.borrow_mut().insert(dir.to_path_buf(), Rc::new((Vec::new(), Vec::new())));
                self.run(k, dir, &mut own)
            }
            None => {
                // kustomize refuses a folder resource without a kustomization; Flux's generated
                // list is the nearest reading of what was meant.
                own.push(format!(
                    "{} has no kustomization.yaml: read as kustomize-controller would generate it",
                    dir.display()
                ));
                let k = self.generated(dir);
                self.run(&k, dir, &mut own)
            }
        };
        notes.extend(own.iter().cloned());
        self.built.borrow_mut().insert(dir.to_path_buf(), Rc::new((items.clone(), own)));
        items
    }

    /// Builds `k`, whose folder is `dir`.
    fn run(&self, k: &KustomizeFile, dir: &Path, notes: &mut Notes) -> Vec<Item> {
        if let Some(file) = &k.file {
            self.read.borrow_mut().insert(file.clone());
        }
        for what in &k.unmodelled {
            notes.push(format!("{}: `{what}` is not modelled offline", location(k, dir)));
        }
        let mut items = Vec::new();
        let mut remote = Vec::new();
        for resource in &k.resources {
            match resource {
                Resource::Remote(url) => remote.push(url.as_str()),
                Resource::Local(path) => items.extend(self.resource(path, notes)),
            }
        }
        if let Some(first) = remote.first() {
            let more = if remote.len() > 1 { format!(" and {} more", remote.len() - 1) } else { String::new() };
            notes.push(format!("{}: remote resource {first}{more} not read offline", location(k, dir)));
        }
        for component in &k.components {
            self.component(component, &mut items, notes);
        }
        self.transform(k, dir, &mut items, notes);
        items
    }

    /// The objects of one `resources:` entry: a file's, or a folder's build.
    fn resource(&self, path: &Path, notes: &mut Notes) -> Vec<Item> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if KUSTOMIZATION_FILES.contains(&name) {
            // kustomize refuses a kustomization file as a resource (its folder is what to list),
            // so Flux cannot build this path: nothing of it is applied.
            notes.push(format!(
                "{} is listed as a resource: kustomize refuses it (list its folder), so this path does not build",
                path.display()
            ));
            return Vec::new();
        }
        if let Some(f) = self.docs.file_index(path) {
            self.read.borrow_mut().insert(path.to_path_buf());
            return self
                .docs
                .of_file(f)
                .iter()
                .enumerate()
                .map(|(n, _)| {
                    let d = self.docs.by_file[f].start + n;
                    Item::new(d, self.docs.value(d))
                })
                .collect();
        }
        if self.folders.knows(path) || self.docs.kustomizations.contains_key(path) {
            return self.folder(path, notes);
        }
        // A file that was not read as a manifest (a Helm chart's, a helmfile) or is missing.
        Vec::new()
    }

    /// Applies the component in folder `dir` to `items`.
    fn component(&self, dir: &Path, items: &mut Vec<Item>, notes: &mut Notes) {
        let Some(k) = self.docs.kustomizations.get(dir) else {
            notes.push(format!("component {} has no kustomization.yaml", dir.display()));
            return;
        };
        self.read.borrow_mut().insert(k.file.clone().unwrap_or_default());
        for resource in &k.resources {
            if let Resource::Local(path) = resource {
                items.extend(self.resource(path, notes));
            }
        }
        for c in &k.components {
            self.component(c, items, notes);
        }
        self.transform(k, dir, items, notes);
    }

    /// The transformers of `k`, in kustomize's order.
    fn transform(&self, k: &KustomizeFile, dir: &Path, items: &mut Vec<Item>, notes: &mut Notes) {
        for source in &k.patches_strategic {
            for patch in self.patch_values(source, k, dir, notes) {
                apply_merge(&patch, None, items);
            }
        }
        for (source, target) in &k.patches {
            for patch in self.patch_values(source, k, dir, notes) {
                match &patch {
                    Value::Array(ops) => {
                        if let Some(t) = target {
                            apply_json(ops, t, items);
                        }
                    }
                    _ => apply_merge(&patch, target.as_ref(), items),
                }
            }
        }
        if let Some(ns) = &k.namespace {
            for item in items.iter_mut() {
                item.set_metadata("namespace", ns.clone());
            }
        }
        if k.name_prefix.is_some() || k.name_suffix.is_some() {
            for item in items.iter_mut() {
                let name = text_at(&item.value, &["metadata", "name"]);
                let renamed = format!(
                    "{}{name}{}",
                    k.name_prefix.as_deref().unwrap_or_default(),
                    k.name_suffix.as_deref().unwrap_or_default()
                );
                item.set_metadata("name", renamed);
            }
        }
        for (source, target) in &k.patches_json {
            for patch in self.patch_values(source, k, dir, notes) {
                if let Value::Array(ops) = &patch {
                    apply_json(ops, target, items);
                }
            }
        }
    }

    /// The patch documents of `source`.
    fn patch_values(&self, source: &PatchSource, k: &KustomizeFile, dir: &Path, notes: &mut Notes) -> Vec<Value> {
        match source {
            PatchSource::Value(v) => vec![v.clone()],
            PatchSource::Text(text) => parse_patch(text),
            PatchSource::File(path) => {
                self.read.borrow_mut().insert(path.clone());
                if let Some(v) = self.patch_values.borrow().get(path) {
                    return v.clone();
                }
                let values = match std::fs::read_to_string(path) {
                    Ok(text) => parse_patch(&text),
                    Err(e) => {
                        notes.push(format!("{}: patch {} cannot be read: {e}", location(k, dir), path.display()));
                        Vec::new()
                    }
                };
                self.patch_values.borrow_mut().insert(path.clone(), values.clone());
                values
            }
        }
    }
}

fn location(k: &KustomizeFile, dir: &Path) -> String {
    match &k.file {
        Some(f) => f.display().to_string(),
        None => format!("{} (generated kustomization)", dir.display()),
    }
}

/// The documents of a patch's text: objects for strategic merge, a list of JSON 6902 operations.
fn parse_patch(text: &str) -> Vec<Value> {
    super::documents::split_documents(text)
        .iter()
        .filter_map(|d| super::documents::parse_document(d.text).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies a strategic-merge patch: to the objects `target` selects, or without one to the
/// object of the patch's own kind, name and namespace (as it is now or was before).
fn apply_merge(patch: &Value, target: Option<&Selector>, items: &mut Vec<Item>) {
    let api_version = patch.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = patch.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = text_at(patch, &["metadata", "name"]);
    let namespace = text_at(patch, &["metadata", "namespace"]);
    let own = |item: &Item| {
        item.value.get("apiVersion").and_then(Value::as_str) == Some(api_version)
            && item.value.get("kind").and_then(Value::as_str) == Some(kind)
            && item.ids.iter().any(|(ns, n)| *n == name && same_namespace(ns, &namespace))
    };
    let delete = patch.get("$patch").and_then(Value::as_str) == Some("delete");
    // The patch's identity selects; it never renames what it patches.
    let mut body = patch.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("name");
        meta.remove("namespace");
    }
    if let Some(object) = body.as_object_mut() {
        object.remove("apiVersion");
        object.remove("kind");
        object.remove("$patch");
    }
    items.retain_mut(|item| {
        let selected = match target {
            Some(t) => t.matches(item),
            None => own(item),
        };
        if !selected {
            return true;
        }
        if delete {
            return false;
        }
        json_patch::merge(&mut item.value, &body);
        let id = (text_at(&item.value, &["metadata", "namespace"]), text_at(&item.value, &["metadata", "name"]));
        if item.ids.last() != Some(&id) {
            item.ids.push(id);
        }
        true
    });
}

/// The variables of `ks`'s post-build substitution, when kustomize-controller runs it: with
/// variables given inline or from ConfigMaps and Secrets (whose values are unknown offline, so
/// only the defaults written in the objects apply to them), or with `substituteStrategy: Always`.
fn substitution(ks: &Value) -> Option<HashMap<String, String>> {
    let post = at(ks, &["spec", "postBuild"])?;
    let inline = post.get("substitute").and_then(Value::as_object);
    let from = post.get("substituteFrom").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let always = post.get("substituteStrategy").and_then(Value::as_str) == Some("Always");
    if !(inline.is_some_and(|v| !v.is_empty()) || from || always) {
        return None;
    }
    Some(
        inline
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), |s| s.replace('\n', ""))))
            .collect(),
    )
}

/// kustomize treats an empty namespace and `default` as the same.
fn same_namespace(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        if s.is_empty() { "default" } else { s }
    }
    norm(a) == norm(b)
}

/// Applies JSON 6902 operations to the objects `target` selects, one at a time: the objects hold
/// only the fields fluxgate reads, so an operation on another field has nothing to act on.
fn apply_json(ops: &[Value], target: &Selector, items: &mut [Item]) {
    let ops: Vec<json_patch::PatchOperation> =
        ops.iter().filter_map(|op| serde_json::from_value(op.clone()).ok()).collect();
    for item in items.iter_mut().filter(|i| target.matches(i)) {
        for op in &ops {
            let _ = json_patch::patch(&mut item.value, std::slice::from_ref(op));
        }
        let id = (text_at(&item.value, &["metadata", "namespace"]), text_at(&item.value, &["metadata", "name"]));
        if item.ids.last() != Some(&id) {
            item.ids.push(id);
        }
    }
}

/// Replaces `${VAR}`, `${VAR:=default}`, `${VAR:-default}`, `${VAR=default}` and
/// `${VAR-default}` the way Flux's post-build substitution (envsubst) does: a default applies when
/// the variable is unset or empty and may itself hold expressions; `$$` is a literal `$`. A
/// variable with no value and no default, and any other form, is left as written: offline,
/// values from `substituteFrom` are unknown.
pub(super) fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = text[i..].find('$') {
        let at = i + pos;
        out.push_str(&text[i..at]);
        let rest = &text[at..];
        if rest.starts_with("$$") {
            out.push('$');
            i = at + 2;
            continue;
        }
        if !rest.starts_with("${") {
            out.push('$');
            i = at + 1;
            continue;
        }
        let mut depth = 0;
        let mut end = None;
        for (j, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            out.push_str(rest);
            return out;
        };
        match expand(&rest[2..end], vars) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[..=end]),
        }
        i = at + end + 1;
    }
    out.push_str(&text[i..]);
    out
}

/// The value of one `${...}` expression, `None` to leave it as written.
fn expand(inner: &str, vars: &HashMap<String, String>) -> Option<String> {
    let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() {
        return None;
    }
    if op.is_empty() {
        return vars.get(name).cloned();
    }
    let set = vars.get(name).filter(|v| !v.is_empty());
    [":=", ":-", "=", "-"]
        .iter()
        .find_map(|p| op.strip_prefix(p))
        .map(|default| set.cloned().unwrap_or_else(|| substitute(default, vars)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_follows_flux() {
        let vars = HashMap::from([("CLUSTER".to_string(), "prod".to_string())]);
        assert_eq!(substitute("0-${CLUSTER}-config", &vars), "0-prod-config");
        assert_eq!(substitute("${MISSING:=dflt}-x", &vars), "dflt-x");
        assert_eq!(substitute("${MISSING:-d}", &vars), "d");
        assert_eq!(substitute("${MISSING}", &vars), "${MISSING}");
        assert_eq!(substitute("plain", &vars), "plain");
        assert_eq!(substitute("${unterminated", &vars), "${unterminated");
        assert_eq!(substitute("${CLAIM:=${CLUSTER}}-data", &vars), "prod-data", "a default holding an expression");
        assert_eq!(substitute("$${CLUSTER}", &vars), "${CLUSTER}", "$$ is a literal $");
        assert_eq!(substitute("${CLUSTER/a/b}", &vars), "${CLUSTER/a/b}", "other forms stay as written");
    }

    #[test]
    fn selectors_follow_kubernetes_equality_selectors() {
        let labels = serde_json::json!({"app": "web", "tier": "front"});
        assert!(selects("app=web", Some(&labels)));
        assert!(selects("app==web,tier", Some(&labels)));
        assert!(!selects("app!=web", Some(&labels)));
        assert!(selects("!missing", Some(&labels)));
        assert!(!selects("missing", None));
    }
}

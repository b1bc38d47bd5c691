//! Step 5 of the loader: each cluster of the checkout, from its entry point down through every
//! Kustomization it applies, as kustomize-controller would apply it.
//!
//! A cluster starts at an entry point ([`super::entry`]). Its root Kustomization's `spec.path` is
//! built ([`super::kustomize`]); every Flux object the build gives is an object of the cluster,
//! applied by that Kustomization (its owner, whose `spec.wait` waits for it); every Kustomization
//! among them is built in turn, and every ResourceSet rendered. Everything no cluster reaches is
//! not applied: listed with the reason, never checked and never used to satisfy a dependency.
//!
//! Without any entry point (a partial copy of a repository, a folder of apps), the clusters are
//! guessed as before: the objects that no Kustomization of the checkout applies are roots, and
//! the roots of one folder are one cluster.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::LoadError;
use super::documents::{Body, Documents};
use super::entry::{Entry, Origin, source_of};
use super::files::{join, normalize};
use super::kustomize::{Builder, Folders};
use super::{FALLBACK_NAMESPACE, resource_set, root};
use crate::object::{FluxKind, at, kind_of};

/// An object as a cluster has it.
#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub kind: FluxKind,
    /// Its document in [`Documents::docs`]; `None` for the Kustomization a FluxInstance creates.
    pub doc: Option<usize>,
    pub file: usize,
    pub line: usize,
    /// As applied: built, patched, substituted; `None` when that is its document as written
    /// (then read again when needed, so a large checkout is not held as values twice).
    pub value: Option<Value>,
    /// The instance of the Kustomization that applies it.
    pub parent: Option<usize>,
}

impl Instance {
    /// Its value as applied.
    pub fn value<'a>(&'a self, docs: &Documents) -> std::borrow::Cow<'a, Value> {
        match (&self.value, self.doc) {
            (Some(v), _) => std::borrow::Cow::Borrowed(v),
            (None, Some(d)) => std::borrow::Cow::Owned(docs.value(d)),
            (None, None) => unreachable!("an instance without a document has a value"),
        }
    }
}

/// One cluster: a name (the folder its entry point syncs, or its roots' folder) and its objects.
#[derive(Debug, Clone)]
pub(super) struct ClusterOf {
    pub folder: PathBuf,
    pub members: Vec<usize>,
    /// The file of its entry point; `None` for a guessed cluster.
    pub entry: Option<PathBuf>,
}

/// Everything step 5 finds.
#[derive(Debug, Default)]
pub(super) struct Placed {
    pub instances: Vec<Instance>,
    pub clusters: Vec<ClusterOf>,
    /// Documents of Flux objects that no cluster applies, with the reason.
    pub not_applied: BTreeMap<usize, String>,
    /// Files some cluster applies (read by a build, or an entry point's own file).
    pub applied_files: HashSet<PathBuf>,
    pub notes: Vec<LoadError>,
    /// No entry point was found: the clusters are guessed.
    pub guessed: bool,
    /// The ResourceSets each cluster applies, with what they render.
    pub resource_sets: Vec<PlacedSet>,
    /// The documents of the ResourceSets some cluster applies.
    pub reached_sets: HashSet<usize>,
}

/// A ResourceSet as a cluster has it.
#[derive(Debug, Clone)]
pub(super) struct PlacedSet {
    /// The folder naming its cluster ([`ClusterOf::folder`]).
    pub cluster: PathBuf,
    pub file: usize,
    pub line: usize,
    /// As applied: built, patched, substituted.
    pub value: Value,
    /// The Flux objects it renders.
    pub renders: Vec<(FluxKind, Value)>,
}

/// The key that makes an object one object in a cluster.
type Key = (FluxKind, String, String);

fn key_of(kind: FluxKind, value: &Value) -> Key {
    let text = |p: &[&str]| at(value, p).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let ns = text(&["metadata", "namespace"]).unwrap_or_else(|| FALLBACK_NAMESPACE.to_string());
    (kind, ns, text(&["metadata", "name"]).unwrap_or_default())
}

/// What a placed document is: a Flux object, or a ResourceSet (rendered, not an object itself).
fn flux_kind(value: &Value) -> Option<FluxKind> {
    kind_of(value)
}

struct Placer<'a> {
    docs: &'a Documents,
    folders: &'a Folders,
    builder: Builder<'a>,
    out: Placed,
}

/// Places every document of `docs` in the clusters of the checkout; `inputs` are the paths the
/// user gave (the repository root is looked for from them).
pub(super) fn place(docs: &Documents, inputs: &[PathBuf]) -> Placed {
    let folders = Folders::new(&docs.files);
    let mut placer = Placer { docs, folders: &folders, builder: Builder::new(docs, &folders), out: Placed::default() };
    let mut entries: Vec<Entry> = docs.entries.clone();
    entries.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let patch_docs = placer.patch_docs();
    // The highest folder the user gave: entry points resolve their paths at or below it.
    let top = inputs
        .iter()
        .map(|p| normalize(p))
        .map(|p| if p.is_file() { p.parent().map(Path::to_path_buf).unwrap_or_default() } else { p })
        .min_by_key(|p| p.components().count())
        .unwrap_or_default();
    if entries.is_empty() {
        entries = placer.self_applied(inputs);
    }
    if std::env::var_os("FLUXGATE_DEBUG").is_some() {
        for e in &entries {
            eprintln!("entry {:?} {}:{} {}", e.origin, e.file.display(), e.line, e.root["spec"]["path"]);
        }
    }
    if entries.is_empty() {
        placer.guess(inputs, &patch_docs);
    } else {
        let mut seen_folders = HashSet::new();
        let mut first_root: Option<PathBuf> = None;
        for entry in &entries {
            let roots = placer.roots_of(entry, &top);
            if roots.is_empty() {
                placer.note(
                    entry.file.clone(),
                    entry.line,
                    format!("{}: spec.path is not in the checkout", entry.origin),
                );
            }
            for (root, dir) in roots {
                // Two entry points syncing one folder (a FluxInstance and its chart values) are one
                // cluster.
                if !seen_folders.insert(dir.clone()) {
                    continue;
                }
                let doc = placer.doc_at(&entry.file, entry.line);
                let file = docs.file_index(&entry.file).unwrap_or_default();
                placer.out.applied_files.insert(entry.file.clone());
                let mut value = entry.root.clone();
                if let Ok(relative) = dir.strip_prefix(&root) {
                    value["spec"]["path"] = Value::String(format!("./{}", relative.display()));
                }
                let start = Instance {
                    kind: FluxKind::Kustomization,
                    doc: doc.filter(|_| entry.origin == Origin::Bootstrap || entry.origin == Origin::SelfApplied),
                    file,
                    line: entry.line,
                    value: Some(value),
                    parent: None,
                };
                let members = placer.traverse(&dir, vec![start], &root, Some(entry.source()));
                first_root.get_or_insert_with(|| root.clone());
                if std::env::var_os("FLUXGATE_DEBUG").is_some() {
                    eprintln!("cluster {} root {} members {}", dir.display(), root.display(), members.len());
                }
                placer.out.clusters.push(ClusterOf { folder: dir, members, entry: Some(entry.file.clone()) });
            }
        }
        let reached: HashSet<usize> =
            placer.out.instances.iter().filter_map(|i| i.doc).chain(placer.out.reached_sets.iter().copied()).collect();
        let entry_files: Vec<String> = entries.iter().map(|e| e.file.display().to_string()).collect();
        for (d, doc) in docs.docs.iter().enumerate() {
            if reached.contains(&d) || patch_docs.contains(&d) {
                continue;
            }
            let file = &docs.files[doc.file];
            let reason = placer.reason(file).unwrap_or_else(|| {
                format!("not in any path applied from the entry points ({})", entry_files.join(", "))
            });
            placer.out.not_applied.insert(d, reason);
        }
        // What only a Kustomization that is not applied would apply: say so, it is the cause.
        // (Those builds say nothing about what is applied.)
        placer.out.applied_files.extend(placer.builder.read.borrow().iter().cloned());
        if let Some(root) = first_root {
            let unapplied: Vec<usize> = placer.out.not_applied.keys().copied().collect();
            for d in unapplied {
                let doc = &docs.docs[d];
                let Body::Flux { kind: FluxKind::Kustomization, path: Some(path), .. } = &doc.body else { continue };
                if path.contains("${") {
                    continue;
                }
                let dir = join(&root, path);
                if !folders.knows(&dir) {
                    continue;
                }
                let why =
                    format!("applied only by a Kustomization that is not applied ({})", docs.files[doc.file].display());
                for item in placer.builder.flux(&docs.value(d), &dir).0 {
                    if item.doc != d
                        && let Some(reason) = placer.out.not_applied.get_mut(&item.doc)
                        && reason != "in an archive folder"
                    {
                        *reason = why.clone();
                    }
                }
            }
            placer.builder.read.borrow_mut().clear();
        }
    }
    placer.out.applied_files.extend(placer.builder.read.borrow().iter().cloned());
    placer.out
}

impl<'a> Placer<'a> {
    fn note(&mut self, file: PathBuf, line: usize, message: String) {
        self.out.notes.push(LoadError { file, line, message });
    }

    /// Documents in patch files: partial objects, never objects of their own.
    fn patch_docs(&self) -> HashSet<usize> {
        let files: HashSet<&Path> = self.docs.kustomizations.values().flat_map(|k| k.patch_files()).collect();
        let mut out = HashSet::new();
        for (i, f) in self.docs.files.iter().enumerate() {
            if files.contains(f.as_path()) {
                out.extend(self.docs.by_file[i].clone());
            }
        }
        out
    }

    fn doc_at(&self, file: &Path, line: usize) -> Option<usize> {
        let f = self.docs.file_index(file)?;
        self.docs.by_file[f].clone().find(|&d| self.docs.docs[d].line == line)
    }

    /// The folders an entry point syncs, each with the repository root its `spec.path` is
    /// relative to: the highest folder above the entry's file (within what the user gave) where
    /// the path exists. A `${var}` in the path matches any folder name there, so a FluxInstance
    /// syncing `clusters/${CLUSTER}` enters every cluster folder.
    fn roots_of(&self, entry: &Entry, top: &Path) -> Vec<(PathBuf, PathBuf)> {
        let Some(path) = at(&entry.root, &["spec", "path"]).and_then(Value::as_str) else { return Vec::new() };
        let ups: Vec<&Path> = entry.file.ancestors().skip(1).take_while(|up| up.starts_with(top)).collect();
        // A bootstrap sync lives in the folder it syncs (`<path>/flux-system/gotk-sync.yaml`).
        let holds_entry = |dir: &Path| entry.file.starts_with(dir);
        let mut best: Vec<(PathBuf, PathBuf)> = Vec::new();
        for up in ups.iter().rev() {
            let dirs = self.matching(up, path);
            if dirs.is_empty() {
                continue;
            }
            let found: Vec<(PathBuf, PathBuf)> = dirs.into_iter().map(|d| (up.to_path_buf(), d)).collect();
            if entry.origin != Origin::Bootstrap || found.iter().any(|(_, d)| holds_entry(d)) {
                return found;
            }
            if best.is_empty() {
                best = found;
            }
        }
        best
    }

    /// The folders `path` names below `root`, a `${var}` standing for any name.
    fn matching(&self, root: &Path, path: &str) -> Vec<PathBuf> {
        let known = |d: &Path| self.folders.knows(d) || self.docs.kustomizations.contains_key(d);
        if !path.contains("${") {
            let dir = join(root, path);
            return if known(&dir) { vec![dir] } else { Vec::new() };
        }
        let mut dirs = vec![root.to_path_buf()];
        for part in Path::new(path).components() {
            let part = part.as_os_str().to_string_lossy();
            if part == "." || part == "/" {
                continue;
            }
            if !part.contains("${") {
                dirs = dirs.into_iter().map(|d| normalize(&d.join(&*part))).filter(|d| known(d)).collect();
                continue;
            }
            let mut pattern = String::from("^");
            let mut rest: &str = &part;
            while let Some(start) = rest.find("${") {
                pattern.push_str(&regex::escape(&rest[..start]));
                pattern.push_str(".+");
                rest = rest[start..].find('}').map_or("", |end| &rest[start + end + 1..]);
            }
            pattern.push_str(&regex::escape(rest));
            pattern.push('$');
            let pattern = regex::Regex::new(&pattern);
            let Ok(pattern) = pattern else { return Vec::new() };
            dirs = dirs
                .iter()
                .flat_map(|d| self.folders.children(d))
                .filter(|c| c.file_name().is_some_and(|n| pattern.is_match(&n.to_string_lossy())))
                .cloned()
                .collect();
        }
        dirs
    }

    /// Why Flux never applies `file`, when that can be said more precisely than "not reached".
    fn reason(&self, file: &Path) -> Option<String> {
        if root::is_archive(file) {
            return Some("in an archive folder".into());
        }
        let read = self.builder.read.borrow();
        file.ancestors().skip(1).find_map(|d| {
            let k = self.docs.kustomizations.get(d).filter(|k| !k.applies_nothing())?.file.as_ref()?;
            read.contains(k).then(|| format!("left out of {}", k.display()))
        })
    }

    /// Builds and renders from `starts` down: the instances of one cluster. Kustomizations of
    /// another source than `source` (another repository, an OCI artifact) apply nothing of this
    /// checkout.
    fn traverse(
        &mut self,
        cluster: &Path,
        starts: Vec<Instance>,
        root: &Path,
        source: Option<(String, String)>,
    ) -> Vec<usize> {
        let mut members = Vec::new();
        let mut seen: HashMap<Key, usize> = HashMap::new();
        let mut queue = VecDeque::new();
        for start in starts {
            let key = key_of(start.kind, &start.value(self.docs));
            if seen.contains_key(&key) {
                continue;
            }
            let i = self.push(start);
            seen.insert(key, i);
            members.push(i);
            queue.push_back(i);
        }
        while let Some(i) = queue.pop_front() {
            let inst = &self.out.instances[i];
            if inst.kind != FluxKind::Kustomization {
                continue;
            }
            // An instance as written is judged on its document's own fields first: most of a
            // large checkout is never read as a value again.
            if inst.value.is_none()
                && let Some(Body::Flux { path, source: written_source, .. }) = inst.doc.map(|d| &self.docs.docs[d].body)
            {
                let other_source = match (&source, written_source) {
                    (Some((k, n)), Some((wk, wn))) => **wk != **k || **wn != **n,
                    _ => false,
                };
                let resolves = path.as_deref().is_some_and(|p| {
                    let dir = join(root, p);
                    !p.contains("${") && (self.folders.knows(&dir) || self.docs.kustomizations.contains_key(&dir))
                });
                if other_source || !resolves {
                    continue;
                }
            }
            let value = inst.value(self.docs).into_owned();
            let (file, line) = (inst.file, inst.line);
            let own_key = key_of(FluxKind::Kustomization, &value);
            if let (Some(want), Some(has)) = (&source, source_of(&value))
                && *want != has
            {
                continue;
            }
            let Some(path) = at(&value, &["spec", "path"]).and_then(Value::as_str) else { continue };
            if path.contains("${") {
                continue;
            }
            let dir = join(root, path);
            if !self.folders.knows(&dir) && !self.docs.kustomizations.contains_key(&dir) {
                continue;
            }
            let (items, notes) = self.builder.flux(&value, &dir);
            let file_path = self.docs.files[file].clone();
            for n in notes {
                self.note(file_path.clone(), line, format!("Kustomization {}/{}: {n}", own_key.1, own_key.2));
            }
            for item in items {
                let doc = &self.docs.docs[item.doc];
                let generated = match &doc.body {
                    Body::ResourceSet(_) => {
                        let (values, notes) = resource_set::expand(&item.value);
                        for n in notes {
                            self.note(self.docs.files[doc.file].clone(), doc.line, n);
                        }
                        let renders: Vec<(FluxKind, Value)> =
                            values.into_iter().filter_map(|v| flux_kind(&v).map(|k| (k, v))).collect();
                        self.out.resource_sets.push(PlacedSet {
                            cluster: cluster.to_path_buf(),
                            file: doc.file,
                            line: doc.line,
                            value: item.value.clone(),
                            renders: renders.clone(),
                        });
                        renders
                    }
                    Body::Flux { .. } => Vec::new(),
                };
                let mut place = |kind: FluxKind, value: Value, parent: Option<usize>, this: &mut Self| {
                    let key = key_of(kind, &value);
                    // The Kustomization applying its own file: the same object, not a child.
                    if key == own_key || seen.contains_key(&key) {
                        return;
                    }
                    let n = this.push(Instance {
                        kind,
                        doc: Some(item.doc),
                        file: doc.file,
                        line: doc.line,
                        value: Some(value),
                        parent,
                    });
                    seen.insert(key, n);
                    members.push(n);
                    queue.push_back(n);
                };
                if let Body::Flux { kind, .. } = &doc.body {
                    place(*kind, item.value.clone(), Some(i), self);
                } else {
                    // The ResourceSet itself is applied.
                    self.out.reached_sets.insert(item.doc);
                    // Objects a ResourceSet renders are owned by it, not by a Kustomization.
                    for (kind, value) in generated {
                        place(kind, value, None, self);
                    }
                }
            }
        }
        members
    }

    fn push(&mut self, instance: Instance) -> usize {
        self.out.instances.push(instance);
        self.out.instances.len() - 1
    }

    /// Kustomizations whose `spec.path` holds their own file and that nothing else applies.
    fn self_applied(&mut self, inputs: &[PathBuf]) -> Vec<Entry> {
        let Some((root, source)) = self.source_root(inputs) else { return Vec::new() };
        let mut applied_by_others: HashSet<usize> = HashSet::new();
        let mut own: Vec<usize> = Vec::new();
        for (d, doc) in self.docs.docs.iter().enumerate() {
            let Body::Flux { kind: FluxKind::Kustomization, path: Some(path), source: written, .. } = &doc.body else {
                continue;
            };
            if written.as_ref().is_some_and(|(k, n)| **k != *source.0 || **n != *source.1) || path.contains("${") {
                continue;
            }
            let dir = join(&root, path);
            if !self.folders.knows(&dir) {
                continue;
            }
            let (items, _) = self.builder.flux(&self.docs.value(d), &dir);
            for item in items {
                if item.doc == d {
                    own.push(d);
                } else {
                    applied_by_others.insert(item.doc);
                }
            }
        }
        // Building every Kustomization to find these is no statement about what is applied.
        self.builder.read.borrow_mut().clear();
        own.into_iter()
            .filter(|d| !applied_by_others.contains(d))
            .map(|d| {
                let doc = &self.docs.docs[d];
                Entry {
                    origin: Origin::SelfApplied,
                    file: self.docs.files[doc.file].clone(),
                    line: doc.line,
                    root: self.docs.value(d),
                }
            })
            .collect()
    }

    /// The checkout's root and source as the most `spec.path`s resolve against them.
    fn source_root(&self, inputs: &[PathBuf]) -> Option<(PathBuf, (String, String))> {
        let appliers: Vec<root::Applier<'_>> = self
            .docs
            .docs
            .iter()
            .filter_map(|doc| match &doc.body {
                Body::Flux { kind: FluxKind::Kustomization, path: Some(path), source, .. } => {
                    Some(root::Applier { path: Some(path), source: source.as_ref().map(|(k, n)| (&**k, &**n)) })
                }
                _ => None,
            })
            .collect();
        root::source_root(inputs, &appliers, &|dir| self.folders.knows(dir), &|dir| {
            self.folders.children(dir).filter_map(|c| c.file_name().map(|n| n.to_owned())).collect()
        })
        .map(|(root, (k, n))| (root, (k.to_string(), n.to_string())))
    }

    /// Without entry points: the objects no Kustomization of the checkout applies are roots,
    /// grouped by folder, unless a `kustomization.yaml` that is built leaves them out or they are
    /// archived.
    fn guess(&mut self, inputs: &[PathBuf], patch_docs: &HashSet<usize>) {
        self.out.guessed = true;
        // No spec.path resolves: every object stands on its own, with what a kustomization.yaml
        // above it gives it.
        let (root, source) = match self.source_root(inputs) {
            Some((root, source)) => (root, Some(source)),
            None => (PathBuf::new(), None),
        };
        let mut applied: HashSet<usize> = HashSet::new();
        for (d, doc) in self.docs.docs.iter().enumerate() {
            let Body::Flux { kind: FluxKind::Kustomization, path: Some(path), source: written, .. } = &doc.body else {
                continue;
            };
            let Some(source) = &source else { break };
            if written.as_ref().is_some_and(|(k, n)| **k != *source.0 || **n != *source.1) || path.contains("${") {
                continue;
            }
            let dir = join(&root, path);
            if self.folders.knows(&dir) {
                // A Kustomization applying its own file is still a root.
                let items = self.builder.flux(&self.docs.value(d), &dir).0;
                applied.extend(items.iter().map(|i| i.doc).filter(|&i| i != d));
            }
        }
        self.builder.read.borrow_mut().clear();
        // A kustomization.yaml nothing includes is built as such: what it includes gets the
        // namespace and patches it gives, as if the Kustomization applying it (not in the
        // checkout) did.
        let mut built: HashMap<usize, Value> = HashMap::new();
        for top in self.builder.top_kustomizations() {
            for item in self.builder.plain(top) {
                if !applied.contains(&item.doc) {
                    built.entry(item.doc).or_insert(item.value);
                }
            }
        }
        let candidates = self.written(patch_docs, &applied);
        let mut by_folder: BTreeMap<PathBuf, Vec<Instance>> = BTreeMap::new();
        // ResourceSets nothing applies are rendered where they stand.
        for (d, doc) in self.docs.docs.iter().enumerate() {
            let Body::ResourceSet(written) = &doc.body else { continue };
            if applied.contains(&d) || patch_docs.contains(&d) {
                continue;
            }
            let set = built.remove(&d).unwrap_or_else(|| written.clone());
            let (values, notes) = resource_set::expand(&set);
            for n in notes {
                self.note(self.docs.files[doc.file].clone(), doc.line, n);
            }
            let folder = self.docs.files[doc.file].parent().map(Path::to_path_buf).unwrap_or_default();
            let renders: Vec<(FluxKind, Value)> =
                values.into_iter().filter_map(|v| flux_kind(&v).map(|k| (k, v))).collect();
            for (kind, value) in &renders {
                let start = Instance {
                    kind: *kind,
                    doc: Some(d),
                    file: doc.file,
                    line: doc.line,
                    value: Some(value.clone()),
                    parent: None,
                };
                by_folder.entry(folder.clone()).or_default().push(start);
            }
            self.out.resource_sets.push(PlacedSet {
                cluster: folder,
                file: doc.file,
                line: doc.line,
                value: set,
                renders,
            });
        }
        for mut start in candidates {
            let d = start.doc.expect("written documents have one");
            let file = self.docs.files[start.file].clone();
            if let Some(value) = built.remove(&d) {
                start.value = Some(value);
            } else if let Some(reason) = self.reason(&file) {
                self.out.not_applied.insert(d, reason);
                continue;
            }
            by_folder.entry(file.parent().map(Path::to_path_buf).unwrap_or_default()).or_default().push(start);
        }
        for (folder, starts) in by_folder {
            for s in &starts {
                self.out.applied_files.insert(self.docs.files[s.file].clone());
            }
            let members = self.traverse(&folder, starts, &root, source.clone());
            self.out.clusters.push(ClusterOf { folder, members, entry: None });
        }
        // What only a not-applied object applied stays not applied; anything else read by no
        // cluster is not applied either.
        let reached: HashSet<usize> =
            self.out.instances.iter().filter_map(|i| i.doc).chain(self.out.reached_sets.iter().copied()).collect();
        for (d, _) in self.docs.docs.iter().enumerate() {
            if !reached.contains(&d) && !patch_docs.contains(&d) && !self.out.not_applied.contains_key(&d) {
                self.out.not_applied.insert(d, "applied only by a Kustomization that is not applied".into());
            }
        }
    }

    /// Instances of the Flux documents as written, but those in `except` and patch files.
    fn written(&self, patch_docs: &HashSet<usize>, except: &HashSet<usize>) -> Vec<Instance> {
        self.docs
            .docs
            .iter()
            .enumerate()
            .filter(|(d, _)| !patch_docs.contains(d) && !except.contains(d))
            .filter_map(|(d, doc)| match &doc.body {
                Body::Flux { kind, .. } => Some(Instance {
                    kind: *kind,
                    doc: Some(d),
                    file: doc.file,
                    line: doc.line,
                    value: None,
                    parent: None,
                }),
                Body::ResourceSet(_) => None,
            })
            .collect()
    }
}

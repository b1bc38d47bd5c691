//! Flux objects read from YAML files and folders: the `serve --manifests` source and the input
//! of `fluxgate check` and `fluxgate graph`.
//!
//! Files are read recursively and split into documents; each document is parsed on its own, so
//! one broken document is reported (file and line) and the rest still load. Real GitOps
//! repositories rarely write `metadata.namespace` on a Kustomization: the namespace comes from
//! the kustomize `kustomization.yaml` that includes the file. The loader follows `resources:`
//! from every kustomization that no other kustomization includes (a build root) and gives each
//! file the namespace kustomize would: the outermost `namespace:` on the way down wins.
//!
//! Only what Flux would apply is checked: files of Helm chart folders and helmfiles are not
//! manifests, and a file that does not parse is an error only inside an applied tree or when it
//! names a Flux API group (elsewhere it is a template of some other tool, skipped and counted).

mod resource_set;
mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::object::{FluxKind, FluxObject, ObjectKey, at, kind_of};
use crate::slim::SlimObject;
use crate::status::ObjectStatus;

/// Namespace of a namespaced object that nothing gives one, as for any Kubernetes object.
pub const FALLBACK_NAMESPACE: &str = "default";

/// File names kustomize reads as a kustomization.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One Flux object and where it was written.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub object: FluxObject,
    /// Shared by the objects of one file.
    pub file: Arc<Path>,
    /// 1-based line where the object's document starts.
    pub line: usize,
    /// The status written in the document: present in a dump of a cluster's objects
    /// (`kubectl get ... -o yaml`), empty (unknown) in a Git checkout.
    pub status: ObjectStatus,
}

/// A document or file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<Loaded>,
    pub errors: Vec<LoadError>,
    /// How many YAML files were read.
    pub files: usize,
    /// YAML files Flux would not apply as manifests, left unread or unparsed: Helm chart
    /// folders (a `Chart.yaml` beside them or above), helmfiles, and templated or otherwise
    /// unparseable files outside every applied tree that hold no Flux object.
    pub skipped: usize,
    /// What could not be modelled offline, without being an error: a `ResourceSet`'s
    /// `inputsFrom`, a template expression that is not a plain input.
    pub notes: Vec<LoadError>,
    /// Flux objects that no cluster of the checkout applies (a disabled or archived app), each
    /// once, with the reason. They are not checked unless asked ([`LoadOptions`]).
    pub not_applied: Vec<NotApplied>,
    /// When the paths hold several clusters that give one name to different objects: each
    /// cluster, named by the folder of its roots, with its objects (indices into `objects`),
    /// objects of each cluster (indices into `objects`), to be checked one cluster at a time.
    /// Empty when everything forms one graph.
    pub clusters: Vec<Cluster>,
    /// Every cluster of the checkout (roots of one folder and what they apply), whether or not
    /// they must be checked one by one: indices into `objects`.
    pub groups: Vec<Cluster>,
}

impl Manifests {
    pub fn count(&self, kind: FluxKind) -> usize {
        self.objects.iter().filter(|o| o.object.kind == kind).count()
    }
}

/// A Flux object that nothing in the checkout applies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotApplied {
    pub kind: FluxKind,
    pub object: ObjectKey,
    pub file: PathBuf,
    pub line: usize,
    /// Why Flux would not apply it: `left out of F/kustomization.yaml`, `in an archive folder`.
    pub reason: String,
}

/// How [`load_with`] reads a checkout.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Check objects that no cluster applies too, against the cluster they would join.
    pub include_unapplied: bool,
}

/// A document as resolved in one cluster: its index and the parent that applies it there.
type Instance = (usize, Option<usize>);

/// One cluster of a repository holding several: its roots' folder and its objects.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub folder: PathBuf,
    /// Indices into [`Manifests::objects`].
    pub members: Vec<usize>,
}

/// A raw Flux document before its namespace is known.
///
/// The document itself is decoded slim ([`SlimObject`]) and kept as compact JSON text, parsed
/// again when it is resolved: a hundred thousand documents cost their text, not a tree of maps
/// each (a small `Value` object is over half a kilobyte). The texts of one file's documents
/// share one buffer ([`Texts`]): a few large allocations that go back to the system when the
/// load ends, where a hundred thousand small ones would leave the heap at its peak.
struct RawObject {
    kind: FluxKind,
    /// Index of its file in the files read, which is also the index of its text buffer.
    file: usize,
    /// Its slim JSON in its file's text buffer.
    span: std::ops::Range<usize>,
    /// `spec.path` and `spec.sourceRef` (kind, name): what the tree reads.
    path: Option<String>,
    source: Option<(Option<String>, String)>,
    /// `spec.targetNamespace` as written (before any substitution).
    target_namespace: Option<String>,
    /// `spec.postBuild.substitute`, the variables it gives the documents it applies.
    substitute: Option<HashMap<String, String>>,
    line: usize,
}

/// The slim JSON texts of the documents of each file read, indexed like the files.
type Texts = [String];

impl RawObject {
    /// Records `slim`, a document of file number `file`, appending its text to `text`, that
    /// file's buffer.
    fn new(kind: FluxKind, slim: &Value, file: usize, line: usize, text: &mut String) -> RawObject {
        let start = text.len();
        text.push_str(&slim.to_string());
        let field = |p: &[&str]| at(slim, p).and_then(Value::as_str).map(str::to_string);
        let substitute = at(slim, &["spec", "postBuild", "substitute"]).and_then(Value::as_object).map(|vars| {
            vars.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
        });
        RawObject {
            kind,
            file,
            span: start..text.len(),
            path: field(&["spec", "path"]),
            source: field(&["spec", "sourceRef", "name"]).map(|name| (field(&["spec", "sourceRef", "kind"]), name)),
            target_namespace: field(&["spec", "targetNamespace"]),
            substitute,
            line,
        }
    }

    fn json<'t>(&self, texts: &'t Texts) -> &'t str {
        &texts[self.file][self.span.clone()]
    }

    /// The slim document. Its text was written from a `Value`, so it always reads back.
    fn value(&self, texts: &Texts) -> Value {
        serde_json::from_str(self.json(texts)).unwrap_or_else(|e| unreachable!("a Value's JSON text reads back: {e}"))
    }
}

/// What a kustomize `kustomization.yaml` says about namespaces.
struct KustomizeFile {
    namespace: Option<String>,
    /// Files and folders it includes, resolved against its folder.
    includes: Vec<PathBuf>,
    /// Patch files it reads (`patches[].path`, `patchesStrategicMerge`): partial objects that
    /// change others, never objects of their own.
    patches: Vec<PathBuf>,
}

/// Reads every Flux Kustomization and HelmRelease under `paths` (files or folders).
pub fn load(paths: &[PathBuf]) -> Manifests {
    load_with(paths, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(paths: &[PathBuf], options: LoadOptions) -> Manifests {
    let mut out = Manifests::default();
    let mut files = Vec::new();
    for path in paths {
        out.skipped += collect_files(path, true, &mut files, &mut out.errors);
    }
    files.sort();
    files.dedup();

    let mut raws = Vec::new();
    let mut texts: Vec<String> = Vec::with_capacity(files.len());
    let mut kustomizations: HashMap<PathBuf, KustomizeFile> = HashMap::new();
    // Parse errors of files that may not be manifests at all: judged once the tree is known.
    let mut unparsed: Vec<(LoadError, bool)> = Vec::new();
    out.files += files.len();
    let numbered: Vec<(usize, &PathBuf)> = files.iter().enumerate().collect();
    for read in parallel_map(&numbered, |&(i, f)| read_file(f, i)) {
        out.errors.extend(read.error);
        raws.extend(read.raws);
        texts.push(read.texts);
        kustomizations.extend(read.kustomizations);
        unparsed.extend(read.unparsed);
        out.notes.extend(read.notes);
    }
    let patches: HashSet<&PathBuf> = kustomizations.values().flat_map(|k| &k.patches).collect();
    raws.retain(|r| !patches.contains(&files[r.file]));
    let namespaces = resolve_namespaces(&kustomizations);
    let appliers: Vec<tree::Applier<'_>> = raws
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == FluxKind::Kustomization)
        .map(|(index, r)| tree::Applier {
            index,
            path: r.path.as_deref(),
            source: r.source.as_ref().map(|(kind, name)| (kind.as_deref().unwrap_or("GitRepository"), name.as_str())),
        })
        .collect();
    let mut tree = tree::build(paths, &files, raws.len(), &|i| files[raws[i].file].clone(), &appliers, &kustomizations);
    add_target_namespace_copies(&mut raws, &mut texts, &mut tree);
    let explicit: HashSet<PathBuf> = paths.iter().map(|p| normalize(p)).collect();
    let mut skipped_files = HashSet::new();
    for (error, flux) in unparsed {
        let applied = tree.applied_files.as_ref().is_none_or(|a| a.contains(&error.file));
        if flux || applied || explicit.contains(&error.file) {
            out.errors.push(error);
        } else if skipped_files.insert(error.file.clone()) {
            out.skipped += 1;
        }
    }
    out.errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let resolver = Resolver::new(&raws, &texts, &files, &namespaces, &tree.parents);

    // One instance of each object per cluster it belongs to, resolved with that cluster's parent.
    let mut clusters = tree.clusters.clone();
    if options.include_unapplied {
        join_clusters(&mut clusters, &tree.not_applied, &|i| files[raws[i].file].clone());
    }
    for (&i, reason) in &tree.not_applied {
        let raw = &raws[i];
        if let Ok((object, _)) = resolver.object(i, tree.parents[i].first().copied()) {
            out.not_applied.push(NotApplied {
                kind: raw.kind,
                object: object.key,
                file: files[raw.file].clone(),
                line: raw.line,
                reason: reason.clone(),
            });
        }
    }
    let mut instances: Vec<Instance> = Vec::new();
    let mut per_cluster: Vec<(PathBuf, Vec<Instance>)> = Vec::new();
    for (folder, members) in &clusters {
        let list: Vec<Instance> =
            members.iter().map(|&i| (i, tree.parents[i].iter().copied().find(|p| members.contains(p)))).collect();
        instances.extend(list.iter().copied());
        per_cluster.push((folder.clone(), list));
    }
    instances.sort_unstable();
    instances.dedup();

    // What each instance became: its index in `out.objects`, by position in `instances`
    // (sorted, so an instance is found by binary search).
    let mut resolved: Vec<Option<usize>> = vec![None; instances.len()];
    let position = |inst: &Instance| instances.binary_search(inst).ok();
    let mut first_error: HashSet<usize> = HashSet::new();
    let shared_files: Vec<Arc<Path>> = files.iter().map(|f| Arc::from(f.as_path())).collect();
    let objects = parallel_map(&instances, |&(i, parent)| resolver.object(i, parent));
    for (n, (&(i, _), object)) in instances.iter().zip(objects).enumerate() {
        let raw = &raws[i];
        match object {
            Ok((object, status)) => {
                resolved[n] = Some(out.objects.len());
                out.objects.push(Loaded { object, file: shared_files[raw.file].clone(), line: raw.line, status });
            }
            Err(e) => {
                if first_error.insert(i) {
                    out.errors.push(LoadError {
                        file: files[raw.file].clone(),
                        line: raw.line,
                        message: format!("{}: {e}", raw.kind),
                    });
                }
            }
        }
    }
    // Clusters conflict when one name stands for different objects in different clusters.
    let mut definitions: HashMap<(FluxKind, &ObjectKey), &FluxObject> = HashMap::with_capacity(out.objects.len());
    let mut conflict = false;
    for l in &out.objects {
        match definitions.entry((l.object.kind, &l.object.key)) {
            std::collections::hash_map::Entry::Occupied(other) => conflict |= **other.get() != l.object,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(&l.object);
            }
        }
    }
    drop(definitions);
    let object_of = |inst: &Instance| position(inst).and_then(|p| resolved[p]);
    if conflict && per_cluster.len() > 1 {
        out.clusters = per_cluster
            .iter()
            .map(|(folder, list)| Cluster {
                folder: folder.clone(),
                members: list.iter().filter_map(object_of).collect(),
            })
            .collect();
    } else {
        // One graph: each document once, as resolved in the first cluster that has it
        // (instances are sorted by document, so its first instance).
        let mut first: Vec<Option<usize>> = vec![None; raws.len()];
        for (n, &(i, _)) in instances.iter().enumerate() {
            if n == 0 || instances[n - 1].0 != i {
                first[i] = resolved[n];
            }
        }
        let mut kept_object = vec![false; out.objects.len()];
        for &o in first.iter().flatten() {
            kept_object[o] = true;
        }
        let all = std::mem::take(&mut out.objects);
        let mut renumber: Vec<Option<usize>> = vec![None; all.len()];
        for (n, l) in all.into_iter().enumerate() {
            if kept_object[n] {
                renumber[n] = Some(out.objects.len());
                out.objects.push(l);
            }
        }
        // Each document's kept object stands for it in every cluster.
        let kept: Vec<Option<usize>> = first.iter().map(|o| o.and_then(|o| renumber[o])).collect();
        out.groups = per_cluster
            .iter()
            .map(|(folder, list)| Cluster {
                folder: folder.clone(),
                members: list.iter().filter_map(|inst| kept[inst.0]).collect(),
            })
            .collect();
        return out;
    }
    out.groups = out.clusters.clone();
    out
}

/// What one file holds, read on its own (files are read in parallel).
#[derive(Default)]
struct FileRead {
    /// The file could not be read at all.
    error: Option<LoadError>,
    raws: Vec<RawObject>,
    /// The slim JSON texts of its Flux documents, one after the other.
    texts: String,
    /// Its kustomize configuration, by folder (a file may repeat it: the last one counts).
    kustomizations: Vec<(PathBuf, KustomizeFile)>,
    unparsed: Vec<(LoadError, bool)>,
    notes: Vec<LoadError>,
}

/// `f` of every item, spread over the machine's cores, in the order of `items` (the result does
/// not depend on the number of threads).
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    // Interleaved, so that a run of large items (one folder of big files) is shared out.
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    items.iter().enumerate().skip(t).step_by(threads).map(|(i, x)| (i, f(x))).collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            // A panic in a worker is a bug: let it surface as it would on one thread.
            for (i, r) in worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                slots[i] = Some(r);
            }
        }
    });
    slots.into_iter().map(|r| r.expect("every item is mapped by one thread")).collect()
}

/// How a document is parsed.
enum Parse {
    /// It names no Flux API group: only checked to be YAML.
    Check,
    /// Whole: a kustomize configuration, or a ResourceSet whose templates are expanded.
    Whole,
    /// Into the fields fluxgate reads ([`SlimObject`]).
    Slim,
}

/// Splits one file into documents and reads each: Flux objects (slim), kustomize
/// configurations, ResourceSets expanded; parse errors kept to be judged with the tree.
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
    let is_kustomize_file = file.file_name().and_then(|n| n.to_str()).is_some_and(|n| KUSTOMIZATION_FILES.contains(&n));
    // A file naming a Flux API group is meant as a manifest: it never goes unreported.
    let flux = is_kustomize_file || text.contains(".toolkit.fluxcd.io/") || text.contains("fluxcd.controlplane.io/");
    let mut failed = false;
    for doc in split_documents(&text) {
        // A document naming no Flux API group holds no Flux object: it is only checked to be
        // YAML, without building its value (CRD bundles and dashboards are most of the bytes).
        let how = if is_kustomize_file || doc.text.contains(resource_set::GROUP) {
            Parse::Whole
        } else if is_flux_text(doc.text) {
            Parse::Slim
        } else {
            Parse::Check
        };
        let parsed = match how {
            Parse::Check => parse_as::<serde::de::IgnoredAny>(doc.text).map(|_| None),
            Parse::Whole => parse_document(doc.text).map(|v| Some((v, false))),
            Parse::Slim => parse_slim(doc.text).map(|v| Some((v.0, true))),
        };
        let (value, slim) = match parsed {
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
        if is_kustomize_file && is_kustomize_config(&value) {
            let dir = file.parent().unwrap_or(Path::new("."));
            read.kustomizations.push((dir.to_path_buf(), read_kustomize_file(&value, dir)));
            continue;
        }
        let mut raw = |kind, value: Value, slim: bool| {
            let value = if slim { value } else { SlimObject::from_value(value).0 };
            read.raws.push(RawObject::new(kind, &value, index, doc.line, &mut read.texts));
        };
        for item in list_items(value) {
            if let Some(kind) = kind_of(&item) {
                raw(kind, item, slim);
            } else if resource_set::is_resource_set(&item) {
                let (generated, notes) = resource_set::expand(&item);
                for value in generated {
                    if let Some(kind) = kind_of(&value) {
                        raw(kind, value, false);
                    }
                }
                read.notes.extend(notes.into_iter().map(|message| LoadError {
                    file: file.to_path_buf(),
                    line: doc.line,
                    message,
                }));
            }
        }
    }
    read
}

/// A Kustomization whose `spec.path` holds its own manifest and that sets `targetNamespace`
/// applies a copy of itself into the target namespace: kustomize's namespace override moves
/// every object of the folder there, its own manifest included. The copy is another
/// Kustomization (same spec, `dependsOn` entries without a namespace now meaning the target
/// namespace), applied and owned by the original, which waits for it when it has
/// `spec.wait: true`.
fn add_target_namespace_copies(raws: &mut Vec<RawObject>, texts: &mut [String], tree: &mut tree::Tree) {
    for &k in &tree.self_applied {
        let mut copy = raws[k].value(texts);
        let own = at(&copy, &["metadata", "namespace"]).and_then(Value::as_str).unwrap_or_default();
        let Some(target) = raws[k].target_namespace.clone().filter(|t| !t.is_empty() && *t != own && !t.contains("${"))
        else {
            continue;
        };
        copy["metadata"]["namespace"] = Value::String(target);
        let index = raws.len();
        let (file, line) = (raws[k].file, raws[k].line);
        raws.push(RawObject::new(FluxKind::Kustomization, &copy, file, line, &mut texts[file]));
        tree.parents.push(vec![k]);
        for members in tree.clusters.values_mut() {
            if members.contains(&k) {
                members.insert(index);
            }
        }
        if let Some(reason) = tree.not_applied.get(&k).cloned() {
            tree.not_applied.insert(index, reason);
        }
    }
}

/// Puts each not-applied object into the clusters it would join: those holding an object
/// written closest to it (the most leading folders in common), all of them on a tie.
fn join_clusters(
    clusters: &mut BTreeMap<PathBuf, BTreeSet<usize>>,
    not_applied: &BTreeMap<usize, String>,
    file_of: &dyn Fn(usize) -> PathBuf,
) {
    let common = |a: &Path, b: &Path| a.components().zip(b.components()).take_while(|(x, y)| x == y).count();
    let mut joins: Vec<(PathBuf, usize)> = Vec::new();
    for &i in not_applied.keys() {
        let file = file_of(i);
        let scores: Vec<(&PathBuf, usize)> = clusters
            .iter()
            .map(|(folder, members)| (folder, members.iter().map(|&m| common(&file, &file_of(m))).max().unwrap_or(0)))
            .collect();
        let best = scores.iter().map(|(_, s)| *s).max().unwrap_or(0);
        joins.extend(scores.into_iter().filter(|(_, s)| *s == best).map(|(f, _)| (f.clone(), i)));
    }
    if clusters.is_empty() {
        clusters.entry(PathBuf::new()).or_default().extend(not_applied.keys().copied());
    }
    for (folder, i) in joins {
        clusters.get_mut(&folder).expect("joins name existing clusters").insert(i);
    }
}

/// Resolves raw documents into objects: post-build substitution and namespace from the parent
/// Kustomization that applies them, owner from that parent.
struct Resolver<'a> {
    raws: &'a [RawObject],
    texts: &'a Texts,
    files: &'a [PathBuf],
    namespaces: &'a HashMap<PathBuf, String>,
    /// The key of every Kustomization that applies something, as its own parent resolves it.
    keys: HashMap<usize, Option<ObjectKey>>,
}

impl<'a> Resolver<'a> {
    fn new(
        raws: &'a [RawObject],
        texts: &'a Texts,
        files: &'a [PathBuf],
        namespaces: &'a HashMap<PathBuf, String>,
        parents: &[Vec<usize>],
    ) -> Resolver<'a> {
        let mut resolver = Resolver { raws, texts, files, namespaces, keys: HashMap::new() };
        let appliers: BTreeSet<usize> = parents.iter().flatten().copied().collect();
        resolver.keys = appliers.into_iter().map(|p| (p, resolver.key(p, parents[p].first().copied()))).collect();
        resolver
    }

    /// The document of `i` (`value`, as written) after its parent's substitution, and its
    /// namespace.
    fn substituted(&self, i: usize, mut value: Value, parent: Option<usize>) -> (Value, String) {
        let raw = &self.raws[i];
        let parent_raw = parent.map(|p| &self.raws[p]);
        if let Some(vars) = parent_raw.and_then(|p| p.substitute.as_ref()) {
            let text = raw.json(self.texts);
            let replaced = tree::substitute(text, vars);
            if replaced != text
                && let Ok(v) = serde_json::from_str(&replaced)
            {
                value = v;
            }
        }
        let namespace = at(&value, &["metadata", "namespace"])
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .map(str::to_string)
            .or_else(|| namespace_of_file(self.namespaces, &self.files[raw.file]))
            .or_else(|| {
                parent_raw.and_then(|p| p.target_namespace.clone()).filter(|ns| !ns.is_empty() && !ns.contains("${"))
            })
            .unwrap_or_else(|| FALLBACK_NAMESPACE.to_string());
        (value, namespace)
    }

    /// The key of Kustomization `i` as `parent` (its own first parent) resolves it.
    fn key(&self, i: usize, parent: Option<usize>) -> Option<ObjectKey> {
        let (value, namespace) = self.substituted(i, self.raws[i].value(self.texts), parent);
        let name = at(&value, &["metadata", "name"]).and_then(Value::as_str).unwrap_or_default();
        (!name.is_empty()).then(|| ObjectKey::new(namespace, name))
    }

    /// Object `i` as `parent` applies it, and the status written in its document.
    fn object(&self, i: usize, parent: Option<usize>) -> Result<(FluxObject, ObjectStatus), String> {
        let written = self.raws[i].value(self.texts);
        let status = ObjectStatus::from_value(&written);
        let (value, namespace) = self.substituted(i, written, parent);
        let mut object =
            FluxObject::from_value(self.raws[i].kind, &value, &namespace, "").map_err(|e| e.to_string())?;
        if object.owner.is_none()
            && let Some(p) = parent
        {
            object.owner = self.keys.get(&p).cloned().flatten();
        }
        Ok((object, status))
    }
}

/// The kustomize namespace of `file`: its own entry, else that of the nearest folder a
/// kustomization includes as a whole.
fn namespace_of_file(namespaces: &HashMap<PathBuf, String>, file: &Path) -> Option<String> {
    file.ancestors().find_map(|p| namespaces.get(p)).cloned()
}

/// Parses one YAML document as Kubernetes tooling does. YAML 1.2 lets an anchor name contain
/// `:`, so `*app: value` reads as the alias `app:`; go-yaml (used by kubectl and Flux) ends the
/// name at the colon. A document that fails for that reason is read again with the colon set
/// apart, so files Flux accepts load here too.
pub fn parse_document(text: &str) -> Result<Value, serde_saphyr::Error> {
    parse_as(text)
}

/// [`parse_document`] into any type (`IgnoredAny` to check the syntax only).
fn parse_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(v) => Ok(v),
        Err(e) => match go_yaml_alias_keys(text) {
            Some(fixed) => serde_saphyr::from_str_with_options(&fixed, yaml_options()).map_err(|_| e),
            None => Err(e),
        },
    }
}

/// Parses a Flux document slim. A document written as JSON (as generators and
/// `kubectl get -o json` write them) is read by the JSON parser, many times faster than the YAML
/// one; anything else, or JSON it refuses, is read as YAML. JSON is YAML, and reads the same
/// through either but for duplicate keys: the YAML reader refuses them, the JSON reader keeps the
/// last.
fn parse_slim(text: &str) -> Result<SlimObject, serde_saphyr::Error> {
    if text.trim_start().starts_with('{')
        && let Ok(slim) = serde_json::from_str(text)
    {
        return Ok(slim);
    }
    parse_as(text)
}

/// Whether `text` names a Flux API group: every Flux object and ResourceSet does.
fn is_flux_text(text: &str) -> bool {
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

fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        || path.file_name().and_then(|n| n.to_str()) == Some("Kustomization")
}

/// Helmfile's own files: Go templates that helmfile renders, never applied by Flux.
fn is_helmfile(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.starts_with("helmfile")
        || path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).is_some_and(|d| d.starts_with("helmfile"))
}

/// Collects the YAML files under `path`; returns how many it skipped as not manifests (the
/// files of Helm chart folders, helmfiles). A file named on the command line is never skipped.
fn collect_files(path: &Path, explicit: bool, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) -> usize {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(LoadError { file: path.to_path_buf(), line: 0, message: format!("cannot be read: {e}") });
            return 0;
        }
    };
    if meta.is_file() {
        if explicit {
            // A file named on the command line is read whatever its extension or name.
            files.push(normalize(path));
        } else if is_yaml(path) {
            if is_helmfile(path) {
                return 1;
            }
            files.push(normalize(path));
        }
        return 0;
    }
    // A Helm chart folder: its templates are rendered by Helm from a HelmRelease, not applied.
    if !explicit && path.join("Chart.yaml").is_file() {
        let mut chart = Vec::new();
        collect_files_below(path, &mut chart);
        return chart.len();
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            errors.push(LoadError { file: path.to_path_buf(), line: 0, message: format!("cannot be listed: {e}") });
            return 0;
        }
    };
    let mut skipped = 0;
    for entry in entries.flatten() {
        let p = entry.path();
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if !hidden {
            skipped += collect_files(&p, false, files, errors);
        }
    }
    skipped
}

/// Every YAML file below `dir`, for counting what a skipped folder holds.
fn collect_files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files_below(&p, out);
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
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
fn list_items(value: Value) -> Vec<Value> {
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

fn is_kustomize_config(value: &Value) -> bool {
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(v) => v.starts_with("kustomize.config.k8s.io/"),
        // kustomize accepts a kustomization without apiVersion and kind.
        None => value.is_object(),
    }
}

fn read_kustomize_file(value: &Value, dir: &Path) -> KustomizeFile {
    let namespace = value.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let mut includes = Vec::new();
    for field in ["resources", "bases", "components"] {
        for entry in value.get(field).and_then(Value::as_array).into_iter().flatten() {
            let Some(s) = entry.as_str() else { continue };
            if s.contains("://") || s.starts_with("github.com/") {
                continue;
            }
            includes.push(normalize(&dir.join(s)));
        }
    }
    let mut patches = Vec::new();
    let patch_paths =
        value.get("patches").and_then(Value::as_array).into_iter().flatten().filter_map(|p| p.get("path"));
    let strategic = value.get("patchesStrategicMerge").and_then(Value::as_array).into_iter().flatten();
    for entry in patch_paths.chain(strategic) {
        // An inline patch (a YAML string with newlines) names no file.
        if let Some(s) = entry.as_str().filter(|s| !s.contains('\n')) {
            patches.push(normalize(&dir.join(s)));
        }
    }
    KustomizeFile { namespace, includes, patches }
}

/// `a/b/../c` as `a/c`, without touching the file system (links are not followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The kustomize namespace of each file or plain folder included by some kustomization.
fn resolve_namespaces(kustomizations: &HashMap<PathBuf, KustomizeFile>) -> HashMap<PathBuf, String> {
    let dirs: BTreeMap<PathBuf, &KustomizeFile> = kustomizations.iter().map(|(d, k)| (normalize(d), k)).collect();
    let included: HashSet<PathBuf> = dirs.values().flat_map(|k| k.includes.iter().cloned()).collect();
    let mut result: HashMap<PathBuf, String> = HashMap::new();
    let mut visited: HashSet<(PathBuf, Option<String>)> = HashSet::new();
    for (dir, _) in dirs.iter().filter(|(d, _)| !included.contains(*d)) {
        walk(dir, None, &dirs, &mut result, &mut visited);
    }
    // Kustomizations inside a cycle of includes, or only included by one another: read each
    // with its own namespace so no file is left out.
    for dir in dirs.keys() {
        walk(dir, None, &dirs, &mut result, &mut visited);
    }
    result
}

fn walk(
    dir: &Path,
    inherited: Option<&str>,
    dirs: &BTreeMap<PathBuf, &KustomizeFile>,
    result: &mut HashMap<PathBuf, String>,
    visited: &mut HashSet<(PathBuf, Option<String>)>,
) {
    let Some(k) = dirs.get(dir) else { return };
    let ns = inherited.map(str::to_string).or_else(|| k.namespace.clone());
    if !visited.insert((dir.to_path_buf(), ns.clone())) {
        return;
    }
    for include in &k.includes {
        if dirs.contains_key(include) {
            walk(include, ns.as_deref(), dirs, result, visited);
        } else if let Some(ns) = &ns {
            // The first namespace found for a file is kept: roots are walked before the
            // kustomizations they include.
            result.entry(include.clone()).or_insert_with(|| ns.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_line_numbers() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n---\n\nb: 2\n--- {c: 3}\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].line, docs[0].text.trim()), (3, "a: 1"));
        assert_eq!((docs[1].line, docs[1].text.trim()), (8, "b: 2"));
        assert_eq!((docs[2].line, docs[2].text.trim()), (9, "{c: 3}"));
    }

    #[test]
    fn alias_keys_read_as_go_yaml_reads_them() {
        let text = "name: &app web\nvalues:\n  *app:\n    replicas: 1\n  list:\n    - *app: 2\n";
        let v = parse_document(text).unwrap();
        assert_eq!(v["values"]["web"]["replicas"], 1);
        assert_eq!(v["values"]["list"][0]["web"], 2);
        assert!(go_yaml_alias_keys("a: *b\n").is_none(), "an alias used as a value is left alone");
    }

    #[test]
    fn lists_give_their_items() {
        let v: Value = serde_json::json!({"kind": "List", "items": [{"a": 1}, {"b": 2}]});
        assert_eq!(list_items(v).len(), 2);
    }

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(normalize(Path::new("a/./b/../c.yaml")), PathBuf::from("a/c.yaml"));
    }
}

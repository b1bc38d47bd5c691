//! Flux objects read from YAML files and folders: the `serve --manifests` source and the input
//! of `fluxgate check` and `fluxgate graph`.
//!
//! The loader applies a repository the way Flux does, in named steps, each in its own module:
//! 1. [`files`]: the YAML files under the paths (Helm chart folders and helmfiles left out);
//! 2. [`documents`]: each file split into documents, each parsed on its own (one broken document
//!    is reported with file and line; the rest still load);
//! 3. and 4. [`kustomize`]: what kustomize builds from a folder, with the namespaces, names and
//!    patches it gives, and what kustomize-controller adds (`targetNamespace`, `spec.patches`,
//!    post-build substitution);
//! 5. [`clusters`]: each cluster from its entry point ([`entry`]) down through every
//!    Kustomization it applies; what no cluster reaches is not applied;
//! 6. [`objects`]: the objects of each cluster, with their owners and statuses.
//!
//! Only what Flux would apply is checked: a file that does not parse is an error only when a
//! cluster applies it (or it was named on the command line); elsewhere it is skipped and counted.

mod clusters;
mod documents;
mod entry;
mod files;
mod kustomize;
mod objects;
mod resource_set;
mod root;
mod scope;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::object::{FluxKind, FluxObject, ObjectKey, kind_of};
use crate::status::ObjectStatus;

pub use documents::{Document, MANIFEST, MAX_ALIAS_EVENTS, parse_document, split_documents};
pub use files::normalize;

/// Namespace of a namespaced object that nothing gives one, as for any Kubernetes object.
pub const FALLBACK_NAMESPACE: &str = "default";

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
    /// The flux-operator ResourceSets the clusters apply, with their own `dependsOn` and the
    /// objects they render.
    pub resource_sets: Vec<LoadedSet>,
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
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Check objects that no cluster applies too, against the cluster they would join.
    pub include_unapplied: bool,
    /// Only this cluster: the folder its entry point syncs (or a trailing part of it, such as
    /// `production`), or the file or folder of its entry point.
    pub cluster: Option<String>,
}

/// A flux-operator ResourceSet as its cluster applies it.
#[derive(Debug, Clone)]
pub struct LoadedSet {
    pub key: ObjectKey,
    pub file: PathBuf,
    pub line: usize,
    /// Its cluster: an index into [`Manifests::groups`].
    pub group: usize,
    /// Its own `spec.dependsOn`: objects of any kind. An entry without a namespace is read in
    /// the ResourceSet's own namespace.
    pub depends_on: Vec<SetDependency>,
    /// The Flux objects it renders.
    pub renders: Vec<(FluxKind, ObjectKey)>,
}

/// One entry of a ResourceSet's `spec.dependsOn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDependency {
    pub api_version: String,
    pub kind: String,
    pub key: ObjectKey,
}

/// One cluster of a repository holding several: its roots' folder and its objects.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub folder: PathBuf,
    /// Indices into [`Manifests::objects`].
    pub members: Vec<usize>,
}

/// Reads every Flux Kustomization and HelmRelease under `paths` (files or folders).
pub fn load(paths: &[PathBuf]) -> Manifests {
    load_with(paths, LoadOptions::default())
}

/// [`load`] with options: the pipeline of steps the module describes.
pub fn load_with(paths: &[PathBuf], options: LoadOptions) -> Manifests {
    let explicit: Vec<PathBuf> = paths.iter().map(|p| files::normalize(p)).collect();
    let (mut documents, mut errors, mut skipped) = read_files(&explicit);
    let mut placed = clusters::place(&documents, &explicit);
    // A folder without an entry point of its own (or whose entry point syncs a path outside it),
    // inside a Git checkout, is checked as part of
    // its repository: the entry point of its cluster and the paths that cluster applies lie
    // elsewhere in the checkout. Only when some cluster of the checkout reaches into it.
    let entered = !documents.entries.is_empty() && placed.clusters.iter().any(|c| c.entry.is_some());
    if !entered && let Some(root) = scope::repository(&explicit) {
        let (wide, wide_errors, wide_skipped) = read_files(std::slice::from_ref(&root));
        let mut wide_placed = clusters::place(&wide, std::slice::from_ref(&root));
        if scope::reaches(&wide_placed, &wide, &explicit) {
            scope::keep_reaching(&mut wide_placed, &wide, &explicit);
            (documents, errors, skipped, placed) = (wide, wide_errors, wide_skipped, wide_placed);
        }
    }
    if let Err(e) = scope::narrow(&mut placed, options.cluster.as_deref()) {
        errors.push(e);
    }
    let mut out = objects::resolve(&documents, placed, &explicit, &options);
    out.errors.extend(errors);
    out.errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out.skipped += skipped;
    out
}

/// Steps 1 and 2: the files under `paths` and their documents, with the files that could not
/// be listed and how many were skipped as not manifests.
fn read_files(paths: &[PathBuf]) -> (documents::Documents, Vec<LoadError>, usize) {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut skipped = 0;
    for path in paths {
        skipped += files::collect_files(path, true, &mut files, &mut errors);
    }
    files.sort();
    files.dedup();
    (documents::read(files), errors, skipped)
}

/// A repository read once, to build many of its Flux Kustomizations ([`Repository::build`]).
pub struct Repository {
    root: PathBuf,
    documents: documents::Documents,
    folders: kustomize::Folders,
}

impl Repository {
    /// Reads every YAML file under the repository folder `root`.
    pub fn read(root: &Path) -> Result<Repository, String> {
        let (documents, errors, _) = read_files(&[root.to_path_buf()]);
        if let Some(e) = errors.first() {
            return Err(e.to_string());
        }
        let folders = kustomize::Folders::new(&documents.files);
        Ok(Repository { root: files::normalize(root), documents, folders })
    }

    /// The Flux objects (Kustomizations and HelmReleases) that kustomize-controller applies for
    /// the Flux Kustomization `kustomization` (a document as written), whose `spec.path` is
    /// relative to the repository: kustomize's build of the path, kustomize-controller's own
    /// steps, post-build substitution. What the differential test holds against `kubectl
    /// kustomize`.
    pub fn build(&self, kustomization: &Value) -> Result<Vec<Value>, String> {
        let path = crate::object::at(kustomization, &["spec", "path"])
            .and_then(Value::as_str)
            .ok_or("the Kustomization has no spec.path")?;
        let dir = files::join(&self.root, path);
        if !self.folders.knows(&dir) && !self.documents.kustomizations.contains_key(&dir) {
            return Err(format!("{} holds no YAML file", dir.display()));
        }
        let builder = kustomize::Builder::new(&self.documents, &self.folders);
        let (items, _) = builder.flux(kustomization, &dir);
        Ok(items.into_iter().map(|i| i.value).filter(|v| kind_of(v).is_some()).collect())
    }
}

/// [`Repository::build`] of one Kustomization of the repository folder `root`.
pub fn build_kustomization(root: &Path, kustomization: &Value) -> Result<Vec<Value>, String> {
    Repository::read(root)?.build(kustomization)
}

/// `f` of every item, spread over the machine's cores, in the order of `items` (the result does
/// not depend on the number of threads).
pub(super) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
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

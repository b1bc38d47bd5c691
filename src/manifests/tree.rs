//! What each Flux Kustomization of a checkout applies, read from its `spec.path`.
//!
//! `spec.path` is relative to the root of the source (the Git repository), which the files do
//! not name: the root is taken to be the folder (among the given paths and their parents)
//! against which the most `spec.path`s resolve to a folder that was read. A path is expanded as
//! kustomize-controller expands it: through the folder's `kustomization.yaml` (following
//! `resources:`, `bases:` and `components:`), or, without one, every manifest below the folder,
//! a subfolder with its own `kustomization.yaml` being built through it.
//!
//! The relation gives each object its parent Kustomization (whose `targetNamespace` and
//! `postBuild.substitute` apply to it, and whose `spec.wait` waits for it), and groups objects
//! into clusters: the objects reached from the roots (objects no Kustomization applies) of one
//! folder. A repository holding several clusters that reuse names is checked cluster by cluster.
//!
//! Not every object nothing applies is a root: real repositories disable an app by leaving its
//! file out of the folder's `kustomization.yaml`, and keep retired ones in an `archive/` folder.
//! Checked as little clusters of their own, such objects would report every dependency as
//! missing; they are set apart as not applied, with the reason, and so is whatever only they
//! apply.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use super::{KUSTOMIZATION_FILES, KustomizeFile, normalize};

/// A Flux Kustomization as the tree needs it.
pub(super) struct Applier<'a> {
    /// Index of the object among all loaded objects.
    pub index: usize,
    pub path: Option<&'a str>,
    /// `spec.sourceRef` kind and name: only the checkout's own source applies its files.
    /// `None` when the file has no sourceRef (a parent patches one in): it counts as the
    /// checkout's source.
    pub source: Option<(&'a str, &'a str)>,
}

/// The relation: for each loaded object, the Kustomizations (object indices) that apply it.
pub(super) struct Tree {
    pub parents: Vec<Vec<usize>>,
    /// Object indices per cluster, clusters named by their roots' folder.
    pub clusters: BTreeMap<PathBuf, BTreeSet<usize>>,
    /// Objects that no cluster applies, with the reason.
    pub not_applied: BTreeMap<usize, String>,
    /// Kustomizations whose `spec.path` applies their own manifest (the bootstrap
    /// `flux-system`, or an app folder holding its own Kustomization).
    pub self_applied: Vec<usize>,
    /// Every file some Kustomization's `spec.path` applies; `None` when no `spec.path` of the
    /// checkout resolves (then every file read counts as applied).
    pub applied_files: Option<HashSet<PathBuf>>,
}

/// Folders Flux users keep retired manifests in: never applied, whatever they hold.
fn is_archive(file: &Path) -> bool {
    file.parent().into_iter().flat_map(Path::components).any(|c| {
        let name = c.as_os_str().to_string_lossy().to_ascii_lowercase();
        let name = name.trim_start_matches(['.', '_']);
        name == "archive" || name == "archived"
    })
}

/// Files and subfolders of each folder that was read.
struct Folders<'a> {
    files: HashMap<&'a Path, Vec<&'a Path>>,
    children: HashMap<&'a Path, BTreeSet<&'a Path>>,
}

impl<'a> Folders<'a> {
    fn new(files: &'a [PathBuf]) -> Folders<'a> {
        let mut f = Folders { files: HashMap::new(), children: HashMap::new() };
        for file in files {
            let Some(mut dir) = file.parent() else { continue };
            f.files.entry(dir).or_default().push(file);
            while let Some(up) = dir.parent() {
                if !f.children.entry(up).or_default().insert(dir) {
                    break;
                }
                dir = up;
            }
        }
        f
    }

    fn knows(&self, dir: &Path) -> bool {
        self.files.contains_key(dir) || self.children.contains_key(dir)
    }
}

/// The files a build of `dir` reads.
fn build_files<'a>(
    dir: &Path,
    folders: &Folders<'a>,
    kustomizations: &HashMap<PathBuf, KustomizeFile>,
    out: &mut HashSet<&'a Path>,
    seen: &mut HashSet<PathBuf>,
) {
    if !seen.insert(dir.to_path_buf()) {
        return;
    }
    if let Some(k) = kustomizations.get(dir) {
        for include in &k.includes {
            if kustomizations.contains_key(include) || folders.knows(include) {
                build_files(include, folders, kustomizations, out, seen);
            } else if let Some(files) = include.parent().and_then(|p| folders.files.get(p)) {
                out.extend(files.iter().copied().filter(|f| *f == include.as_path()));
            }
        }
        return;
    }
    out.extend(folders.files.get(dir).into_iter().flatten().copied());
    for child in folders.children.get(dir).into_iter().flatten() {
        build_files(child, folders, kustomizations, out, seen);
    }
}

/// The checkout's source and its root: the pair against which the most `spec.path`s resolve
/// to folders that were read. Kustomizations of other sources (another Git repository, an OCI
/// artifact) do not apply files of this checkout.
fn source_root<'s>(
    inputs: &[PathBuf],
    appliers: &[Applier<'s>],
    folders: &Folders<'_>,
) -> Option<(PathBuf, (&'s str, &'s str))> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let input = normalize(input);
        let start = if folders.knows(&input) {
            input.clone()
        } else {
            input.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        for up in start.ancestors().take(12) {
            if !candidates.contains(&up.to_path_buf()) {
                candidates.push(up.to_path_buf());
            }
        }
    }
    let sources: BTreeSet<(&str, &str)> = appliers.iter().filter_map(|a| a.source).collect();
    let mut best: Option<(usize, PathBuf, (&str, &str))> = None;
    for source in sources {
        for root in &candidates {
            // Every folder above a file that was read is known, so a path whose first folder is
            // not a known child of the root cannot resolve: a cheap test that spares building
            // the path for each of a hundred thousand Kustomizations and each candidate root.
            let children: HashSet<&OsStr> =
                folders.children.get(root.as_path()).into_iter().flatten().filter_map(|d| d.file_name()).collect();
            let may_resolve = |p: &str| match first_folder(p) {
                Some(first) => children.contains(first),
                None => true,
            };
            let score = appliers
                .iter()
                .filter(|a| a.source.is_none_or(|s| s == source))
                .filter_map(|a| a.path)
                .filter(|p| !p.contains("${") && may_resolve(p))
                .filter(|p| folders.knows(&normalize(&root.join(p))))
                .count();
            let deeper = |r: &PathBuf| root.components().count() > r.components().count();
            if score > 0 && best.as_ref().is_none_or(|(s, r, _)| score > *s || (score == *s && deeper(r))) {
                best = Some((score, root.clone(), source));
            }
        }
    }
    best.map(|(_, r, s)| (r, s))
}

/// The first folder of a relative path that only goes down (`./apps/web` gives `apps`);
/// `None` when the path is absolute, goes up (`..`) or names nothing.
fn first_folder(path: &str) -> Option<&OsStr> {
    let mut components = Path::new(path).components().filter(|c| *c != Component::CurDir);
    let first = components.next();
    let down = Path::new(path).components().all(|c| matches!(c, Component::CurDir | Component::Normal(_)));
    match first {
        Some(Component::Normal(name)) if down => Some(name),
        _ => None,
    }
}

/// Builds the relation for `count` objects, of which `appliers` are Flux Kustomizations;
/// `file_of` gives each object's file.
pub(super) fn build(
    inputs: &[PathBuf],
    files: &[PathBuf],
    count: usize,
    file_of: &dyn Fn(usize) -> PathBuf,
    appliers: &[Applier<'_>],
    kustomizations: &HashMap<PathBuf, KustomizeFile>,
) -> Tree {
    let folders = Folders::new(files);
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut applied_files = None;
    let mut self_applied = Vec::new();
    // Folders some Kustomization builds, with the files of those Kustomizations: a
    // kustomization.yaml there decides what is applied.
    let mut applied_dirs: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    if let Some((root, source)) = source_root(inputs, appliers, &folders) {
        let all_applied = applied_files.insert(HashSet::new());
        let mut by_file: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for i in 0..count {
            by_file.entry(file_of(i)).or_default().push(i);
        }
        for a in appliers.iter().filter(|a| a.source.is_none_or(|s| s == source)) {
            let Some(path) = a.path.filter(|p| !p.contains("${")) else { continue };
            let dir = normalize(&root.join(path));
            if !folders.knows(&dir) && !kustomizations.contains_key(&dir) {
                continue;
            }
            let mut applied = HashSet::new();
            let mut seen = HashSet::new();
            build_files(&dir, &folders, kustomizations, &mut applied, &mut seen);
            for d in seen {
                applied_dirs.entry(d).or_default().push(file_of(a.index));
            }
            all_applied.extend(applied.iter().map(|f| f.to_path_buf()));
            for file in applied {
                for &o in by_file.get(file).into_iter().flatten() {
                    // The bootstrap Kustomization applies the folder holding itself: no parent of
                    // its own.
                    if o != a.index {
                        parents[o].push(a.index);
                    } else {
                        self_applied.push(o);
                    }
                }
            }
        }
    }

    // Clusters: roots grouped by folder, then everything they apply, transitively.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (o, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(o);
        }
    }
    // An object nothing applies is a cluster's root, unless Flux would never apply it: a
    // `kustomization.yaml` above it leaves it out (a disabled app), or it is archived.
    let mut not_applied: BTreeMap<usize, String> = BTreeMap::new();
    let mut builds: HashMap<PathBuf, HashSet<&Path>> = HashMap::new();
    for o in (0..count).filter(|&o| parents[o].is_empty()) {
        let file = file_of(o);
        if is_archive(&file) {
            not_applied.insert(o, "in an archive folder".into());
            continue;
        }
        // The nearest kustomization.yaml above the file that some Kustomization builds. The
        // reason names one that a Kustomization written outside its folder builds, when there
        // is one: a Kustomization applying its own folder through a kustomization.yaml that
        // leaves it out is disabled one level up.
        let applied: Vec<&Path> = file
            .ancestors()
            .skip(1)
            .filter(|d| kustomizations.contains_key(*d) && applied_dirs.contains_key(*d))
            .collect();
        let Some(&dir) = applied.first() else { continue };
        let named = applied.iter().copied().find(|d| applied_dirs[*d].iter().any(|f| !f.starts_with(d))).unwrap_or(dir);
        let build = builds.entry(dir.to_path_buf()).or_insert_with(|| {
            let mut out = HashSet::new();
            build_files(dir, &folders, kustomizations, &mut out, &mut HashSet::new());
            out
        });
        // A kustomization.yaml that applies nothing (`resources: []`) disables nothing.
        if !build.is_empty() && !build.contains(file.as_path()) {
            let k = KUSTOMIZATION_FILES
                .iter()
                .map(|n| named.join(n))
                .find(|p| folders.files.get(named).is_some_and(|fs| fs.contains(&p.as_path())))
                .unwrap_or_else(|| named.join("kustomization.yaml"));
            not_applied.insert(o, format!("left out of {}", k.display()));
        }
    }

    let mut clusters: BTreeMap<PathBuf, BTreeSet<usize>> = BTreeMap::new();
    let mut reached = vec![false; count];
    // What only a not-applied Kustomization applies is not applied either.
    let mut stack: Vec<usize> = not_applied.keys().copied().collect();
    while let Some(o) = stack.pop() {
        if !reached[o] {
            reached[o] = true;
            for &c in &children[o] {
                if !reached[c] && parents[c].iter().all(|p| not_applied.contains_key(p) || reached[*p]) {
                    let why = format!("applied only by a Kustomization that is not applied ({})", file_of(o).display());
                    not_applied.entry(c).or_insert(why);
                    stack.push(c);
                }
            }
        }
    }
    let mut roots: Vec<usize> = (0..count).filter(|&o| parents[o].is_empty() && !reached[o]).collect();
    loop {
        for &r in &roots {
            let folder = file_of(r).parent().map(Path::to_path_buf).unwrap_or_default();
            let members = clusters.entry(folder).or_default();
            let mut stack = vec![r];
            while let Some(o) = stack.pop() {
                if members.insert(o) {
                    reached[o] = true;
                    stack.extend(children[o].iter().copied());
                }
            }
        }
        // Objects only reachable through a loop of Kustomizations applying one another.
        match (0..count).find(|&o| !reached[o]) {
            Some(o) => roots = vec![o],
            None => break,
        }
    }
    // Objects reached from the roots after all (applied by a root too) are applied.
    not_applied.retain(|o, _| !clusters.values().any(|m| m.contains(o)));
    Tree { parents, clusters, not_applied, self_applied, applied_files }
}

/// Replaces `${VAR}`, `${VAR:=default}`, `${VAR:-default}` and `${VAR=default}` the way Flux's
/// post-build substitution does. A variable with no value and no default is left as written.
pub(super) fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    if !text.contains("${") {
        return text.to_string();
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.find([':', '=']) {
            Some(i) => {
                let d = inner[i..].trim_start_matches([':', '=', '-']);
                (&inner[..i], Some(d))
            }
            None => (inner, None),
        };
        match vars.get(name).map(String::as_str).or(default) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_folders_of_paths_that_only_go_down() {
        assert_eq!(first_folder("./apps/web"), Some(OsStr::new("apps")));
        assert_eq!(first_folder("apps"), Some(OsStr::new("apps")));
        assert_eq!(first_folder("./a/../b"), None);
        assert_eq!(first_folder("/abs/path"), None);
        assert_eq!(first_folder("./"), None);
    }

    #[test]
    fn substitution_follows_flux() {
        let vars = HashMap::from([("CLUSTER".to_string(), "prod".to_string())]);
        assert_eq!(substitute("0-${CLUSTER}-config", &vars), "0-prod-config");
        assert_eq!(substitute("${MISSING:=dflt}-x", &vars), "dflt-x");
        assert_eq!(substitute("${MISSING:-d}", &vars), "d");
        assert_eq!(substitute("${MISSING}", &vars), "${MISSING}");
        assert_eq!(substitute("plain", &vars), "plain");
        assert_eq!(substitute("${unterminated", &vars), "${unterminated");
    }
}

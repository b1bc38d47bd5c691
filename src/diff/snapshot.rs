//! One side of a diff: what `graph` and `check` see in a checkout, per cluster and kind, with
//! every file named relative to the checkout's root so that the two sides can be compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::{Located, build_graphs, check_loaded};
use crate::graph::{GraphView, view};
use crate::manifests::{self, LoadError, LoadOptions, Loaded};
use crate::object::{FluxKind, ObjectKey};
use crate::policy::Policy;
use crate::rules::FindingKind;

/// The name of the one cluster of a checkout without entry points (plain folders of objects).
pub const WHOLE_CHECKOUT: &str = ".";

/// A checkout as fluxgate sees it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Each cluster's graph of each kind that has objects, by cluster (the folder its entry
    /// point syncs, relative to the root) and kind.
    pub graphs: BTreeMap<(String, FluxKind), ClusterGraph>,
    /// `check`'s findings, files relative to the root.
    pub findings: Vec<SideFinding>,
    /// Files Flux would apply that could not be read, relative to the root.
    pub errors: Vec<LoadError>,
    /// Objects read, as `check` counts them.
    pub objects: usize,
}

/// One cluster's graph of one kind.
#[derive(Debug, Clone)]
pub struct ClusterGraph {
    pub view: GraphView,
    /// Where each object (`ns/name`) is written: file relative to the root, 1-based line.
    pub places: HashMap<String, (PathBuf, usize)>,
}

/// A finding with the clusters whose graphs hold its object.
#[derive(Debug, Clone)]
pub struct SideFinding {
    pub located: Located,
    pub clusters: Vec<String>,
}

/// `path` relative to `root` when it lies strictly under it. The loader names files with `.` and `..`
/// resolved in the text of the path, so the root is compared both ways.
pub(crate) fn relative(path: &Path, root: &Path) -> PathBuf {
    let lexical = manifests::normalize(root);
    for prefix in [root, lexical.as_path()] {
        if prefix.as_os_str().is_empty() {
            continue;
        }
        // A side given as one file is named by its file name, not by nothing.
        if let Ok(rel) = path.strip_prefix(prefix)
            && !rel.as_os_str().is_empty()
        {
            return rel.to_path_buf();
        }
    }
    path.to_path_buf()
}

/// Loads the checkout at `root` as `check` does and computes each cluster's graph view.
pub fn snapshot(root: &Path, policy: &Policy, options: LoadOptions) -> Snapshot {
    let paths = vec![root.to_path_buf()];
    let loaded = manifests::load_with(&paths, options);
    let checked = check_loaded(&loaded, &paths, policy);
    let rel = |p: &Path| relative(p, root);

    let cluster_name = |folder: &Path| {
        let r = rel(folder);
        if r.as_os_str().is_empty() { WHOLE_CHECKOUT.to_string() } else { r.display().to_string() }
    };
    let groups: Vec<(String, Vec<&Loaded>)> = if loaded.groups.is_empty() {
        vec![(WHOLE_CHECKOUT.to_string(), loaded.objects.iter().collect())]
    } else {
        loaded
            .groups
            .iter()
            .map(|c| (cluster_name(&c.folder), c.members.iter().map(|&i| &loaded.objects[i]).collect()))
            .collect()
    };
    let mut graphs = BTreeMap::new();
    let mut names_taken: HashMap<String, usize> = HashMap::new();
    let mut group_names = Vec::with_capacity(groups.len());
    for (name, members) in groups {
        // Two entry points in one folder would otherwise share a name and overwrite each other.
        let seen = names_taken.entry(name.clone()).or_insert(0);
        *seen += 1;
        let name = if *seen == 1 { name } else { format!("{name} #{seen}") };
        group_names.push(name.clone());
        let (built, places) = build_graphs(members.iter().copied());
        for kind in FluxKind::ALL {
            let budgets: HashMap<ObjectKey, Duration> = members
                .iter()
                .filter(|l| l.object.kind == kind)
                .filter_map(|l| Some((l.object.key.clone(), l.status.timeout?)))
                .collect();
            let v = view(built.get(kind), &budgets);
            if v.nodes.iter().all(|n| n.missing) {
                continue;
            }
            let places = places
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, key), (file, line))| (key.to_string(), (rel(file), *line)))
                .collect();
            graphs.insert((name.clone(), kind), ClusterGraph { view: v, places });
        }
    }

    let members: HashMap<(FluxKind, &str), HashSet<&str>> = graphs
        .iter()
        .map(|((cluster, kind), g)| {
            ((*kind, cluster.as_str()), g.view.nodes.iter().filter(|n| !n.missing).map(|n| n.id.as_str()).collect())
        })
        .collect();
    let findings = checked
        .findings
        .iter()
        .map(|f| {
            let object = f.finding.object.to_string();
            let clusters = match f.finding.kind.flux() {
                Some(kind) => graphs
                    .keys()
                    .filter(|(c, k)| *k == kind && members[&(kind, c.as_str())].contains(object.as_str()))
                    .map(|(c, _)| c.clone())
                    .collect(),
                None => loaded
                    .resource_sets
                    .iter()
                    .filter(|s| s.key == f.finding.object && f.finding.kind == FindingKind::ResourceSet)
                    .filter_map(|s| group_names.get(s.group).cloned())
                    .collect(),
            };
            let mut located = f.clone();
            located.file = rel(&f.file);
            SideFinding { located, clusters }
        })
        .collect();
    let errors = checked
        .errors
        .iter()
        .map(|e| LoadError { file: rel(&e.file), line: e.line, message: e.message.clone() })
        .collect();
    Snapshot { graphs, findings, errors, objects: checked.objects }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_under_the_root_however_it_was_written() {
        let file = Path::new("fleet/clusters/prod/apps.yaml");
        for root in ["fleet", "./fleet", "fleet/", "other/../fleet"] {
            assert_eq!(relative(file, Path::new(root)), Path::new("clusters/prod/apps.yaml"), "{root}");
        }
        assert_eq!(relative(Path::new("clusters/a.yaml"), Path::new(".")), Path::new("clusters/a.yaml"));
        // Outside the root, or the root itself: the path as it is.
        assert_eq!(relative(file, Path::new("elsewhere")), file);
        assert_eq!(relative(file, file), file);
    }
}

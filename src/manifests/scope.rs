//! What the user asked to check: a folder inside a repository stands for the clusters that
//! reach into it, and `--cluster` for one cluster.
//!
//! `check clusters/production` must see that cluster as Flux does: its entry point and the paths
//! it applies lie elsewhere in the repository. So when the paths given hold no entry point and
//! are inside a Git checkout (a `.git` above them), the whole checkout is read, and the clusters
//! whose entry point is under the paths, or that apply something under them, are kept; objects
//! under the paths that no cluster applies are listed as not applied. When no cluster of the
//! checkout reaches into the paths, they are read on their own.

use std::path::{Path, PathBuf};

use super::LoadError;
use super::clusters::{ClusterOf, Placed};
use super::documents::Documents;

/// The root of the Git checkout holding every one of `paths`, when that is above them.
pub(super) fn repository(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?;
    let absolute = |p: &Path| std::path::absolute(p).ok();
    let start = absolute(first)?;
    let root = start.ancestors().find(|d| d.join(".git").exists())?.to_path_buf();
    let all_inside = paths.iter().all(|p| absolute(p).is_some_and(|a| a.starts_with(&root)));
    let any_below = paths.iter().any(|p| absolute(p).is_some_and(|a| a != root));
    if !(all_inside && any_below) {
        return None;
    }
    // Keep the user's way of writing paths (relative stays relative) in every report.
    let depth = start.strip_prefix(&root).ok()?.components().count();
    let mut relative = first.clone();
    for _ in 0..depth {
        relative.push("..");
    }
    Some(super::files::normalize(&relative))
}

/// Whether some cluster of `placed` has its entry point under `paths` or applies a file there.
pub(super) fn reaches(placed: &Placed, docs: &Documents, paths: &[PathBuf]) -> bool {
    placed.clusters.iter().any(|c| reaches_into(c, placed, docs, paths))
}

fn reaches_into(c: &ClusterOf, placed: &Placed, docs: &Documents, paths: &[PathBuf]) -> bool {
    let under = |file: &Path| paths.iter().any(|p| file.starts_with(p));
    c.entry.as_deref().is_some_and(under) || c.members.iter().any(|&i| under(&docs.files[placed.instances[i].file]))
}

/// Keeps the clusters reaching into `paths`, and the not-applied objects written there.
pub(super) fn keep_reaching(placed: &mut Placed, docs: &Documents, paths: &[PathBuf]) {
    let keep: Vec<bool> = placed.clusters.iter().map(|c| reaches_into(c, placed, docs, paths)).collect();
    let mut keep = keep.into_iter();
    placed.clusters.retain(|_| keep.next().unwrap_or(false));
    placed.not_applied.retain(|&d, _| paths.iter().any(|p| docs.files[docs.docs[d].file].starts_with(p)));
}

/// Keeps the cluster `--cluster` names: the folder its entry point syncs (or a trailing part
/// of it), or its entry point's file or a folder above it.
pub(super) fn narrow(placed: &mut Placed, cluster: Option<&str>) -> Result<(), LoadError> {
    let Some(name) = cluster else { return Ok(()) };
    let wanted = super::files::normalize(Path::new(name));
    let names = |c: &ClusterOf| {
        c.folder.ends_with(&wanted) || c.entry.as_ref().is_some_and(|e| e.starts_with(&wanted) || e.ends_with(&wanted))
    };
    let known: Vec<String> = placed.clusters.iter().map(|c| c.folder.display().to_string()).collect();
    placed.clusters.retain(names);
    if placed.clusters.is_empty() {
        return Err(LoadError {
            file: PathBuf::from(name),
            line: 0,
            message: format!("--cluster {name}: no such cluster; the clusters are: {}", known.join(", ")),
        });
    }
    Ok(())
}

//! The guess of the repository root when no entry point names it: the folder (among the given
//! paths and their parents) against which the most `spec.path`s resolve, and the source those
//! Kustomizations name. Kustomizations of other sources (another Git repository, an OCI
//! artifact) do not apply files of this checkout.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use super::files::normalize;

/// A Flux Kustomization as the guess needs it.
pub(super) struct Applier<'a> {
    pub path: Option<&'a str>,
    /// `spec.sourceRef` kind and name; `None` when the file has none (a parent patches one in):
    /// it counts as the checkout's source.
    pub source: Option<(&'a str, &'a str)>,
}

/// Folders Flux users keep retired manifests in: never applied, whatever they hold.
pub(super) fn is_archive(file: &Path) -> bool {
    file.parent().into_iter().flat_map(Path::components).any(|c| {
        let name = c.as_os_str().to_string_lossy().to_ascii_lowercase();
        let name = name.trim_start_matches(['.', '_']);
        name == "archive" || name == "archived"
    })
}

/// The checkout's root and source: the pair against which the most `spec.path`s resolve to
/// folders that were read (`knows`); `children` names the subfolders of a folder.
pub(super) fn source_root<'s>(
    inputs: &[PathBuf],
    appliers: &[Applier<'s>],
    knows: &dyn Fn(&Path) -> bool,
    children: &dyn Fn(&Path) -> Vec<OsString>,
) -> Option<(PathBuf, (&'s str, &'s str))> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let input = normalize(input);
        let start =
            if knows(&input) { input.clone() } else { input.parent().map(Path::to_path_buf).unwrap_or_default() };
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
            let names = children(root);
            let known: HashSet<&OsStr> = names.iter().map(OsString::as_os_str).collect();
            let may_resolve = |p: &str| match first_folder(p) {
                Some(first) => known.contains(first),
                None => true,
            };
            let score = appliers
                .iter()
                .filter(|a| a.source.is_none_or(|s| s == source))
                .filter_map(|a| a.path)
                .filter(|p| !p.contains("${") && may_resolve(p))
                .filter(|p| knows(&super::files::join(root, p)))
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
}

//! Step 1 of the loader: the YAML files under the paths given, without the files Flux never
//! applies as manifests (Helm chart folders, helmfiles).

use std::path::{Path, PathBuf};

use super::LoadError;

/// Files source-controller leaves out of every artifact it builds (its default ignore patterns):
/// kustomize-controller never sees them. Hidden files and folders are skipped already.
const EXCLUDED_BY_SOURCE: [&str; 4] =
    ["appveyor.yml", "cloudbuild.yaml", "codeship-services.yml", "codeship-steps.yml"];

pub(super) fn is_yaml(path: &Path) -> bool {
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
pub(super) fn collect_files(
    path: &Path,
    explicit: bool,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<LoadError>,
) -> usize {
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
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if EXCLUDED_BY_SOURCE.contains(&name) {
                return 0;
            }
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

/// `a/b/../c` as `a/c`, without touching the file system (links are not followed). A `..`
/// takes off the folder before it; leading ones stay (`../../a` is itself), and `..` at the
/// root stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::ParentDir if out.has_root() => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` (a Flux Kustomization's `spec.path`) inside the source whose root is `root`, joined
/// as kustomize-controller joins it: a leading `/` is the root, and `..` stops at the root.
pub(super) fn join(root: &Path, path: &str) -> PathBuf {
    use std::path::Component;
    let mut out = normalize(root);
    let depth = out.components().count();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                if out.components().count() > depth {
                    out.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_in_the_text_and_keeps_leading_parents() {
        let n = |p: &str| normalize(Path::new(p)).display().to_string();
        assert_eq!(n("a/./b/../c"), "a/c");
        assert_eq!(n("../../fleets/repo"), "../../fleets/repo", "`check ../../repo` reads ../../repo");
        assert_eq!(n("../x/../../y"), "../../y");
        assert_eq!(n("a/.."), "");
        assert_eq!(n("/../a"), "/a");
    }
}

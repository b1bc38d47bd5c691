//! `fluxgate diff` on the largest real fleet (`../shared/fleets/rafaribe__home-ops`, 340
//! objects) against a copy of itself with one `dependsOn` edge added: both sides loaded as
//! `check` loads them (at once, as the command does), checked, drawn per cluster and compared. What a pull request's CI step
//! waits for, less process start-up.
//!
//! `cargo bench --bench diff` (`-- PATH` for another checkout: the first `dependsOn:` list of an
//! applied Flux Kustomization gains an entry). Prints the median and the slowest of 10 runs, then
//! fails if the median is a second or more, the budget of issue 22.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate::manifests::LoadOptions;
use fluxgate::policy::Policy;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Adds `dependency` (`namespace/name`) to the first `dependsOn:` block of a Flux Kustomization file
/// under `root` that a cluster applies (a file left out of every `kustomization.yaml` changes
/// nothing Flux does, and `diff` rightly reports nothing); returns the file changed.
fn add_one_edge(base: &Path, root: &Path, dependency: &str) -> PathBuf {
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let policy = Policy::default();
    let before = fluxgate::diff::snapshot(base, &policy, LoadOptions::default());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.contains("kustomize.toolkit.fluxcd.io/") {
            continue;
        }
        let Some(at) = text.find("\n  dependsOn:\n") else { continue };
        let at = at + "\n  dependsOn:\n".len();
        let (namespace, name) = dependency.split_once('/').expect("namespace/name");
        let entry = format!("    - name: {name}\n      namespace: {namespace}\n");
        let changed = format!("{}{entry}{}", &text[..at], &text[at..]);
        std::fs::write(&file, changed).unwrap();
        let after = fluxgate::diff::snapshot(root, &policy, LoadOptions::default());
        if fluxgate::diff::diff(&before, &after).clusters.iter().map(|k| k.edges_added.len()).sum::<usize>() == 1 {
            return file;
        }
        std::fs::write(&file, text).unwrap();
    }
    panic!("no applied Flux Kustomization with a dependsOn list under {}", root.display());
}

fn main() {
    let base = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fleets/rafaribe__home-ops"));
    let scratch = tempfile::tempdir().unwrap();
    let head = scratch.path().join("head");
    copy_tree(&base, &head);
    let changed = add_one_edge(&base, &head, "flux-system/flux-system");
    let policy = Policy::default();
    let run = || {
        let (before, after) = fluxgate::diff::snapshots(&base, &head, &policy, &LoadOptions::default());
        fluxgate::diff::diff(&before, &after)
    };
    let d = run();
    let edges: usize = d.clusters.iter().map(|k| k.edges_added.len()).sum();
    assert_eq!(edges, 1, "one edge added in {}: {:#?}", changed.display(), d.clusters);
    let mut samples: Vec<Duration> = (0..10)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(run());
            start.elapsed()
        })
        .collect();
    samples.sort();
    let (median, slowest) = (samples[samples.len() / 2], samples[samples.len() - 1]);
    println!(
        "fluxgate diff {} against itself with one edge added ({}), {} objects a side, 10 runs:",
        base.display(),
        changed.strip_prefix(&head).unwrap_or(&changed).display(),
        d.objects.after
    );
    println!("  median {median:.2?}, slowest {slowest:.2?}");
    assert!(median < Duration::from_secs(1), "diff took {median:?}, over the one-second budget");
}

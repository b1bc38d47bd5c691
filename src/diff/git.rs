//! A revision's tree written out as plain files, so that the loader reads it exactly as it reads
//! a checkout.
//!
//! Through the `git` binary rather than a Git library: `gix` or `git2` would add minutes to a
//! cold build on two cores for two commands, and every CI runner that has the repository has
//! `git`. The tree is read into a temporary index (`read-tree`) and written out from it
//! (`checkout-index`) into a temporary folder: this works on bare repositories and never touches
//! the repository's own index, work tree or worktree list, and, unlike `git archive`, it is not
//! subject to `export-ignore` attributes, which could silently leave Flux files out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What went wrong reading a revision.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git (is it installed and on PATH?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{rev:?} is not a revision of the Git repository at {repo}: {message}")]
    Revision { rev: String, repo: PathBuf, message: String },
    #[error("{repo} is not inside a Git repository: {message}")]
    NotARepository { repo: PathBuf, message: String },
    #[error("git {step} of {rev:?} failed in {repo}: {message}")]
    Failed { step: &'static str, rev: String, repo: PathBuf, message: String },
    #[error("cannot create a temporary folder {dir}: {source}")]
    TempDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A revision's files in a temporary folder, removed when this is dropped.
#[derive(Debug)]
pub struct Tree {
    /// Holds the index file and, beside it, the tree itself.
    scratch: PathBuf,
    root: PathBuf,
    /// The tree the revision names.
    pub id: String,
    /// The commit it names, or the tree's id when it names a tree.
    pub commit: String,
}

impl Tree {
    /// The folder holding the revision's files.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Best effort: a leftover temporary folder is not worth failing the command for.
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(repo);
    // The user's pager and terminal prompts have no place in a batch command.
    c.env("GIT_TERMINAL_PROMPT", "0").env_remove("GIT_INDEX_FILE").env_remove("GIT_WORK_TREE");
    c
}

fn stderr_of(out: &std::process::Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if s.is_empty() { format!("exit status {}", out.status) } else { s }
}

/// The top folder of the work tree holding `dir`: what a revision's tree corresponds to.
pub fn toplevel(dir: &Path) -> Result<PathBuf, GitError> {
    let out = git(dir).args(["rev-parse", "--show-toplevel"]).output().map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::NotARepository { repo: dir.to_path_buf(), message: stderr_of(&out) });
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Writes the tree of `rev` in the repository at `repo` (a work tree or a bare repository) into
/// a new temporary folder.
pub fn extract(repo: &Path, rev: &str) -> Result<Tree, GitError> {
    let out = git(repo)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{rev}^{{tree}}")])
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        // `--quiet` says nothing about a bad revision; a missing repository still speaks.
        let message = match String::from_utf8_lossy(&out.stderr).trim() {
            "" => "no such commit, branch or tag (fetch it first, e.g. `git fetch origin main`)".to_string(),
            s => s.to_string(),
        };
        return Err(GitError::Revision { rev: rev.to_string(), repo: repo.to_path_buf(), message });
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // For the label: the commit a reviewer can look up, when the revision names one.
    let commit = git(repo)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{rev}^{{commit}}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| id.clone(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());

    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "fluxgate-diff-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let root = scratch.join("tree");
    std::fs::create_dir_all(&root).map_err(|source| GitError::TempDir { dir: root.clone(), source })?;
    let tree = Tree { scratch, root, id, commit };
    let index = tree.scratch.join("index");
    let failed = |step, out: &std::process::Output| GitError::Failed {
        step,
        rev: rev.to_string(),
        repo: repo.to_path_buf(),
        message: stderr_of(out),
    };
    let out =
        git(repo).env("GIT_INDEX_FILE", &index).args(["read-tree", &tree.id]).output().map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(failed("read-tree", &out));
    }
    let out = git(repo)
        .env("GIT_INDEX_FILE", &index)
        .arg("--work-tree")
        .arg(&tree.root)
        .args(["checkout-index", "--all", "--force"])
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(failed("checkout-index", &out));
    }
    Ok(tree)
}

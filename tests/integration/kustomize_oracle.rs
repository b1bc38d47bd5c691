//! Differential test of `fluxgate::manifests::build_kustomization` against the real kustomize.
//!
//! The oracle is `kubectl kustomize` (kustomize v5) driven the way kustomize-controller drives its
//! embedded kustomize: the Flux Kustomization's `spec.path` folder gets the kustomization file
//! kustomize-controller would write there (generated when the folder has none, then Flux's own
//! steps: `targetNamespace`, `namePrefix`/`nameSuffix`, `patches`, `components`, the legacy
//! `patchesStrategicMerge`/`patchesJson6902`), the folder is built with
//! `--load-restrictor LoadRestrictionsNone`, and `spec.postBuild.substitute` is applied to the output.
//! The Flux objects of the result (Kustomizations and HelmReleases) are compared, as records of
//! kind, namespace, name, dependsOn and wait, with what fluxgate computes for the same Flux
//! Kustomization without running anything.
//!
//! It runs over every Flux Kustomization of every repository of `../shared/fleets` (or
//! `$FLUXGATE_SHARED/fleets`), and over small trees written here that pin one behaviour each.
//! `kubectl` must be on PATH: without it the tests fail rather than pass without comparing.
//!
//! A case kubectl cannot build (a remote base without network, `helmCharts`, a file the fleet's
//! copy left out, duplicate ids...) is skipped and counted by reason, not failed: Flux could not
//! build it either, or this machine or the copy lacks what it needs.
//!
//! Not modelled, on both sides alike: the values of `postBuild.substituteFrom` (a variable with
//! no in-line value and no default stays as written), envsubst errors in objects other than Flux
//! ones, `spec.images`, decryption, and the GitRepository's own `spec.ignore`/`.sourceignore`
//! (only source-controller's default exclusions are applied).
//!
//! Run it with `cargo test --test kustomize_oracle -- --nocapture` to see the totals.
//! kubectl's results are kept in `target/tmp/kustomize-oracle`, keyed by kubectl's version, every
//! file of the repository, the folder and the kustomization file written, so a second run only
//! runs kubectl for what changed; `FLUXGATE_ORACLE_NO_CACHE=1` runs it for every case, and
//! `FLUXGATE_ORACLE_VERBOSE=1` lists every skipped case with its reason and every difference.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fluxgate::manifests::{Repository, build_kustomization, parse_document, split_documents};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Records: what is compared.
// ---------------------------------------------------------------------------------------------

/// The part of a Flux object that decides the dependsOn graph. Values that are not strings
/// (a substitution can turn a name into a number) are kept as their JSON text so both sides
/// compare them alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Record {
    kind: String,
    /// As built; empty when the object has none.
    namespace: String,
    name: String,
    /// Sorted (name, namespace as written or empty).
    depends_on: Vec<(String, String)>,
    /// JSON text of `spec.wait` (`true`/`false`), `None` when absent.
    wait: Option<String>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deps: Vec<String> =
            self.depends_on.iter().map(|(n, ns)| if ns.is_empty() { n.clone() } else { format!("{ns}/{n}") }).collect();
        write!(f, "{} {}/{} dependsOn=[{}]", self.kind, self.namespace, self.name, deps.join(", "))?;
        match &self.wait {
            Some(w) => write!(f, " wait={w}"),
            None => Ok(()),
        }
    }
}

/// A string field as text: absent or null is empty, a string is itself, anything else its JSON.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The record of `object` when it is a Flux Kustomization or HelmRelease.
fn record(object: &Value) -> Option<Record> {
    let api = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let flux = (api.starts_with("kustomize.toolkit.fluxcd.io/") && kind == "Kustomization")
        || (api.starts_with("helm.toolkit.fluxcd.io/") && kind == "HelmRelease");
    if !flux {
        return None;
    }
    let mut depends_on: Vec<(String, String)> = object["spec"]["dependsOn"]
        .as_array()
        .map(|deps| deps.iter().map(|d| (text(&d["name"]), text(&d["namespace"]))).collect())
        .unwrap_or_default();
    depends_on.sort();
    let wait = object["spec"].get("wait").filter(|w| !w.is_null()).map(Value::to_string);
    Some(Record {
        kind: kind.to_string(),
        namespace: text(&object["metadata"]["namespace"]),
        name: text(&object["metadata"]["name"]),
        depends_on,
        wait,
    })
}

fn records<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Vec<Record> {
    let mut out: Vec<Record> = objects.into_iter().filter_map(record).collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The oracle: kustomize-controller's generator, kubectl kustomize, Flux's post-build.
// ---------------------------------------------------------------------------------------------

/// The file names kustomize recognises, in the order kustomize-controller looks for them.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The top-level fields of kustomize's `Kustomization` type (api v0.21). kustomize-controller
/// reads the kustomization file into that type and writes it back, so any other field is dropped
/// before the build; `kubectl kustomize` alone would refuse it as an unknown field.
const KUSTOMIZATION_FIELDS: [&str; 35] = [
    "apiVersion",
    "kind",
    "metadata",
    "openapi",
    "namePrefix",
    "nameSuffix",
    "namespace",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "patchesStrategicMerge",
    "patchesJson6902",
    "patches",
    "images",
    "imageTags",
    "replacements",
    "replicas",
    "vars",
    "sortOptions",
    "resources",
    "components",
    "crds",
    "bases",
    "configMapGenerator",
    "secretGenerator",
    "helmGlobals",
    "helmCharts",
    "helmChartInflationGenerator",
    "generatorOptions",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "inventory",
    "buildMetadata",
];

/// Files source-controller leaves out of every GitRepository artifact (its default ignore
/// patterns, which match at any depth), so kustomize-controller never sees them: a generated
/// kustomization must not list them.
const ARTIFACT_EXCLUDED_FILES: [&str; 13] = [
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    ".goreleaser.yml",
    ".sops.yaml",
    ".flux.yaml",
];
const ARTIFACT_EXCLUDED_DIRS: [&str; 3] = [".git", ".github", ".circleci"];

/// Walks `from` as the artifact kustomize-controller unpacks: without the files
/// source-controller excludes by default. `digest` takes in every path and content, in name
/// order, so it identifies what kustomize can read; with `to`, the artifact is copied there.
fn walk_artifact(from: &Path, to: Option<&Path>, digest: &mut ring::digest::Context) {
    if let Some(to) = to {
        std::fs::create_dir_all(to).unwrap();
    }
    let mut entries: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() && !ARTIFACT_EXCLUDED_DIRS.contains(&name.as_ref()) {
            digest.update(format!("dir {name}\0").as_bytes());
            walk_artifact(&entry.path(), to.map(|t| t.join(&*name)).as_deref(), digest);
            digest.update(b"end\0");
        } else if kind.is_file() && !ARTIFACT_EXCLUDED_FILES.contains(&name.as_ref()) {
            let bytes = std::fs::read(entry.path()).unwrap();
            digest.update(format!("file {name} {}\0", bytes.len()).as_bytes());
            digest.update(&bytes);
            if let Some(to) = to {
                std::fs::write(to.join(&*name), bytes).unwrap();
            }
        }
    }
}

/// A repository as kustomize-controller sees it. Kustomization files are computed from the
/// checkout itself; kubectl runs in a writable copy, made the first time a result is not in the
/// cache (copying is most of the time of a run that finds every result there).
struct Artifact<'a> {
    root: &'a Path,
    /// The repository as fluxgate reads it, read once for all its cases.
    repository: OnceLock<Result<Repository, String>>,
    work: OnceLock<tempfile::TempDir>,
    disk: Option<DiskCache>,
    /// How many builds ran kubectl, and how many came from the disk cache instead.
    runs: Cell<usize>,
    hits: Cell<usize>,
}

impl<'a> Artifact<'a> {
    fn new(root: &'a Path, disk: Option<DiskCache>) -> Self {
        Artifact {
            root,
            repository: OnceLock::new(),
            work: OnceLock::new(),
            disk,
            runs: Cell::new(0),
            hits: Cell::new(0),
        }
    }

    fn work(&self) -> &Path {
        self.work
            .get_or_init(|| {
                let work = tempfile::tempdir().unwrap();
                walk_artifact(self.root, Some(work.path()), &mut ring::digest::Context::new(&ring::digest::SHA256));
                work
            })
            .path()
    }
}

/// The artifact digest of `root`.
fn artifact_digest(root: &Path) -> ring::digest::Digest {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    walk_artifact(root, None, &mut digest);
    digest.finish()
}

/// `spec.path` as a folder relative to the repository root, as kustomize-controller joins it
/// (securejoin: a leading `/` is the root, `..` stops at the root). `None` for a templated path.
fn relative_path(spec_path: &str) -> Option<PathBuf> {
    if spec_path.contains("${") {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(spec_path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// The resources of the kustomization kustomize-controller generates for a folder without one
/// (its `scanManifests`): a walk in lexical order where a subfolder holding a kustomization file
/// is listed as one resource and not descended into, and every `.yaml`/`.yml` file is listed.
/// kustomize-controller also decodes each file and fails the build when one does not decode;
/// kustomize's build decodes the listed files the same way, so here the build reports it.
/// Files source-controller leaves out of the artifact are not there to list.
fn scan_manifests(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let p = entry.path();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().unwrap().is_dir() {
            if ARTIFACT_EXCLUDED_DIRS.contains(&name.as_ref()) {
                continue;
            }
            if kustomization_file(&p).is_some() {
                out.push(format!("./{rel}"));
            } else {
                scan_manifests(base, &p, out);
            }
        } else if is_yaml(&p) && !ARTIFACT_EXCLUDED_FILES.contains(&name.as_ref()) {
            out.push(format!("./{rel}"));
        }
    }
}

/// A Flux selector as kustomize-controller hands it to kustomize (`adaptSelector`): the same
/// field names, empty ones left out.
fn adapt_selector(target: &Value) -> Value {
    let mut out = Map::new();
    for field in ["group", "version", "kind", "name", "namespace", "labelSelector", "annotationSelector"] {
        if let Some(v) = target.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            out.insert(field.to_string(), json!(v));
        }
    }
    Value::Object(out)
}

/// kustomize-controller's `IsLocalRelativePath` for component paths.
fn is_local_relative(path: &str) -> bool {
    let lower = path.to_lowercase();
    let remote = ["git::", "gh:", "ssh://", "https://", "http://", "git@", "github.com:", "github.com/"]
        .iter()
        .any(|p| p.len() < path.len() && lower.starts_with(p));
    let abs = path.starts_with('/') || lower.trim_start_matches("file://").starts_with('/');
    !remote && !abs
}

/// The kustomization file to write, and what to put back afterwards.
struct KustomizationFile {
    path: PathBuf,
    /// The file's content before, `None` when it is generated.
    original: Option<Vec<u8>>,
    content: Map<String, Value>,
}

/// The kustomization file kustomize-controller writes into `dir` for the Flux Kustomization
/// `spec` (its generator's `GenerateManifest`): the file's own content read as kustomize's type
/// (or the generated one), then Flux's steps on the top level only.
fn flux_kustomization_file(dir: &Path, spec: &Value) -> Result<KustomizationFile, String> {
    let (file, original, mut kus) = match kustomization_file(dir) {
        Some(file) => {
            let bytes = std::fs::read(&file).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let value = parse_document(&text).map_err(|e| format!("kustomization file does not parse: {e}"))?;
            // An empty file (or one of comments only) reads as an empty kustomization in Go.
            let value = if value.is_null() { json!({}) } else { value };
            let Value::Object(mut kus) = value else {
                return Err("kustomization file is not a mapping".to_string());
            };
            kus.retain(|k, _| KUSTOMIZATION_FIELDS.contains(&k.as_str()));
            // kustomize-controller sets this on an existing file without resources, so that
            // kustomize does not refuse it as empty.
            if kus.get("resources").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                kus.insert("buildMetadata".to_string(), json!(["originAnnotations"]));
            }
            (file, Some(bytes), kus)
        }
        None => {
            let mut resources = Vec::new();
            scan_manifests(dir, dir, &mut resources);
            let mut kus = Map::new();
            kus.insert("apiVersion".to_string(), json!("kustomize.config.k8s.io/v1beta1"));
            kus.insert("kind".to_string(), json!("Kustomization"));
            if resources.is_empty() {
                // What kustomize-controller writes so that kustomize does not refuse an empty file.
                kus.insert("namespace".to_string(), json!("_placeholder"));
            } else {
                kus.insert("resources".to_string(), json!(resources));
            }
            (dir.join("kustomization.yaml"), None, kus)
        }
    };

    // A string field set in the spec replaces the file's; an empty one clears it (Go writes
    // the empty string as an absent field).
    for (flux, kustomize) in
        [("targetNamespace", "namespace"), ("namePrefix", "namePrefix"), ("nameSuffix", "nameSuffix")]
    {
        if let Some(v) = spec.get(flux).and_then(Value::as_str) {
            if v.is_empty() {
                kus.remove(kustomize);
            } else {
                kus.insert(kustomize.to_string(), json!(v));
            }
        }
    }

    let mut append = |field: &str, items: Vec<Value>| {
        if !items.is_empty() {
            let list = kus.entry(field.to_string()).or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            list.as_array_mut().unwrap().extend(items);
        }
    };

    let patches = spec["patches"].as_array().map(Vec::as_slice).unwrap_or_default();
    append(
        "patches",
        patches
            .iter()
            .map(|p| {
                let mut out = Map::new();
                if let Some(patch) = p["patch"].as_str().filter(|s| !s.is_empty()) {
                    out.insert("patch".to_string(), json!(patch));
                }
                if p["target"].is_object() {
                    out.insert("target".to_string(), adapt_selector(&p["target"]));
                }
                Value::Object(out)
            })
            .collect(),
    );

    let mut components = Vec::new();
    let ignore_missing = spec["ignoreMissingComponents"].as_bool().unwrap_or(false);
    for c in spec["components"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let c = c.as_str().ok_or("spec.components holds a non-string")?;
        if !is_local_relative(c) {
            return Err(format!("component path '{c}' must be local and relative"));
        }
        if ignore_missing && !dir.join(c).exists() {
            continue;
        }
        components.push(json!(c));
    }
    append("components", components);

    let psm = spec["patchesStrategicMerge"].as_array().map(Vec::as_slice).unwrap_or_default();
    append("patchesStrategicMerge", psm.iter().map(|p| json!(p.to_string())).collect());

    let pj = spec["patchesJson6902"].as_array().map(Vec::as_slice).unwrap_or_default();
    append(
        "patchesJson6902",
        pj.iter().map(|p| json!({ "patch": p["patch"].to_string(), "target": adapt_selector(&p["target"]) })).collect(),
    );

    if let Some(meta) = spec["buildMetadata"].as_array().filter(|m| !m.is_empty()) {
        kus.insert("buildMetadata".to_string(), json!(meta));
    }
    Ok(KustomizationFile { path: file, original, content: kus })
}

/// kubectl's error message without klog's prefix and the `"command failed" err=` wrapper (which
/// puts a multi-line message between `<` and `>` on the lines after it), grouped by
/// [`classify`]: the reason a case was skipped.
fn error_reason(stderr: &str) -> String {
    let Some((_, message)) = stderr.split_once("\"command failed\" err=") else {
        return classify(stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim());
    };
    let message = match message.strip_prefix('<') {
        Some(block) => block.lines().map(str::trim).find(|l| !l.is_empty() && *l != ">").unwrap_or(""),
        None => message.lines().next().unwrap_or("").trim().trim_matches('"'),
    };
    classify(message)
}

const REMOTE: &str = "remote resource (no network)";

/// Groups kubectl's error messages, which name files, into the kinds of failure they are.
fn classify(message: &str) -> String {
    let has = |s: &str| message.contains(s);
    let kind = if has("no such host") || has("Could not resolve host") || has("git fetch") || has("git clone") {
        REMOTE
    } else if has("HelmChartInflationGenerator") || has("--enable-helm") {
        "helmCharts (kustomize-controller does not inflate charts either)"
    } else if has("no such file or directory") || has("evalsymlink failure") {
        "missing file or folder"
    } else if has("already registered id") || has("conflicts between") {
        "duplicate resource id"
    } else if has("kustomization.yaml is empty") {
        "a nested kustomization file is empty"
    } else if has("unknown field") {
        "unknown field in a nested kustomization"
    } else if has("no matches for") || has("failed to find unique target") {
        "patch target not found"
    } else if has("missing metadata.name") || has("missing Resource metadata") {
        "resource without metadata"
    } else {
        ""
    };
    if !kind.is_empty() {
        return kind.to_string();
    }
    message.chars().take(300).collect()
}

/// Where kubectl's results are kept between runs, and what identifies the repository there.
struct DiskCache {
    folder: PathBuf,
    /// kubectl's version and the digest of the repository's artifact.
    prefix: Vec<u8>,
}

/// Bumped when what is cached (kubectl's stdout, or its stderr with the work folder written as
/// `<repo>`) changes meaning.
const CACHE_FORMAT: &str = "kustomize-oracle 1";

/// Runs `kubectl kustomize` on the folder `dir` (relative to the repository root) of a copy of
/// `artifact`, with the kustomization file kustomize-controller would write, restoring the copy
/// afterwards. The output text, or the reason it failed. With a disk cache, a result is reused
/// when kubectl's version, every file of the repository, the folder and the written
/// kustomization are the same.
fn kubectl_build(artifact: &Artifact, dir: &Path, spec: &Value) -> Result<String, String> {
    let KustomizationFile { path: file, original, content } = flux_kustomization_file(&artifact.root.join(dir), spec)?;
    let file = file.strip_prefix(artifact.root).unwrap().to_path_buf();
    // JSON is YAML; kustomize reads it as it reads the YAML kustomize-controller writes.
    let written = serde_json::to_string_pretty(&Value::Object(content)).unwrap();
    let entry = artifact.disk.as_ref().map(|d| {
        let mut key = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&d.prefix[..], dir.to_string_lossy().as_bytes(), written.as_bytes()] {
            key.update(format!("{}\0", part.len()).as_bytes());
            key.update(part);
        }
        let hex: String = key.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        d.folder.join(hex)
    });
    if let Some(cached) = entry.as_ref().and_then(|e| std::fs::read_to_string(e).ok()) {
        artifact.hits.set(artifact.hits.get() + 1);
        return match cached.split_once('\n') {
            Some(("ok", stdout)) => Ok(stdout.to_string()),
            Some((_, stderr)) => Err(error_reason(stderr)),
            None => Err(error_reason(&cached)),
        };
    }

    let work = artifact.work();
    let file = work.join(file);
    std::fs::write(&file, &written).unwrap();
    artifact.runs.set(artifact.runs.get() + 1);
    let output = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(work.join(dir))
        .output();
    match &original {
        Some(bytes) => std::fs::write(&file, bytes).unwrap(),
        None => std::fs::remove_file(&file).unwrap(),
    }
    let output = output.unwrap_or_else(|e| panic!("kubectl: {e}"));
    let result = if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        // The work folder is a new temporary one each run: name it alike in every result.
        Err(String::from_utf8_lossy(&output.stderr).replace(&*work.to_string_lossy(), "<repo>"))
    };
    // A failure that depends on this machine (no network for a remote base) is not kept:
    // another run may have what it lacked.
    let environmental = result.as_ref().is_err_and(|stderr| error_reason(stderr) == REMOTE);
    if let Some(entry) = entry.filter(|_| !environmental) {
        let text = match &result {
            Ok(stdout) => format!("ok\n{stdout}"),
            Err(stderr) => format!("err\n{stderr}"),
        };
        // Written aside and renamed, so a run stopped midway leaves no partial entry.
        let part = entry.with_extension(format!("part{}", std::process::id()));
        std::fs::write(&part, text).unwrap();
        std::fs::rename(&part, &entry).unwrap();
    }
    result.map_err(|stderr| error_reason(&stderr))
}

/// The variables of `spec.postBuild` when kustomize-controller substitutes at all: only when
/// postBuild is set and there is at least one variable (in-line or, as assumed offline, from
/// `substituteFrom`) or the strategy is `Always`. In-line values lose their newlines as Flux
/// reads them.
fn substitution(spec: &Value) -> Result<Option<HashMap<String, String>>, String> {
    let post = &spec["postBuild"];
    if !post.is_object() {
        return Ok(None);
    }
    let mut vars = HashMap::new();
    if let Some(map) = post["substitute"].as_object() {
        for (k, v) in map {
            let v = v.as_str().ok_or_else(|| format!("postBuild.substitute.{k} is not a string"))?;
            let valid = k.chars().next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid {
                return Err(format!("postBuild.substitute: '{k}' var name is invalid"));
            }
            vars.insert(k.clone(), v.replace('\n', ""));
        }
    }
    let from = post["substituteFrom"].as_array().is_some_and(|a| !a.is_empty());
    let always = post["substituteStrategy"] == "Always";
    Ok((!vars.is_empty() || from || always).then_some(vars))
}

/// Flux's envsubst for the forms Flux objects use: `$$` is a literal `$`; `${VAR}` is the
/// value; `${VAR:=d}`, `${VAR:-d}`, `${VAR=d}`, `${VAR-d}` are the value when it is set and not
/// empty, else `d`, where `d` may itself hold such expressions (`${CLAIM:=${APP}}`). Offline the
/// values of `substituteFrom` are unknown, so a variable with no in-line value and no default is
/// left as written (Flux would write the empty string or the value from the cluster), as is any
/// other form.
fn envsubst(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(expr) = after.strip_prefix('{')
            && let Some((value, used)) = substitute_expression(expr, vars)
        {
            out.push_str(&value);
            rest = &expr[used..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of the expression `expr` starts with (what follows `${`) and how many bytes of
/// `expr` it takes, through its closing brace; `None` for a form [`envsubst`] leaves as written.
fn substitute_expression(expr: &str, vars: &HashMap<String, String>) -> Option<(String, usize)> {
    let name_end = expr.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(expr.len());
    let name = &expr[..name_end];
    if name.is_empty() {
        return None;
    }
    let rest = &expr[name_end..];
    if rest.starts_with('}') {
        let value = vars.get(name).cloned().unwrap_or_else(|| format!("${{{name}}}"));
        return Some((value, name_end + 1));
    }
    let op = [":=", ":-", "=", "-"].into_iter().find(|op| rest.starts_with(op))?;
    // The default runs to the first `}` not closing a nested expression; Flux reads no escapes
    // in it.
    let mut at = name_end + op.len();
    let mut default = String::new();
    loop {
        let tail = &expr[at..];
        if tail.starts_with('}') {
            at += 1;
            break;
        }
        if let Some(inner) = tail.strip_prefix("${") {
            let (value, used) = substitute_expression(inner, vars)?;
            default.push_str(&value);
            at += 2 + used;
            continue;
        }
        let c = tail.chars().next()?;
        default.push(c);
        at += c.len_utf8();
    }
    let value = vars.get(name).filter(|v| !v.is_empty()).cloned().unwrap_or(default);
    Some((value, at))
}

/// The Flux objects of kubectl's output after Flux's post-build substitution, as records.
fn oracle_records(output: &str, vars: Option<&HashMap<String, String>>) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for doc in split_documents(output) {
        // Only Flux documents can become records; parsing the rest (large CRDs) costs time only.
        if !(doc.text.contains("kustomize.toolkit.fluxcd.io/") || doc.text.contains("helm.toolkit.fluxcd.io/")) {
            continue;
        }
        let object = parse_document(doc.text).map_err(|e| format!("kubectl output does not parse: {e}"))?;
        let disabled = |field: &str| object["metadata"][field]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled";
        let object = match vars {
            Some(vars) if !disabled("labels") && !disabled("annotations") => parse_document(&envsubst(doc.text, vars))
                .map_err(|e| format!("substituted output does not parse: {e}"))?,
            _ => object,
        };
        out.extend(record(&object));
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Cases and their comparison.
// ---------------------------------------------------------------------------------------------

/// One Flux Kustomization to build.
struct Case {
    repo: String,
    /// Where it is written, relative to the repository folder, and its first line.
    file: String,
    line: usize,
    /// `spec.path` as written and as a folder relative to the repository root.
    spec_path: String,
    dir: PathBuf,
    kustomization: Value,
}

/// The fields of a Flux Kustomization that shape its build before post-build: cases with the
/// same folder and these give the same kubectl output.
fn build_key(case: &Case) -> String {
    let spec = &case.kustomization["spec"];
    let fields = [
        "targetNamespace",
        "namePrefix",
        "nameSuffix",
        "patches",
        "components",
        "ignoreMissingComponents",
        "patchesStrategicMerge",
        "patchesJson6902",
        "buildMetadata",
    ];
    let subset: Map<String, Value> =
        fields.iter().filter_map(|f| spec.get(*f).map(|v| (f.to_string(), v.clone()))).collect();
    format!("{}\n{}", case.dir.display(), Value::Object(subset))
}

/// [`build_key`] plus post-build: cases with the same key give the same objects.
fn case_key(case: &Case) -> String {
    format!("{}\n{}", build_key(case), case.kustomization["spec"]["postBuild"])
}

/// What comparing one case found.
enum Outcome {
    Skipped(String),
    Compared { objects: usize, differences: Vec<String> },
}

/// The lines that tell kustomize's records from fluxgate's apart: a record both have under one
/// kind/namespace/name but with other fields is "different", the rest missing or extra.
fn differences(oracle: &[Record], fluxgate: &[Record]) -> Vec<String> {
    let mut missing: Vec<Record> = oracle.to_vec();
    let mut extra = Vec::new();
    for r in fluxgate {
        match missing.iter().position(|m| m == r) {
            Some(i) => {
                missing.remove(i);
            }
            None => extra.push(r.clone()),
        }
    }
    let mut out = Vec::new();
    for m in missing {
        let same = extra.iter().position(|e| (&e.kind, &e.namespace, &e.name) == (&m.kind, &m.namespace, &m.name));
        match same {
            Some(i) => {
                let e = extra.remove(i);
                out.push(format!("different: kustomize gave {m}; fluxgate gave {e}"));
            }
            None => out.push(format!("missing: kustomize gave {m}; fluxgate did not")),
        }
    }
    out.extend(extra.into_iter().map(|e| format!("extra: fluxgate gave {e}; kustomize did not")));
    out
}

/// Builds `case` both ways: kubectl over a copy of `artifact`, fluxgate over the repository as
/// checked out (it reads it, never writes).
fn compare(artifact: &Artifact, case: &Case, cache: &mut HashMap<String, Result<String, String>>) -> Outcome {
    let spec = &case.kustomization["spec"];
    let vars = match substitution(spec) {
        Ok(v) => v,
        Err(e) => return Outcome::Skipped(e),
    };
    let built = cache.entry(build_key(case)).or_insert_with(|| kubectl_build(artifact, &case.dir, spec)).clone();
    let output = match built {
        Ok(o) => o,
        Err(reason) => return Outcome::Skipped(reason),
    };
    let oracle = match oracle_records(&output, vars.as_ref()) {
        Ok(r) => r,
        Err(reason) => return Outcome::Skipped(reason),
    };
    let repository = artifact.repository.get_or_init(|| Repository::read(artifact.root));
    let built = repository.as_ref().map_err(Clone::clone).and_then(|r| r.build(&case.kustomization));
    let differences = match built {
        Ok(objects) => differences(&oracle, &records(&objects)),
        Err(e) => vec![format!("fluxgate failed: {e}; kustomize gave {} Flux objects", oracle.len())],
    };
    Outcome::Compared { objects: oracle.len(), differences }
}

/// kubectl's version; fails with a clear message when kubectl is missing: the oracle cannot
/// pass without it.
fn require_kubectl() -> &'static str {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| match Command::new("kubectl").args(["version", "--client"]).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!("`kubectl version --client` failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("kubectl is not on PATH ({e})")),
    });
    match checked {
        Ok(version) => version,
        Err(e) => panic!("the kustomize oracle needs kubectl (kustomize v5) on PATH: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The fleets.
// ---------------------------------------------------------------------------------------------

/// The shared folder beside the project as CI lays it out, or `$FLUXGATE_SHARED`.
fn shared() -> PathBuf {
    std::env::var_os("FLUXGATE_SHARED")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"), PathBuf::from)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let p = entry.path();
        if entry.file_type().unwrap().is_dir() {
            yaml_files(&p, out);
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
}

/// Flux Kustomizations that are not cases, by why.
#[derive(Default)]
struct Unbuilt {
    no_path: usize,
    templated_path: usize,
    folder_absent: usize,
}

/// Every Flux Kustomization of the repository at `root` whose `spec.path` is a plain folder
/// of the repository; the others are counted in `unbuilt`.
fn cases_of(repo: &str, root: &Path, unbuilt: &mut Unbuilt) -> Vec<Case> {
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    let mut cases = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        if !text.contains("kustomize.toolkit.fluxcd.io/") {
            continue;
        }
        for doc in split_documents(&text) {
            if !doc.text.contains("kustomize.toolkit.fluxcd.io/") {
                continue;
            }
            let Ok(object) = parse_document(doc.text) else { continue };
            let is_ks = object["kind"] == "Kustomization"
                && object["apiVersion"].as_str().is_some_and(|a| a.starts_with("kustomize.toolkit.fluxcd.io/"));
            if !is_ks {
                continue;
            }
            let Some(spec_path) = object["spec"]["path"].as_str() else {
                unbuilt.no_path += 1;
                continue;
            };
            let Some(dir) = relative_path(spec_path) else {
                unbuilt.templated_path += 1;
                continue;
            };
            if !root.join(&dir).is_dir() {
                unbuilt.folder_absent += 1;
                continue;
            }
            cases.push(Case {
                repo: repo.to_string(),
                file: file.strip_prefix(root).unwrap().display().to_string(),
                line: doc.line,
                spec_path: spec_path.to_string(),
                dir,
                kustomization: object,
            });
        }
    }
    cases
}

/// Totals over the fleets.
#[derive(Default)]
struct Totals {
    found: usize,
    compared: usize,
    objects: usize,
    skipped: BTreeMap<String, usize>,
    differences: Vec<String>,
    cases_with_differences: usize,
    kubectl_runs: usize,
    cache_hits: usize,
}

#[test]
fn fluxgate_builds_what_kustomize_builds_for_every_fleet_kustomization() {
    let kubectl = require_kubectl();
    let start = Instant::now();
    let fleets = shared().join("fleets");
    let mut unbuilt = Unbuilt::default();
    let mut repos: Vec<(String, PathBuf, Vec<Case>)> = std::fs::read_dir(&fleets)
        .unwrap_or_else(|e| panic!("{}: {e} (set FLUXGATE_SHARED to the shared folder)", fleets.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|root| {
            let repo = root.file_name().unwrap().to_string_lossy().into_owned();
            let cases = cases_of(&repo, &root, &mut unbuilt);
            (repo, root, cases)
        })
        .collect();
    assert!(repos.len() >= 20, "the shared fleets are beside the project");
    eprintln!("kustomize oracle: {:.1?} to find the cases", start.elapsed());
    // The largest repositories first, so the threads finish together.
    repos.sort_by_key(|(_, _, cases)| std::cmp::Reverse(cases.len()));

    let totals = Mutex::new(Totals::default());
    // kubectl's results are kept beside the build, keyed by everything they depend on, so a
    // second run only runs kubectl for what changed. FLUXGATE_ORACLE_NO_CACHE=1 runs it for all.
    let cache_folder = (std::env::var_os("FLUXGATE_ORACLE_NO_CACHE").is_none())
        .then(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("kustomize-oracle"));
    if let Some(folder) = &cache_folder {
        std::fs::create_dir_all(folder).unwrap();
    }
    let next = AtomicUsize::new(0);
    // Every skipped case with its reason, to see what the totals group.
    let verbose = std::env::var_os("FLUXGATE_ORACLE_VERBOSE").is_some();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, root, cases)) = repos.get(i) else { break };
                    // Cases of one repository edit its copy, so they run one after another.
                    let disk = cache_folder.as_ref().map(|folder| DiskCache {
                        folder: folder.clone(),
                        prefix: [CACHE_FORMAT.as_bytes(), kubectl.as_bytes(), artifact_digest(root).as_ref()].concat(),
                    });
                    let artifact = Artifact::new(root, disk);
                    let mut cache = HashMap::new();
                    let mut seen = std::collections::HashSet::new();
                    for case in cases {
                        if !seen.insert(case_key(case)) {
                            continue;
                        }
                        let outcome = compare(&artifact, case, &mut cache);
                        let mut t = totals.lock().unwrap();
                        t.found += 1;
                        match outcome {
                            Outcome::Skipped(reason) => {
                                if verbose {
                                    eprintln!(
                                        "skipped {} {}:{} path {}: {reason}",
                                        case.repo, case.file, case.line, case.spec_path
                                    );
                                }
                                *t.skipped.entry(reason).or_default() += 1
                            }
                            Outcome::Compared { objects, differences } => {
                                t.compared += 1;
                                t.objects += objects;
                                if !differences.is_empty() {
                                    t.cases_with_differences += 1;
                                }
                                let at = format!("{} {}:{} path {}", case.repo, case.file, case.line, case.spec_path);
                                if verbose {
                                    for d in &differences {
                                        eprintln!("difference {at}: {d}");
                                    }
                                }
                                t.differences.extend(differences.into_iter().map(|d| format!("{at}: {d}")));
                            }
                        }
                    }
                    let mut t = totals.lock().unwrap();
                    t.kubectl_runs += artifact.runs.get();
                    t.cache_hits += artifact.hits.get();
                }
            });
        }
    });

    let t = totals.into_inner().unwrap();
    let elapsed = start.elapsed();
    report(&t, repos.iter().map(|r| r.2.len()).sum(), &unbuilt, elapsed);
    assert!(t.compared > 0, "no case was compared: every kubectl build failed");
    assert!(
        t.differences.is_empty(),
        "fluxgate differs from kustomize in {} of {} cases ({} differences); the first 20 are printed above",
        t.cases_with_differences,
        t.compared,
        t.differences.len()
    );
}

fn report(t: &Totals, written: usize, unbuilt: &Unbuilt, elapsed: Duration) {
    let skipped: usize = t.skipped.values().sum();
    eprintln!("kustomize oracle over the fleets:");
    eprintln!(
        "  not built: {} Flux Kustomizations without spec.path, {} with a templated path, {} whose folder \
         is not in the repository",
        unbuilt.no_path, unbuilt.templated_path, unbuilt.folder_absent
    );
    eprintln!(
        "  {written} Flux Kustomizations with a folder path, {} distinct cases: {} compared, {skipped} skipped",
        t.found, t.compared
    );
    eprintln!(
        "  {} Flux objects compared; {} kubectl runs, {} results from the cache ({}); {:.1?} wall time",
        t.objects,
        t.kubectl_runs,
        t.cache_hits,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("kustomize-oracle").display(),
        elapsed
    );
    let mut reasons: Vec<(&String, &usize)> = t.skipped.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("  skipped by reason ({} reasons, top 10):", reasons.len());
    for (reason, n) in reasons.iter().take(10) {
        eprintln!("    {n:5}  {reason}");
    }
    if !t.differences.is_empty() {
        eprintln!("  {} differences in {} cases; the first 20:", t.differences.len(), t.cases_with_differences);
        for d in t.differences.iter().take(20) {
            eprintln!("    {d}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small trees, each pinning one behaviour: kustomize must give the records written here (the
// behaviour checked by hand with kubectl), and fluxgate the same.
// ---------------------------------------------------------------------------------------------

/// A record to expect; `deps` are `name` or `namespace/name` as written in dependsOn.
fn rec(kind: &str, namespace: &str, name: &str, deps: &[&str], wait: Option<bool>) -> Record {
    let mut depends_on: Vec<(String, String)> = deps
        .iter()
        .map(|d| match d.split_once('/') {
            Some((ns, n)) => (n.to_string(), ns.to_string()),
            None => (d.to_string(), String::new()),
        })
        .collect();
    depends_on.sort();
    Record {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        depends_on,
        wait: wait.map(|w| w.to_string()),
    }
}

fn ks_rec(namespace: &str, name: &str, deps: &[&str], wait: Option<bool>) -> Record {
    rec("Kustomization", namespace, name, deps, wait)
}

fn hr_rec(namespace: &str, name: &str, deps: &[&str]) -> Record {
    rec("HelmRelease", namespace, name, deps, None)
}

/// Writes `files` (path, content) as a repository, builds the Flux Kustomization `flux` (YAML)
/// over it both ways, and checks kustomize gives `expected` and fluxgate what kustomize gives.
fn pinned(files: &[(&str, &str)], flux: &str, expected: &[Record]) {
    require_kubectl();
    let root = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = root.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let ks = parse_document(flux).unwrap();
    let spec = &ks["spec"];
    let dir = relative_path(spec["path"].as_str().unwrap()).unwrap();
    let output = kubectl_build(&Artifact::new(root.path(), None), &dir, spec)
        .unwrap_or_else(|e| panic!("kubectl kustomize failed: {e}"));
    let vars = substitution(spec).unwrap();
    let oracle = oracle_records(&output, vars.as_ref()).unwrap();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(oracle, expected, "kustomize itself gave other records; its output:\n{output}");
    match build_kustomization(root.path(), &ks) {
        Ok(objects) => {
            let diff = differences(&oracle, &records(&objects));
            assert!(diff.is_empty(), "fluxgate differs from kustomize:\n  {}", diff.join("\n  "));
        }
        Err(e) => panic!("fluxgate failed where kustomize built {} Flux objects: {e}", oracle.len()),
    }
}

/// A Flux Kustomization building `path`, with `extra` lines appended to its spec.
fn flux_ks(path: &str, extra: &str) -> String {
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: under-test\n  \
         namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    \
         kind: GitRepository\n    name: repo\n{extra}"
    )
}

const APP_KS: &str = "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: app
  namespace: written
spec:
  path: ./app
  wait: true
  dependsOn:
    - name: base
    - name: other
      namespace: elsewhere
";

const DB_HR: &str = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: db
spec:
  chart:
    spec:
      chart: db
  dependsOn:
    - name: operator
";

#[test]
fn kustomize_namespace_overrides_the_namespace_written_in_the_resource() {
    pinned(
        &[
            ("apps/kustomization.yaml", "namespace: apps\nresources: [ks.yaml, hr.yaml]\n"),
            ("apps/ks.yaml", APP_KS),
            ("apps/hr.yaml", DB_HR),
        ],
        &flux_ks("./apps", ""),
        // dependsOn namespaces are not namespace fields for kustomize: written as they were.
        &[ks_rec("apps", "app", &["base", "elsewhere/other"], Some(true)), hr_rec("apps", "db", &["operator"])],
    );
}

#[test]
fn the_outermost_kustomize_namespace_wins() {
    pinned(
        &[
            ("outer/kustomization.yaml", "namespace: outer\nresources: [../inner]\n"),
            ("inner/kustomization.yaml", "namespace: inner\nresources: [ks.yaml]\n"),
            ("inner/ks.yaml", APP_KS),
        ],
        &flux_ks("./outer", ""),
        &[ks_rec("outer", "app", &["base", "elsewhere/other"], Some(true))],
    );
}

#[test]
fn empty_resources_apply_nothing_even_beside_a_flux_file() {
    pinned(&[("apps/kustomization.yaml", "resources: []\n"), ("apps/ks.yaml", APP_KS)], &flux_ks("./apps", ""), &[]);
}

#[test]
fn name_prefix_renames_the_object_but_not_its_dependencies() {
    pinned(
        &[
            ("apps/kustomization.yaml", "namePrefix: pre-\nresources: [ks.yaml, hr.yaml]\n"),
            ("apps/ks.yaml", APP_KS),
            ("apps/hr.yaml", DB_HR),
        ],
        &flux_ks("./apps", "  nameSuffix: -suf\n"),
        &[
            ks_rec("written", "pre-app-suf", &["base", "elsewhere/other"], Some(true)),
            hr_rec("", "pre-db-suf", &["operator"]),
        ],
    );
}

#[test]
fn a_strategic_merge_patch_replaces_the_depends_on_list() {
    let patch = "patches:
  - patch: |
      apiVersion: kustomize.toolkit.fluxcd.io/v1
      kind: Kustomization
      metadata:
        name: app
        namespace: written
      spec:
        wait: false
        dependsOn:
          - name: replaced
resources: [ks.yaml]
";
    pinned(
        &[("apps/kustomization.yaml", patch), ("apps/ks.yaml", APP_KS)],
        &flux_ks("./apps", ""),
        // The Flux CRDs give kustomize no merge keys, so the list is replaced, not merged.
        &[ks_rec("written", "app", &["replaced"], Some(false))],
    );
}

/// The outer level's patches: one targets the namespace the inner level set, one the namespace
/// written in the file, one the namespace this same level sets.
const OUTER_PATCHES: &str = "namespace: outer
resources: [../inner]
patches:
  - target: {kind: Kustomization, namespace: inner}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: by-inner-namespace}
  - target: {kind: Kustomization, namespace: written}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: by-written-namespace}
  - target: {kind: Kustomization, namespace: outer}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: by-outer-namespace}
";

#[test]
fn a_json6902_target_matches_earlier_namespaces_but_not_the_same_levels() {
    pinned(
        &[
            ("outer/kustomization.yaml", OUTER_PATCHES),
            ("inner/kustomization.yaml", "namespace: inner\nresources: [ks.yaml]\n"),
            ("inner/ks.yaml", APP_KS),
        ],
        &flux_ks("./outer", ""),
        // kustomize selects a patch target by any id the object had before (the inner
        // namespace, the written one); the outer namespace is set after the outer patches run.
        &[ks_rec(
            "outer",
            "app",
            &["base", "elsewhere/other", "by-inner-namespace", "by-written-namespace"],
            Some(true),
        )],
    );
}

#[test]
fn flux_patches_and_legacy_patches_run_at_the_top_level_before_its_namespace() {
    let extra = "  patches:
    - target: {kind: Kustomization, name: app}
      patch: |
        - op: add
          path: /spec/dependsOn/-
          value: {name: from-flux-patches}
    - target: {kind: HelmRelease, namespace: apps}
      patch: |
        - op: add
          path: /spec/dependsOn/-
          value: {name: never-matches}
  patchesJson6902:
    - target: {group: helm.toolkit.fluxcd.io, version: v2, kind: HelmRelease, name: db}
      patch:
        - op: replace
          path: /spec/dependsOn/0/name
          value: from-legacy-json6902
  patchesStrategicMerge:
    - apiVersion: kustomize.toolkit.fluxcd.io/v1
      kind: Kustomization
      metadata: {name: app, namespace: written}
      spec: {wait: false}
";
    pinned(
        &[
            ("apps/kustomization.yaml", "namespace: apps\nresources: [ks.yaml, hr.yaml]\n"),
            ("apps/ks.yaml", APP_KS),
            ("apps/hr.yaml", DB_HR),
        ],
        &flux_ks("./apps", extra),
        &[
            ks_rec("apps", "app", &["base", "elsewhere/other", "from-flux-patches"], Some(false)),
            hr_rec("apps", "db", &["from-legacy-json6902"]),
        ],
    );
}

#[test]
fn a_flux_component_adds_its_patch() {
    let component = "apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
  - target: {kind: HelmRelease}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: from-component, namespace: shared}
";
    pinned(
        &[
            ("apps/kustomization.yaml", "namespace: apps\nresources: [hr.yaml]\n"),
            ("apps/hr.yaml", DB_HR),
            ("components/dep/kustomization.yaml", component),
        ],
        &flux_ks("./apps", "  components: [../components/dep]\n"),
        &[hr_rec("apps", "db", &["operator", "shared/from-component"])],
    );
}

#[test]
fn a_folder_without_kustomization_lists_its_files_and_kustomized_subfolders() {
    pinned(
        &[
            ("cluster/ks.yaml", APP_KS),
            // A subfolder without a kustomization file is walked into.
            ("cluster/plain/hr.yaml", DB_HR),
            // One with a kustomization file is built as it says: only what it lists.
            ("cluster/kustomized/kustomization.yaml", "namespace: sub\nresources: [listed.yaml]\n"),
            ("cluster/kustomized/listed.yaml", &DB_HR.replace("name: db", "name: listed")),
            ("cluster/kustomized/unlisted.yaml", &DB_HR.replace("name: db", "name: unlisted")),
            // source-controller leaves this out of the artifact.
            ("cluster/.sops.yaml", "creation_rules:\n  - age: x\n"),
        ],
        &flux_ks("./cluster", ""),
        &[
            ks_rec("written", "app", &["base", "elsewhere/other"], Some(true)),
            hr_rec("", "db", &["operator"]),
            hr_rec("sub", "listed", &["operator"]),
        ],
    );
}

#[test]
fn target_namespace_overrides_every_namespace() {
    pinned(
        &[
            ("outer/kustomization.yaml", "namespace: outer\nresources: [../inner, hr.yaml]\n"),
            ("outer/hr.yaml", DB_HR),
            ("inner/kustomization.yaml", "namespace: inner\nresources: [ks.yaml]\n"),
            ("inner/ks.yaml", APP_KS),
        ],
        &flux_ks("./outer", "  targetNamespace: target\n"),
        &[ks_rec("target", "app", &["base", "elsewhere/other"], Some(true)), hr_rec("target", "db", &["operator"])],
    );
}

#[test]
fn post_build_substitutes_depends_on_names() {
    let ks = "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: ${APP}
  namespace: apps
spec:
  path: ./app
  dependsOn:
    - name: ${APP}-db
    - name: ${ABSENT:=fallback}
    - name: ${ABSENT:-other}
    - name: ${ABSENT:=${APP}-cache}
    - name: ${UNKNOWN}
";
    let disabled = "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: kept
  namespace: apps
  annotations:
    kustomize.toolkit.fluxcd.io/substitute: disabled
spec:
  path: ./app
  dependsOn:
    - name: ${APP}-db
";
    pinned(
        &[
            ("apps/kustomization.yaml", "resources: [ks.yaml, disabled.yaml]\n"),
            ("apps/ks.yaml", ks),
            ("apps/disabled.yaml", disabled),
        ],
        &flux_ks("./apps", "  postBuild:\n    substitute:\n      APP: web\n"),
        // A variable with no value here and no default is left as written: offline its value
        // (from substituteFrom or the cluster) is unknown.
        &[
            ks_rec("apps", "web", &["web-db", "fallback", "other", "web-cache", "${UNKNOWN}"], None),
            ks_rec("apps", "kept", &["${APP}-db"], None),
        ],
    );
}

#[test]
fn a_kustomize_component_patches_before_the_namespace_of_the_kustomization_using_it() {
    let component = "apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
  - target: {kind: HelmRelease, name: db}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: by-name}
  - target: {kind: HelmRelease, namespace: apps}
    patch: |
      - op: add
        path: /spec/dependsOn/-
        value: {name: by-later-namespace}
";
    pinned(
        &[
            ("apps/kustomization.yaml", "namespace: apps\nresources: [hr.yaml]\ncomponents: [../components/dep]\n"),
            ("apps/hr.yaml", DB_HR),
            ("components/dep/kustomization.yaml", component),
        ],
        &flux_ks("./apps", ""),
        &[hr_rec("apps", "db", &["operator", "by-name"])],
    );
}

/// The report tells a changed record from a missing or an extra one, and counts duplicates.
#[test]
fn differences_name_missing_extra_and_changed_records() {
    let a = ks_rec("apps", "a", &["x"], Some(true));
    let b = hr_rec("apps", "b", &[]);
    let kustomize = [a.clone(), a.clone(), b.clone()];
    assert!(differences(&kustomize, &[b.clone(), a.clone(), a.clone()]).is_empty());
    let changed = ks_rec("apps", "a", &["y"], Some(true));
    let extra = hr_rec("other", "c", &[]);
    let found = differences(&kustomize, &[a.clone(), changed, extra]);
    assert_eq!(
        found,
        [
            "different: kustomize gave Kustomization apps/a dependsOn=[x] wait=true; \
             fluxgate gave Kustomization apps/a dependsOn=[y] wait=true",
            "missing: kustomize gave HelmRelease apps/b dependsOn=[]; fluxgate did not",
            "extra: fluxgate gave HelmRelease other/c dependsOn=[]; kustomize did not",
        ]
    );
}

/// Flux's substitution on the forms the oracle models, and `$$` as a literal `$`.
#[test]
fn envsubst_substitutes_as_flux_does_and_leaves_unknown_variables() {
    let vars: HashMap<String, String> = [("A".to_string(), "1".to_string()), ("E".to_string(), String::new())].into();
    assert_eq!(
        envsubst("${A} ${A:=d} ${E:-d} ${E} ${B:=d} ${B-d} ${B} $${A} $A $", &vars),
        "1 1 d  d d ${B} ${A} $A $"
    );
    // Defaults may hold expressions; an unknown one inside stays as written.
    assert_eq!(
        envsubst("${B:=${A}} ${A:=${B}} ${B:-x-${A}-y} ${B:=${C}} ${B:=${A/x/y}} ${B:=d", &vars),
        "1 1 x-1-y ${C} ${B:=${A/x/y}} ${B:=d"
    );
}

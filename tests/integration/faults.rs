//! Fault injection over every real repository of `../shared/fleets`: real `dependsOn` mistakes
//! are written into copies of the repositories' own files, on objects a cluster really applies,
//! and `check` must find every one, with the right rule and object.
//!
//! Seeded and repeatable: `FLUXGATE_FAULT_SEED` (default 9) picks the objects, and
//! `FLUXGATE_FAULT_ROUNDS` (default 1 in `cargo test`) sets the rounds of each fault per
//! repository; `FLUXGATE_FAULT_ROUNDS=5 cargo test --release --test faults -- --nocapture` is
//! the full-size run. The corpus is `../shared/fleets`, or `$FLUXGATE_SHARED/fleets`. Each round of each fault edits a fresh copy of the touched files and
//! prints one row per repository.
//!
//! The faults: a cycle of 2 and of 3 objects (each edge in a different file), a typo in a
//! `dependsOn` name, a reference to an object of the other kind (a Kustomization naming a
//! HelmRelease or the reverse), and a child depending on its parent Kustomization once that
//! parent has `wait: true`. A fault a repository cannot hold (no HelmRelease for a cross-kind
//! reference, no parent applying a child in another file) is shown as `-` in its row.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use fluxgate::check::CheckOutput;
use fluxgate::manifests::{self, Loaded};
use fluxgate::object::{FluxKind, ObjectKey};
use fluxgate::policy::{Policy, Rule};
use serde_json::{Value, json};

/// The corpus: `fleets/` of `../shared` beside the project, as CI lays it out, or of
/// `FLUXGATE_SHARED` where it lies elsewhere.
fn corpus() -> PathBuf {
    std::env::var_os("FLUXGATE_SHARED")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"), PathBuf::from)
        .join("fleets")
}

/// splitmix64: a small seeded generator, so a failing round can be replayed exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Cycle2,
    Cycle3,
    Typo,
    CrossKind,
    WaitingParent,
}

const FAULTS: [Fault; 5] = [Fault::Cycle2, Fault::Cycle3, Fault::Typo, Fault::CrossKind, Fault::WaitingParent];

/// One object a cluster applies, with the document it is written in.
#[derive(Clone, Debug)]
struct Target {
    kind: FluxKind,
    key: ObjectKey,
    /// Path relative to the repository.
    file: PathBuf,
    line: usize,
    owner: Option<ObjectKey>,
}

/// An edit of one document: what to add to it.
struct Edit<'a> {
    target: &'a Target,
    depends_on: Option<ObjectKey>,
    wait: bool,
}

/// What the injected fault must produce.
enum Expect {
    /// A cycle finding of `kind` through at least one of these objects.
    Cycle(FluxKind, Vec<ObjectKey>),
    /// A dangling finding on `object` for `target`, whose message contains `hint`.
    Dangling(FluxKind, ObjectKey, ObjectKey, &'static str),
}

/// The clusters of a repository as lists of applied objects, each object once per cluster.
fn clusters(repo: &Path) -> Vec<Vec<Target>> {
    let loaded = manifests::load(&[repo.to_path_buf()]);
    let target = |l: &Loaded| Target {
        kind: l.object.kind,
        key: l.object.key.clone(),
        file: l.file.strip_prefix(repo).unwrap_or(&l.file).to_path_buf(),
        line: l.line,
        owner: l.object.owner.clone(),
    };
    // Each cluster on its own; and when `check` reads every cluster as one graph (a subset copy
    // without its root has one "cluster" per app folder), also all of them together, on keys
    // written once: editing one of two identical definitions would make the clusters conflict
    // and be checked one by one.
    let mut groups: Vec<Vec<&Loaded>> =
        loaded.groups.iter().map(|c| c.members.iter().map(|&i| &loaded.objects[i]).collect()).collect();
    if loaded.clusters.is_empty() {
        let mut count: std::collections::HashMap<(FluxKind, &ObjectKey), usize> = Default::default();
        for l in &loaded.objects {
            *count.entry((l.object.kind, &l.object.key)).or_default() += 1;
        }
        groups.push(loaded.objects.iter().filter(|l| count[&(l.object.kind, &l.object.key)] == 1).collect());
    }
    groups
        .into_iter()
        .map(|g| {
            let mut seen = HashSet::new();
            // A key still holding `${VAR}` (from a Secret's substituteFrom) is not what the
            // cluster would see: no edit can name it reliably.
            // The Kustomization a FluxInstance creates, or an object a ResourceSet renders, has no
            // document of its own to edit.
            g.into_iter()
                .filter(|l| !l.object.key.to_string().contains("${"))
                .filter(|l| written_as_itself(l))
                .filter(|l| seen.insert((l.object.kind, l.object.key.clone())))
                .map(target)
                .collect()
        })
        .filter(|g: &Vec<Target>| !g.is_empty())
        .collect()
}

/// Whether the document at `l`'s file and line is that object's own manifest.
fn written_as_itself(l: &Loaded) -> bool {
    let Ok(text) = std::fs::read_to_string(&l.file) else { return false };
    manifests::split_documents(&text).iter().find(|d| d.line == l.line).is_some_and(|d| {
        manifests::parse_document(d.text).is_ok_and(|v| fluxgate::object::kind_of(&v) == Some(l.object.kind))
    })
}

/// Picks `n` objects of `kind` in `cluster`, each in a different file.
fn pick<'a>(rng: &mut Rng, cluster: &'a [Target], kind: FluxKind, n: usize) -> Option<Vec<&'a Target>> {
    let pool: Vec<&Target> = cluster.iter().filter(|t| t.kind == kind).collect();
    for _ in 0..50 {
        let mut chosen: Vec<&Target> = Vec::new();
        for _ in 0..n {
            let t = pool.get(rng.below(pool.len().max(1)))?;
            if chosen.iter().any(|c| c.file == t.file) {
                break;
            }
            chosen.push(t);
        }
        if chosen.len() == n {
            return Some(chosen);
        }
    }
    None
}

/// A near miss of `name` that names nothing: one character dropped or doubled.
fn typo(rng: &mut Rng, name: &str, taken: &HashSet<String>) -> String {
    let chars: Vec<char> = name.chars().collect();
    for _ in 0..20 {
        let at = rng.below(chars.len());
        let mut t = chars.clone();
        if rng.below(2) == 0 && chars.len() > 3 {
            t.remove(at);
        } else {
            t.insert(at, chars[at]);
        }
        let t: String = t.into_iter().collect();
        if !taken.contains(&t) {
            return t;
        }
    }
    format!("{name}-typo")
}

/// Plans one fault in one cluster: the edits and what `check` must report.
fn plan<'a>(
    fault: Fault,
    rng: &mut Rng,
    cluster: &'a [Target],
    names: &HashSet<String>,
    keys: &HashSet<(FluxKind, ObjectKey)>,
) -> Option<(Vec<Edit<'a>>, Expect)> {
    let edge = |t: &'a Target, to: &ObjectKey| Edit { target: t, depends_on: Some(to.clone()), wait: false };
    match fault {
        Fault::Cycle2 | Fault::Cycle3 => {
            let n = if fault == Fault::Cycle2 { 2 } else { 3 };
            let kind = if rng.below(4) == 0 { FluxKind::HelmRelease } else { FluxKind::Kustomization };
            let objs = pick(rng, cluster, kind, n).or_else(|| pick(rng, cluster, FluxKind::Kustomization, n))?;
            let edits = (0..n).map(|i| edge(objs[i], &objs[(i + 1) % n].key)).collect();
            Some((edits, Expect::Cycle(objs[0].kind, objs.iter().map(|t| t.key.clone()).collect())))
        }
        Fault::Typo => {
            let kind = if rng.below(3) == 0 { FluxKind::HelmRelease } else { FluxKind::Kustomization };
            let objs = pick(rng, cluster, kind, 2).or_else(|| pick(rng, cluster, FluxKind::Kustomization, 2))?;
            let wrong = ObjectKey::new(&objs[1].key.namespace, typo(rng, &objs[1].key.name, names));
            let expect = Expect::Dangling(objs[0].kind, objs[0].key.clone(), wrong.clone(), "dangling dependsOn");
            Some((vec![edge(objs[0], &wrong)], expect))
        }
        Fault::CrossKind => {
            let (from, to) = if rng.below(2) == 0 {
                (FluxKind::Kustomization, FluxKind::HelmRelease)
            } else {
                (FluxKind::HelmRelease, FluxKind::Kustomization)
            };
            // The target's key must not also name an object of the dependent's own kind anywhere
            // in the repository (apps often give their Kustomization and HelmRelease one name).
            let mut pair = None;
            for _ in 0..30 {
                if let (Some(a), Some(b)) = (pick(rng, cluster, from, 1), pick(rng, cluster, to, 1))
                    && !keys.contains(&(from, b[0].key.clone()))
                    && a[0].file != b[0].file
                {
                    pair = Some((a[0], b[0]));
                    break;
                }
            }
            let (from, to) = pair?;
            let hint = if to.kind == FluxKind::HelmRelease { "a HelmRelease named" } else { "a Kustomization named" };
            Some((vec![edge(from, &to.key)], Expect::Dangling(from.kind, from.key.clone(), to.key.clone(), hint)))
        }
        Fault::WaitingParent => {
            let pairs: Vec<(&Target, &Target)> = cluster
                .iter()
                .filter(|c| c.kind == FluxKind::Kustomization)
                .filter_map(|c| {
                    let owner = c.owner.as_ref()?;
                    let p = cluster.iter().find(|p| p.kind == FluxKind::Kustomization && &p.key == owner)?;
                    (p.key != c.key && p.file != c.file).then_some((c, p))
                })
                .collect();
            if pairs.is_empty() {
                return None;
            }
            let (child, parent) = pairs[rng.below(pairs.len())];
            let edits = vec![edge(child, &parent.key), Edit { target: parent, depends_on: None, wait: true }];
            Some((edits, Expect::Cycle(FluxKind::Kustomization, vec![child.key.clone(), parent.key.clone()])))
        }
    }
}

/// Applies `edits` to the copy in `work`, each document rewritten as JSON (which is YAML).
/// Returns the original text of every touched file, to put back afterwards.
fn apply(work: &Path, edits: &[Edit<'_>]) -> BTreeMap<PathBuf, String> {
    let mut originals = BTreeMap::new();
    let mut by_file: BTreeMap<&Path, Vec<&Edit<'_>>> = BTreeMap::new();
    for e in edits {
        by_file.entry(e.target.file.as_path()).or_default().push(e);
    }
    for (file, edits) in by_file {
        let path = work.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = manifests::split_documents(&text);
        // Later documents first, so earlier byte offsets stay valid.
        let mut edits = edits;
        edits.sort_by_key(|e| std::cmp::Reverse(e.target.line));
        let mut out = text.clone();
        for e in edits {
            let doc = docs
                .iter()
                .find(|d| d.line == e.target.line)
                .unwrap_or_else(|| panic!("{}:{}: no document starts there", file.display(), e.target.line));
            let start = doc.text.as_ptr() as usize - text.as_ptr() as usize;
            let mut value: Value = manifests::parse_document(doc.text).unwrap();
            let spec = value.as_object_mut().unwrap().entry("spec").or_insert_with(|| json!({}));
            if let Some(to) = &e.depends_on {
                let list = spec.as_object_mut().unwrap().entry("dependsOn").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                list.as_array_mut().unwrap().push(json!({"name": &*to.name, "namespace": &*to.namespace}));
            }
            if e.wait {
                spec["wait"] = json!(true);
            }
            let mut replacement = serde_json::to_string(&value).unwrap();
            replacement.push('\n');
            out.replace_range(start..start + doc.text.len(), &replacement);
        }
        std::fs::write(&path, out).unwrap();
        originals.insert(path, text);
    }
    originals
}

fn found(out: &CheckOutput, expect: &Expect, baseline: &HashSet<String>) -> bool {
    out.findings.iter().filter(|f| !baseline.contains(&f.finding.message)).any(|f| {
        let f = &f.finding;
        match expect {
            // The reported cycle runs through the injected objects (a knot that existing edges
            // widen is reported through its smallest member, so one of them is enough).
            Expect::Cycle(kind, members) => {
                f.rule == Rule::Cycle
                    && f.kind == *kind
                    && f.cycle.as_ref().is_some_and(|c| members.iter().any(|m| c.contains(m)))
            }
            Expect::Dangling(kind, object, target, hint) => {
                f.rule == Rule::DanglingDependsOn
                    && f.kind == *kind
                    && &f.object == object
                    && f.target.as_ref() == Some(target)
                    && f.message.contains(hint)
            }
        }
    })
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Per fault: (injected, found).
type Tally = BTreeMap<Fault, (usize, usize)>;

fn run_repo(repo: &Path, seed: u64, rounds: usize, failures: &mut Vec<String>) -> Tally {
    let name = repo.file_name().unwrap().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join(&name);
    copy_tree(repo, &work);
    let policy = Policy::default();
    let baseline = fluxgate::check::check_paths(std::slice::from_ref(&work), &policy);
    let baseline: HashSet<String> = baseline.findings.iter().map(|f| f.finding.message.clone()).collect();
    let clusters = clusters(&work);
    let names: HashSet<String> = clusters.iter().flatten().map(|t| t.key.name.to_string()).collect();
    let keys: HashSet<(FluxKind, ObjectKey)> = clusters.iter().flatten().map(|t| (t.kind, t.key.clone())).collect();
    let mut rng =
        Rng(seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)));
    let mut tally = Tally::new();
    for fault in FAULTS {
        for round in 0..rounds {
            if clusters.is_empty() {
                break;
            }
            // Try a few clusters and picks before calling the fault impossible here.
            let mut planned = None;
            for _ in 0..20 {
                let cluster = &clusters[rng.below(clusters.len())];
                if let Some(p) = plan(fault, &mut rng, cluster, &names, &keys) {
                    planned = Some(p);
                    break;
                }
            }
            let Some((edits, expect)) = planned else { break };
            let originals = apply(&work, &edits);
            let out = fluxgate::check::check_paths(std::slice::from_ref(&work), &policy);
            let entry = tally.entry(fault).or_default();
            entry.0 += 1;
            if found(&out, &expect, &baseline) {
                entry.1 += 1;
            } else {
                let what: Vec<String> = edits
                    .iter()
                    .map(|e| {
                        let to = e.depends_on.as_ref().map(|k| format!(" dependsOn {k}")).unwrap_or_default();
                        let wait = if e.wait { " wait: true" } else { "" };
                        format!(
                            "{} {} ({}:{}){to}{wait}",
                            e.target.kind,
                            e.target.key,
                            e.target.file.display(),
                            e.target.line
                        )
                    })
                    .collect();
                failures.push(format!("{name} {fault:?} round {round}: not found: {}", what.join("; ")));
            }
            for (path, text) in originals {
                std::fs::write(path, text).unwrap();
            }
        }
    }
    tally
}

#[test]
fn every_injected_fault_is_found_in_every_fleet_repository() {
    let corpus = corpus();
    let seed: u64 = std::env::var("FLUXGATE_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(9);
    let rounds: usize = std::env::var("FLUXGATE_FAULT_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut repos: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}: the shared fleets are beside the project", corpus.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    repos.sort();
    assert!(repos.len() >= 20, "the corpus holds every fleet: {}", corpus.display());

    // Two workers: the repositories are independent.
    let results: Vec<(String, Tally, Vec<String>)> = std::thread::scope(|s| {
        let chunks: Vec<Vec<PathBuf>> = (0..2).map(|w| repos.iter().skip(w).step_by(2).cloned().collect()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|repo| {
                            let mut failures = Vec::new();
                            let tally = run_repo(repo, seed, rounds, &mut failures);
                            (repo.file_name().unwrap().to_string_lossy().into_owned(), tally, failures)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });

    println!("fault injection, seed {seed}, {rounds} round(s) per fault: found/injected");
    println!("{:<40} {:>7} {:>7} {:>7} {:>7} {:>7}", "repository", "cycle2", "cycle3", "typo", "cross", "wait");
    let mut failures = Vec::new();
    let (mut injected, mut detected) = (0, 0);
    let mut sorted = results;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tally, fails) in sorted {
        let cell = |f: Fault| tally.get(&f).map_or("-".to_string(), |(i, d)| format!("{d}/{i}"));
        println!(
            "{name:<40} {:>7} {:>7} {:>7} {:>7} {:>7}",
            cell(Fault::Cycle2),
            cell(Fault::Cycle3),
            cell(Fault::Typo),
            cell(Fault::CrossKind),
            cell(Fault::WaitingParent)
        );
        injected += tally.values().map(|t| t.0).sum::<usize>();
        detected += tally.values().map(|t| t.1).sum::<usize>();
        failures.extend(fails);
    }
    println!("total: {detected}/{injected} found");
    assert!(injected > 0);
    assert!(failures.is_empty(), "{} faults not found:\n{}", failures.len(), failures.join("\n"));
}

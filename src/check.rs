//! The offline checker: the rules over what each cluster of a checkout applies, as `fluxgate
//! check`, `fluxgate diff` and CI run them. The command line renders [`CheckOutput`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::graph::Graphs;
use crate::manifests::{self, LoadError, LoadOptions, Loaded, NotApplied};
use crate::object::{FluxKind, ObjectKey};
use crate::policy::Policy;
use crate::rules::{self, Finding, FindingKind};

/// A finding with the place its object is written.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    #[serde(flatten)]
    pub finding: Finding,
    pub file: PathBuf,
    pub line: usize,
}

/// What `check --format json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutput {
    pub objects: usize,
    pub findings: Vec<Located>,
    pub errors: Vec<LoadError>,
    /// Objects no cluster of the checkout applies: notes, not findings.
    #[serde(rename = "notApplied")]
    pub not_applied: Vec<NotApplied>,
    /// YAML files Flux would not apply as manifests (Helm charts, helmfiles, templates).
    pub skipped: usize,
    /// What could not be modelled offline (a ResourceSet's `inputsFrom`): notes, not errors.
    pub notes: Vec<LoadError>,
    /// The paths checked and how many YAML files they held, for the text report of a checkout
    /// without Flux objects; left out of JSON, whose `objects: 0` says it.
    #[serde(skip)]
    pub paths: Vec<PathBuf>,
    #[serde(skip)]
    pub files: usize,
}

impl CheckOutput {
    /// 0: clean or warnings only; 1: a deny-level finding; 2: input that could not be read
    /// (the result is incomplete, which outranks what was found in the rest).
    ///
    /// A checkout without any Flux object exits 0, with a warning in the text report
    /// ([`CheckOutput::has_no_flux_objects`]): nothing in it is wrong, and a repository can
    /// rightly hold none (a template before its first cluster, plain manifests run through the
    /// same CI step as the fleets); failing would make `check` unusable as a blanket step, and 2
    /// means input that cannot be read. The warning is there because the likelier cause is a
    /// wrong path, which a clean "0 objects checked" would hide.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() {
            2
        } else if self.findings.iter().any(|f| f.finding.is_deny()) {
            1
        } else {
            0
        }
    }

    /// Nothing read names a Flux Kustomization or HelmRelease: none checked, none left out as
    /// not applied, and no file that could not be read (which might have held some).
    pub fn has_no_flux_objects(&self) -> bool {
        self.objects == 0 && self.not_applied.is_empty() && self.errors.is_empty()
    }
}

/// Where each object is written: file and line.
pub type Places = HashMap<(FluxKind, ObjectKey), (PathBuf, usize)>;

/// Builds both graphs from `objects`; returns them with where each object is written.
pub fn build_graphs<'a>(objects: impl IntoIterator<Item = &'a Loaded>) -> (Graphs, Places) {
    let mut graphs = Graphs::default();
    let mut places = HashMap::new();
    for l in objects {
        graphs.get_mut(l.object.kind).upsert(Arc::new(l.object.clone()));
        places.insert((l.object.kind, l.object.key.clone()), (l.file.to_path_buf(), l.line));
    }
    (graphs, places)
}

/// Loads `paths` and runs the audit rules: on one graph, or on each cluster's graph when the
/// paths hold several clusters that give one name to different objects.
pub fn check_paths(paths: &[PathBuf], policy: &Policy) -> CheckOutput {
    check_paths_with(paths, policy, LoadOptions::default())
}

/// [`check_paths`] with loader options (`--include-unapplied`).
pub fn check_paths_with(paths: &[PathBuf], policy: &Policy, options: LoadOptions) -> CheckOutput {
    check_loaded(&manifests::load_with(paths, options), paths, policy)
}

/// The audit rules over what [`manifests::load_with`] read from `paths`: for callers that also
/// need the objects themselves (`diff` draws their graphs), without loading twice.
pub fn check_loaded(loaded: &manifests::Manifests, paths: &[PathBuf], policy: &Policy) -> CheckOutput {
    let groups: Vec<Vec<&Loaded>> = if loaded.clusters.is_empty() {
        vec![loaded.objects.iter().collect()]
    } else {
        loaded.clusters.iter().map(|c| c.members.iter().map(|&i| &loaded.objects[i]).collect()).collect()
    };
    let mut findings: Vec<Located> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for group in groups {
        let (graphs, places) = build_graphs(group);
        for kind in FluxKind::ALL {
            for finding in rules::audit_with(graphs.get(kind), Some(graphs.get(kind.other())), policy) {
                let (file, line) = finding
                    .kind
                    .flux()
                    .and_then(|k| places.get(&(k, finding.object.clone())))
                    .cloned()
                    .unwrap_or_default();
                // A base shared by several clusters is reported once.
                if seen.insert((finding.clone(), file.clone(), line)) {
                    findings.push(Located { finding, file, line });
                }
            }
        }
    }
    for finding in resource_set_findings(loaded, policy) {
        if seen.insert((finding.finding.clone(), finding.file.clone(), finding.line)) {
            findings.push(finding);
        }
    }
    let objects = loaded
        .objects
        .iter()
        .map(|l| (l.object.kind, &l.object.key, &l.file))
        .collect::<std::collections::HashSet<_>>()
        .len();
    CheckOutput {
        objects,
        findings,
        errors: loaded.errors.clone(),
        not_applied: loaded.not_applied.clone(),
        skipped: loaded.skipped,
        notes: loaded.notes.clone(),
        paths: paths.to_vec(),
        files: loaded.files,
    }
}

/// The problems of the ResourceSets' own `dependsOn`, which names objects of any kind: a
/// Kustomization, HelmRelease or ResourceSet that the set's cluster does not have (the set waits
/// for it forever), and ResourceSets waiting on one another, directly or through an object
/// another one renders (none of them ever renders). Dependencies on other kinds (a CRD, a
/// Secret) are not in the checkout's Flux graph and are not judged.
fn resource_set_findings(loaded: &manifests::Manifests, policy: &Policy) -> Vec<Located> {
    use crate::policy::{Action, Rule};
    let mut out = Vec::new();
    let sets = &loaded.resource_sets;
    // As for the other rules: one graph unless clusters give one name to different objects.
    let one_graph = loaded.clusters.is_empty();
    let in_group = |group: usize| -> Vec<&Loaded> {
        match loaded.groups.get(group) {
            Some(c) if !one_graph => c.members.iter().map(|&i| &loaded.objects[i]).collect(),
            _ => loaded.objects.iter().collect(),
        }
    };
    let same = |a: usize, b: usize| one_graph || a == b;
    let flux_kind = |d: &manifests::SetDependency| FluxKind::from_api_version(&d.api_version, &d.kind);
    let is_set =
        |d: &manifests::SetDependency| d.kind == "ResourceSet" && d.api_version.starts_with("fluxcd.controlplane.io/");
    let push = |out: &mut Vec<Located>, rule: Rule, set: &manifests::LoadedSet, target, cycle, message: String| {
        let action = policy.action(rule);
        if action != Action::Off {
            let finding = Finding {
                rule,
                kind: FindingKind::ResourceSet,
                object: set.key.clone(),
                target,
                cycle,
                action,
                message,
            };
            out.push(Located { finding, file: set.file.clone(), line: set.line });
        }
    };
    for set in sets {
        let objects = in_group(set.group);
        for dep in &set.depends_on {
            let exists = match flux_kind(dep) {
                Some(kind) => objects.iter().any(|l| l.object.kind == kind && l.object.key == dep.key),
                None if is_set(dep) => sets.iter().any(|s| same(s.group, set.group) && s.key == dep.key),
                None => continue,
            };
            if exists {
                continue;
            }
            let mut message = format!(
                "dangling dependsOn: ResourceSet {} depends on {} {}, which does not exist",
                set.key, dep.kind, dep.key
            );
            // The same name as another kind: the likely mistake.
            let other =
                objects.iter().find(|l| l.object.key == dep.key).map(|l| l.object.kind.to_string()).or_else(|| {
                    sets.iter().any(|s| same(s.group, set.group) && s.key == dep.key).then(|| "ResourceSet".to_string())
                });
            if let Some(other) = other {
                message.push_str(&format!("; a {other} named {} exists in {}", dep.key.name, dep.key.namespace));
            }
            push(&mut out, Rule::DanglingDependsOn, set, Some(dep.key.clone()), None, message);
        }
    }
    // Set A waits for set B when A depends on B or on an object B renders.
    let waits_for = |a: usize| -> Vec<usize> {
        let set = &sets[a];
        (0..sets.len())
            .filter(|&b| {
                let other = &sets[b];
                same(other.group, set.group)
                    && set.depends_on.iter().any(|d| {
                        (is_set(d) && d.key == other.key)
                            || flux_kind(d)
                                .is_some_and(|k| other.renders.iter().any(|(rk, rkey)| *rk == k && *rkey == d.key))
                    })
            })
            .collect()
    };
    let edges: Vec<Vec<usize>> = (0..sets.len()).map(waits_for).collect();
    let mut reported: std::collections::HashSet<Vec<usize>> = std::collections::HashSet::new();
    for start in 0..sets.len() {
        // The shortest way back to `start`, breadth first.
        let mut came_from: Vec<Option<usize>> = vec![None; sets.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        'search: while let Some(a) = queue.pop_front() {
            for &b in &edges[a] {
                if b == start {
                    found = Some(a);
                    break 'search;
                }
                if came_from[b].is_none() && b != start {
                    came_from[b] = Some(a);
                    queue.push_back(b);
                }
            }
        }
        let Some(mut last) = found else { continue };
        let mut path = vec![last];
        while last != start {
            last = came_from[last].expect("every node on the way has a predecessor");
            path.push(last);
        }
        path.reverse();
        let mut members = path.clone();
        members.sort_unstable();
        if !reported.insert(members) {
            continue;
        }
        let mut keys: Vec<ObjectKey> = path.iter().map(|&i| sets[i].key.clone()).collect();
        keys.push(sets[start].key.clone());
        let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let message = format!("dependsOn cycle between ResourceSets: {}", names.join(" -> "));
        push(&mut out, Rule::Cycle, &sets[start], None, Some(keys), message);
    }
    out
}

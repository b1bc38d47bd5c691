//! What a change to a repository does to its rollout: two [`Snapshot`]s (the graphs, waves,
//! critical paths and findings of a checkout, as `graph` and `check` see them) compared cluster
//! by cluster and kind by kind. Pure: the loading is in [`snapshot`], reading a Git revision in
//! [`git`], the command line and its renderings in `cli/diff.rs`.

pub mod git;
mod snapshot;

pub use snapshot::{ClusterGraph, SideFinding, Snapshot, WHOLE_CHECKOUT, snapshot};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use serde::Serialize;

use crate::check::Located;
use crate::graph::{GraphView, WorstCase};
use crate::manifests::LoadError;
use crate::object::FluxKind;

/// A value before and after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    pub before: T,
    pub after: T,
}

impl<T: PartialEq> Change<T> {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// The comparison of two checkouts.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Objects read on each side.
    pub objects: Change<usize>,
    /// Each cluster and kind whose graph changed, in order of cluster then kind.
    pub clusters: Vec<KindDiff>,
    /// Findings of HEAD that BASE does not have.
    #[serde(rename = "newFindings")]
    pub new_findings: Vec<FindingChange>,
    /// Findings of BASE that HEAD no longer has.
    #[serde(rename = "fixedFindings")]
    pub fixed_findings: Vec<FindingChange>,
    /// Files of HEAD that cannot be read and were readable (or absent) in BASE.
    #[serde(rename = "newErrors")]
    pub new_errors: Vec<LoadError>,
    /// Files that cannot be read on both sides: old problems, not this change's.
    #[serde(rename = "oldErrors")]
    pub old_errors: Vec<LoadError>,
}

/// A finding that appeared or went away, where it is written on its side and the clusters
/// whose graphs hold its object.
#[derive(Debug, Clone, Serialize)]
pub struct FindingChange {
    #[serde(flatten)]
    pub located: Located,
    pub clusters: Vec<String>,
}

/// What changed in one cluster's graph of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindDiff {
    pub cluster: String,
    pub kind: FluxKind,
    /// `added` (the cluster, or its graph of this kind, is new), `removed`, or `changed`.
    pub change: &'static str,
    #[serde(rename = "objectsAdded")]
    pub objects_added: Vec<ObjectChange>,
    #[serde(rename = "objectsRemoved")]
    pub objects_removed: Vec<ObjectChange>,
    /// Objects of one name and kind that left one namespace for another (kustomize's
    /// `namespace:`, a `targetNamespace`): compared as one object, so their edges and waves
    /// are not reported as removed and added.
    pub moved: Vec<Moved>,
    /// The most newly waiting first.
    #[serde(rename = "edgesAdded")]
    pub edges_added: Vec<AddedEdge>,
    #[serde(rename = "edgesRemoved")]
    pub edges_removed: Vec<EdgeChange>,
    pub waves: WaveDiff,
    /// The longest chain, dependencies first.
    #[serde(rename = "criticalPath")]
    pub critical_path: Change<Vec<String>>,
    #[serde(rename = "worstCase")]
    pub worst_case: Change<WorstCase>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObjectChange {
    pub id: String,
    /// Its wave on its side; `None` in a cycle or behind one.
    pub wave: Option<u32>,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Moved {
    pub from: String,
    pub to: String,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeChange {
    pub from: String,
    pub to: String,
    /// `dependsOn` or `wait`.
    pub kind: &'static str,
}

/// An edge HEAD adds, with its blast radius: the objects that wait, directly or through
/// others, on its target.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AddedEdge {
    #[serde(flatten)]
    pub edge: EdgeChange,
    /// Objects of HEAD that wait, transitively, on the target.
    pub waiting: usize,
    /// Of those, the ones that did not wait on it in BASE: what this change puts behind it.
    #[serde(rename = "newlyWaiting")]
    pub newly_waiting: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaveDiff {
    /// The number of waves.
    pub count: Change<usize>,
    /// Objects on both sides whose wave changed.
    pub moved: Vec<WaveMove>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaveMove {
    pub id: String,
    pub before: Option<u32>,
    pub after: Option<u32>,
}

impl KindDiff {
    /// Whether anything a reviewer should see changed.
    pub fn is_empty(&self) -> bool {
        self.objects_added.is_empty()
            && self.objects_removed.is_empty()
            && self.moved.is_empty()
            && self.edges_added.is_empty()
            && self.edges_removed.is_empty()
            && !self.waves.count.changed()
            && self.waves.moved.is_empty()
            && !self.critical_path.changed()
            && !self.worst_case.changed()
    }
}

impl Diff {
    /// Whether HEAD adds a deny-level finding.
    pub fn adds_denial(&self) -> bool {
        self.new_findings.iter().any(|f| f.located.finding.is_deny())
    }

    /// 2: HEAD has files that cannot be read and BASE could (the comparison is incomplete, and
    /// a file Flux cannot apply is a failure of its own); 1: HEAD adds a deny-level finding;
    /// 0 otherwise, whatever problems both sides share, so that a repository with old problems
    /// can adopt `diff` before fixing them.
    pub fn exit_code(&self) -> u8 {
        if !self.new_errors.is_empty() {
            2
        } else if self.adds_denial() {
            1
        } else {
            0
        }
    }

    /// Whether the change touches nothing fluxgate looks at.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
            && self.new_findings.is_empty()
            && self.fixed_findings.is_empty()
            && self.new_errors.is_empty()
    }
}

/// A finding's identity across the two sides: what it is about, not its wording (a hint such as
/// "did you mean" changes as objects come and go) nor where it is written (lines shift). A
/// cycle is the set of its members: the search may enter it elsewhere on the other side.
fn identity(l: &Located) -> (String, String, String, Option<String>, BTreeSet<String>) {
    let f = &l.finding;
    (
        f.rule.as_str().to_string(),
        f.kind.to_string(),
        f.object.to_string(),
        f.target.as_ref().map(ToString::to_string),
        f.cycle.iter().flatten().map(ToString::to_string).collect(),
    )
}

/// Loads both sides at once, BASE on a thread of its own: the two loads share nothing (names are
/// interned under a lock), so a CI runner's second core halves the wait.
pub fn snapshots(
    base: &std::path::Path,
    head: &std::path::Path,
    policy: &crate::policy::Policy,
    options: &crate::manifests::LoadOptions,
) -> (Snapshot, Snapshot) {
    std::thread::scope(|scope| {
        let before = scope.spawn(|| snapshot(base, policy, options.clone()));
        let after = snapshot(head, policy, options.clone());
        (before.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), after)
    })
}

/// Compares two snapshots.
pub fn diff(base: &Snapshot, head: &Snapshot) -> Diff {
    let keys: BTreeSet<&(String, FluxKind)> = base.graphs.keys().chain(head.graphs.keys()).collect();
    let clusters = keys
        .into_iter()
        .map(|key| kind_diff(&key.0, key.1, base.graphs.get(key), head.graphs.get(key)))
        .filter(|d| !d.is_empty())
        .collect();

    let changes = |from: &Snapshot, against: &Snapshot| -> Vec<FindingChange> {
        let known: HashSet<_> = against.findings.iter().map(|f| identity(&f.located)).collect();
        let mut seen = HashSet::new();
        from.findings
            .iter()
            .filter(|f| {
                let id = identity(&f.located);
                !known.contains(&id) && seen.insert(id)
            })
            .map(|f| FindingChange { located: f.located.clone(), clusters: f.clusters.clone() })
            .collect()
    };
    let base_errors: HashSet<(&PathBuf, &str)> = base.errors.iter().map(|e| (&e.file, e.message.as_str())).collect();
    let (old_errors, new_errors) =
        head.errors.iter().cloned().partition(|e| base_errors.contains(&(&e.file, e.message.as_str())));
    Diff {
        objects: Change { before: base.objects, after: head.objects },
        clusters,
        new_findings: changes(head, base),
        fixed_findings: changes(base, head),
        new_errors,
        old_errors,
    }
}

fn empty_view(kind: FluxKind) -> GraphView {
    GraphView {
        cluster: None,
        kind,
        nodes: Vec::new(),
        edges: Vec::new(),
        waves: Vec::new(),
        critical_path: Vec::new(),
        cycles: Vec::new(),
        worst_case: WorstCase { seconds: 0, path: Vec::new() },
    }
}

/// Everything that waits, directly or transitively, on each of `targets`, in a graph given by
/// its edges (dependent -> dependency).
fn waiting_on<'a>(edges: impl Iterator<Item = (&'a str, &'a str)>, target: &str) -> HashSet<&'a str> {
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in edges {
        dependents.entry(to).or_default().push(from);
    }
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([target]);
    while let Some(n) = queue.pop_front() {
        for &d in dependents.get(n).into_iter().flatten() {
            if d != target && seen.insert(d) {
                queue.push_back(d);
            }
        }
    }
    seen
}

fn kind_diff(cluster: &str, kind: FluxKind, base: Option<&ClusterGraph>, head: Option<&ClusterGraph>) -> KindDiff {
    let empty = empty_view(kind);
    let no_places = HashMap::new();
    let (b, b_places) = base.map_or((&empty, &no_places), |g| (&g.view, &g.places));
    let (h, h_places) = head.map_or((&empty, &no_places), |g| (&g.view, &g.places));
    let objects = |v: &'_ GraphView| -> BTreeMap<String, Option<u32>> {
        v.nodes.iter().filter(|n| !n.missing).map(|n| (n.id.clone(), n.wave)).collect()
    };
    let (b_objs, h_objs) = (objects(b), objects(h));
    let place = |places: &HashMap<String, (PathBuf, usize)>, id: &str| places.get(id).cloned().unwrap_or_default();

    // A name that leaves exactly one namespace for exactly one other is the same object moved.
    let name_of = |id: &str| id.split_once('/').map_or(id, |(_, n)| n).to_string();
    let gone: Vec<&String> = b_objs.keys().filter(|id| !h_objs.contains_key(*id)).collect();
    let new: Vec<&String> = h_objs.keys().filter(|id| !b_objs.contains_key(*id)).collect();
    let mut by_name: HashMap<String, (Vec<&String>, Vec<&String>)> = HashMap::new();
    for &id in &gone {
        by_name.entry(name_of(id)).or_default().0.push(id);
    }
    for &id in &new {
        by_name.entry(name_of(id)).or_default().1.push(id);
    }
    let renamed: HashMap<&str, &str> = by_name
        .values()
        .filter_map(|(g, n)| match (g.as_slice(), n.as_slice()) {
            ([g], [n]) => Some((g.as_str(), n.as_str())),
            _ => None,
        })
        .collect();
    let in_head = |id: &'_ str| -> String { renamed.get(id).map_or(id, |n| *n).to_string() };
    let mut moved: Vec<Moved> = renamed
        .iter()
        .map(|(from, to)| {
            let (file, line) = place(h_places, to);
            Moved { from: from.to_string(), to: to.to_string(), file, line }
        })
        .collect();
    moved.sort_by(|a, b| a.to.cmp(&b.to));
    let moved_to: HashSet<&str> = renamed.values().copied().collect();
    let objects_added = new
        .iter()
        .filter(|id| !moved_to.contains(id.as_str()))
        .map(|id| {
            let (file, line) = place(h_places, id);
            ObjectChange { id: id.to_string(), wave: h_objs[*id], file, line }
        })
        .collect();
    let objects_removed = gone
        .iter()
        .filter(|id| !renamed.contains_key(id.as_str()))
        .map(|id| {
            let (file, line) = place(b_places, id);
            ObjectChange { id: id.to_string(), wave: b_objs[*id], file, line }
        })
        .collect();

    // Base edges named as HEAD names their ends.
    let b_edges: Vec<EdgeChange> =
        b.edges.iter().map(|e| EdgeChange { from: in_head(&e.from), to: in_head(&e.to), kind: e.kind }).collect();
    let h_edges: Vec<EdgeChange> =
        h.edges.iter().map(|e| EdgeChange { from: e.from.clone(), to: e.to.clone(), kind: e.kind }).collect();
    let b_set: HashSet<&EdgeChange> = b_edges.iter().collect();
    let h_set: HashSet<&EdgeChange> = h_edges.iter().collect();
    let mut radius: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut edges_added = Vec::new();
    for e in h_edges.iter().filter(|e| !b_set.contains(e)) {
        let (waiting, newly_waiting) = *radius.entry(e.to.as_str()).or_insert_with(|| {
            let now = waiting_on(h_edges.iter().map(|e| (e.from.as_str(), e.to.as_str())), &e.to);
            let before = waiting_on(b_edges.iter().map(|e| (e.from.as_str(), e.to.as_str())), &e.to);
            (now.len(), now.iter().filter(|n| !before.contains(*n)).count())
        });
        edges_added.push(AddedEdge { edge: e.clone(), waiting, newly_waiting });
    }
    // The edges that put the most objects behind their target first: a new object's own
    // edges (nothing waits on it yet) come after an existing object's new dependency.
    edges_added.sort_by(|a, b| b.newly_waiting.cmp(&a.newly_waiting).then_with(|| a.edge.cmp(&b.edge)));
    let mut edges_removed: Vec<EdgeChange> = b_edges.iter().filter(|e| !h_set.contains(e)).cloned().collect();
    edges_removed.sort();
    edges_removed.dedup();

    let mut wave_moves: Vec<WaveMove> = b_objs
        .iter()
        .filter_map(|(id, &before)| {
            let id = in_head(id);
            let &after = h_objs.get(&id)?;
            (before != after).then_some(WaveMove { id, before, after })
        })
        .collect();
    wave_moves.sort_by(|a, b| a.id.cmp(&b.id));

    KindDiff {
        cluster: cluster.to_string(),
        kind,
        change: match (base, head) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ => "changed",
        },
        objects_added,
        objects_removed,
        moved,
        edges_added,
        edges_removed,
        waves: WaveDiff { count: Change { before: b.waves.len(), after: h.waves.len() }, moved: wave_moves },
        critical_path: Change { before: b.critical_path.clone(), after: h.critical_path.clone() },
        worst_case: Change { before: b.worst_case.clone(), after: h.worst_case.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{EdgeView, NodeView};
    use crate::object::ObjectKey;
    use crate::policy::{Action, Rule};
    use crate::rules::{Finding, FindingKind};

    /// One cluster's Kustomization graph: objects with their waves, then dependsOn edges.
    fn side(objects: &[(&str, Option<u32>)], edges: &[(&str, &str)]) -> Snapshot {
        let view = GraphView {
            nodes: objects
                .iter()
                .map(|(id, wave)| NodeView { id: id.to_string(), wave: *wave, missing: false, in_cycle: false })
                .collect(),
            edges: edges
                .iter()
                .map(|(from, to)| EdgeView {
                    from: from.to_string(),
                    to: to.to_string(),
                    kind: "dependsOn",
                    in_cycle: false,
                })
                .collect(),
            ..empty_view(FluxKind::Kustomization)
        };
        let mut s = Snapshot::default();
        s.graphs.insert(("prod".into(), FluxKind::Kustomization), ClusterGraph { view, places: HashMap::new() });
        s
    }

    fn finding(rule: Rule, target: Option<&str>, cycle: &[&str], message: &str, line: usize) -> SideFinding {
        let key = |id: &str| {
            let (ns, name) = id.split_once('/').unwrap();
            ObjectKey::new(ns, name)
        };
        SideFinding {
            located: Located {
                finding: Finding {
                    rule,
                    kind: FindingKind::Kustomization,
                    object: key("ns/app"),
                    target: target.map(key),
                    cycle: (!cycle.is_empty()).then(|| cycle.iter().map(|c| key(c)).collect()),
                    action: Action::Deny,
                    message: message.into(),
                },
                file: "apps.yaml".into(),
                line,
            },
            clusters: vec!["prod".into()],
        }
    }

    #[test]
    fn a_name_is_a_namespace_move_only_when_it_leaves_one_namespace_for_one_other() {
        let base = side(&[("a/x", Some(0)), ("b/x", Some(0)), ("a/y", Some(0))], &[]);
        let head = side(&[("c/x", Some(0)), ("c/y", Some(0))], &[]);
        let d = diff(&base, &head);
        let k = &d.clusters[0];
        // y left a for c: a move. x left two namespaces: which one went to c is not known.
        assert_eq!(k.moved.iter().map(|m| (m.from.as_str(), m.to.as_str())).collect::<Vec<_>>(), [("a/y", "c/y")]);
        assert_eq!(k.objects_removed.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["a/x", "b/x"]);
        assert_eq!(k.objects_added.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["c/x"]);
    }

    #[test]
    fn blast_radius_counts_everything_behind_the_target_and_newly_only_what_was_not() {
        // b -> a -> t already; HEAD adds c -> t and d -> c.
        let base = side(&[("n/t", Some(0)), ("n/a", Some(1)), ("n/b", Some(2))], &[("n/a", "n/t"), ("n/b", "n/a")]);
        let head = side(
            &[("n/t", Some(0)), ("n/a", Some(1)), ("n/b", Some(2)), ("n/c", Some(1)), ("n/d", Some(2))],
            &[("n/a", "n/t"), ("n/b", "n/a"), ("n/c", "n/t"), ("n/d", "n/c")],
        );
        let d = diff(&base, &head);
        let added = &d.clusters[0].edges_added;
        let to_t = added.iter().find(|e| e.edge.to == "n/t").unwrap();
        assert_eq!((to_t.waiting, to_t.newly_waiting), (4, 2), "a, b, c, d wait on t; c and d newly");
        let to_c = added.iter().find(|e| e.edge.to == "n/c").unwrap();
        assert_eq!((to_c.waiting, to_c.newly_waiting), (1, 1));
        assert_eq!(added[0].edge.to, "n/t", "the widest blast radius first");
    }

    #[test]
    fn a_finding_is_the_same_whatever_its_wording_line_or_where_its_cycle_starts() {
        let mut base = side(&[("ns/app", Some(0))], &[]);
        let mut head = side(&[("ns/app", Some(0))], &[]);
        base.findings = vec![
            finding(Rule::DanglingDependsOn, Some("ns/db"), &[], "dangling; did you mean ns/dbs?", 3),
            finding(Rule::Cycle, None, &["ns/app", "ns/b", "ns/app"], "cycle: app -> b -> app", 3),
        ];
        head.findings = vec![
            finding(Rule::DanglingDependsOn, Some("ns/db"), &[], "dangling", 9),
            finding(Rule::Cycle, None, &["ns/b", "ns/app", "ns/b"], "cycle: b -> app -> b", 9),
            finding(Rule::DanglingDependsOn, Some("ns/cache"), &[], "dangling", 9),
        ];
        let d = diff(&base, &head);
        assert_eq!(d.new_findings.len(), 1);
        assert_eq!(d.new_findings[0].located.finding.target, Some(ObjectKey::new("ns", "cache")));
        assert!(d.fixed_findings.is_empty());
        assert_eq!(d.exit_code(), 1);
        assert!(d.clusters.is_empty(), "no graph change");
    }
}

//! The analysis: from a snapshot of the store, each object's state and, for every object waiting
//! for its dependencies, the chains down to the objects really holding it up. Pure: no lock, no
//! clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::graph::{EdgeKind, Graph, NodeId};
use crate::object::{FluxKind, FluxObject, ObjectKey};

use super::*;

/// Why a root holds its dependents up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Failed,
    Suspended,
    /// Named in a `dependsOn` (or a health check) but does not exist.
    Missing,
    Stale,
    Progressing,
    /// Exists but has no `Ready` condition yet.
    Unknown,
    /// On a `dependsOn` cycle: it can never become ready.
    Cycle,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Failed,
        Cause::Suspended,
        Cause::Missing,
        Cause::Stale,
        Cause::Progressing,
        Cause::Unknown,
        Cause::Cycle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Failed => "failed",
            Cause::Suspended => "suspended",
            Cause::Missing => "missing",
            Cause::Stale => "stale",
            Cause::Progressing => "progressing",
            Cause::Unknown => "unknown",
            Cause::Cycle => "cycle",
        }
    }
}

/// One hop of a chain: the object reached and the kind of edge that led to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub id: ObjectKey,
    /// `dependsOn` or `wait`; absent on the first hop (the object itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

/// An object holding up a waiting object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Root {
    /// The root object (for a cycle: the member the chain reaches first).
    pub id: ObjectKey,
    pub cause: Cause,
    /// From the waiting object to the root, both included.
    pub chain: Vec<Hop>,
    /// The root's own `Ready` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a cycle: the cycle, first member repeated at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<ObjectKey>>,
}

/// The status of one object (or of a missing `dependsOn` target) in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectReport {
    pub kind: FluxKind,
    pub id: ObjectKey,
    pub state: State,
    /// The wave the object reconciles in; `None` on or behind a cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the `Ready` condition last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
    /// For waiting objects: the objects really holding them up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<Root>,
    /// The object's explicit dependencies.
    #[serde(rename = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ObjectKey>,
    /// `metadata.uid`, for Events about the object (not shown).
    #[serde(skip)]
    pub uid: Option<String>,
}

impl ObjectReport {
    /// Whether the object is stuck: failed, waiting, or stale. Progressing (Flux is working on
    /// it), suspended (someone chose that) and unknown (just created, or a dump without status)
    /// are not.
    pub fn is_stuck(&self) -> bool {
        matches!(self.state, State::Failed | State::Waiting | State::Stale)
    }
}

/// The status of every object of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindReport {
    /// The cluster (its roots' folder) when files hold several that reuse names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub kind: FluxKind,
    /// Objects sorted by key.
    pub objects: Vec<ObjectReport>,
    /// Every cycle, first member repeated at the end.
    pub cycles: Vec<Vec<ObjectKey>>,
    /// Targets named by a `dependsOn` or health check that do not exist.
    pub missing: Vec<ObjectKey>,
    /// The longest `dependsOn` chain, dependencies first: it bounds a full rollout.
    #[serde(rename = "criticalPath")]
    pub critical_path: Vec<ObjectKey>,
    pub rollout: Rollout,
}

impl KindReport {
    pub fn get(&self, key: &ObjectKey) -> Option<&ObjectReport> {
        self.objects.binary_search_by(|o| o.id.cmp(key)).ok().map(|i| &self.objects[i])
    }

    /// How many objects are in each state.
    pub fn counts(&self) -> BTreeMap<State, usize> {
        let mut counts = BTreeMap::new();
        for o in &self.objects {
            *counts.entry(o.state).or_default() += 1;
        }
        counts
    }
}

/// The status of both kinds: what `GET /status` and `fluxgate status --format json` give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub kinds: Vec<KindReport>,
}

impl StatusReport {
    pub fn kind(&self, kind: FluxKind) -> Option<&KindReport> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

/// Builds the report of one kind from its present objects and their statuses. An object without
/// a recorded status is `unknown`.
pub fn analyze(
    kind: FluxKind,
    objects: impl IntoIterator<Item = Arc<FluxObject>>,
    statuses: &HashMap<ObjectKey, ObjectStatus>,
) -> KindReport {
    let graph = Graph::from_objects(kind, objects);
    let waves = graph.waves();
    let sccs = graph.cycles();
    let mut cycle_of: HashMap<NodeId, usize> = HashMap::new();
    for (i, scc) in sccs.iter().enumerate() {
        for &m in &scc.members {
            cycle_of.insert(m, i);
        }
    }
    let unknown = ObjectStatus::default();
    let status_of = |id: NodeId| statuses.get(graph.key(id)).unwrap_or(&unknown);
    let state_of = |id: NodeId| status_of(id).state();
    let cycles: Vec<Vec<ObjectKey>> =
        sccs.iter().map(|s| s.cycle.iter().map(|&id| graph.key(id).clone()).collect()).collect();

    let mut objects: Vec<ObjectReport> = graph
        .present_ids()
        .map(|id| {
            let status = status_of(id);
            let state = status.state();
            let roots = if state == State::Waiting {
                root_causes(&graph, id, &state_of, &cycle_of, &cycles, statuses)
            } else {
                Vec::new()
            };
            ObjectReport {
                kind,
                id: graph.key(id).clone(),
                state,
                wave: waves[id as usize],
                reason: status.ready.as_ref().map(|r| r.reason.clone()).filter(|r| !r.is_empty()),
                message: status.message().map(str::to_string),
                since: status.ready.as_ref().and_then(|r| r.last_transition_time.clone()),
                in_cycle: cycle_of.contains_key(&id),
                roots,
                depends_on: graph.deps(id).map(|d| graph.key(d).clone()).collect(),
                uid: graph.object(id).and_then(|o| o.uid.as_ref()).map(ToString::to_string),
            }
        })
        .collect();
    objects.sort_by(|a, b| a.id.cmp(&b.id));
    let mut missing: Vec<ObjectKey> = graph
        .node_ids()
        .filter(|&id| !graph.is_present(id))
        .filter(|&id| graph.dependents(id).next().is_some() || graph.waited_by(id).next().is_some())
        .map(|id| graph.key(id).clone())
        .collect();
    missing.sort();
    let critical_path = graph.critical_path(&waves).into_iter().map(|id| graph.key(id).clone()).collect();
    let (worst, path) = crate::graph::worst_case(&graph, &waves, |key| {
        statuses.get(key).and_then(|s| s.timeout).unwrap_or(MIN_TIMEOUT)
    });
    let rollout = Rollout {
        worst_case_seconds: worst.as_secs(),
        worst_case_path: path.into_iter().map(|id| graph.key(id).clone()).collect(),
        wave_seconds: wave_seconds(&graph, &waves, statuses),
    };
    KindReport { cluster: None, kind, objects, cycles, missing, critical_path, rollout }
}

/// The roots holding up the waiting object `start`: a breadth-first walk along its out-edges
/// (`dependsOn` and implicit waits) that goes on through waiting objects and stops at the first
/// object on each path that is not ready and not waiting (or is missing, or on a cycle). Ready
/// objects are not followed: they hold nothing up. Breadth-first gives each root its shortest
/// chain, and each root (each cycle) is reported once.
fn root_causes(
    graph: &Graph,
    start: NodeId,
    state_of: &impl Fn(NodeId) -> State,
    cycle_of: &HashMap<NodeId, usize>,
    cycles: &[Vec<ObjectKey>],
    statuses: &HashMap<ObjectKey, ObjectStatus>,
) -> Vec<Root> {
    let mut parent: HashMap<NodeId, (NodeId, EdgeKind)> = HashMap::new();
    let mut seen: HashSet<NodeId> = HashSet::from([start]);
    let mut queue = VecDeque::from([start]);
    let mut roots = Vec::new();
    let mut cycles_reported: HashSet<usize> = HashSet::new();
    let chain_to = |parent: &HashMap<NodeId, (NodeId, EdgeKind)>, mut id: NodeId| {
        let mut hops = Vec::new();
        while let Some(&(from, kind)) = parent.get(&id) {
            hops.push(Hop { id: graph.key(id).clone(), via: Some(edge_name(kind)) });
            id = from;
        }
        hops.push(Hop { id: graph.key(id).clone(), via: None });
        hops.reverse();
        hops
    };
    let cycle_root = |id: NodeId, chain: Vec<Hop>, index: usize| Root {
        id: graph.key(id).clone(),
        cause: Cause::Cycle,
        chain,
        message: None,
        cycle: Some(cycles[index].clone()),
    };
    if let Some(&index) = cycle_of.get(&start) {
        cycles_reported.insert(index);
        roots.push(cycle_root(start, chain_to(&parent, start), index));
    }
    while let Some(id) = queue.pop_front() {
        for (next, kind) in graph.out_edges(id) {
            if !seen.insert(next) {
                continue;
            }
            parent.insert(next, (id, kind));
            if !graph.is_present(next) {
                roots.push(Root {
                    id: graph.key(next).clone(),
                    cause: Cause::Missing,
                    chain: chain_to(&parent, next),
                    message: None,
                    cycle: None,
                });
                continue;
            }
            if let Some(&index) = cycle_of.get(&next) {
                if cycles_reported.insert(index) {
                    roots.push(cycle_root(next, chain_to(&parent, next), index));
                }
                continue;
            }
            let cause = match state_of(next) {
                State::Ready => continue,
                State::Waiting => {
                    queue.push_back(next);
                    continue;
                }
                State::Failed => Cause::Failed,
                State::Suspended => Cause::Suspended,
                State::Stale => Cause::Stale,
                State::Progressing => Cause::Progressing,
                State::Unknown => Cause::Unknown,
            };
            roots.push(Root {
                id: graph.key(next).clone(),
                cause,
                chain: chain_to(&parent, next),
                message: statuses.get(graph.key(next)).and_then(|s| s.message()).map(str::to_string),
                cycle: None,
            });
        }
    }
    // Nearest blockers first, then by name: a stable order for people and for tests.
    roots.sort_by(|a, b| a.chain.len().cmp(&b.chain.len()).then_with(|| a.id.cmp(&b.id)));
    roots
}

fn edge_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::DependsOn => "dependsOn",
        EdgeKind::Wait => "wait",
    }
}

/// A chain as people read it: `a -> b -(wait)-> c`.
pub fn format_chain(chain: &[Hop]) -> String {
    let mut s = String::new();
    for hop in chain {
        match hop.via {
            None => {}
            Some("dependsOn") => s.push_str(" -> "),
            Some(via) => {
                s.push_str(" -(");
                s.push_str(via);
                s.push_str(")-> ");
            }
        }
        s.push_str(&hop.id.to_string());
    }
    s
}

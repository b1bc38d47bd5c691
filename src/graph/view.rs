//! What `fluxgate graph`, `fluxgate diff` and the status page show of one graph: its objects by
//! wave (what can reconcile in parallel), its edges, the critical path (the longest chain, which
//! bounds a full rollout), its cycles, and the worst-case rollout time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{EdgeKind, Graph, NodeId};
use crate::object::{FluxKind, ObjectKey};

/// The graph as `fluxgate graph --format json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GraphView {
    /// The cluster (its roots' folder) when a repository holds several that reuse names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub kind: FluxKind,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// Wave k holds the objects that can reconcile once waves 0..k are ready.
    pub waves: Vec<Vec<String>>,
    /// The longest chain, dependencies first: its length is the number of sequential steps.
    #[serde(rename = "criticalPath")]
    pub critical_path: Vec<String>,
    pub cycles: Vec<Vec<String>>,
    /// The worst-case time of a full rollout and its chain.
    #[serde(rename = "worstCase")]
    pub worst_case: WorstCase,
}

/// The slowest chain of a rollout, each object taking its whole time budget (`spec.timeout`, else
/// Flux's default: the interval minus 30 s, at least 30 s).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorstCase {
    pub seconds: u64,
    /// Dependencies first.
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    /// `None` for members of a cycle and what depends on them, and for dangling targets.
    pub wave: Option<u32>,
    pub missing: bool,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    /// `dependsOn` or `wait`.
    pub kind: &'static str,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
}

/// Computes the view of one graph; `budgets` holds each object's time budget (30 s when absent).
pub fn view(graph: &Graph, budgets: &HashMap<ObjectKey, Duration>) -> GraphView {
    let waves = graph.waves();
    let sccs = graph.cycles();
    let in_cycle: HashSet<NodeId> = sccs.iter().flat_map(|s| s.members.iter().copied()).collect();
    let mut ids: Vec<NodeId> =
        graph.node_ids().filter(|&id| graph.is_present(id) || graph.dependents(id).next().is_some()).collect();
    ids.sort_by(|a, b| graph.key(*a).cmp(graph.key(*b)));
    let name = |id: NodeId| graph.key(id).to_string();
    let nodes = ids
        .iter()
        .map(|&id| NodeView {
            id: name(id),
            wave: if graph.is_present(id) { waves[id as usize] } else { None },
            missing: !graph.is_present(id),
            in_cycle: in_cycle.contains(&id),
        })
        .collect();
    let mut edges = Vec::new();
    for &id in &ids {
        // dependsOn edges in the order written, then wait edges by key: the same picture
        // whatever order the objects arrived in.
        let mut out: Vec<(NodeId, EdgeKind)> = graph.out_edges(id).collect();
        let first_wait = out.iter().position(|(_, k)| *k == EdgeKind::Wait).unwrap_or(out.len());
        out[first_wait..].sort_by(|a, b| graph.key(a.0).cmp(graph.key(b.0)));
        for (to, kind) in out {
            edges.push(EdgeView {
                from: name(id),
                to: name(to),
                kind: match kind {
                    EdgeKind::DependsOn => "dependsOn",
                    EdgeKind::Wait => "wait",
                },
                in_cycle: in_cycle.contains(&id) && in_cycle.contains(&to),
            });
        }
    }
    let depth = waves.iter().flatten().max().map_or(0, |m| m + 1);
    let mut wave_lists = vec![Vec::new(); depth as usize];
    for &id in &ids {
        if let Some(w) = waves[id as usize].filter(|_| graph.is_present(id)) {
            wave_lists[w as usize].push(name(id));
        }
    }
    GraphView {
        cluster: None,
        kind: graph.kind(),
        nodes,
        edges,
        waves: wave_lists,
        critical_path: graph.critical_path(&waves).into_iter().map(name).collect(),
        cycles: sccs.iter().map(|s| s.cycle.iter().map(|&id| name(id)).collect()).collect(),
        worst_case: {
            let (time, path) =
                worst_case(graph, &waves, |k| budgets.get(k).copied().unwrap_or(Duration::from_secs(30)));
            WorstCase { seconds: time.as_secs(), path: path.into_iter().map(name).collect() }
        },
    }
}

/// The worst-case rollout chain of `graph` over its `waves`, with each object's time budget.
pub fn worst_case(
    graph: &Graph,
    waves: &[Option<u32>],
    budget: impl Fn(&ObjectKey) -> Duration,
) -> (Duration, Vec<NodeId>) {
    let mut order: Vec<NodeId> = graph.present_ids().filter(|&id| waves[id as usize].is_some()).collect();
    order.sort_by_key(|&id| (waves[id as usize], graph.key(id).clone()));
    let mut best: HashMap<NodeId, (Duration, Option<NodeId>)> = HashMap::new();
    for &id in &order {
        let slowest = graph
            .deps(id)
            .filter_map(|d| best.get(&d).map(|(t, _)| (*t, d)))
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| graph.key(b.1).cmp(graph.key(a.1))));
        let total = budget(graph.key(id)) + slowest.map_or(Duration::ZERO, |(t, _)| t);
        best.insert(id, (total, slowest.map(|(_, d)| d)));
    }
    let Some((&end, &(total, _))) =
        best.iter().max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| graph.key(*b.0).cmp(graph.key(*a.0))))
    else {
        return (Duration::ZERO, Vec::new());
    };
    let mut path = vec![end];
    while let Some(&(_, Some(prev))) = best.get(path.last().expect("path is not empty")) {
        path.push(prev);
    }
    path.reverse();
    (total, path)
}

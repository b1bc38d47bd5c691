//! Rules evaluated for one admission request, touching only the part of the graph the request
//! can affect: the reviewed object, its neighbours, and what its new edges reach.
//!
//! The candidate object is put into the graph in place of the cached one, the searches run from
//! it, and the cached object is put back before returning: the graph is unchanged afterwards.
//! Recording an admitted object is the cache's job, not this module's.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    Finding, HintReach, chain_message, count_targets, cross_namespace_message, cycle_message, dangling_message,
    duplicate_message, unreadable_message,
};
use crate::graph::{Graph, NodeId};
use crate::object::{FluxObject, ObjectKey};
use crate::policy::{Action, Policy, Rule};

/// At most this many distinct new cycles are spelled out for one request.
const MAX_CYCLES_REPORTED: usize = 5;
/// At most this many dangling targets of one request get a hint.
const MAX_HINTS: usize = 20;

/// Findings for a CREATE (`old = None`) or UPDATE of `new`. `old` is the request's
/// `oldObject`: an edge or target it already had is "unchanged" and only warned about, so
/// that Flux's dry-run of an unchanged object never fails.
pub fn evaluate_upsert(
    graph: &mut Graph,
    policy: &Policy,
    new: &Arc<FluxObject>,
    old: Option<&FluxObject>,
) -> Vec<Finding> {
    evaluate_upsert_with(graph, None, policy, new, old)
}

/// [`evaluate_upsert`] knowing the graph of the other kind, `other`: a dangling target that
/// exists as the other kind gets the hint that says so.
pub fn evaluate_upsert_with(
    graph: &mut Graph,
    other: Option<&Graph>,
    policy: &Policy,
    new: &Arc<FluxObject>,
    old: Option<&FluxObject>,
) -> Vec<Finding> {
    let previous = graph.upsert(new.clone());
    let x = graph.id(&new.key).expect("the candidate was just inserted");
    let mut ctx = Ctx { graph, other, policy, object: new, findings: Vec::new() };

    ctx.cycles(x, old);
    ctx.targets(x, old);
    let chain = ctx.depth(x);
    let mut findings = ctx.findings;

    graph.restore(&new.key, previous);

    if let Some(chain) = chain {
        // Whether the chain was already too long before this request decides deny or warn.
        let was_too_long = graph
            .id(&new.key)
            .filter(|&id| graph.is_present(id))
            .is_some_and(|id| graph.longest_chain_through(id).0.len() > policy.max_depth_limit);
        let action = if was_too_long { Action::Warn } else { policy.action(Rule::MaxDepth) };
        findings.push(Finding {
            rule: Rule::MaxDepth,
            kind: new.kind.into(),
            object: new.key.clone(),
            target: None,
            cycle: None,
            action,
            message: chain,
        });
    }
    findings
}

/// Whether putting `new` in place of `old` gives the graph an edge it did not have (see
/// [`new_edges`]). The graph is unchanged afterwards.
pub fn adds_edges(graph: &mut Graph, new: &Arc<FluxObject>, old: Option<&FluxObject>) -> bool {
    let previous = graph.upsert(new.clone());
    let x = graph.id(&new.key).expect("the candidate was just inserted");
    let (out, incoming) = new_edges(graph, x, old);
    graph.restore(&new.key, previous);
    !out.is_empty() || !incoming.is_empty()
}

/// Findings for a DELETE of `key`: the objects that depend on it would wait forever.
pub fn evaluate_delete(graph: &Graph, policy: &Policy, key: &ObjectKey) -> Vec<Finding> {
    let action = policy.action(Rule::DeleteWithDependents);
    if action == Action::Off {
        return Vec::new();
    }
    let Some(id) = graph.id(key) else {
        return Vec::new();
    };
    let dependents = graph.sorted_keys(graph.dependents(id).filter(|&d| d != id));
    if dependents.is_empty() {
        return Vec::new();
    }
    let shown: Vec<String> = dependents.iter().take(5).map(ToString::to_string).collect();
    let more = if dependents.len() > 5 { format!(" and {} more", dependents.len() - 5) } else { String::new() };
    let message = format!(
        "{key} is a dependsOn target of {}{more}; they will wait for it forever once it is deleted",
        shown.join(", ")
    );
    vec![Finding {
        rule: Rule::DeleteWithDependents,
        kind: graph.kind().into(),
        object: key.clone(),
        target: None,
        cycle: None,
        action,
        message,
    }]
}

struct Ctx<'a> {
    graph: &'a Graph,
    other: Option<&'a Graph>,
    policy: &'a Policy,
    object: &'a FluxObject,
    findings: Vec<Finding>,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        rule: Rule,
        action: Action,
        target: Option<ObjectKey>,
        cycle: Option<Vec<ObjectKey>>,
        message: String,
    ) {
        if action == Action::Off {
            return;
        }
        self.findings.push(Finding {
            rule,
            kind: self.object.kind.into(),
            object: self.object.key.clone(),
            target,
            cycle,
            action,
            message,
        });
    }

    /// The action for a finding: the rule's own when this request introduced the problem, a
    /// warning when the problem was already there.
    fn action(&self, rule: Rule, introduced: bool) -> Action {
        match self.policy.action(rule) {
            Action::Off => Action::Off,
            _ if !introduced => Action::Warn,
            a => a,
        }
    }

    fn cycles(&mut self, x: NodeId, old: Option<&FluxObject>) {
        if self.policy.action(Rule::Cycle) == Action::Off {
            return;
        }
        let g = self.graph;
        let (new_out, new_in) = new_edges(g, x, old);

        let mut found: Vec<Vec<NodeId>> = Vec::new();
        let mut seen: HashSet<Vec<NodeId>> = HashSet::new();
        let mut record = |cycle: Vec<NodeId>, found: &mut Vec<Vec<NodeId>>| {
            if seen.insert(canonical(&cycle)) {
                found.push(cycle);
            }
        };
        // One search tells whether any new out-edge closes a cycle; only then is each edge
        // searched on its own to spell the cycles out.
        if !new_out.is_empty() && g.find_path(new_out.iter().copied(), false, |n| n == x).is_some() {
            for &t in &new_out {
                if found.len() >= MAX_CYCLES_REPORTED {
                    break;
                }
                if let Some(c) = g.cycle_via(x, t) {
                    record(c, &mut found);
                }
            }
        }
        if !new_in.is_empty() && found.len() < MAX_CYCLES_REPORTED {
            let sources: HashSet<NodeId> = new_in.iter().copied().collect();
            if let Some(mut path) = g.find_path([x], false, |n| sources.contains(&n)) {
                path.push(x);
                record(path, &mut found);
            }
        }

        if found.is_empty() {
            // Already on a cycle that this request does not touch: Flux re-sends every managed
            // object as a dry-run on each reconcile, so this must never deny.
            let successors: Vec<NodeId> = g.out_edges(x).map(|(t, _)| t).collect();
            if let Some(mut path) = g.find_path(successors, false, |n| n == x) {
                path.insert(0, x);
                let keys = path.iter().map(|&id| g.key(id).clone()).collect();
                let msg = cycle_message(g, &path, "dependsOn cycle (already present, not introduced by this change)");
                self.push(Rule::Cycle, Action::Warn, None, Some(keys), msg);
            }
            return;
        }
        let action = self.action(Rule::Cycle, true);
        for cycle in found {
            let keys = cycle.iter().map(|&id| g.key(id).clone()).collect();
            let msg = cycle_message(g, &cycle, "dependsOn cycle");
            self.push(Rule::Cycle, action, None, Some(keys), msg);
        }
    }

    /// Rules on each `dependsOn` entry: dangling, cross-namespace, duplicate.
    fn targets(&mut self, x: NodeId, old: Option<&FluxObject>) {
        let g = self.graph;
        let object = self.object;
        let counts = count_targets(&object.depends_on);
        let old_counts = old.map(|o| count_targets(&o.depends_on)).unwrap_or_default();
        let mut done: HashSet<&ObjectKey> = HashSet::new();
        let mut hinted = 0;
        for target in &object.depends_on {
            if !done.insert(target) {
                continue;
            }
            let old_count = old_counts.get(target).copied().unwrap_or(0);
            let introduced = old_count == 0;

            let count = counts[target];
            if count > 1 {
                let action = self.action(Rule::DuplicateDependsOn, old_count < count);
                let msg = duplicate_message(&object.key, target, count);
                self.push(Rule::DuplicateDependsOn, action, Some(target.clone()), None, msg);
            }

            let id = g.id(target).expect("every dependsOn target is a node");
            if !g.is_present(id) && id != x {
                // Objects applied by a parent Kustomization arrive in batches whose order Flux
                // does not promise: the sibling may simply not exist yet.
                let mut action = self.action(Rule::DanglingDependsOn, introduced);
                if object.has_owner_labels() && action == Action::Deny {
                    action = Action::Warn;
                }
                // Hints cost a look through the namespace; past the first few, a message that
                // nobody will read to the end does not need them.
                hinted += 1;
                let reach = if hinted <= MAX_HINTS { Some(HintReach::Indexed) } else { None };
                let msg = dangling_message(g, self.other, &object.key, target, reach);
                self.push(Rule::DanglingDependsOn, action, Some(target.clone()), None, msg);
            }

            if target.namespace != object.key.namespace {
                let action = self.action(Rule::CrossNamespaceDependsOn, introduced);
                let msg = cross_namespace_message(&object.key, target);
                self.push(Rule::CrossNamespaceDependsOn, action, Some(target.clone()), None, msg);
            }
        }
        for problem in object.unreadable_depends_on() {
            let introduced = old.is_none_or(|o| !o.unreadable_depends_on().contains(problem));
            let mut action = self.action(Rule::DanglingDependsOn, introduced);
            if object.has_owner_labels() && action == Action::Deny {
                action = Action::Warn;
            }
            let msg = unreadable_message(&object.key, problem);
            self.push(Rule::DanglingDependsOn, action, None, None, msg);
        }
    }

    /// The message for a too-long chain through `x`, if there is one.
    fn depth(&self, x: NodeId) -> Option<String> {
        if self.policy.action(Rule::MaxDepth) == Action::Off {
            return None;
        }
        let chain = self.graph.longest_chain_through(x).0;
        if chain.len() <= self.policy.max_depth_limit {
            return None;
        }
        Some(chain_message(self.graph, &chain, self.policy.max_depth_limit))
    }
}

/// The edges at `x` that this request adds: out-edges whose target `old` did not point at, and
/// in-edges that did not exist under `old`. On CREATE every edge at `x` is new, including the
/// dangling references that other objects already had to its name.
fn new_edges(g: &Graph, x: NodeId, old: Option<&FluxObject>) -> (Vec<NodeId>, Vec<NodeId>) {
    let Some(old) = old else {
        let out = g.out_edges(x).map(|(t, _)| t).collect();
        let incoming = g.dependents(x).chain(g.waited_by(x)).collect();
        return (out, incoming);
    };
    let old_explicit: HashSet<NodeId> = old.depends_on.iter().filter_map(|k| g.id(k)).collect();
    // The old object's implicit out-edges, as the graph drew them: none for a wait no field
    // manager owns, and never one to `x` itself. Children are found by their own labels, which
    // this request does not change.
    let old_waits: HashSet<NodeId> = if old.wait && old.wait_unowned {
        HashSet::new()
    } else if old.wait {
        g.children(x).collect()
    } else {
        old.health_check_kustomizations().iter().filter_map(|k| g.id(k)).filter(|&t| t != x).collect()
    };
    let out = g.out_edges(x).map(|(t, _)| t).filter(|t| !old_explicit.contains(t) && !old_waits.contains(t)).collect();
    // Explicit in-edges belong to other objects and are unchanged. A wait in-edge from the
    // owner is new when the old labels did not make `x` that owner's child.
    let incoming = g
        .waited_by(x)
        .filter(|&p| {
            // A self-edge is an out-edge too, judged above against the old out-edges.
            if p == x {
                return false;
            }
            // The edge existed already if the parent lists `x` in its own dependsOn.
            if g.deps(p).any(|d| d == x) {
                return false;
            }
            let Some(parent) = g.object(p) else {
                return false;
            };
            let by_health_check = !parent.wait && parent.health_check_kustomizations().contains(g.key(x));
            let by_old_owner = parent.wait && old.owner.as_ref() == Some(g.key(p));
            !(by_health_check || by_old_owner)
        })
        .collect();
    (out, incoming)
}

/// A cycle rotated to start at its smallest id, for deduplication.
fn canonical(cycle: &[NodeId]) -> Vec<NodeId> {
    let body = &cycle[..cycle.len() - 1];
    let start = body.iter().enumerate().min_by_key(|(_, id)| **id).map_or(0, |(i, _)| i);
    body[start..].iter().chain(&body[..start]).copied().collect()
}

//! Rules over a whole graph: what the periodic audit reports and what `fluxgate check` prints.
//! Unlike admission, nothing here is "unchanged": every finding takes its rule's action.

use std::collections::HashMap;

use super::{
    Finding, HintReach, chain_message, count_targets, cross_namespace_message, cycle_message, dangling_message_with,
    duplicate_message, hint, unreadable_message,
};
use crate::graph::{Graph, NodeId};
use crate::policy::{Action, Policy, Rule};

/// At most this many hints are computed per audit. A hint may walk every object, so hints cost
/// O(objects) each; with the cap an audit stays linear in the graph, where it grew with the
/// square of the dependents of one deleted object. Past the cap, a dangling reference reuses the
/// hint computed for another dependent of the same target (unless that hint names the reference's
/// own object), so every dependent of one deleted object still gets a hint.
const MAX_AUDIT_HINTS: usize = 100;

/// Every finding in `graph`, sorted by object then rule.
pub fn audit(graph: &Graph, policy: &Policy) -> Vec<Finding> {
    audit_with(graph, None, policy)
}

/// [`audit`] knowing the graph of the other kind, `other`: a dangling target that exists as
/// the other kind gets the hint that says so.
pub fn audit_with(graph: &Graph, other: Option<&Graph>, policy: &Policy) -> Vec<Finding> {
    let kind = graph.kind();
    let mut findings = Vec::new();
    let mut hints: HashMap<(NodeId, NodeId), Option<String>> = HashMap::new();
    let mut by_target: HashMap<NodeId, Option<String>> = HashMap::new();
    let mut push = |rule: Rule, object: &crate::object::ObjectKey, target, cycle, message: String| {
        let action = policy.action(rule);
        if action != Action::Off {
            findings.push(Finding { rule, kind: kind.into(), object: object.clone(), target, cycle, action, message });
        }
    };

    for scc in graph.cycles() {
        let object = graph.key(scc.cycle[0]);
        let keys = scc.cycle.iter().map(|&id| graph.key(id).clone()).collect();
        let mut message = cycle_message(graph, &scc.cycle, "dependsOn cycle");
        // `cycle` repeats its first node at the end.
        let on_path = scc.cycle.len() - 1;
        if scc.members.len() > on_path {
            let others = scc.members.len() - on_path;
            message.push_str(&format!(" ({others} more objects are caught in the same knot)"));
        }
        push(Rule::Cycle, object, None, Some(keys), message);
    }

    for id in graph.present_ids() {
        let object = graph.object(id).expect("present ids have objects");
        let counts = count_targets(&object.depends_on);
        for dep in graph.deps(id) {
            let target = graph.key(dep);
            if counts[target] > 1 {
                let msg = duplicate_message(&object.key, target, counts[target]);
                push(Rule::DuplicateDependsOn, &object.key, Some(target.clone()), None, msg);
            }
            if !graph.is_present(dep) {
                let hint =
                    match hints.get(&(id, dep)) {
                        Some(h) => h.clone(),
                        None if hints.len() < MAX_AUDIT_HINTS => {
                            let h = hint(graph, other, &object.key, target, HintReach::Everywhere);
                            hints.insert((id, dep), h.clone());
                            by_target.entry(dep).or_insert_with(|| h.clone());
                            h
                        }
                        // Past the budget, the hint found for another dependent of the same target,
                        // unless it names this object itself.
                        None => by_target.get(&dep).cloned().flatten().filter(|h| {
                            !h.contains(&format!(" {}?", object.key)) && !h.ends_with(&object.key.to_string())
                        }),
                    };
                let msg = dangling_message_with(graph, &object.key, target, hint);
                push(Rule::DanglingDependsOn, &object.key, Some(target.clone()), None, msg);
            }
            if target.namespace != object.key.namespace {
                let msg = cross_namespace_message(&object.key, target);
                push(Rule::CrossNamespaceDependsOn, &object.key, Some(target.clone()), None, msg);
            }
        }
        for problem in object.unreadable_depends_on() {
            push(Rule::DanglingDependsOn, &object.key, None, None, unreadable_message(&object.key, problem));
        }
        // A chain is reported once, at its top: the object nothing depends on.
        if policy.action(Rule::MaxDepth) != Action::Off && graph.dependents(id).next().is_none() {
            let chain = graph.longest_chain(id, false).0;
            if chain.len() > policy.max_depth_limit {
                let msg = chain_message(graph, &chain, policy.max_depth_limit);
                push(Rule::MaxDepth, &object.key, None, None, msg);
            }
        }
    }
    findings.sort_by(|a, b| (&a.object, a.rule, &a.target).cmp(&(&b.object, b.rule, &b.target)));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::ks;
    use crate::object::FluxKind;

    #[test]
    fn audit_reports_cycles_dangling_duplicates_and_depth() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("f", "a", &["b"]));
        g.upsert(ks("f", "b", &["a"]));
        g.upsert(ks("f", "c", &["missing", "d", "d"]));
        g.upsert(ks("f", "d", &["e"]));
        g.upsert(ks("f", "e", &[]));
        let mut policy = Policy::default();
        policy.set_action(Rule::MaxDepth, Action::Warn);
        policy.max_depth_limit = 2;
        let findings = audit(&g, &policy);
        let rules: Vec<(String, Rule)> = findings.iter().map(|f| (f.object.name.to_string(), f.rule)).collect();
        assert_eq!(
            rules,
            vec![
                ("a".into(), Rule::Cycle),
                ("c".into(), Rule::DanglingDependsOn),
                ("c".into(), Rule::MaxDepth),
                ("c".into(), Rule::DuplicateDependsOn),
            ]
        );
        assert_eq!(findings[0].message, "dependsOn cycle: f/a -> f/b -> f/a");
        assert!(findings[0].is_deny());
        assert_eq!(findings[2].message, "dependsOn chain of 3 objects exceeds the limit of 2: f/c -> f/d -> f/e");
    }
}

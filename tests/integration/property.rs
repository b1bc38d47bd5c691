//! The engine against a naive oracle, over random graphs and random edit sequences.
//!
//! The oracle recomputes every edge from scratch (explicit `dependsOn`, parent waits through
//! owner labels and `spec.wait`, health checks) and searches cycles by brute force. For each
//! edit it checks the engine's verdict, that every reported cycle is a real cycle through the
//! edited object that uses an edge the edit introduces, that an evaluation leaves the graph as
//! it found it, and that the incremental graph always equals the recomputed one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fluxgate::graph::Graph;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::{Action, Policy, Rule};
use fluxgate::rules;
use proptest::prelude::*;

type Key = ObjectKey;
type Edges = BTreeSet<(Key, Key)>;

fn key(i: u8) -> Key {
    // Two namespaces of five names: enough collisions to make cycles common.
    ObjectKey::new(if i.is_multiple_of(2) { "a" } else { "b" }, format!("k{}", i % 5))
}

#[derive(Debug, Clone)]
enum Edit {
    Upsert { key: u8, deps: Vec<u8>, wait: bool, wait_unowned: bool, owner: Option<u8>, health: Vec<u8> },
    Delete { key: u8 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        5 => (0u8..10, prop::collection::vec(0u8..10, 0..4), any::<bool>(), prop::bool::weighted(0.2), prop::option::weighted(0.4, 0u8..10), prop::collection::vec(0u8..10, 0..2))
            .prop_map(|(key, deps, wait, wait_unowned, owner, health)| Edit::Upsert { key, deps, wait, wait_unowned: wait && wait_unowned, owner, health }),
        1 => (0u8..10).prop_map(|key| Edit::Delete { key }),
    ]
}

fn object(key_id: u8, deps: &[u8], wait: bool, wait_unowned: bool, owner: Option<u8>, health: &[u8]) -> FluxObject {
    let mut o = FluxObject::new(FluxKind::Kustomization, key(key_id), deps.iter().map(|&d| key(d)).collect());
    o.wait = wait;
    o.wait_unowned = wait_unowned;
    o.owner = owner.map(key);
    o.set_health_check_kustomizations(health.iter().map(|&h| key(h)).collect());
    o
}

/// Every edge of a set of objects, recomputed from scratch.
fn oracle_edges(objects: &BTreeMap<Key, FluxObject>) -> Edges {
    let mut edges = Edges::new();
    for o in objects.values() {
        for d in &o.depends_on {
            edges.insert((o.key.clone(), d.clone()));
        }
        // A Kustomization never waits for itself, and a wait no field manager owns (fluxgate's
        // own default) waits for nothing.
        if o.wait {
            if !o.wait_unowned {
                for c in objects.values().filter(|c| c.owner.as_ref() == Some(&o.key) && c.key != o.key) {
                    edges.insert((o.key.clone(), c.key.clone()));
                }
            }
        } else {
            for h in o.health_check_kustomizations().iter().filter(|h| **h != o.key) {
                edges.insert((o.key.clone(), h.clone()));
            }
        }
    }
    edges
}

fn reaches(edges: &Edges, from: &Key, to: &Key) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.clone()];
    while let Some(n) = stack.pop() {
        if &n == to {
            return true;
        }
        if seen.insert(n.clone()) {
            stack.extend(edges.iter().filter(|(a, _)| *a == n).map(|(_, b)| b.clone()));
        }
    }
    false
}

fn graph_edges(g: &Graph) -> Edges {
    let mut edges = Edges::new();
    for id in g.node_ids() {
        for (t, _) in g.out_edges(id) {
            edges.insert((g.key(id).clone(), g.key(t).clone()));
        }
    }
    edges
}

fn incident(edges: &Edges, x: &Key) -> Edges {
    edges.iter().filter(|(a, b)| a == x || b == x).cloned().collect()
}

fn run(edits: Vec<Edit>) -> Result<(), TestCaseError> {
    let policy = Policy::default();
    let mut graph = Graph::new(FluxKind::Kustomization);
    let mut objects: BTreeMap<Key, FluxObject> = BTreeMap::new();
    for e in edits {
        match e {
            Edit::Upsert { key: k, deps, wait, wait_unowned, owner, health } => {
                let new = object(k, &deps, wait, wait_unowned, owner, &health);
                let x = new.key.clone();
                let old = objects.get(&x).cloned();
                let before = oracle_edges(&objects);

                let mut candidate_set = objects.clone();
                candidate_set.insert(x.clone(), new.clone());
                let candidate = oracle_edges(&candidate_set);
                let new_edges: Edges = if old.is_some() {
                    incident(&candidate, &x).difference(&incident(&before, &x)).cloned().collect()
                } else {
                    incident(&candidate, &x)
                };
                let introduces_cycle = new_edges.iter().any(|(a, b)| reaches(&candidate, b, a));
                let on_cycle = candidate.iter().any(|(a, b)| a == &x && reaches(&candidate, b, &x));

                let findings = rules::evaluate_upsert(&mut graph, &policy, &Arc::new(new.clone()), old.as_ref());
                let cycles: Vec<_> = findings.iter().filter(|f| f.rule == Rule::Cycle).collect();
                let denied = cycles.iter().any(|f| f.action == Action::Deny);
                prop_assert_eq!(denied, introduces_cycle, "verdict for {:?} (new edges {:?})", new, new_edges);
                prop_assert_eq!(
                    cycles.iter().any(|f| f.action == Action::Warn),
                    on_cycle && !introduces_cycle,
                    "unchanged-cycle warning for {:?}",
                    new
                );
                for f in &cycles {
                    let path = f.cycle.as_ref().expect("cycle findings carry their path");
                    prop_assert!(path.len() >= 2);
                    prop_assert_eq!(&path[0], &x, "a reported cycle starts at the edited object");
                    prop_assert_eq!(path.first(), path.last());
                    let steps: Vec<(Key, Key)> = path.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect();
                    for s in &steps {
                        prop_assert!(candidate.contains(s), "{:?} is not an edge of the candidate graph", s);
                    }
                    if f.action == Action::Deny {
                        prop_assert!(
                            steps.iter().any(|s| new_edges.contains(s)),
                            "denied cycle {:?} uses no new edge",
                            path
                        );
                    }
                }
                prop_assert_eq!(graph_edges(&graph), before, "evaluation must leave the graph unchanged");

                graph.upsert(Arc::new(new.clone()));
                objects.insert(x, new);
            }
            Edit::Delete { key: k } => {
                graph.remove(&key(k));
                objects.remove(&key(k));
            }
        }
        prop_assert_eq!(graph_edges(&graph), oracle_edges(&objects), "incremental graph differs from a rebuild");
        prop_assert_eq!(graph.len(), objects.len());

        // The audit's strongly connected components cover exactly the nodes on a cycle.
        let edges = oracle_edges(&objects);
        let on_cycles: BTreeSet<Key> =
            objects.keys().filter(|k| edges.iter().any(|(a, b)| a == *k && reaches(&edges, b, k))).cloned().collect();
        let scc_members: BTreeSet<Key> =
            graph.cycles().iter().flat_map(|s| s.members.iter().map(|&id| graph.key(id).clone())).collect();
        prop_assert_eq!(scc_members, on_cycles);
        for scc in graph.cycles() {
            for w in scc.cycle.windows(2) {
                prop_assert!(edges.contains(&(graph.key(w[0]).clone(), graph.key(w[1]).clone())));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_a_naive_oracle(edits in prop::collection::vec(edit(), 1..30)) {
        run(edits)?;
    }
}

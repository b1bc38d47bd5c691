//! Searches over a [`Graph`]: paths (for cycles through one object), strongly connected
//! components (the audit's cycle scan), longest `dependsOn` chains and waves.
//!
//! Path searches start from the object under review and visit only what it can reach, reusing
//! one scratch buffer stamped with an epoch so that a search allocates nothing once warm.

use std::collections::VecDeque;

use petgraph::visit::EdgeFiltered;

use super::{EdgeKind, Graph, Link, NONE, NodeId};

#[derive(Debug, Default)]
pub(super) struct Scratch {
    epoch: u32,
    seen: Vec<u32>,
    parent: Vec<NodeId>,
    queue: VecDeque<NodeId>,
}

impl Scratch {
    fn begin(&mut self, nodes: usize) {
        if self.seen.len() < nodes {
            self.seen.resize(nodes, 0);
            self.parent.resize(nodes, NONE);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.seen.fill(0);
            self.epoch = 1;
        }
        self.queue.clear();
    }

    /// Marks `id` seen with `parent`; false if it was seen already in this search.
    fn visit(&mut self, id: NodeId, parent: NodeId) -> bool {
        let slot = &mut self.seen[id as usize];
        if *slot == self.epoch {
            return false;
        }
        *slot = self.epoch;
        self.parent[id as usize] = parent;
        true
    }

    fn path_to(&self, mut id: NodeId) -> Vec<NodeId> {
        let mut path = vec![id];
        while self.parent[id as usize] != NONE {
            id = self.parent[id as usize];
            path.push(id);
        }
        path.reverse();
        path
    }
}

/// A strongly connected component that holds a cycle, with one cycle through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scc {
    /// Every member, sorted by key.
    pub members: Vec<NodeId>,
    /// A shortest cycle through the member with the smallest key, first node repeated at the end.
    pub cycle: Vec<NodeId>,
}

/// A longest `dependsOn` chain, dependents first: `chain[0]` depends on `chain[1]`, and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(pub Vec<NodeId>);

impl Graph {
    /// Breadth-first search along out-edges from `seeds` to the first node for which `goal`
    /// holds (seeds themselves included). Returns the path from a seed to that node. With
    /// `explicit_only`, wait edges are not followed.
    pub fn find_path(
        &self,
        seeds: impl IntoIterator<Item = NodeId>,
        explicit_only: bool,
        mut goal: impl FnMut(NodeId) -> bool,
    ) -> Option<Vec<NodeId>> {
        let mut s = self.scratch.borrow_mut();
        s.begin(self.node_bound());
        for seed in seeds {
            if s.visit(seed, NONE) {
                if goal(seed) {
                    return Some(vec![seed]);
                }
                s.queue.push_back(seed);
            }
        }
        while let Some(id) = s.queue.pop_front() {
            for (next, kind) in self.out_edges(id) {
                if explicit_only && kind == EdgeKind::Wait {
                    continue;
                }
                if s.visit(next, id) {
                    if goal(next) {
                        return Some(s.path_to(next));
                    }
                    s.queue.push_back(next);
                }
            }
        }
        None
    }

    /// A shortest cycle `from -> first -> ... -> from` whose first edge is `from -> first`, or
    /// `None` when `first` cannot reach `from`.
    pub fn cycle_via(&self, from: NodeId, first: NodeId) -> Option<Vec<NodeId>> {
        let mut path = self.find_path([first], false, |n| n == from)?;
        path.insert(0, from);
        Some(path)
    }

    /// Every strongly connected component that contains a cycle (two or more members, or one
    /// member with an edge to itself), over both edge kinds. petgraph's Kosaraju: iterative
    /// (its Tarjan recurses once per object of a chain, and on a chain of a hundred thousand it
    /// overflows a 2 MiB thread stack).
    pub fn cycles(&self) -> Vec<Scc> {
        let waiting = EdgeFiltered::from_fn(&self.store, |e| *e.weight() != Link::Child);
        let mut found = Vec::new();
        for component in petgraph::algo::kosaraju_scc(&waiting) {
            let mut members: Vec<NodeId> = component.iter().map(|i| i.index() as NodeId).collect();
            let v = members[0];
            let self_loop = members.len() == 1 && self.out_edges(v).any(|(t, _)| t == v);
            if members.len() > 1 || self_loop {
                members.sort_by(|a, b| self.key(*a).cmp(self.key(*b)));
                let start = members[0];
                let cycle = self.cycle_within(start, &members);
                found.push(Scc { members, cycle });
            }
        }
        found.sort_by(|a, b| self.key(a.members[0]).cmp(self.key(b.members[0])));
        found
    }

    /// A shortest cycle through `start` that stays inside `members` (a strongly connected set).
    fn cycle_within(&self, start: NodeId, members: &[NodeId]) -> Vec<NodeId> {
        let inside = |id: NodeId| members.binary_search_by(|m| self.key(*m).cmp(self.key(id))).is_ok();
        let mut best: Option<Vec<NodeId>> = None;
        for (first, _) in self.out_edges(start) {
            if !inside(first) {
                continue;
            }
            if first == start {
                return vec![start, start];
            }
            // Of equally short cycles, the one whose keys sort first: the same answer whatever
            // order the edges were laid in.
            let keys = |c: &[NodeId]| c.iter().map(|&id| self.key(id)).collect::<Vec<_>>();
            if let Some(c) = self.cycle_via(start, first)
                && best.as_ref().is_none_or(|b| (c.len(), keys(&c)) < (b.len(), keys(b)))
            {
                best = Some(c);
            }
        }
        best.expect("a strongly connected component with two or more members has a cycle")
    }

    /// Longest explicit `dependsOn` chain starting at `id` and going down to its dependencies
    /// (`up = false`), or up through its dependents (`up = true`). Nodes already on the current
    /// path are not entered again, so a cycle cannot loop the search. Visits only what `id`
    /// reaches.
    pub fn longest_chain(&self, id: NodeId, up: bool) -> Chain {
        // Memoised depth-first search; `best[n]` is the length of the longest chain from `n`.
        let mut best: std::collections::HashMap<NodeId, (u32, NodeId)> = Default::default();
        let mut on_path: std::collections::HashSet<NodeId> = Default::default();
        let next_of =
            |n: NodeId| -> Vec<NodeId> { if up { self.dependents(n).collect() } else { self.deps(n).collect() } };
        let mut calls: Vec<(NodeId, Vec<NodeId>, usize)> = vec![(id, next_of(id), 0)];
        on_path.insert(id);
        while let Some((_, next, pos)) = calls.last_mut() {
            if let Some(&w) = next.get(*pos) {
                *pos += 1;
                if !best.contains_key(&w) && !on_path.contains(&w) {
                    on_path.insert(w);
                    calls.push((w, next_of(w), 0));
                }
                continue;
            }
            let (v, next, _) = calls.pop().expect("the call stack is not empty");
            on_path.remove(&v);
            let mut here = (1u32, NONE);
            for &w in &next {
                // Of equally long chains, the one through the smallest key: the same answer
                // whatever order the objects arrived in.
                if let Some(&(len, _)) = best.get(&w)
                    && (len + 1 > here.0 || (len + 1 == here.0 && self.key(w) < self.key(here.1)))
                {
                    here = (len + 1, w);
                }
            }
            best.insert(v, here);
        }
        let mut chain = vec![id];
        let mut cur = id;
        while let Some(&(_, next)) = best.get(&cur) {
            if next == NONE {
                break;
            }
            chain.push(next);
            cur = next;
        }
        if up {
            chain.reverse();
        }
        Chain(chain)
    }

    /// The longest `dependsOn` chain that passes through `id`, dependents first.
    pub fn longest_chain_through(&self, id: NodeId) -> Chain {
        let mut chain = self.longest_chain(id, true).0;
        let down = self.longest_chain(id, false).0;
        chain.extend_from_slice(&down[1..]);
        Chain(chain)
    }

    /// Waves over explicit `dependsOn` edges between present objects: wave 0 holds the objects
    /// with no present dependency, wave k the objects whose dependencies all sit in earlier
    /// waves. Members of a cycle, and objects that depend on one, get no wave (`None`).
    pub fn waves(&self) -> Vec<Option<u32>> {
        let n = self.node_bound();
        let mut pending = vec![0u32; n];
        let mut wave: Vec<Option<u32>> = vec![None; n];
        let mut queue = VecDeque::new();
        for id in self.present_ids() {
            pending[id as usize] = self.deps(id).filter(|&d| self.is_present(d)).count() as u32;
            if pending[id as usize] == 0 {
                wave[id as usize] = Some(0);
                queue.push_back(id);
            }
        }
        while let Some(id) = queue.pop_front() {
            let w = wave[id as usize].expect("queued nodes have a wave");
            for dep in self.dependents(id) {
                let d = dep as usize;
                wave[d] = Some(wave[d].map_or(w + 1, |x| x.max(w + 1)));
                pending[d] -= 1;
                if pending[d] == 0 {
                    queue.push_back(dep);
                }
            }
        }
        for (id, p) in pending.iter().enumerate() {
            if *p > 0 {
                wave[id] = None;
            }
        }
        wave
    }

    /// The longest chain, dependencies first (its length is the number of sequential steps of a
    /// full rollout), found by walking down from the deepest of `waves` ([`Graph::waves`]).
    pub fn critical_path(&self, waves: &[Option<u32>]) -> Vec<NodeId> {
        let Some(mut cur) = self
            .present_ids()
            .filter(|&id| waves[id as usize].is_some())
            .max_by(|a, b| waves[*a as usize].cmp(&waves[*b as usize]).then_with(|| self.key(*b).cmp(self.key(*a))))
        else {
            return Vec::new();
        };
        let mut path = vec![cur];
        while let Some(w) = waves[cur as usize].filter(|w| *w > 0) {
            let next = self
                .deps(cur)
                .filter(|&d| self.is_present(d) && waves[d as usize] == Some(w - 1))
                .min_by(|a, b| self.key(*a).cmp(self.key(*b)));
            match next {
                Some(n) => {
                    path.push(n);
                    cur = n;
                }
                None => break,
            }
        }
        path.reverse();
        path
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Graph;
    use crate::graph::tests::ks;
    use crate::object::{FluxKind, ObjectKey};

    fn build(edges: &[(&str, &[&str])]) -> Graph {
        let mut g = Graph::new(FluxKind::Kustomization);
        for (name, deps) in edges {
            g.upsert(ks("f", name, deps));
        }
        g
    }

    fn names(g: &Graph, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| g.key(i).name.to_string()).collect()
    }

    fn id(g: &Graph, name: &str) -> u32 {
        g.id(&ObjectKey::new("f", name)).unwrap()
    }

    #[test]
    fn cycle_via_returns_the_shortest_cycle_in_dependency_order() {
        let g = build(&[("a", &["b"]), ("b", &["c", "a"]), ("c", &["a"])]);
        let c = g.cycle_via(id(&g, "a"), id(&g, "b")).unwrap();
        assert_eq!(names(&g, &c), ["a", "b", "a"]);
        assert!(g.cycle_via(id(&g, "c"), id(&g, "a")).is_some());
    }

    #[test]
    fn scc_scan_finds_self_loops_and_larger_cycles() {
        let g = build(&[("a", &["b"]), ("b", &["a"]), ("s", &["s"]), ("x", &["a"]), ("y", &[])]);
        let sccs = g.cycles();
        assert_eq!(sccs.len(), 2);
        assert_eq!(names(&g, &sccs[0].members), ["a", "b"]);
        assert_eq!(names(&g, &sccs[0].cycle), ["a", "b", "a"]);
        assert_eq!(names(&g, &sccs[1].cycle), ["s", "s"]);
    }

    #[test]
    fn longest_chain_through_a_middle_node() {
        let g =
            build(&[("app", &["infra"]), ("infra", &["ops"]), ("ops", &["crds"]), ("web", &["infra"]), ("crds", &[])]);
        let chain = g.longest_chain_through(id(&g, "infra"));
        assert_eq!(names(&g, &chain.0), ["app", "infra", "ops", "crds"]);
    }

    #[test]
    fn waves_group_what_can_reconcile_in_parallel() {
        let g = build(&[
            ("crds", &[]),
            ("monitoring", &["crds"]),
            ("logging", &["crds"]),
            ("app-a", &["monitoring", "logging"]),
            ("app-b", &["monitoring", "logging", "missing"]),
            ("loop1", &["loop2"]),
            ("loop2", &["loop1"]),
        ]);
        let waves = g.waves();
        let w = |n: &str| waves[id(&g, n) as usize];
        assert_eq!((w("crds"), w("monitoring"), w("logging")), (Some(0), Some(1), Some(1)));
        assert_eq!((w("app-a"), w("app-b")), (Some(2), Some(2)));
        assert_eq!((w("loop1"), w("loop2")), (None, None));
    }
}

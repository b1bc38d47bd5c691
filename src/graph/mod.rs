//! The `dependsOn` graph of one kind of Flux object.
//!
//! Nodes are `namespace/name` keys, interned to dense ids. A node exists as soon as anything
//! names it, so a dangling `dependsOn` target is a node without an object: when the target is
//! created later, the edges already pointing at it are found without a scan. Edges go from the
//! dependent to its dependency and come in two kinds:
//!
//! - `dependsOn`: written in the dependent's `spec.dependsOn`;
//! - `wait`: a Kustomization with `spec.wait: true` waits for every Kustomization it applied
//!   (its children, found by Flux's owner labels), and one without `wait` waits for the
//!   Kustomizations named in its `spec.healthChecks`. As in kustomize-controller's health check,
//!   a Kustomization never waits for itself: the bootstrap `flux-system` Kustomization applies
//!   itself (its owner labels name itself), and that is no edge. A `wait: true` that no field
//!   manager owns is fluxgate's own default, which the mutating webhook withdraws where it is
//!   not wanted; it draws no edge (a default never causes a denial).
//!
//! Every update costs the degree of the nodes it touches, never a rebuild, so the admission path
//! can apply a candidate object, search from it, and put the old one back.
//!
//! A node that no object has and no edge touches any more is freed and its id reused, so
//! evaluating a request leaves nothing behind and names that were only ever mentioned (by a
//! denied dry-run, an edge since removed) do not accumulate.

mod search;

pub use search::{Chain, Scc};

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::object::{FluxKind, FluxObject, ObjectKey};

/// Dense id of a node within one [`Graph`]. The id of a freed node is given to the next new one.
pub type NodeId = u32;

/// Why one node waits for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Listed in `spec.dependsOn`.
    DependsOn,
    /// Implied by the parent's `spec.wait` or `spec.healthChecks`.
    Wait,
}

#[derive(Debug)]
struct Node {
    key: ObjectKey,
    object: Option<Arc<FluxObject>>,
    /// Explicit out-edges, deduplicated, in the order written.
    deps: Vec<NodeId>,
    /// Explicit in-edges (sorted).
    dependents: Vec<NodeId>,
    /// Present Kustomizations whose owner labels name this node (sorted).
    children: Vec<NodeId>,
    /// Implicit out-edges (sorted).
    waits: Vec<NodeId>,
    /// Implicit in-edges (sorted).
    waited_by: Vec<NodeId>,
}

impl Node {
    fn new(key: ObjectKey) -> Node {
        Node {
            key,
            object: None,
            deps: Vec::new(),
            dependents: Vec::new(),
            children: Vec::new(),
            waits: Vec::new(),
            waited_by: Vec::new(),
        }
    }
}

/// One kind's graph. Not thread-safe by itself: the cache keeps it behind a mutex so that a
/// decision and its recording are one step.
#[derive(Debug)]
pub struct Graph {
    kind: FluxKind,
    index: HashMap<ObjectKey, NodeId>,
    nodes: Vec<Node>,
    by_name: HashMap<String, Vec<NodeId>>,
    by_namespace: HashMap<String, Vec<NodeId>>,
    present: usize,
    /// Nodes that lost an object or an in-edge during the current update: freed at its end if
    /// nothing refers to them any more.
    unused: Vec<NodeId>,
    /// Ids of freed nodes, handed out again by `intern`.
    free: Vec<NodeId>,
    scratch: RefCell<search::Scratch>,
}

fn insert_sorted(list: &mut Vec<NodeId>, id: NodeId) {
    if let Err(pos) = list.binary_search(&id) {
        list.insert(pos, id);
    }
}

fn remove_sorted(list: &mut Vec<NodeId>, id: NodeId) {
    if let Ok(pos) = list.binary_search(&id) {
        list.remove(pos);
    }
}

/// Takes `id` out of an index bucket, dropping the bucket when it empties.
fn unlist(index: &mut HashMap<String, Vec<NodeId>>, bucket: &str, id: NodeId) {
    if let Some(ids) = index.get_mut(bucket) {
        if let Some(pos) = ids.iter().position(|&i| i == id) {
            ids.swap_remove(pos);
        }
        if ids.is_empty() {
            index.remove(bucket);
        }
    }
}

fn dedup_in_order(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// Membership in a list of ids: a scan for the usual handful, a set for long lists (a request
/// body may carry a hundred thousand `dependsOn` entries, and this runs under the cache lock).
enum Members<'a> {
    Few(&'a [NodeId]),
    Many(std::collections::HashSet<NodeId>),
}

impl<'a> Members<'a> {
    fn of(list: &'a [NodeId]) -> Members<'a> {
        if list.len() <= 16 { Members::Few(list) } else { Members::Many(list.iter().copied().collect()) }
    }

    fn contains(&self, id: NodeId) -> bool {
        match self {
            Members::Few(list) => list.contains(&id),
            Members::Many(set) => set.contains(&id),
        }
    }
}

impl Graph {
    pub fn new(kind: FluxKind) -> Graph {
        Graph {
            kind,
            index: HashMap::new(),
            nodes: Vec::new(),
            by_name: HashMap::new(),
            by_namespace: HashMap::new(),
            present: 0,
            unused: Vec::new(),
            free: Vec::new(),
            scratch: RefCell::default(),
        }
    }

    pub fn kind(&self) -> FluxKind {
        self.kind
    }

    /// How many objects the graph holds (dangling targets not counted).
    pub fn len(&self) -> usize {
        self.present
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Number of node ids handed out, objects and dangling targets alike (freed ids included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn id(&self, key: &ObjectKey) -> Option<NodeId> {
        self.index.get(key).copied()
    }

    pub fn key(&self, id: NodeId) -> &ObjectKey {
        &self.nodes[id as usize].key
    }

    pub fn object(&self, id: NodeId) -> Option<&Arc<FluxObject>> {
        self.nodes[id as usize].object.as_ref()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<FluxObject>> {
        self.id(key).and_then(|id| self.object(id))
    }

    pub fn is_present(&self, id: NodeId) -> bool {
        self.nodes[id as usize].object.is_some()
    }

    /// Ids of every present object.
    pub fn present_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as NodeId).filter(|&id| self.is_present(id))
    }

    /// Explicit dependencies of a node, deduplicated.
    pub fn deps(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].deps
    }

    /// Objects that list this node in their `dependsOn`.
    pub fn dependents(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].dependents
    }

    /// Present Kustomizations whose owner labels name this node.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].children
    }

    /// Nodes this node waits for through `spec.wait` or `spec.healthChecks`.
    pub fn waits(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].waits
    }

    /// Nodes that wait for this node through `spec.wait` or `spec.healthChecks`.
    pub fn waited_by(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].waited_by
    }

    /// Every out-edge: explicit first, then implicit.
    pub fn out_edges(&self, id: NodeId) -> impl Iterator<Item = (NodeId, EdgeKind)> + '_ {
        let n = &self.nodes[id as usize];
        n.deps.iter().map(|&t| (t, EdgeKind::DependsOn)).chain(n.waits.iter().map(|&t| (t, EdgeKind::Wait)))
    }

    /// The kind of the edge `from -> to`; `dependsOn` wins when both exist.
    pub fn edge_kind(&self, from: NodeId, to: NodeId) -> Option<EdgeKind> {
        let n = &self.nodes[from as usize];
        if n.deps.contains(&to) {
            Some(EdgeKind::DependsOn)
        } else if n.waits.binary_search(&to).is_ok() {
            Some(EdgeKind::Wait)
        } else {
            None
        }
    }

    /// Present objects with this name, in any namespace.
    pub fn named(&self, name: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.by_name.get(name).into_iter().flatten().copied().filter(|&id| self.is_present(id))
    }

    /// Present objects in this namespace.
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.by_namespace.get(namespace).into_iter().flatten().copied().filter(|&id| self.is_present(id))
    }

    fn intern(&mut self, key: &ObjectKey) -> NodeId {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Node::new(key.clone());
                id
            }
            None => {
                let id = NodeId::try_from(self.nodes.len()).expect("more than 2^32 graph nodes");
                self.nodes.push(Node::new(key.clone()));
                id
            }
        };
        self.index.insert(key.clone(), id);
        self.by_name.entry(key.name.clone()).or_default().push(id);
        self.by_namespace.entry(key.namespace.clone()).or_default().push(id);
        id
    }

    /// Adds or replaces an object; returns the object it replaced.
    pub fn upsert(&mut self, object: Arc<FluxObject>) -> Option<Arc<FluxObject>> {
        debug_assert_eq!(object.kind, self.kind);
        let id = self.intern(&object.key);
        let old = self.nodes[id as usize].object.replace(object.clone());
        if old.is_none() {
            self.present += 1;
        }
        self.relink(id, old.as_deref(), Some(&object));
        self.free_unused();
        old
    }

    /// Removes an object; its node stays while others still name it. Returns the removed object.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<FluxObject>> {
        let id = self.id(key)?;
        let old = self.nodes[id as usize].object.take()?;
        self.present -= 1;
        self.relink(id, Some(&old), None);
        self.unused.push(id);
        self.free_unused();
        Some(old)
    }

    /// Frees the nodes of `unused` that no object has and no edge touches: their key leaves
    /// the indexes and their id is handed out again.
    fn free_unused(&mut self) {
        while let Some(id) = self.unused.pop() {
            let n = &self.nodes[id as usize];
            let referenced = n.object.is_some()
                || !n.deps.is_empty()
                || !n.dependents.is_empty()
                || !n.children.is_empty()
                || !n.waits.is_empty()
                || !n.waited_by.is_empty();
            // A node listed twice is freed once.
            if referenced || self.index.get(&n.key) != Some(&id) {
                continue;
            }
            let key = std::mem::replace(&mut self.nodes[id as usize].key, ObjectKey::new("", ""));
            self.index.remove(&key);
            unlist(&mut self.by_name, &key.name, id);
            unlist(&mut self.by_namespace, &key.namespace, id);
            self.free.push(id);
        }
    }

    /// Puts `previous` back in place of whatever the graph holds for `key` now.
    pub fn restore(&mut self, key: &ObjectKey, previous: Option<Arc<FluxObject>>) {
        match previous {
            Some(object) => {
                self.upsert(object);
            }
            None => {
                self.remove(key);
            }
        }
    }

    /// The parent whose child `object` is. Owner labels name a Kustomization, so only the
    /// Kustomization graph has children; an object whose labels name itself (the self-managed
    /// bootstrap root) is nobody's child.
    fn owner_of(&self, object: Option<&FluxObject>) -> Option<ObjectKey> {
        if self.kind != FluxKind::Kustomization {
            return None;
        }
        object.and_then(|o| o.owner.clone().filter(|owner| *owner != o.key))
    }

    fn relink(&mut self, id: NodeId, old: Option<&FluxObject>, new: Option<&FluxObject>) {
        let new_deps = match new {
            Some(o) => {
                let ids: Vec<NodeId> = o.depends_on.iter().map(|k| self.intern(k)).collect();
                dedup_in_order(ids)
            }
            None => Vec::new(),
        };
        let old_deps = std::mem::take(&mut self.nodes[id as usize].deps);
        let (in_new, in_old) = (Members::of(&new_deps), Members::of(&old_deps));
        for &t in &old_deps {
            if !in_new.contains(t) {
                remove_sorted(&mut self.nodes[t as usize].dependents, id);
                self.unused.push(t);
            }
        }
        for &t in &new_deps {
            if !in_old.contains(t) {
                insert_sorted(&mut self.nodes[t as usize].dependents, id);
            }
        }
        drop((in_new, in_old));
        self.nodes[id as usize].deps = new_deps;

        let old_owner = self.owner_of(old);
        let new_owner = self.owner_of(new);
        if old_owner != new_owner {
            if let Some(parent) = old_owner.and_then(|k| self.id(&k)) {
                remove_sorted(&mut self.nodes[parent as usize].children, id);
                self.recompute_waits(parent);
                self.unused.push(parent);
            }
            if let Some(key) = new_owner {
                let parent = self.intern(&key);
                insert_sorted(&mut self.nodes[parent as usize].children, id);
                self.recompute_waits(parent);
            }
        }
        self.recompute_waits(id);
    }

    fn recompute_waits(&mut self, id: NodeId) {
        // With `wait: true` Flux ignores `spec.healthChecks`, so an unowned (defaulted) wait
        // draws neither kind of edge.
        let mut new_waits = match self.nodes[id as usize].object.clone() {
            Some(o) if o.wait && o.wait_unowned => Vec::new(),
            Some(o) if o.wait => self.nodes[id as usize].children.clone(),
            Some(o) => o.health_check_kustomizations.iter().map(|k| self.intern(k)).collect(),
            None => Vec::new(),
        };
        // kustomize-controller leaves the Kustomization itself out of its health checks.
        new_waits.retain(|&t| t != id);
        new_waits.sort_unstable();
        new_waits.dedup();
        let old_waits = std::mem::take(&mut self.nodes[id as usize].waits);
        for &t in &old_waits {
            if new_waits.binary_search(&t).is_err() {
                remove_sorted(&mut self.nodes[t as usize].waited_by, id);
                self.unused.push(t);
            }
        }
        for &t in &new_waits {
            if old_waits.binary_search(&t).is_err() {
                insert_sorted(&mut self.nodes[t as usize].waited_by, id);
            }
        }
        self.nodes[id as usize].waits = new_waits;
    }

    /// The sorted keys of `ids`, for stable messages.
    pub fn sorted_keys(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = ids.into_iter().map(|id| self.key(id).clone()).collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ks(ns: &str, name: &str, deps: &[&str]) -> Arc<FluxObject> {
        let depends_on = deps
            .iter()
            .map(|d| match d.split_once('/') {
                Some((n, m)) => ObjectKey::new(n, m),
                None => ObjectKey::new(ns, *d),
            })
            .collect();
        Arc::new(FluxObject::new(FluxKind::Kustomization, ObjectKey::new(ns, name), depends_on))
    }

    fn key(s: &str) -> ObjectKey {
        let (ns, n) = s.split_once('/').unwrap();
        ObjectKey::new(ns, n)
    }

    /// A freed node has no dependents.
    fn dependents_of(g: &Graph, k: &str) -> Vec<ObjectKey> {
        g.id(&key(k)).map(|id| g.sorted_keys(g.dependents(id).iter().copied())).unwrap_or_default()
    }

    #[test]
    fn dangling_target_is_a_node_without_object() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("a", "apps", &["infra"]));
        let infra = g.id(&key("a/infra")).unwrap();
        assert!(!g.is_present(infra));
        assert_eq!(g.len(), 1);
        assert_eq!(dependents_of(&g, "a/infra"), vec![key("a/apps")]);
        g.upsert(ks("a", "infra", &[]));
        assert!(g.is_present(infra));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn upsert_replaces_edges_and_remove_drops_them() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("a", "apps", &["infra", "crds", "infra"]));
        assert_eq!(g.deps(g.id(&key("a/apps")).unwrap()).len(), 2);
        g.upsert(ks("a", "apps", &["crds"]));
        assert!(dependents_of(&g, "a/infra").is_empty());
        assert_eq!(dependents_of(&g, "a/crds"), vec![key("a/apps")]);
        let old = g.remove(&key("a/apps")).unwrap();
        assert_eq!(old.depends_on, vec![key("a/crds")]);
        assert!(dependents_of(&g, "a/crds").is_empty());
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn waiting_parent_gets_edges_to_its_children() {
        let mut g = Graph::new(FluxKind::Kustomization);
        let mut parent = (*ks("flux-system", "parent", &[])).clone();
        parent.wait = true;
        g.upsert(Arc::new(parent.clone()));
        let mut child = (*ks("apps", "child", &[])).clone();
        child.owner = Some(key("flux-system/parent"));
        g.upsert(Arc::new(child.clone()));
        let p = g.id(&key("flux-system/parent")).unwrap();
        let c = g.id(&key("apps/child")).unwrap();
        assert_eq!(g.edge_kind(p, c), Some(EdgeKind::Wait));
        // Turning wait off drops the edge; health checks naming the child add it back.
        parent.wait = false;
        g.upsert(Arc::new(parent.clone()));
        assert_eq!(g.edge_kind(p, c), None);
        parent.health_check_kustomizations = vec![key("apps/child")];
        g.upsert(Arc::new(parent));
        assert_eq!(g.edge_kind(p, c), Some(EdgeKind::Wait));
        assert_eq!(g.waited_by(c), &[p]);
    }

    #[test]
    fn removing_a_child_drops_the_wait_edge() {
        let mut g = Graph::new(FluxKind::Kustomization);
        let mut parent = (*ks("f", "parent", &[])).clone();
        parent.wait = true;
        g.upsert(Arc::new(parent));
        let mut child = (*ks("f", "child", &[])).clone();
        child.owner = Some(key("f/parent"));
        g.upsert(Arc::new(child));
        let p = g.id(&key("f/parent")).unwrap();
        assert_eq!(g.waits(p).len(), 1);
        g.remove(&key("f/child"));
        assert!(g.waits(p).is_empty());
    }

    #[test]
    fn a_kustomization_never_waits_for_itself() {
        let mut g = Graph::new(FluxKind::Kustomization);
        let mut root = (*ks("flux-system", "flux-system", &[])).clone();
        root.wait = true;
        root.owner = Some(key("flux-system/flux-system"));
        root.health_check_kustomizations = vec![key("flux-system/flux-system")];
        g.upsert(Arc::new(root.clone()));
        let r = g.id(&key("flux-system/flux-system")).unwrap();
        assert!(g.waits(r).is_empty());
        assert!(g.children(r).is_empty());
        // Through spec.healthChecks too.
        root.wait = false;
        g.upsert(Arc::new(root));
        assert!(g.waits(r).is_empty());
    }

    #[test]
    fn an_unowned_wait_draws_no_edge() {
        let mut g = Graph::new(FluxKind::Kustomization);
        let mut parent = (*ks("f", "parent", &[])).clone();
        parent.wait = true;
        parent.wait_unowned = true;
        g.upsert(Arc::new(parent.clone()));
        let mut child = (*ks("f", "child", &["parent"])).clone();
        child.owner = Some(key("f/parent"));
        g.upsert(Arc::new(child));
        let p = g.id(&key("f/parent")).unwrap();
        assert_eq!(g.children(p).len(), 1);
        assert!(g.waits(p).is_empty());
        // The same wait, owned by a field manager, is a wait edge.
        parent.wait_unowned = false;
        g.upsert(Arc::new(parent));
        assert_eq!(g.waits(p).len(), 1);
    }

    #[test]
    fn nodes_nothing_refers_to_are_freed_and_their_ids_reused() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("a", "apps", &["infra"]));
        // A candidate naming a new target, then the old object put back: nothing stays.
        let previous = g.upsert(ks("a", "apps", &["infra", "ghost"]));
        g.restore(&key("a/apps"), previous);
        assert!(g.id(&key("a/ghost")).is_none());
        assert_eq!(g.node_count(), 3);
        // The last reference to infra goes with apps.
        g.remove(&key("a/apps"));
        assert!(g.id(&key("a/apps")).is_none());
        assert!(g.id(&key("a/infra")).is_none());
        // New names take the freed ids.
        g.upsert(ks("b", "web", &["db"]));
        assert_eq!(g.node_count(), 3);
        assert_eq!(dependents_of(&g, "b/db"), vec![key("b/web")]);
        // A target still named by someone stays, as a dangling node.
        g.upsert(ks("b", "api", &["db"]));
        g.remove(&key("b/web"));
        assert_eq!(dependents_of(&g, "b/db"), vec![key("b/api")]);
    }

    #[test]
    fn helm_releases_have_no_wait_edges() {
        let mut g = Graph::new(FluxKind::HelmRelease);
        let mut hr = (*ks("f", "hr", &[])).clone();
        hr.kind = FluxKind::HelmRelease;
        hr.owner = Some(key("f/hr"));
        g.upsert(Arc::new(hr));
        let id = g.id(&key("f/hr")).unwrap();
        assert!(g.waits(id).is_empty());
    }
}

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
mod view;

pub use view::{EdgeView, GraphView, NodeView, WorstCase, view, worst_case};

pub use search::{Chain, Scc};

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arcstr::ArcStr;
use hashbrown::HashTable;
use petgraph::Direction::{Incoming, Outgoing};
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};

use crate::object::{FluxKind, FluxObject, ObjectKey};

/// Dense id of a node within one [`Graph`]. The id of a freed node is given to the next new one.
pub type NodeId = u32;

const NONE: NodeId = NodeId::MAX;

/// Why one node waits for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Listed in `spec.dependsOn`.
    DependsOn,
    /// Implied by the parent's `spec.wait` or `spec.healthChecks`.
    Wait,
}

/// What an edge of the store stands for: the two kinds of waiting, and the owner relation that
/// `wait` edges are drawn from (a `Child` edge goes from a parent to a Kustomization whose owner
/// labels name it; no search follows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    DependsOn,
    Wait,
    Child,
}

#[derive(Debug)]
struct Node {
    key: ObjectKey,
    object: Option<Arc<FluxObject>>,
    /// The next node with the same name: the name index holds one node per name, and its
    /// namesakes are chained from it.
    next_named: NodeId,
}

/// One kind's graph. Not thread-safe by itself: the cache keeps it behind a mutex so that a
/// decision and its recording are one step.
///
/// Storage is a petgraph `StableGraph` (ids stay valid when other nodes go; adding an edge is
/// O(1), removing one O(degree)). Nodes are found by key through a table of bare ids hashed by
/// the key they point at, so a key is stored once, in its node.
pub struct Graph {
    kind: FluxKind,
    store: StableDiGraph<Node, Link, u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Every node, by key.
    index: HashTable<NodeId>,
    /// One node per name (the head of its chain of namesakes).
    by_name: HashTable<NodeId>,
    by_namespace: HashMap<ArcStr, Vec<NodeId>>,
    present: usize,
    /// Nodes that lost an object or an in-edge during the current update: freed at its end if
    /// nothing refers to them any more.
    unused: Vec<NodeId>,
    scratch: RefCell<search::Scratch>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("kind", &self.kind)
            .field("nodes", &self.store.node_count())
            .field("edges", &self.store.edge_count())
            .field("present", &self.present)
            .finish()
    }
}

fn ix(id: NodeId) -> NodeIndex<u32> {
    NodeIndex::new(id as usize)
}

/// Takes `id` out of an index bucket, dropping the bucket when it empties.
fn unlist(index: &mut HashMap<ArcStr, Vec<NodeId>>, bucket: &str, id: NodeId) {
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

impl Graph {
    pub fn new(kind: FluxKind) -> Graph {
        Graph {
            kind,
            store: StableDiGraph::default(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            index: HashTable::new(),
            by_name: HashTable::new(),
            by_namespace: HashMap::new(),
            present: 0,
            unused: Vec::new(),
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

    /// Nodes in use: objects and the dangling targets something still names.
    pub fn node_count(&self) -> usize {
        self.store.node_count()
    }

    /// One more than the largest node id in use: the size of a table indexed by node id.
    pub fn node_bound(&self) -> usize {
        self.store.node_bound()
    }

    /// Every node id in use, objects and dangling targets alike.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.store.node_indices().map(|i| i.index() as NodeId)
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.store[ix(id)]
    }

    fn key_hash(&self, key: &ObjectKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn name_hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    pub fn id(&self, key: &ObjectKey) -> Option<NodeId> {
        let store = &self.store;
        self.index.find(self.key_hash(key), |&id| store[ix(id)].key == *key).copied()
    }

    pub fn key(&self, id: NodeId) -> &ObjectKey {
        &self.node(id).key
    }

    pub fn object(&self, id: NodeId) -> Option<&Arc<FluxObject>> {
        self.store.node_weight(ix(id)).and_then(|n| n.object.as_ref())
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<FluxObject>> {
        self.id(key).and_then(|id| self.object(id))
    }

    pub fn is_present(&self, id: NodeId) -> bool {
        self.object(id).is_some()
    }

    /// Ids of every present object.
    pub fn present_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.node_ids().filter(|&id| self.is_present(id))
    }

    fn links(&self, id: NodeId, dir: petgraph::Direction, link: Link) -> impl Iterator<Item = NodeId> + '_ {
        self.store.edges_directed(ix(id), dir).filter(move |e| *e.weight() == link).map(move |e| {
            let other = if dir == Outgoing { e.target() } else { e.source() };
            other.index() as NodeId
        })
    }

    /// Explicit dependencies of a node, deduplicated, in the order written.
    pub fn deps(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links(id, Outgoing, Link::DependsOn)
    }

    /// Objects that list this node in their `dependsOn`.
    pub fn dependents(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links(id, Incoming, Link::DependsOn)
    }

    /// Present Kustomizations whose owner labels name this node.
    pub fn children(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links(id, Outgoing, Link::Child)
    }

    /// Nodes this node waits for through `spec.wait` or `spec.healthChecks`.
    pub fn waits(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links(id, Outgoing, Link::Wait)
    }

    /// Nodes that wait for this node through `spec.wait` or `spec.healthChecks`.
    pub fn waited_by(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links(id, Incoming, Link::Wait)
    }

    /// Every out-edge: explicit first, then implicit.
    pub fn out_edges(&self, id: NodeId) -> impl Iterator<Item = (NodeId, EdgeKind)> + '_ {
        self.deps(id).map(|t| (t, EdgeKind::DependsOn)).chain(self.waits(id).map(|t| (t, EdgeKind::Wait)))
    }

    /// The kind of the edge `from -> to`; `dependsOn` wins when both exist.
    pub fn edge_kind(&self, from: NodeId, to: NodeId) -> Option<EdgeKind> {
        let mut kind = None;
        for e in self.store.edges_connecting(ix(from), ix(to)) {
            match e.weight() {
                Link::DependsOn => return Some(EdgeKind::DependsOn),
                Link::Wait => kind = Some(EdgeKind::Wait),
                Link::Child => {}
            }
        }
        kind
    }

    /// Present objects with this name, in any namespace.
    pub fn named(&self, name: &str) -> impl Iterator<Item = NodeId> + '_ {
        let store = &self.store;
        let head = self.by_name.find(self.name_hash(name), |&id| *store[ix(id)].key.name == *name).copied();
        std::iter::successors(head, move |&id| Some(store[ix(id)].next_named).filter(|&n| n != NONE))
            .filter(|&id| self.is_present(id))
    }

    /// Present objects in this namespace.
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.by_namespace.get(namespace).into_iter().flatten().copied().filter(|&id| self.is_present(id))
    }

    fn intern(&mut self, key: &ObjectKey) -> NodeId {
        if let Some(id) = self.id(key) {
            return id;
        }
        let id = self.store.add_node(Node { key: key.clone(), object: None, next_named: NONE }).index() as NodeId;
        let (store, hasher) = (&self.store, &self.hasher);
        let hash = self.key_hash(key);
        self.index.insert_unique(hash, id, |&i| hasher.hash_one(&store[ix(i)].key));
        let name_hash = self.name_hash(&key.name);
        match self.by_name.find_mut(name_hash, |&i| store[ix(i)].key.name == key.name) {
            Some(head) => {
                let next = std::mem::replace(head, id);
                self.store[ix(id)].next_named = next;
            }
            None => {
                self.by_name.insert_unique(name_hash, id, |&i| hasher.hash_one(&*store[ix(i)].key.name));
            }
        }
        match self.by_namespace.get_mut(&*key.namespace) {
            Some(ids) => ids.push(id),
            None => {
                self.by_namespace.insert(key.namespace.clone(), vec![id]);
            }
        }
        id
    }

    /// The graph of `objects`, with room made for all of them at once.
    pub fn from_objects(kind: FluxKind, objects: impl IntoIterator<Item = Arc<FluxObject>>) -> Graph {
        let objects: Vec<Arc<FluxObject>> = objects.into_iter().collect();
        let mut graph = Graph::new(kind);
        graph.make_room(objects.iter().map(|o| &**o));
        for object in objects {
            graph.upsert(object);
        }
        graph
    }

    /// Makes room at once for a graph holding `objects` (a node and an owner edge each, and an
    /// edge per `dependsOn` entry). A list of a hundred thousand objects would otherwise grow
    /// each table by doubling, and the allocator keeps the abandoned smaller copies resident.
    pub fn make_room<'a>(&mut self, objects: impl IntoIterator<Item = &'a FluxObject>) {
        let (nodes, edges) =
            objects.into_iter().fold((0usize, 0usize), |(n, e), o| (n + 1, e + o.depends_on.len() + 1));
        let nodes = nodes.saturating_sub(self.store.node_count());
        self.store.reserve_nodes(nodes);
        self.store.reserve_edges(edges.saturating_sub(self.store.edge_count()));
        let (store, hasher) = (&self.store, &self.hasher);
        self.index.reserve(nodes, |&i| hasher.hash_one(&store[ix(i)].key));
    }

    /// Adds or replaces an object; returns the object it replaced.
    pub fn upsert(&mut self, object: Arc<FluxObject>) -> Option<Arc<FluxObject>> {
        debug_assert_eq!(object.kind, self.kind);
        let id = self.intern(&object.key);
        let old = self.store[ix(id)].object.replace(object.clone());
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
        let old = self.store[ix(id)].object.take()?;
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
            // A node listed twice is freed once.
            let Some(n) = self.store.node_weight(ix(id)) else { continue };
            let referenced = n.object.is_some()
                || self.store.edges_directed(ix(id), Outgoing).next().is_some()
                || self.store.edges_directed(ix(id), Incoming).next().is_some();
            if referenced {
                continue;
            }
            let hash = self.key_hash(&n.key);
            if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
                entry.remove();
            }
            self.unlink_name(id);
            let node = self.store.remove_node(ix(id)).expect("the node exists");
            unlist(&mut self.by_namespace, &node.key.namespace, id);
        }
    }

    /// Takes `id` out of its chain of namesakes.
    fn unlink_name(&mut self, id: NodeId) {
        let store = &self.store;
        let name = &store[ix(id)].key.name;
        let next = store[ix(id)].next_named;
        let hash = self.name_hash(name);
        let Some(head) = self.by_name.find_mut(hash, |&i| store[ix(i)].key.name == *name) else { return };
        if *head == id {
            if next == NONE {
                if let Ok(entry) = self.by_name.find_entry(hash, |&i| i == id) {
                    entry.remove();
                }
            } else {
                *head = next;
            }
            return;
        }
        let mut cur = *head;
        while store[ix(cur)].next_named != NONE && store[ix(cur)].next_named != id {
            cur = store[ix(cur)].next_named;
        }
        if store[ix(cur)].next_named == id {
            self.store[ix(cur)].next_named = next;
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

    fn remove_link(&mut self, from: NodeId, to: NodeId, link: Link) {
        let edge: Option<EdgeIndex<u32>> =
            self.store.edges_connecting(ix(from), ix(to)).find(|e| *e.weight() == link).map(|e| e.id());
        if let Some(e) = edge {
            self.store.remove_edge(e);
        }
    }

    fn relink(&mut self, id: NodeId, old: Option<&FluxObject>, new: Option<&FluxObject>) {
        let new_deps = match new {
            Some(o) => {
                let ids: Vec<NodeId> = o.depends_on.iter().map(|k| self.intern(k)).collect();
                dedup_in_order(ids)
            }
            None => Vec::new(),
        };
        let unchanged = match old {
            Some(o) => *o.depends_on == *new.map_or(&[][..], |n| &n.depends_on[..]),
            None => new_deps.is_empty(),
        };
        if !unchanged {
            // Edges are listed newest first: the whole list is laid again, last entry first, so
            // that `deps` gives them in the order written.
            let old_deps: Vec<NodeId> = self.deps(id).collect();
            for &t in &old_deps {
                self.remove_link(id, t, Link::DependsOn);
                self.unused.push(t);
            }
            for &t in new_deps.iter().rev() {
                self.store.add_edge(ix(id), ix(t), Link::DependsOn);
            }
        }

        let old_owner = self.owner_of(old);
        let new_owner = self.owner_of(new);
        if old_owner != new_owner {
            if let Some(parent) = old_owner.and_then(|k| self.id(&k)) {
                self.remove_link(parent, id, Link::Child);
                self.recompute_waits(parent);
                self.unused.push(parent);
            }
            if let Some(key) = new_owner {
                let parent = self.intern(&key);
                self.store.add_edge(ix(parent), ix(id), Link::Child);
                self.recompute_waits(parent);
            }
        }
        self.recompute_waits(id);
    }

    fn recompute_waits(&mut self, id: NodeId) {
        // With `wait: true` Flux ignores `spec.healthChecks`, so an unowned (defaulted) wait
        // draws neither kind of edge.
        let mut new_waits: Vec<NodeId> = match self.store[ix(id)].object.clone() {
            Some(o) if o.wait && o.wait_unowned => Vec::new(),
            Some(o) if o.wait => self.children(id).collect(),
            Some(o) => o.health_check_kustomizations().iter().map(|k| self.intern(k)).collect(),
            None => Vec::new(),
        };
        // kustomize-controller leaves the Kustomization itself out of its health checks.
        new_waits.retain(|&t| t != id);
        new_waits.sort_unstable();
        new_waits.dedup();
        let mut old_waits: Vec<NodeId> = self.waits(id).collect();
        old_waits.sort_unstable();
        for &t in &old_waits {
            if new_waits.binary_search(&t).is_err() {
                self.remove_link(id, t, Link::Wait);
                self.unused.push(t);
            }
        }
        for &t in &new_waits {
            if old_waits.binary_search(&t).is_err() {
                self.store.add_edge(ix(id), ix(t), Link::Wait);
            }
        }
    }

    /// The sorted keys of `ids`, for stable messages.
    pub fn sorted_keys(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = ids.into_iter().map(|id| self.key(id).clone()).collect();
        keys.sort();
        keys
    }
}

/// Both kinds' graphs.
#[derive(Debug)]
pub struct Graphs([Graph; 2]);

impl Default for Graphs {
    fn default() -> Self {
        Graphs([Graph::new(FluxKind::Kustomization), Graph::new(FluxKind::HelmRelease)])
    }
}

impl Graphs {
    pub fn get(&self, kind: FluxKind) -> &Graph {
        &self.0[kind.index()]
    }

    pub fn get_mut(&mut self, kind: FluxKind) -> &mut Graph {
        &mut self.0[kind.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Graph> {
        self.0.iter()
    }

    /// The graph of `kind`, to change, and the graph of the other kind, to read (a dangling
    /// target that exists as the other kind gets a hint saying so).
    pub fn split_mut(&mut self, kind: FluxKind) -> (&mut Graph, &Graph) {
        let [ks, hr] = &mut self.0;
        match kind {
            FluxKind::Kustomization => (ks, hr),
            FluxKind::HelmRelease => (hr, ks),
        }
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
        g.id(&key(k)).map(|id| g.sorted_keys(g.dependents(id))).unwrap_or_default()
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
        assert_eq!(g.deps(g.id(&key("a/apps")).unwrap()).count(), 2);
        g.upsert(ks("a", "apps", &["crds"]));
        assert!(dependents_of(&g, "a/infra").is_empty());
        assert_eq!(dependents_of(&g, "a/crds"), vec![key("a/apps")]);
        let old = g.remove(&key("a/apps")).unwrap();
        assert_eq!(*old.depends_on, [key("a/crds")]);
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
        parent.set_health_check_kustomizations(vec![key("apps/child")]);
        g.upsert(Arc::new(parent));
        assert_eq!(g.edge_kind(p, c), Some(EdgeKind::Wait));
        assert_eq!(g.waited_by(c).collect::<Vec<_>>(), [p]);
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
        assert_eq!(g.waits(p).count(), 1);
        g.remove(&key("f/child"));
        assert!(g.waits(p).next().is_none());
    }

    #[test]
    fn a_kustomization_never_waits_for_itself() {
        let mut g = Graph::new(FluxKind::Kustomization);
        let mut root = (*ks("flux-system", "flux-system", &[])).clone();
        root.wait = true;
        root.owner = Some(key("flux-system/flux-system"));
        root.set_health_check_kustomizations(vec![key("flux-system/flux-system")]);
        g.upsert(Arc::new(root.clone()));
        let r = g.id(&key("flux-system/flux-system")).unwrap();
        assert!(g.waits(r).next().is_none());
        assert!(g.children(r).next().is_none());
        // Through spec.healthChecks too.
        root.wait = false;
        g.upsert(Arc::new(root));
        assert!(g.waits(r).next().is_none());
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
        assert_eq!(g.children(p).count(), 1);
        assert!(g.waits(p).next().is_none());
        // The same wait, owned by a field manager, is a wait edge.
        parent.wait_unowned = false;
        g.upsert(Arc::new(parent));
        assert_eq!(g.waits(p).count(), 1);
    }

    #[test]
    fn nodes_nothing_refers_to_are_freed_and_their_ids_reused() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("a", "apps", &["infra"]));
        // A candidate naming a new target, then the old object put back: nothing stays.
        let previous = g.upsert(ks("a", "apps", &["infra", "ghost"]));
        g.restore(&key("a/apps"), previous);
        assert!(g.id(&key("a/ghost")).is_none());
        assert_eq!(g.node_count(), 2);
        // The last reference to infra goes with apps.
        g.remove(&key("a/apps"));
        assert!(g.id(&key("a/apps")).is_none());
        assert!(g.id(&key("a/infra")).is_none());
        // New names take the freed ids.
        g.upsert(ks("b", "web", &["db"]));
        assert_eq!(g.node_count(), 2);
        assert!(g.node_bound() <= 3, "no id beyond the three ever handed out");
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
        assert!(g.waits(id).next().is_none());
    }
}

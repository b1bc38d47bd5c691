//! The rules and their findings. The same rules serve three callers: the admission webhook
//! (incremental, from the object under review: [`evaluate_upsert`], [`evaluate_delete`]), the
//! periodic audit and the offline `check` (whole graph: [`audit`]).

mod admission;
mod audit;

pub use admission::{adds_edges, evaluate_delete, evaluate_upsert, evaluate_upsert_with};
pub use audit::{audit, audit_with};

use std::collections::HashMap;

use serde::Serialize;

use crate::graph::{EdgeKind, Graph, NodeId};
use crate::object::{FluxKind, ObjectKey};
use crate::policy::{Action, Rule};

/// What a finding is about: an object of one of the two guarded kinds, or a flux-operator
/// ResourceSet, whose own `dependsOn` (naming objects of any kind) `check` reads offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FindingKind {
    Kustomization,
    HelmRelease,
    ResourceSet,
}

impl FindingKind {
    /// The guarded kind, `None` for a ResourceSet.
    pub fn flux(self) -> Option<FluxKind> {
        match self {
            FindingKind::Kustomization => Some(FluxKind::Kustomization),
            FindingKind::HelmRelease => Some(FluxKind::HelmRelease),
            FindingKind::ResourceSet => None,
        }
    }
}

impl From<FluxKind> for FindingKind {
    fn from(kind: FluxKind) -> FindingKind {
        match kind {
            FluxKind::Kustomization => FindingKind::Kustomization,
            FluxKind::HelmRelease => FindingKind::HelmRelease,
        }
    }
}

impl PartialEq<FluxKind> for FindingKind {
    fn eq(&self, other: &FluxKind) -> bool {
        self.flux() == Some(*other)
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.flux() {
            Some(kind) => kind.fmt(f),
            None => f.write_str("ResourceSet"),
        }
    }
}

/// One problem found in a graph. `action` is `Deny` or `Warn`, never `Off`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub kind: FindingKind,
    pub object: ObjectKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<ObjectKey>>,
    pub action: Action,
    pub message: String,
}

impl Finding {
    pub fn is_deny(&self) -> bool {
        self.action == Action::Deny
    }
}

/// `dependsOn cycle: a -> b -> a`, followed by an explanation of every wait edge in it.
pub(crate) fn cycle_message(graph: &Graph, cycle: &[NodeId], prefix: &str) -> String {
    let path: Vec<String> = cycle.iter().map(|&id| graph.key(id).to_string()).collect();
    let mut msg = format!("{prefix}: {}", path.join(" -> "));
    let waits: Vec<String> = cycle
        .windows(2)
        .filter(|w| graph.edge_kind(w[0], w[1]) == Some(EdgeKind::Wait))
        .map(|w| {
            let (p, c) = (graph.key(w[0]), graph.key(w[1]));
            let why = match graph.object(w[0]) {
                Some(o) if o.wait => "has spec.wait: true and applies it",
                _ => "names it in spec.healthChecks",
            };
            format!("{p} -> {c} is a wait: {p} {why}")
        })
        .collect();
    if !waits.is_empty() {
        msg.push_str(&format!(" ({})", waits.join("; ")));
    }
    msg
}

/// The message of a dangling `dependsOn`; with a `reach`, a hint when a likely target exists.
/// `other` is the graph of the other kind, for a target that exists as that kind.
pub(crate) fn dangling_message(
    graph: &Graph,
    other: Option<&Graph>,
    object: &ObjectKey,
    target: &ObjectKey,
    reach: Option<HintReach>,
) -> String {
    dangling_message_with(graph, object, target, reach.and_then(|reach| hint(graph, other, object, target, reach)))
}

/// [`dangling_message`] with a hint computed beforehand (the audit computes one per target).
pub(crate) fn dangling_message_with(
    graph: &Graph,
    object: &ObjectKey,
    target: &ObjectKey,
    hint: Option<String>,
) -> String {
    let kind = graph.kind();
    let mut msg = format!("dangling dependsOn: {object} depends on {kind} {target}, which does not exist");
    if let Some(hint) = hint {
        msg.push_str("; ");
        msg.push_str(&hint);
    }
    msg
}

/// How far a hint may look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HintReach {
    /// The name index and the target's namespace only: cheap, for the admission path.
    Indexed,
    /// Also near names in every namespace (a renamed object): a walk over every object, for the
    /// audit and `check`.
    Everywhere,
}

/// `dangling dependsOn: a spec.dependsOn[0].name must be a non-empty string; ...`: an entry
/// that names nothing Flux can find, which it waits for forever like a missing target.
pub(crate) fn unreadable_message(object: &ObjectKey, problem: &crate::object::ObjectError) -> String {
    format!(
        "dangling dependsOn: {object} {problem}; Flux cannot find what this entry names and will wait for it forever"
    )
}

/// `duplicate dependsOn: a lists b 2 times`.
pub(crate) fn duplicate_message(object: &ObjectKey, target: &ObjectKey, count: usize) -> String {
    format!("duplicate dependsOn: {object} lists {target} {count} times")
}

/// `cross-namespace dependsOn: a (namespace x) depends on y/b`.
pub(crate) fn cross_namespace_message(object: &ObjectKey, target: &ObjectKey) -> String {
    format!("cross-namespace dependsOn: {object} (namespace {}) depends on {target}", object.namespace)
}

/// `dependsOn chain of N objects exceeds the limit of L: a -> b -> ...`.
pub(crate) fn chain_message(graph: &Graph, chain: &[NodeId], limit: usize) -> String {
    let path: Vec<String> = chain.iter().map(|&id| graph.key(id).to_string()).collect();
    format!("dependsOn chain of {} objects exceeds the limit of {limit}: {}", chain.len(), path.join(" -> "))
}

/// How many times each target is listed.
pub(crate) fn count_targets(list: &[ObjectKey]) -> HashMap<&ObjectKey, usize> {
    let mut counts: HashMap<&ObjectKey, usize> = HashMap::new();
    for t in list {
        *counts.entry(t).or_default() += 1;
    }
    counts
}

/// Where the author probably meant to point. First, an object of the other kind with the
/// target's key: Flux resolves `dependsOn` within one kind, so such a reference waits forever
/// (a common real mistake). Then the same name in another namespace (a wrong or missing
/// `namespace:`), a near name in the same namespace, and (with [`HintReach::Everywhere`]) a near
/// name in any namespace. A hint never names the dependent itself, nor an object that already
/// depends on it (following that hint would close a cycle).
pub(crate) fn hint(
    graph: &Graph,
    other: Option<&Graph>,
    object: &ObjectKey,
    target: &ObjectKey,
    reach: HintReach,
) -> Option<String> {
    let kind = graph.kind();
    if let Some(other) = other
        && other.get(target).is_some()
    {
        return Some(cross_kind_hint(kind, other.kind(), target));
    }
    let from = graph.id(object);
    let usable = |id: NodeId| match from {
        Some(from) => id != from && graph.find_path([id], false, |n| n == from).is_none(),
        None => true,
    };
    let mut elsewhere: Vec<&str> = graph
        .named(&target.name)
        .filter(|&id| usable(id))
        .map(|id| &*graph.key(id).namespace)
        .filter(|ns| *ns != &*target.namespace)
        .collect();
    if !elsewhere.is_empty() {
        elsewhere.sort_unstable();
        let shown: Vec<&str> = elsewhere.iter().take(3).copied().collect();
        let more = if elsewhere.len() > 3 { format!(" and {} more", elsewhere.len() - 3) } else { String::new() };
        let noun = if elsewhere.len() == 1 { "namespace" } else { "namespaces" };
        return Some(format!("a {kind} named {} exists in {noun} {}{more}", target.name, shown.join(", ")));
    }
    let nearest = |ids: &mut dyn Iterator<Item = NodeId>| -> Option<NodeId> {
        let mut scored: Vec<(usize, &ObjectKey, NodeId)> =
            ids.filter_map(|id| nearness(&target.name, &graph.key(id).name).map(|s| (s, graph.key(id), id))).collect();
        scored.sort_unstable();
        scored.into_iter().map(|(_, _, id)| id).find(|&id| usable(id))
    };
    if let Some(id) = nearest(&mut graph.in_namespace(&target.namespace)) {
        return Some(format!("did you mean {}?", graph.key(id)));
    }
    if reach == HintReach::Everywhere
        && let Some(id) = nearest(&mut graph.present_ids())
    {
        return Some(format!("did you mean {}?", graph.key(id)));
    }
    // Last, the same name as the other kind in another namespace.
    let other = other?;
    let id = other.named(&target.name).find(|&id| other.is_present(id))?;
    Some(cross_kind_hint(kind, other.kind(), other.key(id)))
}

/// The hint for a `dependsOn` that names an object of the other kind, with the fix.
fn cross_kind_hint(kind: FluxKind, other: FluxKind, found: &ObjectKey) -> String {
    let fix = match kind {
        FluxKind::Kustomization => "name the Kustomization that applies it, or use spec.healthChecks",
        FluxKind::HelmRelease => {
            "name a HelmRelease that Kustomization applies, or put the dependsOn on the Kustomization that applies \
             this HelmRelease"
        }
    };
    format!(
        "a {other} named {} exists in {}; a {kind}'s dependsOn can only name {kind}s: {fix}",
        found.name, found.namespace
    )
}

/// A distance for names that look like a typo or an abbreviation of each other; `None` when
/// they are not close. Lower is closer.
fn nearness(wanted: &str, candidate: &str) -> Option<usize> {
    if wanted == candidate {
        return None;
    }
    let (short, long) = if wanted.len() <= candidate.len() { (wanted, candidate) } else { (candidate, wanted) };
    let prefix = short.len() >= 4 && long.starts_with(short);
    // Names whose lengths differ by more than the allowed distance cannot be close: skip the
    // edit distance, which dominates a scan over every object.
    if !prefix && long.len() - short.len() > (short.len() / 3).max(1) {
        return None;
    }
    let distance = strsim::levenshtein(wanted, candidate);
    let shorter = wanted.chars().count().min(candidate.chars().count());
    if distance <= (shorter / 3).max(1) {
        return Some(distance);
    }
    prefix.then_some(distance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::ks;
    use crate::object::FluxObject;
    use std::sync::Arc;

    #[test]
    fn hints_prefer_the_same_name_elsewhere_then_near_names() {
        let web = ObjectKey::new("flux-system", "web");
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("infra-system", "infra", &[]));
        g.upsert(ks("flux-system", "infrastructure", &[]));
        g.upsert(ks("flux-system", "cert-manager", &[]));
        assert_eq!(
            hint(&g, None, &web, &ObjectKey::new("flux-system", "infra"), HintReach::Everywhere).unwrap(),
            "a Kustomization named infra exists in namespace infra-system"
        );
        assert_eq!(
            hint(&g, None, &web, &ObjectKey::new("flux-system", "infrastucture"), HintReach::Everywhere).unwrap(),
            "did you mean flux-system/infrastructure?"
        );
        assert_eq!(
            hint(&g, None, &web, &ObjectKey::new("flux-system", "certmanager"), HintReach::Everywhere).unwrap(),
            "did you mean flux-system/cert-manager?"
        );
        assert_eq!(hint(&g, None, &web, &ObjectKey::new("flux-system", "apps"), HintReach::Everywhere), None);
        // A renamed object in another namespace is found last, and only when asked to look there.
        g.upsert(ks("kubevirt", "zz-vm-kubevirt-app", &[]));
        assert_eq!(hint(&g, None, &web, &ObjectKey::new("vm", "vm-kubevirt-app"), HintReach::Indexed), None);
        assert_eq!(
            hint(&g, None, &web, &ObjectKey::new("vm", "vm-kubevirt-app"), HintReach::Everywhere).unwrap(),
            "did you mean kubevirt/zz-vm-kubevirt-app?"
        );
    }

    #[test]
    fn hints_never_name_the_dependent_nor_close_a_cycle() {
        // The real Biohazard case: vm-jj-secureblue depends on its missing -pvc sibling.
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("vm-jj", "vm-jj-secureblue", &["vm-jj-secureblue-pvc"]));
        let me = ObjectKey::new("vm-jj", "vm-jj-secureblue");
        let pvc = ObjectKey::new("vm-jj", "vm-jj-secureblue-pvc");
        assert_eq!(hint(&g, None, &me, &pvc, HintReach::Everywhere), None);
        // A near name that already depends on the dependent would close a cycle: the next
        // nearest is named instead.
        g.upsert(ks("vm-jj", "vm-jj-secureblue-pv", &["vm-jj-secureblue"]));
        g.upsert(ks("vm-jj", "vm-jj-secureblue-pvcs", &[]));
        assert_eq!(
            hint(&g, None, &me, &pvc, HintReach::Everywhere).unwrap(),
            "did you mean vm-jj/vm-jj-secureblue-pvcs?"
        );
        // Same name elsewhere, but that one depends on the dependent: no hint from it.
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("apps", "web", &["infra"]));
        g.upsert(ks("infra-system", "infra", &["apps/web"]));
        let h = hint(&g, None, &ObjectKey::new("apps", "web"), &ObjectKey::new("apps", "infra"), HintReach::Everywhere);
        assert_eq!(h, None);
    }

    #[test]
    fn a_target_of_the_other_kind_gets_the_cross_kind_hint() {
        let mut ks_graph = Graph::new(FluxKind::Kustomization);
        ks_graph.upsert(ks("rook-ceph", "rook-ceph-cluster-app", &[]));
        let mut hr_graph = Graph::new(FluxKind::HelmRelease);
        let hr = |ns: &str, name: &str| {
            Arc::new(FluxObject::new(FluxKind::HelmRelease, ObjectKey::new(ns, name), Vec::new()))
        };
        hr_graph.upsert(hr("rook-ceph", "rook-ceph-cluster"));
        let me = ObjectKey::new("flux-system", "apps");
        let target = ObjectKey::new("rook-ceph", "rook-ceph-cluster");
        assert_eq!(
            hint(&ks_graph, Some(&hr_graph), &me, &target, HintReach::Indexed).unwrap(),
            "a HelmRelease named rook-ceph-cluster exists in rook-ceph; a Kustomization's dependsOn can only name \
             Kustomizations: name the Kustomization that applies it, or use spec.healthChecks"
        );
        // The other way round, and in another namespace than the one written.
        let h = hint(
            &hr_graph,
            Some(&ks_graph),
            &ObjectKey::new("db", "pg"),
            &ObjectKey::new("db", "rook-ceph-cluster-app"),
            HintReach::Indexed,
        );
        assert!(h.unwrap().starts_with("a Kustomization named rook-ceph-cluster-app exists in rook-ceph; a HelmRelease's dependsOn can only name HelmReleases"));
    }

    #[test]
    fn nearness_rejects_unrelated_short_names() {
        assert_eq!(nearness("db", "ui"), None);
        assert_eq!(nearness("apps", "apis"), Some(1));
        assert_eq!(nearness("infra", "infrastructure"), Some(9));
        assert_eq!(nearness("web", "web"), None);
    }
}

//! The rules and their findings. The same rules serve three callers: the admission webhook
//! (incremental, from the object under review: [`evaluate_upsert`], [`evaluate_delete`]), the
//! periodic audit and the offline `check` (whole graph: [`audit`]).

mod admission;
mod audit;

pub use admission::{adds_edges, evaluate_delete, evaluate_upsert};
pub use audit::audit;

use std::collections::HashMap;

use serde::Serialize;

use crate::graph::{EdgeKind, Graph, NodeId};
use crate::object::{FluxKind, ObjectKey};
use crate::policy::{Action, Rule};

/// One problem found in a graph. `action` is `Deny` or `Warn`, never `Off`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub kind: FluxKind,
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
pub(crate) fn dangling_message(
    graph: &Graph,
    object: &ObjectKey,
    target: &ObjectKey,
    reach: Option<HintReach>,
) -> String {
    dangling_message_with(graph, object, target, reach.and_then(|reach| hint(graph, target, reach)))
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

/// Where the author probably meant to point: the same name in another namespace first (a wrong
/// or missing `namespace:` is the common mistake), else a near name in the same namespace, else
/// (with [`HintReach::Everywhere`]) a near name in any namespace.
pub(crate) fn hint(graph: &Graph, target: &ObjectKey, reach: HintReach) -> Option<String> {
    let kind = graph.kind();
    let mut elsewhere: Vec<&str> = graph
        .named(&target.name)
        .map(|id| graph.key(id).namespace.as_str())
        .filter(|ns| *ns != target.namespace)
        .collect();
    if !elsewhere.is_empty() {
        elsewhere.sort_unstable();
        let shown: Vec<&str> = elsewhere.iter().take(3).copied().collect();
        let more = if elsewhere.len() > 3 { format!(" and {} more", elsewhere.len() - 3) } else { String::new() };
        let noun = if elsewhere.len() == 1 { "namespace" } else { "namespaces" };
        return Some(format!("a {kind} named {} exists in {noun} {}{more}", target.name, shown.join(", ")));
    }
    let mut best: Option<(usize, &str)> = None;
    for id in graph.in_namespace(&target.namespace) {
        let name = graph.key(id).name.as_str();
        if let Some(score) = nearness(&target.name, name)
            && best.is_none_or(|(s, n)| (score, name) < (s, n))
        {
            best = Some((score, name));
        }
    }
    if let Some((_, name)) = best {
        return Some(format!("did you mean {}/{name}?", target.namespace));
    }
    if reach == HintReach::Indexed {
        return None;
    }
    // Last, a near name anywhere: a renamed object in another namespace.
    let mut best: Option<(usize, &crate::object::ObjectKey)> = None;
    for id in graph.present_ids() {
        let key = graph.key(id);
        if let Some(score) = nearness(&target.name, &key.name)
            && best.is_none_or(|(s, k)| (score, key) < (s, k))
        {
            best = Some((score, key));
        }
    }
    best.map(|(_, key)| format!("did you mean {key}?"))
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

    #[test]
    fn hints_prefer_the_same_name_elsewhere_then_near_names() {
        let mut g = Graph::new(FluxKind::Kustomization);
        g.upsert(ks("infra-system", "infra", &[]));
        g.upsert(ks("flux-system", "infrastructure", &[]));
        g.upsert(ks("flux-system", "cert-manager", &[]));
        assert_eq!(
            hint(&g, &ObjectKey::new("flux-system", "infra"), HintReach::Everywhere).unwrap(),
            "a Kustomization named infra exists in namespace infra-system"
        );
        assert_eq!(
            hint(&g, &ObjectKey::new("flux-system", "infrastucture"), HintReach::Everywhere).unwrap(),
            "did you mean flux-system/infrastructure?"
        );
        assert_eq!(
            hint(&g, &ObjectKey::new("flux-system", "certmanager"), HintReach::Everywhere).unwrap(),
            "did you mean flux-system/cert-manager?"
        );
        assert_eq!(hint(&g, &ObjectKey::new("flux-system", "apps"), HintReach::Everywhere), None);
        // A renamed object in another namespace is found last, and only when asked to look there.
        g.upsert(ks("kubevirt", "zz-vm-kubevirt-app", &[]));
        assert_eq!(hint(&g, &ObjectKey::new("vm", "vm-kubevirt-app"), HintReach::Indexed), None);
        assert_eq!(
            hint(&g, &ObjectKey::new("vm", "vm-kubevirt-app"), HintReach::Everywhere).unwrap(),
            "did you mean kubevirt/zz-vm-kubevirt-app?"
        );
    }

    #[test]
    fn nearness_rejects_unrelated_short_names() {
        assert_eq!(nearness("db", "ui"), None);
        assert_eq!(nearness("apps", "apis"), Some(1));
        assert_eq!(nearness("infra", "infrastructure"), Some(9));
        assert_eq!(nearness("web", "web"), None);
    }
}

//! The shared record of decisions, as data: pure, no I/O, no clock (times come in as
//! milliseconds since the Unix epoch, because replicas on different nodes compare them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::object::{FluxKind, FluxObject, ObjectKey};

/// How long an entry stays in the record at most: as long as an overlay entry
/// ([`crate::cache::OVERLAY_TTL`]). An admission that a later step rejected leaves then.
pub const ENTRY_TTL_MS: u64 = 60_000;

/// A replica counts as taking part in decisions for this long after its last write.
pub const ACTIVE_WINDOW_MS: u64 = 5 * 60_000;

/// Most entries the record holds; an admission that would go past it is not recorded (and so
/// not admitted). Far above what the watch leaves undelivered on a healthy cluster, and well
/// inside the API server's 256 KiB limit on annotations (an entry is 200-400 bytes).
pub const MAX_ENTRIES: usize = 500;

/// One admitted object, as every replica must see it until its own watch has delivered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The replica that admitted it.
    pub replica: String,
    /// The object as admitted, in the Flux wire shape reduced to what draws edges.
    pub object: Value,
    /// The `resourceVersion` the admission replaced (a watch event carrying it is older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    pub expires_ms: u64,
    /// Replicas whose watch has delivered the object as admitted (or something newer).
    #[serde(default)]
    pub seen_by: Vec<String>,
}

impl Entry {
    /// The entry for `object`, admitted by `replica` at `now_ms`.
    pub fn new(replica: &str, object: &FluxObject, replaced: Option<String>, now_ms: u64) -> Entry {
        Entry {
            replica: replica.to_string(),
            object: wire(object),
            replaced,
            expires_ms: now_ms + ENTRY_TTL_MS,
            seen_by: Vec::new(),
        }
    }

    /// The admitted object, read back as the webhook reads any object.
    pub fn flux_object(&self) -> Option<FluxObject> {
        let kind = FluxKind::from_api_version(self.object["apiVersion"].as_str()?, self.object["kind"].as_str()?)?;
        let ns = self.object["metadata"]["namespace"].as_str()?;
        FluxObject::from_value(kind, &self.object, ns, "").ok()
    }
}

/// The record: every replica's recent admissions not yet delivered to every replica, and when
/// each replica last wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Replica name -> time of its last write (ms since the epoch).
    #[serde(default)]
    pub replicas: BTreeMap<String, u64>,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

impl Record {
    /// Reads the record from its text; an unreadable one (written by a future version, or by
    /// hand) counts as empty, and the next write replaces it.
    pub fn parse(text: &str) -> Record {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a record is plain data")
    }

    /// The entries that still count at `now_ms`.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.expires_ms > now_ms)
    }

    /// Replicas that wrote within [`ACTIVE_WINDOW_MS`] of `now_ms`.
    pub fn active_replicas(&self, now_ms: u64) -> usize {
        self.replicas.values().filter(|&&t| t + ACTIVE_WINDOW_MS > now_ms).count()
    }

    /// Prepares the next version written by `replica` at `now_ms`: `delivered` says whether
    /// this replica's watch has delivered an entry's object; `refuted` whether the API server
    /// was found not to hold it. Expired and refuted entries leave, and so do entries that
    /// every active replica has seen delivered: from then on each of them has it in its cache,
    /// so none needs the record to see it.
    pub fn prune(
        &mut self,
        replica: &str,
        now_ms: u64,
        delivered: impl Fn(&Entry) -> bool,
        refuted: impl Fn(&Entry) -> bool,
    ) {
        self.replicas.insert(replica.to_string(), now_ms);
        self.replicas.retain(|_, &mut t| t + ACTIVE_WINDOW_MS > now_ms);
        let active: Vec<String> = self.replicas.keys().cloned().collect();
        self.entries.retain_mut(|e| {
            if e.expires_ms <= now_ms || refuted(e) {
                return false;
            }
            if !e.seen_by.iter().any(|r| r == replica) && delivered(e) {
                e.seen_by.push(replica.to_string());
            }
            !active.iter().all(|r| e.seen_by.contains(r))
        });
    }

    /// Adds an admission, replacing an earlier entry for the same object.
    pub fn add(&mut self, entry: Entry) {
        let same =
            |e: &Entry| e.object["kind"] == entry.object["kind"] && e.object["metadata"] == entry.object["metadata"];
        self.entries.retain(|e| !same(e));
        self.entries.push(entry);
    }
}

/// The object in the wire shape [`FluxObject::from_value`] reads back into the same edges:
/// `dependsOn`, the wait that draws edges, Kustomization health checks, the owner labels.
pub fn wire(object: &FluxObject) -> Value {
    let key = |k: &ObjectKey| json!({ "name": k.name.as_str(), "namespace": k.namespace.as_str() });
    let api_version = match object.kind {
        FluxKind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
        FluxKind::HelmRelease => "helm.toolkit.fluxcd.io/v2",
    };
    let mut metadata = json!({ "name": object.key.name.as_str(), "namespace": object.key.namespace.as_str() });
    if let Some(owner) = &object.owner {
        metadata["labels"] = json!({
            crate::object::OWNER_NAME_LABEL: owner.name.as_str(),
            crate::object::OWNER_NAMESPACE_LABEL: owner.namespace.as_str(),
        });
    }
    let mut spec = json!({ "dependsOn": object.depends_on.iter().map(key).collect::<Vec<_>>() });
    if object.kind == FluxKind::Kustomization {
        spec["wait"] = json!(object.wait && !object.wait_unowned);
        let checks: Vec<Value> = object
            .health_check_kustomizations()
            .iter()
            .map(|k| {
                json!({ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                        "name": k.name.as_str(), "namespace": k.namespace.as_str() })
            })
            .collect();
        if !checks.is_empty() {
            spec["healthChecks"] = json!(checks);
        }
    }
    json!({ "apiVersion": api_version, "kind": object.kind.as_str(), "metadata": metadata, "spec": spec })
}

/// Whether two objects draw the same edges: what the record must carry, and all a delivered
/// object has to match for an entry to be done.
pub fn same_edges(a: &FluxObject, b: &FluxObject) -> bool {
    a.kind == b.kind
        && a.key == b.key
        && a.depends_on == b.depends_on
        && (a.wait && !a.wait_unowned) == (b.wait && !b.wait_unowned)
        && a.owner == b.owner
        && a.health_check_kustomizations() == b.health_check_kustomizations()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn object(name: &str, deps: &[&str]) -> FluxObject {
        let value = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": { "name": name, "namespace": "f", "uid": "u",
                          "labels": { "kustomize.toolkit.fluxcd.io/name": "root",
                                      "kustomize.toolkit.fluxcd.io/namespace": "flux-system" } },
            "spec": { "wait": true, "dependsOn": deps.iter().map(|d| json!({ "name": d })).collect::<Vec<_>>(),
                      "healthChecks": [{ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                                         "name": "x", "namespace": "f" }] }
        });
        FluxObject::from_value(FluxKind::Kustomization, &value, "f", "").unwrap()
    }

    #[test]
    fn an_entry_reads_back_into_the_same_edges() {
        let o = object("apps", &["infra", "crds"]);
        let back = Entry::new("r1", &o, None, 0).flux_object().unwrap();
        assert!(same_edges(&o, &back), "{back:?}");
        let _ = Arc::new(back);
    }

    #[test]
    fn entries_leave_once_every_active_replica_saw_them_delivered() {
        let mut r = Record::default();
        r.prune("a", 1_000, |_| false, |_| false);
        r.prune("b", 1_000, |_| false, |_| false);
        r.add(Entry::new("a", &object("apps", &["infra"]), None, 1_000));
        r.prune("a", 2_000, |_| true, |_| false);
        assert_eq!(r.entries.len(), 1, "b has not seen it yet");
        r.prune("b", 3_000, |_| true, |_| false);
        assert!(r.entries.is_empty());
    }

    #[test]
    fn entries_expire_and_refuted_ones_leave() {
        let mut r = Record::default();
        r.add(Entry::new("a", &object("apps", &["infra"]), None, 0));
        r.add(Entry::new("a", &object("other", &["infra"]), None, 30_000));
        r.prune("b", ENTRY_TTL_MS, |_| false, |_| false);
        assert_eq!(r.entries.len(), 1, "the first expired");
        r.prune("b", ENTRY_TTL_MS, |_| false, |_| true);
        assert!(r.entries.is_empty());
    }

    #[test]
    fn a_new_admission_of_an_object_replaces_its_entry_and_the_text_round_trips() {
        let mut r = Record::default();
        r.add(Entry::new("a", &object("apps", &["infra"]), None, 0));
        r.add(Entry::new("b", &object("apps", &["crds"]), Some("7".into()), 5));
        assert_eq!(r.entries.len(), 1);
        assert_eq!(Record::parse(&r.to_text()), r);
        assert_eq!(Record::parse("not json"), Record::default());
    }

    #[test]
    fn replicas_that_stopped_writing_stop_counting() {
        let mut r = Record::default();
        r.prune("a", 0, |_| false, |_| false);
        r.prune("b", ACTIVE_WINDOW_MS - 1, |_| false, |_| false);
        assert_eq!(r.active_replicas(ACTIVE_WINDOW_MS - 1), 2);
        r.prune("b", ACTIVE_WINDOW_MS, |_| false, |_| false);
        assert_eq!(r.replicas.len(), 1);
    }
}

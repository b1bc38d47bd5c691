//! The shared record of decisions, as data: pure, no I/O, no clock (times come in as
//! milliseconds since the Unix epoch, because replicas on different nodes compare them).
//!
//! The record is a set of annotations on one object, one key per admission and one per
//! replica, so that replicas change it with merge patches that never touch each other's keys:
//! the API server applies them one after another on the stored object, with no conflict for a
//! replica to retry.

use std::collections::{BTreeMap, BTreeSet};

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

/// Annotation key prefix of an admission.
const ENTRY_PREFIX: &str = "fluxgate.dev/e.";
/// Annotation key prefix of a replica's mark.
const REPLICA_PREFIX: &str = "fluxgate.dev/r.";

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
}

impl Entry {
    /// The entry for `object`, admitted by `replica` at `now_ms`.
    pub fn new(replica: &str, object: &FluxObject, replaced: Option<String>, now_ms: u64) -> Entry {
        Entry { replica: replica.to_string(), object: wire(object), replaced, expires_ms: now_ms + ENTRY_TTL_MS }
    }

    /// The admitted object, read back as the webhook reads any object.
    pub fn flux_object(&self) -> Option<FluxObject> {
        let kind = FluxKind::from_api_version(self.object["apiVersion"].as_str()?, self.object["kind"].as_str()?)?;
        let ns = self.object["metadata"]["namespace"].as_str()?;
        FluxObject::from_value(kind, &self.object, ns, "").ok()
    }

    /// The entry's key: unique per replica and admission (`seq` counts a replica's entries).
    pub fn id(&self, seq: u64) -> String {
        let text = format!("{}\n{}\n{seq}\n{}", self.replica, self.expires_ms, self.object);
        format!("{:016x}", fnv(text.as_bytes()))
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A replica's mark: when it last wrote, and the entries its watch had delivered then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub name: String,
    pub at_ms: u64,
    #[serde(default)]
    pub seen: BTreeSet<String>,
}

/// The record as read: every replica's recent admissions not yet delivered to every replica,
/// and each replica's mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Entry id -> entry.
    pub entries: BTreeMap<String, Entry>,
    /// Replica name -> mark.
    pub replicas: BTreeMap<String, Mark>,
}

/// A merge patch of the record's annotations: a key set to text, or removed (`None`).
pub type Changes = BTreeMap<String, Option<String>>;

impl Record {
    /// Reads the record from the object's annotations; an unreadable key (written by hand, or
    /// by a future version) is skipped.
    pub fn from_annotations<'a>(annotations: impl IntoIterator<Item = (&'a String, &'a String)>) -> Record {
        let mut record = Record::default();
        for (key, text) in annotations {
            if let Some(id) = key.strip_prefix(ENTRY_PREFIX) {
                if let Ok(entry) = serde_json::from_str(text) {
                    record.entries.insert(id.to_string(), entry);
                }
            } else if key.starts_with(REPLICA_PREFIX)
                && let Ok(mark) = serde_json::from_str::<Mark>(text)
            {
                record.replicas.insert(mark.name.clone(), mark);
            }
        }
        record
    }

    /// Applies `changes` as the API server applies the merge patch.
    pub fn apply(&mut self, changes: &Changes) {
        let mut annotations = self.annotations();
        for (key, value) in changes {
            match value {
                Some(text) => annotations.insert(key.clone(), text.clone()),
                None => annotations.remove(key),
            };
        }
        *self = Record::from_annotations(&annotations);
    }

    /// The record as annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let entries = self.entries.iter().map(|(id, e)| (entry_key(id), serde_json::to_string(e).expect("plain data")));
        let marks =
            self.replicas.values().map(|m| (replica_key(&m.name), serde_json::to_string(m).expect("plain data")));
        entries.chain(marks).collect()
    }

    /// The entries that still count at `now_ms`.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter().filter(move |(_, e)| e.expires_ms > now_ms)
    }

    /// Replicas that wrote within [`ACTIVE_WINDOW_MS`] of `now_ms`.
    pub fn active_replicas(&self, now_ms: u64) -> usize {
        self.replicas.values().filter(|m| m.at_ms + ACTIVE_WINDOW_MS > now_ms).count()
    }

    /// The patch `replica` sends at `now_ms` to add `new` (each with its id): its mark, with
    /// the entries whose object its watch has `delivered`; and the removal of entries that are
    /// expired, `refuted` (the API server was found not to hold them), or seen delivered by
    /// every active replica (from then on each has it in its cache; none needs the record to
    /// see it). Marks of replicas gone quiet for [`ACTIVE_WINDOW_MS`] leave too.
    pub fn changes(
        &self,
        replica: &str,
        now_ms: u64,
        new: &[(String, Entry)],
        delivered: impl Fn(&Entry) -> bool,
        refuted: impl Fn(&Entry) -> bool,
    ) -> Changes {
        let mut changes = Changes::new();
        let seen: BTreeSet<String> =
            self.entries.iter().filter(|(_, e)| delivered(e)).map(|(id, _)| id.clone()).collect();
        let mark = Mark { name: replica.to_string(), at_ms: now_ms, seen: seen.clone() };
        changes.insert(replica_key(replica), Some(serde_json::to_string(&mark).expect("plain data")));
        let mut active: Vec<&BTreeSet<String>> = vec![&seen];
        for m in self.replicas.values().filter(|m| m.name != replica) {
            if m.at_ms + ACTIVE_WINDOW_MS > now_ms {
                active.push(&m.seen);
            } else {
                changes.insert(replica_key(&m.name), None);
            }
        }
        for (id, e) in &self.entries {
            let everywhere = active.iter().all(|s| s.contains(id));
            if e.expires_ms <= now_ms || refuted(e) || everywhere {
                changes.insert(entry_key(id), None);
            }
        }
        for (id, e) in new {
            changes.insert(entry_key(id), Some(serde_json::to_string(e).expect("plain data")));
        }
        changes
    }

    /// The patch that takes entries `ids` back (admissions judged again and denied).
    pub fn removal(ids: &[String]) -> Changes {
        ids.iter().map(|id| (entry_key(id), None)).collect()
    }
}

fn entry_key(id: &str) -> String {
    format!("{ENTRY_PREFIX}{id}")
}

/// A replica's key: its name hashed, since a pod name can be longer than an annotation name
/// may be (63 characters).
fn replica_key(name: &str) -> String {
    format!("{REPLICA_PREFIX}{:016x}", fnv(name.as_bytes()))
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

    fn add(record: &mut Record, replica: &str, name: &str, now: u64, delivered: &[&str]) -> String {
        let entry = Entry::new(replica, &object(name, &["infra"]), None, now);
        let id = entry.id(now);
        let seen = |e: &Entry| delivered.contains(&e.object["metadata"]["name"].as_str().unwrap());
        let changes = record.changes(replica, now, &[(id.clone(), entry)], seen, |_| false);
        record.apply(&changes);
        id
    }

    fn write(record: &mut Record, replica: &str, now: u64, delivered: &[&str]) {
        let seen = |e: &Entry| delivered.contains(&e.object["metadata"]["name"].as_str().unwrap());
        let changes = record.changes(replica, now, &[], seen, |_| false);
        record.apply(&changes);
    }

    #[test]
    fn an_entry_reads_back_into_the_same_edges() {
        let o = object("apps", &["infra", "crds"]);
        let back = Entry::new("r1", &o, None, 0).flux_object().unwrap();
        assert!(same_edges(&o, &back), "{back:?}");
    }

    #[test]
    fn entries_leave_once_every_active_replica_saw_them_delivered() {
        let mut r = Record::default();
        write(&mut r, "b", 1_000, &[]);
        add(&mut r, "a", "apps", 1_000, &[]);
        write(&mut r, "a", 2_000, &["apps"]);
        assert_eq!(r.entries.len(), 1, "b has not seen it yet");
        write(&mut r, "b", 3_000, &["apps"]);
        assert!(r.entries.is_empty());
    }

    #[test]
    fn entries_expire_and_refuted_ones_leave() {
        let mut r = Record::default();
        add(&mut r, "a", "apps", 0, &[]);
        add(&mut r, "a", "other", 30_000, &[]);
        write(&mut r, "b", ENTRY_TTL_MS, &[]);
        assert_eq!(r.entries.len(), 1, "the first expired");
        let changes = r.changes("b", ENTRY_TTL_MS, &[], |_| false, |_| true);
        r.apply(&changes);
        assert!(r.entries.is_empty());
    }

    #[test]
    fn patches_of_two_replicas_compose_in_either_order() {
        let base = Record::default();
        let a = Entry::new("a", &object("x", &["y"]), None, 5);
        let b = Entry::new("b", &object("y", &["x"]), None, 5);
        let pa = base.changes("a", 5, &[(a.id(1), a.clone())], |_| false, |_| false);
        let pb = base.changes("b", 5, &[(b.id(1), b.clone())], |_| false, |_| false);
        let (mut one, mut two) = (base.clone(), base);
        one.apply(&pa);
        one.apply(&pb);
        two.apply(&pb);
        two.apply(&pa);
        assert_eq!(one, two);
        assert_eq!(one.entries.len(), 2);
        assert_eq!(one.active_replicas(5), 2);
        assert_eq!(Record::from_annotations(&one.annotations()), one);
    }

    #[test]
    fn replicas_that_stopped_writing_stop_counting() {
        let mut r = Record::default();
        write(&mut r, "a", 0, &[]);
        write(&mut r, "b", ACTIVE_WINDOW_MS - 1, &[]);
        assert_eq!(r.active_replicas(ACTIVE_WINDOW_MS - 1), 2);
        write(&mut r, "b", ACTIVE_WINDOW_MS, &[]);
        assert_eq!(r.replicas.len(), 1);
    }

    #[test]
    fn entry_ids_differ_per_admission() {
        let e = Entry::new("a", &object("x", &["y"]), None, 5);
        assert_ne!(e.id(1), e.id(2));
        assert_eq!(e.id(1).len(), 16);
    }
}

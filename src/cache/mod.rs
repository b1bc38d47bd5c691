//! The cache: every Flux object of the cluster (or of the `--manifests` files), as the rules see
//! it, plus the objects this replica admitted that the source has not delivered yet.
//!
//! Two layers feed one graph per kind:
//! - the **base**: what the source (a watch, or files) says exists;
//! - the **overlay**: objects admitted by a non-dry-run request (read-your-writes), so that
//!   `kubectl apply` of `infra` then `apps` does not see `infra` as missing. An overlay entry
//!   ends when the source delivers that object (confirming or replacing it), when it deletes
//!   it, or [`OVERLAY_TTL`] after it was admitted *and* the source was current, so a request
//!   that a later admission step rejected cannot haunt the graph, while an outage of the source
//!   never makes the replica forget what it admitted.
//!
//! Each kind also has a [`KindHealth`]: whether its source is current (complete and followed
//! live) or lagging (an outage, a relist, a silent watch), and since when. Readiness and every
//! decision that could be wrong because of missed changes look at it.
//!
//! The graph always holds the effective view (overlay over base). Everything sits behind one
//! mutex: a decision and its recording happen under the same lock, so no interleaving of
//! concurrent requests on one replica can admit both halves of a cycle.
//!
//! Object statuses are kept apart, in a [`StatusStore`] with a lock of its own: status events and
//! status reports never wait for, or hold up, that mutex.

pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::graph::Graph;
use crate::keyed::ByKey;
use crate::object::{FluxKind, FluxObject, ObjectKey};
use crate::status::{StatusReport, StatusStore};

/// How long an admitted object stays visible without the source confirming it.
pub const OVERLAY_TTL: Duration = Duration::from_secs(60);

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

#[derive(Debug)]
struct OverlayEntry {
    admitted_at: Instant,
    /// The `resourceVersion` of the object this admission replaced: a source event carrying it
    /// is older than the admitted object and must not end the entry.
    replaced_version: Option<String>,
}

type Key = (FluxKind, ObjectKey);

/// How one kind's source is doing.
#[derive(Debug, Clone, Default)]
pub struct KindHealth {
    /// Why the source may have missed changes, and since when; `None` while it is current.
    /// Files and tests that fill the cache directly are always current.
    pub lagging: Option<(Instant, String)>,
    /// When the source last showed it was alive: a list, an event or a bookmark.
    pub last_seen: Option<Instant>,
    /// Whether a list (initial or relist) is under way.
    pub relisting: bool,
    /// The `group/version` watched, once known.
    pub api_version: Option<String>,
    /// When the source last became current: overlay entries age from here at the earliest.
    current_since: Option<Instant>,
}

impl KindHealth {
    pub fn is_current(&self) -> bool {
        self.lagging.is_none()
    }
}

/// The cache's state. Reach it through [`Cache::lock`].
#[derive(Debug, Default)]
pub struct State {
    graphs: Graphs,
    /// Per kind: what the source delivered.
    base: [ByKey<Arc<FluxObject>>; 2],
    overlay: HashMap<Key, OverlayEntry>,
    synced: [bool; 2],
    health: [KindHealth; 2],
}

impl State {
    pub fn graphs(&self) -> &Graphs {
        &self.graphs
    }

    pub fn graphs_mut(&mut self) -> &mut Graphs {
        &mut self.graphs
    }

    /// The source delivered `object` (an initial list item, a watch event, a file).
    /// `resource_version` is the object's `metadata.resourceVersion`, when it has one.
    pub fn apply(&mut self, object: Arc<FluxObject>, resource_version: Option<&str>) {
        let key = (object.kind, object.key.clone());
        let base = &mut self.base[object.kind.index()];
        // Most watch events change only the status: they cost a lookup, never graph work.
        if !self.overlay.contains_key(&key) && base.get(&object.key).is_some_and(|old| **old == *object) {
            return;
        }
        base.insert(object.clone());
        if let Some(entry) = self.overlay.get(&key) {
            let stale = resource_version.is_some() && entry.replaced_version.as_deref() == resource_version;
            if stale {
                return;
            }
            self.overlay.remove(&key);
        }
        self.graphs.get_mut(object.kind).upsert(object);
    }

    /// The source says the object is gone.
    pub fn delete(&mut self, kind: FluxKind, key: &ObjectKey) {
        self.base[kind.index()].remove(key);
        self.overlay.remove(&(kind, key.clone()));
        self.graphs.get_mut(kind).remove(key);
    }

    /// The source listed every object of `kind` afresh (initial list or relist): objects missing
    /// from the list are deleted, the rest applied. Admitted objects not yet in the list stay
    /// until they expire. Marks the kind synced.
    pub fn replace_all(&mut self, kind: FluxKind, objects: Vec<(Arc<FluxObject>, Option<String>)>) {
        let listed: std::collections::HashSet<&ObjectKey> = objects.iter().map(|(o, _)| &o.key).collect();
        let gone: Vec<ObjectKey> =
            self.base[kind.index()].iter().filter(|o| !listed.contains(&o.key)).map(|o| o.key.clone()).collect();
        drop(listed);
        for key in gone {
            self.base[kind.index()].remove(&key);
            if !self.overlay.contains_key(&(kind, key.clone())) {
                self.graphs.get_mut(kind).remove(&key);
            }
        }
        let base = &mut self.base[kind.index()];
        base.reserve(objects.len().saturating_sub(base.len()));
        self.graphs.get_mut(kind).make_room(objects.iter().map(|(o, _)| &**o));
        for (object, version) in objects {
            self.apply(object, version.as_deref());
        }
        self.synced[kind.index()] = true;
    }

    /// Marks a kind as synced without objects (its CRD is not installed).
    pub fn mark_synced(&mut self, kind: FluxKind) {
        self.synced[kind.index()] = true;
    }

    /// Whether every kind has completed its initial list.
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Whether decisions can rest on the cache: every kind listed and followed live.
    pub fn is_ready(&self) -> bool {
        self.is_synced() && self.health.iter().all(KindHealth::is_current)
    }

    pub fn health(&self, kind: FluxKind) -> &KindHealth {
        &self.health[kind.index()]
    }

    /// The source of `kind` may be missing changes from now on (keeps the first reason).
    pub fn set_lagging(&mut self, kind: FluxKind, reason: impl Into<String>, now: Instant) {
        let h = &mut self.health[kind.index()];
        if h.lagging.is_none() {
            h.lagging = Some((now, reason.into()));
        }
    }

    /// The source of `kind` is complete and followed live again.
    pub fn set_current(&mut self, kind: FluxKind, now: Instant) {
        let h = &mut self.health[kind.index()];
        if h.lagging.take().is_some() || h.current_since.is_none() {
            h.current_since = Some(now);
        }
        h.last_seen = Some(now);
    }

    /// The source of `kind` showed it is alive (an event or a bookmark).
    pub fn saw(&mut self, kind: FluxKind, now: Instant) {
        self.health[kind.index()].last_seen = Some(now);
    }

    pub fn set_relisting(&mut self, kind: FluxKind, relisting: bool) {
        self.health[kind.index()].relisting = relisting;
    }

    pub fn set_api_version(&mut self, kind: FluxKind, api_version: Option<String>) {
        self.health[kind.index()].api_version = api_version;
    }

    /// Records an object admitted by a non-dry-run request.
    pub fn admit(&mut self, object: Arc<FluxObject>, replaced_version: Option<String>, now: Instant) {
        let key = (object.kind, object.key.clone());
        self.overlay.insert(key, OverlayEntry { admitted_at: now, replaced_version });
        self.graphs.get_mut(object.kind).upsert(object);
    }

    /// Whether `key` is known only because this replica admitted it, at or before `before`:
    /// the source has not delivered it.
    pub fn is_unconfirmed(&self, kind: FluxKind, key: &ObjectKey, before: Instant) -> bool {
        !self.base[kind.index()].contains(key)
            && self.overlay.get(&(kind, key.clone())).is_some_and(|e| e.admitted_at <= before)
    }

    /// The API server does not have an object this replica admitted (a later step rejected
    /// it): it stops counting now rather than at its expiry.
    pub fn forget_unstored(&mut self, kind: FluxKind, key: &ObjectKey) {
        if self.overlay.remove(&(kind, key.clone())).is_some() && !self.base[kind.index()].contains(key) {
            self.graphs.get_mut(kind).remove(key);
        }
    }

    /// Ends overlay entries older than [`OVERLAY_TTL`], putting the source's view back. Age
    /// counts only while the kind's source is current: during an outage or a relist the
    /// source cannot have confirmed anything, and forgetting an admitted object then is how
    /// both halves of a cycle got in.
    pub fn expire(&mut self, now: Instant) {
        if self.overlay.is_empty() {
            return;
        }
        let health = &self.health;
        let expired: Vec<Key> = self
            .overlay
            .iter()
            .filter(|((kind, _), e)| {
                let h = &health[kind.index()];
                let from = h.current_since.map_or(e.admitted_at, |since| since.max(e.admitted_at));
                h.is_current() && now.saturating_duration_since(from) >= OVERLAY_TTL
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.overlay.remove(&key);
            let graph = self.graphs.get_mut(key.0);
            match self.base[key.0.index()].get(&key.1) {
                Some(object) => {
                    graph.upsert(object.clone());
                }
                None => {
                    graph.remove(&key.1);
                }
            }
        }
    }

    /// Every object of each kind (in [`FluxKind::ALL`] order), as decisions see them now: a
    /// copy of pointers, cheap enough to take under the lock, for work done outside it.
    pub fn snapshot(&self) -> [Vec<Arc<FluxObject>>; 2] {
        FluxKind::ALL.map(|kind| {
            let graph = self.graphs.get(kind);
            graph.present_ids().filter_map(|id| graph.object(id).cloned()).collect()
        })
    }

    /// How many admitted objects wait for the source to confirm them.
    pub fn pending_admissions(&self) -> usize {
        self.overlay.len()
    }
}

/// The shared cache.
#[derive(Debug, Default)]
pub struct Cache {
    state: Mutex<State>,
    /// Woken whenever a kind's health changes.
    health_changed: Notify,
    /// Per kind: a request waits for this kind's source; retry now rather than after back-off.
    nudge: [Notify; 2],
    /// Object statuses, under a lock of their own (see [`crate::status`]).
    status: StatusStore,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Locks the cache. A panic while holding the lock cannot leave a half-made decision
    /// behind (graph updates are applied whole), so a poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether every kind is listed and current; see [`State::is_ready`].
    pub fn is_ready(&self) -> bool {
        self.lock().is_ready()
    }

    /// Changes kind health under the lock, then wakes whoever waits for it.
    pub fn update_health<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.health_changed.notify_waiters();
        out
    }

    /// Waits at most `limit` for the source of `kind` to be current, asking it to retry at
    /// once if it is backing off. Returns whether it is current.
    pub async fn wait_current(&self, kind: FluxKind, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.health_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lock().health(kind).is_current() {
                return true;
            }
            self.nudge[kind.index()].notify_one();
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.lock().health(kind).is_current();
            }
        }
    }

    /// Resolves when a request asks the source of `kind` to retry now.
    pub async fn nudged(&self, kind: FluxKind) {
        self.nudge[kind.index()].notified().await;
    }

    /// The statuses of the objects; updating them never takes the cache lock.
    pub fn status(&self) -> &StatusStore {
        &self.status
    }

    /// The status of every object the source delivered, computed without the cache lock.
    pub fn status_report(&self) -> StatusReport {
        self.status.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::ks;

    fn present(state: &State, name: &str) -> bool {
        state.graphs().get(FluxKind::Kustomization).get(&ObjectKey::new("f", name)).is_some()
    }

    #[test]
    fn admitted_object_is_visible_until_it_expires() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.admit(ks("f", "infra", &[]), None, t0);
        assert!(present(&s, "infra"));
        s.expire(t0 + Duration::from_secs(59));
        assert!(present(&s, "infra"));
        s.expire(t0 + OVERLAY_TTL);
        assert!(!present(&s, "infra"));
    }

    #[test]
    fn admitted_object_outlives_the_ttl_while_the_source_lags() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.set_current(FluxKind::Kustomization, t0);
        s.admit(ks("f", "infra", &[]), None, t0);
        s.set_lagging(FluxKind::Kustomization, "outage", t0 + Duration::from_secs(1));
        s.expire(t0 + Duration::from_secs(600));
        assert!(present(&s, "infra"), "an outage does not make the replica forget");
        // Current again: the entry ages from then, not from its admission.
        let back = t0 + Duration::from_secs(600);
        s.set_current(FluxKind::Kustomization, back);
        s.expire(back + Duration::from_secs(59));
        assert!(present(&s, "infra"));
        s.expire(back + OVERLAY_TTL);
        assert!(!present(&s, "infra"));
    }

    #[test]
    fn source_confirmation_ends_the_overlay_entry() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.admit(ks("f", "infra", &["crds"]), None, t0);
        s.apply(ks("f", "infra", &["crds"]), Some("7"));
        assert_eq!(s.pending_admissions(), 0);
        s.expire(t0 + OVERLAY_TTL);
        assert!(present(&s, "infra"), "the base keeps what the source delivered");
    }

    #[test]
    fn stale_source_event_does_not_undo_an_admitted_update() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.apply(ks("f", "apps", &[]), Some("5"));
        s.admit(ks("f", "apps", &["infra"]), Some("5".into()), t0);
        // A late event for the version the update replaced.
        s.apply(ks("f", "apps", &[]), Some("5"));
        let g = s.graphs().get(FluxKind::Kustomization);
        assert_eq!(g.get(&ObjectKey::new("f", "apps")).unwrap().depends_on.len(), 1);
        // Expiry puts the source's view back.
        s.expire(t0 + OVERLAY_TTL);
        let g = s.graphs().get(FluxKind::Kustomization);
        assert!(g.get(&ObjectKey::new("f", "apps")).unwrap().depends_on.is_empty());
    }

    #[test]
    fn relist_deletes_missing_objects_but_keeps_pending_admissions() {
        let mut s = State::default();
        s.replace_all(FluxKind::Kustomization, vec![(ks("f", "a", &[]), None), (ks("f", "b", &[]), None)]);
        assert!(!s.is_synced());
        s.mark_synced(FluxKind::HelmRelease);
        assert!(s.is_synced());
        s.admit(ks("f", "new", &[]), None, Instant::now());
        s.replace_all(FluxKind::Kustomization, vec![(ks("f", "a", &[]), None)]);
        assert!(present(&s, "a"));
        assert!(!present(&s, "b"));
        assert!(present(&s, "new"));
    }
}

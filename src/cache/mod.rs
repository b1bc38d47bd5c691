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
//!   never makes the replica forget what it admitted. Anyone who can reach the webhook port
//!   can send a non-dry-run review, so the overlay is bounded ([`OverlayLimits`]: the oldest
//!   entries are evicted, an oversized object is not remembered, both counted), and the webhook
//!   confirms an entry with the API server before a denial rests on it (see
//!   [`crate::admission::Webhook::review`]).
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::graph::Graphs;
use crate::object::keyed::ByKey;
use crate::object::{FluxKind, FluxObject, ObjectKey};
use crate::status::{StatusReport, StatusStore};

/// How long an admitted object stays visible without the source confirming it.
pub const OVERLAY_TTL: Duration = Duration::from_secs(60);

/// Bounds of the overlay, whatever is sent to the webhook port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayLimits {
    /// Most admitted objects remembered at once; past it the oldest is evicted.
    pub max_entries: usize,
    /// Most bytes (by [`footprint`]) remembered at once; past it the oldest are evicted. An
    /// object larger than an eighth of this is not remembered at all.
    pub max_bytes: usize,
}

/// The shipped bounds: far above what one replica admits in [`OVERLAY_TTL`] (Flux applies a
/// parent's children one by one; the largest fleets studied hold 2,445 Kustomizations in all),
/// and a few MiB of memory at most.
pub const OVERLAY_LIMITS: OverlayLimits = OverlayLimits { max_entries: 10_000, max_bytes: 8 * 1024 * 1024 };

/// What an admitted object costs while remembered: the object, its keys' text, and the graph's
/// node and edges for each target, estimated from the layout rather than measured.
pub fn footprint(object: &FluxObject) -> usize {
    const PER_KEY: usize = std::mem::size_of::<ObjectKey>() + 2 * 16;
    // A petgraph node or edge, the index entries, the overlay's own bookkeeping.
    const GRAPH_PER_TARGET: usize = 64;
    let key = |k: &ObjectKey| PER_KEY + k.namespace.len() + k.name.len();
    let targets = object.depends_on.iter().chain(object.health_check_kustomizations());
    std::mem::size_of::<FluxObject>()
        + 256
        + key(&object.key)
        + targets.map(|k| key(k) + GRAPH_PER_TARGET).sum::<usize>()
        + object.unreadable_depends_on().len() * 128
}

/// Why admitted objects were dropped from the overlay before the source delivered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The overlay was full ([`OverlayLimits`]); the oldest entry made room.
    Evicted,
    /// The object alone was too large to remember.
    Refused,
    /// The API server did not have it when asked, after a real admission would have been
    /// stored: a later admission step rejected it, or nobody ever sent it to the API server.
    Unstored,
}

impl Dropped {
    pub const ALL: [Dropped; 3] = [Dropped::Evicted, Dropped::Refused, Dropped::Unstored];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Evicted => "evicted",
            Dropped::Refused => "refused",
            Dropped::Unstored => "unstored",
        }
    }
}

#[derive(Debug)]
struct OverlayEntry {
    /// The object as admitted (the graph holds the same).
    object: Arc<FluxObject>,
    /// When it was last admitted.
    admitted_at: Instant,
    /// When this content was first admitted: admitting the same content again (a client
    /// retrying, or one sending it over and over) does not make it younger.
    pending_since: Instant,
    /// Orders entries by age for eviction and expiry.
    seq: u64,
    /// The `resourceVersion` of the object this admission replaced: a source event carrying it
    /// is older than the admitted object and must not end the entry.
    replaced_version: Option<String>,
    /// The API server was seen holding this content: a real change the source has not
    /// delivered yet, never to be looked up again.
    stored: bool,
    bytes: usize,
}

/// An object this replica admitted that the source has not delivered, as the webhook sees it
/// when a denial rests on it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub object: Arc<FluxObject>,
    pub admitted_at: Instant,
    pub pending_since: Instant,
    pub stored: bool,
}

/// Whether two objects draw the same edges: all a denial rests on, so all an admitted object
/// must match in what the API server holds to be confirmed.
pub fn same_edges(a: &FluxObject, b: &FluxObject) -> bool {
    a.kind == b.kind
        && a.key == b.key
        && a.depends_on == b.depends_on
        && (a.wait && !a.wait_unowned) == (b.wait && !b.wait_unowned)
        && a.owner == b.owner
        && a.health_check_kustomizations() == b.health_check_kustomizations()
}

/// Whether two copies of an object are the same apart from `metadata.uid` (a retried create
/// gets a new one).
pub fn same_content(a: &FluxObject, b: &FluxObject) -> bool {
    if a.uid == b.uid {
        return a == b;
    }
    let (mut a, mut b) = (a.clone(), b.clone());
    (a.uid, b.uid) = (None, None);
    a == b
}

/// How two `resourceVersion`s are ordered, where both are numbers, as the API server's etcd
/// revisions are; `None` where either is missing or not a number.
pub(crate) fn version_order(a: Option<&str>, b: Option<&str>) -> Option<std::cmp::Ordering> {
    Some(a?.parse::<u64>().ok()?.cmp(&b?.parse::<u64>().ok()?))
}

/// Whether a source event carrying `delivered` is older than an admission that replaced the
/// version `replaced`: the same version, or (where they can be ordered) an earlier one. A watch
/// that lags can deliver several versions older than what was admitted, and none of them may
/// end the admission.
fn is_stale(delivered: Option<&str>, replaced: Option<&str>) -> bool {
    let (Some(d), Some(r)) = (delivered, replaced) else { return false };
    version_order(delivered, replaced).map_or(d == r, |o| o.is_le())
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
#[derive(Debug)]
pub struct State {
    graphs: Graphs,
    /// Per kind: what the source delivered.
    base: [ByKey<Arc<FluxObject>>; 2],
    overlay: HashMap<Key, OverlayEntry>,
    /// The overlay's keys, oldest admission first.
    overlay_order: BTreeMap<(Instant, u64), Key>,
    overlay_bytes: usize,
    overlay_seq: u64,
    limits: OverlayLimits,
    /// Per [`Dropped`] reason, how many admitted objects were dropped.
    dropped: [u64; 3],
    synced: [bool; 2],
    health: [KindHealth; 2],
}

impl Default for State {
    fn default() -> Self {
        State::with_limits(OVERLAY_LIMITS)
    }
}

impl State {
    /// An empty state whose overlay is bounded by `limits`.
    pub fn with_limits(limits: OverlayLimits) -> State {
        State {
            graphs: Graphs::default(),
            base: Default::default(),
            overlay: HashMap::new(),
            overlay_order: BTreeMap::new(),
            overlay_bytes: 0,
            overlay_seq: 0,
            limits,
            dropped: [0; 3],
            synced: [false; 2],
            health: Default::default(),
        }
    }

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
            if is_stale(resource_version, entry.replaced_version.as_deref()) {
                return;
            }
            self.remove_entry(&key);
        }
        self.graphs.get_mut(object.kind).upsert(object);
    }

    /// The source says the object is gone.
    pub fn delete(&mut self, kind: FluxKind, key: &ObjectKey) {
        self.base[kind.index()].remove(key);
        self.remove_entry(&(kind, key.clone()));
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

    /// Records an object admitted by a non-dry-run request. Beyond the [`OverlayLimits`], the
    /// oldest entries are evicted; an object too large on its own is not remembered (and an
    /// older admission of it is dropped: it no longer says what was last admitted).
    pub fn admit(&mut self, object: Arc<FluxObject>, replaced_version: Option<String>, now: Instant) {
        self.record(object, replaced_version, now, false);
    }

    /// Records an object the API server was seen holding, until the source delivers it.
    pub fn admit_stored(&mut self, object: Arc<FluxObject>, now: Instant) {
        self.record(object, None, now, true);
    }

    fn record(&mut self, object: Arc<FluxObject>, replaced_version: Option<String>, now: Instant, stored: bool) {
        let key = (object.kind, object.key.clone());
        let bytes = footprint(&object);
        let previous = self.remove_entry(&key);
        if bytes > self.limits.max_bytes / 8 {
            self.dropped[Dropped::Refused as usize] += 1;
            if previous.is_some() {
                self.show_base(&key);
            }
            return;
        }
        let (pending_since, stored) = match previous {
            Some(p) if same_content(&p.object, &object) => (p.pending_since, stored || p.stored),
            _ => (now, stored),
        };
        self.overlay_seq += 1;
        let seq = self.overlay_seq;
        self.overlay_order.insert((now, seq), key.clone());
        self.overlay_bytes += bytes;
        self.graphs.get_mut(object.kind).upsert(object.clone());
        self.overlay.insert(
            key.clone(),
            OverlayEntry { object, admitted_at: now, pending_since, seq, replaced_version, stored, bytes },
        );
        while self.overlay.len() > self.limits.max_entries || self.overlay_bytes > self.limits.max_bytes {
            // The new entry fits on its own (checked above), so another one is always there.
            let Some(oldest) = self.overlay_order.values().find(|k| **k != key).cloned() else { break };
            self.remove_entry(&oldest);
            self.show_base(&oldest);
            self.dropped[Dropped::Evicted as usize] += 1;
        }
    }

    /// Takes back a tentative admission of `object` (its recording for the other replicas
    /// failed, or it is to be judged again): the source's view of it counts again. Nothing
    /// happens if the overlay holds something else for that key by now.
    pub fn withdraw(&mut self, object: &FluxObject) {
        let key = (object.kind, object.key.clone());
        if self.overlay.get(&key).is_some_and(|e| same_content(&e.object, object)) {
            self.remove_entry(&key);
            self.show_base(&key);
        }
    }

    /// Takes an entry out of the overlay and its bookkeeping; the graph is left as it is.
    fn remove_entry(&mut self, key: &Key) -> Option<OverlayEntry> {
        let entry = self.overlay.remove(key)?;
        self.overlay_order.remove(&(entry.admitted_at, entry.seq));
        self.overlay_bytes -= entry.bytes;
        Some(entry)
    }

    /// Puts the source's view of `key` back in the graph.
    fn show_base(&mut self, key: &Key) {
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

    /// The admitted object `key`, if the source has not delivered it yet.
    pub fn pending(&self, kind: FluxKind, key: &ObjectKey) -> Option<Pending> {
        self.overlay.get(&(kind, key.clone())).map(|e| Pending {
            object: e.object.clone(),
            admitted_at: e.admitted_at,
            pending_since: e.pending_since,
            stored: e.stored,
        })
    }

    /// What the source delivered for `key`, if anything.
    pub fn delivered(&self, kind: FluxKind, key: &ObjectKey) -> Option<&Arc<FluxObject>> {
        self.base[kind.index()].get(key)
    }

    /// Whether the overlay still holds what `seen` describes: the same content, pending since
    /// the same moment. The webhook checks this after a lookup made without the lock.
    pub fn still_pending(&self, kind: FluxKind, key: &ObjectKey, seen: &Pending) -> bool {
        self.overlay
            .get(&(kind, key.clone()))
            .is_some_and(|e| e.pending_since == seen.pending_since && same_content(&e.object, &seen.object))
    }

    /// The API server holds the admitted object `key` as admitted: it is real, the source
    /// will deliver it.
    pub fn mark_stored(&mut self, kind: FluxKind, key: &ObjectKey) {
        if let Some(e) = self.overlay.get_mut(&(kind, key.clone())) {
            e.stored = true;
        }
    }

    /// The API server does not have an object this replica admitted (a later step rejected
    /// it, or it never came from the API server): it stops counting now rather than at its
    /// expiry.
    pub fn forget_unstored(&mut self, kind: FluxKind, key: &ObjectKey) {
        let key = (kind, key.clone());
        if self.remove_entry(&key).is_some() {
            self.dropped[Dropped::Unstored as usize] += 1;
            self.show_base(&key);
        }
    }

    /// Ends overlay entries older than [`OVERLAY_TTL`], putting the source's view back. Age
    /// counts only while the kind's source is current: during an outage or a relist the
    /// source cannot have confirmed anything, and forgetting an admitted object then is how
    /// both halves of a cycle got in.
    pub fn expire(&mut self, now: Instant) {
        let health = &self.health;
        let mut expired = Vec::new();
        // Oldest first: an entry admitted less than the TTL ago cannot have aged past it,
        // whatever its kind's health, so the walk stops at the first one.
        for ((admitted_at, _), key) in &self.overlay_order {
            if now.saturating_duration_since(*admitted_at) < OVERLAY_TTL {
                break;
            }
            let h = &health[key.0.index()];
            let from = h.current_since.map_or(*admitted_at, |since| since.max(*admitted_at));
            if h.is_current() && now.saturating_duration_since(from) >= OVERLAY_TTL {
                expired.push(key.clone());
            }
        }
        for key in expired {
            self.remove_entry(&key);
            self.show_base(&key);
        }
    }

    /// Every object of each kind (in [`FluxKind::ALL`] order) as the source delivered it: a
    /// copy of pointers, cheap enough to take under the lock, for work done outside it. The
    /// audit reads this rather than what decisions see: an admitted object the source has not
    /// delivered is not known to exist (a forged review is admitted too), and the audit's
    /// findings and Events must be about the cluster; a real one arrives within moments.
    pub fn delivered_objects(&self) -> [Vec<Arc<FluxObject>>; 2] {
        FluxKind::ALL.map(|kind| self.base[kind.index()].iter().cloned().collect())
    }

    /// How many admitted objects wait for the source to confirm them.
    pub fn pending_admissions(&self) -> usize {
        self.overlay.len()
    }

    /// The [`footprint`] of the admitted objects waiting for the source.
    pub fn pending_bytes(&self) -> usize {
        self.overlay_bytes
    }

    /// How many admitted objects were dropped for `reason` since start.
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped[reason as usize]
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

    /// A cache whose overlay is bounded by `limits` instead of [`OVERLAY_LIMITS`].
    pub fn with_limits(limits: OverlayLimits) -> Cache {
        Cache { state: Mutex::new(State::with_limits(limits)), ..Cache::default() }
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
    pub fn status_report(&self) -> Arc<StatusReport> {
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
    fn no_event_older_than_an_admitted_update_undoes_it() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.apply(ks("f", "apps", &[]), Some("5"));
        s.admit(ks("f", "apps", &["infra"]), Some("7".into()), t0);
        // A lagging watch delivers versions 5 and 7, both older than the admitted change.
        s.apply(ks("f", "apps", &[]), Some("5"));
        s.apply(ks("f", "apps", &["other"]), Some("7"));
        assert_eq!(s.pending_admissions(), 1);
        let g = s.graphs().get(FluxKind::Kustomization);
        assert_eq!(g.get(&ObjectKey::new("f", "apps")).unwrap().depends_on.len(), 1);
        // The admitted change itself, stored as version 9, ends it.
        s.apply(ks("f", "apps", &["infra"]), Some("9"));
        assert_eq!(s.pending_admissions(), 0);
        assert!(is_stale(Some("x"), Some("x")) && !is_stale(Some("x"), Some("y")), "opaque versions: equality");
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
    fn small() -> OverlayLimits {
        OverlayLimits { max_entries: 100, max_bytes: 1024 * 1024 }
    }

    #[test]
    fn a_flood_of_new_names_evicts_the_oldest_admissions_and_counts_them() {
        let mut s = State::with_limits(small());
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            s.admit(ks("f", &format!("forged-{i}"), &["nowhere"]), None, t0 + Duration::from_millis(i));
        }
        assert_eq!(s.pending_admissions(), 100);
        assert_eq!(s.dropped(Dropped::Evicted), 9_900);
        assert!(present(&s, "forged-9999"), "the newest stay");
        assert!(!present(&s, "forged-0"), "the oldest went");
        let g = s.graphs().get(FluxKind::Kustomization);
        assert_eq!(g.len(), 100, "evicted objects left the graph");
        assert!(g.node_count() <= 101, "with their nodes: {}", g.node_count());
        assert!(s.pending_bytes() <= small().max_bytes);
    }

    #[test]
    fn the_byte_bound_evicts_before_the_count_bound() {
        let limits = OverlayLimits { max_entries: 1_000, max_bytes: 64 * 1024 };
        let mut s = State::with_limits(limits);
        let targets: Vec<String> = (0..40).map(|i| format!("target-{i}")).collect();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        for i in 0..200 {
            s.admit(ks("f", &format!("wide-{i}"), &targets), None, Instant::now());
        }
        assert!(s.pending_bytes() <= limits.max_bytes, "{} bytes", s.pending_bytes());
        assert!(s.pending_admissions() < 200);
        assert_eq!(s.dropped(Dropped::Evicted) as usize, 200 - s.pending_admissions());
    }

    #[test]
    fn an_object_too_large_to_remember_is_refused_and_counted() {
        let limits = OverlayLimits { max_entries: 1_000, max_bytes: 64 * 1024 };
        let mut s = State::with_limits(limits);
        s.apply(ks("f", "huge", &[]), Some("3"));
        s.admit(ks("f", "huge", &["a"]), Some("3".into()), Instant::now());
        let names: Vec<String> = (0..1_000).map(|i| format!("target-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        s.admit(ks("f", "huge", &names), Some("3".into()), Instant::now());
        assert_eq!(s.dropped(Dropped::Refused), 1);
        assert_eq!(s.pending_admissions(), 0, "the earlier admission no longer says what was last admitted");
        let g = s.graphs().get(FluxKind::Kustomization);
        assert!(g.get(&ObjectKey::new("f", "huge")).unwrap().depends_on.is_empty(), "the source's view is back");
    }

    #[test]
    fn admitting_the_same_content_again_does_not_make_it_younger() {
        let mut s = State::default();
        let t0 = Instant::now();
        let key = ObjectKey::new("f", "a");
        s.admit(ks("f", "a", &["b"]), None, t0);
        s.admit(ks("f", "a", &["b"]), None, t0 + Duration::from_millis(900));
        let p = s.pending(FluxKind::Kustomization, &key).unwrap();
        assert_eq!(p.pending_since, t0);
        assert_eq!(p.admitted_at, t0 + Duration::from_millis(900));
        assert!(s.still_pending(FluxKind::Kustomization, &key, &p));
        // Other content starts afresh, and is no longer what an earlier look saw.
        s.admit(ks("f", "a", &["c"]), None, t0 + Duration::from_secs(1));
        assert_eq!(s.pending(FluxKind::Kustomization, &key).unwrap().pending_since, t0 + Duration::from_secs(1));
        assert!(!s.still_pending(FluxKind::Kustomization, &key, &p));
    }

    #[test]
    fn forgetting_an_unstored_admission_puts_the_source_view_back_and_counts_it() {
        let mut s = State::default();
        s.apply(ks("f", "a", &[]), Some("4"));
        s.admit(ks("f", "a", &["b"]), Some("4".into()), Instant::now());
        s.admit(ks("f", "new", &[]), None, Instant::now());
        s.forget_unstored(FluxKind::Kustomization, &ObjectKey::new("f", "a"));
        s.forget_unstored(FluxKind::Kustomization, &ObjectKey::new("f", "new"));
        let g = s.graphs().get(FluxKind::Kustomization);
        assert!(g.get(&ObjectKey::new("f", "a")).unwrap().depends_on.is_empty());
        assert!(!present(&s, "new"));
        assert_eq!(s.dropped(Dropped::Unstored), 2);
        assert_eq!((s.pending_admissions(), s.pending_bytes()), (0, 0));
    }
}

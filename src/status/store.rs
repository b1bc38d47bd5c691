//! The state store: per object the `Ready` condition, generations, `suspend` and the time budget,
//! with the object as the source delivered it, behind a lock of its own (a status-only watch
//! event updates it and does no graph work).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::object::keyed::ByKey;
use crate::object::{FluxKind, FluxObject, ObjectKey};

use super::*;

/// An object as the source delivered it, with its status.
type Delivered = (Arc<FluxObject>, StoredStatus);

/// An [`ObjectStatus`] as the store keeps it: 32 bytes instead of 64, for every object of the
/// cluster. Absent numbers are kept as values no object has; a time budget is kept in
/// milliseconds, up to 49 days.
#[derive(Debug)]
pub(super) struct StoredStatus {
    ready: Option<Box<ReadyCondition>>,
    generation: i64,
    observed_generation: i64,
    timeout_ms: u32,
    suspended: bool,
}

const ABSENT: i64 = i64::MIN;
const NO_TIMEOUT: u32 = u32::MAX;

impl From<ObjectStatus> for StoredStatus {
    fn from(s: ObjectStatus) -> StoredStatus {
        StoredStatus {
            ready: s.ready,
            generation: s.generation.unwrap_or(ABSENT),
            observed_generation: s.observed_generation.unwrap_or(ABSENT),
            timeout_ms: s.timeout.map_or(NO_TIMEOUT, |t| u32::try_from(t.as_millis()).unwrap_or(NO_TIMEOUT - 1)),
            suspended: s.suspended,
        }
    }
}

impl From<&StoredStatus> for ObjectStatus {
    fn from(s: &StoredStatus) -> ObjectStatus {
        let number = |n: i64| (n != ABSENT).then_some(n);
        ObjectStatus {
            ready: s.ready.clone(),
            generation: number(s.generation),
            observed_generation: number(s.observed_generation),
            suspended: s.suspended,
            timeout: (s.timeout_ms != NO_TIMEOUT).then(|| Duration::from_millis(u64::from(s.timeout_ms))),
        }
    }
}

/// What the source (the watch, or files) delivered for every object: its status, and the object
/// as the rules read it. Behind a lock of its own, so that a status event and a status report
/// never take the cache lock that admission decisions hold. Objects admitted but not yet
/// delivered by the source are not here: they have no status yet.
#[derive(Debug, Default)]
pub struct StatusStore {
    /// Per kind.
    map: RwLock<[ByKey<Delivered>; 2]>,
    /// Counts the changes to `map`: a report is computed again only when it moved, so every
    /// scrape and every open status page do not each rebuild the graph (the analysis reads
    /// nothing but the store: no clock).
    changes: AtomicU64,
    /// The last report and the count of changes it was computed at.
    last: Mutex<Option<(u64, Arc<StatusReport>)>>,
}

impl StatusStore {
    /// Records an object and its status as the source delivered them.
    pub fn record(&self, object: Arc<FluxObject>, status: ObjectStatus) {
        self.map.write().unwrap_or_else(|p| p.into_inner())[object.kind.index()].insert((object, status.into()));
        self.changed();
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// After a relist: forgets the objects of `kind` that were not listed.
    pub fn keep_only<'a>(&self, kind: FluxKind, listed: impl IntoIterator<Item = &'a ObjectKey>) {
        let listed: HashSet<&ObjectKey> = listed.into_iter().collect();
        self.map.write().unwrap_or_else(|p| p.into_inner())[kind.index()].retain(|(o, _)| listed.contains(&o.key));
        self.changed();
    }

    /// Forgets a deleted object.
    pub fn forget(&self, kind: FluxKind, key: &ObjectKey) {
        self.map.write().unwrap_or_else(|p| p.into_inner())[kind.index()].remove(key);
        self.changed();
    }

    /// Replaces every object of `kind` (files loaded afresh).
    pub fn replace_all(&self, kind: FluxKind, objects: impl IntoIterator<Item = (Arc<FluxObject>, ObjectStatus)>) {
        let map = &mut self.map.write().unwrap_or_else(|p| p.into_inner())[kind.index()];
        map.clear();
        let objects = objects.into_iter();
        map.reserve(objects.size_hint().0);
        for (object, status) in objects {
            map.insert((object, status.into()));
        }
        self.changed();
    }

    /// The objects of `kind` and their statuses: `Arc` and status copies, under the store's own
    /// lock.
    pub fn snapshot(&self, kind: FluxKind) -> (Vec<Arc<FluxObject>>, HashMap<ObjectKey, ObjectStatus>) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mine = &map[kind.index()];
        let objects = mine.iter().map(|(o, _)| o.clone()).collect();
        let statuses = mine.iter().map(|(o, s)| (o.key.clone(), ObjectStatus::from(s))).collect();
        (objects, statuses)
    }

    /// The status report of both kinds, computed from a snapshot when the store changed since
    /// the last one, else that one again.
    pub fn report(&self) -> Arc<StatusReport> {
        // Read before the snapshot: a change racing the computation makes the next call compute
        // again rather than keep a report older than the store.
        let at = self.changes.load(Ordering::Acquire);
        if let Some((done, report)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *done == at
        {
            return report.clone();
        }
        let kinds = FluxKind::ALL
            .iter()
            .map(|&kind| {
                let (objects, statuses) = self.snapshot(kind);
                analyze(kind, objects, &statuses)
            })
            .collect();
        let report = Arc::new(StatusReport { kinds });
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, report.clone()));
        report
    }
}

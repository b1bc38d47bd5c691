//! Live dependency status: what state each Flux object is in, and for every object that waits
//! for its dependencies, the objects really holding it up.
//!
//! Kept apart from the graphs on purpose. Per object the [`StatusStore`] keeps only the `Ready`
//! condition, `generation` against `status.observedGeneration`, `spec.suspend` and the time
//! budget, with the object as the source delivered it (an `Arc` shared with the cache), behind
//! its own lock: a status-only watch event updates this map and does no graph work, and a status
//! report never takes the admission lock. The analysis ([`analyze`]) builds a private graph from
//! a snapshot of the store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::graph::{EdgeKind, Graph, NodeId};
use crate::object::keyed::ByKey;
use crate::object::{FluxKind, FluxObject, ObjectKey, at};

/// The reason Flux sets on `Ready=False` while an object waits for its `dependsOn`.
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The `Ready` condition of an object, as Flux writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadyCondition {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// `lastTransitionTime`, RFC 3339, as written.
    #[serde(rename = "lastTransitionTime", skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// What fluxgate keeps of one object's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    /// Boxed: held for every object, and absent on many.
    pub ready: Option<Box<ReadyCondition>>,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub suspended: bool,
    /// The longest one reconciliation may take: `spec.timeout`, else Flux's default of the
    /// interval minus 30 s, at least 30 s. `None` when neither field is readable.
    pub timeout: Option<Duration>,
}

/// Flux's floor for a reconciliation's time budget.
const MIN_TIMEOUT: Duration = Duration::from_secs(30);

fn timeout_of(value: &Value) -> Option<Duration> {
    let field = |name: &str| at(value, &["spec", name]).and_then(Value::as_str).and_then(crate::object::parse_duration);
    field("timeout").or_else(|| field("interval").map(|i| i.saturating_sub(MIN_TIMEOUT).max(MIN_TIMEOUT)))
}

/// The state of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `Ready=False` for a reason of its own (a failed build, a failed health check, ...).
    Failed,
    /// `Ready=False` with reason `DependencyNotReady`.
    Waiting,
    /// `spec.suspend: true`.
    Suspended,
    /// `status.observedGeneration` behind `metadata.generation`: the controller has not looked at
    /// the current spec.
    Stale,
    /// `Ready=Unknown`: a reconciliation is under way.
    Progressing,
    /// No `Ready` condition yet.
    Unknown,
    Ready,
}

impl State {
    /// Every state, stuck ones first (the order of tables and the page).
    pub const ALL: [State; 7] = [
        State::Failed,
        State::Waiting,
        State::Suspended,
        State::Stale,
        State::Progressing,
        State::Unknown,
        State::Ready,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Waiting => "waiting",
            State::Suspended => "suspended",
            State::Stale => "stale",
            State::Progressing => "progressing",
            State::Unknown => "unknown",
            State::Ready => "ready",
        }
    }
}

impl ObjectStatus {
    /// Reads the status-relevant fields of a whole object (a watch event, a list item). Fields
    /// of the wrong type read as absent: status is written by controllers, not by users, and one
    /// odd field must not hide the rest.
    pub fn from_value(value: &Value) -> ObjectStatus {
        let ready = at(value, &["status", "conditions"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .map(|c| {
                let text = |field: &str| c.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
                Box::new(ReadyCondition {
                    status: match c.get("status").and_then(Value::as_str) {
                        Some("True") => ConditionStatus::True,
                        Some("False") => ConditionStatus::False,
                        _ => ConditionStatus::Unknown,
                    },
                    reason: text("reason"),
                    message: text("message"),
                    last_transition_time: c.get("lastTransitionTime").and_then(Value::as_str).map(str::to_string),
                })
            });
        ObjectStatus {
            ready,
            generation: at(value, &["metadata", "generation"]).and_then(Value::as_i64),
            observed_generation: at(value, &["status", "observedGeneration"]).and_then(Value::as_i64),
            suspended: at(value, &["spec", "suspend"]).and_then(Value::as_bool).unwrap_or(false),
            timeout: timeout_of(value),
        }
    }

    /// Reads the status of an object from the API server (metadata is kept apart there).
    pub fn from_dynamic(object: &kube::api::DynamicObject) -> ObjectStatus {
        ObjectStatus { generation: object.metadata.generation, ..ObjectStatus::from_value(&object.data) }
    }

    /// The object's state. Suspension wins (Flux does nothing else with a suspended object);
    /// `DependencyNotReady` wins over staleness because Flux sets it before it records the new
    /// generation as observed.
    pub fn state(&self) -> State {
        if self.suspended {
            return State::Suspended;
        }
        let Some(ready) = &self.ready else { return State::Unknown };
        if ready.status == ConditionStatus::False && ready.reason == DEPENDENCY_NOT_READY {
            return State::Waiting;
        }
        if let (Some(generation), Some(observed)) = (self.generation, self.observed_generation)
            && observed < generation
        {
            return State::Stale;
        }
        match ready.status {
            ConditionStatus::True => State::Ready,
            ConditionStatus::Unknown => State::Progressing,
            ConditionStatus::False => State::Failed,
        }
    }

    /// The `Ready` message, if any.
    pub fn message(&self) -> Option<&str> {
        self.ready.as_ref().map(|r| r.message.as_str()).filter(|m| !m.is_empty())
    }
}

/// An object as the source delivered it, with its status.
type Delivered = (Arc<FluxObject>, StoredStatus);

/// An [`ObjectStatus`] as the store keeps it: 32 bytes instead of 64, for every object of the
/// cluster. Absent numbers are kept as values no object has; a time budget is kept in
/// milliseconds, up to 49 days.
#[derive(Debug)]
struct StoredStatus {
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
}

impl StatusStore {
    /// Records an object and its status as the source delivered them.
    pub fn record(&self, object: Arc<FluxObject>, status: ObjectStatus) {
        self.map.write().unwrap_or_else(|p| p.into_inner())[object.kind.index()].insert((object, status.into()));
    }

    /// After a relist: forgets the objects of `kind` that were not listed.
    pub fn keep_only<'a>(&self, kind: FluxKind, listed: impl IntoIterator<Item = &'a ObjectKey>) {
        let listed: HashSet<&ObjectKey> = listed.into_iter().collect();
        self.map.write().unwrap_or_else(|p| p.into_inner())[kind.index()].retain(|(o, _)| listed.contains(&o.key));
    }

    /// Forgets a deleted object.
    pub fn forget(&self, kind: FluxKind, key: &ObjectKey) {
        self.map.write().unwrap_or_else(|p| p.into_inner())[kind.index()].remove(key);
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

    /// The status report of both kinds, computed from a snapshot.
    pub fn report(&self) -> StatusReport {
        let kinds = FluxKind::ALL
            .iter()
            .map(|&kind| {
                let (objects, statuses) = self.snapshot(kind);
                analyze(kind, objects, &statuses)
            })
            .collect();
        StatusReport { kinds }
    }
}

/// Why a root holds its dependents up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Failed,
    Suspended,
    /// Named in a `dependsOn` (or a health check) but does not exist.
    Missing,
    Stale,
    Progressing,
    /// Exists but has no `Ready` condition yet.
    Unknown,
    /// On a `dependsOn` cycle: it can never become ready.
    Cycle,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Failed,
        Cause::Suspended,
        Cause::Missing,
        Cause::Stale,
        Cause::Progressing,
        Cause::Unknown,
        Cause::Cycle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Failed => "failed",
            Cause::Suspended => "suspended",
            Cause::Missing => "missing",
            Cause::Stale => "stale",
            Cause::Progressing => "progressing",
            Cause::Unknown => "unknown",
            Cause::Cycle => "cycle",
        }
    }
}

/// One hop of a chain: the object reached and the kind of edge that led to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub id: ObjectKey,
    /// `dependsOn` or `wait`; absent on the first hop (the object itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

/// An object holding up a waiting object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Root {
    /// The root object (for a cycle: the member the chain reaches first).
    pub id: ObjectKey,
    pub cause: Cause,
    /// From the waiting object to the root, both included.
    pub chain: Vec<Hop>,
    /// The root's own `Ready` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a cycle: the cycle, first member repeated at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<ObjectKey>>,
}

/// The status of one object (or of a missing `dependsOn` target) in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectReport {
    pub kind: FluxKind,
    pub id: ObjectKey,
    pub state: State,
    /// The wave the object reconciles in; `None` on or behind a cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the `Ready` condition last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
    /// For waiting objects: the objects really holding them up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<Root>,
    /// The object's explicit dependencies.
    #[serde(rename = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ObjectKey>,
    /// `metadata.uid`, for Events about the object (not shown).
    #[serde(skip)]
    pub uid: Option<String>,
}

impl ObjectReport {
    /// Whether the object is stuck: failed, waiting, or stale. Progressing (Flux is working on
    /// it), suspended (someone chose that) and unknown (just created, or a dump without status)
    /// are not.
    pub fn is_stuck(&self) -> bool {
        matches!(self.state, State::Failed | State::Waiting | State::Stale)
    }
}

/// The status of every object of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindReport {
    /// The cluster (its roots' folder) when files hold several that reuse names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub kind: FluxKind,
    /// Objects sorted by key.
    pub objects: Vec<ObjectReport>,
    /// Every cycle, first member repeated at the end.
    pub cycles: Vec<Vec<ObjectKey>>,
    /// Targets named by a `dependsOn` or health check that do not exist.
    pub missing: Vec<ObjectKey>,
    /// The longest `dependsOn` chain, dependencies first: it bounds a full rollout.
    #[serde(rename = "criticalPath")]
    pub critical_path: Vec<ObjectKey>,
    pub rollout: Rollout,
}

/// How long a rollout takes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Worst case of a full rollout: the largest sum of timeouts along a `dependsOn` chain, each
    /// object waiting for its slowest dependency ([`ObjectStatus::timeout`], 30 s when unknown).
    #[serde(rename = "worstCaseSeconds")]
    pub worst_case_seconds: u64,
    /// That chain, dependencies first.
    #[serde(rename = "worstCasePath")]
    pub worst_case_path: Vec<ObjectKey>,
    /// How long each wave actually took, from the `Ready` transition times: from the last
    /// transition of the wave before (for wave 0, its own first) to its own last. `None` while an
    /// object of the wave is not ready or has no transition time.
    #[serde(rename = "waveSeconds")]
    pub wave_seconds: Vec<Option<i64>>,
}

/// How long each wave took, from the `Ready` transition times (see [`Rollout::wave_seconds`]).
fn wave_seconds(graph: &Graph, waves: &[Option<u32>], statuses: &HashMap<ObjectKey, ObjectStatus>) -> Vec<Option<i64>> {
    use k8s_openapi::jiff::Timestamp;
    let depth = waves.iter().flatten().max().map_or(0, |m| m + 1) as usize;
    // Per wave: (first, last) transition, or None when an object is not ready or has no time.
    let mut spans: Vec<Option<(Timestamp, Timestamp)>> = vec![None; depth];
    let mut complete = vec![true; depth];
    for id in graph.present_ids() {
        let Some(w) = waves[id as usize] else { continue };
        let w = w as usize;
        let ready_at = statuses
            .get(graph.key(id))
            .filter(|s| s.state() == State::Ready)
            .and_then(|s| s.ready.as_ref()?.last_transition_time.as_deref()?.parse::<Timestamp>().ok());
        match ready_at {
            Some(t) => {
                let span = spans[w].get_or_insert((t, t));
                span.0 = span.0.min(t);
                span.1 = span.1.max(t);
            }
            None => complete[w] = false,
        }
    }
    (0..depth)
        .map(|w| {
            let (first, last) = spans[w].filter(|_| complete[w])?;
            let start = if w == 0 { first } else { spans[w - 1].filter(|_| complete[w - 1])?.1 };
            Some(last.duration_since(start).as_secs())
        })
        .collect()
}

impl KindReport {
    pub fn get(&self, key: &ObjectKey) -> Option<&ObjectReport> {
        self.objects.binary_search_by(|o| o.id.cmp(key)).ok().map(|i| &self.objects[i])
    }

    /// How many objects are in each state.
    pub fn counts(&self) -> BTreeMap<State, usize> {
        let mut counts = BTreeMap::new();
        for o in &self.objects {
            *counts.entry(o.state).or_default() += 1;
        }
        counts
    }
}

/// The status of both kinds: what `GET /status` and `fluxgate status --format json` give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub kinds: Vec<KindReport>,
}

impl StatusReport {
    pub fn kind(&self, kind: FluxKind) -> Option<&KindReport> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

/// Builds the report of one kind from its present objects and their statuses. An object without
/// a recorded status is `unknown`.
pub fn analyze(
    kind: FluxKind,
    objects: impl IntoIterator<Item = Arc<FluxObject>>,
    statuses: &HashMap<ObjectKey, ObjectStatus>,
) -> KindReport {
    let graph = Graph::from_objects(kind, objects);
    let waves = graph.waves();
    let sccs = graph.cycles();
    let mut cycle_of: HashMap<NodeId, usize> = HashMap::new();
    for (i, scc) in sccs.iter().enumerate() {
        for &m in &scc.members {
            cycle_of.insert(m, i);
        }
    }
    let unknown = ObjectStatus::default();
    let status_of = |id: NodeId| statuses.get(graph.key(id)).unwrap_or(&unknown);
    let state_of = |id: NodeId| status_of(id).state();
    let cycles: Vec<Vec<ObjectKey>> =
        sccs.iter().map(|s| s.cycle.iter().map(|&id| graph.key(id).clone()).collect()).collect();

    let mut objects: Vec<ObjectReport> = graph
        .present_ids()
        .map(|id| {
            let status = status_of(id);
            let state = status.state();
            let roots = if state == State::Waiting {
                root_causes(&graph, id, &state_of, &cycle_of, &cycles, statuses)
            } else {
                Vec::new()
            };
            ObjectReport {
                kind,
                id: graph.key(id).clone(),
                state,
                wave: waves[id as usize],
                reason: status.ready.as_ref().map(|r| r.reason.clone()).filter(|r| !r.is_empty()),
                message: status.message().map(str::to_string),
                since: status.ready.as_ref().and_then(|r| r.last_transition_time.clone()),
                in_cycle: cycle_of.contains_key(&id),
                roots,
                depends_on: graph.deps(id).map(|d| graph.key(d).clone()).collect(),
                uid: graph.object(id).and_then(|o| o.uid.as_ref()).map(ToString::to_string),
            }
        })
        .collect();
    objects.sort_by(|a, b| a.id.cmp(&b.id));
    let mut missing: Vec<ObjectKey> = graph
        .node_ids()
        .filter(|&id| !graph.is_present(id))
        .filter(|&id| graph.dependents(id).next().is_some() || graph.waited_by(id).next().is_some())
        .map(|id| graph.key(id).clone())
        .collect();
    missing.sort();
    let critical_path = graph.critical_path(&waves).into_iter().map(|id| graph.key(id).clone()).collect();
    let (worst, path) = crate::graph::worst_case(&graph, &waves, |key| {
        statuses.get(key).and_then(|s| s.timeout).unwrap_or(MIN_TIMEOUT)
    });
    let rollout = Rollout {
        worst_case_seconds: worst.as_secs(),
        worst_case_path: path.into_iter().map(|id| graph.key(id).clone()).collect(),
        wave_seconds: wave_seconds(&graph, &waves, statuses),
    };
    KindReport { cluster: None, kind, objects, cycles, missing, critical_path, rollout }
}

/// The roots holding up the waiting object `start`: a breadth-first walk along its out-edges
/// (`dependsOn` and implicit waits) that goes on through waiting objects and stops at the first
/// object on each path that is not ready and not waiting (or is missing, or on a cycle). Ready
/// objects are not followed: they hold nothing up. Breadth-first gives each root its shortest
/// chain, and each root (each cycle) is reported once.
fn root_causes(
    graph: &Graph,
    start: NodeId,
    state_of: &impl Fn(NodeId) -> State,
    cycle_of: &HashMap<NodeId, usize>,
    cycles: &[Vec<ObjectKey>],
    statuses: &HashMap<ObjectKey, ObjectStatus>,
) -> Vec<Root> {
    let mut parent: HashMap<NodeId, (NodeId, EdgeKind)> = HashMap::new();
    let mut seen: HashSet<NodeId> = HashSet::from([start]);
    let mut queue = VecDeque::from([start]);
    let mut roots = Vec::new();
    let mut cycles_reported: HashSet<usize> = HashSet::new();
    let chain_to = |parent: &HashMap<NodeId, (NodeId, EdgeKind)>, mut id: NodeId| {
        let mut hops = Vec::new();
        while let Some(&(from, kind)) = parent.get(&id) {
            hops.push(Hop { id: graph.key(id).clone(), via: Some(edge_name(kind)) });
            id = from;
        }
        hops.push(Hop { id: graph.key(id).clone(), via: None });
        hops.reverse();
        hops
    };
    let cycle_root = |id: NodeId, chain: Vec<Hop>, index: usize| Root {
        id: graph.key(id).clone(),
        cause: Cause::Cycle,
        chain,
        message: None,
        cycle: Some(cycles[index].clone()),
    };
    if let Some(&index) = cycle_of.get(&start) {
        cycles_reported.insert(index);
        roots.push(cycle_root(start, chain_to(&parent, start), index));
    }
    while let Some(id) = queue.pop_front() {
        for (next, kind) in graph.out_edges(id) {
            if !seen.insert(next) {
                continue;
            }
            parent.insert(next, (id, kind));
            if !graph.is_present(next) {
                roots.push(Root {
                    id: graph.key(next).clone(),
                    cause: Cause::Missing,
                    chain: chain_to(&parent, next),
                    message: None,
                    cycle: None,
                });
                continue;
            }
            if let Some(&index) = cycle_of.get(&next) {
                if cycles_reported.insert(index) {
                    roots.push(cycle_root(next, chain_to(&parent, next), index));
                }
                continue;
            }
            let cause = match state_of(next) {
                State::Ready => continue,
                State::Waiting => {
                    queue.push_back(next);
                    continue;
                }
                State::Failed => Cause::Failed,
                State::Suspended => Cause::Suspended,
                State::Stale => Cause::Stale,
                State::Progressing => Cause::Progressing,
                State::Unknown => Cause::Unknown,
            };
            roots.push(Root {
                id: graph.key(next).clone(),
                cause,
                chain: chain_to(&parent, next),
                message: statuses.get(graph.key(next)).and_then(|s| s.message()).map(str::to_string),
                cycle: None,
            });
        }
    }
    // Nearest blockers first, then by name: a stable order for people and for tests.
    roots.sort_by(|a, b| a.chain.len().cmp(&b.chain.len()).then_with(|| a.id.cmp(&b.id)));
    roots
}

fn edge_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::DependsOn => "dependsOn",
        EdgeKind::Wait => "wait",
    }
}

/// Seconds as people read them: `45s`, `5m`, `1h2m30s`.
pub fn format_seconds(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A chain as people read it: `a -> b -(wait)-> c`.
pub fn format_chain(chain: &[Hop]) -> String {
    let mut s = String::new();
    for hop in chain {
        match hop.via {
            None => {}
            Some("dependsOn") => s.push_str(" -> "),
            Some(via) => {
                s.push_str(" -(");
                s.push_str(via);
                s.push_str(")-> ");
            }
        }
        s.push_str(&hop.id.to_string());
    }
    s
}

pub mod page;

#[cfg(test)]
mod tests;

//! Admission decisions: an AdmissionRequest in, a response out.
//!
//! [`validate`] and [`mutate`] are pure: a graph (or nothing) and a request in, a verdict out;
//! no I/O and no clock. [`Webhook`] puts them together with the cache: it locks it, expires old
//! admissions, decides, and records what it admitted, all under one lock.

mod coordinate;
mod mutate;
mod review;

pub use coordinate::Coordinator;

pub use mutate::{WaitDefault, default_patch, mutate, wait_default};
pub use review::{
    AdmissionRequest, AdmissionReview, BadRequest, GroupVersionKind, MAX_WARNING_CHARS, MAX_WARNINGS_TOTAL, Operation,
    Response, fit_warnings, shorten,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use futures::future::BoxFuture;

use crate::cache::watch::Lookup;
use crate::cache::{Cache, Pending, State};
use crate::graph::Graphs;
use crate::object::{FluxKind, FluxObject, ObjectKey};
use crate::policy::live::LivePolicy;
use crate::policy::{Action, Enforcement, Policy, Rule};
use crate::rules::{self, Finding};

/// The outcome of a validation: the response, the findings behind it (for logs and metrics),
/// and the object to record when the request is admitted for real.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub response: Response,
    pub findings: Vec<Finding>,
    pub kind: Option<FluxKind>,
    pub record: Option<Arc<FluxObject>>,
    /// The recorded admission gives its graph an edge it did not have: the only kind that
    /// other replicas must hear of before it is answered (see [`crate::coordination`]).
    pub adds_edges: bool,
}

impl Verdict {
    fn untouched() -> Verdict {
        Verdict { response: Response::allow(), findings: Vec::new(), kind: None, record: None, adds_edges: false }
    }
}

/// The object under review as a [`FluxObject`], living in the request's namespace.
fn read_object(kind: FluxKind, value: &Value, req: &AdmissionRequest) -> Result<FluxObject, String> {
    FluxObject::from_value(kind, value, &req.namespace, &req.name).map_err(|e| e.to_string())
}

/// Decides a `/validate` request against `graphs`. The graphs are the same afterwards.
pub fn validate(graphs: &mut Graphs, policy: &Policy, req: &AdmissionRequest) -> Result<Verdict, BadRequest> {
    let Some(kind) = FluxKind::from_group_kind(&req.kind.group, &req.kind.kind) else {
        return Ok(Verdict::untouched());
    };
    if policy.is_excluded(&req.namespace) {
        return Ok(Verdict { kind: Some(kind), ..Verdict::untouched() });
    }
    let (graph, other) = graphs.split_mut(kind);
    let mut candidate = None;
    let findings = match req.operation {
        Operation::Create | Operation::Update => {
            let value = req
                .object
                .as_ref()
                .ok_or_else(|| BadRequest(format!("{} request without an object", req.operation.as_str())))?;
            let new = match read_object(kind, value, req) {
                Ok(o) => Arc::new(o),
                Err(e) => {
                    // The API server checks the CRD schema before validating webhooks run, so
                    // this is rare; the schema, not fluxgate, is the judge of shape.
                    let mut response = Response::allow();
                    response
                        .warnings
                        .push(format!("fluxgate could not read this {kind} ({e}); its dependsOn was not checked"));
                    return Ok(Verdict {
                        response,
                        findings: Vec::new(),
                        kind: Some(kind),
                        record: None,
                        adds_edges: false,
                    });
                }
            };
            let old = match (req.operation, &req.old_object) {
                (Operation::Update, Some(v)) => read_object(kind, v, req).ok(),
                _ => None,
            };
            let findings = rules::evaluate_upsert_with(graph, Some(other), policy, &new, old.as_ref());
            candidate = Some(new);
            findings
        }
        Operation::Delete => {
            let name = if req.name.is_empty() {
                req.old_object.as_ref().and_then(|o| o["metadata"]["name"].as_str()).unwrap_or_default()
            } else {
                &req.name
            };
            rules::evaluate_delete(graph, policy, &crate::object::ObjectKey::new(&req.namespace, name))
        }
        Operation::Connect => Vec::new(),
    };

    let audit = policy.enforcement_for(&req.namespace) == Enforcement::Audit;
    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    for f in &findings {
        match (f.action, audit) {
            (Action::Deny, false) => denials.push(f.message.clone()),
            (Action::Deny, true) => warnings.push(format!("audit mode, would deny: {}", f.message)),
            _ => warnings.push(f.message.clone()),
        }
    }
    let allowed = denials.is_empty();
    let response = Response { allowed, message: (!allowed).then(|| denial_message(&denials)), warnings, patch: None };
    let record = if allowed && !req.dry_run { candidate } else { None };
    Ok(Verdict { response, findings, kind: Some(kind), record, adds_edges: false })
}

/// Decides `req` on the locked cache, after expiring old admissions, and records the object
/// when it is admitted for real.
fn judge(state: &mut State, policy: &Policy, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
    state.expire(now);
    let mut verdict = validate(state.graphs_mut(), policy, req)?;
    if let (Some(object), Some(kind)) = (&verdict.record, verdict.kind) {
        verdict.adds_edges = adds_edges(state.graphs_mut(), kind, req);
        let replaced =
            req.old_object.as_ref().and_then(|o| o["metadata"]["resourceVersion"].as_str()).map(str::to_string);
        state.admit(object.clone(), replaced, now);
    }
    Ok(verdict)
}

/// Longest denial message: every deny-level finding up to this size, then a count of the rest.
pub const MAX_DENIAL_BYTES: usize = 16 * 1024;

/// The deny-level findings joined for `status.message`, cut at [`MAX_DENIAL_BYTES`].
fn denial_message(denials: &[String]) -> String {
    let mut message = String::new();
    for (i, d) in denials.iter().enumerate() {
        if i > 0 && message.len() + d.len() + 2 > MAX_DENIAL_BYTES {
            message.push_str(&format!("; and {} more deny-level findings", denials.len() - i));
            break;
        }
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(d);
    }
    message
}

/// Where the webhook confirms what it remembers before a denial rests on it, and looks for a
/// dangling target that another replica admitted: the API server, in cluster mode
/// ([`Lookup`]). A trait so that tests can stand in for it. `--manifests` mode has none: no
/// object is ever stored there, so what was admitted counts until it expires (see
/// [`Webhook::review`]).
pub trait StoredObjects: Send + Sync {
    /// Whether objects of `kind` can be asked for now.
    fn serves(&self, kind: FluxKind) -> bool;

    /// The stored object; `None` when the API server does not have it, or is deleting it.
    fn get<'a>(&'a self, kind: FluxKind, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<FluxObject>, String>>;
}

impl StoredObjects for Lookup {
    fn serves(&self, kind: FluxKind) -> bool {
        Lookup::serves(self, kind)
    }

    fn get<'a>(&'a self, kind: FluxKind, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<FluxObject>, String>> {
        Box::pin(async move {
            Lookup::get(self, kind, key).await.map(|found| found.map(|(object, _)| object)).map_err(|e| e.to_string())
        })
    }
}

/// The webhook's state: the cache and the policy in force.
#[derive(Clone)]
pub struct Webhook {
    pub cache: Arc<Cache>,
    pub policy: Arc<LivePolicy>,
    /// In cluster mode, the API server: admitted objects a denial rests on are confirmed with it,
    /// and dangling targets looked for.
    pub lookup: Option<Arc<dyn StoredObjects>>,
    /// How long a request waits for a lagging kind to be current again; see [`Webhook::review`].
    pub catch_up_wait: Duration,
    /// How long a real admission takes, at most, to be stored; see [`STORE_WITHIN`].
    pub store_within: Duration,
    /// In cluster mode, the writer of the record shared with the other replicas: admissions
    /// that add an edge are recorded there before they are answered.
    pub coordinator: Option<Arc<Coordinator>>,
}

/// Default of [`Webhook::catch_up_wait`]: with the lookups after it, well inside the API
/// server's 5 s webhook timeout.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// How long after fluxgate admits a change the API server holds it, at the latest, when the
/// request was real. After fluxgate answers, the API server waits for the other validating
/// webhooks (called side by side with fluxgate) and writes to etcd once. On the fake API
/// server of the tests, storing the object right after the answer, a GET sees it 0.13-0.2 ms
/// after the answer (median; at most 13 ms in three runs) and the watch delivers it within 42 ms
/// at most (`cargo bench --bench forged`); on a healthy control plane an etcd write takes
/// milliseconds. A change the API server does not hold this long after its admission is taken
/// for one that never will be: a later admission step rejected it, or the review did not come
/// from the API server at all. It is also how long a denial that rests on such a change can be
/// delayed by the wait to confirm it.
pub const STORE_WITHIN: Duration = Duration::from_secs(1);

/// What one review may spend on its own waits and lookups after any catch-up wait: with
/// [`CATCH_UP_WAIT`] a request is answered within 4.5 s, inside the API server's 5 s timeout.
const REVIEW_BUDGET: Duration = Duration::from_millis(2500);

/// At most this many times a review is judged again after other replicas' admissions came
/// into view and a denial resting on them was not confirmed.
const MAX_COORDINATION_ROUNDS: usize = 3;

/// At most this many rounds of confirming admitted objects per review: each round can bring
/// other admitted objects into the decision.
const MAX_CONFIRM_ROUNDS: usize = 3;

/// Whether the request gives the graph of `kind` an edge it did not have: the only kind of
/// change that can close a cycle. Pure, like [`validate`]: the graphs are the same afterwards.
pub fn adds_edges(graphs: &mut Graphs, kind: FluxKind, req: &AdmissionRequest) -> bool {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return false;
    }
    let Some(new) = req.object.as_ref().and_then(|v| read_object(kind, v, req).ok()) else { return false };
    let old = match (req.operation, &req.old_object) {
        (Operation::Update, Some(v)) => read_object(kind, v, req).ok(),
        _ => None,
    };
    rules::adds_edges(graphs.get_mut(kind), &Arc::new(new), old.as_ref())
}

/// The denial given while a kind's source is not current and the request cannot be decided
/// safely on the cache alone.
fn catching_up(kind: FluxKind, reason: &str, for_secs: u64) -> Verdict {
    let message = format!(
        "fluxgate's view of {kind} objects is catching up with the API server ({reason}, {for_secs} s ago); \
         this change could depend on what it has not seen yet, so it is not decided now: retry in a few seconds"
    );
    let response = Response { allowed: false, message: Some(message), warnings: Vec::new(), patch: None };
    Verdict { response, findings: Vec::new(), kind: Some(kind), record: None, adds_edges: false }
}

/// At most this many objects of one request are looked up before denying it.
const MAX_LOOKUPS: usize = 10;
/// How long the lookups of one round may take (they run side by side); past it the cache's
/// answer stands.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// A lookup is not started with less time than this left in the review's budget.
const MIN_LOOKUP_TIME: Duration = Duration::from_millis(200);

/// The end of a review's own waits and lookups.
struct Budget(tokio::time::Instant);

impl Budget {
    fn start() -> Budget {
        Budget(tokio::time::Instant::now() + REVIEW_BUDGET)
    }

    fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(tokio::time::Instant::now())
    }

    /// The time a round of lookups may take now.
    fn lookup_time(&self) -> Option<Duration> {
        let left = self.remaining();
        (left >= MIN_LOOKUP_TIME).then(|| left.min(LOOKUP_TIMEOUT))
    }
}

/// Looks `keys` up side by side, each bounded by `timeout`.
async fn lookup_all(
    lookup: &dyn StoredObjects,
    kind: FluxKind,
    keys: &[ObjectKey],
    timeout: Duration,
) -> Vec<Result<Option<FluxObject>, String>> {
    futures::future::join_all(keys.iter().map(|key| async move {
        match tokio::time::timeout(timeout, lookup.get(kind, key)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }))
    .await
}

impl Webhook {
    /// A webhook whose policy never changes.
    pub fn new(cache: Arc<Cache>, policy: Arc<Policy>) -> Webhook {
        Webhook::live(cache, LivePolicy::fixed(policy))
    }

    /// A webhook deciding with whatever policy `policy` has in force at each request.
    pub fn live(cache: Arc<Cache>, policy: Arc<LivePolicy>) -> Webhook {
        Webhook {
            cache,
            policy,
            lookup: None,
            catch_up_wait: CATCH_UP_WAIT,
            store_within: STORE_WITHIN,
            coordinator: None,
        }
    }

    /// The same webhook, confirming with `lookup` what a denial rests on.
    pub fn with_lookup(mut self, lookup: impl StoredObjects + 'static) -> Webhook {
        self.lookup = Some(Arc::new(lookup));
        self
    }

    /// The same webhook, recording its edge-adding admissions in the shared record through
    /// `coordinator` before answering them.
    pub fn with_coordinator(mut self, coordinator: Arc<Coordinator>) -> Webhook {
        self.coordinator = Some(coordinator);
        self
    }

    /// Validates `req` and, when it is admitted for real, records the object so the next
    /// decision sees it. Check and record happen under one lock.
    pub fn validate(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        // Taken before the cache lock: a reload never waits for a decision, nor a decision for it.
        let policy = self.policy.get();
        let mut state = self.cache.lock();
        judge(&mut state, &policy, req, now)
    }

    /// [`Webhook::validate`], confirming with the API server what a denial rests on. Only the
    /// deny path pays for it, and no lookup or wait holds the cache lock.
    ///
    /// - **Admitted objects are confirmed.** This replica remembers what it admitted before
    ///   the watch delivers it, and anyone who can reach the webhook port can send a review. A
    ///   denial for a cycle through such an object waits until the object has been pending for
    ///   [`Webhook::store_within`] (a real admission is stored by then), then asks the API
    ///   server for it: one the API server holds as admitted is real and stays; one it does not
    ///   hold is forgotten and the request judged again, atomically with the forgetting. The
    ///   same content admitted again does not restart the wait, so a flood of one forged change
    ///   delays a real request by at most that much. A denial still resting on an unconfirmed
    ///   object says so, with its age.
    /// - **Dangling targets are looked for**: another replica may have admitted the target
    ///   moments ago. Targets the API server has join the cache until the watch delivers them.
    ///
    /// Without a lookup (`--manifests` mode) nothing is confirmed and nothing is noted: there
    /// is no API server for a change to be stored in, the files and what was sent since are the
    /// whole cluster, and admitted objects count until they expire.
    ///
    /// While the request's kind is lagging (an outage, a relist, a silent watch), a request that
    /// adds an edge or that would be denied is not decided on the cache alone: it waits up to
    /// [`Webhook::catch_up_wait`] for the kind to be current (asking the watch to retry at
    /// once), and is denied as "catching up" if it is not. Edges that add nothing, deletes that
    /// are allowed, and untouched objects (Flux's dry-runs of unchanged objects) go through.
    pub async fn review(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        if let Some(verdict) = self.wait_if_lagging(req).await? {
            return Ok(verdict);
        }
        let budget = Budget::start();
        let mut now = now;
        let mut verdict = self.validate(req, now)?;
        let Some(kind) = verdict.kind else { return Ok(verdict) };
        for round in 0.. {
            verdict = self.settle(req, verdict, &mut now, kind, &budget).await?;
            let Some(coordinator) = self.coordinator.as_deref() else { break };
            if !(verdict.response.allowed && verdict.adds_edges && verdict.record.is_some()) {
                break;
            }
            if round == MAX_COORDINATION_ROUNDS {
                // Each round was denied on other replicas' admissions that the API server
                // then did not hold; the admission of this round is not recorded.
                if let Some(object) = &verdict.record {
                    self.cache.lock().withdraw(object);
                }
                verdict.response = coordinate::not_recorded(
                    crate::coordination::Failure::Conflict,
                    "the admissions in view kept changing",
                );
                break;
            }
            // Bounded by what is left of the review's time, so that the answer still reaches the
            // API server within its webhook timeout after a round of confirming.
            let left = budget.remaining().max(MIN_LOOKUP_TIME);
            let outcome = match tokio::time::timeout(left, self.coordinate(coordinator, req, &verdict)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    // The write may still carry it: then it is an admission never stored,
                    // which other replicas confirm before a denial rests on it.
                    if let Some(object) = &verdict.record {
                        self.cache.lock().withdraw(object);
                    }
                    coordinator.stats.failed(crate::coordination::Failure::Timeout, 1);
                    coordinate::Outcome::Failed(crate::coordination::Failure::Timeout, "no answer in time".into())
                }
            };
            match outcome {
                coordinate::Outcome::Recorded => break,
                // A denial resting on other replicas' admissions is confirmed like any other.
                coordinate::Outcome::Rejudged(v) => verdict = v,
                coordinate::Outcome::Failed(failure, reason) => {
                    verdict.response = coordinate::not_recorded(failure, &reason);
                    break;
                }
            }
        }
        if !verdict.response.allowed && self.lookup.is_some() {
            self.explain_pending(req, &mut verdict, now, kind);
        }
        Ok(verdict)
    }

    /// Confirms with the API server what a denial of `verdict` rests on, judging again where
    /// something changed: the part of [`Webhook::review`] that only the deny path pays for.
    async fn settle(
        &self,
        req: &AdmissionRequest,
        mut verdict: Verdict,
        now: &mut Instant,
        kind: FluxKind,
        budget: &Budget,
    ) -> Result<Verdict, BadRequest> {
        if let Some(lookup) = self.lookup.as_deref() {
            for _ in 0..MAX_CONFIRM_ROUNDS {
                if verdict.response.allowed || !lookup.serves(kind) {
                    break;
                }
                let (judged, again) = self.confirm_pending(req, verdict, now, lookup, kind, budget).await?;
                verdict = judged;
                if !again {
                    break;
                }
            }
            if !verdict.response.allowed {
                verdict = self.find_dangling_targets(req, verdict, *now, lookup, kind, budget).await?;
            }
        }
        Ok(verdict)
    }

    /// Admitted objects, not known to be stored, on the cycles a denial names (the request's
    /// own object aside: the request replaces it).
    fn unconfirmed_on_denied_cycles(
        &self,
        req: &AdmissionRequest,
        verdict: &Verdict,
        kind: FluxKind,
    ) -> Vec<(ObjectKey, Pending)> {
        let state = self.cache.lock();
        let mut found: Vec<(ObjectKey, Pending)> = Vec::new();
        for f in verdict.findings.iter().filter(|f| f.rule == Rule::Cycle && f.is_deny()) {
            for key in f.cycle.iter().flatten() {
                let own = *key.name == *req.name && *key.namespace == *req.namespace;
                if own || found.iter().any(|(k, _)| k == key) {
                    continue;
                }
                if let Some(pending) = state.pending(kind, key).filter(|p| !p.stored) {
                    found.push((key.clone(), pending));
                }
            }
        }
        found.truncate(MAX_LOOKUPS);
        found
    }

    /// One round of confirming the admitted objects a denial rests on. Returns the verdict and
    /// whether the request was judged again (something it rested on changed).
    async fn confirm_pending(
        &self,
        req: &AdmissionRequest,
        verdict: Verdict,
        now: &mut Instant,
        lookup: &dyn StoredObjects,
        kind: FluxKind,
        budget: &Budget,
    ) -> Result<(Verdict, bool), BadRequest> {
        let suspects = self.unconfirmed_on_denied_cycles(req, &verdict, kind);
        let Some(ready) = suspects.iter().map(|(_, p)| p.pending_since + self.store_within).max() else {
            return Ok((verdict, false));
        };
        // Asked earlier, the API server could lack a real change that is still on its way.
        let wait = ready.saturating_duration_since(*now);
        if wait + MIN_LOOKUP_TIME > budget.remaining() {
            return Ok((verdict, false));
        }
        tokio::time::sleep(wait).await;
        *now += wait;
        let Some(timeout) = budget.lookup_time() else { return Ok((verdict, false)) };
        let keys: Vec<ObjectKey> = suspects.iter().map(|(k, _)| k.clone()).collect();
        let answers = lookup_all(lookup, kind, &keys, timeout).await;

        let policy = self.policy.get();
        let mut state = self.cache.lock();
        let mut changed = false;
        for ((key, seen), answer) in suspects.iter().zip(answers) {
            if !state.still_pending(kind, key, seen) {
                // Delivered, expired or admitted anew while the lookup ran.
                changed = true;
                continue;
            }
            match answer {
                Err(e) => tracing::warn!(object = %key, error = %e, "cannot confirm an admitted object"),
                Ok(Some(stored)) if crate::cache::same_content(&stored, &seen.object) => state.mark_stored(kind, key),
                Ok(found) => {
                    tracing::info!(
                        kind = kind.as_str(),
                        object = %key,
                        pending_ms = now.saturating_duration_since(seen.pending_since).as_millis() as u64,
                        "an admitted change is not what the API server holds; it no longer counts"
                    );
                    state.forget_unstored(kind, key);
                    if let Some(c) = &self.coordinator {
                        c.refuted.add((*seen.object).clone());
                    }
                    // The API server holds something else, newer than what the watch delivered.
                    if let Some(stored) = found
                        && state.delivered(kind, key).is_none_or(|d| !crate::cache::same_content(d, &stored))
                    {
                        state.admit_stored(Arc::new(stored), *now);
                    }
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok((verdict, false));
        }
        // Judged under the same lock as the forgetting: no new admission slips in between.
        Ok((judge(&mut state, &policy, req, *now)?, true))
    }

    /// A denial for dangling targets is confirmed: another replica may have admitted the
    /// target moments ago, before this replica's watch delivered it. Targets the API server
    /// has join the cache (until the watch delivers them) and the request is judged again.
    async fn find_dangling_targets(
        &self,
        req: &AdmissionRequest,
        verdict: Verdict,
        now: Instant,
        lookup: &dyn StoredObjects,
        kind: FluxKind,
        budget: &Budget,
    ) -> Result<Verdict, BadRequest> {
        let missing: Vec<ObjectKey> = verdict
            .findings
            .iter()
            .filter(|f| f.rule == Rule::DanglingDependsOn && f.is_deny())
            .filter_map(|f| f.target.clone())
            .take(MAX_LOOKUPS)
            .collect();
        if missing.is_empty() {
            return Ok(verdict);
        }
        let Some(timeout) = budget.lookup_time() else { return Ok(verdict) };
        let mut found = Vec::new();
        for (key, answer) in missing.iter().zip(lookup_all(lookup, kind, &missing, timeout).await) {
            match answer {
                Ok(Some(object)) => found.push(Arc::new(object)),
                Ok(None) => {}
                Err(e) => tracing::warn!(target = %key, error = %e, "cannot confirm a dangling target"),
            }
        }
        if found.is_empty() {
            return Ok(verdict);
        }
        let policy = self.policy.get();
        let mut state = self.cache.lock();
        for object in found {
            state.admit_stored(object, now);
        }
        judge(&mut state, &policy, req, now)
    }

    /// Says in a denial which admitted objects it rests on that the API server is not known
    /// to hold, and how long ago they were admitted: the operator then looks for a change on
    /// its way (or a forged review), not for a cycle in the cluster.
    fn explain_pending(&self, req: &AdmissionRequest, verdict: &mut Verdict, now: Instant, kind: FluxKind) {
        let unconfirmed = self.unconfirmed_on_denied_cycles(req, verdict, kind);
        if unconfirmed.is_empty() {
            return;
        }
        let list: Vec<String> = unconfirmed
            .iter()
            .map(|(key, p)| {
                let age = now.saturating_duration_since(p.admitted_at).as_secs_f64();
                format!("{key} admitted {age:.1} s ago, not yet stored")
            })
            .collect();
        let note = format!(
            " (this denial rests on what fluxgate admitted but the API server is not known to hold: {})",
            list.join(", ")
        );
        if let Some(message) = verdict.response.message.as_mut() {
            message.push_str(&note);
        }
    }

    /// `Some(denial)` when the request's kind is lagging, the request needs a current view,
    /// and the view did not become current in time.
    async fn wait_if_lagging(&self, req: &AdmissionRequest) -> Result<Option<Verdict>, BadRequest> {
        let Some(kind) = FluxKind::from_group_kind(&req.kind.group, &req.kind.kind) else { return Ok(None) };
        {
            let mut state = self.cache.lock();
            if state.health(kind).is_current() {
                return Ok(None);
            }
            let verdict = validate(state.graphs_mut(), &self.policy.get(), req)?;
            if verdict.response.allowed && !adds_edges(state.graphs_mut(), kind, req) {
                return Ok(None);
            }
        }
        if self.cache.wait_current(kind, self.catch_up_wait).await {
            return Ok(None);
        }
        let state = self.cache.lock();
        let Some((since, reason)) = &state.health(kind).lagging else { return Ok(None) };
        Ok(Some(catching_up(kind, reason, since.elapsed().as_secs())))
    }

    /// Computes the mutating webhook's response. The cache is read (whether the object applies
    /// other Kustomizations) under its lock, for the time of one lookup.
    pub fn mutate(&self, req: &AdmissionRequest) -> Result<Response, BadRequest> {
        let policy = self.policy.get();
        mutate(&policy, req, |object| {
            let state = self.cache.lock();
            wait_default(state.graphs().get(FluxKind::Kustomization), object, &req.namespace, &req.name)
        })
    }
}

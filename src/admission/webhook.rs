//! The [`Webhook`]: the pure decision of [`super::decide`] put together with the cache, the API
//! server and the other replicas. It takes the cache lock for the time of a decision, confirms
//! with the API server what a denial rests on, waits for a lagging watch, and leaves edge-adding
//! admissions to the one replica that decides them (`coordinate.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::coordinate;
use super::{
    AdmissionRequest, BadRequest, Response, Reviewed, Verdict, adds_edges, catching_up, decide, decide_and_record,
    mutate, wait_default,
};
use crate::cache::watch::Lookup;
use crate::cache::{Cache, Pending};
use crate::coordination::decider::{Decider, Election, Forward};
use crate::object::{FluxKind, FluxObject, ObjectKey};
use crate::policy::Policy;
use crate::policy::Rule;
use crate::policy::live::LivePolicy;

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

    /// Every stored object of `kind`, but those being deleted.
    fn list(&self, kind: FluxKind) -> BoxFuture<'_, Result<Vec<FluxObject>, String>>;
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

    fn list(&self, kind: FluxKind) -> BoxFuture<'_, Result<Vec<FluxObject>, String>> {
        Box::pin(async move { Lookup::list(self, kind).await.map_err(|e| e.to_string()) })
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
    /// In cluster mode, which replica decides admissions that add an edge, and how to reach
    /// it: one replica decides them all, the others forward them (see
    /// [`crate::coordination::decider`]).
    pub decider: Option<Arc<Decider>>,
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

/// At most this many rounds of confirming admitted objects per review: each round can bring
/// other admitted objects into the decision.
const MAX_CONFIRM_ROUNDS: usize = 3;

/// At most this many objects of one request are looked up before denying it.
const MAX_LOOKUPS: usize = 10;
/// How long the lookups of one round may take (they run side by side); past it the cache's
/// answer stands.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// A lookup is not started with less time than this left in the review's budget.
const MIN_LOOKUP_TIME: Duration = Duration::from_millis(200);

/// The request under review, as sent and as read, of a kind fluxgate judges.
#[derive(Clone, Copy)]
pub(super) struct Under<'a> {
    pub(super) req: &'a AdmissionRequest,
    pub(super) reviewed: &'a Reviewed,
    pub(super) kind: FluxKind,
}

/// The end of a review's own waits and lookups.
pub(super) struct Budget(tokio::time::Instant);

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
        Webhook { cache, policy, lookup: None, catch_up_wait: CATCH_UP_WAIT, store_within: STORE_WITHIN, decider: None }
    }

    /// The same webhook, confirming with `lookup` what a denial rests on.
    pub fn with_lookup(mut self, lookup: impl StoredObjects + 'static) -> Webhook {
        self.lookup = Some(Arc::new(lookup));
        self
    }

    /// The same webhook, taking part in `election`: edge-adding admissions are left to the
    /// replica it names (forwarded there through `forward`), and each time this replica takes
    /// the Lease it catches up with the API server before deciding. Returns the webhook and the
    /// election's task (spawned).
    pub fn taking_part(
        mut self,
        election: Arc<Election>,
        forward: Arc<dyn Forward>,
    ) -> (Webhook, tokio::task::JoinHandle<()>) {
        self.decider = Some(Arc::new(Decider { election: election.clone(), forward }));
        let catching_up = self.clone();
        let task = tokio::spawn(election.run(move || {
            let webhook = catching_up.clone();
            Box::pin(async move { webhook.catch_up_with_api_server().await })
        }));
        (self, task)
    }

    /// Validates `req` and, when it is admitted for real, records the object so the next
    /// decision sees it. Check and record happen under one lock.
    pub fn validate(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        self.decide_now(req, &Reviewed::read(req), now)
    }

    /// [`Webhook::validate`] of a request already read.
    pub(super) fn decide_now(
        &self,
        req: &AdmissionRequest,
        reviewed: &Reviewed,
        now: Instant,
    ) -> Result<Verdict, BadRequest> {
        // Taken before the cache lock: a reload never waits for a decision, nor a decision for it.
        let policy = self.policy.get();
        let mut state = self.cache.lock();
        decide_and_record(&mut state, &policy, req, reviewed, now)
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
        self.review_from(req, now, None).await
    }

    /// [`Webhook::review`] of a review another replica forwarded (`forwarded_by` names it):
    /// decided here if this replica decides, denied otherwise; never forwarded again.
    pub async fn review_from(
        &self,
        req: &AdmissionRequest,
        now: Instant,
        forwarded_by: Option<&str>,
    ) -> Result<Verdict, BadRequest> {
        if let (Some(from), Some(decider)) = (forwarded_by, &self.decider) {
            decider.election.forwarded_from(from);
        }
        // Read once, outside any lock; every judgement of this request below uses the reading.
        let reviewed = Reviewed::read(req);
        if let Some(verdict) = self.wait_if_lagging(req, &reviewed).await? {
            return Ok(verdict);
        }
        let budget = Budget::start();
        // Taken before the first judgement: an admission stands here only if this replica
        // decided in one term from before the judgement to after it.
        let term = self.decider.as_ref().and_then(|d| d.election.deciding_term());
        let mut verdict = self.decide_now(req, &reviewed, now)?;
        let Some(kind) = verdict.kind else { return Ok(verdict) };
        let mut at = now;
        verdict = self.settle(req, &reviewed, verdict, &mut at, kind, &budget).await?;
        if let Some(decider) = self.decider.as_deref()
            && coordinate::needs_decider(&verdict)
        {
            let under = Under { req, reviewed: &reviewed, kind };
            verdict = self.leave_to_decider(decider, under, verdict, term, &budget, now, forwarded_by).await?;
        }
        if !verdict.response.allowed && self.lookup.is_some() {
            self.explain_pending(req, &mut verdict, Instant::now(), kind);
        }
        Ok(verdict)
    }

    /// Confirms with the API server what a denial of `verdict` rests on, judging again where
    /// something changed: the part of [`Webhook::review`] that only the deny path pays for.
    pub(super) async fn settle(
        &self,
        req: &AdmissionRequest,
        reviewed: &Reviewed,
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
                let (judged, again) =
                    self.confirm_pending(Under { req, reviewed, kind }, verdict, now, lookup, budget).await?;
                verdict = judged;
                if !again {
                    break;
                }
            }
            if !verdict.response.allowed {
                verdict =
                    self.find_dangling_targets(Under { req, reviewed, kind }, verdict, *now, lookup, budget).await?;
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
        under: Under<'_>,
        verdict: Verdict,
        now: &mut Instant,
        lookup: &dyn StoredObjects,
        budget: &Budget,
    ) -> Result<(Verdict, bool), BadRequest> {
        let Under { req, reviewed, kind } = under;
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
                // Edges are what a denial rests on.
                Ok(Some(stored)) if crate::cache::same_edges(&stored, &seen.object) => state.mark_stored(kind, key),
                Ok(found) => {
                    tracing::info!(
                        kind = kind.as_str(),
                        object = %key,
                        pending_ms = now.saturating_duration_since(seen.pending_since).as_millis() as u64,
                        "an admitted change is not what the API server holds; it no longer counts"
                    );
                    state.forget_unstored(kind, key);
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
        Ok((decide_and_record(&mut state, &policy, req, reviewed, *now)?, true))
    }

    /// A denial for dangling targets is confirmed: another replica may have admitted the
    /// target moments ago, before this replica's watch delivered it. Targets the API server
    /// has join the cache (until the watch delivers them) and the request is judged again.
    async fn find_dangling_targets(
        &self,
        under: Under<'_>,
        verdict: Verdict,
        now: Instant,
        lookup: &dyn StoredObjects,
        budget: &Budget,
    ) -> Result<Verdict, BadRequest> {
        let Under { req, reviewed, kind } = under;
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
        decide_and_record(&mut state, &policy, req, reviewed, now)
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
    async fn wait_if_lagging(
        &self,
        req: &AdmissionRequest,
        reviewed: &Reviewed,
    ) -> Result<Option<Verdict>, BadRequest> {
        let Some(kind) = reviewed.kind else { return Ok(None) };
        {
            let mut state = self.cache.lock();
            if state.health(kind).is_current() {
                return Ok(None);
            }
            let verdict = decide(state.graphs_mut(), &self.policy.get(), req, reviewed)?;
            if verdict.response.allowed && !adds_edges(state.graphs_mut(), reviewed) {
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

    /// What a replica does when it takes the decider Lease, before it decides: waits until
    /// whatever the previous decider admitted is stored ([`Webhook::store_within`]), then reads
    /// what the API server holds and brings into view what its watch has not delivered yet.
    /// Retried until it succeeds: the replica does not decide on a view that may lack an
    /// admission of its predecessor.
    async fn catch_up_with_api_server(&self) {
        tokio::time::sleep(self.store_within).await;
        let Some(lookup) = self.lookup.as_deref() else { return };
        // On a cache still listing, everything would differ from it: only what the watch has
        // not delivered once it is listed belongs in the overlay.
        while !self.cache.is_ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        'retry: loop {
            let mut listed = Vec::new();
            for kind in FluxKind::ALL {
                match lookup.list(kind).await {
                    Ok(objects) => listed.push(objects),
                    Err(e) => {
                        tracing::warn!(kind = kind.as_str(), error = %e, "cannot list to catch up; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue 'retry;
                    }
                }
            }
            let now = Instant::now();
            let mut state = self.cache.lock();
            let mut brought = 0;
            for object in listed.into_iter().flatten() {
                let shown = state.graphs().get(object.kind).get(&object.key);
                if shown.is_none_or(|o| !crate::cache::same_edges(o, &object)) {
                    state.admit_stored(Arc::new(object), now);
                    brought += 1;
                }
            }
            tracing::info!(objects = brought, "caught up with the API server before deciding");
            return;
        }
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

//! Admission decisions: an AdmissionRequest in, a response out.
//!
//! [`validate`] and [`mutate`] are pure: a graph (or nothing) and a request in, a verdict out;
//! no I/O and no clock. [`Webhook`] puts them together with the cache: it locks it, expires old
//! admissions, decides, and records what it admitted, all under one lock.

mod mutate;
mod review;

pub use mutate::{WaitDefault, default_patch, mutate, wait_default};
pub use review::{
    AdmissionRequest, AdmissionReview, BadRequest, GroupVersionKind, MAX_WARNING_CHARS, MAX_WARNINGS_TOTAL, Operation,
    Response, fit_warnings, shorten,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache::watch::Lookup;
use crate::cache::{Cache, Graphs};
use crate::live_policy::LivePolicy;
use crate::object::{FluxKind, FluxObject, ObjectKey};
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
}

impl Verdict {
    fn untouched() -> Verdict {
        Verdict { response: Response::allow(), findings: Vec::new(), kind: None, record: None }
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
                    return Ok(Verdict { response, findings: Vec::new(), kind: Some(kind), record: None });
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
    Ok(Verdict { response, findings, kind: Some(kind), record })
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

/// The webhook's state: the cache and the policy in force.
#[derive(Clone)]
pub struct Webhook {
    pub cache: Arc<Cache>,
    pub policy: Arc<LivePolicy>,
    /// In cluster mode, where a dangling target is confirmed before a denial.
    pub lookup: Option<Lookup>,
    /// How long a request waits for a lagging kind to be current again; see [`Webhook::review`].
    pub catch_up_wait: Duration,
}

/// Default of [`Webhook::catch_up_wait`]: with the lookups after it, well inside the API
/// server's 5 s webhook timeout.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

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
    Verdict { response, findings: Vec::new(), kind: Some(kind), record: None }
}

/// At most this many objects of one request are looked up before denying it.
const MAX_LOOKUPS: usize = 10;
/// How long the confirming lookups of one request may take (they run side by side); past it
/// the cache's answer stands. With [`CATCH_UP_WAIT`] and the two rounds of lookups a request
/// is answered within 4 s, inside the API server's 5 s webhook timeout.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after its admission an object must be in the API server, or it never will be:
/// the longest timeout an admission webhook can have, since validating webhooks run side by
/// side and storage follows them.
pub const UNSTORED_AFTER: Duration = Duration::from_secs(30);

/// Looks `keys` up side by side, each bounded by [`LOOKUP_TIMEOUT`].
async fn lookup_all(
    lookup: &Lookup,
    kind: FluxKind,
    keys: &[ObjectKey],
) -> Vec<(ObjectKey, Result<Option<FluxObject>, String>)> {
    let answers = futures::future::join_all(keys.iter().map(|key| async move {
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.get(kind, key)).await {
            Ok(Ok(found)) => Ok(found.map(|(object, _)| object)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        }
    }))
    .await;
    keys.iter().cloned().zip(answers).collect()
}

impl Webhook {
    /// A webhook whose policy never changes.
    pub fn new(cache: Arc<Cache>, policy: Arc<Policy>) -> Webhook {
        Webhook::live(cache, LivePolicy::fixed(policy))
    }

    /// A webhook deciding with whatever policy `policy` has in force at each request.
    pub fn live(cache: Arc<Cache>, policy: Arc<LivePolicy>) -> Webhook {
        Webhook { cache, policy, lookup: None, catch_up_wait: CATCH_UP_WAIT }
    }

    /// The same webhook, confirming dangling targets with `lookup` before denying.
    pub fn with_lookup(mut self, lookup: Lookup) -> Webhook {
        self.lookup = Some(lookup);
        self
    }

    /// Validates `req` and, when it is admitted for real, records the object so the next
    /// decision sees it. Check and record happen under one lock.
    pub fn validate(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        // Taken before the cache lock: a reload never waits for a decision, nor a decision for it.
        let policy = self.policy.get();
        let mut state = self.cache.lock();
        state.expire(now);
        let verdict = validate(state.graphs_mut(), &policy, req)?;
        if let Some(object) = &verdict.record {
            let replaced =
                req.old_object.as_ref().and_then(|o| o["metadata"]["resourceVersion"].as_str()).map(str::to_string);
            state.admit(object.clone(), replaced, now);
        }
        Ok(verdict)
    }

    /// [`Webhook::validate`], but a denial for dangling targets is confirmed first: another
    /// replica may have admitted the target moments ago, before this replica's watch delivered
    /// it. Targets the API server has join the cache (as admitted objects, until the watch
    /// confirms them) and the request is judged again. Only the deny path pays for the lookups,
    /// and they run outside the cache lock.
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
        let verdict = self.validate(req, now)?;
        let (Some(lookup), Some(kind)) = (&self.lookup, verdict.kind) else { return Ok(verdict) };
        if verdict.response.allowed {
            return Ok(verdict);
        }
        let verdict = self.forget_unstored(req, verdict, now, lookup, kind).await?;
        if verdict.response.allowed {
            return Ok(verdict);
        }
        let missing: Vec<ObjectKey> = verdict
            .findings
            .iter()
            .filter(|f| f.rule == Rule::DanglingDependsOn && f.is_deny())
            .filter_map(|f| f.target.clone())
            .take(MAX_LOOKUPS)
            .collect();
        let mut found = Vec::new();
        for (key, answer) in lookup_all(lookup, kind, &missing).await {
            match answer {
                Ok(Some(object)) => found.push(Arc::new(object)),
                Ok(None) => {}
                Err(e) => tracing::warn!(target = %key, error = %e, "cannot confirm a dangling target"),
            }
        }
        if found.is_empty() {
            return Ok(verdict);
        }
        {
            let mut state = self.cache.lock();
            for object in found {
                state.admit(object, None, now);
            }
        }
        self.validate(req, now)
    }

    /// A denial for a cycle through objects this replica admitted but the source never
    /// delivered (a later admission step or the storage may have rejected them) is confirmed
    /// first: admitted objects the API server does not have, [`UNSTORED_AFTER`] after their
    /// admission, leave the cache, and the request is judged again.
    async fn forget_unstored(
        &self,
        req: &AdmissionRequest,
        verdict: Verdict,
        now: Instant,
        lookup: &Lookup,
        kind: FluxKind,
    ) -> Result<Verdict, BadRequest> {
        if !lookup.serves(kind) {
            return Ok(verdict);
        }
        let admitted_before = now.checked_sub(UNSTORED_AFTER).unwrap_or(now);
        let suspects: Vec<ObjectKey> = {
            let state = self.cache.lock();
            let mut suspects: Vec<ObjectKey> = Vec::new();
            for f in verdict.findings.iter().filter(|f| f.rule == Rule::Cycle && f.is_deny()) {
                for key in f.cycle.iter().flatten() {
                    let own = *key.name == *req.name && *key.namespace == *req.namespace;
                    if !own && !suspects.contains(key) && state.is_unconfirmed(kind, key, admitted_before) {
                        suspects.push(key.clone());
                    }
                }
            }
            suspects.truncate(MAX_LOOKUPS);
            suspects
        };
        let mut gone = Vec::new();
        for (key, answer) in lookup_all(lookup, kind, &suspects).await {
            match answer {
                Ok(None) => gone.push(key),
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(object = %key, error = %e, "cannot confirm an admitted object"),
            }
        }
        if gone.is_empty() {
            return Ok(verdict);
        }
        {
            let mut state = self.cache.lock();
            for key in &gone {
                tracing::info!(kind = kind.as_str(), object = %key, "an admitted object was never stored; it no longer counts");
                state.forget_unstored(kind, key);
            }
        }
        self.validate(req, now)
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

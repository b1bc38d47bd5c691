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
    let graph = graphs.get_mut(kind);
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
            let findings = rules::evaluate_upsert(graph, policy, &new, old.as_ref());
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

/// The webhook's state: the cache and the policy.
#[derive(Clone)]
pub struct Webhook {
    pub cache: Arc<Cache>,
    pub policy: Arc<Policy>,
    /// In cluster mode, where a dangling target is confirmed before a denial.
    pub lookup: Option<Lookup>,
}

/// At most this many dangling targets of one request are looked up before denying it.
const MAX_LOOKUPS: usize = 10;
/// How long a confirming lookup may take; past it the cache's answer stands.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

impl Webhook {
    pub fn new(cache: Arc<Cache>, policy: Arc<Policy>) -> Webhook {
        Webhook { cache, policy, lookup: None }
    }

    /// The same webhook, confirming dangling targets with `lookup` before denying.
    pub fn with_lookup(mut self, lookup: Lookup) -> Webhook {
        self.lookup = Some(lookup);
        self
    }

    /// Validates `req` and, when it is admitted for real, records the object so the next
    /// decision sees it. Check and record happen under one lock.
    pub fn validate(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        let mut state = self.cache.lock();
        state.expire(now);
        let verdict = validate(state.graphs_mut(), &self.policy, req)?;
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
    pub async fn review(&self, req: &AdmissionRequest, now: Instant) -> Result<Verdict, BadRequest> {
        let verdict = self.validate(req, now)?;
        let (Some(lookup), Some(kind)) = (&self.lookup, verdict.kind) else { return Ok(verdict) };
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
        for key in &missing {
            match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.get(kind, key)).await {
                Ok(Ok(Some((object, _)))) => found.push(Arc::new(object)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(target = %key, error = %e, "cannot confirm a dangling target"),
                Err(_) => tracing::warn!(target = %key, "confirming a dangling target timed out"),
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

    /// Computes the mutating webhook's response. The cache is read (whether the object applies
    /// other Kustomizations) under its lock, for the time of one lookup.
    pub fn mutate(&self, req: &AdmissionRequest) -> Result<Response, BadRequest> {
        let state = self.cache.lock();
        mutate(&self.policy, state.graphs().get(FluxKind::Kustomization), req)
    }
}

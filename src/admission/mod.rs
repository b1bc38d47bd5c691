//! Admission decisions: an AdmissionRequest in, a response out.
//!
//! This file holds the decision and nothing that waits: [`Reviewed::read`] reads a request's
//! objects once, [`decide`] judges them against the graphs (no I/O, no clock, no lock), and
//! [`decide_and_record`] does the same on the locked cache state and remembers what it admitted.
//! [`mutate`] is the mutating webhook's pure counterpart. The [`Webhook`] (`webhook.rs`) holds
//! the locks, looks objects up in the API server, waits for a lagging watch and records
//! edge-adding admissions to the replica that decides them (`coordinate.rs`); `review.rs` is the wire format.

mod coordinate;
mod mutate;
mod review;
mod webhook;

pub use webhook::{CATCH_UP_WAIT, STORE_WITHIN, StoredObjects, Webhook};

pub use mutate::{WaitDefault, default_patch, mutate, wait_default};
pub use review::{
    AdmissionRequest, AdmissionReview, BadRequest, GroupVersionKind, MAX_WARNING_CHARS, MAX_WARNINGS_TOTAL, Operation,
    Response, fit_warnings, shorten,
};

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::cache::State;
use crate::graph::Graphs;
use crate::object::{FluxKind, FluxObject};
use crate::policy::{Action, Enforcement, Policy};
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
    /// A review another replica forwarded here, which this replica does not decide (it no
    /// longer holds the decider Lease, or has not caught up yet): `/validate` answers 503, and
    /// the forwarding replica tries again with whichever replica decides.
    pub not_decided: bool,
}

impl Verdict {
    pub(crate) fn untouched() -> Verdict {
        Verdict {
            response: Response::allow(),
            findings: Vec::new(),
            kind: None,
            record: None,
            adds_edges: false,
            not_decided: false,
        }
    }
}

/// A request's objects as the rules see them, read from its JSON once and before any lock:
/// the first judgement of a request and every later one (after a lookup, after other replicas'
/// admissions came into view) use the same reading.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// The request's kind, when it is one fluxgate judges.
    pub kind: Option<FluxKind>,
    /// CREATE and UPDATE: the object under review, or why it could not be read; `None` when
    /// the request carries none.
    new: Option<Result<Arc<FluxObject>, String>>,
    /// UPDATE: the object it replaces, where it can be read.
    old: Option<FluxObject>,
    /// UPDATE: the `resourceVersion` it replaces, which the watch may deliver after the
    /// admission and which must not end it.
    pub replaced: Option<String>,
}

impl Reviewed {
    pub fn read(req: &AdmissionRequest) -> Reviewed {
        let kind = FluxKind::from_group_kind(&req.kind.group, &req.kind.kind);
        let read = |value: &Value, kind: FluxKind| {
            FluxObject::from_value(kind, value, &req.namespace, &req.name).map_err(|e| e.to_string())
        };
        let (mut new, mut old) = (None, None);
        if let Some(kind) = kind
            && matches!(req.operation, Operation::Create | Operation::Update)
        {
            new = req.object.as_ref().map(|v| read(v, kind).map(Arc::new));
            if req.operation == Operation::Update {
                old = req.old_object.as_ref().and_then(|v| read(v, kind).ok());
            }
        }
        let replaced =
            req.old_object.as_ref().and_then(|o| o["metadata"]["resourceVersion"].as_str()).map(str::to_string);
        Reviewed { kind, new, old, replaced }
    }
}

/// Decides a `/validate` request against `graphs`, `reviewed` being its reading. The graphs are
/// the same afterwards.
pub fn decide(
    graphs: &mut Graphs,
    policy: &Policy,
    req: &AdmissionRequest,
    reviewed: &Reviewed,
) -> Result<Verdict, BadRequest> {
    let Some(kind) = reviewed.kind else {
        return Ok(Verdict::untouched());
    };
    if policy.is_excluded(&req.namespace) {
        return Ok(Verdict { kind: Some(kind), ..Verdict::untouched() });
    }
    let (graph, other) = graphs.split_mut(kind);
    let mut candidate = None;
    let findings = match req.operation {
        Operation::Create | Operation::Update => {
            let new = match &reviewed.new {
                None => return Err(BadRequest(format!("{} request without an object", req.operation.as_str()))),
                Some(Ok(o)) => o.clone(),
                Some(Err(e)) => {
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
                        not_decided: false,
                    });
                }
            };
            let old = reviewed.old.as_ref();
            let findings = rules::evaluate_upsert_with(graph, Some(other), policy, &new, old);
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
    Ok(Verdict { response, findings, kind: Some(kind), record, adds_edges: false, not_decided: false })
}

/// [`decide`] on the locked cache state, after expiring old admissions; an object admitted for
/// real is remembered there so that the next decision sees it.
pub fn decide_and_record(
    state: &mut State,
    policy: &Policy,
    req: &AdmissionRequest,
    reviewed: &Reviewed,
    now: Instant,
) -> Result<Verdict, BadRequest> {
    state.expire(now);
    let mut verdict = decide(state.graphs_mut(), policy, req, reviewed)?;
    if let Some(object) = &verdict.record {
        verdict.adds_edges = adds_edges(state.graphs_mut(), reviewed);
        state.admit(object.clone(), reviewed.replaced.clone(), now);
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

/// Whether the request gives its kind's graph an edge it did not have: the only kind of
/// change that can close a cycle. Pure, like [`decide`]: the graphs are the same afterwards.
pub fn adds_edges(graphs: &mut Graphs, reviewed: &Reviewed) -> bool {
    let (Some(kind), Some(Ok(new))) = (reviewed.kind, &reviewed.new) else { return false };
    rules::adds_edges(graphs.get_mut(kind), new, reviewed.old.as_ref())
}

/// The denial given while a kind's source is not current and the request cannot be decided
/// safely on the cache alone.
pub(crate) fn catching_up(kind: FluxKind, reason: &str, for_secs: u64) -> Verdict {
    let message = format!(
        "fluxgate's view of {kind} objects is catching up with the API server ({reason}, {for_secs} s ago); \
         this change could depend on what it has not seen yet, so it is not decided now: retry in a few seconds"
    );
    let response = Response { allowed: false, message: Some(message), warnings: Vec::new(), patch: None };
    Verdict { response, findings: Vec::new(), kind: Some(kind), record: None, adds_edges: false, not_decided: false }
}

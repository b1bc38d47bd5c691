//! The last step of a real admission that adds an edge: it stands only if the replica that
//! decides such admissions made it (see [`crate::coordination::decider`]). Elsewhere it is
//! taken back and the review forwarded to the decider, whose answer is the answer.
//!
//! One replica deciding every edge-adding admission, with its own admissions in view until its
//! watch delivers them, is what a single replica is: two halves of a cycle reach it one after
//! the other, whichever replica the API server called. The others decide what cannot close a
//! cycle (requests that add no edge, dry-runs, deletes) on their own caches, as before.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::webhook::{Budget, MIN_LOOKUP_TIME, Under};
use super::{AdmissionRequest, Response, Verdict};
use crate::coordination::decider::{Decider, Failure, Role};

/// Whether `verdict` is an admission only the decider may make.
pub(super) fn needs_decider(verdict: &Verdict) -> bool {
    verdict.response.allowed && verdict.adds_edges && verdict.record.is_some()
}

/// The denial when no replica could decide an edge-adding request.
pub(super) fn undecided(failure: Failure, detail: &str) -> Response {
    let why = match failure {
        Failure::NoDecider => format!("no fluxgate replica is deciding such changes right now ({detail})"),
        Failure::Unreachable => format!("the fluxgate replica that decides such changes did not answer ({detail})"),
        Failure::Moved => format!("this review was forwarded to a fluxgate replica that no longer decides ({detail})"),
    };
    let message = format!(
        "{why}; one replica decides every change that adds a dependsOn or wait edge, so that two replicas \
         never admit the two halves of a cycle, and this change is not admitted now: retry (Flux retries at \
         its next reconcile)"
    );
    Response { allowed: false, message: Some(message), warnings: Vec::new(), patch: None }
}

/// The body of a review forwarded to the decider.
fn forwarded_review(req: &AdmissionRequest) -> Vec<u8> {
    let review = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// The decider's answer, read from the AdmissionReview it sent back.
fn read_answer(bytes: &[u8]) -> Result<Response, String> {
    let review: Value = serde_json::from_slice(bytes).map_err(|e| format!("unreadable answer: {e}"))?;
    let response = &review["response"];
    let allowed = response["allowed"].as_bool().ok_or("the answer has no response.allowed")?;
    let message = response["status"]["message"].as_str().map(str::to_string);
    let warnings = response["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(Response { allowed, message, warnings, patch: None })
}

impl super::Webhook {
    /// Lets `verdict`, an edge-adding admission judged after reading `term`, stand if this
    /// replica decided it throughout; otherwise takes it back and forwards the review to the
    /// decider, or waits (within the review's budget) for a decider to be ready and judges it
    /// again. A review `forwarded_by` another replica is never forwarded again.
    pub(super) async fn leave_to_decider(
        &self,
        decider: &Decider,
        under: Under<'_>,
        mut verdict: Verdict,
        mut term: Option<u64>,
        budget: &Budget,
        forwarded_by: Option<&str>,
    ) -> Result<Verdict, super::BadRequest> {
        let Under { req, reviewed, kind } = under;
        let stats = &decider.election.stats;
        loop {
            if term.is_some() && decider.election.deciding_term() == term {
                stats.decided.fetch_add(1, Ordering::Relaxed);
                return Ok(verdict);
            }
            // Not this replica's to admit: out of its view again.
            if let Some(object) = &verdict.record {
                self.cache.lock().withdraw(object);
            }
            verdict.record = None;
            match decider.election.role() {
                Role::Following { holder, address } if forwarded_by.is_none() => {
                    return Ok(self.forward(decider, req, verdict, &holder, &address).await);
                }
                Role::Following { holder, .. } => {
                    stats.failed(Failure::Moved);
                    let from = forwarded_by.unwrap_or_default();
                    verdict.response = undecided(Failure::Moved, &format!("from {from}; {holder} decides now"));
                    return Ok(verdict);
                }
                _ => {}
            }
            // No decider, or this replica is taking over: wait for one, within the budget.
            let settled = |r: &Role| r.decides_now() || (forwarded_by.is_none() && matches!(r, Role::Following { .. }));
            let left = budget.remaining().saturating_sub(MIN_LOOKUP_TIME);
            let role = decider.election.wait_for(left, settled).await;
            if !settled(&role) {
                stats.failed(Failure::NoDecider);
                let detail = match role {
                    Role::Deciding { .. } => "this replica is catching up with the previous decider",
                    _ => "the decider Lease is free or cannot be read",
                };
                verdict.response = undecided(Failure::NoDecider, detail);
                return Ok(verdict);
            }
            // Judged again: the view may have changed while it waited (a new decider has
            // caught up with its predecessor's admissions).
            term = decider.election.deciding_term();
            let mut at = std::time::Instant::now();
            verdict = self.decide_now(req, reviewed, at)?;
            verdict = self.settle(req, reviewed, verdict, &mut at, kind, budget).await?;
            if !needs_decider(&verdict) {
                return Ok(verdict);
            }
        }
    }

    /// Forwards `req` to the decider `holder` at `address`; its answer is the answer.
    async fn forward(
        &self,
        decider: &Decider,
        req: &AdmissionRequest,
        mut verdict: Verdict,
        holder: &str,
        address: &str,
    ) -> Verdict {
        let stats = &decider.election.stats;
        let answer = decider.forward.forward(address, forwarded_review(req)).await.and_then(|b| read_answer(&b));
        match answer {
            Ok(response) => {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                if !response.allowed {
                    // The decider's findings are its own; these were for an admission it refused.
                    verdict.findings.clear();
                }
                verdict.response = response;
            }
            Err(e) => {
                stats.failed(Failure::Unreachable);
                tracing::warn!(
                    uid = %req.uid,
                    decider = %holder,
                    address = %address,
                    error = %e,
                    "denied: the review could not be forwarded to the deciding replica"
                );
                verdict.findings.clear();
                verdict.response = undecided(Failure::Unreachable, &format!("{holder} at {address}: {e}"));
            }
        }
        verdict
    }
}

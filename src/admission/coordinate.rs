//! The last step of a real admission that adds an edge: it stands only if the replica that
//! decides such admissions made it (see [`crate::coordination::decider`]). Elsewhere it is
//! taken back and the review forwarded to the decider, whose answer is the answer.
//!
//! One replica deciding every edge-adding admission, with its own admissions in view until its
//! watch delivers them, is what a single replica is: two halves of a cycle reach it one after
//! the other, whichever replica the API server called. The others decide what cannot close a
//! cycle (requests that add no edge, dry-runs, deletes) on their own caches, as before.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::webhook::{Budget, Under};
use super::{AdmissionRequest, Response, Verdict};
use crate::coordination::decider::{Decider, FORWARD_TIMEOUT, Failure, Role};

/// Whether `verdict` is an admission only the decider may make.
pub(super) fn needs_decider(verdict: &Verdict) -> bool {
    verdict.response.allowed && verdict.adds_edges && verdict.record.is_some()
}

/// The denial when no replica could decide an edge-adding request.
fn undecided(failure: Failure, detail: &str) -> Response {
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

/// How long after its arrival an edge-adding request may wait for a decider (a new one taking
/// over, forwards retried): with the answer's way back, inside the API server's 5 s webhook
/// timeout.
const DECIDER_WAIT: Duration = Duration::from_secs(4);

/// Between two tries to reach a decider.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

impl super::Webhook {
    /// Lets `verdict`, an edge-adding admission judged after reading `term`, stand if this
    /// replica decided it throughout; otherwise takes it back and forwards the review to the
    /// decider, or waits for one to be ready (a replica taking over catches up first) and judges
    /// it again, until [`DECIDER_WAIT`] after `arrived`. A forward that fails (the decider is
    /// gone, or no longer decides) is tried again with whichever replica decides by then. A
    /// review `forwarded_by` another replica is never forwarded again.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn leave_to_decider(
        &self,
        decider: &Decider,
        under: Under<'_>,
        mut verdict: Verdict,
        mut term: Option<u64>,
        budget: &Budget,
        arrived: Instant,
        forwarded_by: Option<&str>,
    ) -> Result<Verdict, super::BadRequest> {
        let Under { req, reviewed, kind } = under;
        let stats = &decider.election.stats;
        let deadline = arrived + DECIDER_WAIT;
        let mut unreachable: Option<String> = None;
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
            if let Some(from) = forwarded_by {
                // The forwarding replica tries again with whichever replica decides by then.
                stats.failed(Failure::Moved);
                let now_deciding = decider.election.decider().unwrap_or_else(|| "no replica".into());
                verdict.findings.clear();
                verdict.not_decided = true;
                verdict.response = undecided(Failure::Moved, &format!("from {from}; {now_deciding} decides now"));
                return Ok(verdict);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Role::Following { holder, address } = decider.election.role() {
                let timeout = left.min(FORWARD_TIMEOUT);
                match self.forward(decider, req, &address, timeout).await {
                    Ok(response) => {
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        if !response.allowed {
                            // The decider's findings are its own; these were for an
                            // admission it refused.
                            verdict.findings.clear();
                        }
                        verdict.response = response;
                        return Ok(verdict);
                    }
                    Err(e) => {
                        tracing::debug!(decider = %holder, error = %e, "forward failed; trying again");
                        unreachable = Some(format!("{holder} at {address}: {e}"));
                    }
                }
            }
            // No decider yet, this replica taking over, or the decider did not answer: wait for
            // a change, or a moment before trying again.
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= RETRY_PAUSE {
                verdict.findings.clear();
                verdict.response = match unreachable {
                    Some(detail) => {
                        stats.failed(Failure::Unreachable);
                        tracing::warn!(uid = %req.uid, error = %detail, "denied: the deciding replica did not answer");
                        undecided(Failure::Unreachable, &detail)
                    }
                    None => {
                        stats.failed(Failure::NoDecider);
                        let detail = match decider.election.role() {
                            Role::Deciding { .. } => "this replica is catching up with the previous decider",
                            _ => "the decider Lease is free or cannot be read",
                        };
                        tracing::warn!(uid = %req.uid, error = detail, "denied: no replica decides");
                        undecided(Failure::NoDecider, detail)
                    }
                };
                return Ok(verdict);
            }
            let role = if unreachable.is_some() {
                // The Lease may name another decider by the next try.
                tokio::time::sleep(RETRY_PAUSE).await;
                decider.election.role()
            } else {
                let settled = |r: &Role| r.decides_now() || matches!(r, Role::Following { .. });
                decider.election.wait_for(left - RETRY_PAUSE, settled).await
            };
            if !role.decides_now() {
                continue;
            }
            // Judged again: the view may have changed while it waited (a new decider has
            // caught up with its predecessor's admissions).
            term = decider.election.deciding_term();
            let mut at = Instant::now();
            verdict = self.decide_now(req, reviewed, at)?;
            verdict = self.settle(req, reviewed, verdict, &mut at, kind, budget).await?;
            if !needs_decider(&verdict) {
                return Ok(verdict);
            }
        }
    }

    /// Forwards `req` to the decider at `address`: its answer, or why there is none (it did not
    /// answer, or answered that it does not decide).
    async fn forward(
        &self,
        decider: &Decider,
        req: &AdmissionRequest,
        address: &str,
        timeout: Duration,
    ) -> Result<Response, String> {
        let answer = tokio::time::timeout(timeout, decider.forward.forward(address, forwarded_review(req))).await;
        let answer = answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        answer.and_then(|b| read_answer(&b))
    }
}

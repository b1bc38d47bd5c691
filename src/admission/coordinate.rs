//! The batching writer of the shared record (see [`crate::coordination`]): the last step of a
//! real admission that adds an edge.
//!
//! Requests that arrive while a write is in flight wait for it to end, and the first of them
//! writes for all: one API write carries every decision made meanwhile (group commit), so under
//! load the writes per request fall below one. The record comes back with the write; what it
//! holds that this replica had not in view was written before this write, and the batch is
//! judged again with it. The cache lock is never held across the write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::{AdmissionRequest, Response, Reviewed, Verdict, decide_and_record};
use crate::cache::{State, version_order};
use crate::coordination::record::{self, Entry, MAX_ENTRIES};
use crate::coordination::{Failure, MAX_ATTEMPTS, Record, RecordStore, Refuted, Stats, WRITE_TIMEOUT, WriteError};
use crate::object::FluxObject;

/// What became of a request handed to the writer.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Recorded: the admission stands.
    Recorded,
    /// Judged again with other replicas' admissions in view, and denied.
    Rejudged(Verdict),
    /// The record could not be written.
    Failed(Failure, String),
}

struct Ticket {
    req: AdmissionRequest,
    reviewed: Reviewed,
    object: Arc<FluxObject>,
    done: oneshot::Sender<Outcome>,
}

/// One replica's writer of the shared record.
pub struct Coordinator {
    store: Arc<dyn RecordStore>,
    /// This replica's name in the record (the pod name).
    replica: String,
    queue: std::sync::Mutex<Vec<Ticket>>,
    /// Held by the request writing for the batch; holds the record as the last write left it.
    writer: tokio::sync::Mutex<Record>,
    /// Counts this replica's entries, so that their ids differ.
    seq: AtomicU64,
    /// When the last write ended: writes in quick succession mean load, and a short wait
    /// before the next one lets more decisions share it.
    last_write: std::sync::Mutex<Option<Instant>>,
    /// How long a write waits for company under load; see [`LINGER`].
    pub linger: std::time::Duration,
    pub refuted: Refuted,
    pub stats: Stats,
}

/// Under load (a write ended less than [`BUSY`] ago), a write waits this long for the
/// decisions arriving meanwhile to share it. Without it, the requests of a few concurrent
/// clients fall into step with the writes and each write carries one; with it, they fall into
/// step with each other. Idle, a write goes at once.
pub const LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// See [`LINGER`].
const BUSY: std::time::Duration = std::time::Duration::from_millis(20);

/// Milliseconds since the Unix epoch: replicas on different nodes compare record times.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Coordinator {
    pub fn new(store: Arc<dyn RecordStore>, replica: impl Into<String>) -> Coordinator {
        Coordinator {
            store,
            replica: replica.into(),
            queue: std::sync::Mutex::default(),
            writer: tokio::sync::Mutex::default(),
            seq: AtomicU64::new(0),
            last_write: std::sync::Mutex::default(),
            linger: LINGER,
            refuted: Refuted::default(),
            stats: Stats::default(),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Puts this replica's mark in the record, before its watch lists anything: from then on
    /// no entry leaves the record before this replica's watch has delivered its object too.
    /// (An entry that left before was stored before this replica's first list, which has it.)
    pub async fn join(&self) -> Result<(), WriteError> {
        let mut known = self.writer.lock().await;
        let changes = known.changes(&self.replica, now_ms(), &[], |_| false, |_| false);
        let stored = tokio::time::timeout(WRITE_TIMEOUT, self.store.patch(&changes))
            .await
            .map_err(|_| WriteError::Failed("no answer in time".into()))??;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.stats.entries.store(stored.entries.len() as u64, Ordering::Relaxed);
        self.stats.replicas.store(stored.active_replicas(now_ms()) as u64, Ordering::Relaxed);
        *known = stored;
        Ok(())
    }
}

/// The denial given when the record cannot be written.
pub(super) fn not_recorded(failure: Failure, reason: &str) -> Response {
    let why = match failure {
        Failure::Timeout => "the API server did not answer in time".to_string(),
        Failure::Forbidden => format!("the API server refused the write ({reason}); check fluxgate's RBAC"),
        Failure::Conflict => "the API server kept answering that concurrent writes conflicted".to_string(),
        Failure::Error => reason.to_string(),
    };
    let message = format!(
        "fluxgate could not record this admission for its other replicas ({why}); without that record two \
         replicas could each admit one half of a dependsOn cycle, so this change, which adds a dependsOn or \
         wait edge, is not admitted now: retry (Flux retries at its next reconcile)"
    );
    Response { allowed: false, message: Some(message), warnings: Vec::new(), patch: None }
}

impl super::Webhook {
    /// Records the admission `verdict` of `req` in the shared record, with every decision
    /// waiting meanwhile. The verdict's object is in this replica's overlay already.
    pub(super) async fn coordinate(
        &self,
        coordinator: &Coordinator,
        req: &AdmissionRequest,
        reviewed: &Reviewed,
        verdict: &Verdict,
    ) -> Outcome {
        let Some(object) = verdict.record.clone() else { return Outcome::Recorded };
        let (done, mut outcome) = oneshot::channel();
        coordinator.queue.lock().unwrap_or_else(|p| p.into_inner()).push(Ticket {
            req: req.clone(),
            reviewed: reviewed.clone(),
            object,
            done,
        });
        let mut known = coordinator.writer.lock().await;
        // A write that ended while this request waited may have carried it.
        if let Ok(o) = outcome.try_recv() {
            return o;
        }
        let busy = coordinator.last_write.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < BUSY);
        if busy && !coordinator.linger.is_zero() {
            tokio::time::sleep(coordinator.linger).await;
        }
        let batch = std::mem::take(&mut *coordinator.queue.lock().unwrap_or_else(|p| p.into_inner()));
        self.write_batch(coordinator, &mut known, batch).await;
        *coordinator.last_write.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        drop(known);
        outcome.await.unwrap_or(Outcome::Failed(Failure::Error, "the writer stopped".into()))
    }

    async fn write_batch(&self, c: &Coordinator, known: &mut Record, mut batch: Vec<Ticket>) {
        let mut attempt = 0;
        loop {
            if attempt > 0 {
                // Requests that arrived during the failed try join this one.
                batch.append(&mut c.queue.lock().unwrap_or_else(|p| p.into_inner()));
            }
            let ms = now_ms();
            let new: Vec<(String, Entry)> = batch
                .iter()
                .map(|t| {
                    let entry = Entry::new(&c.replica, &t.object, t.reviewed.replaced.clone(), ms);
                    (entry.id(c.seq.fetch_add(1, Ordering::Relaxed)), entry)
                })
                .collect();
            if known.entries.len() + new.len() > MAX_ENTRIES {
                let reason = format!("the record holds {MAX_ENTRIES} admissions not yet delivered, its limit");
                return self.fail(c, batch, Failure::Error, &reason);
            }
            let changes = {
                let state = self.cache.lock();
                let delivered = |e: &Entry| {
                    e.flux_object()
                        .is_some_and(|o| state.delivered(o.kind, &o.key).is_some_and(|d| record::same_edges(d, &o)))
                };
                let refuted = |e: &Entry| e.flux_object().is_some_and(|o| c.refuted.contains(&o));
                known.changes(&c.replica, ms, &new, delivered, refuted)
            };
            match tokio::time::timeout(WRITE_TIMEOUT, c.store.patch(&changes)).await {
                Ok(Ok(stored)) => {
                    c.stats.writes.fetch_add(1, Ordering::Relaxed);
                    c.stats.entries.store(stored.entries.len() as u64, Ordering::Relaxed);
                    c.stats.replicas.store(stored.active_replicas(ms) as u64, Ordering::Relaxed);
                    let taken_back = self.judge_again(c, &mut batch, new, &stored, ms);
                    *known = stored;
                    if !taken_back.is_empty() {
                        // Denied now, so out of the record. Best effort: left there, such an
                        // entry only makes decisions more careful until it is refuted or expires.
                        let removal = Record::removal(&taken_back);
                        if let Ok(Ok(after)) = tokio::time::timeout(WRITE_TIMEOUT, c.store.patch(&removal)).await {
                            c.stats.writes.fetch_add(1, Ordering::Relaxed);
                            *known = after;
                        }
                    }
                    c.stats.recorded.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for t in batch {
                        let _ = t.done.send(Outcome::Recorded);
                    }
                    return;
                }
                Ok(Err(WriteError::Conflict)) => {
                    c.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        let reason = format!("{attempt} conflicting writes in a row");
                        return self.fail(c, batch, Failure::Conflict, &reason);
                    }
                    c.stats.retries.fetch_add(1, Ordering::Relaxed);
                    // Replicas that keep colliding would collide again in step; a random pause
                    // of up to a few writes' time lets one of them through.
                    tokio::time::sleep(jitter(attempt)).await;
                }
                Ok(Err(e)) => return self.fail(c, batch, failure_of(&e), &e.to_string()),
                // The write may still land: then its entries are admissions that were denied,
                // and stay until they are refuted or expire.
                Err(_) => return self.fail(c, batch, Failure::Timeout, "write timed out"),
            }
        }
    }

    /// Judges the batch again with every admission the stored record holds in view: written
    /// before this write, they count first. Keeps in `batch` what is still admitted; returns
    /// the record ids of the rest.
    fn judge_again(
        &self,
        c: &Coordinator,
        batch: &mut Vec<Ticket>,
        new: Vec<(String, Entry)>,
        stored: &Record,
        ms: u64,
    ) -> Vec<String> {
        let policy = self.policy.get();
        let mut state = self.cache.lock();
        let now = Instant::now();
        // The batch's own entries are in the stored record too: they are what is judged again,
        // never part of the view it is judged in (in view, a request's own edges would look
        // like edges it does not add, and a cycle it closes would only warn).
        let own: std::collections::BTreeSet<&String> = new.iter().map(|(id, _)| id).collect();
        // Judged again even when the record brings nothing new into view: the view may have
        // changed since the batch was judged (this replica's previous write brought other
        // replicas' admissions in while the batch waited for the writer), and a judgement made
        // before that is not one the property can rest on.
        // In arrival order, each with the ones before it in view.
        for t in batch.iter().rev() {
            state.withdraw(&t.object);
        }
        bring_into_view(&mut state, c, stored, ms, now, &own);
        let mut taken_back = Vec::new();
        let mut kept = Vec::with_capacity(batch.len());
        for (t, (id, _)) in std::mem::take(batch).into_iter().zip(&new) {
            match decide_and_record(&mut state, &policy, &t.req, &t.reviewed, now) {
                Ok(v) if v.response.allowed => kept.push(t),
                Ok(v) => {
                    c.stats.rejudged_denials.fetch_add(1, Ordering::Relaxed);
                    taken_back.push(id.clone());
                    let _ = t.done.send(Outcome::Rejudged(v));
                }
                Err(e) => {
                    taken_back.push(id.clone());
                    let _ = t.done.send(Outcome::Failed(Failure::Error, e.0));
                }
            }
        }
        *batch = kept;
        taken_back
    }

    /// Denies every request of the batch, taking their admissions back.
    fn fail(&self, c: &Coordinator, batch: Vec<Ticket>, failure: Failure, reason: &str) {
        {
            let mut state = self.cache.lock();
            for t in batch.iter().rev() {
                state.withdraw(&t.object);
            }
        }
        c.stats.failed(failure, batch.len());
        for t in batch {
            tracing::warn!(
                uid = %t.req.uid,
                object = %t.object.key,
                kind = t.object.kind.as_str(),
                failure = failure.as_str(),
                error = reason,
                "denied: the admission could not be recorded for the other replicas"
            );
            let _ = t.done.send(Outcome::Failed(failure, reason.to_string()));
        }
    }
}

/// A pause after the `attempt`-th conflict in a row: random, up to `attempt` times 2 ms (a
/// write's time on a busy control plane), capped at 10 ms.
fn jitter(attempt: usize) -> std::time::Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    // The low bits of the clock differ between replicas and between tries.
    let spread = (attempt as u64 * 2_000).min(10_000);
    std::time::Duration::from_micros(u64::from(nanos.wrapping_mul(2_654_435_761)) % spread.max(1))
}

fn failure_of(e: &WriteError) -> Failure {
    match e {
        WriteError::Conflict => Failure::Conflict,
        WriteError::Forbidden(_) => Failure::Forbidden,
        WriteError::Failed(_) => Failure::Error,
    }
}

/// Puts the record's live entries, but those in `skip`, into the overlay (they stay until this
/// replica's watch delivers them, or they expire).
///
/// The record can hold several admissions of one object (by several replicas, one after the
/// other). The overlay holds one object per key, so they are made one first: the admission
/// that replaced the newest version (what the API server stores after it), and where two
/// replaced the same version, or versions cannot be ordered, their `dependsOn` together (either
/// may be the one stored; a view with both never misses an edge).
fn bring_into_view(
    state: &mut State,
    c: &Coordinator,
    record: &crate::coordination::Record,
    ms: u64,
    now: Instant,
    skip: &std::collections::BTreeSet<&String>,
) {
    let mut by_key: std::collections::BTreeMap<
        (crate::object::FluxKind, crate::object::ObjectKey),
        (FluxObject, Option<String>),
    > = std::collections::BTreeMap::new();
    for (_, e) in record.live(ms).filter(|(id, _)| !skip.contains(id)) {
        let Some(object) = e.flux_object() else { continue };
        if c.refuted.contains(&object) {
            continue;
        }
        let key = (object.kind, object.key.clone());
        match by_key.get_mut(&key) {
            None => {
                by_key.insert(key, (object, e.replaced.clone()));
            }
            Some((held, held_version)) => match version_order(e.replaced.as_deref(), held_version.as_deref()) {
                Some(std::cmp::Ordering::Greater) => {
                    *held = object;
                    held_version.clone_from(&e.replaced);
                }
                Some(std::cmp::Ordering::Less) => {}
                Some(std::cmp::Ordering::Equal) | None => {
                    let mut edges: Vec<crate::object::ObjectKey> = held.depends_on.to_vec();
                    for d in object.depends_on.iter() {
                        if !edges.contains(d) {
                            edges.push(d.clone());
                        }
                    }
                    held.depends_on = edges.into_boxed_slice();
                }
            },
        }
    }
    for (_, (object, replaced)) in by_key {
        state.admit_recorded(Arc::new(object), replaced, now);
    }
}

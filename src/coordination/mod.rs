//! Decisions that hold across replicas: a shared record of recent admissions, serialised by the
//! API server.
//!
//! Each replica decides on its own watch cache. Before it answers `allowed` to a real request
//! that adds an edge, it adds the admission to one shared record (annotations of a Lease in its
//! own namespace, [`RECORD_NAME`]) with a merge patch, and reads the record as stored in the
//! answer. The API server applies patches to one object one at a time, so of two concurrent
//! admissions the one written later finds the earlier one in the record it gets back, and is
//! judged again with it in view (and taken back out of the record if now denied); the earlier
//! one was judged with everything written before it. The two halves of a cycle cannot both be
//! admitted, whichever replicas they reach.
//!
//! Why a merge patch and not a compare-and-swap on the `resourceVersion`: replicas writing
//! back to back to one key with compare-and-swap starve each other (the replica whose write
//! just succeeded holds the current version, the other one's next write is already stale by
//! the time its turn comes); `benches/replicas.rs` measured conflicts on half the writes and
//! requests denied after eight conflicts in a row. Each admission and each replica has its own
//! annotation key, so patches never undo each other, and the API server retries its own
//! internal conflicts.
//!
//! [`record`] is the record as data (pure); [`RecordStore`] is where it lives, a trait so that
//! tests and benchmarks can supply their own; [`LeaseStore`] is the API server. The batching
//! writer is [`crate::admission::Webhook::review`]'s last step.

pub mod record;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::object::FluxObject;
pub use record::{Changes, Entry, Record};

/// Name of the Lease holding the record, in fluxgate's namespace.
pub const RECORD_NAME: &str = "fluxgate-decisions";

/// How long one write (or read) of the record may take before the requests waiting on it are
/// denied: with the review's other waits, well inside the API server's 5 s webhook timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a write answered with a conflict (the API server gave up its own retries)
/// is tried before the requests are denied.
pub const MAX_ATTEMPTS: usize = 4;

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The API server could not apply the write for concurrent ones.
    #[error("concurrent writes to the record")]
    Conflict,
    /// RBAC does not allow the write.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Anything else: the API server is unreachable, overloaded, or answered an error.
    #[error("{0}")]
    Failed(String),
}

impl WriteError {
    /// The metric label of the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::Conflict => "conflict",
            WriteError::Forbidden(_) => "forbidden",
            WriteError::Failed(_) => "error",
        }
    }
}

/// Where the record lives. Writes to it must be applied one after another, each on the
/// record as the previous one left it, and answer with the record as stored after it.
pub trait RecordStore: Send + Sync {
    /// Applies `changes` and returns the record as stored afterwards.
    fn patch<'a>(&'a self, changes: &'a Changes) -> BoxFuture<'a, Result<Record, WriteError>>;
}

/// The record in the annotations of a `coordination.k8s.io` Lease of fluxgate's namespace: an
/// object every cluster has, whose RBAC can name it alone.
pub struct LeaseStore {
    api: Api<Lease>,
}

impl LeaseStore {
    pub fn new(client: kube::Client, namespace: &str) -> LeaseStore {
        LeaseStore { api: Api::namespaced(client, namespace) }
    }
}

fn kube_error(e: kube::Error) -> WriteError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict,
        kube::Error::Api(s) if s.code == 403 => WriteError::Forbidden(s.message.clone()),
        _ => WriteError::Failed(e.to_string()),
    }
}

fn record_of(lease: &Lease) -> Record {
    Record::from_annotations(lease.metadata.annotations.iter().flatten())
}

impl RecordStore for LeaseStore {
    fn patch<'a>(&'a self, changes: &'a Changes) -> BoxFuture<'a, Result<Record, WriteError>> {
        Box::pin(async move {
            let patch = Patch::Merge(serde_json::json!({ "metadata": { "annotations": changes } }));
            match self.api.patch(RECORD_NAME, &PatchParams::default(), &patch).await {
                Ok(lease) => return Ok(record_of(&lease)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_error(e)),
            }
            // The first write of the record creates it; another replica creating it at the same
            // moment makes this one patch after all.
            let annotations = changes.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(RECORD_NAME.into()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            match self.api.create(&PostParams::default(), &lease).await {
                Ok(lease) => Ok(record_of(&lease)),
                Err(kube::Error::Api(s)) if s.code == 409 => self
                    .api
                    .patch(RECORD_NAME, &PatchParams::default(), &patch)
                    .await
                    .map(|lease| record_of(&lease))
                    .map_err(kube_error),
                Err(e) => Err(kube_error(e)),
            }
        })
    }
}

/// Counters of the coordination, for `/metrics` and `/report`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful writes of the record.
    pub writes: AtomicU64,
    /// Admissions those writes carried (more than `writes` when decisions share a write).
    pub recorded: AtomicU64,
    /// Writes refused because another replica wrote first.
    pub conflicts: AtomicU64,
    /// Batches judged again and written again after a conflict.
    pub retries: AtomicU64,
    /// Requests denied because the record could not be written, by [`Failure`].
    pub failures: [AtomicU64; 4],
    /// Requests that were allowed on the cache alone but denied once other replicas'
    /// admissions were in view.
    pub rejudged_denials: AtomicU64,
    /// Entries in the record after the last write or read.
    pub entries: AtomicU64,
    /// Replicas that wrote the record recently, as of the last write or read.
    pub replicas: AtomicU64,
}

/// Why the record could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Forbidden,
    /// Conflicts on every attempt.
    Conflict,
    /// Any other error, or a full record.
    Error,
}

impl Failure {
    pub const ALL: [Failure; 4] = [Failure::Timeout, Failure::Forbidden, Failure::Conflict, Failure::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Forbidden => "forbidden",
            Failure::Conflict => "conflict",
            Failure::Error => "error",
        }
    }
}

impl Stats {
    pub fn failed(&self, failure: Failure, requests: usize) {
        self.failures[failure as usize].fetch_add(requests as u64, Ordering::Relaxed);
    }

    pub fn failures(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Ordering::Relaxed)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// At most this many refuted admissions are remembered (see [`Refuted`]).
const MAX_REFUTED: usize = 256;

/// Admissions of the record that the API server was found not to hold after they would have
/// been stored: forged reviews or requests a later step rejected. They do not come back into
/// this replica's view from the record, and this replica's next write drops them.
#[derive(Debug, Default)]
pub struct Refuted(Mutex<VecDeque<FluxObject>>);

impl Refuted {
    pub fn add(&self, object: FluxObject) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == MAX_REFUTED {
            list.pop_front();
        }
        list.push_back(object);
    }

    pub fn contains(&self, object: &FluxObject) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|r| record::same_edges(r, object))
    }
}

/// A store in this process's memory, applying patches one at a time: for tests, benchmarks,
/// and replicas simulated in one process. `latency` is added to every write, one write at a
/// time, as etcd serialises the writes of one key.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: tokio::sync::Mutex<Record>,
    latency: Duration,
}

impl MemoryStore {
    pub fn with_latency(latency: Duration) -> MemoryStore {
        MemoryStore { latency, ..MemoryStore::default() }
    }

    /// The record as stored now.
    pub async fn record(&self) -> Record {
        self.state.lock().await.clone()
    }
}

impl RecordStore for MemoryStore {
    fn patch<'a>(&'a self, changes: &'a Changes) -> BoxFuture<'a, Result<Record, WriteError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            state.apply(changes);
            Ok(state.clone())
        })
    }
}

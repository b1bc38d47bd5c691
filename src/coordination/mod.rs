//! Decisions that hold across replicas: a shared record of recent admissions, serialised by the
//! API server.
//!
//! Each replica decides on its own watch cache. Before it answers `allowed` to a real request
//! that adds an edge, it writes the admission into one shared record (a Lease in its own
//! namespace, [`RECORD_NAME`]) with the `resourceVersion` it last read as a precondition. A
//! conflict (409) means another replica wrote meanwhile: the record is read again, its entries
//! join the cache's overlay, and the requests are judged again before the next try. So of two
//! concurrent admissions the later one is always judged with the earlier one in view: the two
//! halves of a cycle cannot both be admitted, whichever replicas they reach.
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
use kube::api::{Api, PostParams};

use crate::object::FluxObject;
pub use record::{Entry, Record};

/// Name of the Lease holding the record, in fluxgate's namespace.
pub const RECORD_NAME: &str = "fluxgate-decisions";
/// The Lease annotation holding the record's JSON text.
pub const RECORD_ANNOTATION: &str = "fluxgate.dev/decisions";

/// How long one write (or read) of the record may take before the requests waiting on it are
/// denied: with the review's other waits, well inside the API server's 5 s webhook timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a batch is judged again and written after conflicts before it is denied.
pub const MAX_ATTEMPTS: usize = 8;

/// The record as read, with the version a write must name.
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    pub record: Record,
    /// `None` while the coordination object does not exist (the first write creates it).
    pub version: Option<String>,
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Another replica wrote since the version named.
    #[error("another replica wrote the record first")]
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

/// Where the record lives. Implementations must give the write compare-and-swap semantics:
/// it succeeds only if the stored version is still `version`.
pub trait RecordStore: Send + Sync {
    fn read(&self) -> BoxFuture<'_, Result<Versioned, WriteError>>;

    /// Writes `record` over `version` (`None`: create it); returns the new version.
    fn write<'a>(&'a self, record: &'a Record, version: Option<&'a str>) -> BoxFuture<'a, Result<String, WriteError>>;
}

/// The record in a `coordination.k8s.io` Lease of fluxgate's namespace: an object every
/// cluster has, with optimistic concurrency, and RBAC that can name it alone.
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

impl RecordStore for LeaseStore {
    fn read(&self) -> BoxFuture<'_, Result<Versioned, WriteError>> {
        Box::pin(async move {
            let Some(lease) = self.api.get_opt(RECORD_NAME).await.map_err(kube_error)? else {
                return Ok(Versioned::default());
            };
            let text = lease.metadata.annotations.as_ref().and_then(|a| a.get(RECORD_ANNOTATION));
            Ok(Versioned {
                record: text.map(|t| Record::parse(t)).unwrap_or_default(),
                version: lease.metadata.resource_version,
            })
        })
    }

    fn write<'a>(&'a self, record: &'a Record, version: Option<&'a str>) -> BoxFuture<'a, Result<String, WriteError>> {
        Box::pin(async move {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(RECORD_NAME.into()),
                    resource_version: version.map(str::to_string),
                    annotations: Some([(RECORD_ANNOTATION.to_string(), record.to_text())].into()),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            let written = match version {
                // A create of an object that exists answers 409 AlreadyExists: the same as a
                // stale version, read again.
                None => self.api.create(&PostParams::default(), &lease).await,
                Some(_) => self.api.replace(RECORD_NAME, &PostParams::default(), &lease).await,
            }
            .map_err(kube_error)?;
            Ok(written.metadata.resource_version.unwrap_or_default())
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

/// A store in this process's memory with the same compare-and-swap: for tests, benchmarks,
/// and replicas simulated in one process. `latency` is added to every write, one write at a
/// time, as etcd serialises the writes of one key.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: tokio::sync::Mutex<(Record, u64)>,
    latency: Duration,
}

impl MemoryStore {
    pub fn with_latency(latency: Duration) -> MemoryStore {
        MemoryStore { latency, ..MemoryStore::default() }
    }

    /// The record as stored now.
    pub async fn record(&self) -> Record {
        self.state.lock().await.0.clone()
    }
}

impl RecordStore for MemoryStore {
    fn read(&self) -> BoxFuture<'_, Result<Versioned, WriteError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            Ok(Versioned { record: state.0.clone(), version: (state.1 > 0).then(|| state.1.to_string()) })
        })
    }

    fn write<'a>(&'a self, record: &'a Record, version: Option<&'a str>) -> BoxFuture<'a, Result<String, WriteError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let current = (state.1 > 0).then(|| state.1.to_string());
            if current.as_deref() != version {
                return Err(WriteError::Conflict);
            }
            state.0 = record.clone();
            state.1 += 1;
            Ok(state.1.to_string())
        })
    }
}

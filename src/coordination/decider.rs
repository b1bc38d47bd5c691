//! Which replica decides: an election on one Lease ([`DECIDER_LEASE`]), as client-go's leader
//! election does it, with the deciding replica's address for the others to forward to.
//!
//! The holder renews the Lease every [`Timing::retry`] and counts itself the decider only until
//! [`Timing::renew_deadline`] after the start of its last successful renewal. Another replica
//! takes the Lease only when it saw it released, or saw the same `resourceVersion` for a whole
//! [`Timing::lease`] by its own clock: since the deadline is shorter than the lease, the old
//! holder has stopped deciding before a new one starts, whatever the clocks of the two nodes say
//! (only their rates must roughly agree). Writes are compare-and-swaps on the `resourceVersion`,
//! so of two replicas taking the Lease at once one wins.
//!
//! A replica that takes the Lease does not decide at once: what the previous decider admitted
//! may be on its way to storage or to this replica's watch. It first waits until the previous
//! decider's admissions are stored ([`crate::admission::STORE_WITHIN`]) and brings what the API
//! server then holds into view (the `catch_up` given to [`Election::run`]); only then is it
//! [`Role::Deciding`] and ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Name of the Lease whose holder decides, in fluxgate's namespace.
pub const DECIDER_LEASE: &str = "fluxgate-decider";

/// Annotation of the Lease: where the holder takes forwarded reviews (`host:port`).
pub const ADDRESS_ANNOTATION: &str = "fluxgate.dev/decider-address";

/// The election's clock.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a Lease not renewed stays the holder's (`spec.leaseDurationSeconds`).
    pub lease: Duration,
    /// How long after the start of its last successful renewal the holder still decides.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed, or looked at by the others.
    pub retry: Duration,
}

impl Default for Timing {
    /// client-go's defaults, but a shorter retry: a replica waits for a new decider after a
    /// release (a rollout) for about this long.
    fn default() -> Timing {
        Timing {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(1),
        }
    }
}

/// This replica's part in deciding edge-adding admissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No decider is known: the Lease cannot be read, or it is free and not taken yet.
    Unknown,
    /// `holder` decides; edge-adding admissions are forwarded to `address`.
    Following { holder: String, address: String },
    /// This replica holds the Lease until `until`; `ready` once it has caught up with what the
    /// previous decider admitted. `term` counts the times this replica took the Lease.
    Deciding { until: Instant, ready: bool, term: u64 },
}

impl Role {
    /// Whether this replica decides edge-adding admissions now.
    pub fn decides_now(&self) -> bool {
        matches!(self, Role::Deciding { until, ready: true, .. } if Instant::now() < *until)
    }
}

/// The deciding replica's part in a [`crate::admission::Webhook`]: the election, and how to
/// reach the decider when it is another replica.
pub struct Decider {
    pub election: Arc<Election>,
    pub forward: Arc<dyn Forward>,
}

/// Counters of the election and the forwarding, for `/metrics` and `/report`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Times this replica took the Lease.
    pub acquired: AtomicU64,
    /// Edge-adding admissions decided here as the decider.
    pub decided: AtomicU64,
    /// Reviews forwarded to the decider, and answered by it.
    pub forwarded: AtomicU64,
    /// Edge-adding requests denied because no decider could decide them, by [`Failure`].
    pub failures: [AtomicU64; 3],
}

/// Why an edge-adding request could not be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No replica held the Lease, or the one taking it had not caught up, in time.
    NoDecider,
    /// The decider did not answer, or its answer could not be read.
    Unreachable,
    /// A forwarded review reached a replica that no longer decides.
    Moved,
}

impl Failure {
    pub const ALL: [Failure; 3] = [Failure::NoDecider, Failure::Unreachable, Failure::Moved];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoDecider => "no_decider",
            Failure::Unreachable => "unreachable",
            Failure::Moved => "moved",
        }
    }
}

impl Stats {
    pub fn failed(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Ordering::Relaxed)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// How long one forwarded review may take, connecting included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a review to the deciding replica: its bytes in, the AdmissionReview it answered out.
/// A trait so that the election does not depend on the HTTP client (`server::peer`).
pub trait Forward: Send + Sync {
    fn forward<'a>(&'a self, address: &'a str, review: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// One replica's side of the election.
pub struct Election {
    api: Api<Lease>,
    identity: String,
    address: String,
    timing: Timing,
    role: watch::Sender<Role>,
    terms: AtomicU64,
    /// Set by [`Election::release`]: this replica never decides again (it follows).
    stopped: std::sync::atomic::AtomicBool,
    /// Replicas that forwarded reviews here, and when they last did.
    forwarders: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub stats: Stats,
}

/// A replica counts as taking part in decisions for this long after it last forwarded one.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(300);

/// Tries to release the Lease on shutdown.
const RELEASE_ATTEMPTS: usize = 4;

/// At most this many forwarding replicas are remembered.
const MAX_FORWARDERS: usize = 64;

/// The Lease as last seen, and since when (this replica's clock).
struct Seen {
    version: String,
    since: Instant,
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn address_of(lease: &Lease) -> String {
    lease.metadata.annotations.as_ref().and_then(|a| a.get(ADDRESS_ANNOTATION)).cloned().unwrap_or_default()
}

impl Election {
    /// `identity` is the pod's name, `address` where its webhook port is reached by the other
    /// replicas (`POD_IP:port`).
    pub fn new(client: kube::Client, namespace: &str, identity: &str, address: &str, timing: Timing) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            address: address.to_string(),
            timing,
            role: watch::Sender::new(Role::Unknown),
            terms: AtomicU64::new(0),
            stopped: std::sync::atomic::AtomicBool::new(false),
            forwarders: std::sync::Mutex::default(),
            stats: Stats::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The term in which this replica decides now, if it does. An admission judged between two
    /// readings of the same term was judged by the decider, caught up, throughout: within a
    /// term, readiness is never lost and the deadline only moves on.
    pub fn deciding_term(&self) -> Option<u64> {
        match &*self.role.borrow() {
            r @ Role::Deciding { term, .. } if r.decides_now() => Some(*term),
            _ => None,
        }
    }

    /// Notes that `replica` forwarded a review here.
    pub fn forwarded_from(&self, replica: &str) {
        let mut seen = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < ACTIVE_WINDOW);
        // Anyone who reaches the port can send the header: the names kept are bounded.
        if seen.len() < MAX_FORWARDERS || seen.contains_key(replica) {
            seen.insert(replica.to_string(), now);
        }
    }

    /// The replica deciding, as this one knows it.
    pub fn decider(&self) -> Option<String> {
        match self.role() {
            Role::Deciding { .. } => Some(self.identity.clone()),
            Role::Following { holder, .. } => Some(holder),
            Role::Unknown => None,
        }
    }

    /// On the decider: the replicas that took part in decisions recently (itself, and those
    /// that forwarded reviews to it within [`ACTIVE_WINDOW`]). Elsewhere 0: the decider knows.
    pub fn taking_part(&self) -> usize {
        if !matches!(self.role(), Role::Deciding { .. }) {
            return 0;
        }
        let now = std::time::Instant::now();
        let seen = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        1 + seen.iter().filter(|(r, at)| **r != self.identity && now.duration_since(**at) < ACTIVE_WINDOW).count()
    }

    /// Waits until the role is one `ready` accepts, or `within` passes; returns the role then.
    pub async fn wait_for(&self, within: Duration, ready: impl Fn(&Role) -> bool) -> Role {
        let mut rx = self.role.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|r| ready(r))).await;
        self.role()
    }

    /// Starts a new term: this replica holds the Lease until `until` and catches up first.
    fn begin_term(&self, until: Instant) {
        let term = self.terms.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(Role::Deciding { until, ready: false, term });
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn set(&self, role: Role) {
        self.role.send_if_modified(|r| {
            // Checked under the role's lock: a round that ends after a release cannot make this
            // replica decide again.
            if *r == role || (self.stopped() && matches!(role, Role::Deciding { .. })) {
                return false;
            }
            match (&*r, &role) {
                (Role::Deciding { .. }, Role::Deciding { .. }) => {}
                (_, Role::Deciding { .. }) => tracing::info!(identity = %self.identity, "this replica decides now"),
                (Role::Deciding { .. }, _) => {
                    tracing::info!(identity = %self.identity, "this replica no longer decides")
                }
                (_, Role::Following { holder, .. }) => tracing::info!(decider = %holder, "another replica decides"),
                _ => {}
            }
            *r = role;
            true
        });
    }

    fn lease(&self, now: Timestamp, previous: Option<&Lease>) -> Lease {
        let duration = i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let mut lease = previous.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta { name: Some(DECIDER_LEASE.into()), ..ObjectMeta::default() },
            spec: None,
        });
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ADDRESS_ANNOTATION.into(), self.address.clone());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(previous.is_some()));
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration);
        lease
    }

    /// Writes `lease` (a create when there was none); `Ok(false)` when another write came first.
    async fn write(&self, lease: &Lease, create: bool) -> Result<bool, kube::Error> {
        let written = if create {
            self.api.create(&PostParams::default(), lease).await
        } else {
            self.api.replace(DECIDER_LEASE, &PostParams::default(), lease).await
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One round: renews the Lease when held, takes it when free or expired, follows otherwise.
    /// Returns `true` when this round took the Lease (the caller catches up before deciding).
    async fn round(&self, seen: &mut Option<Seen>) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let current = self.api.get_opt(DECIDER_LEASE).await?;
        if self.stopped() {
            // Released: it never takes the Lease again, but still forwards to whoever decides
            // (the API server goes on calling a pod that is shutting down for a moment).
            let role = match current.as_ref().and_then(|l| holder(l).map(|h| (h.to_string(), address_of(l)))) {
                Some((holder, address)) if holder != self.identity => Role::Following { holder, address },
                _ => Role::Unknown,
            };
            self.set(role);
            return Ok(false);
        }
        let Some(current) = current else {
            let taken = self.write(&self.lease(Timestamp::now(), None), true).await?;
            if taken {
                self.begin_term(started + self.timing.renew_deadline);
            }
            return Ok(taken);
        };
        let version = current.metadata.resource_version.clone().unwrap_or_default();
        match holder(&current) {
            Some(h) if h == self.identity => {
                // Renewing; a holder that lost its Lease meanwhile finds the write refused.
                if !self.write(&self.lease(Timestamp::now(), Some(&current)), false).await? {
                    return Ok(false);
                }
                let until = started + self.timing.renew_deadline;
                let extended = self.role.send_if_modified(|r| match r {
                    Role::Deciding { until: u, .. } if !self.stopped() => {
                        *u = until;
                        true
                    }
                    _ => false,
                });
                if extended || self.stopped() {
                    return Ok(false);
                }
                // Held under this name but not deciding here (past its deadline, or a restarted
                // pod of the same name): whatever was admitted meanwhile is caught up with first.
                self.begin_term(until);
                Ok(true)
            }
            other => {
                if seen.as_ref().is_none_or(|s| s.version != version) {
                    *seen = Some(Seen { version, since: started });
                }
                let expired = seen.as_ref().is_some_and(|s| started.duration_since(s.since) >= self.timing.lease);
                if other.is_none() || expired {
                    let taken = self.write(&self.lease(Timestamp::now(), Some(&current)), false).await?;
                    if taken {
                        self.begin_term(started + self.timing.renew_deadline);
                        return Ok(true);
                    }
                    return Ok(false);
                }
                self.set(Role::Following {
                    holder: other.unwrap_or_default().to_string(),
                    address: address_of(&current),
                });
                Ok(false)
            }
        }
    }

    /// Takes part in the election until the task is dropped. Each time this replica takes the
    /// Lease, `catch_up` runs before it decides (see the module's documentation).
    pub async fn run<F>(self: Arc<Self>, catch_up: F)
    where
        F: Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        let catch_up = Arc::new(catch_up);
        let mut seen = None;
        let mut catching: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            // A round the API server leaves unanswered must not stop the loop: past its deadline
            // the holder steps down below, and the next round tries again.
            let round = tokio::time::timeout(self.timing.renew_deadline / 2, self.round(&mut seen)).await;
            let round = round.unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())));
            match round {
                Ok(true) => {
                    self.stats.acquired.fetch_add(1, Ordering::Relaxed);
                    if let Some(task) = catching.take() {
                        task.abort();
                    }
                    let term = match self.role() {
                        Role::Deciding { term, .. } => term,
                        _ => 0,
                    };
                    let (this, catch_up) = (self.clone(), catch_up.clone());
                    catching = Some(tokio::spawn(async move {
                        catch_up().await;
                        this.role.send_if_modified(|r| match r {
                            Role::Deciding { ready, term: t, .. } if !*ready && *t == term => {
                                *ready = true;
                                true
                            }
                            _ => false,
                        });
                        tracing::info!(identity = %this.identity, "caught up with the previous decider; deciding");
                    }));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read or renew the decider Lease");
                    if !matches!(self.role(), Role::Deciding { .. }) {
                        self.set(Role::Unknown);
                    }
                }
            }
            // Past its deadline, a holder no longer decides, whether or not the API server answered.
            if let Role::Deciding { until, .. } = self.role()
                && Instant::now() >= until
            {
                self.set(Role::Unknown);
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Stops deciding and gives the Lease up (on shutdown), so that another replica takes it
    /// at its next look instead of after the lease duration. From then on this replica only
    /// follows: reviews still reaching it are forwarded to the new decider.
    pub async fn release(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.set(Role::Unknown);
        // A renewal already on its way when the release began can land first and make the
        // release's write a conflict: read again and release what that renewal left.
        for _ in 0..RELEASE_ATTEMPTS {
            let mut lease = match self.api.get_opt(DECIDER_LEASE).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the decider Lease to release it");
                    continue;
                }
            };
            if holder(&lease) != Some(self.identity.as_str()) {
                return;
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            match self.write(&lease, false).await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "decider Lease released");
                    return;
                }
                Ok(false) => continue,
                Err(e) => tracing::warn!(error = %e, "cannot release the decider Lease"),
            }
        }
        tracing::warn!("the decider Lease was not released; another replica takes it when it expires");
    }
}

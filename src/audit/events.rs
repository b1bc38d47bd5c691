//! Audit findings as Kubernetes Events, posted by one replica at a time.
//!
//! Webhook warnings never reach a Kustomization's status or events, so the audit also posts
//! Warning Events (`DependencyCycle`, `DependencyMissing`) on the offending objects, where
//! `kubectl describe` and event-based alerting see them. The replicas elect a poster with a
//! `coordination.k8s.io` Lease; the holder renews it, and another replica takes over once it has
//! not been renewed for its duration. A finding is posted once while it lasts: an unchanged
//! finding is not posted again, one that went away and came back is. Events are aggregated
//! per object and rule and carry the object's uid (`regarding.uid`), without which
//! `kubectl describe` does not show them.
//!
//! The same replica posts `DependencyBlocked` on objects that have waited for a dependency longer
//! than `--blocked-after`, once per distinct root cause.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use super::Report;
use crate::object::{FluxKind, ObjectKey};
use crate::policy::Rule;
use crate::status::{Cause, ObjectReport, Root, State, StatusReport};

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "fluxgate-audit";
/// `reportingController` of the posted Events.
pub const REPORTING_CONTROLLER: &str = "fluxgate.dev/audit";

type Posted = (Rule, FluxKind, ObjectKey, String);

/// A blocked object and one of its root causes: posted once while it lasts.
type Blocked = (FluxKind, ObjectKey, ObjectKey, Cause);

/// How long an object waits for a dependency before a `DependencyBlocked` Event names its root
/// causes, unless `--blocked-after` says otherwise.
pub const DEFAULT_BLOCKED_AFTER: Duration = Duration::from_secs(600);

/// Posts audit findings as Events while this replica holds the Lease.
pub struct Publisher {
    client: kube::Client,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    leader: AtomicBool,
    posted: Mutex<HashSet<Posted>>,
    blocked_after: Duration,
    blocked: Mutex<HashSet<Blocked>>,
}

/// The Event reason for a rule, for the rules that post Events.
fn reason(rule: Rule) -> Option<&'static str> {
    match rule {
        Rule::Cycle => Some("DependencyCycle"),
        Rule::DanglingDependsOn => Some("DependencyMissing"),
        _ => None,
    }
}

fn api_version(kind: FluxKind) -> &'static str {
    match kind {
        FluxKind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
        FluxKind::HelmRelease => "helm.toolkit.fluxcd.io/v2",
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Publisher {
    /// A publisher competing for the Lease in `namespace` as `identity` (the pod name).
    pub fn new(client: kube::Client, namespace: &str, identity: &str, lease_duration: Duration) -> Publisher {
        Publisher {
            client,
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration,
            leader: AtomicBool::new(false),
            posted: Mutex::default(),
            blocked_after: DEFAULT_BLOCKED_AFTER,
            blocked: Mutex::default(),
        }
    }

    /// Sets how long an object waits before `DependencyBlocked` Events name its root causes.
    pub fn with_blocked_after(self, blocked_after: Duration) -> Publisher {
        Publisher { blocked_after, ..self }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Takes the Lease if it is free or expired, renews it if held; returns whether this
    /// replica holds it now. A conflicting write by another replica means it does not.
    pub async fn acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let now = Timestamp::now();
        let duration = i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let held = match api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..ObjectMeta::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => true,
                    Err(e) if is_status(&e, 409) => false,
                    Err(e) => return Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let held_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(duration)));
                let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + held_for < now);
                if mine || expired || spec.holder_identity.is_none() {
                    if !mine {
                        spec.holder_identity = Some(self.identity.clone());
                        spec.acquire_time = Some(MicroTime(now));
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                    spec.renew_time = Some(MicroTime(now));
                    spec.lease_duration_seconds = Some(duration);
                    // The resourceVersion read above makes this a compare-and-swap.
                    match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                        Ok(_) => true,
                        Err(e) if is_status(&e, 409) => false,
                        Err(e) => return Err(e),
                    }
                } else {
                    false
                }
            }
        };
        let was = self.leader.swap(held, Ordering::Relaxed);
        if was != held {
            tracing::info!(identity = %self.identity, leader = held, "audit Event poster changed");
            if !held {
                self.posted.lock().unwrap_or_else(|p| p.into_inner()).clear();
                self.blocked.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
        Ok(held)
    }

    /// Renews the Lease every third of its duration until the task is dropped.
    pub async fn run_lease(&self) {
        let every = (self.lease_duration / 3).max(Duration::from_millis(100));
        loop {
            if let Err(e) = self.acquire_or_renew().await {
                tracing::warn!(error = %e, "cannot renew the audit Lease");
                self.leader.store(false, Ordering::Relaxed);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Posts an Event for each object and rule with findings not posted yet (every member of a
    /// cycle is an offending object), when this replica holds the Lease. The findings of one
    /// rule on one object (a dangling target each, several cycles) make one Event, so an object
    /// naming a thousand missing targets gets one Event, not a thousand. Returns how many were
    /// posted.
    pub async fn publish(&self, report: &Report) -> usize {
        if !self.is_leader() {
            return 0;
        }
        let mut order: Vec<(Rule, FluxKind, ObjectKey)> = Vec::new();
        let mut notes: HashMap<(Rule, FluxKind, ObjectKey), Vec<&str>> = HashMap::new();
        for f in &report.findings {
            // Events go on the guarded objects the watch knows.
            let (Some(_), Some(kind)) = (reason(f.rule), f.kind.flux()) else { continue };
            let mut objects = vec![&f.object];
            for member in f.cycle.iter().flatten() {
                if !objects.contains(&member) {
                    objects.push(member);
                }
            }
            for object in objects {
                let key = (f.rule, kind, object.clone());
                let messages = notes.entry(key.clone()).or_default();
                if messages.is_empty() {
                    order.push(key);
                }
                if !messages.contains(&f.message.as_str()) {
                    messages.push(&f.message);
                }
            }
        }
        let wanted: Vec<Posted> = order
            .into_iter()
            .map(|key| {
                let note = notes[&key].join("; ");
                (key.0, key.1, key.2, note)
            })
            .collect();
        let new: Vec<Posted> = {
            let mut posted = self.posted.lock().unwrap_or_else(|p| p.into_inner());
            let current: HashSet<&Posted> = wanted.iter().collect();
            posted.retain(|id| current.contains(id));
            wanted.iter().filter(|id| !posted.contains(*id)).cloned().collect()
        };
        let mut count = 0;
        for id in new {
            let uid = report.uids.get(&(id.1, id.2.clone())).cloned();
            match self.post(&id, uid).await {
                Ok(()) => {
                    count += 1;
                    self.posted.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                }
                Err(e) => tracing::warn!(object = %id.2, error = %e, "cannot post an audit Event; will retry"),
            }
        }
        count
    }

    /// Posts a `DependencyBlocked` Warning Event on each object that has been waiting (its
    /// `Ready` condition at `DependencyNotReady` since its `lastTransitionTime`) longer than the
    /// blocked-after time, once per distinct root cause while it lasts, naming the root, its cause,
    /// the chain and the root's message. Only while this replica holds the Lease. An object
    /// without a transition time is left out: how long it has waited is not known. Returns how
    /// many were posted.
    pub async fn publish_blocked(&self, report: &StatusReport, now: Timestamp) -> usize {
        if !self.is_leader() {
            return 0;
        }
        let blocked_after = SignedDuration::try_from(self.blocked_after).unwrap_or(SignedDuration::MAX);
        let mut wanted: Vec<(Blocked, &ObjectReport, &Root)> = Vec::new();
        for k in &report.kinds {
            for o in k.objects.iter().filter(|o| o.state == State::Waiting) {
                let since = o.since.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
                if since.is_none_or(|t| now.duration_since(t) < blocked_after) {
                    continue;
                }
                for r in &o.roots {
                    wanted.push(((k.kind, o.id.clone(), r.id.clone(), r.cause), o, r));
                }
            }
        }
        let new: Vec<(Blocked, &ObjectReport, &Root)> = {
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            let current: HashSet<&Blocked> = wanted.iter().map(|(id, _, _)| id).collect();
            blocked.retain(|id| current.contains(id));
            wanted.into_iter().filter(|(id, _, _)| !blocked.contains(id)).collect()
        };
        let mut count = 0;
        for (id, object, root) in new {
            let mut note = format!(
                "waiting for {} ({}) since {}: {}",
                root.id,
                root.cause.as_str(),
                object.since.as_deref().unwrap_or_default(),
                crate::status::format_chain(&root.chain)
            );
            if let Some(cycle) = &root.cycle {
                let cycle: Vec<String> = cycle.iter().map(ObjectKey::to_string).collect();
                note.push_str(&format!("; cycle: {}", cycle.join(" -> ")));
            }
            if let Some(message) = &root.message {
                note.push_str(&format!("; {}: {message}", root.id));
            }
            let event = (id.0, &object.id, "DependencyBlocked", "Blocked", note.as_str());
            match self.post_event(event, object.uid.clone()).await {
                Ok(()) => {
                    count += 1;
                    self.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                }
                Err(e) => {
                    tracing::warn!(object = %object.id, error = %e, "cannot post a DependencyBlocked Event; will retry")
                }
            }
        }
        count
    }

    async fn post(&self, (rule, kind, object, message): &Posted, uid: Option<String>) -> Result<(), kube::Error> {
        let reason = reason(*rule).unwrap_or_default();
        self.post_event((*kind, object, reason, "Audit", message), uid).await
    }

    /// Posts one Warning Event about `object`: (kind, object, reason, action, note).
    async fn post_event(
        &self,
        (kind, object, reason, action, message): (FluxKind, &ObjectKey, &str, &str, &str),
        uid: Option<String>,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &object.namespace);
        // An Event note holds at most 1 kB.
        let note: String = message.chars().take(1024).collect();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&object.name, now.as_nanosecond())),
                namespace: Some(object.namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.identity.clone()),
            action: Some(action.into()),
            reason: Some(reason.into()),
            type_: Some("Warning".into()),
            note: Some(note),
            regarding: Some(ObjectReference {
                api_version: Some(api_version(kind).into()),
                kind: Some(kind.as_str().into()),
                name: Some(object.name.to_string()),
                namespace: Some(object.namespace.to_string()),
                uid,
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// Longest name of an object (a DNS subdomain).
const MAX_NAME: usize = 253;

/// A unique Event name for an object: its name, cut so that the name and the time suffix fit
/// in 253 characters (an object's own name may use all 253), and still a DNS subdomain.
/// Event names are never looked up, only listed by object, so the cut loses nothing.
pub(crate) fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!("{:x}", nanos.unsigned_abs());
    let room = MAX_NAME - 1 - suffix.len();
    let cut = object.char_indices().nth(room).map_or(object, |(i, _)| &object[..i]);
    let base = cut.trim_end_matches(['.', '-']);
    format!("{base}.{suffix}")
}

/// This pod's identity and namespace: the downward API's `POD_NAME`/`POD_NAMESPACE`, else the
/// hostname and the service account's namespace file, else `fluxgate-system`.
pub fn pod_identity() -> (String, String) {
    let name = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("fluxgate-{}", std::process::id()));
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fluxgate-system".to_string());
    (name, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_fit_whatever_the_object_name() {
        let now = Timestamp::now().as_nanosecond();
        assert!(event_name("web", now).starts_with("web."));
        let long = format!("{}-{}", "a".repeat(240), "b".repeat(12));
        assert_eq!(long.len(), 253);
        let name = event_name(&long, now);
        assert!(name.len() <= MAX_NAME, "{}", name.len());
        // A cut that lands on a separator drops it: a name part cannot end in '-' or '.'.
        let dashed = format!("{}-{}", "a".repeat(MAX_NAME - 2 - 16), "b".repeat(20));
        let name = event_name(&dashed, i128::from(u64::MAX));
        assert!(!name.contains("-."), "{name}");
    }
}

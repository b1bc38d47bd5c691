//! Prometheus metrics, served on the admin port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    pub kind: String,
    pub operation: &'static str,
    /// `allowed`, `denied`, `warned`, `mutated` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub kind: &'static str,
    pub rule: &'static str,
}

/// Upper bounds of the decision time histogram, in seconds: 1-2.5-5 steps from 10 µs to 1 s.
/// Decisions take micro-seconds; the upper buckets show lock waits and a busy machine. Written
/// out rather than computed so that the `le` labels read as the round numbers they are.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub kind: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub kind: &'static str,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `no_decider`, `unreachable` or `moved` (see [`crate::coordination::decider::Failure`]).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    /// `evicted`, `refused` or `unstored` (see [`crate::cache::Dropped`]).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookStateLabels {
    pub webhook: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

/// Every metric fluxgate exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Histogram,
    pub graph_objects: Family<KindLabels, Gauge>,
    pub violations: Family<ViolationLabels, Gauge>,
    pub cache_ready: Gauge,
    pub watch_current: Family<KindLabels, Gauge>,
    pub relists_in_progress: Family<KindLabels, Gauge>,
    pub last_seen_age: Family<KindLabels, Gauge<f64, AtomicU64>>,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    pub objects: Family<StateLabels, Gauge>,
    pub blocked: Family<KindLabels, Gauge>,
    pub root_causes: Family<CauseLabels, Gauge>,
    pub pending_admissions: Gauge,
    pub pending_admission_bytes: Gauge,
    pub pending_dropped: Family<DroppedLabels, Counter>,
    pub webhook_config_state: Family<WebhookStateLabels, Gauge>,
    pub webhook_skipped_needs: Family<WebhookLabels, Gauge>,
    pub coordination_decider: Gauge,
    pub coordination_acquired: Counter,
    pub coordination_decided: Counter,
    pub coordination_forwarded: Counter,
    pub coordination_failures: Family<FailureLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fluxgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("admission_requests", "Admission requests answered", requests.clone());
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register("admission_duration_seconds", "Time to decide an admission request", duration.clone());
        let graph_objects = Family::<KindLabels, Gauge>::default();
        registry.register("graph_objects", "Objects in the dependsOn graph", graph_objects.clone());
        let violations = Family::<ViolationLabels, Gauge>::default();
        registry.register("violations", "Findings of the last audit", violations.clone());
        let cache_ready = Gauge::default();
        registry.register(
            "cache_ready",
            "1 while every kind is listed and its watch is current (what /readyz reports)",
            cache_ready.clone(),
        );
        let watch_current = Family::<KindLabels, Gauge>::default();
        registry.register("watch_current", "1 while the kind's list/watch is current", watch_current.clone());
        let relists_in_progress = Family::<KindLabels, Gauge>::default();
        registry.register(
            "relists_in_progress",
            "1 while a list of the kind is under way",
            relists_in_progress.clone(),
        );
        let last_seen_age = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "watch_last_event_age_seconds",
            "Seconds since the kind's source last delivered a list, an event or a bookmark",
            last_seen_age.clone(),
        );
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Changes of the policy file, put in force or refused",
            policy_reloads.clone(),
        );
        for result in ["success", "failure"] {
            drop(policy_reloads.get_or_create(&ReloadLabels { result }));
        }
        // Counts only: object names would make one series per object.
        let objects = Family::<StateLabels, Gauge>::default();
        registry.register("objects", "Objects by live state", objects.clone());
        let blocked = Family::<KindLabels, Gauge>::default();
        registry.register("blocked_objects", "Objects waiting for a dependency (DependencyNotReady)", blocked.clone());
        let root_causes = Family::<CauseLabels, Gauge>::default();
        registry.register("root_causes", "Distinct objects holding up waiting objects, by cause", root_causes.clone());
        let pending_admissions = Gauge::default();
        registry.register(
            "pending_admissions",
            "Objects admitted by this replica that the watch has not delivered yet",
            pending_admissions.clone(),
        );
        let pending_admission_bytes = Gauge::default();
        registry.register(
            "pending_admission_bytes",
            "Estimated memory held by the pending admissions",
            pending_admission_bytes.clone(),
        );
        let pending_dropped = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "pending_admissions_dropped",
            "Admitted objects dropped before the watch delivered them: evicted (memory bound reached), refused \
             (too large to remember), unstored (the API server did not hold them when asked)",
            pending_dropped.clone(),
        );
        for reason in crate::cache::Dropped::ALL {
            drop(pending_dropped.get_or_create(&DroppedLabels { reason: reason.as_str() }));
        }
        let webhook_config_state = Family::<WebhookStateLabels, Gauge>::default();
        registry.register(
            "webhook_config_state",
            "1 for the state of each webhook configuration: inStep, sends (not written by fluxgate, sends what \
             the policy needs), skips (keeps defaults or rules from taking effect), unknown (cannot be read)",
            webhook_config_state.clone(),
        );
        let webhook_skipped_needs = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_skipped_needs",
            "Defaults and rules of the policy whose requests the registered webhook configuration skips",
            webhook_skipped_needs.clone(),
        );
        let coordination_decider = Gauge::default();
        registry.register(
            "coordination_decider",
            "1 while this replica decides the admissions that add an edge, 0 while another one does",
            coordination_decider.clone(),
        );
        let coordination_acquired = Counter::default();
        registry.register(
            "coordination_acquired",
            "Times this replica took the decider Lease",
            coordination_acquired.clone(),
        );
        let coordination_decided = Counter::default();
        registry.register(
            "coordination_decided",
            "Edge-adding admissions this replica decided as the decider",
            coordination_decided.clone(),
        );
        let coordination_forwarded = Counter::default();
        registry.register(
            "coordination_forwarded",
            "Edge-adding reviews this replica forwarded to the decider and answered with its answer",
            coordination_forwarded.clone(),
        );
        let coordination_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "coordination_failures",
            "Edge-adding requests denied because no replica could decide them",
            coordination_failures.clone(),
        );
        for failure in crate::coordination::decider::Failure::ALL {
            drop(coordination_failures.get_or_create(&FailureLabels { reason: failure.as_str() }));
        }
        Metrics {
            registry,
            requests,
            duration,
            graph_objects,
            violations,
            cache_ready,
            watch_current,
            relists_in_progress,
            last_seen_age,
            policy_reloads,
            objects,
            blocked,
            root_causes,
            pending_admissions,
            pending_admission_bytes,
            pending_dropped,
            webhook_config_state,
            webhook_skipped_needs,
            coordination_decider,
            coordination_acquired,
            coordination_decided,
            coordination_forwarded,
            coordination_failures,
        }
    }

    /// Publishes the election's counters: each moves up to the total it shows. Called with
    /// the cache locked, like [`Metrics::publish_pending`].
    pub fn publish_coordination(&self, election: &crate::coordination::decider::Election) {
        use crate::coordination::decider::{Failure, Stats};
        let stats = &election.stats;
        let catch_up = |counter: &Counter, total: u64| counter.inc_by(total.saturating_sub(counter.get()));
        catch_up(&self.coordination_acquired, Stats::get(&stats.acquired));
        catch_up(&self.coordination_decided, Stats::get(&stats.decided));
        catch_up(&self.coordination_forwarded, Stats::get(&stats.forwarded));
        for failure in Failure::ALL {
            let counter = self.coordination_failures.get_or_create(&FailureLabels { reason: failure.as_str() });
            catch_up(&counter, stats.failures(failure));
        }
        self.coordination_decider.set(i64::from(election.deciding_term().is_some()));
    }

    /// Publishes the overlay's size and drop counts. Called with the cache locked, which also
    /// keeps two scrapes from adding the same drops twice.
    pub fn publish_pending(&self, state: &crate::cache::State) {
        self.pending_admissions.set(state.pending_admissions() as i64);
        self.pending_admission_bytes.set(state.pending_bytes() as i64);
        for reason in crate::cache::Dropped::ALL {
            let counter = self.pending_dropped.get_or_create(&DroppedLabels { reason: reason.as_str() });
            let total = state.dropped(reason);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Publishes the last look at the webhook configurations.
    pub fn publish_webhook_config(&self, state: &crate::webhooks::sync::SyncState) {
        use crate::webhooks::{Hook, sync::Outcome};
        for hook in Hook::ALL {
            let Some(outcome) = state.get(hook) else { continue };
            let webhook = hook.as_str();
            for s in Outcome::STATES {
                self.webhook_config_state
                    .get_or_create(&WebhookStateLabels { webhook, state: s })
                    .set(i64::from(outcome.state() == s));
            }
            let skipped = match &outcome {
                Outcome::Skips { skipped, .. } => skipped.len() as i64,
                _ => 0,
            };
            self.webhook_skipped_needs.get_or_create(&WebhookLabels { webhook }).set(skipped);
        }
    }

    /// Publishes a status report into the state, blocked and root-cause gauges.
    pub fn publish_status(&self, report: &crate::status::StatusReport) {
        use crate::status::{Cause, State};
        for k in &report.kinds {
            let kind = k.kind.as_str();
            let counts = k.counts();
            for state in State::ALL {
                let n = counts.get(&state).copied().unwrap_or(0);
                self.objects.get_or_create(&StateLabels { kind, state: state.as_str() }).set(n as i64);
            }
            self.blocked
                .get_or_create(&KindLabels { kind })
                .set(counts.get(&State::Waiting).copied().unwrap_or(0) as i64);
            let roots: std::collections::HashSet<(&crate::object::ObjectKey, Cause)> =
                k.objects.iter().flat_map(|o| &o.roots).map(|r| (&r.id, r.cause)).collect();
            for cause in Cause::ALL {
                let n = roots.iter().filter(|(_, c)| *c == cause).count();
                self.root_causes.get_or_create(&CauseLabels { kind, cause: cause.as_str() }).set(n as i64);
            }
        }
    }

    /// Counts a reload of the policy file: `loaded` true when the new policy is in force.
    pub fn count_policy_reload(&self, loaded: bool) {
        let result = if loaded { "success" } else { "failure" };
        self.policy_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_are_round_from_10_us_to_1_s() {
        let metrics = Metrics::new();
        metrics.duration.observe(0.0003);
        let text = metrics.encode();
        let bounds: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("fluxgate_admission_duration_seconds_bucket"))
            .map(|l| l.split("le=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"
            ]
        );
        // The observation lands in the bucket that bounds it, and in every one above.
        assert!(text.contains("fluxgate_admission_duration_seconds_bucket{le=\"0.00025\"} 0"), "{text}");
        assert!(text.contains("fluxgate_admission_duration_seconds_bucket{le=\"0.0005\"} 1"), "{text}");
    }
}

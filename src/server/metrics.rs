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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
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
        // From 10 µs to about 0.3 s: decisions are micro-seconds, the tail shows lock waits.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00001, 2.8, 11));
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

//! The periodic audit: scans both graphs whole, keeps the findings for `/report` and the
//! violation gauges, and logs each finding once when it first appears.

pub mod events;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cache::Cache;
use crate::graph::Graph;
use crate::object::{FluxKind, ObjectKey};
use crate::policy::live::LivePolicy;
use crate::policy::{Policy, Rule};
use crate::rules::{self, Finding, FindingKind};

/// The last audit's result, as `/report` serves it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch when the scan ran; 0 before the first one.
    #[serde(rename = "generatedAt")]
    pub generated_at: u64,
    pub objects: Objects,
    pub findings: Vec<Finding>,
    /// The uid of each object a finding names, where the cache knows it (for Events).
    #[serde(skip)]
    pub uids: HashMap<(FluxKind, ObjectKey), String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Objects {
    #[serde(rename = "Kustomization")]
    pub kustomizations: usize,
    #[serde(rename = "HelmRelease")]
    pub helm_releases: usize,
}

/// Scans the cache now. The cache lock is held only to copy out the objects (pointer copies,
/// no graph work); the graphs are rebuilt and scanned afterwards, so admission never waits
/// for an audit. Blocking work: call it off the async runtime.
pub fn scan(cache: &Cache, policy: &Policy) -> Report {
    let snapshot = cache.lock().delivered_objects();
    let mut findings = Vec::new();
    let mut counts = [0; 2];
    let mut uids = HashMap::new();
    let graphs: Vec<Graph> =
        FluxKind::ALL.into_iter().zip(snapshot).map(|(kind, objects)| Graph::from_objects(kind, objects)).collect();
    for kind in FluxKind::ALL {
        let graph = &graphs[kind.index()];
        counts[kind.index()] = graph.len();
        let found = rules::audit_with(graph, Some(&graphs[kind.other().index()]), policy);
        for f in &found {
            for key in std::iter::once(&f.object).chain(f.cycle.iter().flatten()) {
                if let Some(uid) = graph.get(key).and_then(|o| o.uid.as_ref()).map(ToString::to_string) {
                    uids.insert((kind, key.clone()), uid);
                }
            }
        }
        findings.extend(found);
    }
    let objects = Objects { kustomizations: counts[0], helm_releases: counts[1] };
    let generated_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Report { generated_at, objects, findings, uids }
}

/// Counts of findings by kind and rule.
pub fn counts(report: &Report) -> Vec<(FluxKind, Rule, usize)> {
    let mut out = Vec::new();
    for kind in FluxKind::ALL {
        for rule in Rule::ALL {
            let n = report.findings.iter().filter(|f| f.kind == kind && f.rule == rule).count();
            out.push((kind, rule, n));
        }
    }
    out
}

type FindingId = (Rule, FindingKind, String, String);

fn id(f: &Finding) -> FindingId {
    (f.rule, f.kind, f.object.to_string(), f.message.clone())
}

/// Runs the audit every `every` with the policy in force at each scan, publishing into
/// `report`, calling `publish` with each new
/// report (for metrics), and handing it to `events` (cluster mode) to post as Events. Logs a
/// line per finding not seen in the previous scan.
pub async fn run(
    cache: Arc<Cache>,
    policy: Arc<LivePolicy>,
    report: Arc<RwLock<Report>>,
    every: Duration,
    publish: impl Fn(&Report) + Send + 'static,
    events: Option<Arc<events::Publisher>>,
) {
    let mut known: HashSet<FindingId> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !cache.is_ready() {
            continue;
        }
        let (c, p) = (cache.clone(), policy.get());
        let Ok(next) = tokio::task::spawn_blocking(move || scan(&c, &p)).await else {
            tracing::error!("the audit panicked; trying again at the next interval");
            continue;
        };
        let ids: HashSet<FindingId> = next.findings.iter().map(id).collect();
        for f in next.findings.iter().filter(|f| !known.contains(&id(f))) {
            tracing::warn!(rule = %f.rule, kind = %f.kind, object = %f.object, action = f.action.as_str(), "audit finding: {}", f.message);
        }
        known = ids;
        publish(&next);
        if let Some(events) = &events {
            events.publish(&next).await;
            if events.is_leader() {
                let c = cache.clone();
                if let Ok(status) = tokio::task::spawn_blocking(move || c.status_report()).await {
                    events.publish_blocked(&status, k8s_openapi::jiff::Timestamp::now()).await;
                }
            }
        }
        *report.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

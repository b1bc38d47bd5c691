//! The audit's Events against the fake API server: one replica at a time holds the Lease and
//! posts DependencyCycle / DependencyMissing Warning Events on the offending objects, an
//! unchanged finding is not posted twice, and another replica takes over an expired Lease.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use fluxgate::audit::events::{LEASE_NAME, Publisher, REPORTING_CONTROLLER};
use fluxgate::audit::{self, Report};
use fluxgate::cache::Cache;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};
use fluxgate::policy::Policy;
use serde_json::Value;

const NS: &str = "fluxgate-system";

fn cache_with(edges: &[(&str, &[&str])]) -> Cache {
    let cache = Cache::new();
    let objects = edges
        .iter()
        .map(|(name, deps)| {
            let (ns, n) = name.split_once('/').unwrap();
            let depends_on = deps
                .iter()
                .map(|d| {
                    let (dn, dm) = d.split_once('/').unwrap();
                    ObjectKey::new(dn, dm)
                })
                .collect();
            (Arc::new(FluxObject::new(FluxKind::Kustomization, ObjectKey::new(ns, n), depends_on)), None)
        })
        .collect();
    let mut state = cache.lock();
    state.replace_all(FluxKind::Kustomization, objects);
    state.mark_synced(FluxKind::HelmRelease);
    drop(state);
    cache
}

fn report_of(cache: &Cache) -> Report {
    audit::scan(cache, &Policy::default())
}

fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let r = &e["regarding"];
            (
                e["reason"].as_str().unwrap().to_string(),
                format!("{}/{}", r["namespace"].as_str().unwrap(), r["name"].as_str().unwrap()),
                e["metadata"]["namespace"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_lease_holder_posts_each_finding_once_on_every_offending_object() {
    let fake = FakeApi::start(true).await;
    let cache = cache_with(&[("apps/a", &["infra/b"]), ("infra/b", &["apps/a"]), ("web/site", &["web/missing"])]);
    let a = Publisher::new(fake.client(), NS, "fluxgate-a", Duration::from_secs(30));
    let b = Publisher::new(fake.client(), NS, "fluxgate-b", Duration::from_secs(30));
    assert!(a.acquire_or_renew().await.unwrap());
    assert!(!b.acquire_or_renew().await.unwrap(), "the Lease is held by a");
    assert_eq!(fake.lease_holder(NS, LEASE_NAME).as_deref(), Some("fluxgate-a"));

    let report = report_of(&cache);
    assert_eq!(b.publish(&report).await, 0, "only the holder posts");
    assert_eq!(a.publish(&report).await, 3);
    let events = fake.events();
    assert_eq!(
        summary(&events),
        vec![
            ("DependencyCycle".into(), "apps/a".into(), "apps".into()),
            ("DependencyCycle".into(), "infra/b".into(), "infra".into()),
            ("DependencyMissing".into(), "web/site".into(), "web".into()),
        ]
    );
    for e in &events {
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reportingController"], REPORTING_CONTROLLER);
        assert_eq!(e["reportingInstance"], "fluxgate-a");
        assert_eq!(e["regarding"]["kind"], "Kustomization");
        assert_eq!(e["regarding"]["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
        assert!(e["note"].as_str().unwrap().starts_with("d"), "{e}");
    }
    let missing = events.iter().find(|e| e["reason"] == "DependencyMissing").unwrap();
    assert_eq!(
        missing["note"],
        "dangling dependsOn: web/site depends on Kustomization web/missing, which does not exist"
    );

    // Unchanged findings are not posted again.
    assert!(a.acquire_or_renew().await.unwrap());
    assert_eq!(a.publish(&report_of(&cache)).await, 0);
    assert_eq!(fake.events().len(), 3);

    // A finding that went away and came back is posted again.
    cache
        .lock()
        .apply(Arc::new(FluxObject::new(FluxKind::Kustomization, ObjectKey::new("web", "missing"), vec![])), None);
    assert_eq!(a.publish(&report_of(&cache)).await, 0);
    cache.lock().delete(FluxKind::Kustomization, &ObjectKey::new("web", "missing"));
    assert_eq!(a.publish(&report_of(&cache)).await, 1);
}

#[tokio::test]
async fn another_replica_takes_over_an_expired_lease() {
    let fake = FakeApi::start(true).await;
    let cache = cache_with(&[("web/site", &["web/missing"])]);
    let a = Publisher::new(fake.client(), NS, "fluxgate-a", Duration::from_secs(1));
    let b = Publisher::new(fake.client(), NS, "fluxgate-b", Duration::from_secs(1));
    assert!(a.acquire_or_renew().await.unwrap());
    assert_eq!(a.publish(&report_of(&cache)).await, 1);
    assert!(!b.acquire_or_renew().await.unwrap());
    // a stops renewing (its pod is gone); after the lease duration b takes over and posts.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b.acquire_or_renew().await.unwrap());
    assert_eq!(fake.lease_holder(NS, LEASE_NAME).as_deref(), Some("fluxgate-b"));
    assert!(!a.acquire_or_renew().await.unwrap(), "a lost the Lease");
    assert!(!a.is_leader());
    assert_eq!(a.publish(&report_of(&cache)).await, 0);
    assert_eq!(b.publish(&report_of(&cache)).await, 1);
}

#[tokio::test]
async fn two_replicas_racing_for_a_free_lease_get_one_holder() {
    let fake = FakeApi::start(true).await;
    let publishers: Vec<Arc<Publisher>> = (0..6)
        .map(|i| Arc::new(Publisher::new(fake.client(), NS, &format!("fluxgate-{i}"), Duration::from_secs(30))))
        .collect();
    let tasks: Vec<_> = publishers
        .iter()
        .map(|p| {
            let p = p.clone();
            tokio::spawn(async move { p.acquire_or_renew().await.unwrap() })
        })
        .collect();
    let mut holders = 0;
    for t in tasks {
        holders += usize::from(t.await.unwrap());
    }
    assert_eq!(holders, 1, "exactly one replica holds the Lease");
}

#[tokio::test]
async fn one_event_per_object_and_rule_carrying_the_uid_for_a_name_of_253_characters() {
    let fake = FakeApi::start(true).await;
    let long = format!("{}-x", "a".repeat(251));
    assert_eq!(long.len(), 253);
    let targets = (1..=3).map(|i| ObjectKey::new("web", format!("missing-{i}"))).collect();
    let mut web = FluxObject::new(FluxKind::Kustomization, ObjectKey::new("web", &long), targets);
    web.uid = Some("6f1d3c1e-web".into());
    let cache = Cache::new();
    {
        let mut state = cache.lock();
        state.replace_all(FluxKind::Kustomization, vec![(Arc::new(web), None)]);
        state.mark_synced(FluxKind::HelmRelease);
    }
    let publisher = Publisher::new(fake.client(), NS, "fluxgate-a", Duration::from_secs(30));
    assert!(publisher.acquire_or_renew().await.unwrap());
    let report = report_of(&cache);
    assert_eq!(report.findings.len(), 3, "a finding per missing target");
    assert_eq!(publisher.publish(&report).await, 1, "one Event for the object and rule");
    let events = fake.events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["regarding"]["uid"], "6f1d3c1e-web", "kubectl describe matches Events by uid");
    assert_eq!(event["regarding"]["name"], long.as_str());
    let note = event["note"].as_str().unwrap();
    for i in 1..=3 {
        assert!(note.contains(&format!("web/missing-{i}")), "{note}");
    }
    assert_eq!(publisher.publish(&report).await, 0, "posted once while it lasts");
}

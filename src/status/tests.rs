use super::*;
use std::collections::HashMap;
use std::sync::Arc;

use super::store::StoredStatus;
use crate::graph::tests::ks;
use crate::object::{FluxKind, FluxObject, ObjectKey};
use proptest::prelude::*;
use serde_json::json;

fn key(s: &str) -> ObjectKey {
    let (ns, n) = s.split_once('/').unwrap();
    ObjectKey::new(ns, n)
}

fn status(ready: &str, reason: &str, message: &str) -> ObjectStatus {
    ObjectStatus::from_value(&json!({
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "conditions": [
            {"type": "Reconciling", "status": "True", "reason": "Progressing"},
            {"type": "Ready", "status": ready, "reason": reason, "message": message,
             "lastTransitionTime": "2026-11-26T10:00:00Z"}
        ]}
    }))
}

fn ready() -> ObjectStatus {
    status("True", "ReconciliationSucceeded", "Applied revision: main@sha1:abc")
}

fn waiting(on: &str) -> ObjectStatus {
    status("False", DEPENDENCY_NOT_READY, &format!("dependency '{on}' is not ready"))
}

fn failed(message: &str) -> ObjectStatus {
    status("False", "HealthCheckFailed", message)
}

fn report(objects: &[(&str, &[&str], ObjectStatus)]) -> KindReport {
    let statuses = objects.iter().map(|(name, _, s)| (key(&format!("f/{name}")), s.clone())).collect();
    analyze(FluxKind::Kustomization, objects.iter().map(|(name, deps, _)| ks("f", name, deps)), &statuses)
}

fn roots(r: &KindReport, name: &str) -> Vec<(String, Cause, String)> {
    r.get(&key(&format!("f/{name}")))
        .unwrap()
        .roots
        .iter()
        .map(|root| (root.id.name.to_string(), root.cause, format_chain(&root.chain)))
        .collect()
}

#[test]
fn states_from_conditions_generation_and_suspend() {
    assert_eq!(ObjectStatus::from_value(&json!({"metadata": {"name": "a"}})).state(), State::Unknown);
    assert_eq!(ready().state(), State::Ready);
    assert_eq!(status("Unknown", "Progressing", "Reconciliation in progress").state(), State::Progressing);
    assert_eq!(failed("timeout").state(), State::Failed);
    assert_eq!(waiting("f/x").state(), State::Waiting);
    let stale = json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}]}});
    assert_eq!(ObjectStatus::from_value(&stale).state(), State::Stale);
    let mut suspended = stale.clone();
    suspended["spec"] = json!({"suspend": true});
    assert_eq!(ObjectStatus::from_value(&suspended).state(), State::Suspended);
    // A new object waiting for its dependencies has not recorded its generation yet.
    let new_waiting = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": -1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "DependencyNotReady"}]}});
    assert_eq!(ObjectStatus::from_value(&new_waiting).state(), State::Waiting);
}

#[test]
fn chain_through_waiting_objects_ends_at_the_failed_root_with_its_message() {
    let r = report(&[
        ("apps", &["infra"], waiting("f/infra")),
        ("infra", &["crds"], waiting("f/crds")),
        ("crds", &[], failed("health check failed after 5m: timeout waiting for Deployment/cert-manager")),
    ]);
    let apps = r.get(&key("f/apps")).unwrap();
    assert_eq!(apps.roots.len(), 1);
    assert_eq!(format_chain(&apps.roots[0].chain), "f/apps -> f/infra -> f/crds");
    assert_eq!(apps.roots[0].cause, Cause::Failed);
    assert_eq!(
        apps.roots[0].message.as_deref(),
        Some("health check failed after 5m: timeout waiting for Deployment/cert-manager")
    );
    assert!(r.get(&key("f/crds")).unwrap().roots.is_empty(), "only waiting objects get roots");
}

#[test]
fn suspended_missing_stale_and_progressing_are_roots() {
    let mut stale = ready();
    stale.generation = Some(5);
    stale.observed_generation = Some(4);
    let mut suspended = ready();
    suspended.suspended = true;
    let r = report(&[
        ("a", &["s"], waiting("f/s")),
        ("s", &[], suspended),
        ("b", &["gone"], waiting("f/gone")),
        ("c", &["old"], waiting("f/old")),
        ("old", &[], stale),
        ("d", &["busy"], waiting("f/busy")),
        ("busy", &[], status("Unknown", "Progressing", "Reconciliation in progress")),
    ]);
    assert_eq!(roots(&r, "a"), [("s".into(), Cause::Suspended, "f/a -> f/s".into())]);
    assert_eq!(roots(&r, "b"), [("gone".into(), Cause::Missing, "f/b -> f/gone".into())]);
    assert_eq!(roots(&r, "c"), [("old".into(), Cause::Stale, "f/c -> f/old".into())]);
    assert_eq!(roots(&r, "d"), [("busy".into(), Cause::Progressing, "f/d -> f/busy".into())]);
    assert_eq!(r.missing, [key("f/gone")]);
}

#[test]
fn a_cycle_is_a_root_of_its_own() {
    let r = report(&[("app", &["x"], waiting("f/x")), ("x", &["y"], waiting("f/y")), ("y", &["x"], waiting("f/x"))]);
    let app = r.get(&key("f/app")).unwrap();
    assert_eq!(app.roots.len(), 1, "one cycle, one root: {:?}", app.roots);
    assert_eq!(app.roots[0].cause, Cause::Cycle);
    assert_eq!(format_chain(&app.roots[0].chain), "f/app -> f/x");
    assert_eq!(app.roots[0].cycle.as_ref().unwrap(), &[key("f/x"), key("f/y"), key("f/x")]);
    // A member of the cycle is held up by its own cycle.
    assert_eq!(roots(&r, "x"), [("x".into(), Cause::Cycle, "f/x".into())]);
    assert!(r.get(&key("f/x")).unwrap().in_cycle);
}

#[test]
fn a_diamond_reports_both_roots_and_a_shared_root_once() {
    let r = report(&[
        ("top", &["left", "right"], waiting("f/left")),
        ("left", &["r1"], waiting("f/r1")),
        ("right", &["r2", "r1"], waiting("f/r2")),
        ("r1", &[], failed("kustomize build failed")),
        ("r2", &[], failed("install retries exhausted")),
    ]);
    assert_eq!(
        roots(&r, "top"),
        [
            ("r1".into(), Cause::Failed, "f/top -> f/left -> f/r1".into()),
            ("r2".into(), Cause::Failed, "f/top -> f/right -> f/r2".into()),
        ]
    );
}

#[test]
fn ready_dependencies_hold_nothing_up() {
    let r = report(&[("a", &["b", "c"], waiting("f/b")), ("b", &[], ready()), ("c", &[], failed("boom"))]);
    assert_eq!(roots(&r, "a"), [("c".into(), Cause::Failed, "f/a -> f/c".into())]);
}

#[test]
fn implicit_waits_are_followed() {
    let mut parent = (*ks("f", "parent", &[])).clone();
    parent.set_health_check_kustomizations(vec![key("f/child")]);
    let statuses = HashMap::from([
        (key("f/app"), waiting("f/parent")),
        (key("f/parent"), waiting("f/child")),
        (key("f/child"), failed("boom")),
    ]);
    let r = analyze(
        FluxKind::Kustomization,
        [ks("f", "app", &["parent"]), Arc::new(parent), ks("f", "child", &[])],
        &statuses,
    );
    let app = r.get(&key("f/app")).unwrap();
    assert_eq!(format_chain(&app.roots[0].chain), "f/app -> f/parent -(wait)-> f/child");
}

#[test]
fn store_keeps_kinds_apart_and_relists_replace() {
    let store = StatusStore::default();
    let suspended = ObjectStatus::from_value(&json!({"metadata": {"name": "a"}, "spec": {"suspend": true}}));
    store.record(ks("f", "a", &[]), suspended);
    let mut hr = (*ks("f", "a", &[])).clone();
    hr.kind = FluxKind::HelmRelease;
    store.record(Arc::new(hr), ObjectStatus::default());
    assert_eq!(store.snapshot(FluxKind::Kustomization).1[&key("f/a")].state(), State::Suspended);
    store.keep_only(FluxKind::Kustomization, [&key("f/b")]);
    assert!(store.snapshot(FluxKind::Kustomization).0.is_empty());
    store.replace_all(FluxKind::Kustomization, [(ks("f", "b", &[]), ready())]);
    let (objects, statuses) = store.snapshot(FluxKind::Kustomization);
    assert_eq!(objects[0].key, key("f/b"));
    assert_eq!(statuses.keys().collect::<Vec<_>>(), [&key("f/b")]);
    assert_eq!(store.snapshot(FluxKind::HelmRelease).0.len(), 1);
    store.forget(FluxKind::HelmRelease, &key("f/a"));
    assert!(store.snapshot(FluxKind::HelmRelease).0.is_empty());
    assert_eq!(store.report().kind(FluxKind::Kustomization).unwrap().objects[0].state, State::Ready);
}

#[test]
fn a_report_is_computed_again_only_after_the_store_changed() {
    let store = StatusStore::default();
    store.record(ks("f", "a", &[]), ready());
    let first = store.report();
    let again = store.report();
    assert!(Arc::ptr_eq(&first, &again), "no change: the same report, not a new analysis");
    let suspended = ObjectStatus { suspended: true, ..ready() };
    store.record(ks("f", "a", &[]), suspended);
    let after = store.report();
    assert!(!Arc::ptr_eq(&first, &after));
    assert_eq!(after.kind(FluxKind::Kustomization).unwrap().objects[0].state, State::Suspended);
    store.forget(FluxKind::Kustomization, &key("f/a"));
    assert!(store.report().kind(FluxKind::Kustomization).unwrap().objects.is_empty());
}

fn arb_state() -> impl Strategy<Value = State> {
    prop::sample::select(State::ALL.to_vec())
}

fn status_in(state: State) -> ObjectStatus {
    match state {
        State::Failed => failed("boom"),
        State::Waiting => waiting("x"),
        State::Suspended => ObjectStatus { suspended: true, ..ready() },
        State::Stale => ObjectStatus { observed_generation: Some(1), ..ready() },
        State::Progressing => status("Unknown", "Progressing", ""),
        State::Unknown => ObjectStatus::default(),
        State::Ready => ready(),
    }
}

proptest! {
    /// Oracle: every root of a waiting object is reached by a real path of the graph whose inner
    /// hops are all waiting, and ends at an object that is missing, on a cycle, or neither ready
    /// nor waiting; and every such object reachable that way is reported (unless behind a cycle).
    #[test]
    fn roots_are_exactly_the_first_blockers(
        states in prop::collection::vec(arb_state(), 1..12),
        edges in prop::collection::vec((0usize..14, 0usize..14), 0..30),
    ) {
        let n = states.len();
        let name = |i: usize| format!("n{i}");
        let mut deps: Vec<Vec<String>> = vec![Vec::new(); n];
        for (a, b) in &edges {
            if *a < n {
                deps[*a].push(name(*b));
            }
        }
        let objects: Vec<Arc<FluxObject>> = (0..n)
            .map(|i| ks("f", &name(i), &deps[i].iter().map(String::as_str).collect::<Vec<_>>()))
            .collect();
        let statuses: HashMap<ObjectKey, ObjectStatus> =
            (0..n).map(|i| (key(&format!("f/{}", name(i))), status_in(states[i]))).collect();
        let r = analyze(FluxKind::Kustomization, objects, &statuses);
        let state_of = |k: &ObjectKey| r.get(k).map(|o| o.state);
        let in_cycle = |k: &ObjectKey| r.get(k).is_some_and(|o| o.in_cycle);
        for o in &r.objects {
            if o.state != State::Waiting {
                prop_assert!(o.roots.is_empty());
                continue;
            }
            for root in &o.roots {
                prop_assert_eq!(&root.chain[0].id, &o.id);
                prop_assert_eq!(&root.chain.last().unwrap().id, &root.id);
                for w in root.chain.windows(2) {
                    let from = r.get(&w[0].id).unwrap();
                    prop_assert!(from.depends_on.contains(&w[1].id));
                }
                for hop in root.chain.iter().skip(1).take(root.chain.len().saturating_sub(2)) {
                    prop_assert_eq!(state_of(&hop.id), Some(State::Waiting));
                    prop_assert!(!in_cycle(&hop.id));
                }
                let ok = match root.cause {
                    Cause::Missing => state_of(&root.id).is_none(),
                    Cause::Cycle => in_cycle(&root.id),
                    _ => state_of(&root.id).is_some_and(|s| s != State::Ready && s != State::Waiting),
                };
                prop_assert!(ok, "bad root {:?} of {}", root, o.id);
            }
            // Completeness: every direct dependency that blocks is a root.
            for d in &o.depends_on {
                let blocker = match state_of(d) {
                    None => true,
                    Some(s) => s != State::Ready && s != State::Waiting && !in_cycle(d),
                };
                if blocker {
                    prop_assert!(o.roots.iter().any(|r| &r.id == d), "{} misses root {}", o.id, d);
                }
            }
        }
    }
}

#[test]
fn time_budget_is_the_timeout_else_interval_minus_30s_at_least_30s() {
    let budget = |spec: Value| ObjectStatus::from_value(&json!({ "spec": spec })).timeout;
    assert_eq!(budget(json!({"interval": "10m", "timeout": "3m"})), Some(std::time::Duration::from_secs(180)));
    assert_eq!(budget(json!({"interval": "10m0s"})), Some(std::time::Duration::from_secs(570)));
    assert_eq!(budget(json!({"interval": "45s"})), Some(std::time::Duration::from_secs(30)));
    assert_eq!(budget(json!({})), None);
}

fn timed(ready_at: &str, timeout_secs: u64) -> ObjectStatus {
    let mut s = ready();
    s.ready.as_mut().unwrap().last_transition_time = Some(ready_at.into());
    s.timeout = Some(std::time::Duration::from_secs(timeout_secs));
    s
}

#[test]
fn worst_case_follows_the_slowest_chain_and_waves_time_from_ready_transitions() {
    // crds (1m) <- slow (10m) <- app (2m); crds <- fast (1m) <- app: the slow side decides.
    let r = report(&[
        ("crds", &[], timed("2026-11-26T10:01:00Z", 60)),
        ("slow", &["crds"], timed("2026-11-26T10:09:00Z", 600)),
        ("fast", &["crds"], timed("2026-11-26T10:02:00Z", 60)),
        ("app", &["slow", "fast"], timed("2026-11-26T10:10:30Z", 120)),
    ]);
    assert_eq!(r.rollout.worst_case_seconds, 60 + 600 + 120);
    assert_eq!(r.rollout.worst_case_path, [key("f/crds"), key("f/slow"), key("f/app")]);
    // Wave 0: one object (0 s); wave 1 ends 8 min after wave 0; wave 2 90 s after wave 1.
    assert_eq!(r.rollout.wave_seconds, [Some(0), Some(480), Some(90)]);

    // A wave with an object not ready has no time, nor has the wave after it.
    let r = report(&[
        ("crds", &[], timed("2026-11-26T10:01:00Z", 60)),
        ("slow", &["crds"], failed("boom")),
        ("app", &["slow"], timed("2026-11-26T10:10:30Z", 120)),
    ]);
    assert_eq!(r.rollout.wave_seconds, [Some(0), None, None]);
}

#[test]
fn the_store_gives_back_the_status_it_was_given() {
    let condition = ReadyCondition {
        status: ConditionStatus::False,
        reason: "BuildFailed".into(),
        message: "kustomize build failed".into(),
        last_transition_time: Some("2026-11-26T10:00:00Z".into()),
    };
    let statuses = [
        ObjectStatus::default(),
        ObjectStatus {
            ready: Some(Box::new(condition)),
            generation: Some(7),
            observed_generation: Some(-1),
            suspended: true,
            timeout: Some(std::time::Duration::from_millis(90_500)),
        },
        ObjectStatus { generation: Some(0), observed_generation: None, ..ObjectStatus::default() },
    ];
    for status in statuses {
        assert_eq!(ObjectStatus::from(&StoredStatus::from(status.clone())), status);
    }
}

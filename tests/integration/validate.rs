//! `/validate` on AdmissionReview JSON: every rule of the validation table, with its default
//! action and message, enforcement modes, dry-run, DELETE, implicit waits, HelmReleases and
//! malformed requests.

use crate::common;

use axum::http::StatusCode;
use common::*;
use fluxgate::policy::{Action, Enforcement, Policy, Rule};
use serde_json::json;

const F: &str = "flux-system";

fn policy_with(rule: Rule, action: Action) -> Policy {
    let mut p = Policy::default();
    p.set_action(rule, action);
    p
}

#[tokio::test]
async fn update_that_closes_a_cycle_is_denied_with_the_full_path() {
    let apps = ks(F, "apps", &["infra"]);
    let infra = ks(F, "infra", &[]);
    let h = Harness::new(Policy::default(), &[apps, infra.clone()]);
    let r = h.validate(&update(&ks(F, "infra", &["apps"]), &infra)).await;
    assert_eq!(denied(&r), "dependsOn cycle: flux-system/infra -> flux-system/apps -> flux-system/infra");
}

#[tokio::test]
async fn longer_cycle_is_reported_in_dependency_order() {
    let objs = [ks(F, "a", &["b"]), ks(F, "b", &["c"]), ks(F, "c", &[])];
    let h = Harness::new(Policy::default(), &objs);
    let r = h.validate(&update(&ks(F, "c", &["a"]), &objs[2])).await;
    assert_eq!(denied(&r), "dependsOn cycle: flux-system/c -> flux-system/a -> flux-system/b -> flux-system/c");
}

#[tokio::test]
async fn self_dependency_is_a_cycle_of_one() {
    let h = Harness::new(Policy::default(), &[]);
    let r = h.validate(&create(&ks(F, "loop", &["loop"]))).await;
    assert_eq!(denied(&r), "dependsOn cycle: flux-system/loop -> flux-system/loop");
}

#[tokio::test]
async fn create_closing_a_cycle_through_an_existing_dangling_reference_is_denied() {
    // `apps` already points at a not-yet-existing `infra`; creating `infra -> apps` closes it.
    let h = Harness::new(Policy::default(), &[ks(F, "apps", &["infra"])]);
    let r = h.validate(&create(&ks(F, "infra", &["apps"]))).await;
    assert_eq!(denied(&r), "dependsOn cycle: flux-system/infra -> flux-system/apps -> flux-system/infra");
}

#[tokio::test]
async fn cross_namespace_cycle_is_denied() {
    let objs = [ks("team-a", "app", &["infra/db"]), ks("infra", "db", &[])];
    let h = Harness::new(Policy::default(), &objs);
    let r = h.validate(&update(&ks("infra", "db", &["team-a/app"]), &objs[1])).await;
    assert_eq!(denied(&r), "dependsOn cycle: infra/db -> team-a/app -> infra/db");
}

#[tokio::test]
async fn unchanged_object_on_an_existing_cycle_only_warns() {
    // Flux dry-runs every managed object on each reconcile: an old cycle must not block it.
    let a = ks(F, "a", &["b"]);
    let b = ks(F, "b", &["a"]);
    let h = Harness::new(Policy::default(), &[a.clone(), b]);
    let r = h.validate(&review("UPDATE", Some(&a), Some(&a), true)).await;
    let w = allowed(&r);
    assert_eq!(
        w,
        vec![
            "dependsOn cycle (already present, not introduced by this change): flux-system/a -> flux-system/b -> flux-system/a"
        ]
    );
}

#[tokio::test]
async fn update_adding_an_edge_to_an_existing_cycle_is_denied() {
    let a = ks(F, "a", &["b"]);
    let b = ks(F, "b", &["a"]);
    let c = ks(F, "c", &["a"]);
    let h = Harness::new(Policy::default(), &[a.clone(), b, c]);
    // a gains an edge to c, which closes a new cycle a -> c -> a.
    let r = h.validate(&update(&ks(F, "a", &["b", "c"]), &a)).await;
    assert_eq!(denied(&r), "dependsOn cycle: flux-system/a -> flux-system/c -> flux-system/a");
}

#[tokio::test]
async fn dangling_target_is_denied_with_a_near_name_hint() {
    let h = Harness::new(Policy::default(), &[ks(F, "infrastructure", &[])]);
    let r = h.validate(&create(&ks(F, "apps", &["infrastucture"]))).await;
    assert_eq!(
        denied(&r),
        "dangling dependsOn: flux-system/apps depends on Kustomization flux-system/infrastucture, which does not exist; did you mean flux-system/infrastructure?"
    );
}

#[tokio::test]
async fn dangling_target_hints_at_the_same_name_in_another_namespace() {
    let h = Harness::new(Policy::default(), &[ks("infra-system", "infra", &[])]);
    let r = h.validate(&create(&ks(F, "apps", &["infra"]))).await;
    assert_eq!(
        denied(&r),
        "dangling dependsOn: flux-system/apps depends on Kustomization flux-system/infra, which does not exist; a Kustomization named infra exists in namespace infra-system"
    );
}

#[tokio::test]
async fn dangling_target_of_an_object_with_owner_labels_only_warns() {
    // A parent Kustomization applies siblings in one batch whose order Flux does not promise.
    let h = Harness::new(Policy::default(), &[]);
    let child = owned_by(ks("apps", "web", &["db"]), "flux-system/apps");
    let w = allowed(&h.validate(&review("CREATE", Some(&child), None, true)).await);
    assert_eq!(w, vec!["dangling dependsOn: apps/web depends on Kustomization apps/db, which does not exist"]);
}

#[tokio::test]
async fn dangling_target_already_present_in_the_old_object_only_warns() {
    let old = ks(F, "apps", &["gone"]);
    let h = Harness::new(Policy::default(), std::slice::from_ref(&old));
    let new = with(old.clone(), "timeout", json!("10m"));
    let w = allowed(&h.validate(&update(&new, &old)).await);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("dangling dependsOn: flux-system/apps depends on Kustomization flux-system/gone"),
        "{w:?}"
    );
}

#[tokio::test]
async fn recently_admitted_object_is_not_dangling() {
    let h = Harness::new(Policy::default(), &[]);
    allowed(&h.validate(&create(&ks(F, "db", &[]))).await);
    allowed(&h.validate(&create(&ks(F, "api", &["db"]))).await);
}

#[tokio::test]
async fn cross_namespace_rule_is_off_by_default_and_follows_the_policy() {
    let objs = [ks("infra", "db", &[])];
    let app = ks("team-a", "app", &["infra/db"]);
    let h = Harness::new(Policy::default(), &objs);
    assert!(allowed(&h.validate(&create(&app)).await).is_empty());

    let h = Harness::new(policy_with(Rule::CrossNamespaceDependsOn, Action::Deny), &objs);
    assert_eq!(
        denied(&h.validate(&create(&app)).await),
        "cross-namespace dependsOn: team-a/app (namespace team-a) depends on infra/db"
    );
    // Unchanged cross-namespace edges only warn, even when the rule denies.
    let w = allowed(&h.validate(&update(&with(app.clone(), "timeout", json!("1m")), &app)).await);
    assert_eq!(w.len(), 1);
}

#[tokio::test]
async fn max_depth_counts_the_longest_chain_through_the_object() {
    let mut p = policy_with(Rule::MaxDepth, Action::Deny);
    p.max_depth_limit = 3;
    let objs = [ks(F, "crds", &[]), ks(F, "operators", &["crds"]), ks(F, "infra", &["operators"]), ks(F, "apps", &[])];
    let h = Harness::new(p, &objs);
    let r = h.validate(&update(&ks(F, "apps", &["infra"]), &objs[3])).await;
    assert_eq!(
        denied(&r),
        "dependsOn chain of 4 objects exceeds the limit of 3: flux-system/apps -> flux-system/infra -> flux-system/operators -> flux-system/crds"
    );
    // Off by default.
    let h = Harness::new(Policy::default(), &objs);
    assert!(allowed(&h.validate(&update(&ks(F, "apps", &["infra"]), &objs[3])).await).is_empty());
}

#[tokio::test]
async fn deleting_an_object_others_depend_on_warns_and_names_them() {
    let infra = ks(F, "infra", &[]);
    let h = Harness::new(
        Policy::default(),
        &[infra.clone(), ks(F, "apps", &["infra"]), ks("web", "site", &["flux-system/infra"])],
    );
    let w = allowed(&h.validate(&delete(&infra)).await);
    assert_eq!(
        w,
        vec![
            "flux-system/infra is a dependsOn target of flux-system/apps, web/site; they will wait for it forever once it is deleted"
        ]
    );
    let h = Harness::new(
        policy_with(Rule::DeleteWithDependents, Action::Deny),
        &[infra.clone(), ks(F, "apps", &["infra"])],
    );
    denied(&h.validate(&delete(&infra)).await);
}

#[tokio::test]
async fn deleting_an_object_nothing_depends_on_is_silent() {
    let lone = ks(F, "lone", &[]);
    let h = Harness::new(Policy::default(), std::slice::from_ref(&lone));
    assert!(allowed(&h.validate(&delete(&lone)).await).is_empty());
}

#[tokio::test]
async fn duplicate_entry_warns() {
    let h = Harness::new(Policy::default(), &[ks(F, "infra", &[])]);
    let w = allowed(&h.validate(&create(&ks(F, "apps", &["infra", "infra"]))).await);
    assert_eq!(w, vec!["duplicate dependsOn: flux-system/apps lists flux-system/infra 2 times"]);
}

#[tokio::test]
async fn audit_mode_turns_denials_into_warnings() {
    let mut p = Policy::default();
    p.enforcement = Enforcement::Audit;
    let h = Harness::new(p, &[]);
    let w = allowed(&h.validate(&create(&ks(F, "x", &["x"]))).await);
    assert_eq!(w, vec!["audit mode, would deny: dependsOn cycle: flux-system/x -> flux-system/x"]);
}

#[tokio::test]
async fn audit_mode_can_be_set_per_namespace() {
    let p = Policy::parse("namespaces: { overrides: { tenant-a: { enforcement: audit } } }", "p").unwrap();
    let h = Harness::new(p, &[]);
    allowed(&h.validate(&create(&ks("tenant-a", "x", &["missing"]))).await);
    denied(&h.validate(&create(&ks("tenant-b", "x", &["missing"]))).await);
}

#[tokio::test]
async fn dry_run_is_judged_like_a_real_request_but_never_recorded() {
    let h = Harness::new(Policy::default(), &[]);
    // Judged the same: a dry-run self-dependency is denied.
    denied(&h.validate(&review("CREATE", Some(&ks(F, "x", &["x"])), None, true)).await);
    // Not recorded: a dry-run create of `db` does not make `db` exist.
    allowed(&h.validate(&review("CREATE", Some(&ks(F, "db", &[])), None, true)).await);
    let r = h.validate(&create(&ks(F, "api", &["db"]))).await;
    assert!(denied(&r).starts_with("dangling dependsOn"));
}

#[tokio::test]
async fn denied_request_is_not_recorded() {
    let h = Harness::new(Policy::default(), &[ks(F, "b", &[])]);
    denied(&h.validate(&create(&ks(F, "a", &["b", "missing"]))).await);
    // `a` was never admitted, so `b -> a` dangles rather than closing a cycle.
    let msg = denied(&h.validate(&update(&ks(F, "b", &["a"]), &ks(F, "b", &[]))).await);
    assert!(msg.starts_with("dangling dependsOn: flux-system/b depends on Kustomization flux-system/a"), "{msg}");
}

#[tokio::test]
async fn child_depending_on_its_waiting_parent_is_a_cycle_through_a_wait_edge() {
    let parent = with(ks(F, "apps", &[]), "wait", json!(true));
    let h = Harness::new(Policy::default(), &[parent]);
    let child = owned_by(ks("apps", "web", &["flux-system/apps"]), "flux-system/apps");
    let msg = denied(&h.validate(&create(&child)).await);
    assert_eq!(
        msg,
        "dependsOn cycle: apps/web -> flux-system/apps -> apps/web (flux-system/apps -> apps/web is a wait: flux-system/apps has spec.wait: true and applies it)"
    );
}

#[tokio::test]
async fn parent_turning_wait_on_over_a_child_that_depends_on_it_is_denied() {
    let parent = ks(F, "apps", &[]);
    let child = owned_by(ks("apps", "web", &["flux-system/apps"]), "flux-system/apps");
    let h = Harness::new(Policy::default(), &[parent.clone(), child]);
    let msg = denied(&h.validate(&update(&with(parent.clone(), "wait", json!(true)), &parent)).await);
    assert!(
        msg.starts_with(
            "dependsOn cycle: flux-system/apps -> apps/web -> flux-system/apps (flux-system/apps -> apps/web is a wait"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn health_check_naming_a_kustomization_is_a_wait_edge() {
    let db = ks(F, "db", &["api"]);
    let h = Harness::new(Policy::default(), &[db]);
    let api = with(
        ks(F, "api", &[]),
        "healthChecks",
        json!([{ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": "db", "namespace": F }]),
    );
    let msg = denied(&h.validate(&create(&api)).await);
    assert!(
        msg.ends_with("(flux-system/api -> flux-system/db is a wait: flux-system/api names it in spec.healthChecks)"),
        "{msg}"
    );
}

#[tokio::test]
async fn helm_release_cycles_are_denied_in_their_own_graph() {
    let objs = [hr("db", "postgres", &[]), hr("apps", "api", &["db/postgres"])];
    let h = Harness::new(Policy::default(), &objs);
    let msg = denied(&h.validate(&update(&hr("db", "postgres", &["apps/api"]), &objs[0])).await);
    assert_eq!(msg, "dependsOn cycle: db/postgres -> apps/api -> db/postgres");
}

#[tokio::test]
async fn helm_release_depending_on_a_kustomization_name_is_dangling_with_the_cross_kind_hint() {
    // The graphs are never mixed: a HelmRelease can only depend on HelmReleases. The webhook
    // says that the name exists as the other kind, and how to fix it.
    let h = Harness::new(Policy::default(), &[ks(F, "infra", &[])]);
    let msg = denied(&h.validate(&create(&hr(F, "app", &["infra"]))).await);
    assert_eq!(
        msg,
        "dangling dependsOn: flux-system/app depends on HelmRelease flux-system/infra, which does not exist; a \
         Kustomization named infra exists in flux-system; a HelmRelease's dependsOn can only name HelmReleases: name \
         a HelmRelease that Kustomization applies, or put the dependsOn on the Kustomization that applies this \
         HelmRelease"
    );
}

#[tokio::test]
async fn kustomization_depending_on_a_helm_release_gets_the_cross_kind_hint() {
    let h = Harness::new(Policy::default(), &[hr("rook-ceph", "rook-ceph-cluster", &[])]);
    let msg = denied(&h.validate(&create(&ks(F, "apps", &["rook-ceph/rook-ceph-cluster"]))).await);
    assert_eq!(
        msg,
        "dangling dependsOn: flux-system/apps depends on Kustomization rook-ceph/rook-ceph-cluster, which does not \
         exist; a HelmRelease named rook-ceph-cluster exists in rook-ceph; a Kustomization's dependsOn can only name \
         Kustomizations: name the Kustomization that applies it, or use spec.healthChecks"
    );
}

#[tokio::test]
async fn older_api_versions_are_judged_too() {
    let h = Harness::new(Policy::default(), &[]);
    let mut old = ks(F, "x", &["x"]);
    old["apiVersion"] = json!("kustomize.toolkit.fluxcd.io/v1beta2");
    denied(&h.validate(&create(&old)).await);
    let mut rel = hr(F, "y", &["y"]);
    rel["apiVersion"] = json!("helm.toolkit.fluxcd.io/v2beta1");
    denied(&h.validate(&create(&rel)).await);
}

#[tokio::test]
async fn other_kinds_and_excluded_namespaces_are_allowed_untouched() {
    let h = Harness::new(Policy::default(), &[]);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": F}});
    assert!(allowed(&h.validate(&create(&cm)).await).is_empty());
    assert!(allowed(&h.validate(&create(&ks("kube-system", "x", &["x"]))).await).is_empty());
}

#[tokio::test]
async fn warnings_respect_the_api_server_limits() {
    let h = Harness::new(Policy::default(), &[]);
    let long = "a-rather-long-kustomization-name-that-goes-on-and-on-and-on";
    let deps: Vec<String> = (0..200).map(|i| format!("{long}-{i:03}")).collect();
    let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
    let child = owned_by(ks(F, "many", &refs), "flux-system/root");
    let w = allowed(&h.validate(&create(&child)).await);
    assert!(w.iter().all(|x| x.chars().count() <= 256));
    assert!(w.iter().map(|x| x.chars().count()).sum::<usize>() <= 4096);
    assert!(w.last().unwrap().ends_with("more fluxgate warnings not shown"));
}

#[tokio::test]
async fn a_request_with_a_huge_depends_on_list_is_answered() {
    // A body near the 4 MiB limit can hold this many entries; quadratic work here would hold
    // the cache lock for minutes.
    let h = Harness::new(Policy::default(), &[ks(F, "infra", &[])]);
    let deps: Vec<String> = (0..60_000).map(|i| format!("d{i}")).chain(["infra".to_string()]).collect();
    let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
    let child = owned_by(ks(F, "huge", &refs), "flux-system/root");
    let w = allowed(&h.validate(&create(&child)).await);
    assert!(w.last().unwrap().ends_with("more fluxgate warnings not shown"));
    // Without owner labels every dangling target is deny-level: the message stays bounded.
    let msg = denied(&h.validate(&create(&ks(F, "huge", &refs))).await);
    assert!(msg.len() < 17 * 1024, "{}", msg.len());
    assert!(msg.ends_with("more deny-level findings"), "{}", &msg[msg.len() - 80..]);
    // The next request is answered too: the lock was released.
    allowed(&h.validate(&create(&ks(F, "after", &["infra"]))).await);
}

#[tokio::test]
async fn every_deny_level_finding_is_in_the_message() {
    let h = Harness::new(Policy::default(), &[]);
    let msg = denied(&h.validate(&create(&ks(F, "x", &["x", "nowhere"]))).await);
    assert!(msg.contains("dependsOn cycle: flux-system/x -> flux-system/x"), "{msg}");
    assert!(msg.contains("dangling dependsOn: flux-system/x depends on Kustomization flux-system/nowhere"), "{msg}");
}

#[tokio::test]
async fn bodies_that_are_not_admission_reviews_get_400_with_a_json_error() {
    let h = Harness::new(Policy::default(), &[]);
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"request\":{}}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{},\"operation\":\"PATCH\"}}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"kustomize.toolkit.fluxcd.io\",\"kind\":\"Kustomization\"},\"operation\":\"CREATE\"}}",
    ] {
        let (status, json) = h.post("/validate", body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{json}");
    }
}

#[tokio::test]
async fn bodies_over_4_mib_get_413() {
    let h = Harness::new(Policy::default(), &[]);
    let (status, _) = h.post("/validate", vec![b' '; 4 * 1024 * 1024 + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn malformed_spec_is_allowed_with_a_warning_not_a_panic() {
    let h = Harness::new(Policy::default(), &[]);
    let bad = with(ks(F, "x", &[]), "dependsOn", json!("infra"));
    let w = allowed(&h.validate(&create(&bad)).await);
    assert_eq!(
        w,
        vec![
            "fluxgate could not read this Kustomization (spec.dependsOn must be a list); its dependsOn was not checked"
        ]
    );
}

//! `fluxgate check` and `fluxgate graph` on fixture trees written for the purpose
//! (`tests/fixtures/`), through the built binary: findings, file and line, both output formats,
//! and every exit code.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_str().unwrap().to_string()
}

fn fluxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate")).args(args).output().unwrap()
}

/// `check --format json` on a fixture: exit code and parsed output.
fn check_json(name: &str) -> (i32, Value) {
    let out = fluxgate(&["check", &fixture(name), "--format", "json"]);
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), json)
}

fn findings(json: &Value) -> Vec<&Value> {
    json["findings"].as_array().unwrap().iter().collect()
}

#[test]
fn namespace_comes_from_the_outermost_kustomization_yaml() {
    let (code, json) = check_json("kustomize-ns");
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["objects"], 2);
    assert!(findings(&json).is_empty(), "web depends on infra, both in team-a: {json}");
    let graph = fluxgate(&["graph", &fixture("kustomize-ns"), "--format", "json"]);
    let g: Value = serde_json::from_slice(&graph.stdout).unwrap();
    let ids: Vec<&str> = g["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["team-a/infra", "team-a/web"]);
}

#[test]
fn names_behind_yaml_anchors_are_resolved() {
    let (code, json) = check_json("anchors");
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["objects"], 2);
}

#[test]
fn a_broken_file_is_reported_with_file_and_line_and_the_rest_is_checked() {
    let (code, json) = check_json("broken");
    assert_eq!(code, 2, "unreadable input: {json}");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("broken/broken.yaml"));
    assert!(errors[0]["line"].as_u64().unwrap() >= 12, "the error is in the second document: {}", errors[0]);
    assert!(errors[0]["message"].as_str().unwrap().starts_with("YAML: "));
    // The first document of the broken file and the good file were still read and checked.
    assert_eq!(json["objects"], 2);
    let f = findings(&json);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["rule"], "danglingDependsOn");
    assert_eq!(f[0]["target"], "flux-system/missing-one");
}

#[test]
fn a_cycle_across_two_files_denies_with_path_file_and_line() {
    let (code, json) = check_json("cycle-two-files");
    assert_eq!(code, 1);
    let f = findings(&json);
    assert_eq!(f.len(), 1, "{json}");
    assert_eq!(f[0]["rule"], "cycle");
    assert_eq!(f[0]["kind"], "Kustomization");
    assert_eq!(f[0]["action"], "deny");
    assert_eq!(f[0]["object"], "flux-system/apps");
    assert_eq!(f[0]["cycle"], serde_json::json!(["flux-system/apps", "flux-system/infra", "flux-system/apps"]));
    assert_eq!(f[0]["message"], "dependsOn cycle: flux-system/apps -> flux-system/infra -> flux-system/apps");
    assert!(f[0]["file"].as_str().unwrap().ends_with("cycle-two-files/apps.yaml"));
    assert_eq!(f[0]["line"], 1);
}

#[test]
fn a_dangling_target_gets_a_hint() {
    let (code, json) = check_json("dangling-hint");
    assert_eq!(code, 1);
    let f = findings(&json);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0]["message"],
        "dangling dependsOn: flux-system/apps depends on Kustomization flux-system/infrastucture, which does not exist; did you mean flux-system/infrastructure?"
    );
    assert_eq!(f[0]["target"], "flux-system/infrastucture");
    assert_eq!(f[0]["line"], 12, "the second document starts on line 12");
}

#[test]
fn warnings_only_exit_zero() {
    let (code, json) = check_json("warnings-only");
    assert_eq!(code, 0);
    let f = findings(&json);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0]["rule"].as_str(), f[0]["action"].as_str()), (Some("duplicateDependsOn"), Some("warn")));
}

#[test]
fn text_output_groups_findings_by_object() {
    let out = fluxgate(&["check", &fixture("cycle-two-files"), &fixture("dangling-hint")]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Kustomization flux-system/apps ("), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("  deny cycle: dependsOn cycle: flux-system/apps -> flux-system/infra")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  deny danglingDependsOn: dangling dependsOn: flux-system/apps")),
        "{text}"
    );
    assert_eq!(*lines.last().unwrap(), "4 objects checked: 2 findings (2 deny, 0 warn), 0 read errors");
}

#[test]
fn usage_and_input_errors_exit_two() {
    assert_eq!(fluxgate(&["check"]).status.code(), Some(2), "no path");
    assert_eq!(fluxgate(&["check", "--format", "xml", "."]).status.code(), Some(2), "bad flag value");
    let missing = fluxgate(&["check", "/nonexistent/fleet", "--format", "json"]);
    assert_eq!(missing.status.code(), Some(2));
    let json: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert!(json["errors"][0]["message"].as_str().unwrap().starts_with("cannot be read"));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: { cycle: maybe }\n").unwrap();
    let bad = fluxgate(&["check", &fixture("anchors"), "--policy", policy.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rules.cycle"), "the error names the key");
}

#[test]
fn policy_file_sets_the_actions() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: { cycle: warn }\n").unwrap();
    let out = fluxgate(&["check", &fixture("cycle-two-files"), "--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "a cycle set to warn does not fail the check");
}

#[test]
fn clusters_reusing_names_are_checked_one_by_one() {
    // Merged, production's apps -> infra and staging's infra -> apps would be a cycle.
    let (code, json) = check_json("multi-cluster");
    assert_eq!(code, 0, "no bogus cycle across clusters: {json}");
    assert_eq!(json["objects"], 4);
    // One cluster's folder on its own works too.
    let out = fluxgate(&["check", &format!("{}/clusters/production", fixture("multi-cluster")), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_child_depending_on_its_waiting_parent_is_found_through_spec_path() {
    let (code, json) = check_json("parent-wait");
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0]["message"],
        "dependsOn cycle: flux-system/apps -> flux-system/web -> flux-system/apps (flux-system/apps -> flux-system/web is a wait: flux-system/apps has spec.wait: true and applies it)"
    );
}

#[test]
fn names_built_by_the_parents_post_build_substitution_resolve() {
    let (code, json) = check_json("substitution");
    assert_eq!(code, 0, "0-${{CLUSTER_NAME}}-config is 0-prod-config, ${{CACHE_NAME:=redis}} is redis: {json}");
}

#[test]
fn the_self_managed_root_with_children_depending_on_it_is_no_cycle() {
    // The root applies itself (spec.path holds its own file) and the children that depend on it;
    // a Kustomization never waits for itself, and nothing here has a wait on a dependent.
    let (code, json) = check_json("bootstrap");
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["objects"], 4);
    assert!(findings(&json).is_empty(), "{json}");
    let graph = fluxgate(&["graph", &fixture("bootstrap"), "--format", "json"]);
    assert!(graph.status.success());
    let g: Value = serde_json::from_slice(&graph.stdout).unwrap();
    assert_eq!(g["cycles"], serde_json::json!([]), "{g}");
    let edges = g["edges"].as_array().unwrap();
    assert!(edges.iter().all(|e| e["from"] != e["to"]), "no edge from an object to itself: {g}");
    // `infrastructure` waits for what it applies (a Namespace), not for any Kustomization.
    assert!(edges.iter().all(|e| e["kind"] != "wait"), "{g}");
}

#[test]
fn a_root_waiting_for_children_that_depend_on_it_is_a_deadlock() {
    // The same tree with `wait: true` on the root in Git: kustomize-controller really deadlocks.
    let (code, json) = check_json("bootstrap-root-wait");
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    assert!(!f.is_empty() && f.iter().all(|f| f["rule"] == "cycle"), "{json}");
    let cycles: Vec<&Value> = f.iter().map(|f| &f["cycle"]).collect();
    assert!(
        cycles.iter().all(|c| c.as_array().unwrap().iter().any(|k| k == "flux-system/flux-system")),
        "every cycle goes through the root: {json}"
    );
    assert!(
        f.iter().all(|f| f["message"]
            .as_str()
            .unwrap()
            .contains("flux-system/flux-system has spec.wait: true and applies it")),
        "{json}"
    );
    assert!(!f.iter().any(|f| f["cycle"] == serde_json::json!(["flux-system/flux-system", "flux-system/flux-system"])));
}

//! `fluxgate check` and `fluxgate graph` on fixture trees written for the purpose
//! (`tests/fixtures/`), through the built binary: findings, file and line, both output formats,
//! and every exit code.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{gotk_sync, ks_doc, suggested};

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
    assert_eq!(f[0]["rule"], "danglingDependsOn");
    assert_eq!(suggested(f[0]["message"].as_str().unwrap()), Some("flux-system/infrastructure"), "{json}");
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
    let out =
        fluxgate(&["check", &fixture("cycle-two-files"), "--policy", policy.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "a cycle set to warn does not fail the check");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = findings(&json);
    assert_eq!(f.len(), 1, "the cycle is still reported: {json}");
    assert_eq!((f[0]["rule"].as_str(), f[0]["action"].as_str()), (Some("cycle"), Some("warn")));
    assert_eq!(json["objects"], 2);
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
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(findings(&json).is_empty(), "{json}");
    assert_eq!(json["objects"], 2, "production's apps and infra: {json}");
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

fn not_applied(json: &Value) -> Vec<(String, String)> {
    json["notApplied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["object"].as_str().unwrap().to_string(), n["reason"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn disabled_and_archived_apps_are_noted_not_denied() {
    let (code, json) = check_json("unapplied");
    assert_eq!(code, 0, "nothing applies old or legacy, so nobody waits on their targets: {json}");
    assert!(findings(&json).is_empty(), "{json}");
    let notes = not_applied(&json);
    let reason = |key: &str| notes.iter().find(|(k, _)| k == key).map(|(_, r)| r.as_str()).unwrap_or_default();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        reason("flux-system/old").starts_with("left out of ")
            && reason("flux-system/old").ends_with("apps/kustomization.yaml")
    );
    assert_eq!(reason("flux-system/legacy"), "in an archive folder");
    // What only a disabled Kustomization applies is not applied either.
    assert!(reason("default/old").starts_with("applied only by a Kustomization that is not applied"));
    assert_eq!(json["objects"], 3, "flux-system, apps and web are checked");

    // Asked to, check them against the cluster they would join: now their targets are missing.
    let out = fluxgate(&["check", &fixture("unapplied"), "--format", "json", "--include-unapplied"]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut dangling: Vec<(&str, &str)> =
        findings(&json).iter().map(|f| (f["object"].as_str().unwrap(), f["target"].as_str().unwrap())).collect();
    dangling.sort();
    assert_eq!(
        dangling,
        [
            ("default/old", "default/postgres"),
            ("flux-system/legacy", "flux-system/infrastructure"),
            ("flux-system/old", "flux-system/database")
        ]
    );
}

#[test]
fn a_tree_shared_by_two_clusters_is_checked_in_each() {
    let (code, json) = check_json("shared-tree");
    // web depends on flux-system (each cluster's own root) and on ${CLUSTER}-config, which each
    // cluster builds with its own substitution: found in both, so nothing dangles.
    assert_eq!(code, 0, "{json}");
    assert!(findings(&json).is_empty(), "{json}");
    assert!(not_applied(&json).is_empty(), "{json}");

    // A typo in the shared tree is reported once, though both clusters apply it.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(&fixture("shared-tree")), dir.path());
    let web = dir.path().join("kubernetes/apps/web/ks.yaml");
    let text = std::fs::read_to_string(&web).unwrap().replace("- name: flux-system #", "- name: flux-sytem #");
    std::fs::write(&web, text).unwrap();
    let out = fluxgate(&["check", dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = findings(&json);
    assert_eq!(f.len(), 1, "{json}");
    assert_eq!(f[0]["target"], "flux-system/flux-sytem");
    assert_eq!(suggested(f[0]["message"].as_str().unwrap()), Some("flux-system/flux-system"));
}

#[test]
fn a_root_depending_on_an_app_of_the_shared_tree_that_depends_on_it_is_a_cycle() {
    // The missed cycle of the issue: in one cluster, the root flux-system depends on an app
    // Kustomization that already depends on it, across two files.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(&fixture("shared-tree")), dir.path());
    let root = dir.path().join("clusters/staging/flux-system/gotk-sync.yaml");
    let text = std::fs::read_to_string(&root).unwrap() + "  dependsOn:\n    - name: web\n";
    std::fs::write(&root, text).unwrap();
    let out = fluxgate(&["check", dir.path().to_str().unwrap(), "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{json}");
    let f = findings(&json);
    assert_eq!(f.len(), 1, "only staging's root has the edge: {json}");
    assert_eq!(f[0]["rule"], "cycle");
    assert_eq!(
        f[0]["cycle"],
        serde_json::json!(["flux-system/flux-system", "flux-system/web", "flux-system/flux-system"])
    );
    assert!(f[0]["file"].as_str().unwrap().ends_with("clusters/staging/flux-system/gotk-sync.yaml"));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
}

#[test]
fn objects_without_a_namespace_take_the_appliers_target_namespace() {
    let (code, json) = check_json("applier-namespace");
    assert_eq!(code, 0, "web depends on db, both land in team-a: {json}");
    let graph = fluxgate(&["graph", &fixture("applier-namespace"), "--format", "json"]);
    let g: Value = serde_json::from_slice(&graph.stdout).unwrap();
    let ids: Vec<&str> = g["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"team-a/web") && ids.contains(&"team-a/db"), "{ids:?}");
}

#[test]
fn helm_charts_helmfiles_and_templates_are_skipped_not_errors() {
    let (code, json) = check_json("not-manifests");
    assert_eq!(code, 0, "{json}");
    assert!(json["errors"].as_array().unwrap().is_empty(), "{json}");
    // Chart.yaml and the chart's template, the helmfile, the Jinja template.
    assert_eq!(json["skipped"], 4, "{json}");
    assert_eq!(json["objects"], 3);

    // The same templating inside an applied tree is an error, with file and line.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(&fixture("not-manifests")), dir.path());
    std::fs::write(
        dir.path().join("apps/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  {% for k in x %}\n",
    )
    .unwrap();
    let out = fluxgate(&["check", dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("apps/configmap.yaml"));
    assert_eq!(errors[0]["line"], 4);
}

#[test]
fn alias_heavy_yaml_loads_and_a_yaml_bomb_is_refused_by_its_expanded_size() {
    let (code, json) = check_json("alias-heavy");
    assert_eq!(code, 0, "one anchor used 200 times is legitimate YAML: {json}");
    assert!(json["errors"].as_array().unwrap().is_empty());

    let (code, json) = check_json("yaml-bomb");
    assert_eq!(code, 2, "{json}");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("yaml-bomb/bomb.yaml"));
    assert!(errors[0]["message"].as_str().unwrap().contains("budget"), "{}", errors[0]);
    // The good file beside it was still checked.
    assert_eq!(findings(&json)[0]["object"], "default/good");
}

#[test]
fn a_reference_to_the_other_kind_says_so_with_the_fix() {
    let (code, json) = check_json("cross-kind");
    assert_eq!(code, 1);
    let f = findings(&json);
    assert_eq!(f.len(), 2, "{json}");
    assert_eq!(
        f[0]["message"],
        "dangling dependsOn: flux-system/apps depends on Kustomization rook-ceph/rook-ceph-cluster, which does not \
         exist; a HelmRelease named rook-ceph-cluster exists in rook-ceph; a Kustomization's dependsOn can only name \
         Kustomizations: name the Kustomization that applies it, or use spec.healthChecks"
    );
    assert!(
        f[1]["message"].as_str().unwrap().ends_with(
            "a Kustomization named apps exists in flux-system; a HelmRelease's dependsOn can only name HelmReleases: \
             name a HelmRelease that Kustomization applies, or put the dependsOn on the Kustomization that applies \
             this HelmRelease"
        ),
        "{}",
        f[1]
    );
}

#[test]
fn a_hint_never_names_the_dependent_nor_a_target_that_would_close_a_cycle() {
    let (code, json) = check_json("self-hint");
    assert_eq!(code, 1);
    let f = findings(&json);
    assert_eq!(f.len(), 1, "{json}");
    assert_eq!(f[0]["object"], "vm-jj/vm-jj-secureblue");
    assert_eq!(f[0]["target"], "vm-jj/vm-jj-secureblue-pvc");
    // No hint at all: hints follow the finding after a `;`.
    let message = f[0]["message"].as_str().unwrap();
    assert_eq!(suggested(message), None, "{json}");
    assert!(!message.contains(';'), "{message}");
}

#[test]
fn objects_generated_by_a_resource_set_are_checked() {
    let (code, json) = check_json("resource-set");
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    assert_eq!(f.len(), 1, "web -> api resolves; api -> postgress does not: {json}");
    assert_eq!(f[0]["object"], "apps/api");
    assert_eq!(f[0]["target"], "apps/postgress");
    assert_eq!(suggested(f[0]["message"].as_str().unwrap()), Some("apps/postgres"));
    assert!(f[0]["file"].as_str().unwrap().ends_with("resource-set/apps.yaml"));
    // The ResourceSet fed by a provider is noted, not guessed at, and not an error.
    let notes = json["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{json}");
    assert!(notes[0]["message"].as_str().unwrap().contains("ResourceSet previews: inputs from spec.inputsFrom"));
    assert!(json["errors"].as_array().unwrap().is_empty());
}

#[test]
fn a_self_including_path_with_target_namespace_applies_a_copy_that_the_original_waits_for() {
    let (code, json) = check_json("self-target-namespace");
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    assert_eq!(f.len(), 1, "{json}");
    // The copy in podinfo resolves `infra` in its own namespace: it never becomes ready.
    assert_eq!(f[0]["object"], "podinfo/podinfo");
    assert_eq!(f[0]["target"], "podinfo/infra");
    assert!(f[0]["message"].as_str().unwrap().ends_with("a Kustomization named infra exists in namespace flux-system"));
    assert!(f[0]["file"].as_str().unwrap().ends_with("apps/podinfo/ks.yaml"));
    // ... and the original, with wait: true, waits for the copy it applied.
    let graph = fluxgate(&["graph", &fixture("self-target-namespace"), "--format", "json"]);
    let g: Value = serde_json::from_slice(&graph.stdout).unwrap();
    let waits: Vec<(&str, &str)> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "wait")
        .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(waits, [("flux-system/podinfo", "podinfo/podinfo")]);

    // Without targetNamespace the folder applies the Kustomization itself: no copy, and a
    // Kustomization never waits for itself.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(&fixture("self-target-namespace")), dir.path());
    let ks = dir.path().join("apps/podinfo/ks.yaml");
    let text = std::fs::read_to_string(&ks).unwrap().replace("  targetNamespace: podinfo\n", "");
    std::fs::write(&ks, text).unwrap();
    let out = fluxgate(&["check", dir.path().to_str().unwrap(), "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["objects"], 4);
}

/// The SARIF 2.1.0 JSON schema (`sarif-2.1.0-rtm.5.json`, the schema of the 2.1.0 standard), as
/// the npm registry's `@microsoft/jest-sarif` package ships it (MIT). It is fetched from the
/// registry with `npm pack` into `target/sarif-schema/` on first use rather than kept in the
/// repository; `SARIF_SCHEMA` names a local copy instead.
fn sarif_validator() -> jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let path = match std::env::var_os("SARIF_SCHEMA") {
            Some(p) => PathBuf::from(p),
            None => {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sarif-schema");
                let path = dir.join("package/lib/schemas/sarif-2.1.0-rtm.5.json");
                if !path.exists() {
                    std::fs::create_dir_all(&dir).unwrap();
                    let pack = Command::new("npm")
                        .args(["pack", "--silent", "@microsoft/jest-sarif@1.0.0-beta.0"])
                        .current_dir(&dir)
                        .output()
                        .expect("npm (from the machine's Node.js) fetches the SARIF schema package");
                    assert!(pack.status.success(), "npm pack failed: {}", String::from_utf8_lossy(&pack.stderr));
                    let tarball = String::from_utf8_lossy(&pack.stdout).trim().to_string();
                    let untar = Command::new("tar").args(["xzf", &tarball]).current_dir(&dir).status().unwrap();
                    assert!(untar.success(), "cannot unpack {tarball}");
                }
                path
            }
        };
        let mut schema: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
                .unwrap();
        // The published schema's pattern for `language` has a stray `]`, a literal to an
        // ECMAScript regex and an error to the regex engine that checks the schema's own
        // patterns: escaped here, which matches the same languages.
        fn escape_stray_bracket(v: &mut Value) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        if k == "pattern" && v == "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$" {
                            *v = Value::from("^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}\\]?$");
                        } else {
                            escape_stray_bracket(v);
                        }
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(escape_stray_bracket),
                _ => {}
            }
        }
        escape_stray_bracket(&mut schema);
        schema
    });
    jsonschema::validator_for(schema).expect("the SARIF schema compiles")
}

fn assert_valid_sarif(validator: &jsonschema::Validator, log: &Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(log).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: SARIF log invalid: {errors:?}");
}

/// `check --format F` run from `tests/fixtures` on relative paths, as CI runs it from the
/// repository root.
fn check_in_fixtures(paths: &[&str], format: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .arg("check")
        .args(paths)
        .args(["--format", format])
        .output()
        .unwrap()
}

#[test]
fn sarif_names_every_rule_and_places_each_finding_at_its_file_and_line() {
    let validator = sarif_validator();
    let out = check_in_fixtures(&["cycle-two-files", "warnings-only"], "sarif");
    assert_eq!(out.status.code(), Some(1), "the exit code does not depend on the format");
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid_sarif(&validator, &log, "fixtures");
    let mut tampered = log.clone();
    tampered["runs"][0]["results"][0]["level"] = "deny".into();
    assert!(!validator.is_valid(&tampered), "the schema is enforced: SARIF has no level \"deny\"");
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "cycle",
            "danglingDependsOn",
            "crossNamespaceDependsOn",
            "maxDepth",
            "deleteWithDependents",
            "duplicateDependsOn"
        ]
    );
    for r in rules {
        assert!(r["help"]["text"].as_str().unwrap().len() > 40, "every rule says how to fix it: {r}");
    }
    let by_rule = |id: &str| rules.iter().find(|r| r["id"] == id).unwrap()["defaultConfiguration"].clone();
    assert_eq!(by_rule("cycle"), serde_json::json!({"enabled": true, "level": "error"}));
    assert_eq!(by_rule("crossNamespaceDependsOn")["enabled"], false, "off by default");

    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    let cycle = results.iter().find(|r| r["ruleId"] == "cycle").unwrap();
    assert_eq!(cycle["level"], "error", "deny is an error");
    assert_eq!(cycle["message"]["text"], "dependsOn cycle: flux-system/apps -> flux-system/infra -> flux-system/apps");
    let place = &cycle["locations"][0]["physicalLocation"];
    assert_eq!(place["artifactLocation"]["uri"], "cycle-two-files/apps.yaml", "relative to where check ran");
    assert_eq!(place["region"]["startLine"], 1);
    assert_eq!(rules[cycle["ruleIndex"].as_u64().unwrap() as usize]["id"], "cycle");
    let duplicate = results.iter().find(|r| r["ruleId"] == "duplicateDependsOn").unwrap();
    assert_eq!(duplicate["level"], "warning", "warn is a warning");
    assert_eq!(duplicate["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "warnings-only/flux.yaml");
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
}

#[test]
fn sarif_reports_unreadable_input_as_a_failed_run_with_its_place() {
    let validator = sarif_validator();
    let out = check_in_fixtures(&["broken"], "sarif");
    assert_eq!(out.status.code(), Some(2));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid_sarif(&validator, &log, "broken");
    let invocation = &log["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false, "the results are incomplete");
    let note = &invocation["toolExecutionNotifications"][0];
    assert_eq!(note["level"], "error");
    assert!(note["message"]["text"].as_str().unwrap().starts_with("YAML: "));
    assert_eq!(note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "broken/broken.yaml");
    assert!(note["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64().unwrap() >= 12);
    // The rest was still checked.
    assert_eq!(log["runs"][0]["results"][0]["ruleId"], "danglingDependsOn");
}

#[test]
fn sarif_follows_the_policy_actions() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: { cycle: warn, duplicateDependsOn: off }\n").unwrap();
    let out = fluxgate(&[
        "check",
        &fixture("cycle-two-files"),
        &fixture("warnings-only"),
        "--format",
        "sarif",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid_sarif(&sarif_validator(), &log, "policy");
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "duplicateDependsOn is off: {results:?}");
    assert_eq!((results[0]["ruleId"].as_str(), results[0]["level"].as_str()), (Some("cycle"), Some("warning")));
    let uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap();
    assert!(uri.starts_with("file:///") && uri.ends_with("/cycle-two-files/apps.yaml"), "absolute path: {uri}");
}

/// Every repository of `../shared/fleets` gives a schema-valid log whose results are exactly the
/// findings of `check --format json` (the same rule, level, place and message, in order).
#[test]
fn sarif_of_every_shared_fleet_is_valid_and_carries_every_finding() {
    // `../shared` beside the project, as CI lays it out; FLUXGATE_SHARED where it lies elsewhere.
    let shared = std::env::var_os("FLUXGATE_SHARED")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"), PathBuf::from);
    let corpus = shared.join("fleets");
    let validator = sarif_validator();
    let policy = fluxgate::policy::Policy::default();
    let mut repos = 0;
    for entry in std::fs::read_dir(&corpus).expect("the shared fleets are beside the project") {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        repos += 1;
        let out = fluxgate::check::check_paths(std::slice::from_ref(&dir), &policy);
        let log = fluxgate::cli::sarif(&out, &policy);
        assert_valid_sarif(&validator, &log, &dir.display().to_string());
        let results = log["runs"][0]["results"].as_array().unwrap();
        assert_eq!(results.len(), out.findings.len(), "{}", dir.display());
        for (r, f) in results.iter().zip(&out.findings) {
            assert_eq!(r["ruleId"], f.finding.rule.as_str());
            assert_eq!(r["level"], if f.finding.is_deny() { "error" } else { "warning" });
            assert_eq!(r["message"]["text"], f.finding.message.as_str());
            let uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap();
            assert!(uri.starts_with("file:///"), "{uri}");
            assert!(f.file.exists(), "{} exists", f.file.display());
            assert_eq!(r["locations"][0]["physicalLocation"]["region"]["startLine"], f.line);
        }
        assert_eq!(log["runs"][0]["invocations"][0]["executionSuccessful"], out.errors.is_empty());
    }
    assert!(repos >= 20, "only {repos} repositories in {}", corpus.display());
}

#[test]
fn github_format_annotates_each_finding_and_read_error_at_its_place() {
    let out = check_in_fixtures(&["cycle-two-files", "warnings-only", "broken"], "github");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(
            &"::error file=cycle-two-files/apps.yaml,line=1,title=fluxgate cycle::dependsOn cycle: flux-system/apps -> flux-system/infra -> flux-system/apps"
        ),
        "{text}"
    );
    assert!(
        lines.contains(
            &"::warning file=warnings-only/flux.yaml,line=1,title=fluxgate duplicateDependsOn::duplicate dependsOn: apps/podinfo lists apps/cert-manager 2 times"
        ),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("::error file=broken/broken.yaml,line=") && l.contains("::YAML: ")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("::error file=broken/good.yaml,line=")
            && l.contains("title=fluxgate danglingDependsOn::")),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "four annotations and the summary: {text}");
    assert!(lines[4].ends_with("1 read errors"), "{text}");
}

/// Every `fluxgate check` command in the pre-commit hooks and the CI examples is one the command
/// line accepts, so the examples cannot drift from the flags.
#[test]
fn ci_examples_and_pre_commit_hooks_run_commands_check_accepts() {
    use clap::Parser as _;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let hooks: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap()).unwrap();
    let hooks = hooks.as_array().unwrap();
    assert!(!hooks.is_empty());
    for hook in hooks {
        assert_eq!(hook["pass_filenames"], false, "check needs the whole graph, not the changed files: {hook}");
        let mut argv: Vec<String> = hook["entry"].as_str().unwrap().split_whitespace().map(String::from).collect();
        argv.extend(hook["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
        assert_eq!(argv[..2], ["fluxgate", "check"]);
        fluxgate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    }
    for (file, formats) in [
        ("examples/ci/github-actions.yaml", &["github", "sarif"][..]),
        ("examples/ci/gitlab-ci.yaml", &["sarif", "text"][..]),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let _: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            // Every example checks the checkout it runs in; step names mention `check` too.
            let Some(at) = line.find(" check . ") else { continue };
            // The command's words, up to the shell's redirection or the next command.
            let command = line[at + 1..].split(['>', '|', ';', '&']).next().unwrap();
            let mut argv = vec!["fluxgate".to_string()];
            argv.extend(
                command.split_whitespace().filter(|w| !w.starts_with("${")).map(|w| w.trim_matches('"').to_string()),
            );
            let cli = fluxgate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{file}: {argv:?}: {e}"));
            let fluxgate::cli::Command::Check(args) = cli.command else { panic!("{file}: {argv:?} is not check") };
            seen.push(format!("{:?}", args.format).to_lowercase());
        }
        assert_eq!(seen, formats, "{file}");
    }
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

#[test]
fn a_checkout_without_flux_objects_says_so_and_exits_zero() {
    // Plain Kubernetes YAML built by kustomize (whose own `Kustomization` is not Flux's), and a
    // Helm chart, as in a template repository before its first cluster.
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("apps/web");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: web\nresources:\n  - deployment.yaml\n",
    )
    .unwrap();
    std::fs::write(
        app.join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n",
    )
    .unwrap();
    let chart = dir.path().join("charts/web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart.join("templates/service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();

    let out = fluxgate(&["check", path]);
    assert_eq!(out.status.code(), Some(0), "a warning, not a failure");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!(
            "no Flux Kustomization or HelmRelease found under {path} (2 YAML files read, 2 skipped as not manifests)\n"
        ),
        "not a clean \"0 objects checked\""
    );

    // JSON keeps its shape: no new key, objects 0.
    let out = fluxgate(&["check", path, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["errors", "findings", "notApplied", "notes", "objects", "skipped"]);
    assert_eq!(json["objects"], 0);
    assert_eq!(json["findings"], serde_json::json!([]));

    // One Flux object is enough for the usual summary, even one that nothing applies (left out
    // of its folder's kustomization.yaml): then the path is right and the report says why.
    std::fs::write(
        app.join("ks.yaml"),
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: web\n  namespace: flux-system\n\
         spec:\n  interval: 10m\n  path: ./apps/web\n  prune: true\n  sourceRef: { kind: GitRepository, name: flux-system }\n",
    )
    .unwrap();
    let out = fluxgate(&["check", path]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with(
            "\n0 objects checked: 0 findings (0 deny, 0 warn), 0 read errors, 1 not applied, 2 files skipped (not manifests)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("no Flux"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Applying a repository the way Flux does: small trees built like the real repositories whose
// layouts once gave false findings.
// ---------------------------------------------------------------------------------------------

/// Writes `files` (path, text) under a new temporary folder.
fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn check_tree(dir: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["check", dir.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = fluxgate(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap(), json)
}

/// The `ns/name` of every object `graph --format json` draws, both kinds.
fn drawn(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    for kind in ["kustomization", "helmrelease"] {
        let out = fluxgate(&["graph", dir.to_str().unwrap(), "--format", "json", "--kind", kind]);
        let Ok(g) = serde_json::from_slice::<Value>(&out.stdout) else { continue };
        let views: Vec<&Value> = match g.get("clusters") {
            Some(c) => c.as_array().unwrap().iter().collect(),
            None => vec![&g],
        };
        for v in views {
            ids.extend(
                v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n["missing"] == false)
                    .map(|n| n["id"].as_str().unwrap().to_string()),
            );
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn kustomize_namespace_overrides_the_namespace_a_ks_file_writes() {
    // A stray `namespace: flux-system` in ks.yaml under a folder whose kustomization.yaml says
    // `namespace: kopiur-system`: kustomize puts both objects in kopiur-system.
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "")),
        ("apps/kustomization.yaml", "namespace: kopiur-system\nresources: [ks.yaml, db.yaml]\n".into()),
        (
            "apps/ks.yaml",
            ks_doc("kopiur", Some("flux-system"), "./apps/kopiur", "  dependsOn:\n    - name: kopiur-db\n"),
        ),
        ("apps/db.yaml", ks_doc("kopiur-db", None, "./apps/db", "")),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert!(findings(&json).is_empty(), "{json}");
    assert_eq!(
        drawn(dir.path()),
        ["flux-system/apps", "flux-system/flux-system", "kopiur-system/kopiur", "kopiur-system/kopiur-db"]
    );
}

#[test]
fn empty_resources_apply_nothing_and_hide_no_real_dangling_dependency() {
    // `resources: []` disables the folder: its ks.yaml files are not applied, so they neither
    // get checked nor satisfy the dependency of an applied object.
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/kustomization.yaml", "resources: [apps.yaml, ../../disabled]\n".into()),
        ("clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "  dependsOn:\n    - name: redis\n")),
        ("apps/web.yaml", ks_doc("web", Some("flux-system"), "./apps/web", "")),
        ("disabled/kustomization.yaml", "resources: []\n".into()),
        (
            "disabled/redis.yaml",
            ks_doc("redis", Some("flux-system"), "./disabled/redis", "  dependsOn:\n    - name: nothing\n"),
        ),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    assert_eq!(f.len(), 1, "only the real dangling dependency: {json}");
    assert_eq!(
        (f[0]["object"].as_str(), f[0]["target"].as_str()),
        (Some("flux-system/apps"), Some("flux-system/redis"))
    );
    let notes = not_applied(&json);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "flux-system/redis");
}

#[test]
fn a_stale_copy_of_an_app_tree_that_nothing_applies_is_not_checked() {
    let dir = tree(&[
        ("kubernetes/clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("kubernetes/clusters/prod")),
        ("kubernetes/clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./kubernetes/apps", "")),
        ("kubernetes/apps/web.yaml", ks_doc("web", Some("flux-system"), "./kubernetes/apps/web", "")),
        // The earlier layout, kept in the repository, applied by nothing.
        (
            "kube_old/flux/apps.yaml",
            ks_doc("apps", Some("flux-system"), "./kube_old/apps", "  dependsOn:\n    - name: core\n"),
        ),
        (
            "kube_old/apps/web.yaml",
            ks_doc("web", Some("flux-system"), "./kube_old/apps/web", "  dependsOn:\n    - name: gone\n"),
        ),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert!(findings(&json).is_empty(), "{json}");
    assert_eq!(json["objects"], 3, "flux-system, apps and web of the real cluster: {json}");
    let notes = not_applied(&json);
    assert_eq!(notes.len(), 2, "{notes:?}");
    let reason = |key: &str, of: &str| notes.iter().any(|(k, r)| k == key && r.starts_with(of));
    assert!(reason("flux-system/apps", "not in any path applied from the entry points"), "{notes:?}");
    assert!(reason("flux-system/web", "applied only by a Kustomization that is not applied"), "{notes:?}");
    // One cluster is drawn, not one per folder that nothing applies.
    let out = fluxgate(&["graph", dir.path().to_str().unwrap(), "--format", "json"]);
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(g.get("clusters").is_none(), "{g}");
}

#[test]
fn the_bootstrap_root_exists_though_no_kustomization_yaml_lists_it() {
    // clusters/prod/kustomization.yaml leaves flux-system/ out (as fdk-infra's dev cluster does):
    // Flux created the bootstrap Kustomization itself, so a dependency on it is satisfied.
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/kustomization.yaml", "resources: [infra.yaml]\n".into()),
        (
            "clusters/prod/infra.yaml",
            ks_doc("infra", Some("flux-system"), "./infra", "  dependsOn:\n    - name: flux-system\n"),
        ),
        ("infra/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n".into()),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert!(findings(&json).is_empty(), "{json}");
    assert_eq!(drawn(dir.path()), ["flux-system/flux-system", "flux-system/infra"]);
}

#[test]
fn a_flux_instance_sync_path_is_the_entry_point() {
    let instance = "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata:\n  name: flux\n  namespace: flux-system\n\
                    spec:\n  distribution:\n    version: 2.x\n  sync:\n    kind: GitRepository\n    url: https://example.com/fleet\n    \
                    ref: refs/heads/main\n    path: clusters/dev\n";
    let dir = tree(&[
        ("bootstrap/flux-instance.yaml", instance.into()),
        ("clusters/dev/infra.yaml", ks_doc("infra", Some("flux-system"), "./infra", "")),
        ("clusters/dev/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "  dependsOn:\n    - name: infra\n")),
        ("infra/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into()),
        ("apps/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n".into()),
        // A template for new clusters, synced by nothing.
        ("templates/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "  dependsOn:\n    - name: missing\n")),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert!(findings(&json).is_empty(), "{json}");
    // The Kustomization flux-operator creates for the sync is an object of the cluster.
    assert_eq!(drawn(dir.path()), ["flux-system/apps", "flux-system/flux-system", "flux-system/infra"]);
    assert_eq!(not_applied(&json).len(), 1, "{json}");
}

#[test]
fn a_self_applied_kustomization_with_target_namespace_deadlocks_with_its_copy() {
    // `team` applies its own folder into `team-a`: the copy is a real Kustomization, owned by
    // the original. The original waits for what it applies (wait: true), and the copy's
    // dependsOn names the original: they wait on each other. The originals alone form no cycle.
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        (
            "clusters/prod/team.yaml",
            ks_doc("team", Some("flux-system"), "./teams/a", "  targetNamespace: team-a\n  wait: true\n"),
        ),
        (
            "teams/a/team.yaml",
            ks_doc(
                "team",
                Some("flux-system"),
                "./teams/a",
                "  targetNamespace: team-a\n  wait: true\n  dependsOn:\n    - name: team\n      namespace: flux-system\n",
            ),
        ),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    let cycles: Vec<&Value> = findings(&json).into_iter().filter(|f| f["rule"] == "cycle").collect();
    assert_eq!(code, 1, "{json}");
    assert_eq!(cycles.len(), 1, "{json}");
    let members: Vec<&str> = cycles[0]["cycle"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(members.contains(&"flux-system/team") && members.contains(&"team-a/team"), "{members:?}");
}

#[test]
fn a_broken_file_outside_everything_flux_applies_is_skipped_and_counted() {
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "")),
        ("apps/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into()),
        (
            "tmp/scratch.yaml",
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: [unclosed\n".into(),
        ),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert!(json["errors"].as_array().unwrap().is_empty(), "{json}");
    assert_eq!(json["skipped"], 1, "{json}");

    // The same file inside an applied tree stops the check: Flux could not apply it either.
    std::fs::rename(dir.path().join("tmp/scratch.yaml"), dir.path().join("apps/scratch.yaml")).unwrap();
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 2, "{json}");
    assert!(json["errors"][0]["file"].as_str().unwrap().ends_with("apps/scratch.yaml"), "{json}");
}

#[test]
fn a_cluster_folder_inside_a_checkout_is_checked_from_its_entry_point() {
    let two = |cluster: &str, dep: &str| {
        vec![
            (format!("clusters/{cluster}/flux-system/gotk-sync.yaml"), gotk_sync(&format!("clusters/{cluster}"))),
            (
                format!("clusters/{cluster}/apps.yaml"),
                ks_doc("apps", Some("flux-system"), "./apps", &format!("  dependsOn:\n    - name: {dep}\n")),
            ),
        ]
    };
    let mut files = two("prod", "infra");
    files.extend(two("staging", "typo"));
    files.push(("clusters/prod/infra.yaml".into(), ks_doc("infra", Some("flux-system"), "./infra", "")));
    files.push(("apps/x.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into()));
    files.push(("infra/x.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n".into()));
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    let dir = tree(&files);
    std::fs::create_dir(dir.path().join(".git")).unwrap();

    // The staging cluster's typo is found when the whole checkout is checked...
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 1, "{json}");
    // ...not when the prod folder is, which still sees prod's whole cluster (apps applies ./apps,
    // outside the folder).
    let (code, json) = check_tree(&dir.path().join("clusters/prod"), &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["objects"], 3, "flux-system, apps, infra of prod: {json}");
    // --cluster picks one by the folder it syncs.
    let (code, json) = check_tree(dir.path(), &["--cluster", "staging"]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(findings(&json)[0]["target"], "flux-system/typo");
    let (code, json) = check_tree(dir.path(), &["--cluster", "nowhere"]);
    assert_eq!(code, 2, "{json}");
    assert!(json["errors"][0]["message"].as_str().unwrap().contains("no such cluster"), "{json}");
}

#[test]
fn a_resource_sets_own_depends_on_is_checked_for_dangling_targets_and_cycles() {
    let set = |name: &str, deps: &str| {
        format!(
            "apiVersion: fluxcd.controlplane.io/v1\nkind: ResourceSet\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  \
             dependsOn:\n{deps}  inputs:\n    - tier: web\n  resources:\n    - apiVersion: helm.toolkit.fluxcd.io/v2\n      \
             kind: HelmRelease\n      metadata:\n        name: {name}-<< inputs.tier >>\n      spec:\n        interval: 10m\n        \
             chart:\n          spec:\n            chart: x\n            sourceRef:\n              kind: HelmRepository\n              \
             name: charts\n"
        )
    };
    let dep = |api: &str, kind: &str, name: &str| {
        format!("    - apiVersion: {api}\n      kind: {kind}\n      name: {name}\n      namespace: apps\n")
    };
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "")),
        ("apps/infra.yaml", ks_doc("infra", Some("apps"), "./infra", "")),
        ("infra/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into()),
        (
            "apps/front.yaml",
            set(
                "front",
                &[
                    dep("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "infra"),
                    // A typo: nothing is named infrastructure.
                    dep("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "infrastructure"),
                    // The wrong kind: infra is a Kustomization.
                    dep("helm.toolkit.fluxcd.io/v2", "HelmRelease", "infra"),
                    // Not in the Flux graph: not judged.
                    dep("v1", "Secret", "token"),
                ]
                .concat(),
            ),
        ),
        // back waits for what front renders, and front... does not: no cycle yet.
        ("apps/back.yaml", set("back", &dep("helm.toolkit.fluxcd.io/v2", "HelmRelease", "front-web"))),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 1, "{json}");
    let f = findings(&json);
    let of_sets: Vec<&&Value> = f.iter().filter(|f| f["kind"] == "ResourceSet").collect();
    assert_eq!(of_sets.len(), 2, "{json}");
    assert!(of_sets.iter().all(|f| f["rule"] == "danglingDependsOn" && f["object"] == "apps/front"), "{json}");
    assert!(of_sets.iter().any(|f| f["target"] == "apps/infrastructure"), "{json}");
    let wrong_kind =
        of_sets.iter().find(|f| f["message"].as_str().unwrap().contains("HelmRelease apps/infra")).unwrap();
    assert!(
        wrong_kind["message"].as_str().unwrap().ends_with("; a Kustomization named infra exists in apps"),
        "{wrong_kind}"
    );
    assert!(wrong_kind["file"].as_str().unwrap().ends_with("apps/front.yaml"));
    // The objects they render are checked like any other: back's HelmRelease target exists.
    assert!(f.iter().all(|f| f["kind"] == "ResourceSet"), "{json}");

    // front now waits for back, which waits for what front renders: neither ever renders.
    std::fs::write(
        dir.path().join("apps/front.yaml"),
        set("front", &dep("fluxcd.controlplane.io/v1", "ResourceSet", "back")),
    )
    .unwrap();
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 1, "{json}");
    let cycles: Vec<&Value> = findings(&json).into_iter().filter(|f| f["rule"] == "cycle").collect();
    assert_eq!(cycles.len(), 1, "{json}");
    assert_eq!(cycles[0]["kind"], "ResourceSet");
    let members: Vec<&str> = cycles[0]["cycle"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(members.contains(&"apps/front") && members.contains(&"apps/back"), "{members:?}");
}

#[test]
fn a_kustomization_file_listed_as_a_resource_is_noted_as_a_build_kustomize_refuses() {
    // kustomize (and so Flux) refuses `resources: [sub/kustomization.yaml]`: the path does not
    // build, and what only it would apply is not applied.
    let dir = tree(&[
        ("clusters/prod/flux-system/gotk-sync.yaml", gotk_sync("clusters/prod")),
        ("clusters/prod/apps.yaml", ks_doc("apps", Some("flux-system"), "./apps", "")),
        ("apps/kustomization.yaml", "resources: [web/kustomization.yaml]\n".into()),
        ("apps/web/kustomization.yaml", "resources: [ks.yaml]\n".into()),
        ("apps/web/ks.yaml", ks_doc("web", Some("flux-system"), "./apps/web/app", "")),
    ]);
    let (code, json) = check_tree(dir.path(), &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["objects"], 2, "flux-system and apps: {json}");
    let notes: Vec<&str> = json["notes"].as_array().unwrap().iter().map(|n| n["message"].as_str().unwrap()).collect();
    assert!(
        notes.iter().any(|n| n.contains("web/kustomization.yaml is listed as a resource: kustomize refuses it")),
        "{notes:?}"
    );
    assert_eq!(not_applied(&json).len(), 1, "{json}");
}

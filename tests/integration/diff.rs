//! `fluxgate diff` through the built binary, on pairs of small trees written for the purpose:
//! each kind of change a reviewer asks about (edges, waits, objects, namespace moves, waves,
//! critical path, worst case, blast radius, findings new and fixed), per cluster and kind, in
//! every format, with the exit codes a CI step relies on; and on Git revisions.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{gotk_sync, ks_doc};

fn fluxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate")).args(args).output().unwrap()
}

fn write(dir: &Path, files: &[(String, String)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A `dependsOn` block for `ks_doc`'s `extra`, plus any further spec lines.
fn deps(names: &[&str]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut s = "  dependsOn:\n".to_string();
    for n in names {
        match n.split_once('/') {
            Some((ns, name)) => s.push_str(&format!("    - name: {name}\n      namespace: {ns}\n")),
            None => s.push_str(&format!("    - name: {n}\n")),
        }
    }
    s
}

/// One cluster (`clusters/<cluster>`) of Kustomizations in flux-system, each applying `./apps`
/// (one ConfigMap), each given as (name, dependsOn, extra spec lines).
fn fleet(cluster: &str, objects: &[(&str, &[&str], &str)]) -> Files {
    let docs: Vec<String> = objects
        .iter()
        .map(|(name, d, extra)| ks_doc(name, Some("flux-system"), "./apps", &format!("{}{extra}", deps(d))))
        .collect();
    vec![
        (format!("clusters/{cluster}/flux-system/gotk-sync.yaml"), gotk_sync(&format!("clusters/{cluster}"))),
        (format!("clusters/{cluster}/apps.yaml"), docs.join("---\n")),
        ("apps/cm.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into()),
    ]
}

/// Files of a tree: (path, text).
type Files = Vec<(String, String)>;

struct Pair {
    base: tempfile::TempDir,
    head: tempfile::TempDir,
}

fn pair(base: &[(String, String)], head: &[(String, String)]) -> Pair {
    let p = Pair { base: tempfile::tempdir().unwrap(), head: tempfile::tempdir().unwrap() };
    write(p.base.path(), base);
    write(p.head.path(), head);
    p
}

fn run(p: &Pair, format: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["diff", p.base.path().to_str().unwrap(), p.head.path().to_str().unwrap(), "--format", format];
    args.extend_from_slice(extra);
    let out = fluxgate(&args);
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn diff_json(p: &Pair) -> (i32, Value) {
    let (code, stdout, stderr) = run(p, "json", &[]);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, json)
}

/// The one changed cluster and kind of a diff.
fn only_change(json: &Value) -> &Value {
    let clusters = json["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{json:#}");
    &clusters[0]
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_string()).collect()
}

/// Before: operator -> slow, infra -> db -> three apps. After: db also depends on slow.
fn slow_operator() -> (Files, Files) {
    let apps: &[&str] = &["db"];
    let base = fleet(
        "prod",
        &[
            ("infra", &[], ""),
            ("operator", &[], ""),
            ("slow", &["operator"], "  timeout: 30m\n"),
            ("db", &["infra"], ""),
            ("app-1", apps, ""),
            ("app-2", apps, ""),
            ("app-3", apps, ""),
        ],
    );
    let head = fleet(
        "prod",
        &[
            ("infra", &[], ""),
            ("operator", &[], ""),
            ("slow", &["operator"], "  timeout: 30m\n"),
            ("db", &["infra", "slow"], ""),
            ("app-1", apps, ""),
            ("app-2", apps, ""),
            ("app-3", apps, ""),
        ],
    );
    (base, head)
}

#[test]
fn an_added_edge_shows_its_blast_radius_and_the_waves_critical_path_and_worst_case_it_moves() {
    let (base, head) = slow_operator();
    let p = pair(&base, &head);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "no finding: {json:#}");
    let k = only_change(&json);
    assert_eq!(k["cluster"], "clusters/prod");
    assert_eq!(k["kind"], "Kustomization");
    let added = k["edgesAdded"].as_array().unwrap();
    assert_eq!(added.len(), 1, "{k:#}");
    assert_eq!(added[0]["from"], "flux-system/db");
    assert_eq!(added[0]["to"], "flux-system/slow");
    assert_eq!(added[0]["kind"], "dependsOn");
    // db and the three apps behind it now wait on slow; none did before.
    assert_eq!(added[0]["waiting"], 4);
    assert_eq!(added[0]["newlyWaiting"], 4);
    assert!(k["edgesRemoved"].as_array().unwrap().is_empty());
    assert_eq!(k["waves"]["count"], serde_json::json!({"before": 3, "after": 4}));
    let moves: Vec<(String, u64, u64)> = k["waves"]["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().into(), m["before"].as_u64().unwrap(), m["after"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        moves,
        [
            ("flux-system/app-1".into(), 2, 3),
            ("flux-system/app-2".into(), 2, 3),
            ("flux-system/app-3".into(), 2, 3),
            ("flux-system/db".into(), 1, 2)
        ]
    );
    assert_eq!(k["criticalPath"]["before"].as_array().unwrap().len(), 3);
    assert_eq!(
        k["criticalPath"]["after"].as_array().unwrap().first().unwrap(),
        "flux-system/operator",
        "the longest chain now runs through the operator: {k:#}"
    );
    // The slow object's 30 minutes now sit on the rollout's worst chain.
    let (before, after) =
        (k["worstCase"]["before"]["seconds"].as_u64().unwrap(), k["worstCase"]["after"]["seconds"].as_u64().unwrap());
    assert!(after > before, "{k:#}");
    assert!(k["worstCase"]["after"]["path"].as_array().unwrap().contains(&"flux-system/slow".into()));
    let (_, text, _) = run(&p, "text", &[]);
    assert!(
        text.contains(
            "  + edge flux-system/db -> flux-system/slow (dependsOn): 4 objects wait on flux-system/slow (4 newly)\n"
        ),
        "{text}"
    );
    assert!(text.contains("    flux-system/db: wave 1 -> wave 2\n"), "{text}");

    // The same change the other way round is a removed edge, and nothing waits newly.
    let p = pair(&head, &base);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0);
    let k = only_change(&json);
    assert!(k["edgesAdded"].as_array().unwrap().is_empty());
    assert_eq!(ids(&k["edgesRemoved"], "to"), ["flux-system/slow"]);
    assert_eq!(k["waves"]["count"], serde_json::json!({"before": 4, "after": 3}));
}

#[test]
fn an_unchanged_checkout_reports_nothing_and_exits_0() {
    let (base, _) = slow_operator();
    let p = pair(&base, &base);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0);
    assert!(json["clusters"].as_array().unwrap().is_empty(), "{json:#}");
    let (_, text, _) = run(&p, "text", &[]);
    assert!(text.ends_with("no change to the dependsOn graphs, waves or findings\n"), "{text}");
}

#[test]
fn objects_added_and_removed_are_listed_with_their_wave_and_file() {
    let base = fleet("prod", &[("infra", &[], ""), ("old-app", &["infra"], "")]);
    let head = fleet("prod", &[("infra", &[], ""), ("new-app", &[], "")]);
    let p = pair(&base, &head);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    let k = only_change(&json);
    // A new object with no dependsOn lands in wave 0: what a reviewer wants to see.
    let added = &k["objectsAdded"][0];
    assert_eq!(added["id"], "flux-system/new-app");
    assert_eq!(added["wave"], 0);
    assert_eq!(added["file"], "clusters/prod/apps.yaml", "files are named relative to the side's root");
    assert!(added["line"].as_u64().unwrap() > 1);
    assert_eq!(ids(&k["objectsRemoved"], "id"), ["flux-system/old-app"]);
    assert_eq!(k["objectsRemoved"][0]["wave"], 1);
    assert_eq!(ids(&k["edgesRemoved"], "from"), ["flux-system/old-app"]);
    assert!(k["moved"].as_array().unwrap().is_empty());
}

#[test]
fn an_object_moved_to_another_namespace_is_one_move_not_a_removal_and_an_addition() {
    // `apps` applies ./team holding `web` (depending on db, beside it); HEAD gives apps a
    // targetNamespace, which moves both into team-a.
    let files = |target: &str| {
        let mut f = fleet("prod", &[("apps", &[], target)]);
        f.push((
            "team/ks.yaml".into(),
            [
                ks_doc("db", Some("flux-system"), "./apps", ""),
                ks_doc("web", Some("flux-system"), "./apps", &deps(&["db"])),
            ]
            .join("---\n"),
        ));
        f.iter_mut().find(|(p, _)| p == "clusters/prod/apps.yaml").unwrap().1 =
            ks_doc("apps", Some("flux-system"), "./team", target);
        f
    };
    let p = pair(&files(""), &files("  targetNamespace: team-a\n"));
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    let k = only_change(&json);
    let moved: Vec<(String, String)> = k["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_str().unwrap().into(), m["to"].as_str().unwrap().into()))
        .collect();
    assert_eq!(moved, [("flux-system/db".into(), "team-a/db".into()), ("flux-system/web".into(), "team-a/web".into())]);
    assert!(k["objectsAdded"].as_array().unwrap().is_empty(), "{k:#}");
    assert!(k["objectsRemoved"].as_array().unwrap().is_empty(), "{k:#}");
    // web -> db is the same edge under the new names.
    assert!(k["edgesAdded"].as_array().unwrap().is_empty(), "{k:#}");
    assert!(k["edgesRemoved"].as_array().unwrap().is_empty(), "{k:#}");
}

#[test]
fn a_parent_that_starts_waiting_for_its_children_adds_wait_edges() {
    let files = |wait: &str| {
        let mut f = fleet("prod", &[]);
        f.retain(|(p, _)| p != "clusters/prod/apps.yaml");
        f.push(("clusters/prod/apps.yaml".into(), ks_doc("apps", Some("flux-system"), "./team", wait)));
        f.push((
            "team/ks.yaml".into(),
            [ks_doc("db", Some("flux-system"), "./apps", ""), ks_doc("web", Some("flux-system"), "./apps", "")]
                .join("---\n"),
        ));
        f
    };
    let p = pair(&files(""), &files("  wait: true\n"));
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    let k = only_change(&json);
    let added: Vec<(String, String, String)> = k["edgesAdded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["from"].as_str().unwrap().into(), e["to"].as_str().unwrap().into(), e["kind"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(
        added,
        [
            ("flux-system/apps".into(), "flux-system/db".into(), "wait".into()),
            ("flux-system/apps".into(), "flux-system/web".into(), "wait".into())
        ]
    );
    let (_, text, _) = run(&p, "text", &[]);
    assert!(text.contains("+ edge flux-system/apps -> flux-system/db (wait)"), "{text}");
}

#[test]
fn a_new_deny_level_finding_exits_1_and_a_fixed_one_is_reported_and_exits_0() {
    let fixed = fleet("prod", &[("database", &[], ""), ("app", &["database"], "")]);
    let broken = fleet("prod", &[("database", &[], ""), ("app", &["databse"], "")]);

    let p = pair(&fixed, &broken);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 1, "HEAD adds a dangling dependsOn: {json:#}");
    let new = json["newFindings"].as_array().unwrap();
    assert_eq!(new.len(), 1, "{json:#}");
    assert_eq!(new[0]["rule"], "danglingDependsOn");
    assert_eq!(new[0]["object"], "flux-system/app");
    assert_eq!(new[0]["target"], "flux-system/databse");
    assert_eq!(new[0]["action"], "deny");
    assert_eq!(new[0]["file"], "clusters/prod/apps.yaml");
    assert_eq!(new[0]["clusters"], serde_json::json!(["clusters/prod"]));
    assert!(json["fixedFindings"].as_array().unwrap().is_empty());

    let p = pair(&broken, &fixed);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    assert!(json["newFindings"].as_array().unwrap().is_empty());
    let gone = json["fixedFindings"].as_array().unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["target"], "flux-system/databse");
}

#[test]
fn old_problems_do_not_fail_a_change_that_adds_none() {
    // Both sides have the same dangling target and the same cycle; HEAD adds an unrelated edge.
    let objects = |extra: &'static [&'static str]| -> Files {
        fleet(
            "prod",
            &[("a", &["b"], ""), ("b", &["a"], ""), ("app", &["missing"], ""), ("infra", &[], ""), ("web", extra, "")],
        )
    };
    let p = pair(&objects(&[]), &objects(&["infra"]));
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    assert!(json["newFindings"].as_array().unwrap().is_empty(), "{json:#}");
    assert!(json["fixedFindings"].as_array().unwrap().is_empty(), "{json:#}");
    assert_eq!(only_change(&json)["edgesAdded"].as_array().unwrap().len(), 1);
    // `check` on HEAD alone fails: the problems are there, just not new.
    let out = fluxgate(&["check", p.head.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_cycle_closed_by_the_change_is_a_new_finding_whatever_member_it_is_reported_from() {
    let base = fleet("prod", &[("a", &["b"], ""), ("b", &["c"], ""), ("c", &[], "")]);
    let head = fleet("prod", &[("a", &["b"], ""), ("b", &["c"], ""), ("c", &["a"], "")]);
    let p = pair(&base, &head);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 1, "{json:#}");
    let new = json["newFindings"].as_array().unwrap();
    assert_eq!(new.len(), 1, "one cycle, one finding: {json:#}");
    assert_eq!(new[0]["rule"], "cycle");
    let k = only_change(&json);
    // Every member loses its wave.
    assert_eq!(k["waves"]["moved"].as_array().unwrap().len(), 3, "{k:#}");
    assert!(k["waves"]["moved"].as_array().unwrap().iter().all(|m| m["after"].is_null()));
}

#[test]
fn helm_releases_are_compared_as_their_own_graph() {
    let hr = |name: &str, d: &[&str]| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  \
             interval: 10m\n  chart:\n    spec:\n      chart: x\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n{}",
            deps(d)
        )
    };
    let files = |hrs: Vec<String>| {
        let mut f = fleet("prod", &[("apps", &[], "")]);
        f.push(("apps/releases.yaml".into(), hrs.join("---\n")));
        f
    };
    let p = pair(
        &files(vec![hr("postgres", &[]), hr("app", &[])]),
        &files(vec![hr("postgres", &[]), hr("app", &["postgres"])]),
    );
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    let k = only_change(&json);
    assert_eq!(k["kind"], "HelmRelease");
    assert_eq!(ids(&k["edgesAdded"], "to"), ["apps/postgres"]);
    assert_eq!(k["edgesAdded"][0]["waiting"], 1);
}

#[test]
fn each_cluster_is_compared_on_its_own() {
    let two = |staging_dep: &'static [&'static str]| {
        let mut f = fleet("prod", &[("infra", &[], ""), ("apps", &["infra"], "")]);
        f.extend(fleet("staging", &[("infra", &[], ""), ("apps", staging_dep, "")]));
        f
    };
    let p = pair(&two(&[]), &two(&["infra"]));
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    let k = only_change(&json);
    assert_eq!(k["cluster"], "clusters/staging", "prod did not change: {json:#}");
    assert_eq!(ids(&k["edgesAdded"], "from"), ["flux-system/apps"]);

    // A cluster that only HEAD has is added whole.
    let mut with_dev = two(&[]);
    with_dev.extend(fleet("dev", &[("infra", &[], "")]));
    let p = pair(&two(&[]), &with_dev);
    let (_, json) = diff_json(&p);
    let k = only_change(&json);
    assert_eq!((k["cluster"].as_str().unwrap(), k["change"].as_str().unwrap()), ("clusters/dev", "added"));
}

#[test]
fn sarif_and_github_annotations_carry_only_the_findings_the_change_adds() {
    let base = fleet("prod", &[("old", &["gone"], ""), ("app", &[], "")]);
    let head = fleet("prod", &[("old", &["gone"], ""), ("app", &["typo"], "")]);
    let p = pair(&base, &head);

    let (code, sarif, _) = run(&p, "sarif", &[]);
    assert_eq!(code, 1);
    let sarif: Value = serde_json::from_str(&sarif).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{sarif:#}");
    assert!(results[0]["message"]["text"].as_str().unwrap().contains("flux-system/typo"));
    assert_eq!(results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "clusters/prod/apps.yaml");

    let (code, annotations, _) = run(&p, "github", &[]);
    assert_eq!(code, 1);
    let errors: Vec<&str> = annotations.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(errors.len(), 1, "{annotations}");
    assert!(errors[0].starts_with("::error file=clusters/prod/apps.yaml,line="), "{annotations}");
    assert!(errors[0].contains("flux-system/typo"));
}

#[test]
fn markdown_puts_a_short_summary_first_and_folds_the_details() {
    let (base, head) = slow_operator();
    let p = pair(&base, &head);
    let (code, md, _) = run(&p, "markdown", &[]);
    assert_eq!(code, 0);
    assert!(md.starts_with("<!-- fluxgate-diff -->\n### fluxgate diff\n\n✅ No new deny-level finding."), "{md}");
    let (summary, details) = md.split_once("<details>").expect("details are folded");
    // The totals name only what changed.
    assert!(summary.contains(": 1 edge added, 4 objects changed wave; 0 new findings (0 deny), 0 fixed.\n"), "{md}");
    assert!(summary.contains("| `clusters/prod` | Kustomization | +0 −0 | +1 −0 | 3 → 4 (4 moved) | 3 → 4 |"), "{md}");
    assert!(
        summary.contains(
            "- `flux-system/slow` (Kustomization, `clusters/prod`): **4** newly waiting (4 in all), through 1 new edge"
        ),
        "{md}"
    );
    assert!(details.contains("**Wave changes** (3 → 4 waves)"), "{md}");
    // GitHub renders Markdown inside <details> only after a blank line.
    assert!(
        details.starts_with(
            "<summary><code>clusters/prod</code> · Kustomization: 1 edge added, 4 changed wave</summary>\n\n"
        ),
        "{details}"
    );
}

#[test]
fn markdown_stays_short_above_the_fold_at_200_changed_objects() {
    let names: Vec<String> = (0..200).map(|i| format!("app-{i:03}")).collect();
    let mut objects: Vec<(&str, &[&str], &str)> = vec![("platform", &[], "")];
    let on_platform: &[&str] = &["platform"];
    objects.extend(names.iter().map(|n| (n.as_str(), on_platform, "")));
    let p = pair(&fleet("prod", &[("platform", &[], "")]), &fleet("prod", &objects));
    let (code, md, _) = run(&p, "markdown", &[]);
    assert_eq!(code, 0);
    let (summary, _) = md.split_once("<details>").unwrap();
    assert!(summary.lines().count() < 20, "the summary is a few lines, whatever the size: {summary}");
    assert!(summary.contains("| +200 −0 | +200 −0 | 1 → 2 |"), "{summary}");
    assert!(summary.contains("**200** newly waiting (200 in all), through 200 new edges"), "{summary}");
    // Tables stop at 100 rows and say how many more there are.
    assert!(md.contains("… and 100 more (`fluxgate diff --format json` lists every one)."), "{md}");
    assert!(md.len() < 65_536, "fits a GitHub comment: {} characters", md.len());
    // The JSON keeps everything.
    let (_, json) = diff_json(&p);
    assert_eq!(only_change(&json)["objectsAdded"].as_array().unwrap().len(), 200);
}

#[test]
fn markdown_is_cut_to_fit_a_github_comment_keeping_the_summary() {
    // Twelve clusters of 120 new objects each: far more detail than a comment holds.
    let names: Vec<String> = (0..120).map(|i| format!("service-with-a-long-name-{i:03}")).collect();
    let on_platform: &[&str] = &["platform"];
    let mut objects: Vec<(&str, &[&str], &str)> = vec![("platform", &[], "")];
    objects.extend(names.iter().map(|n| (n.as_str(), on_platform, "")));
    let clusters: Vec<String> = (0..12).map(|c| format!("c{c:02}")).collect();
    let base: Files = clusters.iter().flat_map(|c| fleet(c, &[("platform", &[], "")])).collect();
    let head: Files = clusters.iter().flat_map(|c| fleet(c, &objects)).collect();
    let p = pair(&base, &head);
    let (_, md, _) = run(&p, "markdown", &[]);
    assert!(md.chars().count() <= 65_536, "{} characters", md.chars().count());
    assert!(md.ends_with("`fluxgate diff --format json` has every change.\n"), "{}", &md[md.len() - 300..]);
    assert_eq!(md.matches("<details").count(), md.matches("</details>").count(), "no block left open");
    // The summary table names every cluster whatever is cut.
    for c in &clusters {
        assert!(md.contains(&format!("| `clusters/{c}` | Kustomization | +120 −0 |")), "{c}");
    }
}

#[test]
fn a_file_head_cannot_read_exits_2_but_one_both_sides_share_does_not() {
    let good = fleet("prod", &[("app", &[], "")]);
    let mut broken = good.clone();
    broken.push(("apps/broken.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n".into()));
    let p = pair(&good, &broken);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(json["newErrors"][0]["file"], "apps/broken.yaml");
    let p = pair(&broken, &broken);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["oldErrors"].as_array().unwrap().len(), 1);
}

#[test]
fn a_missing_folder_or_bad_revision_is_a_usage_error_naming_it() {
    let out = fluxgate(&["diff", "/nonexistent/base", "."]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BASE /nonexistent/base: no such file or folder"), "{stderr}");

    let repo = git_repo(&fleet("prod", &[("app", &[], "")]));
    let out = fluxgate(&["diff", "--git", "--repo", repo.path().to_str().unwrap(), "no-such-branch"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BASE: \"no-such-branch\" is not a revision of the Git repository"), "{stderr}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn git_repo(files: &[(String, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    write(dir.path(), files);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "base"]);
    dir
}

#[test]
fn git_revisions_are_read_without_touching_the_work_tree() {
    let (base, head) = slow_operator();
    let repo = git_repo(&base);
    write(repo.path(), &head);
    git(repo.path(), &["commit", "-qam", "db waits for slow"]);
    let r = repo.path().to_str().unwrap();

    let out = fluxgate(&["diff", "--git", "--repo", r, "HEAD~1", "HEAD", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["base"].as_str().unwrap().starts_with("HEAD~1 ("), "{json}");
    assert_eq!(ids(&only_change(&json)["edgesAdded"], "to"), ["flux-system/slow"]);
    assert_eq!(only_change(&json)["objectsAdded"], serde_json::json!([]));

    // Without HEAD, the work tree as it is: an uncommitted edit is compared.
    write(repo.path(), &base);
    let out = fluxgate(&["diff", "--git", "--repo", r, "HEAD", "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&only_change(&json)["edgesRemoved"], "to"), ["flux-system/slow"], "{json}");
    // The repository's own index and work tree are as they were: only our edit shows.
    let status = Command::new("git").arg("-C").arg(repo.path()).args(["status", "--porcelain"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), " M clusters/prod/apps.yaml\n");
}

/// The shapes of real commits checked by hand (docs/testing.md, "diff on real history"): rafaribe/home-ops c24d0aaf7
/// deployed an operator whose Kustomizations depended on objects that did not exist yet (two
/// new deny-level findings), and 37b3b3da7 reverted it (the same two fixed); 9b5b11341 put
/// dozens of apps behind that operator at once.
#[test]
fn real_history_shapes_deploy_revert_and_fan_in() {
    let before = fleet("prod", &[("volsync", &[], ""), ("app-a", &["volsync"], ""), ("app-b", &["volsync"], "")]);
    let deployed = fleet(
        "prod",
        &[
            ("volsync", &[], ""),
            ("app-a", &["volsync"], ""),
            ("app-b", &["volsync"], ""),
            ("kopiur-crds", &[], ""),
            ("kopiur", &["kopiur-crds", "nfs-backend"], ""),
            ("kopiur-backends", &["kopiur", "external-secrets"], ""),
        ],
    );
    let p = pair(&before, &deployed);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 1, "{json:#}");
    let targets: Vec<String> = ids(&json["newFindings"], "target");
    assert_eq!(targets, ["flux-system/nfs-backend", "flux-system/external-secrets"]);
    assert_eq!(only_change(&json)["objectsAdded"].as_array().unwrap().len(), 3);
    let p = pair(&deployed, &before);
    let (code, json) = diff_json(&p);
    assert_eq!(code, 0);
    assert_eq!(json["fixedFindings"].as_array().unwrap().len(), 2);
    assert_eq!(only_change(&json)["objectsRemoved"].as_array().unwrap().len(), 3);

    // Fan-in: every app gains a dependsOn on kopiur; each edge's blast radius is all of them.
    let fan = fleet(
        "prod",
        &[
            ("kopiur", &[], ""),
            ("volsync", &[], ""),
            ("app-a", &["volsync", "kopiur"], ""),
            ("app-b", &["volsync", "kopiur"], ""),
        ],
    );
    let p = pair(
        &fleet(
            "prod",
            &[("kopiur", &[], ""), ("volsync", &[], ""), ("app-a", &["volsync"], ""), ("app-b", &["volsync"], "")],
        ),
        &fan,
    );
    let (_, json) = diff_json(&p);
    let added = only_change(&json)["edgesAdded"].as_array().unwrap().clone();
    assert_eq!(added.len(), 2);
    assert!(
        added.iter().all(|e| e["to"] == "flux-system/kopiur" && e["waiting"] == 2 && e["newlyWaiting"] == 2),
        "{added:?}"
    );
}

/// Every `fluxgate diff` command of the CI example is one the command line accepts, in the
/// formats the workflow needs: the comment (Markdown), then the annotations that fail the job.
#[test]
fn the_ci_example_runs_commands_diff_accepts() {
    use clap::Parser as _;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/github-actions-diff.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let _: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("not YAML: {e}"));
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some(at) = line.find(" diff /base . ") else { continue };
        let command = line[at + 1..].split(['>', '|', ';', '&']).next().unwrap();
        let mut argv = vec!["fluxgate".to_string()];
        // Shell variables (the optional policy) and line continuations are the shell's.
        argv.extend(command.split_whitespace().filter(|w| !w.contains('$') && *w != "\\").map(String::from));
        let cli = fluxgate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let fluxgate::cli::Command::Diff(args) = cli.command else { panic!("{argv:?} is not diff") };
        seen.push(format!("{:?}", args.format).to_lowercase());
    }
    assert_eq!(seen, ["markdown", "github"]);
}

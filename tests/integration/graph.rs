//! `fluxgate graph`: waves and the critical path on a known graph, cycles and waits marked, and
//! output that Graphviz's `dot` accepts.

use crate::common::graphviz;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

fn root(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel).to_str().unwrap().to_string()
}

fn graph(path: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxgate")).args(["graph", path, "--format", format]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn example_fleet_has_known_waves_and_critical_path() {
    let g: Value = serde_json::from_str(&graph(&root("examples/fleet"), "json")).unwrap();
    let f = |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("flux-system/{n}")).collect() };
    assert_eq!(
        g["waves"],
        json!([
            f(&["crds", "production-namespace"]),
            f(&["logging", "monitoring", "operators", "production-infrastructure"]),
            f(&["app-a", "app-b", "infrastructure", "production-config"]),
            f(&["applications", "production-backend"]),
            f(&["production-frontend"]),
        ])
    );
    assert_eq!(
        g["criticalPath"],
        json!(f(&[
            "production-namespace",
            "production-infrastructure",
            "production-config",
            "production-backend",
            "production-frontend"
        ]))
    );
    assert_eq!(g["cycles"], json!([]));
    // Each object's budget: its timeout, else its interval minus 30 s. production-namespace
    // (interval 60m: 59m30s) + production-infrastructure (timeout 15m) + production-config
    // (interval 5m: 4m30s) + production-backend (timeout 10m) + production-frontend (4m30s).
    assert_eq!(g["worstCase"]["seconds"], 3570 + 900 + 270 + 600 + 270);
    assert_eq!(g["worstCase"]["path"], g["criticalPath"]);
    let dot = graph(&root("examples/fleet"), "dot");
    assert!(dot.contains("worst-case rollout 1h33m30s"), "{dot}");
    assert!(dot.contains("label=\"flux-system/crds\\nwave 0\""), "one DOT line break, not a literal one: {dot}");
}

#[test]
fn cycles_and_wait_edges_are_marked() {
    let g: Value = serde_json::from_str(&graph(&root("tests/fixtures/cycle-two-files"), "json")).unwrap();
    assert_eq!(g["cycles"], json!([["flux-system/apps", "flux-system/infra", "flux-system/apps"]]));
    assert!(g["nodes"].as_array().unwrap().iter().all(|n| n["inCycle"] == true && n["wave"].is_null()));
    assert_eq!(g["waves"], json!([]));

    let g: Value = serde_json::from_str(&graph(&root("tests/fixtures/parent-wait"), "json")).unwrap();
    let wait = g["edges"].as_array().unwrap().iter().find(|e| e["kind"] == "wait").expect("a wait edge");
    assert_eq!((wait["from"].as_str(), wait["to"].as_str()), (Some("flux-system/apps"), Some("flux-system/web")));
    assert_eq!(wait["inCycle"], true);
}

fn dot_accepts(source: &str) {
    assert!(graphviz::dot_svg(source).contains("<svg"));
}

#[test]
fn dot_output_renders_with_graphviz() {
    for path in [
        "examples/fleet",
        "tests/fixtures/cycle-two-files",
        "tests/fixtures/parent-wait",
        "tests/fixtures/dangling-hint",
    ] {
        dot_accepts(&graph(&root(path), "dot"));
    }
    // A real repository, when the shared fleets are beside the project.
    let fleet = root("../shared/fleets/onedr0p__home-ops");
    if std::path::Path::new(&fleet).exists() {
        dot_accepts(&graph(&fleet, "dot"));
    }
}

#[test]
fn mermaid_output_has_waves_and_edges() {
    let m = graph(&root("examples/fleet"), "mermaid");
    assert!(m.starts_with("flowchart BT\n"));
    assert!(m.contains("subgraph wave0 [\"wave 0\"]"));
    assert_eq!(m.matches(" --> ").count(), 13, "{m}");
}

#[test]
fn clusters_reusing_names_are_drawn_one_by_one() {
    // Merged, production's apps -> infra and staging's infra -> apps would draw a cycle.
    let g: Value = serde_json::from_str(&graph(&root("tests/fixtures/multi-cluster"), "json")).unwrap();
    let clusters = g["clusters"].as_array().expect("one graph per cluster");
    assert_eq!(clusters.len(), 2);
    for c in clusters {
        assert_eq!(c["cycles"], json!([]), "{}", c["cluster"]);
        assert_eq!(c["waves"].as_array().unwrap().len(), 2);
    }
    assert!(clusters[0]["cluster"].as_str().unwrap().ends_with("clusters/production"));
    assert_eq!(clusters[0]["waves"][0], json!(["flux-system/infra"]));
    assert_eq!(clusters[1]["waves"][0], json!(["flux-system/apps"]));
    dot_accepts(&graph(&root("tests/fixtures/multi-cluster"), "dot"));
}

/// A repository laid out as `flux bootstrap` leaves it for two clusters: each cluster's
/// `flux-system` Kustomization applies its folder, where both clusters name `apps`, `infra` and
/// `monitoring` but wire them differently. Staging: infra, then apps on infra, then monitoring
/// on apps. Production: apps, then infra on apps, and monitoring on `crds`, which it does not
/// have. Merged into one graph, apps and infra would form a cycle.
fn two_cluster_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ks = |name: &str, path: &str, deps: &[&str]| {
        let mut doc = format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  \
             namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  \
             sourceRef: {{ kind: GitRepository, name: flux-system }}\n"
        );
        if !deps.is_empty() {
            doc.push_str("  dependsOn:\n");
            for d in deps {
                doc.push_str(&format!("    - name: {d}\n"));
            }
        }
        doc
    };
    for (cluster, wiring) in [
        ("staging", [("infra", &[][..]), ("apps", &["infra"][..]), ("monitoring", &["apps"][..])]),
        ("production", [("apps", &[][..]), ("infra", &["apps"][..]), ("monitoring", &["crds"][..])]),
    ] {
        let root = dir.path().join("clusters").join(cluster);
        std::fs::create_dir_all(root.join("flux-system")).unwrap();
        std::fs::write(
            root.join("flux-system/gotk-sync.yaml"),
            ks("flux-system", &format!("./clusters/{cluster}"), &[]),
        )
        .unwrap();
        std::fs::write(
            root.join("flux-system/kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - gotk-sync.yaml\n",
        )
        .unwrap();
        let docs: Vec<String> =
            wiring.iter().map(|(name, deps)| ks(name, &format!("./kubernetes/{cluster}/{name}"), deps)).collect();
        std::fs::write(root.join("apps.yaml"), docs.join("---\n")).unwrap();
    }
    dir
}

/// The `<title>` of every node Graphviz drew: its DOT id, as the SVG writes it.
fn svg_node_ids(svg: &str) -> Vec<String> {
    svg.split("<g id=\"node")
        .skip(1)
        .map(|g| g.split_once("<title>").unwrap().1.split_once("</title>").unwrap().0.to_string())
        .collect()
}

#[test]
fn a_repository_of_two_clusters_is_one_dot_document_with_a_box_per_cluster() {
    let repo = two_cluster_repo();
    let path = repo.path().to_str().unwrap();
    let g: Value = serde_json::from_str(&graph(path, "json")).unwrap();
    let clusters = g["clusters"].as_array().expect("the loader splits the clusters");
    assert_eq!(clusters.len(), 2);
    let index = |name: &str| clusters.iter().position(|c| c["cluster"].as_str().unwrap().ends_with(name)).unwrap();
    let (production, staging) = (index("clusters/production"), index("clusters/staging"));

    let dot = graph(path, "dot");
    assert_eq!(dot.matches("digraph").count(), 1, "one document: {dot}");
    assert_eq!(dot.matches("subgraph cluster_").count(), 2, "{dot}");
    // Each box is titled with its folder under the path given, and neither has a cycle.
    assert!(dot.contains("label=\"clusters/staging\\n3 waves, critical path 3 objects\\n"), "{dot}");
    assert!(dot.contains("label=\"clusters/production\\n2 waves, critical path 2 objects\\n"), "{dot}");
    assert_eq!(dot.matches(", 0 cycles\"").count(), 2, "{dot}");
    // The same ns/name in each cluster is a node of its own, wired as that cluster wires it,
    // the critical path in blue; production's missing target is marked.
    let (s, p) = (format!("c{staging} flux-system"), format!("c{production} flux-system"));
    assert!(dot.contains(&format!("\"{s}/apps\" -> \"{s}/infra\" [color=blue, penwidth=2];")), "{dot}");
    assert!(dot.contains(&format!("\"{p}/infra\" -> \"{p}/apps\" [color=blue, penwidth=2];")), "{dot}");
    assert!(
        dot.contains(&format!("\"{p}/crds\" [style=dashed, color=gray, label=\"flux-system/crds\\n(missing)\"];")),
        "{dot}"
    );
    assert!(dot.contains(&format!("\"{s}/infra\" [label=\"flux-system/infra\\nwave 0\"];")), "{dot}");
    assert!(dot.contains(&format!("\"{p}/infra\" [label=\"flux-system/infra\\nwave 1\"];")), "{dot}");

    // Graphviz draws it as one picture holding the nodes of both clusters, labelled ns/name.
    // Graphviz writes `-` in texts as `&#45;`.
    let svg = graphviz::dot_svg(&dot).replace("&#45;", "-");
    assert_eq!(svg.matches("<svg ").count(), 1);
    assert_eq!(svg.matches("<g id=\"clust").count(), 2, "{svg}");
    let mut ids = svg_node_ids(&svg);
    ids.sort();
    let mut expected: Vec<String> = ["apps", "flux-system", "infra", "monitoring"]
        .iter()
        .flat_map(|n| [format!("{s}/{n}"), format!("{p}/{n}")])
        .chain([format!("{p}/crds")])
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(svg.matches(">flux-system/apps</text>").count(), 2, "{svg}");
    assert!(svg.contains(">clusters/staging</text>") && svg.contains(">clusters/production</text>"), "{svg}");
}

#[test]
fn a_repository_of_two_clusters_is_one_mermaid_flowchart_with_a_subgraph_per_cluster() {
    let repo = two_cluster_repo();
    let m = graph(repo.path().to_str().unwrap(), "mermaid");
    assert!(m.starts_with("flowchart BT\n"), "{m}");
    assert_eq!(m.matches("flowchart").count(), 1, "{m}");
    assert!(m.contains("  subgraph c0 [\"clusters/production\"]\n    subgraph c0wave0 [\"wave 0\"]\n"), "{m}");
    assert!(m.contains("  subgraph c1 [\"clusters/staging\"]\n"), "{m}");
    // Node ids are unique across clusters though both hold flux-system/apps.
    let apps: Vec<&str> = m
        .lines()
        .filter(|l| l.ends_with("[\"flux-system/apps\"]"))
        .map(|l| l.trim().split('[').next().unwrap())
        .collect();
    assert_eq!(apps.len(), 2, "{m}");
    assert_ne!(apps[0], apps[1]);
    assert!(m.contains("[\"flux-system/crds (missing)\"]:::missing"), "{m}");
    // Every id an edge names is declared once.
    for edge in m.lines().filter(|l| l.contains(" --> ")) {
        for id in edge.trim().split(" --> ") {
            assert_eq!(m.matches(&format!("{id}[\"")).count(), 1, "{id} in {m}");
        }
    }
}

/// `ricsanfre__pi-cluster` of the shared fleets: three clusters, one of them 13 waves deep with
/// names up to 49 characters, which Graphviz drew 4,579 px wide.
#[test]
fn a_deep_real_fleet_draws_as_one_picture_no_wider_than_the_corpus_check_allows() {
    let fleet = root("../shared/fleets/ricsanfre__pi-cluster");
    if !std::path::Path::new(&fleet).exists() {
        return;
    }
    // The repository holds templates fluxgate cannot read (exit 2): the rest is drawn.
    let out = Command::new(env!("CARGO_BIN_EXE_fluxgate")).args(["graph", &fleet, "--format", "dot"]).output().unwrap();
    let dot = String::from_utf8(out.stdout).unwrap();
    // Its clusters agree on every shared name, so they are drawn as one graph.
    assert_eq!(dot.matches("digraph").count(), 1, "{dot}");
    let svg = graphviz::dot_svg(&dot);
    assert_eq!(svg.matches("<svg ").count(), 1);
    let width_pt: f64 = svg.split_once("<svg width=\"").unwrap().1.split_once("pt\"").unwrap().0.parse().unwrap();
    // tests/page.rs holds every fleet to 4,000 px at 100% zoom (1 pt = 4/3 px).
    assert!(width_pt * 4.0 / 3.0 <= 4000.0, "{width_pt} pt");
    assert!(!svg.contains("scale(0"), "Graphviz shrank the drawing");
    // The long names are wrapped, not cut: the 49-character one is all there.
    assert!(svg.contains(">flux&#45;system/</text>") && svg.contains(">elasticsearch&#45;</text>"), "{svg}");
}

//! `fluxgate graph`: waves and the critical path on a known graph, cycles and waits marked, and
//! output that Graphviz's `dot` accepts.

#[path = "common/graphviz.rs"]
mod graphviz;

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

//! `fluxgate graph`: the dependsOn graph with its waves (what can reconcile in parallel), the
//! critical path (the longest chain, which bounds a full rollout) and cycles marked.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use super::{GraphArgs, KindArg};
use crate::graph::{EdgeKind, Graph, NodeId};
use crate::manifests;
use crate::object::{FluxKind, ObjectKey};
use crate::status::{self, KindReport, ObjectReport, Rollout, State, StatusReport, page};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
    /// The status page's renderer, without live status: one self-contained HTML file.
    Html,
}

/// The graph as `fluxgate graph --format json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GraphView {
    /// The cluster (its roots' folder) when a repository holds several that reuse names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub kind: FluxKind,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// Wave k holds the objects that can reconcile once waves 0..k are ready.
    pub waves: Vec<Vec<String>>,
    /// The longest chain, dependencies first: its length is the number of sequential steps.
    #[serde(rename = "criticalPath")]
    pub critical_path: Vec<String>,
    pub cycles: Vec<Vec<String>>,
    /// The worst-case time of a full rollout and its chain.
    #[serde(rename = "worstCase")]
    pub worst_case: WorstCase,
}

/// The slowest chain of a rollout, each object taking its whole time budget (`spec.timeout`, else
/// Flux's default: the interval minus 30 s, at least 30 s).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorstCase {
    pub seconds: u64,
    /// Dependencies first.
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    /// `None` for members of a cycle and what depends on them, and for dangling targets.
    pub wave: Option<u32>,
    pub missing: bool,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    /// `dependsOn` or `wait`.
    pub kind: &'static str,
    #[serde(rename = "inCycle")]
    pub in_cycle: bool,
}

/// Computes the view of one graph; `budgets` holds each object's time budget (30 s when absent).
pub fn view(graph: &Graph, budgets: &HashMap<ObjectKey, Duration>) -> GraphView {
    let waves = graph.waves();
    let sccs = graph.cycles();
    let in_cycle: HashSet<NodeId> = sccs.iter().flat_map(|s| s.members.iter().copied()).collect();
    let mut ids: Vec<NodeId> =
        graph.node_ids().filter(|&id| graph.is_present(id) || graph.dependents(id).next().is_some()).collect();
    ids.sort_by(|a, b| graph.key(*a).cmp(graph.key(*b)));
    let name = |id: NodeId| graph.key(id).to_string();
    let nodes = ids
        .iter()
        .map(|&id| NodeView {
            id: name(id),
            wave: if graph.is_present(id) { waves[id as usize] } else { None },
            missing: !graph.is_present(id),
            in_cycle: in_cycle.contains(&id),
        })
        .collect();
    let mut edges = Vec::new();
    for &id in &ids {
        // dependsOn edges in the order written, then wait edges by key: the same picture
        // whatever order the objects arrived in.
        let mut out: Vec<(NodeId, EdgeKind)> = graph.out_edges(id).collect();
        let first_wait = out.iter().position(|(_, k)| *k == EdgeKind::Wait).unwrap_or(out.len());
        out[first_wait..].sort_by(|a, b| graph.key(a.0).cmp(graph.key(b.0)));
        for (to, kind) in out {
            edges.push(EdgeView {
                from: name(id),
                to: name(to),
                kind: match kind {
                    EdgeKind::DependsOn => "dependsOn",
                    EdgeKind::Wait => "wait",
                },
                in_cycle: in_cycle.contains(&id) && in_cycle.contains(&to),
            });
        }
    }
    let depth = waves.iter().flatten().max().map_or(0, |m| m + 1);
    let mut wave_lists = vec![Vec::new(); depth as usize];
    for &id in &ids {
        if let Some(w) = waves[id as usize].filter(|_| graph.is_present(id)) {
            wave_lists[w as usize].push(name(id));
        }
    }
    GraphView {
        cluster: None,
        kind: graph.kind(),
        nodes,
        edges,
        waves: wave_lists,
        critical_path: graph.critical_path(&waves).into_iter().map(name).collect(),
        cycles: sccs.iter().map(|s| s.cycle.iter().map(|&id| name(id)).collect()).collect(),
        worst_case: {
            let (time, path) =
                status::worst_case(graph, &waves, |k| budgets.get(k).copied().unwrap_or(Duration::from_secs(30)));
            WorstCase { seconds: time.as_secs(), path: path.into_iter().map(name).collect() }
        },
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// A DOT label of several lines: each line escaped, joined by DOT's own line break.
fn label(lines: &[&str]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| escape(l)).collect();
    format!("\"{}\"", lines.join("\\n"))
}

/// Renders a view in `format`.
pub fn render_graph(view: &GraphView, format: GraphFormat) -> String {
    match format {
        GraphFormat::Json => serde_json::to_string_pretty(view).expect("view serialises") + "\n",
        GraphFormat::Dot => dot(view),
        GraphFormat::Mermaid => mermaid(view),
        GraphFormat::Html => html(std::slice::from_ref(view)),
    }
}

/// The views as the status page draws them: objects without status, by wave.
fn html(views: &[GraphView]) -> String {
    let kinds = views.iter().map(kind_report).collect();
    let title = format!("fluxgate graph: {}", views.first().map_or("", |v| v.kind.as_str()));
    page::render(&StatusReport { kinds }, &title, false)
}

fn kind_report(view: &GraphView) -> KindReport {
    let key = |id: &str| {
        let (ns, name) = id.split_once('/').unwrap_or(("", id));
        ObjectKey::new(ns, name)
    };
    let objects = view
        .nodes
        .iter()
        .filter(|n| !n.missing)
        .map(|n| ObjectReport {
            kind: view.kind,
            id: key(&n.id),
            state: State::Unknown,
            wave: n.wave,
            reason: None,
            message: None,
            since: None,
            in_cycle: n.in_cycle,
            roots: Vec::new(),
            depends_on: view
                .edges
                .iter()
                .filter(|e| e.from == n.id && e.kind == "dependsOn")
                .map(|e| key(&e.to))
                .collect(),
            uid: None,
        })
        .collect();
    KindReport {
        cluster: view.cluster.clone(),
        kind: view.kind,
        objects,
        cycles: view.cycles.iter().map(|c| c.iter().map(|id| key(id)).collect()).collect(),
        missing: view.nodes.iter().filter(|n| n.missing).map(|n| key(&n.id)).collect(),
        critical_path: view.critical_path.iter().map(|id| key(id)).collect(),
        rollout: Rollout {
            worst_case_seconds: view.worst_case.seconds,
            worst_case_path: view.worst_case.path.iter().map(|id| key(id)).collect(),
            wave_seconds: Vec::new(),
        },
    }
}

fn dot(view: &GraphView) -> String {
    let critical: HashSet<(&str, &str)> =
        view.critical_path.windows(2).map(|w| (w[1].as_str(), w[0].as_str())).collect();
    let mut s = String::new();
    let title = view.cluster.as_ref().map_or(String::new(), |c| format!("{c}: "));
    writeln!(s, "digraph {} {{", quote(&format!("fluxgate {title}"))).unwrap();
    writeln!(
        s,
        "  label={};",
        quote(&format!(
            "{title}{} dependsOn graph: {} waves, critical path {} objects, worst-case rollout {}, {} cycles",
            view.kind,
            view.waves.len(),
            view.critical_path.len(),
            status::format_seconds(view.worst_case.seconds),
            view.cycles.len()
        ))
    )
    .unwrap();
    // One column per wave, wave 0 on the left (edges run from dependent to dependency, so
    // right-to-left ranking puts dependencies first): the width grows with the number of waves,
    // not with the number of objects, which a long ribbon of one rank made unreadable.
    writeln!(s, "  labelloc=t;\n  rankdir=RL;\n  newrank=true;\n  ranksep=0.5;\n  nodesep=0.12;").unwrap();
    writeln!(s, "  node [shape=box, style=rounded, fontsize=12, height=0.3];").unwrap();
    for (i, wave) in view.waves.iter().enumerate() {
        writeln!(s, "  subgraph {} {{\n    rank=same;", quote(&format!("wave {i}"))).unwrap();
        for n in wave {
            writeln!(s, "    {} [label={}];", quote(n), label(&[n, &format!("wave {i}")])).unwrap();
        }
        writeln!(s, "  }}").unwrap();
    }
    for n in view.nodes.iter().filter(|n| n.wave.is_none()) {
        let (style, note) =
            if n.missing { ("style=dashed, color=gray", "(missing)") } else { ("color=red", "(cycle)") };
        writeln!(s, "  {} [{style}, label={}];", quote(&n.id), label(&[&n.id, note])).unwrap();
    }
    for e in &view.edges {
        let mut attrs = Vec::new();
        if e.kind == "wait" {
            attrs.push("style=dashed, label=\"wait\"".to_string());
        }
        if e.in_cycle {
            attrs.push("color=red, penwidth=2".to_string());
        } else if critical.contains(&(e.from.as_str(), e.to.as_str())) {
            attrs.push("color=blue, penwidth=2".to_string());
        }
        writeln!(s, "  {} -> {} [{}];", quote(&e.from), quote(&e.to), attrs.join(", ")).unwrap();
    }
    writeln!(s, "}}").unwrap();
    s
}

fn mermaid(view: &GraphView) -> String {
    let ids: std::collections::HashMap<&str, String> =
        view.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), format!("n{i}"))).collect();
    let mut s = String::new();
    if let Some(cluster) = &view.cluster {
        writeln!(s, "%% cluster {cluster}").unwrap();
    }
    s.push_str("flowchart BT\n");
    for (i, wave) in view.waves.iter().enumerate() {
        writeln!(s, "  subgraph wave{i} [\"wave {i}\"]").unwrap();
        for n in wave {
            writeln!(s, "    {}[\"{}\"]", ids[n.as_str()], n).unwrap();
        }
        writeln!(s, "  end").unwrap();
    }
    for n in view.nodes.iter().filter(|n| n.wave.is_none()) {
        let note = if n.missing { "missing" } else { "cycle" };
        writeln!(s, "  {}[\"{} ({note})\"]:::{note}", ids[n.id.as_str()], n.id).unwrap();
    }
    for e in &view.edges {
        let arrow = if e.kind == "wait" { "-. wait .->" } else { "-->" };
        writeln!(s, "  {} {arrow} {}", ids[e.from.as_str()], ids[e.to.as_str()]).unwrap();
    }
    s.push_str("  classDef cycle stroke:#d00,stroke-width:2px\n  classDef missing stroke-dasharray: 4 4\n");
    s
}

pub fn run(args: GraphArgs) -> ExitCode {
    let loaded = manifests::load(&args.paths);
    for e in &loaded.errors {
        eprintln!("fluxgate graph: {e}");
    }
    let kind = match args.kind {
        KindArg::Kustomization => FluxKind::Kustomization,
        KindArg::HelmRelease => FluxKind::HelmRelease,
    };
    let budgets = |members: &mut dyn Iterator<Item = &manifests::Loaded>| -> HashMap<ObjectKey, Duration> {
        members.filter_map(|l| Some((l.object.key.clone(), l.status.timeout?))).collect()
    };
    if loaded.clusters.is_empty() {
        let (graphs, _) = super::check::build_graphs(&loaded.objects);
        let budgets = budgets(&mut loaded.objects.iter().filter(|l| l.object.kind == kind));
        print!("{}", render_graph(&view(graphs.get(kind), &budgets), args.format));
    } else {
        // Clusters that reuse names are drawn one by one, as `check` checks them.
        let views: Vec<GraphView> = loaded
            .clusters
            .iter()
            .map(|c| {
                let (graphs, _) = super::check::build_graphs(c.members.iter().map(|&i| &loaded.objects[i]));
                let budgets =
                    budgets(&mut c.members.iter().map(|&i| &loaded.objects[i]).filter(|l| l.object.kind == kind));
                GraphView { cluster: Some(c.folder.display().to_string()), ..view(graphs.get(kind), &budgets) }
            })
            .collect();
        match args.format {
            GraphFormat::Json => {
                let all = serde_json::json!({ "clusters": views });
                println!("{}", serde_json::to_string_pretty(&all).expect("views serialise"));
            }
            GraphFormat::Html => print!("{}", html(&views)),
            format => {
                let rendered: Vec<String> = views.iter().map(|v| render_graph(v, format)).collect();
                print!("{}", rendered.join("\n"));
            }
        }
    }
    if loaded.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

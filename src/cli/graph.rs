//! `fluxgate graph`: the dependsOn graph with its waves (what can reconcile in parallel), the
//! critical path (the longest chain, which bounds a full rollout) and cycles marked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;

use super::{GraphArgs, KindArg};
use crate::graph::{GraphView, view};
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

/// Renders `views` in `format` as one document: several clusters become subgraphs of one DOT
/// `digraph` or Mermaid `flowchart` (Graphviz draws only the first of several documents), and
/// JSON keeps one view, or `{"clusters": [...]}` when the views belong to clusters.
pub fn render_graphs(views: &[GraphView], format: GraphFormat) -> String {
    match (format, views) {
        (GraphFormat::Json, [view]) if view.cluster.is_none() => {
            serde_json::to_string_pretty(view).expect("view serialises") + "\n"
        }
        (GraphFormat::Json, _) => {
            serde_json::to_string_pretty(&serde_json::json!({ "clusters": views })).expect("views serialise") + "\n"
        }
        (GraphFormat::Dot, _) => dot(views),
        (GraphFormat::Mermaid, _) => mermaid(views),
        (GraphFormat::Html, _) => html(views),
    }
}

/// Renders one view in `format`.
pub fn render_graph(view: &GraphView, format: GraphFormat) -> String {
    render_graphs(std::slice::from_ref(view), format)
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

/// Past this estimated width (points) a DOT drawing wraps long labels. Graphviz draws one column
/// per wave, each as wide as its longest label, so a deep graph with long names runs wider than
/// a screen: 3,000 pt is 4,000 px at 100% zoom, less room for the margins and for edges routed
/// around the boxes.
const DOT_MAX_WIDTH_PT: f64 = 2700.0;
/// Graphviz's default font at `fontsize=12`: a box takes about 6.3 pt per character of its
/// longest line plus 11 pt of margin, and `ranksep=0.5` puts 36 pt between columns.
const DOT_PT_PER_CHAR: f64 = 6.3;
const DOT_COLUMN_EXTRA_PT: f64 = 11.0 + 36.0;
/// The longest line of a wrapped label.
const DOT_WRAP_CHARS: usize = 24;

/// The width Graphviz will need for `views` drawn in one document, in points: the columns of
/// wave k of every cluster share one rank, so each column is as wide as the longest label of
/// that wave in any cluster.
fn dot_estimated_width(views: &[GraphView]) -> f64 {
    let depth = views.iter().map(|v| v.waves.len()).max().unwrap_or(0);
    let mut columns: Vec<usize> = (0..depth)
        .map(|k| views.iter().filter_map(|v| v.waves.get(k)).flatten().map(|n| n.len()).max().unwrap_or(0))
        .collect();
    // Cycle members and missing targets have no wave: they take at least one column more.
    columns.extend(views.iter().flat_map(|v| &v.nodes).filter(|n| n.wave.is_none()).map(|n| n.id.len()).max());
    columns.iter().map(|&chars| chars as f64 * DOT_PT_PER_CHAR + DOT_COLUMN_EXTRA_PT).sum()
}

/// `ns/name` on lines of at most [`DOT_WRAP_CHARS`] characters where it can be broken: the
/// namespace on a line of its own, the name after a `-`, `.` or `_`, in lines of even length
/// (`prometheus-` `elasticsearch-` `exporter-app`, not a lone `app` last). Still read as
/// `ns/name`.
fn wrapped(id: &str) -> Vec<&str> {
    if id.len() <= DOT_WRAP_CHARS {
        return vec![id];
    }
    let (namespace, name) = id.split_at(id.find('/').map_or(0, |i| i + 1));
    let fewest = fill(name, DOT_WRAP_CHARS).len();
    // The narrowest width that needs no more lines than the widest allowed.
    let even = (1..DOT_WRAP_CHARS).map(|w| fill(name, w)).find(|lines| lines.len() <= fewest);
    let mut lines: Vec<&str> = [namespace].into_iter().filter(|ns| !ns.is_empty()).collect();
    lines.extend(even.unwrap_or_else(|| fill(name, DOT_WRAP_CHARS)));
    lines
}

/// `name` broken greedily after `-`, `.` or `_` into lines of at most `width` characters; a
/// piece longer than that stays whole.
fn fill(name: &str, width: usize) -> Vec<&str> {
    let mut lines = Vec::new();
    let (mut line_start, mut end) = (0, 0);
    for piece in name.split_inclusive(['-', '.', '_']) {
        if end > line_start && end + piece.len() - line_start > width {
            lines.push(&name[line_start..end]);
            line_start = end;
        }
        end += piece.len();
    }
    lines.push(&name[line_start..]);
    lines
}

/// The figures a DOT title gives for one view, in three parts: what the graph is, its waves and
/// critical path, its worst case and cycles.
fn dot_summary(view: &GraphView) -> [String; 3] {
    [
        format!("{} dependsOn graph", view.kind),
        format!("{} waves, critical path {} objects", view.waves.len(), view.critical_path.len()),
        format!("worst-case rollout {}, {} cycles", status::format_seconds(view.worst_case.seconds), view.cycles.len()),
    ]
}

/// One DOT document for all `views`: a single view without a cluster as a plain graph, else
/// each view as a `subgraph cluster_N` (Graphviz's box) whose node ids carry the cluster's
/// number, since two clusters may each hold a different object named `ns/name`.
fn dot(views: &[GraphView]) -> String {
    let wrap = dot_estimated_width(views) > DOT_MAX_WIDTH_PT;
    let mut s = String::new();
    match views {
        [view] if view.cluster.is_none() => {
            writeln!(s, "digraph {} {{", quote("fluxgate ")).unwrap();
            let [what, waves, worst] = dot_summary(view);
            writeln!(s, "  label={};", quote(&format!("{what}: {waves}, {worst}"))).unwrap();
        }
        _ => {
            writeln!(s, "digraph {} {{", quote("fluxgate")).unwrap();
            let kinds: BTreeSet<&str> = views.iter().map(|v| v.kind.as_str()).collect();
            let kinds: Vec<&str> = kinds.into_iter().collect();
            let title = format!(
                "{} dependsOn graphs of {} clusters that give one name to different objects, drawn apart",
                kinds.join(" and "),
                views.len()
            );
            writeln!(s, "  label={};", quote(&title)).unwrap();
        }
    }
    // One column per wave, wave 0 on the left (edges run from dependent to dependency, so
    // right-to-left ranking puts dependencies first): the width grows with the number of waves,
    // not with the number of objects, which a long ribbon of one rank made unreadable. With
    // several clusters, each cluster's box is a band of its own and wave k of every cluster
    // shares a column.
    writeln!(s, "  labelloc=t;\n  rankdir=RL;\n  newrank=true;\n  ranksep=0.5;\n  nodesep=0.12;").unwrap();
    writeln!(s, "  node [shape=box, style=rounded, fontsize=12, height=0.3];").unwrap();
    match views {
        [view] if view.cluster.is_none() => dot_body(&mut s, view, "", "  ", wrap),
        _ => {
            for (c, view) in views.iter().enumerate() {
                writeln!(s, "  subgraph cluster_{c} {{").unwrap();
                // Short lines: a title wider than its cluster's columns widens the box, and a
                // small cluster's box then reaches past the others and widens the drawing.
                let folder = view.cluster.as_deref().unwrap_or_default();
                let [_, waves, worst] = dot_summary(view);
                writeln!(s, "    label={};", label(&[folder, &waves, &worst])).unwrap();
                // `r`: Graphviz mirrors the justification of cluster labels under rankdir=RL, and
                // the title belongs on the left, over wave 0.
                writeln!(s, "    labeljust=r;\n    style=rounded;\n    color=gray;").unwrap();
                dot_body(&mut s, view, &format!("c{c} "), "    ", wrap);
                writeln!(s, "  }}").unwrap();
            }
            // Wave k of every cluster in one column, so that columns read the same across the
            // boxes (newrank lets a rank span clusters): one object of each cluster's wave is
            // enough, its wave subgraph holds the rest in line.
            let depth = views.iter().map(|v| v.waves.len()).max().unwrap_or(0);
            for k in 0..depth {
                let firsts: Vec<String> = views
                    .iter()
                    .enumerate()
                    .filter_map(|(c, v)| Some(quote(&format!("c{c} {}", v.waves.get(k)?.first()?))))
                    .collect();
                if firsts.len() > 1 {
                    writeln!(s, "  {{ rank=same; {}; }}", firsts.join("; ")).unwrap();
                }
            }
        }
    }
    writeln!(s, "}}").unwrap();
    s
}

/// The waves, the objects without a wave and the edges of one view, node ids and wave
/// subgraph names starting with `prefix` (DOT merges subgraphs and nodes of one name).
fn dot_body(s: &mut String, view: &GraphView, prefix: &str, indent: &str, wrap: bool) {
    let critical: HashSet<(&str, &str)> =
        view.critical_path.windows(2).map(|w| (w[1].as_str(), w[0].as_str())).collect();
    let id = |n: &str| quote(&format!("{prefix}{n}"));
    let node_label = |n: &str, note: &str| {
        let mut lines = if wrap { wrapped(n) } else { vec![n] };
        lines.push(note);
        label(&lines)
    };
    for (i, wave) in view.waves.iter().enumerate() {
        writeln!(s, "{indent}subgraph {} {{\n{indent}  rank=same;", quote(&format!("{prefix}wave {i}"))).unwrap();
        for n in wave {
            writeln!(s, "{indent}  {} [label={}];", id(n), node_label(n, &format!("wave {i}"))).unwrap();
        }
        writeln!(s, "{indent}}}").unwrap();
    }
    for n in view.nodes.iter().filter(|n| n.wave.is_none()) {
        let (style, note) =
            if n.missing { ("style=dashed, color=gray", "(missing)") } else { ("color=red", "(cycle)") };
        writeln!(s, "{indent}{} [{style}, label={}];", id(&n.id), node_label(&n.id, note)).unwrap();
    }
    for e in &view.edges {
        let mut attrs = Vec::new();
        if e.kind == "wait" {
            // A wait edge often joins two objects of one wave. Graphviz draws the label of such a
            // flat edge as a node of the rank beside it, which inside a cluster loses the edge
            // ("lost edge", exit 1); an external label is placed after layout.
            let label = if prefix.is_empty() { "label" } else { "xlabel" };
            attrs.push(format!("style=dashed, {label}=\"wait\""));
        }
        if e.in_cycle {
            attrs.push("color=red, penwidth=2".to_string());
        } else if critical.contains(&(e.from.as_str(), e.to.as_str())) {
            attrs.push("color=blue, penwidth=2".to_string());
        }
        writeln!(s, "{indent}{} -> {} [{}];", id(&e.from), id(&e.to), attrs.join(", ")).unwrap();
    }
}

/// One Mermaid flowchart for all `views`: a single view without a cluster as it is, else each
/// view as a subgraph, with node and subgraph ids numbered per cluster.
fn mermaid(views: &[GraphView]) -> String {
    let mut s = String::from("flowchart BT\n");
    let ids: Vec<HashMap<&str, String>> = views
        .iter()
        .enumerate()
        .map(|(c, view)| {
            let prefix = if views.len() == 1 && view.cluster.is_none() { String::new() } else { format!("c{c}") };
            view.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), format!("{prefix}n{i}"))).collect()
        })
        .collect();
    match views {
        [view] if view.cluster.is_none() => mermaid_nodes(&mut s, view, &ids[0], "", "  "),
        _ => {
            for (c, view) in views.iter().enumerate() {
                // Mermaid ends a quoted label at a double quote; `#quot;` is its escape.
                let title = view.cluster.as_deref().unwrap_or(view.kind.as_str()).replace('"', "#quot;");
                writeln!(s, "  subgraph c{c} [\"{title}\"]").unwrap();
                mermaid_nodes(&mut s, view, &ids[c], &format!("c{c}"), "    ");
                writeln!(s, "  end").unwrap();
            }
        }
    }
    // Edges after every subgraph: an edge written inside a subgraph makes its ends members of
    // that subgraph.
    for (view, ids) in views.iter().zip(&ids) {
        for e in &view.edges {
            let arrow = if e.kind == "wait" { "-. wait .->" } else { "-->" };
            writeln!(s, "  {} {arrow} {}", ids[e.from.as_str()], ids[e.to.as_str()]).unwrap();
        }
    }
    s.push_str("  classDef cycle stroke:#d00,stroke-width:2px\n  classDef missing stroke-dasharray: 4 4\n");
    s
}

fn mermaid_nodes(s: &mut String, view: &GraphView, ids: &HashMap<&str, String>, prefix: &str, indent: &str) {
    for (i, wave) in view.waves.iter().enumerate() {
        writeln!(s, "{indent}subgraph {prefix}wave{i} [\"wave {i}\"]").unwrap();
        for n in wave {
            writeln!(s, "{indent}  {}[\"{}\"]", ids[n.as_str()], n).unwrap();
        }
        writeln!(s, "{indent}end").unwrap();
    }
    for n in view.nodes.iter().filter(|n| n.wave.is_none()) {
        let note = if n.missing { "missing" } else { "cycle" };
        writeln!(s, "{indent}{}[\"{} ({note})\"]:::{note}", ids[n.id.as_str()], n.id).unwrap();
    }
}

pub fn run(args: GraphArgs) -> ExitCode {
    let loaded = manifests::load_with(
        &args.paths,
        manifests::LoadOptions { cluster: args.cluster.clone(), ..Default::default() },
    );
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
        let (graphs, _) = crate::check::build_graphs(&loaded.objects);
        let budgets = budgets(&mut loaded.objects.iter().filter(|l| l.object.kind == kind));
        print!("{}", render_graph(&view(graphs.get(kind), &budgets), args.format));
    } else {
        // Clusters that reuse names are drawn one by one, as `check` checks them.
        let views: Vec<GraphView> = loaded
            .clusters
            .iter()
            .map(|c| {
                let (graphs, _) = crate::check::build_graphs(c.members.iter().map(|&i| &loaded.objects[i]));
                let budgets =
                    budgets(&mut c.members.iter().map(|&i| &loaded.objects[i]).filter(|l| l.object.kind == kind));
                GraphView { cluster: Some(c.folder.display().to_string()), ..view(graphs.get(kind), &budgets) }
            })
            .collect();
        // JSON and HTML name each cluster by its full folder, as `check` does; a picture's
        // titles take the folder under the path given, which is what tells the clusters apart.
        let views = match args.format {
            GraphFormat::Dot | GraphFormat::Mermaid => views
                .into_iter()
                .map(|v| GraphView { cluster: v.cluster.map(|c| under_paths(Path::new(&c), &args.paths)), ..v })
                .collect(),
            _ => views,
        };
        print!("{}", render_graphs(&views, args.format));
    }
    if loaded.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

/// `folder` under the first of `paths` that holds it (`clusters/production` for a checkout given
/// as its root), else as it is. The loader names folders with `.` and `..` resolved in the
/// text of the path (`a/./b/../c` is `a/c`), so the paths given are compared the same way.
fn under_paths(folder: &Path, paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| folder.strip_prefix(manifests::normalize(p)).ok())
        .find(|rel| !rel.as_os_str().is_empty())
        .unwrap_or(folder)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_wrap_after_the_namespace_and_at_hyphens_short_ones_stay_whole() {
        assert_eq!(wrapped("flux-system/cilium-app"), ["flux-system/cilium-app"]);
        assert_eq!(
            wrapped("flux-system/cert-manager-webhook-ionos"),
            ["flux-system/", "cert-manager-", "webhook-ionos"]
        );
        assert_eq!(
            wrapped("flux-system/prometheus-elasticsearch-exporter-app"),
            ["flux-system/", "prometheus-", "elasticsearch-", "exporter-app"]
        );
        // Nothing to break at: the name stays whole rather than being cut mid-word.
        assert_eq!(
            wrapped("default/averyveryverylongnamewithoutbreaks"),
            ["default/", "averyveryverylongnamewithoutbreaks"]
        );
        for id in ["flux-system/kube-prometheus-stack-externalnodes", "observability/loki.stack_v2-config"] {
            let lines = wrapped(id);
            assert_eq!(lines.concat(), id, "every character kept, in order");
            assert!(lines.iter().all(|l| l.len() <= DOT_WRAP_CHARS), "{lines:?}");
        }
    }

    #[test]
    fn cluster_folders_are_named_under_the_path_given_however_it_is_written() {
        let folder = Path::new("/work/fleets/home-ops/kubernetes/clusters/prod");
        for given in ["/work/fleets/home-ops", "/work/fleets/home-ops/", "/work/other/../fleets/./home-ops"] {
            assert_eq!(under_paths(folder, &[PathBuf::from(given)]), "kubernetes/clusters/prod", "{given}");
        }
        assert_eq!(under_paths(Path::new("home-ops/clusters/a"), &[PathBuf::from("./home-ops")]), "clusters/a");
        assert_eq!(under_paths(Path::new("../up/clusters/a"), &[PathBuf::from("../up")]), "clusters/a");
        // A folder outside every path, or the path itself, keeps its full name.
        assert_eq!(under_paths(folder, &[PathBuf::from("/elsewhere")]), folder.display().to_string());
        assert_eq!(under_paths(folder, &[folder.to_path_buf()]), folder.display().to_string());
    }
}

//! The dependsOn graph at 100,000 Kustomizations (the synthetic fleet of `benches/common`:
//! tenants of 50 apps behind a hub, 2,000 hubs depending on one platform object): what the
//! graph's storage (petgraph's `StableGraph` and the key tables) and its algorithms cost.
//!
//! `cargo bench --bench graph` (`-- --objects N` for another size). Prints, for each step, the
//! median and the 99th percentile of many runs; asserts nothing:
//! - building the graph from the objects (once per audit, status report and `check`);
//! - the admission step: the candidate put in (one `dependsOn` edge added to an app), the cycle
//!   search from it, and the old object put back;
//! - the same step for an update to a hub, whose 50 dependents' edges stay in place;
//! - the whole-graph scans: strongly connected components (petgraph's Kosaraju), waves.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::graph::Graph;
use fluxgate::object::{FluxKind, FluxObject, ObjectKey};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn row(what: &str, runs: usize, mut step: impl FnMut()) {
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed()
        })
        .collect();
    let (p50, p99) = percentiles(samples);
    println!("{what:<58} {runs:>6} {p50:>12.2?} {p99:>12.2?}");
}

/// An admission step: `candidate` in, a search from it, the previous object back.
fn admit(graph: &mut Graph, candidate: &Arc<FluxObject>) {
    let previous = graph.upsert(candidate.clone());
    let id = graph.id(&candidate.key).expect("the candidate is in the graph");
    let first: Vec<_> = graph.deps(id).collect();
    for f in first {
        std::hint::black_box(graph.cycle_via(id, f));
    }
    graph.restore(&candidate.key, previous);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut n = 100_000;
    while let Some(a) = args.next() {
        if a == "--objects" {
            n = args.next().and_then(|s| s.parse().ok()).expect("--objects N");
        }
    }
    let objects: Vec<Arc<FluxObject>> = common::fleet(n)
        .iter()
        .map(|v| {
            let ns = v["metadata"]["namespace"].as_str().unwrap();
            Arc::new(FluxObject::from_value(FluxKind::Kustomization, v, ns, "").unwrap())
        })
        .collect();
    println!("dependsOn graph of {n} Kustomizations");
    println!("{:<58} {:>6} {:>12} {:>12}", "step", "runs", "p50", "p99");
    row("build the graph (reserve, then one upsert per object)", 5, || {
        std::hint::black_box(Graph::from_objects(FluxKind::Kustomization, objects.clone()));
    });
    let mut graph = Graph::from_objects(FluxKind::Kustomization, objects.clone());

    // Apps of the middle tenant, each given one more dependsOn edge to another app.
    let tenant = format!("tenant-{:05}", n / 50 / 2);
    let app = |i: usize| ObjectKey::new(&tenant, format!("app-{i:03}"));
    let candidates: Vec<Arc<FluxObject>> = (1..49)
        .map(|i| {
            let mut o = (**graph.get(&app(i)).expect("the tenant's apps exist")).clone();
            let mut deps = o.depends_on.to_vec();
            deps.push(app(i + 1));
            o.depends_on = deps.into_boxed_slice();
            Arc::new(o)
        })
        .collect();
    let mut next = candidates.iter().cycle();
    row("admission step: an app gains a dependsOn edge", 20_000, || admit(&mut graph, next.next().unwrap()));

    let hub = (**graph.get(&ObjectKey::new(&tenant, "hub")).expect("the tenant's hub exists")).clone();
    let mut changed = hub.clone();
    changed.depends_on = vec![ObjectKey::new("flux-system", "observability"), ObjectKey::new("flux-system", "storage")]
        .into_boxed_slice();
    let changed = Arc::new(changed);
    row("admission step: a hub with 50 dependents gains an edge", 20_000, || admit(&mut graph, &changed));

    let platform = graph.get(&ObjectKey::new("flux-system", "observability")).expect("platform object").clone();
    let mut moved = (*platform).clone();
    moved.depends_on = vec![ObjectKey::new("flux-system", "operators")].into_boxed_slice();
    let moved = Arc::new(moved);
    row(&format!("admission step: the platform object {} hubs depend on", n / 51), 2_000, || admit(&mut graph, &moved));

    row("strongly connected components (Kosaraju), whole graph", 5, || {
        std::hint::black_box(graph.cycles());
    });
    row("waves, whole graph", 5, || {
        std::hint::black_box(graph.waves());
    });
}

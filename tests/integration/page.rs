//! The pictures people look at, rendered by the real tools: the status page of a running
//! `serve --manifests` in headless Chromium (every object drawn, root causes shown, the filter
//! works, a screenshot kept), and for every repository of `../shared/fleets` the `graph` output
//! in both forms: `--format dot` rendered by Graphviz and `--format html` by Chromium, each no
//! wider than 4,000 px with text at least 10 px high at 100% zoom.
//!
//! Chromium and Graphviz come from Debian (`.ci/run` installs them when missing).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::{ServeProcess, admin_get};
use serde_json::Value;

const MAX_WIDTH_PX: f64 = 4000.0;
const MIN_TEXT_PX: f64 = 10.0;

fn root(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Headless Chromium on `url` with a fresh profile; `extra` picks `--dump-dom` or
/// `--screenshot=...`. Returns stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("Debian's chromium is installed (.ci/run installs it)");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The values of `attr="..."` in a DOM dump, in order.
fn attr_values(dom: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &dom[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// The text of the element carrying `attr="value"` (up to its closing `</div>`), tags removed.
fn element_text(dom: &str, attr: &str, value: &str) -> String {
    let start = dom.find(&format!("{attr}=\"{value}\"")).unwrap_or_else(|| panic!("no {attr}={value}"));
    let rest = &dom[start..];
    let mut text = String::new();
    let mut in_tag = false;
    let mut depth = 0i32;
    let mut i = 0;
    while i < rest.len() {
        if rest[i..].starts_with("<div") {
            depth += 1;
        } else if rest[i..].starts_with("</div>") {
            depth -= 1;
            if depth < 0 {
                break;
            }
        }
        let c = rest[i..].chars().next().unwrap();
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
        i += c.len_utf8();
    }
    text
}

fn body_number(dom: &str, attr: &str) -> f64 {
    attr_values(dom, attr).first().unwrap_or_else(|| panic!("the page did not measure {attr}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_every_object_its_root_causes_and_filters() {
    let dump = root("examples/status-dump.yaml");
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = ServeProcess::start_tls(dir.path(), &["--manifests", dump.to_str().unwrap()]);
    let (_, body) = admin_get(server.admin, "/status").await;
    let report: Value = serde_json::from_str(&body).unwrap();
    let url = format!("http://{}/", server.admin);

    let dom = {
        let u = url.clone();
        tokio::task::spawn_blocking(move || chromium(&u, &["--dump-dom"])).await.unwrap()
    };
    // Every object and every missing target is drawn, once.
    let mut expected = BTreeSet::new();
    for k in report["kinds"].as_array().unwrap() {
        for o in k["objects"].as_array().unwrap() {
            expected.insert(o["id"].as_str().unwrap().to_string());
        }
        for m in k["missing"].as_array().unwrap() {
            expected.insert(m.as_str().unwrap().to_string());
        }
    }
    let drawn = attr_values(&dom, "data-id");
    assert_eq!(drawn.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(drawn.len(), expected.len(), "each object drawn once");
    // Every waiting object shows its roots; the roots come first, with their messages.
    for k in report["kinds"].as_array().unwrap() {
        for o in k["objects"].as_array().unwrap().iter().filter(|o| o["state"] == "waiting") {
            let text = element_text(&dom, "data-stuck", o["id"].as_str().unwrap());
            for r in o["roots"].as_array().unwrap() {
                assert!(text.contains(r["id"].as_str().unwrap()), "{} should name {}: {text}", o["id"], r["id"]);
            }
        }
    }
    let crds = element_text(&dom, "data-root", "flux-system/crds");
    assert!(crds.contains("health check failed after 5m0s") && crds.contains("holds up 3"), "{crds}");
    assert!(dom.find("data-root=").unwrap() < dom.find("data-id=").unwrap(), "root causes before the graph");

    // The filter, driven by the URL.
    let dom = {
        let u = format!("{url}?filter=loop");
        tokio::task::spawn_blocking(move || chromium(&u, &["--dump-dom"])).await.unwrap()
    };
    assert_eq!(attr_values(&dom, "data-id"), ["flux-system/loop-a", "flux-system/loop-b"]);
    assert_eq!(attr_values(&dom, "data-stuck"), ["flux-system/loop-a", "flux-system/loop-b"]);

    // A screenshot, kept for people to look at.
    let shots = root("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || chromium(&url, &[&arg])).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot, {} bytes", png.len());
}

fn fluxgate_graph(repo: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(["graph", repo.to_str().unwrap(), "--format", format])
        .output()
        .unwrap();
    // Repositories hold documents fluxgate cannot read (exit 2): the graph of the rest is drawn.
    assert!(!out.stdout.is_empty(), "{}: {}", repo.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Width and smallest font of each graph Graphviz draws from `source`, in CSS pixels at 100%
/// zoom (Graphviz's SVG is in points: 1 pt = 4/3 px), after checking that no label shows a
/// literal `\n`.
fn graphviz_sizes(source: &str) -> Vec<(f64, f64)> {
    let svg = common::graphviz::dot_svg(source);
    assert!(!svg.contains("\\n"), "a label shows a literal \\n");
    assert!(!svg.contains("scale(0"), "Graphviz shrank the drawing");
    svg.split("<svg ")
        .skip(1)
        .map(|one| {
            let width: f64 = attr_values(one, "width")[0].trim_end_matches("pt").parse().unwrap();
            let min_font =
                attr_values(one, "font-size").iter().map(|f| f.parse::<f64>().unwrap()).fold(f64::MAX, f64::min);
            (width * 4.0 / 3.0, min_font * 4.0 / 3.0)
        })
        .collect()
}

#[test]
fn every_fleet_renders_readably_in_graphviz_and_in_the_browser() {
    let fleets = common::crd::shared().join("fleets");
    let mut repos: Vec<PathBuf> = std::fs::read_dir(&fleets)
        .unwrap_or_else(|e| panic!("{}: {e} (set FLUXGATE_SHARED to the shared folder)", fleets.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    repos.sort();
    assert!(repos.len() >= 20, "the shared fleets are beside the project");
    let out = tempfile::tempdir().unwrap();
    // Two at a time: Chromium is the slow part and the machine has two cores.
    for pair in repos.chunks(2) {
        std::thread::scope(|s| {
            for repo in pair {
                let out = out.path();
                s.spawn(move || {
                    let name = repo.file_name().unwrap().to_str().unwrap();
                    for (width, font) in graphviz_sizes(&fluxgate_graph(repo, "dot")) {
                        assert!(width <= MAX_WIDTH_PX, "{name}: Graphviz drew {width} px wide");
                        assert!(font >= MIN_TEXT_PX, "{name}: Graphviz text {font} px high");
                    }
                    let page = out.join(format!("{name}.html"));
                    std::fs::write(&page, fluxgate_graph(repo, "html")).unwrap();
                    let dom = chromium(&format!("file://{}", page.display()), &["--dump-dom"]);
                    let (width, font) = (body_number(&dom, "data-page-width"), body_number(&dom, "data-min-font-px"));
                    assert!(width <= MAX_WIDTH_PX, "{name}: the page is {width} px wide");
                    assert!(font >= MIN_TEXT_PX, "{name}: the page has text {font} px high");
                    assert!(!attr_values(&dom, "data-id").is_empty(), "{name}: nothing drawn");
                });
            }
        });
    }
}

/// A cluster of 3,000 Kustomizations in 60 namespaces, shaped like real ones (platform, a hub per
/// namespace, apps on the hub and on each other), mostly ready, with one failed hub holding up
/// its namespace.
fn big_dump() -> Value {
    let mut items = Vec::new();
    let ks = |ns: &str, name: &str, deps: Vec<Value>, ready: (&str, &str, &str)| {
        serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"interval": "10m", "path": format!("./{name}"), "prune": true, "dependsOn": deps,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": ready.0,
                       "reason": ready.1, "message": ready.2, "lastTransitionTime": "2026-11-26T09:00:00Z"}]}
        })
    };
    let ok = ("True", "ReconciliationSucceeded", "Applied revision: main@sha1:1");
    items.push(ks("flux-system", "platform", vec![], ok));
    for t in 0..60 {
        let ns = format!("team-{t:02}");
        let broken = t == 17;
        let hub_state = if broken { ("False", "HealthCheckFailed", "health check failed after 5m0s") } else { ok };
        items.push(ks(
            &ns,
            "hub",
            vec![serde_json::json!({"name": "platform", "namespace": "flux-system"})],
            hub_state,
        ));
        for a in 1..50 {
            let mut deps = vec![serde_json::json!({"name": "hub"})];
            if a % 5 != 0 && a > 5 {
                deps.push(serde_json::json!({"name": format!("app-{:02}", a - a % 5)}));
            }
            let state = if broken { ("False", "DependencyNotReady", "dependency is not ready") } else { ok };
            items.push(ks(&ns, &format!("app-{a:02}"), deps, state));
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_stays_readable_at_3000_objects() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("big.json");
    std::fs::write(&dump, big_dump().to_string()).unwrap();
    let (server, _) = ServeProcess::start_tls(dir.path(), &["--manifests", dump.to_str().unwrap()]);
    let url = format!("http://{}/", server.admin);
    let dom = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"])).await.unwrap();
    assert_eq!(attr_values(&dom, "data-id").len(), 3001, "every object is drawn (healthy groups collapsed)");
    let (width, font) = (body_number(&dom, "data-page-width"), body_number(&dom, "data-min-font-px"));
    assert!(width <= MAX_WIDTH_PX, "the page is {width} px wide");
    assert!(font >= MIN_TEXT_PX, "text {font} px high");
    // The broken namespace's failed hub comes first, holding up its 49 apps; healthy namespaces
    // start collapsed, the broken one open.
    let root = element_text(&dom, "data-root", "team-17/hub");
    assert!(root.contains("holds up 49"), "{root}");
    assert_eq!(dom.matches("<details open=\"\"").count(), 3, "team-17 is open in its three waves");
}

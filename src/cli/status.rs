//! `fluxgate status` and `fluxgate why`: the live state of every object, and the root causes of
//! a stuck one, read from the cluster of the kubeconfig (a read-only list) or from a dump
//! (`kubectl get kustomizations,helmreleases -A -o yaml`) that someone attached to a bug report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use kube::api::ListParams;

use super::{KindArg, StatusArgs, WhyArgs};
use crate::cache::watch::{list_page, read_object, served_resource};
use crate::manifests;
use crate::object::{FluxKind, FluxObject, ObjectKey};
use crate::status::{self, Cause, ObjectReport, ObjectStatus, State, StatusReport, format_chain};

/// Output format of `status` and `why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

/// When to colour the text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal only.
    Auto,
    Always,
    Never,
}

type Objects = Vec<(Arc<FluxObject>, ObjectStatus)>;

/// Reads the objects and their statuses from `from`, or from the cluster of the kubeconfig.
fn load(from: Option<&Path>) -> Result<StatusReport, String> {
    let mut by_kind: HashMap<FluxKind, Objects> = HashMap::new();
    match from {
        Some(path) => {
            if let Err(e) = std::fs::metadata(path) {
                return Err(format!("{}: cannot be read: {e}", path.display()));
            }
            let loaded = manifests::load(&[path.to_path_buf()]);
            for e in &loaded.errors {
                // One unreadable object does not hide the rest.
                eprintln!("skipped {e}");
            }
            for l in loaded.objects {
                by_kind.entry(l.object.kind).or_default().push((Arc::new(l.object), l.status));
            }
        }
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            by_kind = runtime.block_on(list_cluster())?;
        }
    }
    let kinds = FluxKind::ALL
        .iter()
        .map(|&kind| {
            let objects = by_kind.remove(&kind).unwrap_or_default();
            let statuses = objects.iter().map(|(o, s)| (o.key.clone(), s.clone())).collect();
            status::analyze(kind, objects.into_iter().map(|(o, _)| o), &statuses)
        })
        .collect();
    Ok(StatusReport { kinds })
}

/// Lists both kinds cluster-wide, once (read-only: `list` is the only verb used).
async fn list_cluster() -> Result<HashMap<FluxKind, Objects>, String> {
    crate::server::tls::provider();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot connect to a cluster ({e}); set KUBECONFIG, or read a dump with --from FILE"))?;
    let mut out = HashMap::new();
    for kind in FluxKind::ALL {
        let Some(ar) = served_resource(&client, kind).await.map_err(|e| format!("cannot list {kind} objects: {e}"))?
        else {
            continue;
        };
        let mut params = ListParams::default().limit(500);
        let mut objects = Vec::new();
        loop {
            let page =
                list_page(&client, &ar, &params).await.map_err(|e| format!("cannot list {kind} objects: {e}"))?;
            for item in page.items.iter().flatten().map(|o| &o.0) {
                match read_object(kind, item) {
                    Ok((object, _)) => objects.push((Arc::new(object), ObjectStatus::from_value(item))),
                    Err(e) => eprintln!("skipped a {kind} the rules cannot read: {e}"),
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        out.insert(kind, objects);
    }
    Ok(out)
}

fn use_color(color: Color) -> bool {
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// A state word, padded, coloured on a terminal.
fn paint(state: State, color: bool) -> String {
    let word = format!("{:<11}", state.as_str());
    if !color {
        return word;
    }
    let code = match state {
        State::Ready => "32",
        State::Failed => "31",
        State::Waiting => "33",
        State::Stale | State::Suspended => "35",
        State::Progressing => "36",
        State::Unknown => "90",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

fn cause_text(cause: Cause) -> &'static str {
    match cause {
        Cause::Failed => "failed",
        Cause::Suspended => "suspended",
        Cause::Missing => "missing: no such object",
        Cause::Stale => "stale: the controller has not reconciled its current spec",
        Cause::Progressing => "progressing",
        Cause::Unknown => "unknown: no Ready condition yet",
        Cause::Cycle => "on a dependsOn cycle",
    }
}

/// One root cause, indented, as `status` and `why` print it.
fn write_root(s: &mut String, root: &status::Root, indent: &str) {
    writeln!(s, "{indent}root cause: {} is {}", root.id, cause_text(root.cause)).unwrap();
    writeln!(s, "{indent}  chain: {}", format_chain(&root.chain)).unwrap();
    if let Some(cycle) = &root.cycle {
        let text: Vec<String> = cycle.iter().map(ObjectKey::to_string).collect();
        writeln!(s, "{indent}  cycle: {}", text.join(" -> ")).unwrap();
    }
    if let Some(message) = &root.message {
        writeln!(s, "{indent}  message: {message}").unwrap();
    }
}

/// The `status` table: per kind, objects by wave with their state, then the stuck ones with
/// their root causes.
pub fn render_status(report: &StatusReport, color: bool) -> String {
    let mut s = String::new();
    for k in &report.kinds {
        if k.objects.is_empty() {
            continue;
        }
        let counts: Vec<String> = k.counts().iter().map(|(state, n)| format!("{n} {}", state.as_str())).collect();
        writeln!(s, "{} ({} objects: {})", k.kind, k.objects.len(), counts.join(", ")).unwrap();
        let r = &k.rollout;
        if !r.worst_case_path.is_empty() {
            let path: Vec<String> = r.worst_case_path.iter().map(ObjectKey::to_string).collect();
            writeln!(
                s,
                "  worst-case rollout: {} ({})",
                status::format_seconds(r.worst_case_seconds),
                path.join(" -> ")
            )
            .unwrap();
        }
        if r.wave_seconds.iter().any(Option::is_some) {
            let took: Vec<String> = r
                .wave_seconds
                .iter()
                .enumerate()
                .map(|(w, t)| {
                    format!("{w}: {}", t.map_or("not ready".into(), |t| status::format_seconds(t.max(0) as u64)))
                })
                .collect();
            writeln!(s, "  waves took: {}", took.join(", ")).unwrap();
        }
        let width = k.objects.iter().map(|o| o.id.to_string().len()).max().unwrap_or(0).max(6);
        writeln!(s, "  WAVE  {:<11}  {:<width$}  MESSAGE", "STATE", "OBJECT").unwrap();
        let mut rows: Vec<&ObjectReport> = k.objects.iter().collect();
        rows.sort_by(|a, b| a.wave.unwrap_or(u32::MAX).cmp(&b.wave.unwrap_or(u32::MAX)).then(a.id.cmp(&b.id)));
        for o in rows {
            let wave = o.wave.map_or("-".to_string(), |w| w.to_string());
            let mut message = o.message.clone().unwrap_or_default().replace('\n', " ");
            if o.in_cycle {
                message = format!("(on a cycle) {message}");
            }
            writeln!(s, "  {wave:<4}  {}  {:<width$}  {}", paint(o.state, color), o.id.to_string(), message.trim_end())
                .unwrap();
        }
        let stuck: Vec<&ObjectReport> = k.objects.iter().filter(|o| o.state == State::Waiting).collect();
        if !stuck.is_empty() {
            writeln!(s, "  waiting {}s and what holds them up:", k.kind).unwrap();
            for o in stuck {
                writeln!(s, "  {}", o.id).unwrap();
                if o.roots.is_empty() {
                    writeln!(s, "      no dependency is held up now: Flux retries at the next interval").unwrap();
                }
                for root in &o.roots {
                    write_root(&mut s, root, "    ");
                }
            }
        }
        for m in &k.missing {
            writeln!(s, "  missing: {m} is named as a dependency but does not exist").unwrap();
        }
        s.push('\n');
    }
    if s.is_empty() {
        s.push_str("no Kustomization or HelmRelease found\n");
    }
    s
}

/// What `why` prints for one object.
pub fn render_why(o: &ObjectReport, color: bool) -> String {
    let mut s = String::new();
    write!(s, "{} {} is {}", o.kind, o.id, paint(o.state, color).trim_end()).unwrap();
    if let Some(reason) = &o.reason {
        write!(s, " ({reason})").unwrap();
    }
    s.push('\n');
    if let Some(message) = &o.message {
        writeln!(s, "  message: {message}").unwrap();
    }
    if let Some(since) = &o.since {
        writeln!(s, "  since: {since}").unwrap();
    }
    if o.state == State::Waiting && o.roots.is_empty() {
        writeln!(s, "  no dependency is held up now: Flux retries at the next interval").unwrap();
    }
    for root in &o.roots {
        write_root(&mut s, root, "  ");
    }
    s
}

fn report_or_exit(from: Option<&Path>, command: &str) -> Result<StatusReport, ExitCode> {
    load(from).map_err(|e| {
        eprintln!("fluxgate {command}: {e}");
        ExitCode::from(2)
    })
}

fn kind_of(arg: KindArg) -> FluxKind {
    match arg {
        KindArg::Kustomization => FluxKind::Kustomization,
        KindArg::HelmRelease => FluxKind::HelmRelease,
    }
}

/// `fluxgate status`: 0 when nothing is stuck, 1 when an object is failed, waiting or stale, 2
/// when the objects cannot be read.
pub fn run_status(args: StatusArgs) -> ExitCode {
    let report = match report_or_exit(args.view.from.as_deref(), "status") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match args.view.format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&report).expect("report serialises")),
        StatusFormat::Text => print!("{}", render_status(&report, use_color(args.view.color))),
    }
    let stuck = report.kinds.iter().flat_map(|k| &k.objects).any(ObjectReport::is_stuck);
    if stuck { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// `fluxgate why NAME`: 0 when the object is not stuck, 1 when it is, 2 when the objects cannot
/// be read or no object has that name.
pub fn run_why(args: WhyArgs) -> ExitCode {
    let report = match report_or_exit(args.view.from.as_deref(), "why") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let matches: Vec<&ObjectReport> = report
        .kinds
        .iter()
        .filter(|k| args.kind.is_none_or(|a| kind_of(a) == k.kind))
        .flat_map(|k| &k.objects)
        .filter(|o| *o.id.name == *args.name && args.namespace.as_deref().is_none_or(|ns| ns == &*o.id.namespace))
        .collect();
    if matches.is_empty() {
        let place = args.namespace.as_ref().map_or(String::new(), |ns| format!(" in namespace {ns}"));
        eprintln!("fluxgate why: no Kustomization or HelmRelease named {}{place}", args.name);
        return ExitCode::from(2);
    }
    match args.view.format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&matches).expect("objects serialise")),
        StatusFormat::Text => {
            let color = use_color(args.view.color);
            let text: Vec<String> = matches.iter().map(|o| render_why(o, color)).collect();
            print!("{}", text.join("\n"));
        }
    }
    if matches.iter().any(|o| o.is_stuck()) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

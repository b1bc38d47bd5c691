//! `fluxgate diff`: what a change does to the rollout, in the formats people review in: a
//! terminal, JSON, a pull-request comment (Markdown), code scanning (SARIF) and annotations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;

use crate::check::CheckOutput;
use crate::diff::{self, Diff, KindDiff, git};
use crate::manifests::LoadOptions;
use crate::object::FluxKind;
use crate::policy::Policy;
use crate::status::format_seconds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Each changed cluster and kind, then the findings that came and went, then a summary line.
    Text,
    /// One JSON object: `base`, `head`, `objects`, `clusters`, `newFindings`, `fixedFindings`,
    /// `newErrors`, `oldErrors`.
    Json,
    /// A pull-request comment: a short summary, the details folded.
    Markdown,
    /// SARIF 2.1.0 of the findings HEAD adds, for code scanning.
    Sarif,
    /// GitHub Actions workflow commands for the findings HEAD adds.
    Github,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The checkout before the change: a folder, or with --git a revision (branch, tag, commit).
    #[arg(value_name = "BASE")]
    pub base: String,
    /// The checkout after the change: a folder, or with --git a revision. With --git and no HEAD,
    /// the repository's work tree as it is, uncommitted changes included.
    #[arg(value_name = "HEAD", required_unless_present = "git")]
    pub head: Option<String>,
    /// Read BASE (and HEAD) as revisions of the Git repository at --repo, with the `git`
    /// binary; each tree is written to a temporary folder and read like a checkout.
    #[arg(long)]
    pub git: bool,
    /// The Git repository of --git: a work tree or a bare repository.
    #[arg(long, value_name = "DIR", default_value = ".", requires = "git")]
    pub repo: PathBuf,
    /// Policy file (YAML) setting rule actions, used on both sides.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Also compare the objects no cluster applies (as `check --include-unapplied`).
    #[arg(long)]
    pub include_unapplied: bool,
    /// Compare one cluster only (as `check --cluster`).
    #[arg(long, value_name = "NAME|PATH")]
    pub cluster: Option<String>,
}

/// The diff with what was compared, as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct DiffOutput {
    pub base: String,
    pub head: String,
    #[serde(flatten)]
    pub diff: Diff,
}

/// One side: a folder given, or a revision written out to a temporary folder.
enum Side {
    Folder(PathBuf),
    Revision(git::Tree),
}

impl Side {
    fn path(&self) -> &Path {
        match self {
            Side::Folder(p) => p,
            Side::Revision(t) => t.path(),
        }
    }
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("fluxgate diff: {message}");
    ExitCode::from(2)
}

fn folder(which: &str, path: &str) -> Result<Side, String> {
    let p = PathBuf::from(path);
    if !p.exists() {
        return Err(format!("{which} {path}: no such file or folder (to compare Git revisions, add --git)"));
    }
    Ok(Side::Folder(p))
}

fn revision(which: &str, repo: &Path, rev: &str) -> Result<(Side, String), String> {
    let tree = git::extract(repo, rev).map_err(|e| format!("{which}: {e}"))?;
    let label = format!("{rev} ({})", &tree.commit[..tree.commit.len().min(12)]);
    Ok((Side::Revision(tree), label))
}

pub fn run(args: DiffArgs) -> ExitCode {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => return usage(e),
        },
        None => Policy::default(),
    };
    let sides = if args.git {
        revision("BASE", &args.repo, &args.base).and_then(|(base, base_label)| {
            let (head, head_label) = match &args.head {
                Some(rev) => revision("HEAD", &args.repo, rev)?,
                None => {
                    let top = git::toplevel(&args.repo).map_err(|e| e.to_string())?;
                    let label = format!("work tree {}", top.display());
                    (Side::Folder(top), label)
                }
            };
            Ok((base, base_label, head, head_label))
        })
    } else {
        let head = args.head.as_deref().expect("clap requires HEAD without --git");
        folder("BASE", &args.base).and_then(|b| Ok((b, args.base.clone(), folder("HEAD", head)?, head.to_string())))
    };
    let (base, base_label, head, head_label) = match sides {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let options = LoadOptions { include_unapplied: args.include_unapplied, cluster: args.cluster.clone() };
    let (before, after) = diff::snapshots(base.path(), head.path(), &policy, &options);
    if let Some(name) = &args.cluster
        && after.graphs.is_empty()
        && before.graphs.is_empty()
    {
        return usage(format!("--cluster {name}: no such cluster on either side"));
    }
    let out = DiffOutput { base: base_label, head: head_label, diff: diff::diff(&before, &after) };
    match args.format {
        DiffFormat::Text => print!("{}", text(&out)),
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&out).expect("output serialises")),
        DiffFormat::Markdown => print!("{}", markdown(&out)),
        DiffFormat::Sarif => println!(
            "{}",
            serde_json::to_string_pretty(&super::ci::sarif(&new_only(&out.diff, after.objects), &policy))
                .expect("output serialises")
        ),
        DiffFormat::Github => {
            print!("{}", super::ci::github(&new_only(&out.diff, after.objects), &(summary(&out.diff) + "\n")))
        }
    }
    ExitCode::from(out.diff.exit_code())
}

/// HEAD's side as `check` would report it, with only what the change adds: the findings and
/// read errors BASE does not have. Old problems are not annotated on every pull request.
fn new_only(d: &Diff, objects: usize) -> CheckOutput {
    CheckOutput {
        objects,
        findings: d.new_findings.iter().map(|f| f.located.clone()).collect(),
        errors: d.new_errors.clone(),
        not_applied: Vec::new(),
        skipped: 0,
        notes: Vec::new(),
        paths: Vec::new(),
        files: 0,
    }
}

fn wave(w: Option<u32>) -> String {
    match w {
        Some(w) => format!("wave {w}"),
        None => "no wave (in or behind a cycle)".to_string(),
    }
}

fn place(file: &Path, line: usize) -> String {
    if file.as_os_str().is_empty() {
        String::new()
    } else if line == 0 {
        file.display().to_string()
    } else {
        format!("{}:{line}", file.display())
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `before → after`, or the one value when it did not change.
fn before_after<T: PartialEq + std::fmt::Display>(before: T, after: T) -> String {
    if before == after { before.to_string() } else { format!("{before} → {after}") }
}

/// Worst-case rollout time before and after, with the difference.
fn worst_case_change(k: &KindDiff) -> String {
    let (b, a) = (k.worst_case.before.seconds, k.worst_case.after.seconds);
    if a == b {
        return format_seconds(a);
    }
    let delta = match a.cmp(&b) {
        std::cmp::Ordering::Greater => format!(" (+{})", format_seconds(a - b)),
        std::cmp::Ordering::Less => format!(" (−{})", format_seconds(b - a)),
        std::cmp::Ordering::Equal => String::new(),
    };
    format!("{} → {}{delta}", format_seconds(b), format_seconds(a))
}

/// The totals over every cluster: `N objects added, ...; F new findings (D deny), X fixed`.
pub fn summary(d: &Diff) -> String {
    if d.is_empty() {
        return "no change to the dependsOn graphs, waves or findings".to_string();
    }
    let sum = |f: fn(&KindDiff) -> usize| d.clusters.iter().map(f).sum::<usize>();
    let denies = d.new_findings.iter().filter(|f| f.located.finding.is_deny()).count();
    // Only what changed: a line of zeros hides the one figure that matters.
    let mut parts = Vec::new();
    for (n, one, many) in [
        (sum(|k| k.objects_added.len()), "object added", "objects added"),
        (sum(|k| k.objects_removed.len()), "object removed", "objects removed"),
        (sum(|k| k.moved.len()), "object moved between namespaces", "objects moved between namespaces"),
        (sum(|k| k.edges_added.len()), "edge added", "edges added"),
        (sum(|k| k.edges_removed.len()), "edge removed", "edges removed"),
        (sum(|k| k.waves.moved.len()), "object changed wave", "objects changed wave"),
    ] {
        if n > 0 {
            parts.push(plural(n, one, many));
        }
    }
    if parts.is_empty() {
        parts.push("no edge or object changed".to_string());
    }
    let mut s = parts.join(", ");
    write!(
        s,
        "; {} ({denies} deny), {} fixed",
        plural(d.new_findings.len(), "new finding", "new findings"),
        d.fixed_findings.len()
    )
    .unwrap();
    if !d.new_errors.is_empty() {
        write!(s, "; {}", plural(d.new_errors.len(), "file that cannot be read", "files that cannot be read")).unwrap();
    }
    s
}

/// The terminal report.
pub fn text(out: &DiffOutput) -> String {
    let d = &out.diff;
    let mut s = format!("fluxgate diff {} -> {}\n", out.base, out.head);
    for k in &d.clusters {
        writeln!(s, "\ncluster {} {} ({}):", k.cluster, k.kind, k.change).unwrap();
        for o in &k.objects_added {
            writeln!(s, "  + {} ({}) {}", o.id, wave(o.wave), place(&o.file, o.line)).unwrap();
        }
        for o in &k.objects_removed {
            writeln!(s, "  - {} (was {}) {}", o.id, wave(o.wave), place(&o.file, o.line)).unwrap();
        }
        for m in &k.moved {
            writeln!(s, "  ~ {} moved to {} {}", m.from, m.to, place(&m.file, m.line)).unwrap();
        }
        for e in &k.edges_added {
            writeln!(
                s,
                "  + edge {} -> {} ({}): {} on {} ({} newly)",
                e.edge.from,
                e.edge.to,
                e.edge.kind,
                plural(e.waiting, "object waits", "objects wait"),
                e.edge.to,
                e.newly_waiting
            )
            .unwrap();
        }
        for e in &k.edges_removed {
            writeln!(s, "  - edge {} -> {} ({})", e.from, e.to, e.kind).unwrap();
        }
        if k.waves.count.changed() || !k.waves.moved.is_empty() {
            writeln!(s, "  waves: {} -> {}", k.waves.count.before, k.waves.count.after).unwrap();
            for m in &k.waves.moved {
                writeln!(s, "    {}: {} -> {}", m.id, wave(m.before), wave(m.after)).unwrap();
            }
        }
        if k.critical_path.changed() {
            writeln!(
                s,
                "  critical path: {} -> {} objects: {}",
                k.critical_path.before.len(),
                k.critical_path.after.len(),
                k.critical_path.after.join(" -> ")
            )
            .unwrap();
        }
        if k.worst_case.changed() {
            writeln!(
                s,
                "  worst-case rollout: {}: {}",
                worst_case_change(k).replace('→', "->").replace('−', "-"),
                k.worst_case.after.path.join(" -> ")
            )
            .unwrap();
        }
    }
    for (title, list) in [("new findings", &d.new_findings), ("fixed findings", &d.fixed_findings)] {
        if !list.is_empty() {
            writeln!(s, "\n{title}:").unwrap();
            for f in list {
                let l = &f.located;
                writeln!(
                    s,
                    "  {:<4} {} {} {} ({}): {}",
                    l.finding.action.as_str(),
                    l.finding.rule,
                    l.finding.kind,
                    l.finding.object,
                    place(&l.file, l.line),
                    l.finding.message
                )
                .unwrap();
            }
        }
    }
    if !d.new_errors.is_empty() {
        writeln!(s, "\nHEAD cannot be read (BASE could):").unwrap();
        for e in &d.new_errors {
            writeln!(s, "  {e}").unwrap();
        }
    }
    if !d.old_errors.is_empty() {
        writeln!(s, "\n{} unreadable on both sides (not this change's)", plural(d.old_errors.len(), "file", "files"))
            .unwrap();
    }
    writeln!(s, "\n{}", summary(d)).unwrap();
    s
}

/// The most rows a Markdown table shows: a comment stays within GitHub's 65,536 characters
/// and a reader's patience; the JSON output has every row.
const MAX_ROWS: usize = 100;

/// Text for a Markdown table cell or a line: no HTML, no column break, no line break.
fn md(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'"))
}

fn md_wave(w: Option<u32>) -> String {
    w.map_or_else(|| "none (cycle)".to_string(), |w| w.to_string())
}

fn md_table(s: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    writeln!(s, "| {} |", header.join(" | ")).unwrap();
    writeln!(s, "|{}", "---|".repeat(header.len())).unwrap();
    let total = rows.len();
    for row in rows.into_iter().take(MAX_ROWS) {
        writeln!(s, "| {} |", row.join(" | ")).unwrap();
    }
    if total > MAX_ROWS {
        writeln!(s, "\n… and {} more (`fluxgate diff --format json` lists every one).", total - MAX_ROWS).unwrap();
    }
    s.push('\n');
}

fn md_chain(chain: &[String]) -> String {
    if chain.is_empty() {
        "(none)".to_string()
    } else {
        chain.iter().map(|c| code(c)).collect::<Vec<_>>().join(" → ")
    }
}

fn findings_table(s: &mut String, list: &[crate::diff::FindingChange]) {
    let rows = list
        .iter()
        .map(|f| {
            let l = &f.located;
            vec![
                if l.finding.is_deny() { "**deny**".to_string() } else { "warn".to_string() },
                code(l.finding.rule.as_str()),
                format!("{} {}", l.finding.kind, code(&l.finding.object.to_string())),
                md(&l.finding.message),
                code(&place(&l.file, l.line)),
            ]
        })
        .collect();
    md_table(s, &["Action", "Rule", "Object", "Message", "File"], rows);
}

/// The pull-request comment: a headline and one table row per changed cluster and kind, the
/// new findings and the widest blast radii in view, every detail folded in `<details>`.
pub fn markdown(out: &DiffOutput) -> String {
    let d = &out.diff;
    // The marker lets a workflow find and update its own comment instead of adding one per push.
    let mut s = String::from("<!-- fluxgate-diff -->\n### fluxgate diff\n\n");
    let denies = d.new_findings.iter().filter(|f| f.located.finding.is_deny()).count();
    let headline = if !d.new_errors.is_empty() {
        format!("❌ **HEAD has {} that Flux cannot apply.**", plural(d.new_errors.len(), "file", "files"))
    } else if denies > 0 {
        format!("❌ **This change adds {}.**", plural(denies, "deny-level finding", "deny-level findings"))
    } else if d.is_empty() {
        "✅ No change to the dependsOn graphs, waves or findings.".to_string()
    } else {
        "✅ No new deny-level finding.".to_string()
    };
    writeln!(s, "{headline}\n").unwrap();
    writeln!(s, "{} → {}: {}.\n", code(&out.base), code(&out.head), md(&summary(d))).unwrap();

    if !d.clusters.is_empty() {
        let rows = d
            .clusters
            .iter()
            .map(|k| {
                let objects = format!(
                    "+{} −{}{}",
                    k.objects_added.len(),
                    k.objects_removed.len(),
                    if k.moved.is_empty() { String::new() } else { format!(" ~{}", k.moved.len()) }
                );
                let edges = format!("+{} −{}", k.edges_added.len(), k.edges_removed.len());
                let waves = format!(
                    "{}{}",
                    before_after(k.waves.count.before, k.waves.count.after),
                    if k.waves.moved.is_empty() { String::new() } else { format!(" ({} moved)", k.waves.moved.len()) }
                );
                let critical = before_after(k.critical_path.before.len(), k.critical_path.after.len());
                let cluster = if k.change == "changed" {
                    code(&k.cluster)
                } else {
                    format!("{} ({})", code(&k.cluster), k.change)
                };
                vec![cluster, k.kind.to_string(), objects, edges, waves, critical, worst_case_change(k)]
            })
            .collect();
        md_table(
            &mut s,
            &["Cluster", "Kind", "Objects", "Edges", "Waves", "Critical path (objects)", "Worst-case rollout"],
            rows,
        );
    }

    // What puts the most objects behind a target: the question a reviewer asks first. Edges
    // are grouped by target: forty apps gaining one dependency is one line, not forty.
    let mut targets: BTreeMap<(&str, FluxKind, &str), (usize, usize, usize)> = BTreeMap::new();
    for k in &d.clusters {
        for e in k.edges_added.iter().filter(|e| e.newly_waiting > 0) {
            let t = targets.entry((k.cluster.as_str(), k.kind, e.edge.to.as_str())).or_default();
            *t = (t.0 + 1, e.newly_waiting, e.waiting);
        }
    }
    let mut targets: Vec<_> = targets.into_iter().collect();
    targets.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
    if !targets.is_empty() {
        writeln!(s, "**Blast radius of the new edges** (objects that now wait, transitively, on the target):\n")
            .unwrap();
        for ((cluster, kind, target), (edges, newly, waiting)) in targets.iter().take(5) {
            writeln!(
                s,
                "- {} ({kind}, {}): **{newly}** newly waiting ({waiting} in all), through {}",
                code(target),
                code(cluster),
                plural(*edges, "new edge", "new edges")
            )
            .unwrap();
        }
        if targets.len() > 5 {
            writeln!(s, "- … {} more targets in the details below", targets.len() - 5).unwrap();
        }
        s.push('\n');
    }

    if !d.new_findings.is_empty() {
        // Open when short: new findings are what the reviewer must act on.
        if d.new_findings.len() <= 10 {
            writeln!(s, "**New findings ({})**\n", d.new_findings.len()).unwrap();
            findings_table(&mut s, &d.new_findings);
        } else {
            writeln!(s, "<details open><summary><b>New findings ({})</b></summary>\n", d.new_findings.len()).unwrap();
            findings_table(&mut s, &d.new_findings);
            s.push_str("</details>\n\n");
        }
    }
    if !d.new_errors.is_empty() {
        writeln!(s, "**Files HEAD cannot read**\n").unwrap();
        let rows = d.new_errors.iter().map(|e| vec![code(&place(&e.file, e.line)), md(&e.message)]).collect();
        md_table(&mut s, &["File", "Error"], rows);
    }

    for k in &d.clusters {
        let mut summary = vec![];
        for (n, what) in
            [(k.objects_added.len(), "added"), (k.objects_removed.len(), "removed"), (k.moved.len(), "moved")]
        {
            if n > 0 {
                summary.push(format!("{n} {what}"));
            }
        }
        for (n, what) in [(k.edges_added.len(), "added"), (k.edges_removed.len(), "removed")] {
            if n > 0 {
                summary.push(format!("{} {what}", plural(n, "edge", "edges")));
            }
        }
        if !k.waves.moved.is_empty() {
            summary.push(format!("{} changed wave", k.waves.moved.len()));
        }
        writeln!(
            s,
            "<details><summary><code>{}</code> · {}: {}</summary>\n",
            md(&k.cluster),
            k.kind,
            if summary.is_empty() { "rollout changed".to_string() } else { summary.join(", ") }
        )
        .unwrap();
        if !k.edges_added.is_empty() {
            s.push_str("**Edges added**\n\n");
            let rows = k
                .edges_added
                .iter()
                .map(|e| {
                    vec![
                        code(&e.edge.from),
                        code(&e.edge.to),
                        e.edge.kind.to_string(),
                        format!("{} ({} new)", e.waiting, e.newly_waiting),
                    ]
                })
                .collect();
            md_table(&mut s, &["From", "To", "Kind", "Waiting on target"], rows);
        }
        if !k.edges_removed.is_empty() {
            s.push_str("**Edges removed**\n\n");
            let rows = k.edges_removed.iter().map(|e| vec![code(&e.from), code(&e.to), e.kind.to_string()]).collect();
            md_table(&mut s, &["From", "To", "Kind"], rows);
        }
        if !k.objects_added.is_empty() {
            s.push_str("**Objects added**\n\n");
            let rows = k
                .objects_added
                .iter()
                .map(|o| vec![code(&o.id), md_wave(o.wave), code(&place(&o.file, o.line))])
                .collect();
            md_table(&mut s, &["Object", "Wave", "File"], rows);
        }
        if !k.objects_removed.is_empty() {
            s.push_str("**Objects removed**\n\n");
            let rows = k
                .objects_removed
                .iter()
                .map(|o| vec![code(&o.id), md_wave(o.wave), code(&place(&o.file, o.line))])
                .collect();
            md_table(&mut s, &["Object", "Wave (before)", "File (before)"], rows);
        }
        if !k.moved.is_empty() {
            s.push_str("**Moved between namespaces**\n\n");
            let rows =
                k.moved.iter().map(|m| vec![code(&m.from), code(&m.to), code(&place(&m.file, m.line))]).collect();
            md_table(&mut s, &["From", "To", "File"], rows);
        }
        if !k.waves.moved.is_empty() {
            writeln!(s, "**Wave changes** ({} → {} waves)\n", k.waves.count.before, k.waves.count.after).unwrap();
            let rows = k.waves.moved.iter().map(|m| vec![code(&m.id), md_wave(m.before), md_wave(m.after)]).collect();
            md_table(&mut s, &["Object", "Before", "After"], rows);
        }
        if k.critical_path.changed() {
            writeln!(
                s,
                "**Critical path** ({} → {} objects)\n\n- before: {}\n- after: {}\n",
                k.critical_path.before.len(),
                k.critical_path.after.len(),
                md_chain(&k.critical_path.before),
                md_chain(&k.critical_path.after)
            )
            .unwrap();
        }
        if k.worst_case.changed() {
            writeln!(
                s,
                "**Worst-case rollout** ({})\n\n- before: {}\n- after: {}\n",
                worst_case_change(k),
                md_chain(&k.worst_case.before.path),
                md_chain(&k.worst_case.after.path)
            )
            .unwrap();
        }
        s.push_str("</details>\n\n");
    }
    if !d.fixed_findings.is_empty() {
        writeln!(s, "<details><summary>Fixed findings ({})</summary>\n", d.fixed_findings.len()).unwrap();
        findings_table(&mut s, &d.fixed_findings);
        s.push_str("</details>\n\n");
    }
    if !d.old_errors.is_empty() {
        writeln!(
            s,
            "{} cannot be read on either side (not this change's).\n",
            plural(d.old_errors.len(), "file", "files")
        )
        .unwrap();
    }
    fit_comment(s)
}

/// What a comment may hold: GitHub refuses bodies over 65,536 characters, and the cut note and
/// a closing tag need room.
const MAX_COMMENT: usize = 64_000;

/// `s` cut to [`MAX_COMMENT`] characters if longer: after the last whole `<details>` block that
/// fits (the summary comes first and stays), else at a line, closing a block left open, with a
/// note saying where the rest is.
fn fit_comment(mut s: String) -> String {
    const NOTE: &str = "\n… the rest is cut to fit a pull-request comment; `fluxgate diff --format json` has every \
                        change.\n";
    if s.chars().count() <= MAX_COMMENT {
        return s;
    }
    let limit = s.char_indices().nth(MAX_COMMENT).map_or(s.len(), |(i, _)| i);
    let end = "</details>\n\n";
    let cut =
        s[..limit].rfind(end).map(|i| i + end.len()).unwrap_or_else(|| s[..limit].rfind('\n').map_or(limit, |i| i + 1));
    s.truncate(cut);
    if s.matches("<details").count() > s.matches("</details>").count() {
        s.push_str("\n</details>\n");
    }
    s.push_str(NOTE);
    s
}

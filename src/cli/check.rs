//! `fluxgate check`: arguments in, the checker's output rendered (text here; SARIF and GitHub
//! annotations in `ci.rs`).

use std::process::ExitCode;

use super::{CheckArgs, CheckFormat};
use crate::check::{CheckOutput, check_paths_with};
use crate::manifests::LoadOptions;
use crate::object::ObjectKey;
use crate::policy::Policy;
use crate::rules::FindingKind;

pub fn run(args: CheckArgs) -> ExitCode {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fluxgate check: {e}");
                return ExitCode::from(2);
            }
        },
        None => Policy::default(),
    };
    let options = LoadOptions { include_unapplied: args.include_unapplied, cluster: args.cluster.clone() };
    let out = check_paths_with(&args.paths, &policy, options);
    match args.format {
        CheckFormat::Json => println!("{}", serde_json::to_string_pretty(&out).expect("output serialises")),
        CheckFormat::Text => print!("{}", text(&out)),
        CheckFormat::Sarif => {
            println!("{}", serde_json::to_string_pretty(&super::ci::sarif(&out, &policy)).expect("output serialises"))
        }
        CheckFormat::Github => print!("{}", super::ci::github(&out, &summary(&out))),
    }
    ExitCode::from(out.exit_code())
}

/// The terminal report: findings grouped by object, then read errors, then a summary line.
pub fn text(out: &CheckOutput) -> String {
    let mut s = String::new();
    let mut current: Option<(FindingKind, &ObjectKey)> = None;
    for f in &out.findings {
        let this = (f.finding.kind, &f.finding.object);
        if current != Some(this) {
            s.push_str(&format!("{} {} ({}:{})\n", f.finding.kind, f.finding.object, f.file.display(), f.line));
            current = Some(this);
        }
        s.push_str(&format!("  {:<4} {}: {}\n", f.finding.action.as_str(), f.finding.rule, f.finding.message));
    }
    if !out.not_applied.is_empty() {
        s.push_str("not applied by any cluster (not checked; --include-unapplied checks them):\n");
        for n in &out.not_applied {
            s.push_str(&format!("  {} {} ({}:{}): {}\n", n.kind, n.object, n.file.display(), n.line, n.reason));
        }
    }
    if !out.notes.is_empty() {
        s.push_str("notes:\n");
        for n in &out.notes {
            s.push_str(&format!("  {n}\n"));
        }
    }
    if !out.errors.is_empty() {
        s.push_str("could not read:\n");
        for e in &out.errors {
            s.push_str(&format!("  {e}\n"));
        }
    }
    s.push_str(&summary(out));
    s
}

/// `N objects checked: F findings (D deny, W warn), E read errors`, then the objects not
/// applied and the files skipped, when there are any; or that no Flux object was found.
fn summary(out: &CheckOutput) -> String {
    if out.has_no_flux_objects() {
        let paths: Vec<String> = out.paths.iter().map(|p| p.display().to_string()).collect();
        let mut s = format!(
            "no Flux Kustomization or HelmRelease found under {} ({} YAML files read",
            paths.join(", "),
            out.files
        );
        if out.skipped > 0 {
            s.push_str(&format!(", {} skipped as not manifests", out.skipped));
        }
        s.push_str(")\n");
        return s;
    }
    let denies = out.findings.iter().filter(|f| f.finding.is_deny()).count();
    let mut s = format!(
        "{} objects checked: {} findings ({} deny, {} warn), {} read errors",
        out.objects,
        out.findings.len(),
        denies,
        out.findings.len() - denies,
        out.errors.len()
    );
    if !out.not_applied.is_empty() {
        s.push_str(&format!(", {} not applied", out.not_applied.len()));
    }
    if out.skipped > 0 {
        s.push_str(&format!(", {} files skipped (not manifests)", out.skipped));
    }
    s.push('\n');
    s
}

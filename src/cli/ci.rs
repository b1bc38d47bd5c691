//! `check` output for CI systems: SARIF 2.1.0 for code scanning (GitHub, GitLab, Azure DevOps
//! read it) and GitHub Actions workflow commands, which annotate the pull request's diff.

use std::path::{Component, Path};

use serde_json::{Value, json};

use crate::check::CheckOutput;
use crate::policy::{Action, Policy, Rule};

/// The schema URI written into the log, as the SARIF 2.1.0 standard (errata 01) publishes it.
const SARIF_SCHEMA: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// What each rule checks and how to fix what it finds: `help` of the SARIF rule, shown by code
/// scanning beside every result of the rule.
fn rule_help(rule: Rule) -> (&'static str, &'static str) {
    match rule {
        Rule::Cycle => (
            "A dependsOn cycle (or a wait of a parent Kustomization for a child that depends on it) deadlocks reconciliation.",
            "Flux reconciles an object only after everything it lists in dependsOn is ready, so objects on a cycle \
             never become ready. A parent Kustomization with spec.wait: true (or naming the child in \
             spec.healthChecks) waits for the Kustomizations it applies, which counts as an edge parent -> child. \
             Remove one dependsOn entry of the cycle, or, for a wait edge, drop spec.wait from the parent or the \
             dependsOn of the child on its parent.",
        ),
        Rule::DanglingDependsOn => (
            "A dependsOn entry names an object that does not exist.",
            "Flux keeps an object whose dependency does not exist waiting ('dependency not found') for ever. \
             An entry without namespace names an object in the dependent's own namespace. Fix the name or the \
             namespace (the message says where a likely target exists), or add the missing object.",
        ),
        Rule::CrossNamespaceDependsOn => (
            "A dependsOn entry names an object in another namespace.",
            "Flux's --no-cross-namespace-refs does not cover dependsOn, so a tenant can wait on another tenant's \
             objects. Depend on objects of the same namespace, or turn the rule off in the policy if your \
             platform allows it.",
        ),
        Rule::MaxDepth => (
            "The longest dependsOn chain through the object is longer than the policy's limit.",
            "Every link of a dependsOn chain waits for the previous one to become ready, so a long chain makes \
             rollouts and recoveries slow. Flatten the chain: depend on the objects actually needed, not on \
             everything before them.",
        ),
        Rule::DeleteWithDependents => (
            "An object that others list in dependsOn is deleted.",
            "Its dependents stop reconciling once it is gone. Remove the dependsOn entries first.",
        ),
        Rule::DuplicateDependsOn => (
            "The same target is listed more than once in dependsOn.",
            "A repeated entry changes nothing in Flux and is usually a copy-paste mistake hiding the entry that \
             was meant. Remove the duplicate.",
        ),
    }
}

/// SARIF's level for a rule action.
fn level(action: Action) -> &'static str {
    match action {
        Action::Deny => "error",
        Action::Warn => "warning",
        Action::Off => "none",
    }
}

/// A path as a SARIF artifact URI: relative paths stay relative (code scanning resolves them
/// against the repository root, which is where CI runs `check`), with `/` separators and
/// percent-encoding; absolute paths become `file://` URIs.
fn artifact_uri(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(percent_encode(&p.to_string_lossy())),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let joined = parts.join("/");
    if path.is_absolute() { format!("file:///{joined}") } else { joined }
}

fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SARIF locations of a file and a 1-based line: none for an unknown file, no region for
/// line 0 (unknown).
fn locations(file: &Path, line: usize) -> Value {
    if file.as_os_str().is_empty() {
        return json!([]);
    }
    let mut physical = json!({ "artifactLocation": { "uri": artifact_uri(file) } });
    if line > 0 {
        physical["region"] = json!({ "startLine": line });
    }
    json!([{ "physicalLocation": physical }])
}

/// The SARIF 2.1.0 log of one `check` run: every rule with its help and the level the policy
/// gives it, every finding as a result at its file and line, and every read error as a tool
/// notification (the run then did not succeed: its results are incomplete).
pub fn sarif(out: &CheckOutput, policy: &Policy) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|&rule| {
            let (short, help) = rule_help(rule);
            let action = policy.action(rule);
            json!({
                "id": rule.as_str(),
                "name": rule.as_str(),
                "shortDescription": { "text": short },
                "fullDescription": { "text": format!("{short} {help}") },
                "help": { "text": help },
                "defaultConfiguration": { "enabled": action != Action::Off, "level": level(action) },
            })
        })
        .collect();
    let results: Vec<Value> = out
        .findings
        .iter()
        .map(|f| {
            let rule_index = Rule::ALL.iter().position(|&r| r == f.finding.rule).expect("every rule is in Rule::ALL");
            json!({
                "ruleId": f.finding.rule.as_str(),
                "ruleIndex": rule_index,
                "level": level(f.finding.action),
                "message": { "text": f.finding.message },
                "locations": locations(&f.file, f.line),
                "properties": { "kind": f.finding.kind.to_string(), "object": f.finding.object.to_string() },
            })
        })
        .collect();
    let notifications: Vec<Value> = out
        .errors
        .iter()
        .map(|e| json!({ "level": "error", "message": { "text": e.message }, "locations": locations(&e.file, e.line) }))
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "fluxgate",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": out.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}

/// GitHub Actions workflow commands: one `::error` or `::warning` per finding and read error,
/// at its file and line, then the summary as a plain log line.
pub fn github(out: &CheckOutput, summary: &str) -> String {
    let mut s = String::new();
    for f in &out.findings {
        let command = if f.finding.is_deny() { "error" } else { "warning" };
        s.push_str(&annotation(command, &f.file, f.line, &format!("fluxgate {}", f.finding.rule), &f.finding.message));
    }
    for e in &out.errors {
        s.push_str(&annotation("error", &e.file, e.line, "fluxgate could not read", &e.message));
    }
    s.push_str(summary);
    s
}

fn annotation(command: &str, file: &Path, line: usize, title: &str, message: &str) -> String {
    // The runner matches `file` against the repository's paths: `./apps.yaml` is `apps.yaml`.
    let file: std::path::PathBuf = file.components().filter(|c| *c != Component::CurDir).collect();
    let mut props = Vec::new();
    if !file.as_os_str().is_empty() {
        props.push(format!("file={}", escape_property(&file.to_string_lossy())));
        if line > 0 {
            props.push(format!("line={line}"));
        }
    }
    props.push(format!("title={}", escape_property(title)));
    let props = props.join(",");
    format!("::{command} {props}::{}\n", escape_data(message))
}

/// The escaping the Actions runner undoes in a command's message (`%`, CR, LF).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// The escaping of a command's property values: also `:` and `,`, which delimit them.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_are_relative_with_forward_slashes_and_encoded() {
        assert_eq!(artifact_uri(Path::new("./clusters/prod/apps.yaml")), "clusters/prod/apps.yaml");
        assert_eq!(artifact_uri(Path::new("a b/c%d.yaml")), "a%20b/c%25d.yaml");
        assert_eq!(artifact_uri(Path::new("../x/y.yaml")), "../x/y.yaml");
        assert_eq!(artifact_uri(Path::new("/repo/x.yaml")), "file:///repo/x.yaml");
    }

    #[test]
    fn workflow_command_values_cannot_break_out_of_their_field() {
        assert_eq!(escape_data("50%\nnext"), "50%25%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
        assert_eq!(
            annotation("error", Path::new("d/x,y.yaml"), 3, "fluxgate cycle", "a -> b\nc"),
            "::error file=d/x%2Cy.yaml,line=3,title=fluxgate cycle::a -> b%0Ac\n"
        );
        assert_eq!(annotation("warning", Path::new("./d/f"), 0, "t", "m"), "::warning file=d/f,title=t::m\n");
        assert_eq!(annotation("error", Path::new(""), 3, "t", "m"), "::error title=t::m\n", "no place, no file");
        assert_eq!(locations(Path::new(""), 3), json!([]));
    }
}

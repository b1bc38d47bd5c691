//! fluxgate guards the `dependsOn` graphs of Flux CD Kustomizations and HelmReleases.
//!
//! The crate is laid out by responsibility:
//! - [`object`]: what a Flux object is to fluxgate (the fields the rules need, durations, the
//!   slim decoding of the load paths, tables of objects by key);
//! - [`graph`]: the per-kind dependency graph, cycle search, chains and waves;
//! - [`rules`]: the rules and their findings, for one request or a whole graph;
//! - [`policy`]: the policy file, its defaults checked against the CRDs, and the policy in force
//!   reloaded when it changes;
//! - [`webhooks`]: the webhook configurations derived from the policy, kept in step with it;
//! - [`admission`]: AdmissionReview in, response out (validation and mutation);
//! - [`cache`]: the objects the webhook knows, with read-your-writes;
//! - [`coordination`]: the shared record that makes decisions hold across replicas;
//! - [`manifests`]: Flux objects read from YAML files and folders;
//! - [`server`]: the HTTPS webhook and the admin port;
//! - [`status`]: live dependency status, states and root causes of stuck objects;
//! - [`audit`]: the periodic whole-graph scan behind `/report`;
//! - [`certs`]: CA and serving certificates;
//! - [`diff`]: what a change to a checkout does to its graphs, waves and rollout time;
//! - [`check`]: the offline checker over what each cluster of a checkout applies;
//! - [`cli`]: the command line: arguments in, output rendered.

pub mod admission;
pub mod audit;
pub mod cache;
pub mod certs;
pub mod check;
pub mod cli;
pub mod coordination;
pub mod diff;
pub mod graph;
pub mod manifests;
pub mod object;
pub mod policy;
pub mod rules;
pub mod server;
pub mod status;
pub mod webhooks;

#[cfg(test)]
mod layout {
    //! The layout stays a hierarchy: no two top-level modules import each other, directly or
    //! through others (tests and doc comments aside).

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn sources(path: &Path, out: &mut String) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                sources(&entry.unwrap().path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }

    #[test]
    fn no_top_level_module_imports_one_that_imports_it_back() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name == "lib" || name == "main" {
                continue;
            }
            let mut code = String::new();
            sources(&path, &mut code);
            let uses = code
                .split("crate::")
                .skip(1)
                .map(|rest| rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>())
                .filter(|m| *m != name && !m.is_empty())
                .collect();
            imports.insert(name, uses);
        }
        assert!(imports.len() > 10, "the modules of src/ were found: {imports:?}");
        // A module reaching itself through what it imports is a circle.
        for start in imports.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<(&String, Vec<&String>)> = vec![(start, vec![start])];
            while let Some((m, path)) = stack.pop() {
                for next in imports.get(m).into_iter().flatten().filter(|n| imports.contains_key(*n)) {
                    assert!(
                        next != start,
                        "import circle: {} -> {next}",
                        path.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" -> ")
                    );
                    if seen.insert(next) {
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
    }
}

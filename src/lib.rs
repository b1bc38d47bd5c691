//! fluxgate guards the `dependsOn` graphs of Flux CD Kustomizations and HelmReleases.
//!
//! The crate is laid out by responsibility, one module each; the layout, module by module and
//! file by file, is described once, in `docs/design.md` ("Layout"), and each module's own doc
//! says what it is for. The decision code ([`rules`], [`graph`], [`admission`]'s `decide`) does
//! no I/O; [`server`], [`cache`]'s watch, [`coordination`] and [`cli`] are where the world is met.

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

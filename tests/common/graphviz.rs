//! Graphviz `dot` as the tests run it: DOT in, SVG out, failing the test when `dot` rejects it.
//! Included by path where the rest of `common` is not needed.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// The SVG that `dot -Tsvg` draws from `source`.
pub fn dot_svg(source: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Graphviz dot is installed (.ci/run installs Debian's graphviz)");
    child.stdin.take().unwrap().write_all(source.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dot rejected the graph: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

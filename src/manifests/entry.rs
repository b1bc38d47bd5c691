//! Where a cluster starts: the entry points Flux really has.
//!
//! - `flux bootstrap` writes `clusters/<name>/flux-system/gotk-sync.yaml`: a GitRepository and
//!   the `flux-system` Kustomization whose `spec.path` is the cluster folder. Flux creates both
//!   in the cluster itself, so they exist even when no `kustomization.yaml` lists the file.
//! - A flux-operator `FluxInstance` (or the `flux-instance` Helm chart's values, as a HelmRelease
//!   or a values file) with `spec.sync`: the operator creates a source and a Kustomization named
//!   `sync.name` (else the instance's namespace) in the instance's namespace, applying
//!   `sync.path`.
//! - A Kustomization whose `spec.path` holds its own file (a GitRepository/Kustomization pair
//!   applied once by hand, then applying itself): found by the clusters step, which builds paths.

use std::path::Path;

use serde_json::{Value, json};

use crate::object::{FluxKind, at, kind_of};

/// The namespace Flux is installed in by default.
const FLUX_NAMESPACE: &str = "flux-system";

/// How an entry point was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The `flux-system` Kustomization of `flux bootstrap` (`gotk-sync.yaml`).
    Bootstrap,
    /// A FluxInstance's `spec.sync`.
    FluxInstance,
    /// The `flux-instance` chart's `instance.sync`, in a HelmRelease or a values file.
    InstanceChart,
    /// A Kustomization that applies its own file.
    SelfApplied,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Bootstrap => "flux bootstrap sync",
            Origin::FluxInstance => "FluxInstance sync",
            Origin::InstanceChart => "flux-instance chart sync",
            Origin::SelfApplied => "Kustomization applying its own folder",
        })
    }
}

/// An entry point as written in a file.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub origin: Origin,
    pub file: std::path::PathBuf,
    pub line: usize,
    /// The root Kustomization: the bootstrap one as written, or the one flux-operator creates.
    pub root: Value,
}

impl Entry {
    /// The entry point `item` (a document of file `file`, named `name`) describes, if any.
    pub fn of_document(item: &Value, file: &Path, line: usize, name: &str) -> Option<Entry> {
        let entry = |origin, root| Some(Entry { origin, file: file.to_path_buf(), line, root });
        let text = |v: &Value, path: &[&str]| at(v, path).and_then(Value::as_str).map(str::to_string);
        if kind_of(item) == Some(FluxKind::Kustomization) {
            return (name == "gotk-sync.yaml" || name == "gotk-sync.yml")
                .then(|| entry(Origin::Bootstrap, item.clone()))
                .flatten();
        }
        let api_version = item.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or_default();
        let namespace = text(item, &["metadata", "namespace"]).unwrap_or_else(|| FLUX_NAMESPACE.to_string());
        let (origin, sync, namespace) = if kind == "FluxInstance" && api_version.starts_with("fluxcd.controlplane.io/")
        {
            (Origin::FluxInstance, at(item, &["spec", "sync"])?, namespace)
        } else if kind_of(item) == Some(FluxKind::HelmRelease) {
            (Origin::InstanceChart, at(item, &["spec", "values", "instance", "sync"])?, namespace)
        } else if item.get("kind").is_none() {
            // The chart's values file, given to a HelmRelease through a ConfigMap.
            (Origin::InstanceChart, at(item, &["instance", "sync"])?, FLUX_NAMESPACE.to_string())
        } else {
            return None;
        };
        // A `${var}` in the path (set by a parent's post-build substitution) is matched against the
        // folders of the checkout by the clusters step; a Helm template is not.
        let path = sync.get("path").and_then(Value::as_str).filter(|p| !p.contains("{{"))?;
        let source_kind = sync.get("kind").and_then(Value::as_str).unwrap_or("GitRepository");
        let sync_name = sync.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(&namespace);
        let root = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": { "name": sync_name, "namespace": namespace },
            "spec": {
                "interval": sync.get("interval").cloned().unwrap_or_else(|| json!("1m")),
                "path": path,
                "prune": true,
                "sourceRef": { "kind": source_kind, "name": sync_name },
            },
        });
        entry(origin, root)
    }

    /// The root's `spec.sourceRef` (kind, name): the source of the checkout in this cluster.
    pub fn source(&self) -> (String, String) {
        source_of(&self.root).unwrap_or_else(|| ("GitRepository".into(), FLUX_NAMESPACE.into()))
    }
}

/// A Kustomization's `spec.sourceRef` kind (GitRepository when unset) and name.
pub(super) fn source_of(ks: &Value) -> Option<(String, String)> {
    let name = at(ks, &["spec", "sourceRef", "name"]).and_then(Value::as_str)?;
    let kind = at(ks, &["spec", "sourceRef", "kind"]).and_then(Value::as_str).unwrap_or("GitRepository");
    Some((kind.to_string(), name.to_string()))
}

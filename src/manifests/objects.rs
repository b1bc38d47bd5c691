//! Step 6 of the loader: the objects of each cluster, as fluxgate's rules read them.
//!
//! Each placed instance becomes a [`FluxObject`] in the namespace the build gave it (`default`
//! when nothing gave one), owned by the Kustomization that applies it (the owner labels Flux
//! writes on apply). When several clusters give one name to different objects, each cluster is
//! checked on its own ([`Manifests::clusters`]); otherwise they form one graph, each object once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::clusters::{Placed, PlacedSet};
use super::documents::{Body, Documents};
use super::{
    Cluster, FALLBACK_NAMESPACE, LoadError, LoadOptions, Loaded, LoadedSet, Manifests, NotApplied, SetDependency,
    resource_set,
};
use crate::object::{FluxKind, FluxObject, ObjectKey, at};
use crate::status::ObjectStatus;

fn namespace_of(value: &Value) -> String {
    at(value, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(FALLBACK_NAMESPACE)
        .to_string()
}

/// Turns what step 5 placed into [`Manifests`]. `explicit` are the paths given on the command
/// line: a file named there that does not parse is always an error.
pub(super) fn resolve(docs: &Documents, placed: Placed, explicit: &[PathBuf], options: &LoadOptions) -> Manifests {
    let mut out = Manifests { files: docs.files.len(), ..Manifests::default() };
    out.errors.extend(docs.errors.iter().cloned());
    out.notes = placed.notes;
    // A base several clusters build gives its note once.
    let mut seen_notes = std::collections::HashSet::new();
    out.notes.retain(|n| seen_notes.insert((n.file.clone(), n.line, n.message.clone())));
    let mut skipped_files: Vec<&Path> = Vec::new();
    for (error, flux) in &docs.unparsed {
        // Without entry points what Flux applies is a guess: a broken file meant as a Flux
        // manifest is then reported rather than passed over.
        let guessed_flux = placed.guessed && *flux && !super::root::is_archive(&error.file);
        let applied = placed.applied_files.contains(&error.file) || guessed_flux;
        if applied || explicit.contains(&error.file) {
            out.errors.push(error.clone());
        } else if !skipped_files.contains(&error.file.as_path()) {
            skipped_files.push(&error.file);
            out.skipped += 1;
        }
    }
    let shared_files: Vec<Arc<Path>> = docs.files.iter().map(|f| Arc::from(f.as_path())).collect();

    // Every instance of every cluster as an object; an instance that cannot be read is reported
    // once per document.
    let mut object_of: Vec<Option<usize>> = vec![None; placed.instances.len()];
    let mut all: Vec<Loaded> = Vec::new();
    let mut reported = std::collections::HashSet::new();
    // The key of each instance that applies others: the owner of what it applies.
    let mut keys: Vec<Option<ObjectKey>> = vec![None; placed.instances.len()];
    for p in placed.instances.iter().filter_map(|i| i.parent) {
        if keys[p].is_none() {
            let value = placed.instances[p].value(docs);
            let name = at(&value, &["metadata", "name"]).and_then(Value::as_str).unwrap_or_default();
            if !name.is_empty() {
                keys[p] = Some(ObjectKey::new(namespace_of(&value), name));
            }
        }
    }
    for cluster in &placed.clusters {
        for &i in &cluster.members {
            let inst = &placed.instances[i];
            if object_of[i].is_some() {
                continue;
            }
            let value = inst.value(docs);
            match FluxObject::from_value(inst.kind, &value, &namespace_of(&value), "") {
                Ok(mut object) => {
                    if object.owner.is_none() {
                        object.owner = inst.parent.and_then(|p| keys[p].clone());
                    }
                    object_of[i] = Some(all.len());
                    all.push(Loaded {
                        object,
                        file: shared_files[inst.file].clone(),
                        line: inst.line,
                        // Kustomize and Flux's steps leave the status written in a dump as it is.
                        status: ObjectStatus::from_value(&value),
                    });
                }
                Err(e) => {
                    if reported.insert((inst.file, inst.line)) {
                        out.errors.push(LoadError {
                            file: docs.files[inst.file].clone(),
                            line: inst.line,
                            message: format!("{}: {e}", inst.kind),
                        });
                    }
                }
            }
        }
    }
    let mut per_cluster: Vec<(PathBuf, Vec<usize>)> = placed
        .clusters
        .iter()
        .map(|c| (c.folder.clone(), c.members.iter().filter_map(|&i| object_of[i]).collect()))
        .collect();

    for (&d, reason) in &placed.not_applied {
        let doc = &docs.docs[d];
        let Body::Flux { kind, .. } = &doc.body else { continue };
        let value = &docs.value(d);
        let name = at(value, &["metadata", "name"]).and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        out.not_applied.push(NotApplied {
            kind: *kind,
            object: ObjectKey::new(namespace_of(value), name),
            file: docs.files[doc.file].clone(),
            line: doc.line,
            reason: reason.clone(),
        });
        if options.include_unapplied
            && let Ok(object) = FluxObject::from_value(*kind, value, &namespace_of(value), "")
        {
            let n = all.len();
            all.push(Loaded {
                object,
                file: shared_files[doc.file].clone(),
                line: doc.line,
                status: ObjectStatus::from_value(value),
            });
            join(&mut per_cluster, n, &all);
        }
    }

    // Clusters conflict when one name stands for different objects in different clusters.
    let mut definitions: HashMap<(FluxKind, &ObjectKey), &FluxObject> = HashMap::with_capacity(all.len());
    let mut conflict = false;
    for l in &all {
        match definitions.entry((l.object.kind, &l.object.key)) {
            Entry::Occupied(other) => conflict |= **other.get() != l.object,
            Entry::Vacant(slot) => {
                slot.insert(&l.object);
            }
        }
    }
    drop(definitions);
    out.resource_sets = sets(docs, &placed.resource_sets, &per_cluster);
    if conflict && per_cluster.len() > 1 {
        out.objects = all;
        out.clusters = per_cluster.into_iter().map(|(folder, members)| Cluster { folder, members }).collect();
        out.groups = out.clusters.clone();
        return out;
    }
    // One graph: each document's object once, as the first cluster that has it gives it.
    let mut first: HashMap<(FluxKind, ObjectKey, Arc<Path>, usize), usize> = HashMap::with_capacity(all.len());
    let mut renumber: Vec<usize> = Vec::with_capacity(all.len());
    for l in all {
        let n = *first.entry((l.object.kind, l.object.key.clone(), l.file.clone(), l.line)).or_insert_with(|| {
            out.objects.push(l);
            out.objects.len() - 1
        });
        renumber.push(n);
    }
    out.groups = per_cluster
        .into_iter()
        .map(|(folder, members)| {
            let mut members: Vec<usize> = members.into_iter().map(|m| renumber[m]).collect();
            members.dedup();
            Cluster { folder, members }
        })
        .collect();
    out
}

/// The placed ResourceSets of the clusters kept, each with the index of its cluster.
fn sets(docs: &Documents, placed: &[PlacedSet], clusters: &[(PathBuf, Vec<usize>)]) -> Vec<LoadedSet> {
    let mut out = Vec::new();
    for set in placed {
        let Some(group) = clusters.iter().position(|(folder, _)| *folder == set.cluster) else { continue };
        let name = at(&set.value, &["metadata", "name"]).and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let namespace = namespace_of(&set.value);
        let key = ObjectKey::new(namespace.as_str(), name);
        let depends_on = resource_set::dependencies(&set.value)
            .into_iter()
            .map(|d| SetDependency {
                key: ObjectKey::new(d.namespace.as_deref().unwrap_or(&namespace), d.name.as_str()),
                api_version: d.api_version,
                kind: d.kind,
            })
            .collect();
        let renders = set
            .renders
            .iter()
            .filter_map(|(kind, v)| {
                let name = at(v, &["metadata", "name"]).and_then(Value::as_str)?;
                Some((*kind, ObjectKey::new(namespace_of(v), name)))
            })
            .collect();
        if !out.iter().any(|s: &LoadedSet| s.key == key && s.group == group) {
            out.push(LoadedSet { key, file: docs.files[set.file].clone(), line: set.line, group, depends_on, renders });
        }
    }
    out
}

/// Puts object `n` (not applied) into the clusters it would join: those holding an object
/// written closest to it (the most leading folders in common), all of them on a tie.
fn join(clusters: &mut Vec<(PathBuf, Vec<usize>)>, n: usize, all: &[Loaded]) {
    let common = |a: &Path, b: &Path| a.components().zip(b.components()).take_while(|(x, y)| x == y).count();
    let file = &all[n].file;
    if clusters.is_empty() {
        clusters.push((PathBuf::new(), Vec::new()));
    }
    let scores: Vec<usize> = clusters
        .iter()
        .map(|(_, members)| members.iter().map(|&m| common(file, &all[m].file)).max().unwrap_or(0))
        .collect();
    let best = scores.iter().copied().max().unwrap_or(0);
    for (c, score) in clusters.iter_mut().zip(scores) {
        if score == best {
            c.1.push(n);
        }
    }
}

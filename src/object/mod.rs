//! The Flux objects fluxgate reasons about, reduced to the fields the rules need.
//!
//! Everything else of a Kustomization or HelmRelease (status, managedFields, the source, the
//! values) is dropped when an object is read, which keeps the cache small on large clusters.

mod duration;
pub mod keyed;
pub mod slim;

pub use duration::{is_flux_duration, parse_duration};

use std::fmt;
use std::sync::{LazyLock, Mutex};

use arcstr::ArcStr;
use serde::Serialize;
use serde_json::Value;

/// Label Flux sets on every object a Kustomization applies: the parent's name.
pub const OWNER_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Label Flux sets on every object a Kustomization applies: the parent's namespace.
pub const OWNER_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";
const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";

/// The two kinds of Flux object whose `dependsOn` graphs fluxgate guards. The graphs are never
/// mixed: a `dependsOn` entry always names an object of its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FluxKind {
    Kustomization,
    HelmRelease,
}

impl FluxKind {
    /// Both kinds, in a fixed order (used to index per-kind tables).
    pub const ALL: [FluxKind; 2] = [FluxKind::Kustomization, FluxKind::HelmRelease];

    /// The kind for an API group and kind name, if it is one fluxgate guards. Any version of the
    /// group is accepted (`v1`, `v1beta2`; `v2`, `v2beta2`, `v2beta1`).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<FluxKind> {
        match (group, kind) {
            (KUSTOMIZE_GROUP, "Kustomization") => Some(FluxKind::Kustomization),
            (HELM_GROUP, "HelmRelease") => Some(FluxKind::HelmRelease),
            _ => None,
        }
    }

    /// The kind for a manifest's `apiVersion` and `kind`. A kustomize `kustomization.yaml`
    /// (`kustomize.config.k8s.io`) is not a Flux Kustomization and gives `None`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<FluxKind> {
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        FluxKind::from_group_kind(group, kind)
    }

    /// The kind whose graph this kind's `dependsOn` never reaches.
    pub fn other(self) -> FluxKind {
        match self {
            FluxKind::Kustomization => FluxKind::HelmRelease,
            FluxKind::HelmRelease => FluxKind::Kustomization,
        }
    }

    /// Position in [`FluxKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            FluxKind::Kustomization => 0,
            FluxKind::HelmRelease => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
        }
    }

    /// The API group of this kind.
    pub fn group(self) -> &'static str {
        match self {
            FluxKind::Kustomization => KUSTOMIZE_GROUP,
            FluxKind::HelmRelease => HELM_GROUP,
        }
    }
}

impl fmt::Display for FluxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every name and namespace in use, held once: a name that a hundred objects mention (in their
/// key, their `dependsOn`, their owner labels) costs one string.
static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(|| Mutex::new(Names { set: Default::default(), sweep_at: 1024 }));

struct Names {
    set: hashbrown::HashSet<ArcStr>,
    /// Size at which strings nobody holds any more are dropped; doubling it after each sweep
    /// keeps the cost of sweeping constant per string.
    sweep_at: usize,
}

/// The shared copy of `s`.
fn intern(s: &str) -> ArcStr {
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if names.set.len() >= names.sweep_at {
        // Only the set holds a string whose count is one, and new holders get theirs here,
        // under this lock.
        names.set.retain(|s| ArcStr::strong_count(s).is_none_or(|n| n > 1));
        names.sweep_at = (names.set.len() * 2).max(1024);
    }
    names.set.get_or_insert_with(s, |s| ArcStr::from(s)).clone()
}

/// A node of a graph: `namespace/name`.
///
/// Both parts are interned: every key naming the same object shares its strings, so a clone
/// costs two reference counts and a name is held once however often it is mentioned. Each part
/// is an `ArcStr`, one pointer to an allocation holding the count, the length and the text: a
/// key is 16 bytes, and a cache of a hundred thousand holds several keys per object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: ArcStr,
    pub name: ArcStr,
}

impl ObjectKey {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        ObjectKey { namespace: intern(namespace.as_ref()), name: intern(name.as_ref()) }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What fluxgate keeps of one Kustomization or HelmRelease.
///
/// Laid out for a cache of a hundred thousand: lists cut to size, and what few objects have
/// (health checks naming Kustomizations, unreadable `dependsOn` entries) behind one pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxObject {
    pub kind: FluxKind,
    pub key: ObjectKey,
    /// `spec.dependsOn` in the order written, each namespace resolved (an empty namespace means
    /// the object's own). Duplicates are kept so that the duplicate rule can see them.
    pub depends_on: Box<[ObjectKey]>,
    /// `spec.wait` (Kustomizations only).
    pub wait: bool,
    /// `spec.wait: true` is set but no field manager owns it: the object has
    /// `metadata.managedFields` and none of them lists `spec.wait`. That is a value a mutating
    /// webhook added (fluxgate's own `wait` default), not one the applier sent. Such a wait is
    /// fluxgate's to withdraw (see the mutating webhook), so it is never held against another
    /// object: it draws no wait edge. An object without managedFields (a manifest from Git, a
    /// test) owns what it says.
    pub wait_unowned: bool,
    /// The parent Kustomization named by Flux's owner labels, if both are present.
    pub owner: Option<ObjectKey>,
    /// `metadata.uid`, once the API server assigned one: audit Events name it, since
    /// `kubectl describe` shows only the Events whose `regarding.uid` matches.
    pub uid: Option<Uid>,
    extra: Option<Box<Extra>>,
}

/// The parts of an object that few objects have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extra {
    health_check_kustomizations: Vec<ObjectKey>,
    unreadable_depends_on: Vec<ObjectError>,
}

/// `metadata.uid`. The API server writes a UUID, kept as its 16 bytes (a third of the string);
/// anything else is kept as written. Either way it prints as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Uid {
    /// The UUID in its canonical form (lowercase, hyphens at 8-4-4-4-12), which prints back
    /// the same; `None` for anything else.
    fn uuid(s: &str) -> Option<[u8; 16]> {
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut digits = b.iter().filter(|&&c| c != b'-');
        let mut out = [0u8; 16];
        for byte in &mut out {
            *byte = digit(*digits.next()?)? << 4 | digit(*digits.next()?)?;
        }
        Some(out)
    }
}

impl From<&str> for Uid {
    fn from(s: &str) -> Uid {
        Uid::uuid(s).map_or_else(|| Uid::Text(s.into()), Uid::Uuid)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Text(s) => f.write_str(s),
            Uid::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("metadata.name is missing or empty")]
    MissingName,
    #[error("{field} must be {expected}")]
    BadField { field: String, expected: &'static str },
}

fn bad(field: impl Into<String>, expected: &'static str) -> ObjectError {
    ObjectError::BadField { field: field.into(), expected }
}

impl FluxObject {
    /// An object with these `dependsOn` targets and nothing else: no wait, no health checks,
    /// no owner.
    pub fn new(kind: FluxKind, key: ObjectKey, depends_on: Vec<ObjectKey>) -> FluxObject {
        FluxObject {
            kind,
            key,
            depends_on: depends_on.into_boxed_slice(),
            wait: false,
            wait_unowned: false,
            owner: None,
            uid: None,
            extra: None,
        }
    }

    /// `spec.healthChecks` entries that name a Kustomization: the object waits for each of them.
    pub fn health_check_kustomizations(&self) -> &[ObjectKey] {
        self.extra.as_ref().map_or(&[], |e| &e.health_check_kustomizations)
    }

    pub fn set_health_check_kustomizations(&mut self, targets: Vec<ObjectKey>) {
        self.set_extra(|e| e.health_check_kustomizations = targets);
    }

    /// `dependsOn` entries that name nothing Flux can find (the CRD accepts `name: ""`), each
    /// with what is wrong with it. They are findings about the entry; the rest of the object
    /// is read and recorded as usual.
    pub fn unreadable_depends_on(&self) -> &[ObjectError] {
        self.extra.as_ref().map_or(&[], |e| &e.unreadable_depends_on)
    }

    fn set_extra(&mut self, change: impl FnOnce(&mut Extra)) {
        let mut extra = self.extra.take().map_or_else(Extra::default, |e| *e);
        change(&mut extra);
        extra.health_check_kustomizations.shrink_to_fit();
        extra.unreadable_depends_on.shrink_to_fit();
        if extra != Extra::default() {
            self.extra = Some(Box::new(extra));
        }
    }

    /// Reads an object of `kind` from its JSON form (an admission request's `object`, a watch
    /// event, a parsed manifest). `namespace` is where the object lives: the caller decides it
    /// (the admission request's namespace, the watch object's, the one resolved from kustomize).
    /// `name` falls back to `metadata.name` when empty.
    pub fn from_value(kind: FluxKind, value: &Value, namespace: &str, name: &str) -> Result<FluxObject, ObjectError> {
        let metadata = value.get("metadata");
        let name = if name.is_empty() {
            metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default()
        } else {
            name
        };
        if name.is_empty() {
            return Err(ObjectError::MissingName);
        }
        let key = ObjectKey::new(namespace, name);
        let spec = match value.get("spec") {
            None | Some(Value::Null) => None,
            Some(Value::Object(spec)) => Some(spec),
            Some(_) => return Err(bad("spec", "an object")),
        };
        let field = |name: &str| spec.and_then(|s| s.get(name)).filter(|v| !v.is_null());

        let mut depends_on = Vec::new();
        let mut unreadable_depends_on = Vec::new();
        if let Some(list) = field("dependsOn") {
            let list = list.as_array().ok_or_else(|| bad("spec.dependsOn", "a list"))?;
            for (i, entry) in list.iter().enumerate() {
                let Some(target) = entry.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
                    unreadable_depends_on.push(bad(format!("spec.dependsOn[{i}].name"), "a non-empty string"));
                    continue;
                };
                let target_ns = match entry.get("namespace") {
                    None | Some(Value::Null) => namespace,
                    Some(Value::String(ns)) if ns.is_empty() => namespace,
                    Some(Value::String(ns)) => ns.as_str(),
                    Some(_) => {
                        unreadable_depends_on.push(bad(format!("spec.dependsOn[{i}].namespace"), "a string"));
                        continue;
                    }
                };
                depends_on.push(ObjectKey::new(target_ns, target));
            }
        }

        let mut wait = false;
        let mut health_check_kustomizations = Vec::new();
        if kind == FluxKind::Kustomization {
            wait = match field("wait") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("spec.wait", "a boolean")),
            };
            if let Some(list) = field("healthChecks") {
                let list = list.as_array().ok_or_else(|| bad("spec.healthChecks", "a list"))?;
                for entry in list {
                    if let Some(target) = health_check_target(entry) {
                        health_check_kustomizations.push(target);
                    }
                }
            }
        }

        let owner = metadata.and_then(|m| m.get("labels")).and_then(|labels| {
            let name = labels.get(OWNER_NAME_LABEL)?.as_str()?;
            let ns = labels.get(OWNER_NAMESPACE_LABEL)?.as_str()?;
            (!name.is_empty() && !ns.is_empty()).then(|| ObjectKey::new(ns, name))
        });

        let wait_unowned = wait && metadata.is_some_and(|m| field_is_unowned(m, &["spec", "wait"]));
        let uid = metadata.and_then(|m| m.get("uid")).and_then(Value::as_str).filter(|u| !u.is_empty()).map(Uid::from);
        depends_on.shrink_to_fit();
        health_check_kustomizations.shrink_to_fit();

        let mut object = FluxObject {
            kind,
            key,
            depends_on: depends_on.into_boxed_slice(),
            wait,
            wait_unowned,
            owner,
            uid,
            extra: None,
        };
        if !health_check_kustomizations.is_empty() || !unreadable_depends_on.is_empty() {
            object.set_extra(|e| {
                e.health_check_kustomizations = health_check_kustomizations;
                e.unreadable_depends_on = unreadable_depends_on;
            });
        }
        Ok(object)
    }

    /// Whether Flux's owner labels mark this object as applied by a parent Kustomization.
    pub fn has_owner_labels(&self) -> bool {
        self.owner.is_some()
    }
}

/// A `spec.healthChecks` entry that names a Flux Kustomization, resolved to its key, read the
/// way kustomize-controller reads it (`inventory.ReferenceToObjMetadataSet`):
/// - an entry without `apiVersion` is taken as `apps/v1`, so it never names a Flux
///   Kustomization;
/// - an entry without `namespace` is looked up with an empty namespace, which finds no
///   namespaced object: the health check can never pass, but it waits for no Kustomization.
fn health_check_target(entry: &Value) -> Option<ObjectKey> {
    let kind = entry.get("kind")?.as_str()?;
    let api_version = entry.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty())?;
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    if FluxKind::from_group_kind(group, kind) != Some(FluxKind::Kustomization) {
        return None;
    }
    let name = entry.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let ns = entry.get("namespace")?.as_str().filter(|n| !n.is_empty())?;
    Some(ObjectKey::new(ns, name))
}

/// Whether `metadata.managedFields` is present and no entry owns the field at `path`
/// (`["spec", "wait"]` is `f:spec` -> `f:wait` in `fieldsV1`). Without managedFields nothing is
/// known about ownership, and the answer is `false`.
pub fn field_is_unowned(metadata: &Value, path: &[&str]) -> bool {
    let Some(entries) = metadata.get("managedFields").and_then(Value::as_array).filter(|e| !e.is_empty()) else {
        return false;
    };
    !entries.iter().any(|entry| {
        let mut node = entry.get("fieldsV1");
        for segment in path {
            node = node.and_then(|n| n.get(format!("f:{segment}")));
        }
        node.is_some()
    })
}

/// The value at `path`, a list of object fields (`["spec", "timeout"]`). What
/// `Value::pointer("/spec/timeout")` finds, without the two strings `pointer` allocates per
/// step to unescape it: the loaders call this a few times per object.
pub fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, field| v.get(field))
}

/// The Flux kind of a manifest or request object, from its `apiVersion` and `kind` fields;
/// `None` for anything else.
pub fn kind_of(value: &Value) -> Option<FluxKind> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    FluxKind::from_api_version(api_version, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depends_on_namespace_defaults_to_own_namespace() {
        let v = json!({"metadata": {"name": "apps"}, "spec": {"dependsOn": [
            {"name": "infra"}, {"name": "crds", "namespace": "flux-system"}, {"name": "x", "namespace": ""}
        ]}});
        let o = FluxObject::from_value(FluxKind::Kustomization, &v, "team", "").unwrap();
        assert_eq!(o.key, ObjectKey::new("team", "apps"));
        assert_eq!(
            *o.depends_on,
            [ObjectKey::new("team", "infra"), ObjectKey::new("flux-system", "crds"), ObjectKey::new("team", "x")]
        );
    }

    #[test]
    fn health_checks_keep_only_flux_kustomizations_as_flux_resolves_them() {
        let v = json!({"metadata": {"name": "p"}, "spec": {"healthChecks": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "namespace": "x"},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": "c", "namespace": "ns"},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1beta2", "kind": "Kustomization", "name": "e", "namespace": "other"},
            // Flux reads a missing apiVersion as apps/v1: not a Flux Kustomization.
            {"kind": "Kustomization", "name": "f", "namespace": "other"},
            // Flux looks a missing namespace up as "", which finds nothing: no wait on ns/g.
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": "g"}
        ]}});
        let o = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap();
        assert_eq!(o.health_check_kustomizations(), [ObjectKey::new("ns", "c"), ObjectKey::new("other", "e")]);
    }

    fn managed(fields_v1: Value) -> Value {
        json!([
            {"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
             "fieldsType": "FieldsV1", "fieldsV1": fields_v1},
            {"manager": "kustomize-controller", "operation": "Update", "subresource": "status",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}}}}
        ])
    }

    #[test]
    fn a_wait_no_field_manager_owns_is_unowned() {
        let spec = json!({"wait": true, "interval": "10m"});
        let unowned = json!({"metadata": {"name": "a", "managedFields": managed(json!({"f:spec": {"f:interval": {}}}))}, "spec": spec});
        let o = FluxObject::from_value(FluxKind::Kustomization, &unowned, "ns", "").unwrap();
        assert!(o.wait && o.wait_unowned);

        let owned = json!({"metadata": {"name": "a", "managedFields": managed(json!({"f:spec": {"f:interval": {}, "f:wait": {}}}))}, "spec": spec});
        let o = FluxObject::from_value(FluxKind::Kustomization, &owned, "ns", "").unwrap();
        assert!(o.wait && !o.wait_unowned);

        // Nothing is known without managedFields: the object owns what it says.
        let bare = json!({"metadata": {"name": "a"}, "spec": spec});
        let o = FluxObject::from_value(FluxKind::Kustomization, &bare, "ns", "").unwrap();
        assert!(o.wait && !o.wait_unowned);
    }

    #[test]
    fn owner_needs_both_labels() {
        let v = json!({"metadata": {"name": "c", "labels": {OWNER_NAME_LABEL: "p"}}});
        let o = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap();
        assert_eq!(o.owner, None);
        let v =
            json!({"metadata": {"name": "c", "labels": {OWNER_NAME_LABEL: "p", OWNER_NAMESPACE_LABEL: "flux-system"}}});
        let o = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap();
        assert_eq!(o.owner, Some(ObjectKey::new("flux-system", "p")));
    }

    #[test]
    fn malformed_fields_name_the_field() {
        let v = json!({"metadata": {"name": "a"}, "spec": {"dependsOn": "b"}});
        let err = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap_err();
        assert_eq!(err.to_string(), "spec.dependsOn must be a list");
        let v = json!({"metadata": {"name": "a"}, "spec": {"wait": "yes"}});
        let err = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap_err();
        assert_eq!(err.to_string(), "spec.wait must be a boolean");
        let v = json!({"metadata": {}});
        assert_eq!(FluxObject::from_value(FluxKind::HelmRelease, &v, "ns", ""), Err(ObjectError::MissingName));
    }

    #[test]
    fn unreadable_depends_on_entry_is_kept_apart_and_the_rest_is_read() {
        let v = json!({"metadata": {"name": "a"}, "spec": {"wait": true, "dependsOn": [
            {"name": ""}, {"name": "b"}, {"namespace": "x"}, {"name": "c", "namespace": 7}
        ]}});
        let o = FluxObject::from_value(FluxKind::Kustomization, &v, "ns", "").unwrap();
        assert_eq!(*o.depends_on, [ObjectKey::new("ns", "b")]);
        assert!(o.wait);
        let problems: Vec<String> = o.unreadable_depends_on().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            vec![
                "spec.dependsOn[0].name must be a non-empty string",
                "spec.dependsOn[2].name must be a non-empty string",
                "spec.dependsOn[3].namespace must be a string",
            ]
        );
    }

    #[test]
    fn keys_share_their_strings_and_names_nobody_holds_go() {
        let a = ObjectKey::new("team", "interned-apps");
        let b = ObjectKey::new(String::from("team"), String::from("interned-apps"));
        assert!(ArcStr::ptr_eq(&a.name, &b.name) && ArcStr::ptr_eq(&a.namespace, &b.namespace));

        let interned = |s: &str| NAMES.lock().unwrap().set.contains(s);
        ObjectKey::new("team", "interned-and-dropped");
        assert!(interned("interned-and-dropped"));
        // Enough new names to pass the next sweep, whatever other tests hold meanwhile.
        let rounds = 3 * NAMES.lock().unwrap().sweep_at;
        for i in 0..rounds {
            ObjectKey::new("team", format!("interned-filler-{i}"));
        }
        assert!(!interned("interned-and-dropped"), "a name no key holds is dropped");
        assert_eq!(*ObjectKey::new("team", "interned-apps").name, *a.name);
        assert!(ArcStr::ptr_eq(&ObjectKey::new("team", "interned-apps").name, &a.name), "held names stay");
    }

    #[test]
    fn uids_print_as_they_were_read() {
        for text in ["6f1d3c1e-0a2b-4c3d-8e4f-5a6b7c8d9e0f", "6F1D3C1E-0A2B-4C3D-8E4F-5A6B7C8D9E0F", "uid-web", ""] {
            assert_eq!(Uid::from(text).to_string(), text);
        }
        assert!(matches!(Uid::from("6f1d3c1e-0a2b-4c3d-8e4f-5a6b7c8d9e0f"), Uid::Uuid(_)));
        assert!(matches!(Uid::from("6f1d3c1e+0a2b-4c3d-8e4f-5a6b7c8d9e0f"), Uid::Text(_)));
    }

    #[test]
    fn kinds_from_api_versions() {
        assert_eq!(
            FluxKind::from_api_version("kustomize.toolkit.fluxcd.io/v1beta2", "Kustomization"),
            Some(FluxKind::Kustomization)
        );
        assert_eq!(FluxKind::from_api_version("kustomize.config.k8s.io/v1beta1", "Kustomization"), None);
        assert_eq!(
            FluxKind::from_api_version("helm.toolkit.fluxcd.io/v2beta1", "HelmRelease"),
            Some(FluxKind::HelmRelease)
        );
    }
}

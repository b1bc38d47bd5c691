//! A fake Kubernetes API server for the two Flux kinds, speaking the real list/watch wire
//! protocol over HTTP on loopback: lists carry a `resourceVersion` and come in pages of
//! `limit` items linked by `continue` tokens; `?watch=true` streams
//! line-delimited watch events after the requested `resourceVersion`; BOOKMARK events; a watch
//! from a compacted version gets an ERROR event with a 410 `Expired` Status; connections can be
//! dropped mid-stream; `timeoutSeconds` ends a watch. Tests drive it: add, modify, delete,
//! compact, drop, hold lists, and the hostile cases of a real control plane: an outage
//! (connections refused) and a restart whose first watch gets 410, stalled watch connections
//! (no data, no end), a version that stops being served (404).
//!
//! It also serves the admissionregistration.k8s.io/v1 webhook configurations: GET, and PATCH
//! with server-side apply (`application/apply-patch+yaml`, `fieldManager`, `force`) as the API
//! server does it: fields are owned per manager (recorded in `managedFields`), `webhooks` and
//! their `matchConditions` are lists keyed by `name` (each entry merged and owned apart), other
//! lists are atomic; a field another manager owns with another value is a 409 conflict unless
//! `force` takes it over; a field a manager stops applying is removed when no one else owns it.
//! RBAC can be withheld (403) for either verb.
//!
//! Leases are served with optimistic concurrency (a stale `resourceVersion` gets 409), each
//! write taking a configurable time one at a time, as etcd serialises the writes of one key;
//! their writes can be made to fail (no answer, 403, 409 forever). Watch events can be
//! delivered late (a random lag per event, order kept), as a busy API server delivers them.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

#[derive(Default)]
struct Resource {
    installed: bool,
    version: String,
    kind: String,
    /// (namespace, name) -> object, and its JSON text (a list page copies text: a page of a
    /// list of 100,000 objects costs the same as the first one).
    objects: BTreeMap<(String, String), (Value, String)>,
    /// (resourceVersion, type, object), oldest first.
    events: Vec<(u64, String, Value)>,
    watchers: Vec<mpsc::UnboundedSender<Result<Bytes, std::io::Error>>>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    resources: HashMap<String, Resource>,
    lists_served: usize,
    /// The `resourceVersion` of every watch request, in order.
    watch_versions: Vec<String>,
    /// Leases by (namespace, name).
    leases: HashMap<(String, String), Value>,
    /// Every Event posted, in order.
    events: Vec<Value>,
    /// Webhook configurations by (resource, name).
    configs: BTreeMap<(String, String), Config>,
    /// Every server-side apply to a webhook configuration that was accepted, in order.
    applies: Vec<Apply>,
    /// Whether GET and PATCH of webhook configurations are refused (RBAC withheld).
    forbid_get: bool,
    forbid_patch: bool,
    /// Time each Lease write takes, writes one at a time.
    lease_write_latency: std::time::Duration,
    /// How Lease writes fail, if they do.
    lease_failure: Option<LeaseFailure>,
    /// Lease writes answered so far (successful or not), and conflicts among them.
    lease_writes: usize,
    lease_conflicts: usize,
    /// Most lag of a watch event (each gets a random lag up to this, order kept).
    watch_lag: std::time::Duration,
    /// State of the lag's random numbers.
    lag_seed: u64,
}

/// How the fake fails Lease writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFailure {
    /// No answer (the client times out).
    Timeout,
    /// 403 Forbidden, as when RBAC is missing.
    Forbidden,
    /// 409 Conflict on every write, as if another writer always came first.
    ConflictForever,
}

/// A webhook configuration: its fields as a tree keyed the way `fieldsV1` is (`f:field`,
/// `k:{"name":"..."}`), and each manager's leaves.
#[derive(Default)]
struct Config {
    tree: serde_json::Map<String, Value>,
    managers: BTreeMap<String, std::collections::BTreeSet<Vec<String>>>,
    resource_version: u64,
}

/// One accepted server-side apply.
#[derive(Clone, Debug)]
pub struct Apply {
    pub resource: String,
    pub name: String,
    pub manager: String,
    pub force: bool,
    pub content_type: String,
    pub body: Value,
}

/// Handle on a running fake API server.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    hold: watch::Sender<bool>,
    /// Whether the server accepts connections; turning it off also cuts every open one.
    up: watch::Sender<bool>,
    /// While true, every watch connection goes silent: no event, no bookmark, no end.
    stall: watch::Sender<bool>,
    /// Serialises Lease writes, as etcd serialises the writes of one key.
    lease_writer: Arc<tokio::sync::Mutex<()>>,
}

fn plural(kind: &str) -> String {
    format!("{}s", kind.to_lowercase())
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

impl FakeApi {
    /// Starts a server serving Kustomizations (`v1`) and, if `helm_installed`, HelmReleases (`v2`).
    pub async fn start(helm_installed: bool) -> FakeApi {
        let mut inner = Inner { rv: 1, ..Inner::default() };
        inner.resources.insert(
            "kustomize.toolkit.fluxcd.io/kustomizations".into(),
            Resource { installed: true, version: "v1".into(), kind: "Kustomization".into(), ..Default::default() },
        );
        inner.resources.insert(
            "helm.toolkit.fluxcd.io/helmreleases".into(),
            Resource {
                installed: helm_installed,
                version: "v2".into(),
                kind: "HelmRelease".into(),
                ..Default::default()
            },
        );
        let (hold, _) = watch::channel(false);
        let (up, _) = watch::channel(true);
        let (stall, _) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeApi { addr, inner: Arc::new(Mutex::new(inner)), hold, up, stall, lease_writer: Arc::default() };
        let app = Router::new()
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", axum::routing::post(create_lease))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease).patch(patch_lease),
            )
            .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", axum::routing::post(create_event))
            .route("/apis/{group}/{version}/{plural}", get(list_or_watch))
            .route("/apis/admissionregistration.k8s.io/v1/{plural}/{name}", get(get_config).patch(apply_config))
            .route("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", get(get_object))
            .with_state(fake.clone());
        tokio::spawn(accept_loop(listener, app, fake.up.clone()));
        fake
    }

    /// An outage: the listening socket closes (new connections are refused) and every open
    /// connection is cut.
    pub fn stop(&self) {
        self.up.send_replace(false);
        self.inner.lock().unwrap().resources.values_mut().for_each(|r| r.watchers.clear());
    }

    /// The API server comes back on the same address. Its watch cache starts at the current
    /// revision, so the first watch from any older resourceVersion gets 410 Gone.
    pub fn restart(&self) {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.compacted = inner.rv;
        }
        self.up.send_replace(true);
    }

    /// While `stalled`, open and new watch connections deliver nothing and never end (lists
    /// and GETs still answer); a connection that stalled stays dead.
    pub fn stall_watches(&self, stalled: bool) {
        self.stall.send_replace(stalled);
    }

    /// Serves `kind` (`Kustomization` or `HelmRelease`) at `version` only, as a CRD update
    /// does: the old version answers 404, and its open watches end.
    pub fn serve_only(&self, kind: &str, version: &str) {
        let mut inner = self.inner.lock().unwrap();
        let res = inner.resources.values_mut().find(|r| r.kind == kind).unwrap();
        res.version = version.to_string();
        res.watchers.clear();
    }

    /// Every Lease write takes `latency`, one write at a time.
    pub fn set_lease_write_latency(&self, latency: std::time::Duration) {
        self.inner.lock().unwrap().lease_write_latency = latency;
    }

    /// Lease writes fail this way from now on (`None`: they work again).
    pub fn fail_lease_writes(&self, failure: Option<LeaseFailure>) {
        self.inner.lock().unwrap().lease_failure = failure;
    }

    /// Lease writes answered so far, and how many of them were conflicts.
    pub fn lease_writes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.lease_writes, inner.lease_conflicts)
    }

    /// The Lease as stored, if it exists.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.inner.lock().unwrap().leases.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Watch events opened from now on are each delivered after a random lag of up to `lag`,
    /// in order; `seed` makes the lags repeatable.
    pub fn set_watch_lag(&self, lag: std::time::Duration, seed: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.watch_lag = lag;
        inner.lag_seed = seed | 1;
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        fluxgate::server::tls::provider();
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\ncurrent-context: c\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn key(object: &Value) -> (String, String) {
        let api_version = object["apiVersion"].as_str().unwrap();
        (group_of(api_version).to_string(), plural(object["kind"].as_str().unwrap()))
    }

    fn record(&self, kind: &str, mut object: Value) -> String {
        let (group, plural) = Self::key(&object);
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let res = inner.resources.get_mut(&format!("{group}/{plural}")).unwrap();
        let id = (
            object["metadata"]["namespace"].as_str().unwrap().to_string(),
            object["metadata"]["name"].as_str().unwrap().to_string(),
        );
        if kind == "DELETED" {
            res.objects.remove(&id);
        } else {
            res.objects.insert(id, (object.clone(), object.to_string()));
        }
        res.events.push((rv, kind.to_string(), object.clone()));
        let line = json!({ "type": kind, "object": object });
        res.watchers.retain(|w| w.send(Ok(Bytes::from(format!("{line}\n")))).is_ok());
        rv.to_string()
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers); returns the
    /// `resourceVersion` it got.
    pub fn apply(&self, object: Value) -> String {
        let (group, plural) = Self::key(&object);
        let exists = {
            let inner = self.inner.lock().unwrap();
            let res = &inner.resources[&format!("{group}/{plural}")];
            res.objects.contains_key(&(
                object["metadata"]["namespace"].as_str().unwrap().to_string(),
                object["metadata"]["name"].as_str().unwrap().to_string(),
            ))
        };
        self.record(if exists { "MODIFIED" } else { "ADDED" }, object)
    }

    /// Stores an object without telling any watch, as when another replica's admission
    /// reached etcd but this replica's watch has not delivered it yet.
    pub fn store_unwatched(&self, mut object: Value) {
        let (group, plural) = Self::key(&object);
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let id = (
            object["metadata"]["namespace"].as_str().unwrap().to_string(),
            object["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let text = object.to_string();
        inner.resources.get_mut(&format!("{group}/{plural}")).unwrap().objects.insert(id, (object, text));
    }

    /// Deletes an object (DELETED to watchers).
    pub fn delete(&self, object: &Value) {
        self.record("DELETED", object.clone());
    }

    /// Sends a BOOKMARK at the current resourceVersion to every open watch.
    pub fn bookmark(&self) {
        let mut inner = self.inner.lock().unwrap();
        let rv = inner.rv;
        for (key, res) in inner.resources.iter_mut() {
            let (group, _) = key.split_once('/').unwrap();
            let line = json!({ "type": "BOOKMARK", "object": {
                "apiVersion": format!("{group}/{}", res.version), "kind": res.kind,
                "metadata": { "resourceVersion": rv.to_string() } } });
            res.watchers.retain(|w| w.send(Ok(Bytes::from(format!("{line}\n")))).is_ok());
        }
    }

    /// Compacts history: open watches get 410 Gone, and so does any watch from an older version.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.compacted = inner.rv;
        for res in inner.resources.values_mut() {
            let line = json!({ "type": "ERROR", "object": gone() });
            for w in res.watchers.drain(..) {
                let _ = w.send(Ok(Bytes::from(format!("{line}\n"))));
            }
        }
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let mut inner = self.inner.lock().unwrap();
        for res in inner.resources.values_mut() {
            for w in res.watchers.drain(..) {
                let _ = w.send(Err(std::io::Error::other("connection dropped")));
            }
        }
    }

    /// While held, list requests wait (to observe the state during an initial list or relist).
    pub fn hold_lists(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// Installs the HelmRelease CRD.
    pub fn install_helm(&self) {
        self.inner.lock().unwrap().resources.get_mut("helm.toolkit.fluxcd.io/helmreleases").unwrap().installed = true;
    }

    pub fn lists_served(&self) -> usize {
        self.inner.lock().unwrap().lists_served
    }

    pub fn watch_versions(&self) -> Vec<String> {
        self.inner.lock().unwrap().watch_versions.clone()
    }

    pub fn open_watches(&self) -> usize {
        self.inner
            .lock()
            .unwrap()
            .resources
            .values()
            .map(|r| r.watchers.iter().filter(|w| !w.is_closed()).count())
            .sum()
    }

    /// Every Event posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().unwrap().events.clone()
    }

    /// The holder of a Lease, if it exists.
    pub fn lease_holder(&self, ns: &str, name: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .leases
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    pub fn current_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    /// Withholds RBAC on the webhook configurations: GET and/or PATCH answer 403.
    pub fn forbid_webhook_configurations(&self, get: bool, patch: bool) {
        let mut inner = self.inner.lock().unwrap();
        inner.forbid_get = get;
        inner.forbid_patch = patch;
    }

    /// Server-side applies `object` (a webhook configuration) as `manager`, as a GitOps tool or
    /// kubectl would; `Err` holds the Status of a refusal.
    pub fn server_side_apply(&self, object: &Value, manager: &str, force: bool) -> Result<Value, Value> {
        let resource = plural(object["kind"].as_str().unwrap());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut inner = self.inner.lock().unwrap();
        ssa(&mut inner, &resource, &name, object, manager, force, "application/apply-patch+yaml")
    }

    /// A webhook configuration as GET returns it.
    pub fn webhook_configuration(&self, kind: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner.configs.get(&(plural(kind), name.to_string())).map(|c| config_object(kind, name, c))
    }

    /// The leaves each manager owns in a webhook configuration, as dotted paths
    /// (`f:webhooks.k:{"name":"mutate.fluxgate.dev"}.f:matchConditions...`).
    pub fn managed_paths(&self, kind: &str, name: &str) -> BTreeMap<String, Vec<String>> {
        let inner = self.inner.lock().unwrap();
        inner
            .configs
            .get(&(plural(kind), name.to_string()))
            .map(|c| {
                c.managers.iter().map(|(m, paths)| (m.clone(), paths.iter().map(|p| p.join(".")).collect())).collect()
            })
            .unwrap_or_default()
    }

    /// Every accepted server-side apply to a webhook configuration.
    pub fn applies(&self) -> Vec<Apply> {
        self.inner.lock().unwrap().applies.clone()
    }
}

// --- server-side apply of webhook configurations ---------------------------------------------

/// Lists whose entries are keyed by their `name` (the API's `listType=map`, `listMapKey=name`).
fn keyed_list(field: &str) -> bool {
    field == "webhooks" || field == "matchConditions"
}

/// An object as a `fieldsV1`-shaped tree whose leaves hold the values.
fn to_tree(object: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in object {
        let value = match v {
            Value::Object(m) if !m.is_empty() => Value::Object(to_tree(m)),
            Value::Array(items) if keyed_list(k) && items.iter().all(|i| i["name"].is_string()) => {
                let mut entries = serde_json::Map::new();
                for item in items {
                    let key = format!("k:{}", json!({ "name": item["name"] }));
                    entries.insert(key, Value::Object(to_tree(item.as_object().unwrap())));
                }
                Value::Object(entries)
            }
            other => json!({ ".": other }),
        };
        out.insert(format!("f:{k}"), value);
    }
    out
}

fn from_tree(tree: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in tree {
        let Some(field) = k.strip_prefix("f:") else { continue };
        let node = v.as_object().unwrap();
        let value = if let Some(leaf) = node.get(".") {
            leaf.clone()
        } else if node.keys().all(|k| k.starts_with("k:")) && !node.is_empty() {
            Value::Array(node.values().map(|item| Value::Object(from_tree(item.as_object().unwrap()))).collect())
        } else {
            Value::Object(from_tree(node))
        };
        out.insert(field.to_string(), value);
    }
    out
}

/// The paths of the leaves of a tree.
fn leaf_paths(
    tree: &serde_json::Map<String, Value>,
    prefix: &mut Vec<String>,
    out: &mut std::collections::BTreeSet<Vec<String>>,
) {
    for (k, v) in tree {
        prefix.push(k.clone());
        let node = v.as_object().unwrap();
        if node.contains_key(".") {
            out.insert(prefix.clone());
        } else {
            leaf_paths(node, prefix, out);
        }
        prefix.pop();
    }
}

fn leaf_at<'t>(tree: &'t serde_json::Map<String, Value>, path: &[String]) -> Option<&'t Value> {
    let (last, parents) = path.split_last()?;
    let mut node = tree;
    for p in parents {
        node = node.get(p)?.as_object()?;
    }
    node.get(last)?.get(".")
}

fn set_leaf(tree: &mut serde_json::Map<String, Value>, path: &[String], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut node = tree;
    for p in parents {
        node = node.entry(p.clone()).or_insert_with(|| json!({})).as_object_mut().unwrap();
    }
    node.insert(last.clone(), json!({ ".": value }));
}

/// Removes a leaf, and every parent it leaves empty.
fn remove_leaf(tree: &mut serde_json::Map<String, Value>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            tree.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(child)) = tree.get_mut(first) {
                remove_leaf(child, rest);
                if child.is_empty() {
                    tree.remove(first);
                }
            }
        }
    }
}

/// Whether a path is the object's identity, which no manager owns.
fn identity(path: &[String]) -> bool {
    matches!(path.first().map(String::as_str), Some("f:apiVersion" | "f:kind"))
        || path.starts_with(&["f:metadata".to_string(), "f:name".to_string()])
}

/// The `fieldsV1` of a set of leaves.
fn fields_v1(paths: &std::collections::BTreeSet<Vec<String>>) -> Value {
    let mut root = serde_json::Map::new();
    for path in paths {
        let mut node = &mut root;
        for p in path {
            node = node.entry(p.clone()).or_insert_with(|| json!({})).as_object_mut().unwrap();
        }
    }
    Value::Object(root)
}

fn config_object(kind: &str, name: &str, config: &Config) -> Value {
    let mut object = Value::Object(from_tree(&config.tree));
    object["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    object["kind"] = json!(kind);
    object["metadata"]["name"] = json!(name);
    object["metadata"]["resourceVersion"] = json!(config.resource_version.to_string());
    object["metadata"]["managedFields"] = Value::Array(
        config
            .managers
            .iter()
            .map(|(m, paths)| {
                json!({ "manager": m, "operation": "Apply", "apiVersion": "admissionregistration.k8s.io/v1",
                        "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths) })
            })
            .collect(),
    );
    object
}

fn kind_of_resource(resource: &str) -> &'static str {
    if resource == "mutatingwebhookconfigurations" {
        "MutatingWebhookConfiguration"
    } else {
        "ValidatingWebhookConfiguration"
    }
}

fn ssa(
    inner: &mut Inner,
    resource: &str,
    name: &str,
    applied: &Value,
    manager: &str,
    force: bool,
    content_type: &str,
) -> Result<Value, Value> {
    let mut body = applied.clone();
    if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    let new_tree = to_tree(body.as_object().unwrap());
    let mut new_paths = std::collections::BTreeSet::new();
    leaf_paths(&new_tree, &mut Vec::new(), &mut new_paths);
    new_paths.retain(|p| !identity(p));
    inner.rv += 1;
    let rv = inner.rv;
    let config = inner.configs.entry((resource.to_string(), name.to_string())).or_default();
    let conflicts: Vec<(String, Vec<String>)> = config
        .managers
        .iter()
        .filter(|(m, _)| m.as_str() != manager)
        .flat_map(|(m, owned)| {
            new_paths
                .iter()
                .filter(|p| owned.contains(*p) && leaf_at(&config.tree, p) != leaf_at(&new_tree, p))
                .map(move |p| (m.clone(), p.clone()))
        })
        .collect();
    if !conflicts.is_empty() {
        if !force {
            let list: Vec<String> =
                conflicts.iter().map(|(m, p)| format!("conflict with \"{m}\": {}", p.join("."))).collect();
            return Err(json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "reason": "Conflict", "code": 409,
                "message": format!("Apply failed with {} conflicts: {}", list.len(), list.join("; ")) }));
        }
        for (m, p) in &conflicts {
            config.managers.get_mut(m).unwrap().remove(p);
        }
    }
    let previous = config.managers.remove(manager).unwrap_or_default();
    for gone in previous.difference(&new_paths) {
        if !config.managers.values().any(|owned| owned.contains(gone)) {
            remove_leaf(&mut config.tree, gone);
        }
    }
    for p in &new_paths {
        set_leaf(&mut config.tree, p, leaf_at(&new_tree, p).unwrap().clone());
    }
    config.managers.insert(manager.to_string(), new_paths);
    config.managers.retain(|_, owned| !owned.is_empty());
    config.resource_version = rv;
    let object = config_object(kind_of_resource(resource), name, config);
    inner.applies.push(Apply {
        resource: resource.to_string(),
        name: name.to_string(),
        manager: manager.to_string(),
        force,
        content_type: content_type.to_string(),
        body,
    });
    Ok(object)
}

fn forbidden(verb: &str, resource: &str, name: &str) -> Response {
    status(
        403,
        "Forbidden",
        &format!(
            "{resource}.admissionregistration.k8s.io \"{name}\" is forbidden: User \"system:serviceaccount:fluxgate-system:fluxgate\" \
             cannot {verb} resource \"{resource}\" in API group \"admissionregistration.k8s.io\" at the cluster scope"
        ),
    )
}

async fn get_config(State(fake): State<FakeApi>, Path((resource, name)): Path<(String, String)>) -> Response {
    let inner = fake.inner.lock().unwrap();
    if inner.forbid_get {
        return forbidden("get", &resource, &name);
    }
    match inner.configs.get(&(resource.clone(), name.clone())) {
        Some(c) => axum::Json(config_object(kind_of_resource(&resource), &name, c)).into_response(),
        None => status(404, "NotFound", &format!("{resource}.admissionregistration.k8s.io \"{name}\" not found")),
    }
}

async fn apply_config(
    State(fake): State<FakeApi>,
    Path((resource, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    if inner.forbid_patch {
        return forbidden("patch", &resource, &name);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if content_type != "application/apply-patch+yaml" {
        return status(415, "UnsupportedMediaType", &format!("this fake applies only; got {content_type}"));
    }
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value");
    };
    let force = query.get("force").is_some_and(|f| f == "true");
    let Ok(applied) = serde_saphyr::from_str::<Value>(std::str::from_utf8(&body).unwrap_or_default()) else {
        return status(400, "BadRequest", "the body is not YAML");
    };
    if applied["metadata"]["name"] != name.as_str() {
        return status(400, "BadRequest", "the name of the object does not match the URL");
    }
    let manager = manager.clone();
    match ssa(&mut inner, &resource, &name, &applied, &manager, force, &content_type) {
        Ok(object) => axum::Json(object).into_response(),
        Err(s) => (StatusCode::CONFLICT, axum::Json(s)).into_response(),
    }
}

/// Accepts connections while `up` is true; when it turns false the listener closes and every
/// connection is dropped, and when it turns true again the same address is bound anew.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, up: watch::Sender<bool>) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    let mut state = up.subscribe();
    loop {
        let _ = state.wait_for(|u| *u).await;
        let l = match listener.take() {
            Some(l) => l,
            None => loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let service = TowerToHyperService::new(app.clone());
                    let mut conn_state = up.subscribe();
                    tokio::spawn(async move {
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = conn => {}
                            _ = conn_state.wait_for(|u| !*u) => {}
                        }
                    });
                }
                _ = state.wait_for(|u| !*u) => break,
            }
        }
    }
}

fn gone() -> Value {
    json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410 })
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn list_or_watch(
    State(fake): State<FakeApi>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = format!("{group}/{plural}");
    {
        let inner = fake.inner.lock().unwrap();
        match inner.resources.get(&key) {
            Some(r) if r.installed && r.version == version => {}
            _ => return status(404, "NotFound", "the server could not find the requested resource"),
        }
    }
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let mut held = fake.hold.subscribe();
        let _ = held.wait_for(|h| !*h).await;
        let mut inner = fake.inner.lock().unwrap();
        inner.lists_served += 1;
        let rv = inner.rv;
        let res = &inner.resources[&key];
        // Pages as the API server cuts them for `limit`: as etcd does, the `continue` token
        // names the last key served (`namespace/name`, opaque to clients), and the next page
        // starts after it.
        let after = query.get("continue").and_then(|c| c.split_once('/'));
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|&l| l > 0).unwrap_or(usize::MAX);
        let mut rest = match after {
            Some((ns, name)) => res.objects.range((Excluded((ns.to_string(), name.to_string())), Unbounded)),
            None => res.objects.range::<(String, String), _>(..),
        };
        let page: Vec<_> = rest.by_ref().take(limit).collect();
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if let (Some(((ns, name), _)), Some(_)) = (page.last(), rest.next()) {
            metadata["continue"] = json!(format!("{ns}/{name}"));
        }
        let items: Vec<&str> = page.iter().map(|(_, (_, text))| text.as_str()).collect();
        let head = json!({ "apiVersion": format!("{group}/{version}"), "kind": format!("{}List", res.kind),
                           "metadata": metadata });
        let head = head.to_string();
        // `{...head fields..., "items": [item, ...]}`, the items as stored.
        let body = format!("{},\"items\":[{}]}}", &head[..head.len() - 1], items.join(","));
        return ([("content-type", "application/json")], body).into_response();
    }

    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(std::time::Duration::from_secs);
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let (lag, seed) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.lag_seed = inner.lag_seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (inner.watch_lag, inner.lag_seed)
    };
    let tx = if lag.is_zero() { tx } else { lagging(tx, lag, seed) };
    {
        let mut inner = fake.inner.lock().unwrap();
        inner.watch_versions.push(query.get("resourceVersion").cloned().unwrap_or_default());
        if from < inner.compacted {
            let line = json!({ "type": "ERROR", "object": gone() });
            let _ = tx.send(Ok(Bytes::from(format!("{line}\n"))));
            drop(tx);
        } else {
            let res = inner.resources.get_mut(&key).unwrap();
            for (_, kind, object) in res.events.iter().filter(|(rv, _, _)| *rv > from) {
                let line = json!({ "type": kind, "object": object });
                let _ = tx.send(Ok(Bytes::from(format!("{line}\n"))));
            }
            res.watchers.push(tx);
        }
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stall = fake.stall.subscribe();
    let stream = futures::stream::unfold((rx, stall), move |(mut rx, mut stall)| async move {
        loop {
            if *stall.borrow_and_update() {
                std::future::pending::<()>().await;
            }
            let end = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // A stall wins over data that is ready at the same time.
            tokio::select! {
                biased;
                _ = stall.changed() => {}
                item = rx.recv() => return item.map(|item| (item, (rx, stall))),
                () = end => return None,
            }
        }
    });
    Response::builder().header("content-type", "application/json").body(Body::from_stream(stream)).unwrap()
}

/// A sender whose items reach `out` each after a random lag of up to `lag`, in order: an item
/// is never delivered before the one sent ahead of it.
fn lagging(
    out: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    lag: std::time::Duration,
    mut seed: u64,
) -> mpsc::UnboundedSender<Result<Bytes, std::io::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let (timed_tx, mut timed_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = tokio::time::Instant::now() + lag.mul_f64((seed % 1000) as f64 / 1000.0);
            if timed_tx.send((at, item)).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, item)) = timed_rx.recv().await {
            tokio::time::sleep_until(at).await;
            if out.send(item).is_err() {
                return;
            }
        }
    });
    tx
}

fn next_version(inner: &mut Inner) -> String {
    inner.rv += 1;
    inner.rv.to_string()
}

async fn get_lease(State(fake): State<FakeApi>, Path((ns, name)): Path<(String, String)>) -> Response {
    let inner = fake.inner.lock().unwrap();
    match inner.leases.get(&(ns, name.clone())) {
        Some(l) => axum::Json(l.clone()).into_response(),
        None => status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found")),
    }
}

/// Waits for the Lease write slot and the write's latency; `Err` is the injected failure.
async fn lease_write_turn(fake: &FakeApi) -> Result<tokio::sync::OwnedMutexGuard<()>, Response> {
    let turn = fake.lease_writer.clone().lock_owned().await;
    let (latency, failure) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.lease_writes += 1;
        (inner.lease_write_latency, inner.lease_failure)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match failure {
        None => Ok(turn),
        Some(LeaseFailure::Timeout) => {
            drop(turn);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(LeaseFailure::Forbidden) => Err(status(
            403,
            "Forbidden",
            "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:fluxgate-system:fluxgate\" cannot update resource \"leases\"",
        )),
        Some(LeaseFailure::ConflictForever) => {
            fake.inner.lock().unwrap().lease_conflicts += 1;
            Err(status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            ))
        }
    }
}

async fn create_lease(
    State(fake): State<FakeApi>,
    Path(ns): Path<String>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    let _turn = match lease_write_turn(&fake).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut inner = fake.inner.lock().unwrap();
    let name = lease["metadata"]["name"].as_str().unwrap().to_string();
    if inner.leases.contains_key(&(ns.clone(), name.clone())) {
        return status(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{name}\" already exists"));
    }
    lease["metadata"]["namespace"] = json!(ns);
    lease["metadata"]["resourceVersion"] = json!(next_version(&mut inner));
    inner.leases.insert((ns, name), lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

/// PUT with optimistic concurrency: a stale resourceVersion gets 409 Conflict.
async fn replace_lease(
    State(fake): State<FakeApi>,
    Path((ns, name)): Path<(String, String)>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    let _turn = match lease_write_turn(&fake).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut inner = fake.inner.lock().unwrap();
    let Some(current) = inner.leases.get(&(ns.clone(), name.clone())) else {
        return status(404, "NotFound", "not found");
    };
    if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"] {
        inner.lease_conflicts += 1;
        return status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
    }
    lease["metadata"]["resourceVersion"] = json!(next_version(&mut inner));
    inner.leases.insert((ns, name), lease.clone());
    axum::Json(lease).into_response()
}

/// A JSON merge patch (RFC 7386) of `patch` onto `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A merge patch, applied on the Lease as stored, writes one at a time: never a conflict.
async fn patch_lease(
    State(fake): State<FakeApi>,
    Path((ns, name)): Path<(String, String)>,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    let _turn = match lease_write_turn(&fake).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut inner = fake.inner.lock().unwrap();
    let Some(mut lease) = inner.leases.get(&(ns.clone(), name.clone())).cloned() else {
        return status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found"));
    };
    merge(&mut lease, &patch);
    lease["metadata"]["resourceVersion"] = json!(next_version(&mut inner));
    inner.leases.insert((ns, name), lease.clone());
    axum::Json(lease).into_response()
}

async fn create_event(
    State(fake): State<FakeApi>,
    Path(ns): Path<String>,
    axum::Json(mut event): axum::Json<Value>,
) -> Response {
    // As the API server validates it: the name is a DNS subdomain of at most 253 characters.
    let name = event["metadata"]["name"].as_str().unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphanumeric()) && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if !valid {
        return status(422, "Invalid", &format!("Event.events.k8s.io \"{name}\" is invalid: metadata.name"));
    }
    let mut inner = fake.inner.lock().unwrap();
    event["metadata"]["namespace"] = json!(ns);
    event["metadata"]["resourceVersion"] = json!(next_version(&mut inner));
    inner.events.push(event.clone());
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

async fn get_object(
    State(fake): State<FakeApi>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    let inner = fake.inner.lock().unwrap();
    let Some(res) = inner.resources.get(&format!("{group}/{plural}")).filter(|r| r.installed && r.version == version)
    else {
        return status(404, "NotFound", "the server could not find the requested resource");
    };
    match res.objects.get(&(ns, name.clone())) {
        Some((o, _)) => axum::Json(o.clone()).into_response(),
        None => status(404, "NotFound", &format!("{plural}.{group} \"{name}\" not found")),
    }
}

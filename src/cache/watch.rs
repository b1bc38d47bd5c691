//! Cluster mode: feeds the cache from list/watch streams of every Kustomization and HelmRelease.
//!
//! One kube-runtime watcher per kind, cluster-wide. An initial list (or a relist after a watch
//! error or 410 Gone) is collected whole and swapped in at its end, so decisions keep the last
//! complete snapshot while a relist runs. Watch errors back off exponentially. An object the
//! rules cannot read is logged and skipped; the stream goes on. A kind whose CRD is not
//! installed is skipped with a log line (it does not hold readiness back) and looked for again
//! periodically, so installing Flux after fluxgate works.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

use super::Cache;
use crate::object::{FluxKind, FluxObject};

/// Tuning of the watch source.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often to look again for a CRD that is not installed.
    pub crd_retry: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { crd_retry: Duration::from_secs(30) }
    }
}

/// Versions to try for a kind, newest first: the first one the cluster serves is watched.
fn versions(kind: FluxKind) -> &'static [&'static str] {
    match kind {
        FluxKind::Kustomization => &["v1", "v1beta2", "v1beta1"],
        FluxKind::HelmRelease => &["v2", "v2beta2", "v2beta1"],
    }
}

fn resource(kind: FluxKind, version: &str) -> ApiResource {
    let group = kind.group();
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: format!("{group}/{version}"),
        kind: kind.as_str().to_string(),
        plural: format!("{}s", kind.as_str().to_lowercase()),
    }
}

/// The first served version of `kind`, probed with a one-item list (which also proves the
/// list permission); `None` when no version is served (the CRD is not installed).
async fn served_resource(client: &kube::Client, kind: FluxKind) -> Result<Option<ApiResource>, kube::Error> {
    for version in versions(kind) {
        let ar = resource(kind, version);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(ar)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Reads a watched object into what the cache keeps, with its resourceVersion. Only the
/// fields the rules need are looked at (managedFields only to learn whether `spec.wait` is
/// owned); status is never copied.
pub fn read_object(kind: FluxKind, object: &DynamicObject) -> Result<(FluxObject, Option<String>), String> {
    let meta = &object.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let slim = json!({
        "metadata": { "name": name, "labels": meta.labels, "managedFields": meta.managed_fields },
        "spec": object.data.get("spec").cloned().unwrap_or(Value::Null),
    });
    let parsed =
        FluxObject::from_value(kind, &slim, namespace, name).map_err(|e| format!("{namespace}/{name}: {e}"))?;
    Ok((parsed, meta.resource_version.clone()))
}

/// The API resource watched for each kind, once known (the version the cluster serves).
#[derive(Debug, Default)]
pub struct Served([OnceLock<ApiResource>; 2]);

impl Served {
    pub fn get(&self, kind: FluxKind) -> Option<&ApiResource> {
        self.0[kind.index()].get()
    }
}

/// Watches both kinds into `cache` until the task is dropped, recording in `served` which
/// version of each kind it watches.
pub async fn run(client: kube::Client, cache: Arc<Cache>, served: Arc<Served>, options: WatchOptions) {
    let tasks = FluxKind::ALL
        .map(|kind| tokio::spawn(watch_kind(client.clone(), cache.clone(), served.clone(), kind, options.clone())));
    for t in tasks {
        let _ = t.await;
    }
}

async fn watch_kind(
    client: kube::Client,
    cache: Arc<Cache>,
    served: Arc<Served>,
    kind: FluxKind,
    options: WatchOptions,
) {
    let mut reported_missing = false;
    let mut error_backoff = Duration::from_millis(500);
    let ar = loop {
        match served_resource(&client, kind).await {
            Ok(Some(ar)) => break ar,
            Ok(None) => {
                if !reported_missing {
                    tracing::info!(
                        kind = kind.as_str(),
                        group = kind.group(),
                        "CRD not installed: {kind} objects are skipped until it appears"
                    );
                    cache.lock().mark_synced(kind);
                    reported_missing = true;
                }
                tokio::time::sleep(options.crd_retry).await;
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "cannot reach the API server; retrying");
                tokio::time::sleep(error_backoff).await;
                error_backoff = (error_backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    tracing::info!(kind = kind.as_str(), api_version = %ar.api_version, "watching {kind} objects cluster-wide");
    let _ = served.0[kind.index()].set(ar.clone());
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Vec<(Arc<FluxObject>, Option<String>)> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(o)) => match read_object(kind, &o) {
                Ok((object, version)) => listing.push((Arc::new(object), version)),
                Err(e) => tracing::warn!(kind = kind.as_str(), "skipped an object the rules cannot read: {e}"),
            },
            Ok(Event::InitDone) => {
                let n = listing.len();
                cache.lock().replace_all(kind, std::mem::take(&mut listing));
                tracing::info!(kind = kind.as_str(), objects = n, "list complete");
            }
            Ok(Event::Apply(o)) => match read_object(kind, &o) {
                Ok((object, version)) => cache.lock().apply(Arc::new(object), version.as_deref()),
                Err(e) => tracing::warn!(kind = kind.as_str(), "skipped an object the rules cannot read: {e}"),
            },
            Ok(Event::Delete(o)) => {
                let key = crate::object::ObjectKey::new(
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default(),
                );
                cache.lock().delete(kind, &key);
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "watch error; backing off, the last complete list stays in use")
            }
        }
    }
}

/// Looks objects up directly in the API server: the webhook confirms a dangling target this
/// way before denying, since another replica may have admitted it moments ago and this
/// replica's watch may not have delivered it yet.
#[derive(Clone)]
pub struct Lookup {
    client: kube::Client,
    served: Arc<Served>,
}

impl Lookup {
    pub fn new(client: kube::Client, served: Arc<Served>) -> Lookup {
        Lookup { client, served }
    }

    /// The object, if the API server has it. `Ok(None)` when it does not, or when the kind is
    /// not watched (its CRD is missing).
    pub async fn get(
        &self,
        kind: FluxKind,
        key: &crate::object::ObjectKey,
    ) -> Result<Option<(FluxObject, Option<String>)>, kube::Error> {
        let Some(ar) = self.served.get(kind) else { return Ok(None) };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.namespace, ar);
        match api.get_opt(&key.name).await? {
            Some(o) => Ok(read_object(kind, &o).ok()),
            None => Ok(None),
        }
    }
}

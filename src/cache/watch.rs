//! Cluster mode: feeds the cache from list/watch streams of every Kustomization and HelmRelease.
//!
//! One loop per kind, cluster-wide, written against the list and watch calls directly so that
//! every state the source can be in is visible to the cache's [`KindHealth`](super::KindHealth):
//!
//! - A list (initial, or a relist after any trouble) is collected whole and swapped in at its
//!   end, so decisions keep the last complete snapshot while it runs; the kind is *lagging*
//!   from the trouble until the list completes, and *current* afterwards.
//! - The watch asks for bookmarks and a server-side timeout ([`WatchOptions::watch_timeout`]);
//!   a watch that delivers neither an event, a bookmark nor its end within that timeout plus
//!   [`WatchOptions::silence_grace`] is silent (a stalled connection) and is replaced.
//! - 410 Gone relists at once. Other errors back off briefly (the API server is usually on the
//!   same control plane: 100 ms doubling to [`WatchOptions::max_backoff`], reset by every
//!   successful list or watch), and a request waiting for the kind cuts the back-off short.
//! - The served version is found by probing the versions fluxgate knows, newest first; it is
//!   found again when the watched version answers 404 (a Flux upgrade stopped serving it) and
//!   every [`WatchOptions::rediscover_every`] (a newer version appeared).
//!
//! An object the rules cannot read is logged and skipped; the stream goes on. A kind whose CRD
//! is not installed is skipped with a log line (it does not hold readiness back) and looked for
//! again periodically, so installing Flux after fluxgate works.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::Resource as _;
use kube::api::{Api, ApiResource, DynamicObject, GetParams, ListParams, WatchEvent, WatchParams};
use kube::core::Request;
use serde_json::Value;

use super::Cache;
use crate::object::slim::SlimObject;
use crate::object::{FluxKind, FluxObject, ObjectKey, at};
use crate::status::ObjectStatus;

/// Tuning of the watch source.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often to look again for a CRD that is not installed.
    pub crd_retry: Duration,
    /// The server-side timeout of one watch request; the watch is renewed from its last
    /// resourceVersion when it ends.
    pub watch_timeout: Duration,
    /// How long past `watch_timeout` a watch may stay silent before it counts as stalled.
    pub silence_grace: Duration,
    /// The longest wait between retries after an error.
    pub max_backoff: Duration,
    /// How often to check whether a newer version of a kind is served.
    pub rediscover_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            crd_retry: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(10),
            silence_grace: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
            rediscover_every: Duration::from_secs(300),
        }
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

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The first served version of `kind`, probed with a one-item list (which also proves the
/// list permission); `None` when no version is served (the CRD is not installed).
pub(crate) async fn served_resource(client: &kube::Client, kind: FluxKind) -> Result<Option<ApiResource>, kube::Error> {
    for version in versions(kind) {
        let ar = resource(kind, version);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(ar)),
            Err(e) if is_status(&e, 404) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A string field of an API object's `metadata`.
fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// Reads an object of the API server (a list item or a watch event's object, whole or
/// [slim](crate::object::slim)) into what the cache keeps, with its resourceVersion.
pub fn read_object(kind: FluxKind, object: &Value) -> Result<(FluxObject, Option<String>), String> {
    let name = meta(object, "name").unwrap_or_default();
    let namespace = meta(object, "namespace").unwrap_or_default();
    let parsed =
        FluxObject::from_value(kind, object, namespace, name).map_err(|e| format!("{namespace}/{name}: {e}"))?;
    Ok((parsed, meta(object, "resourceVersion").map(str::to_string)))
}

/// Whether the object is being deleted (`deletionTimestamp` set, finalizers still running).
/// Such an object counts as gone: it will not be there for a dependent to wait for, and its
/// own edges go with it.
fn is_terminating(object: &Value) -> bool {
    at(object, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null())
}

/// One page of a list, its items decoded slim: a page of 500 objects never exists as 500 whole
/// objects.
#[derive(serde::Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default)]
    pub items: Option<Vec<SlimObject>>,
}

/// Lists one page of `ar`, cluster-wide.
pub(crate) async fn list_page(
    client: &kube::Client,
    ar: &ApiResource,
    params: &ListParams,
) -> Result<Page, kube::Error> {
    let mut request =
        Request::new(DynamicObject::url_path(ar, None)).list(params).map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("list");
    client.request::<Page>(request).await
}

/// The API resource watched for each kind, once known (the version the cluster serves). It
/// changes when a Flux upgrade stops serving the watched version.
#[derive(Debug, Default)]
pub struct Served([RwLock<Option<ApiResource>>; 2]);

impl Served {
    pub fn get(&self, kind: FluxKind) -> Option<ApiResource> {
        self.0[kind.index()].read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, kind: FluxKind, resource: Option<ApiResource>) {
        *self.0[kind.index()].write().unwrap_or_else(|p| p.into_inner()) = resource;
    }
}

/// Watches both kinds into `cache` until the task is dropped, recording in `served` which
/// version of each kind it watches.
pub async fn run(client: kube::Client, cache: Arc<Cache>, served: Arc<Served>, options: WatchOptions) {
    let tasks = FluxKind::ALL.map(|kind| {
        let source = Source {
            client: client.clone(),
            cache: cache.clone(),
            served: served.clone(),
            kind,
            options: options.clone(),
        };
        tokio::spawn(source.run())
    });
    for t in tasks {
        let _ = t.await;
    }
}

/// Retry delays after errors: short, capped, reset by a success.
struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff { next: FIRST_BACKOFF.min(max), max }
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF.min(self.max);
    }

    /// Sleeps the current delay, or less if a request asks the kind to retry now.
    async fn wait(&mut self, cache: &Cache, kind: FluxKind) {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cache.nudged(kind) => {}
        }
    }
}

/// Why the loop over one version stopped.
enum Stop {
    /// The version is no longer served (404): find the served one.
    Gone(String),
    /// A newer version is served.
    Newer(ApiResource),
}

/// One kind's list/watch loop.
struct Source {
    client: kube::Client,
    cache: Arc<Cache>,
    served: Arc<Served>,
    kind: FluxKind,
    options: WatchOptions,
}

impl Source {
    fn lag(&self, reason: String) {
        let kind = self.kind;
        self.cache.update_health(|s| s.set_lagging(kind, reason, Instant::now()));
    }

    async fn run(self) {
        let kind = self.kind;
        let mut backoff = Backoff::new(self.options.max_backoff);
        let mut next: Option<ApiResource> = None;
        loop {
            let ar = match next.take() {
                Some(ar) => ar,
                None => self.discover(&mut backoff).await,
            };
            self.served.set(kind, Some(ar.clone()));
            self.cache.update_health(|s| s.set_api_version(kind, Some(ar.api_version.clone())));
            tracing::info!(kind = kind.as_str(), api_version = %ar.api_version, "watching {kind} objects cluster-wide");
            match self.follow(&ar, &mut backoff).await {
                Stop::Gone(why) => {
                    tracing::warn!(kind = kind.as_str(), api_version = %ar.api_version, "{why}; looking for the served version");
                    self.lag(format!("{} is no longer served", ar.api_version));
                    // Lookups must not ask a version that answers 404 for everything.
                    self.served.set(kind, None);
                    self.cache.update_health(|s| s.set_api_version(kind, None));
                }
                Stop::Newer(newer) => {
                    tracing::info!(kind = kind.as_str(), from = %ar.api_version, to = %newer.api_version, "a newer version is served; switching");
                    self.lag(format!("switching to {}", newer.api_version));
                    next = Some(newer);
                }
            }
        }
    }

    /// Finds the served version, waiting while the CRD is not installed or the API server
    /// does not answer.
    async fn discover(&self, backoff: &mut Backoff) -> ApiResource {
        let kind = self.kind;
        let mut reported_missing = false;
        loop {
            match served_resource(&self.client, kind).await {
                Ok(Some(ar)) => {
                    backoff.reset();
                    return ar;
                }
                Ok(None) => {
                    backoff.reset();
                    if !reported_missing {
                        tracing::info!(
                            kind = kind.as_str(),
                            group = kind.group(),
                            "CRD not installed: {kind} objects are skipped until it appears"
                        );
                        // No CRD, no objects: whatever was cached went with it.
                        self.served.set(kind, None);
                        self.cache.status().keep_only(kind, []);
                        self.cache.update_health(|s| {
                            s.replace_all(kind, Vec::new());
                            s.set_api_version(kind, None);
                            s.set_current(kind, Instant::now());
                        });
                        reported_missing = true;
                    }
                    tokio::time::sleep(self.options.crd_retry).await;
                }
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), error = %e, "cannot reach the API server; retrying");
                    self.lag(format!("cannot reach the API server: {e}"));
                    backoff.wait(&self.cache, kind).await;
                }
            }
        }
    }

    /// Lists and watches one version until it stops being the one to watch.
    async fn follow(&self, ar: &ApiResource, backoff: &mut Backoff) -> Stop {
        let kind = self.kind;
        let watch = Request::new(DynamicObject::url_path(ar, None));
        let mut probed = Instant::now();
        let silence = self.options.watch_timeout + self.options.silence_grace;
        let timeout_secs = u32::try_from(self.options.watch_timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        // 410s since a watch last delivered something: the first relists at once, a second in
        // a row backs off instead of relisting in a loop.
        let mut gone_in_a_row = 0u32;
        'list: loop {
            if gone_in_a_row > 1 {
                backoff.wait(&self.cache, kind).await;
            }
            self.cache.update_health(|s| s.set_relisting(kind, true));
            let listed = self.list(ar).await;
            let (objects, mut version) = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    self.cache.update_health(|s| s.set_relisting(kind, false));
                    if is_status(&e, 404) {
                        return Stop::Gone(format!("list answered 404: {e}"));
                    }
                    tracing::warn!(kind = kind.as_str(), error = %e, "list failed; retrying, the last complete list stays in use");
                    self.lag(format!("list failed: {e}"));
                    backoff.wait(&self.cache, kind).await;
                    continue 'list;
                }
            };
            backoff.reset();
            let n = objects.len();
            self.cache.status().keep_only(kind, objects.iter().map(|(o, _)| &o.key));
            self.cache.update_health(|s| {
                s.replace_all(kind, objects);
                s.set_relisting(kind, false);
                s.set_current(kind, Instant::now());
            });
            tracing::info!(kind = kind.as_str(), objects = n, api_version = %ar.api_version, "list complete");

            loop {
                if probed.elapsed() >= self.options.rediscover_every {
                    probed = Instant::now();
                    if let Ok(Some(served)) = served_resource(&self.client, kind).await
                        && served.version != ar.version
                    {
                        return Stop::Newer(served);
                    }
                }
                let params = WatchParams::default().timeout(timeout_secs);
                let stream = match watch.watch(&params, &version) {
                    Ok(request) => self.client.request_events::<SlimObject>(request).await,
                    Err(e) => Err(kube::Error::BuildRequest(e)),
                };
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) if is_status(&e, 404) => return Stop::Gone(format!("watch answered 404: {e}")),
                    Err(e) if is_status(&e, 410) => {
                        self.lag("the watched resourceVersion is too old (410 Gone); relisting".into());
                        gone_in_a_row += 1;
                        continue 'list;
                    }
                    Err(e) => {
                        tracing::warn!(kind = kind.as_str(), error = %e, "watch failed; relisting after a short back-off");
                        self.lag(format!("watch failed: {e}"));
                        backoff.wait(&self.cache, kind).await;
                        continue 'list;
                    }
                };
                backoff.reset();
                futures::pin_mut!(stream);
                loop {
                    let item = match tokio::time::timeout(silence, stream.next()).await {
                        Ok(item) => item,
                        Err(_) => {
                            tracing::warn!(
                                kind = kind.as_str(),
                                seconds = silence.as_secs_f64(),
                                "the watch delivered nothing, not even a bookmark or its end; reconnecting"
                            );
                            self.lag(format!("the watch was silent for {} s", silence.as_secs_f64()));
                            continue 'list;
                        }
                    };
                    let event = match item {
                        // The server ended the watch at its timeout: renew it from `version`.
                        None => break,
                        Some(Ok(event)) => event,
                        Some(Err(e)) => {
                            tracing::warn!(kind = kind.as_str(), error = %e, "watch connection failed; relisting after a short back-off");
                            self.lag(format!("watch connection failed: {e}"));
                            backoff.wait(&self.cache, kind).await;
                            continue 'list;
                        }
                    };
                    let now = Instant::now();
                    if !matches!(event, WatchEvent::Error(_)) {
                        gone_in_a_row = 0;
                    }
                    if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) = &event
                        && let Some(v) = meta(&o.0, "resourceVersion")
                    {
                        v.clone_into(&mut version);
                    }
                    match event {
                        // An object being deleted counts as gone, like a deleted one.
                        WatchEvent::Added(o) | WatchEvent::Modified(o) if is_terminating(&o.0) => {
                            self.forget(kind, &o.0, now)
                        }
                        WatchEvent::Deleted(o) => self.forget(kind, &o.0, now),
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => match read_object(kind, &o.0) {
                            Ok((object, v)) => {
                                let object = Arc::new(object);
                                self.cache.status().record(object.clone(), ObjectStatus::from_value(&o.0));
                                let mut state = self.cache.lock();
                                state.apply(object, v.as_deref());
                                state.saw(kind, now);
                            }
                            Err(e) => {
                                tracing::warn!(kind = kind.as_str(), "skipped an object the rules cannot read: {e}");
                                self.cache.lock().saw(kind, now);
                            }
                        },
                        WatchEvent::Bookmark(b) => {
                            version = b.metadata.resource_version;
                            self.cache.lock().saw(kind, now);
                        }
                        WatchEvent::Error(status) if status.code == 410 => {
                            self.lag("the watch expired (410 Gone); relisting".into());
                            gone_in_a_row += 1;
                            continue 'list;
                        }
                        WatchEvent::Error(status) if status.code == 404 => {
                            return Stop::Gone(format!("watch ended with 404: {}", status.message));
                        }
                        WatchEvent::Error(status) => {
                            tracing::warn!(kind = kind.as_str(), code = status.code, message = %status.message, "watch error; relisting after a short back-off");
                            self.lag(format!("watch error {}: {}", status.code, status.message));
                            backoff.wait(&self.cache, kind).await;
                            continue 'list;
                        }
                    }
                }
            }
        }
    }

    /// The watch says `o` is gone (deleted, or being deleted): drop it and its status.
    fn forget(&self, kind: FluxKind, o: &Value, now: Instant) {
        let key = ObjectKey::new(meta(o, "namespace").unwrap_or_default(), meta(o, "name").unwrap_or_default());
        self.cache.status().forget(kind, &key);
        let mut state = self.cache.lock();
        state.delete(kind, &key);
        state.saw(kind, now);
    }

    /// Every object of the kind, page by page, with the list's resourceVersion.
    async fn list(&self, ar: &ApiResource) -> Result<(Vec<(Arc<FluxObject>, Option<String>)>, String), kube::Error> {
        let kind = self.kind;
        // Each page is asked for as soon as the previous one names it, on a task of its own, so
        // that the API server cuts it and the client decodes it while this one is read into the
        // cache. Dropping the handle (a failed page, a dropped list) cancels the request.
        let fetch = |params: ListParams| {
            let (client, ar) = (self.client.clone(), ar.clone());
            let (task, page) = async move { list_page(&client, &ar, &params).await }.remote_handle();
            tokio::spawn(task);
            page
        };
        let first = ListParams::default().limit(500);
        let mut next = Some(fetch(first.clone()));
        let mut objects = Vec::new();
        let mut version = String::new();
        while let Some(pending) = next.take() {
            let page = pending.await?;
            version = page.metadata.resource_version.clone().unwrap_or_default();
            if let Some(token) = page.metadata.continue_.as_deref().filter(|t| !t.is_empty()) {
                next = Some(fetch(first.clone().continue_token(token)));
            }
            for o in page.items.iter().flatten().map(|o| &o.0).filter(|o| !is_terminating(o)) {
                match read_object(kind, o) {
                    Ok((object, version)) => {
                        let object = Arc::new(object);
                        self.cache.status().record(object.clone(), ObjectStatus::from_value(o));
                        objects.push((object, version))
                    }
                    Err(e) => tracing::warn!(kind = kind.as_str(), "skipped an object the rules cannot read: {e}"),
                }
            }
        }
        Ok((objects, version))
    }
}

/// Looks objects up directly in the API server: the webhook confirms a dangling target this
/// way before denying, since another replica may have admitted it moments ago and this
/// replica's watch may not have delivered it yet. It always asks for the version the watch
/// currently follows.
#[derive(Clone)]
pub struct Lookup {
    client: kube::Client,
    served: Arc<Served>,
}

impl Lookup {
    pub fn new(client: kube::Client, served: Arc<Served>) -> Lookup {
        Lookup { client, served }
    }

    /// Whether the version of `kind` to ask for is known (it is not while the CRD is missing
    /// or a new served version is being looked for).
    pub fn serves(&self, kind: FluxKind) -> bool {
        self.served.get(kind).is_some()
    }

    /// Every object of `kind` the API server holds now (a consistent read, page by page), but
    /// those being deleted. Empty when the kind is not watched.
    pub async fn list(&self, kind: FluxKind) -> Result<Vec<FluxObject>, kube::Error> {
        let Some(ar) = self.served.get(kind) else { return Ok(Vec::new()) };
        let mut objects = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = list_page(&self.client, &ar, &params).await?;
            for o in page.items.iter().flatten().map(|o| &o.0).filter(|o| !is_terminating(o)) {
                if let Ok((object, _)) = read_object(kind, o) {
                    objects.push(object);
                }
            }
            match page.metadata.continue_.as_deref().filter(|t| !t.is_empty()) {
                Some(token) => params = ListParams::default().limit(500).continue_token(token),
                None => return Ok(objects),
            }
        }
    }

    /// The object, if the API server has it. `Ok(None)` when it does not, or when the kind is
    /// not watched (its CRD is missing).
    pub async fn get(
        &self,
        kind: FluxKind,
        key: &ObjectKey,
    ) -> Result<Option<(FluxObject, Option<String>)>, kube::Error> {
        let Some(ar) = self.served.get(kind) else { return Ok(None) };
        let request = Request::new(DynamicObject::url_path(&ar, Some(&key.namespace)))
            .get(&key.name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<SlimObject>(request).await {
            Ok(o) if is_terminating(&o.0) => Ok(None),
            Ok(o) => Ok(read_object(kind, &o.0).ok()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

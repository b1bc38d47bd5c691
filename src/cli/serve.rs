//! `fluxgate serve`: wires the cache, the policy, the webhook and admin servers, the audit and
//! the certificate reloader together, and drains on SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{LogFormat, ServeArgs};
use crate::admission::Webhook;
use crate::audit::events;
use crate::cache::Cache;
use crate::cache::watch::{self as cluster, WatchOptions};
use crate::coordination::decider::{Election, Timing};
use crate::manifests;
use crate::object::{FluxKind, FluxObject};
use crate::policy::Policy;
use crate::policy::live::LivePolicy;
use crate::server::tls::{ReloadingCert, ReloadingClientCa};
use crate::server::{self, App};
use crate::status::ObjectStatus;

/// How long the audit Lease is held without renewal before another replica takes over.
const LEASE_DURATION: Duration = Duration::from_secs(30);

/// How often the serving certificate files and the client CA are re-read.
const CERT_POLL: Duration = Duration::from_secs(2);

/// How often the policy file is re-read.
const POLICY_POLL: Duration = Duration::from_secs(2);

pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    // Watching a cluster, a certificate no API server trusts would only fail every admission
    // call later: refuse at once, naming the flags.
    if args.tls_cert.is_none() && args.manifests.is_empty() && !args.dev_certificates {
        return Err("--tls-cert and --tls-key are required when watching a cluster: the API server calls only a \
                    webhook whose certificate it trusts (for a trial, --dev-certificates serves a self-signed \
                    certificate for localhost)"
            .into());
    }
    let policy = match &args.policy {
        Some(path) => LivePolicy::load(path).map_err(|e| e.to_string())?,
        None => LivePolicy::fixed(Arc::new(Policy::default())),
    };
    let cache = Arc::new(Cache::new());
    // rustls needs its process-wide provider before the kube client builds its TLS config.
    crate::server::tls::provider();
    let mut background = Vec::new();
    let mut events = None;
    let mut lookup = None;
    let mut sync_client = None;
    // Bound first: the other replicas are told the port actually listened on.
    let webhook_listener = server::bind(args.listen).await.map_err(|e| e.to_string())?;
    let listening = webhook_listener.local_addr().map_err(|e| e.to_string())?;
    let mut election = None;
    if args.manifests.is_empty() {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("cannot connect to a cluster ({e}); set KUBECONFIG or run in a pod, or pass --manifests PATH")
        })?;
        let (identity, namespace) = events::pod_identity();
        // Every replica takes part in the election, one alone too: a second one may start at
        // any time (a rollout, a scale-up), and must find the decider.
        election = Some(Arc::new(Election::new(
            client.clone(),
            &namespace,
            &identity,
            &peer_address(listening),
            Timing::default(),
        )));
        let served = Arc::new(cluster::Served::default());
        background.push(tokio::spawn(cluster::run(
            client.clone(),
            cache.clone(),
            served.clone(),
            WatchOptions::default(),
        )));
        lookup = Some(cluster::Lookup::new(client.clone(), served));
        sync_client = Some(client.clone());
        let publisher = Arc::new(
            events::Publisher::new(client, &namespace, &identity, LEASE_DURATION)
                .with_blocked_after(args.blocked_after),
        );
        let lease = publisher.clone();
        background.push(tokio::spawn(async move { lease.run_lease().await }));
        events = Some(publisher);
    } else {
        load_manifests(&cache, &args.manifests);
    }

    let (cert_path, key_path) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => dev_certificates(&args.dev_certs_dir)?,
    };
    let cert = ReloadingCert::load(&cert_path, &key_path).map_err(|e| format!("serving certificate: {e}"))?;
    cert.spawn_watch(CERT_POLL);
    let client_ca = match &args.client_ca {
        Some(path) => {
            let ca = ReloadingClientCa::load(path).map_err(|e| format!("--client-ca: {e}"))?;
            ca.spawn_watch(CERT_POLL);
            tracing::info!(client_ca = %path.display(), "the webhook port requires a client certificate signed by this CA");
            Some(ca)
        }
        None => None,
    };
    let tls_config = Arc::new(cert.server_config_with(client_ca));

    let mut webhook = Webhook::live(cache.clone(), policy.clone());
    if let Some(lookup) = lookup {
        webhook = webhook.with_lookup(lookup);
    }
    if let Some(election) = &election {
        let forward = Arc::new(server::peer::Peers::new(cert.clone(), election.identity()));
        let (taking_part, task) = webhook.taking_part(election.clone(), forward);
        webhook = taking_part;
        background.push(task);
    }
    let app = App::new(webhook);
    if let Some(client) = sync_client {
        let syncer = crate::webhooks::sync::Syncer::new(
            client,
            &args.webhook_configuration,
            args.manage_webhooks,
            app.webhook_config.clone(),
        );
        background.push(tokio::spawn(Arc::new(syncer).run(policy.clone())));
    }
    if args.policy.is_some() {
        let counting = app.clone();
        background.push(policy.spawn_watch(POLICY_POLL, move |loaded| counting.metrics.count_policy_reload(loaded)));
    }
    let admin_listener = server::bind(args.admin_listen).await.map_err(|e| e.to_string())?;
    tracing::info!(
        webhook = %webhook_listener.local_addr().map_err(|e| e.to_string())?,
        admin = %admin_listener.local_addr().map_err(|e| e.to_string())?,
        "fluxgate serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let audit_app = app.clone();
    let audit = tokio::spawn(crate::audit::run(
        cache.clone(),
        app.webhook.policy.clone(),
        app.report.clone(),
        args.audit_interval,
        move |report| server::publish_report(&audit_app, report),
        events,
    ));
    let webhook = tokio::spawn(server::serve_tls(
        webhook_listener,
        tls_config,
        server::webhook_router(app.clone()),
        stop_rx.clone(),
        server::Limits::default(),
    ));
    let admin = tokio::spawn(server::serve_admin(admin_listener, server::admin_router(app.clone()), stop_rx));

    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    if let Some(election) = &election {
        // Another replica decides from its next look at the Lease, not after the lease expires.
        election.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = webhook.await;
    let _ = admin.await;
    audit.abort();
    for task in background {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where the other replicas reach this one's webhook port: the pod's IP (`POD_IP`, from the
/// downward API) and the port listened on.
fn peer_address(listen: std::net::SocketAddr) -> String {
    let ip = std::env::var("POD_IP")
        .ok()
        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .unwrap_or(if listen.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { listen.ip() });
    std::net::SocketAddr::new(ip, listen.port()).to_string()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn load_manifests(cache: &Cache, paths: &[std::path::PathBuf]) {
    let loaded = manifests::load(paths);
    for e in &loaded.errors {
        tracing::warn!(file = %e.file.display(), line = e.line, "skipped: {}", e.message);
    }
    if !loaded.clusters.is_empty() {
        // A webhook guards one cluster: serving several that reuse names would mix them.
        tracing::warn!(
            clusters = loaded.clusters.len(),
            "the manifests hold several clusters that give one name to different objects; they are served as one \
             graph where a later file wins: pass one cluster's folder"
        );
    }
    let (files, errors) = (loaded.files, loaded.errors.len());
    let counts = FluxKind::ALL.map(|kind| loaded.count(kind));
    // One shared copy of each object, for the status store and the graph alike.
    let mut by_kind: [Vec<(Arc<FluxObject>, ObjectStatus)>; 2] = Default::default();
    for o in loaded.objects {
        by_kind[o.object.kind.index()].push((Arc::new(o.object), o.status));
    }
    for (kind, objects) in FluxKind::ALL.into_iter().zip(by_kind) {
        let listed = objects.iter().map(|(o, _)| (o.clone(), None)).collect();
        cache.status().replace_all(kind, objects);
        cache.lock().replace_all(kind, listed);
    }
    tracing::info!(
        files,
        kustomizations = counts[FluxKind::Kustomization.index()],
        helm_releases = counts[FluxKind::HelmRelease.index()],
        errors,
        "manifests loaded"
    );
}

/// Makes (or reuses) a development CA and serving certificate for localhost.
fn dev_certificates(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let ca = dir.join("ca.crt");
    if !(cert.exists() && key.exists() && ca.exists()) {
        let bundle = crate::certs::generate(
            &["localhost".to_string()],
            &["127.0.0.1".parse().expect("literal address"), "::1".parse().expect("literal address")],
        )
        .map_err(|e| e.to_string())?;
        crate::certs::write(&bundle, dir).map_err(|e| e.to_string())?;
    }
    tracing::warn!(
        ca = %ca.display(),
        cert = %cert.display(),
        "DEVELOPMENT ONLY: no --tls-cert/--tls-key given, serving a self-signed certificate for localhost; \
         trust it with `curl --cacert {}`; in a cluster use cert-manager or `fluxgate certs`",
        ca.display()
    );
    Ok((cert, key))
}

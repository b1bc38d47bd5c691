//! The command line: `serve`, `check`, `graph`, `diff`, `status`, `why`, `certs`.

mod check;
mod ci;
mod diff;
mod graph;
mod serve;
mod status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use ci::{github, sarif};
pub use diff::{DiffArgs, DiffFormat, DiffOutput};
pub use graph::{GraphFormat, render_graph};
pub use status::{Color, StatusFormat, render_status, render_why};

/// Guards the dependsOn graphs of Flux Kustomizations and HelmReleases.
#[derive(Debug, Parser)]
#[command(name = "fluxgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) and its admin port (HTTP).
    Serve(ServeArgs),
    /// Check the Flux objects of a Git checkout: exit 0 clean or warnings only, 1 on a
    /// deny-level finding, 2 on a usage or input error.
    Check(CheckArgs),
    /// Print the dependsOn graph with its waves, critical path and cycles.
    Graph(GraphArgs),
    /// Compare two checkouts (folders, or Git revisions with --git): edges, objects, waves,
    /// critical path, worst-case rollout and findings. Exit 1 only when HEAD adds a deny-level
    /// finding, 2 on a usage error or when HEAD has files that cannot be read that BASE could.
    Diff(DiffArgs),
    /// Show every object's state by wave, and what holds up the waiting ones: exit 0 when
    /// nothing is stuck, 1 when an object is failed, waiting or stale, 2 when the objects cannot
    /// be read.
    Status(StatusArgs),
    /// Explain why an object is not ready: the chain to each root cause with its message. Exit
    /// 0 when the object is not stuck, 1 when it is, 2 when the objects cannot be read or no
    /// object has that name.
    Why(WhyArgs),
    /// Write a CA and a serving certificate and key; print the caBundle.
    Certs(CertsArgs),
    /// Print the validating and mutating webhook configurations (YAML) that fit a policy: their
    /// matchConditions send fluxgate every request the policy may judge or patch, and skip those
    /// whose answer cannot change.
    WebhookConfig(WebhookConfigArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Policy file (YAML), re-read when it changes. Without it the built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Address of the HTTPS webhook.
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin port (/healthz, /readyz, /metrics, /report).
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM) on the webhook port: the API server
    /// authenticating itself (see docs/operations.md). Re-read when it changes. A caller without such a
    /// certificate is refused at the TLS handshake.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Load Flux objects from these YAML files or folders instead of watching a cluster.
    #[arg(long, value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
    /// How often the whole graph is audited (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = parse_duration_arg)]
    pub audit_interval: std::time::Duration,
    /// How long an object waits for a dependency before a DependencyBlocked Event names its
    /// root causes (cluster mode).
    #[arg(long, default_value = "10m", value_name = "DUR", value_parser = parse_duration_arg)]
    pub blocked_after: std::time::Duration,
    /// Log line format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Serve a self-signed certificate for localhost when --tls-cert/--tls-key are not given while
    /// watching a cluster (a trial on a local control plane). Development only: no API server
    /// trusts it unless told to. With --manifests it is the default.
    #[arg(long)]
    pub dev_certificates: bool,
    /// Folder for the development certificates made when --tls-cert/--tls-key are not given.
    #[arg(long, default_value = "certs/dev", value_name = "DIR")]
    pub dev_certs_dir: PathBuf,
    /// Keep the matchConditions of the two webhook configurations in step with the policy in
    /// force (server-side apply, field manager `fluxgate`; needs get and patch on both). With
    /// `false`, fluxgate only checks them and reports the defaults and rules they keep from
    /// taking effect. Cluster mode only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub manage_webhooks: bool,
    /// Name of the ValidatingWebhookConfiguration and MutatingWebhookConfiguration to keep in step.
    #[arg(long, default_value = crate::webhooks::CONFIGURATION_NAME, value_name = "NAME",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub webhook_configuration: String,
}

#[derive(Debug, clap::Args)]
pub struct WebhookConfigArgs {
    /// Policy file (YAML), or a ConfigMap holding it under `policy.yaml` (as
    /// deploy/base/policy.yaml does). Without it the built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Namespace fluxgate runs in: its Service, and a namespace neither webhook is called for.
    #[arg(long, default_value = crate::webhooks::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Leave out the matchConditions, which `fluxgate serve` writes itself for the policy in
    /// force: for manifests applied from Git (deploy/ is this output for its policy), so that
    /// the GitOps tool and fluxgate never write the same field.
    #[arg(long)]
    pub leave_conditions_to_fluxgate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Findings grouped by object, then read errors and a summary line.
    Text,
    /// One JSON object: `objects`, `findings`, `errors`.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
    /// GitHub Actions workflow commands (`::error file=F,line=N::...`), annotating the diff.
    Github,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// YAML files or folders (read recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Policy file (YAML) setting rule actions.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    /// Also check the objects no cluster applies (disabled or archived apps), each against the
    /// cluster it would join.
    #[arg(long)]
    pub include_unapplied: bool,
    /// Check one cluster only: the folder its entry point syncs (or its last parts, such as
    /// `production`), or the file or folder of its entry point.
    #[arg(long, value_name = "NAME|PATH")]
    pub cluster: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// YAML files or folders (read recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Which graph to print.
    #[arg(long, value_enum, default_value = "kustomization")]
    pub kind: KindArg,
    /// Draw one cluster only (as `check --cluster`).
    #[arg(long, value_name = "NAME|PATH")]
    pub cluster: Option<String>,
}

/// Where `status` and `why` read the objects from, and how they print.
#[derive(Debug, clap::Args)]
pub struct StatusView {
    /// Read the objects from this file (the output of `kubectl get
    /// kustomizations,helmreleases -A -o yaml`) instead of listing them in the kubeconfig's
    /// cluster.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,
    /// Colour the states.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub view: StatusView,
}

#[derive(Debug, clap::Args)]
pub struct WhyArgs {
    /// Name of the Kustomization or HelmRelease.
    pub name: String,
    /// Its namespace (any namespace when not given).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Its kind (both kinds when not given).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    #[command(flatten)]
    pub view: StatusView,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Kustomization,
    HelmRelease,
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Folder to write ca.crt, tls.crt and tls.key into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS name for the serving certificate (repeatable), e.g. fluxgate.fluxgate-system.svc.
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address for the serving certificate (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::object::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 5m or 1h"))
}

/// Runs the parsed command line; the exit code is part of the interface.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Status(args) => status::run_status(args),
        Command::Why(args) => status::run_why(args),
        Command::Certs(args) => certs(args),
        Command::WebhookConfig(args) => webhook_config(args),
    }
}

/// A policy file, or the policy in a ConfigMap's `data."policy.yaml"`.
fn load_policy_or_config_map(path: &std::path::Path) -> Result<crate::policy::Policy, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("policy {file}: cannot be read: {e}"))?;
    let as_config_map: Option<serde_json::Value> = serde_saphyr::from_str(&text).ok();
    if let Some(cm) = as_config_map.filter(|v| v["kind"] == "ConfigMap") {
        let policy = cm["data"]["policy.yaml"]
            .as_str()
            .ok_or_else(|| format!("policy {file}: a ConfigMap without data.\"policy.yaml\""))?;
        return crate::policy::Policy::parse(policy, &format!("{file} (data.\"policy.yaml\")"))
            .map_err(|e| e.to_string());
    }
    crate::policy::Policy::parse(&text, &file).map_err(|e| e.to_string())
}

fn webhook_config(args: WebhookConfigArgs) -> ExitCode {
    let policy = match &args.policy {
        Some(path) => match load_policy_or_config_map(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fluxgate webhook-config: {e}");
                return ExitCode::from(2);
            }
        },
        None => crate::policy::Policy::default(),
    };
    let conditions = if args.leave_conditions_to_fluxgate {
        crate::webhooks::Conditions::LeftToFluxgate
    } else {
        crate::webhooks::Conditions::Included
    };
    let configurations = crate::webhooks::configurations(&policy, &args.namespace, conditions);
    print!("{}", crate::webhooks::to_yaml(&configurations));
    ExitCode::SUCCESS
}

fn certs(args: CertsArgs) -> ExitCode {
    if args.dns.is_empty() && args.ip.is_empty() {
        eprintln!("fluxgate certs: give at least one --dns NAME or --ip ADDR");
        return ExitCode::from(2);
    }
    let written = crate::certs::generate(&args.dns, &args.ip).and_then(|b| {
        let w = crate::certs::write(&b, &args.out)?;
        Ok((b, w))
    });
    match written {
        Ok((bundle, w)) => {
            eprintln!("wrote {} (CA), {} and {}", w.ca_cert.display(), w.cert.display(), w.key.display());
            eprintln!("caBundle for the webhook configurations:");
            println!("{}", bundle.ca_bundle());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fluxgate certs: {e}");
            ExitCode::from(2)
        }
    }
}

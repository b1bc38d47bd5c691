//! `fluxgate serve` keeps its webhook configurations in step with the policy in force, through
//! a fake API server that does server-side apply as the real one does; and where it may not,
//! it says which defaults and rules cannot take effect: log, metric, Event, `/readyz`.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::process::{Client, Http, ServeProcess, admin_get};
use common::*;
use fluxgate::policy::Policy;
use fluxgate::webhooks::{Hook, match_conditions, needs::needs, registered::skipped};
use serde_json::{Value, json};

const MUTATING: &str = "MutatingWebhookConfiguration";
const VALIDATING: &str = "ValidatingWebhookConfiguration";

/// The shipped policy's text, from its ConfigMap.
fn shipped_policy_text() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/policy.yaml")).unwrap();
    let config: Value = serde_saphyr::from_str(&text).unwrap();
    config["data"]["policy.yaml"].as_str().unwrap().to_string()
}

/// The shipped policy with HelmRelease defaults added, as the README shows them.
fn with_helm_defaults() -> String {
    shipped_policy_text().replace(
        "  helmRelease: {}",
        "  helmRelease: { install: { crds: Create, remediation: { retries: 3 } }, upgrade: { cleanupOnFail: true } }",
    )
}

/// The webhook configurations of `deploy/` as `kubectl kustomize` renders them.
fn deploy_configurations() -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"))
        .output()
        .expect("kubectl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    fluxgate::manifests::split_documents(&text)
        .iter()
        .map(|d| serde_saphyr::from_str::<Value>(d.text).unwrap())
        .filter(|o| o["kind"] == MUTATING || o["kind"] == VALIDATING)
        .collect()
}

/// What a GitOps tool does with `deploy/`: server-side apply, its own field manager, forced.
fn gitops_apply(fake: &FakeApi) {
    for c in deploy_configurations() {
        fake.server_side_apply(&c, "kustomize-controller", true).unwrap();
    }
}

fn write_policy(path: &Path, text: &str) {
    // As the kubelet updates a ConfigMap volume: the new file appears whole.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(fake: &FakeApi, dir: &Path, policy: &Path) -> (ServeProcess, std::path::PathBuf) {
    let kubeconfig = fake.kubeconfig(dir);
    let (ca, cert, key) = common::process::write_certs(&dir.join("certs"));
    let server = ServeProcess::start_with_env(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAMESPACE", "fluxgate-system")],
    );
    (server, ca)
}

async fn eventually(what: &str, server: &ServeProcess, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s; logs: {:#?}", server.log_lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn conditions(config: &Value) -> Value {
    config["webhooks"][0]["matchConditions"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_reaches_the_mutating_configuration_and_gitops_leaves_it_in_place() {
    let fake = FakeApi::start(true).await;
    gitops_apply(&fake);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    write_policy(&policy_file, &shipped_policy_text());
    let (server, _) = start(&fake, dir.path(), &policy_file);

    let shipped = Policy::parse(&shipped_policy_text(), "shipped").unwrap();
    let want = json!(match_conditions(&shipped, Hook::Mutate));
    eventually("fluxgate writes its conditions for the shipped policy", &server, async || {
        fake.webhook_configuration(MUTATING, "fluxgate").is_some_and(|c| conditions(&c) == want)
            && fake
                .webhook_configuration(VALIDATING, "fluxgate")
                .is_some_and(|c| conditions(&c) == json!(match_conditions(&shipped, Hook::Validate)))
    })
    .await;

    // The policy gains HelmRelease defaults: the configuration as it is would skip them.
    let helm = Policy::parse(&with_helm_defaults(), "helm").unwrap();
    let helm_needs = needs(&helm);
    let before = skipped(&fake.webhook_configuration(MUTATING, "fluxgate").unwrap(), Hook::Mutate, &helm_needs);
    let names: Vec<&str> = before.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(
        names,
        [
            "default helmRelease.install.crds",
            "default helmRelease.install.remediation.retries",
            "default helmRelease.upgrade.cleanupOnFail"
        ]
    );
    write_policy(&policy_file, &with_helm_defaults());
    let reloaded = Instant::now();
    eventually("the mutating configuration sends what the new policy needs", &server, async || {
        let config = fake.webhook_configuration(MUTATING, "fluxgate").unwrap();
        skipped(&config, Hook::Mutate, &helm_needs).is_empty()
    })
    .await;
    assert!(reloaded.elapsed() < Duration::from_secs(10), "within seconds: {:?}", reloaded.elapsed());
    let mutating = fake.webhook_configuration(MUTATING, "fluxgate").unwrap();
    assert_eq!(conditions(&mutating), json!(match_conditions(&helm, Hook::Mutate)));

    // Written by server-side apply, under fluxgate's field manager, without force, with only
    // the conditions (and the key of their webhook entry).
    let last = fake.applies().into_iter().rfind(|a| a.resource == "mutatingwebhookconfigurations").unwrap();
    assert_eq!((last.manager.as_str(), last.force), ("fluxgate", false));
    assert_eq!(last.content_type, "application/apply-patch+yaml");
    let mut keys: Vec<&String> = last.body["webhooks"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["matchConditions", "name"]);
    let owned = fake.managed_paths(MUTATING, "fluxgate");
    let ours = &owned["fluxgate"];
    let entry = r#"f:webhooks.k:{"name":"mutate.fluxgate.dev"}"#;
    assert!(
        ours.iter().all(|p| p == &format!("{entry}.f:name") || p.starts_with(&format!("{entry}.f:matchConditions."))),
        "fluxgate owns its conditions only: {ours:?}"
    );
    assert!(owned["kustomize-controller"].iter().all(|p| !p.contains("matchConditions")), "{owned:?}");

    // The GitOps tool applies deploy/ again (drift correction): fluxgate's fields stay.
    gitops_apply(&fake);
    let after = fake.webhook_configuration(MUTATING, "fluxgate").unwrap();
    assert_eq!(conditions(&after), json!(match_conditions(&helm, Hook::Mutate)));
    assert!(skipped(&after, Hook::Mutate, &helm_needs).is_empty());
    assert_eq!(fake.managed_paths(MUTATING, "fluxgate")["fluxgate"], *ours);
    // And the rest of the configuration is still Git's.
    assert_eq!(after["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(after["webhooks"][0]["clientConfig"]["service"]["path"], "/mutate");

    let (status, readyz) = admin_get(server.admin, "/readyz").await;
    assert_eq!(status, 200, "{readyz}");
    assert!(
        readyz.contains("webhook mutate: MutatingWebhookConfiguration fluxgate: matchConditions in step"),
        "{readyz}"
    );
    assert!(fake.events().iter().all(|e| e["reason"] != "WebhookSkipsPolicy"), "nothing to warn about");
    let (_, status) = admin_get(server.admin, "/status").await;
    assert_eq!(serde_json::from_str::<Value>(&status).unwrap()["notices"], json!([]));
}

/// A HelmRelease CREATE as the API server sends it.
fn helm_release_create() -> Value {
    let mut o = hr("apps", "podinfo", &[]);
    o["spec"]["chart"] =
        json!({ "spec": { "chart": "podinfo", "sourceRef": { "kind": "HelmRepository", "name": "podinfo" } } });
    create(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_the_skipped_defaults_are_named_in_log_metric_event_and_readyz() {
    let fake = FakeApi::start(true).await;
    // Registered by someone else (rendered with `webhook-config` for the shipped policy and
    // applied with kubectl); fluxgate may read but not patch it.
    let shipped = Policy::parse(&shipped_policy_text(), "shipped").unwrap();
    for config in
        fluxgate::webhooks::configurations(&shipped, "fluxgate-system", fluxgate::webhooks::Conditions::Included)
    {
        fake.server_side_apply(&config, "kubectl", false).unwrap();
    }
    fake.forbid_webhook_configurations(false, true);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    write_policy(&policy_file, &with_helm_defaults());
    let (server, ca) = start(&fake, dir.path(), &policy_file);

    let default = "default helmRelease.install.crds";
    eventually("a log line names the default that cannot take effect", &server, async || {
        server.log_lines().iter().any(|l| {
            l.contains("\"level\":\"ERROR\"")
                && l.contains(default)
                && l.contains("MutatingWebhookConfiguration fluxgate")
        })
    })
    .await;
    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_webhook_config_state{webhook=\"mutate\",state=\"skips\"} 1"), "{metrics}");
    assert!(metrics.contains("fluxgate_webhook_skipped_needs{webhook=\"mutate\"} 3"), "{metrics}");
    // Validation needs nothing the shipped conditions skip: reported as sending, not as a problem.
    assert!(metrics.contains("fluxgate_webhook_config_state{webhook=\"validate\",state=\"sends\"} 1"), "{metrics}");
    let events = fake.events();
    let warning = events.iter().find(|e| e["reason"] == "WebhookSkipsPolicy").expect("a Warning Event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["kind"], "Deployment");
    assert_eq!(warning["regarding"]["name"], "fluxgate");
    assert_eq!(warning["metadata"]["namespace"], "fluxgate-system");
    assert!(warning["note"].as_str().unwrap().contains(default), "{warning}");
    assert!(warning["note"].as_str().unwrap().contains("may not patch"), "{warning}");
    let (_, report) = admin_get(server.admin, "/report").await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["webhooks"]["mutate"]["state"], "skips", "{report}");
    assert_eq!(report["webhooks"]["mutate"]["skipped"][0]["what"], default, "{report}");
    let (status, readyz) = admin_get(server.admin, "/readyz").await;
    assert_eq!(status, 200, "admission is unaffected: {readyz}");
    assert!(readyz.contains("webhook mutate: MutatingWebhookConfiguration fluxgate skips requests"), "{readyz}");
    assert!(readyz.contains(default), "{readyz}");
    // The status page shows it above the graphs, and its refresh (`/status`) carries it.
    let (_, status) = admin_get(server.admin, "/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    let notices = status["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1, "the validating configuration is no problem: {notices:?}");
    assert!(notices[0].as_str().unwrap().contains(default), "{notices:?}");
    let (_, page) = admin_get(server.admin, "/").await;
    assert!(page.contains(default) && page.contains("\"notices\":["), "the page's data holds the notice");

    // Nothing else breaks: fluxgate itself still applies the default to what reaches it.
    let mut connection = Client::new(&ca).connect(server.webhook, Http::One).await;
    let (code, body) = connection.post("/mutate", &helm_release_create()).await;
    assert_eq!(code, 200);
    assert!(body["response"]["patch"].is_string(), "{body}");
    assert!(fake.applies().iter().all(|a| a.manager != "fluxgate"), "the patch was refused");
    // Reported once, not at every look.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.events().iter().filter(|e| e["reason"] == "WebhookSkipsPolicy").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_fluxgate_may_not_read_is_reported_as_unknown() {
    let fake = FakeApi::start(true).await;
    gitops_apply(&fake);
    fake.forbid_webhook_configurations(true, true);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    write_policy(&policy_file, &shipped_policy_text());
    let (server, _) = start(&fake, dir.path(), &policy_file);
    eventually("/readyz says it cannot tell", &server, async || {
        admin_get(server.admin, "/readyz").await.1.contains("cannot tell whether it sends what the policy needs")
    })
    .await;
    // Each configuration is looked at in turn: /readyz may speak of the first before the second.
    eventually("both configurations reported unknown in /metrics", &server, async || {
        let (_, metrics) = admin_get(server.admin, "/metrics").await;
        ["mutate", "validate"].iter().all(|webhook| {
            metrics.contains(&format!("fluxgate_webhook_config_state{{webhook=\"{webhook}\",state=\"unknown\"}} 1"))
        })
    })
    .await;
    assert!(
        fake.events()
            .iter()
            .any(|e| e["reason"] == "WebhookSkipsPolicy" && e["note"].as_str().unwrap().contains("may not read"))
    );
    assert!(server.log_lines().iter().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("may not read")));
}

/// Conditions that another field manager owns are not taken over (no `force`): the conflict is
/// reported as a configuration managed elsewhere, naming what it holds back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_another_manager_owns_are_not_taken_over_but_reported() {
    let fake = FakeApi::start(true).await;
    let shipped = Policy::parse(&shipped_policy_text(), "shipped").unwrap();
    for config in
        fluxgate::webhooks::configurations(&shipped, "fluxgate-system", fluxgate::webhooks::Conditions::Included)
    {
        fake.server_side_apply(&config, "argocd-controller", true).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    write_policy(&policy_file, &with_helm_defaults());
    let (server, _) = start(&fake, dir.path(), &policy_file);
    eventually("the conflict is reported", &server, async || {
        admin_get(server.admin, "/readyz").await.1.contains("managed elsewhere")
    })
    .await;
    let (_, readyz) = admin_get(server.admin, "/readyz").await;
    assert!(readyz.contains("default helmRelease.upgrade.cleanupOnFail"), "{readyz}");
    // The other manager's conditions are as it wrote them; the validating ones, equal to what
    // fluxgate writes, are shared rather than fought over.
    let mutating = fake.webhook_configuration(MUTATING, "fluxgate").unwrap();
    assert_eq!(conditions(&mutating), json!(match_conditions(&shipped, Hook::Mutate)));
    assert!(!fake.managed_paths(MUTATING, "fluxgate").contains_key("fluxgate"));
    let validating = fake.managed_paths(VALIDATING, "fluxgate");
    assert!(validating["fluxgate"].iter().any(|p| p.contains("matchConditions")), "{validating:?}");
    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(metrics.contains("fluxgate_webhook_config_state{webhook=\"validate\",state=\"inStep\"} 1"), "{metrics}");
    assert!(metrics.contains("fluxgate_webhook_config_state{webhook=\"mutate\",state=\"skips\"} 1"), "{metrics}");
}

/// In process: a condition the new policy no longer needs goes (server-side apply removes what
/// its manager stops applying), and the outcome is recorded for `/readyz`.
#[tokio::test]
async fn a_condition_the_policy_no_longer_needs_is_removed() {
    use fluxgate::webhooks::sync::{Outcome, SyncState, Syncer};
    let fake = FakeApi::start(true).await;
    gitops_apply(&fake);
    let state = std::sync::Arc::new(SyncState::default());
    let syncer = Syncer::new(fake.client(), "fluxgate", true, state.clone());
    let names = |fake: &FakeApi| -> Vec<String> {
        let config = fake.webhook_configuration(MUTATING, "fluxgate").unwrap();
        conditions(&config).as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    syncer.sync(&Policy::parse("namespaces: { exclude: [legacy] }", "p").unwrap()).await;
    assert_eq!(names(&fake), ["namespace-not-excluded", "policy-may-patch"]);
    syncer.sync(&Policy::parse("namespaces: { exclude: [] }", "p").unwrap()).await;
    assert_eq!(names(&fake), ["policy-may-patch"]);
    assert_eq!(state.get(Hook::Mutate), Some(Outcome::InStep));
    assert_eq!(state.get(Hook::Validate), Some(Outcome::InStep));
    assert!(state.problems().is_empty());
}

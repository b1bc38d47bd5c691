//! `deploy/` renders with `kubectl kustomize`, and every rendered object parses into its
//! Kubernetes type with the settings the install relies on.

use crate::common::crd;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fluxgate::policy::Policy;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// The objects `kubectl kustomize` renders for a folder of `deploy/`.
fn render(folder: &str) -> Vec<Value> {
    render_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
}

/// The objects `kubectl kustomize` renders for `dir`.
fn render_dir(dir: &Path) -> Vec<Value> {
    let folder = dir.display();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (.ci/run installs it: Debian's kubernetes-client or kubectl)");
    assert!(out.status.success(), "kubectl kustomize {folder} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    fluxgate::manifests::split_documents(&text).iter().map(|d| serde_saphyr::from_str(d.text).unwrap()).collect()
}

fn one<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("{kind} does not parse: {e}"))
}

fn check_base(objects: &[Value]) {
    // Every namespaced object lands in fluxgate-system.
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingWebhookConfiguration"
                | "MutatingWebhookConfiguration"
        );
        if !cluster_scoped {
            assert_eq!(o["metadata"]["namespace"], "fluxgate-system", "{kind} {}", o["metadata"]["name"]);
        }
    }
    let ns: Namespace = one(objects, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some("fluxgate-system"));
    let _: ServiceAccount = one(objects, "ServiceAccount");

    // Deployment: 2 replicas, spread, non-root, read-only root, probes on the admin port, certificate from a Secret.
    let d: Deployment = one(objects, "Deployment");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("fluxgate"));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution.is_some()
            || anti.required_during_scheduling_ignored_during_execution.is_some()
    );
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u != 0));
    let c = &pod.containers[0];
    let csc = c.security_context.clone().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let admin_port = c.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("admin")).unwrap();
    assert_eq!(admin_port.container_port, 8080);
    for (probe, path) in [(c.readiness_probe.clone(), "/readyz"), (c.liveness_probe.clone(), "/healthz")] {
        let http = probe.unwrap().http_get.unwrap();
        assert_eq!(http.path.as_deref(), Some(path));
        assert_eq!(serde_json::to_value(&http.port).unwrap(), "admin");
    }
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--tls-cert=/etc/fluxgate/tls/tls.crt".to_string()), "{args:?}");
    // The allocator settings memory at scale is measured with are the image's and the pod's alike.
    let tunables = c.env.iter().flatten().find(|e| e.name == "GLIBC_TUNABLES").and_then(|e| e.value.clone());
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let image = dockerfile.lines().find_map(|l| l.strip_prefix("ENV GLIBC_TUNABLES=")).map(str::to_string);
    assert!(tunables.as_deref().is_some_and(|t| t.contains("glibc.malloc.trim_threshold=")), "{tunables:?}");
    assert_eq!(tunables, image, "the Deployment and the Dockerfile set the same GLIBC_TUNABLES");
    let tls = pod.volumes.unwrap().into_iter().find(|v| v.name == "tls").unwrap();
    assert_eq!(tls.secret.unwrap().secret_name.as_deref(), Some("fluxgate-tls"));

    let pdb: PodDisruptionBudget = one(objects, "PodDisruptionBudget");
    assert!(pdb.spec.unwrap().min_available.is_some());
    let svc: Service = one(objects, "Service");
    let port = svc.spec.unwrap().ports.unwrap().into_iter().find(|p| p.name.as_deref() == Some("webhook")).unwrap();
    assert_eq!(port.port, 443);

    // The shipped policy is a valid policy.
    let cm: ConfigMap = one(objects, "ConfigMap");
    Policy::parse(&cm.data.unwrap()["policy.yaml"], "deploy policy").expect("the shipped policy parses");

    // RBAC: read the two kinds, write events, one Lease; nothing else, no wildcards.
    let cr: ClusterRole = one(objects, "ClusterRole");
    let rules = cr.rules.unwrap();
    let has = |rules: &[PolicyRule], group: &str, resource: &str, verbs: &[&str]| {
        rules.iter().any(|r| {
            r.api_groups.as_deref().unwrap_or_default().contains(&group.to_string())
                && r.resources.as_deref().unwrap_or_default().contains(&resource.to_string())
                && verbs.iter().all(|v| r.verbs.contains(&v.to_string()))
        })
    };
    assert!(has(&rules, "kustomize.toolkit.fluxcd.io", "kustomizations", &["get", "list", "watch"]));
    assert!(has(&rules, "helm.toolkit.fluxcd.io", "helmreleases", &["get", "list", "watch"]));
    assert!(has(&rules, "events.k8s.io", "events", &["create"]));
    let role: Role = one(objects, "Role");
    let lease_rules = role.rules.unwrap();
    assert!(has(&lease_rules, "coordination.k8s.io", "leases", &["get", "update"]));
    // Every verb but create names the Lease it is for: the audit's and the
    // decider Lease, read and updated in the election.
    let named = |verb: &str| -> Vec<String> {
        lease_rules
            .iter()
            .filter(|r| r.verbs.iter().any(|v| v == verb))
            .filter(|r| r.resources.as_deref().unwrap_or_default().iter().any(|x| x == "leases"))
            .flat_map(|r| r.resource_names.clone().expect("limited by name"))
            .collect()
    };
    assert_eq!(named("get"), ["fluxgate-audit", "fluxgate-decider"]);
    assert_eq!(named("update"), ["fluxgate-audit", "fluxgate-decider"]);
    assert!(named("patch").is_empty());
    for r in rules.iter().chain(&lease_rules) {
        assert!(!r.verbs.iter().any(|v| v == "*" || v == "delete" || v == "deletecollection"), "{r:?}");
        assert!(!r.resources.as_deref().unwrap_or_default().iter().any(|x| x == "*" || x == "secrets"), "{r:?}");
        assert!(!r.api_groups.as_deref().unwrap_or_default().iter().any(|g| g == "*"), "{r:?}");
    }

    // The admin port (object names, status messages) only from the Prometheus namespace; the
    // webhook port from anywhere (the API server).
    let np: NetworkPolicy = one(objects, "NetworkPolicy");
    let np = np.spec.unwrap();
    assert_eq!(np.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"], "fluxgate");
    assert_eq!(np.policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
    let rules = np.ingress.unwrap();
    let port_of = |r: &NetworkPolicyIngressRule| -> Vec<Value> {
        r.ports.as_deref().unwrap_or_default().iter().map(|p| serde_json::to_value(&p.port).unwrap()).collect()
    };
    assert_eq!(rules.len(), 2);
    for r in &rules {
        match port_of(r).as_slice() {
            [p] if p == "webhook" => assert!(r.from.is_none(), "the API server's address is not known"),
            [p] if p == "admin" => {
                let from = r.from.as_deref().unwrap();
                assert_eq!(from.len(), 1);
                let ns = from[0].namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
                assert_eq!(ns["kubernetes.io/metadata.name"], "monitoring");
                assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
            }
            other => panic!("unexpected ports {other:?}"),
        }
    }
    let _: ClusterRoleBinding = one(objects, "ClusterRoleBinding");
    let _: RoleBinding = one(objects, "RoleBinding");

    // Webhooks: the settings the API server and Flux's dry-runs depend on.
    let v: ValidatingWebhookConfiguration = one(objects, "ValidatingWebhookConfiguration");
    let m: MutatingWebhookConfiguration = one(objects, "MutatingWebhookConfiguration");
    let vw = &v.webhooks.unwrap()[0];
    let mw = &m.webhooks.unwrap()[0];
    // Neither writes anything outside fluxgate (Flux's dry-runs are refused by a webhook with
    // side effects).
    assert_eq!(vw.side_effects, "None");
    assert_eq!(mw.side_effects, "None");
    for (review, policy, timeout, service, selector) in [
        (
            &vw.admission_review_versions,
            &vw.match_policy,
            vw.timeout_seconds,
            &vw.client_config.service,
            &vw.namespace_selector,
        ),
        (
            &mw.admission_review_versions,
            &mw.match_policy,
            mw.timeout_seconds,
            &mw.client_config.service,
            &mw.namespace_selector,
        ),
    ] {
        assert_eq!(review, &vec!["v1".to_string()]);
        assert_eq!(policy.as_deref(), Some("Equivalent"));
        assert_eq!(timeout, Some(5));
        let service = service.as_ref().unwrap();
        assert_eq!((service.name.as_str(), service.namespace.as_str()), ("fluxgate", "fluxgate-system"));
        let expr = &selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
        assert_eq!(expr.operator, "NotIn");
        let excluded = expr.values.clone().unwrap();
        assert!(excluded.contains(&"fluxgate-system".to_string()) && excluded.contains(&"kube-system".to_string()));
    }
    assert_eq!(vw.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(mw.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(vw.client_config.service.as_ref().unwrap().path.as_deref(), Some("/validate"));
    assert_eq!(mw.client_config.service.as_ref().unwrap().path.as_deref(), Some("/mutate"));
    let groups: Vec<String> = vw.rules.as_ref().unwrap().iter().flat_map(|r| r.api_groups.clone().unwrap()).collect();
    assert_eq!(groups, ["kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"]);
    assert!(vw.rules.as_ref().unwrap().iter().all(|r| r.operations.as_ref().unwrap().contains(&"DELETE".to_string())));
}

#[test]
fn base_renders_and_every_object_has_the_settings_the_install_relies_on() {
    let objects = render("deploy");
    check_base(&objects);
    assert!(objects.iter().all(|o| o["apiVersion"] != "cert-manager.io/v1"));
}

#[test]
fn cert_manager_variant_adds_the_certificate_chain_and_injects_the_ca() {
    let objects = render("deploy/overlays/cert-manager");
    check_base(&objects);
    let certs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Certificate").collect();
    let serving = certs.iter().find(|c| c["spec"]["secretName"] == "fluxgate-tls").expect("a serving Certificate");
    assert!(serving["spec"]["dnsNames"].as_array().unwrap().contains(&"fluxgate.fluxgate-system.svc".into()));
    let ca = certs.iter().find(|c| c["spec"]["isCA"] == true).expect("a CA Certificate");
    assert_eq!(serving["spec"]["issuerRef"]["name"], "fluxgate-ca");
    assert_eq!(ca["spec"]["issuerRef"]["name"], "fluxgate-selfsigned");
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let o = objects.iter().find(|o| o["kind"] == kind).unwrap();
        assert_eq!(o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "fluxgate-system/fluxgate-serving");
    }
}

#[test]
fn client_ca_variant_passes_the_flag_and_mounts_the_ca_read_only() {
    let objects = render("deploy/overlays/client-ca");
    check_base(&objects);
    let deployment: Deployment = one(&objects, "Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--client-ca=/etc/fluxgate/client-ca/ca.crt".to_string()), "{args:?}");
    // The flag as the binary reads it.
    let mut cli = vec!["fluxgate".to_string()];
    cli.extend(args);
    use clap::Parser as _;
    let parsed = fluxgate::cli::Cli::try_parse_from(&cli).unwrap_or_else(|e| panic!("{e}"));
    let fluxgate::cli::Command::Serve(serve) = parsed.command else { panic!("not serve") };
    assert_eq!(serve.client_ca.as_deref(), Some(Path::new("/etc/fluxgate/client-ca/ca.crt")));
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "client-ca").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/fluxgate/client-ca", Some(true)));
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "client-ca").unwrap();
    assert_eq!(volume.config_map.unwrap().name, "fluxgate-client-ca");
    // cert-manager still provides the serving certificate.
    assert!(objects.iter().any(|o| o["kind"] == "Certificate"));
}

// --- installing with Flux ---------------------------------------------------------------------

/// Whether a label selector matches `labels` (matchLabels and the four operators).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            other => panic!("unknown selector operator {other}"),
        }
    });
    labels_match && expressions_match
}

fn rule_matches(rule: &RuleWithOperations, group: &str, resource: &str, operation: &str) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| list.iter().flatten().any(|x| x == "*" || x == want);
    has(&rule.api_groups, group) && has(&rule.resources, resource) && has(&rule.operations, operation)
}

/// The resource of a kind, as the API server names it.
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// Whether the validating webhook is called for `operation` on `object`: its rules, namespace
/// selector (on the namespace's labels, `kubernetes.io/metadata.name` included, as the API
/// server sets it) and object selector. Match conditions can only narrow this further, so an
/// object these leave out is never sent to fluxgate.
fn validated(v: &ValidatingWebhookConfiguration, object: &Value, operation: &str, namespaces: &[Value]) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap();
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let resource = plural(object["kind"].as_str().unwrap());
    let labels: BTreeMap<String, String> =
        serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str();
    let mut ns_labels: BTreeMap<String, String> = namespaces
        .iter()
        .find(|n| n["metadata"]["name"].as_str() == namespace)
        .map(|n| serde_json::from_value(n["metadata"]["labels"].clone()).unwrap_or_default())
        .unwrap_or_default();
    if let Some(ns) = namespace {
        ns_labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    }
    v.webhooks.iter().flatten().any(|w| {
        w.rules.iter().flatten().any(|r| rule_matches(r, group, &resource, operation))
            && (namespace.is_none() || selects(w.namespace_selector.as_ref(), &ns_labels))
            && selects(w.object_selector.as_ref(), &labels)
    })
}

/// What kustomize-controller builds for a Flux Kustomization of this repository: the folder at
/// `spec.path` of a copy of `deploy/` (the GitRepository's `ignore` keeps only `deploy/`), with
/// the Kustomization's `spec.patches` added to its `kustomization.yaml`, as the controller does.
fn flux_build(kustomization: &Value) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let artifact = tempfile::tempdir().unwrap();
    copy_dir(&root.join("deploy"), &artifact.path().join("deploy"));
    let path = artifact.path().join(kustomization["spec"]["path"].as_str().unwrap());
    let file = path.join("kustomization.yaml");
    let mut k: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    if let Some(patches) = kustomization["spec"]["patches"].as_array() {
        k["patches"] = Value::Array(patches.clone());
    }
    std::fs::write(&file, serde_json::to_string(&k).unwrap()).unwrap();
    render_dir(&path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn flux_install_renders_a_source_and_a_waiting_kustomization_of_deploy() {
    let objects = render("deploy/flux");
    let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "Kustomization", "GitRepository"]);
    let ks = &objects[1];
    let source = &objects[2];
    assert_eq!(ks["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
    crd::assert_valid(&crd::crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1"), ks);
    assert_eq!(ks["spec"]["wait"], true);
    assert_eq!(ks["spec"]["prune"], true);
    assert_eq!(ks["spec"]["sourceRef"]["kind"], "GitRepository");
    assert_eq!(ks["spec"]["sourceRef"]["name"], source["metadata"]["name"]);
    assert!(ks["spec"]["sourceRef"]["namespace"].is_null(), "the source is in the Kustomization's namespace");
    assert_eq!(source["apiVersion"], "source.toolkit.fluxcd.io/v1");
    assert_eq!(source["metadata"]["namespace"], ks["metadata"]["namespace"]);
    assert!(source["spec"]["ref"]["semver"].is_string(), "fixed releases roll out without a change to the fleet");

    // What Flux applies for it is the cert-manager install, less the namespace this folder owns
    // (created here first, since the Flux objects live in it), which is otherwise identical.
    let applied = flux_build(ks);
    let mut expected = render("deploy/overlays/cert-manager");
    let base_ns = expected.iter().position(|o| o["kind"] == "Namespace").unwrap();
    assert_eq!(expected.remove(base_ns), objects[0], "deploy/flux creates the namespace the base describes");
    assert_eq!(applied, expected);
    check_base(&[objects[0].clone()].into_iter().chain(applied).collect::<Vec<_>>());
}

#[test]
fn flux_can_repair_fluxgate_while_its_validating_webhook_is_down() {
    let flux = render("deploy/flux");
    let applied = flux_build(&flux[1]);
    let v: ValidatingWebhookConfiguration = one(&applied, "ValidatingWebhookConfiguration");
    assert_eq!(v.webhooks.as_ref().unwrap()[0].failure_policy.as_deref(), Some("Fail"), "a down fluxgate denies");
    let namespaces: Vec<Value> = flux.iter().filter(|o| o["kind"] == "Namespace").cloned().collect();
    // Everything Flux writes to install, upgrade, repair or remove fluxgate: its namespace,
    // source and Kustomization, and every object that Kustomization applies.
    for object in flux.iter().chain(&applied) {
        for operation in ["CREATE", "UPDATE", "DELETE"] {
            assert!(
                !validated(&v, object, operation, &namespaces),
                "{operation} of {} {}/{} would wait on fluxgate",
                object["kind"],
                object["metadata"]["namespace"].as_str().unwrap_or_default(),
                object["metadata"]["name"]
            );
        }
    }
    // The same Kustomization anywhere else is guarded: the exclusion is the namespace.
    let mut elsewhere = flux[1].clone();
    elsewhere["metadata"]["namespace"] = "flux-system".into();
    assert!(validated(&v, &elsewhere, "UPDATE", &namespaces));
    assert!(validated(&v, &elsewhere, "DELETE", &namespaces));
}

// --- webhook configurations and the policy ------------------------------------------------------

/// The documents `fluxgate webhook-config` prints for `args`.
fn webhook_config(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .arg("webhook-config")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "webhook-config {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    fluxgate::manifests::split_documents(&text).iter().map(|d| serde_saphyr::from_str(d.text).unwrap()).collect()
}

fn file_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    fluxgate::manifests::split_documents(&text).iter().map(|d| serde_saphyr::from_str(d.text).unwrap()).collect()
}

#[test]
fn webhooks_yaml_is_webhook_config_of_the_shipped_policy() {
    let generated = webhook_config(&["--policy", "deploy/base/policy.yaml", "--leave-conditions-to-fluxgate"]);
    assert_eq!(
        file_documents("deploy/base/webhooks.yaml"),
        generated,
        "regenerate deploy/base/webhooks.yaml with the command in its header"
    );
    // Git owns everything but the conditions: the full output for the shipped policy is the
    // same configuration with fluxgate's conditions added, and nothing else.
    let mut full = webhook_config(&["--policy", "deploy/base/policy.yaml"]);
    for config in &mut full {
        let webhook = &mut config["webhooks"][0];
        assert!(webhook["matchConditions"].as_array().is_some_and(|c| !c.is_empty()), "{config}");
        webhook.as_object_mut().unwrap().remove("matchConditions");
    }
    assert_eq!(full, generated);
}

#[test]
fn fluxgate_may_get_and_patch_its_two_webhook_configurations_and_nothing_else_of_their_kind() {
    let objects = render("deploy");
    let cr: ClusterRole = one(&objects, "ClusterRole");
    let rules: Vec<&PolicyRule> = cr
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.api_groups.as_deref() == Some(&["admissionregistration.k8s.io".to_string()][..]))
        .collect();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let mut resources = rules[0].resources.clone().unwrap();
    resources.sort();
    assert_eq!(resources, ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"]);
    assert_eq!(rules[0].verbs, ["get", "patch"]);
    let v: ValidatingWebhookConfiguration = one(&objects, "ValidatingWebhookConfiguration");
    let m: MutatingWebhookConfiguration = one(&objects, "MutatingWebhookConfiguration");
    let names = [v.metadata.name.unwrap(), m.metadata.name.unwrap()];
    assert_eq!(rules[0].resource_names.as_deref(), Some(&names[..1]), "named, and both configurations share it");
    assert_eq!(names[0], names[1]);
    // The Deployment that Warning Events about the configurations are about: read, by name.
    let role: Role = one(&objects, "Role");
    let deployments: Vec<&PolicyRule> = role
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.resources.as_deref() == Some(&["deployments".into()][..]))
        .collect();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].verbs, ["get"]);
    let d: Deployment = one(&objects, "Deployment");
    assert_eq!(deployments[0].resource_names.as_deref(), Some(&[d.metadata.name.unwrap()][..]));
}

/// A real API server, where the kubeconfig names one: it accepts the cluster-scoped objects of
/// `deploy/` and the full configurations (it compiles their CEL). The namespaced objects are
/// left out: a server-side dry-run does not create their namespace, so they would be refused
/// for that alone. Without an API server there is nothing to ask, and the test says so.
#[test]
fn a_real_api_server_accepts_deploy_and_the_generated_conditions() {
    let reachable =
        Command::new("kubectl").args(["version", "--request-timeout=5s"]).output().is_ok_and(|o| o.status.success());
    if !reachable {
        eprintln!("no API server reachable through kubectl: the server-side dry-run is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_scoped: Vec<Value> = render("deploy")
        .into_iter()
        .filter(|o| o["metadata"]["namespace"].is_null())
        .chain(webhook_config(&["--policy", "deploy/base/policy.yaml"]))
        .collect();
    assert!(cluster_scoped.len() >= 6, "{cluster_scoped:?}");
    for (i, object) in cluster_scoped.iter().enumerate() {
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, serde_json::to_string(object).unwrap()).unwrap();
        let out = Command::new("kubectl")
            .args([
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "--field-manager=fluxgate-test",
                "-f",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {}: {}",
            object["kind"],
            object["metadata"]["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn webhook_config_refuses_a_bad_policy_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.yaml");
    std::fs::write(&bad, "defaults: { helmRelease: { install: { crds: Always } } }\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_fluxgate")).args(["webhook-config", "--policy"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("defaults.helmRelease.install.crds"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing half-printed");
}

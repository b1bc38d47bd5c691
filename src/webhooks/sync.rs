//! Keeps the registered webhook configurations in step with the policy in force, and says so
//! when it cannot.
//!
//! At start-up, whenever a new policy is put in force, and every [`Syncer::recheck`] (someone
//! may edit the configuration), fluxgate reads each configuration and writes its
//! `matchConditions` for the policy with server-side apply under [`FIELD_MANAGER`], without
//! `force`: the conditions are the only fields it writes, so a GitOps tool applying `deploy/`
//! (which leaves them out) never fights it, and a configuration whose conditions another
//! manager owns is not taken over but reported. Only `get` and `patch` on the two configurations
//! are needed.
//!
//! Whatever happened, the configuration as registered is then checked against one request per
//! default and rule of the policy ([`super::needs`]). A default or rule whose request it would
//! skip is reported: a log line naming it, the `fluxgate_webhook_config_state` and
//! `fluxgate_webhook_skipped_needs` metrics, a Warning Event on fluxgate's Deployment, and a
//! line of `/readyz` (which stays 200: admission itself is unaffected). A configuration that
//! cannot be read is reported the same way, since then nothing is known.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::needs::needs;
use super::registered::{Skipped, skipped};
use super::{FIELD_MANAGER, Hook, owned_fields};
use crate::policy::Policy;
use crate::policy::live::LivePolicy;

/// What the last look at one configuration found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Outcome {
    /// fluxgate wrote its conditions for the policy in force, and the configuration sends every
    /// request the policy needs.
    InStep,
    /// fluxgate does not write the configuration (not allowed, or told not to), and it sends
    /// every request the policy needs anyway.
    Sends { why: String },
    /// The configuration skips requests the policy needs: those defaults and rules do not take
    /// effect.
    Skips { skipped: Vec<SkippedNeed>, why: String },
    /// The configuration cannot be read: whether it sends what the policy needs is not known.
    Unknown { why: String },
}

/// [`Skipped`], serialisable for `/report`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedNeed {
    pub what: String,
    pub why: String,
}

impl From<Skipped> for SkippedNeed {
    fn from(s: Skipped) -> Self {
        SkippedNeed { what: s.what, why: s.why }
    }
}

/// What the needs that `configuration` does not send amount to, `why` saying how it came to
/// be so; `None` when it sends them all. Needs whose conditions could not be evaluated here
/// make the answer unknown, unless others are certainly skipped.
fn judged(missed: Vec<Skipped>, why: String) -> Option<Outcome> {
    if missed.is_empty() {
        return None;
    }
    let (certain, open): (Vec<Skipped>, Vec<Skipped>) = missed.into_iter().partition(|s| s.certain);
    if certain.is_empty() {
        let first = &open[0];
        return Some(Outcome::Unknown {
            why: format!("{why}; its conditions cannot all be evaluated here: for {}, {}", first.what, first.why),
        });
    }
    Some(Outcome::Skips { skipped: certain.into_iter().map(Into::into).collect(), why })
}

impl Outcome {
    /// The `state` label of `fluxgate_webhook_config_state`.
    pub fn state(&self) -> &'static str {
        match self {
            Outcome::InStep => "inStep",
            Outcome::Sends { .. } => "sends",
            Outcome::Skips { .. } => "skips",
            Outcome::Unknown { .. } => "unknown",
        }
    }

    pub const STATES: [&'static str; 4] = ["inStep", "sends", "skips", "unknown"];

    /// Whether a person must act.
    pub fn is_problem(&self) -> bool {
        matches!(self, Outcome::Skips { .. } | Outcome::Unknown { .. })
    }

    /// One line saying what this means, naming every default and rule that cannot take effect.
    pub fn message(&self, hook: Hook, configuration: &str) -> String {
        let config = format!("{} {configuration}", hook.configuration_kind());
        match self {
            Outcome::InStep => format!("{config}: matchConditions in step with the policy"),
            Outcome::Sends { why } => {
                format!("{config}: sends every request the policy needs ({why})")
            }
            Outcome::Skips { skipped, why } => {
                let names: Vec<&str> = skipped.iter().map(|s| s.what.as_str()).collect();
                let first = skipped.first().map(|s| format!("; for {}, {}", s.what, s.why)).unwrap_or_default();
                format!(
                    "{config} skips requests the policy needs, so these do not take effect: {}. Why: {why}{first}",
                    names.join(", ")
                )
            }
            Outcome::Unknown { why } => {
                format!("{config}: cannot tell whether it sends what the policy needs ({why})")
            }
        }
    }
}

/// The outcome of the last look at each configuration, shared with the admin port.
#[derive(Debug, Default)]
pub struct SyncState {
    outcomes: RwLock<BTreeMap<Hook, Outcome>>,
    configuration: RwLock<String>,
}

impl SyncState {
    pub fn set(&self, hook: Hook, outcome: Outcome) {
        self.outcomes.write().unwrap_or_else(|p| p.into_inner()).insert(hook, outcome);
    }

    /// Every outcome, for `/report`.
    pub fn outcomes(&self) -> BTreeMap<Hook, Outcome> {
        self.outcomes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, hook: Hook) -> Option<Outcome> {
        self.outcomes.read().unwrap_or_else(|p| p.into_inner()).get(&hook).cloned()
    }

    /// One line per configuration looked at, for `/readyz`.
    pub fn lines(&self) -> Vec<String> {
        self.lines_where(|_| true)
    }

    /// The lines of the configurations that keep defaults or rules from taking effect (or
    /// cannot be read), for the status page.
    pub fn problems(&self) -> Vec<String> {
        self.lines_where(Outcome::is_problem)
    }

    fn lines_where(&self, keep: impl Fn(&Outcome) -> bool) -> Vec<String> {
        let name = self.configuration.read().unwrap_or_else(|p| p.into_inner()).clone();
        let outcomes = self.outcomes.read().unwrap_or_else(|p| p.into_inner());
        outcomes
            .iter()
            .filter(|(_, o)| keep(o))
            .map(|(hook, o)| format!("webhook {}: {}", hook.as_str(), o.message(*hook, &name)))
            .collect()
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Keeps both configurations in step with the policy (see the module documentation).
pub struct Syncer {
    client: kube::Client,
    /// Name of both configurations.
    pub configuration: String,
    /// Whether fluxgate writes its conditions (`serve --manage-webhooks`).
    pub manage: bool,
    /// fluxgate's Deployment (namespace, name), which the Warning Events are about.
    pub deployment: (String, String),
    /// This replica, as the Events' `reportingInstance`.
    pub identity: String,
    pub state: Arc<SyncState>,
    /// How often the policy in force is looked at for a change.
    pub poll: Duration,
    /// How often the configurations are looked at without a policy change.
    pub recheck: Duration,
    /// The last message reported per configuration: each is logged and posted once.
    reported: Mutex<BTreeMap<Hook, String>>,
}

impl Syncer {
    pub fn new(client: kube::Client, configuration: &str, manage: bool, state: Arc<SyncState>) -> Syncer {
        let (identity, namespace) = crate::audit::events::pod_identity();
        *state.configuration.write().unwrap_or_else(|p| p.into_inner()) = configuration.to_string();
        Syncer {
            client,
            configuration: configuration.to_string(),
            manage,
            deployment: (namespace, super::CONFIGURATION_NAME.to_string()),
            identity,
            state,
            poll: Duration::from_secs(1),
            recheck: Duration::from_secs(60),
            reported: Mutex::default(),
        }
    }

    /// Looks at both configurations for `policy`, records and reports the outcomes.
    pub async fn sync(&self, policy: &Policy) {
        for hook in Hook::ALL {
            let outcome = match hook {
                Hook::Validate => {
                    self.sync_one(Api::<ValidatingWebhookConfiguration>::all(self.client.clone()), policy, hook).await
                }
                Hook::Mutate => {
                    self.sync_one(Api::<MutatingWebhookConfiguration>::all(self.client.clone()), policy, hook).await
                }
            };
            self.report(hook, &outcome).await;
            self.state.set(hook, outcome);
        }
    }

    async fn sync_one<K>(&self, api: Api<K>, policy: &Policy, hook: Hook) -> Outcome
    where
        K: kube::Resource + Clone + Debug + DeserializeOwned + Serialize,
    {
        let name = &self.configuration;
        let kind = hook.configuration_kind();
        let current = match api.get(name).await {
            Ok(c) => c,
            Err(e) => {
                let why = match status_code(&e) {
                    Some(403) => format!("fluxgate may not read {kind} {name}: give it get and patch on it ({e})"),
                    Some(404) => format!("no {kind} named {name} is registered"),
                    _ => format!("cannot read {kind} {name}: {e}"),
                };
                return Outcome::Unknown { why };
            }
        };
        let needs = needs(policy);
        let current = serde_json::to_value(&current).unwrap_or_default();
        let has_webhook =
            current["webhooks"].as_array().is_some_and(|ws| ws.iter().any(|w| w["name"] == hook.webhook_name()));
        let why = if !self.manage {
            "fluxgate is told not to write it (--manage-webhooks=false)".to_string()
        } else if !has_webhook {
            // Applying would add a webhook without a service: only the conditions are ours.
            format!("it has no webhook named {}, the only one fluxgate writes to", hook.webhook_name())
        } else {
            let params = PatchParams::apply(FIELD_MANAGER);
            match api.patch(name, &params, &Patch::Apply(owned_fields(policy, hook, name))).await {
                Ok(written) => {
                    let written = serde_json::to_value(&written).unwrap_or_default();
                    // Another manager's conditions hold as well (all must be true).
                    let why = "fluxgate wrote its conditions, but other fields of the configuration still skip these";
                    return judged(skipped(&written, hook, &needs), why.to_string()).unwrap_or(Outcome::InStep);
                }
                Err(e) => match status_code(&e) {
                    Some(403) => format!("fluxgate may not patch it: give it patch on {kind} {name} ({e})"),
                    Some(409) => {
                        format!("its matchConditions are managed elsewhere; fluxgate does not take them over ({e})")
                    }
                    _ => format!("fluxgate could not write its conditions ({e})"),
                },
            }
        };
        judged(skipped(&current, hook, &needs), why.clone()).unwrap_or(Outcome::Sends { why })
    }

    /// Logs a changed outcome, and posts a Warning Event for a changed problem.
    async fn report(&self, hook: Hook, outcome: &Outcome) {
        let message = outcome.message(hook, &self.configuration);
        {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            if reported.get(&hook) == Some(&message) {
                return;
            }
            reported.insert(hook, message.clone());
        }
        match outcome {
            Outcome::InStep | Outcome::Sends { .. } => tracing::info!(webhook = hook.as_str(), "{message}"),
            Outcome::Skips { skipped, .. } => {
                let what: Vec<&str> = skipped.iter().map(|s| s.what.as_str()).collect();
                tracing::error!(webhook = hook.as_str(), cannot_take_effect = %what.join(", "), "{message}");
            }
            Outcome::Unknown { .. } => tracing::error!(webhook = hook.as_str(), "{message}"),
        }
        if outcome.is_problem()
            && let Err(e) = self.post_event(&message).await
        {
            tracing::warn!(error = %e, "cannot post the Warning Event about the webhook configuration");
        }
    }

    async fn post_event(&self, message: &str) -> Result<(), kube::Error> {
        let (namespace, name) = &self.deployment;
        // Without the uid `kubectl describe deployment` does not show the Event; it is still
        // listed by `kubectl get events`.
        let uid = Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .ok()
            .and_then(|d| d.metadata.uid);
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(crate::audit::events::event_name(name, now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some("fluxgate.dev/webhooks".into()),
            reporting_instance: Some(self.identity.clone()),
            action: Some("Sync".into()),
            reason: Some("WebhookSkipsPolicy".into()),
            type_: Some("Warning".into()),
            note: Some(message.chars().take(1024).collect()),
            regarding: Some(ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid,
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }

    /// Syncs now, then whenever a new policy is in force and every [`Syncer::recheck`].
    pub async fn run(self: Arc<Self>, policy: Arc<LivePolicy>) {
        let mut last: Option<Arc<crate::policy::live::InForce>> = None;
        let mut last_sync = Instant::now();
        loop {
            let in_force = policy.in_force();
            let changed = last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &in_force));
            if changed || last_sync.elapsed() >= self.recheck {
                self.sync(&in_force.policy).await;
                last = Some(in_force);
                last_sync = Instant::now();
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

//! Live dependency status: what state each Flux object is in, and for every object that waits
//! for its dependencies, the objects really holding it up.
//!
//! Kept apart from the graphs on purpose. Per object the [`StatusStore`] keeps only the `Ready`
//! condition, `generation` against `status.observedGeneration`, `spec.suspend` and the time
//! budget, with the object as the source delivered it (an `Arc` shared with the cache), behind
//! its own lock: a status-only watch event updates this map and does no graph work, and a status
//! report never takes the admission lock. The analysis ([`analyze`]) builds a private graph from
//! a snapshot of the store.
//!
//! - `mod.rs`: what fluxgate reads of an object's status, and its state;
//! - [`store`]: the state store and its lock;
//! - [`analysis`]: states and root causes, pure;
//! - [`rollout`]: the worst-case rollout and the time each wave took;
//! - [`page`]: the status page.

pub mod analysis;
pub mod page;
pub mod rollout;
pub mod store;

pub use analysis::*;
pub use rollout::*;
pub use store::*;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::object::at;

/// The reason Flux sets on `Ready=False` while an object waits for its `dependsOn`.
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The `Ready` condition of an object, as Flux writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadyCondition {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// `lastTransitionTime`, RFC 3339, as written.
    #[serde(rename = "lastTransitionTime", skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// What fluxgate keeps of one object's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    /// Boxed: held for every object, and absent on many.
    pub ready: Option<Box<ReadyCondition>>,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub suspended: bool,
    /// The longest one reconciliation may take: `spec.timeout`, else Flux's default of the
    /// interval minus 30 s, at least 30 s. `None` when neither field is readable.
    pub timeout: Option<Duration>,
}

/// Flux's floor for a reconciliation's time budget.
const MIN_TIMEOUT: Duration = Duration::from_secs(30);

fn timeout_of(value: &Value) -> Option<Duration> {
    let field = |name: &str| at(value, &["spec", name]).and_then(Value::as_str).and_then(crate::object::parse_duration);
    field("timeout").or_else(|| field("interval").map(|i| i.saturating_sub(MIN_TIMEOUT).max(MIN_TIMEOUT)))
}

/// The state of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `Ready=False` for a reason of its own (a failed build, a failed health check, ...).
    Failed,
    /// `Ready=False` with reason `DependencyNotReady`.
    Waiting,
    /// `spec.suspend: true`.
    Suspended,
    /// `status.observedGeneration` behind `metadata.generation`: the controller has not looked at
    /// the current spec.
    Stale,
    /// `Ready=Unknown`: a reconciliation is under way.
    Progressing,
    /// No `Ready` condition yet.
    Unknown,
    Ready,
}

impl State {
    /// Every state, stuck ones first (the order of tables and the page).
    pub const ALL: [State; 7] = [
        State::Failed,
        State::Waiting,
        State::Suspended,
        State::Stale,
        State::Progressing,
        State::Unknown,
        State::Ready,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Waiting => "waiting",
            State::Suspended => "suspended",
            State::Stale => "stale",
            State::Progressing => "progressing",
            State::Unknown => "unknown",
            State::Ready => "ready",
        }
    }
}

impl ObjectStatus {
    /// Reads the status-relevant fields of a whole object (a watch event, a list item). Fields
    /// of the wrong type read as absent: status is written by controllers, not by users, and one
    /// odd field must not hide the rest.
    pub fn from_value(value: &Value) -> ObjectStatus {
        let ready = at(value, &["status", "conditions"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .map(|c| {
                let text = |field: &str| c.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
                Box::new(ReadyCondition {
                    status: match c.get("status").and_then(Value::as_str) {
                        Some("True") => ConditionStatus::True,
                        Some("False") => ConditionStatus::False,
                        _ => ConditionStatus::Unknown,
                    },
                    reason: text("reason"),
                    message: text("message"),
                    last_transition_time: c.get("lastTransitionTime").and_then(Value::as_str).map(str::to_string),
                })
            });
        ObjectStatus {
            ready,
            generation: at(value, &["metadata", "generation"]).and_then(Value::as_i64),
            observed_generation: at(value, &["status", "observedGeneration"]).and_then(Value::as_i64),
            suspended: at(value, &["spec", "suspend"]).and_then(Value::as_bool).unwrap_or(false),
            timeout: timeout_of(value),
        }
    }

    /// Reads the status of an object from the API server (metadata is kept apart there).
    pub fn from_dynamic(object: &kube::api::DynamicObject) -> ObjectStatus {
        ObjectStatus { generation: object.metadata.generation, ..ObjectStatus::from_value(&object.data) }
    }

    /// The object's state. Suspension wins (Flux does nothing else with a suspended object);
    /// `DependencyNotReady` wins over staleness because Flux sets it before it records the new
    /// generation as observed.
    pub fn state(&self) -> State {
        if self.suspended {
            return State::Suspended;
        }
        let Some(ready) = &self.ready else { return State::Unknown };
        if ready.status == ConditionStatus::False && ready.reason == DEPENDENCY_NOT_READY {
            return State::Waiting;
        }
        if let (Some(generation), Some(observed)) = (self.generation, self.observed_generation)
            && observed < generation
        {
            return State::Stale;
        }
        match ready.status {
            ConditionStatus::True => State::Ready,
            ConditionStatus::Unknown => State::Progressing,
            ConditionStatus::False => State::Failed,
        }
    }

    /// The `Ready` message, if any.
    pub fn message(&self) -> Option<&str> {
        self.ready.as_ref().map(|r| r.message.as_str()).filter(|m| !m.is_empty())
    }
}

#[cfg(test)]
mod tests;

//! The rollout estimate: the worst-case time of a full rollout along its slowest chain, and how
//! long each wave actually took.

use std::collections::HashMap;

use serde::Serialize;

use crate::graph::Graph;
use crate::object::ObjectKey;

use super::*;

/// How long a rollout takes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Worst case of a full rollout: the largest sum of timeouts along a `dependsOn` chain, each
    /// object waiting for its slowest dependency ([`ObjectStatus::timeout`], 30 s when unknown).
    #[serde(rename = "worstCaseSeconds")]
    pub worst_case_seconds: u64,
    /// That chain, dependencies first.
    #[serde(rename = "worstCasePath")]
    pub worst_case_path: Vec<ObjectKey>,
    /// How long each wave actually took, from the `Ready` transition times: from the last
    /// transition of the wave before (for wave 0, its own first) to its own last. `None` while an
    /// object of the wave is not ready or has no transition time.
    #[serde(rename = "waveSeconds")]
    pub wave_seconds: Vec<Option<i64>>,
}

/// How long each wave took, from the `Ready` transition times (see [`Rollout::wave_seconds`]).
pub(super) fn wave_seconds(
    graph: &Graph,
    waves: &[Option<u32>],
    statuses: &HashMap<ObjectKey, ObjectStatus>,
) -> Vec<Option<i64>> {
    use k8s_openapi::jiff::Timestamp;
    let depth = waves.iter().flatten().max().map_or(0, |m| m + 1) as usize;
    // Per wave: (first, last) transition, or None when an object is not ready or has no time.
    let mut spans: Vec<Option<(Timestamp, Timestamp)>> = vec![None; depth];
    let mut complete = vec![true; depth];
    for id in graph.present_ids() {
        let Some(w) = waves[id as usize] else { continue };
        let w = w as usize;
        let ready_at = statuses
            .get(graph.key(id))
            .filter(|s| s.state() == State::Ready)
            .and_then(|s| s.ready.as_ref()?.last_transition_time.as_deref()?.parse::<Timestamp>().ok());
        match ready_at {
            Some(t) => {
                let span = spans[w].get_or_insert((t, t));
                span.0 = span.0.min(t);
                span.1 = span.1.max(t);
            }
            None => complete[w] = false,
        }
    }
    (0..depth)
        .map(|w| {
            let (first, last) = spans[w].filter(|_| complete[w])?;
            let start = if w == 0 { first } else { spans[w - 1].filter(|_| complete[w - 1])?.1 };
            Some(last.duration_since(start).as_secs())
        })
        .collect()
}

/// Seconds as people read them: `45s`, `5m`, `1h2m30s`.
pub fn format_seconds(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

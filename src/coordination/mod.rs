//! Decisions that hold across replicas: one replica decides every admission that adds an edge.
//!
//! Each replica keeps its own watch cache, and a replica remembers what it admitted until its
//! watch delivers it; but of two replicas deciding side by side, neither sees what the other
//! admitted a moment ago, and each could admit one half of a cycle. So the replicas elect one
//! of them through a Lease ([`decider`]); the others forward the reviews that would add an edge
//! to it over the webhook port and answer with its answer. Everything that cannot close a cycle
//! (requests that add no edge, dry-runs, deletes) is still decided by the replica the API
//! server called. Why this and not a shared record of admissions written before each answer:
//! docs/design.md ("Decisions that hold across replicas").

pub mod decider;

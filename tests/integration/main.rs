//! The integration tests, one binary: every module below links fluxgate, kube, axum and the
//! test helpers once, where one binary per file linked them twenty times over on two cores.
//! `tests/memory.rs` stays a binary of its own: it measures the process's resident memory, which
//! other tests' allocations would move.

#[path = "../common/mod.rs"]
mod common;

mod bootstrap;
mod check;
mod client_ca;
mod cluster;
mod deploy;
mod diff;
mod e2e_tls;
mod events;
mod faults;
mod forged;
mod graph;
mod kustomize_oracle;
mod match_conditions;
mod mutate;
mod page;
mod property;
mod replicas;
mod serving;
mod slim;
mod status;
mod validate;
mod webhook_sync;

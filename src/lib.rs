//! fluxgate guards the `dependsOn` graphs of Flux CD Kustomizations and HelmReleases.
//!
//! The crate is laid out by responsibility:
//! - [`object`]: what a Flux object is to fluxgate (the fields the rules need, durations, the
//!   slim decoding of the load paths, tables of objects by key);
//! - [`graph`]: the per-kind dependency graph, cycle search, chains and waves;
//! - [`rules`]: the rules and their findings, for one request or a whole graph;
//! - [`policy`]: the policy file, its defaults checked against the CRDs, and the policy in force
//!   reloaded when it changes;
//! - [`webhooks`]: the webhook configurations derived from the policy, kept in step with it;
//! - [`admission`]: AdmissionReview in, response out (validation and mutation);
//! - [`cache`]: the objects the webhook knows, with read-your-writes;
//! - [`manifests`]: Flux objects read from YAML files and folders;
//! - [`server`]: the HTTPS webhook and the admin port;
//! - [`status`]: live dependency status, states and root causes of stuck objects;
//! - [`audit`]: the periodic whole-graph scan behind `/report`;
//! - [`certs`]: CA and serving certificates;
//! - [`diff`]: what a change to a checkout does to its graphs, waves and rollout time;
//! - [`cli`]: the command line.

pub mod admission;
pub mod audit;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod diff;
pub mod graph;
pub mod manifests;
pub mod object;
pub mod policy;
pub mod rules;
pub mod server;
pub mod status;
pub mod webhooks;

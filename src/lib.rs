//! fluxgate guards the `dependsOn` graphs of Flux CD Kustomizations and HelmReleases.
//!
//! The crate is laid out by responsibility:
//! - [`object`]: what a Flux object is to fluxgate (the fields the rules need);
//! - [`graph`]: the per-kind dependency graph, cycle search, chains and waves;
//! - [`keyed`]: tables of objects by the key they carry;
//! - [`rules`]: the rules and their findings, for one request or a whole graph;
//! - [`policy`]: the policy file; [`live_policy`]: the policy in force, reloaded when it changes;
//! - [`defaults`]: the defaults the policy sets, checked against the CRDs and completed into objects;
//! - [`admission`]: AdmissionReview in, response out (validation and mutation);
//! - [`cache`]: the objects the webhook knows, with read-your-writes;
//! - [`coordination`]: the shared record that makes decisions hold across replicas;
//! - [`manifests`]: Flux objects read from YAML files and folders;
//! - [`slim`]: objects decoded into only the fields fluxgate reads (the load paths);
//! - [`server`]: the HTTPS webhook and the admin port;
//! - [`status`]: live dependency status, states and root causes of stuck objects;
//! - [`audit`]: the periodic whole-graph scan behind `/report`;
//! - [`certs`]: CA and serving certificates;
//! - [`cli`]: the command line.

pub mod admission;
pub mod audit;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod coordination;
pub mod defaults;
pub mod graph;
pub mod keyed;
pub mod live_policy;
pub mod manifests;
pub mod object;
pub mod policy;
pub mod rules;
pub mod server;
pub mod slim;
pub mod status;

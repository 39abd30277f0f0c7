//! Gitea as a service of the lab: its HTTP API as a typed client (`/api/v1` and the container
//! registry's `/v2/`), the types of that API, the wiring `up` runs after apply ([`decide`]: the
//! pure decisions, [`wire`]: the effects, [`pod_exec`]: the seam its CLI runs through), and the
//! web login through Gitea's pages.
//!
//! Place in the data flow: [`wire`] drives the client after apply, once Gitea's Deployment is Ready;
//! `homelab credentials` never calls it. Architecture invariant: the base URL (plus an optional
//! pinned address) is the one seam, the lab CA is the only trust root, and secrets travel only in
//! `Authorization` headers, so nothing that is logged or shown can carry one.

mod client;
pub mod decide;
pub mod pod_exec;
mod registry;
pub mod types;
pub mod web_login;
pub mod wire;

pub use crate::edges::http::Endpoint;
pub use client::{Created, Credentials, GiteaClient, GiteaError};
pub use registry::{BearerChallenge, RegistryAccess, parse_bearer_challenge};

//! Gitea's HTTP API as a typed client (`/api/v1` and the container registry's `/v2/`).
//!
//! Place in the data flow: `wire::gitea` drives it after apply, once Gitea's Deployment is Ready;
//! `homelab credentials` never calls it. Architecture invariant: the base URL (plus an optional
//! pinned address) is the one seam, the lab CA is the only trust root, and secrets travel only in
//! `Authorization` headers, so nothing that is logged or shown can carry one.

mod client;
mod registry;
pub mod types;

pub use crate::http::Endpoint;
pub use client::{Created, Credentials, GiteaClient, GiteaError};
pub use registry::{BearerChallenge, RegistryAccess, parse_bearer_challenge};

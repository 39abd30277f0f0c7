//! homelab's Argo CD-compatible sync engine: `argoproj.io/v1alpha1 Application` objects in,
//! a cluster that matches git and Argo-style status out.
//!
//! Data flow (one reconcile of one Application):
//!
//! ```text
//! Application ─app::parse─▶ AppSpec + unsupported-field conditions
//! AppSpec ─source (git fetch)─▶ checkout ─manifests::read─▶ desired objects (file names kept)
//! desired ─normalize─▶ tracked desired ─diff::compare(live)─▶ per-object sync status
//! diff ─plan::build─▶ SyncPlan (waves, kind order, prunes) ─engine (apply engine)─▶ results
//! live ─health─▶ per-object and app health ─status::build─▶ Application .status
//! ```
//!
//! Architecture invariant: everything above the engine line is pure (values in, values out) and
//! tested without a cluster; only [`source`], [`cache`], [`engine`], [`run`], [`lease`],
//! [`server`] and [`page::gather`] do I/O.
//! The layout follows argoproj/gitops-engine: `sync` (plan + tasks), `diff`, `health`, `cache`.

pub mod app;
pub mod backoff;
pub mod cache;
pub mod diff;
pub mod engine;
pub mod glob;
pub mod health;
pub mod image;
pub mod lease;
pub mod manifests;
pub mod page;
pub mod plan;
pub mod run;
pub mod server;
pub mod source;
pub mod status;
pub mod tracking;
pub mod webhook;

#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::{Path, PathBuf};

    /// The repository's `contracts/`: upstream facts derived by `scripts/derive-contracts`.
    pub fn contracts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
    }
}

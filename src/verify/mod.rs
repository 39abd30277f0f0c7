//! `homelab verify`: drive the lab's whole loop once and time each hop — commit a visible change
//! to the app repository through Gitea's contents API → the CI starts a build for that commit →
//! the build succeeds → the pipeline bumped the image tag in the GitOps repository → the
//! Application is Synced and Healthy at that revision → the app's HTTPS URL, trusted through the
//! lab CA only, serves the change.
//!
//! Place in the data flow: `Cluster ─verify─▶ VerifyReport`, the last step of `up` (unless
//! `--no-verify`) and the `verify` command. Architecture invariant: every wait is bounded and
//! reported (a watch for the Application; for HTTP servers, which have no watch, a retry whose
//! delay grows), each hop fails with its own error naming the object and why, and TLS is never
//! relaxed — the page is fetched with the lab CA as the only trust root. The page edits and
//! manifest reads ([`bump_version`], [`image_tag`]) are pure functions.
//!
//! The pure core — `hops` (the hops in order, the target, the bounds, an Application's
//! status), `page` (the page's version marker, a manifest's image tag), `report` (what was
//! seen, as text) and `error` (why a hop failed, with hints) — does no I/O. The effects are
//! `walk` (the walk over Gitea, the CI, the Application and the site), `watch` (the
//! Application watch over kube-rs) and `lab` (the target of a lab `up` built, from its state).

// A verify error is built at most once per run, with everything the user needs to see; its
// size does not matter.
#![allow(clippy::result_large_err)]

mod error;
mod hops;
mod lab;
mod page;
pub mod publish;
mod report;
mod walk;
mod watch;

pub use error::VerifyError;
pub use hops::{AppRef, AppStatus, HOPS, VerifyOptions, VerifyTarget};
pub use lab::{LabVerify, run_for_lab, target_for_lab};
pub use page::{bump_version, image_tag, next_version, version_marker};
pub use report::{Hop, VerifyFailure, VerifyReport};
pub use walk::verify;
pub use watch::{Applications, KubeApplications};

//! Wiring: after apply, make the running components know each other (Gitea's admin, token,
//! organisation, repositories and webhook), and describe how to reach the lab.
//!
//! Place in the data flow: `Cluster ─wire─▶ WireReport`, between apply and verify. The Gitea
//! wiring itself lives with the Gitea service (`gitea::decide`, `gitea::wire`, `gitea::pod_exec`)
//! and the CI's with the CI (`ci`); [`gitea`] and [`pod_exec`] keep their old paths here.
//! Architecture invariant: every wiring step looks before it writes, so `up` on a wired lab
//! performs only reads; effects go through seams (the Gitea client's base URL,
//! [`pod_exec::PodExec`], the git program) that tests replace.

pub mod access;
pub mod gitea;
pub use crate::services::gitea::pod_exec;

//! homelab: one command to a complete, wired GitOps lab.
//!
//! The tree follows the data flow (see `../shared/DESIGN.md` and the README's architecture
//! section), each folder importing only from those below it:
//!
//! ```text
//! argv → cli → commands ─┬─ up: the step graph `plan` lists and `up` runs
//!                        │    ├─ provider: Multipass VMs or an existing cluster (plain operations)
//!                        │    ├─ cluster: apply and deploy the rendered stack
//!                        │    ├─ services: wire Gitea and the CI (Drone)
//!                        │    └─ verify: prove the loop hop by hop
//!                        ├─ sync: the in-cluster GitOps engine (`homelab sync`)
//!                        └─ host: trust, doctor, export logs
//! model: settings → stack → plan → render (pure, no I/O)      edges: process, git, http, state, …
//! ```

pub mod cli;
pub mod commands;

pub mod up;

pub mod provider;

pub mod cluster;
pub mod services;
pub mod verify;

pub mod sync;

pub mod host;

pub mod model;

pub mod edges;

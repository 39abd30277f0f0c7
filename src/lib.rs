//! homelab: one command to a complete, wired GitOps lab.
//!
//! Data flow (see `../shared/DESIGN.md`): argv → [`cli`] → [`settings`] → [`stack`] →
//! [`plan`] → provider → [`render`] → apply → wire → verify. The pure modules (settings, stack,
//! plan, render, templates, kinds, tls material) do no I/O beyond what they are handed; the
//! edges ([`process`], [`state`], [`upstream`], [`doctor`]'s probes) each have one seam.

pub mod apply;
pub mod assets;
pub mod ci;
pub mod cli;
pub mod commands;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod export;
pub mod git;
pub mod gitea;
pub mod http;
pub mod kinds;
pub mod kube;
pub mod kubeconfig;
pub mod output;
pub mod plan;
pub mod process;
pub mod provider;
pub mod redact;
pub mod reissue;
pub mod render;
pub mod settings;
pub mod stack;
pub mod state;
pub mod sync;
pub mod templates;
pub mod tls;
pub mod tools;
pub mod trust;
pub mod up;
pub mod upstream;
pub mod verify;
pub mod wire;
pub mod yaml;

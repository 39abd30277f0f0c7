//! The integration tests, as one binary: the fakes and helpers in `tests/support` compile once, and
//! `cargo test --test it <module>::` runs one area (e.g. `kube_apply::`, `sync_engine::`).
#[path = "../support/mod.rs"]
mod support;

mod argocd_up;
mod contracts;
mod drone_ci;
mod existing_provider;
mod export_logs;
mod gitea_wiring;
mod image_cache;
mod kube_apply;
mod lab_page;
mod layers;
mod node_names;
mod offline_up;
mod prepare;
mod provision;
mod render;
mod reset;
mod settings_and_inputs;
mod snaps;
mod sync_engine;
mod terminal;
mod tls_ca;
mod trust_host;
mod up_full;

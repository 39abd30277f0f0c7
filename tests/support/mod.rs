//! What the tests share: the test context and log capture (`common`), the fakes of the systems
//! homelab drives (each rule in them names the upstream file it comes from) on one HTTP kit
//! (`http_kit`: request log, paging, cookies, TLS, the `git http-backend` runner), a git
//! smart-HTTP server over real `git http-backend`, and the whole-lab simulator built from them.
pub mod common;
pub mod fake_drone;
pub mod fake_gitea;
pub mod fake_kube;
pub mod fake_snapstore;
pub mod git_http;
pub mod http_kit;
pub mod lab_sim;

//! What the tests share: the test context and log capture (`common`), the fakes of the systems
//! homelab drives (each rule in them names the upstream file it comes from), a git smart-HTTP
//! server over real `git http-backend`, and the whole-lab simulator built from them.
pub mod common;
pub mod fake_drone;
pub mod fake_gitea;
pub mod fake_kube;
pub mod git_http;
pub mod lab_sim;

//! The HTTP kit the fake servers share: what the fake Gitea, the fake Drone, the fake API server
//! and the git smart-HTTP test server each need from HTTP, written once.
//!
//! - [`log`]: the request log and the list of contract violations a fake keeps for assertions;
//! - [`query`]: query-string and form pairs, Gitea's `page`/`limit` pages and the API server's
//!   `limit`/`continue` pages;
//! - [`reply`]: a JSON answer as the Go servers write one (no body with 204);
//! - [`auth`]: Basic credentials of an `Authorization` header;
//! - [`cookies`]: reading a request's cookies and setting them on an answer;
//! - [`tls`]: server certificates from the lab CA (through `homelab::model::tls::issue_leaf`), TLS
//!   acceptors, a TLS listener for axum and an accept loop for hyper servers;
//! - [`git_backend`]: bare repositories and git's smart HTTP answered by the real
//!   `git http-backend` (CGI).
//!
//! The kit names no fake: the fakes and the benchmarks (which mount it by path beside the fake
//! API server and the git server) reach it as `super::http_kit`.

pub mod auth;
pub mod cookies;
pub mod git_backend;
pub mod log;
pub mod query;
pub mod reply;
pub mod tls;

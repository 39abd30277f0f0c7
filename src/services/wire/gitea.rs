//! The Gitea wiring under its old path: the decisions live in [`crate::services::gitea::decide`], the
//! effects in [`crate::services::gitea::wire`]; this module re-exports both for the callers that name
//! `wire::gitea` (`up`, `verify`, `credentials`, the tests).

pub use crate::services::gitea::decide::*;
pub use crate::services::gitea::wire::*;

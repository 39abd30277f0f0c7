//! The Gitea wiring under its old path: the decisions live in [`crate::gitea::decide`], the
//! effects in [`crate::gitea::wire`]; this module re-exports both for the callers that name
//! `wire::gitea` (`up`, `verify`, `credentials`, the tests).

pub use crate::gitea::decide::*;
pub use crate::gitea::wire::*;

//! The `existing` provider: a cluster the user already has, taken from their kubeconfig.
//! Filled in later in this issue.

use crate::up::Pipeline;

/// Add the existing provider's steps.
pub fn add_steps(_p: &mut Pipeline) {}

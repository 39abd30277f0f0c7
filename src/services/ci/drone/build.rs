//! Whether `up` starts a build of the branch head: the pure decision from the builds Drone lists
//! (step 7 of the wiring in the `ci::drone` module doc).
//!
//! Architecture invariant: pure; the wiring reads the builds and the head, then acts on the plan.

use super::{state_of, types};

/// Why a build is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The repository has no build at all.
    NeverBuilt,
    /// Builds exist, none of the head (a push Drone never saw).
    HeadNotBuilt,
    /// Every build of the head failed; the newest is this one.
    HeadFailed(i64),
}

/// What to do about building the head, from the builds Drone lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildPlan {
    /// This build of the head succeeded: nothing to do.
    Built(i64),
    /// This build of the head is queued or running (status word): leave it be.
    Underway(i64, String),
    /// Start a build.
    Start(Why),
}

/// Decide whether to build `head`, from Drone's recent builds (any order). Pure.
pub fn build_plan(builds: &[types::Build], head: &str) -> BuildPlan {
    if builds.is_empty() {
        return BuildPlan::Start(Why::NeverBuilt);
    }
    let mut of_head: Vec<&types::Build> = builds.iter().filter(|b| b.after == head).collect();
    of_head.sort_by_key(|b| std::cmp::Reverse(b.number));
    if let Some(b) = of_head
        .iter()
        .find(|b| state_of(&b.status) == crate::services::ci::BuildState::Succeeded)
    {
        return BuildPlan::Built(b.number);
    }
    if let Some(b) = of_head.iter().find(|b| !state_of(&b.status).is_done()) {
        let status = if b.status.is_empty() {
            "pending".to_string()
        } else {
            b.status.clone()
        };
        return BuildPlan::Underway(b.number, status);
    }
    match of_head.first() {
        Some(b) => BuildPlan::Start(Why::HeadFailed(b.number)),
        None => BuildPlan::Start(Why::HeadNotBuilt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(number: i64, after: &str, status: &str) -> types::Build {
        types::Build {
            number,
            after: after.into(),
            status: status.into(),
            ..types::Build::default()
        }
    }

    #[test]
    fn the_head_is_built_once_unless_every_build_of_it_failed() {
        assert_eq!(build_plan(&[], "h"), BuildPlan::Start(Why::NeverBuilt));
        assert_eq!(
            build_plan(&[b(1, "old", "success")], "h"),
            BuildPlan::Start(Why::HeadNotBuilt)
        );
        assert_eq!(
            build_plan(&[b(2, "h", "error"), b(1, "h", "failure")], "h"),
            BuildPlan::Start(Why::HeadFailed(2))
        );
        assert_eq!(
            build_plan(&[b(3, "h", "failure"), b(2, "h", "success")], "h"),
            BuildPlan::Built(2)
        );
        assert_eq!(
            build_plan(&[b(2, "h", "running"), b(1, "h", "error")], "h"),
            BuildPlan::Underway(2, "running".into())
        );
        assert_eq!(
            build_plan(&[b(1, "h", "pending")], "h"),
            BuildPlan::Underway(1, "pending".into())
        );
        // A success of an older commit does not count for the head.
        assert_eq!(
            build_plan(&[b(2, "h", "killed"), b(1, "old", "success")], "h"),
            BuildPlan::Start(Why::HeadFailed(2))
        );
    }
}

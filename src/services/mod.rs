//! The lab's services once deployed: Gitea (client, types, pure decisions, wiring, web login),
//! the CI seam with Drone, and the wiring view `up` composes them through.

pub mod ci;
pub mod gitea;
pub mod wire;

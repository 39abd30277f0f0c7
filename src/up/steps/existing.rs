//! The existing provider's one step, `ready`: the cluster from the user's kubeconfig can take
//! the lab.
//!
//! Architecture invariant: a thin call of [`crate::provider::existing::ready`]; nothing of the
//! cluster is changed.

use super::ClusterReady;
use crate::provider::existing;
use crate::up::graph::{Made, StepCx};

/// `ready` for an existing cluster: reachable, its version, a default StorageClass.
pub fn ready<'a>(cx: &'a StepCx<'a>, (): ()) -> Made<'a, ClusterReady> {
    Box::pin(async move {
        let (report, cluster) = existing::ready(cx, cx.stack()).await?;
        Ok((
            report,
            ClusterReady {
                cluster,
                engine_image: None,
            },
        ))
    })
}

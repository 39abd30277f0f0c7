//! `images`: the cached images side-loaded into every node before `deploy`, so the lab's
//! workloads find them there (`imagePullPolicy: IfNotPresent`) instead of pulling them.
//!
//! Architecture invariant: a thin call of [`crate::provider::multipass::cached_images`] with
//! the images the rendered lab runs; on a cluster homelab did not build it changes nothing and
//! says so.

use std::sync::Arc;

use super::lab::Lab;
use crate::model::render::hosts;
use crate::provider::multipass::Vms;
use crate::provider::multipass::cached_images::{self, SideLoaded};
use crate::provider::op::StepReport;
use crate::up::graph::{Made, StepCx};

/// The images the lab pulls from registries outside it: every container image of the rendered
/// manifests, every image the stack names (the pipeline's steps, the app's base image) and the
/// images microk8s starts by itself ([`crate::cluster::upstream::microk8s_images`]), less
/// the engine image homelab builds and what the lab's own registry serves.
pub fn lab_images(cx: &StepCx<'_>, lab: &Lab) -> Vec<String> {
    let mut wanted: Vec<String> = cx.stack().images();
    // What microk8s starts by itself (pause, Calico, the enabled addons' images).
    let channel = cx.settings().channel(cx.stack());
    wanted.extend(
        crate::cluster::upstream::microk8s_images(cx.stack(), &channel).unwrap_or_default(),
    );
    wanted.extend(lab.manifests.container_images());
    let registry = hosts(cx.stack(), &lab.domain)
        .get("gitea")
        .cloned()
        .unwrap_or_default();
    cached_images::pulled_from_outside(&wanted, &registry)
}

/// `images` on the multipass provider: side-load what each VM lacks from the cache.
pub fn side_load<'a>(
    cx: &'a StepCx<'a>,
    (vms, lab): (Arc<Arc<Vms>>, Arc<Lab>),
) -> Made<'a, SideLoaded> {
    Box::pin(async move {
        let wanted = lab_images(cx, &lab);
        cached_images::side_load(cx, &vms, &wanted).await
    })
}

/// `images` on an existing cluster: its nodes are not homelab's to copy files into.
pub fn not_available<'a>(cx: &'a StepCx<'a>, (lab,): (Arc<Lab>,)) -> Made<'a, SideLoaded> {
    Box::pin(async move {
        let wanted = lab_images(cx, &lab);
        Ok((
            StepReport::skipped(format!(
                "not available on an existing cluster (homelab does not copy files into its \
                 nodes); the cluster pulls the lab's {} images",
                wanted.len()
            )),
            SideLoaded {
                not_cached: wanted,
                ..SideLoaded::default()
            },
        ))
    })
}

//! The multipass provider's steps: `vms`, `provisioned`, `join`, `kubeconfig`, `engine-image`,
//! `ready`, `node-names` and `snapshot`, each a thin call of a [`crate::provider::multipass`] operation with
//! the outputs of the steps before it.
//!
//! Architecture invariant: no logic here beyond handing values along; what to do and how to
//! look lives with the provider.

use std::sync::Arc;

use super::ClusterReady;
use crate::provider::Cluster;
use crate::provider::multipass::sideload::{self, EngineImage};
use crate::provider::multipass::snapshot::{self, LabHealth, SnapshotOptions};
use crate::provider::multipass::{CloudInit, Vms, hosts, ops};
use crate::up::graph::{Made, StepCx};
use crate::up::steps::lab::Lab;

/// `vms`: make every lab VM exist and run, without ever rebuilding one silently.
pub fn vms<'a>(cx: &'a StepCx<'a>, (cloud_init,): (Arc<CloudInit>,)) -> Made<'a, Vms> {
    Box::pin(async move { ops::vms(cx, cx.vm_image(), cx.options().recreate, &cloud_init).await })
}

/// `provisioned`: wait (bounded) until cloud-init finished on every VM; hands the VMs on.
pub fn provisioned<'a>(cx: &'a StepCx<'a>, (vms,): (Arc<Vms>,)) -> Made<'a, Arc<Vms>> {
    Box::pin(async move {
        let channel = cx.settings().channel(cx.stack());
        Ok((ops::provisioned(cx, &vms, &channel).await?, vms))
    })
}

/// `join`: nodes 2..N join the first, one at a time; hands the VMs on.
pub fn join<'a>(cx: &'a StepCx<'a>, (vms,): (Arc<Arc<Vms>>,)) -> Made<'a, Arc<Vms>> {
    Box::pin(async move { Ok((ops::join(cx, &vms).await?, Arc::clone(&*vms))) })
}

/// `kubeconfig`: the lab's kube context, in the lab state and the user's kubeconfig.
pub fn kubeconfig<'a>(cx: &'a StepCx<'a>, (vms,): (Arc<Arc<Vms>>,)) -> Made<'a, Cluster> {
    Box::pin(async move { ops::kubeconfig(cx, &vms).await })
}

/// `engine-image`: side-load the sync engine's image where the VMs lack it.
pub fn engine_image<'a>(
    cx: &'a StepCx<'a>,
    (vms,): (Arc<Arc<Vms>>,),
) -> Made<'a, Option<EngineImage>> {
    Box::pin(async move { sideload::engine_image(cx, cx.stack(), &vms).await })
}

/// `ready`: the API answers and every VM is a Ready node.
pub fn ready<'a>(
    cx: &'a StepCx<'a>,
    (vms, cluster, engine_image): (Arc<Arc<Vms>>, Arc<Cluster>, Arc<Option<EngineImage>>),
) -> Made<'a, ClusterReady> {
    Box::pin(async move {
        // microk8s's own images first: without its sandbox and CNI images a node that cannot
        // reach their registries never becomes Ready.
        let channel = cx.settings().channel(cx.stack());
        let own =
            crate::cluster::upstream::microk8s_images(cx.stack(), &channel).unwrap_or_default();
        let side_loaded =
            crate::provider::multipass::cached_images::side_load_held(cx, &vms, &own).await?;
        if let Some(s) = side_loaded
            && s.outcome == crate::edges::output::Outcome::Done
        {
            cx.note(&format!("microk8s's own images: {}", s.detail));
        }
        let report = ops::ready(cx, &vms).await?;
        Ok((
            report,
            ClusterReady {
                cluster: (*cluster).clone(),
                engine_image: (*engine_image).clone(),
            },
        ))
    })
}

/// `snapshot`: the lab's VMs snapshotted once for `homelab reset`, the lab ready again after.
pub fn snapshot<'a>(
    cx: &'a StepCx<'a>,
    (vms, lab, _verified): (Arc<Vms>, Arc<Arc<Lab>>, Arc<()>),
) -> Made<'a, ()> {
    Box::pin(async move {
        let health = LabHealth {
            client: lab.cluster.client().await?,
            manifests: &lab.manifests,
            stack: cx.stack(),
        };
        let options = SnapshotOptions {
            skip: cx.options().no_snapshot,
            lab_changed: cx.changed_this_run(),
        };
        Ok((snapshot::ensure(cx, &vms, options, Some(health)).await?, ()))
    })
}

/// `node-names`: the lab's hostnames in every VM's `/etc/hosts`.
pub fn node_names<'a>(cx: &'a StepCx<'a>, (vms,): (Arc<Arc<Vms>>,)) -> Made<'a, ()> {
    Box::pin(async move { Ok((hosts::node_names(cx, cx.stack(), &vms).await?, ())) })
}

//! The `up` pipeline: one graph of named steps, each started as soon as the steps it needs are
//! done, so work that does not need the VM (secrets, CA, rendering, downloads) runs while it
//! boots. `homelab plan` lists the same graph ([`Pipeline::planned`]), so what is planned and
//! what runs cannot drift apart.
//!
//! Architecture invariant: a step never trusts a marker. Every run, each step looks at reality
//! (the VM, the cluster, the files) and returns [`StepReport::skipped`] when what it makes is
//! already true, so re-running `up` on a healthy lab writes nothing. The runner records each
//! finished step in `up.json` (atomically, only when that record changes) for `status` and for
//! steps that want to know what an earlier run did; a kill at any point leaves files that are
//! either old or new, never half-written, and the next run simply looks again.
//!
//! Layers only look down: the steps ([`steps`]) call library services and the providers' plain
//! operations ([`crate::provider`]), which never import `up`.
//!
//! # Adding a step
//!
//! ```text
//! // in `steps/`: a function from what it needs to its report and its output
//! pub fn seed<'a>(cx: &'a StepCx<'a>, (lab,): (Arc<Lab>,)) -> Made<'a, Seeded> {
//!     Box::pin(async move {
//!         cx.update("seeding 3 repositories");
//!         Ok((StepReport::done("3 repositories seeded"), Seeded { .. }))
//!     })
//! }
//! // in `graph_for()`: a name constant, what it does, the outputs it needs (the handles the
//! // steps that make them returned: a missing one does not compile)
//! let seeded = p.step(steps::SEED, "seed the lab's repositories", (&rendered,), lab::seed);
//! ```

pub mod graph;
pub mod steps;

pub use crate::provider::multipass::{CLOUD_INIT_FILE, CloudInit};
pub use crate::provider::op::{StepReport, Waits};
pub use graph::{
    Made, Needs, Out, Pipeline, StepCx, StepOutcome, StepRecord, StepResult, UP_STATE_FILE,
    UpRecord, UpReport, UpStop,
};
pub use steps::CLUSTER_READY;
pub use steps::lab::{Deployed, Lab, UpstreamTexts};

use crate::cluster::deploy::DeployReport;
use crate::edges::output::Progress;
use crate::edges::state::LabState;
use crate::model::render::Domain;
use crate::model::settings::{ProviderKind, Settings};
use crate::model::stack::Stack;
use crate::provider::Cluster;
use steps::ClusterReady;

/// Options of this `up` run that are not settings.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// `--recreate`: delete and launch the lab's VMs again.
    pub recreate: bool,
    /// `--no-verify`: skip the final end-to-end check of the loop.
    pub no_verify: bool,
    /// `--no-snapshot`: don't snapshot the VMs for `homelab reset` at the end.
    pub no_snapshot: bool,
}

/// What every step can see.
pub struct UpEnv<'a> {
    /// Resolved settings.
    pub settings: &'a Settings,
    /// The stack the lab is built from.
    pub stack: &'a Stack,
    /// The Ubuntu image new VMs get (the plan's choice).
    pub vm_image: &'a str,
    /// The lab's state directory.
    pub state: &'a LabState,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Where warnings go (shown even with `--quiet`).
    pub warn: &'a (dyn Fn(&str) + Sync),
    /// Where notes for people go (what the run will and won't do; hidden by `--quiet`).
    pub note: &'a (dyn Fn(&str) + Sync),
    /// Waits.
    pub waits: Waits,
    /// Options.
    pub options: UpOptions,
}

/// The steps of `up` for some settings, with handles on the outputs the command reports.
pub struct UpGraph {
    /// The steps in order.
    pub pipeline: Pipeline,
    kubeconfig: Option<Out<Cluster>>,
    ready: Out<ClusterReady>,
    render: Out<Lab>,
    deploy: Out<Deployed>,
}

impl UpGraph {
    /// The cluster, once a step of the run `ran` made it.
    pub fn cluster(&self, ran: &UpReport) -> Option<Cluster> {
        match self.ready.value(ran) {
            Some(ready) => Some(ready.cluster.clone()),
            None => self
                .kubeconfig
                .as_ref()
                .and_then(|k| k.value(ran))
                .map(|c| (*c).clone()),
        }
    }

    /// The domain the lab was rendered for in the run `ran`.
    pub fn domain(&self, ran: &UpReport) -> Option<Domain> {
        self.render.value(ran).map(|lab| lab.domain.clone())
    }

    /// What deploying did in the run `ran`.
    pub fn deployed(&self, ran: &UpReport) -> Option<DeployReport> {
        self.deploy.value(ran).map(|d| d.report.clone())
    }
}

/// The steps of `homelab up` for these settings, in order (what `plan` lists and `up` runs).
pub fn pipeline(settings: &Settings) -> Pipeline {
    graph_for(settings).pipeline
}

/// The step graph of `homelab up` for these settings: each step's name, what it does, and the
/// outputs of earlier steps it needs.
pub fn graph_for(settings: &Settings) -> UpGraph {
    use steps::*;
    let mut p = Pipeline::new();
    let secrets = p.step(
        SECRETS,
        "generate or reuse the lab's secrets",
        (),
        material::secrets,
    );
    let ca = p.step(CA, "create or reuse the lab CA", (), material::ca);
    let (ready, kubeconfig, joined, vms) = match settings.provider {
        ProviderKind::Multipass => {
            let cloud_init = p.step(
                CLOUD_INIT,
                "render the VMs' cloud-init",
                (&secrets, &ca),
                material::cloud_init,
            );
            let vms = p.step(
                VMS,
                "launch, start or reuse the lab's VMs",
                (&cloud_init,),
                multipass::vms,
            );
            let provisioned = p.step(
                PROVISIONED,
                "wait for cloud-init to install microk8s",
                (&vms,),
                multipass::provisioned,
            );
            let joined = p.step(
                JOIN,
                "join the VMs into one cluster",
                (&provisioned,),
                multipass::join,
            );
            let kubeconfig = p.step(
                KUBECONFIG,
                "write the lab's kube context",
                (&provisioned,),
                multipass::kubeconfig,
            );
            let engine_image = p.step(
                ENGINE_IMAGE,
                "side-load the sync engine's image (built from this binary) into the VMs",
                (&joined,),
                multipass::engine_image,
            );
            let ready = p.step(
                CLUSTER_READY,
                "wait until the API answers and every node is Ready",
                (&joined, &kubeconfig, &engine_image),
                multipass::ready,
            );
            // After `ready`, so `--until ready` (provisioning alone) leaves /etc/hosts alone.
            p.step(
                NODE_NAMES,
                "point the lab's hostnames at the first node in every VM's /etc/hosts",
                (&provisioned,),
                multipass::node_names,
            );
            (ready, Some(kubeconfig), Some(joined), Some(vms))
        }
        ProviderKind::Existing => {
            let ready = p.step(
                CLUSTER_READY,
                "check the cluster from your kubeconfig",
                (),
                existing::ready,
            );
            (ready, None, None, None)
        }
    };
    let upstream = p.step(
        PREPARE,
        "fetch the stack's pinned upstream manifests",
        (),
        lab::prepare,
    );
    let render = p.step(
        RENDER,
        "render the stack for the lab's domain",
        (&secrets, &ca, &upstream, &ready),
        lab::render,
    );
    let describe_images =
        "side-load the cached images each node lacks (`homelab prepare` caches them)";
    let images = match &joined {
        Some(joined) => p.step(
            IMAGES,
            describe_images,
            (joined, &render),
            images::side_load,
        ),
        None => p.step(IMAGES, describe_images, (&render,), images::not_available),
    };
    let deploy = p.step(
        DEPLOY,
        "apply the stack and wait until every component is ready",
        (&render, &images),
        lab::deploy,
    );
    let gitea = p.step(
        WIRE_GITEA,
        "create Gitea's admin, token, organisation, repositories and webhook",
        (&deploy,),
        wire::wire_gitea,
    );
    let ci = p.step(
        WIRE_CI,
        "log Drone in through Gitea, activate and trust `lab/nyan-cat`, set its secrets, build its head",
        (&gitea,),
        wire::wire_ci,
    );
    let verified = p.step(
        VERIFY,
        "prove the loop: commit, build, bump, sync, serve over HTTPS",
        (&ci,),
        wire::verify,
    );
    // Last: the lab as proven, for `homelab reset` (issue 14). Multipass VMs only.
    if let Some(vms) = vms {
        p.step(
            SNAPSHOT,
            "snapshot every VM for `homelab reset` (once: they stop and start again)",
            (&vms, &ci, &verified),
            multipass::snapshot,
        );
    }
    UpGraph {
        pipeline: p,
        kubeconfig,
        ready,
        render,
        deploy,
    }
}

#[cfg(test)]
mod tests;

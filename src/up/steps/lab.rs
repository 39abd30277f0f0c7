//! The lab half of `up`: once the cluster answers, fetch the pinned upstream manifests, render
//! the stack for the lab's real domain and deploy it (`prepare`, `render`, `deploy`).
//!
//! Architecture invariant: each step only composes library services (`upstream::prepare`,
//! `render::render`, `deploy::deploy`) and reports whether anything was written, so a second
//! `up` on a healthy lab reports every step as skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::ClusterReady;
use crate::cluster::deploy::{self, DeployOptions, DeployReport};
use crate::cluster::reissue;
use crate::cluster::upstream;
use crate::edges::error::Error;
use crate::edges::state::{self, Secrets};
use crate::model::render::{self, Domain, Manifests, RenderInput};
use crate::model::templates::Templates;
use crate::model::tls::LabCa;
use crate::provider::Cluster;
use crate::provider::multipass::cached_images::SideLoaded;
use crate::provider::multipass::sideload::EngineImage;
use crate::provider::op::StepReport;
use crate::up::graph::{Made, StepCx};

/// Upstream manifest texts by release URL, checked against the lab's lock.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTexts(pub BTreeMap<String, String>);

/// The lab as `render` made it for its cluster: what every later step works with.
pub struct Lab {
    /// The cluster it runs on.
    pub cluster: Cluster,
    /// The domain it was rendered for.
    pub domain: Domain,
    /// Its manifests.
    pub manifests: Manifests,
    /// Its secrets.
    pub secrets: Arc<Secrets>,
    /// Its CA.
    pub ca: Arc<LabCa>,
}

/// The lab once `deploy` applied it.
pub struct Deployed {
    /// The lab.
    pub lab: Arc<Lab>,
    /// What deploying did (component table).
    pub report: DeployReport,
}

/// `prepare`: download the stack's pinned upstream manifests once (sha256 into the lab's lock).
/// Needs no cluster, so it runs while the VM boots.
pub fn prepare<'a>(cx: &'a StepCx<'a>, (): ()) -> Made<'a, UpstreamTexts> {
    Box::pin(async move {
        let stack = cx.stack();
        let mut lock = upstream::read_lock(cx.state())?;
        let before = lock.clone();
        let prepared = upstream::prepare(
            stack,
            &mut lock,
            &state::cache_root()?,
            cx.settings().upstream_mirror.as_deref(),
        )
        .await?;
        if lock != before {
            cx.state().write_json(upstream::LOCK_FILE, &lock)?;
        }
        let downloaded = prepared.iter().filter(|p| !p.cached).count();
        let texts = prepared
            .iter()
            .map(|p| (p.url.clone(), p.text.clone()))
            .collect();
        let report = if downloaded == 0 {
            StepReport::skipped(format!("{} upstream manifests cached", prepared.len()))
        } else {
            StepReport::done(format!(
                "{downloaded} upstream manifests downloaded, sha256 recorded in the lab's lock"
            ))
        };
        Ok((report, UpstreamTexts(texts)))
    })
}

/// `render`: the stack's manifests for the lab's real domain (known once the node has an IP).
/// Pure apart from reading what earlier steps made; writes nothing.
pub fn render<'a>(
    cx: &'a StepCx<'a>,
    (secrets, ca, upstream, ready): (
        Arc<Secrets>,
        Arc<LabCa>,
        Arc<UpstreamTexts>,
        Arc<ClusterReady>,
    ),
) -> Made<'a, Lab> {
    Box::pin(async move {
        let settings = cx.settings();
        let mut stack = cx.stack().clone();
        // A side-loaded engine image (multipass labs on a matching Linux host) replaces
        // the stack's pinned one.
        if let Some(EngineImage(reference)) = &ready.engine_image
            && let Some(engine) = stack
                .components
                .iter_mut()
                .find(|c| c.name == "gitops-engine")
        {
            engine.images.insert("engine".into(), reference.clone());
        }
        let cluster = &ready.cluster;
        let node_ip = cluster.node_ips.first().map(String::as_str);
        let domain = Domain::resolve(settings.domain.as_deref(), node_ip);
        if !domain.known {
            return Err(Error::msg(format!(
                "the domain of lab `{}` is not known: the cluster reported no node address",
                settings.lab
            ))
            .hint("pass `--domain` with a name that resolves to the cluster's ingress (e.g. `<ingress-ip>.sslip.io`)"));
        }
        let manifests = render::render(
            &Templates::embedded()?,
            &RenderInput::for_lab(
                settings,
                &stack,
                &domain,
                &secrets,
                &ca,
                node_ip,
                &upstream.0,
            ),
        )?;
        let objects = manifests.objects().count();
        let report = StepReport::skipped(format!("{objects} objects for `{}`", domain.name));
        Ok((
            report,
            Lab {
                cluster: cluster.clone(),
                domain,
                manifests,
                secrets,
                ca,
            },
        ))
    })
}

/// `deploy`: server-side apply of every component along `needs`, waiting for readiness by
/// watches; a healthy lab gets no writes. After `images`, so the nodes hold what the cache had.
pub fn deploy<'a>(
    cx: &'a StepCx<'a>,
    (lab, _images): (Arc<Lab>, Arc<SideLoaded>),
) -> Made<'a, Deployed> {
    Box::pin(async move {
        let stack = cx.stack();
        let client = lab.cluster.client().await?;
        let report = deploy::deploy(
            &client,
            &lab.manifests,
            stack,
            &DeployOptions::new(&cx.settings().lab),
            cx.progress(),
        )
        .await?;
        // After `homelab ca regenerate`: what the old CA signed is issued again.
        let limit = stack
            .component("lab-ca")
            .and_then(|c| c.timeout)
            .map_or(DeployOptions::new("").default_timeout, Duration::from_secs);
        let reissued = reissue::stale_certificates(
            &client,
            &lab.manifests,
            &lab.ca,
            cx.waits().poll,
            limit,
            cx.progress(),
        )
        .await?;
        let writes = report.writes() + reissued.len();
        let ready = report.components.len();
        let again = if reissued.is_empty() {
            String::new()
        } else {
            format!(
                "; {} certificates issued again from the new lab CA",
                reissued.len()
            )
        };
        let step = if writes == 0 {
            StepReport::skipped(format!("{ready} components ready, nothing changed"))
        } else {
            StepReport::done(format!(
                "{ready} components ready, {writes} objects written{again}"
            ))
        };
        Ok((step, Deployed { lab, report }))
    })
}

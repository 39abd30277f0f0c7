//! The steps after `deploy`: `wire-gitea` (admin, token, organisation, repositories, webhook),
//! `wire-ci` (Drone through Gitea) and `verify` (the loop, once).
//!
//! Architecture invariant: each step only composes a service (`wire::gitea::wire`, `ci::wire`,
//! `verify::run_for_lab`) with the [`Lab`] `render` made, and reports whether anything was
//! written; wiring looks before it writes, so a healthy lab gets only reads.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::lab::{Deployed, Lab};
use crate::edges::error::{Error, Result};
use crate::edges::git::{Git, Identity};
use crate::edges::http::{Endpoint, Patience};
use crate::model::render;
use crate::provider::Cluster;
use crate::provider::op::StepReport;
use crate::services::ci::cluster::KubeWorkloads;
use crate::services::ci::{self, CiKind, CiWiring, WireTimeouts};
use crate::services::wire::gitea::{
    self as wire_gitea, AdminLogin, DEFAULT_GITEA_POD_SELECTOR, DEFAULT_SYNC_WEBHOOK_URL,
    DEFAULT_TOKEN_NAME, GiteaCli, RepoSeed, WebhookSpec,
};
use crate::services::wire::pod_exec::KubePodExec;
use crate::up::graph::{Made, StepCx};
use crate::verify::{self, LabVerify, VerifyOptions};

/// The lab's public endpoint for `component` (`https://<host>`), trusting only the lab CA and
/// connecting to the first node directly (some routers drop DNS answers with private IPs).
fn endpoint(cx: &StepCx<'_>, lab: &Lab, component: &str) -> Result<Endpoint> {
    let stack = cx.stack();
    let host = render::hosts(stack, &lab.domain)
        .get(component)
        .cloned()
        .ok_or_else(|| {
            Error::msg(format!(
                "stack `{}` gives component `{component}` no hostname",
                stack.name
            ))
        })?;
    Ok(Endpoint {
        base_url: format!("https://{host}"),
        ca_pem: Some(lab.ca.cert_pem.clone()),
        resolve: first_node(&lab.cluster)
            .map(|ip| SocketAddr::new(ip, cx.settings().ingress_port())),
    })
}

fn first_node(cluster: &Cluster) -> Option<IpAddr> {
    cluster.node_ips.first().and_then(|ip| ip.parse().ok())
}
/// `wire-gitea`: admin, token, org, repositories with content, the GitOps webhook; hands the
/// lab on.
pub fn wire_gitea<'a>(cx: &'a StepCx<'a>, (deployed,): (Arc<Deployed>,)) -> Made<'a, Arc<Lab>> {
    Box::pin(async move {
        let lab = Arc::clone(&deployed.lab);
        let report = gitea(cx, &lab).await?;
        Ok((report, lab))
    })
}

async fn gitea(cx: &StepCx<'_>, lab: &Lab) -> Result<StepReport> {
    let settings = cx.settings();
    let stack = cx.stack();
    if stack.component("gitea").is_none() {
        return Ok(StepReport::skipped("the stack has no Gitea"));
    }
    let secrets = &lab.secrets;
    let endpoint = endpoint(cx, lab, "gitea")?;
    let host = endpoint.host().unwrap_or_default();
    let pod = KubePodExec {
        client: lab.cluster.client().await?,
        namespace: stack
            .component("gitea")
            .and_then(|c| c.namespace.clone())
            .unwrap_or_else(|| "gitea".into()),
        selector: DEFAULT_GITEA_POD_SELECTOR.into(),
        container: None,
    };
    let report = wire_gitea::wire(
        &wire_gitea::GiteaWiring {
            endpoint,
            admin: AdminLogin::new(
                &settings.gitea_admin_user,
                secrets.get("gitea_admin_password"),
                &host,
            ),
            cli: GiteaCli::default(),
            pod: &pod,
            state: cx.state(),
            org: render::GITEA_ORG.into(),
            repos: RepoSeed::from_manifests(&lab.manifests),
            webhook: WebhookSpec {
                repo: "gitops".into(),
                // The stack's GitOps engine says where its push webhook goes (homelab's
                // engine, or Argo CD's `/api/webhook`).
                url: stack
                    .components
                    .iter()
                    .find_map(|c| c.webhook.clone())
                    .unwrap_or_else(|| DEFAULT_SYNC_WEBHOOK_URL.into()),
                secret: secrets.get("webhook_secret"),
            },
            token_name: DEFAULT_TOKEN_NAME.into(),
            git: Git::find()?,
            author: Identity {
                name: "homelab".into(),
                email: format!("homelab@{host}"),
            },
            // Bounded by the lab's waits (`HOMELAB_TEST_WAITS` shortens them).
            patience: Patience {
                limit: cx.waits().ready.min(Patience::default().limit),
                first_pause: cx.waits().poll,
                max_pause: cx.waits().poll_max,
            },
            base_images: if stack.component("drone").is_some() {
                base_images(lab, &host)
            } else {
                Vec::new()
            },
            image_cache: crate::edges::state::cache_root()
                .ok()
                .map(|root| crate::cluster::image_cache::layout::images_dir(&root)),
        },
        cx.progress(),
    )
    .await?;
    for w in &report.warnings {
        cx.warn(w);
    }
    let writes = report.writes();
    Ok(if writes == 0 {
        StepReport::skipped(format!("Gitea {} already wired", report.gitea_version))
    } else {
        StepReport::done(format!("Gitea {}: {writes} changes", report.gitea_version))
    })
}

/// The images the lab repositories' Dockerfiles start `FROM`, named as kaniko's
/// `--registry-map=<registry>=<gitea>/<org>` looks them up in Gitea's registry.
fn base_images(lab: &Lab, gitea_host: &str) -> Vec<wire_gitea::BaseImage> {
    let mut out: Vec<wire_gitea::BaseImage> = Vec::new();
    for seed in RepoSeed::from_manifests(&lab.manifests) {
        for (path, text) in &seed.files {
            if path.rsplit('/').next() != Some("Dockerfile") {
                continue;
            }
            for base in crate::model::image_ref::dockerfile_bases(text) {
                if let Some(b) = wire_gitea::BaseImage::new(&base, gitea_host, render::GITEA_ORG)
                    && !out.contains(&b)
                    && !base.starts_with(&format!("{gitea_host}/"))
                {
                    out.push(b);
                }
            }
        }
    }
    out
}

/// `wire-ci`: the CI server (Drone): OAuth app in Gitea, one login done by the tool, the app
/// repository activated, trusted and given its pipeline secrets, and a build of its head
/// started unless one succeeded or is under way; hands the lab on.
pub fn wire_ci<'a>(cx: &'a StepCx<'a>, (lab,): (Arc<Arc<Lab>>,)) -> Made<'a, Arc<Lab>> {
    Box::pin(async move {
        let lab = Arc::clone(&*lab);
        let report = drone(cx, &lab).await?;
        Ok((report, lab))
    })
}

async fn drone(cx: &StepCx<'_>, lab: &Lab) -> Result<StepReport> {
    let settings = cx.settings();
    let stack = cx.stack();
    let Some(drone) = stack.component("drone") else {
        return Ok(StepReport::skipped("the stack has no CI server"));
    };
    let gitea = endpoint(cx, lab, "gitea")?;
    // Wiring Gitea stored homelab's token; read it back from the state.
    let secrets = cx.state().secrets()?;
    let report = ci::wire(
        &CiWiring {
            kind: CiKind::Drone,
            ci: endpoint(cx, lab, "drone")?,
            gitea,
            admin: ci::AdminLogin {
                user: settings.gitea_admin_user.clone(),
                password: settings
                    .gitea_admin_password
                    .clone()
                    .unwrap_or_else(|| secrets.get("gitea_admin_password")),
            },
            gitea_token: secrets.get("gitea_token"),
            org: render::GITEA_ORG.into(),
            app_repo: "nyan-cat".into(),
            gitops_repo: "gitops".into(),
            branch: "main".into(),
            namespace: drone.namespace.clone().unwrap_or_else(|| "drone".into()),
            state: cx.state(),
            timeouts: WireTimeouts::default(),
        },
        &KubeWorkloads::new(lab.cluster.client().await?),
        cx.progress(),
    )
    .await?;
    let writes = report.writes();
    Ok(if writes == 0 {
        StepReport::skipped("Drone already wired")
    } else {
        StepReport::done(format!("Drone: {writes} changes"))
    })
}

/// `verify`: walk the loop once (commit → build → bump → sync → HTTPS). Runs when this `up`
/// changed something or the loop was never proven; `--no-verify` skips it.
pub fn verify<'a>(cx: &'a StepCx<'a>, (lab,): (Arc<Arc<Lab>>,)) -> Made<'a, ()> {
    Box::pin(async move { Ok((prove(cx, &lab).await?, ())) })
}

async fn prove(cx: &StepCx<'_>, lab: &Lab) -> Result<StepReport> {
    if cx.options().no_verify {
        return Ok(StepReport::skipped("skipped (`--no-verify`)"));
    }
    // Verify commits to `lab/nyan-cat`: on a healthy lab that was proven before, a
    // re-run must not write anything, so it only runs again after a change.
    if cx.previous().is_some() && !cx.changed_this_run() {
        return Ok(StepReport::skipped(
            "proven by an earlier run and nothing changed (`homelab verify` runs it again)",
        ));
    }
    let stack = cx.stack();
    if stack.component("drone").is_none() {
        return Ok(StepReport::skipped("the stack has no CI server"));
    }
    let outcome = verify::run_for_lab(
        &LabVerify {
            stack,
            domain: &lab.domain,
            node_ip: first_node(&lab.cluster),
            ingress_port: cx.settings().ingress_port(),
            state: cx.state(),
            ca_pem: &lab.ca.cert_pem,
            ci: CiKind::Drone,
        },
        lab.cluster.client().await?,
        &VerifyOptions::default(),
        cx.progress(),
    )
    .await?;
    match outcome {
        Ok(report) => Ok(StepReport::done(format!("loop proven: {}", report.version))),
        Err(failure) => Err(failure.error.into()),
    }
}

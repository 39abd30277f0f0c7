//! The lab half of `up`: once the cluster answers, fetch the pinned upstream manifests, render
//! the stack for the lab's real domain, deploy it, and wire Gitea.
//!
//! Architecture invariant: each step only composes library services (`upstream::prepare`,
//! `render::render`, `deploy::deploy`, `wire::gitea::wire`) and reports whether anything was
//! written, so a second `up` on a healthy lab reports every step as skipped.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{CLUSTER_READY, Pipeline, Step, StepCx, StepReport};
use crate::ci::cluster::KubeWorkloads;
use crate::ci::{self, CiKind, CiWiring, WireTimeouts};
use crate::deploy::{self, DeployOptions, DeployReport};
use crate::error::{Error, Result};
use crate::git::{Git, Identity};
use crate::http::{Endpoint, Patience};
use crate::provider::Cluster;
use crate::provider::multipass::sideload::EngineImage;
use crate::reissue;
use crate::render::{self, Domain, Manifests, RenderInput};
use crate::stack::Stack;
use crate::state::{self, Secrets};
use crate::templates::Templates;
use crate::tls::LabCa;
use crate::upstream;
use crate::verify::{self, LabVerify, VerifyOptions};
use crate::wire::gitea::{
    self as wire_gitea, AdminLogin, DEFAULT_GITEA_POD_SELECTOR, DEFAULT_SYNC_WEBHOOK_URL,
    DEFAULT_TOKEN_NAME, GiteaCli, RepoSeed, WebhookSpec,
};
use crate::wire::pod_exec::KubePodExec;

/// Upstream manifest texts by release URL, checked against the lab's lock.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTexts(pub BTreeMap<String, String>);

/// What the lab steps produced, for the final summary.
#[derive(Clone, Debug, Default)]
pub struct LabOutputs {
    /// The domain the lab was rendered for.
    pub domain: Option<Domain>,
    /// The deploy report (component table).
    pub deploy: Option<DeployReport>,
}

/// Add `prepare`, `render`, `deploy`, `wire-gitea`, `wire-ci` and `verify`.
pub fn add_steps(p: &mut Pipeline) {
    p.add(PrepareStep)
        .add(RenderStep)
        .add(DeployStep)
        .add(WireGiteaStep)
        .add(WireCiStep)
        .add(VerifyStep);
}

/// The lab's public endpoint for `component` (`https://<host>`), trusting only the lab CA and
/// connecting to the first node directly (some routers drop DNS answers with private IPs).
fn endpoint(cx: &StepCx<'_>, component: &str) -> Result<Endpoint> {
    let stack = cx.get::<Stack>()?;
    let domain = cx.get::<Domain>()?;
    let ca = cx.get::<LabCa>()?;
    let cluster = cx.get::<Cluster>()?;
    let host = render::hosts(&stack, &domain)
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
        ca_pem: Some(ca.cert_pem.clone()),
        resolve: first_node(&cluster).map(|ip| SocketAddr::new(ip, cx.settings().ingress_port())),
    })
}

fn first_node(cluster: &Cluster) -> Option<IpAddr> {
    cluster.node_ips.first().and_then(|ip| ip.parse().ok())
}

/// `prepare`: download the stack's pinned upstream manifests once (sha256 into the lab's lock).
/// Needs no cluster, so it runs while the VM boots.
pub struct PrepareStep;

impl Step for PrepareStep {
    fn name(&self) -> &'static str {
        "prepare"
    }
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }
    fn describe(&self) -> String {
        "fetch the stack's pinned upstream manifests".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let stack = cx.get::<Stack>()?;
            let mut lock = upstream::read_lock(cx.state())?;
            let before = lock.clone();
            let prepared = upstream::prepare(
                &stack,
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
            cx.put(UpstreamTexts(texts));
            Ok(if downloaded == 0 {
                StepReport::skipped(format!("{} upstream manifests cached", prepared.len()))
            } else {
                StepReport::done(format!(
                    "{downloaded} upstream manifests downloaded, sha256 recorded in the lab's lock"
                ))
            })
        })
    }
}

/// `render`: the stack's manifests for the lab's real domain (known once the node has an IP).
/// Pure apart from reading what earlier steps put; writes nothing.
pub struct RenderStep;

impl Step for RenderStep {
    fn name(&self) -> &'static str {
        "render"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["secrets", "ca", "prepare", CLUSTER_READY]
    }
    fn describe(&self) -> String {
        "render the stack for the lab's domain".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let settings = cx.settings();
            let mut stack = (*cx.get::<Stack>()?).clone();
            // A side-loaded engine image (multipass labs on a matching Linux host) replaces
            // the stack's pinned one.
            if let Some(EngineImage(reference)) = cx.try_get::<EngineImage>().as_deref()
                && let Some(engine) = stack
                    .components
                    .iter_mut()
                    .find(|c| c.name == "gitops-engine")
            {
                engine.images.insert("engine".into(), reference.clone());
            }
            let secrets = cx.get::<Secrets>()?;
            let ca = cx.get::<LabCa>()?;
            let cluster = cx.get::<Cluster>()?;
            let upstream = cx.get::<UpstreamTexts>()?;
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
            cx.put(manifests);
            cx.put(domain.clone());
            Ok(StepReport::skipped(format!(
                "{objects} objects for `{}`",
                domain.name
            )))
        })
    }
}

/// `deploy`: server-side apply of every component along `needs`, waiting for readiness by
/// watches; a healthy lab gets no writes.
pub struct DeployStep;

impl Step for DeployStep {
    fn name(&self) -> &'static str {
        "deploy"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["render"]
    }
    fn describe(&self) -> String {
        "apply the stack and wait until every component is ready".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let stack = cx.get::<Stack>()?;
            let manifests = cx.get::<Manifests>()?;
            let cluster = cx.get::<Cluster>()?;
            let client = cluster.client().await?;
            let report = deploy::deploy(
                &client,
                &manifests,
                &stack,
                &DeployOptions::new(&cx.settings().lab),
                cx.progress(),
            )
            .await?;
            // After `homelab ca regenerate`: what the old CA signed is issued again.
            let ca = cx.get::<LabCa>()?;
            let limit = stack
                .component("lab-ca")
                .and_then(|c| c.timeout)
                .map_or(DeployOptions::new("").default_timeout, Duration::from_secs);
            let reissued = reissue::stale_certificates(
                &client,
                &manifests,
                &ca,
                cx.waits().poll,
                limit,
                cx.progress(),
            )
            .await?;
            let writes = report.writes() + reissued.len();
            let ready = report.components.len();
            cx.put(report);
            let again = if reissued.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} certificates issued again from the new lab CA",
                    reissued.len()
                )
            };
            Ok(if writes == 0 {
                StepReport::skipped(format!("{ready} components ready, nothing changed"))
            } else {
                StepReport::done(format!(
                    "{ready} components ready, {writes} objects written{again}"
                ))
            })
        })
    }
}

/// `wire-gitea`: admin, token, org, repositories with content, the GitOps webhook.
pub struct WireGiteaStep;

impl Step for WireGiteaStep {
    fn name(&self) -> &'static str {
        "wire-gitea"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["deploy"]
    }
    fn describe(&self) -> String {
        "create Gitea's admin, token, organisation, repositories and webhook".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let settings = cx.settings();
            let stack = cx.get::<Stack>()?;
            if stack.component("gitea").is_none() {
                return Ok(StepReport::skipped("the stack has no Gitea"));
            }
            let manifests = cx.get::<Manifests>()?;
            let secrets = cx.get::<Secrets>()?;
            let cluster = cx.get::<Cluster>()?;
            let endpoint = endpoint(cx, "gitea")?;
            let host = endpoint.host().unwrap_or_default();
            let pod = KubePodExec {
                client: cluster.client().await?,
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
                    repos: RepoSeed::from_manifests(&manifests),
                    webhook: WebhookSpec {
                        repo: "gitops".into(),
                        url: DEFAULT_SYNC_WEBHOOK_URL.into(),
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
        })
    }
}

/// `wire-ci`: the CI server (Drone): OAuth app in Gitea, one login done by the tool, the app
/// repository activated, trusted and given its pipeline secrets, and a build of its head
/// started unless one succeeded or is under way.
pub struct WireCiStep;

impl Step for WireCiStep {
    fn name(&self) -> &'static str {
        "wire-ci"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["wire-gitea"]
    }
    fn describe(&self) -> String {
        "log Drone in through Gitea, activate and trust `lab/nyan-cat`, set its secrets, build its head".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let settings = cx.settings();
            let stack = cx.get::<Stack>()?;
            let Some(drone) = stack.component("drone") else {
                return Ok(StepReport::skipped("the stack has no CI server"));
            };
            let cluster = cx.get::<Cluster>()?;
            let gitea = endpoint(cx, "gitea")?;
            // Wiring Gitea stored homelab's token; read it back from the state.
            let secrets = cx.state().secrets()?;
            let report = ci::wire(
                &CiWiring {
                    kind: CiKind::Drone,
                    ci: endpoint(cx, "drone")?,
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
                &KubeWorkloads::new(cluster.client().await?),
                cx.progress(),
            )
            .await?;
            let writes = report.writes();
            Ok(if writes == 0 {
                StepReport::skipped("Drone already wired")
            } else {
                StepReport::done(format!("Drone: {writes} changes"))
            })
        })
    }
}

/// `verify`: walk the loop once (commit → build → bump → sync → HTTPS). Runs when this `up`
/// changed something or the loop was never proven; `--no-verify` skips it.
pub struct VerifyStep;

impl Step for VerifyStep {
    fn name(&self) -> &'static str {
        "verify"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["wire-ci"]
    }
    fn describe(&self) -> String {
        "prove the loop: commit, build, bump, sync, serve over HTTPS".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
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
            let stack = cx.get::<Stack>()?;
            if stack.component("drone").is_none() {
                return Ok(StepReport::skipped("the stack has no CI server"));
            }
            let domain = cx.get::<Domain>()?;
            let ca = cx.get::<LabCa>()?;
            let cluster = cx.get::<Cluster>()?;
            let outcome = verify::run_for_lab(
                &LabVerify {
                    stack: &stack,
                    domain: &domain,
                    node_ip: first_node(&cluster),
                    ingress_port: cx.settings().ingress_port(),
                    state: cx.state(),
                    ca_pem: &ca.cert_pem,
                    ci: CiKind::Drone,
                },
                cluster.client().await?,
                &VerifyOptions::default(),
                cx.progress(),
            )
            .await?;
            match outcome {
                Ok(report) => {
                    let detail = format!("loop proven: {}", report.version);
                    cx.put(report);
                    Ok(StepReport::done(detail))
                }
                Err(failure) => Err(failure.error.into()),
            }
        })
    }
}

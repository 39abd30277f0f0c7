//! The lab half of `up`: once the cluster answers, fetch the pinned upstream manifests, render
//! the stack for the lab's real domain, deploy it, and wire Gitea.
//!
//! Architecture invariant: each step only composes library services (`upstream::prepare`,
//! `render::render`, `deploy::deploy`, `wire::gitea::wire`) and reports whether anything was
//! written, so a second `up` on a healthy lab reports every step as skipped.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures::future::BoxFuture;

use super::{CLUSTER_READY, Pipeline, Step, StepCx, StepReport};
use crate::deploy::{self, DeployOptions, DeployReport};
use crate::error::{Error, Result};
use crate::git::{Git, Identity};
use crate::gitea::Endpoint;
use crate::provider::Cluster;
use crate::render::{self, Domain, Manifests, RenderInput};
use crate::stack::Stack;
use crate::state::{self, Secrets};
use crate::templates::Templates;
use crate::tls::LabCa;
use crate::upstream;
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

/// Add `prepare`, `render`, `deploy` and `wire-gitea`.
pub fn add_steps(p: &mut Pipeline) {
    p.add(PrepareStep)
        .add(RenderStep)
        .add(DeployStep)
        .add(WireGiteaStep);
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
            let stack = cx.get::<Stack>()?;
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
            let channel = settings.channel(&stack);
            let manifests = render::render(
                &Templates::embedded()?,
                &RenderInput {
                    lab: &settings.lab,
                    stack: &stack,
                    domain: &domain,
                    secrets: &secrets,
                    ca: &ca,
                    gitea_admin_user: &settings.gitea_admin_user,
                    channel: &channel,
                    node_ip,
                    upstream: &upstream.0,
                },
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
            let writes = report.writes();
            let ready = report.components.len();
            cx.put(report);
            Ok(if writes == 0 {
                StepReport::skipped(format!("{ready} components ready, nothing changed"))
            } else {
                StepReport::done(format!(
                    "{ready} components ready, {writes} objects written"
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
            let domain = cx.get::<Domain>()?;
            let secrets = cx.get::<Secrets>()?;
            let ca = cx.get::<LabCa>()?;
            let cluster = cx.get::<Cluster>()?;
            let hosts = render::hosts(&stack, &domain);
            let host = hosts.get("gitea").cloned().unwrap_or_default();
            // Talk to the node directly: some routers drop DNS answers carrying private IPs.
            let resolve = cluster
                .node_ips
                .first()
                .and_then(|ip| format!("{ip}:443").parse::<SocketAddr>().ok());
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
                    endpoint: Endpoint {
                        base_url: format!("https://{host}"),
                        ca_pem: Some(ca.cert_pem.clone()),
                        resolve,
                    },
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

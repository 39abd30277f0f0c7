//! verify for a lab built by `up`: [`LabVerify`] (the lab as `up` or the `verify` command knows
//! it), [`target_for_lab`] (host names, tokens from the lab state, the NyanCat names the
//! templates use) and [`run_for_lab`], what `up` calls last.
//!
//! Architecture invariant: reads the lab state it is handed (tokens); the walk itself is in
//! `walk`.

use super::{
    AppRef, KubeApplications, VerifyFailure, VerifyOptions, VerifyReport, VerifyTarget, verify,
};
use crate::edges::http::Endpoint;
use crate::edges::output::Progress;

/// What [`target_for_lab`] needs: the lab as `up` (or the `verify` command) knows it.
pub struct LabVerify<'a> {
    /// The stack (host names, the app's namespaces).
    pub stack: &'a crate::model::stack::Stack,
    /// The lab's domain.
    pub domain: &'a crate::model::render::Domain,
    /// The first node's IP: connections go there instead of through DNS (routers that drop
    /// private-IP answers for `*.sslip.io`); `None` resolves names normally.
    pub node_ip: Option<std::net::IpAddr>,
    /// The port of the node's ingress (443; see `Settings::ingress_port`).
    pub ingress_port: u16,
    /// The lab state (Gitea and CI tokens).
    pub state: &'a crate::edges::state::LabState,
    /// The lab CA, PEM: the only trust root.
    pub ca_pem: &'a str,
    /// The CI the lab runs.
    pub ci: crate::services::ci::CiKind,
}

/// The verify target of a lab built by `up`: the stack's host names under the domain, the
/// tokens the wiring stored, the NyanCat names the templates use.
pub fn target_for_lab(l: &LabVerify<'_>) -> Result<VerifyTarget, crate::edges::error::Error> {
    let hosts = crate::model::render::hosts(l.stack, l.domain);
    let host = |c: &str| {
        hosts.get(c).cloned().ok_or_else(|| {
            crate::edges::error::Error::msg(format!(
                "stack `{}` has no `{c}` component with a host name; verify needs it",
                l.stack.name
            ))
        })
    };
    let pin = l
        .node_ip
        .map(|ip| std::net::SocketAddr::new(ip, l.ingress_port));
    let endpoint = |h: String| Endpoint {
        base_url: format!("https://{h}"),
        ca_pem: Some(l.ca_pem.to_string()),
        resolve: pin,
    };
    let gitea_host = host("gitea")?;
    let gitea = crate::edges::http::Endpoint {
        base_url: format!("https://{gitea_host}"),
        ca_pem: Some(l.ca_pem.to_string()),
        resolve: pin,
    };
    let ci_host = host(match l.ci {
        crate::services::ci::CiKind::Drone => "drone",
    })?;
    let ci = crate::services::ci::client_from_state(l.ci, &endpoint(ci_host), l.state)?;
    let gitea_token = l
        .state
        .secrets()?
        .get(crate::services::gitea::decide::GITEA_TOKEN_KEY);
    if gitea_token.is_empty() {
        return Err(crate::edges::error::Error::msg(format!(
            "the lab state has no Gitea API token (`{}` in `secrets.json`)",
            crate::services::gitea::decide::GITEA_TOKEN_KEY
        ))
        .hint("run `homelab up`: its wiring creates the token"));
    }
    let org = crate::model::render::GITEA_ORG.to_string();
    let app_namespace = l
        .stack
        .component("nyan-cat")
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| "argocd".into());
    Ok(VerifyTarget {
        gitea,
        gitea_token,
        ci,
        image: format!("{gitea_host}/{org}/nyan-cat"),
        org,
        app_repo: "nyan-cat".into(),
        gitops_repo: "gitops".into(),
        branch: "main".into(),
        page_path: "index.html".into(),
        deployment_path: "apps/nyan-cat/deployment.yaml".into(),
        application: AppRef {
            namespace: app_namespace,
            name: "nyan-cat".into(),
        },
        site: endpoint(host("nyan-cat")?),
    })
}

/// What `up` calls last (unless `--no-verify`): verify the lab, reporting hops through
/// `progress`. The outer error means verify could not start (no tokens in the lab state, no host
/// names); the inner one is a hop that failed, with the report up to it.
pub async fn run_for_lab(
    l: &LabVerify<'_>,
    kube: ::kube::Client,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Result<VerifyReport, Box<VerifyFailure>>, crate::edges::error::Error> {
    let target = target_for_lab(l)?;
    let result = verify(
        &target,
        &KubeApplications::new(kube.clone()),
        opts,
        progress,
    )
    .await;
    if let Some(ns) = super::publish::page_namespace(l.stack) {
        let run = match &result {
            Ok(r) => super::publish::page_run(r, None, &crate::sync::status::now()),
            Err(f) => {
                super::publish::page_run(&f.report, Some(&f.error), &crate::sync::status::now())
            }
        };
        super::publish::publish(kube, &ns, &run).await;
    }
    Ok(result)
}

//! `homelab verify`: walk the lab's loop once (commit → build → bump → sync → serve) and report
//! each hop with its time.
//!
//! Architecture invariant: a thin shell around `verify::verify` — it finds the lab (domain, node
//! address, CA, tokens, cluster) from the settings and the lab state, and prints; it never
//! creates lab state.

use super::{Ctx, ExitStatus};
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::model::render::Domain;
use crate::provider::LabRecord;
use crate::verify::{LabVerify, VerifyOptions};

pub(super) async fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let state = LabState::locate(&settings.lab)?;
    if !state.path(SECRETS_FILE).exists() {
        return Err(Error::msg(format!(
            "lab `{}` was never built: `{}` does not exist",
            settings.lab,
            state.path(SECRETS_FILE).display()
        ))
        .hint("run `homelab up` first; `--lab NAME` picks another lab"));
    }
    let stack = ctx.stack()?;
    let cluster = LabRecord::load(&state)?.map(|r| r.cluster(&state));
    let node_ip: Option<std::net::IpAddr> = cluster
        .as_ref()
        .and_then(|c| c.node_ips.first())
        .and_then(|ip| ip.parse().ok());
    let gitea: Option<crate::services::gitea::decide::GiteaRecord> =
        state.read_json(crate::services::gitea::decide::GITEA_RECORD_FILE)?;
    let domain = match (&settings.domain, node_ip, gitea) {
        (Some(d), _, _) => Domain::resolve(Some(d), None),
        (None, _, Some(g))
            if crate::services::wire::access::domain_from_gitea_url(&stack, &g.url).is_some() =>
        {
            crate::services::wire::access::domain_from_gitea_url(&stack, &g.url).expect("checked")
        }
        (None, Some(ip), _) => Domain::resolve(None, Some(&ip.to_string())),
        (None, None, _) => {
            return Err(Error::msg(format!(
                "the lab state of `{}` names neither a domain nor a node address",
                settings.lab
            ))
            .hint("pass the lab's domain with `--domain`"));
        }
    };
    let ca = crate::model::tls::load(&state)?.ok_or_else(|| {
        Error::msg(format!(
            "lab `{}` has no CA in `{}`",
            settings.lab,
            state.path(crate::model::tls::CA_CERT_FILE).display()
        ))
        .hint("run `homelab up` first")
    })?;
    let lab = LabVerify {
        stack: &stack,
        domain: &domain,
        node_ip,
        ingress_port: settings.ingress_port(),
        state: &state,
        ca_pem: &ca.cert_pem,
        ci: crate::services::ci::CiKind::Drone,
    };
    let target = crate::verify::target_for_lab(&lab)?;
    let cluster = cluster.ok_or_else(|| {
        Error::msg(format!("lab `{}` has no cluster", settings.lab)).hint("run `homelab up` first")
    })?;
    let client = cluster.client().await?;
    let apps = crate::verify::KubeApplications::new(client.clone());
    let result =
        crate::verify::verify(&target, &apps, &VerifyOptions::default(), &ctx.printer).await;
    let (report, error) = match result {
        Ok(r) => (r, None),
        Err(f) => (f.report, Some(f.error)),
    };
    // The lab page shows the last verify.
    if let Some(ns) = crate::verify::publish::page_namespace(&stack) {
        let run =
            crate::verify::publish::page_run(&report, error.as_ref(), &crate::sync::status::now());
        crate::verify::publish::publish(client, &ns, &run).await;
    }
    match ctx.printer.ui().format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&report).expect("reports serialize");
            if let Some(e) = &error {
                v["failed_hop"] = e.hop().into();
                v["error"] = e.to_string().into();
            }
            ctx.printer.json(&v);
        }
        // On a terminal the hops were drawn once as they ran: only the verdict (issue 16).
        OutputFormat::Text if ctx.printer.ui().steps_shown_live() => {
            let text = report.to_text();
            ctx.printer.data(text.lines().last().unwrap_or_default());
        }
        OutputFormat::Text => ctx.printer.data(&report.to_text()),
    }
    match error {
        None => Ok(ExitStatus::Success),
        Some(e) => Err(e.into()),
    }
}

//! The steps that need no cluster: `secrets`, `ca` and (multipass) `cloud-init`. They run while
//! the VMs boot.
//!
//! Architecture invariant: each looks at the lab state first and writes only what is missing;
//! `cloud-init` is pure (the VMs' launch writes it).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::graph::{Made, StepCx};
use crate::edges::state::{SECRETS_FILE, Secrets};
use crate::model::render::{self, Domain, RenderInput};
use crate::model::templates::Templates;
use crate::model::tls::{self, CA_CERT_FILE, CA_KEY_FILE, LabCa};
use crate::provider::multipass::{CLOUD_INIT_FILE, CloudInit};
use crate::provider::op::StepReport;

/// `secrets`: generate the lab's secrets once (OS CSPRNG), reuse them afterwards.
pub fn secrets<'a>(cx: &'a StepCx<'a>, (): ()) -> Made<'a, Secrets> {
    Box::pin(async move {
        let before = cx.state().read(SECRETS_FILE)?;
        let mut secrets = cx.state().secrets_for(&cx.stack().template_sets())?;
        let after = cx.state().read(SECRETS_FILE)?;
        if let Some(pw) = &cx.settings().gitea_admin_password {
            secrets = secrets.with("gitea_admin_password", pw.clone());
        }
        let count = secrets.iter().count();
        let report = if before == after {
            StepReport::skipped(format!("{count} secrets reused"))
        } else if before.is_none() {
            StepReport::done(format!(
                "{count} secrets generated into `{}`",
                cx.state().path(SECRETS_FILE).display()
            ))
        } else {
            StepReport::done("missing secrets generated")
        };
        Ok((report, secrets))
    })
}

/// `ca`: create the lab CA once, reuse it afterwards (so browser trust survives rebuilds).
pub fn ca<'a>(cx: &'a StepCx<'a>, (): ()) -> Made<'a, LabCa> {
    Box::pin(async move {
        let state = cx.state();
        let existed = state.path(CA_CERT_FILE).exists() && state.path(CA_KEY_FILE).exists();
        let ca = tls::load_or_create(state, cx.settings().domain.as_deref())?;
        let report = if existed {
            StepReport::skipped("lab CA reused")
        } else {
            StepReport::done(format!(
                "lab CA created in `{}`",
                state.path(CA_CERT_FILE).display()
            ))
        };
        Ok((report, ca))
    })
}

/// `cloud-init`: render the VMs' cloud-init (microk8s launch configuration, lab CA). Pure: it is
/// written to the lab state only when a VM is launched with it.
pub fn cloud_init<'a>(
    cx: &'a StepCx<'a>,
    (secrets, ca): (Arc<Secrets>, Arc<LabCa>),
) -> Made<'a, CloudInit> {
    Box::pin(async move {
        let settings = cx.settings();
        let stack = cx.stack();
        let channel = settings.channel(stack);
        // The node IP is not known before launch; hostnames that depend on it reach the
        // VM later, through the cluster.
        let domain = Domain::resolve(settings.domain.as_deref(), None);
        let templates = Templates::embedded()?;
        let upstream = BTreeMap::new();
        // microk8s from the cache when `homelab prepare` put it there (the VMs wait for the
        // files `provisioned` brings), else from the Snap Store.
        let from_cache = crate::provider::multipass::snaps::cached(cx.state(), &channel)?;
        let text = render::render_cloud_init_for(
            &templates,
            &RenderInput::for_lab(settings, stack, &domain, &secrets, &ca, None, &upstream),
            from_cache.is_some(),
        )?;
        let launched_with = cx.state().read(CLOUD_INIT_FILE)?;
        let report = match launched_with {
            Some(old) if old == text.as_bytes() => {
                StepReport::skipped("unchanged since the VMs were launched")
            }
            Some(_) => StepReport::skipped(
                "changed since the VMs were launched; new VMs get it (`--recreate` rebuilds the others)",
            ),
            None => match &from_cache {
                Some(list) => StepReport::done(format!(
                    "microk8s {channel} from the cache ({}), lab CA trusted",
                    list.iter()
                        .map(|r| format!("{} {}", r.name, r.revision))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => StepReport::done(format!("microk8s {channel}, lab CA trusted")),
            },
        };
        Ok((report, CloudInit(text)))
    })
}

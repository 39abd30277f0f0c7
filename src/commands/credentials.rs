//! `homelab credentials`: the lab's URLs and logins, password included: the one command that
//! shows secrets.
//!
//! Architecture invariant: reads the lab state and never creates it (asking for credentials of a
//! lab that was never built is an error, not a reason to generate new secrets).

use std::collections::BTreeMap;

use super::{Ctx, ExitStatus};
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::redact::Secret;
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::model::render::Domain;
use crate::services::gitea::decide::{GITEA_RECORD_FILE, GITEA_TOKEN_KEY, GiteaRecord};
use crate::services::wire::access::{AccessInput, LabAccess, domain_from_gitea_url};

pub(super) fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let state = LabState::locate(&settings.lab)?;
    let stored: Option<BTreeMap<String, String>> = state.read_json(SECRETS_FILE)?;
    let Some(stored) = stored else {
        return Err(Error::msg(format!(
            "lab `{}` has no credentials yet: `{}` does not exist",
            settings.lab,
            state.path(SECRETS_FILE).display()
        ))
        .hint("run `homelab up` to build the lab; `--lab NAME` picks another lab"));
    };
    let stack = ctx.stack()?;
    let record: Option<GiteaRecord> = state.read_json(GITEA_RECORD_FILE)?;
    let domain = match &settings.domain {
        Some(d) => Some(Domain::resolve(Some(d), None)),
        None => record
            .as_ref()
            .and_then(|r| domain_from_gitea_url(&stack, &r.url)),
    };
    let password = settings.gitea_admin_password.clone().unwrap_or_else(|| {
        Secret::new(
            stored
                .get("gitea_admin_password")
                .cloned()
                .unwrap_or_default(),
        )
    });
    let access = LabAccess::new(AccessInput {
        lab: &settings.lab,
        stack: &stack,
        domain: domain.as_ref(),
        admin_user: &settings.gitea_admin_user,
        admin_password: password,
        token_stored: stored.get(GITEA_TOKEN_KEY).is_some_and(|t| !t.is_empty()),
        secrets_file: state.path(SECRETS_FILE),
        argocd_admin_password: stored
            .get("argocd_admin_password")
            .map(|p| Secret::new(p.clone())),
    });
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&access.credentials_json()),
        OutputFormat::Text => ctx.printer.data(&access.credentials_text()),
    }
    Ok(ExitStatus::Success)
}

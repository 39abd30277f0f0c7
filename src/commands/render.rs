//! `homelab render`: the complete manifest set, to stdout or one file per component.

use super::{Ctx, ExitStatus};
use crate::cli::RenderArgs;
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::edges::state::{self, LabState, SECRETS_FILE, Secrets};
use crate::model::render::{Domain, RenderInput, render};
use crate::model::templates::Templates;
use crate::{cluster::upstream, model::tls};

pub(super) fn run(ctx: &Ctx, args: &RenderArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let stack = ctx.stack()?;
    let state = LabState::locate(&settings.lab)?;
    let domain = Domain::resolve(settings.domain.as_deref(), None);
    // A lab without secrets or a CA gets them here, as `up` would: that writes, under the lock.
    let _lock = if !args.placeholder_secrets
        && (!state.path(SECRETS_FILE).exists() || !matches!(tls::load(&state), Ok(Some(_))))
    {
        Some(super::lock_lab(ctx, &state, "render")?)
    } else {
        None
    };
    let (secrets, ca) = if args.placeholder_secrets {
        (Secrets::placeholders(), tls::placeholder())
    } else {
        let mut secrets = state.secrets_for(&stack.template_sets())?;
        if let Some(pw) = &settings.gitea_admin_password {
            secrets = secrets.with("gitea_admin_password", pw.clone());
        }
        (
            secrets,
            tls::load_or_create(&state, settings.domain.as_deref())?,
        )
    };
    let lock = upstream::read_lock(&state)?;
    let cached = upstream::cached(&stack, &lock, &state::cache_root()?)?;
    let templates = Templates::embedded()?;
    let manifests = render(
        &templates,
        &RenderInput::for_lab(settings, &stack, &domain, &secrets, &ca, None, &cached),
    )?;
    if !domain.known {
        ctx.printer.info(&format!(
            "note: the lab's node IP is not known yet, so hostnames use `{}`; pass `--domain` to choose one",
            domain.name
        ));
    }
    match &args.out {
        Some(dir) => {
            let dir = ctx.cwd.join(dir);
            let written = manifests.write_dir(&dir)?;
            ctx.printer.info(&format!(
                "wrote {} files into `{}`",
                written.len(),
                dir.display()
            ));
        }
        None => {
            // Secrets reach a terminal (or a chat, a screenshot) only when asked for.
            let shown = if args.placeholder_secrets || args.show_secrets {
                manifests
            } else {
                ctx.printer.info(
                    "note: Secret values are shown as `<redacted>`; `--show-secrets` prints them, `--out DIR` writes them to private files",
                );
                manifests.redacted()
            };
            match ctx.printer.ui().format {
                OutputFormat::Json => ctx.printer.json(&shown.components),
                OutputFormat::Text => ctx.printer.data(&shown.to_yaml()),
            }
        }
    }
    Ok(ExitStatus::Success)
}

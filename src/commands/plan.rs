//! `homelab plan`: print every step `up` would take, listed from `up`'s own step graph. Reads
//! files only.

use super::{Ctx, ExitStatus};
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::model::plan::{Known, plan};
use crate::model::render::Domain;
use crate::model::tls::CA_CERT_FILE;
use crate::up;

pub(super) fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let stack = ctx.stack()?;
    let state = LabState::locate(&ctx.settings.lab)?;
    let known = Known {
        ca: state.path(CA_CERT_FILE).exists(),
        secrets: state.path(SECRETS_FILE).exists(),
    };
    let domain = Domain::resolve(ctx.settings.domain.as_deref(), None);
    let p = plan(
        &ctx.settings,
        &stack,
        &domain,
        known,
        up::pipeline(&ctx.settings).planned(),
    );
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&p),
        OutputFormat::Text => ctx.printer.data(&p.to_text()),
    }
    // What `up` would refuse, said now (issue 12: the engine image outside Linux).
    p.check()?;
    Ok(ExitStatus::Success)
}

//! `homelab trust [--apply]` and `homelab untrust`: print, run and undo the host trust changes.

use super::{Ctx, ExitStatus};
use crate::cli::TrustArgs;
use crate::edges::error::Result;
use crate::edges::output::{Outcome, OutputFormat};
use crate::edges::state::LabState;
use crate::host::trust::{self, DetectConfig, LEDGER_FILE, Runner, TrustTarget};
use crate::model::render::{self, Domain};
use crate::model::tls::{self, CA_CERT_FILE, TlsError};

pub(super) fn trust(ctx: &Ctx, args: &TrustArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let state = LabState::locate(&settings.lab)?;
    // Applying writes the ledger, and a lab without a CA gets one: both hold the lab's lock.
    // Printing the plan for an existing CA only reads.
    let _lock = if args.apply || !matches!(tls::load(&state), Ok(Some(_))) {
        let what = if args.apply { "trust --apply" } else { "trust" };
        Some(super::lock_lab(ctx, &state, what)?)
    } else {
        None
    };
    let ca = tls::load_or_create(&state, settings.domain.as_deref())?;
    let info = tls::inspect(&ca.cert_pem).map_err(|message| TlsError::Parse {
        path: state.path(CA_CERT_FILE).display().to_string(),
        message,
    })?;
    // The node IP is not known here: with the default sslip.io domain the git step waits for a
    // run that knows it (`--domain`, or a later `trust` once `up` records the cluster).
    let domain = Domain::resolve(settings.domain.as_deref(), None);
    let git_urls = if domain.known {
        trust::git_urls(&render::hosts(&ctx.stack()?, &domain))
    } else {
        Vec::new()
    };
    let target = TrustTarget {
        lab: settings.lab.clone(),
        ca_path: state.path(CA_CERT_FILE),
        ca: info,
        git_urls,
    };
    let facts = trust::detect(&DetectConfig::for_this_host(args.os_release.as_deref()));
    let plan = trust::plan(&target, &facts);

    if !args.apply {
        match ctx.printer.ui().format {
            OutputFormat::Json => ctx.printer.json(&plan),
            OutputFormat::Text => ctx.printer.data(&plan.to_text()),
        }
        return Ok(ExitStatus::Success);
    }

    let report = trust::apply(&state, &plan, &Runner::for_this_host(), &ctx.printer)?;
    let ledger = state.path(LEDGER_FILE);
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({
            "steps": report.steps,
            "notes": plan.notes,
            "ledger": ledger,
        })),
        OutputFormat::Text => {
            let mut out = String::new();
            for s in &report.steps {
                let word = match s.outcome {
                    Outcome::Done => "applied",
                    Outcome::Skipped => "skipped",
                    Outcome::Failed => "failed ",
                };
                out.push_str(&format!("{word}  {}: {}\n", s.title, s.detail));
            }
            if report.steps.is_empty() {
                out.push_str("nothing to run on this computer\n");
            }
            for note in &plan.notes {
                out.push_str(&format!("note: {note}\n"));
            }
            out.push_str(&format!(
                "ledger: `{}`; `homelab untrust` undoes exactly what it lists\n",
                crate::edges::output::human::tilde(&ledger)
            ));
            ctx.printer.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}

pub(super) fn untrust(ctx: &Ctx) -> Result<ExitStatus> {
    let state = LabState::locate(&ctx.settings.lab)?;
    let _lock = super::lock_lab(ctx, &state, "untrust")?;
    let report = trust::untrust_all(&state, &Runner::for_this_host(), &ctx.printer)?;
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&report),
        OutputFormat::Text => {
            if report.undone.is_empty() {
                ctx.printer.data(&format!(
                    "nothing to undo: the trust ledger of lab `{}` is empty\n",
                    state.lab()
                ));
            } else {
                let mut out = String::new();
                for title in &report.undone {
                    out.push_str(&format!("untrusted  {title}\n"));
                }
                ctx.printer.data(&out);
            }
        }
    }
    Ok(ExitStatus::Success)
}

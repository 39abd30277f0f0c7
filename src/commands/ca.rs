//! `homelab ca path|show|regenerate`: where the lab CA lives and what it is; replacing it only
//! on request. `path` and `show` never create a CA.

use super::{Ctx, ExitStatus};
use crate::cli::CaPathArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::state::LabState;
use crate::host::trust::{Ledger, TrustError};
use crate::model::settings::ProviderKind;
use crate::model::tls::{self, CA_CERT_FILE, CA_KEY_FILE, CaInfo, LabCa, TlsError};
use crate::provider::LabRecord;

fn existing(state: &LabState) -> Result<LabCa> {
    tls::load(state)?.ok_or_else(|| {
        TlsError::NoCa {
            lab: state.lab().to_string(),
            path: state.path(CA_CERT_FILE).display().to_string(),
        }
        .into()
    })
}

fn info(state: &LabState, ca: &LabCa) -> Result<CaInfo> {
    tls::inspect(&ca.cert_pem).map_err(|message| {
        TlsError::Parse {
            path: state.path(CA_CERT_FILE).display().to_string(),
            message,
        }
        .into()
    })
}

pub(super) fn path(ctx: &Ctx, args: &CaPathArgs) -> Result<ExitStatus> {
    let state = LabState::locate(&ctx.settings.lab)?;
    existing(&state)?;
    let cert = state.path(CA_CERT_FILE);
    let key = state.path(CA_KEY_FILE);
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({
            "certificate": cert,
            "key": key,
        })),
        OutputFormat::Text => {
            let p = if args.key { key } else { cert };
            ctx.printer.data(&ctx.printer.path(&p));
        }
    }
    Ok(ExitStatus::Success)
}

pub(super) fn show(ctx: &Ctx) -> Result<ExitStatus> {
    let state = LabState::locate(&ctx.settings.lab)?;
    let ca = existing(&state)?;
    let info = info(&state, &ca)?;
    let cert = state.path(CA_CERT_FILE);
    let key = state.path(CA_KEY_FILE);
    match ctx.printer.ui().format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&info).expect("CA info serializes");
            v["lab"] = state.lab().into();
            v["certificate"] = cert.display().to_string().into();
            v["key"] = key.display().to_string().into();
            ctx.printer.json(&v);
        }
        OutputFormat::Text => {
            let mut constraints = Vec::new();
            if !info.permitted_dns.is_empty() {
                constraints.push(format!("permitted DNS {}", info.permitted_dns.join(", ")));
            }
            if !info.excluded.is_empty() {
                constraints.push(format!("excluded {}", info.excluded.join(", ")));
            }
            let constraints = if constraints.is_empty() {
                "none".to_string()
            } else {
                constraints.join("; ")
            };
            let path_len = info
                .path_len
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unlimited".into());
            ctx.printer.data(&format!(
                "CA of lab `{lab}`\n  certificate  {cert}\n  key          {key} (never printed)\n  subject      {subject}\n  SHA-256      {sha}\n  valid        {from} to {to}\n  constraints  {constraints}\n  CA           {ca} (path length {path_len})\n  key usages   {usages}\n  algorithm    {alg}\n",
                lab = state.lab(),
                cert = crate::edges::output::human::tilde(&cert),
                key = crate::edges::output::human::tilde(&key),
                subject = info.subject,
                sha = info.sha256,
                from = info.not_before,
                to = info.not_after,
                ca = if info.is_ca { "yes" } else { "no" },
                usages = info.key_usages.join(", "),
                alg = info.key_algorithm,
            ));
        }
    }
    Ok(ExitStatus::Success)
}

pub(super) fn regenerate(ctx: &Ctx) -> Result<ExitStatus> {
    let state = LabState::locate(&ctx.settings.lab)?;
    let _lock = super::lock_lab(ctx, &state, "ca regenerate")?;
    // Replacing a CA this computer trusts would leave the old one trusted with no record of
    // how to remove it once the ledger's fingerprints stop matching.
    let ledger = Ledger::load(&state)?;
    if !ledger.entries.is_empty() {
        return Err(TrustError::StillTrusted {
            lab: state.lab().to_string(),
            what: ledger.summary(),
        }
        .into());
    }
    let old = match tls::load(&state) {
        Ok(Some(ca)) => info(&state, &ca).ok().map(|i| i.sha256),
        // A broken CA is a reason to regenerate, not a reason to refuse.
        Ok(None) | Err(_) => None,
    };
    let ca = tls::regenerate(&state, ctx.settings.domain.as_deref()).map_err(Error::from)?;
    let new = info(&state, &ca)?;
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({
            "lab": state.lab(),
            "old_sha256": old,
            "new": new,
        })),
        OutputFormat::Text => {
            let mut out = format!("new CA for lab `{}`\n", state.lab());
            if let Some(old) = &old {
                out.push_str(&format!("  old SHA-256  {old}\n"));
            }
            // VMs trust the CA cloud-init gave them at launch; only new VMs learn the new one.
            let built_vms = LabRecord::load(&state)
                .ok()
                .flatten()
                .is_some_and(|r| r.provider == ProviderKind::Multipass);
            let up = if built_vms {
                "`homelab up --recreate` (the lab's VMs trust the CA they were launched with, so they are built again)"
            } else {
                "`homelab up` (it issues the lab's certificates again from the new CA)"
            };
            out.push_str(&format!(
                "  new SHA-256  {}\n  permitted    {}\nnext: {up}, then `homelab trust --apply` on each computer that should trust it\n",
                new.sha256,
                new.permitted_dns.join(", ")
            ));
            ctx.printer.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}

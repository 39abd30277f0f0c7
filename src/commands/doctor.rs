//! `homelab doctor`: check prerequisites; exit 1 when something blocks `up`.

use super::{Ctx, ExitStatus};
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::host::doctor::{Status, evaluate, gather, has_blocker};

pub(super) fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let facts = gather(&ctx.settings)?;
    let checks = evaluate(&facts, &ctx.settings);
    let blocked = has_blocker(&checks);
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({
            "ok": !blocked,
            "checks": checks,
        })),
        OutputFormat::Text => {
            let mut out = String::new();
            for c in &checks {
                let mark = match c.status {
                    Status::Ok => ctx.printer.paint("ok  ", "32"),
                    Status::Warn => ctx.printer.paint("warn", "33"),
                    Status::Fail => ctx.printer.paint("FAIL", "31"),
                    Status::Skip => ctx.printer.paint("skip", "2"),
                };
                out.push_str(&format!("{mark}  {:<15} {}\n", c.name, c.detail));
                if let Some(h) = &c.hint {
                    out.push_str(&format!("      {:<15} hint: {h}\n", ""));
                }
            }
            out.push_str(if blocked {
                "\nSomething blocks `homelab up`; fix the FAIL lines above.\n"
            } else {
                "\nReady for `homelab up`.\n"
            });
            ctx.printer.data(&out);
        }
    }
    Ok(if blocked {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// `doctor --offline`: what the cache holds for the stack; exit 1 when anything would still be
/// downloaded.
pub(super) fn offline(ctx: &Ctx) -> Result<ExitStatus> {
    let stack = ctx.stack()?;
    let lab = crate::edges::state::LabState::locate(&ctx.settings.lab)?;
    let lock = crate::cluster::upstream::read_lock(&lab)?;
    let report = crate::host::offline::report(
        &stack,
        &ctx.settings.channel(&stack),
        &lock,
        &crate::edges::state::cache_root()?,
    );
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&report),
        OutputFormat::Text => {
            let mut out = String::new();
            for i in &report.items {
                let mark = if i.cached {
                    ctx.printer.paint("cached  ", "32")
                } else {
                    ctx.printer.paint("download", "33")
                };
                out.push_str(&format!("{mark}  {:<8} {}", i.kind, i.name));
                if let Some(d) = &i.digest {
                    out.push_str(&format!(" {d}"));
                }
                if let Some(m) = &i.missing {
                    out.push_str(&format!(" ({m})"));
                }
                out.push('\n');
            }
            if !report.items.iter().any(|i| i.kind == "snap") {
                out.push_str(
                    "no snaps in the cache: the VMs install microk8s from the Snap Store\n",
                );
            }
            out.push_str(if report.would_download {
                "\n`homelab prepare` would still download the lines marked `download`.\n"
            } else {
                "\nEverything is cached: `homelab up` downloads no images or manifests.\n"
            });
            ctx.printer.data(&out);
        }
    }
    Ok(if report.would_download {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

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

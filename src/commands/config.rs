//! `homelab config show`: the resolved settings and where each value came from.

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::model::settings::Settings;

pub(super) fn show(ctx: &Ctx) -> Result<ExitStatus> {
    let s = &ctx.settings;
    let entries = s.entries();
    let file = s.config_file.as_ref().map(|p| p.display().to_string());
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&as_json(s)),
        OutputFormat::Text => {
            let mut out = format!("# config file: {}\n", file.as_deref().unwrap_or("(none)"));
            let width = entries.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
            for (k, v, o) in &entries {
                out.push_str(&format!("{k:<width$}  {v}  [{o}]\n"));
            }
            ctx.printer.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}

/// `config show --output json`: every setting with its value (secrets redacted) and origin.
pub(super) fn as_json(s: &Settings) -> serde_json::Value {
    let settings: serde_json::Map<String, serde_json::Value> = s
        .entries()
        .iter()
        .map(|(k, v, o)| ((*k).to_string(), json!({"value": v, "origin": o})))
        .collect();
    let file = s.config_file.as_ref().map(|p| p.display().to_string());
    json!({"config_file": file, "settings": settings})
}

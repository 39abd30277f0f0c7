//! `homelab prepare`: download every upstream manifest `up` will need into the cache, record
//! their sha256 in the lab's lock, and list the container images the stack will pull.
//!
//! The `upstream.mirror` setting (e.g. a workshop's local server) replaces the scheme and is
//! prefixed to `<host>/<path>` of each release URL; the lock still names the release URL.

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cluster::upstream;
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::edges::state::{self, LabState};

pub(super) async fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let stack = ctx.stack()?;
    let lab = LabState::locate(&ctx.settings.lab)?;
    // It records pins in the lab's `lock.json`, which `up` reads and writes too.
    let _lock = super::lock_lab(ctx, &lab, "prepare")?;
    let mut lock = upstream::read_lock(&lab)?;
    let before = lock.clone();
    let mirror = ctx
        .settings
        .upstream_mirror
        .clone()
        .filter(|m| !m.is_empty());
    let prepared =
        upstream::prepare(&stack, &mut lock, &state::cache_root()?, mirror.as_deref()).await?;
    if lock != before {
        lab.write_json(upstream::LOCK_FILE, &lock)?;
    }
    let images = upstream::images(&stack, &prepared);
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx
            .printer
            .json(&json!({"upstream": prepared, "images": images})),
        OutputFormat::Text => {
            let mut out = String::new();
            for p in &prepared {
                out.push_str(&format!(
                    "{:<16} {} sha256:{} ({})\n",
                    p.component,
                    p.url,
                    p.sha256,
                    if p.cached { "cached" } else { "downloaded" }
                ));
            }
            out.push_str(&format!("images ({}):\n", images.len()));
            for i in &images {
                out.push_str(&format!("  {i}\n"));
            }
            ctx.printer.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}

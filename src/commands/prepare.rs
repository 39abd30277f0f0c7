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
    let snaps = prepare_snaps(ctx, &stack, &mut lock, mirror.as_deref()).await?;
    if lock != before {
        lab.write_json(upstream::LOCK_FILE, &lock)?;
    }
    let images = upstream::images(&stack, &prepared);
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx
            .printer
            .json(&json!({"upstream": prepared, "images": images, "snaps": snaps})),
        OutputFormat::Text => {
            let mut out = snaps_text(&snaps);
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

/// The microk8s snap of the stack's channel and its base, for the VMs' architecture, into the
/// cache (`cluster::snaps`), pinned in the lab's lock. `None` where the VMs' architecture has
/// no snaps homelab knows.
async fn prepare_snaps(
    ctx: &Ctx,
    stack: &crate::model::stack::Stack,
    lock: &mut upstream::Lock,
    mirror: Option<&str>,
) -> Result<Option<SnapsPrepared>> {
    use crate::cluster::snaps;
    let Some(arch) = snaps::vm_architecture() else {
        ctx.printer.warn(
            "this host's architecture has no microk8s snaps homelab knows; the VMs will install microk8s from the Snap Store",
        );
        return Ok(None);
    };
    let channel = ctx.settings.channel(stack);
    let source = snaps::Source::choose(mirror);
    let started = std::time::Instant::now();
    let progress = |line: &str| ctx.printer.info(line);
    let list = snaps::prepare(
        &channel,
        arch,
        &mut lock.snaps,
        &state::cache_root()?,
        &source,
        &progress,
    )
    .await?;
    let from = |s: &str| -> u64 {
        list.iter()
            .filter(|p| p.source == s)
            .map(|p| p.downloaded)
            .sum()
    };
    Ok(Some(SnapsPrepared {
        from_store: from("store"),
        from_mirror: from("mirror"),
        seconds: started.elapsed().as_secs_f64(),
        snaps: list,
    }))
}

/// What `prepare` did for the snaps.
#[derive(serde::Serialize)]
struct SnapsPrepared {
    snaps: Vec<crate::cluster::snaps::PreparedSnap>,
    /// Bytes downloaded from the Snap Store.
    from_store: u64,
    /// Bytes downloaded from the mirror.
    from_mirror: u64,
    /// Time taken.
    seconds: f64,
}

fn snaps_text(snaps: &Option<SnapsPrepared>) -> String {
    use crate::cluster::snaps::human_bytes;
    let Some(s) = snaps else {
        return String::new();
    };
    let mut out = String::new();
    for p in &s.snaps {
        out.push_str(&format!(
            "{:<16} {} {} ({}) revision {} sha3-384:{} ({})\n",
            "snap",
            p.name,
            p.channel,
            p.architecture,
            p.revision,
            p.sha3_384,
            if p.source == "cache" {
                "cached".to_string()
            } else {
                format!("{} from the {}", human_bytes(p.downloaded), p.source)
            }
        ));
    }
    out.push_str(&format!(
        "snaps: {} from the Snap Store, {} from the mirror\n",
        human_bytes(s.from_store),
        human_bytes(s.from_mirror)
    ));
    out
}

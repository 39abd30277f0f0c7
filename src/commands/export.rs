//! `homelab export logs [DIR]`: gather what the lab shows into one scrubbed archive, print its
//! path. The collecting is [`crate::host::export`]'s; this file hands it what only commands know
//! (`status`, `config show`, the stack with its overrides) and prints the result.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cli::ExportLogsArgs;
use crate::edges::error::Result;
use crate::edges::output::{Outcome, OutputFormat, Progress};
use crate::edges::state::LabState;
use crate::host::export::{self, ExportInput, archive};
use crate::model::settings::DEFAULT_LAB;
use crate::up::Waits;

/// `status` reads the VMs and the cluster with bounded calls of its own; this bounds it as a
/// whole, so an API server that accepts connections and never answers cannot hold the export.
const STATUS_TIMEOUT: Duration = Duration::from_secs(180);

/// The hint every failed `up` ends with.
pub(super) fn hint(lab: &str) -> String {
    let lab_flag = if lab == DEFAULT_LAB {
        String::new()
    } else {
        format!("--lab {lab} ")
    };
    format!(
        "`homelab {lab_flag}export logs` writes what the lab shows (VM and cluster logs, state, events; secrets removed) into one archive to look into or share"
    )
}

pub(super) async fn logs(ctx: &Ctx, args: &ExportLogsArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let lab = settings.lab.clone();
    let state = LabState::locate(&lab)?;
    let created = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    let waits = Waits::from_env(settings.test_waits.as_deref())?;
    if !state.exists() {
        ctx.printer.warn(&format!(
            "lab `{lab}` has no state on this computer (`{}`): the archive holds only what Multipass and the host show",
            state.dir().display()
        ));
    }
    ctx.printer
        .start("export", &format!("collecting what lab `{lab}` shows"));
    let status = match tokio::time::timeout(
        STATUS_TIMEOUT,
        super::status::gather(ctx, super::status::Components::LeftOut),
    )
    .await
    {
        Ok(Ok(s)) => Ok(serde_json::to_value(&s).expect("status serializes")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "`homelab status` did not finish within {} s",
            STATUS_TIMEOUT.as_secs()
        )),
    };
    let (scrubber, notes) = export::lab_scrubber(settings, &state);
    let input = ExportInput {
        settings,
        state: &state,
        stack: ctx.stack().map_err(|e| e.to_string()),
        status,
        config: super::config::as_json(settings),
        exec_timeout: waits.exec,
        tail_lines: args.tail,
        progress: &ctx.printer,
    };
    let bundle = export::collect(&input).await;
    export::remove_scratch();
    let header = archive::Header {
        lab: lab.clone(),
        created,
        tool: format!(
            "homelab {} ({} {})",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        notes,
    };
    let packed = archive::pack(bundle, &header, &scrubber);
    let dir = ctx.cwd.join(args.dir.clone().unwrap_or_else(|| ".".into()));
    let path = archive::write(&packed, &dir, &archive::stem(&lab, created))?;
    let count = |s: archive::Status| packed.records.iter().filter(|r| r.status == s).count();
    let (collected, failed, skipped) = (
        count(archive::Status::Collected),
        count(archive::Status::Failed),
        count(archive::Status::Skipped),
    );
    ctx.printer.finish(
        "export",
        Outcome::Done,
        started.elapsed(),
        &format!(
            "{collected} collected, {failed} failed, {skipped} skipped (`README.txt` in the archive says what and why)"
        ),
    );
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&json!({
            "archive": path.display().to_string(),
            "collected": collected,
            "failed": failed,
            "skipped": skipped,
            "entries": packed.records,
        })),
        OutputFormat::Text => ctx.printer.data(&ctx.printer.path(&path)),
    }
    Ok(ExitStatus::Success)
}

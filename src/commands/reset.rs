//! `homelab reset`: every VM of the lab back to the snapshot `up` took at its end, started again,
//! and waited for until the cluster answers and every component is healthy — the next exercise
//! or the next group starts from the lab as `up` left it (issue 14).

use std::time::Instant;

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cli::ResetArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::{Outcome, OutputFormat, Progress, human_duration};
use crate::edges::state::LabState;
use crate::model::settings::{ProviderKind, Settings};
use crate::provider::LabRecord;
use crate::provider::multipass::snapshot::{self, LabHealth, SnapshotRecord};
use crate::provider::multipass::{Multipass, Vms};
use crate::provider::op::{OpCx, Waits};
use crate::up::UpRecord;

/// The progress step `reset` reports under.
const STEP: &str = "reset";

pub(super) async fn run(ctx: &Ctx, _args: &ResetArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let lab = settings.lab.as_str();
    let state = LabState::locate(lab)?;
    // Refusals first: they read nothing but the lab state, and take no lock.
    check(settings, &state)?;
    let _lock = super::lock_lab(ctx, &state, "reset")?;
    // Again under the lock: a `down` may have finished while this one waited.
    let (record, snap) = check(settings, &state)?;
    let waits = Waits::from_env(settings.test_waits.as_deref())?;
    let spec = record
        .spec
        .clone()
        .expect("checked: a multipass lab has its spec");
    let vms = Vms {
        multipass: Multipass::find(waits.exec)?,
        nodes: record.nodes.clone(),
        spec,
    };
    let cx = ResetCx {
        settings,
        state: &state,
        waits,
        progress: &ctx.printer,
    };
    let deployed = UpRecord::load(&state)?
        .steps
        .contains_key(crate::up::steps::DEPLOY);
    let lab_parts = if deployed {
        super::status::lab_manifests(ctx, &state, &record)?
    } else {
        None
    };
    let health = match &lab_parts {
        Some((stack, manifests)) => Some(LabHealth {
            client: record.cluster(&state).client().await?,
            manifests,
            stack,
        }),
        None => None,
    };

    let started = Instant::now();
    ctx.printer.start(
        STEP,
        &format!(
            "restore {} VM(s) to snapshot `{}` and wait until the lab is ready",
            vms.nodes.len(),
            snap.name
        ),
    );
    let moved = match snapshot::restore(&cx, &vms, &snap, health).await {
        Ok(m) => m,
        Err(e) => {
            ctx.printer
                .finish(STEP, Outcome::Failed, started.elapsed(), e.message());
            return Err(e);
        }
    };
    let took = started.elapsed();
    ctx.printer.finish(
        STEP,
        Outcome::Done,
        took,
        &format!("snapshot `{}` restored", snap.name),
    );
    for name in &moved {
        ctx.printer.warn(&format!(
            "VM `{name}` came back with another address: run `homelab up` to point the kube context and the lab's names at it"
        ));
    }
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&json!({
            "lab": lab,
            "snapshot": snap.name,
            "taken_at": snap.taken_at,
            "vms": vms.names(),
            "elapsed_ms": took.as_millis() as u64,
            "moved": moved,
            "components_waited_for": deployed && moved.is_empty(),
        })),
        OutputFormat::Text => {
            let ready = if moved.is_empty() && deployed {
                "the cluster answers and every component is healthy"
            } else {
                "every node is Ready"
            };
            ctx.printer.data(&format!(
                "Lab `{lab}` reset to snapshot `{}` (taken {}) in {}: {ready}\n",
                snap.name,
                snap.when(),
                human_duration(took)
            ));
        }
    }
    Ok(ExitStatus::Success)
}

/// The lab's record and snapshot record, or why `reset` cannot run.
fn check(settings: &Settings, state: &LabState) -> Result<(LabRecord, SnapshotRecord)> {
    let lab = settings.lab.as_str();
    let record = LabRecord::load(state)?;
    let provider = record.as_ref().map_or(settings.provider, |r| r.provider);
    if provider == ProviderKind::Existing {
        let context = record
            .as_ref()
            .map_or_else(|| settings.context_name(), |r| r.context.clone());
        return Err(Error::msg(format!(
            "`homelab reset` is not available on an existing cluster: lab `{lab}` runs on the cluster behind context `{context}`, which homelab did not create and cannot snapshot"
        ))
        .hint(format!(
            "to start the lab's objects afresh: `homelab down --lab {lab}`, then `homelab up --lab {lab} --provider existing`"
        ))
        .hint("`homelab reset` restores the snapshot `homelab up` takes of a lab's Multipass VMs"));
    }
    let Some(record) = record.filter(|r| r.spec.is_some() && !r.nodes.is_empty()) else {
        return Err(Error::msg(format!(
            "lab `{lab}` does not exist, so there is nothing to reset"
        ))
        .hint(format!(
            "`homelab up --lab {lab}` builds it, and snapshots it at its end for `homelab reset`"
        )));
    };
    let Some(snap) = SnapshotRecord::load(state)? else {
        return Err(Error::msg(format!(
            "lab `{lab}` has no snapshot to reset to"
        ))
        .hint(format!(
            "run `homelab up --lab {lab}`: its last step, `snapshot`, takes one of every VM (it stops and starts them once)"
        ))
        .hint("a lab built with `--no-snapshot` or `--until` has none until a whole `up` ran"));
    };
    Ok((record, snap))
}

/// What the snapshot operations see while `reset` runs.
struct ResetCx<'a> {
    settings: &'a Settings,
    state: &'a LabState,
    waits: Waits,
    progress: &'a crate::edges::output::Printer,
}

impl OpCx for ResetCx<'_> {
    fn settings(&self) -> &Settings {
        self.settings
    }
    fn state(&self) -> &LabState {
        self.state
    }
    fn waits(&self) -> &Waits {
        &self.waits
    }
    fn update(&self, detail: &str) {
        self.progress.update(STEP, detail);
    }
    fn warn(&self, message: &str) {
        self.progress.warn(message);
    }
    fn note(&self, message: &str) {
        self.progress.info(message);
    }
}

//! `homelab down [--purge]`: delete and purge the lab's VMs, remove its kube context, forget its
//! cluster; keep the CA and secrets (trust and passwords survive a rebuild) unless `--purge`.

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cli::DownArgs;
use crate::cluster::deploy;
use crate::cluster::kubeconfig::UserKubeconfig;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::output::human::tilde;
use crate::edges::state::LabState;
use crate::host::trust;
use crate::model::settings::ProviderKind;
use crate::model::tls::CA_CERT_FILE;
use crate::provider::multipass::snapshot::{SNAPSHOT_FILE, SnapshotRecord};
use crate::provider::multipass::{self, Multipass, MultipassError};
use crate::provider::{KUBECONFIG_FILE, LAB_RECORD_FILE, LabRecord};
use crate::up::{CLOUD_INIT_FILE, UP_STATE_FILE, Waits};

/// Files that describe the cluster; they go with it. The VMs' snapshot does too: purging a VM
/// deletes its snapshots (Multipass removes the instance's directory).
const CLUSTER_FILES: &[&str] = &[
    KUBECONFIG_FILE,
    LAB_RECORD_FILE,
    UP_STATE_FILE,
    CLOUD_INIT_FILE,
    SNAPSHOT_FILE,
    super::STACK_RECORD_FILE,
];

pub(super) async fn run(ctx: &Ctx, args: &DownArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let lab = settings.lab.as_str();
    let state = LabState::locate(lab)?;
    let _lock = super::lock_lab(
        ctx,
        &state,
        if args.purge { "down --purge" } else { "down" },
    )?;
    // Purging deletes the trust ledger, the only record of how to undo what `trust --apply`
    // changed on this computer: undo it first (`--untrust`) or refuse, before anything is gone.
    if args.purge
        && let Some(reminder) = trust::purge_reminder(&state)?
    {
        if !args.untrust {
            return Err(Error::msg(reminder)
                .hint("`homelab down --purge --untrust` undoes those changes, then purges"));
        }
        let undone = trust::untrust_all(&state, &trust::Runner::for_this_host(), &ctx.printer)?;
        ctx.printer.info(&format!(
            "undid {} change(s) `homelab trust --apply` made on this computer",
            undone.undone.len()
        ));
    }
    let record = LabRecord::load(&state)?;
    let provider = record.as_ref().map_or(settings.provider, |r| r.provider);
    let mut lines = Vec::new();

    let mut deleted = Vec::new();
    match provider {
        ProviderKind::Multipass => {
            let waits = Waits::from_env(settings.test_waits.as_deref())?;
            match Multipass::find(waits.exec) {
                Ok(mp) => {
                    let recorded = record.as_ref().map(|r| r.nodes.as_slice()).unwrap_or(&[]);
                    deleted = multipass::teardown(&mp, lab, recorded).await?;
                    lines.push(if deleted.is_empty() {
                        "no VMs to delete".to_string()
                    } else {
                        format!("deleted and purged VM(s) {}", deleted.join(", "))
                    });
                    if let Some(snap) = SnapshotRecord::load(&state)?
                        && !deleted.is_empty()
                    {
                        lines.push(format!(
                            "their snapshot `{}` for `homelab reset` went with them",
                            snap.name
                        ));
                    }
                }
                // Without Multipass and without a record, this lab never had VMs.
                Err(MultipassError::NotInstalled(_)) if record.is_none() => {}
                Err(e) => return Err(e.into()),
            }
        }
        ProviderKind::Existing => {
            // homelab did not create the cluster, only the lab's objects in it: those go.
            if let Some(r) = &record {
                let client = r.cluster(&state).client().await?;
                let removed = deploy::remove_lab(&client, lab).await?;
                lines.push(format!(
                    "deleted the lab's {} object(s) from the cluster behind context `{}`",
                    removed.deleted.len(),
                    r.context
                ));
                for (object, why) in &removed.kept {
                    lines.push(format!("kept {object}: {why}"));
                }
            }
            lines.push(format!(
                "the cluster behind context `{}` keeps running: homelab did not create it",
                record.as_ref().map_or("(current)", |r| r.context.as_str())
            ));
        }
    }

    let context = settings.context_name();
    let kubeconfigs = UserKubeconfig::from_env()?.remove(&context)?;
    for f in &kubeconfigs {
        lines.push(format!(
            "removed kube context `{context}` from `{}`",
            tilde(f)
        ));
    }

    let ca_existed = state.path(CA_CERT_FILE).exists();
    if args.purge {
        let existed = state.exists() && !state.holds_only_the_lock()?;
        state.purge()?;
        if existed {
            lines.push(format!(
                "deleted the lab's CA, secrets and state in `{}`",
                tilde(state.dir())
            ));
        }
        if ca_existed {
            ctx.printer.info(
                "note: a trust store or browser you added the lab CA to by hand still trusts it; remove it there (`homelab trust` lists where)",
            );
        }
    } else {
        for f in CLUSTER_FILES {
            state.remove(f)?;
        }
        // A lab that never had state got its directory only for the lock: leave nothing.
        if state.holds_only_the_lock()? {
            state.purge()?;
        }
        if state.exists() {
            lines.push(format!(
                "kept the lab's CA and secrets in `{}` (`homelab down --purge` deletes them)",
                tilde(state.dir())
            ));
        }
    }
    if lines.is_empty() {
        lines.push(format!("lab `{lab}` has nothing to remove"));
    }

    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&json!({
            "lab": lab,
            "deleted_vms": deleted,
            "kubeconfigs_changed": kubeconfigs,
            "purged": args.purge,
        })),
        OutputFormat::Text => ctx.printer.data(&lines.join("\n")),
    }
    Ok(ExitStatus::Success)
}

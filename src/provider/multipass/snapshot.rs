//! Snapshots of the lab's VMs for `homelab reset` (issue 14): `up`'s last step takes one of every
//! VM once the lab is proven ([`ensure`]), `reset` brings every VM back to it ([`restore`]), and
//! both wait until the lab answers again ([`back_up`]).
//!
//! Architecture invariant: Multipass's own rules decide the order of the calls. It snapshots and
//! restores only stopped instances (`Daemon::snapshot`/`Daemon::restore` in
//! canonical/multipass v1.16.3 `src/daemon/daemon.cpp`), so every operation here is stop →
//! snapshot/restore → start, and a VM it stopped is started again whatever went wrong in
//! between. `restore` always passes `--destructive`: without it Multipass asks on the terminal
//! whether to snapshot the current state first, and a client without one fails
//! (`src/client/cli/cmd/restore.cpp`). Deleting a VM with `--purge` deletes its snapshots with
//! it (`Daemon::release_resources` removes the instance's directory), which is how `down`
//! removes them. What is recorded lives in the lab state ([`SNAPSHOT_FILE`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cli::{Multipass, MultipassError};
use super::json::JsonError;
use super::ops::{self, Vms};
use crate::cluster::deploy;
use crate::edges::error::{Diagnostic, Error, Result};
use crate::edges::output::human_duration;
use crate::edges::state::{LabState, StateError};
use crate::model::render::Manifests;
use crate::model::stack::Stack;
use crate::provider::op::{OpCx, StepReport};

/// The one snapshot homelab takes of every lab VM and `homelab reset` restores.
pub const SNAPSHOT_NAME: &str = "homelab-ready";

/// File in the lab state recording the snapshot (goes with the VMs: `down` removes it).
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the lab state remembers of the snapshot, for `status` and `reset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Multipass's name of the snapshot (the same on every VM).
    pub name: String,
    /// The VMs it was taken of, first node first.
    pub vms: Vec<String>,
    /// When it was taken (RFC 3339, UTC); `None` when homelab found it without a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    /// How long stopping, snapshotting and starting the lab again took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

impl SnapshotRecord {
    /// The record in the lab state, if any.
    pub fn load(state: &LabState) -> Result<Option<SnapshotRecord>, StateError> {
        state.read_json(SNAPSHOT_FILE)
    }

    /// When it was taken, for people.
    pub fn when(&self) -> String {
        self.taken_at
            .clone()
            .unwrap_or_else(|| "by an earlier run".into())
    }
}

/// One snapshot as `multipass list --snapshots --format json` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The comment it was taken with.
    pub comment: String,
    /// The snapshot it was taken on top of (empty for none).
    pub parent: String,
}

/// Read `multipass list --snapshots --format json` (contracts/multipass/list-snapshots.json):
/// instance → snapshot → entry. Instances without snapshots are absent.
pub fn parse_snapshots(
    out: &str,
) -> Result<BTreeMap<String, BTreeMap<String, SnapshotEntry>>, JsonError> {
    const WHAT: &str = "the output of `multipass list --snapshots --format json`";
    let bad = |message: String| JsonError {
        what: WHAT.into(),
        message,
    };
    let v: Value = serde_json::from_str(out).map_err(|e| bad(e.to_string()))?;
    let info = v
        .get("info")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `info` object".into()))?;
    let mut all = BTreeMap::new();
    for (instance, snapshots) in info {
        let snapshots = snapshots
            .as_object()
            .ok_or_else(|| bad(format!("`info.{instance}` is not an object")))?;
        let mut mine = BTreeMap::new();
        for (name, s) in snapshots {
            let field = |key: &str| s.get(key).and_then(Value::as_str).unwrap_or("").to_string();
            mine.insert(
                name.clone(),
                SnapshotEntry {
                    comment: field("comment"),
                    parent: field("parent"),
                },
            );
        }
        all.insert(instance.clone(), mine);
    }
    Ok(all)
}

/// What Multipass refused about snapshots, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The Multipass driver in use has no snapshots.
    #[error("Multipass cannot take snapshots with the driver it uses (`{argv}`: {said})")]
    Unsupported {
        /// The command line.
        argv: String,
        /// What Multipass said.
        said: String,
    },
    /// A lab VM lacks homelab's snapshot.
    #[error("lab `{lab}` has no snapshot to reset to: VM `{vm}` has no snapshot `{name}`")]
    Missing {
        /// Lab.
        lab: String,
        /// The VM without it.
        vm: String,
        /// The snapshot's name.
        name: String,
    },
}

impl Diagnostic for SnapshotError {
    fn hints(&self) -> Vec<String> {
        match self {
            SnapshotError::Unsupported { .. } => vec![
                "Multipass snapshots instances with its `qemu` driver (the default on Linux and macOS), `hyperv` and `virtualbox`; `multipass get local.driver` shows yours".into(),
                "`homelab up --no-snapshot` builds the lab without one (then `homelab reset` is not available)".into(),
            ],
            SnapshotError::Missing { lab, .. } => vec![format!(
                "`homelab up --lab {lab}` takes it at its end (its step `snapshot`); `multipass list --snapshots` shows what exists"
            )],
        }
    }
}

/// Multipass's snapshot commands (the rest of the client is in [`super::cli`]).
impl Multipass {
    /// `multipass list --snapshots --format json`.
    pub async fn list_snapshots(
        &self,
    ) -> std::result::Result<BTreeMap<String, BTreeMap<String, SnapshotEntry>>, Error> {
        let cmd = self
            .cmd("look at the lab VMs' snapshots")
            .args(["list", "--snapshots", "--format", "json"])
            .timeout(Duration::from_secs(60));
        let out = self.snapshot_run(cmd, None).await?;
        Ok(parse_snapshots(&out.stdout).map_err(MultipassError::from)?)
    }

    /// `multipass stop <names>…`.
    pub async fn stop(&self, names: &[String]) -> std::result::Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("stop {}", listed(names)))
            .arg("stop")
            .args(names);
        self.run(cmd, names.first().map(String::as_str))
            .await
            .map(drop)
    }

    /// `multipass start <names>…`.
    pub async fn start_all(&self, names: &[String]) -> std::result::Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("start {} again", listed(names)))
            .arg("start")
            .args(names);
        self.run(cmd, names.first().map(String::as_str))
            .await
            .map(drop)
    }

    /// `multipass snapshot --name <snapshot> --comment <comment> <name>` (the VM is stopped).
    pub async fn snapshot(
        &self,
        name: &str,
        snapshot: &str,
        comment: &str,
    ) -> std::result::Result<(), Error> {
        let cmd = self
            .cmd(format!("take the snapshot `{snapshot}` of `{name}`"))
            .args(["snapshot", "--name", snapshot, "--comment", comment, name]);
        self.snapshot_run(cmd, Some(name)).await.map(drop)
    }

    /// `multipass restore --destructive <name>.<snapshot>` (the VM is stopped; its current state
    /// is discarded).
    pub async fn restore(&self, name: &str, snapshot: &str) -> std::result::Result<(), Error> {
        let cmd = self
            .cmd(format!("restore `{name}` to its snapshot `{snapshot}`"))
            .args(["restore", "--destructive", &format!("{name}.{snapshot}")]);
        self.snapshot_run(cmd, Some(name)).await.map(drop)
    }

    /// Run a snapshot command; an unsupported driver becomes [`SnapshotError::Unsupported`].
    async fn snapshot_run(
        &self,
        cmd: crate::edges::process::Cmd,
        instance: Option<&str>,
    ) -> std::result::Result<crate::edges::process::Output, Error> {
        let out = cmd.clone().run_unchecked_async().await?;
        // include/multipass/exceptions/not_implemented_on_this_backend_exception.h (v1.16.3).
        if out.code == Some(2) && out.stderr.contains("feature is not implemented") {
            return Err(SnapshotError::Unsupported {
                argv: cmd.display(),
                said: out.stderr.trim().to_string(),
            }
            .into());
        }
        match super::cli::classify(&cmd, instance, out.clone()) {
            None => Ok(out),
            Some(e) => Err(e.into()),
        }
    }
}

fn listed(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the lab needs to be called ready again after its VMs started: every component healthy.
pub struct LabHealth<'a> {
    /// A client for the lab's cluster.
    pub client: kube::Client,
    /// The lab's manifests (what to look at).
    pub manifests: &'a Manifests,
    /// The stack they were rendered from.
    pub stack: &'a Stack,
}

/// What `up` tells the `snapshot` step.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotOptions {
    /// `--no-snapshot`: take none.
    pub skip: bool,
    /// An earlier step of this run changed the lab: a snapshot found is older than the lab.
    pub lab_changed: bool,
}

/// `up`'s step `snapshot`: take [`SNAPSHOT_NAME`] of every lab VM that lacks it (stop, snapshot,
/// start, wait until the lab is back), or find it there.
pub async fn ensure(
    cx: &dyn OpCx,
    vms: &Vms,
    options: SnapshotOptions,
    health: Option<LabHealth<'_>>,
) -> Result<StepReport> {
    if options.skip {
        return Ok(StepReport::skipped(
            "not taken (`--no-snapshot`); `homelab reset` needs it",
        ));
    }
    let mp = &vms.multipass;
    let state = cx.state();
    let names = vms.names();
    let have = mp.list_snapshots().await?;
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !have.get(*n).is_some_and(|s| s.contains_key(SNAPSHOT_NAME)))
        .cloned()
        .collect();
    let record = SnapshotRecord::load(state)?;
    if missing.is_empty() {
        let record = match record {
            Some(r) if r.vms == names => r,
            // Found without (or with another) record: say so from now on.
            _ => {
                let r = SnapshotRecord {
                    name: SNAPSHOT_NAME.into(),
                    vms: names.clone(),
                    taken_at: None,
                    took_ms: None,
                };
                state.write_json(SNAPSHOT_FILE, &r)?;
                r
            }
        };
        if options.lab_changed {
            // Taken again only when asked: it costs a stop and start of every VM.
            cx.warn(&format!(
                "this run changed the lab after its snapshot `{SNAPSHOT_NAME}` was taken ({}): `homelab reset` goes back to the lab as it was then; to snapshot it as it is now, delete the old one (`multipass delete --purge {}`) and run `homelab up` again",
                record.when(),
                names
                    .iter()
                    .map(|n| format!("{n}.{SNAPSHOT_NAME}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        return Ok(StepReport::skipped(format!(
            "`{SNAPSHOT_NAME}` of {} taken {}",
            count_vms(names.len()),
            record.when()
        )));
    }
    cx.note(&format!(
        "taking snapshot `{SNAPSHOT_NAME}` of {} for `homelab reset`: Multipass snapshots only stopped VMs, so they stop and start again (once; `homelab up --no-snapshot` skips it)",
        listed(&missing)
    ));
    let started = Instant::now();
    cx.update(&format!("stopping {}", listed(&missing)));
    mp.stop(&missing).await?;
    let mut taken = Ok(());
    for name in &missing {
        cx.update(&format!("taking snapshot `{SNAPSHOT_NAME}` of {name}"));
        taken = mp
            .snapshot(
                name,
                SNAPSHOT_NAME,
                "homelab: the lab as `homelab up` left it; `homelab reset` restores it",
            )
            .await;
        if taken.is_err() {
            break;
        }
    }
    // Started again whatever happened: a snapshot that failed must not leave the lab down.
    cx.update(&format!("starting {} again", listed(&missing)));
    let restarted = mp.start_all(&missing).await;
    taken?;
    restarted?;
    for name in back_up(cx, vms, health).await? {
        cx.warn(&format!(
            "VM `{name}` came back from its snapshot stop with another address: run `homelab up` again to point the kube context and the lab's names at it"
        ));
    }
    let took = started.elapsed();
    let record = SnapshotRecord {
        name: SNAPSHOT_NAME.into(),
        vms: names.clone(),
        taken_at: Some(now_rfc3339()),
        took_ms: Some(took.as_millis() as u64),
    };
    state.write_json(SNAPSHOT_FILE, &record)?;
    Ok(StepReport::done(format!(
        "`{SNAPSHOT_NAME}` of {} taken; stopped, snapshotted and ready again in {}",
        count_vms(missing.len()),
        human_duration(took)
    )))
}

/// `homelab reset`: every lab VM back to `record`'s snapshot, started, and the lab ready again.
/// Returns the VMs whose address changed (the kubeconfig and hostnames then need `up`).
pub async fn restore(
    cx: &dyn OpCx,
    vms: &Vms,
    record: &SnapshotRecord,
    health: Option<LabHealth<'_>>,
) -> Result<Vec<String>> {
    let mp = &vms.multipass;
    let lab = cx.settings().lab.clone();
    let names = vms.names();
    let have = mp.list_snapshots().await?;
    if let Some(vm) = names
        .iter()
        .find(|n| !have.get(*n).is_some_and(|s| s.contains_key(&record.name)))
    {
        return Err(SnapshotError::Missing {
            lab,
            vm: vm.clone(),
            name: record.name.clone(),
        }
        .into());
    }
    cx.update(&format!("stopping {}", listed(&names)));
    mp.stop(&names).await?;
    let mut restored = Ok(());
    for name in &names {
        cx.update(&format!("restoring {name} to `{}`", record.name));
        restored = mp.restore(name, &record.name).await;
        if restored.is_err() {
            break;
        }
    }
    cx.update(&format!("starting {} again", listed(&names)));
    let restarted = mp.start_all(&names).await;
    restored?;
    restarted?;
    back_up(cx, vms, health).await
}

/// After the VMs were started again: wait until they run with an address, every node is Ready
/// (`up`'s own waits) and every component of the lab is healthy. Returns the VMs whose address
/// changed; then the components are not waited for (the kubeconfig points at the old address
/// until `up` runs again).
pub async fn back_up(
    cx: &dyn OpCx,
    vms: &Vms,
    health: Option<LabHealth<'_>>,
) -> Result<Vec<String>> {
    let mp = &vms.multipass;
    let running = ops::wait_running(cx, mp, &vms.names()).await?;
    let moved: Vec<String> = vms
        .nodes
        .iter()
        .filter(|n| running.get(&n.name).and_then(|i| i.ip()) != Some(n.ip.as_str()))
        .map(|n| n.name.clone())
        .collect();
    ops::ready(cx, vms).await?;
    if moved.is_empty()
        && let Some(h) = health
    {
        wait_components(cx, &h, &vms.first().name).await?;
    }
    Ok(moved)
}

/// Poll the health of every component (as `status` reads it) until all are healthy, within the
/// readiness wait. After a restart the pods come back on their own; nothing is applied.
async fn wait_components(cx: &dyn OpCx, h: &LabHealth<'_>, first: &str) -> Result<()> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let seen = match deploy::health(&h.client, h.manifests, h.stack).await {
            Ok(all) => {
                let waiting: Vec<String> = all
                    .iter()
                    .filter(|c| c.state != "healthy" && c.state != "addon")
                    .map(|c| format!("{} {}", c.name, c.state))
                    .collect();
                if waiting.is_empty() {
                    return Ok(());
                }
                format!("waiting for {}", waiting.join(", "))
            }
            Err(e) => format!("the API does not answer yet: {e}"),
        };
        ops::not_ready_yet(cx, first, started, &mut attempt, seen).await?;
    }
}

fn count_vms(n: usize) -> String {
    if n == 1 {
        "1 VM".into()
    } else {
        format!("{n} VMs")
    }
}

fn now_rfc3339() -> String {
    // Whole seconds: people read it in `status` and `reset`.
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_the_contract() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("contracts/multipass/list-snapshots.json"),
        )
        .unwrap();
        let all = parse_snapshots(&text).unwrap();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["hale-roller", "prosperous-spadefish"]
        );
        assert_eq!(
            all["hale-roller"]["rocking"],
            SnapshotEntry {
                comment: "A very long comment that should be truncated by the table formatter"
                    .into(),
                parent: "pristine".into(),
            }
        );
        assert_eq!(all["prosperous-spadefish"]["snapshot2"].parent, "");
        assert_eq!(all["prosperous-spadefish"].len(), 2);
    }

    #[test]
    fn no_snapshots_and_bad_output() {
        let none = parse_snapshots("{\n    \"errors\": [\n    ],\n    \"info\": {\n    }\n}\n");
        assert_eq!(none.unwrap(), BTreeMap::new());
        let e = parse_snapshots("{\"list\": []}").unwrap_err();
        assert!(e.message.contains("no `info`"), "{e}");
    }
}

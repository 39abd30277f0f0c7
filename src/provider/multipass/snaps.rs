//! microk8s from the cache: when `homelab prepare` put the microk8s snap of the lab's channel and
//! its base in the cache, the VMs install them from files `up` transfers, not from the Snap Store.
//!
//! Place in the data flow: `cloud-init` step → [`cached`] decides the user-data (`provision.sh
//! --await-files`: cloud-init does everything before the install, then writes
//! [`AWAITING_MARKER`] and ends, so Multipass's launch returns) → `provisioned` step: a VM with
//! that marker gets the files ([`install`]: hashes checked here, `multipass transfer`, then
//! `provision.sh --from-files` through `multipass exec`, which `snap ack`s the assertions,
//! installs the files without `--dangerous`, holds refreshes and writes the usual completion or
//! failure marker) → the marker wait goes on as for a store install.
//!
//! Architecture invariant: the VM says what it waits for (its marker), so a VM launched with the
//! store user-data is never handed files, and a VM that waits for files whose cache is gone gets
//! an error saying to run `homelab prepare`, not a silent store install.

use std::path::Path;

use crate::cluster::snaps::{self, SnapRecord};
use crate::cluster::upstream;
use crate::edges::error::{Error, Result};
use crate::edges::state::{self, LabState};
use crate::provider::op::OpCx;

use super::Multipass;

/// Written by `provision.sh --await-files`: the VM waits for `up` to bring the snaps.
pub const AWAITING_MARKER: &str = "/var/lib/homelab/awaiting-snaps";
/// The provisioning script cloud-init wrote.
pub const PROVISION_SCRIPT: &str = "/var/lib/homelab/provision.sh";
/// Where the files go in the VM (writable by `multipass transfer`'s user; removed afterwards).
const IN_VM_DIR: &str = "/tmp";

/// The snaps the VMs install for `channel` when the cache has them all (bases first), for the
/// VMs' architecture and the lab's pins.
pub fn cached(lab: &LabState, channel: &str) -> Result<Option<Vec<SnapRecord>>> {
    let Some(arch) = snaps::vm_architecture() else {
        return Ok(None);
    };
    let lock = upstream::read_lock(lab)?;
    Ok(snaps::cached(
        &state::cache_root()?,
        &lock.snaps,
        channel,
        arch,
    )?)
}

/// Whether the lab's VMs were last launched with the user-data that waits for the snaps (the
/// copy `vms` keeps): only then is a VM asked, so a store-installed lab costs no extra call.
pub fn launched_awaiting(cx: &dyn OpCx) -> Result<bool> {
    Ok(cx
        .state()
        .read(super::CLOUD_INIT_FILE)?
        .is_some_and(|u| String::from_utf8_lossy(&u).contains("provision.sh, --await-files,")))
}

/// Whether the VM waits for the snaps.
pub async fn awaiting(mp: &Multipass, name: &str) -> Result<bool> {
    let out = mp
        .exec(
            name,
            &["test", "-f", AWAITING_MARKER],
            format!("check whether `{name}` waits for the microk8s snaps"),
        )
        .await?;
    Ok(out.success())
}

/// Check the cached files, transfer them into `name` and run the install there (bounded by the
/// provisioning wait). The script's own markers say how it went.
pub async fn install(cx: &dyn OpCx, mp: &Multipass, name: &str, channel: &str) -> Result<String> {
    let lab = cx.state();
    let missing = || {
        Error::msg(format!(
            "VM `{name}` waits for the microk8s snaps of {channel}, but the cache does not hold them"
        ))
        .hint("run `homelab prepare`, then `homelab up` again")
        .hint("or rebuild the VMs to install from the Snap Store: `homelab up --recreate`")
    };
    let list = cached(lab, channel)?.ok_or_else(missing)?;
    let root = state::cache_root()?;
    let dir = snaps::dir(&root);
    for rec in &list {
        cx.update(&format!("checking {} revision {}", rec.name, rec.revision));
        let (r, checked_root) = (rec.clone(), root.clone());
        tokio::task::spawn_blocking(move || snaps::verify_cached(&checked_root, &r))
            .await
            .expect("hash thread panicked")
            .map_err(|why| {
                Error::msg(format!(
                    "the cached {} revision {} cannot be used: {why}",
                    rec.name, rec.revision
                ))
                .hint("run `homelab prepare` to fetch it again")
            })?;
    }
    let mut in_vm = Vec::new();
    for rec in &list {
        cx.update(&format!(
            "copying {} ({}) into {name}",
            rec.file,
            snaps::human_bytes(rec.size)
        ));
        for file in [&rec.assertions, &rec.file] {
            mp.transfer(&dir.join(file), name, &vm_path(file)).await?;
        }
        in_vm.push(vm_path(&rec.file));
    }
    cx.update(&format!("installing microk8s on {name} from the cache"));
    let mut argv = vec!["sudo", "sh", PROVISION_SCRIPT, "--from-files", channel];
    argv.extend(in_vm.iter().map(String::as_str));
    // The script waits for microk8s to be ready (up to 600 s): the provisioning bound applies.
    let long = mp.with_exec_timeout(cx.waits().provisioned);
    let out = long
        .exec(
            name,
            &argv,
            format!("install microk8s on `{name}` from the cache"),
        )
        .await?;
    for rec in &list {
        for file in [&rec.assertions, &rec.file] {
            mp.exec(
                name,
                &["rm", "-f", &vm_path(file)],
                format!("remove `{file}` from `{name}`"),
            )
            .await?;
        }
    }
    // A failure of the script wrote the failure marker, which the wait reads and reports with
    // its step; a failure without one (the script could not run at all) is reported here.
    if !out.success() {
        let marked = mp
            .exec(
                name,
                &["cat", super::FAILED_MARKER],
                format!("check whether provisioning failed on `{name}`"),
            )
            .await?;
        if !marked.success() || marked.stdout.trim().is_empty() {
            let said = [out.stderr.trim(), out.stdout.trim()]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("no output");
            return Err(Error::msg(format!(
                "install microk8s on `{name}` from the cache: `{}` exited with {}: {said}",
                argv.join(" "),
                out.code.map_or("a signal".into(), |c| c.to_string())
            ))
            .hint(format!(
                "`multipass exec {name} -- sudo cat {PROVISION_SCRIPT}` shows the script cloud-init wrote"
            )));
        }
    }
    Ok(list
        .iter()
        .map(|r| format!("{} {}", r.name, r.revision))
        .collect::<Vec<_>>()
        .join(", "))
}

fn vm_path(file: &str) -> String {
    Path::new(IN_VM_DIR).join(file).display().to_string()
}

//! `node-names`: the lab's hostnames in every VM's `/etc/hosts`, pointing at the first node, so
//! the nodes themselves (containerd pulling `gitea.<domain>/lab/nyan-cat`, the kubelet) resolve
//! them without public DNS — offline, or behind a router that drops DNS answers with private
//! addresses. Pods resolve the same names through the lab's CoreDNS zone (component `lab-dns`).
//!
//! Place in the data flow: after `provisioned` (cloud-init wrote `homelab-hosts` and set
//! `manage_etc_hosts: localhost`, `templates/cloud-init/user-data.yaml`) → read `/etc/hosts` on
//! each VM → when homelab's block is not exactly [`hosts_block`], run `homelab-hosts` there. The
//! VMs' addresses come from the `vms` step, so an address that changed since the last run (a
//! restarted laptop) is written on the next `up`.
//!
//! Architecture invariant: looks first; a lab whose entries are right costs one `cat` per VM.

use futures::future::join_all;

use super::cli::Multipass;
use super::ops::Vms;
use crate::edges::error::Result;
use crate::model::render::{self, Domain};
use crate::model::stack::Stack;
use crate::provider::op::{OpCx, StepReport};

/// The program cloud-init installs on every VM.
pub const HOSTS_TOOL: &str = "/usr/local/sbin/homelab-hosts";
/// The first line of homelab's block in `/etc/hosts` (as `homelab-hosts` writes it).
pub const BLOCK_BEGIN: &str = "# BEGIN homelab lab names";
/// Its last line.
pub const BLOCK_END: &str = "# END homelab lab names";

/// Homelab's block as `homelab-hosts ADDRESS NAME...` writes it.
pub fn hosts_block(address: &str, names: &[String]) -> String {
    format!(
        "{BLOCK_BEGIN}\n{address} {}\n{BLOCK_END}\n",
        names.join(" ")
    )
}

/// Whether `/etc/hosts` holds exactly homelab's block for `address` and `names`, once.
pub fn has_block(etc_hosts: &str, address: &str, names: &[String]) -> bool {
    let want = hosts_block(address, names);
    etc_hosts.matches(BLOCK_BEGIN).count() == 1 && etc_hosts.contains(&want)
}

/// Write the lab's hostnames into each VM's `/etc/hosts` where they are missing or stale.
pub async fn node_names(cx: &dyn OpCx, stack: &Stack, vms: &Vms) -> Result<StepReport> {
    let mp = &vms.multipass;
    let address = vms.nodes[0].ip.clone();
    // The names `render` gives the lab (`<ip>.sslip.io` follows the first node's address).
    let domain = Domain::resolve(cx.settings().domain.as_deref(), Some(&address));
    let names: Vec<String> = render::hosts(stack, &domain).into_values().collect();
    if names.is_empty() {
        return Ok(StepReport::skipped(
            "the stack gives no component a hostname",
        ));
    }
    let results = join_all(
        vms.nodes
            .iter()
            .map(|n| one_node(cx, mp, &n.name, &address, &names)),
    )
    .await;
    let mut written = Vec::new();
    for r in results {
        if let Some(name) = r? {
            written.push(name);
        }
    }
    let what = format!("{} → {address}", names.join(", "));
    Ok(if written.is_empty() {
        StepReport::skipped(format!("{what} on every node"))
    } else {
        StepReport::done(format!("{what} written on {}", written.join(", ")))
    })
}

/// `Some(vm)` when its `/etc/hosts` was written.
async fn one_node(
    cx: &dyn OpCx,
    mp: &Multipass,
    vm: &str,
    address: &str,
    names: &[String],
) -> Result<Option<String>> {
    let current = mp
        .exec_ok(
            vm,
            &["cat", "/etc/hosts"],
            format!("read /etc/hosts on `{vm}`"),
        )
        .await?;
    if has_block(&current.stdout, address, names) {
        return Ok(None);
    }
    let mut argv = vec!["sudo", HOSTS_TOOL, address];
    argv.extend(names.iter().map(String::as_str));
    match mp
        .exec_ok(
            vm,
            &argv,
            format!("write the lab's names into /etc/hosts on `{vm}`"),
        )
        .await
    {
        Ok(_) => Ok(Some(vm.to_string())),
        Err(super::MultipassError::Failed(crate::edges::process::ProcessError::Failed {
            stderr,
            ..
        })) if stderr.contains("command not found") => {
            // A VM launched by a homelab from before the tool: it keeps working as it did.
            cx.warn(&format!(
                "VM `{vm}` has no `{HOSTS_TOOL}` (launched by an earlier homelab), so its containerd resolves the lab's names through public DNS; `homelab up --recreate` rebuilds it with them"
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_recognised_only_when_exact() {
        let names = vec!["drone.d".to_string(), "gitea.d".to_string()];
        let base = "127.0.0.1 localhost\n";
        let ok = format!("{base}{}", hosts_block("10.0.0.5", &names));
        assert!(has_block(&ok, "10.0.0.5", &names));
        assert!(!has_block(&ok, "10.0.0.6", &names), "a moved address");
        assert!(!has_block(base, "10.0.0.5", &names), "no block");
        let twice = format!("{ok}{}", hosts_block("10.0.0.5", &names));
        assert!(!has_block(&twice, "10.0.0.5", &names), "a duplicate block");
        assert!(
            !has_block(&ok, "10.0.0.5", &names[..1]),
            "a name was added since"
        );
    }
}

//! What to do with each lab VM, decided from what `multipass info` shows and what the lab state
//! remembers: launch, reuse, start, recover, recreate; size drift; IP changes; who still has to
//! join; whether every node is Ready.
//!
//! Architecture invariant: pure. The effectful shell (`super::ops`) gathers the facts, calls
//! these functions, and runs the commands they choose; every rule here is unit-tested without a
//! VM.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json::{Instance, NodeView, VmState};
use crate::model::demand::Demand;
use crate::model::settings::{ByteSize, Origin, ProviderKind, Settings};
use crate::provider::LabRecord;

/// The name of node `index` (1-based) of `lab`: `homelab-<lab>-<index>`.
///
/// Every node is numbered, the first too, so growing a lab from one node to three keeps the
/// first VM's name (and the kube node name, which is the VM's hostname).
pub fn vm_name(lab: &str, index: u32) -> String {
    format!("homelab-{lab}-{index}")
}

/// The node index of `name` when it is one of `lab`'s VMs.
pub fn vm_index(lab: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(&format!("homelab-{lab}-"))?;
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) || rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

/// The lab's VMs among all instances, by node index.
pub fn lab_instances<'a>(
    lab: &str,
    instances: &'a BTreeMap<String, Instance>,
) -> BTreeMap<u32, &'a Instance> {
    instances
        .values()
        .filter_map(|i| vm_index(lab, &i.name).map(|n| (n, i)))
        .collect()
}

/// Size and image of each VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// CPUs.
    pub cpus: u32,
    /// Memory.
    pub memory: ByteSize,
    /// Disk.
    pub disk: ByteSize,
    /// Ubuntu image (`24.04`).
    pub image: String,
}

/// The shape of the whole lab: how many VMs of which size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Number of VMs.
    pub nodes: u32,
    /// Each VM.
    pub vm: VmSpec,
}

/// The lab shape `up` aims for: what the settings ask for, except that keys the user did not
/// set keep the value the lab was built with, so a plain `homelab up` on a lab created with
/// `--nodes 3 --memory 12G` neither shrinks it nor warns about it.
pub fn effective_spec(settings: &Settings, image: &str, recorded: Option<&LabSpec>) -> LabSpec {
    let explicit = |key: &str| {
        settings
            .origins
            .get(key)
            .is_some_and(|o| *o != Origin::Default)
    };
    let asked = LabSpec {
        nodes: settings.vm.nodes,
        vm: VmSpec {
            cpus: settings.vm.cpus,
            memory: settings.vm.memory,
            disk: settings.vm.disk,
            image: image.to_string(),
        },
    };
    let Some(rec) = recorded else {
        return asked;
    };
    LabSpec {
        nodes: if explicit("vm.nodes") {
            asked.nodes
        } else {
            rec.nodes
        },
        vm: VmSpec {
            cpus: if explicit("vm.cpus") {
                asked.vm.cpus
            } else {
                rec.vm.cpus
            },
            memory: if explicit("vm.memory") {
                asked.vm.memory
            } else {
                rec.vm.memory
            },
            disk: if explicit("vm.disk") {
                asked.vm.disk
            } else {
                rec.vm.disk
            },
            image: if explicit("vm.image") {
                asked.vm.image
            } else {
                rec.vm.image.clone()
            },
        },
    }
}

/// What `up`'s preflight checks for this lab (issue 12): the shape `up` aims for, and how many
/// of its VMs the last run did not leave behind (only those need new disk; a VM rebuilt with
/// `--recreate` gives its old disk back first).
pub fn preflight_demand(settings: &Settings, record: Option<&LabRecord>) -> Demand {
    let recorded = record.filter(|r| r.provider == ProviderKind::Multipass);
    let spec = effective_spec(
        settings,
        &settings.vm.image,
        recorded.and_then(|r| r.spec.as_ref()),
    );
    let built = recorded.map_or(0, |r| {
        r.nodes
            .iter()
            .filter(|n| vm_index(&settings.lab, &n.name).is_some_and(|i| i <= spec.nodes))
            .count()
    });
    Demand {
        nodes: spec.nodes,
        memory: spec.vm.memory,
        disk: spec.vm.disk,
        new_vms: spec
            .nodes
            .saturating_sub(u32::try_from(built).unwrap_or(u32::MAX)),
    }
}

/// What to do with one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmAction {
    /// It runs: use it as it is.
    Reuse,
    /// It does not exist: `multipass launch`.
    Launch,
    /// Stopped or suspended: `multipass start`.
    Start,
    /// Deleted but not purged: `multipass recover`, then `start`.
    Recover,
    /// Running with a shutdown scheduled: `multipass stop --cancel`.
    CancelShutdown,
    /// On its way up (or suspending): wait until it runs, then start it if needed.
    Wait,
    /// `--recreate`: `multipass delete --purge`, then launch.
    Recreate,
    /// A state homelab cannot fix by itself.
    Unusable(VmState),
}

/// Decide what to do with one VM from what `info` shows (`None`: no such instance).
pub fn decide(observed: Option<&Instance>, recreate: bool) -> VmAction {
    let Some(inst) = observed else {
        return VmAction::Launch;
    };
    if recreate {
        return VmAction::Recreate;
    }
    match &inst.state {
        VmState::Running => VmAction::Reuse,
        VmState::Stopped | VmState::Suspended => VmAction::Start,
        VmState::Deleted => VmAction::Recover,
        VmState::DelayedShutdown => VmAction::CancelShutdown,
        VmState::Starting | VmState::Restarting | VmState::Suspending => VmAction::Wait,
        other @ (VmState::Unknown | VmState::Other(_)) => VmAction::Unusable(other.clone()),
    }
}

/// How a running VM differs from the size asked for, one phrase per difference.
///
/// The guest sees a little less memory and disk than Multipass was given (firmware, filesystem
/// overhead), so sizes count as equal within 85–105 % of what was asked.
pub fn size_drift(want: &VmSpec, have: &Instance) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cpus) = have.cpus
        && cpus != want.cpus
    {
        out.push(format!("{cpus} CPUs (asked for {})", want.cpus));
    }
    let off = |have: u64, want: ByteSize| {
        let w = want.0 as f64;
        (have as f64) < w * 0.85 || (have as f64) > w * 1.05
    };
    if let Some(m) = have.memory_total
        && off(m, want.memory)
    {
        out.push(format!("{} memory (asked for {})", gib(m), want.memory));
    }
    if let Some(d) = have.disk_total
        && off(d, want.disk)
    {
        out.push(format!("{} disk (asked for {})", gib(d), want.disk));
    }
    out
}

pub use crate::model::settings::gib;

/// One node as the lab state remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// VM name.
    pub name: String,
    /// Its primary IPv4 address at the last run.
    pub ip: String,
}

/// A node whose address changed since the last run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpChange {
    /// VM name.
    pub name: String,
    /// Address at the last run.
    pub old: String,
    /// Address now.
    pub new: String,
}

/// Nodes whose address differs from the recorded one (new nodes are not changes).
pub fn ip_changes(recorded: &[NodeRecord], now: &[NodeRecord]) -> Vec<IpChange> {
    now.iter()
        .filter_map(|n| {
            let old = recorded.iter().find(|r| r.name == n.name)?;
            (old.ip != n.ip).then(|| IpChange {
                name: n.name.clone(),
                old: old.ip.clone(),
                new: n.ip.clone(),
            })
        })
        .collect()
}

/// Nodes (after the first) that Kubernetes does not list yet, so they still have to join.
pub fn to_join(expected: &[String], registered: &[NodeView]) -> Vec<String> {
    expected
        .iter()
        .skip(1)
        .filter(|name| !registered.iter().any(|n| &n.name == *name))
        .cloned()
        .collect()
}

/// Whether every expected node is registered and Ready, and a one-line account of what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Every expected node is Ready.
    pub ready: bool,
    /// e.g. `1 of 2 nodes Ready; homelab-lab-2: Ready=False (KubeletNotReady: …)`.
    pub seen: String,
}

/// Compare the nodes Kubernetes lists with the ones the lab expects.
pub fn readiness(expected: &[String], nodes: &[NodeView]) -> Readiness {
    let mut problems = Vec::new();
    let mut ready = 0;
    for name in expected {
        match nodes.iter().find(|n| &n.name == name) {
            None => problems.push(format!("{name}: not registered")),
            Some(n) if n.ready => ready += 1,
            Some(n) => problems.push(format!(
                "{name}: {}",
                n.why_not.as_deref().unwrap_or("not Ready")
            )),
        }
    }
    let total = expected.len();
    let noun = if total == 1 { "node" } else { "nodes" };
    let mut seen = format!("{ready} of {total} {noun} Ready");
    if !problems.is_empty() {
        seen.push_str("; ");
        seen.push_str(&problems.join("; "));
    }
    Readiness {
        ready: ready == total,
        seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::settings::Inputs;

    fn inst(name: &str, state: VmState) -> Instance {
        Instance {
            name: name.into(),
            state,
            ipv4: vec!["10.0.0.2".into()],
            cpus: Some(4),
            memory_total: Some(ByteSize::gib(8).0 * 97 / 100),
            memory_used: None,
            disk_total: Some(ByteSize::gib(40).0 * 96 / 100),
            disk_used: None,
            image_release: Some("24.04 LTS".into()),
        }
    }

    fn spec() -> VmSpec {
        VmSpec {
            cpus: 4,
            memory: ByteSize::gib(8),
            disk: ByteSize::gib(40),
            image: "24.04".into(),
        }
    }

    #[test]
    fn names_are_numbered_and_recognised() {
        assert_eq!(vm_name("lab", 1), "homelab-lab-1");
        assert_eq!(vm_index("lab", "homelab-lab-12"), Some(12));
        assert_eq!(vm_index("lab", "homelab-lab-1-1"), None, "lab `lab-1`'s VM");
        assert_eq!(vm_index("lab", "homelab-lab-01"), None);
        assert_eq!(vm_index("lab", "homelab-lab-"), None);
        assert_eq!(vm_index("lab-1", "homelab-lab-1-1"), Some(1));
    }

    #[test]
    fn each_state_has_an_action() {
        use VmState::*;
        let cases = [
            (Running, VmAction::Reuse),
            (Stopped, VmAction::Start),
            (Suspended, VmAction::Start),
            (Deleted, VmAction::Recover),
            (DelayedShutdown, VmAction::CancelShutdown),
            (Starting, VmAction::Wait),
            (Restarting, VmAction::Wait),
            (Suspending, VmAction::Wait),
            (Unknown, VmAction::Unusable(Unknown)),
        ];
        for (state, action) in cases {
            assert_eq!(
                decide(Some(&inst("a", state.clone())), false),
                action,
                "{state}"
            );
            assert_eq!(decide(Some(&inst("a", state)), true), VmAction::Recreate);
        }
        assert_eq!(decide(None, true), VmAction::Launch);
    }

    #[test]
    fn size_drift_tolerates_guest_overhead_but_not_real_differences() {
        assert!(size_drift(&spec(), &inst("a", VmState::Running)).is_empty());
        let mut small = inst("a", VmState::Running);
        small.cpus = Some(2);
        small.memory_total = Some(ByteSize::gib(4).0);
        assert_eq!(
            size_drift(&spec(), &small),
            vec!["2 CPUs (asked for 4)", "4.0G memory (asked for 8G)"]
        );
        let mut stopped = inst("a", VmState::Stopped);
        (stopped.cpus, stopped.memory_total, stopped.disk_total) = (None, None, None);
        assert!(
            size_drift(&spec(), &stopped).is_empty(),
            "unknown is not drift"
        );
    }

    #[test]
    fn unset_keys_keep_what_the_lab_was_built_with() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inputs = Inputs {
            cwd: tmp.path().into(),
            ..Inputs::default()
        };
        let recorded = LabSpec {
            nodes: 3,
            vm: VmSpec { cpus: 6, ..spec() },
        };
        let s = Settings::resolve(&inputs).unwrap();
        assert_eq!(effective_spec(&s, "24.04", Some(&recorded)), recorded);
        assert_eq!(effective_spec(&s, "24.04", None).nodes, 1);
        inputs.flags.vm_nodes = Some(1);
        let s = Settings::resolve(&inputs).unwrap();
        let e = effective_spec(&s, "24.04", Some(&recorded));
        assert_eq!((e.nodes, e.vm.cpus), (1, 6));
    }

    #[test]
    fn preflight_counts_only_vms_the_last_run_did_not_leave() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inputs = Inputs {
            cwd: tmp.path().into(),
            ..Inputs::default()
        };
        inputs.flags.lab = Some("t".into());
        let s = Settings::resolve(&inputs).unwrap();
        let fresh = preflight_demand(&s, None);
        assert_eq!((fresh.nodes, fresh.new_vms), (1, 1));
        let record = LabRecord {
            provider: ProviderKind::Multipass,
            context: "homelab-t".into(),
            spec: Some(LabSpec {
                nodes: 2,
                vm: VmSpec {
                    memory: ByteSize::gib(12),
                    ..spec()
                },
            }),
            nodes: vec![NodeRecord {
                name: "homelab-t-1".into(),
                ip: "10.0.0.2".into(),
            }],
        };
        let d = preflight_demand(&s, Some(&record));
        assert_eq!(
            (d.nodes, d.new_vms, d.memory),
            (2, 1, ByteSize::gib(12)),
            "the recorded shape, one VM still to launch"
        );
    }

    #[test]
    fn ip_changes_ignore_new_nodes() {
        let rec = |n: &str, ip: &str| NodeRecord {
            name: n.into(),
            ip: ip.into(),
        };
        let changes = ip_changes(
            &[rec("a", "10.0.0.2")],
            &[rec("a", "10.0.0.9"), rec("b", "10.0.0.3")],
        );
        assert_eq!(
            changes,
            vec![IpChange {
                name: "a".into(),
                old: "10.0.0.2".into(),
                new: "10.0.0.9".into()
            }]
        );
    }

    #[test]
    fn joiners_and_readiness() {
        let node = |n: &str, ready: bool| NodeView {
            name: n.into(),
            ready,
            why_not: (!ready).then(|| "Ready=False (KubeletNotReady)".into()),
            version: None,
            internal_ip: None,
        };
        let expected: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(
            to_join(&expected, &[node("a", true), node("c", false)]),
            vec!["b"]
        );
        let r = readiness(&expected, &[node("a", true), node("c", false)]);
        assert_eq!(
            r,
            Readiness {
                ready: false,
                seen: "1 of 3 nodes Ready; b: not registered; c: Ready=False (KubeletNotReady)"
                    .into()
            }
        );
        assert!(readiness(&expected[..1], &[node("a", true)]).ready);
        assert_eq!(
            readiness(&expected[..1], &[]).seen,
            "0 of 1 node Ready; a: not registered"
        );
    }
}

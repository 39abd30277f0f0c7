//! What a run of `up` asks of this computer (the lab's VMs, and how many it creates), which
//! `doctor` and `up`'s preflight check against what the computer has.

use crate::model::settings::{ByteSize, Settings};

/// What a run asks of this computer: the lab's VMs, and how many of them it creates. The disk
/// check counts only new VMs (one that exists already holds its disk, and `df` cannot say how
/// much more it will take); the memory check compares every node with the total memory, which
/// running VMs do not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// VMs in the lab.
    pub nodes: u32,
    /// Memory of each.
    pub memory: ByteSize,
    /// Disk of each.
    pub disk: ByteSize,
    /// VMs to launch.
    pub new_vms: u32,
}

impl Demand {
    /// Every node of the lab as the settings ask (what `doctor` checks: a lab built from nothing).
    pub fn whole_lab(settings: &Settings) -> Demand {
        Demand {
            nodes: settings.vm.nodes,
            memory: settings.vm.memory,
            disk: settings.vm.disk,
            new_vms: settings.vm.nodes,
        }
    }
}

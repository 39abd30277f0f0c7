//! `homelab doctor`: are the prerequisites in place, and if not, what to do. The same checks are
//! `up`'s preflight ([`preflight`]): a blocker stops `up` before it writes anything (issue 12).
//!
//! Architecture invariant: [`gather`] is the only effectful part (it runs `multipass version`,
//! `git --version`, `df`, reads `/proc/meminfo`); [`evaluate`] turns those facts into checks and
//! is pure, so every verdict and hint is tested without the tools. `HOMELAB_TEST_HOST`
//! ([`HostOverride`]) replaces the machine's measurements in tests.

pub use crate::model::demand::Demand;
use std::path::PathBuf;

use serde::Serialize;

use crate::edges::error::{Diagnostic, Error, Result};
use crate::edges::process::Cmd;
use crate::edges::tools::{Os, Tool};
use crate::model::settings::{ByteSize, ProviderKind, Settings, gib};
use crate::provider::multipass::cli::daemon_hint;

/// Verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Blocks `homelab up`.
    Fail,
    /// Not relevant or not checkable here.
    Skip,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short name (`multipass`, `git`, `disk`, …).
    pub name: String,
    /// Verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What [`gather`] found on this machine.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The OS.
    pub os: Option<Os>,
    /// Path of multipass, if found.
    pub multipass: Option<PathBuf>,
    /// stdout of `multipass version --format json`, or the error text.
    pub multipass_version: Option<Result<String, String>>,
    /// Path of git, if found.
    pub git: Option<PathBuf>,
    /// stdout of `git --version`, or the error text.
    pub git_version: Option<Result<String, String>>,
    /// Free bytes where VM disks are stored, if known.
    pub disk_free: Option<u64>,
    /// Total and available memory in bytes, if known.
    pub memory: Option<(u64, Option<u64>)>,
    /// Hardware virtualisation usable (`/dev/kvm`, `kern.hv_support`), if known.
    pub virtualisation: Option<bool>,
}

/// Oldest Multipass release tested against (the contracts are from 1.16.3).
pub const MIN_MULTIPASS: (u64, u64) = (1, 14);

/// What `HOMELAB_TEST_HOST` says about this computer (`memory=24G,disk_free=100G,
/// memory_available=20G,virtualisation=yes`): each key given replaces that measurement, so a
/// test's verdict does not depend on the machine running it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostOverride {
    /// Total memory, bytes.
    pub memory: Option<u64>,
    /// Available memory, bytes.
    pub memory_available: Option<u64>,
    /// Free disk where VM disks live, bytes.
    pub disk_free: Option<u64>,
    /// Hardware virtualisation usable.
    pub virtualisation: Option<bool>,
}

impl HostOverride {
    /// Parse the variable's value; `None` or blank means "measure everything".
    pub fn parse(value: Option<&str>) -> Result<HostOverride> {
        let mut o = HostOverride::default();
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return Ok(o);
        };
        for pair in value.split(',') {
            let bad = || {
                Error::msg(format!("invalid `HOMELAB_TEST_HOST` entry `{pair}`")).hint(
                    "write `key=value` pairs separated by commas: `memory=24G`, `memory_available=20G`, `disk_free=100G`, `virtualisation=yes`",
                )
            };
            let (k, v) = pair.trim().split_once('=').ok_or_else(bad)?;
            let size = || v.trim().parse::<ByteSize>().map(|b| b.0).map_err(|_| bad());
            match k.trim() {
                "memory" => o.memory = Some(size()?),
                "memory_available" => o.memory_available = Some(size()?),
                "disk_free" => o.disk_free = Some(size()?),
                "virtualisation" => {
                    o.virtualisation = Some(match v.trim() {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(bad()),
                    })
                }
                _ => return Err(bad()),
            }
        }
        Ok(o)
    }
}

/// Probe this machine (the measurements `HOMELAB_TEST_HOST` names are taken from it instead).
pub fn gather(settings: &Settings) -> Result<Facts> {
    let host = HostOverride::parse(settings.test_host.as_deref())?;
    let os = Os::current();
    let mut facts = Facts {
        os: Some(os),
        ..Facts::default()
    };
    if settings.provider == ProviderKind::Multipass
        && let Ok(path) = Tool::Multipass.find()
    {
        let out = Cmd::new(&path, "ask multipass for its version")
            .args(["version", "--format", "json"])
            .timeout(std::time::Duration::from_secs(20))
            .run();
        facts.multipass_version = Some(out.map(|o| o.stdout).map_err(|e| e.to_string()));
        facts.multipass = Some(path);
    }
    if let Ok(path) = Tool::Git.find() {
        let out = Cmd::new(&path, "ask git for its version")
            .arg("--version")
            .timeout(std::time::Duration::from_secs(10))
            .run();
        facts.git_version = Some(out.map(|o| o.stdout).map_err(|e| e.to_string()));
        facts.git = Some(path);
    }
    facts.disk_free = host.disk_free.or_else(|| disk_free(os));
    facts.memory = match host.memory {
        Some(total) => Some((total, host.memory_available)),
        None => memory(os).map(|(total, avail)| (total, host.memory_available.or(avail))),
    };
    facts.virtualisation = host.virtualisation.or_else(|| virtualisation(os));
    Ok(facts)
}

fn disk_free(os: Os) -> Option<u64> {
    if os == Os::Windows {
        return None;
    }
    // Multipass keeps VM images under its own data directory; the filesystem holding it is the
    // one that matters. Fall back to `/` when it isn't visible to this user.
    let candidates = [
        "/var/snap/multipass/common",
        "/var/root/Library/Application Support/multipassd",
        "/",
    ];
    let path = candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let out = Cmd::new("df", "measure free disk space")
        .args(["-Pk", path])
        .timeout(std::time::Duration::from_secs(10))
        .run()
        .ok()?;
    parse_df(&out.stdout)
}

/// Free bytes from POSIX `df -Pk` output.
pub fn parse_df(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let avail_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail_kib * 1024)
}

fn memory(os: Os) -> Option<(u64, Option<u64>)> {
    match os {
        Os::Linux => parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?),
        Os::Macos => {
            let out = Cmd::new("sysctl", "read the memory size")
                .args(["-n", "hw.memsize"])
                .run()
                .ok()?;
            Some((out.stdout.trim().parse().ok()?, None))
        }
        _ => None,
    }
}

/// (total, available) bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, Option<u64>)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")))
}

fn virtualisation(os: Os) -> Option<bool> {
    match os {
        Os::Linux => Some(std::path::Path::new("/dev/kvm").exists()),
        Os::Macos => {
            let out = Cmd::new("sysctl", "check hardware virtualisation support")
                .args(["-n", "kern.hv_support"])
                .run()
                .ok()?;
            Some(out.stdout.trim() == "1")
        }
        _ => None,
    }
}

fn check(name: &str, status: Status, detail: impl Into<String>, hint: Option<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        hint,
    }
}

/// Leading `major.minor` of a version string like `1.16.3+mac`.
fn major_minor(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Turn facts into checks, for a lab built from nothing.
pub fn evaluate(facts: &Facts, settings: &Settings) -> Vec<Check> {
    evaluate_for(facts, settings, Demand::whole_lab(settings))
}

/// Turn facts into checks, for a run that creates `demand.new_vms` VMs.
pub fn evaluate_for(facts: &Facts, settings: &Settings, demand: Demand) -> Vec<Check> {
    let os = facts.os.unwrap_or(Os::Other);
    let mut checks = Vec::new();

    if settings.provider == ProviderKind::Multipass {
        match (&facts.multipass, &facts.multipass_version) {
            (None, _) => checks.push(check(
                "multipass",
                Status::Fail,
                "`multipass` was not found on PATH",
                Some(Tool::Multipass.install_hint(os)),
            )),
            (Some(_), Some(Ok(json))) => {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                let client = v
                    .get("multipass")
                    .and_then(|x| x.as_str())
                    .unwrap_or("unknown");
                match v.get("multipassd").and_then(|x| x.as_str()) {
                    None => checks.push(check(
                        "multipass",
                        Status::Fail,
                        format!("multipass {client} is installed, but its daemon does not answer"),
                        Some(daemon_hint(os)),
                    )),
                    Some(daemon) => {
                        let old = major_minor(daemon).is_some_and(|mm| mm < MIN_MULTIPASS);
                        if old {
                            checks.push(check(
                                "multipass",
                                Status::Warn,
                                format!(
                                    "multipass {client}, daemon {daemon} (older than {}.{})",
                                    MIN_MULTIPASS.0, MIN_MULTIPASS.1
                                ),
                                Some("update Multipass; homelab is tested against 1.16".into()),
                            ));
                        } else {
                            checks.push(check(
                                "multipass",
                                Status::Ok,
                                format!("multipass {client}, daemon {daemon}"),
                                None,
                            ));
                        }
                    }
                }
            }
            (Some(_), Some(Err(e))) => checks.push(check(
                "multipass",
                Status::Fail,
                format!(
                    "`multipass version` failed: {}",
                    e.lines().next().unwrap_or("")
                ),
                Some(daemon_hint(os)),
            )),
            (Some(_), None) => checks.push(check("multipass", Status::Skip, "not run", None)),
        }
    } else {
        checks.push(check(
            "multipass",
            Status::Skip,
            "not needed with `--provider existing`",
            None,
        ));
    }

    match (&facts.git, &facts.git_version) {
        (None, _) => checks.push(check(
            "git",
            Status::Fail,
            "`git` was not found on PATH",
            Some(Tool::Git.install_hint(os)),
        )),
        (Some(_), Some(Ok(v))) => checks.push(check("git", Status::Ok, v.trim(), None)),
        (Some(_), Some(Err(e))) => checks.push(check(
            "git",
            Status::Fail,
            format!("`git --version` failed: {}", e.lines().next().unwrap_or("")),
            Some(Tool::Git.install_hint(os)),
        )),
        (Some(_), None) => checks.push(check("git", Status::Skip, "not run", None)),
    }

    let nodes = u64::from(demand.nodes);
    if settings.provider == ProviderKind::Multipass {
        let need_disk = demand.disk.0.saturating_mul(u64::from(demand.new_vms));
        match facts.disk_free {
            _ if demand.new_vms == 0 => checks.push(check(
                "disk",
                Status::Skip,
                "the lab's VMs exist; no new VM disk",
                None,
            )),
            None => checks.push(check(
                "disk",
                Status::Skip,
                "free disk space not measured on this OS",
                None,
            )),
            Some(free) if free < need_disk => checks.push(check(
                "disk",
                Status::Fail,
                format!(
                    "{} of disk free; the lab's new VMs may use {}",
                    gib(free),
                    ByteSize(need_disk)
                ),
                Some(
                    "free some disk space, or lower `vm.disk` (at least 20G) or `vm.nodes`".into(),
                ),
            )),
            Some(free) => checks.push(check(
                "disk",
                Status::Ok,
                format!("{} free for {} of VM disks", gib(free), ByteSize(need_disk)),
                None,
            )),
        }
        let need_mem = demand.memory.0.saturating_mul(nodes);
        match facts.memory {
            None => checks.push(check(
                "memory",
                Status::Skip,
                "memory not measured on this OS",
                None,
            )),
            Some((total, _)) if total <= need_mem => checks.push(check(
                "memory",
                Status::Fail,
                format!(
                    "{} of memory in total; the lab's VMs ask for {}",
                    gib(total),
                    ByteSize(need_mem)
                ),
                Some(
                    "lower `vm.memory` (at least 4G) or `vm.nodes`, or use `--provider existing`"
                        .into(),
                ),
            )),
            Some((total, Some(avail))) if avail < need_mem => checks.push(check(
                "memory",
                Status::Warn,
                format!(
                    "{} available of {}, the lab's VMs ask for {}",
                    gib(avail),
                    gib(total),
                    ByteSize(need_mem)
                ),
                Some("close memory-hungry programs before `homelab up`".into()),
            )),
            Some((total, _)) => checks.push(check(
                "memory",
                Status::Ok,
                format!("{} in total for {} of VMs", gib(total), ByteSize(need_mem)),
                None,
            )),
        }
        let virt_hint = match os {
            Os::Linux => {
                "enable VT-x/AMD-V in the firmware settings and load the `kvm_intel` or `kvm_amd` module; inside a VM, turn on nested virtualisation"
            }
            Os::Macos => {
                "Multipass needs Apple's Hypervisor.framework (macOS 10.15+ on Intel with VT-x, or any Apple silicon Mac)"
            }
            Os::Windows => {
                "enable Hyper-V (Pro editions) or install VirtualBox (Home), then restart"
            }
            Os::Other => "Multipass supports Linux, macOS and Windows",
        };
        match facts.virtualisation {
            Some(true) => checks.push(check(
                "virtualisation",
                Status::Ok,
                "hardware virtualisation available",
                None,
            )),
            Some(false) => checks.push(check(
                "virtualisation",
                Status::Fail,
                "hardware virtualisation is not available",
                Some(virt_hint.into()),
            )),
            None => checks.push(check(
                "virtualisation",
                Status::Warn,
                "not checked on this OS",
                Some(virt_hint.into()),
            )),
        }
    }
    checks
}

/// True when a check blocks `up`.
pub fn has_blocker(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// `doctor` found something that blocks `up`; `up` stopped before writing anything.
#[derive(Debug, thiserror::Error)]
#[error("this computer is not ready for lab `{lab}`: {}", .failed.iter().map(|c| c.detail.as_str()).collect::<Vec<_>>().join("; "))]
pub struct PreflightError {
    /// The lab `up` was asked to build.
    pub lab: String,
    /// The provider it was asked to use.
    pub provider: ProviderKind,
    /// The failed checks, in `doctor`'s order.
    pub failed: Vec<Check>,
}

impl Diagnostic for PreflightError {
    fn hints(&self) -> Vec<String> {
        let mut hints: Vec<String> = Vec::new();
        for h in self.failed.iter().filter_map(|c| c.hint.clone()) {
            if !hints.contains(&h) {
                hints.push(h);
            }
        }
        if self.provider == ProviderKind::Multipass
            && !hints.iter().any(|h| h.contains("--provider existing"))
        {
            hints.push(
                "or run the lab in a cluster you already have: `homelab up --provider existing`"
                    .into(),
            );
        }
        hints
    }
}

/// `up`'s preflight: the blocking checks of `doctor` for this run (issue 12). Runs before `up`
/// creates the lab directory, secrets, CA or downloads, so a computer without Multipass (or
/// with its daemon down, too little memory or disk) is told so first and left untouched.
pub fn preflight(settings: &Settings, demand: Demand) -> Result<()> {
    let facts = gather(settings)?;
    let failed: Vec<Check> = evaluate_for(&facts, settings, demand)
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(PreflightError {
        lab: settings.lab.clone(),
        provider: settings.provider,
        failed,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::settings::Inputs;

    fn settings() -> Settings {
        let tmp = tempfile::tempdir().unwrap();
        Settings::resolve(&Inputs {
            cwd: tmp.path().to_path_buf(),
            ..Inputs::default()
        })
        .unwrap()
    }

    fn healthy() -> Facts {
        Facts {
            os: Some(Os::Linux),
            multipass: Some("/snap/bin/multipass".into()),
            multipass_version: Some(Ok(
                "{\"multipass\": \"1.16.3\", \"multipassd\": \"1.16.3\"}".into(),
            )),
            git: Some("/usr/bin/git".into()),
            git_version: Some(Ok("git version 2.47.3\n".into())),
            disk_free: Some(ByteSize::gib(100).0),
            memory: Some((ByteSize::gib(32).0, Some(ByteSize::gib(20).0))),
            virtualisation: Some(true),
        }
    }

    #[test]
    fn healthy_machine_passes() {
        let checks = evaluate(&healthy(), &settings());
        assert!(!has_blocker(&checks), "{checks:#?}");
    }

    #[test]
    fn missing_multipass_is_a_blocker_with_install_hint() {
        let facts = Facts {
            multipass: None,
            multipass_version: None,
            ..healthy()
        };
        let checks = evaluate(&facts, &settings());
        let mp = &checks[0];
        assert_eq!(mp.status, Status::Fail);
        assert_eq!(
            mp.hint.as_deref(),
            Some(
                "install Multipass with `sudo snap install multipass`, then run `homelab doctor` again"
            )
        );
    }

    #[test]
    fn client_only_version_means_daemon_down() {
        let facts = Facts {
            multipass_version: Some(Ok("{\"multipass\": \"1.16.3\"}".into())),
            ..healthy()
        };
        let checks = evaluate(&facts, &settings());
        assert_eq!(checks[0].status, Status::Fail);
        assert!(checks[0].detail.contains("daemon does not answer"));
    }

    #[test]
    fn small_disk_and_memory_fail() {
        let facts = Facts {
            disk_free: Some(ByteSize::gib(10).0),
            memory: Some((ByteSize::gib(8).0, Some(ByteSize::gib(6).0))),
            ..healthy()
        };
        let checks = evaluate(&facts, &settings());
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().status;
        assert_eq!(by("disk"), Status::Fail);
        assert_eq!(by("memory"), Status::Fail);
    }

    #[test]
    fn existing_vms_need_no_new_disk_but_memory_still_counts() {
        let facts = Facts {
            disk_free: Some(ByteSize::gib(10).0),
            memory: Some((ByteSize::gib(8).0, Some(ByteSize::gib(6).0))),
            ..healthy()
        };
        let s = settings();
        let demand = Demand {
            new_vms: 0,
            ..Demand::whole_lab(&s)
        };
        let checks = evaluate_for(&facts, &s, demand);
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().status;
        assert_eq!(by("disk"), Status::Skip);
        assert_eq!(by("memory"), Status::Fail);
    }

    #[test]
    fn preflight_names_every_blocker_with_its_hints() {
        let facts = Facts {
            multipass: None,
            multipass_version: None,
            disk_free: Some(ByteSize::gib(10).0),
            ..healthy()
        };
        let s = settings();
        let failed: Vec<Check> = evaluate(&facts, &s)
            .into_iter()
            .filter(|c| c.status == Status::Fail)
            .collect();
        let e = Error::from(PreflightError {
            lab: "t".into(),
            provider: s.provider,
            failed,
        });
        assert_eq!(
            e.render(),
            "error: this computer is not ready for lab `t`: `multipass` was not found on PATH; 10.0G of disk free; the lab's new VMs may use 40G\n\
             hint: install Multipass with `sudo snap install multipass`, then run `homelab doctor` again\n\
             hint: free some disk space, or lower `vm.disk` (at least 20G) or `vm.nodes`\n\
             hint: or run the lab in a cluster you already have: `homelab up --provider existing`"
        );
    }

    #[test]
    fn the_test_seam_replaces_measurements() {
        let o = HostOverride::parse(Some("memory=16G, disk_free=1T,virtualisation=no")).unwrap();
        assert_eq!(o.memory, Some(ByteSize::gib(16).0));
        assert_eq!(o.disk_free, Some(ByteSize::gib(1024).0));
        assert_eq!(o.virtualisation, Some(false));
        assert_eq!(o.memory_available, None);
        assert_eq!(HostOverride::parse(None).unwrap(), HostOverride::default());
        let e = HostOverride::parse(Some("ram=3G")).unwrap_err();
        assert_eq!(e.message(), "invalid `HOMELAB_TEST_HOST` entry `ram=3G`");
    }

    #[test]
    fn parses_df_and_meminfo() {
        let df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 264000000 11000000 83886080 13% /\n";
        assert_eq!(parse_df(df), Some(83886080 * 1024));
        let mi = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(
            parse_meminfo(mi),
            Some((24000000 * 1024, Some(23000000 * 1024)))
        );
    }
}

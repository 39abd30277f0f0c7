//! Trusting the lab CA on the host: the exact commands for this OS (`homelab trust`), running
//! them with a ledger of every change (`homelab trust --apply`), and undoing exactly the ledger
//! (`homelab untrust`, `homelab down --purge --untrust`).
//!
//! Place in the data flow: lab CA ([`crate::model::tls::CaInfo`]) + lab hostnames + [`HostFacts`]
//! (gathered once by [`detect`]) ─[`plan`]▶ [`TrustPlan`] (pure; what `homelab trust` prints)
//! ─[`apply`]▶ host trust stores + [`ledger`] ─[`untrust_all`]▶ back to how they were.
//!
//! Architecture invariant: computing the commands is pure and OS-independent (any OS's plan
//! can be computed and snapshotted on any machine); only [`run`] executes anything, through
//! [`crate::edges::process::Cmd`] with stdin null and `sudo -n`, and it writes a ledger entry with
//! the exact undo as soon as a change is made, so the ledger never claims less than what is
//! applied. Untrust runs only what the ledger says.
//!
//! Scope of each change: the system trust store gets a copy of the CA under a file name that
//! names the lab; NSS databases get it under the CA's common name; git gets
//! `http.<lab-url>.sslCAInfo` for each lab URL git talks to, in the user's global config,
//! and never a global `http.sslVerify` switch.

pub mod detect;
pub mod ledger;
pub mod run;

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::edges::error::Diagnostic;
use crate::edges::process::ProcessError;
use crate::edges::state::StateError;
use crate::edges::tools::Os;
use crate::model::tls::CaInfo;

pub use detect::{DetectConfig, detect};
pub use ledger::{LEDGER_FILE, Ledger, LedgerEntry, purge_reminder};
pub use run::{ApplyReport, Runner, StepOutcome, UntrustReport, apply, untrust_all};

/// Linux distribution families, each with its own trust-anchor directory and refresh command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "family")]
pub enum LinuxFamily {
    /// Debian, Ubuntu and derivatives: `/usr/local/share/ca-certificates` + `update-ca-certificates`.
    Debian,
    /// Fedora, RHEL, CentOS, Rocky, Alma: `/etc/pki/ca-trust/source/anchors` + `update-ca-trust`.
    Fedora,
    /// Arch and derivatives: `/etc/ca-certificates/trust-source/anchors` + `update-ca-trust`.
    Arch,
    /// openSUSE and SLES: `/etc/pki/trust/anchors` + `update-ca-certificates`.
    Suse,
    /// Anything else; no system step is offered.
    Unknown {
        /// `ID` from os-release (empty when there was no file).
        id: String,
    },
}

impl LinuxFamily {
    /// The family named by os-release's `ID` and `ID_LIKE` (first match wins, `ID` first).
    pub fn from_ids(id: &str, id_like: &str) -> LinuxFamily {
        for word in std::iter::once(id).chain(id_like.split_whitespace()) {
            match word {
                "debian" | "ubuntu" => return LinuxFamily::Debian,
                "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => {
                    return LinuxFamily::Fedora;
                }
                "arch" | "archlinux" => return LinuxFamily::Arch,
                "suse" | "opensuse" | "sles" | "opensuse-leap" | "opensuse-tumbleweed" => {
                    return LinuxFamily::Suse;
                }
                _ => {}
            }
        }
        LinuxFamily::Unknown { id: id.to_string() }
    }

    fn label(&self) -> &'static str {
        match self {
            LinuxFamily::Debian => "Debian/Ubuntu",
            LinuxFamily::Fedora => "Fedora/RHEL",
            LinuxFamily::Arch => "Arch",
            LinuxFamily::Suse => "openSUSE/SLES",
            LinuxFamily::Unknown { .. } => "unknown distribution",
        }
    }

    /// Anchor directory and refresh command.
    fn store(&self) -> Option<(&'static str, &'static str, &'static str)> {
        // (directory, refresh command, extra refresh argument when removing)
        match self {
            LinuxFamily::Debian => Some((
                "/usr/local/share/ca-certificates",
                "update-ca-certificates",
                // `--fresh` rebuilds /etc/ssl/certs from scratch, so no stale link survives.
                "--fresh",
            )),
            LinuxFamily::Fedora => {
                Some(("/etc/pki/ca-trust/source/anchors", "update-ca-trust", ""))
            }
            LinuxFamily::Arch => Some((
                "/etc/ca-certificates/trust-source/anchors",
                "update-ca-trust",
                "",
            )),
            LinuxFamily::Suse => Some(("/etc/pki/trust/anchors", "update-ca-certificates", "")),
            LinuxFamily::Unknown { .. } => None,
        }
    }

    fn certutil_install_hint(&self) -> &'static str {
        match self {
            LinuxFamily::Debian => "`sudo apt install libnss3-tools`",
            LinuxFamily::Fedora => "`sudo dnf install nss-tools`",
            LinuxFamily::Arch => "`sudo pacman -S nss`",
            LinuxFamily::Suse => "`sudo zypper install mozilla-nss-tools`",
            LinuxFamily::Unknown { .. } => "your distribution's NSS tools package",
        }
    }
}

/// Which browser an NSS database belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NssKind {
    /// A Firefox profile directory.
    Firefox,
    /// The shared NSS database Chrome and Chromium read on Linux (`~/.pki/nssdb`).
    Chromium,
}

/// An NSS certificate database (`cert9.db`, the `sql:` format) found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NssDb {
    /// Whose database it is.
    pub kind: NssKind,
    /// The directory holding `cert9.db`.
    pub dir: PathBuf,
}

/// What `plan` needs to know about the host; gathered by [`detect`], built by hand in tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// The OS.
    pub os: Os,
    /// On Linux, the distribution family from os-release.
    pub linux_family: Option<LinuxFamily>,
    /// Whether NSS's `certutil` is on PATH (never assumed on Windows, whose `certutil` is
    /// Microsoft's).
    pub nss_certutil: bool,
    /// NSS databases found (Firefox profiles, Chromium's shared database).
    pub nss_databases: Vec<NssDb>,
}

/// The lab CA and the lab URLs to trust it for.
#[derive(Clone, Debug)]
pub struct TrustTarget {
    /// The lab.
    pub lab: String,
    /// The CA certificate file in the lab state.
    pub ca_path: PathBuf,
    /// The parsed CA (fingerprints and common name name it in each store).
    pub ca: CaInfo,
    /// Base URLs git talks to (`https://gitea.<domain>/`); empty while the domain is unknown.
    pub git_urls: Vec<String>,
}

/// One command on the host, as data: printed by `trust`, run by `--apply`, stored as an undo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCmd {
    /// Needs administrator rights: run through `sudo -n` (or from an elevated terminal on Windows).
    pub elevated: bool,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Exit codes that mean "already in the wanted state" (e.g. `git config --unset` of a key
    /// that is gone exits 5); treated as success when undoing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub already_done_codes: Vec<i32>,
}

impl HostCmd {
    fn new(elevated: bool, program: &str, args: &[&str]) -> HostCmd {
        HostCmd {
            elevated,
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            already_done_codes: Vec::new(),
        }
    }

    /// The command line as a person would type it on `os` (`sudo` in front where needed).
    pub fn display(&self, os: Os) -> String {
        let quote = |s: &str| match os {
            Os::Windows => windows_quote(s),
            _ => crate::edges::process::shell_quote(s),
        };
        let mut parts = Vec::new();
        if self.elevated && os != Os::Windows {
            parts.push("sudo".to_string());
        }
        parts.push(quote(&self.program));
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }
}

/// What a step changes, so the shell can look before it writes where that matters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum StepKind {
    /// The OS trust store.
    System,
    /// An NSS database.
    Nss {
        /// Its directory.
        dir: PathBuf,
    },
    /// A git config key in the user's global config.
    Git {
        /// `http.<url>.sslCAInfo`.
        key: String,
        /// The CA path it is set to.
        value: String,
    },
}

/// One change to one trust store: the commands that make it and those that undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustStep {
    /// Stable identity across runs (the ledger key): `system`, `nss:<dir>`, `git:<url>`.
    pub id: String,
    /// For people: "system trust store (Debian/Ubuntu)".
    pub title: String,
    /// What it is and who reads it.
    pub kind: StepKind,
    /// Commands, in order; the first one is the change, later ones refresh derived state.
    pub apply: Vec<HostCmd>,
    /// Commands that undo the change, safe to run on a half-applied step.
    pub undo: Vec<HostCmd>,
    /// Shown with the step (e.g. a dialog to expect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TrustStep {
    /// Whether any command needs administrator rights.
    pub fn elevated(&self) -> bool {
        self.apply.iter().chain(&self.undo).any(|c| c.elevated)
    }
}

/// Every change `trust --apply` would make on this host, plus what it cannot do for the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustPlan {
    /// The lab.
    pub lab: String,
    /// The OS the commands are for.
    pub os: Os,
    /// "Linux (Debian/Ubuntu)", "macOS", "Windows".
    pub platform: String,
    /// The CA's common name.
    pub ca_name: String,
    /// The CA's SHA-256 fingerprint.
    pub ca_sha256: String,
    /// The CA certificate file.
    pub ca_path: PathBuf,
    /// The changes, in the order they are applied.
    pub steps: Vec<TrustStep>,
    /// What was left out and why, with what to do instead.
    pub notes: Vec<String>,
}

/// Compute every trust change for `target` on a host described by `facts`. Pure.
pub fn plan(target: &TrustTarget, facts: &HostFacts) -> TrustPlan {
    let ca = target.ca_path.to_string_lossy().into_owned();
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let platform = match facts.os {
        Os::Linux => format!(
            "Linux ({})",
            facts
                .linux_family
                .as_ref()
                .map(LinuxFamily::label)
                .unwrap_or("unknown distribution")
        ),
        Os::Macos => "macOS".into(),
        Os::Windows => "Windows".into(),
        Os::Other => "an OS homelab has no trust commands for".into(),
    };

    match facts.os {
        Os::Linux => {
            let family = facts
                .linux_family
                .clone()
                .unwrap_or(LinuxFamily::Unknown { id: String::new() });
            match family.store() {
                Some((dir, refresh, refresh_on_remove)) => {
                    let dest = format!("{dir}/homelab-{}.crt", target.lab);
                    let mut undo_refresh = vec![refresh];
                    if !refresh_on_remove.is_empty() {
                        undo_refresh.push(refresh_on_remove);
                    }
                    steps.push(TrustStep {
                        id: "system".into(),
                        title: format!("system trust store ({})", family.label()),
                        kind: StepKind::System,
                        apply: vec![
                            // `install -m 0644`, not `cp`: the lab copy is 0600 and a copy
                            // would keep that, hiding the anchor from non-root programs.
                            HostCmd::new(true, "install", &["-D", "-m", "0644", &ca, &dest]),
                            HostCmd::new(true, refresh, &[]),
                        ],
                        undo: vec![
                            HostCmd::new(true, "rm", &["-f", &dest]),
                            HostCmd::new(true, undo_refresh[0], &undo_refresh[1..]),
                        ],
                        note: None,
                    });
                }
                None => {
                    let LinuxFamily::Unknown { id } = &family else {
                        unreachable!("every known family has a store")
                    };
                    let which = if id.is_empty() {
                        "this Linux distribution (no `/etc/os-release`)".to_string()
                    } else {
                        format!("this Linux distribution (`ID={id}` in `/etc/os-release`)")
                    };
                    notes.push(format!(
                        "homelab knows no system trust store for {which}: add `{ca}` to its trust anchors by hand"
                    ));
                }
            }
            nss_steps(target, facts, &family, &mut steps, &mut notes);
        }
        Os::Macos => {
            steps.push(TrustStep {
                id: "system".into(),
                title: "system keychain (macOS)".into(),
                kind: StepKind::System,
                apply: vec![HostCmd::new(
                    true,
                    "security",
                    &[
                        "add-trusted-cert",
                        "-d",
                        "-r",
                        "trustRoot",
                        "-k",
                        "/Library/Keychains/System.keychain",
                        &ca,
                    ],
                )],
                // `-t` also removes the trust settings (the admin ones when run as root);
                // the SHA-1 names exactly this certificate, never another lab's.
                undo: vec![HostCmd::new(
                    true,
                    "security",
                    &[
                        "delete-certificate",
                        "-Z",
                        &target.ca.sha1,
                        "-t",
                        "/Library/Keychains/System.keychain",
                    ],
                )],
                note: Some(
                    "macOS asks for an administrator password in a dialog before it changes trust settings".into(),
                ),
            });
            let family = LinuxFamily::Unknown { id: String::new() };
            nss_steps(target, facts, &family, &mut steps, &mut notes);
        }
        Os::Windows => {
            steps.push(TrustStep {
                id: "system".into(),
                title: "Windows certificate store (`Root`, local machine)".into(),
                kind: StepKind::System,
                apply: vec![HostCmd::new(
                    true,
                    "certutil",
                    &["-addstore", "-f", "Root", &ca],
                )],
                undo: vec![HostCmd::new(
                    true,
                    "certutil",
                    &["-delstore", "Root", &target.ca.sha1],
                )],
                note: Some("run from a terminal opened with \"Run as administrator\"".into()),
            });
            if !facts.nss_databases.is_empty() {
                notes.push(
                    "Firefox 120 and later trusts certificates in the Windows store by default (Settings → Privacy & Security → Certificates)".into(),
                );
            }
        }
        Os::Other => notes.push(format!(
            "homelab knows no system trust store on this OS: add `{ca}` to it by hand"
        )),
    }

    for url in &target.git_urls {
        let key = format!("http.{url}.sslCAInfo");
        let mut unset = HostCmd::new(false, "git", &["config", "--global", "--unset", &key]);
        // Exit 5: the key is already gone (removed by hand), which is what the undo wants.
        unset.already_done_codes = vec![5];
        steps.push(TrustStep {
            id: format!("git:{url}"),
            title: format!("git, for `{url}` only"),
            kind: StepKind::Git {
                key: key.clone(),
                value: ca.clone(),
            },
            apply: vec![HostCmd::new(
                false,
                "git",
                &["config", "--global", &key, &ca],
            )],
            undo: vec![unset],
            note: None,
        });
    }
    if target.git_urls.is_empty() {
        notes.push(
            "git: the lab's hostnames are not known until the VM has an IP; run `homelab trust` again after `homelab up` (or pass `--domain`)".into(),
        );
    }

    TrustPlan {
        lab: target.lab.clone(),
        os: facts.os,
        platform,
        ca_name: target.ca.common_name.clone(),
        ca_sha256: target.ca.sha256.clone(),
        ca_path: target.ca_path.clone(),
        steps,
        notes,
    }
}

fn nss_steps(
    target: &TrustTarget,
    facts: &HostFacts,
    family: &LinuxFamily,
    steps: &mut Vec<TrustStep>,
    notes: &mut Vec<String>,
) {
    if facts.nss_databases.is_empty() {
        return;
    }
    let ca = target.ca_path.to_string_lossy().into_owned();
    if !facts.nss_certutil {
        let install = match facts.os {
            Os::Macos => "`brew install nss`",
            _ => family.certutil_install_hint(),
        };
        let firefox_default = if facts.os == Os::Macos {
            "Firefox 120 and later already trusts the macOS keychain by default; for older versions, "
        } else {
            ""
        };
        notes.push(format!(
            "{firefox_default}install NSS's `certutil` ({install}) and run `homelab trust` again to add the CA to {} browser certificate database{} (or import `{ca}` under Firefox's Settings → Privacy & Security → Certificates)",
            facts.nss_databases.len(),
            if facts.nss_databases.len() == 1 { "" } else { "s" },
        ));
        return;
    }
    for db in &facts.nss_databases {
        let dir = db.dir.to_string_lossy().into_owned();
        let sql = format!("sql:{dir}");
        let title = match db.kind {
            NssKind::Firefox => format!(
                "Firefox profile `{}`",
                db.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.clone())
            ),
            NssKind::Chromium => format!("Chrome/Chromium NSS database `{dir}`"),
        };
        steps.push(TrustStep {
            id: format!("nss:{dir}"),
            title,
            kind: StepKind::Nss {
                dir: db.dir.clone(),
            },
            apply: vec![HostCmd::new(
                false,
                "certutil",
                &[
                    "-A",
                    "-d",
                    &sql,
                    "-t",
                    "C,,",
                    "-n",
                    &target.ca.common_name,
                    "-i",
                    &ca,
                ],
            )],
            undo: vec![HostCmd::new(
                false,
                "certutil",
                &["-D", "-d", &sql, "-n", &target.ca.common_name],
            )],
            note: matches!(db.kind, NssKind::Firefox)
                .then(|| "restart Firefox afterwards".to_string()),
        });
    }
}

impl TrustPlan {
    /// The plan as a script with comments: what `homelab trust` prints.
    pub fn to_text(&self) -> String {
        // `#` starts a comment in POSIX shells and in PowerShell, the default Windows shell.
        let c = "#";
        let mut out = String::new();
        writeln!(
            out,
            "{c} Trust the CA of lab `{}` on this computer: {}.",
            self.lab, self.platform
        )
        .unwrap();
        writeln!(out, "{c} CA: {}, SHA-256 {}", self.ca_name, self.ca_sha256).unwrap();
        writeln!(out, "{c} file: {}", self.ca_path.display()).unwrap();
        if self.steps.is_empty() {
            writeln!(
                out,
                "{c} Nothing homelab can run here; see the notes below."
            )
            .unwrap();
        } else {
            writeln!(
                out,
                "{c} Run these yourself, or `homelab trust --apply` to run them and record each change so\n{c} `homelab untrust` can undo exactly that."
            )
            .unwrap();
        }
        for step in &self.steps {
            writeln!(out, "\n{c} {}", step.title).unwrap();
            if let Some(note) = &step.note {
                writeln!(out, "{c} ({note})").unwrap();
            }
            for cmd in &step.apply {
                writeln!(out, "{}", cmd.display(self.os)).unwrap();
            }
        }
        if !self.notes.is_empty() {
            writeln!(out).unwrap();
            for note in &self.notes {
                writeln!(out, "{c} note: {note}").unwrap();
            }
        }
        out
    }
}

/// Trusting or untrusting failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `sudo -n` refused: it needs a password, and homelab never waits on a prompt.
    #[error(
        "`sudo` would ask for a password to change the system trust store, and homelab does not wait on prompts"
    )]
    SudoNeedsPassword {
        /// The command to run again afterwards (`homelab trust --apply`, `homelab untrust`).
        rerun: String,
        /// What undoes or applies by hand.
        by_hand: String,
        /// What `sudo -n true` said.
        #[source]
        source: Box<ProcessError>,
    },
    /// A step's command failed.
    #[error("{source}")]
    Step {
        /// Whether the ledger records the step (its first command had succeeded).
        recorded: bool,
        /// The failed command.
        #[source]
        source: Box<ProcessError>,
    },
    /// The ledger records a step for a different CA than the lab's current one.
    #[error(
        "`{ledger}` records {title} for a CA with SHA-256 {recorded}, not the lab's current CA"
    )]
    OtherCa {
        /// The ledger file.
        ledger: String,
        /// The step.
        title: String,
        /// The fingerprint in the ledger.
        recorded: String,
    },
    /// Some undos failed; the ledger lists exactly those.
    #[error("could not undo {count} recorded trust change{plural}; `{ledger}` still lists {them}:{details}", plural = if *.count == 1 { "" } else { "s" }, them = if *.count == 1 { "it" } else { "them" })]
    UndoFailed {
        /// How many failed.
        count: usize,
        /// The ledger file.
        ledger: String,
        /// One indented block per failure.
        details: String,
    },
    /// The ledger is not empty where it must be (replacing the CA).
    #[error("this computer still trusts the current CA of lab `{lab}` ({what})")]
    StillTrusted {
        /// The lab.
        lab: String,
        /// The recorded changes, joined.
        what: String,
    },
    /// Ledger I/O.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Diagnostic for TrustError {
    fn hints(&self) -> Vec<String> {
        match self {
            TrustError::SudoNeedsPassword { rerun, by_hand, .. } => vec![
                format!("run `sudo -v` in this terminal to enter your password, then `{rerun}` again"),
                format!("or run {by_hand} yourself"),
            ],
            TrustError::Step { recorded: true, .. } => vec![
                "the change is recorded in the trust ledger; `homelab untrust` undoes it".into(),
                "fix the cause and run `homelab trust --apply` again; steps already applied are skipped".into(),
            ],
            TrustError::Step { recorded: false, .. } => vec![
                "this step changed nothing; fix the cause and run `homelab trust --apply` again (steps already applied are skipped)".into(),
            ],
            TrustError::OtherCa { .. } => vec![
                "run `homelab untrust` to remove the old CA first, then `homelab trust --apply`".into(),
            ],
            TrustError::UndoFailed { .. } => vec![
                "fix the cause and run `homelab untrust` again; it retries only what is still listed".into(),
            ],
            TrustError::StillTrusted { .. } => vec![
                "run `homelab untrust` first, then run this again (and `homelab trust --apply` for the new CA)".into(),
            ],
            TrustError::State(e) => e.hints(),
        }
    }
}

/// Quote for `cmd.exe`/PowerShell only where needed.
fn windows_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:\\=,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// `https://gitea.<domain>/` for every component git talks to (the Gitea host), from the
/// stack's hostnames.
pub fn git_urls(hosts: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    hosts
        .iter()
        .filter(|(component, _)| component.as_str() == "gitea")
        .map(|(_, host)| format!("https://{host}/"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_os_release_ids() {
        assert_eq!(
            LinuxFamily::from_ids("ubuntu", "debian"),
            LinuxFamily::Debian
        );
        assert_eq!(
            LinuxFamily::from_ids("linuxmint", "ubuntu debian"),
            LinuxFamily::Debian
        );
        assert_eq!(
            LinuxFamily::from_ids("rocky", "rhel centos fedora"),
            LinuxFamily::Fedora
        );
        assert_eq!(LinuxFamily::from_ids("manjaro", "arch"), LinuxFamily::Arch);
        assert_eq!(
            LinuxFamily::from_ids("opensuse-tumbleweed", "opensuse suse"),
            LinuxFamily::Suse
        );
        assert_eq!(
            LinuxFamily::from_ids("nixos", ""),
            LinuxFamily::Unknown { id: "nixos".into() }
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(crate::edges::process::shell_quote("C,,"), "C,,");
        assert_eq!(
            crate::edges::process::shell_quote("homelab CA (lab)"),
            "'homelab CA (lab)'"
        );
        assert_eq!(
            windows_quote(r"C:\Users\a b\ca.crt"),
            r#""C:\Users\a b\ca.crt""#
        );
        assert_eq!(windows_quote(r"C:\x\ca.crt"), r"C:\x\ca.crt");
    }
}

//! The lab page (`https://lab.<domain>`): what a person sees of the lab in a browser — every
//! component with its URL and health, the Applications, the last `verify` as a timeline, the
//! recent syncs, how to trust the lab CA and where the logins are.
//!
//! Place in the data flow: the in-cluster engine's HTTP server ([`super::server`]) asks
//! [`gather`] for a [`LabPageState`] (the `homelab-lab` ConfigMap the `lab-page` component
//! renders, workloads' health, Applications' status, the `homelab-verify` ConfigMap `up` and
//! `verify` write, the engine's own [`History`]) and serves [`html::render`] of it.
//!
//! Architecture invariant: [`LabPageState`] is plain data and [`html::render`] is pure (every
//! value escaped, free text redacted of URL credentials and token parameters); only [`gather`]
//! does I/O, and it never reads a Secret. The page is read-only and needs no login, so nothing
//! on it may be a secret.

pub mod gather;
pub mod html;

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The ConfigMap (in the engine's namespace) with the lab's name, domain and components.
pub const LAB_CONFIGMAP: &str = "homelab-lab";
/// The ConfigMap (in the engine's namespace) holding the last `verify` report.
pub const VERIFY_CONFIGMAP: &str = "homelab-verify";
/// Its key: a [`VerifyRun`] as JSON.
pub const VERIFY_KEY: &str = "report.json";
/// Where the page serves the lab CA certificate (public part only).
pub const CA_PATH: &str = "/lab/ca.crt";
/// How many syncs the engine remembers for the page.
pub const HISTORY_LEN: usize = 50;

/// Everything the page shows, as values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabPageState {
    /// Lab name.
    pub lab: String,
    /// The lab's domain (`10.0.0.5.sslip.io`).
    pub domain: String,
    /// When the state was read (RFC 3339, UTC).
    pub generated_at: String,
    /// Components, in stack order.
    pub components: Vec<ComponentRow>,
    /// Applications, by name.
    pub applications: Vec<AppRow>,
    /// The last `verify`, if one was recorded.
    pub verify: Option<VerifyRun>,
    /// Recent syncs, newest first.
    pub history: Vec<SyncRecord>,
    /// The lab CA's public certificate, if the engine has it (for the download link).
    pub ca: Option<CaSummary>,
    /// What could not be read (shown on the page, so a gap is never silent).
    pub problems: Vec<String>,
}

/// One stack component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentRow {
    /// `gitea`.
    pub name: String,
    /// What it is.
    pub description: String,
    /// `https://gitea.<domain>`, empty when it has no public URL.
    pub url: String,
    /// Aggregated health of its Deployments and StatefulSets.
    pub health: Health,
    /// e.g. "Deployment/gitea 1/1 ready"; empty when it runs no workload of its own.
    pub detail: String,
}

/// A health word as the page shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Every workload ready.
    Healthy,
    /// Rolling out or starting.
    Progressing,
    /// Failed or stuck.
    Degraded,
    /// Expected but absent.
    Missing,
    /// No workload of its own (an addon, configuration only).
    #[default]
    None,
    /// Could not be read.
    Unknown,
}

impl Health {
    /// From Argo CD's health words (`Healthy`, `Progressing`, …).
    pub fn from_argo(s: &str) -> Health {
        match s {
            "Healthy" => Health::Healthy,
            "Progressing" | "Suspended" => Health::Progressing,
            "Degraded" => Health::Degraded,
            "Missing" => Health::Missing,
            "" => Health::None,
            _ => Health::Unknown,
        }
    }
}

/// One Application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppRow {
    /// Name.
    pub name: String,
    /// `.status.sync.status` (`Synced`, `OutOfSync`, `Unknown`).
    pub sync: String,
    /// `.status.health.status`.
    pub health: String,
    /// `.status.sync.revision`.
    pub revision: String,
    /// The repository it deploys from.
    pub repo: String,
    /// The path in it.
    pub path: String,
    /// The last sync: `.status.operationState`.
    pub last_sync: Option<LastSync>,
    /// Conditions (errors and warnings), as `Type: message`.
    pub conditions: Vec<String>,
}

/// The last sync of an Application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastSync {
    /// `Succeeded`, `Failed`, `Error`, `Running`.
    pub phase: String,
    /// Its message.
    pub message: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub finished_at: String,
    /// Its result per resource.
    pub resources: Vec<ResourceResult>,
}

/// One resource of a sync result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceResult {
    /// Kind.
    pub kind: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Synced`, `SyncFailed`, `Pruned`, `PruneSkipped`.
    pub status: String,
    /// Detail.
    pub message: String,
}

/// The last `verify`, as `up` and `verify` record it in the `homelab-verify` ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyRun {
    /// When it ended (RFC 3339, UTC).
    pub finished_at: String,
    /// Every hop passed.
    pub ok: bool,
    /// The version marker committed.
    pub version: String,
    /// The hops walked, in order (up to and including a failed one).
    pub hops: Vec<VerifyHop>,
    /// From the first hop's start to the last hop's end.
    pub total_ms: u64,
    /// Why it stopped, when it failed.
    #[serde(default)]
    pub error: String,
}

/// One hop of a [`VerifyRun`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyHop {
    /// `commit`, `build`, `bump`, `sync`, `serve`.
    pub hop: String,
    /// Whether it got through.
    pub ok: bool,
    /// Time it took (until it failed, for a failed hop).
    pub elapsed_ms: u64,
    /// What was seen.
    pub detail: String,
}

/// One sync the engine ran, for the page's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// When it finished (RFC 3339, UTC).
    pub at: String,
    /// The Application.
    pub app: String,
    /// The commit synced.
    pub revision: String,
    /// `Succeeded`, `Failed`, …
    pub phase: String,
    /// Objects written.
    pub applied: usize,
    /// Objects deleted.
    pub pruned: usize,
}

/// The lab CA as the page names it: its fingerprint (the certificate itself is served at
/// [`CA_PATH`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaSummary {
    /// SHA-256 of the DER certificate, `AA:BB:…`, as browsers show it.
    pub sha256: String,
}

/// The engine's memory of its recent syncs: bounded, newest last.
#[derive(Debug)]
pub struct History {
    cap: usize,
    records: Mutex<VecDeque<SyncRecord>>,
}

impl Default for History {
    fn default() -> Self {
        History::new(HISTORY_LEN)
    }
}

impl History {
    /// A history keeping at most `cap` records.
    pub fn new(cap: usize) -> History {
        History {
            cap: cap.max(1),
            records: Mutex::default(),
        }
    }

    /// Remember one sync, forgetting the oldest beyond the cap.
    pub fn push(&self, r: SyncRecord) {
        let mut q = self.records.lock().expect("history lock");
        q.push_back(r);
        while q.len() > self.cap {
            q.pop_front();
        }
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<SyncRecord> {
        let q = self.records.lock().expect("history lock");
        q.iter().rev().cloned().collect()
    }
}

/// The per-OS steps to trust the downloaded CA file by hand: what `homelab trust --apply` runs
/// on each OS (its plan in `host::trust`, whose tests hold these lines to it), with the file
/// name the page's download gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustSteps {
    /// "Debian, Ubuntu".
    pub os: &'static str,
    /// Shell lines, in order.
    pub commands: Vec<String>,
    /// What to expect.
    pub note: &'static str,
}

/// Only the `CERTIFICATE` blocks of a PEM bundle (a private key never leaves, even if a wrong
/// file is mounted); `None` when there is none.
pub fn public_certificates(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = String::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        out.push_str(&rest[b..b + e + END.len()]);
        out.push('\n');
        rest = &rest[b + e + END.len()..];
    }
    (!out.is_empty()).then_some(out)
}

/// The file name the CA download gets.
pub fn ca_file_name(lab: &str) -> String {
    format!("homelab-{lab}-ca.crt")
}

/// Trust steps for every OS `homelab trust` knows.
pub fn trust_steps(lab: &str) -> Vec<TrustSteps> {
    let f = ca_file_name(lab);
    let linux = |os, dir: &str, refresh: &str| TrustSteps {
        os,
        commands: vec![
            format!("sudo install -D -m 0644 {f} {dir}/homelab-{lab}.crt"),
            format!("sudo {refresh}"),
        ],
        note: "",
    };
    vec![
        linux(
            "Debian, Ubuntu",
            "/usr/local/share/ca-certificates",
            "update-ca-certificates",
        ),
        linux(
            "Fedora, RHEL",
            "/etc/pki/ca-trust/source/anchors",
            "update-ca-trust",
        ),
        linux(
            "Arch",
            "/etc/ca-certificates/trust-source/anchors",
            "update-ca-trust",
        ),
        linux(
            "openSUSE",
            "/etc/pki/trust/anchors",
            "update-ca-certificates",
        ),
        TrustSteps {
            os: "macOS",
            commands: vec![format!(
                "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {f}"
            )],
            note: "macOS asks for an administrator password in a dialog",
        },
        TrustSteps {
            os: "Windows",
            commands: vec![format!("certutil -addstore -f Root {f}")],
            note: "in a terminal opened with \"Run as administrator\"",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificates_are_offered_for_download() {
        let pem = "-----BEGIN PRIVATE KEY-----\nS3CRET\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nPUB\n-----END CERTIFICATE-----\n";
        let out = public_certificates(pem).unwrap();
        assert_eq!(
            out,
            "-----BEGIN CERTIFICATE-----\nPUB\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            public_certificates("-----BEGIN PRIVATE KEY-----\nS3CRET\n-----END PRIVATE KEY-----\n"),
            None
        );
    }

    #[test]
    fn the_history_is_bounded_and_newest_first() {
        let h = History::new(2);
        for app in ["a", "b", "c"] {
            h.push(SyncRecord {
                app: app.into(),
                ..Default::default()
            });
        }
        let names: Vec<String> = h.recent().into_iter().map(|r| r.app).collect();
        assert_eq!(names, ["c", "b"]);
    }
}

//! `homelab export logs`: everything needed to learn why a lab failed, in one `.tar.gz` (as
//! `kind export logs` does for kind clusters).
//!
//! Data flow: lab state + settings + stack ─▶ host files (status, `up.json`, `lock.json`,
//! settings, rendered manifests with Secrets redacted) ─┐
//! Multipass + each VM ([`vms`]) ──────────────────────────┼─▶ [`archive::Bundle`]
//! the cluster ([`cluster`]) ─────────────────────────────┘        │
//! every known secret value of the lab ─▶ [`Scrubber`] ─▶ [`archive::pack`] ─▶ `<DIR>/homelab-<lab>-logs-<UTC>.tar.gz`
//!
//! Architecture invariant: read-only towards the lab (nothing is generated, nothing written
//! into the lab state, no Secret object read), every collector bounded, and a collector's
//! failure is a record in the archive, never the end of the export. The only error is not
//! being able to write the archive.

pub mod archive;
pub mod cluster;
pub mod vms;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::upstream::{self, LOCK_FILE};
use crate::edges::output::Progress;
use crate::edges::redact::Scrubber;
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::model::render::{self, Domain, RenderInput};
use crate::model::settings::{ProviderKind, Settings};
use crate::model::stack::Stack;
use crate::model::templates::Templates;
use crate::model::tls::{self, CA_KEY_FILE};
use crate::provider::{KUBECONFIG_FILE, LAB_RECORD_FILE, LabRecord};
use crate::up::UP_STATE_FILE;
use archive::Bundle;

/// Default number of log lines kept per container and per VM log file.
pub const DEFAULT_TAIL_LINES: usize = 500;

/// What the export is given by the command that runs it.
pub struct ExportInput<'a> {
    /// Resolved settings.
    pub settings: &'a Settings,
    /// The lab's state directory.
    pub state: &'a LabState,
    /// The stack (or why it could not be loaded).
    pub stack: Result<Stack, String>,
    /// `homelab status --output json` (or why it failed).
    pub status: Result<Value, String>,
    /// `homelab config show --output json` (secrets redacted).
    pub config: Value,
    /// Bound of one `multipass exec`.
    pub exec_timeout: Duration,
    /// Lines kept per log.
    pub tail_lines: usize,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

/// Collect everything into one bundle (files not yet scrubbed).
pub async fn collect(input: &ExportInput<'_>) -> Bundle {
    let settings = input.settings;
    let state = input.state;
    let progress = input.progress;
    let record = LabRecord::load(state);
    let provider = match &record {
        Ok(Some(r)) => r.provider,
        _ => settings.provider,
    };

    progress.update("export", "the lab's state and settings");
    let mut b = Bundle::new();
    match &input.status {
        Ok(v) => b.file("status.json", "`homelab status --output json`", pretty(v)),
        Err(why) => b.failed(None, "`homelab status --output json`", why.clone(), None),
    }
    b.file(
        "config.json",
        "`homelab config show --output json` (secrets redacted)",
        pretty(&input.config),
    );
    state_files(state, &mut b);
    let manifests = rendered(input, record.as_ref().ok().and_then(Option::as_ref), &mut b);

    // The lab's namespaces: the stack's, the rendered Namespaces, and (found by the cluster
    // collector) where the Applications deploy; kube-system holds microk8s's own addons.
    let mut namespaces: BTreeSet<String> = ["kube-system".to_string()].into();
    if let Ok(stack) = &input.stack {
        namespaces.extend(stack.components.iter().filter_map(|c| c.namespace.clone()));
    }
    if let Some(m) = &manifests {
        for (_, obj) in m.objects() {
            if obj["kind"] == "Namespace"
                && let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str)
            {
                namespaces.insert(n.to_string());
            }
        }
    }

    let vm_part = async {
        if provider != ProviderKind::Multipass {
            let mut b = Bundle::new();
            b.skipped(
                "Multipass and the lab's VMs",
                format!("lab `{}` runs on an existing cluster", settings.lab),
            );
            return b;
        }
        progress.update("export", "Multipass and the lab's VMs");
        let recorded = match &record {
            Ok(Some(r)) => r.nodes.iter().map(|n| n.name.clone()).collect(),
            _ => Vec::new(),
        };
        vms::collect(&vms::VmInput {
            lab: settings.lab.clone(),
            recorded,
            exec_timeout: input.exec_timeout,
            tail_lines: input.tail_lines,
            scratch: scratch_dir(),
        })
        .await
    };
    let cluster_part = async {
        let mut b = Bundle::new();
        let r = match &record {
            Ok(Some(r)) => r,
            Ok(None) => {
                b.skipped(
                    "the cluster",
                    "the lab state records no cluster: `homelab up` did not get that far",
                );
                return b;
            }
            Err(e) => {
                b.skipped(
                    "the cluster",
                    format!("`{LAB_RECORD_FILE}` cannot be read: {e}"),
                );
                return b;
            }
        };
        progress.update("export", "the cluster");
        cluster::collect(&cluster::ClusterInput {
            cluster: r.cluster(state),
            namespaces: namespaces.clone(),
            tail_lines: input.tail_lines,
        })
        .await
    };
    let (vm_bundle, cluster_bundle) = futures::join!(vm_part, cluster_part);
    b.extend(vm_bundle);
    b.extend(cluster_bundle);
    b
}

/// Files of the lab state that hold no secret, as they are; and the names of all of them.
fn state_files(state: &LabState, b: &mut Bundle) {
    for (name, what) in [
        (
            UP_STATE_FILE,
            "the steps earlier `homelab up` runs finished",
        ),
        (
            LOCK_FILE,
            "the sha256 of each upstream manifest the lab pinned",
        ),
        (LAB_RECORD_FILE, "the cluster the lab state records"),
    ] {
        let what = format!("`{name}` of the lab state: {what}");
        match state.read(name) {
            Ok(Some(bytes)) => b.file(&format!("state/{name}"), what, bytes),
            Ok(None) => b.skipped(what, "not present"),
            Err(e) => b.failed(None, what, e.to_string(), None),
        }
    }
    let what =
        "names, sizes and modes of the lab state's files (contents of secret files left out)";
    match listing(state.dir()) {
        Ok(text) => b.file("state/files.txt", what, text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            b.skipped(what, format!("`{}` does not exist", state.dir().display()))
        }
        Err(e) => b.failed(None, what, e.to_string(), None),
    }
}

fn listing(dir: &Path) -> std::io::Result<String> {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut lines = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap_or(&e.path())
                .display()
                .to_string();
            #[cfg(unix)]
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                format!("{:04o}", meta.permissions().mode() & 0o7777)
            };
            #[cfg(not(unix))]
            let mode = String::from("-");
            if meta.is_dir() {
                lines.push(format!("{mode}  {:>10}  {rel}/", "-"));
                stack.push(e.path());
            } else {
                lines.push(format!("{mode}  {:>10}  {rel}", meta.len()));
            }
        }
    }
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

/// The manifests `up` applies, rendered from the stored secrets and CA (nothing generated),
/// with every Secret's values redacted; and the VMs' cloud-init.
fn rendered(
    input: &ExportInput<'_>,
    record: Option<&LabRecord>,
    b: &mut Bundle,
) -> Option<render::Manifests> {
    const WHAT: &str = "`homelab render` (Secret values redacted)";
    let stack = match &input.stack {
        Ok(s) => s,
        Err(why) => {
            b.failed(None, WHAT, why.clone(), None);
            return None;
        }
    };
    let state = input.state;
    let result = (|| -> crate::edges::error::Result<Option<render::Manifests>> {
        let (Some(mut secrets), Some(ca)) = (state.stored_secrets()?, tls::load(state)?) else {
            return Ok(None);
        };
        if let Some(pw) = &input.settings.gitea_admin_password {
            secrets = secrets.with("gitea_admin_password", pw.clone());
        }
        let node_ip = record.and_then(|r| r.nodes.first()).map(|n| n.ip.as_str());
        let domain = Domain::resolve(input.settings.domain.as_deref(), node_ip);
        let cached = upstream::cached(
            stack,
            &upstream::read_lock(state)?,
            &crate::edges::state::cache_root()?,
        )?;
        let m = render::render(
            &Templates::embedded()?,
            &RenderInput::for_lab(
                input.settings,
                stack,
                &domain,
                &secrets,
                &ca,
                node_ip,
                &cached,
            ),
        )?;
        Ok(Some(m))
    })();
    match result {
        Ok(Some(m)) => {
            let shown = m.redacted();
            b.file("manifests/manifests.yaml", WHAT, shown.to_yaml());
            b.file(
                "manifests/cloud-init-user-data.yaml",
                "the cloud-init user-data the lab's VMs are launched with",
                shown.cloud_init.clone(),
            );
            Some(m)
        }
        Ok(None) => {
            b.skipped(
                WHAT,
                "the lab has no secrets or CA yet (`homelab up` never ran far enough)",
            );
            None
        }
        Err(e) => {
            b.failed(None, WHAT, e.render(), None);
            None
        }
    }
}

/// Every secret value the lab knows: `secrets.json`, the CA key, the credentials of the
/// kubeconfig the lab uses, and a Gitea admin password given in the settings. Notes say what
/// could not be read (the archive is still scrubbed of everything else).
pub fn lab_scrubber(settings: &Settings, state: &LabState) -> (Scrubber, Vec<String>) {
    let mut s = Scrubber::new();
    let mut notes = Vec::new();
    match state.read_json::<BTreeMap<String, Value>>(SECRETS_FILE) {
        Ok(Some(map)) => {
            for v in map.values() {
                strings(v, &mut |x| s.add(x));
            }
        }
        Ok(None) => {}
        Err(e) => notes.push(format!(
            "`{SECRETS_FILE}` could not be read ({e}); its values are not known to the scrubber"
        )),
    }
    match state.read(CA_KEY_FILE) {
        Ok(Some(key)) => s.add(&String::from_utf8_lossy(&key)),
        Ok(None) => {}
        Err(e) => notes.push(format!("the CA key could not be read: {e}")),
    }
    if let Some(pw) = &settings.gitea_admin_password {
        s.add_secret(pw);
    }
    let mut kubeconfigs = vec![state.path(KUBECONFIG_FILE)];
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        kubeconfigs.extend(std::env::split_paths(&v));
    } else if let Some(home) = std::env::var_os("HOME") {
        kubeconfigs.push(PathBuf::from(home).join(".kube/config"));
    }
    for path in kubeconfigs {
        if let Ok(text) = std::fs::read_to_string(&path) {
            for v in kubeconfig_secrets(&text) {
                s.add(&v);
            }
        }
    }
    (s, notes)
}

/// The credentials in a kubeconfig: tokens, passwords, client keys (as written and decoded).
pub fn kubeconfig_secrets(text: &str) -> Vec<String> {
    use base64::Engine as _;
    let Ok(doc) = crate::edges::yaml::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for user in doc
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(u) = user.get("user") else { continue };
        for key in ["token", "password"] {
            if let Some(v) = u.get(key).and_then(Value::as_str) {
                out.push(v.to_string());
            }
        }
        if let Some(v) = u.get("client-key-data").and_then(Value::as_str) {
            out.push(v.to_string());
            if let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                out.push(String::from_utf8_lossy(&pem).into_owned());
            }
        }
    }
    out
}

fn strings(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, f)),
        Value::Object(m) => m.values().for_each(|x| strings(x, f)),
        _ => {}
    }
}

/// Pretty JSON with a final newline.
fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s
}

/// A private folder for files copied out of VMs before they are read into the archive.
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("homelab-export-{}", std::process::id()))
}

/// Remove the scratch folder (the command calls it when the export is done).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_credentials_are_secrets_and_the_key_is_known_decoded_too() {
        use base64::Engine as _;
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkeyBODYkeyBODYkeyBODY\n-----END EC PRIVATE KEY-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let text = format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: a\n  user:\n    token: tok-123456789\n- name: b\n  user:\n    client-certificate-data: Y2VydA==\n    client-key-data: {b64}\n"
        );
        let got = kubeconfig_secrets(&text);
        assert_eq!(got, ["tok-123456789".to_string(), b64, key.to_string()]);
    }
}

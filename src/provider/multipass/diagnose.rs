//! What `homelab export logs` asks Multipass, as Multipass prints it: `version` and `info` as
//! raw JSON (the archive keeps the exact text), and `transfer` of a file out of a VM.
//!
//! Architecture invariant: part of the one effectful shell that runs `multipass` (with
//! [`super::cli`]); nothing here interprets what it gets, and every call is bounded.

use std::path::Path;
use std::time::Duration;

use super::cli::{Multipass, MultipassError, classify};
use crate::edges::process::Output;

/// How long `version`/`info` may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long copying one file out of a VM may take (a `microk8s inspect` report is a few MiB).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

impl Multipass {
    /// `multipass version --format json`, as printed.
    pub async fn version_json(&self) -> Result<String, MultipassError> {
        let cmd = self
            .cmd("ask Multipass for its version")
            .args(["version", "--format", "json"])
            .timeout(QUERY_TIMEOUT);
        Ok(self.run(cmd, None).await?.stdout)
    }

    /// `multipass info --format json <names>…`, as printed.
    pub async fn info_json(&self, names: &[String]) -> Result<String, MultipassError> {
        let cmd = self
            .cmd("describe the lab's VMs")
            .args(["info", "--format", "json"])
            .args(names)
            .timeout(QUERY_TIMEOUT);
        Ok(self
            .run(cmd, names.first().map(String::as_str))
            .await?
            .stdout)
    }

    /// Like [`Multipass::exec`] with its own bound (`microk8s inspect` takes minutes): the
    /// output whatever the remote exit code; Multipass's own failures become errors.
    pub async fn exec_within(
        &self,
        name: &str,
        argv: &[&str],
        summary: impl Into<String>,
        limit: Duration,
    ) -> Result<Output, MultipassError> {
        let cmd = self
            .cmd(summary)
            .args(["exec", name, "--"])
            .args(argv)
            .timeout(limit);
        let out = cmd.clone().run_unchecked_async().await?;
        // As in `exec`: the client's own failures say `exec failed: …` (2) or exit 3.
        let client_failed = out.stderr.contains("exec failed") || out.code == Some(3);
        if client_failed && let Some(e) = classify(&cmd, Some(name), out.clone()) {
            return Err(e);
        }
        Ok(out)
    }

    /// `multipass transfer <name>:<remote> <local>`: copy a file out of a VM.
    pub async fn transfer_out(
        &self,
        name: &str,
        remote: &str,
        local: &Path,
    ) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("copy `{remote}` out of `{name}`"))
            .arg("transfer")
            .arg(format!("{name}:{remote}"))
            .arg(local)
            .timeout(TRANSFER_TIMEOUT);
        self.run(cmd, Some(name)).await.map(drop)
    }
}

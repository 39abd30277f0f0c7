//! The Multipass client: one method per `multipass` command homelab runs, each through
//! [`Cmd`] with the reason it runs, and the classification of its failures (exit codes 1/2/3,
//! "does not exist", "already exists") into [`MultipassError`].
//!
//! Architecture invariant: the only code that runs `multipass`. Methods return parsed values or
//! typed errors; deciding what to do with them is `super::decide`'s job. Classification
//! ([`classify`]) is pure and follows `shared/contracts/NOTES.md` §1: 0 ok, 1 command-line error,
//! 2 command failed (`<command> failed: <message>`), 3 daemon unreachable; texts are matched by
//! substring, never by exact quoting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::json::{self, Instance, JsonError};
use crate::edges::error::Diagnostic;
use crate::edges::process::{Cmd, Output, ProcessError};
use crate::edges::tools::{Os, Tool, ToolNotFound};

/// Something Multipass could not do, sorted by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum MultipassError {
    /// `multipass` is not on PATH.
    #[error(transparent)]
    NotInstalled(#[from] ToolNotFound),
    /// Exit code 3: the client could not reach `multipassd`.
    #[error("the Multipass daemon is not reachable (`{argv}` exited with 3)")]
    DaemonUnreachable {
        /// The command line.
        argv: String,
        /// What the client printed.
        stderr: String,
    },
    /// An instance homelab expected is gone.
    #[error("VM `{name}` does not exist")]
    NoSuchInstance {
        /// Instance name.
        name: String,
        /// The command line.
        argv: String,
    },
    /// Output that does not have the contract's shape.
    #[error(transparent)]
    BadOutput(#[from] JsonError),
    /// Any other failure, with the command, its exit code and stderr.
    #[error(transparent)]
    Failed(#[from] ProcessError),
}

impl Diagnostic for MultipassError {
    fn hints(&self) -> Vec<String> {
        match self {
            MultipassError::NotInstalled(e) => {
                let mut h = e.hints();
                h.push("or run the lab in a cluster you already have: `homelab up --provider existing`".into());
                h
            }
            MultipassError::DaemonUnreachable { .. } => vec![daemon_hint(Os::current())],
            MultipassError::NoSuchInstance { .. } => vec![
                "it was deleted outside homelab; run `homelab up` again to create it (`multipass list` shows what exists)".into(),
            ],
            MultipassError::BadOutput(_) => vec![
                "homelab is tested against Multipass 1.16; check `multipass version` and run `homelab doctor`".into(),
            ],
            MultipassError::Failed(e) => e.hints(),
        }
    }
}

/// How to get the daemon running on `os`.
pub fn daemon_hint(os: Os) -> String {
    match os {
        Os::Linux => "start it with `sudo snap start multipass` (see `snap services multipass`), then run the command again".into(),
        Os::Macos => "start Multipass from Applications, or `sudo launchctl kickstart -k system/com.canonical.multipassd`".into(),
        Os::Windows => "start the Multipass service from Services, or reinstall Multipass".into(),
        Os::Other => "start the Multipass daemon, then run the command again".into(),
    }
}

/// Turn a finished `multipass` command into an error when it failed, or `None` when it exited 0.
///
/// `instance` is the instance the command was about, for "does not exist".
pub fn classify(cmd: &Cmd, instance: Option<&str>, out: Output) -> Option<MultipassError> {
    match out.code {
        Some(0) => None,
        Some(3) => Some(MultipassError::DaemonUnreachable {
            argv: cmd.display(),
            stderr: out.stderr.trim().to_string(),
        }),
        Some(2) if out.stderr.contains("does not exist") => Some(MultipassError::NoSuchInstance {
            name: instance.unwrap_or("?").to_string(),
            argv: cmd.display(),
        }),
        _ => Some(MultipassError::Failed(cmd.failed(out))),
    }
}

/// What a `launch` ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Launched {
    /// Exit 0: running, cloud-init finished as far as Multipass waits.
    Ok,
    /// Exit 2 and the instance exists: Multipass stopped waiting (its 5-minute startup/init
    /// limit), but the VM goes on initialising. The stderr is kept for the progress line.
    StoppedWaiting(String),
    /// Exit 2, "already exists": another run launched it first.
    AlreadyExists,
}

/// What to launch.
#[derive(Clone, Debug)]
pub struct LaunchSpec<'a> {
    /// Instance name.
    pub name: &'a str,
    /// CPUs.
    pub cpus: u32,
    /// Memory, Multipass syntax (`8G`).
    pub memory: String,
    /// Disk, Multipass syntax (`40G`).
    pub disk: String,
    /// Image (`24.04`).
    pub image: &'a str,
    /// cloud-init user-data file.
    pub cloud_init: &'a Path,
}

/// The `multipass` program, found once.
#[derive(Clone, Debug)]
pub struct Multipass {
    program: PathBuf,
    exec_timeout: Duration,
}

/// How long read-only commands (`info`, `list`, `version`) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

impl Multipass {
    /// The same program with another bound for each `multipass exec` (a long remote script).
    pub fn with_exec_timeout(&self, exec_timeout: Duration) -> Multipass {
        Multipass {
            program: self.program.clone(),
            exec_timeout,
        }
    }

    /// Find `multipass` on PATH. `exec_timeout` bounds each `multipass exec`.
    pub fn find(exec_timeout: Duration) -> Result<Multipass, MultipassError> {
        Ok(Multipass {
            program: Tool::Multipass.find()?,
            exec_timeout,
        })
    }

    pub(super) fn cmd(&self, summary: impl Into<String>) -> Cmd {
        Cmd::new(&self.program, summary)
    }

    pub(super) async fn run(
        &self,
        cmd: Cmd,
        instance: Option<&str>,
    ) -> Result<Output, MultipassError> {
        let out = cmd.clone().run_unchecked_async().await?;
        match classify(&cmd, instance, out.clone()) {
            None => Ok(out),
            Some(e) => Err(e),
        }
    }

    /// `multipass info --format json`: every instance, deleted ones included.
    pub async fn info(&self) -> Result<BTreeMap<String, Instance>, MultipassError> {
        let cmd = self
            .cmd("look at the lab's VMs")
            .args(["info", "--format", "json"])
            .timeout(QUERY_TIMEOUT);
        let out = self.run(cmd, None).await?;
        Ok(json::parse_info(&out.stdout)?)
    }

    /// `multipass launch <image> --name … --cpus … --memory … --disk … --cloud-init …`.
    pub async fn launch(&self, spec: &LaunchSpec<'_>) -> Result<Launched, MultipassError> {
        let cmd = self
            .cmd(format!("launch the lab VM `{}`", spec.name))
            .arg("launch")
            .arg(spec.image)
            .args(["--name", spec.name])
            .args(["--cpus", &spec.cpus.to_string()])
            .args(["--memory", &spec.memory])
            .args(["--disk", &spec.disk])
            .arg("--cloud-init")
            .arg(spec.cloud_init);
        // No Cmd timeout: downloading the image alone can take long on a slow network, and
        // Multipass bounds startup and initialisation itself (5 minutes each).
        let out = cmd.clone().run_unchecked_async().await?;
        if out.code == Some(2) && out.stderr.contains("already exists") {
            return Ok(Launched::AlreadyExists);
        }
        match classify(&cmd, Some(spec.name), out.clone()) {
            None => Ok(Launched::Ok),
            Some(MultipassError::Failed(e)) if out.code == Some(2) => {
                // Whether the VM lives on decides between "still initialising" and a real
                // failure; the message's exact wording is not relied upon.
                let alive = self
                    .info()
                    .await?
                    .get(spec.name)
                    .is_some_and(|i| i.state != json::VmState::Deleted);
                if alive {
                    Ok(Launched::StoppedWaiting(first_line(&out.stderr)))
                } else {
                    Err(MultipassError::Failed(e))
                }
            }
            Some(e) => Err(e),
        }
    }

    /// `multipass transfer <local> <name>:<remote>`: copy a file into a VM.
    pub async fn transfer(
        &self,
        local: &std::path::Path,
        name: &str,
        remote: &str,
    ) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("copy `{}` into `{name}`", local.display()))
            .arg("transfer")
            .arg(local)
            .arg(format!("{name}:{remote}"));
        self.run(cmd, Some(name)).await.map(drop)
    }

    /// `multipass start <name>`.
    pub async fn start(&self, name: &str) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("start the lab VM `{name}`"))
            .args(["start", name]);
        self.run(cmd, Some(name)).await.map(drop)
    }

    /// `multipass stop --cancel <name>`: call off a delayed shutdown.
    pub async fn cancel_shutdown(&self, name: &str) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("cancel the scheduled shutdown of `{name}`"))
            .args(["stop", "--cancel", name]);
        self.run(cmd, Some(name)).await.map(drop)
    }

    /// `multipass recover <name>`: bring back a deleted, not purged instance.
    pub async fn recover(&self, name: &str) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("recover the deleted lab VM `{name}`"))
            .args(["recover", name]);
        self.run(cmd, Some(name)).await.map(drop)
    }

    /// `multipass delete --purge <names>…`.
    pub async fn delete_purge(&self, names: &[String]) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("delete and purge {}", quoted_list(names)))
            .args(["delete", "--purge"])
            .args(names);
        self.run(cmd, names.first().map(String::as_str))
            .await
            .map(drop)
    }

    /// `multipass exec <name> -- <argv>`. Returns the output whatever the remote exit code
    /// (it is the remote command's); Multipass's own failures become errors.
    pub async fn exec(
        &self,
        name: &str,
        argv: &[&str],
        summary: impl Into<String>,
    ) -> Result<Output, MultipassError> {
        let cmd = self
            .cmd(summary)
            .args(["exec", name, "--"])
            .args(argv)
            .timeout(self.exec_timeout);
        let out = cmd.clone().run_unchecked_async().await?;
        // A remote command can exit with any code; the client's own failures say so on
        // stderr as `exec failed: …` (2) or cannot reach the daemon (3).
        let client_failed = out.stderr.contains("exec failed") || out.code == Some(3);
        if client_failed && let Some(e) = classify(&cmd, Some(name), out.clone()) {
            return Err(e);
        }
        Ok(out)
    }

    /// `multipass exec <name> -- sudo microk8s join <url>`: the URL carries a join token, so it
    /// is never shown or logged.
    pub async fn join(&self, name: &str, url: &str) -> Result<(), MultipassError> {
        let cmd = self
            .cmd(format!("join `{name}` to the lab's cluster"))
            .args(["exec", name, "--", "sudo", "microk8s", "join"])
            .secret_arg(url)
            .timeout(self.exec_timeout);
        self.run(cmd, Some(name)).await.map(drop)
    }

    /// Like [`Multipass::exec`], requiring the remote command to exit 0.
    pub async fn exec_ok(
        &self,
        name: &str,
        argv: &[&str],
        summary: impl Into<String>,
    ) -> Result<Output, MultipassError> {
        let summary = summary.into();
        let out = self.exec(name, argv, summary.clone()).await?;
        if out.success() {
            Ok(out)
        } else {
            let cmd = self.cmd(summary).args(["exec", name, "--"]).args(argv);
            Err(MultipassError::Failed(cmd.failed(out)))
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stderr: &str) -> Output {
        Output {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn exit_codes_map_to_errors() {
        let cmd = Cmd::new("/snap/bin/multipass", "look at the lab's VMs").args(["info", "x"]);
        assert!(classify(&cmd, Some("x"), out(0, "")).is_none());
        let e = classify(&cmd, Some("x"), out(3, "info failed: cannot connect")).unwrap();
        assert_eq!(
            e.to_string(),
            "the Multipass daemon is not reachable (`multipass info x` exited with 3)"
        );
        let e = classify(
            &cmd,
            Some("x"),
            out(2, "info failed: instance \"x\" does not exist"),
        )
        .unwrap();
        assert_eq!(e.to_string(), "VM `x` does not exist");
        let e = classify(&cmd, Some("x"), out(1, "Unknown option 'y'.")).unwrap();
        assert_eq!(
            e.to_string(),
            "look at the lab's VMs: `multipass info x` exited with 1\nUnknown option 'y'."
        );
    }

    #[test]
    fn multi_line_stderr_becomes_one_line() {
        assert_eq!(
            first_line("launch failed: The following errors occurred:\ntimed out waiting\n"),
            "launch failed: The following errors occurred: timed out waiting"
        );
    }
}

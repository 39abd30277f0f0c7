//! Subprocesses: one wrapper over `duct` that says why each command runs.
//!
//! Architecture invariant: every external program (multipass, git, …) runs through [`Cmd`]. It logs
//! argv at debug level, never inherits stdin (so nothing waits on a prompt), sets
//! `GIT_TERMINAL_PROMPT=0`, captures stdout and stderr, and on failure reports
//! "<summary>: `<argv>` exited with N" followed by stderr. Arguments marked secret are shown as
//! `***` in every message and log line.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use crate::edges::error::Diagnostic;

/// A command about to run, with the reason it runs.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    summary: String,
    args: Vec<Arg>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    dir: Option<PathBuf>,
    timeout: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Arg {
    value: OsString,
    secret: bool,
}

/// What a finished command printed, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// True when the exit code is 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("{summary}: could not start `{argv}`")]
    Spawn {
        /// Why it ran.
        summary: String,
        /// The command line, secrets redacted.
        argv: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program exited non-zero.
    #[error("{summary}: `{argv}` exited with {code}{}", stderr_block(.stderr))]
    Failed {
        /// Why it ran.
        summary: String,
        /// The command line, secrets redacted.
        argv: String,
        /// "2", or "signal" when killed.
        code: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
        /// The full output, for callers that branch on it.
        output: Box<Output>,
    },
    /// The program did not finish in time and was killed.
    #[error("{summary}: `{argv}` did not finish within {secs} s and was stopped")]
    Timeout {
        /// Why it ran.
        summary: String,
        /// The command line, secrets redacted.
        argv: String,
        /// The limit.
        secs: u64,
    },
}

fn stderr_block(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("\n{trimmed}")
    }
}

impl Diagnostic for ProcessError {
    fn hints(&self) -> Vec<String> {
        match self {
            ProcessError::Spawn { .. } => {
                vec!["check that the program is installed and on PATH (`homelab doctor`)".into()]
            }
            ProcessError::Timeout { .. } => {
                vec!["run again with `-v` to see each command as it runs".into()]
            }
            ProcessError::Failed { .. } => Vec::new(),
        }
    }
}

impl ProcessError {
    /// The captured output, when the command ran and failed.
    pub fn output(&self) -> Option<&Output> {
        match self {
            ProcessError::Failed { output, .. } => Some(output.as_ref()),
            _ => None,
        }
    }
}

impl Cmd {
    /// A command running `program`, for the reason `summary` (e.g. "launch the lab VM").
    pub fn new(program: impl AsRef<OsStr>, summary: impl Into<String>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            summary: summary.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            dir: None,
            timeout: None,
        }
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(Arg {
            value: arg.as_ref().to_owned(),
            secret: false,
        });
        self
    }

    /// Append an argument that must never be shown (a password, a token).
    pub fn secret_arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(Arg {
            value: arg.as_ref().to_owned(),
            secret: true,
        });
        self
    }

    /// Append several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Set an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Feed these bytes on stdin (otherwise stdin is null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Run in this directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Kill the command if it runs longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The summary given at construction.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The command line as shown to people: program name, arguments, secrets as `***`.
    pub fn display(&self) -> String {
        let program = PathBuf::from(&self.program);
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.to_string_lossy().into_owned());
        let mut parts = vec![name];
        for a in &self.args {
            if a.secret {
                parts.push("***".into());
            } else {
                parts.push(shell_quote(&a.value.to_string_lossy()));
            }
        }
        parts.join(" ")
    }

    /// Run and require exit code 0.
    pub fn run(&self) -> Result<Output, ProcessError> {
        let out = self.run_unchecked()?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.failed(out))
        }
    }

    /// Run and return the output whatever the exit code (for callers that branch on codes).
    pub fn run_unchecked(&self) -> Result<Output, ProcessError> {
        let argv = self.display();
        tracing::debug!(summary = %self.summary, "run `{argv}`");
        let args: Vec<OsString> = self.args.iter().map(|a| a.value.clone()).collect();
        let mut expr = duct::cmd(&self.program, args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never");
        expr = match &self.stdin {
            Some(bytes) => expr.stdin_bytes(bytes.clone()),
            None => expr.stdin_null(),
        };
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        let spawn_err = |source| ProcessError::Spawn {
            summary: self.summary.clone(),
            argv: argv.clone(),
            source,
        };
        let output = match self.timeout {
            None => expr.run().map_err(spawn_err)?,
            Some(limit) => {
                let handle = expr.start().map_err(spawn_err)?;
                match handle.wait_timeout(limit) {
                    Ok(Some(_)) => handle.into_output().map_err(spawn_err)?,
                    Ok(None) => {
                        let _ = handle.kill();
                        return Err(ProcessError::Timeout {
                            summary: self.summary.clone(),
                            argv,
                            secs: limit.as_secs(),
                        });
                    }
                    Err(e) => return Err(spawn_err(e)),
                }
            }
        };
        let out = Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        tracing::debug!(code = ?out.code, "finished `{argv}`");
        Ok(out)
    }

    /// Run on a blocking thread so async callers are not stalled.
    pub async fn run_async(self) -> Result<Output, ProcessError> {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .expect("subprocess thread panicked")
    }

    /// Like [`Cmd::run_unchecked`], on a blocking thread.
    pub async fn run_unchecked_async(self) -> Result<Output, ProcessError> {
        tokio::task::spawn_blocking(move || self.run_unchecked())
            .await
            .expect("subprocess thread panicked")
    }

    /// The error for a finished command with a non-zero exit.
    pub fn failed(&self, output: Output) -> ProcessError {
        ProcessError::Failed {
            summary: self.summary.clone(),
            argv: self.display(),
            code: output
                .code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "signal".into()),
            stderr: output.stderr.trim().to_string(),
            output: Box::new(output),
        }
    }
}

/// Quote an argument for a POSIX shell only when it needs it (display, printed commands).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_summary_argv_code_and_stderr() {
        let err = Cmd::new("sh", "check the failure message")
            .args(["-c", "echo oops >&2; exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "check the failure message: `sh -c 'echo oops >&2; exit 3'` exited with 3\noops"
        );
    }

    #[test]
    fn secrets_are_redacted_in_display() {
        let c = Cmd::new("/usr/bin/gitea", "create the admin")
            .args(["--password"])
            .secret_arg("hunter2");
        assert_eq!(c.display(), "gitea --password ***");
    }

    #[test]
    fn stdin_is_null_so_nothing_waits() {
        let out = Cmd::new("cat", "read stdin").run().unwrap();
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn timeout_kills() {
        let err = Cmd::new("sleep", "sleep too long")
            .arg("5")
            .timeout(Duration::from_millis(100))
            .run()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("definitely-not-a-program-xyz", "run a missing program")
            .run()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
    }
}

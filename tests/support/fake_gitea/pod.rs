//! A recording fake of the Gitea pod for the `PodExec` seam.
//!
//! It runs the request's argv with the local `sh` (so the real wrapper script, its quoting and
//! its reading of the password from stdin are exercised) with a `gitea` shim first on PATH that
//! only writes its own argv to a file. The fake then plays the Gitea CLI on that argv against the
//! fake server's users, answering with the outputs and errors NOTES §3 states:
//! `New user '<u>' has been successfully created!`; `CreateUser: user already exists [name: <u>]`
//! and `CreateUser: name is reserved [admin]` with a non-zero exit.

use std::path::PathBuf;
use std::sync::Mutex;

use futures::future::BoxFuture;
use homelab::services::wire::pod_exec::{ExecOutput, ExecRequest, PodExec, PodExecError};

use super::FakeGitea;

/// One call as the fake saw it.
#[derive(Clone, Debug)]
pub struct ExecCall {
    /// The argv homelab sent (what the exec URL would carry).
    pub argv: Vec<String>,
    /// Whether a stdin was sent.
    pub stdin: bool,
    /// The argv the `gitea` binary received after the wrapper ran.
    pub gitea_argv: Vec<String>,
    /// What the fake CLI answered.
    pub output: ExecOutput,
}

pub struct FakePodExec {
    gitea: FakeGitea,
    dir: tempfile::TempDir,
    pub calls: Mutex<Vec<ExecCall>>,
}

impl FakePodExec {
    pub fn new(gitea: &FakeGitea) -> FakePodExec {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("gitea");
        std::fs::write(
            &shim,
            "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$FAKE_GITEA_ARGV\"\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakePodExec {
            gitea: gitea.clone(),
            dir,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<ExecCall> {
        self.calls.lock().unwrap().clone()
    }

    async fn run(&self, req: &ExecRequest) -> Result<ExecOutput, PodExecError> {
        // As KubePodExec does: the secret, a newline, then end of input.
        let stdin = req
            .stdin
            .as_ref()
            .map(|s| format!("{}\n", s.expose()).into_bytes());
        Ok(self.run_argv(&req.argv, stdin.as_deref()).await)
    }

    /// Run `argv` as the pod would (the shell with the `gitea` shim first on PATH), feeding
    /// `stdin`; then play the Gitea CLI on what reached the `gitea` binary.
    pub async fn run_argv(&self, argv: &[String], stdin: Option<&[u8]>) -> ExecOutput {
        let argv_file: PathBuf = self.dir.path().join(format!("argv-{}", self.calls().len()));
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("PATH", path)
            .env("FAKE_GITEA_ARGV", &argv_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                pipe.write_all(s).await.unwrap();
            }
        }
        let shell = child.wait_with_output().await.unwrap();
        assert!(
            shell.status.success(),
            "the wrapper script failed: {}",
            String::from_utf8_lossy(&shell.stderr)
        );
        let raw = std::fs::read(&argv_file).expect("the wrapper ran the gitea binary");
        let gitea_argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let output = self.cli(&gitea_argv);
        self.calls.lock().unwrap().push(ExecCall {
            argv: argv.to_vec(),
            stdin: stdin.is_some(),
            gitea_argv,
            output: output.clone(),
        });
        output
    }

    fn cli(&self, argv: &[String]) -> ExecOutput {
        let fail = |msg: String| ExecOutput {
            code: Some(1),
            stdout: String::new(),
            stderr: format!("{msg}\n"),
        };
        let mut args = argv.iter().peekable();
        let mut config = None;
        if args.peek().map(|a| a.as_str()) == Some("--config") {
            args.next();
            config = args.next().cloned();
        }
        if config.as_deref() != Some("/etc/gitea/app.ini") {
            return fail(format!(
                "Unable to load config file {:?}: the rootless image keeps it in /etc/gitea/app.ini",
                config
            ));
        }
        let words: Vec<&String> = args.by_ref().take(3).collect();
        let sub: Vec<&str> = words.iter().map(|s| s.as_str()).collect();
        let mut flags = std::collections::BTreeMap::new();
        let rest: Vec<&String> = args.collect();
        let mut i = 0;
        while i < rest.len() {
            let a = rest[i].as_str();
            let Some(name) = a.strip_prefix("--") else {
                return fail(format!("unexpected argument {a:?}"));
            };
            if let Some((k, v)) = name.split_once('=') {
                flags.insert(k.to_string(), v.to_string());
            } else if matches!(name, "admin" | "must-change-password") {
                flags.insert(name.to_string(), "true".into());
            } else {
                i += 1;
                let Some(v) = rest.get(i) else {
                    return fail(format!("flag needs an argument: --{name}"));
                };
                flags.insert(name.to_string(), v.to_string());
            }
            i += 1;
        }
        let allowed: &[&str] = match sub.as_slice() {
            ["admin", "user", "create"] => &[
                "username",
                "email",
                "password",
                "admin",
                "must-change-password",
            ],
            ["admin", "user", "change-password"] => {
                &["username", "password", "must-change-password"]
            }
            _ => return fail(format!("unknown command {sub:?}")),
        };
        if let Some(bad) = flags.keys().find(|k| !allowed.contains(&k.as_str())) {
            return fail(format!("flag provided but not defined: -{bad}"));
        }
        let user = flags.get("username").cloned().unwrap_or_default();
        let password = flags.get("password").cloned().unwrap_or_default();
        if password.is_empty() {
            return fail("password is required".into());
        }
        let mut data = self.gitea.data();
        match sub[2] {
            "create" => {
                if user.eq_ignore_ascii_case("admin") {
                    return fail("CreateUser: name is reserved [admin]".into());
                }
                if data.users.contains_key(&user) {
                    return fail(format!("CreateUser: user already exists [name: {user}]"));
                }
                if !flags.get("email").is_some_and(|e| e.contains('@')) {
                    return fail("CreateUser: e-mail invalid".into());
                }
                let id = data.tokens.len() as i64 + data.users.len() as i64 + 1000;
                data.users.insert(
                    user.clone(),
                    super::User {
                        id,
                        password,
                        is_admin: flags.get("admin").is_some_and(|v| v == "true"),
                    },
                );
                ExecOutput {
                    code: Some(0),
                    stdout: format!("New user '{user}' has been successfully created!\n"),
                    stderr: String::new(),
                }
            }
            _ => match data.users.get_mut(&user) {
                Some(u) => {
                    u.password = password;
                    ExecOutput {
                        code: Some(0),
                        stdout: format!("{user}'s password has been successfully updated!\n"),
                        stderr: String::new(),
                    }
                }
                None => fail(format!("user does not exist [uid: 0, name: {user}]")),
            },
        }
    }
}

impl PodExec for FakePodExec {
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, PodExecError>> {
        Box::pin(self.run(req))
    }
}

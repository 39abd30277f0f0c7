//! Test harness for black-box CLI tests: a temp HOME and XDG dirs, a sandboxed PATH whose first
//! entry is a bin dir for fake tools, and output filters for temp paths.
//!
//! PATH holds only links to the system tools tests need (so a real `multipass` on the
//! developer's machine can never leak in); add fakes with [`TestContext::fake_tool`].

pub mod fixtures;
pub mod image_cache;
pub mod logs;
pub mod multipass;
pub mod terminal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `HOMELAB_TEST_HOST` for a computer with room for any lab the tests build: `up`'s preflight
/// measures memory and free disk (issue 12), and a test must not depend on the machine running it.
pub const ROOMY_HOST: &str = "memory=64G,disk_free=2T,virtualisation=yes";

/// System tools linked into every sandbox PATH.
pub const SYSTEM_TOOLS: &[&str] = &[
    "sh", "bash", "env", "cat", "sleep", "df", "git", "python3", "mkdir", "rm", "ls", "touch",
    "printf", "echo", "test", "grep", "sed", "tr", "head", "tail", "dirname", "basename", "id",
    // The engine image side-load lists the binary's shared libraries with it.
    "ldd",
];

pub struct TestContext {
    pub temp: tempfile::TempDir,
    /// $HOME
    pub home: PathBuf,
    /// Working directory of commands.
    pub cwd: PathBuf,
    /// Fake tools dir, first on PATH.
    pub bin: PathBuf,
    /// Links to system tools, second on PATH.
    pub sys_bin: PathBuf,
    /// Extra environment for every command.
    pub env: BTreeMap<String, String>,
}

impl TestContext {
    pub fn new() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("homelab-test-")
            .tempdir()
            .unwrap();
        let root = temp.path().to_path_buf();
        let home = root.join("home");
        let cwd = root.join("work");
        let bin = root.join("bin");
        let sys_bin = root.join("sysbin");
        for d in [&home, &cwd, &bin, &sys_bin] {
            std::fs::create_dir_all(d).unwrap();
        }
        for tool in SYSTEM_TOOLS {
            if let Ok(path) = which(tool) {
                #[cfg(unix)]
                std::os::unix::fs::symlink(&path, sys_bin.join(tool)).unwrap();
            }
        }
        TestContext {
            temp,
            home,
            cwd,
            bin,
            sys_bin,
            env: BTreeMap::new(),
        }
    }

    /// `$XDG_DATA_HOME/homelab/<lab>`
    pub fn state_dir(&self, lab: &str) -> PathBuf {
        self.home.join(".local/share/homelab").join(lab)
    }

    /// `$XDG_CACHE_HOME/homelab`
    pub fn cache_dir(&self) -> PathBuf {
        self.home.join(".cache/homelab")
    }

    /// A `homelab` command with the sandboxed environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_homelab"));
        cmd.env_clear()
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env(
                "PATH",
                format!("{}:{}", self.bin.display(), self.sys_bin.display()),
            )
            .env("NO_COLOR", "1")
            .env("LANG", "C.UTF-8")
            // No test reaches the real Snap Store: one that needs a store starts the fake.
            .env("HOMELAB_SNAP_STORE_URL", "http://127.0.0.1:9")
            .current_dir(&self.cwd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run `homelab <args>`.
    pub fn homelab(&self, args: &[&str]) -> Run {
        let out = self.command().args(args).output().unwrap();
        Run::new(out, self)
    }

    /// Write an executable fake tool into the bin dir.
    pub fn fake_tool(&self, name: &str, script: &str) -> PathBuf {
        let p = self.bin.join(name);
        std::fs::write(&p, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }

    /// Write a file relative to the working directory.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.cwd.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Replace temp paths with stable markers.
    pub fn filter(&self, text: &str) -> String {
        let root = self.temp.path().display().to_string();
        let mut out = text.replace(&self.home.display().to_string(), "[HOME]");
        out = out.replace(&self.cwd.display().to_string(), "[CWD]");
        out = out.replace(&root, "[TEMP]");
        out
    }
}

/// The steps `status --output json` lists, in order, each with whether it is done.
pub fn status_steps(status_json: &str) -> Vec<(String, bool)> {
    let status: serde_json::Value = serde_json::from_str(status_json).unwrap();
    status["steps"]
        .as_array()
        .expect("status lists the steps")
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap().to_string();
            (name, s["done"].as_bool().unwrap())
        })
        .collect()
}

/// The hint every failed `homelab up` ends with (issue 12): where to get the lab's logs.
pub fn export_hint(lab: &str) -> String {
    format!(
        "hint: `homelab --lab {lab} export logs` writes what the lab shows (VM and cluster logs, state, events; secrets removed) into one archive to look into or share\n"
    )
}

/// Every file of a `.tar.gz` (as `homelab export logs` writes it), by path.
pub fn read_archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(name, bytes);
    }
    out
}

/// A loopback address no one listens on right now, for a server a test starts in another
/// process (the port is free when returned; the process binds it soon after).
pub fn free_loopback_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The repository's `contracts/`: the upstream facts the tests check against, derived from the
/// upstream documents by `scripts/derive-contracts` (see `contracts/README.md`).
pub fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

/// The Python with `kubernetes-validate` installed: `$HOMELAB_VALIDATOR`, else `.venv/bin/python`.
/// Missing is a failure with a hint, never a skip.
pub fn validator_python() -> PathBuf {
    let p = match std::env::var_os("HOMELAB_VALIDATOR") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    assert!(
        p.exists(),
        "validator `{}` is missing: run the tests with `scripts/test`, which installs kubernetes-validate into .venv",
        p.display()
    );
    p
}

/// Validate manifest files or directories offline (built-in kinds strict, CRs against the CRDs in
/// `contracts/`).
pub fn validate_manifests(kubernetes: &str, paths: &[PathBuf]) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate_manifests.py");
    let out = Command::new(validator_python())
        .arg(script)
        .args(["--kubernetes", kubernetes])
        .args(paths)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    for dir in std::env::split_paths(&path) {
        let p = dir.join(tool);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(())
}

/// A finished command.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn new(out: Output, ctx: &TestContext) -> Self {
        Run {
            code: out.status.code(),
            stdout: ctx.filter(&String::from_utf8_lossy(&out.stdout)),
            stderr: ctx.filter(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

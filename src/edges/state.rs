//! The lab state on disk: `~/.local/share/homelab/<lab>/` (XDG data dir), directory 0700, every
//! file 0600, every write atomic (temp file, fsync, rename).
//!
//! Architecture invariant: this is the only module that writes into the state directory, and it
//! never holds a secret outside [`Secret`]. Generated secrets come from the OS CSPRNG, are created
//! once, and are reused on every later run; `down --purge` is the only thing that removes them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::edges::error::{Diagnostic, IoError, io_err};
use crate::edges::redact::Secret;

/// Where a lab's files live.
#[derive(Clone, Debug)]
pub struct LabState {
    lab: String,
    dir: PathBuf,
}

/// A state file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No home or data directory could be determined.
    #[error("could not determine the data directory for lab state")]
    NoDataDir,
    /// Filesystem failure.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A state file is corrupt.
    #[error("state file `{path}` is not valid: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The OS random generator failed.
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    /// Another command holds the lab's command lock and did not let go in time.
    #[error(transparent)]
    Busy(Box<LabBusy>),
}

/// Another command holds a lab's command lock and did not let go in time.
#[derive(Debug, thiserror::Error)]
#[error("lab `{lab}` is busy: {} has been changing it{}", holder_text(.holder.as_ref()), .holder.as_ref().map(|h| format!(" since {}", h.since)).unwrap_or_default())]
pub struct LabBusy {
    /// The lab.
    pub lab: String,
    /// The command that wanted it (`up`).
    pub command: String,
    /// Who holds it, as the lock file says (`None` when it cannot be read).
    pub holder: Option<LockHolder>,
    /// How long this command waited.
    pub waited: String,
}

fn holder_text(holder: Option<&LockHolder>) -> String {
    match holder {
        Some(h) => format!("`homelab {}` (process {})", h.command, h.pid),
        None => "another homelab command".into(),
    }
}

impl Diagnostic for StateError {
    fn hints(&self) -> Vec<String> {
        match self {
            StateError::NoDataDir => {
                vec!["set `HOME` (or `XDG_DATA_HOME`) to a writable directory".into()]
            }
            StateError::Io(e) => e.hints(),
            StateError::Corrupt { path, .. } => vec![format!(
                "move `{}` aside and run the command again; secrets in it will be regenerated",
                path.display()
            )],
            StateError::Random(_) => Vec::new(),
            StateError::Busy(busy) => {
                let LabBusy {
                    command,
                    holder,
                    waited,
                    ..
                } = busy.as_ref();
                let mut h = vec![format!(
                    "waited {waited}; one command changes a lab at a time: let {} finish, then run `homelab {command}` again",
                    holder
                        .as_ref()
                        .map_or("it".to_string(), |h| format!("process {}", h.pid))
                )];
                if let Some(holder) = holder {
                    h.push(format!(
                        "to stop it instead, press Ctrl-C where it runs (or `kill {}`); the next run resumes where it stopped",
                        holder.pid
                    ));
                }
                h
            }
        }
    }
}

/// The lab's command lock file. Every command that changes a lab holds an advisory OS lock on it
/// for as long as it runs (issue 12); its body names the holder, for messages only.
pub const COMMAND_LOCK_FILE: &str = "command.lock";

/// Who holds (or last held) a lab's command lock, as its body says. Only ever shown to people:
/// whether the lock is held is the OS's answer, never this body's (a killed holder leaves its
/// body behind, and the OS releases its lock at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The command (`up`, `down`, `ca regenerate`, …).
    pub command: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lock, RFC 3339 UTC.
    pub since: String,
}

/// A held command lock; released when dropped (and by the OS when the process dies).
#[derive(Debug)]
pub struct LabLock {
    _file: std::fs::File,
}

/// Root directory holding every lab's state (`$XDG_DATA_HOME/homelab`).
pub fn data_root() -> Result<PathBuf, StateError> {
    let base = directories::BaseDirs::new().ok_or(StateError::NoDataDir)?;
    Ok(base.data_dir().join("homelab"))
}

/// Root directory for downloaded upstream manifests (`$XDG_CACHE_HOME/homelab`).
pub fn cache_root() -> Result<PathBuf, StateError> {
    let base = directories::BaseDirs::new().ok_or(StateError::NoDataDir)?;
    Ok(base.cache_dir().join("homelab"))
}

impl LabState {
    /// The state of lab `lab` under the user's data directory. Nothing is created yet.
    pub fn locate(lab: &str) -> Result<LabState, StateError> {
        Ok(LabState::at(lab, data_root()?.join(lab)))
    }

    /// The state of lab `lab` in an explicit directory (tests).
    pub fn at(lab: &str, dir: impl Into<PathBuf>) -> LabState {
        LabState {
            lab: lab.to_string(),
            dir: dir.into(),
        }
    }

    /// The lab's name.
    pub fn lab(&self) -> &str {
        &self.lab
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether anything has been stored for this lab.
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Whether the directory exists and holds nothing but the command lock (a command took the
    /// lock on a lab that has no state).
    pub fn holds_only_the_lock(&self) -> Result<bool, StateError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("read directory", &self.dir)(e).into()),
        };
        for e in entries {
            let e = e.map_err(io_err("read directory", &self.dir))?;
            if e.file_name() != COMMAND_LOCK_FILE {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Path of a file in the state directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Create the directory (and `sub`) with mode 0700 if missing; tighten it if it is looser.
    pub fn ensure_dir(&self, sub: Option<&str>) -> Result<PathBuf, StateError> {
        let dir = match sub {
            Some(s) => self.dir.join(s),
            None => self.dir.clone(),
        };
        let mut to_fix = vec![];
        let mut d = dir.as_path();
        while d.starts_with(&self.dir) {
            to_fix.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        for d in to_fix {
            set_mode(&d, 0o700)?;
        }
        Ok(dir)
    }

    /// Read a file, `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let p = self.path(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p)(e).into()),
        }
    }

    /// Read and parse a JSON file, `None` if it does not exist.
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        match self.read(name)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path: self.path(name),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Write a file atomically with mode 0600, creating the directory (0700) first.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let target = self.path(name);
        let parent = target.parent().expect("state files live in a directory");
        let sub = parent
            .strip_prefix(&self.dir)
            .ok()
            .filter(|s| !s.as_os_str().is_empty())
            .map(|s| s.to_string_lossy().into_owned());
        self.ensure_dir(sub.as_deref())?;
        write_atomic(&target, bytes, 0o600)
    }

    /// Serialize as pretty JSON and write atomically (0600).
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let mut text = serde_json::to_vec_pretty(value).expect("state values serialize");
        text.push(b'\n');
        self.write(name, &text)
    }

    /// Remove a file if present.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let p = self.path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p)(e).into()),
        }
    }

    /// Remove the whole lab directory (`down --purge`).
    pub fn purge(&self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove directory", &self.dir)(e).into()),
        }
    }

    /// Take the lab's command lock for `command`, creating the directory if needed. While another
    /// process holds it, `waiting` is told who (once), and this retries with a bounded backoff for
    /// up to `wait`; then [`StateError::Busy`] names the holder. Only the OS lock decides: a body
    /// left by a killed process never blocks.
    pub fn lock(
        &self,
        command: &str,
        wait: std::time::Duration,
        waiting: &dyn Fn(Option<&LockHolder>),
    ) -> Result<LabLock, StateError> {
        use std::time::{Duration, Instant};
        let path = self.path(COMMAND_LOCK_FILE);
        let started = Instant::now();
        let mut told = false;
        let mut attempt = 0u32;
        loop {
            self.ensure_dir(None)?;
            let mut file = open_lock(&path).map_err(io_err("open", &path))?;
            match file.try_lock() {
                Ok(()) => {
                    // `down --purge` may have removed the file between our open and our lock:
                    // a lock on a removed file excludes nobody, so open the path again.
                    if !same_file(&file, &path) {
                        continue;
                    }
                    let holder = LockHolder {
                        command: command.to_string(),
                        pid: std::process::id(),
                        since: now_rfc3339(),
                    };
                    let mut body = serde_json::to_vec(&holder).expect("lock holders serialize");
                    body.push(b'\n');
                    // Written in place: replacing the file would give later commands another
                    // inode to lock. A reader may see it half-written; it is only for messages.
                    file.set_len(0)
                        .and_then(|()| file.write_all(&body))
                        .map_err(io_err("write", &path))?;
                    return Ok(LabLock { _file: file });
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok());
                    if started.elapsed() >= wait {
                        return Err(StateError::Busy(Box::new(LabBusy {
                            lab: self.lab.clone(),
                            command: command.to_string(),
                            holder,
                            waited: crate::edges::output::human_duration(started.elapsed()),
                        })));
                    }
                    if !told {
                        waiting(holder.as_ref());
                        told = true;
                    }
                    let pause = Duration::from_millis(50)
                        .saturating_mul(1 << attempt.min(4))
                        .min(wait.saturating_sub(started.elapsed()));
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_err("lock", &path)(e).into());
                }
            }
        }
    }

    /// Load the lab's secrets, generating (and storing) any that are missing of those every lab
    /// has.
    pub fn secrets(&self) -> Result<Secrets, StateError> {
        self.secrets_for(&[])
    }

    /// Load the lab's secrets, generating (and storing) any that are missing of those every lab
    /// has and of those the named template sets use (the stack's components' `templates`, e.g.
    /// `argocd`: Argo CD's admin password only for a stack that runs Argo CD). Secrets generated
    /// for another stack earlier are kept (switching back reuses them).
    pub fn secrets_for(&self, templates: &[&str]) -> Result<Secrets, StateError> {
        let stored: Option<BTreeMap<String, String>> = self.read_json(SECRETS_FILE)?;
        let mut map = stored.clone().unwrap_or_default();
        for spec in SECRET_SPECS {
            let wanted = spec.templates.is_none_or(|t| templates.contains(&t));
            if wanted && !map.contains_key(spec.name) {
                let value = match spec.kind {
                    SecretKind::BcryptOf(of) => {
                        bcrypt_hash(map.get(of).map_or("", String::as_str))?
                    }
                    kind => generate(kind)?,
                };
                map.insert(spec.name.to_string(), value);
            }
        }
        if stored.as_ref() != Some(&map) {
            self.write_json(SECRETS_FILE, &map)?;
        }
        Ok(Secrets {
            values: map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        })
    }

    /// The stored secrets without generating missing ones (read-only commands); `None` when the
    /// lab never generated any. Names not stored read as empty.
    pub fn stored_secrets(&self) -> Result<Option<Secrets>, StateError> {
        let stored: Option<BTreeMap<String, String>> = self.read_json(SECRETS_FILE)?;
        Ok(stored.map(|map| Secrets {
            values: map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        }))
    }

    /// Store extra secret values learnt later (tokens, OAuth client credentials).
    pub fn store_secrets(&self, updates: &[(&str, &str)]) -> Result<(), StateError> {
        let mut map: BTreeMap<String, String> = self.read_json(SECRETS_FILE)?.unwrap_or_default();
        let mut changed = false;
        for (k, v) in updates {
            if map.get(*k).map(String::as_str) != Some(*v) {
                map.insert((*k).to_string(), (*v).to_string());
                changed = true;
            }
        }
        if changed {
            self.write_json(SECRETS_FILE, &map)?;
        }
        Ok(())
    }
}

/// File holding generated secrets.
pub const SECRETS_FILE: &str = "secrets.json";

#[derive(Clone, Copy)]
enum SecretKind {
    /// Letters and digits, for passwords people may type.
    Password,
    /// 32 random bytes as hex.
    Hex32,
    /// 16 random bytes as hex: 32 characters, the length of the API tokens Drone generates.
    Hex16,
    /// Not generated: empty until the wiring step learns it (e.g. the OAuth client Gitea
    /// creates for Drone) and stores it with [`LabState::store_secrets`]. Listed so templates
    /// can always name it.
    Learnt,
    /// The bcrypt hash of the named secret (listed before it), as Argo CD stores its admin
    /// password in `argocd-secret` (`admin.password`); made once, so re-renders are stable.
    BcryptOf(&'static str),
    /// The time it was generated (RFC 3339, UTC), e.g. Argo CD's `admin.passwordMtime`.
    Now,
}

struct SecretSpec {
    name: &'static str,
    kind: SecretKind,
    /// Generated only for a stack with a component rendered from these templates (`argocd`);
    /// `None`: for every lab.
    templates: Option<&'static str>,
}

/// Every generated secret. Adding one here generates it for existing labs on their next run.
const SECRET_SPECS: &[SecretSpec] = &[
    SecretSpec {
        name: "gitea_admin_password",
        kind: SecretKind::Password,
        templates: None,
    },
    SecretSpec {
        name: "gitea_secret_key",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "gitea_internal_token",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "drone_rpc_secret",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "drone_cookie_secret",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "drone_database_secret",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "webhook_secret",
        kind: SecretKind::Hex32,
        templates: None,
    },
    SecretSpec {
        name: "oauth_state_secret",
        kind: SecretKind::Hex32,
        templates: None,
    },
    // Drone's API token for the admin (`DRONE_USER_CREATE=…,token:<this>`), so the wiring step
    // can call Drone's API without first logging in through the browser flow.
    SecretSpec {
        name: "drone_admin_token",
        kind: SecretKind::Hex16,
        templates: None,
    },
    // Argo CD (the `argocd` stack): the admin login, set through `argocd-secret` as Argo CD
    // documents (operator-manual/argocd-secret.yaml), so Argo CD never generates one of its own.
    SecretSpec {
        name: "argocd_admin_password",
        kind: SecretKind::Password,
        templates: Some("argocd"),
    },
    SecretSpec {
        name: "argocd_admin_password_bcrypt",
        kind: SecretKind::BcryptOf("argocd_admin_password"),
        templates: Some("argocd"),
    },
    SecretSpec {
        name: "argocd_admin_password_mtime",
        kind: SecretKind::Now,
        templates: Some("argocd"),
    },
    // argocd-secret `server.secretkey` (session signing), generated by Argo CD when missing.
    SecretSpec {
        name: "argocd_server_secretkey",
        kind: SecretKind::Hex32,
        templates: Some("argocd"),
    },
    // Secret `argocd-redis` key `auth`, which Argo CD's `secret-init` container creates when
    // missing (`argocd admin redis-initial-password`); the lab's own, so no object is left
    // that the lab did not create.
    SecretSpec {
        name: "argocd_redis_password",
        kind: SecretKind::Hex32,
        templates: Some("argocd"),
    },
    SecretSpec {
        name: "drone_oauth_client_id",
        kind: SecretKind::Learnt,
        templates: None,
    },
    SecretSpec {
        name: "drone_oauth_client_secret",
        kind: SecretKind::Learnt,
        templates: None,
    },
];

/// The lab's secrets by name.
#[derive(Clone, Debug)]
pub struct Secrets {
    values: BTreeMap<String, Secret>,
}

impl Secrets {
    /// A secret by name; empty when unknown (e.g. an OAuth client secret not created yet).
    pub fn get(&self, name: &str) -> Secret {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// Whether a value is stored under `name`.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Fixed markers in place of every secret, for reviewing rendered output.
    pub fn placeholders() -> Secrets {
        let mut values = BTreeMap::new();
        for spec in SECRET_SPECS {
            values.insert(spec.name.to_string(), Secret::new(placeholder(spec.name)));
        }
        Secrets { values }
    }

    /// Names and values, for building the template context.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// With extra named values (e.g. OAuth client credentials learnt at wiring time).
    pub fn with(mut self, name: &str, value: Secret) -> Secrets {
        self.values.insert(name.to_string(), value);
        self
    }
}

/// The marker used for a secret under `--placeholder-secrets`.
pub fn placeholder(name: &str) -> String {
    format!("PLACEHOLDER-{}", name.replace('_', "-"))
}

/// Random bytes from the OS CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, StateError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| StateError::Random(e.to_string()))?;
    Ok(buf)
}

fn generate(kind: SecretKind) -> Result<String, StateError> {
    match kind {
        SecretKind::Hex32 => Ok(hex::encode(random_bytes(32)?)),
        SecretKind::Hex16 => Ok(hex::encode(random_bytes(16)?)),
        SecretKind::Learnt => Ok(String::new()),
        SecretKind::BcryptOf(_) => unreachable!("hashed where the password is known"),
        SecretKind::Now => Ok(time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond")
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StateError::Random(e.to_string()))?),
        SecretKind::Password => {
            const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
            let mut out = String::with_capacity(24);
            // Rejection sampling keeps every character equally likely.
            while out.len() < 24 {
                for b in random_bytes(32)? {
                    let limit = 256 - (256 % ALPHABET.len());
                    if (b as usize) < limit && out.len() < 24 {
                        out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
                    }
                }
            }
            Ok(out)
        }
    }
}

/// bcrypt of `password` at cost 10, Argo CD's (`util/password/password.go` uses Go's
/// `bcrypt.DefaultCost`), with a salt from the OS CSPRNG.
fn bcrypt_hash(password: &str) -> Result<String, StateError> {
    let salt: [u8; 16] = random_bytes(16)?
        .try_into()
        .expect("16 bytes were asked for");
    bcrypt::hash_with_salt(password, 10, salt)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| StateError::Random(e.to_string()))
}

/// Write `bytes` to `target` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> Result<(), IoError> {
        let mut f = open_private(&tmp, mode).map_err(io_err("write", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("write", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, target).map_err(io_err("write", target))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    set_mode(target, mode)?;
    Ok(())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Whether `file` is still what `path` names.
#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, path: &Path) -> bool {
    // Windows does not remove a file another process holds open.
    path.exists()
}

#[cfg(unix)]
fn open_private(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("set permissions of", path)(e).into())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), StateError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_generated_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        let first = state.secrets().unwrap();
        let second = state.secrets().unwrap();
        let pw = first.get("gitea_admin_password");
        assert_eq!(pw.expose().len(), 24);
        assert_eq!(pw, second.get("gitea_admin_password"));
        assert_ne!(
            first.get("drone_rpc_secret"),
            first.get("webhook_secret"),
            "each secret is drawn separately"
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(state.dir()), 0o700);
            assert_eq!(mode(&state.path(SECRETS_FILE)), 0o600);
        }
    }

    #[test]
    fn learnt_secrets_start_empty_and_keep_what_wiring_stores() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        let first = state.secrets().unwrap();
        assert!(first.has("drone_oauth_client_id"));
        assert_eq!(first.get("drone_oauth_client_id").expose(), "");
        assert_eq!(first.get("drone_admin_token").expose().len(), 32);
        state
            .store_secrets(&[("drone_oauth_client_id", "abc")])
            .unwrap();
        let second = state.secrets().unwrap();
        assert_eq!(second.get("drone_oauth_client_id").expose(), "abc");
        assert_eq!(
            first.get("drone_admin_token"),
            second.get("drone_admin_token")
        );
        assert_eq!(
            Secrets::placeholders()
                .get("drone_oauth_client_secret")
                .expose(),
            "PLACEHOLDER-drone-oauth-client-secret"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        state.write("ca/ca.key", b"one").unwrap();
        state.write("ca/ca.key", b"two").unwrap();
        assert_eq!(state.read("ca/ca.key").unwrap().unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(state.path("ca"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        #[cfg(unix)]
        assert_eq!(mode(&state.path("ca")), 0o700);
    }

    /// Issue 12: one command changes a lab at a time; the second is told who holds it.
    #[test]
    fn a_held_lock_names_its_holder_and_is_free_once_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        let first = state
            .lock("up", std::time::Duration::ZERO, &|_| panic!("free"))
            .unwrap();
        let told = std::sync::Mutex::new(Vec::new());
        let err = state
            .lock("down", std::time::Duration::from_millis(120), &|h| {
                told.lock().unwrap().push(h.cloned())
            })
            .unwrap_err();
        let told = told.into_inner().unwrap();
        assert_eq!(told.len(), 1, "told once while waiting");
        let holder = told[0].clone().expect("the body names the holder");
        assert_eq!(
            (holder.command.as_str(), holder.pid),
            ("up", std::process::id())
        );
        let StateError::Busy(busy) = &err else {
            panic!("{err}");
        };
        assert_eq!(busy.holder.as_ref(), Some(&holder));
        assert!(
            err.to_string().starts_with(&format!(
                "lab `t` is busy: `homelab up` (process {}) has been changing it since ",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        state
            .lock("down", std::time::Duration::ZERO, &|_| panic!("free"))
            .unwrap();
    }

    /// Issue 12: the body of a lock nobody holds (its process was killed) is not a lock.
    #[test]
    fn a_lock_file_nobody_holds_never_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        state
            .write(
                COMMAND_LOCK_FILE,
                br#"{"command":"up","pid":4194999,"since":"2026-01-01T00:00:00Z"}"#,
            )
            .unwrap();
        let _held = state
            .lock("up", std::time::Duration::ZERO, &|_| panic!("not held"))
            .unwrap();
        let body: LockHolder =
            serde_json::from_slice(&state.read(COMMAND_LOCK_FILE).unwrap().unwrap()).unwrap();
        assert_eq!(body.pid, std::process::id());
        assert!(state.holds_only_the_lock().unwrap());
    }

    #[test]
    fn corrupt_state_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        state.write(SECRETS_FILE, b"{not json").unwrap();
        let err = state.secrets().unwrap_err();
        assert!(err.to_string().contains("secrets.json"), "{err}");
    }
}

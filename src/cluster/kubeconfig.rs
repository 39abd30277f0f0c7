//! Kubeconfigs: the lab's own (built from `microk8s config`, stored 0600 in the lab state) and
//! its entries merged into the user's kubeconfig as cluster, user and context `homelab-<lab>`,
//! the way kind and k3d do it, then removed again by `down`.
//!
//! Architecture invariant: the YAML transformations ([`from_microk8s`], [`merge_entries`],
//! [`remove_entries`]) are pure and keep every entry that is not ours untouched;
//! [`UserKubeconfig`] is the only code that touches the user's files. It honours `KUBECONFIG`
//! (a list: entries are updated where they are, new ones go to the first existing file, else
//! the last one, as kubectl does), writes only when something changes, and writes under a
//! `<file>.lock`, atomically, keeping the file's mode (new files 0600).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::edges::yaml::{self, Mapping, Value};

use crate::edges::error::{Diagnostic, IoError, io_err};
use crate::edges::redact::Secret;
use crate::edges::state::{self, StateError};

/// The three lists a kubeconfig names its entries in.
const LISTS: [&str; 3] = ["clusters", "contexts", "users"];

/// A kubeconfig that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// `microk8s config` printed something else (e.g. on a joined worker).
    #[error("`microk8s config` on `{node}` did not print a kubeconfig: {message}")]
    NotAKubeconfig {
        /// The VM.
        node: String,
        /// What was wrong.
        message: String,
    },
    /// A kubeconfig file is not a kubeconfig.
    #[error("kubeconfig `{path}` cannot be read: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// Another program holds the lock.
    #[error("kubeconfig `{path}` is locked by another program (`{lock}` exists)")]
    Locked {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Filesystem failure.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Writing failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Diagnostic for KubeconfigError {
    fn hints(&self) -> Vec<String> {
        match self {
            KubeconfigError::NotAKubeconfig { node, .. } => vec![format!(
                "check microk8s on the first node: `multipass exec {node} -- sudo microk8s status`"
            )],
            KubeconfigError::Parse { path, .. } => vec![format!(
                "fix or move `{}` aside; homelab does not overwrite a kubeconfig it cannot read",
                path.display()
            )],
            KubeconfigError::Locked { lock, .. } => vec![format!(
                "if no kubectl or homelab is running, delete `{}` and run the command again",
                lock.display()
            )],
            KubeconfigError::Io(e) => e.hints(),
            KubeconfigError::State(e) => e.hints(),
        }
    }
}

/// The lab's kubeconfig: one cluster, user and context, all named `homelab-<lab>`.
#[derive(Clone, Debug)]
pub struct LabKubeconfig {
    /// The YAML text (holds the client key).
    pub yaml: Secret,
    /// API server URL.
    pub server: String,
    /// Context (and cluster and user) name.
    pub context: String,
}

impl LabKubeconfig {
    /// Parse a stored lab kubeconfig.
    pub fn parse(text: &str, context: &str) -> Option<LabKubeconfig> {
        let v: Value = yaml::from_str(text).ok()?;
        let server = entry(&v, "clusters", context)?
            .get("cluster")?
            .get("server")?
            .as_str()?
            .to_string();
        Some(LabKubeconfig {
            yaml: Secret::new(text),
            server,
            context: context.to_string(),
        })
    }

    fn value(&self) -> Value {
        yaml::from_str(self.yaml.expose()).expect("lab kubeconfigs are built valid")
    }
}

fn entry<'a>(doc: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    doc.get(list)?
        .as_sequence()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

/// Build the lab kubeconfig from what `microk8s config` printed on `node`: its cluster and user
/// renamed to `context`, the server pointed at `node_ip` (same port).
pub fn from_microk8s(
    printed: &str,
    node: &str,
    context: &str,
    node_ip: &str,
) -> Result<LabKubeconfig, KubeconfigError> {
    let not = |message: String| KubeconfigError::NotAKubeconfig {
        node: node.to_string(),
        message,
    };
    let first_line = printed.lines().next().unwrap_or("").trim().to_string();
    let doc: Value =
        yaml::from_str(printed).map_err(|_| not(format!("it printed `{first_line}`")))?;
    let first = |list: &str, key: &str| -> Option<Value> {
        doc.get(list)?.as_sequence()?.first()?.get(key).cloned()
    };
    let (Some(mut cluster), Some(user)) = (first("clusters", "cluster"), first("users", "user"))
    else {
        return Err(not(format!("it printed `{first_line}`")));
    };
    let server = cluster
        .get("server")
        .and_then(Value::as_str)
        .ok_or_else(|| not("its cluster has no `server`".into()))?;
    let server = rewrite_host(server, node_ip);
    cluster
        .as_mapping_mut()
        .ok_or_else(|| not("its cluster is not a map".into()))?
        .insert("server".into(), server.clone().into());

    let named = |key: &str, body: Value| -> Value {
        let mut m = Mapping::new();
        m.insert(key.into(), body);
        m.insert("name".into(), context.into());
        Value::Mapping(m)
    };
    let mut ctx = Mapping::new();
    ctx.insert("cluster".into(), context.into());
    ctx.insert("user".into(), context.into());
    let mut out = Mapping::new();
    out.insert("apiVersion".into(), "v1".into());
    out.insert("kind".into(), "Config".into());
    out.insert(
        "clusters".into(),
        Value::Sequence(vec![named("cluster", cluster)]),
    );
    out.insert(
        "contexts".into(),
        Value::Sequence(vec![named("context", Value::Mapping(ctx))]),
    );
    out.insert("users".into(), Value::Sequence(vec![named("user", user)]));
    out.insert("current-context".into(), context.into());
    out.insert("preferences".into(), Value::Mapping(Mapping::new()));
    let yaml = yaml::to_string(&Value::Mapping(out)).expect("YAML values serialize");
    Ok(LabKubeconfig {
        yaml: Secret::new(yaml),
        server,
        context: context.to_string(),
    })
}

/// `https://127.0.0.1:16443` → `https://<ip>:16443`.
fn rewrite_host(server: &str, ip: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("https", server));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let port = authority
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("16443");
    format!("{scheme}://{ip}:{port}{path}")
}

fn empty_config() -> Value {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Config".into());
    for list in LISTS {
        m.insert(list.into(), Value::Sequence(Vec::new()));
    }
    m.insert("current-context".into(), "".into());
    m.insert("preferences".into(), Value::Mapping(Mapping::new()));
    Value::Mapping(m)
}

fn list_mut<'a>(
    doc: &'a mut Mapping,
    list: &str,
    path: &Path,
) -> Result<&'a mut Vec<Value>, KubeconfigError> {
    let slot = doc
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    slot.as_sequence_mut()
        .ok_or_else(|| KubeconfigError::Parse {
            path: path.to_path_buf(),
            message: format!("`{list}` is not a list"),
        })
}

/// The user's kubeconfig `user` (None: missing or empty) with the lab's entries added or
/// replaced. `None` when nothing would change. `current-context` is set to the lab only when
/// its context is new or nothing is current, so a re-run never switches the user's context.
pub fn merge_entries(
    user: Option<Value>,
    lab: &LabKubeconfig,
    path: &Path,
) -> Result<Option<Value>, KubeconfigError> {
    let name = lab.context.as_str();
    let lab_doc = lab.value();
    let mut doc = user.filter(|v| !v.is_null()).unwrap_or_else(empty_config);
    let map = doc.as_mapping_mut().ok_or_else(|| KubeconfigError::Parse {
        path: path.to_path_buf(),
        message: "not a map".into(),
    })?;
    let mut changed = false;
    let mut context_is_new = false;
    for list in LISTS {
        let ours = entry(&lab_doc, list, name)
            .expect("lab kubeconfigs have every entry")
            .clone();
        let items = list_mut(map, list, path)?;
        match items
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(existing) if *existing == ours => {}
            Some(existing) => {
                *existing = ours;
                changed = true;
            }
            None => {
                items.push(ours);
                changed = true;
                context_is_new |= list == "contexts";
            }
        }
    }
    let current = map
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    if context_is_new || current.is_empty() {
        if current != name {
            changed = true;
        }
        map.insert("current-context".into(), name.into());
    }
    Ok(changed.then_some(doc))
}

/// `user` without the entries named `name`; `current-context` cleared if it was ours.
/// `None` when there is nothing of ours in it.
pub fn remove_entries(mut user: Value, name: &str) -> Option<Value> {
    let map = user.as_mapping_mut()?;
    let mut changed = false;
    for list in LISTS {
        if let Some(items) = map.get_mut(list).and_then(Value::as_sequence_mut) {
            let before = items.len();
            items.retain(|e| e.get("name").and_then(Value::as_str) != Some(name));
            changed |= items.len() != before;
        }
    }
    if map.get("current-context").and_then(Value::as_str) == Some(name) {
        map.insert("current-context".into(), "".into());
        changed = true;
    }
    changed.then_some(user)
}

/// Whether a kubeconfig names `name` in any of its lists.
pub fn has_entries(doc: &Value, name: &str) -> bool {
    LISTS.iter().any(|l| entry(doc, l, name).is_some())
}

/// The user's kubeconfig files: `$KUBECONFIG` (a path list) or `~/.kube/config`.
#[derive(Clone, Debug)]
pub struct UserKubeconfig {
    paths: Vec<PathBuf>,
}

impl UserKubeconfig {
    /// From the value of `KUBECONFIG` and the home directory.
    pub fn new(kubeconfig_env: Option<OsString>, home: &Path) -> UserKubeconfig {
        let paths: Vec<PathBuf> = kubeconfig_env
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let paths = if paths.is_empty() {
            vec![home.join(".kube").join("config")]
        } else {
            paths
        };
        UserKubeconfig { paths }
    }

    /// From this process's environment.
    pub fn from_env() -> Result<UserKubeconfig, StateError> {
        let home = directories::BaseDirs::new()
            .ok_or(StateError::NoDataDir)?
            .home_dir()
            .to_path_buf();
        Ok(UserKubeconfig::new(std::env::var_os("KUBECONFIG"), &home))
    }

    /// The files, in `KUBECONFIG` order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The file that holds entries named `name`, if any.
    pub fn holding(&self, name: &str) -> Result<Option<PathBuf>, KubeconfigError> {
        for p in &self.paths {
            if let Some(doc) = read_doc(p)?
                && has_entries(&doc, name)
            {
                return Ok(Some(p.clone()));
            }
        }
        Ok(None)
    }

    /// Add or update the lab's entries. Returns the file written, `None` when nothing changed.
    pub fn merge(&self, lab: &LabKubeconfig) -> Result<Option<PathBuf>, KubeconfigError> {
        let target = match self.holding(&lab.context)? {
            Some(p) => p,
            None => self
                .paths
                .iter()
                .find(|p| p.exists())
                .unwrap_or_else(|| self.paths.last().expect("at least one path"))
                .clone(),
        };
        let target = resolve_symlink(&target);
        // Look before locking: a healthy re-run must not write, not even a lock file.
        if merge_entries(read_doc(&target)?, lab, &target)?.is_none() {
            return Ok(None);
        }
        with_lock(&target, || {
            match merge_entries(read_doc(&target)?, lab, &target)? {
                Some(doc) => write_doc(&target, &doc).map(|()| Some(target.clone())),
                None => Ok(None),
            }
        })
    }

    /// Remove the entries named `name` from every file. Returns the files changed.
    pub fn remove(&self, name: &str) -> Result<Vec<PathBuf>, KubeconfigError> {
        let mut changed = Vec::new();
        for p in &self.paths {
            let p = resolve_symlink(p);
            let Some(doc) = read_doc(&p)? else { continue };
            if remove_entries(doc, name).is_none() {
                continue;
            }
            let wrote = with_lock(&p, || {
                match read_doc(&p)?.and_then(|d| remove_entries(d, name)) {
                    Some(doc) => write_doc(&p, &doc).map(|()| true),
                    None => Ok(false),
                }
            })?;
            if wrote {
                changed.push(p);
            }
        }
        Ok(changed)
    }
}

fn resolve_symlink(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read_doc(path: &Path) -> Result<Option<Value>, KubeconfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e).into()),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = yaml::from_str(&text).map_err(|e| KubeconfigError::Parse {
        path: path.to_path_buf(),
        message: e.full().to_string(),
    })?;
    Ok((!v.is_null()).then_some(v))
}

fn write_doc(path: &Path, doc: &Value) -> Result<(), KubeconfigError> {
    let text = yaml::to_string(doc).expect("YAML values serialize");
    let mode = current_mode(path).unwrap_or(0o600);
    state::write_atomic(path, text.as_bytes(), mode)?;
    Ok(())
}

#[cfg(unix)]
fn current_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn current_mode(_path: &Path) -> Option<u32> {
    None
}

/// How long to wait for another program's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Run `f` holding `<path>.lock` (created exclusively, as kubectl's own lock is).
fn with_lock<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, KubeconfigError>,
) -> Result<T, KubeconfigError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    let mut lock_name = path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock = PathBuf::from(lock_name);
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if started.elapsed() > LOCK_WAIT {
                    return Err(KubeconfigError::Locked {
                        path: path.to_path_buf(),
                        lock,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(io_err("create", &lock)(e).into()),
        }
    }
    let result = f();
    let _ = std::fs::remove_file(&lock);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROK8S: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.0.0.5:16443\n  name: microk8s-cluster\ncontexts:\n- context:\n    cluster: microk8s-cluster\n    user: admin\n  name: microk8s\ncurrent-context: microk8s\nkind: Config\npreferences: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    fn lab(ip: &str) -> LabKubeconfig {
        from_microk8s(MICROK8S, "homelab-t-1", "homelab-t", ip).unwrap()
    }

    #[test]
    fn microk8s_config_is_renamed_and_pointed_at_the_node() {
        let k = lab("10.0.0.9");
        assert_eq!(k.server, "https://10.0.0.9:16443");
        let v: Value = yaml::from_str(k.yaml.expose()).unwrap();
        assert_eq!(v["current-context"], "homelab-t");
        assert_eq!(v["contexts"][0]["context"]["user"], "homelab-t");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(
            LabKubeconfig::parse(k.yaml.expose(), "homelab-t")
                .unwrap()
                .server,
            k.server
        );
    }

    #[test]
    fn a_worker_message_is_not_a_kubeconfig() {
        let e = from_microk8s(
            "This MicroK8s deployment is acting as a node in a cluster. Please use the microk8s config on the master.\n",
            "homelab-t-2",
            "homelab-t",
            "10.0.0.9",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`microk8s config` on `homelab-t-2` did not print a kubeconfig: it printed `This MicroK8s deployment is acting as a node in a cluster. Please use the microk8s config on the master.`"
        );
    }

    #[test]
    fn merge_keeps_other_entries_and_the_users_current_context() {
        let p = Path::new("/k");
        let user: Value = yaml::from_str(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\nusers:\n- name: me\n  user: {token: t}\ncurrent-context: prod\nextensions: [{name: x, extension: {}}]\n",
        )
        .unwrap();
        let merged = merge_entries(Some(user.clone()), &lab("10.0.0.5"), p)
            .unwrap()
            .unwrap();
        assert_eq!(merged["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(merged["clusters"][0]["name"], "prod");
        assert_eq!(
            merged["current-context"], "homelab-t",
            "a new lab becomes current"
        );
        assert_eq!(merged["extensions"][0]["name"], "x");
        // Same content again: nothing to write.
        assert!(
            merge_entries(Some(merged.clone()), &lab("10.0.0.5"), p)
                .unwrap()
                .is_none()
        );
        // The user switched back to prod; an IP change updates the server, not the context.
        let mut switched = merged.clone();
        switched["current-context"] = "prod".into();
        let moved = merge_entries(Some(switched), &lab("10.0.0.7"), p)
            .unwrap()
            .unwrap();
        assert_eq!(moved["current-context"], "prod");
        assert_eq!(
            moved["clusters"][1]["cluster"]["server"],
            "https://10.0.0.7:16443"
        );
        // Removing leaves the user's entries as they were.
        let removed = remove_entries(merged, "homelab-t").unwrap();
        assert_eq!(removed["clusters"], user["clusters"]);
        assert_eq!(removed["users"], user["users"]);
        assert_eq!(removed["current-context"], "");
        assert!(remove_entries(removed, "homelab-t").is_none());
    }

    #[test]
    fn kubeconfig_list_picks_files_like_kubectl() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let env = std::env::join_paths([&a, &b]).unwrap();
        let user = UserKubeconfig::new(Some(env.clone()), tmp.path());
        // Neither exists: the last one is created.
        assert_eq!(user.merge(&lab("10.0.0.5")).unwrap(), Some(b.clone()));
        assert!(!a.exists());
        assert_eq!(user.merge(&lab("10.0.0.5")).unwrap(), None, "unchanged");
        // Updates go where the entries are, even when an earlier file exists.
        std::fs::write(&a, "apiVersion: v1\nkind: Config\n").unwrap();
        assert_eq!(user.merge(&lab("10.0.0.6")).unwrap(), Some(b.clone()));
        assert_eq!(user.remove("homelab-t").unwrap(), vec![b.clone()]);
        assert_eq!(user.merge(&lab("10.0.0.6")).unwrap(), Some(a.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&b).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let default = UserKubeconfig::new(None, tmp.path());
        assert_eq!(default.paths(), [tmp.path().join(".kube/config")]);
    }

    #[test]
    fn an_unreadable_kubeconfig_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("config");
        std::fs::write(&p, "clusters: [unclosed\n").unwrap();
        let user = UserKubeconfig::new(Some(p.clone().into()), tmp.path());
        let e = user.merge(&lab("10.0.0.5")).unwrap_err();
        assert!(matches!(e, KubeconfigError::Parse { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "clusters: [unclosed\n"
        );
    }
}

//! Upstream release manifests (cert-manager, Argo CD): downloaded once into the cache, their
//! sha256 recorded in the lab's lock, and checked on every later use.
//!
//! Architecture invariant: the cache is content-addressed (`<cache>/upstream/<sha256>.yaml`);
//! the lock (`lock.json` in the lab state) maps each URL to the sha256 first seen. A file whose
//! hash differs from the lock is refused, never silently used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::edges::digest::sha256_hex;
use crate::edges::error::{Diagnostic, io_err};
use crate::edges::state::{LabState, StateError};
use crate::model::stack::Stack;

/// The lock file in the lab state.
pub const LOCK_FILE: &str = "lock.json";

/// What the lab has pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Upstream URL → entry.
    #[serde(default)]
    pub upstream: BTreeMap<String, LockEntry>,
    /// Fully-qualified image reference → the image manifest it resolved to (`homelab prepare`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, crate::cluster::image_cache::pull::ImageLock>,
    /// Snap name → the revision `prepare` took (microk8s and its base; `cluster::snaps`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snaps: BTreeMap<String, crate::cluster::snaps::SnapPin>,
}

/// One pinned upstream file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

/// An upstream manifest problem.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The cached file no longer matches the lock.
    #[error(
        "upstream manifest {url} changed: the lab's lock pins sha256 {expected}, the file has {actual}"
    )]
    Changed {
        /// URL.
        url: String,
        /// sha256 in the lock.
        expected: String,
        /// sha256 seen.
        actual: String,
    },
    /// State I/O.
    #[error(transparent)]
    State(#[from] StateError),
    /// Cache I/O.
    #[error(transparent)]
    Io(#[from] crate::edges::error::IoError),
}

impl Diagnostic for UpstreamError {
    fn hints(&self) -> Vec<String> {
        match self {
            UpstreamError::Changed { .. } => vec![
                "a release file must never change; if the new one is intended, remove its entry from the lab's `lock.json` and run `homelab prepare`".into(),
            ],
            UpstreamError::State(e) => e.hints(),
            UpstreamError::Io(e) => e.hints(),
        }
    }
}

/// Path of the cached copy with this hash.
pub fn cache_path(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join("upstream").join(format!("{sha256}.yaml"))
}

/// Read the lab's lock (empty when none).
pub fn read_lock(state: &LabState) -> Result<Lock, StateError> {
    Ok(state.read_json(LOCK_FILE)?.unwrap_or_default())
}

/// The cached copy of `url`, `None` when not in the cache; a copy whose hash differs from the
/// lock is an error, never used.
fn read_cached(
    cache_dir: &Path,
    url: &str,
    entry: &LockEntry,
) -> Result<Option<Vec<u8>>, UpstreamError> {
    let path = cache_path(cache_dir, &entry.sha256);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e).into()),
    };
    let actual = sha256_hex(&bytes);
    if actual != entry.sha256 {
        return Err(UpstreamError::Changed {
            url: url.to_string(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(Some(bytes))
}

/// The upstream manifests of `stack` that are already downloaded and match the lock, by URL.
pub fn cached(
    stack: &Stack,
    lock: &Lock,
    cache_dir: &Path,
) -> Result<BTreeMap<String, String>, UpstreamError> {
    let mut out = BTreeMap::new();
    for c in &stack.components {
        let Some(up) = &c.source.upstream else {
            continue;
        };
        let Some(entry) = lock.upstream.get(&up.url) else {
            continue;
        };
        if let Some(bytes) = read_cached(cache_dir, &up.url, entry)? {
            out.insert(up.url.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Ok(out)
}

/// A download could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Network or TLS failure.
    #[error("download {url}: {message}")]
    Fetch {
        /// URL (credentials redacted).
        url: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("download {url}: the server answered {status}")]
    Status {
        /// URL (credentials redacted).
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The file differs from the lock, or state/cache I/O failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl Diagnostic for DownloadError {
    fn hints(&self) -> Vec<String> {
        match self {
            DownloadError::Fetch { .. } => vec![
                "check the network; on a slow or offline network run `homelab prepare` where the network works, or set `upstream.mirror` (`HOMELAB_UPSTREAM_MIRROR`) to a mirror".into(),
            ],
            DownloadError::Status { .. } => {
                vec!["check that the release URL in the stack still exists".into()]
            }
            DownloadError::Upstream(e) => e.hints(),
        }
    }
}

/// One upstream manifest made available.
#[derive(Clone, Debug, Serialize)]
pub struct Prepared {
    /// Component it belongs to.
    pub component: String,
    /// Release URL as the stack names it.
    pub url: String,
    /// sha256 recorded in the lock.
    pub sha256: String,
    /// Found in the cache (no download).
    pub cached: bool,
    /// The text.
    #[serde(skip)]
    pub text: String,
}

/// Where to download `url` from: the URL itself, or `<mirror>/<host>/<path>` when a mirror is set.
pub fn source_url(url: &str, mirror: Option<&str>) -> String {
    match (mirror, url.split_once("://")) {
        (Some(m), Some((_, rest))) => format!("{}/{rest}", m.trim_end_matches('/')),
        _ => url.to_string(),
    }
}

/// Make every upstream manifest of `stack` available: from the cache when it matches the lock,
/// else downloaded; a first download records its sha256 in `lock`, a later one must match it.
pub async fn prepare(
    stack: &Stack,
    lock: &mut Lock,
    cache_dir: &Path,
    mirror: Option<&str>,
) -> Result<Vec<Prepared>, DownloadError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DownloadError::Fetch {
            url: String::new(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for c in &stack.components {
        let Some(up) = &c.source.upstream else {
            continue;
        };
        if let Some(entry) = lock.upstream.get(&up.url)
            && let Some(bytes) = read_cached(cache_dir, &up.url, entry)?
        {
            out.push(Prepared {
                component: c.name.clone(),
                url: up.url.clone(),
                sha256: entry.sha256.clone(),
                cached: true,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            });
            continue;
        }
        let from = source_url(&up.url, mirror);
        let shown = crate::edges::redact::redact_url(&from);
        let resp = client
            .get(&from)
            .send()
            .await
            .map_err(|e| DownloadError::Fetch {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        if !resp.status().is_success() {
            return Err(DownloadError::Status {
                url: shown,
                status: resp.status().as_u16(),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| DownloadError::Fetch {
            url: shown.clone(),
            message: e.to_string(),
        })?;
        let actual = sha256_hex(&bytes);
        if let Some(entry) = lock.upstream.get(&up.url)
            && entry.sha256 != actual
        {
            return Err(UpstreamError::Changed {
                url: up.url.clone(),
                expected: entry.sha256.clone(),
                actual,
            }
            .into());
        }
        let path = cache_path(cache_dir, &actual);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| UpstreamError::from(io_err("create directory", parent)(e)))?;
        }
        crate::edges::state::write_atomic(&path, &bytes, 0o644).map_err(UpstreamError::from)?;
        lock.upstream.insert(
            up.url.clone(),
            LockEntry {
                sha256: actual.clone(),
            },
        );
        out.push(Prepared {
            component: c.name.clone(),
            url: up.url.clone(),
            sha256: actual,
            cached: false,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(out)
}

/// Every container image the lab will pull: the images the stack names, those microk8s of
/// `channel` starts by itself ([`microk8s_images`]; none for a track it does not know), and
/// those in the upstream manifests' pod templates, sorted and deduplicated.
pub fn images(stack: &Stack, channel: &str, upstream: &[Prepared]) -> Vec<String> {
    let mut set: std::collections::BTreeSet<String> = stack.images().into_iter().collect();
    set.extend(microk8s_images(stack, channel).unwrap_or_default());
    for p in upstream {
        if let Ok(docs) = crate::edges::yaml::documents(&p.text) {
            for (_, doc) in docs {
                collect_images(&doc, &mut set);
            }
        }
    }
    set.into_iter().collect()
}

/// The images microk8s starts by itself on a lab VM, for the microk8s `channel` (`1.36/stable`)
/// and the addons `stack` enables: containerd's sandbox (pause) image, the CNI's (Calico), and
/// each enabled addon's (CoreDNS of `dns`, the provisioner of `hostpath-storage`). The facts are
/// `contracts/microk8s/system-images.json`, derived from the microk8s sources of each track by
/// `scripts/derive-contracts` (which names the tag and commit). `Err` names the channel's track
/// when those facts have no entry for it: the cluster then pulls them.
pub fn microk8s_images(stack: &Stack, channel: &str) -> Result<Vec<String>, String> {
    if stack.cluster.system_images == crate::model::stack::SystemImages::Pull {
        return Ok(Vec::new());
    }
    let track = channel.split('/').next().unwrap_or_default();
    let facts = system_image_facts();
    let Some(images) = facts.get(track) else {
        return Err(track.to_string());
    };
    let addons: Vec<&str> = stack
        .components
        .iter()
        .filter_map(|c| c.source.addon.as_deref())
        .collect();
    Ok(images
        .iter()
        .filter(|i| i.addon.as_deref().is_none_or(|a| addons.contains(&a)))
        .map(|i| i.image.clone())
        .collect())
}

/// The tracks whose microk8s images [`microk8s_images`] knows (for a message).
pub fn microk8s_image_tracks() -> Vec<String> {
    system_image_facts().into_keys().collect()
}

#[derive(Deserialize)]
struct SystemImage {
    image: String,
    addon: Option<String>,
}

/// Track → images of `contracts/microk8s/system-images.json`.
fn system_image_facts() -> BTreeMap<String, Vec<SystemImage>> {
    #[derive(Deserialize)]
    struct Facts {
        tracks: BTreeMap<String, Vec<SystemImage>>,
    }
    const FACTS: &str = include_str!("../../contracts/microk8s/system-images.json");
    serde_json::from_str::<Facts>(FACTS)
        .expect("contracts/microk8s/system-images.json is what scripts/derive-contracts writes")
        .tracks
}

fn collect_images(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if matches!(
                    k.as_str(),
                    "containers" | "initContainers" | "ephemeralContainers"
                ) && let Some(list) = x.as_array()
                {
                    for c in list {
                        if let Some(img) = c.get("image").and_then(serde_json::Value::as_str) {
                            out.insert(img.to_string());
                        }
                    }
                }
                collect_images(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_images(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microk8s_starts_its_sandbox_cni_and_enabled_addons_images() {
        let stack = crate::model::stack::load("default", Path::new(".")).unwrap();
        let images = microk8s_images(&stack, "1.36/stable").unwrap();
        // contracts/microk8s/system-images.json (microk8s v1.36, core addons f689811).
        assert_eq!(
            images,
            [
                "registry.k8s.io/pause:3.10",
                "docker.io/calico/cni:v3.29.3",
                "docker.io/calico/node:v3.29.3",
                "docker.io/calico/kube-controllers:v3.29.3",
                "coredns/coredns:1.14.3",
                "cdkbot/hostpath-provisioner:1.6.0",
            ]
        );
        let mut bare = stack.clone();
        bare.components.retain(|c| !c.is_addon());
        let images = microk8s_images(&bare, "1.36/edge").unwrap();
        assert!(
            !images
                .iter()
                .any(|i| i.contains("coredns") || i.contains("hostpath"))
        );
        assert!(images.iter().any(|i| i.contains("pause")));
        assert_eq!(microk8s_images(&stack, "1.20/stable"), Err("1.20".into()));
        bare.cluster.system_images = crate::model::stack::SystemImages::Pull;
        assert_eq!(microk8s_images(&bare, "1.36/stable"), Ok(Vec::new()));
    }

    #[test]
    fn mirror_keeps_host_and_path() {
        assert_eq!(
            source_url(
                "https://github.com/a/b/v1/x.yaml",
                Some("http://127.0.0.1:8080/")
            ),
            "http://127.0.0.1:8080/github.com/a/b/v1/x.yaml"
        );
        assert_eq!(source_url("https://h/x", None), "https://h/x");
    }
}

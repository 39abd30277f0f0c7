//! Upstream release manifests (cert-manager, Argo CD): downloaded once into the cache, their
//! sha256 recorded in the lab's lock, and checked on every later use.
//!
//! Architecture invariant: the cache is content-addressed (`<cache>/upstream/<sha256>.yaml`);
//! the lock (`lock.json` in the lab state) maps each URL to the sha256 first seen. A file whose
//! hash differs from the lock is refused, never silently used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Diagnostic, io_err};
use crate::stack::Stack;
use crate::state::{LabState, StateError};

/// The lock file in the lab state.
pub const LOCK_FILE: &str = "lock.json";

/// What the lab has pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Upstream URL → entry.
    #[serde(default)]
    pub upstream: BTreeMap<String, LockEntry>,
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
    Io(#[from] crate::error::IoError),
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

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Path of the cached copy with this hash.
pub fn cache_path(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join("upstream").join(format!("{sha256}.yaml"))
}

/// Read the lab's lock (empty when none).
pub fn read_lock(state: &LabState) -> Result<Lock, StateError> {
    Ok(state.read_json(LOCK_FILE)?.unwrap_or_default())
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
        let path = cache_path(cache_dir, &entry.sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        let actual = sha256_hex(&bytes);
        if actual != entry.sha256 {
            return Err(UpstreamError::Changed {
                url: up.url.clone(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        out.insert(up.url.clone(), String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(out)
}

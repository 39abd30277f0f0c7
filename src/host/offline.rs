//! `homelab doctor --offline`: what the cache holds for this stack, and what `prepare` (and so
//! `up`) would still download.
//!
//! Architecture invariant: reads only the cache and the lab's lock; no network. A blob counts as
//! cached when its file exists (`prepare` hashes every one; this check stays fast).

use std::path::Path;

use serde::Serialize;

use crate::cluster::image_cache::layout::{Layout, normalize_reference};
use crate::cluster::upstream::{self, Lock};
use crate::model::stack::Stack;

/// One thing `up` needs.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// `manifest`, `image` or `snap`.
    pub kind: &'static str,
    /// URL, reference or file name.
    pub name: String,
    /// Pinned digest (`sha256:…`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// In the cache, complete.
    pub cached: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Every item, manifests first.
    pub items: Vec<Item>,
    /// Something would still be downloaded.
    pub would_download: bool,
}

/// What is cached for `stack`, from the cache under `cache` and the lab's `lock`.
/// `channel` is the lab's microk8s channel (its own images are needed too).
pub fn report(stack: &Stack, channel: &str, lock: &Lock, cache: &Path) -> Report {
    let mut items = Vec::new();
    let mut unread = Vec::new();
    let cached = upstream::cached(stack, lock, cache).unwrap_or_default();
    for c in &stack.components {
        let Some(up) = &c.source.upstream else {
            continue;
        };
        let have = cached.contains_key(&up.url);
        if !have {
            unread.push(up.url.clone());
        }
        items.push(Item {
            kind: "manifest",
            name: up.url.clone(),
            digest: lock
                .upstream
                .get(&up.url)
                .map(|e| format!("sha256:{}", e.sha256)),
            cached: have,
            missing: (!have).then(|| "not downloaded (or changed since)".to_string()),
        });
    }
    let prepared: Vec<upstream::Prepared> = cached
        .into_iter()
        .map(|(url, text)| upstream::Prepared {
            component: String::new(),
            url,
            sha256: String::new(),
            cached: true,
            text,
        })
        .collect();
    let layout = Layout::open(crate::cluster::image_cache::layout::images_dir(cache)).ok();
    for image in upstream::images(stack, channel, &prepared) {
        if image.starts_with('@') {
            continue;
        }
        let r = normalize_reference(&image);
        let entry = layout.as_ref().and_then(|l| l.entry(&r).ok().flatten());
        let pinned = lock.images.get(&r).map(|p| p.digest.clone());
        let missing = match (&entry, &layout) {
            (None, _) | (_, None) => Some("not in the image cache".to_string()),
            (Some(e), Some(l)) => {
                if pinned.as_ref().is_some_and(|p| p != &e.digest) {
                    Some(format!(
                        "the cache holds {}, the lock pins another",
                        e.digest
                    ))
                } else {
                    match l.image_blobs(e) {
                        Ok(blobs) => blobs
                            .iter()
                            .find(|d| !l.has_blob(d))
                            .map(|d| format!("blob {d} missing")),
                        Err(err) => Some(err.to_string()),
                    }
                }
            }
        };
        items.push(Item {
            kind: "image",
            name: r,
            digest: pinned.or(entry.map(|e| e.digest)),
            cached: missing.is_none(),
            missing,
        });
    }
    for url in unread {
        items.push(Item {
            kind: "image",
            name: format!("(the images inside {url})"),
            digest: None,
            cached: false,
            missing: Some("known once the manifest is downloaded".into()),
        });
    }
    for snap in super::mirror::snap_files(cache) {
        items.push(Item {
            kind: "snap",
            name: snap,
            digest: None,
            cached: true,
            missing: None,
        });
    }
    let would_download = items.iter().any(|i| !i.cached);
    Report {
        items,
        would_download,
    }
}

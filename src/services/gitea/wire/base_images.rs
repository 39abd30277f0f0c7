//! The `base images` step: every image the lab's Dockerfiles start `FROM`, pushed from the image
//! cache into Gitea's container registry, where the pipeline's kaniko finds it through
//! `--registry-map` (see [`crate::model::image_ref`]) instead of pulling it from the internet.
//!
//! Why: kaniko fetches a build's base image from a registry itself (osscontainertools/kaniko
//! v1.28.3 `pkg/image/remote/remote.go` `RetrieveRemoteImage`), never from the node's
//! containerd, so side-loading the image into the nodes does not spare that download; Gitea's
//! registry is the one registry inside the lab.
//!
//! Architecture invariant: look first. A tag already pointing at the cached manifest is left
//! alone; otherwise only the blobs the registry lacks are uploaded (each read back from the
//! cache with its digest checked), then the manifest is tagged. A base the cache does not hold
//! is named and left to kaniko's fallback to its own registry.

use super::{GiteaWireError, GiteaWiring};
use crate::cluster::image_cache::{Layout, normalize_reference};
use crate::cluster::snaps::human_bytes;
use crate::edges::output::Outcome;
use crate::model::image_ref;
use crate::services::gitea::GiteaClient;

/// One base image: the cached reference and where kaniko's `--registry-map` looks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImage {
    /// As the Dockerfile names it.
    pub reference: String,
    /// `<owner>/<repository>` in Gitea's registry.
    pub repository: String,
    /// The tag there (the reference's own).
    pub tag: String,
}

impl BaseImage {
    /// `reference` as kaniko maps it to `<registry host>/<org>`.
    pub fn new(reference: &str, registry_host: &str, org: &str) -> Option<BaseImage> {
        let mapped = image_ref::mapped(reference, &format!("{registry_host}/{org}"));
        let path = mapped.strip_prefix(&format!("{registry_host}/"))?;
        if path.contains('@') {
            return None;
        }
        // A base pinned by digest has no tag to push under.
        let (repository, tag) = path.rsplit_once(':').filter(|(_, t)| !t.contains('/'))?;
        Some(BaseImage {
            reference: reference.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// Push each base of `w.base_images` the cache holds (see the module doc).
pub(super) async fn ensure_base_images(
    w: &GiteaWiring<'_>,
    registry: &GiteaClient,
) -> Result<(Outcome, String), GiteaWireError> {
    let layout = match &w.image_cache {
        Some(dir) if dir.join("index.json").is_file() => Some(Layout::open(dir)?),
        _ => None,
    };
    let mut pushed: Vec<String> = Vec::new();
    let mut there: Vec<String> = Vec::new();
    let mut not_cached: Vec<String> = Vec::new();
    let mut bytes: u64 = 0;
    for base in &w.base_images {
        let entry = match &layout {
            Some(l) => l.entry(&normalize_reference(&base.reference))?,
            None => None,
        };
        // `prepare` stores one image manifest per reference (for the VMs' platform), never an
        // index, so the blobs below are all the manifest names.
        let Some(entry) = entry else {
            not_cached.push(format!("`{}`", base.reference));
            continue;
        };
        let layout = layout.as_ref().expect("an entry comes from a layout");
        let target = format!("{}:{}", base.repository, base.tag);
        if registry
            .registry_manifest_digest(&base.repository, &base.tag)
            .await?
            .as_deref()
            == Some(entry.digest.as_str())
        {
            there.push(target);
            continue;
        }
        let blobs = layout.image_blobs(&entry)?;
        // image_blobs lists the manifest first; its children (config, layers) go up before it.
        for digest in blobs.iter().skip(1) {
            if registry.registry_has_blob(&base.repository, digest).await? {
                continue;
            }
            let blob = layout.read_blob(digest)?;
            bytes += blob.len() as u64;
            registry
                .registry_put_blob(&base.repository, digest, blob)
                .await?;
        }
        let manifest = layout.read_blob(&entry.digest)?;
        bytes += manifest.len() as u64;
        registry
            .registry_put_manifest(&base.repository, &base.tag, &entry.media_type, manifest)
            .await?;
        pushed.push(target);
    }
    let outcome = if pushed.is_empty() {
        Outcome::Skipped
    } else {
        Outcome::Done
    };
    let mut said = Vec::new();
    if !pushed.is_empty() {
        said.push(format!(
            "pushed {} ({}) from the image cache",
            pushed.join(", "),
            human_bytes(bytes)
        ));
    }
    if !there.is_empty() {
        said.push(format!("{} already in the registry", there.join(", ")));
    }
    if !not_cached.is_empty() {
        said.push(format!(
            "{} not in the image cache: kaniko pulls {} from {} registry (`homelab prepare` caches it)",
            not_cached.join(", "),
            if not_cached.len() == 1 { "it" } else { "them" },
            if not_cached.len() == 1 { "its" } else { "their" },
        ));
    }
    Ok((outcome, said.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_pushed_where_the_registry_map_looks() {
        let b = BaseImage::new(
            "nginxinc/nginx-unprivileged:1.29.3-alpine",
            "gitea.10.0.0.2.sslip.io",
            "lab",
        )
        .unwrap();
        assert_eq!(b.repository, "lab/nginxinc/nginx-unprivileged");
        assert_eq!(b.tag, "1.29.3-alpine");
        assert_eq!(BaseImage::new("nginx@sha256:ab", "g.x", "lab"), None);
        assert_eq!(
            BaseImage::new("localhost:5000/a:1", "g.x", "lab").map(|b| b.repository),
            Some("lab/a".into())
        );
    }
}

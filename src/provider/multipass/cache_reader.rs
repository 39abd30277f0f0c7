//! The image cache as the `images` step reads it: the OCI image layout `homelab prepare` keeps
//! at `<cache>/images/` (`oci-layout`, `index.json` with one entry per image whose
//! `io.containerd.image.name` / `org.opencontainers.image.ref.name` annotation is the fully
//! qualified reference, `blobs/sha256/<hex>`), and an archive of some of its images in the form
//! `ctr image import` reads (the same layout as a tar, holding only those entries and the blobs
//! they reach).
//!
//! Architecture invariant: read-only, and every blob copied into an archive is checked against
//! its digest on the way, so a corrupted cache fails here with the file named, not on a node.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cached_images::ImageCache;
use crate::edges::error::{Error, Result};

/// containerd's annotation naming an image in an OCI index (containerd
/// `images/annotations.go` `AnnotationImageName`).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI image spec's reference annotation.
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An opened image layout.
#[derive(Clone, Debug)]
pub struct CacheReader {
    root: PathBuf,
    /// `index.json`'s manifest descriptors.
    entries: Vec<Value>,
}

/// A reference as containerd's CRI names it: `docker.io/` for a name without a registry,
/// `library/` for a single Docker Hub path component, `:latest` without tag or digest (the
/// rules of distribution/reference v0.6.0 `normalize.go`, `ParseDockerRef`).
pub fn normalize_reference(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = if has_domain {
        reference.to_string()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{reference}")
    };
    let last = out.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        out.push_str(":latest");
    }
    out
}

impl CacheReader {
    /// Open the layout at `root`.
    pub fn open(root: &Path) -> Result<CacheReader> {
        let index = root.join("index.json");
        let text = std::fs::read_to_string(&index)
            .map_err(|e| Error::msg(format!("read `{}`: {e}", index.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::msg(format!("read `{}`: {e}", index.display())))?;
        Ok(CacheReader {
            root: root.to_path_buf(),
            entries: v["manifests"].as_array().cloned().unwrap_or_default(),
        })
    }

    fn entry(&self, reference: &str) -> Option<&Value> {
        let want = normalize_reference(reference);
        self.entries.iter().find(|e| {
            [CONTAINERD_NAME, OCI_REF_NAME].iter().any(|a| {
                e["annotations"][a]
                    .as_str()
                    .is_some_and(|n| normalize_reference(n) == want)
            })
        })
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let (algo, hex) = digest
            .split_once(':')
            .ok_or_else(|| Error::msg(format!("the image cache names a bad digest `{digest}`")))?;
        let path = self.root.join("blobs").join(algo).join(hex);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::msg(format!("read `{}`: {e}", path.display())))?;
        if algo != "sha256" || hex::encode(Sha256::digest(&bytes)) != hex {
            return Err(Error::msg(format!(
                "`{}` does not have the digest its name says",
                path.display()
            ))
            .hint("run `homelab prepare` again: it fetches what is missing or corrupted"));
        }
        Ok(bytes)
    }

    /// The digests `desc` reaches: itself, and for an index its manifests, for a manifest its
    /// config and layers.
    fn reach(&self, desc: &Value, out: &mut Vec<String>) -> Result<()> {
        let Some(digest) = desc["digest"].as_str() else {
            return Ok(());
        };
        if out.iter().any(|d| d == digest) {
            return Ok(());
        }
        out.push(digest.to_string());
        let media = desc["mediaType"].as_str().unwrap_or_default();
        if media.contains("manifest") || media.contains("index") {
            let doc: Value = serde_json::from_slice(&self.blob(digest)?)
                .map_err(|e| Error::msg(format!("read manifest `{digest}`: {e}")))?;
            for child in doc["manifests"].as_array().into_iter().flatten() {
                self.reach(child, out)?;
            }
            if doc["config"].is_object() {
                self.reach(&doc["config"], out)?;
            }
            for layer in doc["layers"].as_array().into_iter().flatten() {
                self.reach(layer, out)?;
            }
        }
        Ok(())
    }
}

impl ImageCache for CacheReader {
    fn holds(&self, reference: &str) -> bool {
        self.entry(reference).is_some()
    }

    fn export(&self, refs: &[String], out: &mut dyn Write) -> Result<()> {
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        for r in refs {
            let entry = self
                .entry(r)
                .ok_or_else(|| Error::msg(format!("the image cache has no `{r}`")))?;
            // Both names fully qualified: `ctr image import` keeps such a name as it is.
            let mut entry = entry.clone();
            let name = normalize_reference(r);
            entry["annotations"][CONTAINERD_NAME] = json!(name);
            entry["annotations"][OCI_REF_NAME] = json!(name);
            self.reach(&entry, &mut blobs)?;
            manifests.push(entry);
        }
        let mut tar = tar::Builder::new(out);
        let mut add = |name: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, name, data)
                .map_err(|e| Error::msg(format!("write the image archive: {e}")))
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        add("index.json", index.to_string().as_bytes())?;
        for d in &blobs {
            let bytes = self.blob(d)?;
            let (algo, hex) = d.split_once(':').expect("checked by blob");
            add(&format!("blobs/{algo}/{hex}"), &bytes)?;
        }
        tar.finish()
            .map_err(|e| Error::msg(format!("write the image archive: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_containerd_names_them() {
        assert_eq!(
            normalize_reference("nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalize_reference("gitea/gitea:1.26.1-rootless"),
            "docker.io/gitea/gitea:1.26.1-rootless"
        );
        assert_eq!(
            normalize_reference("quay.io/jetstack/cert-manager-webhook:v1.21.1"),
            "quay.io/jetstack/cert-manager-webhook:v1.21.1"
        );
        assert_eq!(
            normalize_reference("localhost/x@sha256:ab"),
            "localhost/x@sha256:ab"
        );
    }
}

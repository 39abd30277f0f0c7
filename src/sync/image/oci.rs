//! The engine image as bytes: an OCI image-layout archive (see the parent module for the
//! format) and the `ctr` command that imports it.
//!
//! Architecture invariant: pure and deterministic — an [`ImageSpec`] in, the same archive bytes
//! and digests out, every time; nothing here reads the host or runs a program.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::ImageError;

/// One file in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image (`/usr/bin/git`).
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Unix mode bits (0o755 for programs).
    pub mode: u32,
}

/// What goes into the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Full reference (`ghcr.io/homelab-dev/homelab:0.1.0`).
    pub reference: String,
    /// OCI architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Environment (`KEY=value`).
    pub env: Vec<String>,
    /// User to run as (`65532`, the distroless "nonroot").
    pub user: String,
    /// Files.
    pub files: Vec<ImageFile>,
}

/// Digests of what was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// `sha256:…` of the manifest (what containerd names the image by).
    pub manifest_digest: String,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// `sha256:…` of the layer (= its diff id: the layer is uncompressed).
    pub layer_digest: String,
}

/// `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Write the OCI image-layout archive for `spec` to `out`.
pub fn write_archive(spec: &ImageSpec, out: &mut impl Write) -> Result<ArchiveInfo, ImageError> {
    let layer = layer_tar(&spec.files);
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": spec.architecture,
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "User": spec.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "homelab: engine image side-load"}],
    }))
    .expect("json serializes");
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("json serializes");
    let manifest_digest = digest(&manifest);
    let tag = spec
        .reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".into());
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": spec.architecture, "os": "linux"},
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": spec.reference,
            },
        }],
    }))
    .expect("json serializes");

    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut tar = TarWriter::default();
    tar.dir("blobs");
    tar.dir("blobs/sha256");
    tar.file(&blob(&config_digest), &config, 0o644);
    tar.file(&blob(&layer_digest), &layer, 0o644);
    tar.file(&blob(&manifest_digest), &manifest, 0o644);
    tar.file("index.json", &index, 0o644);
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    out.write_all(&tar.finish())
        .map_err(|e| ImageError::Write(e.to_string()))?;
    Ok(ArchiveInfo {
        manifest_digest,
        config_digest,
        layer_digest,
    })
}

/// The layer: every file with its parent directories, sorted, as an uncompressed tar.
fn layer_tar(files: &[ImageFile]) -> Vec<u8> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut by_path: BTreeMap<String, &ImageFile> = BTreeMap::new();
    for f in files {
        let rel = f.path.trim_start_matches('/').to_string();
        let mut p = Path::new(&rel).parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() {
                break;
            }
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
        by_path.insert(rel, f);
    }
    let mut tar = TarWriter::default();
    for d in &dirs {
        tar.dir(d);
    }
    for (rel, f) in by_path {
        tar.file(&rel, &f.contents, f.mode);
    }
    tar.finish()
}

/// A minimal ustar writer: regular files and directories, owner 0:0, mtime 0.
#[derive(Default)]
struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    fn header(&mut self, name: &str, size: usize, mode: u32, typeflag: u8) {
        let mut h = [0u8; 512];
        // Names over 100 bytes go to the 155-byte prefix, split at the first `/` that leaves at
        // most 100 bytes for the name.
        let (prefix, name) = if name.len() > 100 {
            let split = name
                .char_indices()
                .find(|(i, c)| *c == '/' && name.len() - i - 1 <= 100)
                .map(|(i, _)| i)
                .filter(|i| *i <= 155)
                .expect("image paths fit ustar's prefix + name");
            (&name[..split], &name[split + 1..])
        } else {
            ("", name)
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}", width = len - 1);
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.header(name, data.len(), mode, b'0');
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn dir(&mut self, name: &str) {
        self.header(&format!("{}/", name.trim_end_matches('/')), 0, 0o755, b'5');
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

/// The command that imports the archive inside the VM (run there by the provisioning code, e.g.
/// through `multipass exec <vm> -- sudo …`). `--digests` names the image by digest too.
pub fn ctr_import_argv(archive_in_vm: &str) -> Vec<String> {
    [
        "microk8s",
        "ctr",
        "image",
        "import",
        "--digests",
        archive_in_vm,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

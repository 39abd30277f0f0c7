//! The image cache on disk: an OCI image layout v1 (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) under `<cache>/images/`, one `index.json` entry per cached image.
//!
//! Architecture invariant: every blob is stored under its own sha256 and only after its bytes
//! were hashed (a temp file renamed into place, never a partial file under a digest name);
//! `index.json` is rewritten atomically, under an exclusive lock on `index.json.lock` so that
//! concurrent writers merge instead of overwriting each other. Each entry is the platform-specific image manifest for
//! the VMs' architecture, annotated with the fully-qualified reference under both
//! `org.opencontainers.image.ref.name` and `io.containerd.image.name` (what `ctr image import`
//! names the image by). Nothing here talks to a registry.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::edges::error::{Diagnostic, IoError, io_err};

/// Annotation the OCI image layout names a manifest's reference by.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation `ctr image import` names the imported image by.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// OCI image manifest media type.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest v2 schema 2 media type.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image index media type.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list media type.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// One cached image: an entry of the layout's `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Fully-qualified reference (`docker.io/library/alpine:3.22.1`).
    pub reference: String,
    /// `sha256:<hex>` of the platform image manifest.
    pub digest: String,
    /// The manifest's media type (OCI or Docker v2 schema 2).
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// The platform the manifest is for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// `os`/`architecture` of an image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// OCI architecture (`amd64`, `arm64`).
    pub architecture: String,
}

/// What is on disk under a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// No file.
    Missing,
    /// The file's bytes hash to its name.
    Valid,
    /// The file's bytes hash to something else: never to be used.
    Corrupt {
        /// `sha256:<hex>` of what the file holds.
        actual: String,
    },
}

/// An image cache problem.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// File I/O.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The directory has no `oci-layout` file.
    #[error("`{}` is not an OCI image layout (no `oci-layout` file)", .0.display())]
    NotALayout(PathBuf),
    /// A file of the layout cannot be read as JSON of the expected shape.
    #[error("`{}` is not valid: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Not a `sha256:<64 hex>` digest.
    #[error("`{0}` is not a sha256 digest")]
    BadDigest(String),
    /// Bytes offered for a digest hash to something else.
    #[error("blob {expected} refused: its bytes hash to {actual}")]
    Mismatch {
        /// Digest the bytes were offered as.
        expected: String,
        /// Digest of the bytes.
        actual: String,
    },
    /// The blob is not in the cache (or is corrupt there).
    #[error("blob {0} is not in the image cache")]
    MissingBlob(String),
    /// No entry names the reference.
    #[error("image {0} is not in the image cache")]
    MissingImage(String),
}

impl Diagnostic for LayoutError {
    fn hints(&self) -> Vec<String> {
        match self {
            LayoutError::Io(e) => e.hints(),
            LayoutError::NotALayout(_) | LayoutError::Invalid { .. } => vec![
                "remove the image cache directory and run `homelab prepare` again to rebuild it"
                    .into(),
            ],
            LayoutError::BadDigest(_) | LayoutError::Mismatch { .. } => vec![
                "the file was damaged or tampered with on the way; run `homelab prepare` again, from another source if it repeats".into(),
            ],
            LayoutError::MissingBlob(_) | LayoutError::MissingImage(_) => {
                vec!["run `homelab prepare` to download the lab's images into the cache".into()]
            }
        }
    }
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

/// The image cache directory under the cache root: `<cache>/images`.
pub fn images_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("images")
}

/// `docker.io/library/x:tag` for `x:tag`, `docker.io/a/b` for `a/b`; a reference whose first
/// segment names a registry (has a `.` or `:`, or is `localhost`) stays as it is. A reference
/// without tag or digest gets none added (the stack pins every tag; see `model::stack`).
pub fn normalize_reference(reference: &str) -> String {
    let r = reference.trim();
    let (first, rest) = match r.split_once('/') {
        Some((f, rest)) => (f, Some(rest)),
        None => (r, None),
    };
    let is_registry =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let (registry, path) = if is_registry {
        (first.to_string(), rest.unwrap_or_default().to_string())
    } else {
        ("docker.io".to_string(), r.to_string())
    };
    let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        registry
    };
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    format!("{registry}/{path}")
}

/// Whether `digest` is `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn check_digest(digest: &str) -> Result<&str, LayoutError> {
    if is_sha256_digest(digest) {
        Ok(&digest["sha256:".len()..])
    } else {
        Err(LayoutError::BadDigest(digest.to_string()))
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Layout {
    /// An existing layout (its `oci-layout` file must be there).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Layout, LayoutError> {
        let dir = dir.into();
        if !dir.join("oci-layout").is_file() {
            return Err(LayoutError::NotALayout(dir));
        }
        Ok(Layout { dir })
    }

    /// The layout at `dir`, created (empty) when absent.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Layout, LayoutError> {
        let dir = dir.into();
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))?;
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            write_file_atomic(&marker, OCI_LAYOUT.as_bytes())?;
        }
        let index = dir.join("index.json");
        if !index.is_file() {
            write_file_atomic(&index, &index_bytes(&[]))?;
        }
        Ok(Layout { dir })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every cached image, in `index.json`'s order (sorted by reference).
    pub fn entries(&self) -> Result<Vec<Entry>, LayoutError> {
        let path = self.dir.join("index.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        parse_index(&bytes).map_err(|message| LayoutError::Invalid { path, message })
    }

    /// The entry for `reference` (normalised first), if cached.
    pub fn entry(&self, reference: &str) -> Result<Option<Entry>, LayoutError> {
        let r = normalize_reference(reference);
        Ok(self.entries()?.into_iter().find(|e| e.reference == r))
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        let hex = check_digest(digest)?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// Whether a file exists under `digest` (not hashed; see [`Layout::verify_blob`]).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Hash the file under `digest`.
    pub fn verify_blob(&self, digest: &str) -> Result<BlobState, LayoutError> {
        let path = self.blob_path(digest)?;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobState::Missing),
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_err("read", &path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = format!("sha256:{}", hex::encode(h.finalize()));
        Ok(if actual == digest {
            BlobState::Valid
        } else {
            BlobState::Corrupt { actual }
        })
    }

    /// The blob's bytes, checked against its digest (a corrupt file is an error).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob(digest.to_string()));
            }
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(LayoutError::Mismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Store `bytes` as blob `digest`; refused when they hash to something else.
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        let mut w = self.blob_writer(digest)?;
        w.write_all(bytes)
            .map_err(|e| io_err("write", w.tmp.clone())(e))?;
        w.finish()
    }

    /// Store what `reader` yields as blob `digest`; refused when it hashes to something else.
    /// Returns the number of bytes.
    pub fn write_blob_from(&self, digest: &str, reader: impl Read) -> Result<u64, LayoutError> {
        let mut reader = reader;
        let mut w = self.blob_writer(digest)?;
        let n =
            std::io::copy(&mut reader, &mut w).map_err(|e| io_err("write", w.tmp.clone())(e))?;
        w.finish()?;
        Ok(n)
    }

    /// A writer for blob `digest`: bytes go to a temp file beside the blobs and are hashed on
    /// the way; [`BlobWriter::finish`] moves the file under its name only when the hash matches.
    /// Dropped unfinished, the temp file is removed.
    pub fn blob_writer(&self, digest: &str) -> Result<BlobWriter, LayoutError> {
        let target = self.blob_path(digest)?;
        let dir = target
            .parent()
            .expect("blob paths have a parent")
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            &digest["sha256:".len()..],
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&tmp).map_err(io_err("write", &tmp))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            target,
            expected: digest.to_string(),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Remove the file under `digest` (e.g. a corrupt one), if any.
    pub fn remove_blob(&self, digest: &str) -> Result<(), LayoutError> {
        let path = self.blob_path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e).into()),
        }
    }

    /// Add or replace the entry for `entry.reference` (normalised), rewriting `index.json`
    /// atomically. The caller stores the entry's blobs first.
    ///
    /// Two `prepare`s (two labs, one cache) may set entries at once: the read, change and write
    /// of `index.json` happen under an exclusive lock on `index.json.lock` (held until the
    /// rename), so neither writes over an entry the other just added.
    pub fn set_entry(&self, entry: Entry) -> Result<(), LayoutError> {
        check_digest(&entry.digest)?;
        let mut entry = entry;
        entry.reference = normalize_reference(&entry.reference);
        let lock_path = self.dir.join("index.json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;
        let mut entries = self.entries()?;
        entries.retain(|e| e.reference != entry.reference);
        entries.push(entry);
        entries.sort_by(|a, b| a.reference.cmp(&b.reference));
        write_file_atomic(&self.dir.join("index.json"), &index_bytes(&entries))
    }

    /// Every blob of the image: its manifest, config and layers, in that order. The manifest is
    /// read (and checked against its digest) from the cache.
    pub fn image_blobs(&self, entry: &Entry) -> Result<Vec<String>, LayoutError> {
        let manifest = self.read_blob(&entry.digest)?;
        let mut out = vec![entry.digest.clone()];
        out.extend(
            manifest_children(&manifest).map_err(|message| LayoutError::Invalid {
                path: self.blob_path(&entry.digest).unwrap_or_default(),
                message,
            })?,
        );
        Ok(out)
    }

    /// Write a tar to `out` that is itself an OCI image layout holding only the images `refs`
    /// (what `ctr image import` reads). Every blob is hashed on the way; a missing or corrupt
    /// blob is an error.
    pub fn export_archive(&self, refs: &[&str], out: impl Write) -> Result<(), LayoutError> {
        let all = self.entries()?;
        let mut chosen = Vec::new();
        for r in refs {
            let n = normalize_reference(r);
            let e = all
                .iter()
                .find(|e| e.reference == n)
                .ok_or_else(|| LayoutError::MissingImage(n.clone()))?;
            if !chosen.iter().any(|c: &Entry| c.reference == e.reference) {
                chosen.push(e.clone());
            }
        }
        chosen.sort_by(|a, b| a.reference.cmp(&b.reference));
        let mut blobs = BTreeSet::new();
        for e in &chosen {
            blobs.extend(self.image_blobs(e)?);
        }
        let archive = PathBuf::from("<archive>");
        let werr = |e: std::io::Error| LayoutError::from(io_err("write", &archive)(e));
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        append_bytes(&mut tar, "oci-layout", OCI_LAYOUT.as_bytes()).map_err(werr)?;
        append_bytes(&mut tar, "index.json", &index_bytes(&chosen)).map_err(werr)?;
        for d in &blobs {
            let path = self.blob_path(d)?;
            let file = std::fs::File::open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    LayoutError::MissingBlob(d.clone())
                } else {
                    io_err("read", &path)(e).into()
                }
            })?;
            let len = file.metadata().map_err(io_err("read", &path))?.len();
            let mut reader = HashingReader {
                inner: file,
                hasher: Sha256::new(),
            };
            let mut h = tar::Header::new_gnu();
            h.set_size(len);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(
                &mut h,
                format!("blobs/sha256/{}", &d["sha256:".len()..]),
                &mut reader,
            )
            .map_err(werr)?;
            let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
            if &actual != d {
                return Err(LayoutError::Mismatch {
                    expected: d.clone(),
                    actual,
                });
            }
        }
        tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
        Ok(())
    }
}

/// A blob being written; see [`Layout::blob_writer`].
pub struct BlobWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    expected: String,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Throw away what was written and start again from byte 0 (a source that cannot resume
    /// an interrupted download sends the whole blob again).
    pub fn restart(&mut self) -> Result<(), LayoutError> {
        let f = self.file.as_mut().expect("not finished");
        f.set_len(0)
            .and_then(|()| std::io::Seek::rewind(f))
            .map_err(io_err("write", &self.tmp))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Check the hash; move the file under its digest when it matches, else remove it and
    /// refuse.
    pub fn finish(mut self) -> Result<(), LayoutError> {
        let file = self.file.take().expect("finish runs once");
        file.sync_all().map_err(io_err("write", &self.tmp))?;
        drop(file);
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.expected {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(LayoutError::Mismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        std::fs::rename(&self.tmp, &self.target).map_err(io_err("write", &self.target))?;
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self.file.as_mut().expect("not finished");
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not finished").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    crate::edges::state::write_atomic(path, bytes, 0o644).map_err(|e| match e {
        crate::edges::state::StateError::Io(io) => LayoutError::Io(io),
        other => LayoutError::Invalid {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// `index.json` for `entries`.
fn index_bytes(entries: &[Entry]) -> Vec<u8> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = json!({
                "mediaType": e.media_type,
                "digest": e.digest,
                "size": e.size,
                "annotations": {
                    ANNOTATION_REF_NAME: e.reference,
                    ANNOTATION_CONTAINERD_NAME: e.reference,
                },
            });
            if let Some(p) = &e.platform {
                m["platform"] = json!({"architecture": p.architecture, "os": p.os});
            }
            m
        })
        .collect();
    let mut out = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("json serializes");
    out.push(b'\n');
    out
}

/// The named entries of an `index.json`'s bytes.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some(list) = v.get("manifests").and_then(Value::as_array) else {
        return Err("no `manifests` list".into());
    };
    let mut out = Vec::new();
    for m in list {
        let ann = m.get("annotations");
        let name = ann
            .and_then(|a| a.get(ANNOTATION_CONTAINERD_NAME))
            .or_else(|| ann.and_then(|a| a.get(ANNOTATION_REF_NAME)))
            .and_then(Value::as_str);
        // An entry without a name cannot be asked for by reference; it is not ours.
        let Some(name) = name else { continue };
        let digest = m
            .get("digest")
            .and_then(Value::as_str)
            .filter(|d| is_sha256_digest(d))
            .ok_or_else(|| format!("entry {name} has no sha256 digest"))?;
        out.push(Entry {
            reference: name.to_string(),
            digest: digest.to_string(),
            media_type: m
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(MEDIA_OCI_MANIFEST)
                .to_string(),
            size: m.get("size").and_then(Value::as_u64).unwrap_or(0),
            platform: m.get("platform").and_then(|p| {
                Some(Platform {
                    os: p.get("os")?.as_str()?.to_string(),
                    architecture: p.get("architecture")?.as_str()?.to_string(),
                })
            }),
        });
    }
    Ok(out)
}

/// The config and layer digests an image manifest names, in order; every one checked to be a
/// sha256 digest.
pub fn manifest_children(manifest: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(manifest).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let config = v
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .ok_or("the manifest has no config digest")?;
    out.push(config.to_string());
    for l in v
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let d = l
            .get("digest")
            .and_then(Value::as_str)
            .ok_or("a layer has no digest")?;
        out.push(d.to_string());
    }
    if let Some(bad) = out.iter().find(|d| !is_sha256_digest(d)) {
        return Err(format!("`{bad}` is not a sha256 digest"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

//! Filling the image cache: each reference resolved to the image manifest for the VMs'
//! architecture, from a registry (`oci-client`) or from a workshop mirror's layout (plain HTTP
//! `GET <mirror>/images/...`), and every blob stored only after its sha256 matched.
//!
//! Architecture invariant: nothing fetched is trusted — manifests and blobs are hashed on this
//! side and refused when they differ from the digest they were asked for; a tag whose platform
//! manifest differs from the one the lab's lock pins is refused. Blobs already in the cache and
//! valid are never fetched again; a corrupt one is reported, removed and fetched again.

use std::collections::BTreeMap;
use std::io::Write as _;

use futures::StreamExt as _;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::layout::{
    BlobState, Entry, Layout, LayoutError, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Platform, manifest_children, normalize_reference,
    sha256_digest,
};
use crate::edges::error::Diagnostic;

/// What the lab's lock pins for one image reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLock {
    /// `sha256:…` of the image manifest for the VMs' architecture: what the lab runs.
    pub digest: String,
    /// `sha256:…` the tag itself resolved to when that was a multi-platform index (lets a later
    /// `prepare` see "unchanged" without fetching the index again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

/// Where an image's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The image registry.
    Registry,
    /// The workshop mirror (`prepare --from`).
    Mirror,
}

/// One image made available in the cache.
#[derive(Clone, Debug, Serialize)]
pub struct Pulled {
    /// Fully-qualified reference.
    pub reference: String,
    /// Platform image manifest digest (pinned in the lock).
    pub digest: String,
    /// Where missing blobs were fetched from.
    pub source: Source,
    /// Bytes fetched and stored (0 when every blob was cached).
    pub bytes_downloaded: u64,
    /// Bytes of the image already in the cache.
    pub bytes_cached: u64,
    /// Blobs found corrupt in the cache, removed and fetched again.
    pub corrupt_refetched: Vec<String>,
}

/// Pulling failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be parsed.
    #[error("image reference `{reference}` is not valid: {message}")]
    BadReference {
        /// Reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// Registry or mirror request failed.
    #[error("pull {reference} from {from}: {message}")]
    Fetch {
        /// Reference.
        reference: String,
        /// Registry or mirror URL.
        from: String,
        /// Why.
        message: String,
    },
    /// The tag now resolves to another image than the lock pins.
    #[error(
        "image {reference} changed: the lab's lock pins {expected}, the {from} now serves {actual}"
    )]
    Changed {
        /// Reference.
        reference: String,
        /// Pinned digest.
        expected: String,
        /// Digest seen.
        actual: String,
        /// `registry` or `mirror`.
        from: String,
    },
    /// Bytes from the registry or mirror did not hash to the digest asked for.
    #[error(
        "{what} of {reference} from {from} refused: asked for {expected}, the bytes hash to {actual}"
    )]
    Tampered {
        /// `manifest`, `blob …`.
        what: String,
        /// Reference.
        reference: String,
        /// Registry or mirror URL.
        from: String,
        /// Digest asked for.
        expected: String,
        /// Digest of the bytes.
        actual: String,
    },
    /// No manifest for the VMs' platform.
    #[error("image {reference} has no manifest for linux/{arch}")]
    NoPlatform {
        /// Reference.
        reference: String,
        /// Architecture.
        arch: String,
    },
    /// The mirror does not hold the image and the lock names none.
    #[error("the mirror {mirror} has no image {reference}")]
    NotOnMirror {
        /// Reference.
        reference: String,
        /// Mirror URL.
        mirror: String,
    },
    /// A manifest is not what an image manifest looks like.
    #[error("manifest of {reference} is not usable: {message}")]
    BadManifest {
        /// Reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The cache.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl Diagnostic for PullError {
    fn hints(&self) -> Vec<String> {
        match self {
            PullError::BadReference { .. } => {
                vec!["images are named `registry/repository:tag` in the stack".into()]
            }
            PullError::Fetch { .. } => vec![
                "check the network; in a workshop, prepare from the instructor's mirror: `homelab prepare --from http://HOST:8787`".into(),
            ],
            PullError::Changed { .. } => vec![
                "a pinned tag must never move; if the new image is intended, remove its entry under `images` in the lab's `lock.json` and run `homelab prepare`".into(),
            ],
            PullError::Tampered { .. } => vec![
                "nothing was stored; the file was damaged or replaced on the way. Run `homelab prepare` again, or prepare from the registry instead of the mirror".into(),
            ],
            PullError::NoPlatform { .. } => {
                vec!["the lab's VMs run this computer's architecture; pick an image published for it".into()]
            }
            PullError::NotOnMirror { .. } => vec![
                "the instructor runs `homelab prepare` for the same stack before `homelab prepare --serve`".into(),
            ],
            PullError::BadManifest { .. } => Vec::new(),
            PullError::Layout(e) => e.hints(),
        }
    }
}

/// The progress seam of a pull: the CLI draws bars from these calls.
pub trait Transfer: Send + Sync {
    /// A blob starts downloading (`size` when known).
    fn start(&self, reference: &str, digest: &str, size: Option<u64>);
    /// `n` more bytes arrived.
    fn advance(&self, n: u64);
    /// The blob is stored.
    fn done(&self);
    /// A line worth saying (a corrupt blob found).
    fn note(&self, message: &str);
}

/// How to pull.
pub struct PullConfig<'a> {
    /// OCI architecture of the VMs (`amd64`).
    pub arch: &'a str,
    /// The workshop mirror's base URL (`http://host:8787`); `None`: the registries.
    pub mirror: Option<&'a str>,
    /// Progress.
    pub transfer: &'a dyn Transfer,
}

const ACCEPT: &[&str] = &[
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
];

/// Whether a registry host (`127.0.0.1:5000`) is on loopback: the only ones spoken to over
/// plain HTTP.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Pull every reference into `layout`, pinning each in `lock`.
pub async fn pull_all(
    layout: &Layout,
    references: &[String],
    lock: &mut BTreeMap<String, ImageLock>,
    cfg: &PullConfig<'_>,
) -> Result<Vec<Pulled>, PullError> {
    let refs: Vec<String> = references.iter().map(|r| normalize_reference(r)).collect();
    let http = reqwest::Client::builder()
        .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PullError::Fetch {
            reference: String::new(),
            from: cfg.mirror.unwrap_or_default().to_string(),
            message: e.to_string(),
        })?;
    let loopback: Vec<String> = refs
        .iter()
        .filter_map(|r| r.split_once('/').map(|(h, _)| h.to_string()))
        .filter(|h| is_loopback_registry(h))
        .collect();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(loopback),
        platform_resolver: None,
        user_agent: concat!("homelab/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    });
    let mut mirror_index: Option<Vec<Entry>> = None;
    let mut out = Vec::new();
    for r in &refs {
        let on_mirror = match cfg.mirror {
            // A pinned image comes from the mirror by its digest, the index unread.
            Some(_) if lock.contains_key(r) => true,
            Some(m) => {
                if mirror_index.is_none() {
                    mirror_index = Some(mirror_entries(&http, m).await?.unwrap_or_else(|| {
                        cfg.transfer.note(&format!(
                            "the mirror {m} holds no images (it serves manifests only); images come from their registries"
                        ));
                        Vec::new()
                    }));
                }
                let listed = mirror_index
                    .as_deref()
                    .is_some_and(|es| es.iter().any(|e| e.reference == *r));
                if !listed && mirror_index.as_ref().is_some_and(|es| !es.is_empty()) {
                    cfg.transfer
                        .note(&format!("{r}: not on the mirror {m}; from its registry"));
                }
                listed
            }
            None => false,
        };
        let pulled = match cfg.mirror {
            Some(m) if on_mirror => {
                let fetch = Mirror {
                    http: &http,
                    base: m,
                };
                pull_one_from_mirror(layout, r, lock, cfg, &fetch, mirror_index.as_deref()).await?
            }
            _ => pull_one_from_registry(layout, r, lock, cfg, &client).await?,
        };
        out.push(pulled);
    }
    Ok(out)
}

async fn pull_one_from_registry(
    layout: &Layout,
    r: &str,
    lock: &mut BTreeMap<String, ImageLock>,
    cfg: &PullConfig<'_>,
    client: &oci_client::Client,
) -> Result<Pulled, PullError> {
    let reference = Reference::try_from(r).map_err(|e| PullError::BadReference {
        reference: r.to_string(),
        message: e.to_string(),
    })?;
    let from = format!("registry {}", reference.registry());
    let fetch_err = |e: oci_client::errors::OciDistributionError| PullError::Fetch {
        reference: r.to_string(),
        from: reference.registry().to_string(),
        message: e.to_string(),
    };
    let auth = RegistryAuth::Anonymous;
    let top = match reference.digest() {
        Some(d) => d.to_string(),
        None => client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(fetch_err)?,
    };
    let pinned = lock.get(r).cloned();
    let (manifest_digest, index) = match &pinned {
        Some(p) if p.digest == top || p.index.as_deref() == Some(top.as_str()) => {
            (p.digest.clone(), p.index.clone())
        }
        _ => {
            let by_digest = reference.clone_with_digest(top.clone());
            let (bytes, _) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPT)
                .await
                .map_err(fetch_err)?;
            check(&bytes, &top, "manifest", r, &from)?;
            match pick_platform(&bytes, cfg.arch, r)? {
                Some(d) => (d, Some(top.clone())),
                None => (top.clone(), None),
            }
        }
    };
    if let Some(p) = &pinned
        && p.digest != manifest_digest
    {
        return Err(PullError::Changed {
            reference: r.to_string(),
            expected: p.digest.clone(),
            actual: manifest_digest,
            from: "registry".into(),
        });
    }
    let src = RegistrySource {
        client,
        reference: &reference,
    };
    let pulled = store_image(layout, r, &manifest_digest, cfg, &src, Source::Registry).await?;
    lock.insert(
        r.to_string(),
        ImageLock {
            digest: manifest_digest,
            index,
        },
    );
    Ok(pulled)
}

async fn pull_one_from_mirror(
    layout: &Layout,
    r: &str,
    lock: &mut BTreeMap<String, ImageLock>,
    cfg: &PullConfig<'_>,
    mirror: &Mirror<'_>,
    index: Option<&[Entry]>,
) -> Result<Pulled, PullError> {
    let pinned = lock.get(r).cloned();
    let digest = match &pinned {
        Some(p) => p.digest.clone(),
        None => index
            .and_then(|es| es.iter().find(|e| e.reference == r))
            .map(|e| e.digest.clone())
            .ok_or_else(|| PullError::NotOnMirror {
                reference: r.to_string(),
                mirror: mirror.base.to_string(),
            })?,
    };
    let pulled = store_image(layout, r, &digest, cfg, mirror, Source::Mirror).await?;
    lock.insert(
        r.to_string(),
        ImageLock {
            digest,
            index: pinned.and_then(|p| p.index),
        },
    );
    Ok(pulled)
}

/// Which manifest of an index is for linux/`arch`; `None` when `bytes` is an image manifest.
fn pick_platform(bytes: &[u8], arch: &str, r: &str) -> Result<Option<String>, PullError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| PullError::BadManifest {
        reference: r.to_string(),
        message: e.to_string(),
    })?;
    let Some(list) = v.get("manifests").and_then(Value::as_array) else {
        return Ok(None);
    };
    list.iter()
        .find(|m| {
            let p = m.get("platform");
            p.and_then(|p| p.get("os")).and_then(Value::as_str) == Some("linux")
                && p.and_then(|p| p.get("architecture"))
                    .and_then(Value::as_str)
                    == Some(arch)
        })
        .and_then(|m| m.get("digest").and_then(Value::as_str))
        .map(|d| Some(d.to_string()))
        .ok_or_else(|| PullError::NoPlatform {
            reference: r.to_string(),
            arch: arch.to_string(),
        })
}

fn check(bytes: &[u8], expected: &str, what: &str, r: &str, from: &str) -> Result<(), PullError> {
    let actual = sha256_digest(bytes);
    if actual != expected {
        return Err(PullError::Tampered {
            what: what.to_string(),
            reference: r.to_string(),
            from: from.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Where blobs come from.
trait BlobSource: Sync {
    fn describe(&self) -> String;
    /// An image manifest's bytes by digest (unchecked; the caller hashes them).
    async fn manifest(&self, r: &str, digest: &str) -> Result<Vec<u8>, PullError>;
    /// The blob's bytes as a stream of chunks, with its length when known.
    async fn open(
        &self,
        r: &str,
        digest: &str,
    ) -> Result<
        (
            Option<u64>,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
        ),
        PullError,
    >;
}

struct RegistrySource<'a> {
    client: &'a oci_client::Client,
    reference: &'a Reference,
}

impl BlobSource for RegistrySource<'_> {
    fn describe(&self) -> String {
        format!("registry {}", self.reference.registry())
    }

    async fn manifest(&self, r: &str, digest: &str) -> Result<Vec<u8>, PullError> {
        // Registries serve manifests under `/manifests/`, never under `/blobs/`.
        let by_digest = self.reference.clone_with_digest(digest.to_string());
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, ACCEPT)
            .await
            .map_err(|e| PullError::Fetch {
                reference: r.to_string(),
                from: self.reference.registry().to_string(),
                message: e.to_string(),
            })?;
        Ok(bytes.to_vec())
    }

    async fn open(
        &self,
        r: &str,
        digest: &str,
    ) -> Result<
        (
            Option<u64>,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
        ),
        PullError,
    > {
        let s = self
            .client
            .pull_blob_stream(self.reference, digest)
            .await
            .map_err(|e| PullError::Fetch {
                reference: r.to_string(),
                from: self.reference.registry().to_string(),
                message: e.to_string(),
            })?;
        let len = s.content_length;
        Ok((len, s.stream.map(|c| c.map_err(|e| e.to_string())).boxed()))
    }
}

struct Mirror<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
}

impl Mirror<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base.trim_end_matches('/'))
    }
}

impl BlobSource for Mirror<'_> {
    fn describe(&self) -> String {
        format!("mirror {}", self.base)
    }

    async fn manifest(&self, r: &str, digest: &str) -> Result<Vec<u8>, PullError> {
        // In the mirror's layout a manifest is a blob like any other.
        let (_, mut stream) = self.open(r, digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|message| PullError::Fetch {
                reference: r.to_string(),
                from: self.base.to_string(),
                message,
            })?);
        }
        Ok(out)
    }

    async fn open(
        &self,
        r: &str,
        digest: &str,
    ) -> Result<
        (
            Option<u64>,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
        ),
        PullError,
    > {
        let url = self.url(&format!(
            "images/blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        ));
        let err = |message: String| PullError::Fetch {
            reference: r.to_string(),
            from: self.base.to_string(),
            message,
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("GET {url} answered {}", resp.status())));
        }
        let len = resp.content_length();
        Ok((
            len,
            resp.bytes_stream()
                .map(|c| c.map_err(|e| e.to_string()))
                .boxed(),
        ))
    }
}

/// The entries of the mirror's `images/index.json`; `None` when the mirror has no image layout
/// (404: a mirror of upstream manifests only, as `upstream.mirror` was before images were cached).
async fn mirror_entries(
    http: &reqwest::Client,
    base: &str,
) -> Result<Option<Vec<Entry>>, PullError> {
    let m = Mirror { http, base };
    let url = m.url("images/index.json");
    let err = |message: String| PullError::Fetch {
        reference: "(index)".into(),
        from: base.to_string(),
        message,
    };
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(err(format!("GET {url} answered {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    super::layout::parse_index(&bytes).map(Some).map_err(err)
}

/// Make blob `digest` valid in the cache; returns (bytes fetched, bytes cached, was corrupt).
async fn ensure_blob(
    layout: &Layout,
    r: &str,
    digest: &str,
    cfg: &PullConfig<'_>,
    src: &impl BlobSource,
) -> Result<(u64, u64, bool), PullError> {
    let mut corrupt = false;
    match layout.verify_blob(digest)? {
        BlobState::Valid => {
            let len = std::fs::metadata(layout.blob_path(digest)?)
                .map(|m| m.len())
                .unwrap_or(0);
            return Ok((0, len, false));
        }
        BlobState::Corrupt { actual } => {
            cfg.transfer.note(&format!(
                "cached blob {digest} of {r} is corrupt (its bytes hash to {actual}): removed, fetching it again"
            ));
            layout.remove_blob(digest)?;
            corrupt = true;
        }
        BlobState::Missing => {}
    }
    let (len, mut stream) = src.open(r, digest).await?;
    cfg.transfer.start(r, digest, len);
    let mut w = layout.blob_writer(digest)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|message| PullError::Fetch {
            reference: r.to_string(),
            from: src.describe(),
            message,
        })?;
        w.write_all(&chunk).map_err(|e| {
            PullError::Layout(LayoutError::Io(crate::edges::error::io_err(
                "write",
                layout.dir(),
            )(e)))
        })?;
        cfg.transfer.advance(chunk.len() as u64);
    }
    let n = w.written();
    cfg.transfer.done();
    w.finish().map_err(|e| match e {
        LayoutError::Mismatch { expected, actual } => PullError::Tampered {
            what: format!("blob {expected}"),
            reference: r.to_string(),
            from: src.describe(),
            expected,
            actual,
        },
        other => other.into(),
    })?;
    Ok((n, 0, corrupt))
}

/// Make the manifest blob `digest` valid in the cache, like [`ensure_blob`].
async fn ensure_manifest(
    layout: &Layout,
    r: &str,
    digest: &str,
    cfg: &PullConfig<'_>,
    src: &impl BlobSource,
) -> Result<(u64, u64, bool), PullError> {
    let mut corrupt = false;
    match layout.verify_blob(digest)? {
        BlobState::Valid => {
            let len = std::fs::metadata(layout.blob_path(digest)?)
                .map(|m| m.len())
                .unwrap_or(0);
            return Ok((0, len, false));
        }
        BlobState::Corrupt { actual } => {
            cfg.transfer.note(&format!(
                "cached manifest {digest} of {r} is corrupt (its bytes hash to {actual}): removed, fetching it again"
            ));
            layout.remove_blob(digest)?;
            corrupt = true;
        }
        BlobState::Missing => {}
    }
    let bytes = src.manifest(r, digest).await?;
    check(&bytes, digest, "manifest", r, &src.describe())?;
    layout.write_blob(digest, &bytes)?;
    Ok((bytes.len() as u64, 0, corrupt))
}

async fn store_image(
    layout: &Layout,
    r: &str,
    manifest_digest: &str,
    cfg: &PullConfig<'_>,
    src: &impl BlobSource,
    source: Source,
) -> Result<Pulled, PullError> {
    let mut pulled = Pulled {
        reference: r.to_string(),
        digest: manifest_digest.to_string(),
        source,
        bytes_downloaded: 0,
        bytes_cached: 0,
        corrupt_refetched: Vec::new(),
    };
    let tally = |p: &mut Pulled, (n, c, bad): (u64, u64, bool), d: &str| {
        p.bytes_downloaded += n;
        p.bytes_cached += c;
        if bad {
            p.corrupt_refetched.push(d.to_string());
        }
    };
    let t = ensure_manifest(layout, r, manifest_digest, cfg, src).await?;
    tally(&mut pulled, t, manifest_digest);
    let manifest = layout.read_blob(manifest_digest)?;
    let v: Value = serde_json::from_slice(&manifest).map_err(|e| PullError::BadManifest {
        reference: r.to_string(),
        message: e.to_string(),
    })?;
    if v.get("manifests").is_some() {
        return Err(PullError::BadManifest {
            reference: r.to_string(),
            message: format!("{manifest_digest} is an index, not an image manifest"),
        });
    }
    let media_type = v
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(MEDIA_OCI_MANIFEST)
        .to_string();
    let children = manifest_children(&manifest).map_err(|message| PullError::BadManifest {
        reference: r.to_string(),
        message,
    })?;
    for d in &children {
        let t = ensure_blob(layout, r, d, cfg, src).await?;
        tally(&mut pulled, t, d);
    }
    let wanted = Entry {
        reference: r.to_string(),
        digest: manifest_digest.to_string(),
        media_type,
        size: manifest.len() as u64,
        platform: Some(Platform {
            os: "linux".into(),
            architecture: cfg.arch.to_string(),
        }),
    };
    if layout.entry(r)?.as_ref() != Some(&wanted) {
        layout.set_entry(wanted)?;
    }
    Ok(pulled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_plain_http() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("docker.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
        assert!(!is_loopback_registry("ghcr.io"));
    }

    #[test]
    fn the_platform_manifest_is_picked_from_an_index() {
        let idx = br#"{"manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:b","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(
            pick_platform(idx, "amd64", "x").unwrap(),
            Some("sha256:b".into())
        );
        assert!(matches!(
            pick_platform(idx, "riscv64", "x"),
            Err(PullError::NoPlatform { .. })
        ));
        assert_eq!(
            pick_platform(br#"{"layers":[]}"#, "amd64", "x").unwrap(),
            None
        );
    }
}

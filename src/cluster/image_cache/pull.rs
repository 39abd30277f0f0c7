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

/// How many blobs one `prepare` downloads at a time. Three, as containerd's
/// `max_concurrent_downloads` and Docker's `max-concurrent-downloads` default to: enough to hide
/// one request's latency behind others' transfers, few enough that on a thin link (hotel Wi-Fi,
/// thirty laptops behind one NAT address) each stream still moves and the registry's per-IP
/// limits are not met sooner; a larger number does not make a full link faster.
pub const PULL_CONCURRENCY: usize = 3;

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
    // The image manifest's bytes when the tag named one (not an index): stored below instead of
    // being fetched a second time.
    let mut fetched = None;
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
                None => {
                    fetched = Some(bytes);
                    (top.clone(), None)
                }
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
    let mut stored = 0;
    if let Some(bytes) = fetched
        && layout.verify_blob(&manifest_digest)? != BlobState::Valid
    {
        layout.remove_blob(&manifest_digest)?;
        layout.write_blob(&manifest_digest, &bytes)?;
        stored = bytes.len() as u64;
    }
    let mut pulled = store_image(layout, r, &manifest_digest, cfg, &src, Source::Registry).await?;
    // store_image found the manifest just stored in the cache; it was downloaded.
    pulled.bytes_cached -= stored;
    pulled.bytes_downloaded += stored;
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

/// What a blob is to its source: registries serve image manifests under `/manifests/`, never
/// under `/blobs/`; in a mirror's layout a manifest is a blob like any other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Blob,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
        }
    }
}

/// A blob's bytes as a stream of chunks.
struct Opened {
    /// Length of what the stream yields, when known.
    len: Option<u64>,
    /// The stream starts at the offset asked for (`206 Partial Content`); `false`: at byte 0.
    resumed: bool,
    stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
}

/// Where blobs come from.
trait BlobSource: Sync {
    fn describe(&self) -> String;
    /// The bytes of `digest` from byte `offset` on (an HTTP `Range` request) where the source
    /// honours that, else from byte 0; unchecked: [`ensure_blob`] hashes them on the way to
    /// the cache.
    async fn open(
        &self,
        r: &str,
        digest: &str,
        kind: Kind,
        offset: u64,
    ) -> Result<Opened, PullError>;
}

/// How often one blob's interrupted download is taken up again (resumed or restarted) before
/// `prepare` gives up on it.
const BLOB_RETRIES: u32 = 3;

struct RegistrySource<'a> {
    client: &'a oci_client::Client,
    reference: &'a Reference,
}

impl BlobSource for RegistrySource<'_> {
    fn describe(&self) -> String {
        format!("registry {}", self.reference.registry())
    }

    async fn open(
        &self,
        r: &str,
        digest: &str,
        kind: Kind,
        offset: u64,
    ) -> Result<Opened, PullError> {
        let err = |e: oci_client::errors::OciDistributionError| PullError::Fetch {
            reference: r.to_string(),
            from: self.reference.registry().to_string(),
            message: e.to_string(),
        };
        let boxed = |s: oci_client::client::SizedStream, resumed: bool| Opened {
            len: s.content_length,
            resumed,
            stream: s.stream.map(|c| c.map_err(|e| e.to_string())).boxed(),
        };
        if kind == Kind::Manifest {
            // Manifests are small: never resumed.
            let by_digest = self.reference.clone_with_digest(digest.to_string());
            let (bytes, _) = self
                .client
                .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, ACCEPT)
                .await
                .map_err(err)?;
            return Ok(Opened {
                len: Some(bytes.len() as u64),
                resumed: false,
                stream: futures::stream::once(async { Ok(bytes) }).boxed(),
            });
        }
        if offset == 0 {
            let s = self
                .client
                .pull_blob_stream(self.reference, digest)
                .await
                .map_err(err)?;
            return Ok(boxed(s, false));
        }
        // The Distribution spec lets a registry answer a `Range` request with 206 or the whole
        // blob with 200 (oci-client `pull_blob_stream_partial`).
        match self
            .client
            .pull_blob_stream_partial(self.reference, digest, offset, None)
            .await
            .map_err(err)?
        {
            oci_client::client::BlobResponse::Full(s) => Ok(boxed(s, false)),
            oci_client::client::BlobResponse::Partial(s) => Ok(boxed(s, true)),
        }
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

    async fn open(
        &self,
        r: &str,
        digest: &str,
        _kind: Kind,
        offset: u64,
    ) -> Result<Opened, PullError> {
        let url = self.url(&format!(
            "images/blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        ));
        let err = |message: String| PullError::Fetch {
            reference: r.to_string(),
            from: self.base.to_string(),
            message,
        };
        let mut req = self.http.get(&url);
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("GET {url} answered {}", resp.status())));
        }
        Ok(Opened {
            len: resp.content_length(),
            resumed: resp.status() == reqwest::StatusCode::PARTIAL_CONTENT,
            stream: resp
                .bytes_stream()
                .map(|c| c.map_err(|e| e.to_string()))
                .boxed(),
        })
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

/// Make blob `digest` (a manifest or a config or layer) valid in the cache: a valid file is
/// kept, a corrupt one removed and fetched again, a missing one fetched. The bytes are hashed on
/// the way into a temp file and stored under `digest` only when they match. Returns (bytes
/// fetched, bytes cached, was corrupt).
async fn ensure_blob(
    layout: &Layout,
    r: &str,
    digest: &str,
    kind: Kind,
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
                "cached {} {digest} of {r} is corrupt (its bytes hash to {actual}): removed, fetching it again",
                kind.word()
            ));
            layout.remove_blob(digest)?;
            corrupt = true;
        }
        BlobState::Missing => {}
    }
    let mut w = layout.blob_writer(digest)?;
    let write_err = |e: std::io::Error| {
        PullError::Layout(LayoutError::Io(crate::edges::error::io_err(
            "write",
            layout.dir(),
        )(e)))
    };
    // Bytes received, counting those of an attempt that was thrown away.
    let mut received = 0u64;
    let mut attempt = 0;
    loop {
        let offset = w.written();
        let opened = src.open(r, digest, kind, offset).await?;
        if offset > 0 {
            if opened.resumed {
                cfg.transfer.note(&format!(
                    "{} {digest} of {r}: resuming at byte {offset}",
                    kind.word()
                ));
            } else {
                cfg.transfer.note(&format!(
                    "{} {digest} of {r}: the {} cannot resume; downloading it again from the start",
                    kind.word(),
                    src.describe()
                ));
                w.restart()?;
            }
        }
        if attempt == 0 {
            cfg.transfer.start(r, digest, opened.len);
        }
        let mut stream = opened.stream;
        let mut broke = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    w.write_all(&chunk).map_err(write_err)?;
                    received += chunk.len() as u64;
                    cfg.transfer.advance(chunk.len() as u64);
                }
                Err(message) => {
                    broke = Some(message);
                    break;
                }
            }
        }
        let Some(message) = broke else { break };
        attempt += 1;
        if attempt > BLOB_RETRIES {
            return Err(PullError::Fetch {
                reference: r.to_string(),
                from: src.describe(),
                message: format!(
                    "{} {digest}: {message} (interrupted {attempt} times)",
                    kind.word()
                ),
            });
        }
        cfg.transfer.note(&format!(
            "{} {digest} of {r} was interrupted after {} bytes ({message}); taking it up again",
            kind.word(),
            w.written()
        ));
    }
    cfg.transfer.done();
    w.finish().map_err(|e| match e {
        LayoutError::Mismatch { expected, actual } => PullError::Tampered {
            what: format!("{} {expected}", kind.word()),
            reference: r.to_string(),
            from: src.describe(),
            expected,
            actual,
        },
        other => other.into(),
    })?;
    Ok((received, 0, corrupt))
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
    let t = ensure_blob(layout, r, manifest_digest, Kind::Manifest, cfg, src).await?;
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
    // At most PULL_CONCURRENCY blobs in flight; the first failure ends the image (the others'
    // temp files are dropped, what finished stays stored under its digest).
    let mut fetches = futures::stream::iter(children.iter().map(|d| async move {
        ensure_blob(layout, r, d, Kind::Blob, cfg, src)
            .await
            .map(|t| (t, d))
    }))
    .buffer_unordered(PULL_CONCURRENCY);
    while let Some(done) = fetches.next().await {
        let (t, d) = done?;
        tally(&mut pulled, t, d);
    }
    drop(fetches);
    pulled.corrupt_refetched.sort();
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
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::sync::{Arc, Mutex};

    struct Quiet;
    impl Transfer for Quiet {
        fn start(&self, _: &str, _: &str, _: Option<u64>) {}
        fn advance(&self, _: u64) {}
        fn done(&self) {}
        fn note(&self, _: &str) {}
    }

    /// A layout with one image (`layer` its one layer) under `reference`: (dir, layer digest).
    fn mirror_layout(reference: &str, layer: &[u8]) -> (tempfile::TempDir, String) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path().join("images")).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let (config_d, layer_d) = (sha256_digest(config), sha256_digest(layer));
        layout.write_blob(&config_d, config).unwrap();
        layout.write_blob(&layer_d, layer).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer.len()}],
        }))
        .unwrap();
        let d = sha256_digest(&manifest);
        layout.write_blob(&d, &manifest).unwrap();
        layout
            .set_entry(Entry {
                reference: reference.into(),
                digest: d,
                media_type: MEDIA_OCI_MANIFEST.into(),
                size: manifest.len() as u64,
                platform: None,
            })
            .unwrap();
        (tmp, layer_d)
    }

    /// Every request's path and `Range` header.
    type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A plain-HTTP mirror serving `dir` whose first answer for blob `cut` sends half the bytes
    /// and closes the connection; later ones honour `Range` (206) when `ranges`, else send the
    /// whole blob (200). Returns its URL and the `(path, Range header)` of every request.
    fn flaky_mirror(dir: std::path::PathBuf, cut: String, ranges: bool) -> (String, Requests) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let mut range = None;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("range")
                    {
                        range = Some(v.trim().to_string());
                    }
                }
                let first = !log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(p, _): &(String, Option<String>)| *p == path);
                log.lock().unwrap().push((path.clone(), range.clone()));
                let file = dir.join(path.trim_start_matches('/'));
                let Ok(mut body) = std::fs::read(&file) else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    continue;
                };
                let is_cut = path.ends_with(&cut[7..]);
                let mut status = "200 OK";
                if is_cut && first {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(&body[..body.len() / 2]);
                    let _ = conn.flush();
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let mut extra = String::new();
                if let (true, Some(r)) = (ranges, &range) {
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    extra = format!(
                        "content-range: bytes {from}-{}/{}\r\n",
                        body.len() - 1,
                        body.len()
                    );
                    body = body[from..].to_vec();
                    status = "206 Partial Content";
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            }
        });
        (url, seen)
    }

    /// One image from a mirror whose first download of the layer breaks off halfway.
    async fn pull_through_a_break(ranges: bool) -> (Pulled, Vec<Option<String>>, u64) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reference = "mirror.test/lab/one:1.0";
        let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (src, layer_d) = mirror_layout(reference, &layer);
        let (url, seen) = flaky_mirror(src.path().to_path_buf(), layer_d.clone(), ranges);
        let dest = tempfile::tempdir().unwrap();
        let layout = Layout::create(dest.path().join("images")).unwrap();
        let mut lock = BTreeMap::new();
        let pulled = pull_all(
            &layout,
            &[reference.to_string()],
            &mut lock,
            &PullConfig {
                arch: "amd64",
                mirror: Some(&url),
                transfer: &Quiet,
            },
        )
        .await
        .unwrap()
        .remove(0);
        assert_eq!(layout.verify_blob(&layer_d).unwrap(), BlobState::Valid);
        assert!(layout.entry(reference).unwrap().is_some());
        // Nothing but blobs under blobs/sha256: no temp file left behind.
        for f in std::fs::read_dir(dest.path().join("images/blobs/sha256")).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            assert!(
                super::super::layout::is_sha256_digest(&format!("sha256:{name}")),
                "{name}"
            );
        }
        let layer_requests = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(&layer_d[7..]))
            .map(|(_, r)| r.clone())
            .collect();
        (pulled, layer_requests, layer.len() as u64)
    }

    #[tokio::test]
    async fn an_interrupted_blob_resumes_where_it_broke_off_when_the_source_takes_a_range() {
        let (pulled, layer_requests, len) = pull_through_a_break(true).await;
        assert_eq!(
            layer_requests,
            [None, Some(format!("bytes={}-", len / 2))],
            "the second request asks for the rest only"
        );
        // Each byte of the layer came once.
        let small = pulled.bytes_downloaded - len;
        assert!(small < 1000, "{pulled:?}");
    }

    #[tokio::test]
    async fn an_interrupted_blob_starts_again_when_the_source_sends_it_whole() {
        let (pulled, layer_requests, len) = pull_through_a_break(false).await;
        // Asked to resume, the source sent all of it (200): the half already written was
        // thrown away and the whole blob stored, its digest checked.
        assert_eq!(layer_requests, [None, Some(format!("bytes={}-", len / 2))]);
        assert!(
            pulled.bytes_downloaded >= len + len / 2,
            "the thrown-away half counts as downloaded: {pulled:?}"
        );
    }

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

//! microk8s without the Snap Store at `up` time: `homelab prepare` downloads the microk8s snap of
//! the stack's channel and its base snap for the VMs' architecture, with the assertions snapd
//! needs to install them from files without `--dangerous`; `up` hands them to the VMs.
//!
//! Place in the data flow: `prepare` → [`prepare`] (Snap Store or a workshop mirror → the cache,
//! pins in the lab's `lock.json`) … `up`'s `cloud-init` step → [`cached`] (are they here?) →
//! the multipass provider transfers and installs them (`provider::multipass::snaps`).
//!
//! Architecture invariant: every file is checked on this side before it is kept or used: a snap
//! against the SHA3-384 the store published (and the lab's pin), its `.assert` file against the
//! snap (its `snap-revision` names that SHA3-384 and revision, every prerequisite present). The
//! VM's snapd then checks the signatures (`snap ack`). The cache is
//! `<cache>/snaps/<name>_<revision>.snap` and `.assert` (as `snap download` names them) and one
//! index, `<cache>/snaps/index.json`, listing what is there by name, channel and architecture;
//! a mirror serves the same directory, so an attendee finds files through that index. Files and
//! the index are written atomically; a damaged cached file is fetched again.
//!
//! Store facts from canonical/snapd (commit bee548f7, Aug 2026): `store/store.go` (`snapInfo`:
//! `GET v2/snaps/info/<name>?fields=…&architecture=…`; headers `Snap-Device-Series: 16` and
//! `Snap-Device-Architecture`, `hdrSnapDeviceSeries`), `store/details_v2.go` (`storeInfo`:
//! `channel-map` entries carry the requested snap fields, among them `base`, `confinement`,
//! `revision` and `download` {`url`, `size`, `sha3-384` (hex)}, and a `channel` {`architecture`,
//! `track`, `risk`, `name`}), `store/store_asserts.go` (`Assertion`: `GET
//! v2/assertions/<type>/<key…>?max-format=N`, `Accept: application/x.ubuntu.assertion`).

pub mod assertions;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_384};

use self::assertions::{Assertion, Ref};
use crate::edges::error::{Diagnostic, IoError, io_err};
use crate::edges::redact::redact_url;
use crate::edges::state::{StateError, write_atomic};

/// The cache's folder for snaps (below `state::cache_root()`), served as `<mirror>/snaps/`.
pub const SNAPS_DIR: &str = "snaps";
/// The index of that folder.
pub const INDEX_FILE: &str = "index.json";
/// Version of the index format.
pub const INDEX_VERSION: u32 = 1;
/// The Snap Store API.
pub const DEFAULT_STORE_URL: &str = "https://api.snapcraft.io";
/// Test/advanced knob: another Snap Store API base URL (a fake, a store proxy).
pub const STORE_URL_ENV: &str = "HOMELAB_SNAP_STORE_URL";
/// The channel a base snap is taken from.
pub const BASE_CHANNEL: &str = "latest/stable";
/// The snap the lab runs.
pub const MICROK8S: &str = "microk8s";

/// One snap in the cache: what the index lists for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapRecord {
    /// Snap name.
    pub name: String,
    /// The channel it was taken from (`1.36/stable`).
    pub channel: String,
    /// Snap architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Store revision.
    pub revision: u64,
    /// SHA3-384 of the snap file, hex, as the store publishes it.
    #[serde(rename = "sha3-384")]
    pub sha3_384: String,
    /// Bytes.
    pub size: u64,
    /// Its base snap, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `strict`, `classic` or `devmode`.
    pub confinement: String,
    /// The store's snap-id.
    pub snap_id: String,
    /// File name of the snap in the folder.
    pub file: String,
    /// File name of its assertions in the folder.
    pub assertions: String,
}

impl SnapRecord {
    fn key_matches(&self, name: &str, channel: &str, arch: &str) -> bool {
        self.name == name && self.channel == channel && self.architecture == arch
    }
}

/// `<cache>/snaps/index.json`: what the folder holds, found by name, channel and architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// One entry per name, channel and architecture.
    pub snaps: Vec<SnapRecord>,
}

impl Index {
    /// The entry for this name, channel and architecture.
    pub fn find(&self, name: &str, channel: &str, arch: &str) -> Option<&SnapRecord> {
        self.snaps
            .iter()
            .find(|r| r.key_matches(name, channel, arch))
    }

    fn put(&mut self, rec: SnapRecord) {
        self.snaps
            .retain(|r| !r.key_matches(&rec.name, &rec.channel, &rec.architecture));
        self.snaps.push(rec);
        self.snaps.sort_by(|a, b| {
            (&a.name, &a.channel, &a.architecture).cmp(&(&b.name, &b.channel, &b.architecture))
        });
    }
}

/// A snap the lab pinned (`snaps` in `lock.json`), by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapPin {
    /// Channel.
    pub channel: String,
    /// Architecture.
    pub architecture: String,
    /// Revision.
    pub revision: u64,
    /// SHA3-384, hex.
    #[serde(rename = "sha3-384")]
    pub sha3_384: String,
}

/// Where snaps come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Snap Store API at this base URL.
    Store(String),
    /// A workshop mirror serving another cache's `snaps/` folder at `<base>/snaps/`.
    Mirror(String),
}

impl Source {
    /// The mirror when one is set, else the store (`HOMELAB_SNAP_STORE_URL` or the real one).
    pub fn choose(mirror: Option<&str>) -> Source {
        match mirror.filter(|m| !m.is_empty()) {
            Some(m) => Source::Mirror(m.trim_end_matches('/').to_string()),
            None => Source::Store(
                std::env::var(STORE_URL_ENV)
                    .ok()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| DEFAULT_STORE_URL.to_string())
                    .trim_end_matches('/')
                    .to_string(),
            ),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Source::Store(_) => "store",
            Source::Mirror(_) => "mirror",
        }
    }
}

/// One snap made available by [`prepare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreparedSnap {
    /// Snap name.
    pub name: String,
    /// Channel.
    pub channel: String,
    /// Architecture.
    pub architecture: String,
    /// Revision.
    pub revision: u64,
    /// SHA3-384, hex.
    #[serde(rename = "sha3-384")]
    pub sha3_384: String,
    /// Size of the snap file.
    pub size: u64,
    /// `cache`, `store` or `mirror`.
    pub source: &'static str,
    /// Bytes downloaded for it (snap and assertions); 0 when cached.
    pub downloaded: u64,
}

/// A snap could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// Network or TLS failure.
    #[error("download {url}: {message}")]
    Fetch {
        /// URL (credentials redacted).
        url: String,
        /// Why.
        message: String,
    },
    /// An error status.
    #[error("download {url}: the server answered {status}{said}")]
    Status {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// `: <message>` from the store's error list, or empty.
        said: String,
    },
    /// The answer is not what the API documents.
    #[error("{url} answered something homelab cannot read: {why}")]
    BadAnswer {
        /// URL.
        url: String,
        /// What was wrong.
        why: String,
    },
    /// The channel has no revision for this architecture.
    #[error("the Snap Store has no `{name}` in channel {channel} for {arch}")]
    NotInChannel {
        /// Snap.
        name: String,
        /// Channel.
        channel: String,
        /// Architecture.
        arch: String,
    },
    /// The mirror's index does not list it.
    #[error("the mirror {mirror} has no `{name}` {channel} for {arch} in its `snaps/index.json`")]
    NotOnMirror {
        /// Snap.
        name: String,
        /// Channel.
        channel: String,
        /// Architecture.
        arch: String,
        /// Mirror base URL.
        mirror: String,
    },
    /// A downloaded file is not what was published: refused.
    #[error(
        "`{file}` from {url} was refused: its SHA3-384 is {actual}, but {expected_from} says {expected}"
    )]
    HashMismatch {
        /// File name.
        file: String,
        /// Where it came from.
        url: String,
        /// Who published the expected hash.
        expected_from: &'static str,
        /// Expected.
        expected: String,
        /// Seen.
        actual: String,
    },
    /// The channel now serves another revision than the lab pinned.
    #[error(
        "`{name}` {channel} is now revision {now}, but the lab's lock pins revision {pinned}, which is not in the cache"
    )]
    PinMoved {
        /// Snap.
        name: String,
        /// Channel.
        channel: String,
        /// Pinned revision.
        pinned: u64,
        /// Served now.
        now: u64,
    },
    /// The assertions do not cover the snap file.
    #[error("the assertions of `{name}` revision {revision} were refused: {why}")]
    BadAssertions {
        /// Snap.
        name: String,
        /// Revision.
        revision: u64,
        /// Why.
        why: String,
    },
    /// Cache I/O.
    #[error(transparent)]
    Io(#[from] IoError),
    /// State I/O.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Diagnostic for SnapError {
    fn hints(&self) -> Vec<String> {
        match self {
            SnapError::Fetch { .. } | SnapError::Status { .. } => vec![
                "check the network; on a slow or offline network run `homelab prepare` where the network works, or prepare from a workshop mirror (`upstream.mirror`, `HOMELAB_UPSTREAM_MIRROR`)".into(),
            ],
            SnapError::BadAnswer { .. } => vec![format!(
                "`{STORE_URL_ENV}` or `upstream.mirror` may point at something else than a Snap Store or a homelab cache"
            )],
            SnapError::NotInChannel { .. } => vec![
                "the stack's `cluster.channel` (or `microk8s.channel`) names a channel microk8s publishes, e.g. `1.36/stable`".into(),
            ],
            SnapError::NotOnMirror { .. } => vec![
                "the instructor runs `homelab prepare` (same stack) before serving the cache".into(),
            ],
            SnapError::HashMismatch { .. } | SnapError::BadAssertions { .. } => vec![
                "nothing was kept; a damaged download or a tampered mirror gives this: run `homelab prepare` again, or prepare from the Snap Store (unset `upstream.mirror`)".into(),
            ],
            SnapError::PinMoved { name, .. } => vec![format!(
                "to take the new revision, remove `snaps.{name}` from the lab's `lock.json` and run `homelab prepare` again"
            )],
            SnapError::Io(e) => e.hints(),
            SnapError::State(e) => e.hints(),
        }
    }
}

/// The snap architecture of the VMs: Multipass runs the host's.
pub fn vm_architecture() -> Option<&'static str> {
    crate::model::engine_image::oci_arch(&crate::model::engine_image::Host::current().arch)
}

/// The cache's snaps folder.
pub fn dir(cache_root: &Path) -> PathBuf {
    cache_root.join(SNAPS_DIR)
}

/// Read the cache's index (empty when none).
pub fn read_index(cache_root: &Path) -> Result<Index, SnapError> {
    let path = dir(cache_root).join(INDEX_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SnapError::BadAnswer {
            url: path.display().to_string(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index {
            version: INDEX_VERSION,
            snaps: Vec::new(),
        }),
        Err(e) => Err(io_err("read", &path)(e).into()),
    }
}

fn write_index(cache_root: &Path, index: &Index) -> Result<(), SnapError> {
    let text = serde_json::to_string_pretty(index).expect("the index serializes") + "\n";
    write_atomic(&dir(cache_root).join(INDEX_FILE), text.as_bytes(), 0o644)?;
    Ok(())
}

/// SHA3-384 of a file, hex.
pub fn file_sha3_384(path: &Path) -> Result<String, IoError> {
    let mut f = std::fs::File::open(path).map_err(io_err("read", path))?;
    let mut h = Sha3_384::new();
    std::io::copy(&mut f, &mut h).map_err(io_err("read", path))?;
    Ok(hex::encode(h.finalize()))
}

/// Whether the cached files of `rec` are whole: the snap's size and SHA3-384, and assertions
/// that cover it. `Err(why)` when not (missing or damaged).
pub fn verify_cached(cache_root: &Path, rec: &SnapRecord) -> Result<(), String> {
    let d = dir(cache_root);
    let snap = d.join(&rec.file);
    let meta = std::fs::metadata(&snap).map_err(|_| format!("`{}` is missing", rec.file))?;
    if meta.len() != rec.size {
        return Err(format!(
            "`{}` has {} bytes, not {}",
            rec.file,
            meta.len(),
            rec.size
        ));
    }
    let actual = file_sha3_384(&snap).map_err(|e| e.to_string())?;
    if actual != rec.sha3_384 {
        return Err(format!("`{}` has SHA3-384 {actual}", rec.file));
    }
    let text = std::fs::read_to_string(d.join(&rec.assertions))
        .map_err(|_| format!("`{}` is missing", rec.assertions))?;
    assertions::check_covers(&text, &rec.sha3_384, rec.revision)
        .map_err(|why| format!("`{}`: {why}", rec.assertions))?;
    Ok(())
}

/// The snaps `up` installs for `channel` on `arch`, bases first, when the cache holds all of
/// them (the lab's pins when it has them, else what the index lists). Files are looked at by
/// size only; the provider checks hashes before it transfers ([`verify_cached`]).
pub fn cached(
    cache_root: &Path,
    pins: &BTreeMap<String, SnapPin>,
    channel: &str,
    arch: &str,
) -> Result<Option<Vec<SnapRecord>>, SnapError> {
    let index = read_index(cache_root)?;
    let pick = |name: &str, channel: &str| -> Option<SnapRecord> {
        let rec = index.find(name, channel, arch)?;
        if let Some(pin) = pins.get(name)
            && pin.channel == channel
            && pin.architecture == arch
            && (pin.revision != rec.revision || pin.sha3_384 != rec.sha3_384)
        {
            return None;
        }
        let d = dir(cache_root);
        let whole = std::fs::metadata(d.join(&rec.file)).is_ok_and(|m| m.len() == rec.size)
            && d.join(&rec.assertions).is_file();
        whole.then(|| rec.clone())
    };
    let Some(main) = pick(MICROK8S, channel) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    if let Some(base) = &main.base {
        match pick(base, BASE_CHANNEL) {
            Some(b) => out.push(b),
            None => return Ok(None),
        }
    }
    out.push(main);
    Ok(Some(out))
}

/// Make microk8s of `channel` and its base available in the cache for `arch`, from `source`,
/// each file checked; pins them in `pins` (the lab's lock). `progress` gets one line per file.
pub async fn prepare(
    channel: &str,
    arch: &str,
    pins: &mut BTreeMap<String, SnapPin>,
    cache_root: &Path,
    source: &Source,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<PreparedSnap>, SnapError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SnapError::Fetch {
            url: String::new(),
            message: e.to_string(),
        })?;
    let d = dir(cache_root);
    std::fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
    let mut fetcher = Fetcher {
        client,
        source: source.clone(),
        cache_root: cache_root.to_path_buf(),
        arch: arch.to_string(),
        mirror_index: None,
        progress,
    };
    let main = fetcher.one(MICROK8S, channel, pins).await?;
    let mut out = Vec::new();
    if let Some(base) = main.1.base.clone() {
        out.push(fetcher.one(&base, BASE_CHANNEL, pins).await?.0);
    }
    out.push(main.0);
    Ok(out)
}

struct Fetcher<'p> {
    client: reqwest::Client,
    source: Source,
    cache_root: PathBuf,
    arch: String,
    mirror_index: Option<Index>,
    progress: &'p (dyn Fn(&str) + Sync),
}

/// Where a snap is to be downloaded from, and what it must be.
struct Remote {
    record: SnapRecord,
    url: String,
}

impl Fetcher<'_> {
    async fn one(
        &mut self,
        name: &str,
        channel: &str,
        pins: &mut BTreeMap<String, SnapPin>,
    ) -> Result<(PreparedSnap, SnapRecord), SnapError> {
        let arch = self.arch.clone();
        let pin = pins
            .get(name)
            .filter(|p| p.channel == channel && p.architecture == arch)
            .cloned();
        let mut index = read_index(&self.cache_root)?;
        // What the lab pinned, else what the cache has: a second prepare asks no one.
        let local = index
            .find(name, channel, &arch)
            .filter(|r| {
                pin.as_ref()
                    .is_none_or(|p| p.revision == r.revision && p.sha3_384 == r.sha3_384)
            })
            .cloned();
        if let Some(rec) = local {
            let checked = {
                let root = self.cache_root.clone();
                let r = rec.clone();
                tokio::task::spawn_blocking(move || verify_cached(&root, &r))
                    .await
                    .expect("hash thread panicked")
            };
            match checked {
                Ok(()) => {
                    pins.insert(name.to_string(), pin_of(&rec));
                    return Ok((prepared(&rec, "cache", 0), rec));
                }
                Err(why) => (self.progress)(&format!(
                    "{name} {channel}: the cached revision {} is damaged ({why}); fetching it again",
                    rec.revision
                )),
            }
        }
        // A mirror without this snap (an instructor who prepared another stack, or an older
        // homelab): the store, said on screen; anything wrong with what it has is refused.
        let mut source = self.source.clone();
        let remote = match self.resolve(name, channel, &source).await {
            Err(SnapError::NotOnMirror { .. }) => {
                source = Source::choose(None);
                (self.progress)(&format!(
                    "{name} {channel} ({arch}): not on the mirror; from the Snap Store"
                ));
                self.resolve(name, channel, &source).await?
            }
            other => other?,
        };
        if let Some(p) = &pin {
            if p.revision != remote.record.revision {
                return Err(SnapError::PinMoved {
                    name: name.to_string(),
                    channel: channel.to_string(),
                    pinned: p.revision,
                    now: remote.record.revision,
                });
            }
            if p.sha3_384 != remote.record.sha3_384 {
                return Err(SnapError::HashMismatch {
                    file: remote.record.file.clone(),
                    url: redact_url(&remote.url),
                    expected_from: "the lab's lock",
                    expected: p.sha3_384.clone(),
                    actual: remote.record.sha3_384.clone(),
                });
            }
        }
        let rec = remote.record.clone();
        (self.progress)(&format!(
            "{name} {channel} ({arch}): revision {}, {} from the {}",
            rec.revision,
            human_bytes(rec.size),
            match source {
                Source::Store(_) => "Snap Store",
                Source::Mirror(_) => "mirror",
            }
        ));
        let mut downloaded = self.download_snap(&remote, &source).await?;
        let (text, bytes) = self.assertions(&rec, &source).await?;
        downloaded += bytes;
        let snap_id =
            assertions::check_covers(&text, &rec.sha3_384, rec.revision).map_err(|why| {
                SnapError::BadAssertions {
                    name: name.to_string(),
                    revision: rec.revision,
                    why,
                }
            })?;
        if !rec.snap_id.is_empty() && snap_id != rec.snap_id {
            return Err(SnapError::BadAssertions {
                name: name.to_string(),
                revision: rec.revision,
                why: format!(
                    "they are for snap-id {snap_id}, the snap is {}",
                    rec.snap_id
                ),
            });
        }
        let d = dir(&self.cache_root);
        write_atomic(&d.join(&rec.assertions), text.as_bytes(), 0o644)?;
        index.put(rec.clone());
        index.version = INDEX_VERSION;
        write_index(&self.cache_root, &index)?;
        pins.insert(name.to_string(), pin_of(&rec));
        Ok((prepared(&rec, source.label(), downloaded), rec))
    }

    /// Which revision to fetch, and from where.
    async fn resolve(
        &mut self,
        name: &str,
        channel: &str,
        source: &Source,
    ) -> Result<Remote, SnapError> {
        let arch = self.arch.clone();
        match source.clone() {
            Source::Store(base) => {
                let url = format!(
                    "{base}/v2/snaps/info/{name}?fields=base,confinement,download,revision,type,version&architecture={arch}"
                );
                let body = self.get(&url, true, None).await?;
                let info: StoreInfo =
                    serde_json::from_slice(&body).map_err(|e| SnapError::BadAnswer {
                        url: redact_url(&url),
                        why: e.to_string(),
                    })?;
                let (track, risk) = split_channel(channel);
                let entry = info
                    .channel_map
                    .into_iter()
                    .find(|e| {
                        e.channel.architecture == arch
                            && e.channel.track == track
                            && e.channel.risk == risk
                    })
                    .ok_or_else(|| SnapError::NotInChannel {
                        name: name.to_string(),
                        channel: channel.to_string(),
                        arch: arch.clone(),
                    })?;
                if entry.download.sha3_384.len() != 96 || entry.revision == 0 {
                    return Err(SnapError::BadAnswer {
                        url: redact_url(&url),
                        why: "a channel entry without a revision or a SHA3-384".into(),
                    });
                }
                let file = format!("{name}_{}.snap", entry.revision);
                Ok(Remote {
                    url: entry.download.url,
                    record: SnapRecord {
                        name: name.to_string(),
                        channel: channel.to_string(),
                        architecture: arch,
                        revision: entry.revision,
                        sha3_384: entry.download.sha3_384,
                        size: entry.download.size,
                        base: entry.base.filter(|b| !b.is_empty()),
                        confinement: entry.confinement,
                        snap_id: info.snap_id,
                        assertions: format!("{name}_{}.assert", entry.revision),
                        file,
                    },
                })
            }
            Source::Mirror(base) => {
                if self.mirror_index.is_none() {
                    let url = format!("{base}/{SNAPS_DIR}/{INDEX_FILE}");
                    let index = match self.get(&url, false, None).await {
                        // A mirror whose cache holds no snaps.
                        Err(SnapError::Status { status: 404, .. }) => Index::default(),
                        Err(e) => return Err(e),
                        Ok(body) => {
                            serde_json::from_slice(&body).map_err(|e| SnapError::BadAnswer {
                                url: redact_url(&url),
                                why: e.to_string(),
                            })?
                        }
                    };
                    self.mirror_index = Some(index);
                }
                let rec = self
                    .mirror_index
                    .as_ref()
                    .and_then(|i| i.find(name, channel, &arch))
                    .cloned()
                    .ok_or_else(|| SnapError::NotOnMirror {
                        name: name.to_string(),
                        channel: channel.to_string(),
                        arch: arch.clone(),
                        mirror: redact_url(&base),
                    })?;
                // The names are ours to choose, not the mirror's: no path tricks.
                let mut rec = rec;
                rec.file = format!("{name}_{}.snap", rec.revision);
                rec.assertions = format!("{name}_{}.assert", rec.revision);
                Ok(Remote {
                    url: format!("{base}/{SNAPS_DIR}/{}", rec.file),
                    record: rec,
                })
            }
        }
    }

    /// GET a small document; `store` adds the headers the Snap Store API requires.
    async fn get(
        &self,
        url: &str,
        store: bool,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, SnapError> {
        let mut req = self.client.get(url);
        if store {
            req = req
                .header("Snap-Device-Series", assertions::SERIES)
                .header("Snap-Device-Architecture", &self.arch);
        }
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let shown = redact_url(url);
        let resp = req.send().await.map_err(|e| SnapError::Fetch {
            url: shown.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| SnapError::Fetch {
            url: shown.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(SnapError::Status {
                url: shown,
                status: status.as_u16(),
                said: error_list_message(&body),
            });
        }
        Ok(body.to_vec())
    }

    /// Stream the snap into the cache, hashing as it comes; kept only when the hash is right.
    async fn download_snap(&self, remote: &Remote, source: &Source) -> Result<u64, SnapError> {
        let rec = &remote.record;
        let d = dir(&self.cache_root);
        let part = d.join(format!(".{}.part-{}", rec.file, std::process::id()));
        let shown = redact_url(&remote.url);
        let fetch = |e: reqwest::Error| SnapError::Fetch {
            url: shown.clone(),
            message: e.to_string(),
        };
        let mut resp = self.client.get(&remote.url).send().await.map_err(fetch)?;
        if !resp.status().is_success() {
            return Err(SnapError::Status {
                url: shown.clone(),
                status: resp.status().as_u16(),
                said: String::new(),
            });
        }
        let result = async {
            let mut file = std::fs::File::create(&part).map_err(io_err("write", &part))?;
            let mut h = Sha3_384::new();
            let mut n = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(fetch)? {
                h.update(&chunk);
                file.write_all(&chunk).map_err(io_err("write", &part))?;
                n += chunk.len() as u64;
            }
            file.sync_all().map_err(io_err("write", &part))?;
            let actual = hex::encode(h.finalize());
            if actual != rec.sha3_384 {
                return Err(SnapError::HashMismatch {
                    file: rec.file.clone(),
                    url: shown.clone(),
                    expected_from: match source {
                        Source::Store(_) => "the Snap Store",
                        Source::Mirror(_) => "the mirror's index",
                    },
                    expected: rec.sha3_384.clone(),
                    actual,
                });
            }
            let target = d.join(&rec.file);
            std::fs::rename(&part, &target).map_err(io_err("write", &target))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result
    }

    /// The assertions for `rec`: from the store, following prerequisites as snapd's fetcher does
    /// (the order `snap download` writes them); from a mirror, its `.assert` file.
    async fn assertions(
        &self,
        rec: &SnapRecord,
        source: &Source,
    ) -> Result<(String, u64), SnapError> {
        match source {
            Source::Mirror(base) => {
                let url = format!("{base}/{SNAPS_DIR}/{}", rec.assertions);
                let body = self.get(&url, false, None).await?;
                let n = body.len() as u64;
                let text = String::from_utf8(body).map_err(|_| SnapError::BadAnswer {
                    url: redact_url(&url),
                    why: "assertions that are not text".into(),
                })?;
                Ok((text, n))
            }
            Source::Store(base) => {
                let digest = assertions::digest_header(&rec.sha3_384).ok_or_else(|| {
                    SnapError::BadAnswer {
                        url: base.clone(),
                        why: "not a SHA3-384".into(),
                    }
                })?;
                let start = Ref::new("snap-revision", &[&digest]);
                let mut saved: Vec<Assertion> = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                let mut fetched: BTreeMap<Ref, Assertion> = BTreeMap::new();
                let mut n = 0u64;
                enum Frame {
                    Enter(Ref),
                    Save(Ref),
                }
                let mut stack = vec![Frame::Enter(start)];
                while let Some(frame) = stack.pop() {
                    match frame {
                        Frame::Enter(r) => {
                            if r.predefined() || !seen.insert(r.clone()) {
                                continue;
                            }
                            let url = format!(
                                "{base}/v2/assertions/{}?max-format={}",
                                r.path(),
                                r.max_format()
                            );
                            let body = self
                                .get(&url, true, Some("application/x.ubuntu.assertion"))
                                .await?;
                            n += body.len() as u64;
                            let text = String::from_utf8_lossy(&body).into_owned();
                            let bad = |why: String| SnapError::BadAnswer {
                                url: redact_url(&url),
                                why,
                            };
                            let mut list = assertions::parse_stream(&text).map_err(bad)?;
                            if list.len() != 1 || list[0].reference().as_ref() != Some(&r) {
                                return Err(bad(format!("not the assertion {r}")));
                            }
                            let a = list.remove(0);
                            stack.push(Frame::Save(r.clone()));
                            for p in a.prerequisites().into_iter().rev() {
                                stack.push(Frame::Enter(p));
                            }
                            fetched.insert(r, a);
                        }
                        Frame::Save(r) => {
                            if let Some(a) = fetched.remove(&r) {
                                saved.push(a);
                            }
                        }
                    }
                }
                Ok((assertions::encode_stream(&saved), n))
            }
        }
    }
}

#[derive(Deserialize)]
struct StoreInfo {
    #[serde(rename = "channel-map", default)]
    channel_map: Vec<ChannelEntry>,
    #[serde(rename = "snap-id", default)]
    snap_id: String,
}

#[derive(Deserialize)]
struct ChannelEntry {
    channel: StoreChannel,
    download: StoreDownload,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    confinement: String,
}

#[derive(Deserialize)]
struct StoreChannel {
    architecture: String,
    track: String,
    risk: String,
}

#[derive(Deserialize)]
struct StoreDownload {
    #[serde(rename = "sha3-384", default)]
    sha3_384: String,
    #[serde(default)]
    size: u64,
    url: String,
}

/// `1.36/stable` → (`1.36`, `stable`); `stable` → (`latest`, `stable`).
pub fn split_channel(channel: &str) -> (&str, &str) {
    match channel.split_once('/') {
        Some((track, rest)) => (track, rest.split('/').next().unwrap_or(rest)),
        None => ("latest", channel),
    }
}

/// `: <message>` of a v2 `error-list` answer, or empty.
fn error_list_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error-list")?
                .get(0)?
                .get("message")?
                .as_str()
                .map(|m| format!(": {m}"))
        })
        .unwrap_or_default()
}

fn pin_of(rec: &SnapRecord) -> SnapPin {
    SnapPin {
        channel: rec.channel.clone(),
        architecture: rec.architecture.clone(),
        revision: rec.revision,
        sha3_384: rec.sha3_384.clone(),
    }
}

fn prepared(rec: &SnapRecord, source: &'static str, downloaded: u64) -> PreparedSnap {
    PreparedSnap {
        name: rec.name.clone(),
        channel: rec.channel.clone(),
        architecture: rec.architecture.clone(),
        revision: rec.revision,
        sha3_384: rec.sha3_384.clone(),
        size: rec.size,
        source,
        downloaded,
    }
}

/// `183.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_split_like_the_store_names_them() {
        assert_eq!(split_channel("1.36/stable"), ("1.36", "stable"));
        assert_eq!(split_channel("stable"), ("latest", "stable"));
        assert_eq!(split_channel("latest/edge/fix"), ("latest", "edge"));
    }

    #[test]
    fn the_store_error_list_is_quoted() {
        assert_eq!(
            error_list_message(br#"{"error-list":[{"code":"missing-header","message":"m"}]}"#),
            ": m"
        );
        assert_eq!(error_list_message(b"nope"), "");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}

//! The sync engine's container image, built in Rust from the running binary, for side-loading
//! into microk8s (`microk8s ctr image import`) so a fresh lab needs no registry for the engine.
//!
//! Place in the data flow: `up` (provisioning, on a Linux host whose architecture matches the
//! VM) → [`engine_image`] → [`write_archive`] → the archive is copied into the VM →
//! [`ctr_import_argv`] run there. Nothing here runs `ctr` itself.
//!
//! Format (OCI image spec v1.1, image layout): a tar holding `oci-layout`
//! (`{"imageLayoutVersion":"1.0.0"}`), `index.json` (an image index whose one manifest
//! descriptor carries `org.opencontainers.image.ref.name` = the tag and containerd's
//! `io.containerd.image.name` = the full reference), and `blobs/sha256/<hex>` for the manifest,
//! the config (`rootfs.diff_ids` = digests of the uncompressed layers) and one uncompressed layer
//! (`application/vnd.oci.image.layer.v1.tar`).
//!
//! Architecture invariant: the archive is deterministic — same inputs, same bytes, same digests
//! (entries sorted, mtimes 0, owner root) — so re-running `up` imports nothing new. The layer holds
//! the binary and, for a dynamically linked binary, its loader and libraries as `ldd` lists them,
//! plus `git` (the engine runs real git) with its helpers and libraries and the host's CA bundle.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::Diagnostic;
use crate::process::Cmd;

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

/// Building the image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read.
    #[error("read `{path}` for the engine image: {message}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The binary is not for a Linux architecture we know.
    #[error("`{path}` is not a 64-bit Linux executable for amd64 or arm64")]
    NotLinux {
        /// Path.
        path: PathBuf,
    },
    /// The archive could not be written.
    #[error("write the engine image archive: {0}")]
    Write(String),
    /// `ldd` failed.
    #[error(transparent)]
    Ldd(#[from] crate::process::ProcessError),
}

impl Diagnostic for ImageError {
    fn hints(&self) -> Vec<String> {
        match self {
            ImageError::NotLinux { .. } => vec![
                "side-loading needs a Linux host of the VM's architecture; otherwise the stack pulls `sync.image` from a registry".into(),
            ],
            _ => Vec::new(),
        }
    }
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

/// Architecture of a 64-bit little-endian ELF executable: `amd64` or `arm64`; and whether it
/// asks for a dynamic loader (`PT_INTERP`).
pub fn elf_info(bytes: &[u8]) -> Option<(&'static str, bool)> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let arch = match u16_at(18) {
        62 => "amd64",
        183 => "arm64",
        _ => return None,
    };
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    let mut dynamic = false;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return None;
        }
        if u32_at(o) == 3 {
            dynamic = true;
        }
    }
    Some((arch, dynamic))
}

/// The programs and libraries a dynamically linked executable needs, as `ldd` lists them (the
/// loader included); nothing for a static one.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Cmd::new("ldd", "list the libraries the engine image needs")
        .arg(exe)
        .run_unchecked()?;
    if !out.success() {
        // "not a dynamic executable" / "statically linked".
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&out.stdout))
}

/// Paths in `ldd` output (`libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` has no file).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Add an executable (at the same path in the image, or `at`) with its libraries.
fn add_program(
    files: &mut BTreeMap<String, ImageFile>,
    host: &Path,
    at: Option<&str>,
) -> Result<(), ImageError> {
    let contents = read(host)?;
    let path = at
        .map(str::to_string)
        .unwrap_or_else(|| host.display().to_string());
    files.insert(
        path.clone(),
        ImageFile {
            path,
            contents,
            mode: 0o755,
        },
    );
    for lib in shared_libraries(host)? {
        let key = lib.display().to_string();
        if files.contains_key(&key) {
            continue;
        }
        // ldd names the path the loader opens; it may be a symlink, so its target's bytes are
        // stored under that name.
        files.insert(
            key.clone(),
            ImageFile {
                path: key,
                contents: read(&lib)?,
                mode: 0o755,
            },
        );
    }
    Ok(())
}

/// What to put beside the engine binary.
#[derive(Clone, Debug, Default)]
pub struct EngineImageConfig {
    /// Full image reference the stack names (`sync.image`).
    pub reference: String,
    /// `git` to bundle (found on PATH when `None`).
    pub git: Option<PathBuf>,
}

/// The engine image from the binary at `binary` (normally `std::env::current_exe()`): the binary
/// as `/usr/local/bin/homelab`, git with its HTTP helpers, their libraries, the CA bundle.
pub fn engine_image(binary: &Path, cfg: &EngineImageConfig) -> Result<ImageSpec, ImageError> {
    let bytes = read(binary)?;
    let (arch, _) = elf_info(&bytes).ok_or_else(|| ImageError::NotLinux {
        path: binary.to_path_buf(),
    })?;
    let mut files = BTreeMap::new();
    add_program(&mut files, binary, Some("/usr/local/bin/homelab"))?;
    let git = match &cfg.git {
        Some(g) => g.clone(),
        None => which::which("git").map_err(|e| ImageError::Read {
            path: PathBuf::from("git"),
            message: e.to_string(),
        })?,
    };
    let git = std::fs::canonicalize(&git).unwrap_or(git);
    add_program(&mut files, &git, Some("/usr/bin/git"))?;
    // git runs `git-remote-http(s)` from its exec path for HTTP(S) remotes.
    let exec_path = Cmd::new(&git, "find git's helper programs")
        .arg("--exec-path")
        .run()
        .map(|o| PathBuf::from(o.stdout.trim()))?;
    for helper in ["git-remote-http", "git-remote-https"] {
        let p = exec_path.join(helper);
        if p.exists() {
            let at = format!("{}/{helper}", exec_path.display());
            add_program(&mut files, &p, Some(&at))?;
        }
    }
    for ca in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(contents) = std::fs::read(ca) {
            files.insert(
                "/etc/ssl/certs/ca-certificates.crt".into(),
                ImageFile {
                    path: "/etc/ssl/certs/ca-certificates.crt".into(),
                    contents,
                    mode: 0o644,
                },
            );
            break;
        }
    }
    // Checkouts go to /tmp (an emptyDir in the Deployment); git wants a HOME.
    files.insert(
        "/tmp/.keep".into(),
        ImageFile {
            path: "/tmp/.keep".into(),
            contents: Vec::new(),
            mode: 0o644,
        },
    );
    Ok(ImageSpec {
        reference: cfg.reference.clone(),
        architecture: arch.to_string(),
        entrypoint: vec!["/usr/local/bin/homelab".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "HOME=/tmp".into(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
        ],
        user: "65532".into(),
        files: files.into_values().collect(),
    })
}

/// What provisioning calls: the engine image built from the running binary, written to `path`
/// as an OCI archive. Returns the image's architecture (`amd64`/`arm64`: compare it with the
/// VM's before importing) and the digests.
pub fn write_engine_archive(
    path: &Path,
    reference: &str,
) -> Result<(String, ArchiveInfo), ImageError> {
    let exe = std::env::current_exe().map_err(|e| ImageError::Read {
        path: PathBuf::from("/proc/self/exe"),
        message: e.to_string(),
    })?;
    let spec = engine_image(
        &exe,
        &EngineImageConfig {
            reference: reference.to_string(),
            git: None,
        },
    )?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| ImageError::Write(format!("`{}`: {e}", path.display())))?,
    );
    let info = write_archive(&spec, &mut file)?;
    file.flush().map_err(|e| ImageError::Write(e.to_string()))?;
    Ok((spec.architecture, info))
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

/// What this build of homelab is, as the build recorded it (`build.rs`): the engine image its
/// release publishes and whether this build is that release.
///
/// The release workflow (`.github/workflows/release-image.yml`) pushes
/// `ghcr.io/<repository owner, lowercased>/homelab:<version>` for a tag `v<version>`; a build
/// knows its repository from `HOMELAB_IMAGE_REPOSITORY` (a full image name) or GitHub Actions'
/// `GITHUB_REPOSITORY_OWNER` / `GITHUB_REPOSITORY` at build time, else [`DEFAULT_OWNER`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BuildInfo {
    /// This build's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The image repository its release publishes to (`ghcr.io/homelab-dev/homelab`).
    pub repository: String,
    /// Built from the release tag `v<version>` with no local changes (or a source archive of
    /// one), so the release workflow published an engine image of exactly this code.
    pub released: bool,
    /// What the build was made from, for messages (`v0.1.0`, `v0.1.0-4-g1a2b3c4-dirty`).
    pub describe: String,
}

/// The owner images are published under when the build does not say (the project's home).
pub const DEFAULT_OWNER: &str = "homelab-dev";

/// The image repository of a build: `explicit` (`HOMELAB_IMAGE_REPOSITORY`) when set, else
/// `ghcr.io/<owner>/homelab` with the owner from `GITHUB_REPOSITORY_OWNER`, else from
/// `GITHUB_REPOSITORY` (`owner/name`), else [`DEFAULT_OWNER`] — lowercased, as the release
/// workflow lowercases it (image names must be lowercase).
pub fn image_repository(explicit: &str, owner: &str, repository: &str) -> String {
    if !explicit.trim().is_empty() {
        return explicit.trim().to_lowercase();
    }
    let owner = [
        owner.trim(),
        repository.split('/').next().unwrap_or("").trim(),
    ]
    .into_iter()
    .find(|o| !o.is_empty())
    .unwrap_or(DEFAULT_OWNER);
    format!("ghcr.io/{}/homelab", owner.to_lowercase())
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            repository: image_repository(
                env!("HOMELAB_BUILD_IMAGE_REPOSITORY"),
                env!("HOMELAB_BUILD_GITHUB_REPOSITORY_OWNER"),
                env!("HOMELAB_BUILD_GITHUB_REPOSITORY"),
            ),
            released: env!("HOMELAB_BUILD_RELEASED") == "true",
            describe: env!("HOMELAB_BUILD_DESCRIBE").to_string(),
        }
    }

    /// The engine image the release of this version publishes.
    pub fn published_image(&self) -> String {
        format!("{}:{}", self.repository, self.version)
    }
}

/// The host `homelab` runs on, as far as side-loading cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// `std::env::consts::OS`: `linux`, `macos`, `windows`.
    pub os: String,
    /// `std::env::consts::ARCH`: `x86_64`, `aarch64`.
    pub arch: String,
}

impl Host {
    /// This host. Tests stand in for another one with `HOMELAB_TEST_PLATFORM=<os>/<arch>` (the seam
    /// that decides whether this host can side-load, exercised from the CLI).
    pub fn current() -> Host {
        if let Ok(v) = std::env::var("HOMELAB_TEST_PLATFORM")
            && let Some((os, arch)) = v.split_once('/')
        {
            return Host {
                os: os.to_string(),
                arch: arch.to_string(),
            };
        }
        Host {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// OCI architecture of a `uname -m` answer (or of `std::env::consts::ARCH`).
pub fn oci_arch(uname_m: &str) -> Option<&'static str> {
    match uname_m.trim() {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        _ => None,
    }
}

/// `Ok` when `up` can side-load the engine image (built from this binary) into the lab's
/// nodes; else why not. The archive holds this very binary, so it needs a Linux host of an
/// architecture the VMs share (Multipass VMs run the host's architecture), and VMs to import it
/// into (only the multipass provider has them).
pub fn can_side_load(provider: crate::settings::ProviderKind, host: &Host) -> Result<(), String> {
    if provider != crate::settings::ProviderKind::Multipass {
        return Err(format!(
            "a `--provider {provider}` cluster has no VMs of homelab's to import it into"
        ));
    }
    if host.os != "linux" {
        return Err(format!(
            "this binary is built for {}, and the image must hold a Linux build of homelab",
            host.os
        ));
    }
    if oci_arch(&host.arch).is_none() {
        return Err(format!(
            "{} is not an architecture the lab's images exist for (amd64, arm64)",
            host.arch
        ));
    }
    Ok(())
}

/// Where the lab's sync engine image comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum EngineImageSource {
    /// Built from this binary and side-loaded into the VMs by `up`'s `engine-image` step.
    SideLoad,
    /// Pulled from a registry: `sync.image`, a stack's own pin, or this release's image.
    Pull {
        /// The image.
        image: String,
        /// Why this one (`sync.image`, `the stack's pin`, `this release`).
        because: String,
    },
    /// No image can exist for this build on this host: `up` refuses to start.
    Unavailable {
        /// The image this build would need (`ghcr.io/<owner>/homelab:<version>`).
        image: String,
        /// Why it cannot be side-loaded.
        why_not_side_load: String,
        /// What the build was made from.
        build: String,
    },
}

/// Decide where the engine image comes from. `pinned` is the stack's `engine` image after
/// settings (so `sync.image` when set); `configured` tells whether `sync.image` set it.
pub fn engine_image_source(
    pinned: &str,
    configured: bool,
    provider: crate::settings::ProviderKind,
    host: &Host,
    build: &BuildInfo,
) -> EngineImageSource {
    if configured {
        return EngineImageSource::Pull {
            image: pinned.to_string(),
            because: "`sync.image`".into(),
        };
    }
    let why_not = match can_side_load(provider, host) {
        Ok(()) => return EngineImageSource::SideLoad,
        Err(why) => why,
    };
    if pinned != build.published_image() {
        // A stack that pins an engine image of its own says where it comes from.
        return EngineImageSource::Pull {
            image: pinned.to_string(),
            because: "the stack's pin".into(),
        };
    }
    if build.released {
        return EngineImageSource::Pull {
            image: pinned.to_string(),
            because: format!("the image of release v{}", build.version),
        };
    }
    EngineImageSource::Unavailable {
        image: pinned.to_string(),
        why_not_side_load: why_not,
        build: build.describe.clone(),
    }
}

/// No engine image can exist for this build: said before `up` builds anything.
#[derive(Debug, thiserror::Error)]
#[error(
    "no sync engine image exists for this build of homelab ({build}): `{image}` is published only by a release, and it cannot be side-loaded here: {why_not_side_load}"
)]
pub struct NoEngineImage {
    /// The image this build would use.
    pub image: String,
    /// Why side-loading is not possible.
    pub why_not_side_load: String,
    /// What the build was made from.
    pub build: String,
}

impl Diagnostic for NoEngineImage {
    fn hints(&self) -> Vec<String> {
        vec![
            "run `homelab up` from a Linux host with a Multipass lab: it builds the engine image from this binary and side-loads it into the VMs".into(),
            "or set `sync.image` (`HOMELAB_SYNC_IMAGE`, or `sync: {image: …}` in `homelab.yaml`) to an engine image you pushed, e.g. `docker build -t <registry>/homelab:dev . && docker push <registry>/homelab:dev`".into(),
            "or use a released build of homelab, whose engine image the release workflow publishes".into(),
        ]
    }
}

impl EngineImageSource {
    /// `Err` when no image can exist (see [`NoEngineImage`]).
    pub fn check(&self) -> Result<(), NoEngineImage> {
        match self {
            EngineImageSource::Unavailable {
                image,
                why_not_side_load,
                build,
            } => Err(NoEngineImage {
                image: image.clone(),
                why_not_side_load: why_not_side_load.clone(),
                build: build.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            EngineImageSource::SideLoad => {
                "built from this binary and side-loaded into the VMs".into()
            }
            EngineImageSource::Pull { image, because } => format!("pulls `{image}` ({because})"),
            EngineImageSource::Unavailable { image, .. } => format!(
                "none: `{image}` is not published for this build and cannot be side-loaded here"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProviderKind;

    /// Read a tar back: (name, typeflag, mode, data).
    fn untar(bytes: &[u8]) -> Vec<(String, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut o = 0;
        while o + 512 <= bytes.len() {
            let h = &bytes[o..o + 512];
            if h.iter().all(|b| *b == 0) {
                break;
            }
            let sum: u32 = h[..148]
                .iter()
                .chain([b' '; 8].iter())
                .chain(h[156..].iter())
                .map(|b| u32::from(*b))
                .sum();
            let field = |a: usize, l: usize| {
                std::str::from_utf8(&h[a..a + l])
                    .unwrap()
                    .trim_matches(|c: char| c == '\0' || c == ' ')
                    .to_string()
            };
            assert_eq!(
                u32::from_str_radix(&field(148, 8), 8).unwrap(),
                sum,
                "checksum"
            );
            let name = field(0, 100);
            let prefix = field(345, 155);
            let name = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let size = usize::from_str_radix(&field(124, 12), 8).unwrap();
            let mode = u32::from_str_radix(&field(100, 8), 8).unwrap();
            let data = bytes[o + 512..o + 512 + size].to_vec();
            out.push((name, h[156], mode, data));
            o += 512 + size.div_ceil(512) * 512;
        }
        out
    }

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: "ghcr.io/homelab-dev/homelab:0.1.0".into(),
            architecture: "amd64".into(),
            entrypoint: vec!["/usr/local/bin/homelab".into()],
            env: vec!["HOME=/tmp".into()],
            user: "65532".into(),
            files: vec![
                ImageFile {
                    path: "/usr/local/bin/homelab".into(),
                    contents: b"\x7fELF-not-really".to_vec(),
                    mode: 0o755,
                },
                ImageFile {
                    path: "/etc/ssl/certs/ca-certificates.crt".into(),
                    contents: b"PEM".to_vec(),
                    mode: 0o644,
                },
                ImageFile {
                    path: format!("/usr/lib/{}/libvery-long-name.so", "x".repeat(120)),
                    contents: vec![7; 1000],
                    mode: 0o755,
                },
            ],
        }
    }

    #[test]
    fn the_archive_is_a_valid_oci_layout() {
        let mut out = Vec::new();
        let info = write_archive(&spec(), &mut out).unwrap();
        let entries = untar(&out);
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("no {n}"))
                .3
                .clone()
        };
        let layout: serde_json::Value = serde_json::from_slice(&get("oci-layout")).unwrap();
        assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
        let index: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], info.manifest_digest.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "0.1.0"
        );
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "ghcr.io/homelab-dev/homelab:0.1.0"
        );
        assert_eq!(
            m["platform"],
            json!({"architecture": "amd64", "os": "linux"})
        );
        // Every descriptor points at a blob with that digest and size.
        let blob = |d: &str| get(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")));
        let manifest_bytes = blob(&info.manifest_digest);
        assert_eq!(digest(&manifest_bytes), info.manifest_digest);
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(
            digest(&config_bytes),
            manifest["config"]["digest"].as_str().unwrap()
        );
        assert_eq!(manifest["config"]["size"], config_bytes.len());
        let layer_desc = &manifest["layers"][0];
        assert_eq!(
            layer_desc["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        let layer = blob(layer_desc["digest"].as_str().unwrap());
        assert_eq!(layer_desc["size"], layer.len());
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], digest(&layer).as_str());
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/homelab");
        assert_eq!(config["config"]["User"], "65532");
        // The layer: parent directories first, files with their modes, long names intact.
        let files = untar(&layer);
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert!(
            names.iter().position(|n| *n == "usr/").unwrap()
                < names
                    .iter()
                    .position(|n| *n == "usr/local/bin/homelab")
                    .unwrap()
        );
        let bin = files
            .iter()
            .find(|f| f.0 == "usr/local/bin/homelab")
            .unwrap();
        assert_eq!(
            (bin.1, bin.2, bin.3.as_slice()),
            (b'0', 0o755, &b"\x7fELF-not-really"[..])
        );
        let long = files
            .iter()
            .find(|f| f.0.ends_with("libvery-long-name.so"))
            .unwrap();
        assert_eq!(
            long.0,
            format!("usr/lib/{}/libvery-long-name.so", "x".repeat(120))
        );
        assert_eq!(long.3.len(), 1000);
    }

    #[test]
    fn the_archive_is_deterministic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let ia = write_archive(&spec(), &mut a).unwrap();
        let ib = write_archive(&spec(), &mut b).unwrap();
        assert_eq!(ia, ib);
        assert_eq!(a, b);
    }

    #[test]
    fn system_tar_reads_it() {
        let mut out = Vec::new();
        write_archive(&spec(), &mut out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("image.tar");
        std::fs::write(&p, &out).unwrap();
        let listed = Cmd::new("tar", "list the archive")
            .arg("-tf")
            .arg(&p)
            .run()
            .unwrap();
        assert!(
            listed.stdout.contains("index.json") && listed.stdout.contains("oci-layout"),
            "{}",
            listed.stdout
        );
    }

    fn build(released: bool) -> BuildInfo {
        BuildInfo {
            version: "1.2.3".into(),
            repository: image_repository("", "Acme-Labs", "Acme-Labs/homelab"),
            released,
            describe: if released {
                "v1.2.3".into()
            } else {
                "v1.2.3-4-gabc1234-dirty".into()
            },
        }
    }

    fn host(os: &str, arch: &str) -> Host {
        Host {
            os: os.into(),
            arch: arch.into(),
        }
    }

    /// Issue 12: a build names the image its release publishes — under the repository owner,
    /// lowercased, tagged with the version — as `.github/workflows/release-image.yml` pushes it.
    #[test]
    fn a_release_build_names_the_image_its_release_publishes() {
        assert_eq!(
            build(true).published_image(),
            "ghcr.io/acme-labs/homelab:1.2.3"
        );
        assert_eq!(
            image_repository("", "", "Someone/fork"),
            "ghcr.io/someone/homelab"
        );
        assert_eq!(
            image_repository("Registry.Example/Team/Homelab", "acme", ""),
            "registry.example/team/homelab"
        );
        assert_eq!(image_repository("", "", ""), "ghcr.io/homelab-dev/homelab");
        // The workflow this mirrors.
        let workflow = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release-image.yml"),
        )
        .unwrap();
        assert!(workflow.contains("IMAGE: ghcr.io/${{ github.repository_owner }}/homelab"));
        assert!(
            workflow.contains(r#"echo "IMAGE=${IMAGE,,}""#),
            "lowercased"
        );
        assert!(workflow.contains("type=semver,pattern={{version}}"));
        assert!(workflow.contains(r#"tags: ["v*"]"#));
        // A released build on a host that cannot side-load pulls it.
        let image = build(true).published_image();
        assert_eq!(
            engine_image_source(
                &image,
                false,
                ProviderKind::Multipass,
                &host("macos", "aarch64"),
                &build(true)
            ),
            EngineImageSource::Pull {
                image: image.clone(),
                because: "the image of release v1.2.3".into()
            }
        );
        assert!(
            engine_image_source(
                &image,
                false,
                ProviderKind::Existing,
                &host("linux", "x86_64"),
                &build(true)
            )
            .check()
            .is_ok()
        );
    }

    /// Issue 12: an unreleased build where nothing can be side-loaded has no image: refused,
    /// with what to do.
    #[test]
    fn an_unreleased_build_that_cannot_side_load_is_refused_with_hints() {
        let image = build(false).published_image();
        for (provider, h, why) in [
            (
                ProviderKind::Multipass,
                host("macos", "aarch64"),
                "built for macos",
            ),
            (
                ProviderKind::Multipass,
                host("windows", "x86_64"),
                "built for windows",
            ),
            (ProviderKind::Multipass, host("linux", "riscv64"), "riscv64"),
            (
                ProviderKind::Existing,
                host("linux", "x86_64"),
                "no VMs of homelab's",
            ),
        ] {
            let source = engine_image_source(&image, false, provider, &h, &build(false));
            let err = source.check().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains("v1.2.3-4-gabc1234-dirty"), "{text}");
            assert!(text.contains(&format!("`{image}`")), "{text}");
            let hints = err.hints().join("\n");
            assert!(
                hints.contains("Linux host")
                    && hints.contains("`sync.image`")
                    && hints.contains("released build"),
                "{hints}"
            );
        }
        // Side-loading, `sync.image` or a stack's own pin: nothing to refuse.
        let linux = host("linux", "aarch64");
        assert_eq!(
            engine_image_source(
                &image,
                false,
                ProviderKind::Multipass,
                &linux,
                &build(false)
            ),
            EngineImageSource::SideLoad
        );
        let mac = host("macos", "aarch64");
        assert!(matches!(
            engine_image_source("r.example/h:dev", true, ProviderKind::Multipass, &mac, &build(false)),
            EngineImageSource::Pull { because, .. } if because == "`sync.image`"
        ));
        assert!(matches!(
            engine_image_source("r.example/h:9", false, ProviderKind::Multipass, &mac, &build(false)),
            EngineImageSource::Pull { because, .. } if because == "the stack's pin"
        ));
    }

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn the_engine_image_bundles_the_binary_git_and_their_loader() {
        let exe = std::env::current_exe().unwrap();
        let spec = engine_image(
            &exe,
            &EngineImageConfig {
                reference: "homelab:dev".into(),
                git: None,
            },
        )
        .unwrap();
        let paths: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"/usr/local/bin/homelab"));
        assert!(paths.contains(&"/usr/bin/git"));
        assert!(
            paths.iter().any(|p| p.ends_with("/git-remote-https")),
            "{paths:?}"
        );
        let (arch, dynamic) = elf_info(&std::fs::read(&exe).unwrap()).unwrap();
        assert_eq!(spec.architecture, arch);
        if dynamic {
            assert!(
                paths
                    .iter()
                    .any(|p| p.contains("ld-linux") || p.contains("ld-musl")),
                "{paths:?}"
            );
        }
        assert_eq!(
            ctr_import_argv("/tmp/engine.tar"),
            vec![
                "microk8s",
                "ctr",
                "image",
                "import",
                "--digests",
                "/tmp/engine.tar"
            ]
        );
    }
}

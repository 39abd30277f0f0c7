//! Where the lab's sync engine image comes from: this build's published image, a stack's pin,
//! `sync.image`, or side-loading an image built from this binary (what `plan` shows and `up` checks
//! before it builds anything).
//!
//! Architecture invariant: pure decisions over values ([`BuildInfo`], [`Host`], the provider); the
//! only reads are of this build's recorded facts and the host's OS and architecture.

use crate::edges::error::Diagnostic;

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
pub fn can_side_load(
    provider: crate::model::settings::ProviderKind,
    host: &Host,
) -> Result<(), String> {
    if provider != crate::model::settings::ProviderKind::Multipass {
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
    provider: crate::model::settings::ProviderKind,
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

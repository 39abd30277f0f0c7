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
//!
//! Layout: where the lab's engine image comes from (this build, the host, the stack's pin) is
//! decided, purely, in [`crate::model::engine_image`] and re-exported here; `oci` encodes an image as an OCI archive, purely (bytes in, bytes
//! out); `build` is the effectful part, reading the binary, git and their libraries from the
//! host and writing the archive to a file.

mod build;
mod oci;

pub use crate::model::engine_image::{
    BuildInfo, DEFAULT_OWNER, EngineImageSource, Host, NoEngineImage, can_side_load,
    engine_image_source, image_repository, oci_arch,
};
pub use build::{
    EngineImageConfig, elf_info, engine_image, parse_ldd, shared_libraries, write_engine_archive,
};
pub use oci::{ArchiveInfo, ImageFile, ImageSpec, ctr_import_argv, digest, write_archive};

use crate::edges::error::Diagnostic;
use std::path::PathBuf;

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
    Ldd(#[from] crate::edges::process::ProcessError),
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

#[cfg(test)]
mod tests;

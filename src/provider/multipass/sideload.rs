//! `engine-image`: side-load the sync engine's image into every lab VM, built in Rust from the
//! running `homelab` binary, so a fresh lab needs no registry for the engine.
//!
//! Place in the data flow: after the VMs are provisioned and joined → [`crate::sync::image`]
//! builds an OCI archive → `multipass transfer` → `microk8s ctr image import` on each node → the
//! `render` step points the `gitops-engine` Deployment at the side-loaded reference.
//!
//! Architecture invariant: the image's tag is a digest of its content, so a re-run that finds the
//! tag on every node transfers and imports nothing. Side-loading needs a Linux host whose
//! architecture matches the VMs' (the archive holds this very binary; the decision is
//! [`crate::sync::image::can_side_load`], the one `plan` shows); elsewhere, or when `sync.image`
//! is set, the step says so and the stack's engine image is pulled instead — one that exists,
//! since `up` refuses to start when none can (`sync::image::engine_image_source`).

use sha2::{Digest, Sha256};

use std::collections::BTreeSet;
use std::path::Path;

use super::cli::Multipass;
use super::ops::Vms;
use crate::edges::error::{Error, Result};
use crate::model::stack::Stack;
use crate::provider::op::{OpCx, StepReport};
use crate::sync::image::{self, EngineImageConfig};

/// Registry part of side-loaded references: not a real registry, so a node that lacks the image
/// fails to pull it loudly instead of fetching something else.
pub const SIDELOAD_REPOSITORY: &str = "homelab.local/homelab";
/// Where an archive is put inside a VM while it is imported.
const ARCHIVE_IN_VM: &str = "/tmp/homelab-images.tar";

/// The engine image reference the `render` step must use instead of the stack's pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineImage(pub String);

pub use crate::sync::image::oci_arch;

/// `homelab.local/homelab:<version>-<12 hex of the content digest>`.
pub fn reference_for(spec: &image::ImageSpec) -> String {
    let mut h = Sha256::new();
    h.update(spec.architecture.as_bytes());
    for f in &spec.files {
        h.update(f.path.as_bytes());
        h.update(f.mode.to_be_bytes());
        h.update((f.contents.len() as u64).to_be_bytes());
        h.update(&f.contents);
    }
    let digest = hex::encode(h.finalize());
    format!(
        "{SIDELOAD_REPOSITORY}:{}-{}",
        env!("CARGO_PKG_VERSION"),
        &digest[..12]
    )
}

/// Build and import the engine image where it is missing; the reference `render` must use
/// instead of the stack's pin, when the VMs have it.
pub async fn engine_image(
    cx: &dyn OpCx,
    stack: &Stack,
    vms: &Vms,
) -> Result<(StepReport, Option<EngineImage>)> {
    let wants_engine = stack
        .component("gitops-engine")
        .is_some_and(|c| c.images.contains_key("engine"));
    if !wants_engine {
        return Ok((
            StepReport::skipped("the stack runs no homelab sync engine"),
            None,
        ));
    }
    if let Some(image) = &cx.settings().sync_image {
        return Ok((
            StepReport::skipped(format!("`sync.image` is set: the VMs pull `{image}`")),
            None,
        ));
    }
    // The same decision `plan` made: where this host cannot side-load, `up` has already
    // refused unless the stack's image is one a registry serves.
    let host = image::Host::current();
    if let Err(why) = image::can_side_load(cx.settings().provider, &host) {
        return Ok((
            StepReport::skipped(format!(
                "not side-loaded ({why}); the VMs pull the stack's engine image"
            )),
            None,
        ));
    }
    let mp = &vms.multipass;
    let first = &vms.nodes[0].name;
    let uname = mp
        .exec_ok(
            first,
            &["uname", "-m"],
            format!("ask `{first}` for its architecture"),
        )
        .await?;
    // The archive holds this very binary: it only runs on VMs of the host's architecture.
    let host_arch = oci_arch(&host.arch);
    if host_arch.is_none() || oci_arch(&uname.stdout) != host_arch {
        return Ok((
            StepReport::skipped(format!(
                "this binary is {} but the VMs are {}; the VMs pull the stack's pinned engine image",
                host.arch,
                uname.stdout.trim()
            )),
            None,
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::msg(format!("find the running homelab binary: {e}")))?;
    let mut spec = tokio::task::spawn_blocking(move || {
        image::engine_image(&exe, &EngineImageConfig::default())
    })
    .await
    .expect("image thread panicked")?;
    let reference = reference_for(&spec);
    spec.reference = reference.clone();

    let mut missing = Vec::new();
    for node in &vms.nodes {
        if !images_on(mp, &node.name).await?.contains(&reference) {
            missing.push(node.name.clone());
        }
    }
    if missing.is_empty() {
        return Ok((
            StepReport::skipped(format!("`{reference}` on every node")),
            Some(EngineImage(reference)),
        ));
    }

    cx.update(&format!("building `{reference}`"));
    // In the cache, not the lab state: it is derived from this binary and removed afterwards.
    let dir = crate::edges::state::cache_root()?.join("engine");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::msg(format!("create `{}`: {e}", dir.display())))?;
    let archive = dir.join(format!("{}.tar", &reference[reference.len() - 12..]));
    let written = archive.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&written)
                .map_err(|e| Error::msg(format!("write `{}`: {e}", written.display())))?,
        );
        image::write_archive(&spec, &mut file)?;
        std::io::Write::flush(&mut file)
            .map_err(|e| Error::msg(format!("write `{}`: {e}", written.display())))?;
        Ok(())
    })
    .await
    .expect("image thread panicked")?;
    for name in &missing {
        cx.update(&format!("importing into `{name}`"));
        import_archive(mp, name, &archive, "the engine image").await?;
    }
    let _ = std::fs::remove_file(&archive);
    Ok((
        StepReport::done(format!("`{reference}` imported on {}", missing.join(", "))),
        Some(EngineImage(reference)),
    ))
}

/// The image names `node`'s containerd holds in microk8s's namespace (`k8s.io`, which the
/// `microk8s ctr` wrapper passes), one per line of `ctr image ls -q`.
pub async fn images_on(mp: &Multipass, node: &str) -> Result<BTreeSet<String>> {
    let listed = mp
        .exec_ok(
            node,
            &["sudo", "microk8s", "ctr", "image", "ls", "-q"],
            format!("list the images on `{node}`"),
        )
        .await?;
    Ok(listed
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Copy the OCI archive `archive` into `node` and import it into microk8s's containerd (`what`
/// names it in errors); the copy in the VM is removed whatever happened. The one side-load path,
/// for the engine image and the cached images alike.
///
/// `microk8s ctr image import`, not microk8s's sideload folder: containerd's sideload plugin as
/// microk8s patches it in (canonical/microk8s
/// `build-scripts/components/containerd/patches/default/0001-microk8s-sideload-images-plugin.patch`)
/// imports `*.tar` from `$SNAP_COMMON/etc/sideload` on its own 5-second poll and only logs a
/// failure, so `up` could neither wait for it nor report a broken archive; `ctr` imports before
/// it exits and fails with containerd's error.
pub async fn import_archive(mp: &Multipass, node: &str, archive: &Path, what: &str) -> Result<()> {
    mp.transfer(archive, node, ARCHIVE_IN_VM).await?;
    let mut import = vec!["sudo".to_string()];
    import.extend(image::ctr_import_argv(ARCHIVE_IN_VM));
    let argv: Vec<&str> = import.iter().map(String::as_str).collect();
    let imported = mp
        .exec_ok(node, &argv, format!("import {what} on `{node}`"))
        .await;
    // The copy is only needed while importing; remove it whatever happened.
    mp.exec(
        node,
        &["rm", "-f", ARCHIVE_IN_VM],
        format!("remove the archive from `{node}`"),
    )
    .await?;
    imported?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures() {
        assert_eq!(oci_arch("x86_64\n"), Some("amd64"));
        assert_eq!(oci_arch("aarch64"), Some("arm64"));
        assert_eq!(oci_arch("riscv64"), None);
    }

    #[test]
    fn reference_follows_content() {
        let spec = |contents: &[u8]| image::ImageSpec {
            reference: String::new(),
            architecture: "amd64".into(),
            entrypoint: vec![],
            env: vec![],
            user: "65532".into(),
            files: vec![image::ImageFile {
                path: "/usr/local/bin/homelab".into(),
                contents: contents.to_vec(),
                mode: 0o755,
            }],
        };
        let a = reference_for(&spec(b"one"));
        assert_eq!(a, reference_for(&spec(b"one")));
        assert_ne!(a, reference_for(&spec(b"two")));
        assert!(a.starts_with("homelab.local/homelab:0.1.0-"), "{a}");
    }
}

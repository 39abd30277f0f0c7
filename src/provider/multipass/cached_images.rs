//! `images`: side-load every image the lab runs that `homelab prepare` put in the image cache
//! into every lab VM that lacks it, so the cluster pulls nothing from the internet.
//!
//! Place in the data flow: `render` (which images the lab runs) and the joined VMs → per node,
//! `ctr image ls -q` ([`super::sideload::images_on`]) → one OCI archive of what that node lacks,
//! written from the cache's layout ([`Layout::export_archive`], every blob's digest checked) → `multipass transfer` and
//! `microk8s ctr image import` ([`super::sideload::import_archive`], the engine image's path) →
//! `deploy`, whose workloads find their images on the node (`imagePullPolicy: IfNotPresent`).
//!
//! Architecture invariant: look first. A node that holds every cached image gets nothing, so a
//! re-run transfers no byte; nodes lacking the same set share one archive. Images the cache does
//! not hold are named, and the cluster pulls them as it always did.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::ops::Vms;
use super::sideload::{images_on, import_archive};
use crate::cluster::image_cache::{Layout, normalize_reference};
use crate::edges::error::{Error, Result};
use crate::edges::output::human_duration;
use crate::edges::state;
use crate::provider::op::{OpCx, StepReport};

/// What the `images` step did: per node, the references it imported there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideLoaded {
    /// Node name → references imported in this run.
    pub imported: BTreeMap<String, Vec<String>>,
    /// References the cache does not hold (the cluster pulls them).
    pub not_cached: Vec<String>,
}

/// The images of `wanted` that are pulled from a registry outside the lab (not the engine image
/// homelab builds, not what the lab's own registry serves), as containerd names them.
pub fn pulled_from_outside(wanted: &[String], lab_registry: &str) -> Vec<String> {
    let set: BTreeSet<String> = wanted
        .iter()
        .filter(|r| r.as_str() != "@self")
        .filter(|r| !r.starts_with(super::sideload::SIDELOAD_REPOSITORY))
        .filter(|r| !r.starts_with(&format!("{lab_registry}/")))
        .map(|r| normalize_reference(r))
        .collect();
    set.into_iter().collect()
}

/// The image cache as this step reads it: whether it holds a reference, and an OCI archive of
/// some of its images that `ctr image import` accepts.
pub trait ImageCache: Send + Sync {
    /// It holds `reference` (fully qualified) for the VMs' architecture.
    fn holds(&self, reference: &str) -> bool;
    /// Write an OCI-layout tar of `refs` to `out`.
    fn export(&self, refs: &[String], out: &mut dyn std::io::Write) -> Result<()>;
}

impl ImageCache for Layout {
    fn holds(&self, reference: &str) -> bool {
        self.entry(reference).ok().flatten().is_some()
    }

    fn export(&self, refs: &[String], out: &mut dyn std::io::Write) -> Result<()> {
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        Ok(self.export_archive(&refs, out)?)
    }
}

/// The cache `homelab prepare` filled (`<cache>/images`), when there is one.
fn open_cache() -> Result<Option<std::sync::Arc<dyn ImageCache>>> {
    let root = crate::cluster::image_cache::layout::images_dir(&state::cache_root()?);
    if !root.join("index.json").is_file() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(Layout::open(&root)?)))
}

/// Before the wait for Ready nodes: side-load those of `wanted` (microk8s's own images,
/// [`crate::cluster::upstream::microk8s_images`]) the cache holds into every node that lacks
/// them, and nothing else, quietly when the cache holds none. An offline node without its
/// sandbox (pause) and CNI (Calico) images never becomes Ready — kubelet reports "cni plugin not
/// initialized" until calico-node runs (canonical/microk8s v1.36: the containerd template's
/// `sandbox_image`, the CNI manifest `90-calico-apply` applies) — and `images` comes after
/// `ready`. `None` when nothing was to do.
pub async fn side_load_held(
    cx: &dyn OpCx,
    vms: &Vms,
    wanted: &[String],
) -> Result<Option<StepReport>> {
    let Some(layout) = open_cache()? else {
        return Ok(None);
    };
    let held: Vec<String> = wanted
        .iter()
        .map(|r| normalize_reference(r))
        .filter(|r| layout.holds(r))
        .collect();
    if held.is_empty() {
        return Ok(None);
    }
    Ok(Some(side_load(cx, vms, &held).await?.0))
}

/// Side-load the cached images of `wanted` (fully-qualified references) into every node of
/// `vms` that lacks them.
pub async fn side_load(
    cx: &dyn OpCx,
    vms: &Vms,
    wanted: &[String],
) -> Result<(StepReport, SideLoaded)> {
    let layout = open_cache()?;
    let (cached, not_cached): (Vec<String>, Vec<String>) = wanted
        .iter()
        .cloned()
        .partition(|r| layout.as_ref().is_some_and(|l| l.holds(r)));
    let mut out = SideLoaded {
        not_cached: not_cached.clone(),
        ..SideLoaded::default()
    };
    // Named one by one only when some are cached: a lab never prepared says it in its step line.
    if !not_cached.is_empty() && !cached.is_empty() {
        cx.note(&format!(
            "{} of the lab's {} images are not in the image cache; the cluster pulls them: {} \
             (`homelab prepare` caches them)",
            not_cached.len(),
            wanted.len(),
            not_cached.join(", ")
        ));
    }
    let Some(layout) = layout.filter(|_| !cached.is_empty()) else {
        return Ok((
            StepReport::skipped(format!(
                "no cached images to side-load; the cluster pulls all {} (`homelab prepare` caches them)",
                wanted.len()
            )),
            out,
        ));
    };

    // Look first: what each node lacks. Nodes lacking the same set share one archive.
    let mut lacking: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for node in &vms.nodes {
        cx.update(&format!("looking at the images on `{}`", node.name));
        let held = images_on(&vms.multipass, &node.name).await?;
        let missing: Vec<String> = cached
            .iter()
            .filter(|r| !held.contains(*r))
            .cloned()
            .collect();
        if !missing.is_empty() {
            lacking.entry(missing).or_default().push(node.name.clone());
        }
    }
    if lacking.is_empty() {
        return Ok((
            StepReport::skipped(format!(
                "{} cached images on every node{}",
                cached.len(),
                pulled_note(&not_cached)
            )),
            out,
        ));
    }

    let dir = state::cache_root()?.join("sideload");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::msg(format!("create `{}`: {e}", dir.display())))?;
    let mut lines = Vec::new();
    for (i, (refs, nodes)) in lacking.iter().enumerate() {
        cx.update(&format!("writing an archive of {} images", refs.len()));
        let archive = dir.join(format!("images-{}-{i}.tar", std::process::id()));
        let (written, layout_refs) = (archive.clone(), refs.clone());
        let layout = layout.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
            let file = std::fs::File::create(&written)
                .map_err(|e| Error::msg(format!("write `{}`: {e}", written.display())))?;
            let mut out = std::io::BufWriter::new(file);
            layout.export(&layout_refs, &mut out)?;
            std::io::Write::flush(&mut out)
                .map_err(|e| Error::msg(format!("write `{}`: {e}", written.display())))?;
            Ok(std::fs::metadata(&written).map(|m| m.len()).unwrap_or(0))
        })
        .await
        .expect("archive thread panicked");
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&archive);
                return Err(e);
            }
        };
        for node in nodes {
            cx.update(&format!(
                "importing {} images ({}) into `{node}`",
                refs.len(),
                human_bytes(bytes)
            ));
            let started = Instant::now();
            let result = import_archive(&vms.multipass, node, &archive, "the cached images").await;
            if let Err(e) = result {
                let _ = std::fs::remove_file(&archive);
                return Err(e);
            }
            tracing::info!(
                node = node.as_str(),
                images = refs.len(),
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "side-loaded cached images"
            );
            lines.push(format!(
                "{} images ({}) into `{node}` in {}",
                refs.len(),
                human_bytes(bytes),
                human_duration(started.elapsed())
            ));
            out.imported.insert(node.clone(), refs.clone());
        }
        let _ = std::fs::remove_file(&archive);
    }
    Ok((
        StepReport::done(format!(
            "side-loaded {}{}",
            lines.join(", "),
            pulled_note(&not_cached)
        )),
        out,
    ))
}

fn pulled_note(not_cached: &[String]) -> String {
    if not_cached.is_empty() {
        String::new()
    } else {
        format!("; {} not cached, pulled by the cluster", not_cached.len())
    }
}

/// `1.4 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn only_images_from_outside_the_lab_are_side_loaded() {
        let wanted = [
            "@self".to_string(),
            "homelab.local/homelab:0.1.0-abc".to_string(),
            "gitea.10.0.0.2.sslip.io/lab/nyan-cat:bootstrap".to_string(),
            "gitea/gitea:1.26.1-rootless".to_string(),
            "quay.io/jetstack/cert-manager-controller:v1.21.1".to_string(),
        ];
        assert_eq!(
            pulled_from_outside(&wanted, "gitea.10.0.0.2.sslip.io"),
            [
                "docker.io/gitea/gitea:1.26.1-rootless",
                "quay.io/jetstack/cert-manager-controller:v1.21.1"
            ]
        );
    }
}

//! `homelab prepare`: download every upstream manifest and every container image `up` will need
//! into the cache, record their digests in the lab's lock, and (with `--serve`) serve that cache
//! to a workshop room.
//!
//! The `upstream.mirror` setting (`--from URL`, e.g. the instructor's `prepare --serve`)
//! replaces the internet: manifests come from `<mirror>/<host>/<path>`, images from
//! `<mirror>/images/`; the lock still names the release URLs and tags, and every digest is
//! checked here.

use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cluster::image_cache::layout::{Layout, images_dir, normalize_reference};
use crate::cluster::image_cache::pull::{self, PullConfig, Source, Transfer};
use crate::cluster::snaps::human_bytes;
use crate::cluster::upstream;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::state::{self, LabState};
use crate::host::mirror;
use crate::model::engine_image::{Host, oci_arch};

pub(super) async fn run(
    ctx: &Ctx,
    serve: Option<&str>,
    manifests_only: bool,
) -> Result<ExitStatus> {
    let stack = ctx.stack()?;
    let lab = LabState::locate(&ctx.settings.lab)?;
    let cache = state::cache_root()?;
    let mirror_url = ctx
        .settings
        .upstream_mirror
        .clone()
        .filter(|m| !m.is_empty());
    let host = Host::current();
    let arch = oci_arch(&host.arch).ok_or_else(|| {
        Error::msg(format!(
            "no image of the lab exists for this computer's architecture `{}`",
            host.arch
        ))
        .hint("the lab's VMs run this computer's architecture; images exist for amd64 and arm64")
    })?;
    let started = std::time::Instant::now();
    let (prepared, pulled, lock, snaps) = {
        // It records pins in the lab's `lock.json`, which `up` reads and writes too.
        let _lock = super::lock_lab(ctx, &lab, "prepare")?;
        let mut lock = upstream::read_lock(&lab)?;
        let before = lock.clone();
        let prepared = upstream::prepare(&stack, &mut lock, &cache, mirror_url.as_deref()).await?;
        let channel = ctx.settings.channel(&stack);
        if let Err(track) = upstream::microk8s_images(&stack, &channel) {
            ctx.printer.warn(&format!(
                "the images microk8s {channel} starts by itself (its sandbox, CNI and addons) are not known to this homelab (it knows track(s) {}); the cluster pulls them for track {track}",
                upstream::microk8s_image_tracks().join(", ")
            ));
        }
        let images: Vec<String> = upstream::images(&stack, &channel, &prepared)
            .into_iter()
            // `@self` is this build's engine image: `up` side-loads one made from the binary.
            .filter(|i| !i.starts_with('@'))
            .collect();
        if manifests_only {
            if lock != before {
                lab.write_json(upstream::LOCK_FILE, &lock)?;
            }
            print_manifests_only(ctx, &prepared, &images);
            return Ok(ExitStatus::Success);
        }
        let snaps = match prepare_snaps(ctx, &stack, &mut lock, mirror_url.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                // Pins of the snaps taken before a failure are kept.
                if lock != before {
                    lab.write_json(upstream::LOCK_FILE, &lock)?;
                }
                return Err(e);
            }
        };
        let layout = Layout::create(images_dir(&cache))?;
        let bars = Bars::new(ctx);
        let result = pull::pull_all(
            &layout,
            &images,
            &mut lock.images,
            &PullConfig {
                arch,
                mirror: mirror_url.as_deref(),
                transfer: &bars,
            },
        )
        .await;
        bars.clear();
        // Pins of the images pulled before a failure are kept.
        if lock != before {
            lab.write_json(upstream::LOCK_FILE, &lock)?;
        }
        (prepared, result?, lock, snaps)
    };
    let elapsed = started.elapsed();
    let from_mirror: u64 = pulled
        .iter()
        .filter(|p| p.source == Source::Mirror)
        .map(|p| p.bytes_downloaded)
        .sum();
    let from_registry: u64 = pulled
        .iter()
        .filter(|p| p.source == Source::Registry)
        .map(|p| p.bytes_downloaded)
        .sum();
    let manifests_downloaded = prepared.iter().filter(|p| !p.cached).count();
    let (manifests_mirror, manifests_internet) = if mirror_url.is_some() {
        (manifests_downloaded, 0)
    } else {
        (0, manifests_downloaded)
    };
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&json!({
            "upstream": prepared,
            "images": pulled,
            "bytes": {"mirror": from_mirror, "registry": from_registry},
            "manifests_downloaded": {"mirror": manifests_mirror, "internet": manifests_internet},
            "elapsed_ms": elapsed.as_millis(),
            "snaps": snaps,
        })),
        OutputFormat::Text => {
            let mut out = snaps_text(&snaps);
            out.push_str(&manifests_text(&prepared));
            out.push_str(&format!("images ({}):\n", pulled.len()));
            for p in &pulled {
                let how = if p.bytes_downloaded == 0 {
                    "cached".to_string()
                } else {
                    format!(
                        "{} from the {}",
                        human_bytes(p.bytes_downloaded),
                        match p.source {
                            Source::Mirror => "mirror",
                            Source::Registry => "registry",
                        }
                    )
                };
                out.push_str(&format!("  {} {} ({how})\n", p.reference, p.digest));
            }
            out.push_str(&format!(
                "downloaded {} from the mirror and {} from registries (images), {} manifest(s) from the mirror and {} from the internet, in {}\n",
                human_bytes(from_mirror),
                human_bytes(from_registry),
                manifests_mirror,
                manifests_internet,
                crate::edges::output::human_duration(elapsed),
            ));
            ctx.printer.data(&out);
        }
    }
    match serve {
        Some(addr) => serve_mirror(ctx, addr, cache, lock).await,
        None => Ok(ExitStatus::Success),
    }
}

/// `prepare --manifests-only`: the manifests and the image list, nothing pulled.
fn print_manifests_only(ctx: &Ctx, prepared: &[upstream::Prepared], images: &[String]) {
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx
            .printer
            .json(&json!({"upstream": prepared, "images": images})),
        OutputFormat::Text => {
            let mut out = manifests_text(prepared);
            out.push_str(&format!("images ({}):\n", images.len()));
            for i in images {
                out.push_str(&format!("  {i}\n"));
            }
            ctx.printer.data(&out);
        }
    }
}

/// A line per upstream manifest: component, URL, digest, and whether it was downloaded.
fn manifests_text(prepared: &[upstream::Prepared]) -> String {
    let mut out = String::new();
    for p in prepared {
        out.push_str(&format!(
            "{:<16} {} sha256:{} ({})\n",
            p.component,
            p.url,
            p.sha256,
            if p.cached { "cached" } else { "downloaded" }
        ));
    }
    out
}

async fn serve_mirror(
    ctx: &Ctx,
    addr: &str,
    cache: std::path::PathBuf,
    lock: upstream::Lock,
) -> Result<ExitStatus> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::msg(format!("serve the cache on `{addr}`: {e}"))
            .hint("another program may use the port; pick another with `--serve 0.0.0.0:PORT`")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::msg(format!("serve the cache on `{addr}`: {e}")))?;
    let snaps = mirror::snap_files(&cache);
    let images = Layout::open(images_dir(&cache))
        .and_then(|l| l.entries())
        .map(|e| e.len())
        .unwrap_or(0);
    let shown = if bound.ip().is_unspecified() {
        format!("http://<this-computer's-address>:{}", bound.port())
    } else {
        format!("http://{bound}")
    };
    let mut out = format!(
        "serving the cache read-only on http://{bound}: {images} image(s) under /images/, {} upstream manifest(s), {} snap file(s) under /snaps/\n",
        lock.upstream.len(),
        snaps.len()
    );
    out.push_str(&format!(
        "attendees run: homelab prepare --stack {} --from {shown}\n(Ctrl-C stops the mirror)\n",
        ctx.settings.stack
    ));
    ctx.printer.data(&out);
    let files = mirror::MirrorFiles { cache, lock };
    mirror::serve(listener, files, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(ExitStatus::Success)
}

/// Download progress: a bar with bytes and rate per blob on a terminal, a plain line per blob
/// otherwise, nothing in JSON or quiet mode.
struct Bars {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
}

impl Bars {
    fn new(ctx: &Ctx) -> Bars {
        let ui = ctx.printer.ui();
        let bar = ui.progress.then(|| {
            let pb = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:<40!} {bar:24} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}",
                )
                .expect("valid template"),
            );
            pb
        });
        Bars {
            bar,
            lines: !ui.progress && ui.verbosity >= 0 && ui.format == OutputFormat::Text,
        }
    }

    fn clear(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

impl Transfer for Bars {
    fn start(&self, reference: &str, digest: &str, size: Option<u64>) {
        let short = &digest[digest.len().saturating_sub(12)..];
        let name = normalize_reference(reference);
        if let Some(pb) = &self.bar {
            // Up to `pull::PULL_CONCURRENCY` blobs arrive at once: one bar for all of them,
            // its total growing as each starts, named after the latest.
            pb.inc_length(size.unwrap_or(0));
            pb.set_prefix(format!("{name} {short}"));
        } else if self.lines {
            eprintln!(
                "fetch {name} {short} ({})",
                size.map_or("size unknown".into(), human_bytes)
            );
        }
    }

    fn advance(&self, n: u64) {
        if let Some(pb) = &self.bar {
            pb.inc(n);
        }
    }

    fn done(&self) {}

    fn note(&self, message: &str) {
        match &self.bar {
            Some(pb) => pb.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
}
/// The microk8s snap of the stack's channel and its base, for the VMs' architecture, into the
/// cache (`cluster::snaps`), pinned in the lab's lock. `None` where the VMs' architecture has
/// no snaps homelab knows.
async fn prepare_snaps(
    ctx: &Ctx,
    stack: &crate::model::stack::Stack,
    lock: &mut upstream::Lock,
    mirror: Option<&str>,
) -> Result<Option<SnapsPrepared>> {
    use crate::cluster::snaps;
    let Some(arch) = snaps::vm_architecture() else {
        ctx.printer.warn(
            "this host's architecture has no microk8s snaps homelab knows; the VMs will install microk8s from the Snap Store",
        );
        return Ok(None);
    };
    let channel = ctx.settings.channel(stack);
    let source = snaps::Source::choose(mirror);
    let started = std::time::Instant::now();
    let progress = |line: &str| ctx.printer.info(line);
    let list = snaps::prepare(
        &channel,
        arch,
        &mut lock.snaps,
        &state::cache_root()?,
        &source,
        &progress,
    )
    .await?;
    let from = |s: &str| -> u64 {
        list.iter()
            .filter(|p| p.source == s)
            .map(|p| p.downloaded)
            .sum()
    };
    Ok(Some(SnapsPrepared {
        from_store: from("store"),
        from_mirror: from("mirror"),
        seconds: started.elapsed().as_secs_f64(),
        snaps: list,
    }))
}

/// What `prepare` did for the snaps.
#[derive(serde::Serialize)]
struct SnapsPrepared {
    snaps: Vec<crate::cluster::snaps::PreparedSnap>,
    /// Bytes downloaded from the Snap Store.
    from_store: u64,
    /// Bytes downloaded from the mirror.
    from_mirror: u64,
    /// Time taken.
    seconds: f64,
}

fn snaps_text(snaps: &Option<SnapsPrepared>) -> String {
    let Some(s) = snaps else {
        return String::new();
    };
    let mut out = String::new();
    for p in &s.snaps {
        out.push_str(&format!(
            "{:<16} {} {} ({}) revision {} sha3-384:{} ({})\n",
            "snap",
            p.name,
            p.channel,
            p.architecture,
            p.revision,
            p.sha3_384,
            if p.source == "cache" {
                "cached".to_string()
            } else {
                format!("{} from the {}", human_bytes(p.downloaded), p.source)
            }
        ));
    }
    out.push_str(&format!(
        "snaps: {} from the Snap Store, {} from the mirror\n",
        human_bytes(s.from_store),
        human_bytes(s.from_mirror)
    ));
    out
}

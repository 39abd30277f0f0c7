//! Workshop mode (issue 14): after `homelab prepare` filled the image cache, `up` side-loads
//! every image the lab runs into the VMs and nothing connects outside the lab.
//!
//! "Outside" is watched at both ends: the `homelab` process runs with `HTTP(S)_PROXY` pointing
//! at a recording proxy that refuses everything, `NO_PROXY` naming only the lab (its node and
//! domain, the fakes on loopback), so any fetch from the internet is recorded; and the lab
//! simulation has the network from the cluster to public registries cut
//! ([`lab_sim::World::registries_cut`]), so a node that pulls an image fails with
//! `ErrImagePull` and the pull is recorded ([`lab_sim::World::outside`]). The cache is filled
//! directly as an OCI image layout with small test images, one per reference the lab runs
//! (what `prepare` lists); the registry path of `prepare` is tested where it is built.

use crate::support::common::image_cache;
use crate::support::lab_sim::{self, LAB, Provider, Sim};

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A proxy that records the first line of every request (`CONNECT host:443 …`, `GET http://…`)
/// and refuses it.
fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let _ = conn.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, seen)
}

/// The images the lab pulls from public registries, as containerd names them.
fn outside_images(prepare_json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(prepare_json).unwrap();
    let set: BTreeSet<String> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|i| *i != "@self")
        .map(lab_sim::kubelet::docker_reference)
        .collect();
    set.into_iter().collect()
}

/// Every lab VM's images, as the fake multipass recorded `ctr image import`.
fn node_images(sim: &Sim) -> Vec<(String, BTreeSet<String>)> {
    sim.multipass_state()["instances"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, i)| {
            let images = i["_images"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            (name.clone(), images)
        })
        .collect()
}

/// A lab simulation after `homelab prepare` filled the image cache with every image the lab
/// runs, with the internet gone: registries cut for the lab, the `homelab`
/// process behind the refusing proxy. Returns the sim, the images the lab runs, and what the
/// proxy saw.
async fn offline_lab(seed: u8) -> (Sim, Vec<String>, Arc<Mutex<Vec<String>>>) {
    offline_lab_without(seed, &[]).await
}

/// [`offline_lab`], with the images whose references contain one of `leave_out` missing from
/// the cache.
async fn offline_lab_without(
    seed: u8,
    leave_out: &[&str],
) -> (Sim, Vec<String>, Arc<Mutex<Vec<String>>>) {
    let mut sim = Sim::start(Provider::Multipass, seed).await;
    let prepared = sim
        .homelab(&["prepare", "--manifests-only", "--output", "json"])
        .await;
    assert_eq!(prepared.code, Some(0), "prepare: {}", prepared.stderr);
    let wanted = outside_images(&prepared.stdout);
    assert!(wanted.len() >= 8, "the lab runs public images: {wanted:?}");
    let cached: Vec<String> = wanted
        .iter()
        .filter(|w| !leave_out.iter().any(|l| w.contains(l)))
        .cloned()
        .collect();
    image_cache::fill(&sim.ctx.cache_dir().join("images"), &cached);

    // From here on the internet is gone: for the simulated cluster and for the fake VMs.
    sim.world
        .registries_cut
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let state = sim.mp_dir.join("state.json");
    let mut vms: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    vms["knobs"]["registries_cut"] = serde_json::Value::Bool(true);
    std::fs::write(&state, vms.to_string()).unwrap();
    let (proxy, through_proxy) = recording_proxy();
    let node_ip = sim.domain.trim_end_matches(".sslip.io").to_string();
    for k in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
    ] {
        sim.ctx.env.insert(k.into(), proxy.clone());
    }
    let lab_only = format!("127.0.0.1,localhost,{node_ip},.{}", sim.domain);
    sim.ctx.env.insert("NO_PROXY".into(), lab_only.clone());
    sim.ctx.env.insert("no_proxy".into(), lab_only);
    // The pipeline's shell steps (git in the clone and deploy steps) too: lab names direct,
    // anything else through the recording proxy.
    let lab_names = format!("127.0.0.1,localhost,.{}", sim.domain);
    *sim.world.step_proxy.lock().unwrap() = Some((proxy.clone(), lab_names));
    (sim, wanted, through_proxy)
}

/// Every connection outside the lab: through the proxy (the homelab process's, a pipeline
/// step's) and the simulated lab's own (a node's pull, kaniko's base image).
fn outside(sim: &Sim, through_proxy: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    let mut all: Vec<String> = through_proxy
        .lock()
        .unwrap()
        .iter()
        .map(|l| format!("through the proxy: {l}"))
        .collect();
    all.extend(sim.world.outside.lock().unwrap().iter().cloned());
    all
}

/// The NyanCat base image (the `FROM` of the app's Dockerfile) among the lab's images.
const BASE: &str = "nginxinc/nginx-unprivileged";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_after_prepare_proves_the_loop_offline_and_connects_nowhere_outside_the_lab() {
    let (mut sim, wanted, through_proxy) = offline_lab(7).await;

    let up = sim.homelab(&["up"]).await;
    assert_eq!(
        up.code,
        Some(0),
        "up offline failed\nstdout:\n{}\nstderr:\n{}\n{}",
        up.stdout,
        up.stderr,
        sim.diagnostics()
    );
    let line = |out: &str, step: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(step))
            .unwrap_or_default()
            .to_string()
    };
    let images_line = line(&up.stdout, "images");
    assert!(
        images_line.contains("side-loaded") && images_line.contains(&format!("homelab-{LAB}-1")),
        "the images step imported into the node: {images_line}\n{}",
        up.stdout
    );
    assert!(
        line(&up.stdout, "verify").contains("loop proven"),
        "the loop is proven with the internet gone:\n{}",
        up.stdout
    );

    // Each node holds every image the lab runs.
    for (node, held) in node_images(&sim) {
        let missing: Vec<&String> = wanted.iter().filter(|w| !held.contains(*w)).collect();
        assert!(missing.is_empty(), "`{node}` lacks {missing:?}");
    }
    // The base image kaniko starts from is in Gitea's registry, the very manifest the cache holds.
    let base = wanted
        .iter()
        .find(|w| w.contains(BASE))
        .expect("the base image");
    let cached = homelab::cluster::image_cache::Layout::open(sim.ctx.cache_dir().join("images"))
        .unwrap()
        .entry(base)
        .unwrap()
        .unwrap();
    let tag = base.rsplit_once(':').unwrap().1;
    let in_gitea = sim
        .world
        .gitea()
        .manifest(&format!("lab/{BASE}"), tag)
        .expect("homelab pushed the base image into Gitea's registry");
    assert_eq!(in_gitea.digest, cached.digest);

    // Nothing went outside: not the homelab process, not a node's pull, not kaniko's base.
    assert_eq!(
        outside(&sim, &through_proxy),
        Vec::<String>::new(),
        "a connection outside the lab"
    );

    // A second run finds every image on every node and in the registry, and transfers nothing.
    sim.clear_argv();
    let again = sim.homelab(&["up", "--no-verify"]).await;
    assert_eq!(again.code, Some(0), "second up: {}", again.stderr);
    assert!(
        line(&again.stdout, "images").contains("on every node"),
        "{}",
        again.stdout
    );
    let transfers: Vec<Vec<String>> = sim
        .argv()
        .into_iter()
        .filter(|a| a.first().map(String::as_str) == Some("transfer"))
        .collect();
    assert_eq!(transfers, Vec::<Vec<String>>::new());
    assert_eq!(outside(&sim, &through_proxy), Vec::<String>::new());

    // The proxy is really in the way: a fetch the lab does not answer goes through it.
    let _ = std::fs::remove_dir_all(sim.ctx.cache_dir().join("upstream"));
    std::fs::remove_file(sim.ctx.state_dir(LAB).join("lock.json")).ok();
    sim.ctx.env.insert(
        "HOMELAB_UPSTREAM_MIRROR".into(),
        "http://mirror.homelab-offline-test.invalid".into(),
    );
    let online = sim.homelab(&["prepare"]).await;
    assert_ne!(
        online.code,
        Some(0),
        "prepare cannot reach a refused mirror"
    );
    let seen = outside(&sim, &through_proxy);
    assert!(
        seen.iter()
            .any(|l| l.contains("mirror.homelab-offline-test.invalid")),
        "the proxy saw the fetch: {seen:?}\n{}",
        online.stderr
    );
}

/// The watch on the lab's side is real: with the base image missing from Gitea's registry,
/// kaniko falls back to Docker Hub, the cut network refuses it, the loop fails, and the
/// attempt is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_whose_base_is_not_in_the_lab_registry_reaches_outside_and_is_caught() {
    let (sim, wanted, through_proxy) = offline_lab(8).await;
    let up = sim.homelab(&["up", "--no-verify"]).await;
    assert_eq!(up.code, Some(0), "up: {}\n{}", up.stderr, sim.diagnostics());
    assert_eq!(outside(&sim, &through_proxy), Vec::<String>::new());

    // Someone deletes the base image from Gitea's registry.
    let base = wanted.iter().find(|w| w.contains(BASE)).unwrap().clone();
    sim.world
        .gitea()
        .data()
        .manifests
        .retain(|(image, _), _| image != &format!("lab/{BASE}"));
    let verify = sim.homelab(&["verify"]).await;
    assert_ne!(
        verify.code,
        Some(0),
        "the build cannot get its base with the internet gone:\n{}",
        verify.stdout
    );
    assert_eq!(
        outside(&sim, &through_proxy),
        vec![format!("kaniko base {base}")],
        "kaniko fell back to the base's own registry, outside the lab"
    );
}

/// The VMs' own images matter offline too: a cache without Calico's leaves the node NotReady
/// (the fake VM's kubelet cannot pull it with the registries cut), and `up` stops at `ready`
/// saying so, before anything is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_without_the_cni_image_the_node_never_gets_ready() {
    let (sim, _, _) = offline_lab_without(11, &["calico/node"]).await;
    let up = sim.homelab(&["up", "--no-verify"]).await;
    assert_eq!(up.code, Some(1), "{}\n{}", up.stdout, up.stderr);
    assert!(
        up.stderr.contains("cni plugin not initialized"),
        "the node's own reason is shown:\n{}",
        up.stderr
    );
    assert!(
        !up.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("deploy") && l.starts_with("  ✓")),
        "nothing deployed:\n{}",
        up.stdout
    );
}

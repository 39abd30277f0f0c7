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

use crate::support::lab_sim::{self, LAB, Provider, Sim};

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The image cache at `root`, filled through the cache's own layout API with one tiny image per
/// reference (one layer with a file naming it), as `homelab prepare` leaves it.
fn fill_cache(root: &std::path::Path, references: &[String]) {
    use homelab::cluster::image_cache::layout::Platform;
    use homelab::cluster::image_cache::{Entry, Layout};
    let layout = Layout::create(root).unwrap();
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        layout.write_blob(&d, bytes).unwrap();
        d
    };
    for r in references {
        let mut layer = tar::Builder::new(Vec::new());
        let body = format!("test image {r}\n");
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        layer
            .append_data(&mut h, "etc/homelab-test-image", body.as_bytes())
            .unwrap();
        // For measuring (README, "Side-loaded images"): a filler file of that many MiB.
        let mib: usize = std::env::var("HOMELAB_SIDELOAD_LAYER_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if mib > 0 {
            let mut x = Sha256::digest(r.as_bytes())[0] as u64 | 1;
            let filler: Vec<u8> = (0..mib << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut h = tar::Header::new_ustar();
            h.set_size(filler.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            layer
                .append_data(&mut h, "var/homelab-test-filler", filler.as_slice())
                .unwrap();
        }
        let layer = layer.into_inner().unwrap();
        let layer_digest = put(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .unwrap();
        let config_digest = put(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let manifest_digest = put(&manifest);
        layout
            .set_entry(Entry {
                reference: r.clone(),
                digest: manifest_digest,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: manifest.len() as u64,
                platform: Some(Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                }),
            })
            .unwrap();
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_after_prepare_side_loads_every_image_and_connects_nowhere_outside_the_lab() {
    let mut sim = Sim::start(Provider::Multipass, 7).await;
    let prepared = sim
        .homelab(&["prepare", "--manifests-only", "--output", "json"])
        .await;
    assert_eq!(prepared.code, Some(0), "prepare: {}", prepared.stderr);
    let wanted = outside_images(&prepared.stdout);
    assert!(wanted.len() >= 8, "the lab runs public images: {wanted:?}");
    fill_cache(&sim.ctx.cache_dir().join("images"), &wanted);

    // From here on the internet is gone.
    sim.world
        .registries_cut
        .store(true, std::sync::atomic::Ordering::SeqCst);
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

    let up = sim.homelab(&["up", "--no-verify"]).await;
    assert_eq!(
        up.code,
        Some(0),
        "up offline failed\nstdout:\n{}\nstderr:\n{}\n{}",
        up.stdout,
        up.stderr,
        sim.diagnostics()
    );
    let images_line = up
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("images"))
        .unwrap_or_default();
    eprintln!("{images_line}");
    assert!(
        images_line.contains("side-loaded") && images_line.contains(&format!("homelab-{LAB}-1")),
        "the images step imported into the node: {images_line}\n{}",
        up.stdout
    );

    // Each node holds every image the lab runs.
    for (node, held) in node_images(&sim) {
        let missing: Vec<&String> = wanted.iter().filter(|w| !held.contains(*w)).collect();
        assert!(missing.is_empty(), "`{node}` lacks {missing:?}");
    }
    // Nothing went outside: not the homelab process, not a node's image pull.
    assert_eq!(
        through_proxy.lock().unwrap().clone(),
        Vec::<String>::new(),
        "homelab connected outside the lab"
    );
    let pulls: Vec<String> = sim
        .world
        .outside
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.starts_with("pull "))
        .cloned()
        .collect();
    assert_eq!(
        pulls,
        Vec::<String>::new(),
        "a node pulled from the internet"
    );

    // A second run finds every image on every node and transfers nothing.
    sim.clear_argv();
    let again = sim.homelab(&["up", "--no-verify"]).await;
    assert_eq!(again.code, Some(0), "second up: {}", again.stderr);
    let line = again
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("images"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("on every node"), "{line}");
    let transfers: Vec<Vec<String>> = sim
        .argv()
        .into_iter()
        .filter(|a| a.first().map(String::as_str) == Some("transfer"))
        .collect();
    assert_eq!(transfers, Vec::<Vec<String>>::new());

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
    let seen = through_proxy.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("mirror.homelab-offline-test.invalid")),
        "the proxy saw the fetch: {seen:?}\n{}",
        online.stderr
    );
}

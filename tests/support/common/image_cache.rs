//! An image cache as `homelab prepare` leaves it, filled directly through the cache's own
//! layout API with one tiny image per reference (the registry path of `prepare` is tested where
//! it is built).

use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The image cache at `root`, filled through the cache's own layout API with one tiny image per
/// reference (one layer with a file naming it), as `homelab prepare` leaves it.
pub fn fill(root: &std::path::Path, references: &[String]) {
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

//! `homelab prepare` pulling images from a REAL registry: Debian's `docker-registry` (the CNCF
//! Distribution registry) started on loopback per test, test images pushed into it with
//! Debian's `skopeo` from OCI layouts the test builds. The mirror (`prepare --serve` /
//! `--from`) and `doctor --offline` run against the same registry.
//!
//! Both programs must be installed (`scripts/test` installs them); without them these tests
//! fail rather than skip.

use crate::support::common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::TestContext;

use crate::support::fake_snapstore::FakeSnapStore;

/// `prepare` also takes microk8s and its base snap (`cluster::snaps`): a lab whose Snap Store is
/// the fake one, so these image tests never reach the internet.
fn lab_with_store(store: &FakeSnapStore) -> TestContext {
    let mut ctx = TestContext::new();
    ctx.env
        .insert("HOMELAB_SNAP_STORE_URL".into(), store.url.clone());
    ctx
}
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A `docker-registry` process on a free loopback port, stopped on drop.
struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: `apt-get install docker-registry` (scripts/test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let host = common::free_loopback_addr().to_string();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        // Its access log (one combined-log-format line a request, whatever the level) on
        // stdout or stderr: `requests` reads it.
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            host,
            _dir: dir,
        };
        let client = http();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("http://{}/v2/", reg.host)).send().await
                && r.status().is_success()
            {
                return reg;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not answer on {}", reg.host);
    }

    /// Every request the registry answered so far, as `METHOD /path`, in order.
    fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap();
        log.lines()
            .filter_map(|l| {
                let quoted = l.split('"').nth(1)?;
                let mut w = quoted.split(' ');
                let (method, path) = (w.next()?, w.next()?);
                w.next()?
                    .starts_with("HTTP/")
                    .then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// Push the OCI layout `dir` (tag `tag`) as `<host>/<repo>:<tag>`, every manifest of an
    /// index included.
    fn push(&self, dir: &Path, tag: &str, repo: &str) {
        assert!(
            Path::new("/usr/bin/skopeo").exists(),
            "skopeo is missing: `apt-get install skopeo` (scripts/test does)"
        );
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", dir.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-file layer as an uncompressed tar.
fn layer(content: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", content.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

struct Built;

/// An OCI layout in a new directory: one image manifest per `(arch, content)`; with more than
/// one, the tag names an image index over them.
fn build_layout(tag: &str, images: &[(&str, &str)]) -> (tempfile::TempDir, Built) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let mut descs = Vec::new();
    for (arch, content) in images {
        let l = layer(content);
        let l_d = put(&l);
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [l_d]},
        }))
        .unwrap();
        let c_d = put(&config);
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c_d, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l_d, "size": l.len()}],
        }))
        .unwrap();
        let m_d = put(&m);
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_d, "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let top = if descs.len() == 1 {
        let mut d = descs.remove(0);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        d
    } else {
        let idx = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descs,
        }))
        .unwrap();
        let i_d = put(&idx);
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": i_d, "size": idx.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
    };
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    (dir, Built)
}

/// The VMs' architecture as the tests' host has it.
fn arch() -> &'static str {
    homelab::model::engine_image::oci_arch(std::env::consts::ARCH).unwrap()
}

fn other_arch() -> &'static str {
    if arch() == "amd64" { "arm64" } else { "amd64" }
}

/// The digest of the image manifest for this host's architecture that the registry serves for
/// `repo:tag`, computed here from the bytes it sends (skopeo compresses layers on push, so the
/// pushed manifests are not the built ones).
async fn served_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let body = http()
        .get(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    match v["manifests"].as_array() {
        Some(list) => list
            .iter()
            .find(|m| m["platform"]["architecture"] == arch())
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        None => digest(&body),
    }
}

/// A registry with `lab/one:1.0` (single manifest) and `lab/multi:2.0` (an index over both
/// architectures); returns it with the manifest digests for this host's architecture.
async fn seeded() -> (Registry, String, String) {
    let reg = Registry::start().await;
    let (one, _) = build_layout("1.0", &[(arch(), "one v1")]);
    reg.push(one.path(), "1.0", "lab/one");
    let (multi, _) = build_layout(
        "2.0",
        &[(other_arch(), "multi other"), (arch(), "multi ours")],
    );
    reg.push(multi.path(), "2.0", "lab/multi");
    let one = served_digest(&reg, "lab/one", "1.0").await;
    let multi = served_digest(&reg, "lab/multi", "2.0").await;
    (reg, one, multi)
}

/// A stack naming the registry's two images.
fn write_stack(ctx: &TestContext, host: &str) -> String {
    ctx.write(
        "lab-stack.yaml",
        &format!(
            "name: workshop\ndescription: images on a loopback registry\ncluster:\n  kubernetes: \"1.36\"\n  channel: 1.36/stable\n  image: \"24.04\"\n  system_images: pull\ncomponents:\n  - name: dns\n    description: CoreDNS (microk8s addon)\n    source: {{addon: dns}}\n    images:\n      one: {host}/lab/one:1.0\n      multi: {host}/lab/multi:2.0\n"
        ),
    );
    "lab-stack.yaml".into()
}

/// The seeded registry and a lab on it: its stack names the registry's two images, its snaps
/// come from a fake store (returned, so that it lives as long as the test).
async fn seeded_lab() -> (Registry, String, String, FakeSnapStore, TestContext) {
    let (reg, one, multi) = seeded().await;
    let store = FakeSnapStore::start().await;
    let ctx = lab_with_store(&store);
    write_stack(&ctx, &reg.host);
    (reg, one, multi, store, ctx)
}

fn prepare_json(ctx: &TestContext, extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec!["prepare", "--stack", "lab-stack.yaml", "--output", "json"];
    args.extend_from_slice(extra);
    let r = ctx.homelab(&args);
    let v = serde_json::from_str(r.stdout.trim()).unwrap_or(Value::Null);
    (r.code, v, r.stderr)
}

fn lock(ctx: &TestContext) -> Value {
    serde_json::from_slice(&std::fs::read(ctx.state_dir("homelab").join("lock.json")).unwrap())
        .unwrap()
}

fn blob(ctx: &TestContext, d: &str) -> PathBuf {
    ctx.cache_dir().join("images/blobs/sha256").join(&d[7..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_pulls_verifies_pins_and_a_second_run_downloads_nothing() {
    let (reg, one, multi, _store, ctx) = seeded_lab().await;

    let (code, v, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{v}");
    let by_ref = |r: &str| images.iter().find(|i| i["reference"] == r).unwrap().clone();
    let r_one = format!("{}/lab/one:1.0", reg.host);
    let r_multi = format!("{}/lab/multi:2.0", reg.host);
    assert_eq!(by_ref(&r_one)["digest"], one.as_str());
    // From the index, the manifest for this host's architecture.
    assert_eq!(by_ref(&r_multi)["digest"], multi.as_str());
    assert_eq!(by_ref(&r_one)["source"], "registry");
    assert!(by_ref(&r_one)["bytes_downloaded"].as_u64().unwrap() > 0);
    assert!(v["bytes"]["registry"].as_u64().unwrap() > 0);
    assert_eq!(v["bytes"]["mirror"], 0);

    // The lock pins both; the cache is a layout naming them.
    let l = lock(&ctx);
    assert_eq!(l["images"][&r_one]["digest"], one.as_str());
    assert_eq!(l["images"][&r_multi]["digest"], multi.as_str());
    assert!(l["images"][&r_multi]["index"].as_str().is_some());
    let layout =
        homelab::cluster::image_cache::Layout::open(ctx.cache_dir().join("images")).unwrap();
    let entries = layout.entries().unwrap();
    assert_eq!(entries.len(), 2);
    for e in &entries {
        for d in layout.image_blobs(e).unwrap() {
            assert_eq!(
                layout.verify_blob(&d).unwrap(),
                homelab::cluster::image_cache::layout::BlobState::Valid
            );
        }
    }
    // Nothing of the other architecture was fetched.
    let files = std::fs::read_dir(ctx.cache_dir().join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(files, 6, "2 images × (manifest, config, layer)");

    // A second run downloads nothing.
    let (code, v, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    for i in v["images"].as_array().unwrap() {
        assert_eq!(i["bytes_downloaded"], 0, "{i}");
    }
    assert_eq!(v["bytes"]["registry"], 0);

    // Text output says where the bytes came from.
    let text = ctx.homelab(&["prepare", "--stack", "lab-stack.yaml"]);
    text.success();
    assert!(
        text.stdout
            .contains("downloaded 0 B from the mirror and 0 B from registries"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("  {r_one} {one} (cached)")),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_moved_is_refused_and_the_lock_kept() {
    let (reg, one, _, _store, ctx) = seeded_lab().await;
    let (code, _, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let before = lock(&ctx);

    // Someone re-pushes the tag with other content.
    let (changed, _) = build_layout("1.0", &[(arch(), "one v2")]);
    reg.push(changed.path(), "1.0", "lab/one");
    let new_digest = served_digest(&reg, "lab/one", "1.0").await;
    assert_ne!(new_digest, one);

    let r = ctx.homelab(&["prepare", "--stack", "lab-stack.yaml"]);
    r.failure(1);
    assert_eq!(
        r.stderr,
        format!(
            "error: image {host}/lab/one:1.0 changed: the lab's lock pins {one}, the registry now serves {new_digest}\nhint: a pinned tag must never move; if the new image is intended, remove its entry under `images` in the lab's `lock.json` and run `homelab prepare`\n",
            host = reg.host
        )
    );
    assert_eq!(lock(&ctx), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_in_the_cache_is_refused_and_fetched_again() {
    let (reg, one, _, _store, ctx) = seeded_lab().await;
    let (code, _, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");

    let layout =
        homelab::cluster::image_cache::Layout::open(ctx.cache_dir().join("images")).unwrap();
    let e = layout
        .entry(&format!("{}/lab/one:1.0", reg.host))
        .unwrap()
        .unwrap();
    assert_eq!(e.digest, one);
    let layer_digest = layout.image_blobs(&e).unwrap()[2].clone();
    let good = std::fs::read(blob(&ctx, &layer_digest)).unwrap();
    std::fs::write(blob(&ctx, &layer_digest), b"bit rot").unwrap();

    let (code, v, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: cached blob {layer_digest} of ")),
        "{stderr}"
    );
    let img = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == one.as_str())
        .unwrap();
    assert_eq!(img["corrupt_refetched"], json!([layer_digest]));
    assert_eq!(img["bytes_downloaded"].as_u64().unwrap(), good.len() as u64);
    assert_eq!(std::fs::read(blob(&ctx, &layer_digest)).unwrap(), good);
}

/// `prepare --serve` on a free loopback port; returns the process and its base URL.
fn start_mirror(ctx: &TestContext) -> (Child, String) {
    let mut child = ctx
        .command()
        .args([
            "prepare",
            "--stack",
            "lab-stack.yaml",
            "--serve",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("prepare --serve printed its address")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving the cache read-only on ") {
            break rest.split(':').take(3).collect::<Vec<_>>().join(":");
        }
    };
    // Keep reading so the mirror never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mirror_serves_two_attendees_and_a_tampered_file_is_refused() {
    // The instructor prepares (from the registry) and serves, with an upstream manifest cached
    // from an earlier prepare.
    let (reg, one, multi, store, instructor) = seeded_lab().await;
    let manifest_url = "https://example.org/rel/v1/install.yaml";
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let sha = homelab::edges::digest::sha256_hex(manifest.as_bytes());
    std::fs::create_dir_all(instructor.cache_dir().join("upstream")).unwrap();
    std::fs::write(
        instructor.cache_dir().join(format!("upstream/{sha}.yaml")),
        manifest,
    )
    .unwrap();
    std::fs::create_dir_all(instructor.state_dir("homelab")).unwrap();
    std::fs::write(
        instructor.state_dir("homelab").join("lock.json"),
        serde_json::to_vec(&json!({"upstream": {manifest_url: {"sha256": sha}}})).unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(instructor.cache_dir().join("snaps")).unwrap();
    std::fs::write(instructor.cache_dir().join("snaps/core24_1.snap"), b"snap").unwrap();
    let (child, url) = start_mirror(&instructor);
    let _mirror = Kill(child);
    // The registry goes away: attendees reach only the mirror.
    drop(reg);

    let http = http();
    let got = http
        .get(format!("{url}/example.org/rel/v1/install.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), manifest);
    let snap = http
        .get(format!("{url}/snaps/core24_1.snap"))
        .send()
        .await
        .unwrap();
    assert_eq!(snap.bytes().await.unwrap().as_ref(), b"snap");
    // Sent as typed (an HTTP client would normalise the dots away).
    for path in [
        "/images/../../etc/passwd",
        "/snaps/../images/index.json",
        "/nowhere",
    ] {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }

    for _ in 0..2 {
        let attendee = lab_with_store(&store);
        // Same stack file, names on the (now gone) registry.
        std::fs::copy(
            instructor.cwd.join("lab-stack.yaml"),
            attendee.cwd.join("lab-stack.yaml"),
        )
        .unwrap();
        // doctor --offline before: everything would be downloaded (exit 1).
        let before = attendee.homelab(&["doctor", "--offline", "--stack", "lab-stack.yaml"]);
        before.failure(1);
        assert!(
            before.stdout.contains("download  image"),
            "{}",
            before.stdout
        );

        let (code, v, stderr) = prepare_json(&attendee, &["--from", &url]);
        assert_eq!(code, Some(0), "{stderr}");
        let imgs = v["images"].as_array().unwrap();
        assert!(imgs.iter().all(|i| i["source"] == "mirror"), "{v}");
        let digests: Vec<&str> = imgs.iter().map(|i| i["digest"].as_str().unwrap()).collect();
        assert!(digests.contains(&one.as_str()) && digests.contains(&multi.as_str()));
        assert!(v["bytes"]["mirror"].as_u64().unwrap() > 0);
        assert_eq!(v["bytes"]["registry"], 0);
        let l = lock(&attendee);
        assert_eq!(
            l["images"][format!("{}/lab/one:1.0", instructor_host(&instructor))]["digest"],
            one.as_str()
        );

        // doctor --offline after: all cached (exit 0), digests shown.
        let after = attendee.homelab(&["doctor", "--offline", "--stack", "lab-stack.yaml"]);
        after.success();
        assert!(after.stdout.contains(&one), "{}", after.stdout);
        assert!(
            after.stdout.contains("Everything is cached"),
            "{}",
            after.stdout
        );
    }

    // A tampered blob on the mirror: the attendee refuses it and stores nothing under its name.
    let layout =
        homelab::cluster::image_cache::Layout::open(instructor.cache_dir().join("images")).unwrap();
    let e = layout.entries().unwrap()[0].clone();
    let layer_digest = layout.image_blobs(&e).unwrap()[2].clone();
    std::fs::write(blob(&instructor, &layer_digest), b"tampered").unwrap();
    let store = FakeSnapStore::start().await;
    let third = lab_with_store(&store);
    std::fs::copy(
        instructor.cwd.join("lab-stack.yaml"),
        third.cwd.join("lab-stack.yaml"),
    )
    .unwrap();
    let r = third.homelab(&["prepare", "--stack", "lab-stack.yaml", "--from", &url]);
    r.failure(1);
    assert!(
        r.stderr.contains(&format!(
            "blob {layer_digest} of {} from mirror {url} refused: asked for {layer_digest}, the bytes hash to {}",
            e.reference,
            digest(b"tampered")
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: nothing was stored"),
        "{}",
        r.stderr
    );
    assert!(!blob(&third, &layer_digest).exists());
}

fn instructor_host(ctx: &TestContext) -> String {
    let stack = std::fs::read_to_string(ctx.cwd.join("lab-stack.yaml")).unwrap();
    let line = stack.lines().find(|l| l.contains("one: ")).unwrap();
    line.trim()
        .trim_start_matches("one: ")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// A mirror that serves upstream manifests only (what `upstream.mirror` named before images were
/// cached): its missing `images/index.json` is said once and every image comes from its registry,
/// as the snaps come from the Snap Store when the mirror has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_of_manifests_only_leaves_the_images_to_their_registries() {
    let (reg, one, _, _store, ctx) = seeded_lab().await;
    let empty = tempfile::tempdir().unwrap();
    let mirror =
        crate::support::fake_snapstore::StaticServer::start(empty.path().to_path_buf()).await;

    let (code, v, stderr) = prepare_json(&ctx, &["--from", &mirror.url]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the mirror {} holds no images (it serves manifests only); images come from their registries",
            mirror.url
        )),
        "{stderr}"
    );
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{v}");
    assert!(images.iter().all(|i| i["source"] == "registry"), "{v}");
    assert_eq!(v["bytes"]["mirror"], 0);
    let r_one = format!("{}/lab/one:1.0", reg.host);
    assert_eq!(lock(&ctx)["images"][&r_one]["digest"], one.as_str());
    assert!(
        mirror
            .hits
            .all()
            .contains(&"/images/index.json".to_string()),
        "the mirror was asked first"
    );
}

/// Two labs prepare at the same time into one cache, each with its own image: both succeed and
/// the cache's `index.json` names both (its writes are merged under `index.json.lock`, not one
/// written over the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prepares_at_once_into_one_cache_keep_both_images() {
    let (reg, one, multi) = seeded().await;
    let store = FakeSnapStore::start().await;
    let ctx = lab_with_store(&store);
    let stack = |name: &str, image: &str| {
        ctx.write(
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\ndescription: one image\ncluster:\n  kubernetes: \"1.36\"\n  channel: 1.36/stable\n  image: \"24.04\"\n  system_images: pull\ncomponents:\n  - name: dns\n    description: CoreDNS (microk8s addon)\n    source: {{addon: dns}}\n    images:\n      app: {}/{image}\n",
                reg.host
            ),
        );
    };
    stack("a", "lab/one:1.0");
    stack("b", "lab/multi:2.0");
    let spawn = |name: &str| {
        ctx.command()
            .args([
                "prepare",
                "--stack",
                &format!("{name}.yaml"),
                "--output",
                "json",
            ])
            .env("HOMELAB_LAB", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let layout =
        homelab::cluster::image_cache::Layout::open(ctx.cache_dir().join("images")).unwrap();
    let mut digests: Vec<String> = layout
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.digest)
        .collect();
    digests.sort();
    let mut want = vec![one, multi];
    want.sort();
    assert_eq!(digests, want);
}

/// Cold and warm `prepare` against the registry, counted: the cold one fetches each blob once
/// (three at a time) and the warm one sends one manifest `HEAD` per image (plus the client's
/// `/v2/` ping) and downloads 0 bytes. Test images only (NOT the lab's real images, which need
/// the internet): three images of one layer of `HOMELAB_PREPARE_LAYER_MIB` MiB (default: a
/// few KiB) of incompressible bytes each. Prints the figures the README quotes:
/// `HOMELAB_PREPARE_LAYER_MIB=20 cargo test --test it image_cache::cold_and_warm -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_and_warm_prepare_count_their_requests() {
    let mib: usize = std::env::var("HOMELAB_PREPARE_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let reg = Registry::start().await;
    let names = ["lab/a:1.0", "lab/b:1.0", "lab/c:1.0"];
    for (i, name) in names.iter().enumerate() {
        // Hex of a xorshift stream: half-incompressible, so the pushed (gzipped) layer is about
        // half of the text; sized so that it is about `mib` MiB.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
        let len = (mib * 1024 * 1024).max(4096);
        let mut text = String::with_capacity(len * 2);
        while text.len() < len * 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("{x:016x}"));
        }
        let (repo, tag) = name.split_once(':').unwrap();
        let (dir, _) = build_layout(tag, &[(arch(), &text)]);
        reg.push(dir.path(), tag, repo);
    }
    let store = FakeSnapStore::start().await;
    let ctx = lab_with_store(&store);
    let images: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("      i{i}: {}/{n}\n", reg.host))
        .collect();
    ctx.write(
        "lab-stack.yaml",
        &format!(
            "name: bench\ndescription: test images\ncluster:\n  kubernetes: \"1.36\"\n  channel: 1.36/stable\n  image: \"24.04\"\n  system_images: pull\ncomponents:\n  - name: dns\n    description: CoreDNS (microk8s addon)\n    source: {{addon: dns}}\n    images:\n{images}"
        ),
    );

    let before = reg.requests().len();
    let (code, cold, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let cold_requests: Vec<String> = reg.requests()[before..].to_vec();
    let (code, warm, stderr) = prepare_json(&ctx, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let all = reg.requests();
    let warm_requests: Vec<String> = all[before + cold_requests.len()..].to_vec();

    // Cold: every blob once, never twice.
    let blob_gets: Vec<&String> = cold_requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .collect();
    let unique: std::collections::BTreeSet<&String> = blob_gets.iter().copied().collect();
    assert_eq!(blob_gets.len(), unique.len(), "{cold_requests:#?}");
    assert_eq!(blob_gets.len(), names.len() * 2, "config + layer per image");
    let manifest_gets = cold_requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/manifests/"))
        .count();
    assert_eq!(manifest_gets, names.len(), "each manifest fetched once");
    // Warm: 0 bytes, one manifest HEAD per image and nothing else but `/v2/` pings.
    assert_eq!(warm["bytes"]["registry"], 0, "{warm}");
    let heads = warm_requests
        .iter()
        .filter(|r| r.starts_with("HEAD ") && r.contains("/manifests/"))
        .count();
    assert_eq!(heads, names.len(), "{warm_requests:#?}");
    assert!(
        warm_requests
            .iter()
            .all(|r| r == "GET /v2/" || (r.starts_with("HEAD ") && r.contains("/manifests/"))),
        "{warm_requests:#?}"
    );
    let count = |rs: &[String], method: &str, part: &str| {
        rs.iter()
            .filter(|r| r.starts_with(method) && r.contains(part))
            .count()
    };
    for (what, v, rs) in [
        ("cold", &cold, &cold_requests),
        ("warm", &warm, &warm_requests),
    ] {
        println!(
            "{what} prepare: {} bytes of images in {} ms (the whole command, snaps from the fake store included); {} registry requests: {} GET /v2/, {} HEAD manifest, {} GET manifest, {} GET blob",
            v["bytes"]["registry"],
            v["elapsed_ms"],
            rs.len(),
            rs.iter().filter(|r| *r == "GET /v2/").count(),
            count(rs, "HEAD ", "/manifests/"),
            count(rs, "GET ", "/manifests/"),
            count(rs, "GET ", "/blobs/"),
        );
    }
}

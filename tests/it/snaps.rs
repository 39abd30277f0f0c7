//! microk8s from the cache (issue 14, item 3): `homelab prepare` downloads the microk8s snap of
//! the stack's channel and its base from a fake Snap Store (`tests/support/fake_snapstore`), with
//! every hash checked; a workshop mirror serves another cache's `snaps/` folder; `up` installs
//! them in the VMs from transferred files (the fake `multipass` runs the provisioning script's
//! `snap ack`/`snap install` as snapd would take them).

use crate::support::common::TestContext;
use crate::support::fake_snapstore::{FakeSnapStore, StaticServer, sha3_hex};

const CERT_MANAGER_PATH: &str =
    "github.com/cert-manager/cert-manager/releases/download/v1.21.1/cert-manager.yaml";

/// A lab whose upstream manifests come from a static mirror (`root`, the cert-manager manifest
/// in it) and whose snaps come from `store`.
fn lab(store: &FakeSnapStore, mirror: &StaticServer) -> TestContext {
    let mut ctx = TestContext::new();
    ctx.env
        .insert("HOMELAB_SNAP_STORE_URL".into(), store.url.clone());
    ctx.env
        .insert("HOMELAB_UPSTREAM_MIRROR".into(), mirror.url.clone());
    ctx.env
        .insert("HOMELAB_TEST_PLATFORM".into(), "linux/x86_64".into());
    write_stack(&ctx);
    ctx
}

/// The stack these tests run: the default stack's cluster (microk8s 1.36/stable), with
/// cert-manager from the mirror and no images, so `prepare` takes the snaps and the manifest
/// and pulls nothing (images have their own tests, on a real registry: tests/it/image_cache.rs).
const STACK: &str = "snaps-stack.yaml";

fn write_stack(ctx: &TestContext) {
    ctx.write(
        STACK,
        &format!(
            "name: snaps\ndescription: microk8s from the cache, no images\ncluster:\n  kubernetes: \"1.36\"\n  channel: 1.36/stable\n  image: \"24.04\"\n  system_images: pull\ncomponents:\n  - name: dns\n    description: CoreDNS (microk8s addon)\n    source: {{addon: dns}}\n  - name: cert-manager\n    description: cert-manager\n    namespace: cert-manager\n    version: v1.21.1\n    source:\n      upstream:\n        url: https://{CERT_MANAGER_PATH}\n    needs: [dns]\n"
        ),
    );
}

/// A mirror folder holding the cert-manager manifest (and whatever the test adds).
fn mirror_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(CERT_MANAGER_PATH);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: cert-manager}\n",
    )
    .unwrap();
    dir
}

fn prepare(ctx: &TestContext) -> (i32, String, String) {
    let out = ctx
        .command()
        .args(["prepare", "--stack", STACK, "--output", "json"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        ctx.filter(&String::from_utf8_lossy(&out.stderr)),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn lock(ctx: &TestContext) -> serde_json::Value {
    json(&std::fs::read_to_string(ctx.state_dir("homelab").join("lock.json")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_downloads_microk8s_and_its_base_once_with_their_assertions() {
    let store = FakeSnapStore::start().await;
    let root = mirror_root();
    let mirror = StaticServer::start(root.path().to_path_buf()).await;
    let ctx = lab(&store, &mirror);

    let (code, stdout, stderr) = prepare(&ctx);
    assert_eq!(code, 0, "{stderr}");
    let out = json(&stdout);
    let microk8s = store.release("microk8s", "amd64");
    let core = store.release("core20", "amd64");
    let snaps = out["snaps"]["snaps"].as_array().unwrap();
    let names: Vec<&str> = snaps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["core20", "microk8s"],
        "the base the store names, first"
    );
    assert_eq!(snaps[1]["revision"], 8148);
    assert_eq!(snaps[1]["channel"], "1.36/stable");
    assert_eq!(snaps[0]["channel"], "latest/stable");
    assert_eq!(snaps[1]["sha3-384"], sha3_hex(&microk8s.content).as_str());
    assert_eq!(snaps[1]["source"], "store");
    let total = out["snaps"]["from_store"].as_u64().unwrap();
    assert!(
        total > (microk8s.content.len() + core.content.len()) as u64,
        "snap files plus assertions: {total}"
    );
    assert_eq!(out["snaps"]["from_mirror"], 0);
    assert!(
        stderr.contains("microk8s 1.36/stable (amd64): revision 8148"),
        "{stderr}"
    );

    // Every store request carried the series header; the assertions were fetched as snapd's
    // fetcher does: snap-revision, then its declaration and the store key.
    let hits = store.hits();
    assert!(
        hits.iter()
            .filter(|h| !h.path.starts_with("/download/"))
            .all(|h| h.series.as_deref() == Some("16")),
        "{hits:?}"
    );
    let cache = ctx.cache_dir().join("snaps");
    let snap = std::fs::read(cache.join("microk8s_8148.snap")).unwrap();
    assert_eq!(snap, microk8s.content);
    let asserts = std::fs::read_to_string(cache.join("microk8s_8148.assert")).unwrap();
    let types: Vec<&str> = asserts
        .lines()
        .filter_map(|l| l.strip_prefix("type: "))
        .collect();
    assert_eq!(
        types,
        ["account-key", "snap-declaration", "snap-revision"],
        "{asserts}"
    );
    assert!(
        !asserts.contains(&format!(
            "public-key-sha3-384: {}",
            crate::support::fake_snapstore::ROOT_KEY
        )),
        "the root key is snapd's own"
    );
    let index = json(&std::fs::read_to_string(cache.join("index.json")).unwrap());
    assert_eq!(index["version"], 1);
    assert_eq!(index["snaps"].as_array().unwrap().len(), 2);
    assert_eq!(index["snaps"][1]["file"], "microk8s_8148.snap");
    assert_eq!(index["snaps"][1]["base"], "core20");
    assert_eq!(index["snaps"][1]["confinement"], "classic");
    let pins = &lock(&ctx)["snaps"];
    assert_eq!(pins["microk8s"]["revision"], 8148);
    assert_eq!(pins["microk8s"]["architecture"], "amd64");
    assert_eq!(pins["core20"]["sha3-384"], sha3_hex(&core.content).as_str());

    // The second prepare asks no one and downloads nothing.
    let before = store.hits().len();
    let (code, stdout, stderr) = prepare(&ctx);
    assert_eq!(code, 0, "{stderr}");
    let out = json(&stdout);
    assert_eq!(out["snaps"]["from_store"], 0);
    assert!(
        out["snaps"]["snaps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["source"] == "cache")
    );
    assert_eq!(store.hits().len(), before, "no request to the store");

    // A damaged cached file is noticed and fetched again.
    let path = cache.join("microk8s_8148.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let served = store.served();
    let (code, stdout, stderr) = prepare(&ctx);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the cached revision 8148 is damaged"),
        "{stderr}"
    );
    assert_eq!(store.served() - served, microk8s.content.len() as u64);
    assert_eq!(
        json(&stdout)["snaps"]["snaps"][0]["source"],
        "cache",
        "the base was whole"
    );
    assert_eq!(std::fs::read(&path).unwrap(), microk8s.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_does_not_match_the_published_hash_is_refused() {
    let store = FakeSnapStore::start().await;
    store.inner.knobs.lock().unwrap().corrupt_downloads = true;
    let root = mirror_root();
    let mirror = StaticServer::start(root.path().to_path_buf()).await;
    let ctx = lab(&store, &mirror);
    let (code, _, stderr) = prepare(&ctx);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\nerror: `microk8s_8148.snap` from http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("was refused: its SHA3-384 is"), "{stderr}");
    assert!(stderr.contains("but the Snap Store says"), "{stderr}");
    assert!(stderr.contains("hint: nothing was kept"), "{stderr}");
    let cache = ctx.cache_dir().join("snaps");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing kept: {left:?}");
    let lock_file = ctx.state_dir("homelab").join("lock.json");
    assert!(
        !lock_file.exists() || lock(&ctx).get("snaps").is_none(),
        "nothing pinned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_a_request_without_the_series_header() {
    let store = FakeSnapStore::start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!(
        "{}/v2/snaps/info/microk8s?fields=revision&architecture=amd64",
        store.url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("missing-header"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendees_prepare_from_the_instructors_cache_and_refuse_a_tampered_file() {
    let store = FakeSnapStore::start().await;
    let root = mirror_root();
    let plain = StaticServer::start(root.path().to_path_buf()).await;
    let instructor = lab(&store, &plain);
    assert_eq!(prepare(&instructor).0, 0);

    // The mirror serves the instructor's cache folder as files.
    let served = tempfile::tempdir().unwrap();
    let manifest = served.path().join(CERT_MANAGER_PATH);
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::copy(root.path().join(CERT_MANAGER_PATH), &manifest).unwrap();
    std::fs::create_dir_all(served.path().join("snaps")).unwrap();
    for e in std::fs::read_dir(instructor.cache_dir().join("snaps")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), served.path().join("snaps").join(e.file_name())).unwrap();
    }
    let mirror = StaticServer::start(served.path().to_path_buf()).await;
    let store_hits = store.hits().len();

    let attendee = lab(&store, &mirror);
    let (code, stdout, stderr) = prepare(&attendee);
    assert_eq!(code, 0, "{stderr}");
    let out = json(&stdout);
    assert_eq!(out["snaps"]["from_store"], 0);
    assert!(out["snaps"]["from_mirror"].as_u64().unwrap() > 0);
    assert_eq!(store.hits().len(), store_hits, "nothing from the store");
    let paths = mirror.hits.all();
    assert!(
        paths.contains(&"/snaps/index.json".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/snaps/microk8s_8148.snap".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/snaps/core20_2599.assert".to_string()),
        "{paths:?}"
    );
    assert_eq!(lock(&attendee)["snaps"], lock(&instructor)["snaps"]);
    assert_eq!(
        std::fs::read(attendee.cache_dir().join("snaps/microk8s_8148.snap")).unwrap(),
        store.release("microk8s", "amd64").content
    );

    // A tampered file on the mirror: refused on the attendee's side.
    let snap = served.path().join("snaps/microk8s_8148.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let second = lab(&store, &mirror);
    let (code, _, stderr) = prepare(&second);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`microk8s_8148.snap` from http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("but the mirror's index says"), "{stderr}");
    assert!(!second.cache_dir().join("snaps/microk8s_8148.snap").exists());
}

// ---------------------------------------------------------------- `up` with the fake multipass

const VM: &str = "homelab-t-1";

/// A lab `t` with the fake `multipass` first on PATH (as tests/it/provision.rs sets it up), its
/// snaps from `store` and manifests from `mirror`.
fn vm_lab(store: &FakeSnapStore, mirror: &StaticServer) -> (TestContext, std::path::PathBuf) {
    let mut ctx = lab(store, mirror);
    let fake_dir = crate::support::common::multipass::multipass_lab(&mut ctx);
    (ctx, fake_dir)
}

fn argv(ctx: &TestContext, fake_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(fake_dir.join("argv.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| ctx.filter(&serde_json::from_str::<Vec<String>>(l).unwrap().join(" ")))
        .collect()
}

fn instance(fake_dir: &std::path::Path) -> serde_json::Value {
    json(&std::fs::read_to_string(fake_dir.join("state.json")).unwrap())["instances"][VM].clone()
}

/// cloud-init's own schema check (scripts/validate_cloud_init.py, as tests/it/render.rs runs it).
fn assert_valid_cloud_init(file: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = std::env::var_os("HOMELAB_CLOUD_INIT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/cloud-init/usr/lib/python3/dist-packages"));
    let out = std::process::Command::new(crate::support::common::validator_python())
        .arg(root.join("scripts/validate_cloud_init.py"))
        .arg("--cloud-init")
        .arg(&package)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{}: valid", file.display())),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_installs_microk8s_from_the_cache_with_its_assertions_and_holds_it() {
    let store = FakeSnapStore::start().await;
    let root = mirror_root();
    let mirror = StaticServer::start(root.path().to_path_buf()).await;
    let (ctx, fake_dir) = vm_lab(&store, &mirror);
    ctx.homelab(&["prepare", "--stack", STACK]).success();
    let hits = store.hits().len();

    let up = ctx.homelab(&["up", "--stack", STACK, "--until", "ready"]);
    up.success();
    assert_eq!(store.hits().len(), hits, "up asks no store");
    let cloud_init = ctx.state_dir("t").join("cloud-init.yaml");
    let user_data = std::fs::read_to_string(&cloud_init).unwrap();
    assert!(
        user_data.contains("- [sh, /var/lib/homelab/provision.sh, --await-files, \"1.36/stable\"]"),
        "{user_data}"
    );
    assert_valid_cloud_init(&cloud_init);
    assert!(
        up.stdout
            .contains("microk8s 1.36/stable from the cache (core20 2599, microk8s 8148)"),
        "{}",
        up.stdout
    );
    assert!(
        up.stdout
            .contains("microk8s installed from the cache (core20 2599, microk8s 8148)"),
        "{}",
        up.stdout
    );

    let calls = argv(&ctx, &fake_dir);
    let cache = ctx.filter(&ctx.cache_dir().join("snaps").display().to_string());
    for file in [
        "core20_2599.assert",
        "core20_2599.snap",
        "microk8s_8148.assert",
        "microk8s_8148.snap",
    ] {
        let transfer = format!("transfer {cache}/{file} {VM}:/tmp/{file}");
        assert!(calls.contains(&transfer), "{transfer} in {calls:#?}");
        assert!(
            calls.contains(&format!("exec {VM} -- rm -f /tmp/{file}")),
            "{calls:#?}"
        );
    }
    let install = format!(
        "exec {VM} -- sudo sh /var/lib/homelab/provision.sh --from-files 1.36/stable /tmp/core20_2599.snap /tmp/microk8s_8148.snap"
    );
    let at = calls
        .iter()
        .position(|c| *c == install)
        .expect("the install ran");
    assert!(
        calls[..at]
            .iter()
            .filter(|c| c.starts_with("transfer "))
            .count()
            == 4,
        "every file is in the VM before the install"
    );

    // What snapd saw: the assertions acknowledged first, the files installed without
    // `--dangerous` (the base first), microk8s tracking its channel, refreshes held.
    let vm = instance(&fake_dir);
    let snapd = &vm["_snapd"];
    let snap_calls: Vec<String> = snapd["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        snap_calls,
        [
            "list microk8s",
            "ack /tmp/core20_2599.assert",
            "ack /tmp/microk8s_8148.assert",
            "list core20",
            "install /tmp/core20_2599.snap",
            "install --classic /tmp/microk8s_8148.snap",
            "switch --channel=1.36/stable microk8s",
            "refresh --hold microk8s core20",
            "list microk8s",
        ]
    );
    assert_eq!(snapd["installed"]["microk8s"]["revision"], 8148);
    assert_eq!(snapd["installed"]["microk8s"]["tracking"], "1.36/stable");
    assert_eq!(snapd["installed"]["core20"]["revision"], 2599);
    assert_eq!(snapd["held"], serde_json::json!(["core20", "microk8s"]));
    assert!(
        vm["_files"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("/tmp/")),
        "copies removed"
    );

    // A second `up` finds the VM provisioned: nothing transferred, nothing installed.
    std::fs::remove_file(fake_dir.join("argv.log")).unwrap();
    ctx.homelab(&["up", "--stack", STACK, "--until", "ready"])
        .success();
    let calls = argv(&ctx, &fake_dir);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("transfer ") || c.contains("--from-files")),
        "{calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cached_snaps_the_vms_install_from_the_store_as_before() {
    let store = FakeSnapStore::start().await;
    let root = mirror_root();
    let mirror = StaticServer::start(root.path().to_path_buf()).await;
    let (ctx, fake_dir) = vm_lab(&store, &mirror);
    let up = ctx.homelab(&["up", "--stack", STACK, "--until", "ready"]);
    up.success();
    let cloud_init = ctx.state_dir("t").join("cloud-init.yaml");
    let user_data = std::fs::read_to_string(&cloud_init).unwrap();
    assert!(
        user_data.contains("- [sh, /var/lib/homelab/provision.sh, \"1.36/stable\"]"),
        "{user_data}"
    );
    assert_valid_cloud_init(&cloud_init);
    let calls = argv(&ctx, &fake_dir);
    assert!(
        !calls.iter().any(|c| c.starts_with("transfer ")
            || c.contains("awaiting-snaps")
            || c.contains("--from-files")),
        "{calls:#?}"
    );
    assert!(instance(&fake_dir).get("_snapd").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_waiting_for_snaps_the_cache_lost_says_to_prepare() {
    let store = FakeSnapStore::start().await;
    let root = mirror_root();
    let mirror = StaticServer::start(root.path().to_path_buf()).await;
    let (ctx, fake_dir) = vm_lab(&store, &mirror);
    ctx.homelab(&["prepare", "--stack", STACK]).success();
    // The VM is launched for the cache (`vms`), then the cache is damaged before `provisioned`
    // hands the files over: refused on this side, before anything reaches the VM.
    ctx.homelab(&["up", "--stack", STACK, "--until", "vms"])
        .success();
    let snap = ctx.cache_dir().join("snaps/microk8s_8148.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let up = ctx.homelab(&["up", "--stack", STACK, "--until", "ready"]);
    up.failure(1);
    assert!(
        up.stderr.contains("error: the cached microk8s revision 8148 cannot be used: `microk8s_8148.snap` has SHA3-384"),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr
            .contains("hint: run `homelab prepare` to fetch it again"),
        "{}",
        up.stderr
    );
    assert!(
        !argv(&ctx, &fake_dir)
            .iter()
            .any(|c| c.starts_with("transfer "))
    );
}

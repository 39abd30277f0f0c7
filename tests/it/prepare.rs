//! `homelab prepare --manifests-only` against a local HTTP server standing in for the release
//! host (through `HOMELAB_UPSTREAM_MIRROR`): first download records the sha256, the second run
//! uses the cache, a changed file is refused. Images: `image_cache.rs`.

use crate::support::common;

use std::sync::{Arc, Mutex};

use common::TestContext;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const CERT_MANAGER_PATH: &str =
    "/github.com/cert-manager/cert-manager/releases/download/v1.21.1/cert-manager.yaml";
const URL: &str =
    "https://github.com/cert-manager/cert-manager/releases/download/v1.21.1/cert-manager.yaml";

const RELEASE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cert-manager, namespace: cert-manager}\nspec:\n  selector: {matchLabels: {app: cm}}\n  template:\n    metadata: {labels: {app: cm}}\n    spec:\n      containers:\n        - {name: c, image: quay.io/jetstack/cert-manager-controller:v1.21.1}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: startupapicheck, namespace: cert-manager}\nspec:\n  template:\n    spec:\n      initContainers: [{name: wait, image: quay.io/jetstack/only-in-upstream:v1.21.1}]\n      containers: [{name: check, image: quay.io/jetstack/cert-manager-startupapicheck:v1.21.1}]\n";

struct Server {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<Mutex<Vec<String>>>,
}

async fn serve() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(RELEASE.to_string()));
    let hits = Arc::new(Mutex::new(Vec::new()));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (b, h) = (b.clone(), h.clone());
                    async move {
                        h.lock().unwrap().push(req.uri().path().to_string());
                        let resp = if req.uri().path() == CERT_MANAGER_PATH {
                            hyper::Response::new(Full::new(bytes::Bytes::from(
                                b.lock().unwrap().clone(),
                            )))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(bytes::Bytes::new()))
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { url, body, hits }
}

fn sha256(text: &str) -> String {
    homelab::edges::digest::sha256_hex(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_downloads_once_records_the_hash_and_refuses_a_changed_file() {
    let server = serve().await;
    let mut ctx = TestContext::new();
    ctx.env
        .insert("HOMELAB_UPSTREAM_MIRROR".into(), server.url.clone());
    // The snaps, which this mirror lacks, come from a fake store (tests/it/snaps.rs).
    let store = crate::support::fake_snapstore::FakeSnapStore::start().await;
    ctx.env
        .insert("HOMELAB_SNAP_STORE_URL".into(), store.url.clone());
    let manifest_hits = || {
        server
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == CERT_MANAGER_PATH)
            .count()
    };
    let run = |args: &'static [&'static str]| {
        let out = ctx.command().args(args).output().unwrap();
        (
            out.status.code(),
            ctx.filter(&String::from_utf8_lossy(&out.stdout)),
            ctx.filter(&String::from_utf8_lossy(&out.stderr)),
        )
    };

    let (code, stdout, stderr) = run(&["prepare", "--manifests-only"]);
    assert_eq!(code, Some(0), "{stderr}");
    let first_sha = sha256(RELEASE);
    assert!(
        stdout.contains(&format!(
            "cert-manager     {URL} sha256:{first_sha} (downloaded)"
        )),
        "{stdout}"
    );
    for image in [
        "quay.io/jetstack/cert-manager-controller:v1.21.1",
        "quay.io/jetstack/only-in-upstream:v1.21.1",
        "quay.io/jetstack/cert-manager-startupapicheck:v1.21.1",
        "gitea/gitea:1.26.1-rootless",
    ] {
        assert!(
            stdout.contains(&format!("  {image}\n")),
            "{image} not listed:\n{stdout}"
        );
    }
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.state_dir("homelab").join("lock.json")).unwrap())
            .unwrap();
    assert_eq!(lock["upstream"][URL]["sha256"], first_sha.as_str());
    assert_eq!(manifest_hits(), 1);

    // Second run: from the cache, no request.
    let (code, stdout, _) = run(&["prepare", "--manifests-only"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("(cached)"), "{stdout}");
    assert_eq!(manifest_hits(), 1, "the cache is used");

    // The release file changes upstream (and the cache is gone): refused, lock untouched.
    *server.body.lock().unwrap() = RELEASE.replace("v1.21.1}", "v1.21.2}");
    std::fs::remove_dir_all(ctx.cache_dir().join("upstream")).unwrap();
    let (code, _, stderr) = run(&["prepare", "--manifests-only"]);
    assert_eq!(code, Some(1));
    let changed_sha = sha256(&server.body.lock().unwrap());
    assert_eq!(
        stderr,
        format!(
            "error: upstream manifest {URL} changed: the lab's lock pins sha256 {first_sha}, the file has {changed_sha}\nhint: a release file must never change; if the new one is intended, remove its entry from the lab's `lock.json` and run `homelab prepare`\n"
        )
    );
    let lock_after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.state_dir("homelab").join("lock.json")).unwrap())
            .unwrap();
    assert_eq!(lock_after, lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_release_is_a_clear_error() {
    let server = serve().await;
    let mut ctx = TestContext::new();
    ctx.env.insert(
        "HOMELAB_UPSTREAM_MIRROR".into(),
        format!("{}/elsewhere", server.url),
    );
    let out = ctx
        .command()
        .args(["prepare", "--manifests-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = ctx.filter(&String::from_utf8_lossy(&out.stderr));
    assert!(
        stderr.starts_with("error: download http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("cert-manager.yaml: the server answered 404\nhint: check that the release URL in the stack still exists"), "{stderr}");
}

//! Sync engine benchmarks at 1,000 managed objects (not timed tests: numbers to read and to put
//! in README). `cargo bench --bench sync` (release build).
//!
//! Against the fake API server by default, with every request counted per verb. With
//! `HOMELAB_BENCH_KUBECONFIG=<file>` the same scenario runs against that cluster (requests are
//! then not counted; namespaces `hl-bench-*` are created and deleted).
//!
//! Measures: the first sync of 1,000 objects (with its requests per verb); a no-op reconcile (cold: a new engine, so one LIST
//! per kind; warm: the watch cache) with its requests and writes; the pure diff of 1,000 objects;
//! webhook-to-applied for a one-object change (signed POST → the object changed in the API); and
//! the peak memory (VmHWM) of the `homelab sync --watch` process reconciling those 1,000 objects.

// The bench drives part of the test fake; the rest is used by the tests.
#[allow(dead_code)]
#[path = "../tests/support/fake_kube/mod.rs"]
mod fake_kube;
// The HTTP kit the fakes share; the bench uses the part the fake API server needs.
#[allow(dead_code)]
#[path = "../tests/support/http_kit/mod.rs"]
mod http_kit;
// The bench drives part of the test fake; the rest is used by the tests.
#[allow(dead_code)]
#[path = "../tests/support/git_http/mod.rs"]
mod git_http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git_http::Repo;
use homelab::cluster::apply::{Applier, ApplyOptions, Manifest};
use homelab::sync::diff::{self, CompareConfig};
use homelab::sync::engine::{Engine, EngineConfig, Mode, app_resource};
use homelab::sync::run::{self, Trigger};
use homelab::sync::server::{ServerState, serve};
use homelab::sync::webhook::{Webhook, WebhookConfig, sign};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const OBJECTS: usize = 1000;

/// The repository's `contracts/` (see its README).
fn contracts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

fn write_objects(repo: &Repo, version: &str) {
    // 1,000 objects over four kinds, sized like real app manifests.
    for i in 0..OBJECTS {
        let obj = match i % 10 {
            0..=5 => {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")},
                "data": {"app.properties": format!("color=blue\nindex={i}\nversion={version}\n"), "mode": "prod"}})
            }
            6 => {
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("secret-{i}")},
                "type": "Opaque", "data": {"token": "c2VjcmV0LXRva2Vu"}})
            }
            7 | 8 => {
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "labels": {"app": format!("app-{i}")}},
                "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
            }
            _ => {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("deploy-{i}")},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                            "ports": [{"containerPort": 8080}],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})
            }
        };
        repo.write(
            &format!("app/{:04}.json", i),
            &serde_json::to_string_pretty(&obj).unwrap(),
        );
    }
}

struct Target {
    fake: Option<fake_kube::FakeKube>,
    kubeconfig: PathBuf,
    client: kube::Client,
}

async fn target(dir: &Path) -> Target {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (fake, kubeconfig) = match std::env::var_os("HOMELAB_BENCH_KUBECONFIG") {
        Some(p) => (None, PathBuf::from(p)),
        None => {
            let fake = fake_kube::FakeKube::start().await;
            let p = fake.write_kubeconfig(dir);
            (Some(fake), p)
        }
    };
    let client = homelab::cluster::kube::connect(
        &homelab::cluster::kube::KubeTarget::new(&kubeconfig),
        &Default::default(),
    )
    .await
    .unwrap();
    Target {
        fake,
        kubeconfig,
        client,
    }
}

fn counts(fake: &Option<fake_kube::FakeKube>) -> String {
    match fake {
        None => "(not counted on a real cluster)".into(),
        Some(f) => {
            let by_verb = f.verb_counts();
            let mut lists: BTreeMap<String, usize> = BTreeMap::new();
            for r in f.requests().iter().filter(|r| r.verb == "list") {
                *lists.entry(r.path.clone()).or_default() += 1;
            }
            format!(
                "requests by verb {by_verb:?}; LISTs per path {lists:?}; writes {}",
                f.writes().len()
            )
        }
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: a debug-build benchmark
    // would only cost CI time, so it runs under `cargo bench` alone.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sync benchmark: run it with `cargo bench --bench sync`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path()).await;
    let suffix = format!("{:x}", std::process::id());
    let apps_ns = format!("hl-bench-argocd-{suffix}");
    let dest_ns = format!("hl-bench-app-{suffix}");
    let lease_ns = format!("hl-bench-system-{suffix}");
    let applier = Applier::new(t.client.clone());
    let crd: Value = serde_json::from_str(
        &std::fs::read_to_string(contracts().join("argocd/application-crd.json")).unwrap(),
    )
    .unwrap();
    let mut setup = vec![crd];
    for ns in [&apps_ns, &dest_ns, &lease_ns] {
        setup.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let manifests: Vec<Manifest> = setup
        .into_iter()
        .map(|o| Manifest {
            origin: "bench".into(),
            object: o,
        })
        .collect();
    let opts = ApplyOptions {
        field_manager: "bench-setup".into(),
        ..Default::default()
    };
    if t.fake.is_some() {
        applier.apply(&manifests, &opts).await.unwrap();
    } else {
        // Never touch a real cluster's Application CRD.
        applier.apply(&manifests[1..], &opts).await.unwrap();
    }

    let repo = Repo::new(&dir.path().join("gitops"));
    write_objects(&repo, "1");
    repo.commit("1,000 objects");
    let apps: Api<DynamicObject> =
        Api::namespaced_with(t.client.clone(), &apps_ns, &app_resource());
    let app_obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "bench", "namespace": apps_ns},
        "spec": {"project": "default",
            "source": {"repoURL": repo.url(), "path": "app", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": dest_ns},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}},
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app_obj).await.unwrap();
    let get_app = || async {
        let mut v = serde_json::to_value(apps.get("bench").await.unwrap()).unwrap();
        v["apiVersion"] = json!("argoproj.io/v1alpha1");
        v["kind"] = json!("Application");
        v
    };
    let cfg = || {
        let mut c = EngineConfig::new(dir.path().join("work"));
        c.app_namespace = apps_ns.clone();
        c
    };

    println!(
        "sync engine benchmark: {OBJECTS} objects (ConfigMap 600, Secret 100, Service 200, Deployment 100) against {}",
        if t.fake.is_some() {
            "the fake API server"
        } else {
            "the cluster in HOMELAB_BENCH_KUBECONFIG"
        }
    );

    // First sync.
    let (tx, _rx) = mpsc::unbounded_channel();
    let engine = Engine::new(t.client.clone(), cfg(), tx);
    let app = get_app().await;
    if let Some(f) = &t.fake {
        f.clear_requests();
    }
    let started = Instant::now();
    let o = engine.reconcile(&app, Mode::Auto).await.unwrap();
    let per_object = match &t.fake {
        Some(f) => format!(
            "{} requests, {:.3} per object",
            f.requests().iter().filter(|r| !r.fault).count(),
            f.requests().iter().filter(|r| !r.fault).count() as f64 / OBJECTS as f64
        ),
        None => String::new(),
    };
    println!(
        "first sync: {:.0} ms, {} applied, {}; {per_object}; {}",
        started.elapsed().as_secs_f64() * 1000.0,
        o.applied,
        o.sync.as_str(),
        counts(&t.fake)
    );
    assert_eq!(o.applied, OBJECTS, "{:?}", o.conditions);
    drop(engine);

    // No-op reconcile, cold (a fresh engine: discovery + one LIST per kind) and warm (cache).
    let (tx, _rx) = mpsc::unbounded_channel();
    let engine = Arc::new(Engine::new(t.client.clone(), cfg(), tx));
    let app = get_app().await;
    if let Some(f) = &t.fake {
        f.clear_requests();
    }
    let started = Instant::now();
    let o = engine.reconcile(&app, Mode::Auto).await.unwrap();
    let cold = started.elapsed();
    assert_eq!((o.applied, o.wrote_status), (0, false));
    println!(
        "no-op reconcile, cold cache: {:.0} ms; {}",
        cold.as_secs_f64() * 1000.0,
        counts(&t.fake)
    );
    if let Some(f) = &t.fake {
        f.clear_requests();
    }
    let mut warm = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let o = engine.reconcile(&app, Mode::Auto).await.unwrap();
        warm.push(started.elapsed());
        assert_eq!(o.applied, 0);
    }
    warm.sort();
    println!(
        "no-op reconcile, warm cache (median of 5): {:.0} ms; {}",
        warm[2].as_secs_f64() * 1000.0,
        counts(&t.fake)
    );

    // Pure diff of 1,000 objects: normalise + compare against the live objects.
    let mut desired = Vec::new();
    for e in std::fs::read_dir(repo.dir.join("app")).unwrap() {
        let v: Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        desired.push(v);
    }
    let r_cm = applier
        .discovery()
        .resolve("v1", "ConfigMap")
        .await
        .unwrap()
        .unwrap();
    let mut live = BTreeMap::new();
    for (av, kind) in [
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
    ] {
        let r = applier
            .discovery()
            .resolve(av, kind)
            .await
            .unwrap()
            .unwrap();
        let list = applier
            .api(&r, &dest_ns)
            .list(&Default::default())
            .await
            .unwrap();
        for item in list.items {
            let v = homelab::cluster::apply::to_value(&item, &r);
            live.insert(
                (
                    kind.to_string(),
                    v["metadata"]["name"].as_str().unwrap().to_string(),
                ),
                v,
            );
        }
    }
    let _ = r_cm;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut synced = 0;
        for d in &desired {
            let mut obj = d.clone();
            diff::normalize(&mut obj, "bench", Some(&dest_ns), true);
            let obj = homelab::cluster::apply::diff::prepare(&obj);
            let key = (
                obj["kind"].as_str().unwrap().to_string(),
                obj["metadata"]["name"].as_str().unwrap().to_string(),
            );
            let c = diff::compare(
                &obj,
                live.get(&key),
                CompareConfig {
                    manager: "homelab",
                    ignore: &[],
                },
            );
            synced += usize::from(c.status == homelab::sync::status::SyncCode::Synced);
        }
        runs.push(started.elapsed());
        assert_eq!(synced, OBJECTS);
    }
    runs.sort();
    println!(
        "diff of {OBJECTS} objects (normalise + compare, median of 5): {:.1} ms",
        runs[2].as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let o = engine.reconcile(&app, Mode::Preview).await.unwrap();
    println!(
        "`homelab diff` of {OBJECTS} objects (Preview reconcile, warm): {:.0} ms, {} differences",
        started.elapsed().as_secs_f64() * 1000.0,
        o.diffs.len()
    );

    // Webhook to applied: the engine loop and its HTTP endpoint, a one-object change.
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let engine = Arc::new(Engine::new(t.client.clone(), cfg(), touched_tx));
    let (trig_tx, trig_rx) = mpsc::unbounded_channel::<Trigger>();
    let (_leader_tx, leader_rx) = watch::channel(true);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let loop_task = tokio::spawn(run::run(
        engine.clone(),
        Default::default(),
        trig_rx,
        touched_rx,
        leader_rx.clone(),
        ready_tx,
        stop(stop_rx.clone()),
    ));
    let _ = ready_rx.wait_for(|r| *r).await;
    let hook = Arc::new(Webhook::new(WebhookConfig {
        secret: homelab::edges::redact::Secret::new("bench-secret"),
        max_body: 1 << 20,
        remembered: 64,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let (ready2_tx, ready2_rx) = watch::channel(true);
    drop(ready2_tx);
    let server = tokio::spawn(serve(
        listener,
        Arc::new(ServerState {
            engine: engine.clone(),
            webhook: Some(hook),
            triggers: trig_tx,
            ready: ready2_rx,
            leader: leader_rx,
            page: None,
        }),
        stop(stop_rx.clone()),
    ));
    // Let the loop's startup reconcile settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = applier
        .discovery()
        .resolve("v1", "ConfigMap")
        .await
        .unwrap()
        .unwrap();
    let cm_api = applier.api(&r, &dest_ns);
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for round in 2..5 {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-0"},
            "data": {"app.properties": format!("color=blue\nindex=0\nversion={round}\n"), "mode": "prod"}});
        repo.write(
            "app/0000.json",
            &serde_json::to_string_pretty(&obj).unwrap(),
        );
        let rev = repo.commit(&format!("round {round}"));
        let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": rev,
            "repository": {"clone_url": repo.url()}}))
        .unwrap();
        let sig = sign(b"bench-secret", &body);
        let started = Instant::now();
        let resp = http
            .post(&url)
            .header("X-Gitea-Event", "push")
            .header("X-Gitea-Delivery", format!("bench-{round}"))
            .header("X-Gitea-Signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let want = format!("version={round}");
        loop {
            let live = cm_api.get("cm-0").await.unwrap();
            let v = serde_json::to_value(live).unwrap();
            if v["data"]["app.properties"]
                .as_str()
                .is_some_and(|s| s.contains(&want))
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    times.sort();
    println!(
        "webhook to applied, one-object change (median of 3): {:.0} ms",
        times[1].as_secs_f64() * 1000.0
    );
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    let _ = server.await;

    // Peak memory of the engine process reconciling the 1,000 objects (`homelab sync --watch`).
    let bin = env!("CARGO_BIN_EXE_homelab");
    let mut child = std::process::Command::new(bin)
        .args(["sync", "--watch", "--kubeconfig"])
        .arg(&t.kubeconfig)
        .args([
            "--app-namespace",
            &apps_ns,
            "--lease-namespace",
            &lease_ns,
            "--work-dir",
        ])
        .arg(dir.path().join("work-proc"))
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Its first reconcile of `bench` shows up as a "reconciled" log line.
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("reconciled") {
                let _ = line_tx.send(line);
            }
        }
    });
    let line = line_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the engine reconciled");
    // A few more reconciles (drift checks, polling) before reading the high-water mark.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hwm = vm_hwm_kib(pid).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "peak memory (VmHWM) of `homelab sync --watch` with {OBJECTS} managed objects: {:.1} MiB ({})",
        hwm as f64 / 1024.0,
        line.trim()
    );

    if t.fake.is_none() {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(t.client.clone());
        for ns in [&apps_ns, &dest_ns, &lease_ns] {
            let _ = nss.delete(ns, &Default::default()).await;
        }
    }
}

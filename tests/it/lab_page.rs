//! The lab page (issue 16): its HTML from fixed lab states (a snapshot per state: healthy,
//! syncing, a failed hop), a page that never shows a secret, the page served by the in-cluster
//! engine (`homelab sync --in-cluster`) against the fake API server, and a real browser
//! (headless Chromium, Debian's `chromium`) loading it: what a person sees, a screenshot kept as
//! a test artifact, and no request leaving the lab.

use crate::support::common;
use crate::support::common::fixtures::apply_setup;
use crate::support::fake_kube::test_cluster::TestCluster;
use crate::support::git_http::Repo;
use crate::support::http_kit::tls::lab_ca;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homelab::cluster::apply::Applier;
use homelab::sync::page::html::render;
use homelab::sync::page::{
    AppRow, CaSummary, ComponentRow, Health, LabPageState, LastSync, ResourceResult, SyncRecord,
    VerifyHop, VerifyRun,
};
use serde_json::{Value, json};

// ---- fixed states ----

fn components(gitea: Health, nyan: Health) -> Vec<ComponentRow> {
    let c = |name: &str, description: &str, url: &str, health, detail: &str| ComponentRow {
        name: name.into(),
        description: description.into(),
        url: url.into(),
        health,
        detail: detail.into(),
    };
    vec![
        c("dns", "CoreDNS (microk8s addon)", "", Health::None, ""),
        c(
            "ingress",
            "F5 NGINX Ingress Controller (nginx.org), IngressClass `nginx`",
            "",
            Health::Healthy,
            "DaemonSet/nginx-ingress Healthy",
        ),
        c(
            "gitea",
            "Gitea (git server + container registry), rootless, SQLite",
            "https://gitea.10.0.0.5.sslip.io",
            gitea,
            "Deployment/gitea Healthy",
        ),
        c(
            "drone",
            "Drone CI server, logged in through Gitea OAuth",
            "https://drone.10.0.0.5.sslip.io",
            Health::Healthy,
            "Deployment/drone Healthy",
        ),
        c(
            "nyan-cat",
            "the NyanCat demo app, deployed from `lab/gitops`",
            "https://nyan.10.0.0.5.sslip.io",
            nyan,
            "",
        ),
        c(
            "lab-page",
            "the lab's landing page, served by the sync engine",
            "https://lab.10.0.0.5.sslip.io",
            Health::None,
            "",
        ),
    ]
}

fn nyan_app(sync: &str, health: &str, phase: &str, finished: &str) -> AppRow {
    AppRow {
        name: "nyan-cat".into(),
        sync: sync.into(),
        health: health.into(),
        revision: "4f1c2a9e0d7b66a1c3e5f7a9b1d3e5f7a9b1c3d5".into(),
        repo: "http://gitea-http.gitea.svc.cluster.local:3000/lab/gitops.git".into(),
        path: "nyan-cat".into(),
        last_sync: Some(LastSync {
            phase: phase.into(),
            message: if phase == "Running" {
                "waiting for Deployment/nyan-cat to roll out".into()
            } else {
                "successfully synced (all tasks run)".into()
            },
            started_at: "2026-12-05T08:54:17Z".into(),
            finished_at: finished.into(),
            resources: vec![
                ResourceResult {
                    kind: "Service".into(),
                    namespace: "nyan-cat".into(),
                    name: "nyan-cat".into(),
                    status: "Synced".into(),
                    message: "unchanged".into(),
                },
                ResourceResult {
                    kind: "Deployment".into(),
                    namespace: "nyan-cat".into(),
                    name: "nyan-cat".into(),
                    status: "Synced".into(),
                    message: "configured".into(),
                },
            ],
        }),
        conditions: vec![],
    }
}

fn hops(failed_at: Option<&str>) -> Vec<VerifyHop> {
    let mut out = Vec::new();
    for (hop, ms, detail) in [
        ("commit", 640, "committed v7 to lab/nyan-cat (a1b2c3d)"),
        ("build", 48_200, "Drone build #7 succeeded"),
        ("bump", 2_100, "lab/gitops deploys nyan-cat:a1b2c3d"),
        ("sync", 3_900, "nyan-cat Synced and Healthy at 4f1c2a9"),
        ("serve", 1_300, "https://nyan.10.0.0.5.sslip.io serves v7"),
    ] {
        let failed = failed_at == Some(hop);
        out.push(VerifyHop {
            hop: hop.into(),
            ok: !failed,
            elapsed_ms: ms,
            detail: if failed {
                "Application nyan-cat stayed OutOfSync for 5 min".into()
            } else {
                detail.into()
            },
        });
        if failed {
            break;
        }
    }
    out
}

fn history() -> Vec<SyncRecord> {
    vec![
        SyncRecord {
            at: "2026-12-05T08:54:19Z".into(),
            app: "nyan-cat".into(),
            revision: "4f1c2a9e0d7b".into(),
            phase: "Succeeded".into(),
            applied: 1,
            pruned: 0,
        },
        SyncRecord {
            at: "2026-12-05T08:41:02Z".into(),
            app: "nyan-cat".into(),
            revision: "9d8e7f6a5b4c".into(),
            phase: "Succeeded".into(),
            applied: 3,
            pruned: 0,
        },
    ]
}

fn base() -> LabPageState {
    LabPageState {
        lab: "workshop".into(),
        domain: "10.0.0.5.sslip.io".into(),
        generated_at: "2026-12-05T08:55:00.125873689Z".into(),
        ca: Some(CaSummary {
            sha256: "3A:9F:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD"
                .into(),
        }),
        ..Default::default()
    }
}

/// Everything healthy: synced, the last verify passed.
pub fn healthy() -> LabPageState {
    let hops = hops(None);
    LabPageState {
        components: components(Health::Healthy, Health::Healthy),
        applications: vec![nyan_app(
            "Synced",
            "Healthy",
            "Succeeded",
            "2026-12-05T08:54:19Z",
        )],
        verify: Some(VerifyRun {
            finished_at: "2026-12-05T08:54:40Z".into(),
            ok: true,
            version: "v7".into(),
            total_ms: hops.iter().map(|h| h.elapsed_ms).sum(),
            hops,
            error: String::new(),
        }),
        history: history(),
        ..base()
    }
}

/// A sync under way: the app rolls out, Gitea restarts.
pub fn syncing() -> LabPageState {
    LabPageState {
        components: components(Health::Progressing, Health::Progressing),
        applications: vec![nyan_app("OutOfSync", "Progressing", "Running", "")],
        history: history()[1..].to_vec(),
        ..base()
    }
}

/// The last verify broke at the sync hop.
pub fn failed_hop() -> LabPageState {
    let hops = hops(Some("sync"));
    let mut app = nyan_app("OutOfSync", "Healthy", "Failed", "2026-12-05T08:54:19Z");
    app.conditions = vec!["ComparisonError: manifests in `nyan-cat` do not parse".into()];
    LabPageState {
        components: components(Health::Healthy, Health::Degraded),
        applications: vec![app],
        verify: Some(VerifyRun {
            finished_at: "2026-12-05T09:00:40Z".into(),
            ok: false,
            version: "v8".into(),
            total_ms: hops.iter().map(|h| h.elapsed_ms).sum(),
            hops,
            error: "sync: Application `nyan-cat` in `argocd` did not reach Synced and Healthy at 5e6f7a8 within 5m".into(),
        }),
        history: history(),
        ..base()
    }
}

#[test]
fn the_page_of_a_healthy_lab() {
    insta::assert_snapshot!("lab-page-healthy", render(&healthy()));
}

#[test]
fn the_page_while_a_sync_runs() {
    insta::assert_snapshot!("lab-page-syncing", render(&syncing()));
}

#[test]
fn the_page_after_a_failed_hop() {
    let html = render(&failed_hop());
    assert!(html.contains("hop hop-failed"), "the failed hop is marked");
    assert!(
        html.contains("✗</span> failed"),
        "failed in words, not only red"
    );
    insta::assert_snapshot!("lab-page-failed-hop", html);
}

/// Headings in order (h1, then h2s, h3s only under an h2), `lang`, alt text on every image,
/// and every status badge carries its word.
#[test]
fn the_page_keeps_basic_accessibility() {
    for state in [healthy(), syncing(), failed_hop()] {
        let html = render(&state);
        assert!(html.contains("<html lang=\"en\">"));
        let mut last = 0;
        for (i, _) in html.match_indices("<h") {
            let Some(level) = html[i + 2..].chars().next().and_then(|c| c.to_digit(10)) else {
                continue;
            };
            assert!(
                level <= last + 1,
                "h{level} after h{last}: headings skip a level"
            );
            last = level;
        }
        assert_eq!(html.matches("<h1").count(), 1);
        for (i, _) in html.match_indices("<img") {
            assert!(html[i..].split('>').next().unwrap().contains("alt="));
        }
        for (i, _) in html.match_indices("class=\"badge ") {
            let tail = &html[i..];
            let inner = &tail
                [tail.find('>').unwrap() + 1..tail.find("</span></span>").unwrap_or(tail.len())];
            assert!(
                inner.contains("</span> "),
                "a badge without its word: {inner}"
            );
        }
    }
}

/// The colours the page uses for text meet WCAG AA (4.5:1) against their backgrounds.
#[test]
fn the_page_s_text_colours_have_enough_contrast() {
    fn lum(hex: &str) -> f64 {
        let c = |i: usize| {
            let v = u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f64 / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
    }
    let ratio = |a: &str, b: &str| {
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    };
    let html = render(&healthy());
    let var = |name: &str| {
        let at = html.find(&format!("--{name}:")).unwrap() + name.len() + 3;
        html[at..at + 7].to_string()
    };
    for (fg, bg) in [
        ("fg", "bg"),
        ("muted", "bg"),
        ("link", "bg"),
        ("ok", "ok-bg"),
        ("bad", "bad-bg"),
        ("warn", "warn-bg"),
        ("unk", "unk-bg"),
    ] {
        let r = ratio(&var(fg), &var(bg));
        assert!(r >= 4.5, "--{fg} on --{bg}: {r:.2}:1");
    }
}

/// The page needs no login, so nothing secret may reach it, whatever the state holds: URL
/// credentials, token parameters, and (through the engine's scrubber) the webhook secret.
#[test]
fn no_secret_reaches_the_page() {
    let mut s = failed_hop();
    s.applications[0].repo =
        "https://lab-admin:tok-3f9a8b7c6d5e4f3a2b1c@gitea.lab/lab/gitops.git".into();
    s.applications[0].conditions.push(
        "ComparisonError: git fetch https://oauth2:gho_SeCrEtToKeN123456@gitea.lab/lab/gitops.git failed".into(),
    );
    s.applications[0].last_sync.as_mut().unwrap().message =
        "pull https://gitea.lab/v2/?access_token=at-0011223344556677 refused".into();
    s.verify.as_mut().unwrap().hops[0].detail =
        "GET https://gitea.lab/api/v1/repos?token=tk-99887766554433 answered 200".into();
    s.problems
        .push("read https://u:pw-5566778899@kube/api failed".into());
    let html = render(&s);
    for secret in [
        "tok-3f9a8b7c6d5e4f3a2b1c",
        "gho_SeCrEtToKeN123456",
        "at-0011223344556677",
        "tk-99887766554433",
        "pw-5566778899",
    ] {
        assert!(!html.contains(secret), "`{secret}` is on the page");
    }
    assert!(html.contains("<redacted>") || html.contains("&lt;redacted&gt;"));
    // The engine's last line of defence: a known secret value anywhere in the HTML.
    s.problems
        .push("webhook secret is whsec-a1b2c3d4e5f6a7b8".into());
    let mut scrub = homelab::edges::redact::Scrubber::new();
    scrub.add("whsec-a1b2c3d4e5f6a7b8");
    assert!(!scrub.scrub(&render(&s)).contains("whsec-a1b2c3d4e5f6a7b8"));
}

/// Nothing on the page loads from outside: no `src=`, no stylesheet or font link, and the only
/// `http(s)` addresses are lab links a person may click.
#[test]
fn the_page_loads_nothing_from_anywhere() {
    let html = render(&healthy());
    assert!(!html.contains(" src="), "a loaded resource");
    assert!(!html.contains("<link"), "a linked stylesheet or font");
    assert!(!html.contains("@import") && !html.contains("url("));
    for (i, _) in html.match_indices("http") {
        let url: String = html[i..]
            .chars()
            .take_while(|c| !matches!(c, '"' | '<' | ' ' | '\''))
            .collect();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            continue;
        }
        assert!(
            url.contains("10.0.0.5.sslip.io") || url.contains(".svc.cluster.local"),
            "a URL outside the lab: {url}"
        );
    }
}

// ---- served by the engine, seen by a real browser ----

/// Headless Chromium: Debian's `chromium` (installed by `scripts/test` when absent).
fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| which::which(n).ok())
        .expect("no Chromium on PATH: `apt-get install -y chromium` (scripts/test does it)")
}

/// A forward proxy that answers nothing and records what it was asked for: Chromium sends every
/// request to a host that is not loopback through it, so an empty record means the page asked
/// nothing of the world outside the lab.
struct RecordingProxy {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingProxy {
    fn start() -> RecordingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = [0u8; 4096];
                        let n = conn.read(&mut buf).unwrap_or(0);
                        let head = String::from_utf8_lossy(&buf[..n]);
                        a.lock()
                            .unwrap()
                            .push(head.lines().next().unwrap_or("(empty)").to_string());
                        let _ = conn.write_all(
                            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        RecordingProxy { addr, asked, stop }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// The hosts asked for since the last call (and forget them).
    fn take_hosts(&self) -> std::collections::BTreeSet<String> {
        let asked = std::mem::take(&mut *self.asked.lock().unwrap());
        asked.iter().map(|line| request_host(line)).collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The host of a proxy request line: `CONNECT host:443 HTTP/1.1` or `GET http://host/… HTTP/1.1`.
fn request_host(line: &str) -> String {
    let target = line.split(' ').nth(1).unwrap_or_default();
    let target = target.split_once("://").map_or(target, |(_, r)| r);
    let authority = target.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string()
}

/// Run headless Chromium on `url` with `extra` arguments; its stdout.
fn run_chromium(profile: &Path, proxy: &RecordingProxy, extra: &[String], url: &str) -> String {
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Quieter still: the browser's own calls home (network time, hints, translation).
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
        "--no-pings",
        "--disable-client-side-phishing-detection",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-field-trial-config",
        "--safebrowsing-disable-auto-update",
        "--disable-breakpad",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--proxy-server=http://{}", proxy.addr))
    .args(extra)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_serves_the_page_and_a_browser_shows_what_a_person_needs() {
    let tc = TestCluster::new().await;
    let temp = tempfile::tempdir().unwrap();
    let applier = Applier::new(tc.client.clone());
    let (apps_ns, dest_ns, sys_ns) = (tc.ns("argocd"), tc.ns("app"), tc.ns("system"));
    let crd: Value = serde_json::from_str(
        &std::fs::read_to_string(common::contracts_dir().join("argocd/application-crd.json"))
            .unwrap(),
    )
    .unwrap();
    if !tc.is_real() {
        apply_setup(&applier, crd).await;
    }
    for ns in [&apps_ns, &dest_ns, &sys_ns] {
        apply_setup(
            &applier,
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"homelab.dev/lab": tc.lab}}}),
        )
        .await;
    }
    apply_setup(&applier, json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": apps_ns}, "data": {"installationID": tc.lab}}))
    .await;
    // What the `lab-page` component renders.
    let components = format!(
        "- name: gitea\n  description: Gitea (git server + container registry)\n  namespace: {sys_ns}\n  url: https://gitea.10.0.0.5.sslip.io\n- name: nyan-cat\n  description: the NyanCat demo app\n  namespace: {apps_ns}\n  url: https://nyan.10.0.0.5.sslip.io\n- name: lab-page\n  description: the lab's landing page\n  namespace: {sys_ns}\n  url: https://lab.10.0.0.5.sslip.io\n"
    );
    apply_setup(
        &applier,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "homelab-lab", "namespace": sys_ns},
        "data": {"lab": tc.lab, "domain": "10.0.0.5.sslip.io", "components.yaml": components}}),
    )
    .await;
    apply_setup(&applier, json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "gitea", "namespace": sys_ns,
            "labels": {"homelab.dev/lab": tc.lab, "homelab.dev/component": "gitea"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gitea"}},
            "template": {"metadata": {"labels": {"app": "gitea"}},
                "spec": {"containers": [{"name": "gitea", "image": "gitea/gitea:1.26.1-rootless"}]}}}}))
    .await;
    // Secrets the engine could read and the page must never show.
    const ADMIN_PASSWORD: &str = "page-must-never-show-Zx81q";
    const WEBHOOK_SECRET: &str = "whsec-page-test-7c1d9e2f";
    apply_setup(
        &applier,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "gitea-admin", "namespace": sys_ns},
        "stringData": {"password": ADMIN_PASSWORD}}),
    )
    .await;
    // What `homelab verify` records: a walk that broke at the sync hop.
    let run = failed_hop().verify.unwrap();
    apply_setup(
        &applier,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "homelab-verify", "namespace": sys_ns},
        "data": {"report.json": serde_json::to_string(&run).unwrap()}}),
    )
    .await;
    // A GitOps repository and its Application.
    let repo = Repo::new(&temp.path().join("gitops"));
    repo.write(
        "nyan-cat/web.json",
        &serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web"}, "data": {"version": "v7"}}))
        .unwrap(),
    );
    repo.commit("v7");
    let app: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "nyan-cat", "namespace": apps_ns},
        "spec": {"project": "default",
            "source": {"repoURL": repo.url(), "path": "nyan-cat", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": dest_ns},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}},
    }))
    .unwrap();
    let apps: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        tc.client.clone(),
        &apps_ns,
        &homelab::sync::engine::app_resource(),
    );
    apps.create(&Default::default(), &app).await.unwrap();
    let ca = lab_ca("page", None);
    let ca_file = temp.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();

    let listen = common::free_loopback_addr().to_string();
    let ctx = common::TestContext::new();
    let log = temp.path().join("engine.log");
    let mut engine = ctx
        .command()
        .args(["sync", "--in-cluster", "--listen", &listen, "--poll", "10m"])
        .arg("--kubeconfig")
        .arg(&tc.kubeconfig)
        .args(["--app-namespace", &apps_ns, "--lease-namespace", &sys_ns])
        .arg("--work-dir")
        .arg(temp.path().join("work"))
        .env("POD_NAMESPACE", &sys_ns)
        .env("POD_NAME", "homelab-sync-page-test")
        .env("HOMELAB_SYNC_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("HOMELAB_CA_FILE", &ca_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut engine);

    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (headers, html) = loop {
        if let Ok(r) = http.get(format!("{base}/")).send().await
            && r.status() == 200
        {
            let headers = r.headers().clone();
            let html = r.text().await.unwrap();
            if html.contains("✓</span> Synced") && !html.contains("No sync since") {
                break (headers, html);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed nyan-cat synced; engine log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(html.contains("https://gitea.10.0.0.5.sslip.io"));
    assert!(
        html.contains("Deployment/gitea"),
        "the component's workload health"
    );
    assert!(html.contains("hop hop-failed"), "the failed hop");
    for secret in [ADMIN_PASSWORD, WEBHOOK_SECRET] {
        assert!(!html.contains(secret), "a secret on the page");
    }
    let pem = http.get(format!("{base}/lab/ca.crt")).send().await.unwrap();
    assert_eq!(pem.status(), 200);
    assert_eq!(
        pem.text().await.unwrap(),
        ca.cert_pem.trim_end().to_string() + "\n"
    );

    // A real browser, with every request outside loopback sent to a proxy that records it.
    // Chromium calls Google's services by itself even for a blank tab (accounts.google.com,
    // www.google.com, measured here with every background switch off), so first record what
    // the browser asks for on `about:blank`: the page may add nothing to that.
    let proxy = RecordingProxy::start();
    let url = format!("{base}/");
    let profile = temp.path().join("chromium-profile");
    tokio::task::block_in_place(|| {
        run_chromium(
            &temp.path().join("chromium-blank"),
            &proxy,
            &["--dump-dom".into(), "--virtual-time-budget=8000".into()],
            "about:blank",
        )
    });
    let browser_own = proxy.take_hosts();
    println!("hosts headless Chromium asks for by itself: {browser_own:?}");
    let (p, u, pr) = (profile.clone(), url.clone(), &proxy);
    let dom = tokio::task::block_in_place(|| {
        run_chromium(
            &p,
            pr,
            // Virtual time lets the page's poll run once: the DOM is what a person sees after it.
            &["--dump-dom".into(), "--virtual-time-budget=8000".into()],
            &u,
        )
    });
    let table_at = dom
        .find("id=\"applications-table\"")
        .expect("the Applications table is on the page");
    let table = &dom[table_at..dom[table_at..].find("</table>").unwrap() + table_at];
    assert!(
        table.contains("nyan-cat") && table.contains("Synced"),
        "{table}"
    );
    let hop_at = dom
        .find("hop hop-failed")
        .expect("a failed hop shown as failed");
    let hop = &dom[hop_at..hop_at + dom[hop_at..].find("</li>").unwrap()];
    assert!(
        hop.contains("<strong>sync</strong>") && hop.contains("failed"),
        "{hop}"
    );
    assert!(
        dom.contains("Updates itself every 5 s."),
        "the page's own poll did not run or did not get an answer"
    );
    for secret in [ADMIN_PASSWORD, WEBHOOK_SECRET] {
        assert!(!dom.contains(secret), "a secret in the browser");
    }

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab-page.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::block_in_place(|| {
        run_chromium(
            &profile,
            &proxy,
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,900".into(),
                "--hide-scrollbars".into(),
            ],
            &url,
        )
    });
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    println!("lab page screenshot: {}", shot.display());
    if std::env::var_os("HOMELAB_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/lab-page.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &docs).unwrap();
        println!("copied to {}", docs.display());
    }
    let asked = proxy.asked();
    let page_hosts = proxy.take_hosts();
    let added: Vec<&String> = page_hosts.difference(&browser_own).collect();
    assert!(
        added.is_empty(),
        "the page asked for something outside the lab: {added:?} (all requests: {asked:?})"
    );
    assert!(
        !asked
            .iter()
            .any(|l| l.contains("sslip.io") || l.contains(&listen)),
        "a lab URL went through the proxy: {asked:?}"
    );
}

// ---- `homelab open` ----

/// `homelab open` prints the page's URL and hands it to the OS's opener (`xdg-open` here, a
/// fake on PATH that records its argv); `--print` only prints; a lab with no known address is an
/// error with a hint.
#[test]
fn homelab_open_prints_the_lab_page_url_and_starts_the_browser() {
    let ctx = common::TestContext::new();
    let log = ctx.bin.join("xdg-open.log");
    ctx.fake_tool(
        "xdg-open",
        &format!("#!/bin/sh\necho \"$@\" >> '{}'\n", log.display()),
    );
    let run = ctx.homelab(&["open", "--print", "--domain", "10.0.0.5.sslip.io"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "https://lab.10.0.0.5.sslip.io\n");
    assert!(!log.exists(), "`--print` started a browser");

    let run = ctx.homelab(&["open", "--domain", "10.0.0.5.sslip.io"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "https://lab.10.0.0.5.sslip.io\n");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "https://lab.10.0.0.5.sslip.io\n"
    );

    let run = ctx.homelab(&["open", "--lab", "never-built"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: the address of lab `never-built` is not known yet"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: run `homelab up` first"),
        "{}",
        run.stderr
    );

    let run = ctx.homelab(&["open", "--stack", "argocd", "--domain", "x.test"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("has no lab page"), "{}", run.stderr);
}

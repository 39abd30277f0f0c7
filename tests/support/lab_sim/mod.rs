//! A whole lab for `homelab up` to build, made of the contract-faithful fakes wired as a real
//! one is: the fake `multipass` (or a user kubeconfig, for `--provider existing`) hands out a
//! kubeconfig for the fake Kubernetes API server (HTTPS with client certificates, like microk8s);
//! the API server's simulated controllers roll workloads out, issue cert-manager certificates
//! and publish Ingress status; a kubelet ([`kubelet`]) starts what the rolled-out pods run — the
//! fake Gitea and Drone configured from their pod templates, the real `homelab sync` engine, the
//! NyanCat site from the image the pipeline pushed; the NGINX ingress ([`ingress`]) answers on the
//! node's address, port 443, with the certificates cert-manager issued; Drone's builds run the
//! real `.drone.yml` ([`runner`]); in-cluster names, and the lab's names as the cluster's
//! CoreDNS configuration answers them, resolve through [`network`].
//!
//! Nothing is wired by the test that `homelab up` should wire: every address, name, secret and
//! certificate the fakes use comes from the objects `up` applied (or the lab state `up` wrote,
//! for the lab CA the fakes' own code trusts).

pub mod argocd_controller;
pub mod ingress;
pub mod kubelet;
pub mod network;
pub mod runner;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::common::{Run, TestContext, contracts_dir};
use crate::support::fake_drone::FakeDrone;
use crate::support::fake_gitea::FakeGitea;
use crate::support::fake_kube::controllers::{Controllers, Kubelet};
use crate::support::fake_kube::tls::ClusterPki;
use crate::support::fake_kube::{FakeKube, Inner, Listen};
use kubelet::{RunnerPod, SyncProcess};
use network::Network;

/// The lab name every scenario uses.
pub const LAB: &str = "t";

/// The Corefile microk8s's `dns` addon applies (see where [`Sim::start`] inserts it).
pub const MICROK8S_DNS_ADDON_COREFILE: &str = ".:53 {
    errors
    health {
      lameduck 5s
    }
    ready
    log . {
      class error
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
";

/// What the kubelet and the runner share: the cluster as the test plays it.
pub struct World {
    pub kube: Arc<Inner>,
    pub net: Network,
    /// Where the lab's `https://<name>.<domain>` URLs connect (the node's address, 443).
    pub ingress_addr: SocketAddr,
    pub gitea_host: String,
    /// Every lab host name (`gitea.<domain>`, …).
    pub lab_hosts: Vec<String>,
    /// The lab state directory `up` writes (the fakes' own code reads the lab CA there).
    pub state_dir: PathBuf,
    /// Where pods and builds keep their files.
    pub work: PathBuf,
    /// The sync engine's kubeconfig (its service account, as a client certificate or token).
    pub sync_kubeconfig: PathBuf,
    /// The fake multipass's state (images imported into the nodes' containerd), if any.
    pub node_state: Option<PathBuf>,
    pub gitea: Mutex<Option<FakeGitea>>,
    pub drone: Mutex<Option<FakeDrone>>,
    pub drone_rpc_secret: Mutex<String>,
    pub runner_pod: Mutex<Option<RunnerPod>>,
    pub sync: Mutex<Option<SyncProcess>>,
    /// The NyanCat pod's files (from the image it runs) and where it serves them.
    pub site_files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    pub site_addr: SocketAddr,
    pub notes: Mutex<Vec<String>>,
    /// The network from the lab to registries outside it is cut (`up` after `prepare`, offline):
    /// a pull from one fails as containerd's does when the registry cannot be reached.
    pub registries_cut: std::sync::atomic::AtomicBool,
    /// Every connection the lab tried to make outside itself (a node's image pull from a public
    /// registry, kaniko fetching a base image), as `what reference` lines.
    pub outside: Mutex<Vec<String>>,
    /// The proxy the pipeline's shell steps get (`https_proxy` and friends, which git and curl
    /// honour) and the names they reach directly (`no_proxy`): set, a step's fetch from outside
    /// the lab goes to that proxy, which a test can record and refuse.
    pub step_proxy: Mutex<Option<(String, String)>>,
    /// The Argo CD application controller's stand-in, once its StatefulSet rolled out.
    pub argocd: Mutex<Option<Arc<argocd_controller::ArgoCd>>>,
    /// A test's faster poll than `timeout.reconciliation` (Argo CD's is 120 s by default).
    pub argocd_poll: Mutex<Option<Duration>>,
    me: Weak<World>,
}

impl World {
    pub fn me(&self) -> Arc<World> {
        self.me.upgrade().expect("the world is alive")
    }

    pub fn note(&self, s: &str) {
        self.notes.lock().unwrap().push(s.to_string());
    }

    /// A connection outside the lab: recorded; refused while registries are cut.
    pub fn reach_outside(&self, what: &str) -> Result<(), String> {
        self.outside.lock().unwrap().push(what.to_string());
        if self
            .registries_cut
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            Err("the network to public registries is cut".into())
        } else {
            Ok(())
        }
    }

    /// The lab CA, as `up` stored it.
    pub fn lab_ca(&self) -> homelab::model::tls::LabCa {
        let read = |f: &str| std::fs::read_to_string(self.state_dir.join("ca").join(f)).unwrap();
        homelab::model::tls::LabCa {
            cert_pem: read("ca.crt"),
            key_pem: homelab::edges::redact::Secret::new(read("ca.key")),
        }
    }

    pub fn gitea(&self) -> FakeGitea {
        self.gitea.lock().unwrap().clone().expect("Gitea runs")
    }

    pub fn drone(&self) -> FakeDrone {
        self.drone.lock().unwrap().clone().expect("Drone runs")
    }
}

/// nginx serving the NyanCat image's `/usr/share/nginx/html`.
async fn serve_site(files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = files.clone();
        async move {
            let mut path = uri.path().to_string();
            if path.ends_with('/') {
                path.push_str("index.html");
            }
            let body = files
                .lock()
                .unwrap()
                .get(&format!("/usr/share/nginx/html{path}"))
                .cloned();
            match body {
                Some(b) => {
                    let ct = if path.ends_with(".html") {
                        "text/html"
                    } else if path.ends_with(".css") {
                        "text/css"
                    } else {
                        "application/octet-stream"
                    };
                    ([("content-type", ct)], b).into_response()
                }
                None => (axum::http::StatusCode::NOT_FOUND, "404 Not Found").into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

use axum::response::IntoResponse as _;

/// A local HTTP server standing in for the release host (`upstream.mirror`).
async fn serve_mirror(files: BTreeMap<String, String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = files.clone();
        async move {
            match files.get(uri.path()) {
                Some(t) => (axum::http::StatusCode::OK, t.clone()).into_response(),
                None => (axum::http::StatusCode::NOT_FOUND, "").into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Which provider the scenario uses.
#[derive(Clone, Debug)]
pub enum Provider {
    /// The fake multipass; the VM gets `node_ip`.
    Multipass,
    /// A kubeconfig context for the fake API server, `--domain`.
    Existing { domain: String },
}

pub struct Sim {
    pub ctx: TestContext,
    pub fake: FakeKube,
    pub world: Arc<World>,
    pub ingress: ingress::Ingress,
    pub domain: String,
    /// The fake multipass's state directory.
    pub mp_dir: PathBuf,
    /// The API server user `homelab` (CLI) authenticates as.
    pub cli_user: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        // The world is referenced by the fakes it drives (a cycle that outlives the test), so
        // the engine process it started is stopped here, also when the test fails.
        if let Some(s) = self.world.sync.lock().unwrap().as_mut() {
            let _ = s.child.start_kill();
        }
    }
}

/// A loopback address of its own for this scenario, with the ingress listening on its port 443
/// — or on an ephemeral port with the test-only seam `HOMELAB_TEST_INGRESS_PORT` set, where a
/// privileged port cannot be bound (or `on_443` is false, so the seam is exercised too).
fn node_address(seed: u8, on_443: bool) -> (IpAddr, std::net::TcpListener) {
    let pid = std::process::id();
    for attempt in 0..50u32 {
        let ip = IpAddr::from([127, 77, ((pid + attempt) % 250) as u8 + 1, seed]);
        if !on_443 {
            return (ip, std::net::TcpListener::bind((ip, 0)).unwrap());
        }
        match std::net::TcpListener::bind((ip, 443)) {
            Ok(l) => return (ip, l),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!(
                    "cannot listen on {ip}:443 ({e}): the ingress takes an ephemeral port (HOMELAB_TEST_INGRESS_PORT)"
                );
                return (ip, std::net::TcpListener::bind((ip, 0)).unwrap());
            }
            Err(_) => continue,
        }
    }
    panic!("no free loopback address for the node");
}

/// The fake multipass's script, with this machine's python.
fn fake_multipass() -> String {
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    include_str!("../../fakes/multipass").replacen(
        "#!/usr/bin/env python3",
        &format!("#!{python}"),
        1,
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Sim {
    pub async fn start(provider: Provider, seed: u8) -> Sim {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut ctx = TestContext::new();
        // The multipass lab takes port 443 like a real node; the existing cluster exercises
        // the seam for machines where 443 cannot be bound.
        let (node_ip, ingress_listener) =
            node_address(seed, matches!(provider, Provider::Multipass));
        let ingress_port = ingress_listener.local_addr().unwrap().port();
        let work = ctx.temp.path().join("cluster");
        std::fs::create_dir_all(&work).unwrap();
        let (fake, cli_user, sync_kubeconfig) = match &provider {
            Provider::Multipass => {
                let pki = ClusterPki::generate(node_ip);
                let fake = FakeKube::start_with(Listen {
                    ip: node_ip,
                    tls: Some(pki.clone()),
                })
                .await;
                let engine = pki.client("system:serviceaccount:homelab-system:homelab-sync");
                let path = work.join("homelab-sync.kubeconfig");
                std::fs::write(
                    &path,
                    format!(
                        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                        fake.url(),
                        b64(&pki.ca_pem),
                        b64(&engine.cert_pem),
                        b64(&engine.key_pem)
                    ),
                )
                .unwrap();
                (fake, "admin".to_string(), path)
            }
            Provider::Existing { .. } => {
                let fake = FakeKube::start_with(Listen::default()).await;
                let path = work.join("homelab-sync.kubeconfig");
                std::fs::write(
                    &path,
                    format!(
                        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: homelab-sync-service-account\n",
                        fake.url()
                    ),
                )
                .unwrap();
                (fake, "token:lab-admin-token".to_string(), path)
            }
        };
        let domain = match &provider {
            Provider::Multipass => format!("{node_ip}.sslip.io"),
            Provider::Existing { domain } => domain.clone(),
        };
        let stack = homelab::model::stack::load("default", std::path::Path::new(".")).unwrap();
        let lab_hosts: Vec<String> = stack
            .components
            .iter()
            .filter_map(|c| c.hostname.as_ref().map(|h| format!("{h}.{domain}")))
            .collect();
        let site_files = Arc::new(Mutex::new(BTreeMap::new()));
        let site_addr = serve_site(site_files.clone()).await;
        let ingress_addr = SocketAddr::new(node_ip, ingress_port);
        let net = Network::new(fake.inner.clone(), ingress_addr);
        let world = Arc::new_cyclic(|me| World {
            kube: fake.inner.clone(),
            net: net.clone(),
            ingress_addr,
            gitea_host: format!("gitea.{domain}"),
            lab_hosts,
            state_dir: ctx.state_dir(LAB),
            work: work.clone(),
            sync_kubeconfig,
            node_state: matches!(provider, Provider::Multipass)
                .then(|| ctx.temp.path().join("multipassd").join("state.json")),
            gitea: Mutex::new(None),
            drone: Mutex::new(None),
            drone_rpc_secret: Mutex::new(String::new()),
            runner_pod: Mutex::new(None),
            sync: Mutex::new(None),
            site_files,
            site_addr,
            notes: Mutex::new(Vec::new()),
            registries_cut: std::sync::atomic::AtomicBool::new(false),
            outside: Mutex::new(Vec::new()),
            step_proxy: Mutex::new(None),
            argocd: Mutex::new(None),
            argocd_poll: Mutex::new(None),
            me: me.clone(),
        });
        let ingress = ingress::Ingress::start(ingress_listener, fake.inner.clone(), net);
        fake.on_exec(kubelet::exec_handler(world.clone()));
        let kubelet_world = world.clone();
        fake.controllers(Controllers {
            ready_after: Duration::from_millis(20),
            pods: true,
            kubelet: Some(Kubelet(Arc::new(move |w: Value| {
                Box::pin(kubelet_world.clone().run_pod(w))
            }))),
            ..Default::default()
        });
        // What the cluster has before the lab: microk8s's `hostpath-storage` addon (or the
        // existing cluster's default class), and its node.
        fake.insert(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "microk8s-hostpath", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "microk8s.io/hostpath", "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
        }));
        // The cluster's DNS before the lab: on microk8s, the `dns` addon's ConfigMap as its
        // enable script applies it with `kubectl apply` (canonical/microk8s-core-addons 1.36
        // f689811, addons/dns/coredns.yaml, with `$CLUSTERDOMAIN` = cluster.local and
        // `$NAMESERVERS` = /etc/resolv.conf, what `addons/dns/enable` picks on a VM with a
        // resolv.conf), owned by kubectl's client-side field manager; an existing cluster's
        // owner configured theirs to answer the lab's domain (the README asks it of them).
        let corefile = match &provider {
            Provider::Multipass => MICROK8S_DNS_ADDON_COREFILE.to_string(),
            Provider::Existing { domain } => format!(
                "{MICROK8S_DNS_ADDON_COREFILE}{domain}:53 {{\n    hosts {{\n        {node_ip} {}\n    }}\n}}\n",
                world.lab_hosts.join(" ")
            ),
        };
        fake.inner
            .store
            .lock()
            .unwrap()
            .put(
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "coredns", "namespace": "kube-system",
                                 "labels": {"addonmanager.kubernetes.io/mode": "EnsureExists", "k8s-app": "kube-dns"}},
                    "data": {"Corefile": corefile},
                }),
                "kubectl-client-side-apply",
            )
            .expect("the dns addon's ConfigMap");
        let node_name = format!("homelab-{LAB}-1");
        fake.insert(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": {"kubernetes.io/hostname": node_name}},
        }));
        fake.set_status(
            "v1",
            "Node",
            "",
            &node_name,
            json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [{"type": "InternalIP", "address": node_ip.to_string()}, {"type": "Hostname", "address": node_name}],
                "nodeInfo": {"kubeletVersion": "v1.36.0"},
            }),
        );

        ctx.env.insert("HOMELAB_LAB".into(), LAB.into());
        ctx.env.insert(
            "HOMELAB_TEST_WAITS".into(),
            "poll_ms=10,poll_max_ms=100,ready_ms=30000,provisioned_ms=30000,vm_running_ms=30000,exec_ms=30000".into(),
        );
        // `up`'s preflight measures the computer (issue 12); the simulation must not depend on
        // how much memory and disk the machine running it has.
        ctx.env.insert(
            "HOMELAB_TEST_HOST".into(),
            crate::support::common::ROOMY_HOST.into(),
        );
        if ingress_port != 443 {
            ctx.env
                .insert("HOMELAB_TEST_INGRESS_PORT".into(), ingress_port.to_string());
        }
        let stand_in = crate::support::fake_kube::controllers::cert_manager_stand_in();
        // The `argocd` stack's Argo CD install manifest, in the derived form the contracts keep
        // (contracts/argocd/install.yaml: every object of v3.5.1's, with the fields the lab uses).
        let argocd = crate::support::common::fixtures::argocd_install();
        let mirror = serve_mirror(BTreeMap::from([
            (
                "/github.com/cert-manager/cert-manager/releases/download/v1.21.1/cert-manager.yaml"
                    .to_string(),
                stand_in,
            ),
            (
                crate::support::common::fixtures::ARGOCD_INSTALL_URL
                    .trim_start_matches("https:/")
                    .to_string(),
                argocd,
            ),
        ]))
        .await;
        ctx.env.insert("HOMELAB_UPSTREAM_MIRROR".into(), mirror);
        let mp_dir = ctx.temp.path().join("multipassd");
        match &provider {
            Provider::Multipass => {
                ctx.fake_tool("multipass", &fake_multipass());
                ctx.env
                    .insert("FAKE_MULTIPASS_DIR".into(), mp_dir.display().to_string());
                ctx.env.insert(
                    "FAKE_MULTIPASS_CONTRACTS".into(),
                    contracts_dir().display().to_string(),
                );
                let pki = fake.pki().unwrap();
                let admin = pki.client("admin");
                std::fs::create_dir_all(&mp_dir).unwrap();
                std::fs::write(
                    mp_dir.join("state.json"),
                    serde_json::to_string(&json!({
                        "instances": {},
                        "knobs": {
                            "ips": [node_ip.to_string()],
                            "kube_api": {
                                "port": fake.addr().port(),
                                "ca_data": b64(&pki.ca_pem),
                                "cert_data": b64(&admin.cert_pem),
                                "key_data": b64(&admin.key_pem),
                            },
                        },
                    }))
                    .unwrap(),
                )
                .unwrap();
            }
            Provider::Existing { .. } => {
                // Nothing can side-load into a cluster homelab did not build: the engine image
                // is one the user pushed of this very code (the kubelet runs this binary for
                // it); a development build without it is refused at `up` (issue 12).
                ctx.env.insert(
                    "HOMELAB_SYNC_IMAGE".into(),
                    homelab::sync::image::BuildInfo::current().published_image(),
                );
                let kubeconfig = ctx.home.join(".kube/config");
                std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
                std::fs::write(
                    &kubeconfig,
                    format!(
                        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab-cluster\n  cluster:\n    server: {}\ncontexts:\n- name: lab-cluster\n  context: {{cluster: lab-cluster, user: lab-admin}}\ncurrent-context: lab-cluster\nusers:\n- name: lab-admin\n  user:\n    token: lab-admin-token\n",
                        fake.url()
                    ),
                )
                .unwrap();
            }
        }
        Sim {
            ctx,
            fake,
            world,
            ingress,
            domain,
            mp_dir,
            cli_user,
        }
    }

    /// Run `homelab <args>` without blocking the fakes.
    pub async fn homelab(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::from(self.ctx.command());
        let out = cmd.args(args).output().await.unwrap();
        Run {
            code: out.status.code(),
            stdout: self.ctx.filter(&String::from_utf8_lossy(&out.stdout)),
            stderr: self.ctx.filter(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Every argv the fake multipass saw since the last [`Sim::clear_argv`].
    pub fn argv(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.mp_dir.join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn clear_argv(&self) {
        let _ = std::fs::remove_file(self.mp_dir.join("argv.log"));
    }

    pub fn multipass_state(&self) -> Value {
        std::fs::read_to_string(self.mp_dir.join("state.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(json!({}))
    }

    /// Assert that `run` (of `what`) succeeded; otherwise show its stdout, the last 60 lines of
    /// its stderr and what went on in the cluster.
    #[track_caller]
    pub fn assert_ok(&self, what: &str, run: &crate::support::common::Run) {
        let lines: Vec<&str> = run.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        assert_eq!(
            run.code,
            Some(0),
            "{what} failed\nstdout:\n{}\nstderr (last 60 lines):\n{tail}\n{}",
            run.stdout,
            self.diagnostics()
        );
    }

    /// What went on in the cluster, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        out.push_str("kubelet:\n");
        for n in self.world.notes.lock().unwrap().iter() {
            out.push_str(&format!("  {n}\n"));
        }
        out.push_str("cluster DNS, lookups that failed:\n");
        for m in self.world.net.misses() {
            out.push_str(&format!("  {m}\n"));
        }
        out.push_str("ingress:\n");
        for h in self.ingress.hits() {
            out.push_str(&format!(
                "  {} {}{} → {}\n",
                h.method, h.host, h.path, h.status
            ));
        }
        if let Some(g) = self.world.gitea.lock().unwrap().as_ref() {
            out.push_str("gitea deliveries:\n");
            for d in g.deliveries() {
                out.push_str(&format!("  {} {} {:?}\n", d.event, d.url, d.result));
            }
            let v = g.violations();
            if !v.is_empty() {
                out.push_str(&format!("gitea violations: {v:?}\n"));
            }
        }
        if let Some(d) = self.world.drone.lock().unwrap().as_ref() {
            for b in d.builds("lab/nyan-cat") {
                out.push_str(&format!(
                    "build #{} {} {} {}\n",
                    b.number, b.event, b.status, b.after
                ));
                for s in &b.steps {
                    out.push_str(&format!(
                        "  step {} {} ({})\n",
                        s.name, s.status, s.exit_code
                    ));
                    for l in &s.log {
                        out.push_str(&format!("    | {l}\n"));
                    }
                }
            }
            let v = d.violations();
            if !v.is_empty() {
                out.push_str(&format!("drone violations: {v:?}\n"));
            }
        }
        if let Some(a) = self.world.argocd.lock().unwrap().as_ref() {
            out.push_str("argo cd stand-in:\n");
            for l in a.log.lock().unwrap().iter() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out.push_str("sync engine log (tail):\n");
        let log = kubelet::sync_log(&self.world);
        let lines: Vec<&str> = log.lines().collect();
        let keep = if std::env::var_os("E2E_DEBUG").is_some() {
            lines.len()
        } else {
            40
        };
        for l in &lines[lines.len().saturating_sub(keep)..] {
            out.push_str(&format!("  {l}\n"));
        }
        if let Some(app) =
            self.fake
                .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        {
            out.push_str(&format!("Application status: {}\n", app["status"]));
        }
        out
    }
}

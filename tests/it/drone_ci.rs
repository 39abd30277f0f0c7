//! Drone wiring, the tool-driven OAuth login, `homelab verify` and the pipeline file, tested
//! against the fake Gitea (swagger-checked API plus the web sign-in and consent pages of NOTES
//! §3, both Gitea behaviours) and the fake Drone (every call checked against Drone 2.24's
//! `routes.json`), over HTTPS with lab-CA certificates; plus the `verify` command's CLI.

use crate::support::common;

use crate::support::fake_drone;
use crate::support::fake_gitea;
use crate::support::fake_kube;
use crate::support::http_kit::tls::lab_ca;
use common::fixtures;
use common::logs::{captured, logs};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_drone::{BuildDone, FakeDrone, Script};
use fake_gitea::oauth::WebFlavor;
use fake_gitea::{FakeGitea, Options};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use homelab::edges::http::Endpoint;
use homelab::edges::output::{Outcome, Silent};
use homelab::edges::redact::Secret;
use homelab::edges::state::LabState;
use homelab::services::ci::drone::{self as drone_ci, DroneClient, pipeline};
use homelab::services::ci::{
    AdminLogin, Ci, CiKind, CiReport, CiWiring, WireTimeouts, WorkloadError, Workloads,
};
use homelab::verify::{
    AppRef, AppStatus, Applications, VerifyError, VerifyOptions, VerifyTarget, verify,
};

// ---------------------------------------------------------------------------------------------
// The Kubernetes seam: Secret `drone` as apply left it, and a Deployment whose rollout
// restarts the fake Drone with what the Secret then holds.

#[derive(Clone)]
struct FakeWorkloads {
    drone: FakeDrone,
    secret: Arc<Mutex<BTreeMap<String, Secret>>>,
    annotations: Arc<Mutex<BTreeMap<String, String>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeWorkloads {
    fn new(drone: &FakeDrone) -> FakeWorkloads {
        // What the apply engine renders before the OAuth client exists: the keys, empty.
        let secret = BTreeMap::from([
            ("rpc-secret".to_string(), Secret::new("rpc")),
            ("gitea-client-id".to_string(), Secret::new("")),
            ("gitea-client-secret".to_string(), Secret::new("")),
        ]);
        let annotations =
            BTreeMap::from([(drone_ci::ANNOTATION_CLIENT_ID.to_string(), String::new())]);
        FakeWorkloads {
            drone: drone.clone(),
            secret: Arc::new(Mutex::new(secret)),
            annotations: Arc::new(Mutex::new(annotations)),
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn writes(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with("apply") || c.starts_with("roll"))
            .cloned()
            .collect()
    }
}

impl Workloads for FakeWorkloads {
    async fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Secret>>, WorkloadError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("get secret {namespace}/{name}"));
        Ok(Some(self.secret.lock().unwrap().clone()))
    }

    async fn apply_secret_data(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Secret>,
    ) -> Result<(), WorkloadError> {
        self.calls.lock().unwrap().push(format!(
            "apply secret {namespace}/{name} {:?}",
            data.keys().collect::<Vec<_>>()
        ));
        self.secret.lock().unwrap().extend(data.clone());
        Ok(())
    }

    async fn pod_template_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, WorkloadError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("get deployment {namespace}/{name}"));
        Ok(Some(self.annotations.lock().unwrap().clone()))
    }

    async fn roll_deployment(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
        _timeout: Duration,
    ) -> Result<(), WorkloadError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("roll deployment {namespace}/{name}"));
        self.annotations.lock().unwrap().extend(annotations.clone());
        // The new pod reads its environment from the Secret as it is now.
        let s = self.secret.lock().unwrap().clone();
        self.drone.restart_with(
            s["gitea-client-id"].expose(),
            s["gitea-client-secret"].expose(),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Application statuses as a watch the test drives.

#[derive(Clone)]
struct FakeApps {
    tx: Arc<tokio::sync::watch::Sender<Option<AppStatus>>>,
}

impl FakeApps {
    fn new() -> FakeApps {
        let (tx, _) = tokio::sync::watch::channel(Some(AppStatus {
            sync: "Synced".into(),
            revision: "0000000".into(),
            health: "Progressing".into(),
            health_message: "waiting for the first image".into(),
            ..AppStatus::default()
        }));
        FakeApps { tx: Arc::new(tx) }
    }

    fn set(&self, status: AppStatus) {
        self.tx.send_replace(Some(status));
    }
}

impl Applications for FakeApps {
    fn watch(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> BoxStream<'static, Result<Option<AppStatus>, String>> {
        let rx = self.tx.subscribe();
        let first = rx.borrow().clone();
        futures::stream::once(async move { Ok(first) })
            .chain(futures::stream::unfold(rx, |mut rx| async move {
                rx.changed().await.ok()?;
                let v = rx.borrow_and_update().clone();
                Some((Ok(v), rx))
            }))
            .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// The NyanCat site: HTTPS with a certificate from the lab CA (or another CA, to see TLS fail).

const NYAN_HOST: &str = "nyan.127.0.0.1.sslip.io";

#[derive(Clone)]
struct Site {
    page: Arc<Mutex<String>>,
    addr: std::net::SocketAddr,
}

impl Site {
    async fn start(ca: &homelab::model::tls::LabCa, page: &str) -> Site {
        let listener = crate::support::http_kit::tls::TlsListener::for_host(ca, NYAN_HOST).await;
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let page = Arc::new(Mutex::new(page.to_string()));
        let p = page.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let p = p.clone();
                async move { axum::response::Html(p.lock().unwrap().clone()) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Site { page, addr }
    }

    fn endpoint(&self, ca: &homelab::model::tls::LabCa) -> Endpoint {
        let base_url = format!("https://{NYAN_HOST}:{}", self.addr.port());
        fixtures::pinned_endpoint(base_url, ca, self.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// A lab: fake Gitea with the two repositories, fake Drone, the seams, a lab state.

const ADMIN: &str = "lab-admin";
const IMAGE: &str = "gitea.127.0.0.1.sslip.io/lab/nyan-cat";

fn page(version: &str) -> String {
    format!(
        "<!doctype html><html><body><main>nyan</main>\n<footer><p class=\"version\">version <span id=\"version\">{version}</span></p></footer></body></html>\n"
    )
}

fn deployment(tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nyan-cat\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: \"{IMAGE}:{tag}\"\n"
    )
}

/// What the pipeline and the sync engine do after a successful build, switchable per test.
#[derive(Clone, Copy)]
struct Loop {
    bump: bool,
    sync: bool,
    serve: bool,
}

struct Lab {
    gitea: FakeGitea,
    drone: FakeDrone,
    workloads: FakeWorkloads,
    apps: FakeApps,
    site: Site,
    state: LabState,
    password: Secret,
    gitea_token: Secret,
    loop_: Arc<Mutex<Loop>>,
    _dir: tempfile::TempDir,
}

struct LabOptions {
    flavor: WebFlavor,
    drone: fake_drone::Options,
    page: String,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            flavor: WebFlavor::NoCsrf,
            drone: fake_drone::Options {
                gitea: Endpoint {
                    base_url: String::new(),
                    ca_pem: None,
                    resolve: None,
                },
                admin_user: ADMIN.into(),
                admin_token: "0123456789abcdef0123456789abcdef".into(),
                registration_closed: true,
                custom_trigger: true,
                server_host: None,
                proxy: None,
            },
            page: page("v1"),
        }
    }
}

impl Lab {
    async fn new(opts: LabOptions) -> Lab {
        logs();
        let gitea = FakeGitea::start(Options::default()).await;
        gitea.oauth().flavor = opts.flavor;
        let dir = tempfile::tempdir().unwrap();
        let state = LabState::at("t", dir.path().join("t"));
        let password = state.secrets().unwrap().get("gitea_admin_password");
        gitea.add_user(ADMIN, password.expose(), true);
        // homelab's own token, as the Gitea wiring leaves it in the state.
        let gitea_token = Secret::new(hex::encode(
            homelab::edges::state::random_bytes(20).unwrap(),
        ));
        {
            let mut d = gitea.data();
            d.tokens.push(fake_gitea::Token {
                id: 900,
                name: "homelab".into(),
                owner: ADMIN.into(),
                value: gitea_token.expose().into(),
                scopes: Some(
                    [
                        "write:admin",
                        "write:organization",
                        "write:package",
                        "write:repository",
                        "write:user",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ),
            });
        }
        state
            .store_secrets(&[("gitea_token", gitea_token.expose())])
            .unwrap();
        let pipeline = rendered_pipeline("127.0.0.1.sslip.io");
        gitea.seed_repo(
            "lab",
            "nyan-cat",
            &[
                ("index.html", &opts.page),
                ("Dockerfile", "FROM nginx:1.29\n"),
                (".drone.yml", &pipeline),
            ],
        );
        gitea.seed_repo(
            "lab",
            "gitops",
            &[("apps/nyan-cat/deployment.yaml", &deployment("bootstrap"))],
        );
        let mut dopts = opts.drone;
        dopts.gitea = gitea.endpoint();
        let drone = FakeDrone::start(dopts, &gitea.ca).await;
        gitea.deliver_hooks_to(&[(fake_drone::HOST, drone.addr)]);
        let workloads = FakeWorkloads::new(&drone);
        let apps = FakeApps::new();
        let site = Site::start(&gitea.ca, &page("v1")).await;
        let lab = Lab {
            gitea,
            drone,
            workloads,
            apps,
            site,
            state,
            password,
            gitea_token,
            loop_: Arc::new(Mutex::new(Loop {
                bump: true,
                sync: true,
                serve: true,
            })),
            _dir: dir,
        };
        lab.install_loop();
        lab
    }

    /// What the pipeline's deploy step, the sync engine and the rollout do after a build.
    fn install_loop(&self) {
        let gitea = self.gitea.clone();
        let apps = self.apps.clone();
        let site = self.site.clone();
        let mode = self.loop_.clone();
        self.drone.on_success(Arc::new(move |done: BuildDone| {
            let (gitea, apps, site, mode) = (
                gitea.clone(),
                apps.clone(),
                site.clone(),
                *mode.lock().unwrap(),
            );
            Box::pin(async move {
                if done.repo != "lab/nyan-cat" || !mode.bump {
                    return;
                }
                let path = "apps/nyan-cat/deployment.yaml";
                gitea.commit_file(
                    "lab",
                    "gitops",
                    path,
                    &deployment(&done.commit),
                    &format!("nyan-cat: deploy {} [skip ci]", done.commit),
                );
                let head = gitea.head("lab", "gitops");
                if mode.sync {
                    apps.set(AppStatus {
                        sync: "Synced".into(),
                        revision: head,
                        health: "Healthy".into(),
                        ..AppStatus::default()
                    });
                }
                if mode.serve {
                    let dir = gitea.repo_dir("lab", "nyan-cat");
                    let (_, html, _) =
                        fake_gitea::contents::read_file(&dir, &done.commit, "index.html").unwrap();
                    *site.page.lock().unwrap() = String::from_utf8(html).unwrap();
                }
            })
        }));
    }

    fn wiring(&self) -> CiWiring<'_> {
        CiWiring {
            kind: CiKind::Drone,
            ci: self.drone.endpoint(),
            gitea: self.gitea.endpoint(),
            admin: AdminLogin {
                user: ADMIN.into(),
                password: self.password.clone(),
            },
            gitea_token: self.gitea_token.clone(),
            org: "lab".into(),
            app_repo: "nyan-cat".into(),
            gitops_repo: "gitops".into(),
            branch: "main".into(),
            namespace: "drone".into(),
            state: &self.state,
            timeouts: WireTimeouts {
                rollout: Duration::from_secs(5),
                ready: Duration::from_secs(5),
            },
        }
    }

    async fn try_wire(&self) -> Result<CiReport, homelab::edges::error::Error> {
        homelab::services::ci::wire(&self.wiring(), &self.workloads, &Silent).await
    }

    async fn wire(&self) -> CiReport {
        let r = self.try_wire().await;
        self.assert_no_violations();
        match r {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn assert_no_violations(&self) {
        self.gitea.assert_no_violations();
        self.drone.assert_no_violations();
    }

    fn secret(&self, key: &str) -> Secret {
        self.state.secrets().unwrap().get(key)
    }

    fn forget(&self, key: &str) {
        let path = self.state.path(homelab::edges::state::SECRETS_FILE);
        let mut map: BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        map.remove(key);
        self.state
            .write_json(homelab::edges::state::SECRETS_FILE, &map)
            .unwrap();
    }

    fn step<'r>(report: &'r CiReport, name: &str) -> &'r homelab::services::ci::StepReport {
        report
            .steps
            .iter()
            .find(|s| s.step == name)
            .unwrap_or_else(|| panic!("no step `{name}` in {:#?}", report.steps))
    }

    /// Every secret the lab knows, for the check that none reaches a log or a message.
    fn all_secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            "gitea_admin_password",
            "gitea_token",
            drone_ci::STATE_CLIENT_SECRET,
            drone_ci::STATE_DRONE_TOKEN,
            drone_ci::STATE_REGISTRY_TOKEN,
            drone_ci::STATE_GITOPS_TOKEN,
        ]
        .iter()
        .map(|k| self.secret(k).expose().to_string())
        .filter(|v| !v.is_empty())
        .collect();
        out.push(self.drone.shared.options.admin_token.clone());
        out
    }

    #[track_caller]
    fn assert_secrets_not_in(&self, text: &str) {
        for s in self.all_secrets() {
            assert!(
                !text.contains(&s),
                "a secret (…{}) leaked into:\n{text}",
                &s[s.len() - 4..]
            );
        }
    }

    async fn wait_build(&self, number: i64) -> fake_drone::Build {
        for _ in 0..200 {
            let b = self
                .drone
                .builds("lab/nyan-cat")
                .into_iter()
                .find(|b| b.number == number);
            if let Some(b) = b.filter(|b| b.status != "pending" && b.status != "running") {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("build {number} did not finish");
    }

    fn target(&self) -> VerifyTarget {
        let drone = DroneClient::new(&self.drone.endpoint())
            .unwrap()
            .with_token(self.secret(drone_ci::STATE_DRONE_TOKEN));
        VerifyTarget {
            gitea: self.gitea.endpoint(),
            gitea_token: self.gitea_token.clone(),
            ci: Ci::Drone(drone),
            org: "lab".into(),
            app_repo: "nyan-cat".into(),
            gitops_repo: "gitops".into(),
            branch: "main".into(),
            page_path: "index.html".into(),
            deployment_path: "apps/nyan-cat/deployment.yaml".into(),
            image: IMAGE.into(),
            application: AppRef {
                namespace: "argocd".into(),
                name: "nyan-cat".into(),
            },
            site: self.site.endpoint(&self.gitea.ca),
        }
    }
}

fn quick() -> VerifyOptions {
    VerifyOptions {
        settle: Duration::from_secs(5),
        build_start: Duration::from_millis(800),
        build_finish: Duration::from_secs(5),
        bump: Duration::from_millis(400),
        sync: Duration::from_millis(500),
        serve: Duration::from_millis(500),
        poll_min: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        log_lines: 20,
    }
}

// ---------------------------------------------------------------------------------------------
// Wiring and the login flow.

#[tokio::test]
async fn wiring_on_gitea_1_26_logs_in_without_csrf_activates_and_sets_secrets() {
    let lab = Lab::new(LabOptions::default()).await;
    let report = lab.wire().await;
    let names: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        names,
        [
            "drone oauth app",
            "drone config",
            "drone ready",
            "drone login",
            "drone activate",
            "drone trust",
            "gitea token drone-registry",
            "gitea token drone-gitops",
            "drone secrets",
            "drone build",
        ]
    );

    // The OAuth app: confidential, Drone's redirect URI, its client in the state and the Secret.
    let app = lab
        .gitea
        .oauth()
        .apps
        .iter()
        .find(|a| a.name == "drone")
        .cloned()
        .unwrap();
    assert!(app.confidential);
    assert_eq!(
        app.redirect_uris,
        [format!("{}/login", lab.drone.base_url())]
    );
    assert_eq!(
        lab.secret(drone_ci::STATE_CLIENT_ID).expose(),
        app.client_id
    );
    assert_eq!(
        lab.secret(drone_ci::STATE_CLIENT_SECRET).expose(),
        app.secret
    );
    assert_eq!(
        lab.workloads.secret.lock().unwrap()["gitea-client-secret"].expose(),
        app.secret
    );
    assert_eq!(
        lab.drone.data().restarts,
        1,
        "Drone restarted once, with the new client"
    );
    assert_eq!(lab.drone.data().client_id, app.client_id);

    // The login: no `_csrf` on 1.26, the consent page shown and granted.
    let login = &Lab::step(&report, "drone login").detail;
    assert!(login.contains("no `_csrf`"), "{login}");
    assert!(
        login.contains("granted access on the consent page"),
        "{login}"
    );
    let token = lab.secret(drone_ci::STATE_DRONE_TOKEN);
    assert_eq!(
        token.expose(),
        lab.drone.shared.options.admin_token,
        "Drone hands out the DRONE_USER_CREATE token of the admin"
    );
    assert!(
        lab.drone.data().users[0].oauth_token.is_some(),
        "Drone holds a Gitea token now"
    );

    // Activation created Drone's webhook in Gitea.
    let repo = lab.drone.data().repos["lab/nyan-cat"].clone();
    assert!(repo.active);
    let hooks = lab
        .gitea
        .data()
        .hooks
        .get("lab/nyan-cat")
        .cloned()
        .unwrap_or_default();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0].config["url"],
        format!("{}/hook", lab.drone.base_url())
    );

    // The pipeline's secrets.
    let s = |n: &str| lab.drone.secret("lab/nyan-cat", n).unwrap();
    assert_eq!(s("registry_username").data, ADMIN);
    assert_eq!(
        s("registry_password").data,
        lab.secret(drone_ci::STATE_REGISTRY_TOKEN).expose()
    );
    assert_eq!(
        s("gitops_token").data,
        lab.secret(drone_ci::STATE_GITOPS_TOKEN).expose()
    );
    assert!(!s("gitops_token").pull_request, "never exposed to forks");
    let scopes = |name: &str| {
        lab.gitea
            .data()
            .tokens
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .scopes
            .clone()
            .unwrap()
    };
    assert_eq!(scopes("drone-registry"), ["write:package"]);
    assert_eq!(scopes("drone-gitops"), ["write:repository"]);

    // The first build: started through the API (a `custom` event), and it runs.
    let first = &Lab::step(&report, "drone build");
    assert_eq!(first.outcome, Outcome::Done, "{}", first.detail);
    let b = lab.wait_build(1).await;
    assert_eq!((b.event.as_str(), b.status.as_str()), ("custom", "success"));
    assert_eq!(b.after, lab.gitea.head("lab", "nyan-cat"));

    lab.assert_no_violations();
    lab.assert_secrets_not_in(&captured());
    lab.assert_secrets_not_in(&format!("{report:?}"));
}

#[tokio::test]
async fn a_second_run_only_reads() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.wire().await;
    lab.wait_build(1).await;
    lab.gitea.clear_log();
    lab.drone.clear_log();
    lab.workloads.calls.lock().unwrap().clear();
    let secrets_before =
        std::fs::read(lab.state.path(homelab::edges::state::SECRETS_FILE)).unwrap();

    let report = lab.wire().await;
    assert_eq!(report.writes(), 0, "{:#?}", report.steps);
    assert!(report.steps.iter().all(|s| s.outcome == Outcome::Skipped));
    let gitea_writes: Vec<String> = lab
        .gitea
        .log()
        .iter()
        .filter(|l| l.method != "GET")
        .map(|l| l.to_string())
        .collect();
    assert!(gitea_writes.is_empty(), "{gitea_writes:#?}");
    let drone_writes: Vec<String> = lab
        .drone
        .log()
        .iter()
        .filter(|l| l.method != "GET")
        .map(|l| format!("{} {}", l.method, l.target))
        .collect();
    assert!(drone_writes.is_empty(), "{drone_writes:#?}");
    assert!(
        lab.workloads.writes().is_empty(),
        "{:?}",
        lab.workloads.writes()
    );
    assert_eq!(lab.drone.data().restarts, 1);
    assert_eq!(
        std::fs::read(lab.state.path(homelab::edges::state::SECRETS_FILE)).unwrap(),
        secrets_before
    );
    assert!(
        lab.gitea
            .log()
            .iter()
            .all(|l| !l.target.starts_with("/user/login") && !l.target.starts_with("/login/oauth")),
        "no second web login"
    );
}

#[tokio::test]
async fn gitea_1_25_login_sends_the_forms_csrf_token() {
    let lab = Lab::new(LabOptions {
        flavor: WebFlavor::Csrf,
        ..LabOptions::default()
    })
    .await;
    let report = lab.wire().await;
    let login = &Lab::step(&report, "drone login").detail;
    assert!(login.contains("form with `_csrf`"), "{login}");
    assert!(
        login.contains("granted access on the consent page"),
        "{login}"
    );

    // The fake is as strict as Gitea 1.25: a sign-in POST without the token is refused.
    let http = homelab::edges::http::client(&[&lab.gitea.endpoint()], None, Duration::from_secs(5))
        .unwrap();
    let r = http
        .post(format!("{}/user/login", lab.gitea.base_url()))
        .form(&[("user_name", ADMIN), ("password", lab.password.expose())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_grant_given_before_redirects_at_once() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.wire().await;
    assert_eq!(lab.gitea.oauth().grants.len(), 1);
    // Drone's API token is gone from the state: the tool logs in again.
    lab.forget(drone_ci::STATE_DRONE_TOKEN);
    lab.gitea.clear_log();
    let report = lab.wire().await;
    let login = Lab::step(&report, "drone login");
    assert_eq!(login.outcome, Outcome::Done);
    assert!(
        login.detail.contains("access was granted before"),
        "{}",
        login.detail
    );
    assert!(
        lab.gitea
            .log()
            .iter()
            .all(|l| l.target != "/login/oauth/grant"),
        "no consent form posted: {:#?}",
        lab.gitea.log()
    );
    assert_eq!(lab.gitea.oauth().grants.len(), 1);
    assert!(!lab.secret(drone_ci::STATE_DRONE_TOKEN).is_empty());
}

#[tokio::test]
async fn a_redirect_uri_gitea_does_not_know_is_named() {
    let mut opts = LabOptions::default();
    opts.drone.server_host = Some("drone.elsewhere.test".into());
    let lab = Lab::new(opts).await;
    let err = lab.try_wire().await.unwrap_err();
    let text = err.render();
    assert!(
        text.contains("error: Gitea refused the OAuth2 redirect URI `https://drone.elsewhere.test/login`: it is not registered for the client"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "(homelab registers `{}/login`)",
            lab.drone.base_url()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "hint: Drone builds its redirect URI from `DRONE_SERVER_PROTO` and `DRONE_SERVER_HOST`"
        ),
        "{text}"
    );
    lab.assert_secrets_not_in(&text);
    lab.assert_no_violations();
}

#[tokio::test]
async fn an_unregistered_client_id_is_named() {
    let lab = Lab::new(LabOptions::default()).await;
    // Drone runs with a client Gitea never registered (a stale Secret).
    lab.drone.restart_with("not-a-client", "whatever");
    let err = drone_ci::login::login(&drone_ci::login::LoginRequest {
        drone: lab.drone.endpoint(),
        gitea: lab.gitea.endpoint(),
        user: ADMIN.into(),
        password: lab.password.clone(),
        redirect_uri: format!("{}/login", lab.drone.base_url()),
    })
    .await
    .unwrap_err();
    let text = homelab::edges::error::Error::from(err).render();
    assert!(
        text.starts_with("error: Gitea does not know the OAuth2 client id `not-a-client`\nhint: the CI server holds a client id Gitea no longer has"),
        "{text}"
    );
    lab.assert_secrets_not_in(&text);
    lab.assert_no_violations();
}

#[tokio::test]
async fn a_wrong_password_is_reported_with_gitea_s_message() {
    let lab = Lab::new(LabOptions::default()).await;
    let err = drone_ci::login::login(&drone_ci::login::LoginRequest {
        drone: lab.drone.endpoint(),
        gitea: lab.gitea.endpoint(),
        user: ADMIN.into(),
        password: Secret::new("not-the-password"),
        redirect_uri: format!("{}/login", lab.drone.base_url()),
    })
    .await
    .unwrap_err();
    let text = homelab::edges::error::Error::from(err).render();
    assert!(
        text.starts_with("error: Gitea refused the web sign-in of `lab-admin`: Username or password is incorrect.\nhint:"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"));
}

#[tokio::test]
async fn a_rebuilt_drone_database_is_wired_again() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.wire().await;
    lab.wait_build(1).await;
    // The Drone volume was lost: DRONE_USER_CREATE brings the admin back with the same API
    // token, but without a Gitea token, repositories, secrets or builds.
    {
        let mut d = lab.drone.data();
        d.repos.clear();
        d.secrets.clear();
        d.builds.clear();
        d.users[0].oauth_token = None;
    }
    let report = lab.wire().await;
    assert_eq!(
        Lab::step(&report, "drone login").outcome,
        Outcome::Skipped,
        "the token still works"
    );
    let activate = &Lab::step(&report, "drone activate").detail;
    assert!(
        activate.starts_with("logged in through Gitea as `lab-admin`"),
        "{activate}"
    );
    assert!(activate.contains("activated `lab/nyan-cat`"), "{activate}");
    assert_eq!(
        Lab::step(&report, "drone secrets").detail,
        "created `registry_username`, `registry_password`, `gitops_token`"
    );
    assert_eq!(
        Lab::step(&report, "drone trust").outcome,
        Outcome::Done,
        "a new database forgot the trust"
    );
    assert_eq!(Lab::step(&report, "drone build").outcome, Outcome::Done);
}

#[tokio::test]
async fn a_lost_client_secret_is_regenerated_and_drone_restarted() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.wire().await;
    let id = lab.secret(drone_ci::STATE_CLIENT_ID);
    let old = lab.secret(drone_ci::STATE_CLIENT_SECRET);
    lab.forget(drone_ci::STATE_CLIENT_SECRET);

    let report = lab.wire().await;
    let app = Lab::step(&report, "drone oauth app");
    assert!(
        app.detail.contains("the lab state lost its client secret"),
        "{}",
        app.detail
    );
    assert!(
        app.detail.contains("Gitea issued a new client secret"),
        "{}",
        app.detail
    );
    assert_eq!(
        lab.secret(drone_ci::STATE_CLIENT_ID),
        id,
        "the client id survives a PATCH"
    );
    let new = lab.secret(drone_ci::STATE_CLIENT_SECRET);
    assert_ne!(new, old);
    assert_eq!(lab.gitea.oauth().apps.len(), 1, "updated, not duplicated");
    assert_eq!(lab.drone.data().restarts, 2);
    assert_eq!(lab.drone.data().client_secret, new.expose());
    // With the new secret Drone must log in again, and can.
    assert_eq!(Lab::step(&report, "drone login").outcome, Outcome::Done);
}

#[tokio::test]
async fn changed_secrets_are_updated_never_posted_twice() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.wire().await;
    lab.forget(drone_ci::STATE_REGISTRY_TOKEN);
    lab.drone.clear_log();
    let report = lab.wire().await;
    assert!(
        Lab::step(&report, "gitea token drone-registry")
            .detail
            .contains("replaced token"),
        "{report:#?}"
    );
    let secrets = Lab::step(&report, "drone secrets");
    assert_eq!(
        secrets.detail,
        "updated `registry_password`; unchanged `registry_username`, `gitops_token`"
    );
    let posts: Vec<String> = lab
        .drone
        .log()
        .iter()
        .filter(|l| l.target.contains("/secrets"))
        .map(|l| format!("{} {}", l.method, l.target))
        .collect();
    assert_eq!(
        posts,
        [
            "GET /api/repos/lab/nyan-cat/secrets",
            "PATCH /api/repos/lab/nyan-cat/secrets/registry_password"
        ]
    );
    assert_eq!(
        lab.drone
            .secret("lab/nyan-cat", "registry_password")
            .unwrap()
            .data,
        lab.secret(drone_ci::STATE_REGISTRY_TOKEN).expose()
    );
    assert_eq!(lab.drone.data().secrets["lab/nyan-cat"].len(), 3);

    // The fake answers a duplicate POST the way Drone does.
    let http = homelab::edges::http::client(&[&lab.drone.endpoint()], None, Duration::from_secs(5))
        .unwrap();
    let r = http
        .post(format!(
            "{}/api/repos/lab/nyan-cat/secrets",
            lab.drone.base_url()
        ))
        .bearer_auth(lab.secret(drone_ci::STATE_DRONE_TOKEN).expose())
        .json(&serde_json::json!({"name": "gitops_token", "data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

#[tokio::test]
async fn a_pipeline_that_skips_custom_events_gets_no_first_build_and_a_hint() {
    let mut opts = LabOptions::default();
    opts.drone.custom_trigger = false;
    let lab = Lab::new(opts).await;
    let text = lab.try_wire().await.unwrap_err().render();
    assert!(
        text.contains("error: Drone started no build of `lab/nyan-cat` on `main`: no pipeline in its `.drone.yml` accepts the `custom` event"),
        "{text}"
    );
    assert!(
        text.contains("hint: add `custom` to `trigger.event`"),
        "{text}"
    );
}

#[tokio::test]
async fn the_fake_drone_refuses_what_drone_2_24_refuses() {
    let lab = Lab::new(LabOptions::default()).await;
    let http = homelab::edges::http::client(&[&lab.drone.endpoint()], None, Duration::from_secs(5))
        .unwrap();
    let base = lab.drone.base_url();
    // A route Drone does not have.
    let r = http
        .get(format!("{base}/api/repos/lab/nyan-cat/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        lab.drone.violations().len(),
        1,
        "{:?}",
        lab.drone.violations()
    );
    // AuthorizeUser without a user.
    let r = http.get(format!("{base}/api/user")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
    // A repository sync before the OAuth login: DRONE_USER_CREATE gives no Gitea token.
    let r = http
        .post(format!("{base}/api/user/repos"))
        .bearer_auth(&lab.drone.shared.options.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    // InjectRepository: not synced yet.
    let r = http
        .post(format!("{base}/api/repos/lab/nyan-cat"))
        .bearer_auth(&lab.drone.shared.options.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Trust (issue 12): drone-runner-kube refuses the pipeline's ConfigMap volume for an untrusted
// repository, only a Drone admin can trust one, and a re-run heals a lab whose build failed.

const LINT_CONFIG_MAP: &str = "linter: untrusted repositories cannot mount configMap volumes";

impl Lab {
    /// Start a `custom` build through the API, as Drone's "New build" button does.
    async fn start_build(&self) -> i64 {
        let drone = DroneClient::new(&self.drone.endpoint())
            .unwrap()
            .with_token(Secret::new(self.drone.shared.options.admin_token.clone()));
        drone
            .create_build("lab", "nyan-cat", "main")
            .await
            .unwrap()
            .expect("a build")
            .number
    }

    fn set_trusted(&self, trusted: bool) {
        self.drone
            .data()
            .repos
            .get_mut("lab/nyan-cat")
            .unwrap()
            .trusted = trusted;
    }

    fn drone_writes(&self) -> Vec<String> {
        self.drone
            .log()
            .iter()
            .filter(|l| l.method != "GET")
            .map(|l| format!("{} {} → {}", l.method, l.target, l.status))
            .collect()
    }
}

/// The fake runner lints as drone-runner-kube v1.0.0-rc.5 does: the seeded pipeline of an
/// untrusted repository ends in `error` with the linter's text and runs no step.
#[tokio::test]
async fn an_untrusted_repositorys_build_fails_with_the_runner_linters_message() {
    let lab = wired(LabOptions::default()).await;
    lab.set_trusted(false);
    let n = lab.start_build().await;
    let b = lab.wait_build(n).await;
    assert_eq!(b.status, "error");
    assert_eq!(b.stage_error, LINT_CONFIG_MAP);
    assert!(b.steps.is_empty(), "no step ran: {:?}", b.steps);
    assert!(
        b.error.is_empty(),
        "the server's linter does not know ConfigMaps"
    );
    // What homelab reads of it (verify, the healing build) carries the linter's text.
    let info = lab
        .target()
        .ci
        .build(&homelab::services::ci::RepoRef::new("lab", "nyan-cat"), n)
        .await
        .unwrap();
    assert_eq!(
        (info.state, info.error.as_str()),
        (
            homelab::services::ci::BuildState::Failed("error".into()),
            LINT_CONFIG_MAP
        )
    );
    // Trusted again, the same pipeline runs.
    lab.set_trusted(true);
    let n = lab.start_build().await;
    assert_eq!(lab.wait_build(n).await.status, "success");
}

/// The linters' rules, one by one, with upstream's texts (fake-side check).
#[test]
fn the_fake_linters_refuse_what_drone_refuses_of_an_untrusted_repository() {
    use fake_drone::lint;
    let doc = |extra: &str| -> homelab::edges::yaml::Value {
        homelab::edges::yaml::from_str(&format!(
            "kind: pipeline\ntype: kubernetes\nname: x\nsteps:\n  - name: a\n    image: alpine\n{extra}"
        ))
        .unwrap()
    };
    let cases = [
        (
            "volumes:\n  - name: v\n    config_map: {name: c}\n",
            LINT_CONFIG_MAP,
        ),
        (
            "volumes:\n  - name: v\n    secret: {name: s}\n",
            "linter: untrusted repositories cannot mount secret volumes",
        ),
        (
            "volumes:\n  - name: v\n    host: {path: /etc}\n",
            "linter: untrusted repositories cannot mount host volumes",
        ),
        (
            "volumes:\n  - name: v\n    claim: {name: p}\n",
            "linter: untrusted repositories cannot mount PVC",
        ),
        (
            "volumes:\n  - name: v\n    temp: {medium: memory}\n",
            "linter: untrusted repositories cannot mount in-memory volumes",
        ),
        (
            "services:\n  - name: s\n    image: redis\n    privileged: true\n",
            "linter: untrusted repositories cannot enable privileged mode",
        ),
    ];
    for (extra, message) in cases {
        assert_eq!(
            lint::runner(&doc(extra), false),
            Err(message.to_string()),
            "{extra}"
        );
        assert_eq!(lint::runner(&doc(extra), true), Ok(()), "{extra}");
    }
    // The server (drone-yaml) knows host volumes and privileged steps, not ConfigMaps.
    let cm = doc("volumes:\n  - name: v\n    config_map: {name: c}\n");
    assert_eq!(lint::server(&cm, false), Ok(()));
    assert_eq!(
        lint::server(
            &doc("volumes:\n  - name: v\n    host: {path: /etc}\n"),
            false
        ),
        Err("linter: untrusted repositories cannot mount host volumes".into())
    );
    // Rules that hold whatever the trust.
    assert_eq!(
        lint::runner(&doc("  - name: a\n    image: alpine\n"), true),
        Err("linter: duplicate step names".into())
    );
    assert_eq!(
        lint::runner(&doc("volumes:\n  - name: workspace\n    temp: {}\n"), true),
        Err("linter: invalid volume name: workspace".into())
    );
    // And the pipeline `up` seeds needs trust, for its ConfigMap volume only.
    let seeded = lint::pipelines(&rendered_pipeline("lab.example.test")).unwrap();
    assert_eq!(seeded.len(), 1);
    assert_eq!(lint::runner(&seeded[0], false), Err(LINT_CONFIG_MAP.into()));
    assert_eq!(lint::runner(&seeded[0], true), Ok(()));
    assert_eq!(lint::server(&seeded[0], false), Ok(()));
}

/// Wiring trusts `lab/nyan-cat` with the admin's token before its first build, and a second
/// run looks without writing.
#[tokio::test]
async fn wiring_trusts_the_repository_so_its_first_build_runs() {
    let lab = Lab::new(LabOptions::default()).await;
    let report = lab.wire().await;
    let trust = Lab::step(&report, "drone trust");
    assert_eq!(trust.outcome, Outcome::Done);
    assert!(
        trust.detail.starts_with("marked `lab/nyan-cat` trusted"),
        "{}",
        trust.detail
    );
    assert!(lab.drone.repo("lab/nyan-cat").unwrap().trusted);
    let patches: Vec<String> = lab
        .drone_writes()
        .into_iter()
        .filter(|w| w.starts_with("PATCH /api/repos/lab/nyan-cat "))
        .collect();
    assert_eq!(patches, ["PATCH /api/repos/lab/nyan-cat → 200"]);
    let b = lab.wait_build(1).await;
    assert_eq!(b.status, "success", "{}", b.stage_error);
    assert_eq!(b.steps.len(), 4);

    lab.drone.clear_log();
    let again = lab.wire().await;
    let trust = Lab::step(&again, "drone trust");
    assert_eq!(
        (trust.outcome.clone(), trust.detail.as_str()),
        (Outcome::Skipped, "`lab/nyan-cat` is trusted")
    );
    assert!(lab.drone_writes().is_empty(), "{:?}", lab.drone_writes());
}

/// Drone 2.24 ignores `trusted` from a user who is no Drone admin (and still answers 200): the
/// fake does the same, and wiring reads the answer and says what to fix.
#[tokio::test]
async fn a_token_of_no_drone_admin_cannot_trust_and_wiring_says_so() {
    let lab = Lab::new(LabOptions::default()).await;
    // DRONE_USER_CREATE without `admin:true`.
    lab.drone.set_admin(false);
    let err = lab.try_wire().await.unwrap_err();
    lab.assert_no_violations();
    let text = err.render();
    assert!(
        text.contains("error: Drone kept `lab/nyan-cat` untrusted: it applies `trusted` only for a Drone administrator, and `lab-admin` is not one"),
        "{text}"
    );
    assert!(
        text.contains(
            "hint: Drone makes `lab-admin` an administrator from `DRONE_USER_CREATE` (`admin:true`)"
        ),
        "{text}"
    );
    assert!(!lab.drone.repo("lab/nyan-cat").unwrap().trusted);
    assert!(
        lab.drone_writes()
            .contains(&"PATCH /api/repos/lab/nyan-cat → 200".to_string()),
        "{:?}",
        lab.drone_writes()
    );
    assert!(
        lab.drone.builds("lab/nyan-cat").is_empty(),
        "no build was started"
    );

    // The same call from a Drone admin changes it.
    lab.drone.set_admin(true);
    let http = homelab::edges::http::client(&[&lab.drone.endpoint()], None, Duration::from_secs(5))
        .unwrap();
    let r: serde_json::Value = http
        .patch(format!("{}/api/repos/lab/nyan-cat", lab.drone.base_url()))
        .bearer_auth(&lab.drone.shared.options.admin_token)
        .json(&serde_json::json!({"trusted": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["trusted"], true);
}

/// A re-run heals a lab whose last build of the head failed: here a push built while the
/// repository was untrusted (as every lab wired before issue 12 was).
#[tokio::test]
async fn a_rerun_heals_a_lab_whose_last_build_failed() {
    let lab = wired(LabOptions::default()).await;
    lab.set_trusted(false);
    lab.gitea
        .commit_file("lab", "nyan-cat", "index.html", &page("v2"), "v2");
    let head = lab.gitea.head("lab", "nyan-cat");
    let failed = lab.wait_build(2).await;
    assert_eq!(
        (failed.status.as_str(), failed.after.as_str()),
        ("error", head.as_str())
    );

    let report = lab.wire().await;
    assert_eq!(Lab::step(&report, "drone trust").outcome, Outcome::Done);
    let build = Lab::step(&report, "drone build");
    assert_eq!(build.outcome, Outcome::Done);
    assert!(
        build.detail.starts_with(&format!(
            "build #2 of `{}` ended `error`: {LINT_CONFIG_MAP}: started build #3 of `main`",
            &head[..7]
        )),
        "{}",
        build.detail
    );
    let healed = lab.wait_build(3).await;
    assert_eq!(
        (healed.status.as_str(), healed.after.as_str()),
        ("success", head.as_str())
    );

    // Healthy now: the next run starts nothing.
    lab.drone.clear_log();
    let report = lab.wire().await;
    assert_eq!(report.writes(), 0, "{:#?}", report.steps);
    assert_eq!(
        Lab::step(&report, "drone build").detail,
        format!(
            "build #3 of `{}` (the head of `main`) succeeded",
            &head[..7]
        )
    );
    assert!(lab.drone_writes().is_empty(), "{:?}", lab.drone_writes());
}

/// A build of the head that is still queued is left alone, never duplicated.
#[tokio::test]
async fn a_build_of_the_head_under_way_is_not_duplicated() {
    let lab = Lab::new(LabOptions::default()).await;
    lab.drone.data().hold_builds = true;
    lab.wire().await;
    assert_eq!(lab.drone.builds("lab/nyan-cat").len(), 1);
    let report = lab.wire().await;
    let build = Lab::step(&report, "drone build");
    assert_eq!(build.outcome, Outcome::Skipped);
    assert!(
        build.detail.starts_with("build #1 of `")
            && build
                .detail
                .ends_with("` is pending; no second build started"),
        "{}",
        build.detail
    );
    assert_eq!(lab.drone.builds("lab/nyan-cat").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The pipeline file `up` seeds.

/// The `.drone.yml` the default stack seeds into `lab/nyan-cat` for `domain`.
fn rendered_pipeline(domain: &str) -> String {
    let domain = homelab::model::render::Domain::resolve(Some(domain), None);
    let manifests = fixtures::render_placeholders("t", &fixtures::stack("default"), &domain);
    manifests
        .components
        .iter()
        .find_map(|c| {
            c.repos
                .get("nyan-cat")
                .and_then(|files| files.get(".drone.yml"))
        })
        .expect("the default stack seeds `lab/nyan-cat` with a `.drone.yml`")
        .clone()
}

#[test]
fn the_seeded_pipeline_is_loop_safe() {
    let file = rendered_pipeline("lab.example.test");
    let problems = pipeline::check(&file, &pipeline::Expectations::default());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// verify.

async fn wired(opts: LabOptions) -> Lab {
    let lab = Lab::new(opts).await;
    lab.wire().await;
    lab.wait_build(1).await;
    lab
}

async fn verify_err(
    lab: &Lab,
    opts: &VerifyOptions,
) -> (homelab::verify::VerifyReport, VerifyError) {
    match verify(&lab.target(), &lab.apps, opts, &Silent).await {
        Ok(r) => panic!("verify passed: {r:#?}"),
        Err(f) => (f.report, f.error),
    }
}

#[tokio::test]
async fn verify_walks_every_hop_and_times_it() {
    let lab = wired(LabOptions::default()).await;
    // The first build bumped the tag to the seed commit and the site shows v1.
    assert_eq!(*lab.site.page.lock().unwrap(), page("v1"));
    let report = verify(&lab.target(), &lab.apps, &quick(), &Silent)
        .await
        .unwrap();
    let hops: Vec<&str> = report.hops.iter().map(|h| h.hop).collect();
    assert_eq!(hops, homelab::verify::HOPS);
    assert!(report.ok && report.hops.iter().all(|h| h.ok));
    assert_eq!(report.version, "v2");
    assert_eq!(report.commit, lab.gitea.head("lab", "nyan-cat"));
    assert_eq!(report.build, Some(2));
    assert_eq!(
        lab.drone.builds("lab/nyan-cat")[1].event,
        "push",
        "the webhook started it"
    );
    assert!(
        lab.gitea
            .file("lab", "nyan-cat", "index.html")
            .unwrap()
            .contains("<span id=\"version\">v2</span>")
    );
    assert!(
        lab.gitea
            .file("lab", "gitops", "apps/nyan-cat/deployment.yaml")
            .unwrap()
            .contains(&report.commit)
    );
    let sum: u128 = report.hops.iter().map(|h| h.elapsed_ms).sum();
    assert!(sum <= report.total_ms + 1, "{sum} {}", report.total_ms);
    let text = report.to_text();
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(
        text.lines().next().unwrap().starts_with("✓ commit "),
        "{text}"
    );
    assert!(text.contains("version v1 → v2"), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("the loop works in "),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["hops"][5]["hop"], "app serves");
    assert!(json["hops"][2]["elapsed_ms"].is_u64());
    lab.assert_no_violations();
    lab.assert_secrets_not_in(&captured());

    // Again: v3, build 3.
    let again = verify(&lab.target(), &lab.apps, &quick(), &Silent)
        .await
        .unwrap();
    assert_eq!((again.version.as_str(), again.build), ("v3", Some(3)));
}

#[tokio::test]
async fn verify_commit_hop_needs_one_version_marker() {
    let lab = wired(LabOptions {
        page: "<html><body>no marker</body></html>\n".into(),
        ..LabOptions::default()
    })
    .await;
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "commit");
    assert_eq!(
        err.to_string(),
        "commit: `index.html` in `lab/nyan-cat` has 0 elements with `id=\"version\"`; verify changes exactly one"
    );
    assert_eq!(report.hops.len(), 1);
    assert!(!report.hops[0].ok);
}

#[tokio::test]
async fn verify_build_started_hop_fails_without_a_build() {
    let lab = wired(LabOptions::default()).await;
    lab.drone.data().ignore_hooks = true;
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "build started");
    let text = err.to_string();
    assert!(
        text.starts_with("build started: Drone started no build of `lab/nyan-cat` commit `"),
        "{text}"
    );
    assert!(text.ends_with("within 0.8s"), "{text}");
    assert_eq!(
        report.hops.iter().map(|h| h.ok).collect::<Vec<_>>(),
        [true, false]
    );
    let hints = homelab::edges::error::Error::from(err).render();
    assert!(
        hints.contains("hint: check that the repository is active in Drone"),
        "{hints}"
    );
}

#[tokio::test]
async fn verify_build_hop_shows_the_failed_steps_log_tail() {
    let lab = wired(LabOptions::default()).await;
    let mut script = Script::default();
    script.steps[2].fail = Some((1, (1..=30).map(|i| format!("kaniko line {i}")).collect()));
    lab.drone.data().script = script;
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "build succeeded");
    let text = err.to_string();
    assert!(
        text.starts_with("build succeeded: build #2 of `lab/nyan-cat` ended `failure` at step `build` (stage `build-and-deploy`, exit code 1)\nlast 20 lines of its log:\n  | kaniko line 11\n"),
        "{text}"
    );
    assert!(text.ends_with("  | kaniko line 30"), "{text}");
    assert!(!text.contains("kaniko line 10\n"), "{text}");
    assert_eq!(report.hops.len(), 3);
    let rendered = homelab::edges::error::Error::from(err).render();
    assert!(
        rendered.contains(&format!(
            "hint: the build's page: {}/lab/nyan-cat/2",
            lab.drone.base_url()
        )),
        "{rendered}"
    );
}

#[tokio::test]
async fn verify_tag_hop_fails_when_the_pipeline_does_not_bump() {
    let lab = wired(LabOptions::default()).await;
    let seed = lab.gitea.head("lab", "nyan-cat");
    lab.loop_.lock().unwrap().bump = false;
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "tag bumped");
    assert_eq!(
        err.to_string(),
        format!(
            "tag bumped: `apps/nyan-cat/deployment.yaml` in `lab/gitops` deploys tag `{seed}` instead of `{IMAGE}:{}` after 0.4s",
            &report.commit[..7]
        )
    );
    assert_eq!(report.hops.len(), 4);
}

#[tokio::test]
async fn verify_sync_hop_reports_the_last_application_status() {
    let lab = wired(LabOptions::default()).await;
    lab.loop_.lock().unwrap().sync = false;
    lab.apps.set(AppStatus {
        sync: "OutOfSync".into(),
        revision: "1234567890".into(),
        health: "Degraded".into(),
        health_message: "Deployment nyan-cat: ImagePullBackOff".into(),
        operation_phase: "Failed".into(),
        operation_message: "one or more objects failed to apply".into(),
    });
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "app synced");
    let text = err.to_string();
    let head = lab.gitea.head("lab", "gitops");
    assert_eq!(
        text,
        format!(
            "app synced: Application `nyan-cat` in `argocd` is not Synced and Healthy at `{}` after 0.5s: sync `OutOfSync` at `1234567`, health `Degraded` (Deployment nyan-cat: ImagePullBackOff), last operation `Failed`: one or more objects failed to apply",
            &head[..7]
        )
    );
    assert_eq!(report.hops.len(), 5);
}

#[tokio::test]
async fn verify_serve_hop_fails_on_old_content() {
    let lab = wired(LabOptions::default()).await;
    lab.loop_.lock().unwrap().serve = false;
    let (report, err) = verify_err(&lab, &quick()).await;
    assert_eq!(err.hop(), "app serves");
    assert_eq!(
        err.to_string(),
        format!(
            "app serves: https://{NYAN_HOST}:{}/ still serves version `v1` after 0.5s (expected version `v2`)",
            lab.site.addr.port()
        )
    );
    assert_eq!(report.hops.len(), 6);
    assert!(report.hops[..5].iter().all(|h| h.ok));
}

#[tokio::test]
async fn verify_serve_hop_trusts_only_the_lab_ca() {
    let lab = wired(LabOptions::default()).await;
    // The site presents a certificate from another CA: verification must fail, not be skipped.
    let other = lab_ca("other", None);
    let impostor = Site::start(&other, &page("v2")).await;
    let mut target = lab.target();
    target.site = impostor.endpoint(&lab.gitea.ca);
    let err = match verify(&target, &lab.apps, &quick(), &Silent).await {
        Ok(r) => panic!("{r:#?}"),
        Err(f) => f.error,
    };
    assert_eq!(err.hop(), "app serves");
    let text = err.to_string();
    assert!(text.contains("did not answer within 0.5s"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The CLI.

#[test]
fn verify_without_a_wired_lab_says_what_to_run_and_shows_no_secret() {
    let ctx = common::TestContext::new();
    // A lab state with secrets but no Drone token yet.
    let state = LabState::at("homelab", ctx.state_dir("homelab"));
    let secrets = state.secrets().unwrap();
    homelab::model::tls::load_or_create(&state, None).unwrap();
    state
        .store_secrets(&[("gitea_token", "0123456789abcdef0123456789abcdef01234567")])
        .unwrap();
    let run = ctx.homelab(&["verify", "--domain", "lab.example.test", "-v"]);
    run.failure(1);
    assert!(
        run.stderr.contains(
            "error: the lab state has no Drone API token (`drone_token` in `secrets.json`)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: run `homelab up`"),
        "{}",
        run.stderr
    );
    for (name, v) in secrets.iter().filter(|(_, v)| !v.is_empty()) {
        assert!(
            !run.stderr.contains(v.expose()) && !run.stdout.contains(v.expose()),
            "`{name}` leaked"
        );
    }
    assert!(
        !run.stderr
            .contains("0123456789abcdef0123456789abcdef01234567")
    );
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes seams over kube-rs, against the fake API server (or a real cluster when
// HOMELAB_TEST_KUBECONFIG is set, for the parts that do not need fake-only control).

use fake_kube::test_cluster::TestCluster;
use homelab::services::ci::cluster::KubeWorkloads;

async fn namespace(tc: &TestCluster, name: &str) -> String {
    let ns = tc.ns(name);
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(tc.client.clone());
    let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"homelab.dev/lab": tc.lab}}});
    api.patch(
        &ns,
        &kube::api::PatchParams::apply("homelab"),
        &kube::api::Patch::Apply(&obj),
    )
    .await
    .unwrap();
    ns
}

#[tokio::test]
async fn kube_workloads_apply_the_client_keys_and_leave_the_apply_engines_keys() {
    let tc = TestCluster::new().await;
    let ns = namespace(&tc, "drone").await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(tc.client.clone(), &ns);
    // What the apply engine (field manager `homelab`) applies before the client exists.
    let rendered = |id: &str, secret: &str| {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "drone", "namespace": ns},
            "data": {"rpc-secret": b("rpc"), "gitea-client-id": b(id), "gitea-client-secret": b(secret)}})
    };
    secrets
        .patch(
            "drone",
            &kube::api::PatchParams::apply("homelab"),
            &kube::api::Patch::Apply(&rendered("", "")),
        )
        .await
        .unwrap();

    let w = KubeWorkloads::new(tc.client.clone());
    let keys = BTreeMap::from([
        ("gitea-client-id".to_string(), Secret::new("client-1")),
        ("gitea-client-secret".to_string(), Secret::new("s3cret")),
    ]);
    w.apply_secret_data(&ns, "drone", &keys).await.unwrap();
    let data = w.secret_data(&ns, "drone").await.unwrap().unwrap();
    assert_eq!(
        data["rpc-secret"].expose(),
        "rpc",
        "the apply engine's key stays"
    );
    assert_eq!(data["gitea-client-id"].expose(), "client-1");
    assert_eq!(data["gitea-client-secret"].expose(), "s3cret");

    // The next `up` renders the same values from the lab state: its apply succeeds and keeps them.
    secrets
        .patch(
            "drone",
            &kube::api::PatchParams::apply("homelab"),
            &kube::api::Patch::Apply(&rendered("client-1", "s3cret")),
        )
        .await
        .unwrap();
    let data = w.secret_data(&ns, "drone").await.unwrap().unwrap();
    assert_eq!(data["gitea-client-secret"].expose(), "s3cret");
    assert!(w.secret_data(&ns, "missing").await.unwrap().is_none());
}

fn deployment_object(ns: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "drone", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "drone"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "drone"},
                "annotations": {drone_ci::ANNOTATION_CLIENT_ID: ""}},
                "spec": {"containers": [{"name": "drone", "image": "drone/drone:2.24.0"}]}}}})
}

#[tokio::test]
async fn kube_workloads_roll_the_deployment_and_wait_for_the_rollout() {
    let tc = TestCluster::new().await;
    let Some(fake) = tc.fake_only("roll_deployment", "needs simulated controllers") else {
        return;
    };
    fake.controllers(fake_kube::Controllers::ready_after(Duration::from_millis(
        150,
    )));
    let ns = namespace(&tc, "drone").await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(tc.client.clone(), &ns);
    deployments
        .patch(
            "drone",
            &kube::api::PatchParams::apply("homelab"),
            &kube::api::Patch::Apply(&deployment_object(&ns)),
        )
        .await
        .unwrap();
    let w = KubeWorkloads::new(tc.client.clone());
    let annotations = drone_ci_annotations();
    let started = std::time::Instant::now();
    w.roll_deployment(&ns, "drone", &annotations, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited for the new generation to be ready"
    );
    let live = w
        .pod_template_annotations(&ns, "drone")
        .await
        .unwrap()
        .unwrap();
    for (k, v) in &annotations {
        assert_eq!(live.get(k), Some(v));
    }
    let obj = fake.get("apps/v1", "Deployment", &ns, "drone").unwrap();
    assert_eq!(obj["metadata"]["generation"], 2, "one rollout");

    // A rollout that never completes is bounded and says where it stands.
    fake.controllers(fake_kube::Controllers::never_ready(&["drone"]));
    let mut again = annotations.clone();
    again.insert(
        drone_ci::ANNOTATION_SECRET_FINGERPRINT.into(),
        "0000000000000000".into(),
    );
    let err = w
        .roll_deployment(&ns, "drone", &again, Duration::from_millis(300))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "`Deployment/drone` in `{ns}` did not finish rolling out within 0.3s: rollout not observed yet"
        )
    );
    let rendered = homelab::edges::error::Error::from(err).render();
    assert!(
        rendered.contains(&format!(
            "hint: see why with `kubectl -n {ns} describe deploy/drone`"
        )),
        "{rendered}"
    );
}

fn drone_ci_annotations() -> BTreeMap<String, String> {
    homelab::services::ci::drone::client_annotations("client-1", &Secret::new("s3cret"))
}

#[tokio::test]
async fn kube_applications_watch_reports_each_status() {
    let tc = TestCluster::new().await;
    let Some(fake) = tc.fake_only("applications watch", "sets Application status directly") else {
        return;
    };
    let crd: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::contracts_dir().join("argocd/application-crd.json"))
            .unwrap(),
    )
    .unwrap();
    fake.insert(crd);
    let ns = namespace(&tc, "argocd").await;
    let app = serde_json::json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "nyan-cat", "namespace": ns},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": "nyan-cat"},
            "source": {"repoURL": "http://gitea-http.gitea.svc.cluster.local:3000/lab/gitops.git", "path": "apps/nyan-cat"}}});
    for _ in 0..100 {
        let crd = fake.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "applications.argoproj.io",
        );
        let established = crd
            .as_ref()
            .and_then(|c| c["status"]["conditions"].as_array())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        if established {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.insert(app);
    let apps = homelab::verify::KubeApplications::new(tc.client.clone());
    let mut stream = apps.watch(&ns, "nyan-cat");
    let first = stream.next().await.unwrap().unwrap().unwrap();
    assert_eq!(first, AppStatus::default(), "no status yet");
    fake.set_status(
        "argoproj.io/v1alpha1",
        "Application",
        &ns,
        "nyan-cat",
        serde_json::json!({"sync": {"status": "Synced", "revision": "abc123"}, "health": {"status": "Healthy"}}),
    );
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            next.sync.as_str(),
            next.revision.as_str(),
            next.health.as_str()
        ),
        ("Synced", "abc123", "Healthy")
    );
}

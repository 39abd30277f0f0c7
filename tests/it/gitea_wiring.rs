//! Wiring Gitea, tested against the swagger-checked fake Gitea (`tests/support/fake_gitea/`) over HTTPS
//! with a lab-CA certificate, real `git` pushing into real bare repositories through
//! `git http-backend`, and a recording fake of the Gitea pod; plus `homelab credentials`, and
//! opt-in runs against a real Gitea and a real cluster.

use crate::support::common;
use crate::support::common::image_cache;

use crate::support::fake_gitea;
use crate::support::http_kit::tls::lab_ca;
use common::fixtures;
use common::logs::{captured, logs};

use std::collections::BTreeMap;
use std::sync::Mutex;

use fake_gitea::front::{Door, FrontDoor};
use fake_gitea::pod::FakePodExec;
use fake_gitea::swagger::Swagger;
use fake_gitea::{FakeGitea, Options};
use homelab::edges::git::{Git, GitAuth, GitRemote, Identity, ObjectFormat, PushRequest, tree_id};
use homelab::edges::http::Patience;
use homelab::edges::output::Silent;
use homelab::edges::redact::Secret;
use homelab::edges::state::{LabState, SECRETS_FILE};
use homelab::model::render::Domain;
use homelab::services::gitea::{Credentials, Endpoint, GiteaClient};
use homelab::services::wire::gitea::{
    AdminLogin, BaseImage, DEFAULT_SYNC_WEBHOOK_URL, DEFAULT_TOKEN_NAME, GITEA_RECORD_FILE,
    GITEA_TOKEN_KEY, GiteaCli, GiteaRecord, GiteaReport, GiteaWiring, RepoSeed, WebhookSpec, wire,
};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// A lab around a fake Gitea.

struct Lab {
    fake: FakeGitea,
    pod: FakePodExec,
    _dir: tempfile::TempDir,
    state: LabState,
    admin: AdminLogin,
    webhook_secret: Secret,
    seeds: Vec<RepoSeed>,
    patience: Patience,
    base_images: Vec<BaseImage>,
    image_cache: Option<std::path::PathBuf>,
}

/// The repositories as `up` gets them: rendered from the default stack's templates.
fn rendered_seeds() -> Vec<RepoSeed> {
    let domain = Domain::resolve(Some("127.0.0.1.sslip.io"), None);
    let manifests = fixtures::render_placeholders("t", &fixtures::stack("default"), &domain);
    let seeds = RepoSeed::from_manifests(&manifests);
    assert!(
        seeds.iter().any(|s| s.name == "gitops") && seeds.iter().any(|s| s.name == "nyan-cat"),
        "the default stack renders both lab repositories"
    );
    seeds
}

impl Lab {
    async fn new(options: Options) -> Lab {
        Lab::around(FakeGitea::start(options).await)
    }

    fn around(fake: FakeGitea) -> Lab {
        logs();
        let pod = FakePodExec::new(&fake);
        let dir = tempfile::tempdir().unwrap();
        let state = LabState::at("t", dir.path().join("t"));
        let secrets = state.secrets().unwrap();
        Lab {
            admin: AdminLogin::new(
                "lab-admin",
                secrets.get("gitea_admin_password"),
                fake_gitea::HOST,
            ),
            webhook_secret: secrets.get("webhook_secret"),
            fake,
            pod,
            _dir: dir,
            state,
            seeds: rendered_seeds(),
            patience: Patience::default(),
            base_images: Vec::new(),
            image_cache: None,
        }
    }

    fn wiring(&self) -> GiteaWiring<'_> {
        GiteaWiring {
            endpoint: self.fake.endpoint(),
            admin: self.admin.clone(),
            cli: GiteaCli::default(),
            pod: &self.pod,
            state: &self.state,
            org: "lab".into(),
            repos: self.seeds.clone(),
            webhook: WebhookSpec {
                repo: "gitops".into(),
                url: DEFAULT_SYNC_WEBHOOK_URL.into(),
                secret: self.webhook_secret.clone(),
            },
            token_name: DEFAULT_TOKEN_NAME.into(),
            git: Git::find().unwrap(),
            author: Identity {
                name: "homelab".into(),
                email: "homelab@gitea.127.0.0.1.sslip.io".into(),
            },
            patience: self.patience.clone(),
            base_images: self.base_images.clone(),
            image_cache: self.image_cache.clone(),
        }
    }

    async fn wire(&self) -> GiteaReport {
        let report = wire(&self.wiring(), &Silent).await;
        self.fake.assert_no_violations();
        match report {
            Ok(r) => r,
            Err(e) => panic!("{:?}", homelab::edges::error::Error::from(e)),
        }
    }

    fn token(&self) -> Secret {
        self.state.secrets().unwrap().get(GITEA_TOKEN_KEY)
    }

    fn remote(&self, repo: &str, auth: bool) -> GitRemote {
        GitRemote {
            url: format!("{}/lab/{repo}.git", self.fake.base_url()),
            auth: GitAuth {
                username: auth.then(|| "lab-admin".into()),
                password: auth.then(|| self.token()),
                ca_pem: Some(self.fake.ca.cert_pem.clone()),
            },
            resolve: Some(self.fake.addr),
        }
    }

    /// A file at `main` of a bare repository in the fake.
    fn show(&self, repo: &str, path: &str) -> String {
        crate::support::http_kit::git_backend::git_output(
            &self.fake.repo_dir("lab", repo),
            &["show", &format!("main:{path}")],
        )
    }

    fn step<'r>(
        report: &'r GiteaReport,
        name: &str,
    ) -> &'r homelab::edges::output::steps::StepReport {
        report
            .steps
            .iter()
            .find(|s| s.step == name)
            .unwrap_or_else(|| panic!("no step `{name}` in {:#?}", report.steps))
    }
}

/// Progress that records each finished step.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl homelab::edges::output::Progress for Recorder {
    fn start(&self, _: &str, _: &str) {}
    fn update(&self, _: &str, _: &str) {}
    fn finish(
        &self,
        step: &str,
        outcome: homelab::edges::output::Outcome,
        _: std::time::Duration,
        _: &str,
    ) {
        self.0.lock().unwrap().push(format!("{step} {outcome:?}"));
    }
}

fn outcome(report: &GiteaReport, step: &str) -> String {
    format!("{:?}", Lab::step(report, step).outcome)
}

// ---------------------------------------------------------------------------------------------
// The first call after deploy (issue 12): the ingress may refuse connections or serve a
// certificate the lab does not know until cert-manager has issued Gitea's.

/// Progress that keeps every `update` line, for a test to wait on.
struct Updates(tokio::sync::watch::Sender<Vec<String>>);

impl Updates {
    fn new() -> Updates {
        Updates(tokio::sync::watch::channel(Vec::new()).0)
    }

    /// Until a line contains `text` (case-insensitive).
    async fn saw(&self, text: &str) {
        let text = text.to_lowercase();
        self.0
            .subscribe()
            .wait_for(|lines| lines.iter().any(|l| l.to_lowercase().contains(&text)))
            .await
            .unwrap();
    }

    fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

impl homelab::edges::output::Progress for Updates {
    fn start(&self, _: &str, _: &str) {}
    fn update(&self, step: &str, detail: &str) {
        self.0.send_modify(|l| l.push(format!("{step}: {detail}")));
    }
    fn finish(&self, _: &str, _: homelab::edges::output::Outcome, _: std::time::Duration, _: &str) {
    }
}

/// A fake Gitea reached only through a [`FrontDoor`] that starts closed.
async fn behind_a_door() -> (Lab, FrontDoor) {
    let ca = lab_ca("fake", None);
    let door = FrontDoor::closed(&ca).await;
    let root = format!("https://{}:{}", fake_gitea::HOST, door.addr.port());
    let fake = FakeGitea::start_behind(Options::default(), ca, &root).await;
    let door = door.backend(fake.listen);
    (Lab::around(fake), door)
}

/// Run `wire` while `drive` plays the ingress; `drive` is dropped once wiring ends, so a wiring
/// that gives up early fails the test instead of leaving it waiting.
async fn wire_while(
    lab: &Lab,
    progress: &Updates,
    drive: impl std::future::Future<Output = ()>,
) -> Result<GiteaReport, homelab::services::wire::gitea::GiteaWireError> {
    let wiring = lab.wiring();
    let run = wire(&wiring, progress);
    tokio::pin!(run);
    tokio::pin!(drive);
    let mut driven = false;
    loop {
        tokio::select! {
            r = &mut run => return r,
            _ = &mut drive, if !driven => driven = true,
        }
    }
}

#[tokio::test]
async fn the_first_call_waits_through_a_refused_port_and_a_wrong_certificate() {
    let (mut lab, door) = behind_a_door().await;
    lab.patience = Patience {
        limit: std::time::Duration::from_secs(120),
        first_pause: std::time::Duration::from_millis(5),
        max_pause: std::time::Duration::from_millis(20),
    };
    let progress = Updates::new();
    let report = wire_while(&lab, &progress, async {
        // Nothing listens yet: the controller is starting.
        progress.saw("connection refused").await;
        // It listens, but has no certificate for Gitea's name yet.
        door.set(Door::WrongCert).await;
        progress.saw("certificate").await;
        // cert-manager issued it.
        door.set(Door::Open).await;
    })
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => panic!(
            "{}\n{:#?}",
            homelab::edges::error::Error::from(e).render(),
            progress.lines()
        ),
    };
    lab.fake.assert_no_violations();
    let gitea = Lab::step(&report, "gitea");
    assert!(
        gitea.detail.starts_with("Gitea 1.26.1 (answered after "),
        "{}",
        gitea.detail
    );
    let lines = progress.lines();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("gitea: waiting for Gitea to answer over HTTPS (try ")),
        "{lines:#?}"
    );
    // Then the whole wiring went on through the now open door.
    assert!(Lab::step(&report, "gitea admin").outcome == homelab::edges::output::Outcome::Done);
    let accepted = door.accepted.lock().unwrap().clone();
    assert!(accepted.contains(&Door::WrongCert) && accepted.contains(&Door::Open));
}

#[tokio::test]
async fn a_gitea_never_reachable_over_https_fails_within_the_bound_saying_what_was_tried() {
    let (mut lab, door) = behind_a_door().await;
    door.set(Door::WrongCert).await;
    lab.patience = Patience {
        limit: std::time::Duration::from_millis(200),
        first_pause: std::time::Duration::from_millis(5),
        max_pause: std::time::Duration::from_millis(20),
    };
    let progress = Updates::new();
    let err = wire(&lab.wiring(), &progress).await.unwrap_err();
    let text = homelab::edges::error::Error::from(err).render();
    let url = format!("https://{}:{}", fake_gitea::HOST, door.addr.port());
    assert!(
        text.starts_with(&format!(
            "error: Gitea at {url} did not answer over HTTPS within 0.2s ("
        )),
        "{text}"
    );
    assert!(
        text.contains(", each a connection or TLS error); the last: "),
        "{text}"
    );
    assert!(text.contains("certificate"), "{text}");
    assert!(
        text.contains("hint: the ingress serves Gitea's name with the lab CA's certificate only once cert-manager has issued it"),
        "{text}"
    );
    assert!(door.accepted.lock().unwrap().len() > 1, "it tried again");
    assert!(!progress.lines().is_empty(), "it said it was waiting");
    assert!(lab.fake.log().is_empty(), "Gitea itself was never reached");
}

#[tokio::test]
async fn an_http_error_answer_on_the_first_call_is_not_retried() {
    let (mut lab, door) = behind_a_door().await;
    // The ingress answers, with the right certificate, but has no ready backend.
    door.set(Door::Status(502)).await;
    lab.patience = Patience {
        limit: std::time::Duration::from_secs(120),
        first_pause: std::time::Duration::from_millis(5),
        max_pause: std::time::Duration::from_millis(20),
    };
    let progress = Updates::new();
    let err = wire(&lab.wiring(), &progress).await.unwrap_err();
    let text = homelab::edges::error::Error::from(err).render();
    assert!(
        text.starts_with("error: read Gitea's version: Gitea answered 502"),
        "{text}"
    );
    assert_eq!(door.accepted.lock().unwrap().len(), 1, "one call, no retry");
    assert!(progress.lines().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The swagger checker itself.

fn swagger() -> Swagger {
    Swagger::load(&common::contracts_dir().join("gitea/swagger.v1.json"))
}

#[test]
fn swagger_checker_rejects_calls_the_real_api_does_not_have() {
    let s = swagger();
    let ok = |m: &str, p: &str, b: Option<serde_json::Value>| {
        s.check(m, p, &[], Some("application/json"), b.as_ref())
    };
    // What homelab sends passes.
    let m = ok(
        "POST",
        "/api/v1/orgs",
        Some(json!({"username": "lab", "visibility": "public"})),
    )
    .unwrap();
    assert_eq!(m.op.id, "orgCreate");
    assert_eq!(
        ok(
            "PATCH",
            "/api/v1/repos/lab/gitops/hooks/3",
            Some(json!({"active": true}))
        )
        .unwrap()
        .op
        .id,
        "repoEditHook"
    );
    // A literal segment wins over a parameter (`hooks/git` is its own path).
    assert_eq!(
        ok("GET", "/api/v1/repos/lab/gitops/hooks/git", None)
            .unwrap()
            .op
            .id,
        "repoListGitHooks"
    );

    let err = |m: &str, p: &str, b: Option<serde_json::Value>| ok(m, p, b).unwrap_err().join("; ");
    assert!(err("GET", "/api/v1/orgs/lab/nonsense", None).contains("no path"));
    assert!(
        err("PUT", "/api/v1/orgs", Some(json!({"username": "x"}))).contains("not an operation")
    );
    assert!(
        err(
            "POST",
            "/api/v1/orgs",
            Some(json!({"visibility": "public"}))
        )
        .contains("required field `username`")
    );
    assert!(err("POST", "/api/v1/orgs", None).contains("requires a body"));
    assert!(
        err("POST", "/api/v1/orgs", Some(json!({"username": 7}))).contains("should be a string")
    );
    assert!(
        err(
            "POST",
            "/api/v1/orgs",
            Some(json!({"username": "x", "visibility": "secret"}))
        )
        .contains("not one of")
    );
    assert!(
        err(
            "POST",
            "/api/v1/orgs",
            Some(json!({"username": "x", "name": "typo"}))
        )
        .contains("field `name` is not in the definition")
    );
    assert!(
        err(
            "POST",
            "/api/v1/orgs/lab/repos",
            Some(json!({"name": "r", "private": "yes"}))
        )
        .contains("should be a boolean")
    );
    assert!(
        err(
            "POST",
            "/api/v1/users/u/tokens",
            Some(json!({"name": "t", "scopes": "all"}))
        )
        .contains("should be an array")
    );
    assert!(
        err(
            "PATCH",
            "/api/v1/repos/lab/gitops/hooks/abc",
            Some(json!({}))
        )
        .contains("not an integer")
    );
    assert!(err("GET", "/api/v1/version", Some(json!({}))).contains("takes no body"));
    let q = s
        .check(
            "GET",
            "/api/v1/users/u/tokens",
            &[("pages".into(), "1".into())],
            None,
            None,
        )
        .unwrap_err()
        .join("; ");
    assert!(q.contains("query parameter `pages` is not declared"), "{q}");
    let ct = s
        .check(
            "POST",
            "/api/v1/orgs",
            &[],
            Some("text/plain"),
            Some(&json!({"username": "x"})),
        )
        .unwrap_err()
        .join("; ");
    assert!(ct.contains("consumes"), "{ct}");
}

#[tokio::test]
async fn the_fake_records_a_bad_call_and_refuses_it() {
    let fake = FakeGitea::start(Options::default()).await;
    fake.add_user("lab-admin", "pw", true);
    let client = GiteaClient::new(&fake.endpoint()).unwrap();
    // A raw request with a misspelt field, as a buggy client would send it.
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(
            homelab::edges::http::rustls_config(Some(&fake.ca.cert_pem)).unwrap(),
        )
        .resolve(fake_gitea::HOST, fake.addr)
        .build()
        .unwrap();
    let resp = http
        .post(format!("{}/api/v1/orgs", fake.base_url()))
        .basic_auth("lab-admin", Some("pw"))
        .json(&json!({"name": "lab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v = fake.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("required field `username` is missing"),
        "{}",
        v[0]
    );
    assert!(
        v[0].contains("field `name` is not in the definition"),
        "{}",
        v[0]
    );
    // And a path the API does not have.
    let resp = http
        .get(format!("{}/api/v1/organisations/lab", fake.base_url()))
        .basic_auth("lab-admin", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(fake.violations()[1].contains("no path in the API matches"));
    // The typed client's calls pass.
    let basic = client.with_credentials(Credentials::Basic {
        user: "lab-admin".into(),
        password: Secret::new("pw"),
    });
    assert!(basic.get_org("lab").await.unwrap().is_none());
    assert_eq!(fake.violations().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Wiring.

#[tokio::test]
async fn wiring_creates_everything_and_a_second_run_only_reads() {
    let lab = Lab::new(Options::default()).await;
    let report = lab.wire().await;

    // Admin through the CLI in the pod, password on stdin only.
    let calls = lab.pod.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let pw = lab.admin.password.expose();
    assert!(calls[0].stdin);
    assert!(
        calls[0].argv.iter().all(|a| !a.contains(pw)),
        "password in argv: {:?}",
        calls[0].argv
    );
    assert_eq!(
        calls[0].gitea_argv[..6],
        [
            "--config",
            "/etc/gitea/app.ini",
            "admin",
            "user",
            "create",
            "--username"
        ]
    );
    assert!(
        calls[0].gitea_argv.contains(&pw.to_string()),
        "the wrapper passes the password on"
    );
    assert!(
        calls[0]
            .gitea_argv
            .contains(&"--must-change-password=false".to_string())
    );
    assert_eq!(
        calls[0].output.stdout,
        "New user 'lab-admin' has been successfully created!\n"
    );

    // The token: stored, created with basic auth and the fine-grained scopes.
    let token = lab.token();
    assert!(!token.is_empty());
    {
        let d = lab.fake.data();
        let ours: Vec<_> = d.tokens.iter().filter(|t| t.name == "homelab").collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].value, token.expose());
        assert_eq!(
            ours[0].scopes.as_ref().unwrap(),
            &[
                "write:admin",
                "write:organization",
                "write:package",
                "write:repository",
                "write:user"
            ]
        );
        assert!(d.orgs.contains_key("lab"));
        let hooks = &d.hooks["lab/gitops"];
        assert_eq!(hooks.len(), 1);
        let h = &hooks[0];
        assert_eq!(h.kind, "gitea");
        assert_eq!(h.config["url"], DEFAULT_SYNC_WEBHOOK_URL);
        assert_eq!(h.config["content_type"], "json");
        assert_eq!(h.config["secret"], lab.webhook_secret.expose());
        assert_eq!(h.events, ["push"]);
        assert!(h.active);
    }
    let log = lab.fake.log();
    let created_token = log
        .iter()
        .find(|l| l.method == "POST" && l.target == "/api/v1/users/lab-admin/tokens")
        .unwrap();
    assert_eq!((created_token.status, created_token.auth), (201, "basic"));
    assert!(
        log.iter()
            .filter(
                |l| l.target.starts_with("/api/v1/orgs") || l.target.starts_with("/api/v1/repos")
            )
            .all(|l| l.auth == "token"),
        "later calls use the token:\n{}",
        log.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Content pushed with real git, exactly the rendered files.
    for seed in &lab.seeds {
        for (path, text) in &seed.files {
            assert_eq!(&lab.show(&seed.name, path), text, "{}/{path}", seed.name);
        }
    }
    assert_eq!(outcome(&report, "push lab/gitops"), "Done");

    // The registry took the token through the bearer realm dance.
    let targets: Vec<String> = log
        .iter()
        .filter(|l| l.target.starts_with("/v2"))
        .map(|l| format!("{} {} {}", l.target, l.status, l.auth))
        .collect();
    assert_eq!(
        targets,
        [
            "/v2/ 401 none",
            "/v2/token?service=container_registry&scope=* 200 basic",
            "/v2/ 200 bearer"
        ]
    );
    assert!(Lab::step(&report, "registry").detail.contains("/v2/token"));

    let record: GiteaRecord = lab.state.read_json(GITEA_RECORD_FILE).unwrap().unwrap();
    assert_eq!(record.url, lab.fake.base_url());
    assert_eq!(record.repos.len(), 2);

    // Second run: only reads, nothing done, the pod left alone; every step says so.
    lab.fake.clear_log();
    let progress = Recorder::default();
    let again = wire(&lab.wiring(), &progress).await.unwrap();
    lab.fake.assert_no_violations();
    let finished = progress.0.lock().unwrap().clone();
    assert_eq!(
        finished,
        [
            "gitea Skipped",
            "gitea admin Skipped",
            "gitea token Skipped",
            "gitea org Skipped",
            "repo lab/gitops Skipped",
            "push lab/gitops Skipped",
            "repo lab/nyan-cat Skipped",
            "push lab/nyan-cat Skipped",
            "webhook lab/gitops Skipped",
            "registry Skipped"
        ]
    );
    let log = lab.fake.log();
    assert!(
        log.iter().all(|l| l.method == "GET"),
        "a second run must only read:\n{}",
        log.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        log.iter()
            .any(|l| l.target.contains("info/refs?service=git-upload-pack"))
    );
    assert_eq!(again.writes(), 0, "{:#?}", again.steps);
    assert_eq!(lab.pod.calls().len(), 1);
    assert_eq!(lab.token(), token, "the token is kept");
    assert!(again.warnings.is_empty());
}

#[tokio::test]
async fn a_token_lost_from_the_state_is_replaced_not_duplicated() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    let first = lab.token();
    let mut secrets: BTreeMap<String, String> = lab.state.read_json(SECRETS_FILE).unwrap().unwrap();
    secrets.remove(GITEA_TOKEN_KEY);
    lab.state.write_json(SECRETS_FILE, &secrets).unwrap();

    lab.fake.clear_log();
    let report = lab.wire().await;
    assert_eq!(outcome(&report, "gitea token"), "Done");
    assert!(
        Lab::step(&report, "gitea token")
            .detail
            .starts_with("replaced")
    );
    let second = lab.token();
    assert!(!second.is_empty() && second != first);
    let writes: Vec<String> = lab
        .fake
        .log()
        .iter()
        .filter(|l| l.method != "GET")
        .map(|l| format!("{} {} {}", l.method, l.target, l.status))
        .collect();
    assert_eq!(
        writes,
        [
            "DELETE /api/v1/users/lab-admin/tokens/homelab 204",
            "POST /api/v1/users/lab-admin/tokens 201"
        ]
    );
    assert_eq!(
        lab.fake
            .data()
            .tokens
            .iter()
            .filter(|t| t.name == "homelab")
            .count(),
        1
    );
    // The old value no longer works.
    let client = GiteaClient::new(&lab.fake.endpoint()).unwrap();
    let err = client
        .with_credentials(Credentials::Token(first))
        .current_user()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn a_stored_token_that_no_longer_works_is_replaced() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    lab.state
        .store_secrets(&[(GITEA_TOKEN_KEY, "0123456789abcdef")])
        .unwrap();
    let report = lab.wire().await;
    assert!(
        Lab::step(&report, "gitea token")
            .detail
            .starts_with("replaced")
    );
    assert_ne!(lab.token().expose(), "0123456789abcdef");
}

#[tokio::test]
async fn an_existing_admin_with_another_password_gets_the_state_password() {
    let lab = Lab::new(Options::default()).await;
    lab.fake.add_user("lab-admin", "an-old-password", true);
    let report = lab.wire().await;
    let calls = lab.pod.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].output.code, Some(1));
    assert_eq!(
        calls[0].output.stderr,
        "CreateUser: user already exists [name: lab-admin]\n"
    );
    assert_eq!(
        calls[1].gitea_argv[2..5],
        ["admin", "user", "change-password"]
    );
    assert!(
        calls[1]
            .argv
            .iter()
            .all(|a| !a.contains(lab.admin.password.expose()))
    );
    assert!(
        Lab::step(&report, "gitea admin")
            .detail
            .contains("reset the password")
    );
    assert_eq!(
        lab.fake.data().users["lab-admin"].password,
        lab.admin.password.expose()
    );
}

#[tokio::test]
async fn a_cli_failure_names_the_command_without_the_password() {
    let mut lab = Lab::new(Options::default()).await;
    lab.admin.user = "admin".into();
    let err = wire(&lab.wiring(), &Silent).await.unwrap_err();
    let err = homelab::edges::error::Error::from(err);
    let text = err.render();
    assert!(text.starts_with("error: create the Gitea admin user `admin`: `gitea --config /etc/gitea/app.ini admin user create --username admin"), "{text}");
    assert!(text.contains("--password ***"), "{text}");
    assert!(
        text.contains("exited with 1\nCreateUser: name is reserved [admin]"),
        "{text}"
    );
    assert!(
        text.contains("hint: choose another `gitea.admin_user`"),
        "{text}"
    );
    assert!(!text.contains(lab.admin.password.expose()));
}

#[tokio::test]
async fn older_gitea_without_token_scopes() {
    let lab = Lab::new(Options {
        version: "1.18.5".into(),
    })
    .await;
    let report = lab.wire().await;
    assert!(
        Lab::step(&report, "gitea token")
            .detail
            .contains("no token scopes"),
        "{:#?}",
        report.steps
    );
    assert_eq!(report.gitea_version, "1.18.5");
    lab.fake.clear_log();
    assert_eq!(lab.wire().await.writes(), 0);
    assert!(lab.fake.log().iter().all(|l| l.method == "GET"));
}

#[tokio::test]
async fn seed_changes_update_homelabs_own_commits_but_never_someone_elses() {
    let mut lab = Lab::new(Options::default()).await;
    lab.wire().await;

    // A new seed (a newer homelab, another domain) on a repository only homelab pushed to.
    let gitops = lab.seeds.iter_mut().find(|s| s.name == "gitops").unwrap();
    gitops
        .files
        .insert("apps/extra.yaml".into(), "kind: ConfigMap\n".into());
    let report = lab.wire().await;
    assert_eq!(outcome(&report, "push lab/gitops"), "Done");
    assert_eq!(outcome(&report, "push lab/nyan-cat"), "Skipped");
    assert_eq!(lab.show("gitops", "apps/extra.yaml"), "kind: ConfigMap\n");

    // Someone pushes (Drone bumping a tag, a person editing): their work stays.
    let git = Git::find().unwrap();
    let remote = lab.remote("gitops", true);
    let head = git.remote_head(&remote, "main").await.unwrap().unwrap();
    let mut theirs = lab
        .seeds
        .iter()
        .find(|s| s.name == "gitops")
        .unwrap()
        .files
        .clone();
    theirs.insert(
        "apps/extra.yaml".into(),
        "kind: ConfigMap # edited\n".into(),
    );
    let person = Identity {
        name: "someone".into(),
        email: "someone@example.test".into(),
    };
    git.push_tree(
        &remote,
        &PushRequest {
            repo: "lab/gitops",
            files: &theirs,
            branch: "main",
            parent: Some(&head),
            message: "edit",
            author: &person,
            format: ObjectFormat::Sha1,
        },
    )
    .await
    .unwrap();
    let gitops = lab.seeds.iter_mut().find(|s| s.name == "gitops").unwrap();
    gitops
        .files
        .insert("apps/more.yaml".into(), "kind: Secret\n".into());
    let report = lab.wire().await;
    assert_eq!(outcome(&report, "push lab/gitops"), "Skipped");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("`lab/gitops` has commits homelab did not make"));
    assert_eq!(
        lab.show("gitops", "apps/extra.yaml"),
        "kind: ConfigMap # edited\n"
    );

    // Known foreign head: the next run does not even fetch.
    lab.fake.clear_log();
    lab.wire().await;
    assert!(lab.fake.log().iter().all(|l| l.method == "GET"));
}

#[tokio::test]
async fn content_equal_to_the_seed_is_adopted_without_a_push() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    // The record is lost (a rebuilt state against a kept Gitea): content already matches.
    lab.state.remove(GITEA_RECORD_FILE).unwrap();
    lab.fake.clear_log();
    let report = lab.wire().await;
    assert_eq!(
        Lab::step(&report, "push lab/gitops").detail,
        "content matches the seed"
    );
    assert!(
        !lab.fake
            .log()
            .iter()
            .any(|l| l.target.contains("receive-pack")),
        "no push when the content is equal"
    );
}

#[tokio::test]
async fn webhook_drift_is_repaired_and_never_duplicated() {
    let mut lab = Lab::new(Options::default()).await;
    lab.wire().await;
    {
        let mut d = lab.fake.data();
        let hooks = d.hooks.get_mut("lab/gitops").unwrap();
        hooks[0].active = false;
        let mut dup = hooks[0].clone();
        dup.id = 999;
        hooks.push(dup);
        let mut drone = hooks[0].clone();
        drone.id = 1000;
        drone.config.insert(
            "url".into(),
            "http://drone.drone.svc.cluster.local/hook".into(),
        );
        hooks.push(drone);
    }
    let report = lab.wire().await;
    assert_eq!(outcome(&report, "webhook lab/gitops"), "Done");
    {
        let d = lab.fake.data();
        let hooks = &d.hooks["lab/gitops"];
        let ours: Vec<_> = hooks
            .iter()
            .filter(|h| h.config["url"] == DEFAULT_SYNC_WEBHOOK_URL)
            .collect();
        assert_eq!(ours.len(), 1);
        assert!(ours[0].active);
        assert_eq!(hooks.len(), 2, "Drone's own hook is left alone");
    }
    // A new secret (only visible through homelab's fingerprint) is pushed to the hook.
    lab.webhook_secret = Secret::new("a-new-secret");
    let report = lab.wire().await;
    assert_eq!(
        Lab::step(&report, "webhook lab/gitops").detail,
        "updated the webhook"
    );
    assert_eq!(
        lab.fake.data().hooks["lab/gitops"][0].config["secret"],
        "a-new-secret"
    );
    assert_eq!(lab.wire().await.writes(), 0);
}

#[tokio::test]
async fn verbose_logs_never_contain_the_password_token_or_webhook_secret() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    lab.wire().await;
    let text = captured();
    assert!(
        text.contains("run `git"),
        "the capture sees debug logs:\n{text}"
    );
    assert!(text.contains("/api/v1/users/lab-admin/tokens"), "{text}");
    for secret in [
        lab.admin.password.expose(),
        lab.token().expose(),
        lab.webhook_secret.expose(),
    ] {
        assert!(!secret.is_empty());
        assert!(!text.contains(secret), "a secret leaked into the logs");
    }
    // Nor does the report, which `up` may print.
    let report = serde_json::to_string(&lab.wire().await).unwrap();
    assert!(
        !report.contains(lab.token().expose()) && !report.contains(lab.admin.password.expose())
    );
}

#[tokio::test]
async fn the_client_maps_gitea_status_codes() {
    use homelab::services::gitea::Created;
    use homelab::services::gitea::types::*;
    let fake = FakeGitea::start(Options::default()).await;
    fake.add_user("lab-admin", "pw", true);
    let client = GiteaClient::new(&fake.endpoint()).unwrap();
    let basic = client.with_credentials(Credentials::Basic {
        user: "lab-admin".into(),
        password: Secret::new("pw"),
    });
    // Missing or wrong credentials: 401.
    assert_eq!(client.current_user().await.unwrap_err().status(), Some(401));
    let wrong = client.with_credentials(Credentials::Basic {
        user: "lab-admin".into(),
        password: Secret::new("nope"),
    });
    assert_eq!(wrong.current_user().await.unwrap_err().status(), Some(401));
    // A token with too few scopes: 201, then 403 naming the scope, with a hint.
    let narrow = basic
        .create_token(
            "lab-admin",
            &CreateAccessTokenOption {
                name: "narrow".into(),
                scopes: Some(vec!["write:repository".into()]),
            },
        )
        .await
        .unwrap();
    // Same name again: 400.
    let dup = basic
        .create_token(
            "lab-admin",
            &CreateAccessTokenOption {
                name: "narrow".into(),
                scopes: Some(vec!["all".into()]),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(400));
    assert!(
        dup.to_string()
            .ends_with("Gitea answered 400: access token name has been used already"),
        "{dup}"
    );
    let org = CreateOrgOption {
        username: "lab".into(),
        full_name: None,
        description: None,
        visibility: Visibility::Public,
    };
    let err = client
        .with_credentials(Credentials::Token(narrow.sha1.clone()))
        .create_org(&org)
        .await
        .unwrap_err();
    let err = homelab::edges::error::Error::from(err);
    assert_eq!(
        err.render(),
        "error: create organization `lab`: Gitea answered 403: token does not have at least one of required scope(s): [write:organization]\nhint: the stored token lacks a scope this call needs; delete `gitea_token` from the lab's `secrets.json` and run `homelab up` to create a new one"
    );
    // Created (201), then exists (422 for organisations, 409 for repositories).
    assert!(matches!(
        basic.create_org(&org).await.unwrap(),
        Created::Created(_)
    ));
    assert!(matches!(
        basic.create_org(&org).await.unwrap(),
        Created::Exists
    ));
    let repo = CreateRepoOption {
        name: "gitops".into(),
        description: None,
        private: false,
        auto_init: false,
        default_branch: "main".into(),
        object_format_name: Some("sha1".into()),
    };
    assert!(matches!(
        basic.create_org_repo("lab", &repo).await.unwrap(),
        Created::Created(_)
    ));
    assert!(matches!(
        basic.create_org_repo("lab", &repo).await.unwrap(),
        Created::Exists
    ));
    let statuses: Vec<u16> = fake.log().iter().map(|l| l.status).collect();
    assert_eq!(statuses, [401, 401, 201, 400, 403, 201, 422, 201, 409]);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_stored_token_with_too_few_scopes_is_replaced() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    for t in lab
        .fake
        .data()
        .tokens
        .iter_mut()
        .filter(|t| t.name == "homelab")
    {
        t.scopes = Some(vec!["write:repository".into()]);
    }
    let report = lab.wire().await;
    assert!(
        Lab::step(&report, "gitea token")
            .detail
            .starts_with("replaced")
    );
    let d = lab.fake.data();
    let ours: Vec<_> = d.tokens.iter().filter(|t| t.name == "homelab").collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].scopes.as_ref().unwrap().len(), 5);
}

// ---------------------------------------------------------------------------------------------
// git over HTTPS against the real git http-backend.

#[tokio::test]
async fn git_push_needs_the_token_and_the_lab_ca() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    let git = Git::find().unwrap();
    let files: BTreeMap<String, String> = [("a.txt".to_string(), "a\n".to_string())].into();
    let author = Identity {
        name: "t".into(),
        email: "t@example.test".into(),
    };
    let head = git
        .remote_head(&lab.remote("nyan-cat", true), "main")
        .await
        .unwrap()
        .unwrap();
    let req = PushRequest {
        repo: "lab/nyan-cat",
        files: &files,
        branch: "main",
        parent: Some(&head),
        message: "m",
        author: &author,
        format: ObjectFormat::Sha1,
    };

    // No token: the server asks for credentials and git, unable to prompt, gives up.
    let err = git
        .push_tree(&lab.remote("nyan-cat", false), &req)
        .await
        .unwrap_err();
    let err = homelab::edges::error::Error::from(err);
    assert!(
        err.render().contains("push the content of `lab/nyan-cat`"),
        "{}",
        err.render()
    );
    assert!(
        err.render()
            .contains("hint: Gitea refused the stored token"),
        "{}",
        err.render()
    );

    // A wrong token: refused too.
    let mut wrong = lab.remote("nyan-cat", true);
    wrong.auth.password = Some(Secret::new("not-a-token"));
    assert!(git.push_tree(&wrong, &req).await.is_err());

    // No lab CA: git does not trust the server.
    let mut untrusted = lab.remote("nyan-cat", true);
    untrusted.auth.ca_pem = None;
    let err =
        homelab::edges::error::Error::from(git.remote_head(&untrusted, "main").await.unwrap_err());
    assert!(
        err.render()
            .contains("hint: git does not trust Gitea's certificate"),
        "{}",
        err.render()
    );

    // Another CA: not trusted either.
    let other = homelab::model::tls::generate(
        "other",
        &["sslip.io".into()],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut other_ca = lab.remote("nyan-cat", true);
    other_ca.auth.ca_pem = Some(other.cert_pem);
    assert!(git.remote_head(&other_ca, "main").await.is_err());

    // The token and the lab CA: the push lands and the tree is what the pure function says.
    let pushed = git
        .push_tree(&lab.remote("nyan-cat", true), &req)
        .await
        .unwrap();
    assert_eq!(
        pushed.tree,
        tree_id("lab/nyan-cat", &files, ObjectFormat::Sha1).unwrap()
    );
    assert_eq!(
        git.remote_head(&lab.remote("nyan-cat", false), "main")
            .await
            .unwrap(),
        Some(pushed.commit.clone()),
        "reads of a public repository need no token"
    );
    let tree = git
        .remote_tree(&lab.remote("nyan-cat", true), "main", ObjectFormat::Sha1)
        .await
        .unwrap();
    assert_eq!(tree, pushed);
    // A push on a stale parent is refused, never forced.
    let err = git
        .push_tree(&lab.remote("nyan-cat", true), &req)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("moved from"), "{err}");
    lab.fake.assert_no_violations();
}

#[tokio::test]
async fn the_api_client_trusts_only_the_lab_ca() {
    let fake = FakeGitea::start(Options::default()).await;
    let untrusted = GiteaClient::new(&Endpoint {
        ca_pem: None,
        ..fake.endpoint()
    })
    .unwrap();
    let err = homelab::edges::error::Error::from(untrusted.version().await.unwrap_err());
    let text = err.render();
    assert!(text.starts_with("error: read Gitea's version: could not reach Gitea at https://gitea.127.0.0.1.sslip.io:"), "{text}");
    assert!(
        text.contains("hint: Gitea's certificate is not signed by the lab CA"),
        "{text}"
    );
    let trusted = GiteaClient::new(&fake.endpoint()).unwrap();
    assert_eq!(trusted.version().await.unwrap().version, "1.26.1");
    // Token auth is refused for token creation, as in Gitea.
    fake.add_user("u", "pw", true);
    let err = trusted
        .with_credentials(Credentials::Token(Secret::new("x")))
        .list_tokens("u")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------------
// `homelab credentials`.

fn write_lab_state(ctx: &common::TestContext, with_record: bool) -> (String, String) {
    let state = LabState::at("homelab", ctx.state_dir("homelab"));
    let secrets = state.secrets().unwrap();
    state
        .store_secrets(&[(GITEA_TOKEN_KEY, "tok-0123456789")])
        .unwrap();
    if with_record {
        state
            .write_json(
                GITEA_RECORD_FILE,
                &GiteaRecord {
                    url: "https://gitea.10.1.2.3.sslip.io".into(),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    (
        secrets.get("gitea_admin_password").expose().to_string(),
        "tok-0123456789".into(),
    )
}

#[test]
fn credentials_prints_urls_and_logins() {
    let ctx = common::TestContext::new();
    let (password, token) = write_lab_state(&ctx, true);
    let run = ctx.homelab(&["credentials"]);
    run.success();
    let expected = format!(
        "Lab `homelab`
  gitea     https://gitea.10.1.2.3.sslip.io
    user       lab-admin
    password   {password}
    API token  key `gitea_token` in `~/.local/share/homelab/homelab/secrets.json`
    registry   gitea.10.1.2.3.sslip.io (`docker login gitea.10.1.2.3.sslip.io -u lab-admin` with the password or the token)
  lab-page  https://lab.10.1.2.3.sslip.io
  drone     https://drone.10.1.2.3.sslip.io (sign in through Gitea as `lab-admin`)
  nyan-cat  https://nyan.10.1.2.3.sslip.io
  repos     lab/gitops, lab/nyan-cat
"
    );
    assert_eq!(run.stdout, expected);
    assert!(
        !run.stdout.contains(&token),
        "the token's location is shown, not its value"
    );

    let run = ctx.homelab(&["credentials", "--output", "json"]);
    run.success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["gitea"]["password"], password.as_str());
    assert_eq!(v["gitea"]["user"], "lab-admin");
    assert_eq!(v["gitea"]["url"], "https://gitea.10.1.2.3.sslip.io");
    assert_eq!(v["gitea"]["token"]["key"], "gitea_token");
    assert_eq!(v["gitea"]["token"]["stored"], true);
    assert_eq!(v["drone"]["url"], "https://drone.10.1.2.3.sslip.io");

    // The other commands keep the password to themselves.
    for args in [&["config", "show"][..], &["plan"][..]] {
        let run = ctx.homelab(args);
        assert!(
            !run.stdout.contains(&password) && !run.stderr.contains(&password),
            "{args:?}"
        );
    }
}

#[test]
fn credentials_of_a_lab_never_built_is_an_error_and_creates_nothing() {
    let ctx = common::TestContext::new();
    let run = ctx.homelab(&["credentials", "--lab", "nope"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: lab `nope` has no credentials yet: `~/.local/share/homelab/nope/secrets.json` does not exist\nhint: run `homelab up` to build the lab; `--lab NAME` picks another lab\n"
    );
    assert!(!ctx.state_dir("nope").exists());
}

#[test]
fn credentials_before_the_domain_is_known_still_shows_the_login() {
    let ctx = common::TestContext::new();
    let (password, _) = write_lab_state(&ctx, false);
    let run = ctx.homelab(&["credentials"]);
    run.success();
    assert!(
        run.stdout
            .contains("URLs are not known yet: run `homelab up`"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("password   {password}")));
    let run = ctx.homelab(&["credentials", "--domain", "lab.example.test"]);
    assert!(
        run.stdout.contains("https://gitea.lab.example.test"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_summary_card_shows_urls_and_points_to_credentials_without_secrets() {
    use homelab::services::wire::access::{AccessInput, LabAccess};
    let stack = homelab::model::stack::load("default", std::path::Path::new(".")).unwrap();
    let domain = Domain::resolve(Some("10.1.2.3.sslip.io"), None);
    let access = LabAccess::new(AccessInput {
        lab: "workshop",
        stack: &stack,
        domain: Some(&domain),
        admin_user: "lab-admin",
        admin_password: Secret::new("pw-not-shown"),
        token_stored: true,
        secrets_file: "/x/secrets.json".into(),
        argocd_admin_password: None,
    });
    assert_eq!(
        access.summary_card(),
        "Lab `workshop` is ready
  gitea     https://gitea.10.1.2.3.sslip.io
  lab-page  https://lab.10.1.2.3.sslip.io
  drone     https://drone.10.1.2.3.sslip.io
  nyan-cat  https://nyan.10.1.2.3.sslip.io
  repos     lab/gitops, lab/nyan-cat
Logins, passwords and the API token: run `homelab credentials`
"
    );
}

/// The argocd stack (issue 15): Argo CD's UI in the card with its login name (never the
/// password); `homelab credentials` shows the admin password the lab set in argocd-secret.
#[test]
fn with_argo_cd_the_card_shows_its_ui_and_credentials_its_admin_login() {
    use homelab::services::wire::access::{AccessInput, LabAccess};
    let stack = homelab::model::stack::load("argocd", std::path::Path::new(".")).unwrap();
    let domain = Domain::resolve(Some("10.1.2.3.sslip.io"), None);
    let access = LabAccess::new(AccessInput {
        lab: "workshop",
        stack: &stack,
        domain: Some(&domain),
        admin_user: "lab-admin",
        admin_password: Secret::new("pw-not-shown"),
        token_stored: true,
        secrets_file: "/x/secrets.json".into(),
        argocd_admin_password: Some(Secret::new("argo-pw")),
    });
    let card = access.summary_card();
    assert_eq!(
        card,
        "Lab `workshop` is ready
  gitops-engine  https://argocd.10.1.2.3.sslip.io (Argo CD, user `admin`)
  gitea          https://gitea.10.1.2.3.sslip.io
  drone          https://drone.10.1.2.3.sslip.io
  nyan-cat       https://nyan.10.1.2.3.sslip.io
  repos          lab/gitops, lab/nyan-cat
Logins, passwords and the API token: run `homelab credentials`
"
    );
    let text = access.credentials_text();
    assert!(
        text.contains(
            "  gitops-engine  https://argocd.10.1.2.3.sslip.io\n    user       admin\n    password   argo-pw\n"
        ),
        "{text}"
    );
    let json = access.credentials_json();
    assert_eq!(json["argocd"]["url"], "https://argocd.10.1.2.3.sslip.io");
    assert_eq!(json["argocd"]["user"], "admin");
    assert_eq!(json["argocd"]["password"], "argo-pw");
}

// ---------------------------------------------------------------------------------------------
// Opt-in: a real Gitea, a real cluster.

/// Against a real Gitea when `HOMELAB_TEST_GITEA_URL` and `HOMELAB_TEST_GITEA_ADMIN`
/// (`user:password` of an existing admin) are set; `HOMELAB_TEST_GITEA_CA` may name the PEM of
/// the CA of an HTTPS URL. The admin exists already, so the pod-exec step is skipped (a pod fake
/// that fails if called stands in). Works on Gitea 1.26 and on versions without token scopes.
#[tokio::test]
async fn opt_in_real_gitea_token_org_repos_webhook_and_registry() {
    let (Ok(url), Ok(admin)) = (
        std::env::var("HOMELAB_TEST_GITEA_URL"),
        std::env::var("HOMELAB_TEST_GITEA_ADMIN"),
    ) else {
        eprintln!(
            "skipped: set HOMELAB_TEST_GITEA_URL and HOMELAB_TEST_GITEA_ADMIN=user:password to run against a real Gitea"
        );
        return;
    };
    let (user, password) = admin
        .split_once(':')
        .expect("HOMELAB_TEST_GITEA_ADMIN is user:password");
    let ca_pem = std::env::var("HOMELAB_TEST_GITEA_CA")
        .ok()
        .map(|p| std::fs::read_to_string(p).unwrap());
    struct NoPod;
    impl homelab::services::wire::pod_exec::PodExec for NoPod {
        fn exec<'a>(
            &'a self,
            req: &'a homelab::services::wire::pod_exec::ExecRequest,
        ) -> futures::future::BoxFuture<
            'a,
            Result<
                homelab::services::wire::pod_exec::ExecOutput,
                homelab::services::wire::pod_exec::PodExecError,
            >,
        > {
            panic!(
                "the admin given in HOMELAB_TEST_GITEA_ADMIN did not sign in, so wiring wanted to {}",
                req.summary
            )
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let state = LabState::at("real", dir.path().join("real"));
    let suffix = hex::encode(homelab::edges::state::random_bytes(3).unwrap());
    let host = reqwest::Url::parse(&url)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    let w = GiteaWiring {
        endpoint: Endpoint {
            base_url: url.clone(),
            ca_pem,
            resolve: None,
        },
        admin: AdminLogin::new(user, Secret::new(password), &host),
        cli: GiteaCli::default(),
        pod: &NoPod,
        state: &state,
        org: format!("homelab-test-{suffix}"),
        repos: rendered_seeds(),
        webhook: WebhookSpec {
            repo: "gitops".into(),
            url: DEFAULT_SYNC_WEBHOOK_URL.into(),
            secret: Secret::new(format!("secret-{suffix}")),
        },
        token_name: format!("homelab-test-{suffix}"),
        git: Git::find().unwrap(),
        author: Identity {
            name: "homelab".into(),
            email: format!("homelab@{host}"),
        },
        patience: Patience::default(),
        base_images: Vec::new(),
        image_cache: None,
    };
    let first = wire(&w, &Silent)
        .await
        .map_err(homelab::edges::error::Error::from)
        .unwrap();
    assert!(first.writes() >= 5, "{:#?}", first.steps);
    let second = wire(&w, &Silent)
        .await
        .map_err(homelab::edges::error::Error::from)
        .unwrap();
    assert_eq!(second.writes(), 0, "{:#?}", second.steps);
    eprintln!(
        "real Gitea {}: wired org `{}` (left in place; delete it by hand)",
        first.gitea_version, w.org
    );
}

/// The kube exec path against a real cluster when `HOMELAB_TEST_KUBECONFIG` names a kubeconfig
/// whose cluster runs the lab's Gitea (namespace `HOMELAB_TEST_GITEA_NAMESPACE`, default
/// `gitea`): stdin reaches the command, the rootless image runs it as uid 1000 (`git`), and exit
/// codes come back.
#[tokio::test]
async fn opt_in_kube_exec_in_the_gitea_pod() {
    let Ok(path) = std::env::var("HOMELAB_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: set HOMELAB_TEST_KUBECONFIG to exercise the kube exec path against a real cluster"
        );
        return;
    };
    use homelab::services::wire::pod_exec::{ExecRequest, KubePodExec, PodExec};
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let exec = KubePodExec {
        client,
        namespace: std::env::var("HOMELAB_TEST_GITEA_NAMESPACE").unwrap_or_else(|_| "gitea".into()),
        selector: homelab::services::wire::gitea::DEFAULT_GITEA_POD_SELECTOR.into(),
        container: None,
    };
    let out = exec
        .exec(&ExecRequest {
            summary: "check the exec path".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                r#"IFS= read -r x; printf '%s:%s' "$(id -u)" "$x""#.into(),
            ],
            display: "sh -c …".into(),
            stdin: Some(Secret::new("hello")),
        })
        .await
        .unwrap();
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "1000:hello"));
    let out = exec
        .exec(&ExecRequest {
            summary: "check exit codes".into(),
            argv: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            display: "sh -c …".into(),
            stdin: None,
        })
        .await
        .unwrap();
    assert_eq!((out.code, out.stderr.as_str()), (Some(3), "oops\n"));
}

// ---------------------------------------------------------------------------------------------
// The base images of the lab's builds, pushed into Gitea's registry from the image cache.

#[tokio::test]
async fn cached_base_images_are_pushed_into_the_registry_once_and_an_uncached_one_is_named() {
    let mut lab = Lab::new(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cached = "docker.io/nginxinc/nginx-unprivileged:1.29.3-alpine";
    image_cache::fill(dir.path(), &[cached.to_string()]);
    lab.image_cache = Some(dir.path().to_path_buf());
    lab.base_images = ["nginxinc/nginx-unprivileged:1.29.3-alpine", "alpine:3.22"]
        .iter()
        .map(|r| BaseImage::new(r, fake_gitea::HOST, "lab").unwrap())
        .collect();

    let first = lab.wire().await;
    assert_eq!(outcome(&first, "base images"), "Done");
    let said = Lab::step(&first, "base images").detail.clone();
    assert!(
        said.contains("lab/nginxinc/nginx-unprivileged:1.29.3-alpine"),
        "{said}"
    );
    assert!(
        said.contains("`alpine:3.22` not in the image cache: kaniko pulls it from its registry"),
        "{said}"
    );
    let entry = homelab::cluster::image_cache::Layout::open(dir.path())
        .unwrap()
        .entry(cached)
        .unwrap()
        .unwrap();
    let pushed = lab
        .fake
        .manifest("lab/nginxinc/nginx-unprivileged", "1.29.3-alpine")
        .expect("the manifest is tagged");
    assert_eq!(pushed.digest, entry.digest);
    // Every blob the manifest names went up under the same image.
    let blobs = lab.fake.data().blobs.len();
    assert_eq!(blobs, 2, "config and one layer");

    // A second run finds the tag pointing at the cached manifest and uploads nothing.
    let before = lab.fake.log().len();
    let again = lab.wire().await;
    assert_eq!(outcome(&again, "base images"), "Skipped");
    let uploads: Vec<String> = lab.fake.log()[before..]
        .iter()
        .filter(|r| r.target.starts_with("/v2/") && r.method != "GET" && r.method != "HEAD")
        .map(|r| r.to_string())
        .collect();
    assert_eq!(uploads, Vec::<String>::new());
}

#[tokio::test]
async fn the_registry_refuses_a_manifest_before_its_blobs_a_wrong_digest_and_anonymous_pushes() {
    let lab = Lab::new(Options::default()).await;
    lab.wire().await;
    let token = lab.token();
    let client = GiteaClient::new(&lab.fake.endpoint())
        .unwrap()
        .with_credentials(Credentials::Basic {
            user: "lab-admin".into(),
            password: token,
        });
    let layer = b"layer".to_vec();
    let digest = format!("sha256:{}", homelab::edges::digest::sha256_hex(&layer));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 5},
        "layers": [],
    }))
    .unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let e = client
        .registry_put_manifest("lab/x", "1", mt, manifest.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = client
        .registry_put_blob(
            "lab/x",
            &format!("sha256:{}", "0".repeat(64)),
            layer.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let anonymous = GiteaClient::new(&lab.fake.endpoint()).unwrap();
    let e = anonymous
        .registry_put_blob("lab/x", &digest, layer.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    client
        .registry_put_blob("lab/x", &digest, layer)
        .await
        .unwrap();
    assert!(client.registry_has_blob("lab/x", &digest).await.unwrap());
    assert!(!client.registry_has_blob("lab/y", &digest).await.unwrap());
    client
        .registry_put_manifest("lab/x", "1", mt, manifest.clone())
        .await
        .unwrap();
    assert_eq!(
        client.registry_manifest_digest("lab/x", "1").await.unwrap(),
        Some(format!(
            "sha256:{}",
            homelab::edges::digest::sha256_hex(&manifest)
        ))
    );
    assert_eq!(
        client.registry_manifest_digest("lab/x", "2").await.unwrap(),
        None
    );
}

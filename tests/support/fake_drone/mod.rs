//! A fake Drone 2.24 server for tests, over HTTPS with a lab-CA certificate at
//! `drone.127.0.0.1.sslip.io`.
//!
//! Every request is matched against Drone's real route list, `contracts/drone/routes.json` (from
//! Drone v2.24.0's router), read at test time: a request no route matches (or only the SPA one) is
//! recorded as a violation and answered 404, so calling a route the real server lacks fails the
//! test. The matched route's middleware list drives authentication as routes.md describes: the
//! user comes from any non-empty `Authorization` header (`Bearer ` stripped), else
//! `?access_token=`, else the `_session_` cookie; `AuthorizeUser` → 401, `AuthorizeAdmin` →
//! 401/403, `InjectRepository` → 404 `{"message":"Not Found"}` for a repository not synced,
//! `Check{Write,Admin}Access` → 401 without a user. Errors are `{"message": …}`.
//!
//! Behaviour from NOTES §4: `/login` answers 303 to Gitea's authorize URL with an
//! `_oauth_state_` cookie (Max-Age 1800); the callback checks the state cookie, exchanges the
//! code at Gitea's `/login/oauth/access_token` with the client id and secret in the form body,
//! reads the Gitea user with the access token, and sets `_session_` (303 to `/`), or 303s to
//! `/login/error?message=…`. `DRONE_USER_CREATE` is modelled: the admin exists from boot with
//! its API token and no Gitea token, so a repository sync before the OAuth login fails (500).
//! `POST /api/user/repos` syncs from Gitea's `/api/v1/user/repos` with the stored OAuth token;
//! activation creates the webhook in Gitea; a duplicate secret POST is a 500 (the DB's unique
//! constraint); `POST …/builds` makes a `custom` event build, or answers `null` when the
//! pipeline's trigger does not accept `custom`; `/hook` turns Gitea push events into builds
//! (skipping `[skip ci]` commits). Not modelled: the webhook HMAC signature, pagination beyond
//! the first page, the runner RPC.
//!
//! Trust, as Drone 2.24 keeps it: `PATCH /api/repos/{owner}/{name}` applies `trusted` (and
//! `timeout`, `counter`) only for a Drone administrator and silently keeps the old value for
//! anyone else, still answering 200 (harness/gitness v2.24.0 `handler/api/repos/update.go`);
//! the route's `CheckAdminAccess` answers 404 to a user without admin permission on the
//! repository (`handler/api/acl/check.go`). Every build starts from the repository's pipeline
//! file at the commit, fetched from Gitea as the triggerer does (`trigger/trigger.go`): a
//! missing file is a 500, a file the server's linter refuses is a build in `error` with the
//! linter's text; the runner lints again with the repository's `trusted` flag (see [`lint`])
//! and refuses, for instance, a `config_map` volume of an untrusted repository: the stage and
//! the build end in `error` before any step runs.
//!
//! Builds run on a script ([`Script`]): each step passes or fails with a log, and
//! [`FakeDrone::on_success`] runs what the pipeline's deploy step would do — or, with a
//! [`Runner`] ([`FakeDrone::runner`]), the test runs the real pipeline and reports its steps.
//! [`FakeDrone::start_plain`] serves plain HTTP as Drone's pod does behind an ingress, knowing
//! itself by `DRONE_SERVER_PROTO://DRONE_SERVER_HOST` and giving Gitea `<proxy>/hook`.

pub mod lint;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::http_kit::cookies::{cookies, set_cookies};
use super::http_kit::log::{RequestLog, Violations};
use super::http_kit::query;
use super::http_kit::tls::TlsListener;
use homelab::edges::http::Endpoint;
use homelab::model::tls::LabCa;

/// Host the fake answers for.
pub const HOST: &str = "drone.127.0.0.1.sslip.io";

/// One route of routes.json.
#[derive(Clone, Debug)]
struct Route {
    methods: Vec<String>,
    segs: Vec<String>,
    wildcard: bool,
    handler: String,
    middleware: Vec<String>,
}

fn load_routes() -> Vec<Route> {
    let path = crate::support::common::contracts_dir().join("drone/routes.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read `{}`: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut routes = Vec::new();
    let mut add = |method: &str, path: &str, handler: &str, middleware: Vec<String>| {
        let (path, wildcard) = match path.strip_suffix("/*") {
            Some(p) => (p, true),
            None => (path, false),
        };
        let methods = if method == "*" {
            vec!["*".to_string()]
        } else {
            method.split('/').map(str::to_string).collect()
        };
        routes.push(Route {
            methods,
            segs: path
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            wildcard,
            handler: handler.into(),
            middleware,
        });
    };
    for r in doc["api_routes"].as_array().unwrap() {
        add(
            r["method"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["handler"].as_str().unwrap(),
            r["middleware"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect(),
        );
    }
    for r in doc["root_routes"].as_array().unwrap() {
        let path = r["path"].as_str().unwrap();
        if path.contains("(NotFound)") {
            // The SPA catch-all answers any GET with the UI's HTML; no client of the API wants
            // it, so the fake leaves it out and such a request is a violation.
            continue;
        }
        add(
            r["method"].as_str().unwrap(),
            path,
            r["handler"].as_str().unwrap(),
            Vec::new(),
        );
    }
    routes
}

fn match_route<'a>(
    routes: &'a [Route],
    method: &str,
    path: &str,
) -> Option<(&'a Route, BTreeMap<String, String>)> {
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut best: Option<(usize, &Route, BTreeMap<String, String>)> = None;
    for r in routes {
        if !r.methods.iter().any(|m| m == "*" || m == method) {
            continue;
        }
        if r.wildcard {
            if segs.len() < r.segs.len() {
                continue;
            }
        } else if segs.len() != r.segs.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let mut literal = 0;
        let ok = r.segs.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                params.insert(t[1..t.len() - 1].to_string(), s.to_string());
                true
            } else {
                literal += 1;
                t == s
            }
        });
        if ok && best.as_ref().is_none_or(|b| literal > b.0) {
            best = Some((literal, r, params));
        }
    }
    best.map(|(_, r, p)| (r, p))
}

/// What a build's steps do.
#[derive(Clone, Debug)]
pub struct ScriptStep {
    pub name: String,
    /// `Some((exit code, log lines))` to fail the step.
    pub fail: Option<(i64, Vec<String>)>,
}

/// The pipeline the fake "runs" for every build.
#[derive(Clone, Debug)]
pub struct Script {
    pub steps: Vec<ScriptStep>,
    /// Before the build leaves `pending`.
    pub start_delay: Duration,
    /// Per step.
    pub step_delay: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            steps: ["clone", "registry-login", "build", "deploy"]
                .iter()
                .map(|n| ScriptStep {
                    name: n.to_string(),
                    fail: None,
                })
                .collect(),
            start_delay: Duration::from_millis(30),
            step_delay: Duration::from_millis(20),
        }
    }
}

/// A finished successful build, for [`FakeDrone::on_success`].
#[derive(Clone, Debug)]
pub struct BuildDone {
    pub repo: String,
    pub commit: String,
}

pub type OnSuccess = Arc<dyn Fn(BuildDone) -> BoxFuture<'static, ()> + Send + Sync>;

/// A build handed to a runner (what drone-runner-kube receives over RPC).
#[derive(Clone, Debug)]
pub struct BuildJob {
    /// `owner/name`.
    pub repo: String,
    pub number: i64,
    pub event: String,
    pub branch: String,
    pub commit: String,
    /// The repository's secrets, by name (what `from_secret` reads).
    pub secrets: BTreeMap<String, String>,
    /// `DRONE_*` variables of the build.
    pub env: BTreeMap<String, String>,
    /// The repository's `trusted` flag as the runner receives it (`data.Repo`), which its
    /// linter checks.
    pub trusted: bool,
    /// The pipeline file the server fetched for the build (`data.Config`).
    pub config: String,
}

/// How one step of a run ended.
#[derive(Clone, Debug)]
pub struct StepRun {
    pub name: String,
    pub exit_code: i64,
    pub log: Vec<String>,
}

/// How a stage ended on the runner: its steps in order (a failed step ends the list), or the
/// error that failed the whole stage before or between steps (drone/runner-go v1.12.0
/// `pipeline/state.go`, `FailAll`: the linter's refusal, a file it cannot parse).
#[derive(Clone, Debug, Default)]
pub struct StageRun {
    pub steps: Vec<StepRun>,
    pub error: Option<String>,
}

/// Runs a build's pipeline and reports how its stage ended.
pub type Runner = Arc<dyn Fn(BuildJob) -> BoxFuture<'static, StageRun> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub admin: bool,
    pub token: String,
    pub oauth_token: Option<String>,
    pub synced: i64,
}

#[derive(Clone, Debug)]
pub struct Repo {
    pub id: i64,
    pub namespace: String,
    pub name: String,
    pub active: bool,
    pub config_path: String,
    pub counter: i64,
    pub admins: Vec<String>,
    pub trusted: bool,
}

#[derive(Clone, Debug)]
pub struct DSecret {
    pub name: String,
    pub data: String,
    pub pull_request: bool,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub number: i64,
    pub name: String,
    pub status: String,
    pub exit_code: i64,
    pub log: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Build {
    pub id: i64,
    pub number: i64,
    pub status: String,
    pub event: String,
    pub git_ref: String,
    pub after: String,
    pub message: String,
    pub stage_status: String,
    pub steps: Vec<Step>,
    /// The server's error (a pipeline it could not find or lint); such a build has no stage.
    pub error: String,
    /// The stage's error (the runner refused the pipeline).
    pub stage_error: String,
    /// The pipeline file the build runs.
    pub config: String,
}

/// Settings of the fake server (what its environment would be).
#[derive(Clone, Debug)]
pub struct Options {
    /// `DRONE_GITEA_SERVER`, with the CA and pinned address to reach it.
    pub gitea: Endpoint,
    /// `DRONE_USER_CREATE=username:<this>,admin:true,token:<admin_token>`.
    pub admin_user: String,
    pub admin_token: String,
    /// `DRONE_REGISTRATION_CLOSED`.
    pub registration_closed: bool,
    /// Whether the pipeline's trigger accepts `custom` events (builds started through the API).
    pub custom_trigger: bool,
    /// `DRONE_SERVER_HOST` override for the redirect URI (default: the fake's own host).
    pub server_host: Option<String>,
    /// `DRONE_SERVER_PROXY_PROTO://DRONE_SERVER_PROXY_HOST`: the address Gitea's webhooks are
    /// given (`<proxy>/hook`); default: the fake's own URL.
    pub proxy: Option<String>,
}

#[derive(Default)]
pub struct Data {
    pub client_id: String,
    pub client_secret: String,
    pub restarts: u32,
    pub users: Vec<User>,
    pub sessions: BTreeMap<String, String>,
    pub repos: BTreeMap<String, Repo>,
    pub secrets: BTreeMap<String, Vec<DSecret>>,
    pub builds: BTreeMap<String, Vec<Build>>,
    pub script: Script,
    pub ignore_hooks: bool,
    pub hold_builds: bool,
    next_id: i64,
}

impl Data {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query (an `access_token` value replaced).
    pub target: String,
    pub status: u16,
}

pub struct Shared {
    pub options: Options,
    routes: Vec<Route>,
    pub data: Mutex<Data>,
    pub log: RequestLog<Logged>,
    pub violations: Violations,
    pub base_url: String,
    on_success: Mutex<Option<OnSuccess>>,
    runner: Mutex<Option<Runner>>,
    http: reqwest::Client,
}

/// A running fake Drone.
#[derive(Clone)]
pub struct FakeDrone {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    pub ca: LabCa,
}

fn random(n: usize) -> String {
    hex::encode(homelab::edges::state::random_bytes(n).unwrap())
}

impl FakeDrone {
    /// Start a fake Drone with a certificate from `ca`, configured with no OAuth client yet (as
    /// the Drone pod is before the wiring gives it one).
    pub async fn start(options: Options, ca: &LabCa) -> FakeDrone {
        let listener = TlsListener::for_host(ca, HOST).await;
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let base = format!("https://{HOST}:{}", addr.port());
        Self::serve(options, ca, listener, addr, base)
    }

    /// Start a fake Drone the way its pod serves: plain HTTP (`DRONE_SERVER_PORT`) on
    /// 127.0.0.1, knowing itself as `server` (`DRONE_SERVER_PROTO://DRONE_SERVER_HOST`); an
    /// ingress in front terminates TLS.
    pub async fn start_plain(options: Options, ca: &LabCa, server: &str) -> FakeDrone {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self::serve(
            options,
            ca,
            listener,
            addr,
            server.trim_end_matches('/').into(),
        )
    }

    fn serve<L>(
        options: Options,
        ca: &LabCa,
        listener: L,
        addr: SocketAddr,
        base: String,
    ) -> FakeDrone
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let shared = Arc::new(Shared {
            http: gitea_client(&options.gitea),
            options,
            routes: load_routes(),
            data: Mutex::new(Data::default()),
            log: RequestLog::default(),
            violations: Violations::default(),
            base_url: base,
            on_success: Mutex::new(None),
            runner: Mutex::new(None),
        });
        {
            let mut data = shared.data.lock().unwrap();
            let id = data.id();
            data.users.push(User {
                id,
                login: shared.options.admin_user.clone(),
                admin: true,
                token: shared.options.admin_token.clone(),
                oauth_token: None,
                synced: 0,
            });
        }
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDrone {
            shared,
            addr,
            ca: ca.clone(),
        }
    }

    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn endpoint(&self) -> Endpoint {
        crate::support::common::fixtures::pinned_endpoint(self.base_url(), &self.ca, self.addr)
    }

    pub fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.shared.data.lock().unwrap()
    }

    /// Restart with this OAuth client in the environment (what rolling the Deployment does):
    /// `DRONE_USER_CREATE` resets the admin's API token at boot.
    pub fn restart_with(&self, client_id: &str, client_secret: &str) {
        let mut d = self.data();
        d.client_id = client_id.into();
        d.client_secret = client_secret.into();
        d.restarts += 1;
        let (login, token) = (
            self.shared.options.admin_user.clone(),
            self.shared.options.admin_token.clone(),
        );
        if let Some(u) = d.users.iter_mut().find(|u| u.login == login) {
            u.token = token;
        }
    }

    /// Restart with `DRONE_USER_CREATE=…,admin:<admin>` for the configured user: Drone
    /// updates the user's `admin` flag at boot.
    pub fn set_admin(&self, admin: bool) {
        let login = self.shared.options.admin_user.clone();
        let mut d = self.data();
        if let Some(u) = d.users.iter_mut().find(|u| u.login == login) {
            u.admin = admin;
        }
    }

    pub fn repo(&self, key: &str) -> Option<Repo> {
        self.data().repos.get(key).cloned()
    }

    pub fn on_success(&self, f: OnSuccess) {
        *self.shared.on_success.lock().unwrap() = Some(f);
    }

    /// Run builds with `runner` (the real pipeline) instead of the [`Script`].
    pub fn runner(&self, r: Runner) {
        *self.shared.runner.lock().unwrap() = Some(r);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.all()
    }

    pub fn clear_log(&self) {
        self.shared.log.clear();
    }

    pub fn violations(&self) -> Vec<String> {
        self.shared.violations.all()
    }

    #[track_caller]
    pub fn assert_no_violations(&self) {
        self.shared
            .violations
            .assert_none("Drone contract violations");
    }

    pub fn secret(&self, repo: &str, name: &str) -> Option<DSecret> {
        self.data()
            .secrets
            .get(repo)
            .and_then(|l| l.iter().find(|s| s.name == name).cloned())
    }

    pub fn builds(&self, repo: &str) -> Vec<Build> {
        self.data().builds.get(repo).cloned().unwrap_or_default()
    }
}

/// `path` (with its query) on `DRONE_GITEA_SERVER`.
fn gitea_url(shared: &Shared, path: &str) -> String {
    format!(
        "{}{path}",
        shared.options.gitea.base_url.trim_end_matches('/')
    )
}

/// A GET of `url` on Gitea with the user's OAuth token, as Drone's Gitea client sends it.
async fn gitea_get(shared: &Shared, url: &str, token: &str) -> reqwest::Result<reqwest::Response> {
    shared.http.get(url).bearer_auth(token).send().await
}

/// How the server reaches `DRONE_GITEA_SERVER`: trusting its CA, at its pinned address.
fn gitea_client(gitea: &Endpoint) -> reqwest::Client {
    let tls = homelab::edges::http::rustls_config(gitea.ca_pem.as_deref()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none());
    if let (Some(a), Ok(url)) = (gitea.resolve, reqwest::Url::parse(&gitea.base_url))
        && let Some(host) = url.host_str()
    {
        b = b.resolve(host, a);
    }
    b.build().unwrap()
}

fn reply(status: u16, body: Value) -> Response {
    super::http_kit::reply::json(status, body)
}

fn err(status: u16, text: &str) -> Response {
    reply(status, json!({"message": text}))
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = (StatusCode::SEE_OTHER, "").into_response();
    r.headers_mut().insert("location", to.parse().unwrap());
    set_cookies(&mut r, cookies);
    r
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let q: BTreeMap<String, String> = query::pairs(&query).into_iter().collect();
    let shown_query = if q.contains_key("access_token") {
        "access_token=<redacted>".to_string()
    } else {
        query.clone()
    };
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{shown_query}")
    };
    let method = parts.method.to_string();

    // Who is asking: Authorization header, else access_token, else the session cookie.
    let header_token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string());
    let user: Option<User> = {
        let d = shared.data.lock().unwrap();
        if let Some(t) = header_token.as_ref().or(q.get("access_token")) {
            d.users.iter().find(|u| &u.token == t).cloned()
        } else if let Some(s) = cookies(&parts.headers).get("_session_") {
            let login = d.sessions.get(s).cloned();
            login.and_then(|l| d.users.iter().find(|u| u.login == l).cloned())
        } else {
            None
        }
    };

    let resp = match match_route(&shared.routes, &method, &path) {
        None => {
            shared.violations.push(format!(
                "`{method} {path}` is not a route of Drone 2.24 (routes.json)"
            ));
            err(404, "Not Found")
        }
        Some((route, params)) => {
            let route = route.clone();
            match authorize(&shared, &route, &params, user.as_ref()) {
                Err((status, message)) => err(status, message),
                Ok(()) => {
                    dispatch(&shared, &route, &params, &q, &parts.headers, &bytes, user).await
                }
            }
        }
    };
    shared.log.push(Logged {
        method,
        target,
        status: resp.status().as_u16(),
    });
    resp
}

/// The route's middleware, as routes.md describes it.
fn authorize(
    shared: &Shared,
    route: &Route,
    params: &BTreeMap<String, String>,
    user: Option<&User>,
) -> Result<(), (u16, &'static str)> {
    for m in &route.middleware {
        match m.as_str() {
            m if m.starts_with("AuthorizeUser[only if") => {}
            "AuthorizeUser" if user.is_none() => return Err((401, "Unauthorized")),
            "AuthorizeAdmin" => match user {
                None => return Err((401, "Unauthorized")),
                Some(u) if !u.admin => return Err((403, "Forbidden")),
                _ => {}
            },
            "InjectRepository" => {
                let key = format!("{}/{}", params["owner"], params["name"]);
                if !shared.data.lock().unwrap().repos.contains_key(&key) {
                    return Err((404, "Not Found"));
                }
            }
            // harness/gitness v2.24.0 handler/api/acl/check.go, `CheckAccess`: 401 without a
            // user, root access for a Drone admin, else the user's permission on the
            // repository, whose absence is a 404 (the repository is not revealed).
            "CheckWriteAccess()" | "CheckAdminAccess()" => {
                let Some(u) = user else {
                    return Err((401, "Unauthorized"));
                };
                let key = format!("{}/{}", params["owner"], params["name"]);
                let allowed = shared
                    .data
                    .lock()
                    .unwrap()
                    .repos
                    .get(&key)
                    .is_some_and(|r| r.admins.contains(&u.login));
                if !allowed && !u.admin {
                    return Err((404, "Not Found"));
                }
            }
            m if m.starts_with("CheckMembership") && user.is_none() => {
                return Err((401, "Unauthorized"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn user_json(u: &User) -> Value {
    json!({"id": u.id, "login": u.login, "email": format!("{}@example.test", u.login), "machine": false, "admin": u.admin, "active": true, "avatar": "", "syncing": false, "synced": u.synced, "created": 1, "updated": 1, "last_login": 1})
}

fn repo_json(r: &Repo) -> Value {
    json!({"id": r.id, "uid": r.id.to_string(), "user_id": 1, "namespace": r.namespace, "name": r.name, "slug": format!("{}/{}", r.namespace, r.name), "scm": "", "default_branch": "main", "private": false, "visibility": "public", "active": r.active, "config_path": r.config_path, "trusted": r.trusted, "protected": false, "timeout": 60, "counter": r.counter, "synced": 1, "created": 1, "updated": 1, "version": 1})
}

fn build_json(b: &Build) -> Value {
    // A build the server refused (`createBuildError`) has no stage.
    let stages = if b.error.is_empty() {
        json!([{
            "number": 1, "name": "build-and-deploy", "kind": "pipeline", "type": "kubernetes", "status": b.stage_status,
            "error": b.stage_error, "exit_code": if b.stage_error.is_empty() { 0 } else { 255 },
            "steps": b.steps.iter().map(|s| json!({"number": s.number, "name": s.name, "status": s.status, "exit_code": s.exit_code})).collect::<Vec<_>>(),
        }])
    } else {
        json!([])
    };
    json!({
        "id": b.id, "repo_id": 1, "trigger": "@hook", "number": b.number, "status": b.status, "event": b.event,
        "ref": b.git_ref, "after": b.after, "before": b.after, "message": b.message, "error": b.error,
        "stages": stages,
    })
}

async fn dispatch(
    shared: &Arc<Shared>,
    route: &Route,
    params: &BTreeMap<String, String>,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    bytes: &[u8],
    user: Option<User>,
) -> Response {
    let repo_key = || format!("{}/{}", params["owner"], params["name"]);
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    match route.handler.as_str() {
        h if h.starts_with("health.New") => (StatusCode::OK, "OK").into_response(),
        h if h.starts_with("web.HandleVersion") => reply(
            200,
            json!({"source": "https://github.com/harness/drone.git", "version": "2.24.0", "commit": "c4037def"}),
        ),
        h if h.starts_with("go-login OAuth2 handler") => login(shared, q, headers).await,
        h if h.starts_with("web.HandleHook") => hook(shared, bytes, headers).await,
        "user.HandleFind" => reply(200, user_json(user.as_ref().unwrap())),
        "user.HandleToken" => {
            let mut d = shared.data.lock().unwrap();
            let login = user.unwrap().login;
            let u = d.users.iter_mut().find(|u| u.login == login).unwrap();
            if q.get("rotate").is_some_and(|v| v == "true") {
                u.token = random(16);
            }
            let mut v = user_json(u);
            v["token"] = json!(u.token);
            reply(200, v)
        }
        "user.HandleSync" => {
            sync(
                shared,
                user.unwrap(),
                q.get("async").is_some_and(|v| v == "true"),
            )
            .await
        }
        "user.HandleRepos" => {
            let d = shared.data.lock().unwrap();
            reply(200, Value::Array(d.repos.values().map(repo_json).collect()))
        }
        "repos.HandleFind" => reply(
            200,
            repo_json(&shared.data.lock().unwrap().repos[&repo_key()]),
        ),
        "repos.HandleEnable" => enable(shared, &repo_key(), user.unwrap()).await,
        // harness/gitness v2.24.0 handler/api/repos/update.go: pointer fields, omitted ones
        // unchanged; `trusted`, `timeout`, `throttle` and `counter` are applied for a Drone
        // administrator only and silently ignored for anyone else (the answer, 200, shows the
        // value kept). A body that is not JSON is a 400.
        "repos.HandleUpdate" => {
            if serde_json::from_slice::<serde_json::Map<String, Value>>(bytes).is_err() {
                return err(400, "invalid character in request body");
            }
            let admin = user.as_ref().is_some_and(|u| u.admin);
            let mut d = shared.data.lock().unwrap();
            let r = d.repos.get_mut(&repo_key()).unwrap();
            if let Some(v) = body["config_path"].as_str() {
                r.config_path = v.into();
            }
            if admin {
                if let Some(v) = body["trusted"].as_bool() {
                    r.trusted = v;
                }
                if let Some(v) = body["counter"].as_i64() {
                    r.counter = v;
                }
            }
            reply(200, repo_json(r))
        }
        "secrets.HandleList" => {
            let d = shared.data.lock().unwrap();
            let list: Vec<Value> = d
                .secrets
                .get(&repo_key())
                .map(|l| l.iter().map(|s| json!({"id": 1, "repo_id": 1, "name": s.name, "pull_request": s.pull_request, "pull_request_push": false})).collect())
                .unwrap_or_default();
            reply(200, Value::Array(list))
        }
        "secrets.HandleCreate" => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let data = body["data"].as_str().unwrap_or_default().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return err(400, "Invalid Secret Name");
            }
            if data.is_empty() {
                return err(400, "Invalid Secret Value");
            }
            let mut d = shared.data.lock().unwrap();
            let list = d.secrets.entry(repo_key()).or_default();
            if list.iter().any(|s| s.name == name) {
                return err(
                    500,
                    "UNIQUE constraint failed: secrets.secret_repo_id, secrets.secret_name",
                );
            }
            list.push(DSecret {
                name: name.clone(),
                data,
                pull_request: body["pull_request"].as_bool().unwrap_or(false),
            });
            reply(
                200,
                json!({"id": 1, "repo_id": 1, "name": name, "pull_request": false, "pull_request_push": false}),
            )
        }
        "secrets.HandleFind" | "secrets.HandleUpdate" | "secrets.HandleDelete" => {
            let name = params["secret"].clone();
            let mut d = shared.data.lock().unwrap();
            let list = d.secrets.entry(repo_key()).or_default();
            let Some(i) = list.iter().position(|s| s.name == name) else {
                return err(404, "Not Found");
            };
            match route.handler.as_str() {
                "secrets.HandleDelete" => {
                    list.remove(i);
                    reply(204, Value::Null)
                }
                "secrets.HandleUpdate" => {
                    if let Some(v) = body["data"].as_str() {
                        list[i].data = v.into();
                    }
                    if let Some(v) = body["pull_request"].as_bool() {
                        list[i].pull_request = v;
                    }
                    reply(
                        200,
                        json!({"id": 1, "repo_id": 1, "name": name, "pull_request": list[i].pull_request, "pull_request_push": false}),
                    )
                }
                _ => reply(
                    200,
                    json!({"id": 1, "repo_id": 1, "name": name, "pull_request": list[i].pull_request, "pull_request_push": false}),
                ),
            }
        }
        "builds.HandleList" => {
            let d = shared.data.lock().unwrap();
            let mut list: Vec<Value> = d
                .builds
                .get(&repo_key())
                .map(|l| l.iter().map(build_json).collect())
                .unwrap_or_default();
            list.reverse();
            list.truncate(25);
            reply(200, Value::Array(list))
        }
        "builds.HandleCreate" => {
            if !shared.options.custom_trigger {
                // trigger: skipping build, no matching pipelines → `render.JSON(w, nil, 200)`.
                return reply(200, Value::Null);
            }
            let branch = q.get("branch").cloned().unwrap_or_else(|| "main".into());
            let (owner, name) = (params["owner"].clone(), params["name"].clone());
            let user = user.unwrap();
            let head = gitea_head(shared, &user, &owner, &name, &branch).await;
            let Some(sha) = head else {
                return err(404, "Not Found");
            };
            match create_build(
                shared,
                &user,
                &repo_key(),
                "custom",
                &branch,
                &sha,
                "custom build",
            )
            .await
            {
                Ok(b) => reply(200, build_json(&b)),
                Err(e) => e,
            }
        }
        "builds.HandleFind" | "builds.HandleLast" => {
            let d = shared.data.lock().unwrap();
            let list = d.builds.get(&repo_key()).cloned().unwrap_or_default();
            let found = if route.handler == "builds.HandleLast" {
                list.last().cloned()
            } else {
                let n: i64 = params["number"].parse().unwrap_or(-1);
                list.iter().find(|b| b.number == n).cloned()
            };
            match found {
                Some(b) => reply(200, build_json(&b)),
                None => err(404, "Not Found"),
            }
        }
        "logs.HandleFind" => {
            let d = shared.data.lock().unwrap();
            let n: i64 = params["number"].parse().unwrap_or(-1);
            let step: i64 = params["step"].parse().unwrap_or(-1);
            let found = d
                .builds
                .get(&repo_key())
                .and_then(|l| l.iter().find(|b| b.number == n))
                .filter(|_| params["stage"] == "1")
                .and_then(|b| b.steps.iter().find(|s| s.number == step));
            match found {
                Some(s) => reply(
                    200,
                    Value::Array(
                        s.log
                            .iter()
                            .enumerate()
                            .map(|(i, l)| json!({"pos": i, "out": format!("{l}\n"), "time": i}))
                            .collect(),
                    ),
                ),
                None => err(404, "Not Found"),
            }
        }
        other => {
            shared
                .violations
                .push(format!("the fake does not implement `{other}`"));
            err(501, "not implemented by the fake")
        }
    }
}

/// go-login's OAuth2 handler plus Drone's HandleLogin.
async fn login(
    shared: &Arc<Shared>,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let server = match &shared.options.server_host {
        Some(h) => format!("https://{h}"),
        None => shared.base_url.clone(),
    };
    let fail = |message: &str| {
        redirect(
            &format!("/login/error?message={}", url_escape(message)),
            &["_oauth_state_=; Max-Age=0".to_string()],
        )
    };
    if let Some(e) = q.get("error") {
        return fail(e);
    }
    let Some(code) = q.get("code") else {
        let state = random(12);
        let client_id = shared.data.lock().unwrap().client_id.clone();
        let mut authorize = reqwest::Url::parse(&shared.options.gitea.base_url).unwrap();
        authorize.set_path("/login/oauth/authorize");
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &format!("{server}/login"))
            .append_pair("response_type", "code")
            .append_pair("state", &state);
        return redirect(
            authorize.as_str(),
            &[format!("_oauth_state_={state}; Max-Age=1800")],
        );
    };
    let state = q.get("state").cloned().unwrap_or_default();
    if cookies(headers).get("_oauth_state_") != Some(&state) || state.is_empty() {
        return fail("oauth: invalid or missing state");
    }
    let (client_id, client_secret) = {
        let d = shared.data.lock().unwrap();
        (d.client_id.clone(), d.client_secret.clone())
    };
    let token_url = gitea_url(shared, "/login/oauth/access_token");
    let resp = shared
        .http
        .post(&token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", &format!("{server}/login")),
            ("client_id", &client_id),
            ("client_secret", &client_secret),
        ])
        .send()
        .await;
    let token = match resp {
        Err(e) => return fail(&format!("oauth2: cannot fetch token: {e}")),
        Ok(r) if !r.status().is_success() => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return fail(&format!(
                "oauth2: cannot fetch token: {status}\nResponse: {text}"
            ));
        }
        Ok(r) => r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let who = shared
        .http
        .get(gitea_url(shared, "/api/v1/user"))
        .bearer_auth(&token)
        .send()
        .await;
    let login = match who {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap()["login"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Ok(r) => return fail(&format!("cannot find user: {}", r.status())),
        Err(e) => return fail(&format!("cannot find user: {e}")),
    };
    let mut d = shared.data.lock().unwrap();
    match d.users.iter_mut().find(|u| u.login == login) {
        Some(u) => u.oauth_token = Some(token),
        None if shared.options.registration_closed => {
            drop(d);
            return fail("User registration is closed");
        }
        None => {
            let id = d.id();
            d.users.push(User {
                id,
                login: login.clone(),
                admin: false,
                token: random(16),
                oauth_token: Some(token),
                synced: 0,
            });
        }
    }
    let session = random(16);
    d.sessions.insert(session.clone(), login);
    redirect(
        "/",
        &[
            "_oauth_state_=; Max-Age=0".to_string(),
            format!("_session_={session}; Path=/; Max-Age=2592000; HttpOnly; Secure; SameSite=Lax"),
        ],
    )
}

fn url_escape(s: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").unwrap();
    u.query_pairs_mut().append_pair("m", s);
    u.query().unwrap()[2..].to_string()
}

async fn sync(shared: &Arc<Shared>, user: User, asynchronous: bool) -> Response {
    let Some(token) = user.oauth_token.clone() else {
        // DRONE_USER_CREATE gave no Gitea token: Gitea refuses the listing.
        return err(500, "Unauthorized");
    };
    let url = gitea_url(shared, "/api/v1/user/repos?page=1&limit=50");
    let resp = gitea_get(shared, &url, &token).await;
    let list: Vec<Value> = match resp {
        Ok(r) if r.status().is_success() => r.json().await.unwrap(),
        Ok(r) => return err(500, &format!("gitea: {}", r.status())),
        Err(e) => return err(500, &e.to_string()),
    };
    let mut d = shared.data.lock().unwrap();
    for r in &list {
        let full = r["full_name"].as_str().unwrap_or_default().to_string();
        let (ns, name) = full.split_once('/').unwrap();
        let id = d.id();
        let entry = d.repos.entry(full.clone()).or_insert_with(|| Repo {
            id,
            namespace: ns.into(),
            name: name.into(),
            active: false,
            config_path: String::new(),
            counter: 0,
            admins: Vec::new(),
            trusted: false,
        });
        if !entry.admins.contains(&user.login) {
            entry.admins.push(user.login.clone());
        }
    }
    if let Some(u) = d.users.iter_mut().find(|u| u.login == user.login) {
        u.synced = 1_700_000_000;
    }
    if asynchronous {
        return reply(204, Value::Null);
    }
    reply(200, Value::Array(d.repos.values().map(repo_json).collect()))
}

async fn enable(shared: &Arc<Shared>, key: &str, user: User) -> Response {
    let Some(token) = user.oauth_token.clone() else {
        return err(500, "Unauthorized");
    };
    let (owner, name) = key.split_once('/').unwrap();
    let hook = json!({
        "type": "gitea",
        "config": {"url": format!("{}/hook", shared.options.proxy.as_deref().unwrap_or(&shared.base_url)), "content_type": "json", "secret": random(16)},
        "events": ["create", "delete", "push", "pull_request"],
        "active": true,
    });
    let url = gitea_url(shared, &format!("/api/v1/repos/{owner}/{name}/hooks"));
    match shared
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&hook)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => return err(500, &format!("gitea: create hook: {}", r.status())),
        Err(e) => return err(500, &e.to_string()),
    }
    let mut d = shared.data.lock().unwrap();
    let r = d.repos.get_mut(key).unwrap();
    r.active = true;
    r.config_path = ".drone.yml".into();
    reply(200, repo_json(r))
}

async fn gitea_head(
    shared: &Arc<Shared>,
    user: &User,
    owner: &str,
    name: &str,
    branch: &str,
) -> Option<String> {
    let token = user.oauth_token.clone()?;
    let url = gitea_url(
        shared,
        &format!("/api/v1/repos/{owner}/{name}/branches/{branch}"),
    );
    let r = gitea_get(shared, &url, &token).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok()?["commit"]["id"]
        .as_str()
        .map(str::to_string)
}

async fn hook(shared: &Arc<Shared>, bytes: &[u8], headers: &HeaderMap) -> Response {
    if headers.get("x-gitea-event").and_then(|v| v.to_str().ok()) != Some("push") {
        return reply(200, Value::Null);
    }
    let p: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let key = p["repository"]["full_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let message = p["head_commit"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    {
        let d = shared.data.lock().unwrap();
        if d.ignore_hooks || !d.repos.get(&key).is_some_and(|r| r.active) {
            return reply(200, Value::Null);
        }
    }
    if message.to_lowercase().contains("[skip ci]") || message.to_lowercase().contains("[ci skip]")
    {
        return reply(204, Value::Null);
    }
    let branch = p["ref"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("refs/heads/")
        .to_string();
    // The triggerer reads the pipeline file as the repository's user (a repository admin
    // holding a Gitea token here).
    let user = {
        let d = shared.data.lock().unwrap();
        let admins = d
            .repos
            .get(&key)
            .map(|r| r.admins.clone())
            .unwrap_or_default();
        d.users
            .iter()
            .find(|u| admins.contains(&u.login) && u.oauth_token.is_some())
            .cloned()
    };
    let Some(user) = user else {
        return err(500, "Unauthorized");
    };
    match create_build(
        shared,
        &user,
        &key,
        "push",
        &branch,
        p["after"].as_str().unwrap_or_default(),
        &message,
    )
    .await
    {
        Ok(b) => reply(200, build_json(&b)),
        Err(e) => e,
    }
}

/// The pipeline file of `key` at `sha`, read from Gitea with the user's token. Drone 2.24
/// reads `GET /api/v1/repos/{repo}/raw/{ref}/{path}` (drone/go-scm v1.28.0
/// `scm/driver/gitea/content.go`); the fake Gitea serves the same bytes through the contents
/// API, which this uses.
async fn pipeline_file(
    shared: &Arc<Shared>,
    user: &User,
    key: &str,
    sha: &str,
) -> Result<String, String> {
    let token = user.oauth_token.clone().ok_or("Unauthorized")?;
    let path = {
        let d = shared.data.lock().unwrap();
        d.repos
            .get(key)
            .map(|r| r.config_path.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ".drone.yml".into())
    };
    let url = gitea_url(
        shared,
        &format!("/api/v1/repos/{key}/contents/{path}?ref={sha}"),
    );
    let r = gitea_get(shared, &url, &token)
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(r.status().canonical_reason().unwrap_or("error").to_string());
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    let content = v["content"].as_str().unwrap_or_default().replace('\n', "");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// What harness/gitness v2.24.0 `trigger/trigger.go` does with a hook: fetch the pipeline file
/// at the commit (a failure is the handler's 500), lint it with the repository's `trusted` flag
/// (a refusal is a build created in `error`, `createBuildError`), else create the build and hand
/// it to the runner.
async fn create_build(
    shared: &Arc<Shared>,
    user: &User,
    key: &str,
    event: &str,
    branch: &str,
    sha: &str,
    message: &str,
) -> Result<Build, Response> {
    let config = pipeline_file(shared, user, key, sha)
        .await
        .map_err(|e| err(500, &e))?;
    let pipelines = lint::pipelines(&config).map_err(|e| err(500, &e))?;
    let trusted = shared.data.lock().unwrap().repos[key].trusted;
    let refused = pipelines
        .iter()
        .find_map(|p| lint::server(p, trusted).err());
    let mut d = shared.data.lock().unwrap();
    let id = d.id();
    let script = d.script.clone();
    let hold = d.hold_builds;
    let repo = d.repos.get_mut(key).unwrap();
    repo.counter += 1;
    if let Some(error) = refused {
        let b = Build {
            id,
            number: repo.counter,
            status: "error".into(),
            event: event.into(),
            git_ref: format!("refs/heads/{branch}"),
            after: sha.into(),
            message: message.into(),
            stage_status: String::new(),
            steps: Vec::new(),
            error,
            stage_error: String::new(),
            config,
        };
        d.builds.entry(key.into()).or_default().push(b.clone());
        return Ok(b);
    }
    let b = Build {
        id,
        number: repo.counter,
        status: "pending".into(),
        event: event.into(),
        git_ref: format!("refs/heads/{branch}"),
        after: sha.into(),
        message: message.into(),
        stage_status: "pending".into(),
        steps: script
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                number: i as i64 + 1,
                name: s.name.clone(),
                status: "pending".into(),
                exit_code: 0,
                log: Vec::new(),
            })
            .collect(),
        error: String::new(),
        stage_error: String::new(),
        config,
    };
    d.builds.entry(key.into()).or_default().push(b.clone());
    if !hold {
        tokio::spawn(run(shared.clone(), key.to_string(), b.number, script));
    }
    Ok(b)
}

/// The runner failed the stage (drone/runner-go v1.12.0 `pipeline/state.go`, `failAll`: stage
/// `error` with the message; `operator/manager/teardown.go` then marks the build `error`).
fn fail_stage(b: &mut Build, steps: Vec<Step>, error: &str) {
    b.steps = steps;
    b.stage_status = "error".into();
    b.stage_error = error.into();
    b.status = "error".into();
}

async fn run(shared: Arc<Shared>, key: String, number: i64, script: Script) {
    let update = |f: &dyn Fn(&mut Build)| {
        let mut d = shared.data.lock().unwrap();
        if let Some(b) = d
            .builds
            .get_mut(&key)
            .and_then(|l| l.iter_mut().find(|b| b.number == number))
        {
            f(b);
        }
    };
    tokio::time::sleep(script.start_delay).await;
    update(&|b| {
        b.status = "running".into();
        b.stage_status = "running".into();
    });
    // The runner receives the repository as it is now (its `trusted` flag included).
    let (trusted, config) = {
        let d = shared.data.lock().unwrap();
        let b = d.builds[&key].iter().find(|b| b.number == number).unwrap();
        (d.repos[&key].trusted, b.config.clone())
    };
    let runner = shared.runner.lock().unwrap().clone();
    if let Some(runner) = runner {
        let job = {
            let d = shared.data.lock().unwrap();
            let b = d.builds[&key].iter().find(|b| b.number == number).unwrap();
            let secrets = d
                .secrets
                .get(&key)
                .map(|l| l.iter().map(|s| (s.name.clone(), s.data.clone())).collect())
                .unwrap_or_default();
            let (owner, name) = key.split_once('/').unwrap();
            let branch = b.git_ref.trim_start_matches("refs/heads/").to_string();
            let gitea = shared.options.gitea.base_url.trim_end_matches('/');
            let env = BTreeMap::from([
                ("DRONE_BUILD_NUMBER".to_string(), number.to_string()),
                ("DRONE_BUILD_EVENT".to_string(), b.event.clone()),
                ("DRONE_BRANCH".to_string(), branch.clone()),
                ("DRONE_COMMIT".to_string(), b.after.clone()),
                ("DRONE_COMMIT_SHA".to_string(), b.after.clone()),
                ("DRONE_COMMIT_BRANCH".to_string(), branch.clone()),
                ("DRONE_COMMIT_REF".to_string(), b.git_ref.clone()),
                ("DRONE_COMMIT_MESSAGE".to_string(), b.message.clone()),
                ("DRONE_REPO".to_string(), key.clone()),
                ("DRONE_REPO_OWNER".to_string(), owner.to_string()),
                ("DRONE_REPO_NAME".to_string(), name.to_string()),
                (
                    "DRONE_GIT_HTTP_URL".to_string(),
                    format!("{gitea}/{key}.git"),
                ),
                (
                    "DRONE_SYSTEM_PROTO".to_string(),
                    shared
                        .base_url
                        .split("://")
                        .next()
                        .unwrap_or("https")
                        .to_string(),
                ),
                (
                    "DRONE_SYSTEM_HOST".to_string(),
                    shared
                        .base_url
                        .split("://")
                        .nth(1)
                        .unwrap_or_default()
                        .to_string(),
                ),
            ]);
            BuildJob {
                repo: key.clone(),
                number,
                event: b.event.clone(),
                branch,
                commit: b.after.clone(),
                secrets,
                env,
                trusted,
                config,
            }
        };
        let stage = runner(job).await;
        let failed = stage.steps.iter().any(|s| s.exit_code != 0);
        let steps: Vec<Step> = stage
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                number: i as i64 + 1,
                name: s.name.clone(),
                status: if s.exit_code == 0 {
                    "success"
                } else {
                    "failure"
                }
                .into(),
                exit_code: s.exit_code,
                log: s.log.clone(),
            })
            .collect();
        update(&|b| match &stage.error {
            Some(e) => fail_stage(b, steps.clone(), e),
            None => {
                b.steps = steps.clone();
                let word = if failed { "failure" } else { "success" };
                b.stage_status = word.into();
                b.status = word.into();
            }
        });
        return;
    }
    // The scripted runner lints as drone-runner-kube does before running any step.
    let refused = match lint::pipelines(&config) {
        Ok(pipelines) => pipelines
            .iter()
            .find_map(|p| lint::runner(p, trusted).err()),
        Err(e) => Some(e),
    };
    if let Some(error) = refused {
        update(&|b| fail_stage(b, Vec::new(), &error));
        return;
    }
    for (i, step) in script.steps.iter().enumerate() {
        update(&|b| b.steps[i].status = "running".into());
        tokio::time::sleep(script.step_delay).await;
        // The deploy step is where the pipeline bumps the tag: it runs the test's hook.
        if i + 1 == script.steps.len() && step.fail.is_none() {
            let hook = shared.on_success.lock().unwrap().clone();
            if let Some(hook) = hook {
                let commit = {
                    let d = shared.data.lock().unwrap();
                    let b = d.builds[&key].iter().find(|b| b.number == number).unwrap();
                    b.after.clone()
                };
                hook(BuildDone {
                    repo: key.clone(),
                    commit,
                })
                .await;
            }
        }
        match &step.fail {
            None => update(&|b| {
                b.steps[i].status = "success".into();
                b.steps[i].log = vec![format!("+ {}", step.name), "ok".into()];
            }),
            Some((code, log)) => {
                update(&|b| {
                    b.steps[i].status = "failure".into();
                    b.steps[i].exit_code = *code;
                    b.steps[i].log = log.clone();
                    for s in b.steps.iter_mut().skip(i + 1) {
                        s.status = "skipped".into();
                    }
                    b.stage_status = "failure".into();
                    b.status = "failure".into();
                });
                return;
            }
        }
    }
    update(&|b| {
        b.stage_status = "success".into();
        b.status = "success".into();
    });
}

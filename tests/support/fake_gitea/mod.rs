//! A fake Gitea for tests: the `/api/v1` calls homelab makes, the container registry's `/v2/`
//! token dance, and git's smart HTTP through the real `git http-backend`, served over HTTPS with
//! a certificate from the lab CA at `gitea.127.0.0.1.sslip.io` — or, as Gitea's pod serves it,
//! over plain HTTP behind an ingress with a `ROOT_URL` of the test's choosing
//! ([`FakeGitea::start_plain`]). A push (API commit or `git push`) is delivered to the
//! repository's webhooks, signed with each hook's secret, unless `ALLOWED_HOST_LIST` refuses the
//! target; in-cluster targets resolve through the test's cluster network. Images are stored by a
//! test-side push ([`FakeGitea::store_image`]) after the client proved its credentials at `/v2/`
//! (kaniko's push of the app), or through the OCI distribution routes ([`oci`]: `homelab up`'s
//! push of the cached base images, kaniko's pull of them).
//!
//! Every API request is checked against Gitea's `swagger.v1.json` (`contracts/gitea/`, read at test
//! time) before it is answered; a request the real API would not have is recorded as a violation
//! and answered 400, and tests assert there were none. The fake's own answers are checked against
//! the documented response schemas too, so the fake cannot drift from the contract unnoticed.
//! Status codes and messages follow NOTES §3: 201 created, 422 organisation exists, 409
//! repository exists, 400 duplicate token name, 401 without (valid) credentials, 401 "auth
//! required" for token creation with a token, 403 for a token without the needed scope.

pub mod contents;
pub mod front;
pub mod oauth;
pub mod oci;
pub mod pod;
pub mod swagger;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::http_kit::git_backend;
use super::http_kit::log::{RequestLog, Violations};
use super::http_kit::query::{self, Page};
use super::http_kit::tls::TlsListener;
use homelab::model::tls::LabCa;
use homelab::services::gitea::Endpoint;
use swagger::Swagger;

/// The host name the fake answers for (resolved to 127.0.0.1 through the client's pin).
pub const HOST: &str = "gitea.127.0.0.1.sslip.io";

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// What `GET /version` says; below 1.19 tokens have no scopes, as in old Gitea.
    pub version: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            version: "1.26.1".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub password: String,
    pub is_admin: bool,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub owner: String,
    pub value: String,
    pub scopes: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct FakeHook {
    pub id: i64,
    pub kind: String,
    pub config: BTreeMap<String, String>,
    pub events: Vec<String>,
    pub active: bool,
    pub branch_filter: String,
}

#[derive(Clone, Debug)]
pub struct Repo {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
    pub object_format: String,
}

/// Everything the fake knows.
#[derive(Default)]
pub struct Data {
    pub users: BTreeMap<String, User>,
    pub tokens: Vec<Token>,
    pub orgs: BTreeMap<String, i64>,
    pub repos: BTreeMap<String, Repo>,
    pub hooks: BTreeMap<String, Vec<FakeHook>>,
    pub registry_tokens: Vec<String>,
    /// Container images by `(owner/name, tag)`.
    pub images: BTreeMap<(String, String), Image>,
    /// Blobs pushed through the registry's `/v2/`, by `(owner/image, digest)`.
    pub blobs: BTreeMap<(String, String), Vec<u8>>,
    /// Manifests pushed through `/v2/`, by `(owner/image, tag or digest)`.
    pub manifests: BTreeMap<(String, String), oci::Manifest>,
    /// Blob upload sessions by id.
    pub uploads: BTreeMap<String, Vec<u8>>,
    next_id: i64,
}

/// In-cluster name resolution: `host:port` → the address that answers for it.
pub type ClusterDns = Arc<dyn Fn(&str) -> Option<SocketAddr> + Send + Sync>;

/// A container image in the registry: the files of its layers, by path.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub files: BTreeMap<String, Vec<u8>>,
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
    /// Path and query.
    pub target: String,
    pub status: u16,
    /// `none`, `basic`, `token`, `bearer`.
    pub auth: &'static str,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} → {} ({})",
            self.method, self.target, self.status, self.auth
        )
    }
}

pub struct Shared {
    pub options: Options,
    pub swagger: Swagger,
    pub data: Mutex<Data>,
    pub log: RequestLog<Logged>,
    pub violations: Violations,
    pub repos_root: PathBuf,
    pub base_url: Mutex<String>,
    /// OAuth2 apps, web sessions and grants (drone branch, `oauth.rs`).
    pub oauth: Mutex<oauth::OAuthData>,
    /// How webhooks are delivered, and what was (drone branch, `contents.rs`).
    pub hook_client: Mutex<Option<reqwest::Client>>,
    pub deliveries: Arc<Mutex<Vec<contents::Delivery>>>,
    /// Resolves in-cluster `host:port` (webhook targets) to where the test serves it.
    pub cluster_dns: Mutex<Option<ClusterDns>>,
    /// `[webhook] ALLOWED_HOST_LIST`; `None` admits every host.
    pub allowed_hosts: Mutex<Option<Vec<String>>>,
}

/// A running fake Gitea.
#[derive(Clone)]
pub struct FakeGitea {
    pub shared: Arc<Shared>,
    /// Where clients connect (what [`FakeGitea::endpoint`] pins).
    pub addr: SocketAddr,
    /// Where the fake itself listens: `addr`, except behind a [`front::FrontDoor`].
    pub listen: SocketAddr,
    pub ca: LabCa,
    _dir: Arc<tempfile::TempDir>,
}

/// Gitea's token scope categories, by the first path segment after `/api/v1`.
fn scope_category(path: &str) -> Option<&'static str> {
    let first = path
        .trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or("");
    match first {
        "user" => Some("user"),
        "orgs" => Some("organization"),
        "repos" => Some("repository"),
        "admin" => Some("admin"),
        "packages" => Some("package"),
        _ => None,
    }
}

fn scopes_supported(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    major > 1 || minor >= 19
}

const KNOWN_SCOPES: &[&str] = &[
    "all",
    "public-only",
    "read:activitypub",
    "write:activitypub",
    "read:admin",
    "write:admin",
    "read:misc",
    "write:misc",
    "read:notification",
    "write:notification",
    "read:organization",
    "write:organization",
    "read:package",
    "write:package",
    "read:issue",
    "write:issue",
    "read:repository",
    "write:repository",
    "read:user",
    "write:user",
];

fn has_scope(scopes: &Option<Vec<String>>, category: &str, write: bool) -> bool {
    match scopes {
        None => true,
        Some(s) => s.iter().any(|x| {
            x == "all"
                || *x == format!("write:{category}")
                || (!write && *x == format!("read:{category}"))
        }),
    }
}

/// Who a request authenticated as.
#[derive(Clone, Debug)]
enum Auth {
    None,
    /// Basic with the user's password.
    Password(String),
    /// A token (header, or basic with the token as password).
    Token(Token),
    /// Credentials that match nothing.
    Invalid,
}

fn message(status: u16, text: &str) -> (u16, Value) {
    (
        status,
        json!({"message": text, "url": "https://gitea.example/api/swagger"}),
    )
}

impl FakeGitea {
    /// Start a fake with a fresh lab CA.
    pub async fn start(options: Options) -> FakeGitea {
        let ca = super::http_kit::tls::lab_ca("fake", None);
        Self::start_with_ca(options, ca).await
    }

    /// Start a fake whose certificate comes from `ca`.
    pub async fn start_with_ca(options: Options, ca: LabCa) -> FakeGitea {
        let listener = TlsListener::for_host(&ca, HOST).await;
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let root_url = format!("https://{HOST}:{}", addr.port());
        Self::serve(options, ca, listener, addr, root_url)
    }

    /// Start a fake (HTTPS, certificate from `ca`) that calls itself `root_url`: reached through
    /// something in front of it on another port, as a [`front::FrontDoor`] is.
    pub async fn start_behind(options: Options, ca: LabCa, root_url: &str) -> FakeGitea {
        let listener = TlsListener::for_host(&ca, HOST).await;
        let listen = axum::serve::Listener::local_addr(&listener).unwrap();
        let port = reqwest::Url::parse(root_url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .expect("a root URL with a port");
        let mut fake = Self::serve(
            options,
            ca,
            listener,
            listen,
            root_url.trim_end_matches('/').to_string(),
        );
        fake.addr = SocketAddr::from(([127, 0, 0, 1], port));
        fake
    }

    /// Start a fake the way Gitea's pod serves: plain HTTP (`[server] PROTOCOL=http`) on
    /// 127.0.0.1, with `root_url` (`ROOT_URL`, e.g. `https://gitea.<domain>/`) as the address in
    /// its answers; an ingress in front terminates TLS. `ca` is the lab CA the pod trusts.
    pub async fn start_plain(options: Options, ca: LabCa, root_url: &str) -> FakeGitea {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self::serve(
            options,
            ca,
            listener,
            addr,
            root_url.trim_end_matches('/').to_string(),
        )
    }

    fn serve<L>(
        options: Options,
        ca: LabCa,
        listener: L,
        addr: SocketAddr,
        root_url: String,
    ) -> FakeGitea
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let contracts = crate::support::common::contracts_dir();
        let swagger = Swagger::load(&contracts.join("gitea/swagger.v1.json"));
        let dir = tempfile::tempdir().unwrap();
        let repos_root = dir.path().join("repos");
        std::fs::create_dir_all(&repos_root).unwrap();
        let shared = Arc::new(Shared {
            options,
            swagger,
            data: Mutex::new(Data::default()),
            log: RequestLog::default(),
            violations: Violations::default(),
            repos_root,
            base_url: Mutex::new(root_url),
            oauth: Mutex::new(oauth::OAuthData::default()),
            hook_client: Mutex::new(None),
            deliveries: Arc::new(Mutex::new(Vec::new())),
            cluster_dns: Mutex::new(None),
            allowed_hosts: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGitea {
            shared,
            addr,
            listen: addr,
            ca,
            _dir: Arc::new(dir),
        }
    }

    pub fn base_url(&self) -> String {
        self.shared.base_url.lock().unwrap().clone()
    }

    /// The endpoint homelab should use: the fake's URL, the lab CA, the pinned address.
    pub fn endpoint(&self) -> Endpoint {
        crate::support::common::fixtures::pinned_endpoint(self.base_url(), &self.ca, self.addr)
    }

    pub fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.shared.data.lock().unwrap()
    }

    pub fn add_user(&self, name: &str, password: &str, is_admin: bool) {
        let mut d = self.data();
        let id = d.id();
        d.users.insert(
            name.into(),
            User {
                id,
                password: password.into(),
                is_admin,
            },
        );
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
        self.shared.violations.assert_none("contract violations");
    }

    /// Path of a bare repository.
    pub fn repo_dir(&self, owner: &str, name: &str) -> PathBuf {
        self.shared
            .repos_root
            .join(owner)
            .join(format!("{name}.git"))
    }
}

fn violation(shared: &Shared, text: String) {
    shared.violations.push(text);
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> (Auth, &'static str) {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return (Auth::None, "none");
    };
    let data = shared.data.lock().unwrap();
    let by_token = |t: &str| data.tokens.iter().find(|x| x.value == t).cloned();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "token" => (
            by_token(rest).map(Auth::Token).unwrap_or(Auth::Invalid),
            "token",
        ),
        "bearer" => (
            by_token(rest).map(Auth::Token).unwrap_or(Auth::Invalid),
            "bearer",
        ),
        "basic" => {
            let (user, pass) = super::http_kit::auth::basic_credentials(rest);
            let auth = match data.users.get(&user) {
                Some(u) if u.password == pass => Auth::Password(user.clone()),
                _ => match by_token(&pass).or_else(|| by_token(&user)) {
                    Some(t) => Auth::Token(t),
                    None => Auth::Invalid,
                },
            };
            (auth, "basic")
        }
        _ => (Auth::Invalid, "other"),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let (auth, auth_kind) = authenticate(&shared, &parts.headers);
    let resp = if path.starts_with(shared.swagger.base_path()) {
        api(
            &shared,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            &bytes,
            auth,
        )
    } else if oauth::is_web(&path) {
        oauth::web(
            &shared,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            &bytes,
        )
    } else if path == "/v2" || path.starts_with("/v2/") {
        registry(
            &shared,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            &bytes,
            auth,
        )
    } else if path.contains(".git/") {
        git(
            &shared,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            &bytes,
            auth,
        )
        .await
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    };
    shared.log.push(Logged {
        method: parts.method.to_string(),
        target,
        status: resp.status().as_u16(),
        auth: auth_kind,
    });
    resp
}

fn json_response(status: u16, body: Value) -> Response {
    super::http_kit::reply::json(status, body)
}

fn api(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    bytes: &[u8],
    auth: Auth,
) -> Response {
    let pairs = query::pairs(query);
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                let text = format!("{method} {path}: body is not JSON: {e}");
                violation(shared, text.clone());
                let (s, b) = message(400, &text);
                return json_response(s, b);
            }
        }
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let matched =
        match shared
            .swagger
            .check(method.as_str(), path, &pairs, content_type, body.as_ref())
        {
            Ok(m) => m,
            Err(errors) => {
                let text = format!("{method} {path}: {}", errors.join("; "));
                violation(shared, text.clone());
                let (s, b) = message(400, &format!("fake-gitea contract violation: {text}"));
                return json_response(s, b);
            }
        };
    let (status, answer) = operation(
        shared,
        &matched,
        path,
        &pairs,
        body.unwrap_or(Value::Null),
        auth,
    );
    let errors = shared.swagger.check_response(&matched.op, status, &answer);
    if !errors.is_empty() {
        violation(
            shared,
            format!(
                "the fake's own answer to {}: {}",
                matched.op.id,
                errors.join("; ")
            ),
        );
    }
    json_response(status, answer)
}

fn user_json(name: &str, u: &User) -> Value {
    json!({"id": u.id, "login": name, "login_name": "", "full_name": "", "email": format!("{name}@example.test"), "is_admin": u.is_admin, "active": true})
}

fn token_json(t: &Token, with_secret: bool, scopes_on: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "token_last_eight": &t.value[t.value.len() - 8..],
    });
    if with_secret {
        v["sha1"] = json!(t.value);
    }
    if scopes_on {
        v["scopes"] = json!(t.scopes.clone().unwrap_or_default());
    }
    v
}

fn repo_json(shared: &Shared, r: &Repo, empty: bool) -> Value {
    let base = shared.base_url.lock().unwrap().clone();
    json!({
        "id": r.id,
        "name": r.name,
        "full_name": format!("{}/{}", r.owner, r.name),
        "owner": {"id": 0, "login": r.owner},
        "private": r.private,
        "empty": empty,
        "default_branch": r.default_branch,
        "clone_url": format!("{base}/{}/{}.git", r.owner, r.name),
        "html_url": format!("{base}/{}/{}", r.owner, r.name),
        "object_format_name": r.object_format,
    })
}

fn hook_json(h: &FakeHook) -> Value {
    // Gitea never returns the secret of a hook.
    let config: BTreeMap<&String, &String> =
        h.config.iter().filter(|(k, _)| *k != "secret").collect();
    json!({
        "id": h.id,
        "type": h.kind,
        "config": config,
        "events": h.events,
        "active": h.active,
        "branch_filter": h.branch_filter,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    })
}

fn operation(
    shared: &Shared,
    m: &swagger::Matched,
    path: &str,
    query: &[(String, String)],
    body: Value,
    auth: Auth,
) -> (u16, Value) {
    let scopes_on = scopes_supported(&shared.options.version);
    let p = |k: &str| m.path_params.get(k).cloned().unwrap_or_default();
    if matches!(auth, Auth::Invalid) {
        return message(401, "invalid username, password or token");
    }
    // Token creation and listing accept only a password (basic auth): Gitea's
    // reqBasicOrRevProxyAuth answers 401 "auth required" otherwise.
    let basic_only = matches!(
        m.op.id.as_str(),
        "userCreateToken" | "userGetTokens" | "userDeleteAccessToken"
    );
    let doer: Option<String> = match &auth {
        Auth::None => None,
        Auth::Password(u) => Some(u.clone()),
        Auth::Token(t) => Some(t.owner.clone()),
        Auth::Invalid => unreachable!(),
    };
    if basic_only && !matches!(auth, Auth::Password(_)) {
        return message(401, "auth required");
    }
    if m.op.id != "getVersion" && doer.is_none() {
        // Public reads exist in Gitea, but homelab always authenticates; an anonymous call is
        // a client bug worth seeing.
        return message(401, "token is required");
    }
    if let (Auth::Token(t), Some(cat)) = (&auth, scope_category(path))
        && scopes_on
    {
        let write = m.op.method != "GET";
        if !has_scope(&t.scopes, cat, write) {
            let level = if write { "write" } else { "read" };
            return message(
                403,
                &format!("token does not have at least one of required scope(s): [{level}:{cat}]"),
            );
        }
    }
    let doer = doer.unwrap_or_default();
    let mut data = shared.data.lock().unwrap();
    match m.op.id.as_str() {
        "getVersion" => (200, json!({"version": shared.options.version})),
        "userGetCurrent" => {
            let u = data.users[&doer].clone();
            (200, user_json(&doer, &u))
        }
        "userGetTokens" => {
            let user = p("username");
            if user != doer && !data.users[&doer].is_admin {
                return message(403, "user should be the site admin");
            }
            let list: Vec<Value> = Page::gitea(query, 30)
                .of(data.tokens.iter().filter(|t| t.owner == user))
                .map(|t| token_json(t, false, scopes_on))
                .collect();
            (200, Value::Array(list))
        }
        "userCreateToken" => {
            let user = p("username");
            if user != doer && !data.users[&doer].is_admin {
                return message(403, "user should be the site admin");
            }
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if data
                .tokens
                .iter()
                .any(|t| t.owner == user && t.name == name)
            {
                return message(400, "access token name has been used already");
            }
            let scopes = if scopes_on {
                let s: Vec<String> = body["scopes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if s.is_empty() {
                    return message(400, "access token must have a scope");
                }
                if let Some(bad) = s.iter().find(|x| !KNOWN_SCOPES.contains(&x.as_str())) {
                    return message(400, &format!("invalid access token scope: {bad}"));
                }
                Some(s)
            } else {
                None
            };
            let id = data.id();
            let value = hex::encode(homelab::edges::state::random_bytes(20).unwrap());
            let t = Token {
                id,
                name,
                owner: user,
                value,
                scopes,
            };
            data.tokens.push(t.clone());
            (201, token_json(&t, true, scopes_on))
        }
        "userDeleteAccessToken" => {
            let user = p("username");
            let key = p("token");
            let before = data.tokens.len();
            data.tokens
                .retain(|t| !(t.owner == user && (t.name == key || t.id.to_string() == key)));
            if data.tokens.len() == before {
                (404, Value::Null)
            } else {
                (204, Value::Null)
            }
        }
        "orgGet" => match data.orgs.get(&p("org")) {
            Some(id) => (
                200,
                json!({"id": id, "username": p("org"), "name": p("org"), "visibility": "public"}),
            ),
            None => (
                404,
                json!({"errors": [], "message": "not found", "url": ""}),
            ),
        },
        "orgCreate" => {
            let name = body["username"].as_str().unwrap_or_default().to_string();
            if data.orgs.contains_key(&name) || data.users.contains_key(&name) {
                return message(422, &format!("user already exists [name: {name}]"));
            }
            let id = data.id();
            data.orgs.insert(name.clone(), id);
            (
                201,
                json!({"id": id, "username": name, "name": name, "visibility": body["visibility"].as_str().unwrap_or("public")}),
            )
        }
        "repoGet" => {
            let key = format!("{}/{}", p("owner"), p("repo"));
            match data.repos.get(&key) {
                Some(r) => {
                    let empty = !git_has_commits(shared, r);
                    (200, repo_json(shared, r, empty))
                }
                None => (
                    404,
                    json!({"errors": [], "message": "not found", "url": ""}),
                ),
            }
        }
        "createOrgRepo" => {
            let org = p("org");
            if !data.orgs.contains_key(&org) {
                return (
                    404,
                    json!({"errors": [], "message": "not found", "url": ""}),
                );
            }
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let key = format!("{org}/{name}");
            if data.repos.contains_key(&key) {
                return message(409, "The repository with the same name already exists.");
            }
            let id = data.id();
            let object_format = body["object_format_name"]
                .as_str()
                .unwrap_or("sha1")
                .to_string();
            let r = Repo {
                id,
                owner: org.clone(),
                name: name.clone(),
                private: body["private"].as_bool().unwrap_or(false),
                default_branch: body["default_branch"]
                    .as_str()
                    .unwrap_or("main")
                    .to_string(),
                object_format: object_format.clone(),
            };
            git_backend::init_bare(&shared.repos_root, &org, &name, &object_format);
            data.repos.insert(key, r.clone());
            (201, repo_json(shared, &r, true))
        }
        "repoListHooks" => {
            let key = format!("{}/{}", p("owner"), p("repo"));
            if !data.repos.contains_key(&key) {
                return (
                    404,
                    json!({"errors": [], "message": "not found", "url": ""}),
                );
            }
            let hooks: Vec<Value> = data
                .hooks
                .get(&key)
                .map(|h| h.iter().map(hook_json).collect())
                .unwrap_or_default();
            (200, Value::Array(hooks))
        }
        "repoCreateHook" => {
            let key = format!("{}/{}", p("owner"), p("repo"));
            if !data.repos.contains_key(&key) {
                return (
                    404,
                    json!({"errors": [], "message": "not found", "url": ""}),
                );
            }
            let config: BTreeMap<String, String> =
                serde_json::from_value(body["config"].clone()).unwrap_or_default();
            if !config.contains_key("url") || !config.contains_key("content_type") {
                // CreateHookOptionConfig: "required are content_type and url".
                return message(422, "Missing config option: url or content_type");
            }
            let id = data.id();
            let h = FakeHook {
                id,
                kind: body["type"].as_str().unwrap_or_default().into(),
                config,
                events: serde_json::from_value(body["events"].clone()).unwrap_or_default(),
                active: body["active"].as_bool().unwrap_or(false),
                branch_filter: body["branch_filter"].as_str().unwrap_or("*").into(),
            };
            data.hooks.entry(key).or_default().push(h.clone());
            (201, hook_json(&h))
        }
        "repoEditHook" => {
            let key = format!("{}/{}", p("owner"), p("repo"));
            let id: i64 = p("id").parse().unwrap();
            let Some(h) = data
                .hooks
                .get_mut(&key)
                .and_then(|v| v.iter_mut().find(|h| h.id == id))
            else {
                return (
                    404,
                    json!({"errors": [], "message": "not found", "url": ""}),
                );
            };
            if let Some(c) = body.get("config") {
                h.config = serde_json::from_value(c.clone()).unwrap_or_default();
            }
            if let Some(e) = body.get("events") {
                h.events = serde_json::from_value(e.clone()).unwrap_or_default();
            }
            if let Some(a) = body.get("active").and_then(Value::as_bool) {
                h.active = a;
            }
            if let Some(b) = body.get("branch_filter").and_then(Value::as_str) {
                h.branch_filter = b.into();
            }
            (200, hook_json(h))
        }
        "repoDeleteHook" => {
            let key = format!("{}/{}", p("owner"), p("repo"));
            let id: i64 = p("id").parse().unwrap();
            let list = data.hooks.entry(key).or_default();
            let before = list.len();
            list.retain(|h| h.id != id);
            if list.len() == before {
                (404, Value::Null)
            } else {
                (204, Value::Null)
            }
        }
        op if oauth::implements(op) => oauth::operation(shared, m, query, &body, &doer, &mut data),
        op if contents::implements(op) => {
            contents::operation(shared, m, query, &body, &doer, &mut data)
        }
        other => {
            drop(data);
            violation(
                shared,
                format!(
                    "the fake does not implement `{other}` ({} {})",
                    m.op.method, m.op.path
                ),
            );
            message(501, "not implemented by the fake")
        }
    }
}

fn git_has_commits(shared: &Shared, r: &Repo) -> bool {
    let dir = shared
        .repos_root
        .join(&r.owner)
        .join(format!("{}.git", r.name));
    std::process::Command::new("git")
        .arg(format!("--git-dir={}", dir.display()))
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The container registry's `/v2/` and its token realm, as Gitea implements the OCI
/// distribution spec: basic credentials (password or token) are accepted directly; without them
/// `/v2/` answers 401 with a Bearer challenge whose realm is `<ROOT_URL>/v2/token`.
fn registry(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    auth: Auth,
) -> Response {
    let base = shared.base_url.lock().unwrap().clone();
    let scopes_on = scopes_supported(&shared.options.version);
    let challenge = || {
        let mut r = json_response(
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
        );
        r.headers_mut().insert(
            "www-authenticate",
            format!(r#"Bearer realm="{base}/v2/token",service="container_registry",scope="*""#)
                .parse()
                .unwrap(),
        );
        r
    };
    let token_ok = |t: &Token| !scopes_on || has_scope(&t.scopes, "package", false);
    match path {
        "/v2/token" => match auth {
            Auth::Password(_) => {}
            Auth::Token(ref t) if token_ok(t) => {}
            _ => return challenge(),
        },
        "/v2" | "/v2/" => {
            return match auth {
                Auth::Password(_) => json_response(200, json!({})),
                Auth::Token(ref t) if token_ok(t) => json_response(200, json!({})),
                Auth::Token(ref t)
                    if shared
                        .data
                        .lock()
                        .unwrap()
                        .registry_tokens
                        .contains(&t.value) =>
                {
                    json_response(200, json!({}))
                }
                _ => challenge(),
            };
        }
        _ => {
            let rest = path.trim_start_matches("/v2/");
            return oci::route(shared, method, rest, query, headers, body, auth, challenge)
                .unwrap_or_else(|| {
                    json_response(404, json!({"errors": [{"code": "NAME_UNKNOWN"}]}))
                });
        }
    }
    // Issue a registry bearer token (recorded as a token so `Bearer` auth finds it).
    let value = hex::encode(homelab::edges::state::random_bytes(24).unwrap());
    let mut data = shared.data.lock().unwrap();
    let id = data.id();
    data.registry_tokens.push(value.clone());
    data.tokens.push(Token {
        id,
        name: format!("registry-{id}"),
        owner: String::new(),
        value: value.clone(),
        scopes: Some(vec!["read:package".into()]),
    });
    json_response(200, json!({"token": value, "access_token": value}))
}

/// git smart HTTP. Reads of public repositories are anonymous, as in Gitea; a push needs a
/// password or a token with `write:repository` (when scopes exist).
async fn git(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    auth: Auth,
) -> Response {
    let (repo_part, _) = path.split_once(".git/").unwrap();
    let key = repo_part.trim_start_matches('/').to_string();
    let repo = shared.data.lock().unwrap().repos.get(&key).cloned();
    let Some(repo) = repo else {
        return (StatusCode::NOT_FOUND, "repository not found").into_response();
    };
    let push = path.ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    let scopes_on = scopes_supported(&shared.options.version);
    let user = match &auth {
        Auth::Password(u) => Some(u.clone()),
        Auth::Token(t) if !push || !scopes_on || has_scope(&t.scopes, "repository", true) => {
            Some(t.owner.clone())
        }
        _ => None,
    };
    if (push || repo.private) && user.is_none() {
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        r.headers_mut().insert(
            "www-authenticate",
            r#"Basic realm="Gitea""#.parse().unwrap(),
        );
        return r;
    }
    let dir = shared
        .repos_root
        .join(&repo.owner)
        .join(format!("{}.git", repo.name));
    let receive = push && *method == Method::POST;
    let before = if receive {
        heads(&dir)
    } else {
        BTreeMap::new()
    };
    let resp = git_backend::serve(
        &shared.repos_root,
        method.as_str(),
        path,
        query,
        headers,
        body,
        user.as_deref(),
    )
    .await
    .map(axum::body::Body::from);
    if receive {
        // Gitea runs its push hooks after a receive-pack: every moved branch is a `push` event.
        let after = heads(&dir);
        let data = shared.data.lock().unwrap();
        for (branch, new) in &after {
            let old = before
                .get(branch)
                .cloned()
                .unwrap_or_else(|| "0".repeat(new.len()));
            if &old == new {
                continue;
            }
            let msg = std::process::Command::new("git")
                .arg(format!("--git-dir={}", dir.display()))
                .args(["log", "-1", "--format=%B", new])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
                .unwrap_or_default();
            contents::deliver_push(
                shared,
                &data,
                &repo.owner,
                &repo.name,
                branch,
                &old,
                new,
                &msg,
                user.as_deref().unwrap_or_default(),
            );
        }
    }
    resp
}

/// Branch → commit of a bare repository.
fn heads(dir: &std::path::Path) -> BTreeMap<String, String> {
    let out = std::process::Command::new("git")
        .arg(format!("--git-dir={}", dir.display()))
        .args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(b, c)| (b.to_string(), c.to_string()))
        .collect()
}

impl FakeGitea {
    /// Store an image as a push with these registry credentials would (`Authorization` header
    /// value, as a docker config's `auth` gives it): the user needs a password or a token with
    /// `write:package` and write access to the owner (an organisation's admin). The push itself
    /// is not the OCI distribution protocol: a client first proves its credentials at `/v2/`.
    pub fn store_image(
        &self,
        authorization: &str,
        name: &str,
        tag: &str,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            authorization.parse().map_err(|_| "bad header")?,
        );
        let (auth, _) = authenticate(&self.shared, &headers);
        let scopes_on = scopes_supported(&self.shared.options.version);
        let user = match auth {
            Auth::Password(u) => u,
            Auth::Token(t) if !scopes_on || has_scope(&t.scopes, "package", true) => t.owner,
            Auth::Token(_) => {
                return Err(
                    "token does not have at least one of required scope(s): [write:package]".into(),
                );
            }
            _ => return Err("unauthorized: authentication required".into()),
        };
        let mut data = self.data();
        let owner = name.split('/').next().unwrap_or_default();
        let may = data.users.get(&user).is_some_and(|u| u.is_admin) || owner == user;
        if !may {
            return Err(format!("denied: `{user}` may not push to `{owner}`"));
        }
        data.images
            .insert((name.to_string(), tag.to_string()), Image { files });
        Ok(())
    }

    /// A manifest pushed through `/v2/`, by `owner/image` and tag or digest.
    pub fn manifest(&self, name: &str, reference: &str) -> Option<oci::Manifest> {
        self.data()
            .manifests
            .get(&(name.to_string(), reference.to_string()))
            .cloned()
    }

    /// An image by `owner/name` and tag, as a pull would find it (the lab's are public).
    pub fn image(&self, name: &str, tag: &str) -> Option<Image> {
        self.data()
            .images
            .get(&(name.to_string(), tag.to_string()))
            .cloned()
    }
}

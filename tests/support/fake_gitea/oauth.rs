//! Extension of the fake Gitea (drone branch): the OAuth2 application API
//! (`/user/applications/oauth2…`, swagger-checked like every API call of the fake) and the web
//! pages a program walks to log a user in to an OAuth2 client, with exactly NOTES §3's behaviour:
//!
//! - `GET/POST /user/login`: session cookie `i_like_gitea`; in [`WebFlavor::Csrf`] (Gitea ≤ 1.25)
//!   the form carries a hidden `_csrf` equal to the `_csrf` cookie and a POST without it (or with
//!   another) is a 400; in [`WebFlavor::NoCsrf`] (1.26) there is no token and a POST whose
//!   `Sec-Fetch-Site` is `cross-site` or whose `Origin` is foreign is a 403. Success: a new session
//!   (and a new `_csrf`), 303 to `/`; a wrong password: 200 with the form and a `flash-error`.
//! - `GET /login/oauth/authorize`: not signed in → 303 to `/user/login`; unknown client → 400
//!   error page "Client ID not registered"; unregistered redirect URI → 400 "Unregistered
//!   Redirect URI"; `response_type` ≠ `code` → 303 back with `unsupported_response_type`; a
//!   public client without PKCE → 303 back with `invalid_request`; a grant that exists for a
//!   confidential (or `skip_secondary_authorization`) client → 303 straight back with a code;
//!   otherwise the 200 consent page, remembering client id, redirect URI and state in the session.
//! - `POST /login/oauth/grant`: session values must match the form (else 400), `_csrf` in Csrf
//!   flavor; `granted=false` → 303 back with `access_denied`; a grant with another scope → 303
//!   back with "a grant exists with different scope"; success → 303 `<redirect_uri>?code&state`.
//! - `POST /login/oauth/access_token`: client id and secret in the form or HTTP Basic; JSON
//!   `{access_token, token_type, expires_in, refresh_token}` or 400 JSON errors as Gitea's
//!   handlers give them; a code works once. The access token authenticates API calls as the user
//!   (as Gitea's OAuth2 tokens do), so a fake CI can call `/api/v1/user` with it.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::http_kit::cookies::{cookies, set_cookies};
use super::super::http_kit::query::{self as kit_query, Page};

use super::{Data, Shared, Token, message};

/// Which Gitea's web forms the fake imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebFlavor {
    /// Gitea ≤ 1.25: `_csrf` hidden input and cookie on every form.
    Csrf,
    /// Gitea 1.26: no `_csrf`; cross-origin checks on headers instead.
    #[default]
    NoCsrf,
}

#[derive(Clone, Debug)]
pub struct App {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub client_id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
    pub skip_secondary: bool,
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub app_id: i64,
    pub user: String,
    pub scope: String,
}

#[derive(Clone, Debug, Default)]
pub struct Session {
    pub user: Option<String>,
    pub csrf: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
}

#[derive(Clone, Debug)]
pub struct Code {
    pub app_id: i64,
    pub user: String,
    pub redirect_uri: String,
    pub used: bool,
}

/// What the OAuth2 and web parts of the fake know.
#[derive(Default)]
pub struct OAuthData {
    pub flavor: WebFlavor,
    pub apps: Vec<App>,
    pub grants: Vec<Grant>,
    pub sessions: BTreeMap<String, Session>,
    pub codes: BTreeMap<String, Code>,
    /// Access tokens issued by `/login/oauth/access_token`, by value → user.
    pub access_tokens: BTreeMap<String, String>,
    /// How many times each app's secret was (re)generated.
    pub secrets_issued: BTreeMap<i64, u32>,
}

fn random(n: usize) -> String {
    hex::encode(homelab::edges::state::random_bytes(n).unwrap())
}

/// The operation ids of swagger.v1.json this module answers.
pub fn implements(op: &str) -> bool {
    matches!(
        op,
        "userGetOauth2Application"
            | "userCreateOAuth2Application"
            | "userGetOAuth2Application"
            | "userUpdateOAuth2Application"
            | "userDeleteOAuth2Application"
    )
}

fn app_json(a: &App, with_secret: bool) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "client_id": a.client_id,
        "client_secret": if with_secret { a.secret.clone() } else { String::new() },
        "redirect_uris": a.redirect_uris,
        "confidential_client": a.confidential,
        "skip_secondary_authorization": a.skip_secondary,
        "created": "2026-01-01T00:00:00Z",
    })
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"errors": [], "message": "not found", "url": ""}),
    )
}

/// Answer an OAuth2 application API call for `doer` (already authenticated and scope-checked).
pub fn operation(
    shared: &Shared,
    m: &super::swagger::Matched,
    query: &[(String, String)],
    body: &Value,
    doer: &str,
    data: &mut Data,
) -> (u16, Value) {
    let mut o = shared.oauth.lock().unwrap();
    let id: Option<i64> = m.path_params.get("id").and_then(|s| s.parse().ok());
    match m.op.id.as_str() {
        "userGetOauth2Application" => {
            let list: Vec<Value> = Page::gitea(query, 30)
                .of(o.apps.iter().filter(|a| a.owner == doer))
                .map(|a| app_json(a, false))
                .collect();
            (200, Value::Array(list))
        }
        "userCreateOAuth2Application" => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() {
                return message(400, "name is required");
            }
            let redirect_uris: Vec<String> =
                serde_json::from_value(body["redirect_uris"].clone()).unwrap_or_default();
            let app = App {
                id: data.id(),
                owner: doer.into(),
                name,
                client_id: format!("{}-{}", random(4), random(4)),
                secret: format!("gto_{}", random(24)),
                redirect_uris,
                confidential: body["confidential_client"].as_bool().unwrap_or(false),
                skip_secondary: body["skip_secondary_authorization"]
                    .as_bool()
                    .unwrap_or(false),
            };
            *o.secrets_issued.entry(app.id).or_default() += 1;
            o.apps.push(app.clone());
            (201, app_json(&app, true))
        }
        "userGetOAuth2Application" => match o.apps.iter().find(|a| Some(a.id) == id) {
            Some(a) => (200, app_json(a, false)),
            None => not_found(),
        },
        "userUpdateOAuth2Application" => {
            let Some(a) = o
                .apps
                .iter_mut()
                .find(|a| Some(a.id) == id && a.owner == doer)
            else {
                return not_found();
            };
            if let Some(n) = body["name"].as_str() {
                a.name = n.into();
            }
            a.redirect_uris =
                serde_json::from_value(body["redirect_uris"].clone()).unwrap_or_default();
            a.confidential = body["confidential_client"].as_bool().unwrap_or(false);
            // Gitea: "update an OAuth2 Application, this includes regenerating the client secret".
            a.secret = format!("gto_{}", random(24));
            let a = a.clone();
            *o.secrets_issued.entry(a.id).or_default() += 1;
            (200, app_json(&a, true))
        }
        "userDeleteOAuth2Application" => {
            let before = o.apps.len();
            o.apps.retain(|a| !(Some(a.id) == id && a.owner == doer));
            if o.apps.len() == before {
                return not_found();
            }
            o.grants.retain(|g| Some(g.app_id) != id);
            (204, Value::Null)
        }
        other => unreachable!("{other} is not an OAuth2 operation"),
    }
}

/// The web paths this module serves.
pub fn is_web(path: &str) -> bool {
    matches!(
        path,
        "/user/login"
            | "/login/oauth/authorize"
            | "/login/oauth/grant"
            | "/login/oauth/access_token"
    )
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn html(status: StatusCode, body: String) -> Reply {
        Reply {
            status,
            location: None,
            cookies: Vec::new(),
            content_type: "text/html; charset=utf-8",
            body,
        }
    }
    fn redirect(to: String) -> Reply {
        Reply {
            status: StatusCode::SEE_OTHER,
            location: Some(to),
            cookies: Vec::new(),
            content_type: "text/html; charset=utf-8",
            body: String::new(),
        }
    }
    fn json(status: StatusCode, v: Value) -> Reply {
        Reply {
            status,
            location: None,
            cookies: Vec::new(),
            content_type: "application/json;charset=utf-8",
            body: v.to_string(),
        }
    }
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        r.headers_mut()
            .insert("content-type", self.content_type.parse().unwrap());
        if let Some(l) = self.location {
            r.headers_mut().insert("location", l.parse().unwrap());
        }
        set_cookies(&mut r, &self.cookies);
        r
    }
}

fn form(bytes: &[u8]) -> BTreeMap<String, String> {
    kit_query::pairs(&String::from_utf8_lossy(bytes))
        .into_iter()
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse(uri).unwrap();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

fn csrf_input(flavor: WebFlavor, token: &str) -> String {
    match flavor {
        WebFlavor::Csrf => format!(
            r#"<input type="hidden" name="_csrf" value="{}">"#,
            escape(token)
        ),
        WebFlavor::NoCsrf => String::new(),
    }
}

fn signin_page(flavor: WebFlavor, csrf: &str, flash: Option<&str>) -> String {
    let flash = flash
        .map(|f| {
            format!(
                r#"<div class="ui negative message flash-message flash-error"><p>{}</p></div>"#,
                escape(f)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html><html><head><title>Sign In - Gitea</title></head><body>
<div class="page-content user signin">{flash}
<form class="ui form" action="/user/login" method="post">
{csrf}
<div class="required field"><label for="user_name">Username or Email Address</label>
<input id="user_name" type="text" name="user_name" value="" autofocus required></div>
<div class="required field"><label for="password">Password</label>
<input id="password" name="password" type="password" value="" autocomplete="current-password" required></div>
<div class="inline field"><div class="ui checkbox"><label>Remember This Device</label><input name="remember" type="checkbox"></div></div>
<button class="ui primary button">Sign In</button>
</form></div></body></html>"#,
        csrf = csrf_input(flavor, csrf)
    )
}

fn grant_page(flavor: WebFlavor, csrf: &str, app: &App, q: &BTreeMap<String, String>) -> String {
    let v = |k: &str| escape(q.get(k).map(String::as_str).unwrap_or(""));
    format!(
        r#"<!DOCTYPE html><html><body><div role="main" class="page-content oauth2-authorize-application-box">
<div class="ui container tw-max-w-[500px]"><h3 class="ui top attached header">Authorize Application</h3>
<div class="ui attached segment"><p>Do you want to authorize <strong>{name}</strong> to access your account?</p>
<p>You will be redirected to <strong>{redirect}</strong> if you authorize this application.</p></div>
<div class="ui attached segment">
<form method="post" action="/login/oauth/grant">
{csrf}
<input type="hidden" name="client_id" value="{client_id}">
<input type="hidden" name="state" value="{state}">
<input type="hidden" name="scope" value="{scope}">
<input type="hidden" name="nonce" value="{nonce}">
<input type="hidden" name="redirect_uri" value="{redirect}">
<button type="submit" id="authorize-app" name="granted" value="true" class="ui red inline button">Authorize Application</button>
<button type="submit" name="granted" value="false" class="ui basic primary inline button">Cancel</button>
</form></div></div></div></body></html>"#,
        name = escape(&app.name),
        csrf = csrf_input(flavor, csrf),
        client_id = escape(&app.client_id),
        state = v("state"),
        scope = v("scope"),
        nonce = v("nonce"),
        redirect = v("redirect_uri"),
    )
}

/// An OAuth2 error sent back to the client's `redirect` (RFC 6749 §4.1.2.1): `error`,
/// `error_description` and the client's `state`.
fn error_redirect(redirect: &str, error: &str, description: &str, state: &str) -> Reply {
    Reply::redirect(with_query(
        redirect,
        &[
            ("error", error),
            ("error_description", description),
            ("state", state),
        ],
    ))
}

fn grant_error_page(code: &str, description: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html><body><div role="main" class="page-content oauth2-authorize-application-box">
<div class="ui container"><h3 class="ui top attached header">Authorization failed</h3>
<div class="ui attached segment"><div class="ui red message"><p>{code}</p><p>{}</p></div></div></div></div></body></html>"#,
        escape(description)
    )
}

/// Answer a web request.
pub fn web(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Response {
    let reply = match (method.as_str(), path) {
        ("GET", "/user/login") => signin_get(shared, headers),
        ("POST", "/user/login") => signin_post(shared, headers, bytes),
        ("GET", "/login/oauth/authorize") => authorize(shared, headers, query),
        ("POST", "/login/oauth/grant") => grant(shared, headers, bytes),
        ("POST", "/login/oauth/access_token") => access_token(shared, headers, bytes),
        _ => Reply::html(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into()),
    };
    reply.into_response()
}

/// The session of the request, created (with its cookie set on `reply`) when missing.
fn session(o: &mut OAuthData, headers: &HeaderMap, set: &mut Vec<String>) -> String {
    let c = cookies(headers);
    if let Some(id) = c.get("i_like_gitea")
        && o.sessions.contains_key(id)
    {
        return id.clone();
    }
    let id = random(8);
    let csrf = random(12);
    o.sessions.insert(
        id.clone(),
        Session {
            csrf: csrf.clone(),
            ..Session::default()
        },
    );
    set.push(format!(
        "i_like_gitea={id}; Path=/; HttpOnly; Secure; SameSite=Lax"
    ));
    if o.flavor == WebFlavor::Csrf {
        set.push(format!(
            "_csrf={csrf}; Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"
        ));
    }
    id
}

/// The Csrf flavor's check: the form's `_csrf` equals the session's token and the cookie.
/// A web form POST the flavour refuses: without the session's CSRF token (400, `Csrf`), or
/// cross-origin (403 with `cross_origin_text`, `NoCsrf`).
fn refuse_forged(
    shared: &Shared,
    o: &OAuthData,
    sid: &str,
    headers: &HeaderMap,
    f: &BTreeMap<String, String>,
    cross_origin_text: &str,
) -> Option<Reply> {
    match o.flavor {
        WebFlavor::Csrf if !csrf_ok(o, sid, headers, f) => Some(Reply::html(
            StatusCode::BAD_REQUEST,
            "Invalid CSRF token.\n".into(),
        )),
        WebFlavor::NoCsrf if cross_origin(shared, headers) => {
            Some(Reply::html(StatusCode::FORBIDDEN, cross_origin_text.into()))
        }
        _ => None,
    }
}

fn csrf_ok(o: &OAuthData, sid: &str, headers: &HeaderMap, f: &BTreeMap<String, String>) -> bool {
    let token = f.get("_csrf").map(String::as_str).unwrap_or("");
    let cookie = cookies(headers).get("_csrf").cloned().unwrap_or_default();
    !token.is_empty() && token == cookie && o.sessions.get(sid).is_some_and(|s| s.csrf == token)
}

/// The 1.26 flavor's check (`http.CrossOriginProtection`): requests without `Sec-Fetch-Site`
/// and `Origin` pass; a browser's cross-site request does not.
fn cross_origin(shared: &Shared, headers: &HeaderMap) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(site) = h("sec-fetch-site") {
        return !(site == "same-origin" || site == "none");
    }
    match h("origin") {
        None => false,
        Some(origin) => origin != *shared.base_url.lock().unwrap(),
    }
}

fn signin_get(shared: &Shared, headers: &HeaderMap) -> Reply {
    let mut o = shared.oauth.lock().unwrap();
    let mut set = Vec::new();
    let sid = session(&mut o, headers, &mut set);
    let s = o.sessions[&sid].clone();
    let mut r = if s.user.is_some() {
        Reply::redirect("/".into())
    } else {
        Reply::html(StatusCode::OK, signin_page(o.flavor, &s.csrf, None))
    };
    r.cookies = set;
    r
}

fn signin_post(shared: &Shared, headers: &HeaderMap, bytes: &[u8]) -> Reply {
    let f = form(bytes);
    let users = shared.data.lock().unwrap().users.clone();
    let mut o = shared.oauth.lock().unwrap();
    let mut set = Vec::new();
    let sid = session(&mut o, headers, &mut set);
    if let Some(refused) = refuse_forged(
        shared,
        &o,
        &sid,
        headers,
        &f,
        "cross-origin request detected from Sec-Fetch-Site header\n",
    ) {
        return refused;
    }
    let name = f.get("user_name").cloned().unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    match users.get(&name) {
        Some(u) if u.password == password => {
            // Gitea regenerates the session (and the CSRF token) at sign-in.
            o.sessions.remove(&sid);
            let new = random(8);
            let csrf = random(12);
            o.sessions.insert(
                new.clone(),
                Session {
                    user: Some(name),
                    csrf: csrf.clone(),
                    ..Session::default()
                },
            );
            let mut r = Reply::redirect("/".into());
            r.cookies = vec![format!(
                "i_like_gitea={new}; Path=/; HttpOnly; Secure; SameSite=Lax"
            )];
            if o.flavor == WebFlavor::Csrf {
                r.cookies.push(format!(
                    "_csrf={csrf}; Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"
                ));
            }
            r
        }
        _ => {
            let csrf = o.sessions[&sid].csrf.clone();
            let mut r = Reply::html(
                StatusCode::OK,
                signin_page(o.flavor, &csrf, Some("Username or password is incorrect.")),
            );
            r.cookies = set;
            r
        }
    }
}

fn authorize(shared: &Shared, headers: &HeaderMap, query: &str) -> Reply {
    let q: BTreeMap<String, String> = form(query.as_bytes());
    let mut o = shared.oauth.lock().unwrap();
    let mut set = Vec::new();
    let sid = session(&mut o, headers, &mut set);
    let Some(user) = o.sessions[&sid].user.clone() else {
        let mut r = Reply::redirect(format!(
            "/user/login?redirect_to={}",
            reqwest::Url::parse("http://x/")
                .unwrap()
                .join(&format!("/login/oauth/authorize?{query}"))
                .unwrap()
                .path()
        ));
        r.cookies = set;
        return r;
    };
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let Some(app) = o
        .apps
        .iter()
        .find(|a| a.client_id == get("client_id"))
        .cloned()
    else {
        return Reply::html(
            StatusCode::BAD_REQUEST,
            grant_error_page("unauthorized_client", "Client ID not registered"),
        );
    };
    let redirect = get("redirect_uri");
    if !app.redirect_uris.contains(&redirect) {
        return Reply::html(
            StatusCode::BAD_REQUEST,
            grant_error_page("invalid_request", "Unregistered Redirect URI"),
        );
    }
    let back = |error: &str, description: &str| {
        error_redirect(&redirect, error, description, &get("state"))
    };
    if get("response_type") != "code" {
        return back(
            "unsupported_response_type",
            "Only code response type is supported.",
        );
    }
    if !app.confidential && get("code_challenge_method").is_empty() {
        return back("invalid_request", "PKCE is required for public clients");
    }
    let has_grant = o
        .grants
        .iter()
        .any(|g| g.app_id == app.id && g.user == user);
    if has_grant && (app.confidential || app.skip_secondary) {
        let code = random(16);
        o.codes.insert(
            code.clone(),
            Code {
                app_id: app.id,
                user,
                redirect_uri: redirect.clone(),
                used: false,
            },
        );
        return Reply::redirect(with_query(
            &redirect,
            &[("code", &code), ("state", &get("state"))],
        ));
    }
    let s = o.sessions.get_mut(&sid).unwrap();
    s.client_id = app.client_id.clone();
    s.redirect_uri = redirect;
    s.state = get("state");
    let csrf = s.csrf.clone();
    let mut r = Reply::html(StatusCode::OK, grant_page(o.flavor, &csrf, &app, &q));
    r.cookies = set;
    r
}

fn grant(shared: &Shared, headers: &HeaderMap, bytes: &[u8]) -> Reply {
    let f = form(bytes);
    let mut o = shared.oauth.lock().unwrap();
    let mut set = Vec::new();
    let sid = session(&mut o, headers, &mut set);
    let s = o.sessions[&sid].clone();
    let Some(user) = s.user.clone() else {
        return Reply::redirect("/user/login".into());
    };
    if let Some(refused) = refuse_forged(
        shared,
        &o,
        &sid,
        headers,
        &f,
        "cross-origin request detected\n",
    ) {
        return refused;
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if s.client_id != get("client_id")
        || s.state != get("state")
        || s.redirect_uri != get("redirect_uri")
    {
        return Reply::html(StatusCode::BAD_REQUEST, "Bad Request\n".into());
    }
    let redirect = get("redirect_uri");
    let back = |error: &str, description: &str| {
        error_redirect(&redirect, error, description, &get("state"))
    };
    if get("granted") != "true" {
        return back("access_denied", "the request is denied");
    }
    let app = o
        .apps
        .iter()
        .find(|a| a.client_id == get("client_id"))
        .cloned()
        .unwrap();
    match o
        .grants
        .iter()
        .find(|g| g.app_id == app.id && g.user == user)
    {
        Some(g) if g.scope != get("scope") => {
            return back("server_error", "a grant exists with different scope");
        }
        Some(_) => {}
        None => o.grants.push(Grant {
            app_id: app.id,
            user: user.clone(),
            scope: get("scope"),
        }),
    }
    let code = random(16);
    o.codes.insert(
        code.clone(),
        Code {
            app_id: app.id,
            user,
            redirect_uri: redirect.clone(),
            used: false,
        },
    );
    Reply::redirect(with_query(
        &redirect,
        &[("code", &code), ("state", &get("state"))],
    ))
}

fn access_token(shared: &Shared, headers: &HeaderMap, bytes: &[u8]) -> Reply {
    let mut f = form(bytes);
    let error = |code: &str, description: &str| {
        Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"error": code, "error_description": description}),
        )
    };
    if (f.get("client_id").is_none_or(String::is_empty)
        || f.get("client_secret").is_none_or(String::is_empty))
        && let Some(basic) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
    {
        let (id, secret) = super::super::http_kit::auth::basic_credentials(basic);
        f.entry("client_id".into()).or_insert_with(|| id.clone());
        f.insert("client_secret".into(), secret.to_string());
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return error(
            "unsupported_grant_type",
            "Only refresh_token or authorization_code grant type is supported",
        );
    }
    let mut o = shared.oauth.lock().unwrap();
    let Some(app) = o
        .apps
        .iter()
        .find(|a| a.client_id == get("client_id"))
        .cloned()
    else {
        return error(
            "invalid_client",
            &format!("cannot load client with client id: '{}'", get("client_id")),
        );
    };
    if app.confidential && app.secret != get("client_secret") {
        let d = if get("client_secret").is_empty() {
            "invalid empty client secret"
        } else {
            "invalid client secret"
        };
        return error("unauthorized_client", d);
    }
    if !get("redirect_uri").is_empty() && !app.redirect_uris.contains(&get("redirect_uri")) {
        return error("unauthorized_client", "unexpected redirect URI");
    }
    let Some(code) = o.codes.get(&get("code")).cloned() else {
        return error("unauthorized_client", "client is not authorized");
    };
    if code.redirect_uri != get("redirect_uri") {
        return error(
            "invalid_grant",
            "redirect_uri differs from the original authorization request",
        );
    }
    if code.app_id != app.id {
        return error("invalid_grant", "invalid grant");
    }
    if code.used {
        return error("invalid_grant", "authorization code already used");
    }
    o.codes.get_mut(&get("code")).unwrap().used = true;
    let access = format!("gta_{}", random(20));
    o.access_tokens.insert(access.clone(), code.user.clone());
    drop(o);
    // Gitea's OAuth2 access tokens authenticate API calls as the user who granted them.
    let mut data = shared.data.lock().unwrap();
    let id = data.id();
    data.tokens.push(Token {
        id,
        name: format!("oauth2-{id}"),
        owner: code.user,
        value: access.clone(),
        scopes: Some(vec!["all".into()]),
    });
    Reply::json(
        StatusCode::OK,
        json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": 3600,
            "refresh_token": format!("gtr_{}", random(20)),
        }),
    )
}

impl super::FakeGitea {
    /// The OAuth2 and web state (flavor, apps, grants, sessions).
    pub fn oauth(&self) -> std::sync::MutexGuard<'_, OAuthData> {
        self.shared.oauth.lock().unwrap()
    }
}

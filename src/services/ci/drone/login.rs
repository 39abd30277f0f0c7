//! Drone's side of the first login, done by the tool: `GET /login` (303 to Gitea's authorize URL
//! plus the `_oauth_state_` cookie) → Gitea sign-in and consent (`gitea::web_login`) → Drone's
//! callback with the code and the state cookie (`_session_` cookie) → `POST /api/user/token`.
//!
//! Place in the data flow: `ci::drone::wire` runs it when the lab state has no working Drone API
//! token or the OAuth client changed. Drone needs this one real OAuth login: it is how Drone
//! stores the Gitea OAuth token it syncs repositories with (`DRONE_USER_CREATE` gives Drone an
//! API token, not a Gitea one). Architecture invariant: one cookie jar for the whole flow, no
//! redirect followed blindly — each hop's host, status and cookie are checked, so the code never
//! goes to a host other than Drone's and a broken hop is named.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::types::UserToken;
use crate::edges::error::Diagnostic;
use crate::edges::http::{Endpoint, body_excerpt, error_chain};
use crate::edges::redact::{Secret, redact_url};
use crate::services::gitea::web_login::{Consent, GiteaWeb, OAuthLoginError, SignIn, same_origin};

/// Cookie Drone (go-login) sets on `/login` and checks on the callback.
pub const STATE_COOKIE: &str = "_oauth_state_";
/// Drone's session cookie.
pub const SESSION_COOKIE: &str = "_session_";

/// Who logs in where.
#[derive(Clone, Debug)]
pub struct LoginRequest {
    /// Drone's public endpoint (`https://drone.<domain>`).
    pub drone: Endpoint,
    /// Gitea's public endpoint (`https://gitea.<domain>`), what Drone redirects to.
    pub gitea: Endpoint,
    /// Gitea login.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// The redirect URI homelab registered (`https://drone.<domain>/login`), for messages.
    pub redirect_uri: String,
}

/// What the login gave.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    /// Drone's API token for the user.
    pub token: Secret,
    /// The Drone login name.
    pub login: String,
    /// How the Gitea sign-in went (`_csrf` or not).
    pub sign_in: SignIn,
    /// Whether Gitea showed its consent page.
    pub consent: Consent,
}

/// A Drone-side step of the login failed.
#[derive(Debug, thiserror::Error)]
pub enum DroneLoginError {
    /// The Gitea side failed.
    #[error(transparent)]
    Gitea(#[from] OAuthLoginError),
    /// The HTTP client could not be built.
    #[error("prepare the Drone login: {0}")]
    Setup(String),
    /// No answer.
    #[error("{call}: could not reach Drone at {url}: {detail}")]
    Unreachable {
        /// The step.
        call: String,
        /// URL, redacted.
        url: String,
        /// Transport error.
        detail: String,
    },
    /// `/login` did not redirect to an authorize URL.
    #[error("start the Drone login: `GET {url}` answered {status} instead of a redirect to Gitea{}", crate::edges::http::detail_suffix(.detail))]
    NoRedirect {
        /// URL.
        url: String,
        /// Status.
        status: u16,
        /// Body excerpt.
        detail: String,
    },
    /// `/login` redirected without setting the state cookie.
    #[error(
        "start the Drone login: `/login` set no `{STATE_COOKIE}` cookie, so Drone cannot check the state on the way back"
    )]
    NoStateCookie,
    /// The authorize URL is not on homelab's Gitea.
    #[error("Drone sends logins to `{location}`, not to the lab's Gitea at `{gitea}`")]
    WrongGitea {
        /// Where Drone redirected, redacted.
        location: String,
        /// The lab's Gitea.
        gitea: String,
    },
    /// Gitea sent the code somewhere else than Drone.
    #[error("Gitea sends the authorization code to `{callback}`, which is not Drone at `{drone}`")]
    CallbackElsewhere {
        /// The callback, without its query.
        callback: String,
        /// Drone's base URL.
        drone: String,
    },
    /// Drone's callback ended in its login error page.
    #[error("Drone refused the login: {message}")]
    Rejected {
        /// Drone's message.
        message: String,
    },
    /// The callback answered something else.
    #[error("finish the Drone login: the callback answered {status}{}", crate::edges::http::detail_suffix(.detail))]
    Callback {
        /// Status.
        status: u16,
        /// Location or body excerpt.
        detail: String,
    },
    /// The callback gave no session.
    #[error("finish the Drone login: Drone set no `{SESSION_COOKIE}` cookie")]
    NoSession,
    /// `POST /api/user/token` failed.
    #[error("read Drone's API token for `{user}`: Drone answered {status}{}", crate::edges::http::detail_suffix(.detail))]
    Token {
        /// The login.
        user: String,
        /// Status.
        status: u16,
        /// Message.
        detail: String,
    },
}

impl Diagnostic for DroneLoginError {
    fn hints(&self) -> Vec<String> {
        match self {
            DroneLoginError::Gitea(e) => e.hints(),
            DroneLoginError::NoRedirect { .. } | DroneLoginError::NoStateCookie => vec![
                "check Drone's `DRONE_GITEA_SERVER`, `DRONE_GITEA_CLIENT_ID` and `DRONE_GITEA_CLIENT_SECRET` in `kubectl -n drone get deploy drone -o yaml`".into(),
            ],
            DroneLoginError::WrongGitea { .. } => vec![
                "Drone's `DRONE_GITEA_SERVER` must be the lab's Gitea URL; re-render and apply the `drone` component".into(),
            ],
            DroneLoginError::CallbackElsewhere { .. } => vec![
                "the OAuth app's redirect URI and Drone's `DRONE_SERVER_HOST` must both be the lab's Drone host".into(),
            ],
            DroneLoginError::Rejected { message } if message.contains("client") || message.contains("401") || message.contains("400") => vec![
                "Drone could not exchange the code with Gitea: its client secret does not match the OAuth app's; remove `drone_oauth_client_secret` from the lab's `secrets.json` and run `homelab up` (the app's secret is regenerated and Drone restarted)".into(),
                "Drone's log says more: `kubectl -n drone logs deploy/drone`".into(),
            ],
            DroneLoginError::Rejected { .. } | DroneLoginError::Callback { .. } | DroneLoginError::NoSession => vec![
                "Drone's log says why: `kubectl -n drone logs deploy/drone`".into(),
            ],
            DroneLoginError::Token { status: 401, .. } => vec![
                "Drone did not accept its own session cookie: check `DRONE_COOKIE_SECRET` and that Drone was not restarted during the login".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// Log `req.user` in to Drone through Gitea and return Drone's API token for that user.
pub async fn login(req: &LoginRequest) -> Result<LoginOutcome, DroneLoginError> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = crate::edges::http::client(
        &[&req.drone, &req.gitea],
        Some(jar.clone()),
        Duration::from_secs(60),
    )
    .map_err(DroneLoginError::Setup)?;
    let drone = req.drone.url().map_err(DroneLoginError::Setup)?;
    let gitea = req.gitea.url().map_err(DroneLoginError::Setup)?;
    let web = GiteaWeb::new(http.clone(), gitea.clone());

    let sign_in = web.sign_in(&req.user, &req.password).await?;

    // 1. Drone's /login: a 303 to Gitea's authorize URL and the state cookie.
    let login_url = join(&drone, "/login");
    let resp = get(&http, "start the Drone login", &login_url).await?;
    let status = resp.status();
    let location = header(&resp, reqwest::header::LOCATION);
    let state_cookie = resp.cookies().any(|c| c.name() == STATE_COOKIE);
    if !status.is_redirection() || location.is_none() {
        let detail = body_excerpt(&resp.bytes().await.unwrap_or_default());
        return Err(DroneLoginError::NoRedirect {
            url: redact_url(login_url.as_str()),
            status: status.as_u16(),
            detail,
        });
    }
    if !state_cookie {
        return Err(DroneLoginError::NoStateCookie);
    }
    let location = location.unwrap_or_default();
    let authorize = login_url
        .join(&location)
        .ok()
        .filter(|u| same_origin(u, &gitea))
        .ok_or_else(|| DroneLoginError::WrongGitea {
            location: redact_url(&location),
            gitea: gitea.to_string(),
        })?;

    // 2. Gitea: authorize, consent if asked.
    let authorized = web.authorize(&authorize, Some(&req.redirect_uri)).await?;

    // 3. Drone's callback, with the state cookie from step 1 (the jar sends it).
    let callback = authorized.callback;
    if !same_origin(&callback, &drone) {
        let mut shown = callback.clone();
        shown.set_query(None);
        return Err(DroneLoginError::CallbackElsewhere {
            callback: shown.to_string(),
            drone: drone.to_string(),
        });
    }
    let resp = get(&http, "finish the Drone login", &callback).await?;
    let status = resp.status();
    let location = header(&resp, reqwest::header::LOCATION).unwrap_or_default();
    let session = resp.cookies().any(|c| c.name() == SESSION_COOKIE);
    if !status.is_redirection() {
        let detail = body_excerpt(&resp.bytes().await.unwrap_or_default());
        return Err(DroneLoginError::Callback {
            status: status.as_u16(),
            detail,
        });
    }
    let to = callback.join(&location).ok();
    if let Some(to) = &to
        && to.path().starts_with("/login/error")
    {
        let message = to
            .query_pairs()
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| "no reason given".into());
        return Err(DroneLoginError::Rejected {
            message: redact_url(&message),
        });
    }
    if !session {
        return Err(DroneLoginError::NoSession);
    }

    // 4. The API token, with the session cookie.
    let token_url = join(&drone, "/api/user/token");
    let shown = redact_url(token_url.as_str());
    let resp = http
        .post(token_url)
        .send()
        .await
        .map_err(|e| DroneLoginError::Unreachable {
            call: "read Drone's API token".into(),
            url: shown.clone(),
            detail: error_chain(&e),
        })?;
    let status = resp.status();
    tracing::debug!("POST {shown} → {}", status.as_u16());
    let bytes = resp.bytes().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err(DroneLoginError::Token {
            user: req.user.clone(),
            status: status.as_u16(),
            detail: body_excerpt(&bytes),
        });
    }
    let answer: UserToken = serde_json::from_slice(&bytes).map_err(|e| DroneLoginError::Token {
        user: req.user.clone(),
        status: 200,
        detail: format!("not the expected JSON: {e}"),
    })?;
    if answer.token.is_empty() {
        return Err(DroneLoginError::Token {
            user: req.user.clone(),
            status: 200,
            detail: "the answer holds no token".into(),
        });
    }
    Ok(LoginOutcome {
        token: answer.token,
        login: answer.login,
        sign_in,
        consent: authorized.consent,
    })
}

fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    u.set_path(path);
    u.set_query(None);
    u
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn get(
    http: &reqwest::Client,
    call: &str,
    url: &Url,
) -> Result<reqwest::Response, DroneLoginError> {
    // The callback URL carries the one-time code: show and log it without its query.
    let mut shown = url.clone();
    shown.set_query(None);
    let shown = redact_url(shown.as_str());
    let resp = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| DroneLoginError::Unreachable {
            call: call.into(),
            url: shown.clone(),
            detail: error_chain(&e),
        })?;
    tracing::debug!("GET {shown} → {}", resp.status().as_u16());
    Ok(resp)
}

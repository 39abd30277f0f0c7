//! Gitea's web login and OAuth2 consent, done by a program: the sign-in form, then the
//! authorize/consent step that a CI server's `/login` sends a browser to.
//!
//! Place in the data flow: `ci::drone::login` drives it during wiring, between Drone's `/login`
//! redirect and Drone's callback; it lives with the Gitea service because the pages are Gitea's
//! (`ci::oauth_login` is its old path). CI-agnostic: any OAuth2 client of Gitea (Drone, Woodpecker)
//! goes through the same pages. Architecture invariant: the HTML is read by small pure parsers
//! ([`find_form`], [`grant_error_description`], [`flash_error`]) tested without a server, every
//! redirect is inspected rather than followed (the client never follows redirects), and the
//! only form fields sent are the ones Gitea's own page carries plus the credentials.
//!
//! Gitea ≤ 1.25 puts a `_csrf` hidden input in every form and rejects a POST without it; 1.26
//! dropped it for `Sec-Fetch-Site`/`Origin` checks, which a client sending neither header passes.
//! Both are handled by sending back exactly the hidden inputs the page had.

use reqwest::{StatusCode, Url};

use crate::edges::error::Diagnostic;
use crate::edges::http::{body_excerpt, error_chain};
use crate::edges::redact::{Secret, redact_url};

/// A form found in an HTML page: where it posts, and its named inputs with their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtmlForm {
    /// The `action` attribute, entities decoded.
    pub action: String,
    /// `name` → `value` of every `<input>` with a name (`value` empty when absent), in order.
    pub fields: Vec<(String, String)>,
}

impl HtmlForm {
    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the sign-in went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignIn {
    /// The form carried a `_csrf` token (Gitea ≤ 1.25), sent back with the credentials.
    WithCsrf,
    /// No `_csrf` token (Gitea ≥ 1.26).
    WithoutCsrf,
    /// The session was already signed in.
    Already,
}

/// How the authorization was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consent {
    /// Gitea redirected at once: the user had granted this confidential client before.
    AlreadyGranted,
    /// Gitea showed its consent page and homelab granted access.
    GrantedNow,
}

/// The end of the authorize step: where Gitea sends the browser back, with the code.
#[derive(Clone, Debug)]
pub struct Authorized {
    /// `<redirect_uri>?code=…&state=…`.
    pub callback: Url,
    /// How consent was given.
    pub consent: Consent,
}

/// A step of the web login failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthLoginError {
    /// No answer.
    #[error("{call}: could not reach Gitea at {url}: {detail}")]
    Unreachable {
        /// The step.
        call: String,
        /// URL, redacted.
        url: String,
        /// Transport error.
        detail: String,
    },
    /// An answer the flow does not expect.
    #[error("{call}: Gitea answered {status}{}", excerpt(.detail))]
    Unexpected {
        /// The step.
        call: String,
        /// HTTP status.
        status: u16,
        /// Location or the start of the body.
        detail: String,
    },
    /// The sign-in form came back with an error.
    #[error("Gitea refused the web sign-in of `{user}`: {message}")]
    SignInRefused {
        /// The login.
        user: String,
        /// Gitea's flash message.
        message: String,
    },
    /// The sign-in POST was refused for its CSRF token.
    #[error("Gitea refused the web sign-in of `{user}`: the form's `_csrf` token was not accepted")]
    CsrfRejected {
        /// The login.
        user: String,
    },
    /// The account needs a second factor.
    #[error("Gitea asks for a second factor to sign in `{user}`")]
    TwoFactor {
        /// The login.
        user: String,
    },
    /// No sign-in form on `/user/login`.
    #[error("Gitea's sign-in page `{url}` has no sign-in form")]
    NoSignInForm {
        /// The page.
        url: String,
    },
    /// The authorize URL points somewhere else than Gitea.
    #[error("the OAuth2 authorize URL `{url}` is not on Gitea at `{gitea}`")]
    ForeignHost {
        /// The URL, redacted.
        url: String,
        /// Gitea's base URL.
        gitea: String,
    },
    /// Gitea sent the authorize request to its sign-in page: the session is not signed in.
    #[error("Gitea asked for a sign-in again at the OAuth2 authorize step")]
    NotSignedIn,
    /// The client id is not registered in Gitea.
    #[error("Gitea does not know the OAuth2 client id `{client_id}`")]
    UnknownClient {
        /// The client id sent.
        client_id: String,
    },
    /// The redirect URI is not one the app registered.
    #[error("Gitea refused the OAuth2 redirect URI `{redirect_uri}`: it is not registered for the client{}", expected_suffix(.expected))]
    UnregisteredRedirectUri {
        /// What the authorize request carried.
        redirect_uri: String,
        /// What homelab registered, when known.
        expected: Option<String>,
    },
    /// Gitea redirected back with an OAuth2 error.
    #[error("Gitea answered the OAuth2 authorization with `{error}`{}", excerpt(.description))]
    Refused {
        /// RFC 6749 error code.
        error: String,
        /// Description.
        description: String,
    },
    /// The consent page has no grant form.
    #[error("Gitea's consent page `{url}` has no form posting to `/login/oauth/grant`")]
    NoConsentForm {
        /// The page, redacted.
        url: String,
    },
    /// The redirect came back with another state than was sent.
    #[error("Gitea returned the OAuth2 state `{got}` instead of `{sent}`")]
    StateMismatch {
        /// Sent.
        sent: String,
        /// Received.
        got: String,
    },
}

fn excerpt(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

fn expected_suffix(expected: &Option<String>) -> String {
    match expected {
        Some(e) => format!(" (homelab registers `{e}`)"),
        None => String::new(),
    }
}

impl Diagnostic for OAuthLoginError {
    fn hints(&self) -> Vec<String> {
        match self {
            OAuthLoginError::SignInRefused { .. } => vec![
                "the admin password in the lab state does not match Gitea's: `homelab up` resets it with the Gitea CLI".into(),
            ],
            OAuthLoginError::CsrfRejected { .. } => vec![
                "Gitea ≤ 1.25 ties `_csrf` to its `_csrf` cookie: a proxy that drops cookies between homelab and Gitea breaks the sign-in".into(),
            ],
            OAuthLoginError::TwoFactor { user } => vec![format!(
                "disable two-factor authentication for `{user}`; homelab signs in without a person"
            )],
            OAuthLoginError::ForeignHost { .. } => vec![
                "Drone's `DRONE_GITEA_SERVER` must be Gitea's public URL (`https://gitea.<domain>`)".into(),
            ],
            OAuthLoginError::UnknownClient { .. } => vec![
                "the CI server holds a client id Gitea no longer has: run `homelab up` again to recreate the OAuth app and restart the CI server".into(),
            ],
            OAuthLoginError::UnregisteredRedirectUri { .. } => vec![
                "Drone builds its redirect URI from `DRONE_SERVER_PROTO` and `DRONE_SERVER_HOST` (`<proto>://<host>/login`); they must match the lab's Drone URL".into(),
                "`homelab up` updates the OAuth app's redirect URI when the lab's domain changed".into(),
            ],
            OAuthLoginError::Refused { error, .. } if error == "access_denied" => vec![
                "the consent was denied; run `homelab up` again".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// A signed-in (or signing-in) Gitea web session. The reqwest client must keep cookies (Gitea's
/// session and `_csrf` cookies) and must not follow redirects.
pub struct GiteaWeb {
    http: reqwest::Client,
    base: Url,
}

impl GiteaWeb {
    /// A session against Gitea at `base`, through `http`.
    pub fn new(http: reqwest::Client, base: Url) -> GiteaWeb {
        GiteaWeb { http, base }
    }

    fn page(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    async fn get(
        &self,
        call: &str,
        url: Url,
    ) -> Result<(StatusCode, Option<String>, String), OAuthLoginError> {
        let shown = redact_url(url.as_str());
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OAuthLoginError::Unreachable {
                call: call.into(),
                url: shown.clone(),
                detail: error_chain(&e),
            })?;
        read(call, &shown, resp).await
    }

    async fn post(
        &self,
        call: &str,
        url: Url,
        form: &[(String, String)],
    ) -> Result<(StatusCode, Option<String>, String), OAuthLoginError> {
        let shown = redact_url(url.as_str());
        let resp = self.http.post(url).form(form).send().await.map_err(|e| {
            OAuthLoginError::Unreachable {
                call: call.into(),
                url: shown.clone(),
                detail: error_chain(&e),
            }
        })?;
        read(call, &shown, resp).await
    }

    /// Sign in with the sign-in form (`GET` then `POST /user/login`).
    pub async fn sign_in(&self, user: &str, password: &Secret) -> Result<SignIn, OAuthLoginError> {
        let call = "open Gitea's sign-in page";
        let url = self.page("/user/login");
        let (status, location, body) = self.get(call, url.clone()).await?;
        if status.is_redirection() {
            // Gitea sends a signed-in session away from the sign-in page.
            return Ok(SignIn::Already);
        }
        if status != StatusCode::OK {
            return Err(OAuthLoginError::Unexpected {
                call: call.into(),
                status: status.as_u16(),
                detail: location.unwrap_or_else(|| body_excerpt(body.as_bytes())),
            });
        }
        let form =
            find_form(&body, "/user/login").ok_or_else(|| OAuthLoginError::NoSignInForm {
                url: redact_url(url.as_str()),
            })?;
        let csrf = form.field("_csrf").map(str::to_string);
        let mut fields = Vec::new();
        if let Some(token) = &csrf {
            fields.push(("_csrf".to_string(), token.clone()));
        }
        fields.push(("user_name".to_string(), user.to_string()));
        fields.push(("password".to_string(), password.expose().to_string()));
        let target = self.same_host(&url, &form.action)?;
        let call = format!("sign in to Gitea as `{user}`");
        let (status, location, body) = self.post(&call, target, &fields).await?;
        match status {
            s if s.is_redirection() => {
                let to = location.unwrap_or_default();
                if to.contains("/user/two_factor") || to.contains("/user/webauthn") {
                    return Err(OAuthLoginError::TwoFactor { user: user.into() });
                }
                if to.contains("/user/login") {
                    return Err(OAuthLoginError::SignInRefused {
                        user: user.into(),
                        message: "Gitea sent the browser back to the sign-in page".into(),
                    });
                }
                Ok(if csrf.is_some() {
                    SignIn::WithCsrf
                } else {
                    SignIn::WithoutCsrf
                })
            }
            StatusCode::OK => Err(OAuthLoginError::SignInRefused {
                user: user.into(),
                message: flash_error(&body)
                    .unwrap_or_else(|| "the sign-in page came back without a reason".into()),
            }),
            StatusCode::BAD_REQUEST if body.to_ascii_lowercase().contains("csrf") => {
                Err(OAuthLoginError::CsrfRejected { user: user.into() })
            }
            s => Err(OAuthLoginError::Unexpected {
                call,
                status: s.as_u16(),
                detail: body_excerpt(body.as_bytes()),
            }),
        }
    }

    /// Follow an OAuth2 authorize URL with the signed-in session: either Gitea redirects at once
    /// (consent given before) or it shows its consent page, whose form is posted back with
    /// `granted=true`. `expected_redirect` (what homelab registered) only improves messages.
    pub async fn authorize(
        &self,
        authorize_url: &Url,
        expected_redirect: Option<&str>,
    ) -> Result<Authorized, OAuthLoginError> {
        if !same_origin(authorize_url, &self.base) {
            return Err(OAuthLoginError::ForeignHost {
                url: redact_url(authorize_url.as_str()),
                gitea: self.base.to_string(),
            });
        }
        let query = |k: &str| {
            authorize_url
                .query_pairs()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let sent_state = query("state");
        let call = "ask Gitea to authorize the OAuth2 client";
        let (status, location, body) = self.get(call, authorize_url.clone()).await?;
        let (redirect, consent) = match status {
            s if s.is_redirection() => (location.unwrap_or_default(), Consent::AlreadyGranted),
            StatusCode::OK => {
                let form = find_form(&body, "/login/oauth/grant").ok_or_else(|| {
                    OAuthLoginError::NoConsentForm {
                        url: redact_url(authorize_url.as_str()),
                    }
                })?;
                let mut fields: Vec<(String, String)> = form
                    .fields
                    .iter()
                    .filter(|(k, _)| k != "granted")
                    .cloned()
                    .collect();
                fields.push(("granted".into(), "true".into()));
                let target = self.same_host(authorize_url, &form.action)?;
                let call = "grant the OAuth2 client access on Gitea's consent page";
                let (status, location, body) = self.post(call, target, &fields).await?;
                if !status.is_redirection() {
                    return Err(OAuthLoginError::Unexpected {
                        call: call.into(),
                        status: status.as_u16(),
                        detail: body_excerpt(body.as_bytes()),
                    });
                }
                (location.unwrap_or_default(), Consent::GrantedNow)
            }
            StatusCode::BAD_REQUEST => {
                let description = grant_error_description(&body).unwrap_or_default();
                return Err(if description.contains("Unregistered Redirect URI") {
                    OAuthLoginError::UnregisteredRedirectUri {
                        redirect_uri: query("redirect_uri"),
                        expected: expected_redirect.map(str::to_string),
                    }
                } else if description.contains("Client ID not registered") {
                    OAuthLoginError::UnknownClient {
                        client_id: query("client_id"),
                    }
                } else {
                    OAuthLoginError::Unexpected {
                        call: call.into(),
                        status: 400,
                        detail: if description.is_empty() {
                            body_excerpt(body.as_bytes())
                        } else {
                            description
                        },
                    }
                });
            }
            s => {
                return Err(OAuthLoginError::Unexpected {
                    call: call.into(),
                    status: s.as_u16(),
                    detail: location.unwrap_or_else(|| body_excerpt(body.as_bytes())),
                });
            }
        };
        let callback = authorize_url
            .join(&redirect)
            .map_err(|e| OAuthLoginError::Unexpected {
                call: call.into(),
                status: status.as_u16(),
                detail: format!("redirect `{}` is not a URL: {e}", redact_url(&redirect)),
            })?;
        if same_origin(&callback, &self.base) && callback.path().starts_with("/user/login") {
            return Err(OAuthLoginError::NotSignedIn);
        }
        let param = |k: &str| {
            callback
                .query_pairs()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.into_owned())
        };
        if let Some(error) = param("error") {
            return Err(OAuthLoginError::Refused {
                error,
                description: param("error_description").unwrap_or_default(),
            });
        }
        if param("code").is_none_or(|c| c.is_empty()) {
            return Err(OAuthLoginError::Unexpected {
                call: call.into(),
                status: status.as_u16(),
                detail: format!(
                    "the redirect `{}` carries no authorization code",
                    redact_url(callback.as_str())
                ),
            });
        }
        let got = param("state").unwrap_or_default();
        if got != sent_state {
            return Err(OAuthLoginError::StateMismatch {
                sent: sent_state,
                got,
            });
        }
        Ok(Authorized { callback, consent })
    }

    /// Resolve a form action against the page and refuse to post anywhere but Gitea.
    fn same_host(&self, page: &Url, action: &str) -> Result<Url, OAuthLoginError> {
        let target = page.join(action).map_err(|e| OAuthLoginError::Unexpected {
            call: "read a Gitea form".into(),
            status: 200,
            detail: format!("form action `{action}` is not a URL: {e}"),
        })?;
        if !same_origin(&target, &self.base) {
            return Err(OAuthLoginError::ForeignHost {
                url: redact_url(target.as_str()),
                gitea: self.base.to_string(),
            });
        }
        Ok(target)
    }
}

async fn read(
    call: &str,
    shown: &str,
    resp: reqwest::Response,
) -> Result<(StatusCode, Option<String>, String), OAuthLoginError> {
    let status = resp.status();
    tracing::debug!("{shown} → {}", status.as_u16());
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .text()
        .await
        .map_err(|e| OAuthLoginError::Unreachable {
            call: call.into(),
            url: shown.into(),
            detail: error_chain(&e),
        })?;
    Ok((status, location, body))
}

/// Same scheme, host and port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The first `<form>` whose `action` contains `action_contains`, with its named inputs.
///
/// A small scanner rather than an HTML parser: Gitea's forms are server-rendered templates with
/// quoted attributes, and only `<form …>`, `<input …>` and `</form>` matter here.
pub fn find_form(html: &str, action_contains: &str) -> Option<HtmlForm> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<form").map(|i| from + i) {
        let tag_end = lower[start..].find('>').map(|i| start + i)?;
        let attrs = attributes(&html[start + 5..tag_end]);
        let action = attr(&attrs, "action").unwrap_or_default();
        let end = lower[tag_end..]
            .find("</form")
            .map(|i| tag_end + i)
            .unwrap_or(html.len());
        if action.contains(action_contains) {
            let mut fields = Vec::new();
            let inner = &html[tag_end..end];
            let inner_lower = &lower[tag_end..end];
            let mut pos = 0;
            while let Some(i) = inner_lower[pos..].find("<input").map(|i| pos + i) {
                let close = inner_lower[i..]
                    .find('>')
                    .map(|j| i + j)
                    .unwrap_or(inner.len());
                let a = attributes(&inner[i + 6..close]);
                if let Some(name) = attr(&a, "name") {
                    fields.push((name, attr(&a, "value").unwrap_or_default()));
                }
                pos = close;
            }
            return Some(HtmlForm { action, fields });
        }
        from = end;
    }
    None
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// `key="value"`, `key='value'`, `key=value` and bare `key`, values entity-decoded.
fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if key_start == i {
            i += 1;
            continue;
        }
        let key = s[key_start..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let ve = s[vs..].find(q as char).map(|j| vs + j).unwrap_or(s.len());
                i = (ve + 1).min(s.len());
                &s[vs..ve]
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                &s[vs..i]
            };
            out.push((key, decode_entities(value)));
        } else {
            out.push((key, String::new()));
        }
    }
    out
}

/// Decode the HTML character references Go's `html/template` emits.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(semi) = after.find(';').filter(|&j| j <= 10) else {
            out.push('&');
            rest = &after[1..];
            continue;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text of an element's content with tags removed and whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode_entities(&out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The message of Gitea's error flash (`flash-error`) on a re-rendered form.
pub fn flash_error(html: &str) -> Option<String> {
    let i = html.find("flash-error")?;
    let open_end = html[i..].find('>').map(|j| i + j + 1)?;
    let close = html[open_end..].find("</div>").map(|j| open_end + j)?;
    let text = text_of(&html[open_end..close]);
    (!text.is_empty()).then_some(text)
}

/// The description on Gitea's OAuth2 error page (`user/auth/grant_error`), which shows the
/// `AuthorizeError`'s description: scanned as the page text minus the layout.
pub fn grant_error_description(html: &str) -> Option<String> {
    for known in [
        "Unregistered Redirect URI",
        "Client ID not registered",
        "Only code response type is supported.",
        "PKCE is required for public clients",
    ] {
        if html.contains(known) {
            return Some(known.to_string());
        }
    }
    let body = html.find("<body").map(|i| &html[i..]).unwrap_or(html);
    let text = text_of(body);
    (!text.is_empty()).then(|| text.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNIN_125: &str = r#"<html><body>
<form class="ui form" action="/user/login" method="post">
  <input type="hidden" name="_csrf" value="abc&amp;123">
  <input id="user_name" type="text" name="user_name" value="" autofocus required>
  <input id="password" name="password" type="password" value="" autocomplete="current-password" required>
  <input name="remember" type="checkbox">
  <button class="ui primary button">Sign In</button>
</form></body></html>"#;

    const GRANT: &str = r#"<div class="ui attached segment">
<form method="post" action="/login/oauth/grant">
  <input type="hidden" name="_csrf" value="tok">
  <input type="hidden" name="client_id" value="c1">
  <input type="hidden" name="state" value="s&#43;1">
  <input type="hidden" name="scope" value="">
  <input type="hidden" name="nonce" value="">
  <input type="hidden" name="redirect_uri" value="https://drone.lab.test/login">
  <button type="submit" id="authorize-app" name="granted" value="true">Authorize Application</button>
  <button type="submit" name="granted" value="false">Cancel</button>
</form></div>"#;

    #[test]
    fn sign_in_form_with_csrf_token_is_found() {
        let f = find_form(SIGNIN_125, "/user/login").unwrap();
        assert_eq!(f.action, "/user/login");
        assert_eq!(f.field("_csrf"), Some("abc&123"));
        assert_eq!(f.field("user_name"), Some(""));
        assert_eq!(f.field("remember"), Some(""));
        assert!(find_form(SIGNIN_125, "/login/oauth/grant").is_none());
        let without = SIGNIN_125.replace(
            r#"<input type="hidden" name="_csrf" value="abc&amp;123">"#,
            "",
        );
        assert_eq!(
            find_form(&without, "/user/login").unwrap().field("_csrf"),
            None
        );
    }

    #[test]
    fn grant_form_fields_are_decoded_in_order() {
        let f = find_form(GRANT, "/login/oauth/grant").unwrap();
        let names: Vec<&str> = f.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "_csrf",
                "client_id",
                "state",
                "scope",
                "nonce",
                "redirect_uri"
            ],
            "buttons are not inputs"
        );
        assert_eq!(f.field("state"), Some("s+1"));
    }

    #[test]
    fn second_form_is_found_after_the_first() {
        let html = format!("<form action=\"/search\"><input name=\"q\"></form>{GRANT}");
        let f = find_form(&html, "/login/oauth/grant").unwrap();
        assert_eq!(f.field("client_id"), Some("c1"));
    }

    #[test]
    fn flash_and_grant_error_texts_are_extracted() {
        let page = r#"<div class="ui negative message flash-message flash-error">
  <p>Username or password is incorrect.</p>
</div>"#;
        assert_eq!(
            flash_error(page).as_deref(),
            Some("Username or password is incorrect.")
        );
        assert_eq!(flash_error("<p>fine</p>"), None);
        assert_eq!(
            grant_error_description(
                "<body><p>invalid_request</p><p>Unregistered Redirect URI</p></body>"
            )
            .as_deref(),
            Some("Unregistered Redirect URI")
        );
        assert_eq!(
            grant_error_description("<html><body><h2>Oops</h2> <p>odd &amp; new</p></body></html>")
                .as_deref(),
            Some("Oops odd & new")
        );
    }

    #[test]
    fn entities_decode_and_unknown_ones_stay() {
        assert_eq!(
            decode_entities("a&amp;b&lt;&#34;&#x27;&nbsp;"),
            "a&b<\"'&nbsp;"
        );
        assert_eq!(decode_entities("R&D"), "R&D");
    }
}

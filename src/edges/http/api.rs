//! The one core of the lab's JSON API clients (Gitea's, Drone's): build a URL from path segments,
//! send a call with its credentials, and turn the answer into a value or a [`Failure`] that names
//! the call.
//!
//! Place in the data flow: under `gitea::GiteaClient` and `ci::drone::DroneClient`, which add
//! their routes and name their server in the errors they make from a [`Failure`]. Architecture
//! invariant: credentials travel only in the `Authorization` header (marked sensitive), request
//! and response bodies are never logged, and every URL in an error or a log line is redacted.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::{answer_message, error_chain};
use crate::edges::redact::{Secret, redact_url};

/// Why an API call failed, before the client names its server (each client turns this into its
/// own error type, whose messages say "Gitea" or "Drone").
#[derive(Debug)]
pub enum Failure {
    /// No answer (DNS, TCP, TLS).
    Unreachable {
        /// The call.
        call: String,
        /// The URL, redacted.
        url: String,
        /// The transport error chain, redacted.
        detail: String,
    },
    /// An answer with an unexpected status.
    Status {
        /// The call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// The server's `message`, or the start of the body.
        message: String,
    },
    /// An answer that is not the JSON the call returns.
    Decode {
        /// The call.
        call: String,
        /// The parser message.
        message: String,
    },
}

/// How one request authenticates.
pub enum Auth<'a> {
    /// Anonymous.
    None,
    /// HTTP basic auth.
    Basic {
        /// Login.
        user: &'a str,
        /// Password (or a token used as one).
        password: &'a Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(&'a Secret),
    /// A ready `Authorization` value (see [`authorization`]).
    Header(HeaderValue),
}

/// An `Authorization` value `<scheme> <token>`, marked sensitive; `fallback` when the token
/// cannot be a header value.
pub fn authorization(scheme: &str, token: &Secret, fallback: &'static str) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static(fallback));
    value.set_sensitive(true);
    value
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
    /// The `WWW-Authenticate` header, when there is one.
    pub challenge: Option<String>,
}

/// A reqwest client bound to one base URL.
#[derive(Clone)]
pub struct ApiCore {
    http: reqwest::Client,
    base: Url,
}

impl ApiCore {
    /// A core sending through `http` to paths under `base`.
    pub fn new(http: reqwest::Client, base: Url) -> ApiCore {
        ApiCore { http, base }
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL with `segments` appended (each percent-encoded) and `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Send one call and read its answer; only a transport error fails here.
    pub async fn send<E: From<Failure>>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, E> {
        let body = body.map(|b| (b, "application/json"));
        self.send_typed(call, method, url, auth, body).await
    }

    /// [`ApiCore::send`] with a body of any media type (a registry blob or manifest).
    pub async fn send_typed<E: From<Failure>>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Answer, E> {
        let shown = redact_url(url.as_str());
        let mut req = self.http.request(method.clone(), url);
        req = match auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
            Auth::Header(value) => req.header(AUTHORIZATION, value),
        };
        if let Some((body, media_type)) = body {
            req = req.header(CONTENT_TYPE, media_type).body(body);
        }
        let unreachable = |e: reqwest::Error| Failure::Unreachable {
            call: call.to_string(),
            url: shown.clone(),
            detail: redact_url(&error_chain(&e)),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        tracing::debug!("{method} {shown} → {}", status.as_u16());
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(unreachable)?.to_vec();
        Ok(Answer {
            status,
            body,
            challenge,
        })
    }

    /// Send and decode a 2xx answer; any other status is an error.
    pub async fn json<T: DeserializeOwned, E: From<Failure>>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<T, E> {
        let answer: Answer = self.send::<E>(call, method, url, auth, body).await?;
        if !answer.status.is_success() {
            return Err(fail(call, answer.status, &answer.body).into());
        }
        decode(call, &answer.body)
    }

    /// `GET` one resource: `None` on 404, decoded on 2xx, an error otherwise.
    pub async fn get_optional<T: DeserializeOwned, E: From<Failure>>(
        &self,
        call: &str,
        url: Url,
        auth: Auth<'_>,
    ) -> Result<Option<T>, E> {
        let answer: Answer = self.send::<E>(call, Method::GET, url, auth, None).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => decode(call, &answer.body).map(Some),
            s => Err(fail(call, s, &answer.body).into()),
        }
    }
}

/// The error for an answer with an unexpected status.
pub fn fail(call: &str, status: StatusCode, body: &[u8]) -> Failure {
    Failure::Status {
        call: call.to_string(),
        status: status.as_u16(),
        message: answer_message(body),
    }
}

/// `Ok` for a 2xx answer (or one of `also`), the status error otherwise.
pub fn success<E: From<Failure>>(
    call: &str,
    answer: &Answer,
    also: &[StatusCode],
) -> Result<(), E> {
    if answer.status.is_success() || also.contains(&answer.status) {
        Ok(())
    } else {
        Err(fail(call, answer.status, &answer.body).into())
    }
}

/// Decode a JSON answer.
pub fn decode<T: DeserializeOwned, E: From<Failure>>(call: &str, body: &[u8]) -> Result<T, E> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::Decode {
            call: call.to_string(),
            message: e.to_string(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_the_base_path() {
        let base = Url::parse("https://lab.example.test/sub").unwrap();
        let http = super::super::client(&[], None, std::time::Duration::from_secs(1)).unwrap();
        let core = ApiCore::new(http, base);
        assert_eq!(
            core.url(&["api", "a b", ""], &[("q", "x&y")]).as_str(),
            "https://lab.example.test/sub/api/a%20b/?q=x%26y"
        );
    }

    #[test]
    fn status_failures_carry_the_servers_message() {
        let Failure::Status {
            status, message, ..
        } = fail(
            "read it",
            StatusCode::FORBIDDEN,
            br#"{"message":"token lacks scope"}"#,
        )
        else {
            panic!("a status failure");
        };
        assert_eq!((status, message.as_str()), (403, "token lacks scope"));
        let e: Result<u8, Failure> = decode("read it", b"nope");
        assert!(matches!(e, Err(Failure::Decode { .. })));
    }
}

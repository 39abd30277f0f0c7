//! The HTTP plumbing every CI client shares: one way to build a reqwest client that trusts the
//! lab CA and nothing else, and one way to describe a transport error without leaking a URL's
//! credentials.
//!
//! Place in the data flow: under `ci::drone`'s client, `ci::oauth_login` and verify's page probe.
//! Architecture invariant: no client built here follows redirects (a redirect would carry
//! credentials or cookies to wherever a server points, and the login flow must see each hop) or
//! trusts the system roots (lab URLs are signed by the lab CA only).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use crate::redact::redact_url;

/// Where a lab service answers over HTTPS and how to reach it.
#[derive(Clone, Debug)]
pub struct WebEndpoint {
    /// Base URL, e.g. `https://drone.10.0.0.5.sslip.io` (no path).
    pub base_url: String,
    /// PEM of the lab CA. With `None` no HTTPS server is trusted.
    pub ca_pem: Option<String>,
    /// Connect here instead of resolving the host (routers that drop private-IP DNS answers;
    /// tests on 127.0.0.1). The URL's port still wins over this address's port.
    pub resolve: Option<SocketAddr>,
}

impl From<&crate::gitea::Endpoint> for WebEndpoint {
    fn from(e: &crate::gitea::Endpoint) -> WebEndpoint {
        WebEndpoint {
            base_url: e.base_url.clone(),
            ca_pem: e.ca_pem.clone(),
            resolve: e.resolve,
        }
    }
}

impl WebEndpoint {
    /// The parsed base URL without a trailing slash; credentials in it are refused.
    pub fn url(&self) -> Result<Url, String> {
        let mut url = Url::parse(self.base_url.trim_end_matches('/'))
            .map_err(|e| format!("`{}` is not a URL: {e}", redact_url(&self.base_url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials do not belong in the URL".into());
        }
        if url.path() == "/" {
            url.set_path("");
        }
        Ok(url)
    }
}

/// A client for `endpoints` (all share the CA of the first): lab CA only, no redirects, bounded
/// connect and request times. `cookies`, when given, keeps cookies across calls.
pub fn client(
    endpoints: &[&WebEndpoint],
    cookies: Option<std::sync::Arc<reqwest::cookie::Jar>>,
    request_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let ca = endpoints.iter().find_map(|e| e.ca_pem.as_deref());
    let tls = crate::gitea::rustls_config(ca)?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(jar) = cookies {
        builder = builder.cookie_provider(jar);
    }
    for e in endpoints {
        let url = e.url()?;
        if let (Some(addr), Some(host)) = (e.resolve, url.host_str()) {
            builder = builder.resolve(host, addr);
        }
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// An error and its causes on one line, URLs redacted.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    redact_url(&out)
}

/// The first 200 characters of a body, for error messages.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    redact_url(&short)
}

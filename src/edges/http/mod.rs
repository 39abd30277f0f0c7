//! The HTTPS edge every lab client shares (Gitea, Drone, the OAuth login, verify's page probe):
//! one endpoint type, one way to build a reqwest client that trusts the lab CA and nothing else,
//! and one way to describe a transport error without leaking a URL's credentials.
//!
//! The JSON API clients (Gitea's, Drone's) share one core, [`api`]; the plain-HTTP servers
//! (`prepare --serve`, the sync engine's endpoints) share one accept loop, [`serve`].
//!
//! Place in the data flow: under `gitea` (with its web login), `ci::drone` and `verify`.
//! Architecture invariant: no client built here follows redirects (a redirect would carry
//! credentials or cookies to wherever a server points, and the login flow must see each hop) or
//! trusts the system roots (lab URLs are signed by the lab CA only).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use crate::edges::redact::redact_url;

pub mod api;
pub mod serve;

/// Where a lab service answers over HTTPS and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL, e.g. `https://drone.10.0.0.5.sslip.io` (no path).
    pub base_url: String,
    /// PEM of the lab CA. With `None` no HTTPS server is trusted.
    pub ca_pem: Option<String>,
    /// Connect here instead of resolving the host (routers that drop private-IP DNS answers;
    /// tests on 127.0.0.1). The URL's port still wins over this address's port.
    pub resolve: Option<SocketAddr>,
}

impl Endpoint {
    /// The host name of the base URL.
    pub fn host(&self) -> Option<String> {
        Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    }

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

/// How long to keep calling a server that does not answer yet, and how often: the first pause,
/// doubled after each try up to `max_pause`, until `limit` has passed. HTTP has no watch, so a
/// bounded retry is the wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patience {
    /// Give up once this much time has passed.
    pub limit: Duration,
    /// The first pause between two tries.
    pub first_pause: Duration,
    /// The longest pause between two tries.
    pub max_pause: Duration,
}

impl Default for Patience {
    /// Five minutes: the ingress serves a lab name over TLS only once cert-manager has issued
    /// its certificate, which takes seconds with the lab CA but longer on a slow VM.
    fn default() -> Self {
        Patience {
            limit: Duration::from_secs(300),
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(5),
        }
    }
}

impl Patience {
    /// The pause after try number `attempt` (1-based).
    pub fn pause(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.first_pause
            .saturating_mul(factor)
            .min(self.max_pause.max(self.first_pause))
    }
}

/// The rustls configuration that trusts exactly `ca_pem` (nothing when `None`).
pub fn rustls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the lab CA is not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the lab CA cannot be used as a trust root: {e}"))?;
            any = true;
        }
        if !any {
            return Err("the lab CA PEM holds no certificate".into());
        }
    }
    // The provider is named here rather than taken from the process default, so the client works
    // the same in tests and in the binary.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A client for `endpoints` (all share the CA of the first): lab CA only, no redirects, bounded
/// connect and request times. `cookies`, when given, keeps cookies across calls.
pub fn client(
    endpoints: &[&Endpoint],
    cookies: Option<std::sync::Arc<reqwest::cookie::Jar>>,
    request_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let ca = endpoints.iter().find_map(|e| e.ca_pem.as_deref());
    let tls = rustls_config(ca)?;
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

/// `: detail` to follow an error message, or nothing when there is no detail.
pub fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// What an API's error answer says: the `message` of a `{"message": …}` body (Gitea's and
/// Drone's shape), else the start of the body; URLs redacted.
pub fn answer_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .filter(|m| !m.is_empty());
    match message {
        Some(m) => redact_url(&m),
        None => body_excerpt(body),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_doubles_its_pause_up_to_the_maximum() {
        let p = Patience {
            limit: Duration::from_secs(60),
            first_pause: Duration::from_millis(100),
            max_pause: Duration::from_millis(350),
        };
        let pauses: Vec<u128> = (1..=5).map(|a| p.pause(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350, 350]);
        assert_eq!(p.pause(u32::MAX).as_millis(), 350);
    }
}

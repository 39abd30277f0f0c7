//! The Kubernetes edge: building a client from a kubeconfig (path + optional context), and the
//! retry rule every call goes through.
//!
//! Data flow: provider → `Cluster { kubeconfig }` → [`connect`] → `kube::Client` → apply, deploy,
//! status, the sync engine.
//!
//! Architecture invariant: one client per run, never throttled to a fixed rate (client-go's
//! 5 requests/s is what makes peer tools slow); concurrency is bounded instead (a tower
//! concurrency limit under the client), and transient failures are retried with backoff:
//! 429/503/504 by kube-rs's server-aware layer (which honours `Retry-After`), connection resets,
//! 500/502 and anything that layer gave up on by [`retry`]. A write an admission webhook could
//! not be asked about yet ([`webhook_unreachable`]) is a wait, not a failure: callers that can
//! wait give [`retry_until`] a deadline. Every request says who sends it ([`USER_AGENT`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::edges::error::Diagnostic;

/// The `User-Agent` of every request homelab sends to an API server: its audit log records
/// the client by it (kube-rs sends none by default).
pub const USER_AGENT: &str = concat!("homelab/", env!("CARGO_PKG_VERSION"));

/// Which cluster to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeTarget {
    /// The kubeconfig file; `None`: the user's (`KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// A context in it; the file's current context when `None`.
    pub context: Option<String>,
}

impl KubeTarget {
    /// The file's current context.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> KubeTarget {
        KubeTarget {
            kubeconfig: Some(kubeconfig.into()),
            context: None,
        }
    }

    /// A named context.
    pub fn with_context(mut self, context: Option<String>) -> KubeTarget {
        self.context = context;
        self
    }
}

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Requests in flight at once (a bound, not a rate).
    pub max_in_flight: usize,
    /// Timeout to connect to the API server.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_in_flight: 64,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig cannot be read or parsed.
    #[error("read kubeconfig `{path}`")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The context is missing or its cluster/user is unusable.
    #[error("use context `{context}` of kubeconfig `{path}`")]
    Context {
        /// The file.
        path: PathBuf,
        /// The context (or "current").
        context: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Not running in a pod, or its service account is not mounted.
    #[error("read the in-cluster service account configuration")]
    InCluster {
        /// Why.
        #[source]
        source: kube::config::InClusterError,
    },
    /// The client stack could not be built (TLS material, proxy).
    #[error("build a Kubernetes client for `{server}`")]
    Client {
        /// API server URL (credentials redacted).
        server: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl Diagnostic for KubeError {
    fn hints(&self) -> Vec<String> {
        match self {
            KubeError::Kubeconfig { path, .. } => vec![format!(
                "check that `{}` exists and is a kubeconfig (`kubectl --kubeconfig {} config view`)",
                path.display(),
                path.display()
            )],
            KubeError::Context { path, .. } => vec![format!(
                "list the contexts with `kubectl --kubeconfig {} config get-contexts`",
                path.display()
            )],
            KubeError::InCluster { .. } => vec![
                "`--in-cluster` is for the engine's Deployment; from a laptop use `homelab sync --watch`".into(),
            ],
            KubeError::Client { .. } => Vec::new(),
        }
    }
}

/// Build the client for `target`.
pub async fn connect(target: &KubeTarget, opts: &ClientOptions) -> Result<kube::Client, KubeError> {
    // kube-rs's rustls stack needs a process-wide crypto provider; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (path, read) = match &target.kubeconfig {
        Some(p) => (p.clone(), kube::config::Kubeconfig::read_from(p)),
        None => (
            std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("~/.kube/config")),
            kube::config::Kubeconfig::read(),
        ),
    };
    let kubeconfig = read.map_err(|source| KubeError::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let names_proxy = kubeconfig_names_proxy(&kubeconfig, target.context.as_deref());
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| KubeError::Context {
            path: path.clone(),
            context: target.context.clone().unwrap_or_else(|| "current".into()),
            source,
        })?;
    // kube-client 5.0.0 (`config/file_loader.rs`, `proxy_url`) falls back to `HTTPS_PROXY` /
    // `https_proxy` when the kubeconfig names no `proxy-url`, and a client with a proxy needs
    // kube's `http-proxy` feature, which this build leaves out: with a proxy for the internet
    // in the environment every client failed to build. The cluster is reached directly (the
    // lab's API server is on the VMs' own network), unless the kubeconfig itself names a proxy.
    if !names_proxy {
        config.proxy_url = None;
    }
    build(config, opts)
}

/// Whether the cluster of `context` (else the current one) in `kubeconfig` names a `proxy-url`.
fn kubeconfig_names_proxy(kubeconfig: &kube::config::Kubeconfig, context: Option<&str>) -> bool {
    let Some(context) = context.or(kubeconfig.current_context.as_deref()) else {
        return false;
    };
    let cluster = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    kubeconfig
        .clusters
        .iter()
        .filter(|c| Some(&c.name) == cluster.as_ref())
        .filter_map(|c| c.cluster.as_ref())
        .any(|c| c.proxy_url.as_deref().is_some_and(|p| !p.is_empty()))
}

/// The client for a resolved configuration: connect timeout, no read timeout, our user agent,
/// and the concurrency bound.
fn build(mut config: kube::Config, opts: &ClientOptions) -> Result<kube::Client, KubeError> {
    config.connect_timeout = Some(opts.connect_timeout);
    // Watches are long requests; a read timeout would cut them. Waits are bounded by deadlines.
    config.read_timeout = None;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let server = crate::edges::redact::redact_url(&config.cluster_url.to_string());
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|source| KubeError::Client { server, source })?;
    let limit = tower::limit::ConcurrencyLimitLayer::new(opts.max_in_flight.max(1));
    Ok(builder.with_layer(&limit).build())
}

/// Build the client from the pod's service account (`homelab sync --in-cluster`), with the same
/// concurrency bound and timeouts as [`connect`].
pub async fn connect_in_cluster(opts: &ClientOptions) -> Result<kube::Client, KubeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::incluster().map_err(|source| KubeError::InCluster { source })?;
    build(config, opts)
}

/// Whether an error is worth another try: connection-level failures, 429 and 5xx (except 501).
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 429 || (status.code >= 500 && status.code != 501)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Backoff for [`retry`]: attempts and delays.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Attempts in total (first try included).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub first: Duration,
    /// Cap on one delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 6,
            first: Duration::from_millis(50),
            max: Duration::from_secs(3),
        }
    }
}

impl Backoff {
    /// Delay before attempt `n` (1-based, n ≥ 2), with ±25 % jitter so parallel callers spread.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self
            .first
            .saturating_mul(1 << (n.saturating_sub(2)).min(16));
        let base = base.min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = (nanos % 500) as f64 / 1000.0 - 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

/// Run `op` until it succeeds, fails with a non-transient error, or runs out of attempts.
pub async fn retry<T, F, Fut>(backoff: &Backoff, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < backoff.attempts && is_transient(&e) => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient Kubernetes API error; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Longest pause between two tries of a write an admission webhook could not be asked about.
const WEBHOOK_PAUSE_MAX: Duration = Duration::from_secs(2);

/// An admission webhook the API server could not call, so it refused the write: kube-apiserver
/// answers `500 InternalError` "Internal error occurred: failed calling webhook "<name>": failed
/// to call webhook: Post "<url>": <why>" when a webhook with `failurePolicy: Fail` cannot be
/// reached (kubernetes `staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/validating/dispatcher.go`
/// and `.../mutating/dispatcher.go`: `ErrCallingWebhook` → `apierrors.NewInternalError`;
/// `staging/src/k8s.io/apiserver/pkg/util/webhook/error.go` for the text). It is a failure to
/// talk to the webhook — its pods not ready ("connection refused", "no endpoints available for
/// service"), its CA not injected yet ("x509: certificate signed by unknown authority"), a
/// timeout — never the webhook's verdict on the object, which comes as "admission webhook …
/// denied the request".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUnreachable {
    /// The webhook (`webhook.cert-manager.io`).
    pub webhook: String,
    /// The Service serving it (namespace, name), when its URL is a Service's
    /// (`https://<name>.<namespace>.svc:<port>/…`).
    pub service: Option<(String, String)>,
    /// Why the call failed, as the API server says it.
    pub why: String,
}

impl WebhookUnreachable {
    /// Read it from an API error message; `None` when the message is not about calling a webhook.
    pub fn from_message(message: &str) -> Option<WebhookUnreachable> {
        let rest = &message[message.find("failed calling webhook \"")? + 24..];
        let (webhook, rest) = rest.split_once('"')?;
        // Answered, but not understood: the webhook is up; waiting will not help.
        if rest.contains("received invalid webhook response")
            || rest.contains("could not create admission objects")
        {
            return None;
        }
        let (url, why) = match rest.find("Post \"") {
            Some(i) => {
                let after = &rest[i + 6..];
                let (url, why) = after.split_once('"').unwrap_or((after, ""));
                (Some(url), why.trim_start_matches(':').trim())
            }
            None => (None, rest.trim_start_matches(':').trim()),
        };
        let service = url.and_then(|u| {
            let host = u.split("://").nth(1)?.split(['/', ':']).next()?;
            let mut labels = host.split('.');
            let (name, ns, svc) = (labels.next()?, labels.next()?, labels.next()?);
            (svc == "svc").then(|| (ns.to_string(), name.to_string()))
        });
        Some(WebhookUnreachable {
            webhook: webhook.to_string(),
            service,
            why: why.to_string(),
        })
    }

    /// One line for progress: what is waited for, and why.
    pub fn waiting_text(&self) -> String {
        let served = match &self.service {
            Some((ns, name)) => format!(" (Service `{name}` in `{ns}`)"),
            None => String::new(),
        };
        format!(
            "waiting for the admission webhook `{}`{served} to answer: {}",
            self.webhook, self.why
        )
    }

    /// What to look at when it never answered.
    pub fn advice(&self) -> String {
        let (ns, name) = self
            .service
            .clone()
            .unwrap_or_else(|| ("<namespace>".into(), "<service>".into()));
        let pods = format!(
            "its pods must be Ready and its Service `{name}` must have endpoints (`kubectl -n {ns} get pods,endpointslices`)"
        );
        let ca = "its webhook configuration must carry the CA that signed its serving certificate (`kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o yaml`, field `caBundle`; for cert-manager, its cainjector injects it: `kubectl -n cert-manager logs -l app.kubernetes.io/component=cainjector`)";
        let lower = self.why.to_lowercase();
        if lower.contains("x509") || lower.contains("certificate") {
            ca.to_string()
        } else if lower.contains("refused")
            || lower.contains("no endpoints")
            || lower.contains("not found")
        {
            pods
        } else {
            format!("{pods}, and {ca}")
        }
    }
}

/// The admission webhook that could not be called, when that is why `err` refused a write.
pub fn webhook_unreachable(err: &kube::Error) -> Option<WebhookUnreachable> {
    match err {
        kube::Error::Api(s) if s.code == 500 && s.reason == "InternalError" => {
            WebhookUnreachable::from_message(&s.message)
        }
        _ => None,
    }
}

/// Like [`retry`], and more: while an admission webhook cannot be called yet, try again until
/// `deadline` (pausing with a doubling backoff of at most 2 s, and telling `waiting` what is
/// waited for before each pause). Every other error is handled as [`retry`] does.
pub async fn retry_until<T, F, Fut>(
    backoff: &Backoff,
    deadline: tokio::time::Instant,
    mut waiting: impl FnMut(&WebhookUnreachable),
    mut op: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    let mut pause = backoff.first;
    loop {
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if let Some(w) = webhook_unreachable(&err) {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(err);
            }
            tracing::debug!(webhook = %w.webhook, why = %w.why, "admission webhook not reachable yet; retrying");
            waiting(&w);
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(WEBHOOK_PAUSE_MAX);
            continue;
        }
        if attempt < backoff.attempts && is_transient(&err) {
            attempt += 1;
            tracing::debug!(error = %err, attempt, "transient Kubernetes API error; retrying");
            tokio::time::sleep(backoff.delay(attempt)).await;
            continue;
        }
        return Err(err);
    }
}

/// A short text for a kube error: the API's own message when there is one.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => {
            if s.message.is_empty() {
                format!("{} ({})", s.reason, s.code)
            } else {
                s.message.clone()
            }
        }
        other => other.to_string(),
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Path shown in messages for a kubeconfig.
pub fn display_path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy for the internet in the environment is not the cluster's: only a kubeconfig's
    /// own `proxy-url` counts.
    #[test]
    fn only_the_kubeconfig_names_the_cluster_proxy() {
        let text = |proxy: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.2:16443\n{proxy}contexts:\n- name: a\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"
            )
        };
        let plain = kube::config::Kubeconfig::from_yaml(&text("")).unwrap();
        assert!(!kubeconfig_names_proxy(&plain, None));
        let named =
            kube::config::Kubeconfig::from_yaml(&text("    proxy-url: http://proxy:3128\n"))
                .unwrap();
        assert!(kubeconfig_names_proxy(&named, None));
        assert!(kubeconfig_names_proxy(&named, Some("a")));
        assert!(!kubeconfig_names_proxy(&named, Some("other")));
    }

    /// The texts kube-apiserver 1.36 sends when cert-manager's webhook cannot be called yet
    /// (`Post "<url>": <dial or TLS error>`), and one it sends when a webhook answered.
    #[test]
    fn a_webhook_that_cannot_be_called_is_told_from_one_that_refused() {
        let x509 = r#"Internal error occurred: failed calling webhook "webhook.cert-manager.io": failed to call webhook: Post "https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s": tls: failed to verify certificate: x509: certificate signed by unknown authority"#;
        let w = WebhookUnreachable::from_message(x509).unwrap();
        assert_eq!(w.webhook, "webhook.cert-manager.io");
        assert_eq!(
            w.service,
            Some(("cert-manager".into(), "cert-manager-webhook".into()))
        );
        assert_eq!(
            w.why,
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        assert!(w.advice().contains("caBundle"), "{}", w.advice());
        let refused = r#"Internal error occurred: failed calling webhook "webhook.cert-manager.io": failed to call webhook: Post "https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s": dial tcp 10.152.183.12:443: connect: connection refused"#;
        let w = WebhookUnreachable::from_message(refused).unwrap();
        assert_eq!(
            w.why,
            "dial tcp 10.152.183.12:443: connect: connection refused"
        );
        assert!(
            w.advice().contains("get pods,endpointslices"),
            "{}",
            w.advice()
        );
        let denied = r#"admission webhook "webhook.cert-manager.io" denied the request: spec.ca.secretName: Required value"#;
        assert_eq!(WebhookUnreachable::from_message(denied), None);
        let garbled = r#"Internal error occurred: failed calling webhook "w.example.com": received invalid webhook response: expected response.uid="1", got """#;
        assert_eq!(WebhookUnreachable::from_message(garbled), None);
    }
}

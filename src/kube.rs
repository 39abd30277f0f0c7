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
//! 500/502 and anything that layer gave up on by [`retry`]. Every request says who sends it
//! ([`USER_AGENT`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Diagnostic;

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
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| KubeError::Context {
            path: path.clone(),
            context: target.context.clone().unwrap_or_else(|| "current".into()),
            source,
        })?;
    build(config, opts)
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
    let server = crate::redact::redact_url(&config.cluster_url.to_string());
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

//! Test git servers: a local repository to commit manifests into, served over `file://` and over
//! smart HTTP by real `git http-backend` (CGI) behind a tiny hyper server that can demand HTTP
//! basic credentials and records the requests it saw (the git runner, TLS and the log are the
//! shared HTTP kit's).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::http_kit::git_backend::{self, git};
use super::http_kit::log::RequestLog;
use super::http_kit::tls;

/// A repository with a work tree we commit into.
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    /// A new repository on branch `main`.
    pub fn new(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "--quiet", "--initial-branch=main"]);
        // Let smart HTTP clients fetch any commit by SHA, as Gitea allows.
        git(dir, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        git(dir, &["config", "http.receivepack", "false"]);
        Repo {
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        let p = self.dir.join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Commit everything; returns the commit SHA.
    pub fn commit(&self, message: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        git(
            &self.dir,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn tag(&self, name: &str) {
        git(&self.dir, &["tag", name]);
    }

    pub fn branch(&self, name: &str) {
        git(&self.dir, &["branch", "--force", name]);
    }
}

/// What the HTTP server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

/// Smart HTTP in front of `git http-backend`, serving every repository under `root` at
/// `http://127.0.0.1:<port>/<name>`.
pub struct GitHttp {
    pub base: String,
    pub seen: Arc<RequestLog<Seen>>,
    shutdown: Arc<tokio::sync::Notify>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.shutdown.notify_waiters();
    }
}

impl GitHttp {
    /// Serve `root`; when `basic` is set, every request must carry exactly that
    /// `Authorization: Basic …` value (else 401 with a challenge, as Gitea answers).
    pub async fn start(root: &Path, basic: Option<String>) -> GitHttp {
        Self::serve(root, basic, None).await
    }

    /// The same over HTTPS with this certificate chain and key (PEM), at
    /// `https://localhost:<port>`.
    pub async fn start_tls(
        root: &Path,
        basic: Option<String>,
        cert_pem: &str,
        key_pem: &str,
    ) -> GitHttp {
        let mut s = Self::serve(root, basic, Some(tls::acceptor(cert_pem, key_pem))).await;
        s.base = s.base.replace("http://127.0.0.1", "https://localhost");
        s
    }

    async fn serve(
        root: &Path,
        basic: Option<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> GitHttp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<RequestLog<Seen>> = Arc::default();
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let root = root.to_path_buf();
        let s2 = seen.clone();
        // A client that does not trust the certificate fails the handshake.
        tls::accept_loop(listener, tls, shutdown.clone(), move |conn| {
            let (root, seen, basic) = (root.clone(), s2.clone(), basic.clone());
            async move {
                let svc = service_fn(move |req| {
                    let (root, seen, basic) = (root.clone(), seen.clone(), basic.clone());
                    async move { Ok::<_, std::convert::Infallible>(cgi(&root, &seen, basic, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(conn.io), svc)
                    .await;
            }
        });
        GitHttp {
            base: format!("http://127.0.0.1:{}", addr.port()),
            seen,
            shutdown,
        }
    }
}

async fn cgi(
    root: &Path,
    seen: &RequestLog<Seen>,
    basic: Option<String>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.push(Seen {
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    if let Some(want) = &basic
        && authorization.as_deref() != Some(want.as_str())
    {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Basic realm=\"test\"")
            .body(Full::new(Bytes::from_static(b"unauthorized")))
            .unwrap();
    }
    let method = req.method().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    git_backend::serve(root, &method, &path, &query, &headers, &body, None)
        .await
        .map(|b| Full::new(Bytes::from(b)))
}

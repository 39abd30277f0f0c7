//! Test git servers: a local repository to commit manifests into, served over `file://` and over
//! smart HTTP by real `git http-backend` (CGI) behind a tiny hyper server that can demand HTTP
//! basic credentials and records the requests it saw.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A repository with a work tree we commit into.
pub struct Repo {
    pub dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
    pub seen: Arc<Mutex<Vec<Seen>>>,
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
        use tokio_rustls::rustls;
        let certs = vec![rustls::pki_types::CertificateDer::from(pem_body(cert_pem))];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(pem_body(key_pem)),
        );
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let mut s = Self::serve(
            root,
            basic,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
        .await;
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
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let root = root.to_path_buf();
        let (s2, stop) = (seen.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = stop.notified() => return,
                };
                let (root, seen, basic) = (root.clone(), s2.clone(), basic.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (root, seen, basic) = (root.clone(), seen.clone(), basic.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(cgi(&root, &seen, basic, req).await)
                        }
                    });
                    match tls {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            // A client that does not trust the certificate fails the handshake.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        GitHttp {
            base: format!("http://127.0.0.1:{}", addr.port()),
            seen,
            shutdown,
        }
    }
}

/// The DER bytes of the first PEM block.
fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
}

async fn cgi(
    root: &Path,
    seen: &Mutex<Vec<Seen>>,
    basic: Option<String>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    seen.lock().unwrap().push(Seen {
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
    let content_type = header("content-type").unwrap_or_default();
    let protocol = header("git-protocol");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &path)
            .env("QUERY_STRING", &query)
            .env("REQUEST_METHOD", &method)
            .env("CONTENT_TYPE", &content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = &protocol {
            cmd.env("GIT_PROTOCOL", p);
        }
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&body).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        // CGI: headers, blank line, body.
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
            .unwrap_or((raw.len(), 0));
        let head = String::from_utf8_lossy(&raw[..split.0]).to_string();
        let body = raw[(split.0 + split.1).min(raw.len())..].to_vec();
        let mut resp = Response::builder();
        let mut status = 200;
        for line in head.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("status") {
                    status = v.trim()[..3].parse().unwrap_or(500);
                } else {
                    resp = resp.header(k.trim(), v.trim());
                }
            }
        }
        resp.status(status)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    })
    .await
    .unwrap()
}

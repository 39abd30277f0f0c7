//! `homelab prepare --serve`: the instructor's cache, read-only over plain HTTP, so a room
//! downloads everything once. Attendees check every digest themselves (`prepare --from`), so
//! the server needs no TLS and trusts nothing it serves.
//!
//! Architecture invariant: [`route`] is pure (a request path → a file under the cache, or
//! nothing); only [`serve`] does I/O. Only files of the cache are reachable: the image layout's
//! `oci-layout`, `index.json` and `blobs/sha256/<64 hex>`, plain file names under `snaps/`, and
//! the cached upstream manifests the instructor's lock names.
//!
//! URL scheme (what `prepare --from` and `upstream.mirror` read):
//! - `/images/<file>`: the OCI image layout (`cluster::image_cache::layout`)
//! - `/snaps/<file>`: the snap files under `<cache>/snaps/`
//! - `/<host>/<path>`: the cached copy of the upstream manifest `https://<host>/<path>`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::cluster::image_cache::layout::is_sha256_digest;
use crate::cluster::upstream::{Lock, cache_path};

/// The default address of `prepare --serve`: every interface (attendees reach it over the
/// room's network), port 8787.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8787";

/// What the mirror serves from.
#[derive(Clone, Debug)]
pub struct MirrorFiles {
    /// The cache root (`~/.cache/homelab`).
    pub cache: PathBuf,
    /// The instructor's lock (upstream URL → sha256).
    pub lock: Lock,
}

/// The file a request path names, if the mirror serves it.
pub fn route(files: &MirrorFiles, path: &str) -> Option<PathBuf> {
    let path = path.strip_prefix('/')?;
    let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('\\');
    if let Some(rest) = path.strip_prefix("images/") {
        let images = files.cache.join("images");
        return match rest {
            "oci-layout" | "index.json" => Some(images.join(rest)),
            _ => {
                let hex = rest.strip_prefix("blobs/sha256/")?;
                is_sha256_digest(&format!("sha256:{hex}"))
                    .then(|| images.join("blobs").join("sha256").join(hex))
            }
        };
    }
    if let Some(rest) = path.strip_prefix("snaps/") {
        return (!rest.is_empty() && rest.split('/').all(safe)).then(|| {
            rest.split('/')
                .fold(files.cache.join("snaps"), |p, s| p.join(s))
        });
    }
    let url = format!("https://{path}");
    let entry = files.lock.upstream.get(&url)?;
    Some(cache_path(&files.cache, &entry.sha256))
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(text.to_string()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("a valid response")
}

async fn handle(files: &MirrorFiles, req: Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "read-only mirror\n");
    }
    let Some(path) = route(files, req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not served by this mirror\n");
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not in the cache\n"),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return plain(StatusCode::NOT_FOUND, "not in the cache\n"),
    };
    tracing::info!(path = %req.uri().path(), bytes = len, "mirror serves");
    let body: Body = if head {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        let chunks = futures::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        BodyExt::boxed_unsync(StreamBody::new(chunks.boxed()))
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-length", len)
        .header("content-type", "application/octet-stream")
        .body(body)
        .expect("a valid response")
}

/// Serve `files` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    files: MirrorFiles,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let files = Arc::new(files);
    crate::edges::http::serve::serve(
        listener,
        move |req| {
            let files = files.clone();
            async move { handle(&files, req).await }
        },
        shutdown,
    )
    .await;
}

/// The snap files under `<cache>/snaps/`, relative paths, sorted.
pub fn snap_files(cache: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), &format!("{rel}/"), out),
                Ok(t) if t.is_file() => out.push(rel),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&cache.join("snaps"), "", &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::upstream::LockEntry;

    fn files() -> MirrorFiles {
        let mut lock = Lock::default();
        lock.upstream.insert(
            "https://github.com/a/b/v1/x.yaml".into(),
            LockEntry {
                sha256: "ab".repeat(32),
            },
        );
        MirrorFiles {
            cache: PathBuf::from("/c"),
            lock,
        }
    }

    #[test]
    fn only_cache_files_are_routed() {
        let f = files();
        let hex = "0".repeat(64);
        assert_eq!(
            route(&f, "/images/index.json"),
            Some(PathBuf::from("/c/images/index.json"))
        );
        assert_eq!(
            route(&f, &format!("/images/blobs/sha256/{hex}")),
            Some(PathBuf::from(format!("/c/images/blobs/sha256/{hex}")))
        );
        assert_eq!(route(&f, "/images/blobs/sha256/../../x"), None);
        assert_eq!(route(&f, "/images/other"), None);
        assert_eq!(
            route(&f, "/snaps/microk8s_1.snap"),
            Some(PathBuf::from("/c/snaps/microk8s_1.snap"))
        );
        assert_eq!(route(&f, "/snaps/../secrets"), None);
        assert_eq!(route(&f, "/snaps/"), None);
        assert_eq!(
            route(&f, "/github.com/a/b/v1/x.yaml"),
            Some(cache_path(Path::new("/c"), &"ab".repeat(32)))
        );
        assert_eq!(route(&f, "/github.com/a/b/v2/x.yaml"), None);
    }
}

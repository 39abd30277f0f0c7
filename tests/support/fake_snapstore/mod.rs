//! A fake Snap Store API for `homelab prepare`: the v2 info answer, snap downloads and the
//! assertions endpoint, plus a static file server standing in for a workshop mirror (another
//! cache's folder served as files).
//!
//! What it models, and where each rule comes from (canonical/snapd at commit bee548f7, Aug 2026,
//! unless said otherwise):
//! - `GET /v2/snaps/info/<name>?fields=…&architecture=…` (`store/store.go` `snapInfo`): the answer
//!   is `storeInfo` of `store/details_v2.go`: `name`, `snap-id`, and `channel-map`, whose entries
//!   hold a `channel` {`architecture`, `name`, `track`, `risk`, `released-at`} and only the snap
//!   fields the request names in `fields` (snapd always names them, `infoFields`); the map is
//!   limited to the requested architecture. `download` is {`url`, `size`, `sha3-384` (hex), `deltas`}.
//! - Without `Snap-Device-Series` the store refuses the request (400, `error-list` code
//!   `missing-header`): the store API has required the series header since v1 (its answer
//!   "X-Ubuntu-Series header is required." to a request without it, quoted at
//!   https://pastebin.com/LM6JGkDy); snapd sends it on every request (`hdrSnapDeviceSeries`).
//! - An unknown snap is a 404 with an `error-list` (`store/store.go` treats 404 as
//!   `ErrSnapNotFound`; `assertionSvcError` reads v2 `error-list` {`code`, `message`}).
//! - `GET /v2/assertions/<type>/<primary key…>` (`store/store_asserts.go`), answered as
//!   `application/x.ubuntu.assertion`, 404 with `error-list` code `not-found` when unknown. The
//!   assertions are what snapd's types need (`asserts/snap_asserts.go`, `asserts/account_key.go`):
//!   `snap-revision` (snap-sha3-384 base64url, snap-id, snap-size, snap-revision, developer-id)
//!   signed by the store key, `snap-declaration` (series 16, snap-id, publisher-id), the store's
//!   `account-key` signed by the root key (`asserts/sysdb/trusted.go`), and the publisher
//!   `account` when it is not `canonical`. Signatures are placeholders: only the VM's snapd
//!   checks them, and the fake `multipass`'s `snap ack` checks the structure only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha3::{Digest as _, Sha3_384};

use super::http_kit::log::RequestLog;

/// Canonical's root key (asserts/sysdb/trusted.go): trusted by snapd, never served.
pub const ROOT_KEY: &str = "-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk";
/// The fake store's signing key id.
pub const STORE_KEY: &str = "BWDEoaqyr25nF5SNCvEv2v7QnM9QsfCc0PBMYD_i2NGSQ32EF2d4D0hqUel3m8ul";

/// One revision in a channel.
#[derive(Clone)]
pub struct Release {
    pub name: String,
    pub snap_id: String,
    pub track: String,
    pub risk: String,
    pub arch: String,
    pub revision: u64,
    pub base: Option<String>,
    pub confinement: String,
    pub content: Vec<u8>,
}

/// A request the fake answered.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub series: Option<String>,
}

#[derive(Default)]
pub struct Knobs {
    /// Downloads serve other bytes than the published hash says.
    pub corrupt_downloads: bool,
}

pub struct Inner {
    pub releases: Mutex<Vec<Release>>,
    pub hits: RequestLog<Hit>,
    pub knobs: Mutex<Knobs>,
    /// Bytes of snap files served.
    pub served: Mutex<u64>,
}

pub struct FakeSnapStore {
    pub url: String,
    pub inner: Arc<Inner>,
}

/// microk8s (classic, base core20) in 1.36/stable and core20 in latest/stable, for amd64 and
/// arm64. Contents are deterministic filler of a few hundred KiB.
pub fn default_releases() -> Vec<Release> {
    let mut out = Vec::new();
    for (arch, shift) in [("amd64", 0u64), ("arm64", 1)] {
        out.push(Release {
            name: "microk8s".into(),
            snap_id: "EaXqgt1lyCaxKaQCU349mlodBkDCXRcg".into(),
            track: "1.36".into(),
            risk: "stable".into(),
            arch: arch.into(),
            revision: 8148 + shift,
            base: Some("core20".into()),
            confinement: "classic".into(),
            content: filler(&format!("microk8s-{arch}"), 300 * 1024),
        });
        out.push(Release {
            name: "core20".into(),
            snap_id: "DLqre5XGLbDqg9jPtiAhRRjDuPVa5X1q".into(),
            track: "latest".into(),
            risk: "stable".into(),
            arch: arch.into(),
            revision: 2599 + shift,
            base: None,
            confinement: "strict".into(),
            content: filler(&format!("core20-{arch}"), 120 * 1024),
        });
    }
    out
}

fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = sha3_hex(seed.as_bytes()).into_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha3_hex(&block).into_bytes();
    }
    out.truncate(len);
    out
}

pub fn sha3_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_384::digest(bytes))
}

fn sha3_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha3_384::digest(bytes))
}

fn assertion(headers: &[(&str, String)]) -> String {
    let mut t = String::new();
    for (k, v) in headers {
        t.push_str(&format!("{k}: {v}\n"));
    }
    t.push_str("\nAcLBXAQAAQoABgUCZfake-signature-of-the-fake-store\n");
    t
}

fn error_list(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error-list": [{"code": code, "message": message}]}).to_string(),
    )
        .into_response()
}

impl FakeSnapStore {
    pub async fn start() -> FakeSnapStore {
        let inner = Arc::new(Inner {
            releases: Mutex::new(default_releases()),
            hits: RequestLog::default(),
            knobs: Mutex::new(Knobs::default()),
            served: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v2/snaps/info/{name}", axum::routing::get(info))
            .route("/download/{file}", axum::routing::get(download))
            .route("/v2/assertions/{*path}", axum::routing::get(assertions))
            .with_state((inner.clone(), url.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeSnapStore { url, inner }
    }

    /// The release of `name` for `arch`.
    pub fn release(&self, name: &str, arch: &str) -> Release {
        self.inner
            .releases
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.name == name && r.arch == arch)
            .cloned()
            .unwrap()
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.all()
    }

    pub fn served(&self) -> u64 {
        *self.inner.served.lock().unwrap()
    }
}

type St = State<(Arc<Inner>, String)>;

fn record(inner: &Inner, path: String, headers: &HeaderMap) {
    inner.hits.push(Hit {
        path,
        series: headers
            .get("snap-device-series")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
}

async fn info(
    State((inner, url)): St,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&inner, format!("/v2/snaps/info/{name}"), &headers);
    if headers.get("snap-device-series").is_none() {
        return error_list(
            StatusCode::BAD_REQUEST,
            "missing-header",
            "Snap-Device-Series header is required.",
        );
    }
    let releases = inner.releases.lock().unwrap().clone();
    let mine: Vec<&Release> = releases.iter().filter(|r| r.name == name).collect();
    let Some(first) = mine.first() else {
        return error_list(
            StatusCode::NOT_FOUND,
            "resource-not-found",
            &format!("No snap named '{name}' found in series '16'."),
        );
    };
    let fields: Vec<&str> = q
        .get("fields")
        .map(|f| f.split(',').collect())
        .unwrap_or_default();
    let arch = q.get("architecture");
    let map: Vec<serde_json::Value> = mine
        .iter()
        .filter(|r| arch.is_none_or(|a| *a == r.arch))
        .map(|r| {
            let channel_name = if r.track == "latest" {
                r.risk.clone()
            } else {
                format!("{}/{}", r.track, r.risk)
            };
            let mut e = serde_json::json!({"channel": {
                "architecture": r.arch, "name": channel_name, "track": r.track, "risk": r.risk,
                "released-at": "2026-11-20T10:00:00.000000+00:00"}});
            let all = serde_json::json!({
                "base": r.base,
                "confinement": r.confinement,
                "download": {
                    "url": format!("{url}/download/{}_{}.snap", r.name, r.revision),
                    "size": r.content.len(),
                    "sha3-384": sha3_hex(&r.content),
                    "deltas": [],
                },
                "revision": r.revision,
                "type": if r.base.is_none() { "base" } else { "app" },
                "version": "v1.36.0",
            });
            for f in &fields {
                if let Some(v) = all.get(*f) {
                    e[*f] = v.clone();
                }
            }
            e
        })
        .collect();
    axum::Json(serde_json::json!({
        "channel-map": map,
        "name": name,
        "snap-id": first.snap_id,
        "snap": {"name": name, "snap-id": first.snap_id},
    }))
    .into_response()
}

async fn download(State((inner, _)): St, Path(file): Path<String>, headers: HeaderMap) -> Response {
    record(&inner, format!("/download/{file}"), &headers);
    let releases = inner.releases.lock().unwrap().clone();
    let Some(r) = releases
        .iter()
        .find(|r| format!("{}_{}.snap", r.name, r.revision) == file)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut content = r.content.clone();
    if inner.knobs.lock().unwrap().corrupt_downloads {
        content[10] ^= 0xff;
    }
    *inner.served.lock().unwrap() += content.len() as u64;
    content.into_response()
}

async fn assertions(
    State((inner, _)): St,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&inner, format!("/v2/assertions/{path}"), &headers);
    let releases = inner.releases.lock().unwrap().clone();
    let parts: Vec<&str> = path.split('/').collect();
    let text = match parts.as_slice() {
        ["account-key", key] if *key == STORE_KEY => Some(assertion(&[
            ("type", "account-key".into()),
            ("authority-id", "canonical".into()),
            ("revision", "2".into()),
            ("public-key-sha3-384", STORE_KEY.into()),
            ("account-id", "canonical".into()),
            ("name", "store".into()),
            ("since", "2016-04-01T00:00:00.0Z".into()),
            ("body-length", "0".into()),
            ("sign-key-sha3-384", ROOT_KEY.into()),
        ])),
        ["snap-declaration", "16", id] => releases.iter().find(|r| r.snap_id == *id).map(|r| {
            assertion(&[
                ("type", "snap-declaration".into()),
                ("authority-id", "canonical".into()),
                ("series", "16".into()),
                ("snap-id", r.snap_id.clone()),
                ("snap-name", r.name.clone()),
                ("publisher-id", "canonical".into()),
                ("timestamp", "2026-01-01T00:00:00.000000Z".into()),
                ("sign-key-sha3-384", STORE_KEY.into()),
            ])
        }),
        ["snap-revision", digest] => releases
            .iter()
            .find(|r| sha3_b64(&r.content) == *digest)
            .map(|r| {
                assertion(&[
                    ("type", "snap-revision".into()),
                    ("authority-id", "canonical".into()),
                    ("snap-sha3-384", sha3_b64(&r.content)),
                    ("developer-id", "canonical".into()),
                    ("snap-id", r.snap_id.clone()),
                    ("snap-revision", r.revision.to_string()),
                    ("snap-size", r.content.len().to_string()),
                    ("timestamp", "2026-11-20T10:00:00.000000Z".into()),
                    ("sign-key-sha3-384", STORE_KEY.into()),
                ])
            }),
        _ => None,
    };
    match text {
        Some(t) => (
            [(header::CONTENT_TYPE, "application/x.ubuntu.assertion")],
            t,
        )
            .into_response(),
        None => error_list(StatusCode::NOT_FOUND, "not-found", "not found"),
    }
}

/// A plain static file server over `root` (a workshop mirror: another cache's folder), with
/// the paths it was asked for.
pub struct StaticServer {
    pub url: String,
    pub hits: Arc<RequestLog<String>>,
}

impl StaticServer {
    pub async fn start(root: PathBuf) -> StaticServer {
        let hits: Arc<RequestLog<String>> = Arc::new(RequestLog::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let h = hits.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (root, h) = (root.clone(), h.clone());
            async move {
                let path = uri.path().to_string();
                h.push(path.clone());
                if path.contains("..") {
                    return StatusCode::BAD_REQUEST.into_response();
                }
                match std::fs::read(root.join(path.trim_start_matches('/'))) {
                    Ok(bytes) => bytes.into_response(),
                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StaticServer { url, hits }
    }
}

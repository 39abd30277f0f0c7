//! The container registry's image routes under `/v2/<owner>/<image>/…`: blob uploads (single
//! POST with `?digest=`, or a session finished by `PUT …?digest=`), blob and manifest lookups,
//! and manifest pushes — what `homelab up` does to put the cached base images into the lab's
//! registry, and what kaniko does to read them back.
//!
//! Upstream: go-gitea/gitea `routers/api/packages/api.go` `ContainerRoutes` (read at commit
//! 6855c81d0f91f976cc30583b89d39d380e818d54) for the routes and who may call them — every
//! route needs a user (`ReqContainerAccess`: anonymous gets 401 with the token realm), writes
//! need write access to the owner (`reqPackageAccess(perm.AccessModeWrite)`; with token
//! scopes, `write:package`); `routers/api/packages/container/container.go` for the answers —
//! the image name pattern (`imageNamePattern`, 400 `NAME_INVALID`), a digest that does not
//! match the bytes (400 `DIGEST_INVALID`), an unknown blob (404 `BLOB_UNKNOWN`), an unknown
//! manifest (404 `MANIFEST_UNKNOWN`), a manifest naming a blob the image does not hold (404
//! `BLOB_UNKNOWN`), and the `Docker-Content-Digest` header. Blobs are scoped to the owner and
//! image, as Gitea's `GetContainerBlob` searches them.
//!
//! Not played: cross-repository mounts (`?mount=`), chunk ranges (`Content-Range`), deletes,
//! tag lists, the catalog.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Auth, Shared, has_scope, scopes_supported};

/// A manifest in the registry.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Media types Gitea accepts for a manifest push
/// (`modules/packages/container/metadata.go`: OCI and Docker v2 manifests and indexes).
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut r = super::json_response(
        status,
        json!({"errors": [{"code": code, "message": message}]}),
    );
    r.headers_mut().insert(
        "docker-distribution-api-version",
        "registry/2.0".parse().unwrap(),
    );
    r
}

fn answer(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header("docker-distribution-api-version", "registry/2.0");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body)).unwrap()
}

/// `imageNamePattern` of `container.go`.
fn image_name_ok(image: &str) -> bool {
    image.split('/').all(|part| {
        !part.is_empty()
            && part.split(['.', '_', '-']).all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
    })
}

/// `oci.Reference` of Gitea's `modules/packages/container/oci`: a tag.
fn tag_ok(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

static UPLOADS: AtomicU64 = AtomicU64::new(1);

/// `/v2/<rest>` for an image route; `None` when `rest` names none (the caller answers 404).
#[allow(clippy::too_many_arguments)]
pub(super) fn route(
    shared: &Shared,
    method: &Method,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    auth: Auth,
    challenge: impl Fn() -> Response,
) -> Option<Response> {
    let (owner, tail) = rest.split_once('/')?;
    // The route's shape: `<image…>/blobs/uploads[/<uuid>]`, `<image…>/blobs/<digest>`,
    // `<image…>/manifests/<reference>`.
    let (image, kind, arg) = if let Some((image, after)) = tail.split_once("/blobs/uploads") {
        (image, "upload", after.trim_start_matches('/'))
    } else if let Some((image, d)) = tail.rsplit_once("/blobs/") {
        (image, "blob", d)
    } else if let Some((image, r)) = tail.rsplit_once("/manifests/") {
        (image, "manifest", r)
    } else {
        return None;
    };
    let write = matches!(
        (kind, method.as_str()),
        ("upload", _) | ("manifest", "PUT") | (_, "DELETE")
    );
    // ReqContainerAccess: a user (or the ghost user of a registry token) is required.
    let user = match &auth {
        Auth::Password(u) => Some(u.clone()),
        Auth::Token(t) => Some(t.owner.clone()),
        Auth::None | Auth::Invalid => None,
    };
    let Some(user) = user else {
        return Some(challenge());
    };
    let mut data = shared.data.lock().unwrap();
    let owner_known = data.users.contains_key(owner) || data.orgs.contains_key(owner);
    if !owner_known {
        return Some(error(404, "NAME_UNKNOWN", "owner not found"));
    }
    if write {
        let scopes_on = scopes_supported(&shared.options.version);
        let scope_ok = match &auth {
            Auth::Token(t) => !scopes_on || has_scope(&t.scopes, "package", true),
            _ => true,
        };
        let may = data.users.get(&user).is_some_and(|u| u.is_admin) || owner == user;
        if !scope_ok || !may {
            return Some(challenge());
        }
    }
    if !image_name_ok(image) {
        return Some(error(400, "NAME_INVALID", "invalid repository name"));
    }
    let key = format!("{owner}/{image}");
    let q = |name: &str| -> Option<String> {
        let url = reqwest::Url::parse(&format!("http://query.invalid/?{query}")).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let location = |what: &str| format!("/v2/{key}/{what}");
    Some(match (kind, method.as_str()) {
        ("upload", "POST") if arg.is_empty() => match q("digest") {
            Some(digest) => {
                if digest != sha256(body) {
                    return Some(error(
                        400,
                        "DIGEST_INVALID",
                        "provided digest did not match uploaded content",
                    ));
                }
                data.blobs
                    .insert((key.clone(), digest.clone()), body.to_vec());
                answer(
                    201,
                    &[
                        ("location", location(&format!("blobs/{digest}"))),
                        ("docker-content-digest", digest.clone()),
                    ],
                    Vec::new(),
                )
            }
            None => {
                let uuid = format!("upload-{}", UPLOADS.fetch_add(1, Ordering::SeqCst));
                data.uploads.insert(uuid.clone(), body.to_vec());
                answer(
                    202,
                    &[
                        ("location", location(&format!("blobs/uploads/{uuid}"))),
                        ("range", "0-0".into()),
                        ("docker-upload-uuid", uuid),
                    ],
                    Vec::new(),
                )
            }
        },
        ("upload", "PATCH") => match data.uploads.get_mut(arg) {
            None => error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"),
            Some(buf) => {
                buf.extend_from_slice(body);
                let end = buf.len().saturating_sub(1);
                answer(
                    202,
                    &[
                        ("location", location(&format!("blobs/uploads/{arg}"))),
                        ("range", format!("0-{end}")),
                        ("docker-upload-uuid", arg.to_string()),
                    ],
                    Vec::new(),
                )
            }
        },
        ("upload", "PUT") => {
            let Some(digest) = q("digest") else {
                return Some(error(400, "DIGEST_INVALID", "digest missing"));
            };
            let Some(mut buf) = data.uploads.remove(arg) else {
                return Some(error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"));
            };
            buf.extend_from_slice(body);
            if digest != sha256(&buf) {
                return Some(error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                ));
            }
            data.blobs.insert((key.clone(), digest.clone()), buf);
            answer(
                201,
                &[
                    ("location", location(&format!("blobs/{digest}"))),
                    ("docker-content-digest", digest),
                ],
                Vec::new(),
            )
        }
        ("blob", "HEAD" | "GET") => match data.blobs.get(&(key.clone(), arg.to_string())) {
            Some(bytes) if digest_ok(arg) => {
                let len = bytes.len().to_string();
                let body = if *method == Method::GET {
                    bytes.clone()
                } else {
                    Vec::new()
                };
                answer(
                    200,
                    &[
                        ("docker-content-digest", arg.to_string()),
                        ("content-length", len),
                    ],
                    body,
                )
            }
            _ => error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        },
        ("manifest", "HEAD" | "GET") => match data.manifests.get(&(key.clone(), arg.to_string())) {
            Some(m) => {
                let body = if *method == Method::GET {
                    m.bytes.clone()
                } else {
                    Vec::new()
                };
                answer(
                    200,
                    &[
                        ("docker-content-digest", m.digest.clone()),
                        ("content-type", m.media_type.clone()),
                        ("content-length", m.bytes.len().to_string()),
                    ],
                    body,
                )
            }
            None => error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        },
        ("manifest", "PUT") => {
            let tagged = !digest_ok(arg);
            if tagged && !tag_ok(arg) {
                return Some(error(400, "MANIFEST_INVALID", "Tag is invalid"));
            }
            let media_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if !MANIFEST_TYPES.contains(&media_type.as_str()) {
                return Some(error(400, "MANIFEST_INVALID", "MediaType not recognized"));
            }
            let Ok(doc) = serde_json::from_slice::<Value>(body) else {
                return Some(error(400, "MANIFEST_INVALID", "manifest invalid"));
            };
            let digest = sha256(body);
            if !tagged && arg != digest {
                return Some(error(
                    400,
                    "DIGEST_INVALID",
                    "digest does not match the manifest",
                ));
            }
            // A manifest names its config and layers (an index, its manifests): all must be in
            // the image already.
            let mut named: Vec<String> = Vec::new();
            if let Some(c) = doc["config"]["digest"].as_str() {
                named.push(c.to_string());
            }
            for l in doc["layers"].as_array().into_iter().flatten() {
                named.extend(l["digest"].as_str().map(str::to_string));
            }
            let index_children: Vec<String> = doc["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["digest"].as_str().map(str::to_string))
                .collect();
            for d in &named {
                if !data.blobs.contains_key(&(key.clone(), d.clone())) {
                    return Some(error(404, "BLOB_UNKNOWN", "blob unknown to registry"));
                }
            }
            for d in &index_children {
                if !data.manifests.contains_key(&(key.clone(), d.clone())) {
                    return Some(error(404, "MANIFEST_UNKNOWN", "manifest unknown"));
                }
            }
            let m = Manifest {
                digest: digest.clone(),
                media_type,
                bytes: body.to_vec(),
            };
            data.manifests
                .insert((key.clone(), digest.clone()), m.clone());
            data.manifests.insert((key.clone(), arg.to_string()), m);
            answer(
                201,
                &[
                    ("location", location(&format!("manifests/{arg}"))),
                    ("docker-content-digest", digest),
                ],
                Vec::new(),
            )
        }
        _ => error(
            405,
            "UNSUPPORTED",
            "the test's Gitea does not play this call",
        ),
    })
}

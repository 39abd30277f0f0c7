//! HTTP side of the fake API server: routing Kubernetes REST paths onto the [`Store`], discovery
//! documents, watch streams, fault injection and the request log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::admission::{Attributes, Phase, admit};
use super::http_kit::query;
use super::store::{
    ApiError, FieldSelector, ResourceType, Selector, Store, WatchEvent, WriteOptions,
};
use super::{FaultAction, Inner, RequestRecord};

pub type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// A parsed resource path.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Resource(Target),
}

fn route(store: &Store, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => return Ok(Route::Resources(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Route::Resources(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let served = |plural: &str| {
        store
            .find_type(group, version, plural)
            .filter(|t| store.is_established(t))
    };
    let namespaced_plural = |plural: &str| served(plural).filter(|t| t.namespaced);
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced_plural(plural).is_some() => {
            let rt = namespaced_plural(plural).expect("checked");
            match tail {
                [] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, sub] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] => {
            let rt = served(plural).ok_or_else(not_found)?;
            match tail {
                [] => Target {
                    rt,
                    namespace: None,
                    name: None,
                    sub: None,
                },
                [name] if !rt.namespaced => Target {
                    rt,
                    namespace: None,
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, sub] if !rt.namespaced => Target {
                    rt,
                    namespace: None,
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(Route::Resource(t))
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(store: &Store, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = store
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version && store.is_established(t))
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in &types {
        resources.push(json!({"name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced, "kind": t.kind, "verbs": VERBS}));
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.kind == "Pod" && t.group.is_empty() {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            resources.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_doc(store: &Store, group: &str) -> Option<Value> {
    let mut versions: Vec<String> = store
        .types
        .iter()
        .filter(|t| t.group == group && store.is_established(t))
        .map(|t| t.version.clone())
        .collect();
    versions.dedup();
    if versions.is_empty() {
        return None;
    }
    versions.sort();
    versions.dedup();
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]}),
    )
}

/// Serve one request. `Err` drops the connection (fault injection).
pub async fn handle(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let user = match req.extensions().get::<super::PeerUser>() {
        Some(u) => u.0.clone(),
        None => req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| format!("token:{t}"))
            .unwrap_or_else(|| "anonymous".into()),
    };
    // Taken before the body is read: only an exec answers with a protocol switch.
    let upgrade = hyper::upgrade::on(&mut req);
    let headers = req.headers().clone();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query::pairs(req.uri().query().unwrap_or(""));
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    let is_watch = matches!(q("watch").as_deref(), Some("true" | "1"));
    let dry_run = q("dryRun").is_some_and(|v| v == "All");
    let routed = { inner.store.lock().unwrap().pipe(|s| route(s, &path)) };
    let verb = match (&method, &routed) {
        (_, Ok(Route::Resource(t))) if t.sub.as_deref() == Some("exec") => "exec",
        (_, Ok(Route::Resource(t))) => match method {
            Method::GET if t.name.is_none() && is_watch => "watch",
            Method::GET if t.name.is_none() => "list",
            Method::GET => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if t.name.is_none() => "deletecollection",
            Method::DELETE => "delete",
            _ => "other",
        },
        (_, Ok(_)) => "discovery",
        _ => "unknown",
    };
    let (kind, namespace, name) = match &routed {
        Ok(Route::Resource(t)) => (
            t.rt.kind.clone(),
            t.namespace.clone().unwrap_or_default(),
            t.name.clone().unwrap_or_default(),
        ),
        _ => (String::new(), String::new(), String::new()),
    };
    let record = |code: u16, fault: bool| RequestRecord {
        at: Instant::now(),
        method: method.to_string(),
        verb: verb.to_string(),
        path: path.clone(),
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        dry_run,
        apply: content_type.starts_with("application/apply-patch"),
        field_manager: q("fieldManager"),
        user_agent: user_agent.clone(),
        user: user.clone(),
        code,
        fault,
    };

    // Fault injection comes first, as a flaky network or an overloaded server would.
    if let Some(action) = inner.take_fault(&method, &path, verb) {
        match action {
            FaultAction::Status { code, retry_after } => {
                inner.log.push(record(code, true));
                let e = ApiError::new(
                    code,
                    if code == 429 {
                        "TooManyRequests"
                    } else {
                        "ServiceUnavailable"
                    },
                    "injected fault",
                );
                let mut resp = error_response(&e);
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert("retry-after", secs.to_string().parse().unwrap());
                }
                return Ok(resp);
            }
            FaultAction::Drop => {
                inner.log.push(record(0, true));
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection drop",
                ));
            }
            FaultAction::Gone => {
                inner.log.push(record(200, true));
                let e = ApiError::new(410, "Expired", "too old resource version: injected");
                let line =
                    serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap();
                let mut bytes = line;
                bytes.push(b'\n');
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(full(bytes))
                    .unwrap());
            }
        }
    }

    let resp = match routed {
        Err(e) => error_response(&e),
        Ok(Route::Version) => json_response(
            200,
            &json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake", "platform": "linux/amd64"}),
        ),
        Ok(Route::CoreVersions) => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        Ok(Route::Groups) => {
            let store = inner.store.lock().unwrap();
            let mut names: Vec<String> = store
                .types
                .iter()
                .filter(|t| !t.group.is_empty())
                .map(|t| t.group.clone())
                .collect();
            names.sort();
            names.dedup();
            let groups: Vec<Value> = names.iter().filter_map(|g| group_doc(&store, g)).collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Ok(Route::Group(g)) => match group_doc(&inner.store.lock().unwrap(), &g) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        },
        Ok(Route::Resources(g, v)) => match resource_list(&inner.store.lock().unwrap(), &g, &v) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        },
        Ok(Route::Resource(t))
            if t.rt.kind == "Pod" && t.rt.group.is_empty() && t.sub.as_deref() == Some("exec") =>
        {
            let resp = super::exec::handle(
                &inner,
                &t.namespace.clone().unwrap_or_default(),
                t.name.as_deref().unwrap_or_default(),
                &method,
                &query,
                &headers,
                upgrade,
            );
            inner.log.push(record(resp.status().as_u16(), false));
            return Ok(resp);
        }
        Ok(Route::Resource(t)) => {
            if verb == "watch" {
                let r = watch(inner.clone(), &t, &q);
                inner.log.push(record(200, false));
                return Ok(r);
            }
            let result = resource(&inner, &t, &method, &q, &content_type, &body, dry_run);
            match result {
                Ok((code, resp)) => resp_with_code(code, resp),
                Err(e) => error_response(&e),
            }
        }
    };
    inner.log.push(record(resp.status().as_u16(), false));
    Ok(resp)
}

fn resp_with_code(code: u16, body: Reply) -> Response<Body> {
    match body {
        Reply::Json(v) => json_response(code, &v),
        Reply::Text(t) => Response::builder()
            .status(code)
            .header("content-type", "text/plain")
            .body(full(t))
            .unwrap(),
    }
}

enum Reply {
    Json(Value),
    Text(String),
}

trait Pipe: Sized {
    fn pipe<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for Store {}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .or_else(|_| {
            homelab::edges::yaml::from_str::<Value>(&String::from_utf8_lossy(body))
                .map_err(|e| e.message)
        })
        .map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("error decoding request body: {e}"),
            )
        })
}

fn resource(
    inner: &Arc<Inner>,
    t: &Target,
    method: &Method,
    q: &dyn Fn(&str) -> Option<String>,
    content_type: &str,
    body: &[u8],
    dry_run: bool,
) -> Result<(u16, Reply), ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    if t.rt.namespaced && t.name.is_some() && t.namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let status_sub = match t.sub.as_deref() {
        None => false,
        Some("status") if t.rt.status => true,
        Some("log") if t.rt.kind == "Pod" && *method == Method::GET => {
            let name = t.name.clone().unwrap_or_default();
            let pod = inner
                .store
                .lock()
                .unwrap()
                .objects
                .get(&(String::new(), "pods".into(), ns.clone(), name.clone()))
                .cloned();
            let Some(pod) = pod else {
                return Err(ApiError::not_found(&t.rt, &name));
            };
            let container = super::pod_log::container_for_log(
                &pod,
                &name,
                &q("container").unwrap_or_default(),
            )?;
            let previous = q("previous").is_some_and(|v| v == "true");
            let text = inner
                .logs
                .lock()
                .unwrap()
                .get(&(ns.clone(), name.clone(), container, previous))
                .cloned()
                .unwrap_or_default();
            let tail: Option<usize> = q("tailLines").and_then(|n| n.parse().ok());
            let lines: Vec<&str> = text.lines().collect();
            let start = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
            let mut out = lines[start..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            return Ok((200, Reply::Text(out)));
        }
        Some(_) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let mut store = inner.store.lock().unwrap();
    let result = match (method.clone(), &t.name) {
        (Method::GET, None) => {
            let labels = Selector::parse(&q("labelSelector").unwrap_or_default())
                .map_err(|m| ApiError::new(400, "BadRequest", m))?;
            let fields = FieldSelector::parse(&q("fieldSelector").unwrap_or_default());
            let items = store.list(&t.rt, t.namespace.as_deref(), &labels, &fields);
            let chunk = query::chunk(items, q("limit").as_deref(), q("continue").as_deref());
            let mut page = chunk.items;
            if !t.rt.custom {
                // The real server leaves apiVersion/kind off the items of built-in lists.
                for i in &mut page {
                    if let Some(m) = i.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                }
            }
            let mut meta = json!({"resourceVersion": store.rv.to_string()});
            if let Some(next) = chunk.next {
                meta["continue"] = json!(next);
                meta["remainingItemCount"] = json!(chunk.remaining);
            }
            Ok((
                200,
                json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": meta, "items": page}),
            ))
        }
        (Method::GET, Some(name)) => {
            let key = Store::key_of(&t.rt, &ns, name);
            store
                .render(&key)
                .map(|o| (200, o))
                .ok_or_else(|| ApiError::not_found(&t.rt, name))
        }
        (Method::POST, None)
        | (Method::PATCH, Some(_))
        | (Method::PUT, Some(_))
        | (Method::DELETE, Some(_)) => {
            let w = Write {
                t,
                method,
                q,
                content_type,
                body,
                status_sub,
            };
            // Admission as kube-apiserver orders it: mutating webhooks, then the object's own
            // checks (tried here as a dry run), then validating webhooks, then the write.
            if let Some(op) = w.operation(&store).filter(|_| has_webhooks(&store)) {
                let object = parse_body(body).ok().filter(Value::is_object);
                let old = t
                    .name
                    .as_ref()
                    .and_then(|n| store.render(&Store::key_of(&t.rt, &ns, n)));
                let attr_ns = if t.rt.group.is_empty() && t.rt.plural == "namespaces" {
                    t.name.clone().unwrap_or_default()
                } else {
                    ns.clone()
                };
                let attr = Attributes {
                    rt: &t.rt,
                    namespace: &attr_ns,
                    subresource: t.sub.as_deref(),
                    operation: op,
                    object: object.as_ref(),
                    old: old.as_ref(),
                    dry_run,
                };
                admit(&store, Phase::Mutating, &attr)?;
                w.run(&mut store, true)?;
                admit(&store, Phase::Validating, &attr)?;
            }
            w.run(&mut store, dry_run)
        }
        // Namespaces have no deletecollection: their REST storage implements no
        // DeleteCollection (kubernetes v1.24 pkg/registry/core/namespace/storage/storage.go), so
        // the route is not installed and kube-apiserver answers 405.
        (Method::DELETE, None) if t.rt.group.is_empty() && t.rt.plural == "namespaces" => {
            Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ))
        }
        (Method::DELETE, None) => {
            let labels = Selector::parse(&q("labelSelector").unwrap_or_default())
                .map_err(|m| ApiError::new(400, "BadRequest", m))?;
            let items = store.list(
                &t.rt,
                t.namespace.as_deref(),
                &labels,
                &FieldSelector::default(),
            );
            for i in &items {
                if let Some((rt, key)) = store.key_for(i) {
                    let _ = store.delete(&rt, &key.2, &key.3, "Background", dry_run);
                }
            }
            Ok((
                200,
                json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": {}, "items": items}),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    };
    drop(store);
    inner.publish();
    result.map(|(c, v)| (c, Reply::Json(v)))
}

/// Whether any admission webhook is configured (else admission has nothing to ask).
fn has_webhooks(store: &Store) -> bool {
    store.objects.keys().any(|k| {
        k.0 == "admissionregistration.k8s.io"
            && matches!(
                k.1.as_str(),
                "validatingwebhookconfigurations" | "mutatingwebhookconfigurations"
            )
    })
}

/// One write request (POST, PATCH, PUT, DELETE of a named object), to run as a dry run first
/// (the object's own checks, before validating admission) and then for real.
struct Write<'a> {
    t: &'a Target,
    method: &'a Method,
    q: &'a dyn Fn(&str) -> Option<String>,
    content_type: &'a str,
    body: &'a [u8],
    status_sub: bool,
}

impl Write<'_> {
    fn q(&self, k: &str) -> Option<String> {
        (self.q)(k)
    }

    /// The admission operation, or `None` when the request never reaches admission (an update
    /// or delete of a missing object is answered 404 first; a namespaced write into a missing
    /// namespace is refused by the NamespaceLifecycle plugin, which runs before the webhooks).
    fn operation(&self, store: &Store) -> Option<&'static str> {
        let ns = self.t.namespace.clone().unwrap_or_default();
        if self.t.rt.namespaced && !store.namespace_active(&ns) {
            return None;
        }
        let exists = self.t.name.as_ref().is_some_and(|n| {
            store.objects.contains_key(&(
                self.t.rt.group.clone(),
                self.t.rt.plural.clone(),
                if self.t.rt.namespaced {
                    ns.clone()
                } else {
                    String::new()
                },
                n.clone(),
            ))
        });
        match *self.method {
            Method::POST => Some("CREATE"),
            Method::PATCH if self.content_type.starts_with("application/apply-patch") => {
                Some(if exists { "UPDATE" } else { "CREATE" })
            }
            Method::PATCH | Method::PUT if exists => Some("UPDATE"),
            Method::DELETE if exists => Some("DELETE"),
            _ => None,
        }
    }

    fn run(&self, store: &mut Store, dry_run: bool) -> Result<(u16, Value), ApiError> {
        let t = self.t;
        let ns = t.namespace.clone().unwrap_or_default();
        match (self.method.clone(), &t.name) {
            (Method::POST, None) => {
                let obj = parse_body(self.body)?;
                let manager = self.q("fieldManager").unwrap_or_else(|| "unknown".into());
                store
                    .create(&t.rt, &ns, obj, &manager, dry_run)
                    .map(|o| (201, o))
            }
            (Method::PATCH, Some(name)) => {
                let patch = parse_body(self.body)?;
                if self.content_type.starts_with("application/apply-patch") {
                    let Some(manager) = self.q("fieldManager").filter(|m| !m.is_empty()) else {
                        return Err(ApiError::new(
                            400,
                            "BadRequest",
                            "PATCH, apply: fieldManager is required for apply requests",
                        ));
                    };
                    let force = self.q("force").is_some_and(|f| f == "true");
                    let opts = WriteOptions {
                        manager: &manager,
                        force,
                        dry_run,
                        subresource_status: self.status_sub,
                    };
                    let existed = store.objects.contains_key(&Store::key_of(&t.rt, &ns, name));
                    store
                        .apply(&t.rt, &ns, name, patch, &opts)
                        .map(|o| (if existed { 200 } else { 201 }, o))
                } else if self
                    .content_type
                    .starts_with("application/merge-patch+json")
                    || self
                        .content_type
                        .starts_with("application/strategic-merge-patch+json")
                {
                    let manager = self.q("fieldManager").unwrap_or_else(|| "unknown".into());
                    let opts = WriteOptions {
                        manager: &manager,
                        force: false,
                        dry_run,
                        subresource_status: self.status_sub,
                    };
                    store
                        .merge_patch(&t.rt, &ns, name, &patch, &opts)
                        .map(|o| (200, o))
                } else {
                    Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml, application/merge-patch+json (fake: {} is not implemented)",
                            self.content_type
                        ),
                    ))
                }
            }
            (Method::PUT, Some(name)) => {
                let obj = parse_body(self.body)?;
                let manager = self.q("fieldManager").unwrap_or_else(|| "unknown".into());
                let opts = WriteOptions {
                    manager: &manager,
                    force: false,
                    dry_run,
                    subresource_status: self.status_sub,
                };
                store
                    .replace(&t.rt, &ns, name, obj, &opts)
                    .map(|o| (200, o))
            }
            (Method::DELETE, Some(name)) => {
                let opts = parse_body(self.body).unwrap_or(Value::Null);
                let propagation = opts["propagationPolicy"]
                    .as_str()
                    .map(String::from)
                    .or_else(|| self.q("propagationPolicy"))
                    // None named: the store keeps the object's own GC finalizer (store.go).
                    .unwrap_or_default();
                store
                    .delete(&t.rt, &ns, name, &propagation, dry_run)
                    .map(|o| (200, o))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{} is not supported here", self.method),
            )),
        }
    }
}

/// A watch: replay history after `resourceVersion` (410 Gone when it is older than the kept
/// window), then stream new events until `timeoutSeconds`.
fn watch(inner: Arc<Inner>, t: &Target, q: &dyn Fn(&str) -> Option<String>) -> Response<Body> {
    let labels = Selector::parse(&q("labelSelector").unwrap_or_default()).unwrap_or_default();
    let fields = FieldSelector::parse(&q("fieldSelector").unwrap_or_default());
    let timeout = q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let rv: Option<u64> = q("resourceVersion")
        .and_then(|s| s.parse().ok())
        .filter(|r| *r > 0);
    let group = t.rt.group.clone();
    let plural = t.rt.plural.clone();
    let ns = t.namespace.clone();
    let matches = move |e: &WatchEvent| {
        e.key.0 == group
            && e.key.1 == plural
            && ns.as_ref().is_none_or(|n| &e.key.2 == n)
            && labels.matches(&e.object)
            && fields.matches(&e.object)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let line = |kind: &str, obj: &Value| {
        let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
        v.push(b'\n');
        Bytes::from(v)
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let (mut sub, start) = {
        let store = inner.store.lock().unwrap();
        let sub = inner.events.subscribe();
        match rv {
            Some(r) if r < store.floor => {
                let e = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {r} ({})", store.floor),
                );
                initial.push(line("ERROR", &e.status()));
                (None, store.rv)
            }
            Some(r) => {
                for e in store.history.iter().filter(|e| e.rv > r && matches(e)) {
                    initial.push(line(e.kind, &e.object));
                }
                (Some(sub), store.rv)
            }
            None => {
                for (k, _) in store.objects.iter() {
                    let obj = store.render(k).unwrap();
                    let ev = WatchEvent {
                        rv: store.rv,
                        kind: "ADDED",
                        key: k.clone(),
                        object: obj,
                    };
                    if matches(&ev) {
                        initial.push(line("ADDED", &ev.object));
                    }
                }
                (Some(sub), store.rv)
            }
        }
    };
    let shutdown = inner.shutdown.clone();
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let Some(sub) = sub.as_mut() else { return };
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.notified() => return,
                ev = sub.recv() => match ev {
                    Ok(e) => {
                        if e.rv > start && matches(&e) && tx.send(line(e.kind, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind: end the stream; the client re-watches from its last resourceVersion.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

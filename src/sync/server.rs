//! The in-cluster engine's HTTP endpoints on one port: `GET /healthz` (the process serves),
//! `GET /readyz` (Applications are listed and watched), `POST /webhook` and `POST /api/webhook`
//! (Gitea pushes; the second is Argo CD's path), `GET /metrics` (Prometheus text), and the lab
//! page: `GET /` (HTML, see [`super::page`]) and `GET /lab/ca.crt` (the lab CA's public
//! certificate), which the `lab-page` Ingress publishes as `https://lab.<domain>`.
//!
//! Place in the data flow: Gitea → `POST /webhook` → [`super::webhook::Webhook::check`] →
//! a [`super::run::Trigger`] (or, on a standby engine, Argo's refresh annotation on the matching
//! Applications, which the Lease holder sees through its watch).
//!
//! Architecture invariant: the body is never read past the cap, nothing is done for a request
//! whose signature does not verify, and a webhook only ever asks for a refresh.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::app::REFRESH_ANNOTATION;
use super::engine::Engine;
use super::run::Trigger;
use super::webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, Webhook};

/// The webhook path (what the Gitea hook uses).
pub const WEBHOOK_PATH: &str = "/webhook";
/// The same endpoint at the path Argo CD's server uses for Git webhooks, so a hook written for
/// Argo CD works unchanged.
pub const ARGO_WEBHOOK_PATH: &str = "/api/webhook";

/// What the endpoints need.
pub struct ServerState {
    /// The engine (for stats, and for the standby's refresh annotations).
    pub engine: Arc<Engine>,
    /// Signature checking; `None` disables the webhook (503), e.g. no secret configured.
    pub webhook: Option<Arc<Webhook>>,
    /// Where triggers go.
    pub triggers: mpsc::UnboundedSender<Trigger>,
    /// Applications listed and watched.
    pub ready: watch::Receiver<bool>,
    /// Holding the Lease.
    pub leader: watch::Receiver<bool>,
    /// The lab page; `None` serves no page (404).
    pub page: Option<Arc<super::page::gather::PageSource>>,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())))
        .expect("a valid response")
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    crate::edges::http::serve::serve(
        listener,
        move |req| {
            let state = state.clone();
            async move { handle(&state, req).await }
        },
        shutdown,
    )
    .await;
}

async fn handle(state: &ServerState, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if *state.ready.borrow() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first list of Applications\n",
                )
            }
        }
        (&Method::GET, "/metrics") => text(StatusCode::OK, metrics(state)),
        (&Method::GET | &Method::HEAD, "/") if state.page.is_some() => {
            let page = state.page.as_ref().expect("checked");
            let html = page.html(&state.engine).await;
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/html; charset=utf-8")
                .header("cache-control", "no-store")
                .header(
                    "content-security-policy",
                    super::page::html::content_security_policy(),
                )
                .header("x-content-type-options", "nosniff")
                .header("referrer-policy", "no-referrer")
                .body(Full::new(Bytes::from(html)))
                .expect("a valid response")
        }
        (&Method::GET, super::page::CA_PATH) => {
            match state.page.as_ref().and_then(|p| p.cfg.ca_pem.clone()) {
                Some(pem) => Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/x-pem-file")
                    .header("x-content-type-options", "nosniff")
                    // The page's `download` attribute names the file.
                    .header("content-disposition", "attachment")
                    .body(Full::new(Bytes::from(pem)))
                    .expect("a valid response"),
                None => text(StatusCode::NOT_FOUND, "no lab CA certificate here\n"),
            }
        }
        (&Method::POST, WEBHOOK_PATH | ARGO_WEBHOOK_PATH) => webhook(state, req).await,
        (_, WEBHOOK_PATH | ARGO_WEBHOOK_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn webhook(state: &ServerState, req: Request<Incoming>) -> Response<Body> {
    let Some(hook) = &state.webhook else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook disabled: no secret configured\n",
        );
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header(SIGNATURE_HEADER);
    let delivery = header(DELIVERY_HEADER);
    let event = header(EVENT_HEADER);
    let declared: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let max = hook.max_body();
    let (body, len) = if declared > max {
        (Bytes::new(), declared)
    } else {
        // Never buffer more than the cap, whatever the sender claims.
        match Limited::new(req.into_body(), max).collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                let n = b.len();
                (b, n)
            }
            Err(_) => (Bytes::new(), max + 1),
        }
    };
    let push = match hook.check(&body, len, signature.as_deref(), delivery.as_deref()) {
        Ok(p) => p,
        Err(r) => {
            tracing::warn!(reason = r.as_str(), delivery = ?delivery, "webhook rejected");
            let code = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text(code, format!("{}\n", r.as_str()));
        }
    };
    if event.as_deref().is_some_and(|e| e != "push") {
        return text(StatusCode::OK, "ignored: not a push\n");
    }
    tracing::info!(git_ref = %push.git_ref, after = %push.after, "webhook push");
    if *state.leader.borrow() {
        let _ = state.triggers.send(Trigger::Push(push));
        return text(StatusCode::ACCEPTED, "refresh queued\n");
    }
    // A standby: ask the Lease holder through Argo's refresh annotation.
    let apps = match state.engine.list_apps().await {
        Ok(a) => a,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    let mut n = 0;
    for a in apps {
        let url = a["spec"]["source"]["repoURL"].as_str().unwrap_or_default();
        let Some(name) = a["metadata"]["name"].as_str() else {
            continue;
        };
        if !push.concerns(url) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}});
        if state
            .engine
            .apps_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
        {
            n += 1;
        }
    }
    text(
        StatusCode::ACCEPTED,
        format!("refresh requested for {n} Applications\n"),
    )
}

fn metrics(state: &ServerState) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &state.engine.stats;
    let mut out = String::new();
    let mut line = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    line(
        "homelab_sync_reconciles_total",
        "Reconciles run.",
        s.reconciles.load(Relaxed),
    );
    line(
        "homelab_sync_syncs_total",
        "Syncs run.",
        s.syncs.load(Relaxed),
    );
    line(
        "homelab_sync_applied_total",
        "Objects written.",
        s.applied.load(Relaxed),
    );
    line(
        "homelab_sync_pruned_total",
        "Objects pruned.",
        s.pruned.load(Relaxed),
    );
    if let Some(h) = &state.webhook {
        let c = h.counters.snapshot();
        out.push_str("# HELP homelab_sync_webhooks_total Webhook deliveries by outcome.\n# TYPE homelab_sync_webhooks_total counter\n");
        for (outcome, v) in [
            ("accepted", c.accepted),
            ("oversized", c.oversized),
            ("bad_signature", c.bad_signature),
            ("replayed", c.replayed),
            ("malformed", c.malformed),
        ] {
            out.push_str(&format!(
                "homelab_sync_webhooks_total{{outcome=\"{outcome}\"}} {v}\n"
            ));
        }
    }
    out.push_str(&format!(
        "# HELP homelab_sync_leader Whether this engine holds the Lease.\n# TYPE homelab_sync_leader gauge\nhomelab_sync_leader {}\n",
        u8::from(*state.leader.borrow())
    ));
    out
}

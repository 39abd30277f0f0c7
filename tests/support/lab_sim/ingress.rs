//! The NGINX Ingress Controller's data plane on the node's address: one TLS listener that picks
//! the certificate by SNI from the Ingress objects of class `nginx` (the Secret named in
//! `spec.tls`, as cert-manager filled it), then routes each request by its Host header and path
//! to the Ingress rule's backend Service, and from there to a pod (see [`super::network`]).
//!
//! What NIC does and this does too: no certificate for an unknown name (the handshake fails, so a
//! client trusting only the lab CA never sees a page it should not), `client_max_body_size` 1m
//! unless `nginx.org/client-max-body-size` says otherwise (413), 404 for a host no Ingress
//! serves, 502 when the Service has no ready backend, `X-Forwarded-*` headers. TLS is never
//! relaxed: the served certificate is the Secret's, issued from the lab CA by the fake
//! cert-manager.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use super::network::Network;
use crate::support::fake_kube::Inner;

type Body = BoxBody<Bytes, hyper::Error>;

/// The class this controller serves (`-ingress-class=nginx`).
const CLASS: &str = "nginx";

/// What the ingress saw, for assertions.
#[derive(Clone, Debug)]
pub struct Hit {
    pub host: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Clone)]
pub struct Ingress {
    pub hits: Arc<Mutex<Vec<Hit>>>,
}

fn ingresses(kube: &Inner) -> Vec<Value> {
    let store = kube.store.lock().unwrap();
    let from = (
        "networking.k8s.io".to_string(),
        "ingresses".to_string(),
        String::new(),
        String::new(),
    );
    store
        .objects
        .range(from..)
        .take_while(|(k, _)| k.0 == "networking.k8s.io" && k.1 == "ingresses")
        .filter_map(|(k, _)| store.render(k))
        .filter(|i| i.pointer("/spec/ingressClassName").and_then(Value::as_str) == Some(CLASS))
        .collect()
}

fn hosts_of(tls: &Value) -> Vec<String> {
    tls["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect()
}

struct Certs {
    kube: Arc<Inner>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs")
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?.to_string();
        for ing in ingresses(&self.kube) {
            let ns = ing.pointer("/metadata/namespace").and_then(Value::as_str)?;
            for tls in ing
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !hosts_of(tls).contains(&sni) {
                    continue;
                }
                let secret = tls["secretName"].as_str()?;
                let data = {
                    let store = self.kube.store.lock().unwrap();
                    store.render(&(String::new(), "secrets".into(), ns.into(), secret.into()))?["data"].clone()
                };
                let pem = |k: &str| {
                    base64::engine::general_purpose::STANDARD
                        .decode(data[k].as_str().unwrap_or_default())
                        .ok()
                };
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&pem("tls.crt")?)
                        .collect::<Result<_, _>>()
                        .ok()?;
                let key = PrivateKeyDer::from_pem_slice(&pem("tls.key")?).ok()?;
                let signer = self.provider.key_provider.load_private_key(key).ok()?;
                return Some(Arc::new(CertifiedKey::new(certs, signer)));
            }
        }
        None
    }
}

/// Bytes from a size like nginx's `client_max_body_size` (`0` = no limit).
fn size_limit(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (n, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (&v[..], 1),
    };
    let n: u64 = n.parse().ok()?;
    (n > 0).then_some(n * mult)
}

/// The backend of `host` + `path`: (ingress, namespace, service, port).
fn route(kube: &Inner, host: &str, path: &str) -> Option<(Value, String, String, String)> {
    let mut best: Option<(usize, (Value, String, String, String))> = None;
    for ing in ingresses(kube) {
        let ns = ing
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for rule in ing
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if rule["host"].as_str() != Some(host) {
                continue;
            }
            for p in rule
                .pointer("/http/paths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let prefix = p["path"].as_str().unwrap_or("/");
                let matches = match p["pathType"].as_str() {
                    Some("Exact") => path == prefix,
                    _ => {
                        let pre = prefix.trim_end_matches('/');
                        path == pre || path.starts_with(&format!("{pre}/")) || pre.is_empty()
                    }
                };
                if !matches || best.as_ref().is_some_and(|(l, _)| *l >= prefix.len()) {
                    continue;
                }
                let svc = p
                    .pointer("/backend/service/name")
                    .and_then(Value::as_str)?
                    .to_string();
                let port = match p.pointer("/backend/service/port") {
                    Some(v) if v["number"].is_number() => v["number"].to_string(),
                    Some(v) => v["name"].as_str().unwrap_or_default().to_string(),
                    None => continue,
                };
                best = Some((prefix.len(), (ing.clone(), ns.clone(), svc, port)));
            }
        }
    }
    best.map(|(_, r)| r)
}

fn text(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/html")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

async fn proxy(
    kube: Arc<Inner>,
    net: Network,
    hits: Arc<Mutex<Vec<Hit>>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let record = |status: u16| {
        hits.lock().unwrap().push(Hit {
            host: host.clone(),
            method: method.clone(),
            path: path.clone(),
            status,
        })
    };
    let Some((ing, ns, svc, port)) = route(&kube, &host, &path) else {
        record(404);
        return Ok(text(
            404,
            "<html><center><h1>404 Not Found</h1></center></html>",
        ));
    };
    let limit = ing
        .pointer("/metadata/annotations/nginx.org~1client-max-body-size")
        .and_then(Value::as_str)
        .map_or(Some(1 << 20), size_limit);
    let length: Option<u64> = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let (Some(limit), Some(len)) = (limit, length)
        && len > limit
    {
        record(413);
        return Ok(text(
            413,
            "<html><center><h1>413 Request Entity Too Large</h1></center></html>",
        ));
    }
    let Some(backend) = net.service_backend(&ns, &svc, &port) else {
        record(502);
        return Ok(text(
            502,
            "<html><center><h1>502 Bad Gateway</h1></center></html>",
        ));
    };
    let Ok(stream) = tokio::net::TcpStream::connect(backend).await else {
        record(502);
        return Ok(text(
            502,
            "<html><center><h1>502 Bad Gateway</h1></center></html>",
        ));
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        record(502);
        return Ok(text(
            502,
            "<html><center><h1>502 Bad Gateway</h1></center></html>",
        ));
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts
        .headers
        .insert("x-forwarded-for", peer.ip().to_string().parse().unwrap());
    parts
        .headers
        .insert("x-forwarded-proto", "https".parse().unwrap());
    parts
        .headers
        .insert("x-forwarded-host", host.parse().unwrap());
    parts
        .headers
        .insert("x-real-ip", peer.ip().to_string().parse().unwrap());
    // nginx speaks HTTP/1.1 to upstreams, with the path only.
    parts.version = hyper::Version::HTTP_11;
    if let Some(pq) = parts.uri.path_and_query() {
        parts.uri = pq.as_str().parse().unwrap();
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            record(resp.status().as_u16());
            Ok(resp.map(|b| b.boxed()))
        }
        Err(_) => {
            record(502);
            Ok(text(
                502,
                "<html><center><h1>502 Bad Gateway</h1></center></html>",
            ))
        }
    }
}

impl Ingress {
    /// Serve on `listener` (the node's address, port 443 unless the test could not bind it).
    pub fn start(listener: std::net::TcpListener, kube: Arc<Inner>, net: Network) -> Ingress {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Certs {
                kube: kube.clone(),
                provider,
            }));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (acceptor, kube, net, hits) =
                    (acceptor.clone(), kube.clone(), net.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        proxy(kube.clone(), net.clone(), hits.clone(), peer, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ingress { hits }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

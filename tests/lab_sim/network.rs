//! The cluster network, as the test plays it: pods listen on 127.0.0.1 ports; a Service reaches
//! the pods its selector matches, on the container port its `targetPort` names (kube-proxy); an
//! in-cluster name `<service>.<namespace>.svc.cluster.local:<port>` resolves to a stable local
//! forwarder that picks the Service's backend on every connection (a ClusterIP), so a client can
//! be given the address before the pods exist, and a Service without ready pods refuses
//! connections as a real one does.
//!
//! Every hop is read from the objects in the fake API server, so a Service whose selector or
//! `targetPort` does not match its pods reaches nothing here either.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::fake_kube::Inner;
use crate::fake_kube::store::Key;

/// One pod's listening ports.
#[derive(Clone, Debug)]
pub struct PodEndpoint {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Container port, by name and by number → where the test serves it.
    pub ports: BTreeMap<String, SocketAddr>,
}

#[derive(Clone)]
pub struct Network {
    kube: Arc<Inner>,
    pods: Arc<Mutex<BTreeMap<String, PodEndpoint>>>,
    forwarders: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    proxy: Arc<Mutex<Option<SocketAddr>>>,
}

impl Network {
    pub fn new(kube: Arc<Inner>) -> Network {
        Network {
            kube,
            pods: Arc::default(),
            forwarders: Arc::default(),
            proxy: Arc::default(),
        }
    }

    /// The pods of workload `id` (`<ns>/<name>`) now listen on `ports` (container port name or
    /// number → address). Replaces what the workload registered before.
    pub fn register(&self, id: &str, ep: PodEndpoint) {
        self.pods.lock().unwrap().insert(id.to_string(), ep);
    }

    /// The container ports of a pod template's first container that name `port` (the port
    /// the process really listens on), by name and number, mapped to `addr`: a Service whose
    /// `targetPort` names another port reaches nothing, as on a real node.
    pub fn ports_on(
        template: &Value,
        port: &str,
        addr: SocketAddr,
    ) -> BTreeMap<String, SocketAddr> {
        let mut out = BTreeMap::new();
        for p in template
            .pointer("/spec/containers/0/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| {
                p["containerPort"]
                    .as_i64()
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)
            })
        {
            if let Some(n) = p["name"].as_str() {
                out.insert(n.to_string(), addr);
            }
            out.insert(port.to_string(), addr);
        }
        out
    }

    fn object(&self, k: Key) -> Option<Value> {
        self.kube.store.lock().unwrap().render(&k)
    }

    /// Where Service `name` in `ns` sends a connection to `port` (number or port name), now.
    pub fn service_backend(&self, ns: &str, name: &str, port: &str) -> Option<SocketAddr> {
        let svc = self.object((String::new(), "services".into(), ns.into(), name.into()))?;
        let sp = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| {
                p["port"].as_i64().map(|n| n.to_string()).as_deref() == Some(port)
                    || p["name"] == port
            })?
            .clone();
        let target = match &sp["targetPort"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => sp["port"].to_string(),
        };
        let selector: BTreeMap<String, String> =
            serde_json::from_value(svc.pointer("/spec/selector").cloned()?).ok()?;
        let pods = self.pods.lock().unwrap();
        pods.values()
            .filter(|p| {
                p.namespace == ns && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .find_map(|p| p.ports.get(&target).copied())
    }

    /// Resolve `<service>.<ns>.svc.cluster.local:<port>` (or `<service>.<ns>.svc:<port>`) to a
    /// forwarder for that Service port; `None` for a name that is not a Service's.
    pub fn resolve(&self, authority: &str) -> Option<SocketAddr> {
        let (host, port) = authority.rsplit_once(':')?;
        let host = host
            .strip_suffix(".svc.cluster.local")
            .or_else(|| host.strip_suffix(".svc"))?;
        let (name, ns) = host.split_once('.')?;
        if let Some(a) = self.forwarders.lock().unwrap().get(authority) {
            return Some(*a);
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        listener.set_nonblocking(true).ok()?;
        let addr = listener.local_addr().ok()?;
        self.forwarders
            .lock()
            .unwrap()
            .insert(authority.to_string(), addr);
        let net = self.clone();
        let (ns, name, port) = (ns.to_string(), name.to_string(), port.to_string());
        let spawn = move || {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let backend = net.service_backend(&ns, &name, &port);
                    tokio::spawn(async move {
                        // No ready backend: the connection is refused (closed at once).
                        let Some(b) = backend else { return };
                        if let Ok(mut out) = tokio::net::TcpStream::connect(b).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                }
            });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let _guard = h.enter();
                spawn();
            }
            Err(_) => return None,
        }
        Some(addr)
    }

    /// A forward HTTP proxy (`http_proxy=http://<it>`) that sends each request for an in-cluster
    /// name to the Service's backend, so a process on the host reaches `http://<service>.<ns>
    /// .svc.cluster.local:<port>/…` as a pod would. Other names get 502.
    pub fn http_proxy(&self) -> SocketAddr {
        if let Some(a) = *self.proxy.lock().unwrap() {
            return a;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        *self.proxy.lock().unwrap() = Some(addr);
        let net = self.clone();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let net = net.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| forward(net.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn bad_gateway() -> hyper::Response<ProxyBody> {
    use http_body_util::BodyExt as _;
    hyper::Response::builder()
        .status(502)
        .body(
            http_body_util::Full::new(bytes::Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

async fn forward(
    net: Network,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<ProxyBody>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    let uri = req.uri().clone();
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16().or(Some(80))) else {
        return Ok(bad_gateway());
    };
    let Some(addr) = net.resolve(&format!("{host}:{port}")) else {
        return Ok(bad_gateway());
    };
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return Ok(bad_gateway());
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return Ok(bad_gateway());
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    if let Some(pq) = parts.uri.path_and_query() {
        parts.uri = pq.as_str().parse().unwrap();
    }
    parts.headers.remove("proxy-connection");
    match sender
        .send_request(hyper::Request::from_parts(parts, body))
        .await
    {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(_) => Ok(bad_gateway()),
    }
}

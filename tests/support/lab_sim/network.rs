//! The cluster network, as the test plays it: pods listen on 127.0.0.1 ports; a Service reaches
//! the pods its selector matches, on the container port its `targetPort` names (kube-proxy); an
//! in-cluster name `<service>.<namespace>.svc.cluster.local:<port>` resolves to a stable local
//! forwarder that picks the Service's backend on every connection (a ClusterIP), so a client can
//! be given the address before the pods exist, and a Service without ready pods refuses
//! connections as a real one does.
//!
//! Every hop is read from the objects in the fake API server, so a Service whose selector or
//! `targetPort` does not match its pods reaches nothing here either.
//!
//! Names outside the cluster (the lab's `https://<name>.<domain>` URLs) resolve only as the
//! cluster's CoreDNS answers them from its Corefile, read from ConfigMap `kube-system/coredns` at
//! the moment of each connection ([`Corefile`]): the test world has no public DNS (a laptop
//! offline, or behind a router that drops answers with private addresses), so a name only the
//! internet would answer does not resolve, and a stack that does not give the cluster's DNS the
//! lab's names fails here as it would there.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::fake_kube::Inner;
use crate::support::fake_kube::store::Key;

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
    /// Where a connection to a node's port 443 lands: the ingress (on its own port when the
    /// test could not bind 443).
    ingress: SocketAddr,
    /// Lookups the cluster's DNS could not answer, for failure messages.
    misses: Arc<Mutex<Vec<String>>>,
}

impl Network {
    pub fn new(kube: Arc<Inner>, ingress: SocketAddr) -> Network {
        Network {
            kube,
            pods: Arc::default(),
            forwarders: Arc::default(),
            proxy: Arc::default(),
            ingress,
            misses: Arc::default(),
        }
    }

    /// The cluster's CoreDNS configuration as it is now (`None`: no ConfigMap, no DNS).
    pub fn corefile(&self) -> Option<Corefile> {
        let cm = self.object((
            String::new(),
            "configmaps".into(),
            "kube-system".into(),
            "coredns".into(),
        ))?;
        let text = cm.pointer("/data/Corefile")?.as_str()?;
        Some(
            Corefile::parse(text)
                .unwrap_or_else(|e| panic!("the Corefile is not one CoreDNS reads: {e}\n{text}")),
        )
    }

    /// What a pod's resolver gets for `host` (an A lookup), from the cluster's DNS.
    pub fn pod_lookup(&self, host: &str) -> Result<IpAddr, String> {
        match self.corefile() {
            None => Err("no ConfigMap `kube-system/coredns`: the cluster has no DNS".into()),
            Some(c) => c.lookup_a(host),
        }
    }

    /// Lookups that failed so far.
    pub fn misses(&self) -> Vec<String> {
        self.misses.lock().unwrap().clone()
    }

    /// A local address that stands for `host:port` as a pod reaches it: each connection looks
    /// `host` up in the cluster's DNS as it is at that moment and goes to the address it
    /// answers (a node's 443 is the ingress); a name it does not answer gets the connection
    /// closed, as a failed lookup ends a client's attempt.
    pub fn lab_name(&self, host: &str, port: u16) -> SocketAddr {
        let key = format!("dns:{host}:{port}");
        if let Some(a) = self.forwarders.lock().unwrap().get(&key) {
            return *a;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        self.forwarders.lock().unwrap().insert(key, addr);
        let net = self.clone();
        let host = host.to_string();
        let handle = tokio::runtime::Handle::current();
        let _guard = handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let lookup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    net.pod_lookup(&host)
                }))
                .unwrap_or_else(|p| {
                    Err(p
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "the DNS model panicked".into()))
                });
                let target = match lookup {
                    Ok(ip) if ip == net.ingress.ip() && port == 443 => net.ingress,
                    Ok(ip) => SocketAddr::new(ip, port),
                    Err(why) => {
                        net.misses
                            .lock()
                            .unwrap()
                            .push(format!("lookup {host}: {why}"));
                        continue;
                    }
                };
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        addr
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
    /// forwarder for that Service port; any other name to [`Network::lab_name`].
    pub fn resolve(&self, authority: &str) -> Option<SocketAddr> {
        let (full, port) = authority.rsplit_once(':')?;
        let Some(host) = full
            .strip_suffix(".svc.cluster.local")
            .or_else(|| full.strip_suffix(".svc"))
        else {
            // Any other name: as the cluster's DNS answers it.
            return Some(self.lab_name(full, port.parse().ok()?));
        };
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

/// CoreDNS as far as the lab's names go, read from a Corefile: server blocks by zone, and in
/// them the plugins that answer names outside the cluster — `template` (coredns/coredns
/// v1.14.x `plugin/template/template.go`: a template answers when the name is in its zones and
/// the class and type match; otherwise the next template, then the next plugin), `hosts`
/// (`plugin/hosts/hosts.go`: its entries, else the next plugin with `fallthrough`), and
/// `forward`, which in the test world reaches no upstream. Plugins run in CoreDNS's fixed order
/// (`plugin.cfg`: template, hosts, kubernetes, forward), not the Corefile's. A directive this
/// model cannot answer for (a `template` with `match`, an answer other than an A record of
/// `{{ .Name }}`) is an error, so a new Corefile gets modelled before a test relies on it.
#[derive(Clone, Debug)]
pub struct Corefile {
    blocks: Vec<ServerBlock>,
}

#[derive(Clone, Debug)]
struct ServerBlock {
    zones: Vec<String>,
    templates: Vec<Template>,
    hosts: Option<Hosts>,
    forward: bool,
}

#[derive(Clone, Debug)]
struct Template {
    zones: Vec<String>,
    class: String,
    qtype: String,
    answer: Option<IpAddr>,
}

#[derive(Clone, Debug)]
struct Hosts {
    entries: BTreeMap<String, IpAddr>,
    fallthrough: bool,
}

/// Lowercase, without the trailing dot.
fn fqdn(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

/// Caddyfile tokens, each with its line: words, quoted strings, `{`, `}`; `#` starts a comment.
fn tokens(text: &str) -> Result<Vec<(usize, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c == '#' {
                break;
            } else if c == '"' {
                chars.next();
                let mut t = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => t.extend(chars.next()),
                        Some(x) => t.push(x),
                        None => return Err(format!("line {}: unterminated quote", n + 1)),
                    }
                }
                out.push((n, t));
            } else {
                let mut t = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() {
                        break;
                    }
                    t.push(x);
                    chars.next();
                }
                out.push((n, t));
            }
        }
    }
    Ok(out)
}

/// A directive: its line's tokens, and the directives of its block (`name args { … }`).
#[derive(Debug)]
struct Directive {
    args: Vec<String>,
    block: Vec<Directive>,
}

fn directives(toks: &[(usize, String)], i: &mut usize) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    while *i < toks.len() {
        if toks[*i].1 == "}" {
            *i += 1;
            return Ok(out);
        }
        let line = toks[*i].0;
        let mut args = Vec::new();
        while *i < toks.len() && toks[*i].0 == line && toks[*i].1 != "{" && toks[*i].1 != "}" {
            args.push(toks[*i].1.clone());
            *i += 1;
        }
        let mut block = Vec::new();
        if *i < toks.len() && toks[*i].1 == "{" && toks[*i].0 == line {
            *i += 1;
            block = directives(toks, i)?;
        }
        out.push(Directive { args, block });
    }
    Err("a block is not closed".into())
}

impl Corefile {
    pub fn parse(text: &str) -> Result<Corefile, String> {
        let toks = tokens(text)?;
        let mut i = 0;
        let mut blocks = Vec::new();
        while i < toks.len() {
            let mut keys = Vec::new();
            while i < toks.len() && toks[i].1 != "{" {
                keys.extend(
                    toks[i]
                        .1
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string),
                );
                i += 1;
            }
            if i == toks.len() {
                return Err(format!("server block {keys:?} has no body"));
            }
            i += 1;
            let body = directives(&toks, &mut i)?;
            let zones: Vec<String> = keys
                .iter()
                .map(|k| {
                    let k = k.trim_start_matches("dns://");
                    let zone = k.rsplit_once(':').map_or(k, |(z, _)| z);
                    if zone == "." {
                        ".".to_string()
                    } else {
                        fqdn(zone)
                    }
                })
                .collect();
            let mut block = ServerBlock {
                zones: zones.clone(),
                templates: Vec::new(),
                hosts: None,
                forward: false,
            };
            for d in body {
                match d.args.first().map(String::as_str) {
                    Some("template") => block.templates.push(template(&d, &zones)?),
                    Some("hosts") => block.hosts = Some(hosts(&d)?),
                    Some("forward") => block.forward = true,
                    _ => {}
                }
            }
            blocks.push(block);
        }
        Ok(Corefile { blocks })
    }

    /// The A record a pod gets for `name`, or why there is none.
    pub fn lookup_a(&self, name: &str) -> Result<IpAddr, String> {
        let name = fqdn(name);
        // The server block of the longest zone holding the name answers (CoreDNS dnsserver).
        let block = self
            .blocks
            .iter()
            .flat_map(|b| b.zones.iter().map(move |z| (z, b)))
            .filter(|(z, _)| in_zone(&name, z))
            .max_by_key(|(z, _)| if z.as_str() == "." { 0 } else { z.len() + 1 })
            .map(|(_, b)| b)
            .ok_or_else(|| format!("no server block of the Corefile holds `{name}`"))?;
        for t in &block.templates {
            let zone_ok = t.zones.iter().any(|z| in_zone(&name, z));
            let class_ok = t.class == "IN" || t.class == "ANY";
            let type_ok = t.qtype == "A" || t.qtype == "ANY";
            if zone_ok && class_ok && type_ok {
                return t
                    .answer
                    .ok_or_else(|| format!("CoreDNS answers `{name}` with no address"));
            }
        }
        if let Some(h) = &block.hosts {
            if let Some(ip) = h.entries.get(&name) {
                return Ok(*ip);
            }
            if !h.fallthrough {
                return Err(format!("`hosts` has no entry for `{name}`"));
            }
        }
        if block.forward {
            return Err(format!(
                "`{name}` is forwarded to the upstream resolver, and the lab's network has no public DNS"
            ));
        }
        Err(format!("nothing in the Corefile answers `{name}`"))
    }
}

fn template(d: &Directive, server_zones: &[String]) -> Result<Template, String> {
    let class = d.args.get(1).cloned().unwrap_or_default().to_uppercase();
    let qtype = d.args.get(2).cloned().unwrap_or_default().to_uppercase();
    let zones: Vec<String> = if d.args.len() > 3 {
        d.args[3..].iter().map(|z| fqdn(z)).collect()
    } else {
        server_zones.to_vec()
    };
    let mut answer = None;
    let mut rcode = None;
    for sub in &d.block {
        match sub.args.first().map(String::as_str) {
            Some("answer") => {
                let rr = sub.args.get(1).ok_or("`answer` without a record")?;
                // The Go template's one variable this model knows: the question's name.
                let rr_named = rr
                    .replace("{{ .Name }}", "NAME")
                    .replace("{{.Name}}", "NAME");
                let fields: Vec<&str> = rr_named.split_whitespace().collect();
                match fields.as_slice() {
                    ["NAME", _ttl, "IN", "A", ip] => {
                        answer = Some(ip.parse().map_err(|e| format!("answer `{rr}`: {e}"))?)
                    }
                    _ => return Err(format!("template answer `{rr}` is not modelled")),
                }
            }
            Some("rcode") => rcode = sub.args.get(1).cloned(),
            Some(other) => return Err(format!("template `{other}` is not modelled")),
            None => {}
        }
    }
    if answer.is_none() && rcode.as_deref().is_some_and(|r| r != "NOERROR") {
        return Err(format!("template rcode {rcode:?} is not modelled"));
    }
    Ok(Template {
        zones,
        class,
        qtype,
        answer,
    })
}

fn hosts(d: &Directive) -> Result<Hosts, String> {
    if d.args.len() > 1 {
        return Err("`hosts FILE` is not modelled".into());
    }
    let mut entries = BTreeMap::new();
    let mut fallthrough = false;
    for sub in &d.block {
        match sub.args.first().map(String::as_str) {
            Some("fallthrough") => fallthrough = true,
            Some(first) => {
                if let Ok(ip) = first.parse::<IpAddr>() {
                    for n in &sub.args[1..] {
                        entries.insert(fqdn(n), ip);
                    }
                } else if !matches!(first, "ttl" | "reload" | "no_reverse") {
                    return Err(format!("hosts `{first}` is not modelled"));
                }
            }
            None => {}
        }
    }
    Ok(Hosts {
        entries,
        fallthrough,
    })
}

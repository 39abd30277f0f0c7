//! The kubelet, as the test plays it: when a workload rolls out, what its image is decides what
//! runs, configured only from the pod template as the cluster holds it — environment variables
//! (values, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `$(VAR)` expansion), ConfigMap and
//! Secret volumes materialised in a temp dir, container ports for the Services that select it.
//!
//! | image | what runs |
//! |---|---|
//! | `gitea/gitea` | the fake Gitea, plain HTTP on `GITEA__server__HTTP_PORT`'s container port, `ROOT_URL` and `ALLOWED_HOST_LIST` from the environment |
//! | `drone/drone` | the fake Drone: Gitea server, OAuth client, `DRONE_USER_CREATE`, server and proxy addresses from the environment; a new template restarts it |
//! | `drone/drone-runner-kube` | registers the runner (its namespace and RPC secret) that runs builds ([`super::runner`]) |
//! | this build's published engine image (`ghcr.io/<owner>/homelab`), `homelab.local/homelab` | the real `homelab` binary with the container's args (`sync --in-cluster`), `--kubeconfig` standing in for its service account; the side-loaded `homelab.local` image only where `up` imported it into the node's containerd (the fake multipass's record) |
//! | `quay.io/argoproj/argocd` | `argocd-application-controller`: the stand-in of [`super::argocd_controller`]; `argocd-server`: its `/api/webhook` on container port 8080 |
//! | `<gitea host>/…` | pulled from the fake Gitea's registry (missing: `ImagePullBackOff`) once the node resolves the registry's name — a Multipass node from its `/etc/hosts` (the fake multipass's record), another cluster's nodes as its DNS answers — its files served over HTTP (nginx) |
//!
//! Pods reach the lab's public names (Drone → Gitea) only as the cluster's DNS answers them
//! ([`super::network::Network::lab_name`]).
//!
//! Before any of that, an image from a public registry is pulled only as the kubelet would
//! ([`World::pull_if_needed`]: its pull policy and whether the node's containerd holds it, as the
//! fake multipass records `ctr image import`); each pull is a connection outside the lab, which
//! fails with `ErrImagePull` while the test has the registries cut.
//!
//! Other images (cert-manager, NIC, CoreDNS) need nothing to run here: the fake API server's
//! controllers and [`super::ingress`] play them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::World;
use super::network::{Network, PodEndpoint};
use crate::support::fake_drone::{self, FakeDrone};
use crate::support::fake_gitea::{self, FakeGitea};
use crate::support::fake_kube::controllers::{PodsVerdict, PodsWaiting};

/// A running `homelab sync` process.
pub struct SyncProcess {
    pub child: tokio::process::Child,
    pub listen: SocketAddr,
    pub generation: i64,
    pub log: PathBuf,
}

/// The runner as its pod configured it.
#[derive(Clone, Debug)]
pub struct RunnerPod {
    pub namespace: String,
    pub rpc_secret: String,
}

/// The files a pod's container sees at its mount paths.
pub struct Mounts {
    /// mountPath → host directory.
    pub dirs: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// The host path of a path inside the container (under a mount), if it is under one.
    pub fn host(&self, path: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .filter(|(m, _)| {
                path == m || path.starts_with(&format!("{}/", m.trim_end_matches('/')))
            })
            .max_by_key(|(m, _)| m.len())
            .map(|(m, d)| d.join(path[m.len()..].trim_start_matches('/')))
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> PodsVerdict {
    Err(PodsWaiting {
        reason: reason.into(),
        message: message.into(),
    })
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

impl World {
    fn object(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.kube.store.lock().unwrap().render(&(
            group.into(),
            plural.into(),
            ns.into(),
            name.into(),
        ))
    }

    /// The value a `secretKeyRef`/`configMapKeyRef` (`r`) names, or the kubelet's error when
    /// the object (`plural`, called `what` in the message) or its key is missing; `None` (the
    /// variable is left out) when the reference is `optional: true` and either is missing, as
    /// the kubelet's `makeEnvironmentVariables` skips it (kubernetes v1.36
    /// pkg/kubelet/kubelet_pods.go: "ignore error when marked optional"; Argo CD's install.yaml
    /// reads every `argocd-cmd-params-cm` key that way).
    fn key_ref(
        &self,
        plural: &str,
        what: &str,
        ns: &str,
        r: &Value,
    ) -> Result<Option<String>, String> {
        let (n, k) = (
            r["name"].as_str().unwrap_or(""),
            r["key"].as_str().unwrap_or(""),
        );
        match self.data(plural, ns, n).and_then(|d| d.get(k).cloned()) {
            Some(v) => Ok(Some(v)),
            None if r["optional"] == true => Ok(None),
            None => Err(format!("{what} \"{n}\" not found or has no key \"{k}\"")),
        }
    }

    /// A ConfigMap's or Secret's data, decoded.
    pub fn data(&self, plural: &str, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let obj = self.object("", plural, ns, name)?;
        // An object without `data` (Argo CD's argocd-gpg-keys-cm) exists and holds no keys.
        let map = obj
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Some(
            map.into_iter()
                .map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    (
                        k,
                        if plural == "secrets" {
                            b64(v)
                        } else {
                            v.to_string()
                        },
                    )
                })
                .collect(),
        )
    }

    /// The container's environment as the kubelet builds it.
    pub fn env(
        &self,
        ns: &str,
        pod: &str,
        container: &Value,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                // $(VAR) refers to a variable defined earlier in the list.
                let mut out = v.to_string();
                for (k, val) in &env {
                    out = out.replace(&format!("$({k})"), val);
                }
                out
            } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                match self.key_ref("secrets", "secret", ns, r)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                match self.key_ref("configmaps", "configmap", ns, r)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(p) = e
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                match p {
                    "metadata.namespace" => ns.to_string(),
                    "metadata.name" => pod.to_string(),
                    other => return Err(format!("fieldRef `{other}` is not emulated")),
                }
            } else {
                String::new()
            };
            env.insert(name, value);
        }
        Ok(env)
    }

    /// Materialise the container's ConfigMap, Secret and emptyDir mounts under `dir`.
    pub fn mounts(
        &self,
        ns: &str,
        template: &Value,
        container: &Value,
        dir: &Path,
    ) -> Result<Mounts, String> {
        let volumes: BTreeMap<String, Value> = template
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?.to_string(), v.clone())))
            .collect();
        let mut dirs = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let (name, path) = (
                m["name"].as_str().unwrap_or(""),
                m["mountPath"].as_str().unwrap_or(""),
            );
            let v = volumes
                .get(name)
                .ok_or_else(|| format!("volume \"{name}\" is not defined"))?;
            let host = dir.join(name);
            std::fs::create_dir_all(&host).unwrap();
            // A missing ConfigMap or Secret marked `optional: true` mounts as an empty volume
            // (kubernetes v1.36 pkg/volume/configmap/configmap.go and pkg/volume/secret/secret.go
            // `SetUpAt`: "not found and optional"); Argo CD's pods mount their TLS Secrets so.
            let optional = |src: &str| v[src]["optional"] == true;
            let files = if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
                match self.data("configmaps", ns, cm) {
                    Some(d) => Some(d),
                    None if optional("configMap") => None,
                    None => return Err(format!("configmap \"{cm}\" not found")),
                }
            } else if let Some(s) = v.pointer("/secret/secretName").and_then(Value::as_str) {
                match self.data("secrets", ns, s) {
                    Some(d) => Some(d),
                    None if optional("secret") => None,
                    None => return Err(format!("secret \"{s}\" not found")),
                }
            } else {
                None
            };
            for (k, text) in files.into_iter().flatten() {
                std::fs::write(host.join(k), text).unwrap();
            }
            dirs.push((path.to_string(), host));
        }
        Ok(Mounts { dirs })
    }

    /// What the kubelet does for `workload` (see the module doc).
    pub async fn run_pod(self: Arc<Self>, workload: Value) -> PodsVerdict {
        let ns = workload["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = workload["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
        let template = workload["spec"]["template"].clone();
        let container = template["spec"]["containers"][0].clone();
        let image = container["image"].as_str().unwrap_or_default().to_string();
        let pod = format!("{name}-pod");
        let labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
        let id = format!("{ns}/{name}");
        self.note(&format!(
            "kubelet: {id} generation {generation} runs `{image}`"
        ));

        // Pull: images from the lab's registry must have been pushed there.
        let repo = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
        if let Some(path) = image.strip_prefix(&format!("{}/", self.gitea_host)) {
            // containerd resolves the registry's name through the node's resolver.
            if let Err(why) = self.node_lookup(&self.gitea_host) {
                let (img, tag) = path.rsplit_once(':').unwrap_or((path, "latest"));
                return waiting(
                    "ErrImagePull",
                    format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to do request: Head \"https://{}/v2/{img}/manifests/{tag}\": dial tcp: lookup {}: no such host ({why})",
                        self.gitea_host, self.gitea_host
                    ),
                );
            }
            let (img, tag) = path.rsplit_once(':').unwrap_or((path, "latest"));
            let pulled = self
                .gitea
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|g| g.image(img, tag));
            let Some(pulled) = pulled else {
                return waiting(
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\": not found"),
                );
            };
            *self.site_files.lock().unwrap() = pulled.files;
            self.net.register(
                &id,
                PodEndpoint {
                    namespace: ns.clone(),
                    labels,
                    // The image is built FROM nginx-unprivileged, which listens on 8080.
                    ports: Network::ports_on(&template, "8080", self.site_addr),
                },
            );
            return Ok(());
        }
        // No registry serves `homelab.local`: the image must be in the node's containerd.
        if image.starts_with("homelab.local/") && !self.node_has_image(&image) {
            return waiting(
                "ErrImagePull",
                format!("failed to pull image \"{image}\": not imported on the node"),
            );
        }
        if !image.starts_with("homelab.local/")
            && let Err(why) = self.pull_if_needed(&container, &image)
        {
            return waiting("ErrImagePull", why);
        }
        let env = match self.env(&ns, &pod, &container) {
            Ok(e) => e,
            Err(e) => return waiting("CreateContainerConfigError", e),
        };
        let dir = self
            .work
            .join("pods")
            .join(&ns)
            .join(format!("{name}-{generation}"));
        let mounts = match self.mounts(&ns, &template, &container, &dir) {
            Ok(m) => m,
            Err(e) => return waiting("ContainerCreating", e),
        };
        match repo {
            "gitea/gitea" => self.gitea_pod(&id, &ns, labels, &template, &env).await,
            "drone/drone" => {
                self.drone_pod(&id, &ns, labels, &template, &env, &mounts)
                    .await
            }
            "drone/drone-runner-kube" => {
                *self.runner_pod.lock().unwrap() = Some(RunnerPod {
                    namespace: env
                        .get("DRONE_NAMESPACE_DEFAULT")
                        .cloned()
                        .unwrap_or_default(),
                    rpc_secret: env.get("DRONE_RPC_SECRET").cloned().unwrap_or_default(),
                });
                Ok(())
            }
            r if r == homelab::sync::image::BuildInfo::current().repository
                || r == "homelab.local/homelab" =>
            {
                self.homelab_pod(
                    &id, &ns, labels, &template, &container, env, &mounts, generation, &dir,
                )
                .await
            }
            // Argo CD's image runs every one of its workloads; two matter to the loop.
            "quay.io/argoproj/argocd" => match name.as_str() {
                "argocd-application-controller" => {
                    super::argocd_controller::start(&self.me());
                    Ok(())
                }
                "argocd-server" => {
                    let addr = super::argocd_controller::serve_webhook(self.me()).await;
                    // argocd-server listens on 8080 (install.yaml's container port `server`).
                    self.serve_pod(&id, &ns, labels, &template, "argocd-server", "8080", addr)
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// What the first node's resolver answers for `host`: a Multipass VM reads `/etc/hosts` (as
    /// the fake multipass keeps it; glibc's `files` source comes first); the nodes of a cluster
    /// homelab did not build resolve as its DNS does, which its owner set up for the domain.
    pub fn node_lookup(&self, host: &str) -> Result<std::net::IpAddr, String> {
        let Some(state) = &self.node_state else {
            return self.net.pod_lookup(host);
        };
        let v: Value = std::fs::read_to_string(state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let hosts = v["instances"]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(name, _)| name.ends_with("-1"))
            .and_then(|(_, i)| i["_etc_hosts"].as_str().map(str::to_string))
            .unwrap_or_default();
        hosts
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let ip = w.next()?.parse().ok()?;
                w.any(|n| n.eq_ignore_ascii_case(host)).then_some(ip)
            })
            .next()
            .ok_or_else(|| {
                format!("the node's /etc/hosts has no `{host}`, and its network no public DNS")
            })
    }

    /// Pull `image` from its public registry when the kubelet would, as kubernetes v1.36
    /// `pkg/kubelet/images/image_manager.go` `shouldPullImage` decides: never for `Never`,
    /// always for `Always`, for `IfNotPresent` only when the node lacks it. An unset policy is
    /// what the API server defaulted it to (`pkg/apis/core/v1/defaults.go`
    /// `SetDefaults_Container`: `Always` for a `:latest` or untagged image, else
    /// `IfNotPresent`). The pull is a connection outside the lab ([`World::reach_outside`]);
    /// cut, it fails as containerd's resolver does without a route to the registry.
    pub fn pull_if_needed(&self, container: &Value, image: &str) -> Result<(), String> {
        let reference = docker_reference(image);
        let latest = reference.ends_with(":latest");
        let policy = container["imagePullPolicy"].as_str().unwrap_or(if latest {
            "Always"
        } else {
            "IfNotPresent"
        });
        let present = self.node_has_image(&reference);
        let pull = match policy {
            "Never" => false,
            "Always" => true,
            _ => !present,
        };
        if policy == "Never" && !present {
            return Err(format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ));
        }
        if !pull {
            return Ok(());
        }
        // containerd resolves Docker Hub's `docker.io` at `registry-1.docker.io`
        // (containerd v1.7 `remotes/docker/config/hosts.go`, `defaultHost`).
        let registry = match reference.split('/').next().unwrap_or_default() {
            "docker.io" => "registry-1.docker.io",
            r => r,
        };
        self.reach_outside(&format!("pull {reference}")).map_err(|why| {
            format!(
                "failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": failed to do request: Head \"https://{registry}/v2/\": dial tcp: lookup {registry}: no such host ({why})"
            )
        })
    }

    /// Whether `image` was imported into the first node's containerd (`microk8s ctr image
    /// import`, as the fake multipass records it).
    fn node_has_image(&self, image: &str) -> bool {
        let Some(state) = &self.node_state else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(state) else {
            return false;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["instances"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.ends_with("-1"))
            .any(|(_, i)| {
                i["_images"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r.as_str().map(docker_reference) == Some(docker_reference(image)))
            })
    }

    /// The pod of `server` (which listens on `port`, served at `addr`) answers on the
    /// container ports with that number; none is a pod that never gets Ready.
    #[allow(clippy::too_many_arguments)]
    fn serve_pod(
        &self,
        id: &str,
        ns: &str,
        labels: BTreeMap<String, String>,
        template: &Value,
        server: &str,
        port: &str,
        addr: std::net::SocketAddr,
    ) -> PodsVerdict {
        let ports = Network::ports_on(template, port, addr);
        if ports.is_empty() {
            return waiting(
                "Unhealthy",
                format!("{server} listens on {port}, which no container port names"),
            );
        }
        self.net.register(
            id,
            PodEndpoint {
                namespace: ns.into(),
                labels,
                ports,
            },
        );
        Ok(())
    }

    async fn gitea_pod(
        &self,
        id: &str,
        ns: &str,
        labels: BTreeMap<String, String>,
        template: &Value,
        env: &BTreeMap<String, String>,
    ) -> PodsVerdict {
        let existing = self.gitea.lock().unwrap().clone();
        let gitea = match existing {
            Some(g) => g,
            None => {
                let Some(root) = env.get("GITEA__server__ROOT_URL") else {
                    return waiting("CrashLoopBackOff", "no ROOT_URL");
                };
                let g = FakeGitea::start_plain(fake_gitea::Options::default(), self.lab_ca(), root)
                    .await;
                let net = self.net.clone();
                g.cluster_dns(Arc::new(move |a: &str| net.resolve(a)));
                if let Some(list) = env.get("GITEA__webhook__ALLOWED_HOST_LIST") {
                    g.allow_hook_hosts(list);
                }
                *self.gitea.lock().unwrap() = Some(g.clone());
                g
            }
        };
        // Gitea listens on HTTP_PORT: only a container port with that number reaches it.
        let port = env
            .get("GITEA__server__HTTP_PORT")
            .cloned()
            .unwrap_or_else(|| "3000".into());
        self.serve_pod(id, ns, labels, template, "Gitea", &port, gitea.addr)
    }

    async fn drone_pod(
        &self,
        id: &str,
        ns: &str,
        labels: BTreeMap<String, String>,
        template: &Value,
        env: &BTreeMap<String, String>,
        mounts: &Mounts,
    ) -> PodsVerdict {
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        *self.drone_rpc_secret.lock().unwrap() = get("DRONE_RPC_SECRET");
        let existing = self.drone.lock().unwrap().clone();
        let drone = match existing {
            Some(d) => d,
            None => {
                // DRONE_USER_CREATE=username:<u>,admin:true,token:<t>
                let create: BTreeMap<String, String> = get("DRONE_USER_CREATE")
                    .split(',')
                    .filter_map(|kv| kv.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let ca_pem = get("SSL_CERT_FILE");
                let ca_pem = mounts
                    .host(&ca_pem)
                    .and_then(|p| std::fs::read_to_string(p).ok());
                let proxy = match (
                    env.get("DRONE_SERVER_PROXY_PROTO"),
                    env.get("DRONE_SERVER_PROXY_HOST"),
                ) {
                    (Some(p), Some(h)) => Some(format!("{p}://{h}")),
                    _ => None,
                };
                let gitea_server = get("DRONE_GITEA_SERVER");
                let gitea_name = reqwest::Url::parse(&gitea_server)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                let options = fake_drone::Options {
                    gitea: homelab::edges::http::Endpoint {
                        base_url: gitea_server,
                        ca_pem,
                        // The pod's resolver: the cluster's DNS, at each connection.
                        resolve: Some(self.net.lab_name(&gitea_name, 443)),
                    },
                    admin_user: create.get("username").cloned().unwrap_or_default(),
                    admin_token: create.get("token").cloned().unwrap_or_default(),
                    registration_closed: get("DRONE_REGISTRATION_CLOSED") == "true",
                    custom_trigger: true,
                    server_host: None,
                    proxy,
                };
                let server = format!(
                    "{}://{}",
                    get("DRONE_SERVER_PROTO"),
                    get("DRONE_SERVER_HOST")
                );
                let d = FakeDrone::start_plain(options, &self.lab_ca(), &server).await;
                // Only `admin:true` makes a Drone administrator, who alone can trust a repository.
                d.set_admin(create.get("admin").map(String::as_str) == Some("true"));
                d.runner(super::runner::runner(self.me()));
                *self.drone.lock().unwrap() = Some(d.clone());
                d
            }
        };
        // Every (re)start reads the OAuth client from the environment as it is now.
        drone.restart_with(
            &get("DRONE_GITEA_CLIENT_ID"),
            &get("DRONE_GITEA_CLIENT_SECRET"),
        );
        let port = get("DRONE_SERVER_PORT");
        let port = port.trim_start_matches(':');
        self.serve_pod(id, ns, labels, template, "Drone", port, drone.addr)
    }

    #[allow(clippy::too_many_arguments)]
    async fn homelab_pod(
        &self,
        id: &str,
        ns: &str,
        labels: BTreeMap<String, String>,
        template: &Value,
        container: &Value,
        mut env: BTreeMap<String, String>,
        mounts: &Mounts,
        generation: i64,
        dir: &Path,
    ) -> PodsVerdict {
        let args: Vec<String> = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if container["command"] != serde_json::json!(["homelab"]) {
            return waiting(
                "RunContainerError",
                format!("command {} is not `homelab`", container["command"]),
            );
        }
        {
            let mut sync = self.sync.lock().unwrap();
            if let Some(old) = sync.as_mut() {
                if old.generation == generation {
                    return Ok(());
                }
                let _ = old.child.start_kill();
            }
            *sync = None;
        }
        // The container listens where HOMELAB_SYNC_LISTEN says; the test gives it a free local
        // port and maps the container port that number names to it.
        let wanted = env
            .get("HOMELAB_SYNC_LISTEN")
            .cloned()
            .unwrap_or_else(|| "0.0.0.0:8080".into());
        let container_port = wanted
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        let listen = crate::support::common::free_loopback_addr();
        env.insert("HOMELAB_SYNC_LISTEN".into(), listen.to_string());
        for (k, v) in env.clone() {
            if let Some(p) = mounts.host(&v) {
                env.insert(k, p.display().to_string());
            }
        }
        // The container's /tmp is its own volume, not the host's shared one (two labs in one
        // test binary would share the engine's default work dir under it).
        if let Some(tmp) = mounts.host("/tmp") {
            env.insert("TMPDIR".into(), tmp.display().to_string());
        }
        // In-cluster names: git (libcurl) sends http:// requests through `http_proxy`, which
        // resolves `<service>.<ns>.svc.cluster.local` as the cluster's DNS would.
        let proxy = self.net.http_proxy();
        let log = dir.join("homelab-sync.log");
        std::fs::create_dir_all(dir).unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab"));
        cmd.args(&args);
        if std::env::var_os("E2E_DEBUG").is_some() {
            cmd.arg("-vv");
        }
        // Offline tests watch the engine too: its https:// requests (git to anything but the
        // lab's names) go to the recording proxy, as the pipeline's steps' do. Its http://
        // requests go to the cluster-DNS proxy above, which answers only in-cluster names.
        if let Some((watch, direct)) = self.step_proxy.lock().unwrap().clone() {
            for k in ["https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"] {
                env.insert(k.into(), watch.clone());
            }
            env.insert("no_proxy".into(), direct.clone());
            env.insert("NO_PROXY".into(), direct);
        }
        cmd.arg("--kubeconfig")
            .arg(&self.sync_kubeconfig)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("http_proxy", format!("http://{proxy}"))
            .envs(&env)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return waiting("RunContainerError", e.to_string()),
        };
        *self.sync.lock().unwrap() = Some(SyncProcess {
            child,
            listen,
            generation,
            log: log.clone(),
        });
        let ports = Network::ports_on(template, &container_port, listen);
        // The readiness probe: /readyz.
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("http://{listen}/readyz")).send().await
                && r.status().is_success()
            {
                self.net.register(
                    id,
                    PodEndpoint {
                        namespace: ns.into(),
                        labels,
                        ports,
                    },
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        waiting("Unhealthy", format!("Readiness probe failed; log:\n{tail}"))
    }
}

/// An image reference as containerd's CRI plugin names it (distribution/reference v0.6.0
/// `normalize.go`, `ParseDockerRef`): `docker.io/` for a name without a registry, `library/` for
/// one Docker Hub path component, `:latest` when it has neither tag nor digest.
pub fn docker_reference(image: &str) -> String {
    let (first, rest) = image.split_once('/').unwrap_or(("", image));
    let domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = match (domain, first.is_empty()) {
        (true, _) => image.to_string(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{image}"),
    };
    let last = out.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        out.push_str(":latest");
    }
    out
}

/// Commands run in pods: the Gitea pod's image has the `gitea` CLI, played by
/// [`fake_gitea::pod::FakePodExec`] against the running fake Gitea; anything else is not found.
pub fn exec_handler(world: Arc<World>) -> crate::support::fake_kube::exec::ExecHandler {
    let cli: Arc<tokio::sync::OnceCell<fake_gitea::pod::FakePodExec>> = Arc::default();
    Arc::new(move |call: crate::support::fake_kube::exec::ExecCall| {
        let (world, cli) = (world.clone(), cli.clone());
        Box::pin(async move {
            let image = world
                .object("", "pods", &call.namespace, &call.pod)
                .and_then(|p| {
                    p.pointer("/spec/containers")?
                        .as_array()?
                        .iter()
                        .find(|c| c["name"] == call.container.as_str())?["image"]
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_default();
            let gitea = world.gitea.lock().unwrap().clone();
            match gitea {
                Some(g) if image.starts_with("gitea/gitea:") => {
                    let cli = cli
                        .get_or_init(|| async { fake_gitea::pod::FakePodExec::new(&g) })
                        .await;
                    world.note(&format!(
                        "exec in {}/{}: {:?}",
                        call.namespace, call.pod, call.command
                    ));
                    let out = cli.run_argv(&call.command, call.stdin.as_deref()).await;
                    crate::support::fake_kube::exec::ExecResult {
                        code: out.code.unwrap_or(1),
                        stdout: out.stdout.into_bytes(),
                        stderr: out.stderr.into_bytes(),
                    }
                }
                _ => crate::support::fake_kube::exec::ExecResult {
                    code: 127,
                    stdout: Vec::new(),
                    stderr: format!(
                        "exec: \"{}\": executable file not found in $PATH\n",
                        call.command[0]
                    )
                    .into_bytes(),
                },
            }
        })
    })
}

/// The engine's log, for failure messages.
pub fn sync_log(world: &World) -> String {
    world
        .sync
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|s| std::fs::read_to_string(&s.log).ok())
        .unwrap_or_default()
}

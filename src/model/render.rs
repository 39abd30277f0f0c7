//! Render: stack + settings + secrets + CA → the complete manifest set, the repositories' seed
//! content, and the VM's cloud-init.
//!
//! Architecture invariant: pure. Inputs arrive as values (upstream manifests already read from
//! the cache by the caller); output is deterministic: components in dependency order, objects in
//! apply order, keys sorted, LF newlines, ownership labels on every object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::edges::error::{Diagnostic, io_err};
use crate::edges::state::Secrets;
use crate::edges::yaml;
use crate::model::kinds::{ObjectRef, apply_order_key};
use crate::model::settings::Settings;
use crate::model::stack::{Component, Stack};
use crate::model::templates::{TemplateError, Templates};
use crate::model::tls::LabCa;

/// Label naming the lab an object belongs to.
pub const LABEL_LAB: &str = "homelab.dev/lab";
/// Label naming the stack component an object belongs to.
pub const LABEL_COMPONENT: &str = "homelab.dev/component";
/// The standard managed-by label.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Domain used in hostnames while the node IP is not known yet.
pub const UNKNOWN_IP_DOMAIN: &str = "node-ip.sslip.io";
/// The Gitea organisation that holds the lab's repositories.
pub const GITEA_ORG: &str = "lab";

/// The lab's domain and whether it is final.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// e.g. `10.0.0.5.sslip.io`.
    pub name: String,
    /// False while it stands in for an IP not known yet.
    pub known: bool,
}

impl Domain {
    /// `--domain` if given, else `<node-ip>.sslip.io`, else the stand-in.
    pub fn resolve(custom: Option<&str>, node_ip: Option<&str>) -> Domain {
        match (custom, node_ip) {
            (Some(d), _) => Domain {
                name: d.to_string(),
                known: true,
            },
            (None, Some(ip)) => Domain {
                name: format!("{ip}.sslip.io"),
                known: true,
            },
            (None, None) => Domain {
                name: UNKNOWN_IP_DOMAIN.to_string(),
                known: false,
            },
        }
    }
}

/// Everything render needs, as values.
pub struct RenderInput<'a> {
    /// Lab name.
    pub lab: &'a str,
    /// The stack.
    pub stack: &'a Stack,
    /// The domain.
    pub domain: &'a Domain,
    /// Secrets (real or placeholders).
    pub secrets: &'a Secrets,
    /// The lab CA (real or placeholder).
    pub ca: &'a LabCa,
    /// Gitea admin login.
    pub gitea_admin_user: &'a str,
    /// microk8s channel in effect.
    pub channel: String,
    /// The first node's IP once the cluster exists (`None` while planning or rendering offline).
    pub node_ip: Option<&'a str>,
    /// Upstream manifests already downloaded, by URL.
    pub upstream: &'a BTreeMap<String, String>,
}

impl<'a> RenderInput<'a> {
    /// The input for a lab from its settings (lab name, Gitea admin, channel in effect).
    pub fn for_lab(
        settings: &'a Settings,
        stack: &'a Stack,
        domain: &'a Domain,
        secrets: &'a Secrets,
        ca: &'a LabCa,
        node_ip: Option<&'a str>,
        upstream: &'a BTreeMap<String, String>,
    ) -> RenderInput<'a> {
        RenderInput {
            lab: &settings.lab,
            stack,
            domain,
            secrets,
            ca,
            gitea_admin_user: &settings.gitea_admin_user,
            channel: settings.channel(stack),
            node_ip,
            upstream,
        }
    }
}

/// One component's rendered output.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentManifests {
    /// Component name.
    pub name: String,
    /// Its wave.
    pub wave: usize,
    /// Objects in apply order.
    pub objects: Vec<Value>,
    /// A remark for people (addon, upstream not downloaded yet).
    pub note: Option<String>,
    /// Seed content of the Git repositories it owns: repo → path → text.
    pub repos: BTreeMap<String, BTreeMap<String, String>>,
}

/// The whole rendered lab.
#[derive(Clone, Debug, Serialize)]
pub struct Manifests {
    /// Per component, in dependency order.
    pub components: Vec<ComponentManifests>,
    /// cloud-init user-data for the VMs.
    pub cloud_init: String,
}

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed.
    #[error("render component `{component}`")]
    Template {
        /// The component.
        component: String,
        /// The template error.
        #[source]
        source: TemplateError,
    },
    /// A template produced text that is not YAML.
    #[error(
        "template `{template}` of component `{component}` rendered invalid YAML at line {line}: {message}"
    )]
    BadYaml {
        /// The component.
        component: String,
        /// The template.
        template: String,
        /// Line in the rendered output.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error(
        "template `{template}` of component `{component}` rendered a document without apiVersion, kind or metadata.name (document at line {line})"
    )]
    NotAnObject {
        /// The component.
        component: String,
        /// The template (or upstream URL).
        template: String,
        /// Line of the document.
        line: usize,
    },
    /// A stack says its templates configure an upstream object that is not there (upstream
    /// dropped or renamed it), or that the templates do not render.
    #[error(
        "component `{component}` configures `{object}` of its upstream manifest, which the manifest or its templates do not have"
    )]
    NotConfigurable {
        /// The component.
        component: String,
        /// `Kind/name`.
        object: String,
    },
    /// The same object is rendered twice.
    #[error("{object} is rendered by both `{first}` and `{second}`")]
    DuplicateObject {
        /// The object.
        object: String,
        /// First component.
        first: String,
        /// Second component.
        second: String,
    },
    /// Writing `--out` failed.
    #[error(transparent)]
    Io(#[from] crate::edges::error::IoError),
    /// Writing a file of `--out` failed.
    #[error(transparent)]
    Write(#[from] crate::edges::state::StateError),
}

impl Diagnostic for RenderError {
    fn hints(&self) -> Vec<String> {
        match self {
            RenderError::Template { source, .. } => source.hints(),
            RenderError::BadYaml { .. } => vec![
                "interpolate whole values (`{{ hosts.gitea }}`), not parts of a scalar: every value is written quoted".into(),
            ],
            RenderError::Io(e) => e.hints(),
            RenderError::Write(e) => e.hints(),
            RenderError::NotConfigurable { .. } => vec![
                "check the pinned release's objects (`contracts/argocd/install.yaml` for Argo CD) and the stack's `configures` list".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// Full public hostnames by component name (`gitea` → `gitea.<domain>`).
pub fn hosts(stack: &Stack, domain: &Domain) -> BTreeMap<String, String> {
    stack
        .components
        .iter()
        .filter_map(|c| {
            c.hostname
                .as_ref()
                .map(|h| (c.name.clone(), format!("{h}.{}", domain.name)))
        })
        .collect()
}

fn component_value(c: &Component, hosts: &BTreeMap<String, String>) -> Value {
    json!({
        "name": c.name,
        "description": c.description,
        "namespace": c.namespace.clone().unwrap_or_default(),
        "version": c.version.clone().unwrap_or_default(),
        "images": c.images,
        "resources": c.resources.as_ref().map(|r| json!({"cpu": r.cpu, "memory": r.memory}))
            .unwrap_or_else(|| json!({"cpu": "50m", "memory": "64Mi"})),
        "host": hosts.get(&c.name).cloned().unwrap_or_default(),
        "url": hosts.get(&c.name).map(|h| format!("https://{h}")).unwrap_or_default(),
        "timeout": c.timeout.unwrap_or(300),
    })
}

/// The one function that builds the template context.
///
/// Variables: `lab`, `domain`, `stack` {name, kubernetes}, `component` (the one being rendered:
/// name, description, namespace, version, images, resources {cpu, memory}, host, url), `components`
/// (all, by name, same shape), `stack_components` (the same, as a list in stack order), `hosts` and `urls` (by component name), `secrets` (by name), `ca` {cert_pem,
/// key_pem}, `gitea` {admin_user, org, url, internal_url}, `labels` {lab, component}, `channel`.
///
/// Also:
/// - `node_ip`: the first node's IP as a string, `""` while it is not known (then templates
///   leave out what needs it, e.g. the ingress controller's `external-status-address`).
/// - `secrets_b64`: every secret by name, base64-encoded (standard alphabet, padded), for the
///   `data` of Secret objects; `data` rather than `stringData` so that what we apply is exactly
///   what the API server stores and a re-apply compares equal.
/// - `ca.cert_pem_b64`, `ca.key_pem_b64`: the lab CA's certificate and key, base64-encoded.
/// - `ca.cert_sha256`: SHA-256 (hex) of the CA certificate's PEM, for pod-template annotations
///   that roll a workload reading the CA at start when the CA is replaced.
/// - `gitea.admin_user_b64`: the Gitea admin's login, base64-encoded (a Secret's `data`).
/// - `gitea.host`: Gitea's public host name (`gitea.<domain>`), also the container registry host.
/// - `partials`: for a component's templates, its directory's text partials rendered (see
///   [`Templates::text_partials_in`]), e.g. `partials.Corefile`.
pub fn context(input: &RenderInput<'_>, component: Option<&Component>) -> tera::Context {
    let hosts = hosts(input.stack, input.domain);
    let urls: BTreeMap<String, String> = hosts
        .iter()
        .map(|(k, h)| (k.clone(), format!("https://{h}")))
        .collect();
    let components: BTreeMap<String, Value> = input
        .stack
        .components
        .iter()
        .map(|c| (c.name.clone(), component_value(c, &hosts)))
        .collect();
    let secrets: BTreeMap<&str, &str> =
        input.secrets.iter().map(|(k, v)| (k, v.expose())).collect();
    let secrets_b64: BTreeMap<&str, String> = secrets.iter().map(|(k, v)| (*k, b64(v))).collect();
    let gitea_ns = input
        .stack
        .component("gitea")
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| "gitea".into());
    let mut ctx = tera::Context::new();
    ctx.insert("lab", input.lab);
    ctx.insert("domain", &input.domain.name);
    ctx.insert(
        "stack",
        &json!({"name": input.stack.name, "kubernetes": input.stack.cluster.kubernetes}),
    );
    ctx.insert("channel", &input.channel);
    ctx.insert("components", &components);
    // The same values as a list in stack order (the lab page lists components as the stack does).
    let in_order: Vec<Value> = input
        .stack
        .components
        .iter()
        .map(|c| component_value(c, &hosts))
        .collect();
    ctx.insert("stack_components", &in_order);
    ctx.insert("hosts", &hosts);
    ctx.insert("urls", &urls);
    ctx.insert("secrets", &secrets);
    ctx.insert("secrets_b64", &secrets_b64);
    ctx.insert("node_ip", input.node_ip.unwrap_or(""));
    ctx.insert(
        "ca",
        &json!({
            "cert_pem": input.ca.cert_pem,
            "key_pem": input.ca.key_pem.expose(),
            "cert_pem_b64": b64(&input.ca.cert_pem),
            "key_pem_b64": b64(input.ca.key_pem.expose()),
            "cert_sha256": crate::edges::digest::sha256_hex(input.ca.cert_pem.as_bytes()),
        }),
    );
    ctx.insert(
        "gitea",
        &json!({
            "admin_user": input.gitea_admin_user,
            "admin_user_b64": b64(input.gitea_admin_user),
            "org": GITEA_ORG,
            "url": urls.get("gitea").cloned().unwrap_or_default(),
            "host": hosts.get("gitea").cloned().unwrap_or_default(),
            "internal_url": format!("http://gitea-http.{gitea_ns}.svc.cluster.local:3000"),
        }),
    );
    if let Some(c) = component {
        ctx.insert("component", &component_value(c, &hosts));
        ctx.insert("labels", &json!({"lab": input.lab, "component": c.name}));
    }
    ctx
}

/// Standard base64 with padding, as Kubernetes expects in a Secret's `data`.
fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Render the whole lab.
pub fn render(templates: &Templates, input: &RenderInput<'_>) -> Result<Manifests, RenderError> {
    let waves = input.stack.waves();
    let mut components = Vec::new();
    let mut owners: BTreeMap<ObjectRef, String> = BTreeMap::new();
    for c in &input.stack.components {
        let mut ctx = context(input, Some(c));
        let mut objects = Vec::new();
        // What the upstream manifest itself holds (`Kind/name`), before templates are added.
        let mut from_upstream: BTreeSet<String> = BTreeSet::new();
        let mut note = None;
        if let Some(addon) = &c.source.addon {
            note = Some(format!(
                "microk8s addon `{addon}`, enabled through the launch configuration when the VM is provisioned"
            ));
        }
        if let Some(up) = &c.source.upstream {
            match input.upstream.get(&up.url) {
                Some(text) => {
                    let mut parsed = parse_objects(&c.name, &up.url, text)?;
                    if let Some(ns) = &c.namespace {
                        parsed.iter_mut().for_each(|o| default_namespace(o, ns));
                    }
                    from_upstream.extend(parsed.iter().map(kind_name));
                    objects.extend(parsed)
                }
                None => {
                    note = Some(format!(
                        "upstream manifest {} is not downloaded yet; `homelab prepare` fetches it and records its sha256 in the lab's lock",
                        up.url
                    ))
                }
            }
        }
        // Upstream objects the component's templates configure (see `Upstream::configures`).
        let configures: BTreeSet<&str> = c
            .source
            .upstream
            .iter()
            .flat_map(|u| u.configures.iter().map(String::as_str))
            .collect();
        if let Some(dir) = &c.source.templates {
            let mut partials = BTreeMap::new();
            let render = |name: &str, ctx: &tera::Context| {
                templates
                    .render(name, ctx)
                    .map_err(|source| RenderError::Template {
                        component: c.name.clone(),
                        source,
                    })
            };
            for (key, name) in templates.text_partials_in(dir) {
                partials.insert(key, render(&name, &ctx)?);
            }
            ctx.insert("partials", &partials);
            let upstream_count = objects.len();
            for name in templates.in_dir(dir) {
                let text = render(&name, &ctx)?;
                for obj in parse_objects(&c.name, &name, &text)? {
                    let key = kind_name(&obj);
                    let over = configures.contains(key.as_str()).then(|| {
                        objects[..upstream_count]
                            .iter()
                            .position(|u| ObjectRef::of(u) == ObjectRef::of(&obj))
                    });
                    match over.flatten() {
                        Some(i) => overlay(&mut objects[i], &obj),
                        None => objects.push(obj),
                    }
                }
            }
        }
        if input
            .upstream
            .contains_key(c.source.upstream.as_ref().map_or("", |u| u.url.as_str()))
        {
            for want in &configures {
                if !from_upstream.contains(*want) {
                    return Err(RenderError::NotConfigurable {
                        component: c.name.clone(),
                        object: want.to_string(),
                    });
                }
            }
        }
        if c.source.templates.is_some() && objects.is_empty() && input.node_ip.is_none() {
            note = Some(
                "rendered once the node's address is known (`homelab up`, `homelab status`)".into(),
            );
        }
        // Adopted objects (created by a microk8s addon) are never labelled as the lab's: prune
        // and `down` delete by those labels.
        if !c.adopts {
            for obj in &mut objects {
                label(obj, input.lab, &c.name);
            }
        }
        objects.sort_by_key(apply_order_key);
        for obj in &objects {
            let r = ObjectRef::of(obj).expect("checked by parse_objects");
            if let Some(first) = owners.insert(r.clone(), c.name.clone()) {
                return Err(RenderError::DuplicateObject {
                    object: r.to_string(),
                    first,
                    second: c.name.clone(),
                });
            }
        }
        let mut repos = BTreeMap::new();
        for (repo, dir) in &c.repos {
            let mut files = BTreeMap::new();
            for name in templates.in_dir(dir) {
                let text =
                    templates
                        .render(&name, &ctx)
                        .map_err(|source| RenderError::Template {
                            component: c.name.clone(),
                            source,
                        })?;
                let rel = name.strip_prefix(&format!("{dir}/")).unwrap_or(&name);
                files.insert(rel.to_string(), text);
            }
            repos.insert(repo.clone(), files);
        }
        components.push(ComponentManifests {
            name: c.name.clone(),
            wave: waves[&c.name],
            objects,
            note,
            repos,
        });
    }
    let cloud_init = render_cloud_init(templates, input)?;
    Ok(Manifests {
        components,
        cloud_init,
    })
}

/// cloud-init user-data for the lab VMs: the microk8s launch configuration (addons from the
/// stack), the lab CA in the system trust store and for the registry host in containerd.
pub fn render_cloud_init(
    templates: &Templates,
    input: &RenderInput<'_>,
) -> Result<String, RenderError> {
    render_cloud_init_for(templates, input, false)
}

/// [`render_cloud_init`], where `snaps_from_files` says that `up` brings microk8s from its cache
/// (the VMs wait for the files instead of installing from the Snap Store).
pub fn render_cloud_init_for(
    templates: &Templates,
    input: &RenderInput<'_>,
    snaps_from_files: bool,
) -> Result<String, RenderError> {
    let wrap = |source| RenderError::Template {
        component: "cloud-init".into(),
        source,
    };
    let mut ctx = context(input, None);
    let addons: Vec<&str> = input
        .stack
        .components
        .iter()
        .filter_map(|c| c.source.addon.as_deref())
        .collect();
    ctx.insert("addons", &addons);
    let registry_host = if input.domain.known {
        hosts(input.stack, input.domain).get("gitea").cloned()
    } else {
        None
    };
    let hosts_toml = match &registry_host {
        Some(host) => {
            let mut c = ctx.clone();
            c.insert("registry_host", host);
            Some(
                templates
                    .render("cloud-init/containerd-hosts.toml", &c)
                    .map_err(wrap)?,
            )
        }
        None => None,
    };
    ctx.insert("registry_host", &registry_host);
    ctx.insert("registry_hosts_toml", &hosts_toml);
    let launch = templates
        .render("cloud-init/microk8s-launch.yaml", &ctx)
        .map_err(wrap)?;
    ctx.insert("launch_config", &launch);
    ctx.insert("snaps_from_files", &snaps_from_files);
    templates
        .render("cloud-init/user-data.yaml", &ctx)
        .map_err(wrap)
}

fn parse_objects(component: &str, template: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let docs = yaml::documents(text).map_err(|e| RenderError::BadYaml {
        component: component.into(),
        template: template.into(),
        line: e.line.unwrap_or(0),
        message: e.message,
    })?;
    let mut out = Vec::new();
    for (line, doc) in docs {
        if ObjectRef::of(&doc).is_none() {
            return Err(RenderError::NotAnObject {
                component: component.into(),
                template: template.into(),
                line,
            });
        }
        out.push(doc);
    }
    Ok(out)
}

/// Cluster-scoped kinds found in the upstream manifests the stacks pin (Argo CD's install.yaml,
/// cert-manager's release manifest), plus the other built-in cluster-scoped kinds. Every other
/// kind is namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// Put a namespaced object without `metadata.namespace` into the component's namespace.
///
/// Some upstream manifests are written for `kubectl apply -n <ns>` (Argo CD's install.yaml sets
/// no namespace on its ServiceAccounts, Deployments, ConfigMaps, …); the rendered set says
/// where every object goes, so nothing depends on a default namespace at apply time.
fn default_namespace(obj: &mut Value, namespace: &str) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if CLUSTER_SCOPED.contains(&kind) {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        meta.insert("namespace".into(), json!(namespace));
    }
}

/// `Kind/name` of an object.
fn kind_name(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj.get("kind").and_then(Value::as_str).unwrap_or(""),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

/// Lay `ours` over the upstream object `base`: `data`, `stringData`, labels and annotations
/// key by key (ours win), everything else of `base` kept. Only configuration objects
/// (ConfigMaps, Secrets) are configured this way.
fn overlay(base: &mut Value, ours: &Value) {
    for field in [
        "/data",
        "/stringData",
        "/metadata/labels",
        "/metadata/annotations",
    ] {
        let Some(theirs) = ours.pointer(field).and_then(Value::as_object) else {
            continue;
        };
        let (parent, key) = field.rsplit_once('/').expect("a pointer");
        let holder = if parent.is_empty() {
            Some(&mut *base)
        } else {
            base.pointer_mut(parent)
        };
        let Some(holder) = holder.and_then(Value::as_object_mut) else {
            continue;
        };
        let target = holder.entry(key.to_string()).or_insert_with(|| json!({}));
        if !target.is_object() {
            *target = json!({});
        }
        let target = target.as_object_mut().expect("an object");
        for (k, v) in theirs {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// Add the ownership labels.
pub fn label(obj: &mut Value, lab: &str, component: &str) {
    let meta = obj
        .as_object_mut()
        .expect("objects are maps")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let labels = meta
        .as_object_mut()
        .expect("metadata is a map")
        .entry("labels")
        .or_insert_with(|| json!({}));
    if let Some(map) = labels.as_object_mut() {
        map.insert(LABEL_LAB.into(), json!(lab));
        map.insert(LABEL_COMPONENT.into(), json!(component));
        map.insert(LABEL_MANAGED_BY.into(), json!("homelab"));
    }
}

impl ComponentManifests {
    /// The component's objects as one YAML stream with a header comment.
    pub fn to_yaml(&self) -> String {
        let mut out = format!("# component: {} (wave {})\n", self.name, self.wave);
        if let Some(note) = &self.note {
            out.push_str(&format!("# {note}\n"));
        }
        out.push_str(&yaml::to_documents(&self.objects).expect("JSON values serialize as YAML"));
        out
    }
}

impl Manifests {
    /// The image of every container, init container and ephemeral container of every object
    /// (Pod templates at any depth), sorted and deduplicated: what the cluster will run.
    pub fn container_images(&self) -> std::collections::BTreeSet<String> {
        fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        if matches!(
                            k.as_str(),
                            "containers" | "initContainers" | "ephemeralContainers"
                        ) && let Some(list) = x.as_array()
                        {
                            out.extend(
                                list.iter()
                                    .filter_map(|c| c.get("image").and_then(Value::as_str))
                                    .map(str::to_string),
                            );
                        }
                        walk(x, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = std::collections::BTreeSet::new();
        self.objects().for_each(|(_, o)| walk(o, &mut out));
        out
    }

    /// Every object, in component then apply order.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.components
            .iter()
            .flat_map(|c| c.objects.iter().map(move |o| (c.name.as_str(), o)))
    }

    /// The same manifests with the values of every Secret's `data` and `stringData` replaced by
    /// `<redacted>`, for showing on a terminal.
    pub fn redacted(&self) -> Manifests {
        let mut out = self.clone();
        for c in &mut out.components {
            for obj in &mut c.objects {
                if obj["kind"] != "Secret" || obj["apiVersion"] != "v1" {
                    continue;
                }
                for field in ["data", "stringData"] {
                    if let Some(map) = obj.get_mut(field).and_then(Value::as_object_mut) {
                        for v in map.values_mut() {
                            *v = json!(crate::edges::redact::REDACTED);
                        }
                    }
                }
            }
        }
        out
    }

    /// The whole manifest set as one YAML stream (what `homelab render` prints).
    pub fn to_yaml(&self) -> String {
        self.components
            .iter()
            .map(ComponentManifests::to_yaml)
            .collect::<Vec<_>>()
            .join("")
    }

    /// Write `NN-<component>.yaml` per component, `cloud-init/user-data.yaml`, and
    /// `repos/<repo>/…` into `dir`, replacing what a previous render wrote there.
    pub fn write_dir(&self, dir: &Path) -> Result<Vec<String>, RenderError> {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("set permissions of", dir))?;
        }
        // Remove files a previous render wrote, so a removed component leaves nothing stale.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = name.len() > 3
                    && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
                    && name.as_bytes()[2] == b'-'
                    && name.ends_with(".yaml");
                if ours {
                    std::fs::remove_file(e.path()).map_err(io_err("remove", e.path()))?;
                }
            }
            for sub in ["repos", "cloud-init"] {
                let p = dir.join(sub);
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(io_err("remove directory", &p))?;
                }
            }
        }
        let mut written = Vec::new();
        let mut write = |rel: String, text: &str| -> Result<(), RenderError> {
            let p = dir.join(&rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            }
            // Private: the files carry the lab's secrets and the CA key.
            crate::edges::state::write_atomic(&p, text.as_bytes(), 0o600)?;
            written.push(rel);
            Ok(())
        };
        for (i, c) in self.components.iter().enumerate() {
            write(format!("{:02}-{}.yaml", i + 1, c.name), &c.to_yaml())?;
        }
        write("cloud-init/user-data.yaml".into(), &self.cloud_init)?;
        for c in &self.components {
            for (repo, files) in &c.repos {
                for (path, text) in files {
                    write(format!("repos/{repo}/{path}"), text)?;
                }
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::state::Secrets;

    fn with_input<T>(node_ip: Option<&str>, f: impl FnOnce(&RenderInput<'_>) -> T) -> T {
        let stack = crate::model::stack::load("default", Path::new(".")).unwrap();
        let domain = Domain::resolve(Some("lab.example.test"), None);
        let secrets = Secrets::placeholders();
        let ca = crate::model::tls::placeholder();
        let upstream = BTreeMap::new();
        f(&RenderInput {
            lab: "t",
            stack: &stack,
            domain: &domain,
            secrets: &secrets,
            ca: &ca,
            gitea_admin_user: "lab-admin",
            channel: "1.36/stable".into(),
            node_ip,
            upstream: &upstream,
        })
    }

    /// Render a one-line (non-YAML) template against the real context.
    fn show(node_ip: Option<&str>, source: &str) -> String {
        let t = Templates::from_sources([("probe.txt", source)]).unwrap();
        with_input(node_ip, |i| {
            t.render("probe.txt", &context(i, None)).unwrap()
        })
    }

    #[test]
    fn node_ip_is_empty_until_known() {
        assert_eq!(show(None, "[{{ node_ip }}]"), "[]\n");
        assert_eq!(show(Some("10.0.0.5"), "[{{ node_ip }}]"), "[10.0.0.5]\n");
    }

    #[test]
    fn upstream_objects_without_a_namespace_land_in_the_components() {
        let mut stack = crate::model::stack::load("argocd", Path::new(".")).unwrap();
        // This stand-in holds none of the objects the stack configures.
        for c in &mut stack.components {
            if let Some(u) = &mut c.source.upstream {
                u.configures.clear();
            }
        }
        let url = stack
            .component("gitops-engine")
            .unwrap()
            .source
            .upstream
            .clone()
            .unwrap()
            .url;
        let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: argocd-server}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: elsewhere, namespace: other}\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: argocd-server}\n";
        let upstream = BTreeMap::from([(url, text.to_string())]);
        let domain = Domain::resolve(Some("lab.example.test"), None);
        let secrets = Secrets::placeholders();
        let ca = crate::model::tls::placeholder();
        let m = render(
            &Templates::embedded().unwrap(),
            &RenderInput {
                lab: "t",
                stack: &stack,
                domain: &domain,
                secrets: &secrets,
                ca: &ca,
                gitea_admin_user: "lab-admin",
                channel: "1.36/stable".into(),
                node_ip: None,
                upstream: &upstream,
            },
        )
        .unwrap();
        let engine = m
            .components
            .iter()
            .find(|c| c.name == "gitops-engine")
            .unwrap();
        let ns = |kind: &str| {
            engine
                .objects
                .iter()
                .find(|o| {
                    o["kind"] == kind
                        && o["metadata"]["name"] != "argocd-cm"
                        && o["metadata"]["labels"]["app.kubernetes.io/part-of"] != "argocd"
                })
                .map(|o| o["metadata"]["namespace"].clone())
                .unwrap()
        };
        assert_eq!(ns("ServiceAccount"), "argocd");
        let elsewhere = engine
            .objects
            .iter()
            .find(|o| o["metadata"]["name"] == "elsewhere")
            .unwrap();
        assert_eq!(elsewhere["metadata"]["namespace"], "other");
        assert_eq!(ns("ClusterRole"), Value::Null);
        assert_eq!(ns("Namespace"), Value::Null);
    }

    #[test]
    fn base64_values_are_standard_padded_encodings() {
        // base64("PLACEHOLDER-webhook-secret"), computed independently.
        assert_eq!(
            show(None, "{{ secrets_b64.webhook_secret }}"),
            "UExBQ0VIT0xERVItd2ViaG9vay1zZWNyZXQ=\n"
        );
        assert_eq!(
            show(None, "{{ ca.cert_pem_b64 }}"),
            format!("{}\n", b64("PLACEHOLDER-lab-ca-certificate"))
        );
        assert_eq!(
            show(None, "{{ secrets_b64.drone_oauth_client_id }}"),
            format!("{}\n", b64("PLACEHOLDER-drone-oauth-client-id"))
        );
        assert_eq!(b64(""), "");
    }
}

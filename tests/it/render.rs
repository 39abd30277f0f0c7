//! The real templates and stacks: snapshots of what `homelab render` and `homelab plan` print,
//! offline validation of every rendered object (Kubernetes 1.36 strict schemas, the contracts'
//! CRD schemas), and the invariants that tie components together — names one template uses and
//! another defines, the Ingress/TLS convention, pinned images, secrets kept off stderr, and the
//! NyanCat pipeline's shell steps run for real against local git repositories.
//!
//! Nothing here runs a cluster: "valid" means validated offline.

use crate::support::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestContext, fixtures};
use homelab::edges::state::Secrets;
use homelab::model::render::{Domain, Manifests};
use homelab::model::stack::{self, Stack};
use homelab::model::templates::Templates;
use serde_json::{Value, json};

const DOMAIN: &str = "lab.example.test";
const KUBERNETES: &str = "1.36.0";
const STACKS: &[&str] = &["default", "argocd"];

// ---------------------------------------------------------------------------------------------
// Rendering through the CLI

/// What `homelab render --out DIR` wrote, read back.
struct Rendered {
    /// `NN-<component>.yaml` files in order, with the component name.
    files: Vec<(String, PathBuf)>,
    /// Objects per component, in file order.
    components: Vec<(String, Vec<Value>)>,
    /// Header comment lines per component (`# component: …`, notes).
    headers: BTreeMap<String, Vec<String>>,
    /// Repository seed files: `<repo>/<path>` → text.
    repos: BTreeMap<String, String>,
    /// cloud-init user-data.
    cloud_init: String,
    /// The output directory.
    dir: PathBuf,
}

impl Rendered {
    fn objects(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.components
            .iter()
            .flat_map(|(c, objs)| objs.iter().map(move |o| (c.as_str(), o)))
    }

    fn repo_file(&self, path: &str) -> &str {
        self.repos
            .get(path)
            .unwrap_or_else(|| panic!("repository file `{path}` was not rendered"))
    }

    /// The gitops repository's manifests, parsed.
    fn gitops_objects(&self) -> Vec<Value> {
        self.repos
            .iter()
            .filter(|(p, _)| p.starts_with("gitops/apps/") && p.ends_with(".yaml"))
            .flat_map(|(p, text)| docs(p, text))
            .collect()
    }
}

fn docs(name: &str, text: &str) -> Vec<Value> {
    homelab::edges::yaml::documents(text)
        .unwrap_or_else(|e| panic!("`{name}` is not YAML: {e}"))
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// `homelab render --placeholder-secrets --domain lab.example.test --stack S --out <dir>`.
/// Argo CD's install manifest is "downloaded" as its derived form (`contracts/argocd/install.yaml`).
fn render_cli(ctx: &TestContext, stack: &str) -> Rendered {
    fixtures::seed_upstream(
        ctx,
        "homelab",
        fixtures::ARGOCD_INSTALL_URL,
        &fixtures::argocd_install(),
    );
    let out = format!("out-{stack}");
    ctx.homelab(&[
        "render",
        "--placeholder-secrets",
        "--domain",
        DOMAIN,
        "--stack",
        stack,
        "--out",
        &out,
    ])
    .success();
    read_out(&ctx.cwd.join(out))
}

fn read_out(dir: &Path) -> Rendered {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem[3..].to_string(), p)
        })
        .collect();
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let mut components = Vec::new();
    let mut headers = BTreeMap::new();
    for (name, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        headers.insert(
            name.clone(),
            text.lines()
                .take_while(|l| l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        );
        components.push((name.clone(), docs(name, &text)));
    }
    let mut repos = BTreeMap::new();
    walk(&dir.join("repos"), &dir.join("repos"), &mut repos);
    let cloud_init = std::fs::read_to_string(dir.join("cloud-init/user-data.yaml")).unwrap();
    Rendered {
        files,
        components,
        headers,
        repos,
        cloud_init,
        dir: dir.to_path_buf(),
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read_to_string(&p).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering through the library (for inputs the CLI cannot give yet, like the node IP)

fn load_stack(name: &str) -> Stack {
    fixtures::stack(name)
}

fn render_lib(stack: &Stack, node_ip: Option<&str>) -> Manifests {
    let domain = Domain::resolve(Some(DOMAIN), node_ip);
    let secrets = Secrets::placeholders();
    let ca = homelab::model::tls::placeholder();
    // Argo CD's install manifest as its derived form; cert-manager's is left out, as before.
    let upstream = BTreeMap::from([(
        fixtures::ARGOCD_INSTALL_URL.to_string(),
        fixtures::argocd_install(),
    )]);
    let mut input = fixtures::render_input("homelab", stack, &domain, &secrets, &ca, &upstream);
    input.channel = stack.cluster.channel.clone();
    input.node_ip = node_ip;
    homelab::model::render::render(&Templates::embedded().unwrap(), &input).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Small accessors

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn namespace(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or("")
}

fn find<'a>(objs: impl IntoIterator<Item = &'a Value>, k: &str, n: &str) -> &'a Value {
    objs.into_iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k}/{n} rendered"))
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Pod specs of workload objects.
fn pod_spec(o: &Value) -> Option<&Value> {
    match kind(o) {
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => Some(&o["spec"]["template"]["spec"]),
        "Pod" => Some(&o["spec"]),
        _ => None,
    }
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    arr(&pod["containers"])
        .iter()
        .chain(arr(&pod["initContainers"]).iter())
}

fn env_value<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    arr(&container["env"])
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// One text per stack: every object under a `==== <component> <Kind>/<name> ====` header, then
/// the repositories' seed files and the cloud-init user-data.
fn snapshot_text(r: &Rendered) -> String {
    let mut out = String::new();
    for (component, objects) in &r.components {
        out.push_str(&format!("==== {component} ====\n"));
        for line in &r.headers[component] {
            out.push_str(line);
            out.push('\n');
        }
        for o in objects {
            out.push_str(&format!("==== {component} {}/{} ====\n", kind(o), name(o)));
            out.push_str(&homelab::edges::yaml::to_string(o).unwrap());
        }
    }
    for (path, text) in &r.repos {
        out.push_str(&format!("==== repo {path} ====\n{text}"));
    }
    out.push_str(&format!("==== cloud-init user-data ====\n{}", r.cloud_init));
    engine_filter(&out)
}

/// The engine image of this build depends on where it was built (the repository owner, see
/// `sync::image::BuildInfo`); snapshots show it as `[ENGINE_IMAGE]`.
fn engine_filter(text: &str) -> String {
    let build = homelab::sync::image::BuildInfo::current();
    text.replace(&build.published_image(), "[ENGINE_IMAGE]")
}

#[test]
fn render_snapshot_default_stack() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    insta::assert_snapshot!("render-default", snapshot_text(&r));
}

#[test]
fn render_snapshot_argocd_stack() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "argocd");
    insta::assert_snapshot!("render-argocd", snapshot_text(&r));
}

#[test]
fn render_is_deterministic_and_stdout_matches_the_files() {
    let ctx = TestContext::new();
    let a = render_cli(&ctx, "default");
    let run = ctx.homelab(&["render", "--placeholder-secrets", "--domain", DOMAIN]);
    run.success();
    let concatenated: String = a
        .files
        .iter()
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(run.stdout, concatenated);
    let again = ctx.homelab(&["render", "--placeholder-secrets", "--domain", DOMAIN]);
    assert_eq!(run.stdout, again.stdout);
}

#[test]
fn plan_snapshots() {
    let mut ctx = TestContext::new();
    // A Linux host that can side-load, whatever runs the test.
    ctx.env
        .insert("HOMELAB_TEST_PLATFORM".into(), "linux/x86_64".into());
    let text = ctx.homelab(&["plan", "--domain", DOMAIN]);
    text.success();
    insta::assert_snapshot!("plan-default-text", engine_filter(&text.stdout));
    let json = ctx.homelab(&["plan", "--domain", DOMAIN, "--output", "json"]);
    json.success();
    let parsed: Value = serde_json::from_str(&json.stdout).unwrap();
    insta::assert_snapshot!(
        "plan-default-json",
        engine_filter(&serde_json::to_string_pretty(&parsed).unwrap())
    );
}

/// Issue 12: on a host that cannot side-load (macOS, Windows, `--provider existing`), a build
/// whose engine image is not published says so at `plan` and `up`, with what to do, before
/// anything is built — instead of an image pull that never succeeds ten minutes later.
#[test]
fn an_engine_image_that_cannot_exist_is_refused_at_plan_and_up_with_what_to_do() {
    let build = homelab::sync::image::BuildInfo::current();
    let mut ctx = TestContext::new();
    ctx.env
        .insert("HOMELAB_TEST_PLATFORM".into(), "macos/aarch64".into());
    let plan = ctx.homelab(&["plan", "--domain", DOMAIN]);
    let up = ctx.homelab(&["up", "--domain", DOMAIN]);
    let existing = ctx.homelab(&["plan", "--provider", "existing", "--domain", DOMAIN]);
    if build.released {
        // A release build pulls the image its release published.
        plan.success();
        assert!(
            plan.stdout.contains(&format!(
                "sync engine image: pulls `{}` (the image of release v{})",
                build.published_image(),
                build.version
            )),
            "{}",
            plan.stdout
        );
    } else {
        for (what, run) in [
            ("plan", &plan),
            ("up", &up),
            ("plan --provider existing", &existing),
        ] {
            run.failure(1);
            assert!(
                run.stderr.contains(&format!(
                    "error: no sync engine image exists for this build of homelab ({}): `{}` is published only by a release",
                    build.describe,
                    build.published_image()
                )),
                "{what}: {}",
                run.stderr
            );
            for hint in [
                "hint: run `homelab up` from a Linux host",
                "hint: or set `sync.image`",
                "hint: or use a released build",
            ] {
                assert!(run.stderr.contains(hint), "{what}: {}", run.stderr);
            }
        }
        assert!(
            plan.stderr.contains("this binary is built for macos"),
            "{}",
            plan.stderr
        );
        assert!(
            existing
                .stderr
                .contains("a `--provider existing` cluster has no VMs of homelab's"),
            "{}",
            existing.stderr
        );
        // `plan` still shows the plan, and says the same there.
        assert!(
            plan.stdout.contains("sync engine image: none: `"),
            "{}",
            plan.stdout
        );
        // `up` stopped before writing anything: no secrets, no CA.
        assert!(!ctx.state_dir("homelab").join("secrets.json").exists());
    }
    // `sync.image` names an image that exists: nothing to refuse.
    ctx.env.insert(
        "HOMELAB_SYNC_IMAGE".into(),
        "registry.example/homelab:dev".into(),
    );
    let configured = ctx.homelab(&["plan", "--domain", DOMAIN]);
    configured.success();
    assert!(
        configured
            .stdout
            .contains("sync engine image: pulls `registry.example/homelab:dev` (`sync.image`)"),
        "{}",
        configured.stdout
    );
    // On a Linux host the engine is side-loaded from this binary.
    ctx.env.remove("HOMELAB_SYNC_IMAGE");
    ctx.env
        .insert("HOMELAB_TEST_PLATFORM".into(), "linux/aarch64".into());
    let linux = ctx.homelab(&["plan", "--domain", DOMAIN]);
    linux.success();
    assert!(
        linux
            .stdout
            .contains("sync engine image: built from this binary and side-loaded into the VMs"),
        "{}",
        linux.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Offline validation

/// "validated N objects, M problems" → N.
fn validated_count(report: &str) -> usize {
    let line = report
        .lines()
        .find(|l| l.starts_with("validated "))
        .unwrap_or_else(|| panic!("no summary in validator output:\n{report}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_rendered_object_and_the_gitops_repo_validate_offline() {
    let ctx = TestContext::new();
    for stack in STACKS {
        let r = render_cli(&ctx, stack);
        let mut paths: Vec<PathBuf> = r.files.iter().map(|(_, p)| p.clone()).collect();
        paths.push(r.dir.join("repos/gitops/apps"));
        let expected = r.objects().count() + r.gitops_objects().len();
        assert!(expected > 30, "suspiciously few objects: {expected}");
        match common::validate_manifests(KUBERNETES, &paths) {
            Ok(report) => assert_eq!(
                validated_count(&report),
                expected,
                "stack `{stack}`: the validator saw a different number of objects\n{report}"
            ),
            Err(report) => panic!("stack `{stack}` does not validate:\n{report}"),
        }
    }
}

#[test]
fn the_validator_rejects_a_broken_object() {
    // The check above is only worth something if the validator can fail.
    let ctx = TestContext::new();
    let bad = ctx.write(
        "bad.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: one, selector: {}, template: {}}\n",
    );
    let err = common::validate_manifests(KUBERNETES, &[bad]).unwrap_err();
    assert!(
        err.contains("replicas") && err.contains("1 problems"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Stacks and template directories

#[test]
fn every_template_directory_a_stack_names_exists_and_none_is_orphaned() {
    let templates = Templates::embedded().unwrap();
    let mut used = BTreeSet::new();
    for name in STACKS {
        let s = load_stack(name);
        for c in &s.components {
            if let Some(dir) = &c.source.templates {
                assert!(
                    !templates.in_dir(dir).is_empty(),
                    "stack `{name}` component `{}` names templates `{dir}`, which has none",
                    c.name
                );
                used.insert(dir.clone());
            }
            for (repo, dir) in &c.repos {
                assert!(
                    !templates.in_dir(dir).is_empty(),
                    "stack `{name}` repository `{repo}` names templates `{dir}`, which has none"
                );
                used.insert(dir.clone());
            }
        }
    }
    // Every template belongs to a directory some stack uses (cloud-init is rendered for the VMs).
    for (path, _) in homelab::model::assets::under("templates/") {
        let rel = path.strip_prefix("templates/").unwrap();
        if rel.starts_with("cloud-init/") {
            continue;
        }
        assert!(
            used.iter().any(|d| rel.starts_with(&format!("{d}/"))),
            "template `{rel}` belongs to no stack"
        );
    }
}

#[test]
fn argocd_stack_differs_from_default_only_in_the_gitops_engine() {
    let mut default = load_stack("default");
    // The lab page is served by homelab's own engine: the argocd stack removes it.
    default.components.retain(|c| c.name != "lab-page");
    let argocd = load_stack("argocd");
    let names =
        |s: &Stack| -> Vec<String> { s.components.iter().map(|c| c.name.clone()).collect() };
    assert_eq!(names(&default), names(&argocd));
    assert_eq!(default.cluster, argocd.cluster);
    for c in &default.components {
        let other = argocd.component(&c.name).unwrap();
        if c.name == "gitops-engine" {
            assert_ne!(c, other);
            assert!(
                other.source.upstream.is_some(),
                "argocd runs the upstream manifest"
            );
        } else {
            assert_eq!(c, other, "component `{}` differs", c.name);
        }
    }
    // And so does what they render.
    let (d, a) = (render_lib(&default, None), render_lib(&argocd, None));
    for (dc, ac) in d.components.iter().zip(&a.components) {
        assert_eq!(dc.name, ac.name);
        if dc.name != "gitops-engine" {
            assert_eq!(dc.objects, ac.objects, "component `{}`", dc.name);
            assert_eq!(dc.repos, ac.repos, "component `{}`", dc.name);
        }
    }
    assert_eq!(d.cloud_init, a.cloud_init);
}

// ---------------------------------------------------------------------------------------------
// Conventions every component follows

#[test]
fn every_ingress_uses_the_nginx_class_and_a_lab_ca_certificate() {
    let ctx = TestContext::new();
    let mut seen = 0;
    for stack in STACKS {
        let r = render_cli(&ctx, stack);
        let gitops = r.gitops_objects();
        for o in r.objects().map(|(_, o)| o).chain(gitops.iter()) {
            if kind(o) != "Ingress" {
                continue;
            }
            seen += 1;
            let who = format!("Ingress/{}", name(o));
            assert_eq!(
                o["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "homelab-ca",
                "{who}"
            );
            assert_eq!(o["spec"]["ingressClassName"], "nginx", "{who}");
            let rule_hosts: BTreeSet<&str> = arr(&o["spec"]["rules"])
                .iter()
                .map(|r| r["host"].as_str().unwrap())
                .collect();
            let tls = arr(&o["spec"]["tls"]);
            assert_eq!(tls.len(), 1, "{who}");
            let tls_hosts: BTreeSet<&str> = arr(&tls[0]["hosts"])
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect();
            assert_eq!(
                rule_hosts, tls_hosts,
                "{who}: every host gets the certificate"
            );
            assert!(
                rule_hosts.iter().all(|h| h.ends_with(DOMAIN)),
                "{who}: {rule_hosts:?}"
            );
            assert!(tls[0]["secretName"].as_str().is_some_and(|s| !s.is_empty()));
        }
    }
    // gitea, drone and nyan-cat in both stacks, the lab page in the default one, Argo CD's UI in
    // the argocd stack.
    assert_eq!(seen, 8);
}

#[test]
fn every_image_is_pinned_and_comes_from_the_stack() {
    for stack_name in STACKS {
        let s = load_stack(stack_name);
        let m = render_lib(&s, None);
        for c in &m.components {
            let allowed: BTreeSet<&String> =
                s.component(&c.name).unwrap().images.values().collect();
            for o in &c.objects {
                let Some(pod) = pod_spec(o) else { continue };
                for ctr in containers(pod) {
                    let image = ctr["image"].as_str().unwrap();
                    stack::check_image_pinned(image)
                        .unwrap_or_else(|why| panic!("{}: image `{image}` {why}", c.name));
                    assert!(
                        allowed.iter().any(|a| a.as_str() == image),
                        "{} uses `{image}`, which its stack entry does not name",
                        c.name
                    );
                }
            }
        }
    }
}

/// A `*.svc.cluster.local` host named anywhere in a rendered value.
fn service_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || ".-:".contains(c))) {
                if word.contains(".svc.cluster.local") {
                    out.push(word.to_string());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| service_refs(x, out)),
        Value::Object(m) => m.values().for_each(|x| service_refs(x, out)),
        _ => {}
    }
}

/// The names one template uses and another defines agree: Secrets and their keys, ConfigMaps,
/// volumes, service accounts, RBAC references, Service selectors and ports, Ingress backends,
/// in-cluster URLs, and the namespaces everything lives in.
#[test]
fn cross_references_between_objects_resolve() {
    for stack_name in STACKS {
        let s = load_stack(stack_name);
        let m = render_lib(&s, None);
        let all: Vec<&Value> = m.objects().map(|(_, o)| o).collect();
        check_references(stack_name, &all, &["cert-manager"]);
    }
    // The gitops repository on its own: everything lands in the Application's namespace.
    let m = render_lib(&load_stack("default"), None);
    let files = &m
        .components
        .iter()
        .find(|c| c.name == "nyan-cat")
        .unwrap()
        .repos["gitops"];
    let mut objects: Vec<Value> = files
        .iter()
        .filter(|(p, _)| p.ends_with(".yaml"))
        .flat_map(|(p, t)| docs(p, t))
        .collect();
    for o in &mut objects {
        o["metadata"]["namespace"] = json!("nyan-cat");
    }
    let refs: Vec<&Value> = objects.iter().collect();
    check_references("gitops repo", &refs, &["nyan-cat"]);
}

fn check_references(label: &str, all: &[&Value], external_namespaces: &[&str]) {
    let by = |k: &str| -> BTreeMap<(String, String), &Value> {
        all.iter()
            .filter(|o| kind(o) == k)
            .map(|o| ((namespace(o).to_string(), name(o).to_string()), *o))
            .collect()
    };
    let secrets = by("Secret");
    let configmaps = by("ConfigMap");
    let pvcs = by("PersistentVolumeClaim");
    let sas = by("ServiceAccount");
    let roles = by("Role");
    let cluster_roles = by("ClusterRole");
    let services = by("Service");
    let namespaces: BTreeSet<&str> = all
        .iter()
        .filter(|o| kind(o) == "Namespace")
        .map(|o| name(o))
        .chain(external_namespaces.iter().copied())
        .collect();

    let mut pods: Vec<(String, &Value, &Value)> = Vec::new(); // (ns, pod labels, pod spec)
    for o in all {
        let ns = namespace(o).to_string();
        let who = format!("{label}: {}/{} in `{ns}`", kind(o), name(o));
        if !ns.is_empty() {
            assert!(
                namespaces.contains(ns.as_str()),
                "{who}: no Namespace `{ns}`"
            );
        }
        if let Some(pod) = pod_spec(o) {
            pods.push((
                ns.clone(),
                &o["spec"]["template"]["metadata"]["labels"],
                pod,
            ));
            // The workload's selector matches its own pod template.
            if let Some(sel) = o["spec"]["selector"]["matchLabels"].as_object() {
                for (k, v) in sel {
                    assert_eq!(&o["spec"]["template"]["metadata"]["labels"][k], v, "{who}");
                }
            }
            if let Some(sa) = pod["serviceAccountName"].as_str() {
                assert!(
                    sas.contains_key(&(ns.clone(), sa.into())),
                    "{who}: no ServiceAccount `{sa}`"
                );
            }
            for ctr in containers(pod) {
                for e in arr(&ctr["env"]) {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    if let Some(sn) = r["name"].as_str() {
                        let key = r["key"].as_str().unwrap();
                        let secret = secrets
                            .get(&(ns.clone(), sn.into()))
                            .unwrap_or_else(|| panic!("{who}: no Secret `{sn}`"));
                        assert!(
                            secret["data"].get(key).is_some(),
                            "{who}: Secret `{sn}` has no key `{key}`"
                        );
                    }
                }
                let vols: BTreeSet<&str> = arr(&pod["volumes"])
                    .iter()
                    .map(|v| v["name"].as_str().unwrap())
                    .collect();
                for mnt in arr(&ctr["volumeMounts"]) {
                    let v = mnt["name"].as_str().unwrap();
                    assert!(vols.contains(v), "{who}: mounts undeclared volume `{v}`");
                }
            }
            for v in arr(&pod["volumes"]) {
                // An optional source may be missing: the kubelet mounts it empty (Argo CD's
                // `argocd-repo-server-tls`, `argocd-dex-server-tls`).
                if v["secret"]["optional"] == true || v["configMap"]["optional"] == true {
                    continue;
                }
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(
                        configmaps.contains_key(&(ns.clone(), cm.into())),
                        "{who}: no ConfigMap `{cm}`"
                    );
                }
                if let Some(sn) = v["secret"]["secretName"].as_str() {
                    assert!(
                        secrets.contains_key(&(ns.clone(), sn.into())),
                        "{who}: no Secret `{sn}`"
                    );
                }
                if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
                    assert!(
                        pvcs.contains_key(&(ns.clone(), c.into())),
                        "{who}: no PVC `{c}`"
                    );
                }
            }
        }
        if kind(o) == "RoleBinding" || kind(o) == "ClusterRoleBinding" {
            let rr = &o["roleRef"];
            let rn = rr["name"].as_str().unwrap().to_string();
            match rr["kind"].as_str().unwrap() {
                "Role" => assert!(
                    roles.contains_key(&(ns.clone(), rn.clone())),
                    "{who}: no Role `{rn}`"
                ),
                _ => assert!(
                    cluster_roles.contains_key(&(String::new(), rn.clone())),
                    "{who}: no ClusterRole `{rn}`"
                ),
            }
            for s in arr(&o["subjects"]) {
                // A RoleBinding's ServiceAccount subject without a namespace is in the
                // binding's (Argo CD's install.yaml relies on that; kubernetes
                // pkg/apis/rbac/validation/validation.go `ValidateRoleBindingSubject`).
                let key = (
                    s["namespace"].as_str().unwrap_or(&ns).to_string(),
                    s["name"].as_str().unwrap().to_string(),
                );
                assert!(sas.contains_key(&key), "{who}: no ServiceAccount {key:?}");
            }
        }
    }

    // Every Service selects a pod template, and its named target ports exist there.
    for ((ns, svc), o) in &services {
        let sel = o["spec"]["selector"].as_object().unwrap();
        let matched: Vec<&&Value> = pods
            .iter()
            .filter(|(pns, labels, _)| pns == ns && sel.iter().all(|(k, v)| &labels[k] == v))
            .map(|(_, _, pod)| pod)
            .collect();
        assert_eq!(
            matched.len(),
            1,
            "{label}: Service `{svc}` in `{ns}` selects {} pod templates",
            matched.len()
        );
        for p in arr(&o["spec"]["ports"]) {
            if let Some(target) = p["targetPort"].as_str() {
                let found = containers(matched[0])
                    .flat_map(|c| arr(&c["ports"]).iter())
                    .any(|cp| cp["name"] == target);
                assert!(
                    found,
                    "{label}: Service `{svc}` targets port `{target}`, which no container names"
                );
            }
        }
    }
    let service_port = |ns: &str, svc: &str, port: u64| -> bool {
        services
            .get(&(ns.to_string(), svc.to_string()))
            .is_some_and(|s| arr(&s["spec"]["ports"]).iter().any(|p| p["port"] == port))
    };
    // Ingress backends exist.
    for o in all.iter().filter(|o| kind(o) == "Ingress") {
        for r in arr(&o["spec"]["rules"]) {
            for p in arr(&r["http"]["paths"]) {
                let b = &p["backend"]["service"];
                let (svc, port) = (
                    b["name"].as_str().unwrap(),
                    b["port"]["number"].as_u64().unwrap(),
                );
                assert!(
                    service_port(namespace(o), svc, port),
                    "{label}: Ingress/{} → {svc}:{port}",
                    name(o)
                );
            }
        }
    }
    // In-cluster URLs (Gitea's internal URL, Drone's proxy and RPC host, …) name real Services.
    let mut refs = Vec::new();
    for o in all {
        service_refs(o, &mut refs);
    }
    for r in refs {
        let host_port = r
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let (host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, p.parse::<u64>().unwrap()),
            None => (host_port, 80),
        };
        let mut parts = host.split('.');
        let (svc, ns) = (parts.next().unwrap(), parts.next().unwrap());
        if svc.is_empty() || svc == "*" {
            continue;
        }
        assert!(
            service_port(ns, svc, port),
            "{label}: `{r}` names no Service port"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Component specifics

#[test]
fn ingress_controller_reports_status_with_the_node_ip_once_known() {
    let s = load_stack("default");
    for (ip, expected) in [(None, None), (Some("10.20.30.40"), Some("10.20.30.40"))] {
        let m = render_lib(&s, ip);
        let objs: Vec<&Value> = m
            .objects()
            .filter(|(c, _)| *c == "ingress")
            .map(|(_, o)| o)
            .collect();
        let cm = find(objs.iter().copied(), "ConfigMap", "nginx-config");
        assert_eq!(
            cm["data"]["external-status-address"].as_str(),
            expected,
            "node_ip {ip:?}"
        );
        let ds = find(objs.iter().copied(), "DaemonSet", "nginx-ingress");
        let ctr = &ds["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = arr(&ctr["args"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for flag in [
            "-report-ingress-status",
            "-enable-custom-resources=false",
            "-ingress-class=nginx",
            "-enable-leader-election=true",
        ] {
            assert!(args.contains(&flag), "missing {flag}: {args:?}");
        }
        // The ConfigMap and IngressClass the flags name are the ones rendered.
        assert!(args.contains(&"-nginx-configmaps=$(POD_NAMESPACE)/nginx-config"));
        let class = find(objs.iter().copied(), "IngressClass", "nginx");
        assert_eq!(class["spec"]["controller"], "nginx.org/ingress-controller");
        assert_eq!(
            class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
            "true"
        );
        let lock = args
            .iter()
            .find_map(|a| a.strip_prefix("-leader-election-lock-name="))
            .unwrap();
        let role = find(objs.iter().copied(), "Role", "nginx-ingress");
        assert!(
            arr(&role["rules"])
                .iter()
                .any(|r| arr(&r["resourceNames"]).iter().any(|n| n == lock)),
            "the Role grants the Lease `{lock}`"
        );
        let host_ports: BTreeSet<u64> = arr(&ctr["ports"])
            .iter()
            .filter_map(|p| p["hostPort"].as_u64())
            .collect();
        assert_eq!(host_ports, BTreeSet::from([80, 443]));
    }
}

#[test]
fn gitea_is_configured_through_environment_only() {
    let m = render_lib(&load_stack("default"), None);
    let objs: Vec<&Value> = m
        .objects()
        .filter(|(c, _)| *c == "gitea")
        .map(|(_, o)| o)
        .collect();
    let dep = find(objs.iter().copied(), "Deployment", "gitea");
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    let host = format!("gitea.{DOMAIN}");
    assert_eq!(
        env_value(ctr, "GITEA__server__ROOT_URL"),
        Some(format!("https://{host}/").as_str())
    );
    assert_eq!(env_value(ctr, "GITEA__server__DOMAIN"), Some(host.as_str()));
    assert_eq!(env_value(ctr, "GITEA__server__DISABLE_SSH"), Some("true"));
    assert_eq!(
        env_value(ctr, "GITEA__security__INSTALL_LOCK"),
        Some("true")
    );
    assert_eq!(
        env_value(ctr, "GITEA__service__DISABLE_REGISTRATION"),
        Some("true")
    );
    assert_eq!(env_value(ctr, "GITEA__packages__ENABLED"), Some("true"));
    for section in ["webhook", "security"] {
        let list = env_value(ctr, &format!("GITEA__{section}__ALLOWED_HOST_LIST")).unwrap();
        assert!(
            list.split(',').any(|h| h == "*.svc.cluster.local"),
            "{section}: {list}"
        );
    }
    for var in [
        "GITEA__security__SECRET_KEY",
        "GITEA__security__INTERNAL_TOKEN",
    ] {
        let e = arr(&ctr["env"]).iter().find(|e| e["name"] == var).unwrap();
        assert!(
            e["valueFrom"]["secretKeyRef"].is_object(),
            "{var} comes from the Secret"
        );
    }
    // Every variable is a GITEA__section__KEY setting: no legacy first-start variables.
    for e in arr(&ctr["env"]) {
        let n = e["name"].as_str().unwrap();
        assert_eq!(n.matches("__").count(), 2, "{n}");
        assert!(n.starts_with("GITEA__"), "{n}");
    }
    // The rootless image's data and config paths are writable (on the volume).
    let mounts: BTreeSet<&str> = arr(&ctr["volumeMounts"])
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains("/var/lib/gitea") && mounts.contains("/etc/gitea"));
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(ctr[probe]["httpGet"]["path"], "/api/healthz", "{probe}");
    }
    let pvc = find(objs.iter().copied(), "PersistentVolumeClaim", "gitea-data");
    assert!(
        pvc["spec"].get("storageClassName").is_none(),
        "default StorageClass"
    );
    let ingress = find(objs.iter().copied(), "Ingress", "gitea");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.org/client-max-body-size"],
        "0"
    );
}

#[test]
fn drone_talks_to_gitea_and_its_runner_inside_the_cluster() {
    let m = render_lib(&load_stack("default"), None);
    let objs: Vec<&Value> = m.objects().map(|(_, o)| o).collect();
    let drone = find(objs.iter().copied(), "Deployment", "drone");
    let ctr = &drone["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_value(ctr, "DRONE_GITEA_SERVER"),
        Some(format!("https://gitea.{DOMAIN}").as_str())
    );
    assert_eq!(
        env_value(ctr, "DRONE_SERVER_HOST"),
        Some(format!("drone.{DOMAIN}").as_str())
    );
    assert_eq!(env_value(ctr, "DRONE_SERVER_PROTO"), Some("https"));
    assert_eq!(
        env_value(ctr, "DRONE_SERVER_PROXY_HOST"),
        Some("drone.drone.svc.cluster.local")
    );
    assert_eq!(env_value(ctr, "DRONE_SERVER_PROXY_PROTO"), Some("http"));
    assert_eq!(
        env_value(ctr, "DRONE_USER_CREATE"),
        Some("username:lab-admin,admin:true,token:$(DRONE_ADMIN_TOKEN)")
    );
    // $(DRONE_ADMIN_TOKEN) expands only if that variable is defined earlier in the list.
    let names: Vec<&str> = arr(&ctr["env"])
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("DRONE_ADMIN_TOKEN") < pos("DRONE_USER_CREATE"));
    // Go trusts the lab CA from the mounted ConfigMap.
    let cert_file = env_value(ctr, "SSL_CERT_FILE").unwrap();
    let mount = arr(&ctr["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "lab-ca")
        .unwrap();
    assert_eq!(
        cert_file,
        format!("{}/ca.crt", mount["mountPath"].as_str().unwrap())
    );
    assert!(env_value(ctr, "DRONE_GITEA_SKIP_VERIFY").is_none());

    let runner = find(objs.iter().copied(), "Deployment", "drone-runner");
    let rc = &runner["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_value(rc, "DRONE_RPC_HOST"),
        Some("drone.drone.svc.cluster.local")
    );
    assert_eq!(
        env_value(rc, "DRONE_NAMESPACE_DEFAULT"),
        Some("drone-builds")
    );
    let role = objs
        .iter()
        .find(|o| kind(o) == "Role" && namespace(o) == "drone-builds")
        .unwrap();
    let granted: BTreeSet<&str> = arr(&role["rules"])
        .iter()
        .flat_map(|r| arr(&r["resources"]).iter().map(|x| x.as_str().unwrap()))
        .collect();
    for res in ["pods", "pods/log", "secrets", "configmaps"] {
        assert!(granted.contains(res), "{res}");
    }
    // Build steps mount the lab CA from their own namespace.
    assert!(objs.iter().any(|o| kind(o) == "ConfigMap"
        && name(o) == "homelab-ca"
        && namespace(o) == "drone-builds"));
}

#[test]
fn nyan_cat_application_follows_the_gitops_repo() {
    let m = render_lib(&load_stack("default"), None);
    let c = m.components.iter().find(|c| c.name == "nyan-cat").unwrap();
    let app = find(&c.objects, "Application", "nyan-cat");
    assert_eq!(namespace(app), "argocd");
    let spec = &app["spec"];
    assert_eq!(
        spec["source"]["repoURL"],
        "http://gitea-http.gitea.svc.cluster.local:3000/lab/gitops.git"
    );
    assert_eq!(spec["source"]["targetRevision"], "main");
    assert_eq!(
        spec["destination"]["server"],
        "https://kubernetes.default.svc"
    );
    assert_eq!(spec["destination"]["namespace"], "nyan-cat");
    assert_eq!(
        spec["syncPolicy"]["automated"],
        json!({"prune": true, "selfHeal": true})
    );
    assert_eq!(
        spec["syncPolicy"]["syncOptions"],
        json!(["CreateNamespace=true"])
    );
    // The path it syncs exists in the gitops repository's seed content.
    let path = spec["source"]["path"].as_str().unwrap();
    assert!(
        c.repos["gitops"]
            .keys()
            .any(|f| f.starts_with(&format!("{path}/")))
    );
    // The Deployment there refers to Gitea's registry.
    let dep = docs(
        "deployment",
        &c.repos["gitops"][&format!("{path}/deployment.yaml")],
    );
    assert_eq!(
        dep[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("gitea.{DOMAIN}/lab/nyan-cat:bootstrap")
    );
}

// ---------------------------------------------------------------------------------------------
// Our Application CRD

fn our_crd() -> Value {
    let m = render_lib(&load_stack("default"), None);
    find(
        m.objects().map(|(_, o)| o),
        "CustomResourceDefinition",
        "applications.argoproj.io",
    )
    .clone()
}

fn argo_crd() -> Value {
    let text = std::fs::read_to_string(common::contracts_dir().join("argocd/application-crd.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Structural schema rules the API server enforces: every node has a type (or says it keeps
/// unknown fields); no `additionalProperties` next to `properties`.
fn assert_structural(node: &Value, path: &str) {
    let preserve = node["x-kubernetes-preserve-unknown-fields"] == true;
    assert!(node["type"].is_string() || preserve, "{path}: no type");
    assert!(
        !(node.get("properties").is_some() && node.get("additionalProperties").is_some()),
        "{path}: properties and additionalProperties"
    );
    if let Some(props) = node["properties"].as_object() {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if node.get("items").is_some() {
        assert_structural(&node["items"], &format!("{path}[]"));
    }
    if node["additionalProperties"].is_object() {
        assert_structural(&node["additionalProperties"], &format!("{path}{{}}"));
    }
}

/// Where our schema types a field, Argo CD's types it the same; where ours requires a field,
/// Argo CD's does too. So nothing Argo CD accepts is rejected for a field we type.
fn assert_compatible(ours: &Value, argo: &Value, path: &str) {
    for key in ["type", "format"] {
        if let Some(v) = ours.get(key) {
            assert_eq!(Some(v), argo.get(key), "{path}: {key}");
        }
    }
    for r in arr(&ours["required"]) {
        assert!(
            arr(&argo["required"]).contains(r),
            "{path}: we require {r}, Argo CD does not"
        );
    }
    if let Some(props) = ours["properties"].as_object() {
        for (k, v) in props {
            let theirs = &argo["properties"][k];
            assert!(!theirs.is_null(), "{path}.{k}: Argo CD has no such field");
            assert_compatible(v, theirs, &format!("{path}.{k}"));
        }
        // An object we type only partly must keep the rest.
        if !path.is_empty() && props.len() < argo["properties"].as_object().map_or(0, |p| p.len()) {
            assert_eq!(
                ours["x-kubernetes-preserve-unknown-fields"], true,
                "{path} drops Argo CD fields"
            );
        }
    }
    if ours.get("items").is_some() {
        assert_compatible(&ours["items"], &argo["items"], &format!("{path}[]"));
    }
    if ours["additionalProperties"].is_object() {
        assert_compatible(
            &ours["additionalProperties"],
            &argo["additionalProperties"],
            &format!("{path}{{}}"),
        );
    }
}

#[test]
fn our_application_crd_is_structural_and_argo_compatible() {
    let ours = our_crd();
    let argo = argo_crd();
    assert_eq!(ours["spec"]["group"], argo["spec"]["group"]);
    assert_eq!(ours["spec"]["names"], argo["spec"]["names"]);
    assert_eq!(ours["spec"]["scope"], argo["spec"]["scope"]);
    let (ov, av) = (&ours["spec"]["versions"][0], &argo["spec"]["versions"][0]);
    assert_eq!(ov["name"], "v1alpha1");
    assert_eq!(
        ov["additionalPrinterColumns"],
        av["additionalPrinterColumns"]
    );
    // No status subresource, as in Argo CD.
    assert_eq!(ov["subresources"], json!({}));
    assert_eq!(av["subresources"], json!({}));
    let schema = &ov["schema"]["openAPIV3Schema"];
    assert_structural(schema, "");
    assert_compatible(schema, &av["schema"]["openAPIV3Schema"], "");
    // Small: a schema of our own, not a copy of Argo CD's 400 KB one.
    assert!(serde_json::to_string(&ours).unwrap().len() < 20_000);
}

const VALIDATE_WITH_SCHEMA: &str = r#"
import json, sys, jsonschema, yaml
schema = json.load(open(sys.argv[1]))
bad = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
        for e in errors:
            print(f"{path}: {'.'.join(map(str, e.path))}: {e.message}")
        bad += bool(errors)
        print(f"{path}: {'rejected' if errors else 'accepted'}")
sys.exit(0)
"#;

#[test]
fn argo_cds_reference_application_and_ours_validate_against_our_crd() {
    let ctx = TestContext::new();
    let ours = our_crd();
    let schema = &ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let schema_file = ctx.write("schema.json", &serde_json::to_string(schema).unwrap());
    let script = ctx.write("validate.py", VALIDATE_WITH_SCHEMA);
    let m = render_lib(&load_stack("default"), None);
    let app = find(m.objects().map(|(_, o)| o), "Application", "nyan-cat");
    let ours_file = ctx.write("ours.yaml", &homelab::edges::yaml::to_string(app).unwrap());
    let broken = ctx.write(
        "broken.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: x}\nspec: {project: default, source: {repoURL: 5}}\n",
    );
    let example = common::contracts_dir().join("argocd/application-example.yaml");
    let out = Command::new(common::validator_python())
        .arg(&script)
        .arg(&schema_file)
        .arg(&example)
        .arg(&ours_file)
        .arg(&broken)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{}: accepted", example.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: accepted", ours_file.display())),
        "{text}"
    );
    // Missing destination, repoURL of the wrong type: the schema is not a rubber stamp.
    assert!(
        text.contains(&format!("{}: rejected", broken.display())),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Every non-empty secret value of the lab state, raw and base64-encoded.
fn secret_forms(ctx: &TestContext) -> Vec<(String, String)> {
    let state = ctx.state_dir("homelab");
    let map: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(state.join("secrets.json")).unwrap())
            .unwrap();
    let key = std::fs::read_to_string(state.join("ca/ca.key")).unwrap();
    let mut out = Vec::new();
    for (name, value) in map.into_iter().chain([("ca.key".to_string(), key)]) {
        if value.is_empty() {
            continue;
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        out.push((name.clone(), value));
        out.push((format!("{name} (base64)"), b64));
    }
    out
}

#[test]
fn real_secrets_never_reach_stderr_and_placeholders_hide_them() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["render", "--domain", DOMAIN, "--out", "real", "-vv"]);
    run.success();
    let forms = secret_forms(&ctx);
    assert!(forms.len() >= 20, "{}", forms.len());
    for (what, value) in &forms {
        assert!(
            !run.stderr.contains(value.as_str()),
            "stderr shows {what}:\n{}",
            run.stderr
        );
        assert!(!run.stdout.contains(value.as_str()), "stdout shows {what}");
    }
    // The rendered files do carry them (so the check above looked for the right strings).
    let drone_file = std::fs::read_dir(ctx.cwd.join("real"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-drone.yaml"))
        .unwrap();
    let drone = std::fs::read_to_string(drone_file).unwrap();
    let rpc = forms
        .iter()
        .find(|(w, _)| w == "drone_rpc_secret (base64)")
        .unwrap();
    assert!(drone.contains(&rpc.1));

    let placeholder = ctx.homelab(&["render", "--placeholder-secrets", "--domain", DOMAIN]);
    placeholder.success();
    for (what, value) in &forms {
        assert!(
            !placeholder.stdout.contains(value.as_str()),
            "placeholder output shows {what}"
        );
    }
    let cert = std::fs::read_to_string(ctx.state_dir("homelab").join("ca/ca.crt")).unwrap();
    assert!(!placeholder.stdout.contains(cert.trim()));
    assert!(
        placeholder
            .stdout
            .contains("PLACEHOLDER-lab-ca-certificate")
    );
}

// ---------------------------------------------------------------------------------------------
// The NyanCat pipeline

fn drone_yml(r: &Rendered) -> Value {
    let docs = docs(".drone.yml", r.repo_file("nyan-cat/.drone.yml"));
    assert_eq!(docs.len(), 1, "one pipeline");
    docs.into_iter().next().unwrap()
}

fn step<'a>(pipeline: &'a Value, n: &str) -> &'a Value {
    arr(&pipeline["steps"])
        .iter()
        .find(|s| s["name"] == n)
        .unwrap_or_else(|| panic!("no step `{n}`"))
}

#[test]
fn drone_pipeline_builds_on_main_pins_images_and_never_skips_tls() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    let text = r.repo_file("nyan-cat/.drone.yml");
    let p = drone_yml(&r);
    assert_eq!(p["kind"], "pipeline");
    assert_eq!(p["type"], "kubernetes");
    assert_eq!(p["trigger"]["event"], json!(["push", "custom"]));
    assert_eq!(p["trigger"]["branch"], json!(["main"]));
    // Drone's default clone image is not pinned by us and does not trust the lab CA.
    assert_eq!(p["clone"]["disable"], true);
    let stack = load_stack("default");
    let images = &stack.component("nyan-cat").unwrap().images;
    for s in arr(&p["steps"]) {
        let image = s["image"].as_str().unwrap();
        stack::check_image_pinned(image).unwrap_or_else(|why| panic!("`{image}` {why}"));
        assert!(
            images.values().any(|i| i == image),
            "`{image}` is not the stack's"
        );
    }
    let lower = text.to_lowercase();
    for forbidden in [
        "insecure",
        "skip_verify",
        "skip-verify",
        "skip-tls-verify",
        "skip_tls_verify",
        "sslverify",
    ] {
        assert!(!lower.contains(forbidden), "`{forbidden}` in .drone.yml");
    }
    // The bump commit is never built.
    let deploy = step(&p, "deploy");
    assert!(
        arr(&deploy["commands"])
            .iter()
            .any(|c| c.as_str().unwrap().contains("git commit")
                && c.as_str().unwrap().contains("[skip ci]")),
        "the deploy commit says [skip ci]"
    );
    // Secrets are exactly the three `homelab up` sets.
    let mut used = BTreeSet::new();
    for s in arr(&p["steps"]) {
        if let Some(env) = s["environment"].as_object() {
            for v in env.values() {
                if let Some(n) = v["from_secret"].as_str() {
                    used.insert(n);
                }
            }
        }
    }
    assert_eq!(
        used,
        BTreeSet::from(["gitops_token", "registry_password", "registry_username"])
    );
    // The lab CA comes from the runner's ConfigMap and is mounted where TLS happens.
    let ca_volume = arr(&p["volumes"])
        .iter()
        .find(|v| v["config_map"]["name"] == "homelab-ca")
        .unwrap();
    let ca_name = ca_volume["name"].as_str().unwrap();
    let ca_dir = |s: &Value| -> String {
        arr(&s["volumes"])
            .iter()
            .find(|v| v["name"] == ca_name)
            .and_then(|v| v["path"].as_str())
            .unwrap_or_else(|| panic!("step `{}` does not mount the lab CA", s["name"]))
            .to_string()
    };
    let cainfo = p["environment"]["GIT_SSL_CAINFO"].as_str().unwrap();
    for git_step in ["clone", "deploy"] {
        assert_eq!(cainfo, format!("{}/ca.crt", ca_dir(step(&p, git_step))));
    }
    let build = step(&p, "build");
    assert_eq!(build["image"], images["builder"].as_str());
    let args: Vec<&str> = arr(&build["command"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let registry = format!("gitea.{DOMAIN}");
    assert!(
        args.contains(
            &format!("--destination={registry}/lab/nyan-cat:${{DRONE_COMMIT_SHA}}").as_str()
        ),
        "{args:?}"
    );
    assert!(
        args.contains(
            &format!("--registry-certificate={registry}={}/ca.crt", ca_dir(build)).as_str()
        ),
        "{args:?}"
    );
}

/// A step's commands as the shell script the runner executes: Drone turns `$$` into `$`.
fn script(s: &Value) -> String {
    let mut out = String::from("set -e\n");
    for c in arr(&s["commands"]) {
        out.push_str(&c.as_str().unwrap().replace("$$", "$"));
        out.push('\n');
    }
    out
}

/// Run a step's commands with `sh`, the step's plain environment plus `env`, in `cwd`.
fn run_step(s: &Value, cwd: &Path, home: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script(s))
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(vars) = s["environment"].as_object() {
        for (k, v) in vars {
            if let Some(v) = v.as_str() {
                cmd.env(k, v);
            }
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

use crate::support::http_kit::git_backend::git_output as git;

/// A bare repository on branch main holding `files`.
fn seed_repo(root: &Path, repo: &str, files: &BTreeMap<String, String>) -> PathBuf {
    let bare = root.join(format!("{repo}.git"));
    let work = root.join(format!("{repo}-seed"));
    std::fs::create_dir_all(&work).unwrap();
    git(
        root,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            bare.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    for (path, text) in files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "seed"]);
    git(&work, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
    bare
}

fn repo_files(r: &Rendered, repo: &str) -> BTreeMap<String, String> {
    r.repos
        .iter()
        .filter_map(|(p, t)| {
            p.strip_prefix(&format!("{repo}/"))
                .map(|p| (p.to_string(), t.clone()))
        })
        .collect()
}

#[test]
fn drone_deploy_step_bumps_the_tag_in_the_gitops_repo() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    let p = drone_yml(&r);
    let deploy = step(&p, "deploy");
    let root = ctx.temp.path().join("git");
    std::fs::create_dir_all(&root).unwrap();
    let files = repo_files(&r, "gitops");
    let bare = seed_repo(&root, "gitops", &files);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let checkout = root.join("checkout");
    let url = format!("file://{}", bare.display());
    let env = [
        ("GITOPS_URL", url.as_str()),
        ("GITOPS_DIR", checkout.to_str().unwrap()),
        ("GITOPS_TOKEN", "test-token"),
        ("DRONE_COMMIT_SHA", sha),
    ];
    let out = run_step(deploy, &root, &ctx.home, &env);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let message = git(&bare, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(message.trim(), format!("nyan-cat: deploy {sha} [skip ci]"));
    let path = "apps/nyan-cat/deployment.yaml";
    let after = git(&bare, &["show", &format!("main:{path}")]);
    let before = &files[path];
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            format!("          image: \"gitea.{DOMAIN}/lab/nyan-cat:bootstrap\"").as_str(),
            format!("          image: \"gitea.{DOMAIN}/lab/nyan-cat:{sha}\"").as_str()
        )],
        "only the image line changes"
    );
    assert_eq!(before.lines().count(), after.lines().count());
    // The bumped file is still a valid Deployment.
    assert_eq!(docs(path, &after)[0]["kind"], "Deployment");

    // Building the same commit again changes nothing.
    std::fs::remove_dir_all(&checkout).unwrap();
    let again = run_step(deploy, &root, &ctx.home, &env);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("already deploys"));
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]).trim(), "2");
}

#[test]
fn drone_clone_and_registry_login_steps_work() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    let p = drone_yml(&r);
    let root = ctx.temp.path().join("git");
    std::fs::create_dir_all(&root).unwrap();

    // clone: the pushed commit, even when main has moved on since.
    let bare = seed_repo(&root, "nyan-cat", &repo_files(&r, "nyan-cat"));
    let first = git(&bare, &["rev-parse", "main"]).trim().to_string();
    let work = root.join("nyan-cat-seed");
    std::fs::write(work.join("later.txt"), "later\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "later"]);
    git(&work, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
    let workspace = root.join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let out = run_step(
        step(&p, "clone"),
        &workspace,
        &ctx.home,
        &[
            ("DRONE_GIT_HTTP_URL", bare.to_str().unwrap()),
            ("DRONE_COMMIT_BRANCH", "main"),
            ("DRONE_COMMIT_SHA", &first),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(&workspace, &["rev-parse", "HEAD"]).trim(), first);
    assert!(workspace.join("Dockerfile").exists() && !workspace.join("later.txt").exists());

    // registry-login: a docker config kaniko reads.
    let docker = root.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let out = run_step(
        step(&p, "registry-login"),
        &workspace,
        &ctx.home,
        &[
            ("REGISTRY_USERNAME", "lab-admin"),
            ("REGISTRY_PASSWORD", "pa:ss word"),
            ("DOCKER_CONFIG", docker.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(docker.join("config.json")).unwrap())
            .unwrap();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("lab-admin:pa:ss word");
    assert_eq!(
        config,
        json!({"auths": {format!("gitea.{DOMAIN}"): {"auth": expected}}})
    );
}

// ---------------------------------------------------------------------------------------------
// cloud-init

fn user_data(r: &Rendered) -> Value {
    docs("user-data", &r.cloud_init).remove(0)
}

#[test]
fn cloud_init_configures_microk8s_before_installing_it() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    assert!(r.cloud_init.starts_with("#cloud-config\n"));
    let ud = user_data(&r);
    let files = arr(&ud["write_files"]);
    let file = |path: &str| -> &Value {
        files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path}"))
    };
    let launch = docs(
        "launch",
        file("/var/snap/microk8s/common/.microk8s.yaml")["content"]
            .as_str()
            .unwrap(),
    )
    .remove(0);
    assert_eq!(launch["version"], "0.1.0");
    let addons: Vec<&str> = arr(&launch["addons"])
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(addons, ["dns", "hostpath-storage"]);
    let registry = format!("gitea.{DOMAIN}");
    let hosts_toml = launch["containerdRegistryConfigs"][&registry]
        .as_str()
        .unwrap();
    let ca_path = "/usr/local/share/ca-certificates/homelab-ca.crt";
    assert!(
        hosts_toml.contains(&format!("ca = \"{ca_path}\"")),
        "{hosts_toml}"
    );
    assert_eq!(file(ca_path)["content"], "PLACEHOLDER-lab-ca-certificate");
    // The script installs the stack's channel; it is the only thing runcmd runs.
    assert_eq!(
        ud["runcmd"],
        json!([["sh", "/var/lib/homelab/provision.sh", "1.36/stable"]])
    );
    let script = file("/var/lib/homelab/provision.sh")["content"]
        .as_str()
        .unwrap();
    assert!(script.contains("--wait-ready --timeout"), "bounded wait");
    assert!(
        !script.contains("microk8s enable"),
        "addons come from the launch configuration"
    );
}

#[test]
fn cloud_init_without_a_known_domain_leaves_registry_trust_to_the_system_store() {
    // Before the node IP is known the registry host is not either.
    let ctx = TestContext::new();
    ctx.homelab(&["render", "--placeholder-secrets", "--out", "out"])
        .success();
    let r = read_out(&ctx.cwd.join("out"));
    let ud = user_data(&r);
    let launch = arr(&ud["write_files"])[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let launch = docs("launch", &launch).remove(0);
    assert!(
        launch.get("containerdRegistryConfigs").is_none(),
        "{launch}"
    );
}

/// Runs the provisioning script with fake `snap`, `microk8s`, `usermod` and
/// `update-ca-certificates` that log their arguments.
fn run_provision(
    ctx: &TestContext,
    r: &Rendered,
    microk8s_status_exit: i32,
) -> (std::process::Output, PathBuf, String) {
    let ud = user_data(r);
    let script = arr(&ud["write_files"])
        .iter()
        .find(|f| f["path"] == "/var/lib/homelab/provision.sh")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = ctx
        .temp
        .path()
        .join(format!("provision-{microk8s_status_exit}"));
    let fakes = dir.join("bin");
    let state = dir.join("state");
    std::fs::create_dir_all(&fakes).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let log = dir.join("calls.log");
    let fake = |tool: &str, body: &str| {
        let p = fakes.join(tool);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> \"{}\"\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    fake("update-ca-certificates", "exit 0");
    // `snap list microk8s` fails: not installed yet.
    fake("snap", "[ \"$1\" = list ] && exit 1\nexit 0");
    fake("usermod", "exit 0");
    fake("microk8s", &format!("exit {microk8s_status_exit}"));
    std::fs::write(dir.join("provision.sh"), &script).unwrap();
    let out = Command::new("sh")
        .arg(dir.join("provision.sh"))
        .arg("1.36/stable")
        .env_clear()
        .env(
            "PATH",
            format!("{}:{}", fakes.display(), std::env::var("PATH").unwrap()),
        )
        .env("HOMELAB_STATE_DIR", &state)
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (out, state, calls)
}

#[test]
fn provisioning_marks_success_last_and_failure_explicitly() {
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");

    let (out, state, calls) = run_provision(&ctx, &r, 0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.join("provisioned").exists());
    assert!(!state.join("failed").exists());
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        [
            "update-ca-certificates ",
            "snap wait system seed.loaded",
            "snap list microk8s",
            "snap install microk8s --classic --channel=1.36/stable",
            "snap refresh --hold microk8s",
            "usermod -a -G microk8s ubuntu",
            "microk8s status --wait-ready --timeout 600",
        ]
    );

    let (out, state, _) = run_provision(&ctx, &r, 1);
    assert_eq!(out.status.code(), Some(1));
    assert!(!state.join("provisioned").exists());
    let failed = std::fs::read_to_string(state.join("failed")).unwrap();
    assert!(failed.contains("not ready within 600 s"), "{failed}");
}

/// Secret values (passwords, tokens, the CA key) reach stdout only when asked for; files written
/// with `--out` hold them, privately.
#[test]
fn render_to_stdout_redacts_secrets_unless_asked_and_out_files_are_private() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["render", "--domain", DOMAIN]);
    run.success();
    let secrets: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(ctx.state_dir("homelab").join("secrets.json")).unwrap(),
    )
    .unwrap();
    let ca_key = std::fs::read_to_string(ctx.state_dir("homelab").join("ca/ca.key")).unwrap();
    let key_line = ca_key.lines().nth(1).unwrap();
    let key_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&ca_key)
    };
    for (name, value) in secrets.iter().filter(|(_, v)| v.len() >= 8) {
        assert!(!run.stdout.contains(value.as_str()), "`{name}` printed");
    }
    assert!(
        !run.stdout.contains(key_line) && !run.stdout.contains(&key_b64),
        "the CA key printed"
    );
    assert!(run.stdout.contains("<redacted>"));
    assert!(
        run.stderr.contains("note: Secret values are shown as `<redacted>`; `--show-secrets` prints them, `--out DIR` writes them to private files"),
        "{}",
        run.stderr
    );

    let shown = ctx.homelab(&["render", "--domain", DOMAIN, "--show-secrets"]);
    shown.success();
    // Secrets land in `data` (base64) or `stringData` (plain), depending on the template.
    use base64::Engine as _;
    let rpc = &secrets["drone_rpc_secret"];
    let rpc_b64 = base64::engine::general_purpose::STANDARD.encode(rpc);
    assert!(
        shown.stdout.contains(rpc.as_str()) || shown.stdout.contains(&rpc_b64),
        "--show-secrets prints the values"
    );
    assert!(!run.stdout.contains(&rpc_b64), "redacted base64 too");
    ctx.homelab(&["render", "--show-secrets", "--placeholder-secrets"])
        .failure(2);

    ctx.homelab(&["render", "--domain", DOMAIN, "--out", "private"])
        .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = ctx.cwd.join("private");
        assert_eq!(mode(&dir), 0o700);
        let gitea = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-gitea.yaml"))
            .unwrap();
        assert_eq!(mode(&gitea), 0o600);
        let lab_ca = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-lab-ca.yaml"))
            .unwrap();
        let text = std::fs::read_to_string(lab_ca).unwrap();
        assert!(text.contains(key_line) || text.contains(&key_b64), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// The lab's names (issue 12): the cluster's DNS and the nodes' /etc/hosts

/// The `lab-dns` component rendered for a node at 10.0.0.5.
fn lab_dns(stack: &Stack, node_ip: Option<&str>) -> homelab::model::render::ComponentManifests {
    render_lib(stack, node_ip)
        .components
        .into_iter()
        .find(|c| c.name == "lab-dns")
        .expect("the default stack has `lab-dns`")
}

/// Issue 12: pods resolve every lab hostname, and any name under the lab's domain, to the node
/// from the cluster's own CoreDNS, with the `dns` addon's own server block kept as it was.
#[test]
fn the_cluster_dns_answers_the_lab_domain_with_the_node_address() {
    let stack = load_stack("default");
    let c = lab_dns(&stack, Some("10.0.0.5"));
    assert_eq!(c.objects.len(), 1);
    let cm = &c.objects[0];
    assert_eq!(
        (kind(cm), namespace(cm), name(cm)),
        ("ConfigMap", "kube-system", "coredns")
    );
    // Adopted from the addon: never labelled as the lab's (prune and `down` go by the labels).
    assert!(cm["metadata"].get("labels").is_none(), "{cm}");
    let corefile = cm["data"]["Corefile"].as_str().unwrap();
    insta::assert_snapshot!("lab-dns-corefile", corefile);
    // The addon's block: cluster names and the upstream resolver, unchanged.
    for line in [
        ".:53 {",
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {",
        "    forward . /etc/resolv.conf",
        "    reload",
    ] {
        assert!(corefile.lines().any(|l| l == line), "{line}\n{corefile}");
    }
    // The lab's zone: every name in it (the wildcard) is the node.
    assert!(
        corefile.contains(&format!("\n{DOMAIN}:53 {{\n")),
        "{corefile}"
    );
    assert!(
        corefile.contains("answer \"{{ .Name }} 60 IN A 10.0.0.5\""),
        "{corefile}"
    );
    // A new address is a new answer on the next `up`.
    let moved = lab_dns(&stack, Some("10.0.0.9"));
    assert!(
        moved.objects[0]["data"]["Corefile"]
            .as_str()
            .unwrap()
            .contains("IN A 10.0.0.9\""),
    );
    // Valid for the API server.
    let ctx = TestContext::new();
    let file = ctx.write(
        "coredns.yaml",
        &homelab::edges::yaml::to_string(cm).unwrap(),
    );
    if let Err(report) = common::validate_manifests(KUBERNETES, &[file]) {
        panic!("{report}");
    }
    // Before the node's address is known, nothing is rendered, and the file says why.
    let unknown = lab_dns(&stack, None);
    assert!(unknown.objects.is_empty());
    assert!(
        unknown
            .note
            .as_deref()
            .unwrap_or("")
            .contains("node's address"),
        "{:?}",
        unknown.note
    );
}

/// With `--provider existing` the cluster's DNS is its owner's: the stack leaves it alone.
#[test]
fn the_cluster_dns_is_left_alone_on_an_existing_cluster() {
    let mut ctx = TestContext::new();
    ctx.env.insert(
        "HOMELAB_SYNC_IMAGE".into(),
        "registry.example/homelab:1".into(),
    );
    let existing = ctx.homelab(&["plan", "--provider", "existing", "--domain", DOMAIN]);
    existing.success();
    assert!(!existing.stdout.contains("lab-dns"), "{}", existing.stdout);
    let multipass = ctx.homelab(&["plan", "--domain", DOMAIN]);
    multipass.success();
    assert!(multipass.stdout.contains("lab-dns"), "{}", multipass.stdout);
}

fn write_file<'a>(ud: &'a Value, path: &str) -> &'a str {
    arr(&ud["write_files"])
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("cloud-init writes no {path}"))["content"]
        .as_str()
        .unwrap()
}

/// Issue 12: the nodes resolve the lab's names from /etc/hosts, which cloud-init keeps across
/// boots, and the script cloud-init installs writes exactly the block `up` looks for.
#[test]
fn the_nodes_hosts_tool_writes_the_block_up_checks_for_and_keeps_the_rest() {
    use homelab::provider::multipass::hosts::{HOSTS_TOOL, has_block, hosts_block};
    let ctx = TestContext::new();
    let r = render_cli(&ctx, "default");
    let ud = user_data(&r);
    // Multipass's vendor data says `true`, which rewrites /etc/hosts at every boot.
    assert_eq!(ud["manage_etc_hosts"], "localhost");
    let script = ctx.write("homelab-hosts", write_file(&ud, HOSTS_TOOL));
    let hosts = ctx.write(
        "hosts",
        "127.0.1.1 homelab-t-1 homelab-t-1\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
    );
    let names: Vec<String> = ["drone", "gitea", "nyan"]
        .iter()
        .map(|n| format!("{n}.{DOMAIN}"))
        .collect();
    let run = |address: &str| {
        let out = Command::new("sh")
            .arg(&script)
            .arg(address)
            .args(&names)
            .env("HOMELAB_HOSTS_FILE", &hosts)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&hosts).unwrap()
    };
    let first = run("10.0.0.5");
    assert!(has_block(&first, "10.0.0.5", &names), "{first}");
    assert!(
        first.starts_with(
            "127.0.1.1 homelab-t-1 homelab-t-1\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
        ),
        "{first}"
    );
    assert_eq!(run("10.0.0.5"), first, "idempotent");
    let moved = run("10.0.0.9");
    assert!(has_block(&moved, "10.0.0.9", &names), "{moved}");
    assert!(
        !moved.contains("10.0.0.5"),
        "the old address is gone: {moved}"
    );
    assert_eq!(moved.matches(&hosts_block("10.0.0.9", &names)).count(), 1);
    let usage = Command::new("sh")
        .arg(&script)
        .arg("10.0.0.5")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// cloud-init's own schema check (`cloudinit.config.schema`, from Debian's `cloud-init`
/// package, which `scripts/test` unpacks into `.venv/cloud-init`) accepts the user-data we
/// render, and rejects a broken one (so the check can fail).
#[test]
fn cloud_init_user_data_passes_cloud_inits_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = std::env::var_os("HOMELAB_CLOUD_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/cloud-init/usr/lib/python3/dist-packages"));
    assert!(
        package.join("cloudinit/config/schema.py").exists(),
        "cloud-init's schema module is missing at `{}`: run the tests with `scripts/test`, which unpacks Debian's cloud-init package there",
        package.display()
    );
    let ctx = TestContext::new();
    let mut files = Vec::new();
    for stack in STACKS {
        files.push(
            render_cli(&ctx, stack)
                .dir
                .join("cloud-init/user-data.yaml"),
        );
    }
    ctx.homelab(&["render", "--placeholder-secrets", "--out", "no-domain"])
        .success();
    files.push(ctx.cwd.join("no-domain/cloud-init/user-data.yaml"));
    let broken = ctx.write(
        "broken.yaml",
        "#cloud-config\nmanage_etc_hosts: sometimes\nwrite_files:\n  - path: /x\n    permissions: 755\n",
    );
    let out = Command::new(common::validator_python())
        .arg(root.join("scripts/validate_cloud_init.py"))
        .arg("--cloud-init")
        .arg(&package)
        .args(&files)
        .arg(&broken)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &files {
        assert!(text.contains(&format!("{}: valid", f.display())), "{text}");
    }
    assert!(
        text.contains(&format!("{}: invalid", broken.display())),
        "{text}"
    );
    assert!(text.contains("manage_etc_hosts"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the broken file fails the run: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Argo CD (the `argocd` stack) over its real install manifest (issue 15)

/// The `gitops-engine` objects of the argocd stack, rendered over the derived install.yaml.
fn argocd_engine_objects() -> Vec<Value> {
    let m = render_lib(&load_stack("argocd"), None);
    m.components
        .iter()
        .find(|c| c.name == "gitops-engine")
        .unwrap()
        .objects
        .clone()
}

#[test]
fn argocd_is_configured_through_its_documented_objects_with_one_owner_each() {
    let objs = argocd_engine_objects();
    let install = docs("install.yaml", &fixtures::argocd_install());
    // Every object of the release is applied, once; ours are added beside them.
    let count = |k: &str, n: &str| objs.iter().filter(|o| kind(o) == k && name(o) == n).count();
    for u in &install {
        assert_eq!(count(kind(u), name(u)), 1, "{}/{}", kind(u), name(u));
    }
    // The configured ConfigMaps and Secret keep upstream's keys and labels and gain ours; Argo
    // CD reads only settings objects labelled part-of=argocd (util/settings/settings.go).
    let cm = find(&objs, "ConfigMap", "argocd-cm");
    let upstream_cm = find(&install, "ConfigMap", "argocd-cm");
    for (k, v) in upstream_cm["data"].as_object().unwrap() {
        assert_eq!(&cm["data"][k], v, "upstream's `{k}` is kept");
    }
    assert_eq!(cm["data"]["url"], format!("https://argocd.{DOMAIN}"));
    assert_eq!(
        cm["data"]["application.resourceTrackingMethod"],
        "annotation"
    );
    for (k, n) in [
        ("ConfigMap", "argocd-cm"),
        ("ConfigMap", "argocd-cmd-params-cm"),
        ("ConfigMap", "argocd-tls-certs-cm"),
        ("Secret", "argocd-secret"),
        ("Secret", "argocd-redis"),
    ] {
        let o = find(&objs, k, n);
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "argocd",
            "{k}/{n}"
        );
        assert_eq!(
            o["metadata"]["labels"]["homelab.dev/component"],
            "gitops-engine"
        );
    }
    // Each argocd-cmd-params-cm key we set is one a workload of the release reads.
    let read_keys: BTreeSet<&str> = install
        .iter()
        .filter_map(pod_spec)
        .flat_map(containers)
        .flat_map(|c| arr(&c["env"]).iter())
        .filter(|e| e["valueFrom"]["configMapKeyRef"]["name"] == "argocd-cmd-params-cm")
        .map(|e| e["valueFrom"]["configMapKeyRef"]["key"].as_str().unwrap())
        .collect();
    let params = find(&objs, "ConfigMap", "argocd-cmd-params-cm");
    for k in params["data"].as_object().unwrap().keys() {
        assert!(
            read_keys.contains(k.as_str()),
            "no Argo CD workload reads `{k}`"
        );
    }
    assert_eq!(params["data"]["server.insecure"], "true");
    // The lab CA for Gitea's public name, the admin login, webhook secret and redis password.
    let tls = find(&objs, "ConfigMap", "argocd-tls-certs-cm");
    assert_eq!(
        tls["data"][format!("gitea.{DOMAIN}")],
        homelab::model::tls::placeholder().cert_pem.as_str()
    );
    let secret = find(&objs, "Secret", "argocd-secret");
    for key in [
        "admin.password",
        "admin.passwordMtime",
        "server.secretkey",
        "webhook.gogs.secret",
    ] {
        assert!(secret["data"][key].is_string(), "argocd-secret `{key}`");
    }
    // redis's secret-init reads `auth` of `argocd-redis`; the server's REDIS_PASSWORD too.
    assert!(find(&objs, "Secret", "argocd-redis")["data"]["auth"].is_string());
    // The repository Secret Argo CD discovers by label (declarative-setup.md).
    let repo = find(&objs, "Secret", "repo-lab-gitops");
    assert_eq!(
        repo["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repository"
    );
    // Both stacks hold the Application CRD under the same component, so switching engines
    // replaces it in place and never deletes it (nor the Applications).
    let default = render_lib(&load_stack("default"), None);
    let owner = |m: &Manifests| {
        m.components
            .iter()
            .find(|c| {
                c.objects.iter().any(|o| {
                    kind(o) == "CustomResourceDefinition" && name(o) == "applications.argoproj.io"
                })
            })
            .map(|c| c.name.clone())
    };
    let argocd = render_lib(&load_stack("argocd"), None);
    assert_eq!(owner(&default), Some("gitops-engine".into()));
    assert_eq!(owner(&argocd), Some("gitops-engine".into()));
}

#[test]
fn a_stack_that_configures_an_object_its_release_lacks_is_refused() {
    let mut stack = load_stack("argocd");
    let c = stack
        .components
        .iter_mut()
        .find(|c| c.name == "gitops-engine")
        .unwrap();
    c.source
        .upstream
        .as_mut()
        .unwrap()
        .configures
        .push("ConfigMap/argocd-not-there".into());
    let domain = Domain::resolve(Some(DOMAIN), None);
    let secrets = Secrets::placeholders();
    let ca = homelab::model::tls::placeholder();
    let upstream = BTreeMap::from([(
        fixtures::ARGOCD_INSTALL_URL.to_string(),
        fixtures::argocd_install(),
    )]);
    let input = fixtures::render_input("homelab", &stack, &domain, &secrets, &ca, &upstream);
    let err = homelab::model::render::render(&Templates::embedded().unwrap(), &input).unwrap_err();
    assert_eq!(
        err.to_string(),
        "component `gitops-engine` configures `ConfigMap/argocd-not-there` of its upstream manifest, which the manifest or its templates do not have"
    );
}

/// Memory the lab's workloads request, per stack, from the rendered objects (README "Memory").
#[test]
fn memory_requested_per_stack() {
    fn mib(q: &str) -> u64 {
        if let Some(n) = q.strip_suffix("Mi") {
            n.parse().unwrap()
        } else if let Some(n) = q.strip_suffix("Gi") {
            n.parse::<u64>().unwrap() * 1024
        } else {
            panic!("memory quantity `{q}`")
        }
    }
    let mut totals = BTreeMap::new();
    for s in STACKS {
        let m = render_lib(&load_stack(s), None);
        let (mut total, mut without) = (0, Vec::new());
        for (_, o) in m.objects() {
            let Some(pod) = pod_spec(o) else { continue };
            let replicas = o["spec"]["replicas"].as_u64().unwrap_or(1);
            for c in arr(&pod["containers"]) {
                match c["resources"]["requests"]["memory"].as_str() {
                    Some(q) => total += mib(q) * replicas,
                    None => without.push(format!("{}/{}", name(o), c["name"].as_str().unwrap())),
                }
            }
        }
        eprintln!(
            "stack `{s}`: {total} MiB requested; containers without a memory request: {}",
            if without.is_empty() {
                "none".to_string()
            } else {
                without.join(", ")
            }
        );
        totals.insert(*s, (total, without));
    }
    // Every container of ours states its request; Argo CD's install.yaml states none (the
    // scheduler reserves nothing for them, which is why the README gives its own figures).
    assert!(totals["default"].1.is_empty(), "{:?}", totals["default"].1);
    assert_eq!(totals["argocd"].1.len(), 7, "{:?}", totals["argocd"].1);
    assert_eq!(
        totals["default"].0 - totals["argocd"].0,
        64,
        "homelab-sync's 64 MiB"
    );
}

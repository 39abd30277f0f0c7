//! The sync engine against a Kubernetes API: the fake API server by default, a real cluster when
//! `HOMELAB_TEST_KUBECONFIG` names a kubeconfig (tests that need fault injection or the fake's
//! request log are named `fake_only_…` and print why they skip there). Sources are real git
//! repositories over `file://` and smart HTTP (`git http-backend`).

use crate::support::common;
use crate::support::fake_kube;
use crate::support::git_http;
use crate::support::http_kit::tls::{lab_ca, leaf};

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_kube::test_cluster::TestCluster;
use fake_kube::{Controllers, Fault, FaultAction};
use git_http::{GitHttp, Repo};
use homelab::cluster::apply::Applier;
use homelab::sync::cache::Touched;
use homelab::sync::engine::{Engine, EngineConfig, Mode, Outcome, app_resource};
use homelab::sync::source::{GitAuth, GitSource, SourceError};
use homelab::sync::status::{HealthCode, SyncCode};
use homelab::sync::tracking::TRACKING_ID;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const CRD: &str = "argocd/application-crd.json";

/// A test lab: a cluster, unique namespaces for Applications, the app and the Lease, and a git
/// repository.
struct Lab {
    tc: TestCluster,
    temp: tempfile::TempDir,
    repo: Repo,
    apps_ns: String,
    dest_ns: String,
    lease_ns: String,
    applier: Applier,
}

fn config_map(name: &str, data: Value) -> String {
    serde_json::to_string(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
    .unwrap()
}

fn deployment(name: &str, image: &str, app_label: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {app_label}}}\n  template:\n    metadata:\n      labels: {{app: {app_label}}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n";

impl Lab {
    async fn new() -> Lab {
        let tc = TestCluster::new().await;
        let applier = Applier::new(tc.client.clone());
        let temp = tempfile::tempdir().unwrap();
        let lab = Lab {
            repo: Repo::new(&temp.path().join("gitops")),
            apps_ns: tc.ns("argocd"),
            dest_ns: tc.ns("app"),
            lease_ns: tc.ns("system"),
            tc,
            temp,
            applier,
        };
        lab.install_crd().await;
        for ns in [&lab.apps_ns, &lab.dest_ns, &lab.lease_ns] {
            lab.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"homelab.dev/lab": lab.tc.lab}}}))
                .await;
        }
        // Every test runs its own engine, and on a real cluster several tests run at once, all
        // with an Application called `nyan`: as with several Argo CD instances on one cluster,
        // each engine gets its own installation id, or each would take the others' objects
        // for its own (and prune them).
        lab.set_installation_id(&lab.apps_ns, &lab.tc.lab).await;
        lab
    }

    /// Whether pods can run: always on the fake (its controllers), on a real cluster only with a
    /// Ready node (a control plane without a kubelet never makes a Deployment available).
    async fn runs_pods(&self, test: &str) -> bool {
        if !self.tc.is_real() {
            return true;
        }
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.tc.client.clone());
        let ready = nodes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if !ready {
            eprintln!(
                "SKIPPED in `{test}`: waiting for workloads to be ready needs running pods, and this cluster has no Ready node"
            );
        }
        ready
    }

    /// `installationID` in `argocd-cm` of the Applications namespace `ns`, where Argo CD (and
    /// the engine) read it.
    async fn set_installation_id(&self, ns: &str, id: &str) {
        self.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": ns}, "data": {"installationID": id}}))
            .await;
    }

    async fn install_crd(&self) {
        let text = std::fs::read_to_string(common::contracts_dir().join(CRD)).unwrap();
        let crd: Value = serde_json::from_str(&text).unwrap();
        if self.tc.is_real() {
            // A real cluster may run Argo CD: never replace (or later delete) its CRD.
            let api: Api<DynamicObject> = Api::all_with(
                self.tc.client.clone(),
                &kube::discovery::ApiResource {
                    group: "apiextensions.k8s.io".into(),
                    version: "v1".into(),
                    api_version: "apiextensions.k8s.io/v1".into(),
                    kind: "CustomResourceDefinition".into(),
                    plural: "customresourcedefinitions".into(),
                },
            );
            if api
                .get_opt("applications.argoproj.io")
                .await
                .unwrap()
                .is_some()
            {
                return;
            }
        }
        self.apply(crd).await;
    }

    async fn apply(&self, obj: Value) {
        common::fixtures::apply_setup(&self.applier, obj).await;
    }

    fn engine_config(&self) -> EngineConfig {
        let mut cfg = EngineConfig::new(self.temp.path().join("work"));
        cfg.app_namespace = self.apps_ns.clone();
        cfg.self_heal.base = Duration::from_millis(100);
        cfg.wave_timeout = Duration::from_secs(60);
        cfg
    }

    fn engine(&self) -> (Arc<Engine>, mpsc::UnboundedReceiver<Touched>) {
        self.engine_with(self.engine_config())
    }

    fn engine_with(&self, cfg: EngineConfig) -> (Arc<Engine>, mpsc::UnboundedReceiver<Touched>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Engine::new(self.tc.client.clone(), cfg, tx)), rx)
    }

    fn apps_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.tc.client.clone(), &self.apps_ns, &app_resource())
    }

    fn app_spec(&self, path: &str) -> Value {
        json!({
            "project": "default",
            "source": {"repoURL": self.repo.url(), "path": path, "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": self.dest_ns},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        })
    }

    async fn create_app(&self, name: &str, spec: Value) {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": self.apps_ns},
            "spec": spec,
        }))
        .unwrap();
        self.apps_api()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// A JSON merge patch to the Application `name`, as `kubectl patch --type merge` sends it.
    async fn patch_app(&self, name: &str, patch: &Value) {
        self.apps_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Commit (as `message`) one ConfigMap `{"k": "v"}` per name into `app/<name>.json`.
    fn commit_config_maps(&self, names: &[&str], message: &str) {
        for name in names {
            self.repo.write(
                &format!("app/{name}.json"),
                &config_map(name, json!({"k": "v"})),
            );
        }
        self.repo.commit(message);
    }

    /// [`Lab::commit_config_maps`], and create the Application `nyan` over `app/`.
    async fn create_nyan_over_config_maps(&self, names: &[&str], message: &str) {
        self.commit_config_maps(names, message);
        self.create_app("nyan", self.app_spec("app")).await;
    }

    async fn app(&self, name: &str) -> Value {
        let o = self.apps_api().get(name).await.unwrap();
        let mut v = serde_json::to_value(o).unwrap();
        v["apiVersion"] = json!("argoproj.io/v1alpha1");
        v["kind"] = json!("Application");
        v
    }

    async fn reconcile(&self, engine: &Engine, name: &str) -> Outcome {
        let app = self.app(name).await;
        engine.reconcile(&app, Mode::Auto).await.unwrap()
    }

    /// The API of `kind` in the destination namespace, and its resource.
    async fn dest_api(
        &self,
        api_version: &str,
        kind: &str,
    ) -> (Api<DynamicObject>, homelab::cluster::apply::Resolved) {
        let r = self
            .applier
            .discovery()
            .resolve(api_version, kind)
            .await
            .unwrap()
            .unwrap();
        (self.applier.api(&r, &self.dest_ns), r)
    }

    async fn live(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let (api, r) = self.dest_api(api_version, kind).await;
        api.get_opt(name)
            .await
            .unwrap()
            .map(|o| homelab::cluster::apply::to_value(&o, &r))
    }

    /// Change an object as another tool would (a different field manager, `kubectl edit`-like).
    async fn meddle(&self, api_version: &str, kind: &str, name: &str, patch: Value) {
        let (api, _) = self.dest_api(api_version, kind).await;
        let pp = PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        api.patch(name, &pp, &Patch::Merge(&patch)).await.unwrap();
    }

    /// Validate Application objects read back from the cluster against the contract CRD.
    fn validate_apps(&self, apps: &[Value]) {
        let dir = self.temp.path().join("validate");
        std::fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        for (i, a) in apps.iter().enumerate() {
            let mut a = a.clone();
            // What the server adds is not part of the schema.
            if let Some(m) = a["metadata"].as_object_mut() {
                for k in [
                    "managedFields",
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "generation",
                ] {
                    m.remove(k);
                }
            }
            // JSON (valid YAML) keeps timestamps strings, as the API server serves them.
            let p = dir.join(format!("app-{i}.yaml"));
            std::fs::write(&p, serde_json::to_string_pretty(&a).unwrap()).unwrap();
            paths.push(p);
        }
        if let Err(e) = common::validate_manifests("1.36.0", &paths) {
            panic!("Application objects do not validate against the contract CRD:\n{e}");
        }
    }
}

fn cond_text(o: &Outcome) -> String {
    o.conditions
        .iter()
        .map(|c| format!("{}: {}", c.kind.as_str(), c.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The reconcile applied `n` objects and left the Application Synced.
#[track_caller]
fn assert_applied_and_synced(o: &Outcome, n: usize) {
    assert_eq!(
        (o.applied, o.sync),
        (n, SyncCode::Synced),
        "{}",
        cond_text(o)
    );
}

/// The reconcile pruned `n` objects and left the Application Synced.
#[track_caller]
fn assert_pruned_and_synced(o: &Outcome, n: usize) {
    assert_eq!(
        (o.pruned, o.sync),
        (n, SyncCode::Synced),
        "{}",
        cond_text(o)
    );
}

/// The outcome's conditions include `text`.
#[track_caller]
fn assert_condition(o: &Outcome, text: &str) {
    assert!(cond_text(o).contains(text), "{}", cond_text(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_change_drift_and_delete_are_kept_in_line_with_git() {
    let lab = Lab::new().await;
    if let Some(fake) = lab.tc.fake() {
        fake.controllers(Controllers::ready_after(Duration::from_millis(50)).enabled());
    }
    lab.repo.write(
        "app/config.json",
        &config_map("settings", json!({"color": "blue"})),
    );
    lab.repo.write(
        "app/web.yaml",
        &format!(
            "{}---\n{SERVICE}",
            deployment("web", "registry.k8s.io/pause:3.10", "web")
        ),
    );
    lab.repo.write("app/README.md", "not a manifest");
    lab.repo.write("app/hook.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: presync\n  annotations: {argocd.argoproj.io/hook: PreSync}\n");
    let first = lab.repo.commit("first");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _touched) = lab.engine();

    // Create.
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.applied, 3, "{}", cond_text(&o));
    assert_eq!(o.sync, SyncCode::Synced, "{}", cond_text(&o));
    assert_eq!(o.revision.as_deref(), Some(first.as_str()));
    // A resource hook is reported, never silently dropped.
    assert_eq!(
        cond_text(&o),
        "UnsupportedFieldWarning: `hook.yaml:1`: `ConfigMap/presync` is an Argo CD resource hook (`PreSync`); hooks are not supported by homelab's sync engine, so it was not applied"
    );
    assert!(lab.live("v1", "ConfigMap", "presync").await.is_none());
    let cm = lab.live("v1", "ConfigMap", "settings").await.unwrap();
    assert_eq!(cm["data"]["color"], "blue");
    assert_eq!(
        cm["metadata"]["annotations"][TRACKING_ID],
        format!("nyan:/ConfigMap:{}/settings", lab.dest_ns)
    );
    let app = lab.app("nyan").await;
    let st = &app["status"];
    assert_eq!(st["sync"]["status"], "Synced");
    assert_eq!(st["sync"]["revision"], first.as_str());
    assert_eq!(st["operationState"]["phase"], "Succeeded");
    assert_eq!(
        st["operationState"]["syncResult"]["revision"],
        first.as_str()
    );
    assert_eq!(
        st["operationState"]["operation"]["initiatedBy"]["automated"],
        true
    );
    assert_eq!(st["resources"].as_array().unwrap().len(), 3);
    assert_eq!(st["history"][0]["revision"], first.as_str());
    assert!(st["reconciledAt"].is_string());
    let kinds: Vec<&str> = st["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["ConfigMap", "Service", "Deployment"]);

    // Health reaches Healthy once the workload is ready (watch-driven; bounded here).
    let deadline = Instant::now() + Duration::from_secs(if lab.tc.is_real() { 120 } else { 10 });
    if lab
        .runs_pods("create_change_drift_and_delete_are_kept_in_line_with_git")
        .await
    {
        loop {
            let o = lab.reconcile(&engine, "nyan").await;
            if o.health.status == HealthCode::Healthy {
                break;
            }
            assert_ne!(o.health.status, HealthCode::Degraded, "{:?}", o.health);
            assert!(Instant::now() < deadline, "never Healthy: {:?}", o.health);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Change in git.
    lab.repo.write(
        "app/config.json",
        &config_map("settings", json!({"color": "red"})),
    );
    let second = lab.repo.commit("red");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 1);
    assert_eq!(
        lab.live("v1", "ConfigMap", "settings").await.unwrap()["data"]["color"],
        "red"
    );
    assert_eq!(
        lab.app("nyan").await["status"]["sync"]["revision"],
        second.as_str()
    );

    // Drift by another writer: self-healed (after the backoff's first, short delay).
    lab.meddle(
        "v1",
        "ConfigMap",
        "settings",
        json!({"data": {"color": "green"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.applied, 1, "{}", cond_text(&o));
    assert_eq!(
        lab.live("v1", "ConfigMap", "settings").await.unwrap()["data"]["color"],
        "red"
    );

    // Delete from git: pruned.
    lab.repo.remove("app/config.json");
    lab.repo.commit("drop config");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.pruned, 1, "{}", cond_text(&o));
    assert_eq!(o.sync, SyncCode::Synced);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.live("v1", "ConfigMap", "settings").await.is_some() {
        assert!(Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = lab.app("nyan").await;
    assert_eq!(app["status"]["resources"].as_array().unwrap().len(), 2);
    let pruned: Vec<&Value> = app["status"]["operationState"]["syncResult"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "Pruned")
        .collect();
    assert_eq!(pruned.len(), 1);
    lab.validate_apps(&[app]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_only_a_no_op_reconcile_lists_each_kind_once_and_writes_nothing() {
    let lab = Lab::new().await;
    let Some(fake) = lab.tc.fake_only(
        "fake_only_a_no_op_reconcile_lists_each_kind_once_and_writes_nothing",
        "counts requests in the fake's log",
    ) else {
        return;
    };
    for i in 0..20 {
        lab.repo.write(
            &format!("app/cm-{i}.json"),
            &config_map(&format!("cm-{i}"), json!({"i": i.to_string()})),
        );
    }
    lab.repo.write(
        "app/web.yaml",
        &format!(
            "{}---\n{SERVICE}",
            deployment("web", "registry.k8s.io/pause:3.10", "web")
        ),
    );
    lab.repo.commit("many");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.applied, 22, "{}", cond_text(&o));

    // A fresh engine (cold cache), then a second reconcile (warm): no writes at all.
    let (engine, _t) = lab.engine();
    fake.clear_requests();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        (o.applied, o.sync, o.wrote_status),
        (0, SyncCode::Synced, false),
        "{}",
        cond_text(&o)
    );
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.wrote_status), (0, false));
    let reqs = fake.requests();
    let writes: Vec<_> = reqs
        .iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let mut lists = std::collections::BTreeMap::<String, usize>::new();
    for r in reqs.iter().filter(|r| r.verb == "list") {
        *lists.entry(r.path.clone()).or_default() += 1;
    }
    assert!(lists.values().all(|n| *n <= 1), "{lists:?}");
    // The test itself reads the Application before each reconcile; the engine reads its
    // settings (`argocd-cm`) once and GETs no managed object.
    let gets: Vec<&String> = reqs
        .iter()
        .filter(|r| {
            r.verb == "get"
                && !r.path.contains("/applications/")
                && !r.path.ends_with("/configmaps/argocd-cm")
        })
        .map(|r| &r.path)
        .collect();
    assert!(
        gets.is_empty(),
        "a GET per object would not scale: {gets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_or_an_unknown_kind_names_the_file_and_prunes_nothing() {
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a", "b"], "two").await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 2);

    lab.repo.write("app/b.json", "{ this is: [not json");
    lab.repo.commit("broken");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned), (0, 0));
    assert_eq!(o.sync, SyncCode::OutOfSync);
    assert_eq!(o.health.status, HealthCode::Degraded);
    assert!(
        o.health.message.starts_with("`b.json` line "),
        "{:?}",
        o.health
    );
    assert!(
        o.health.message.contains(": invalid YAML: "),
        "{:?}",
        o.health
    );
    assert!(
        cond_text(&o).starts_with("ComparisonError: `b.json` line "),
        "{}",
        cond_text(&o)
    );
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
    assert!(lab.live("v1", "ConfigMap", "b").await.is_some());

    lab.repo
        .write("app/b.json", &config_map("b", json!({"k": "v"})));
    lab.repo.write(
        "app/typo.yaml",
        "apiVersion: apps/v1\nkind: Deploymnt\nmetadata: {name: x}\n",
    );
    lab.repo.commit("typo");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned, o.sync), (0, 0, SyncCode::OutOfSync));
    assert!(
        cond_text(&o)
            .contains("`typo.yaml` line 1: unknown kind `Deploymnt` (apiVersion `apps/v1`)"),
        "{}",
        cond_text(&o)
    );
    assert_eq!(o.health.status, HealthCode::Degraded);
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
    lab.validate_apps(&[lab.app("nyan").await]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repo_or_missing_revision_sets_a_condition_and_keeps_the_last_state() {
    let lab = Lab::new().await;
    lab.repo
        .write("app/a.json", &config_map("a", json!({"k": "v"})));
    let rev = lab.repo.commit("one");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 1);

    let mut spec = lab.app_spec("app");
    spec["source"]["targetRevision"] = json!("no-such-branch");
    let patch = json!({"spec": spec});
    lab.patch_app("nyan", &patch).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned, o.sync), (0, 0, SyncCode::Unknown));
    assert_condition(
        &o,
        "ComparisonError: revision `no-such-branch` not found in `file://",
    );
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
    let app = lab.app("nyan").await;
    // The last sync is still on record.
    assert_eq!(
        app["status"]["operationState"]["syncResult"]["revision"],
        rev.as_str()
    );

    spec["source"]["targetRevision"] = json!("main");
    spec["source"]["repoURL"] = json!(format!("file://{}/missing-repo", lab.temp.path().display()));
    let patch = json!({"spec": spec});
    lab.patch_app("nyan", &patch).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned, o.sync), (0, 0, SyncCode::Unknown));
    assert_condition(&o, "ComparisonError: fetch `file://");
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
    lab.validate_apps(&[lab.app("nyan").await]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_render_prunes_nothing_unless_allow_empty() {
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a", "b"], "two").await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 2);

    lab.repo.remove("app/a.json");
    lab.repo.remove("app/b.json");
    lab.repo.write("app/.keep", "");
    lab.repo.commit("empty");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.pruned, 0);
    assert_condition(&o, "refusing to prune all 2 tracked objects");
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());

    let mut spec = lab.app_spec("app");
    spec["syncPolicy"]["automated"]["allowEmpty"] = json!(true);
    let patch = json!({"spec": spec});
    lab.patch_app("nyan", &patch).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.pruned, 2, "{}", cond_text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_objects_tracked_to_the_app_are_ever_pruned() {
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    // Neighbours in the same namespace: untracked, tracked to another app, and a copy whose
    // tracking id names a different object.
    for (name, ann) in [
        ("untracked", json!({})),
        (
            "other-app",
            json!({TRACKING_ID: format!("other:/ConfigMap:{}/other-app", lab.dest_ns)}),
        ),
        (
            "copied",
            json!({TRACKING_ID: format!("nyan:/ConfigMap:{}/a", lab.dest_ns)}),
        ),
    ] {
        lab.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": lab.dest_ns, "annotations": ann}, "data": {"x": "y"}}))
            .await;
    }
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned), (1, 0), "{}", cond_text(&o));
    lab.repo.remove("app/a.json");
    lab.commit_config_maps(&["b"], "swap");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned), (1, 1), "{}", cond_text(&o));
    for name in ["untracked", "other-app", "copied"] {
        assert!(
            lab.live("v1", "ConfigMap", name).await.is_some(),
            "{name} was pruned"
        );
    }
    // Prune=false keeps an object even when git drops it.
    lab.repo.write("app/b.json", &serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "b", "annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}}, "data": {"k": "v"}})).unwrap());
    lab.repo
        .write("app/c.json", &config_map("c", json!({"k": "v"})));
    lab.repo.commit("pin b");
    lab.reconcile(&engine, "nyan").await;
    lab.repo.remove("app/b.json");
    lab.repo.commit("drop b");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.pruned, 0, "{}", cond_text(&o));
    assert!(lab.live("v1", "ConfigMap", "b").await.is_some());
    let app = lab.app("nyan").await;
    // Argo's rule: the app is OutOfSync while a resource waits for pruning.
    assert_eq!(app["status"]["sync"]["status"], "OutOfSync");
    let b = app["status"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "b")
        .unwrap()
        .clone();
    assert_eq!(
        (b["requiresPruning"].clone(), b["status"].clone()),
        (json!(true), json!("OutOfSync"))
    );
    // Even a manual sync with prune skips it, and says so.
    let o = engine
        .reconcile(&lab.app("nyan").await, Mode::Manual { prune: true })
        .await
        .unwrap();
    assert_eq!(o.pruned, 0, "{}", cond_text(&o));
    let app = lab.app("nyan").await;
    let skipped: Vec<&Value> = app["status"]["operationState"]["syncResult"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "PruneSkipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{app:#}");
    assert!(lab.live("v1", "ConfigMap", "b").await.is_some());
    lab.validate_apps(&[app]);
}

/// The finalizer tests hold deletions with (another controller's, as far as the engine knows).
const HOLD: &str = "homelab.test/hold";

impl Lab {
    /// Hold `name` with the test's finalizer, as another controller would.
    async fn hold(&self, name: &str) {
        self.meddle(
            "v1",
            "ConfigMap",
            name,
            json!({"metadata": {"finalizers": [HOLD]}}),
        )
        .await;
    }

    /// Let it go (the other controller is done).
    async fn release(&self, name: &str) {
        self.meddle(
            "v1",
            "ConfigMap",
            name,
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    }

    /// Wait until `name` is gone, as a user polling `kubectl get` would (bounded).
    async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.live("v1", "ConfigMap", name).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "ConfigMap/{name} was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Take the engine's watch reports until none has come for a while (bounded): every change made
/// so far has reached its cache, as it has when the run loop reconciles on the last report.
async fn until_quiet(touched: &mut mpsc::UnboundedReceiver<Touched>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), touched.recv()).await {
            Ok(Some(_)) => continue,
            _ => return,
        }
    }
    panic!("the engine's watch kept reporting changes for 10 s");
}

fn resource<'a>(app: &'a Value, name: &str) -> Option<&'a Value> {
    app["status"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
}

/// Issue 12: the engine prunes with foreground propagation, so a real API server keeps each
/// pruned object (with a `deletionTimestamp` and the `foregroundDeletion` finalizer) until the
/// garbage collector removes it. Like Argo's sync, the prune is done when the object is gone:
/// the reconcile that pruned it reports it gone and the app Synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_is_done_when_the_object_is_gone_not_when_the_delete_was_accepted() {
    let lab = Lab::new().await;
    if let Some(fake) = lab.tc.fake() {
        // A slow garbage collector: the window a real one leaves, made wide.
        fake.set_gc_delay(Duration::from_millis(400));
    }
    lab.create_nyan_over_config_maps(&["a", "b"], "two").await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 2);

    lab.repo.remove("app/b.json");
    lab.repo.commit("drop b");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_pruned_and_synced(&o, 1);
    assert!(
        lab.live("v1", "ConfigMap", "b").await.is_none(),
        "the reconcile ended while `b` was still being deleted"
    );
    let app = lab.app("nyan").await;
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    assert!(resource(&app, "b").is_none(), "{app:#}");
    assert_eq!(app["status"]["operationState"]["phase"], "Succeeded");
    lab.validate_apps(&[app]);
}

/// Issue 12: an object another finalizer holds stays, being deleted, for as long as that
/// controller takes. The engine waits for it (bounded), never sends the DELETE again (gitops-
/// engine's `pruneObject` skips objects already being deleted: no update hot loop), reports it
/// as still to be pruned and Progressing ("Pending deletion"), and is Synced once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_object_a_finalizer_holds_is_waited_for_and_never_deleted_twice() {
    let lab = Lab::new().await;
    lab.commit_config_maps(&["a", "b"], "two");
    let mut spec = lab.app_spec("app");
    spec["syncPolicy"]["retry"] = json!({"limit": 0});
    lab.create_app("nyan", spec).await;
    let mut cfg = lab.engine_config();
    cfg.wave_timeout = Duration::from_secs(2);
    let (engine, _t) = lab.engine_with(cfg);
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 2);
    lab.hold("b").await;

    lab.repo.remove("app/b.json");
    lab.repo.commit("drop b");
    if let Some(f) = lab.tc.fake() {
        f.clear_requests();
    }
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Failed),
        "{}",
        cond_text(&o)
    );
    let text = cond_text(&o);
    assert!(
        text.contains(&format!(
            "SyncError: `ConfigMap/b` in `{}` is still being deleted after 2 s (finalizers `{HOLD}`)",
            lab.dest_ns
        )),
        "{text}"
    );
    assert_eq!(o.sync, SyncCode::OutOfSync);
    let b = lab.live("v1", "ConfigMap", "b").await.unwrap();
    assert!(b["metadata"]["deletionTimestamp"].is_string(), "{b:#}");
    let app = lab.app("nyan").await;
    let r = resource(&app, "b").unwrap();
    assert_eq!(
        (
            &r["requiresPruning"],
            &r["status"],
            &r["health"]["status"],
            &r["health"]["message"]
        ),
        (
            &json!(true),
            &json!("OutOfSync"),
            &json!("Progressing"),
            &json!("Pending deletion")
        ),
        "{app:#}"
    );
    assert_eq!(app["status"]["health"]["status"], "Progressing");
    lab.validate_apps(std::slice::from_ref(&app));

    // Synced again by hand while it is still held: waited for again, not deleted again.
    let o = engine
        .reconcile(&lab.app("nyan").await, Mode::Manual { prune: true })
        .await
        .unwrap();
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Failed)
    );
    if let Some(f) = lab.tc.fake() {
        let deletes: Vec<String> = f
            .requests()
            .iter()
            .filter(|r| r.verb == "delete")
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(deletes.len(), 1, "deleted more than once: {deletes:?}");
    }

    // Its controller lets it go: gone, and the app is Synced with nothing left to prune.
    lab.release("b").await;
    lab.wait_gone("b").await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.sync, SyncCode::Synced, "{}", cond_text(&o));
    let app = lab.app("nyan").await;
    assert!(resource(&app, "b").is_none(), "{app:#}");
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
}

/// Issue 12: an object git wants whose live copy is being deleted (someone ran `kubectl delete`
/// and a finalizer holds it) is not live and in sync: it is OutOfSync and Progressing, no write
/// goes to the copy that is going, and once it is gone the object is created anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_git_whose_copy_is_being_deleted_is_recreated_once_it_is_gone() {
    let lab = Lab::new().await;
    lab.commit_config_maps(&["a"], "one");
    let mut spec = lab.app_spec("app");
    spec["syncPolicy"]["retry"] = json!({"limit": 0});
    lab.create_app("nyan", spec).await;
    let mut cfg = lab.engine_config();
    cfg.wave_timeout = Duration::from_secs(2);
    let (engine, mut touched) = lab.engine_with(cfg);
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 1);
    let first = lab.live("v1", "ConfigMap", "a").await.unwrap();
    lab.hold("a").await;
    let r = lab
        .applier
        .discovery()
        .resolve("v1", "ConfigMap")
        .await
        .unwrap()
        .unwrap();
    lab.applier
        .api(&r, &lab.dest_ns)
        .delete("a", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    let held = lab.live("v1", "ConfigMap", "a").await.unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    // The engine learns of the deletion from its watch, as its run loop does before the reconcile
    // that event starts; reconciling at once could race the watch event.
    until_quiet(&mut touched).await;
    if let Some(f) = lab.tc.fake() {
        f.clear_requests();
    }

    let o = engine
        .reconcile(&lab.app("nyan").await, Mode::Manual { prune: true })
        .await
        .unwrap();
    let text = cond_text(&o);
    assert_eq!(o.sync, SyncCode::OutOfSync, "{text}");
    assert!(
        text.contains(&format!(
            "`ConfigMap/a` in `{}` is still being deleted after 2 s",
            lab.dest_ns
        )),
        "{text}"
    );
    assert_eq!(
        (o.health.status, o.health.message.as_str()),
        (HealthCode::Progressing, "Pending deletion")
    );
    // Nothing was written to the copy that is going (the garbage collector did finish the
    // foreground part of its deletion meanwhile, so only the request log can tell).
    if let Some(f) = lab.tc.fake() {
        let writes: Vec<String> = f
            .writes()
            .iter()
            .filter(|r| r.path.contains("/configmaps/a"))
            .map(|r| format!("{} {}", r.verb, r.path))
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
    }

    lab.release("a").await;
    lab.wait_gone("a").await;
    let o = engine
        .reconcile(&lab.app("nyan").await, Mode::Manual { prune: true })
        .await
        .unwrap();
    assert_applied_and_synced(&o, 1);
    let again = lab.live("v1", "ConfigMap", "a").await.unwrap();
    assert_ne!(again["metadata"]["uid"], first["metadata"]["uid"]);
    assert!(again["metadata"]["deletionTimestamp"].is_null());
}

/// Issue 12: the prune propagation policies do what they do on a real cluster, and the engine
/// waits for the whole of it: in the foreground (Argo's default) a pruned Deployment is gone
/// together with its ReplicaSets when the sync ends; with `PrunePropagationPolicy=orphan` its
/// ReplicaSets stay, no longer owned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_propagation_foreground_takes_dependents_along_and_orphan_leaves_them() {
    let lab = Lab::new().await;
    if let Some(fake) = lab.tc.fake() {
        fake.controllers(
            Controllers::ready_after(Duration::from_millis(20))
                .enabled()
                .pods(),
        );
    }
    let rs = lab
        .applier
        .discovery()
        .resolve("apps/v1", "ReplicaSet")
        .await
        .unwrap()
        .unwrap();
    let rs_api = lab.applier.api(&rs, &lab.dest_ns);
    // The ReplicaSets a Deployment's uid owns (the deployment controller creates them).
    let owned_by = |uid: Value| {
        let rs_api = rs_api.clone();
        async move {
            rs_api
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap())
                .filter(|o| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["uid"] == uid))
                })
                .collect::<Vec<Value>>()
        }
    };
    let wait_for_rs = |name: &'static str| {
        let lab = &lab;
        let owned_by = &owned_by;
        async move {
            let d = lab.live("apps/v1", "Deployment", name).await.unwrap();
            let uid = d["metadata"]["uid"].clone();
            let deadline = Instant::now() + Duration::from_secs(30);
            while owned_by(uid.clone()).await.is_empty() {
                assert!(Instant::now() < deadline, "no ReplicaSet for {name}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            uid
        }
    };
    let mut spec = lab.app_spec("app");
    lab.repo.write(
        "app/web.yaml",
        &deployment("web", "registry.k8s.io/pause:3.10", "web"),
    );
    lab.commit_config_maps(&["keep"], "web");
    lab.create_app("nyan", spec.clone()).await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 2);
    let web = wait_for_rs("web").await;

    lab.repo.remove("app/web.yaml");
    lab.repo.commit("drop web");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_pruned_and_synced(&o, 1);
    assert!(lab.live("apps/v1", "Deployment", "web").await.is_none());
    assert!(
        owned_by(web).await.is_empty(),
        "a ReplicaSet outlived its Deployment's foreground deletion"
    );

    spec["syncPolicy"]["syncOptions"] = json!(["PrunePropagationPolicy=orphan"]);
    lab.patch_app("nyan", &json!({"spec": spec})).await;
    lab.repo.write(
        "app/worker.yaml",
        &deployment("worker", "registry.k8s.io/pause:3.10", "worker"),
    );
    lab.repo.commit("worker");
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 1);
    let worker = wait_for_rs("worker").await;
    let before: Vec<String> = owned_by(worker.clone())
        .await
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    lab.repo.remove("app/worker.yaml");
    lab.repo.commit("drop worker");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_pruned_and_synced(&o, 1);
    assert!(lab.live("apps/v1", "Deployment", "worker").await.is_none());
    for name in before {
        let left = rs_api.get(&name).await.unwrap();
        let refs = serde_json::to_value(&left).unwrap()["metadata"]["ownerReferences"].clone();
        assert!(
            refs.as_array()
                .is_none_or(|r| r.iter().all(|r| r["uid"] != worker)),
            "ReplicaSet/{name} still names its deleted owner: {refs}"
        );
    }
}

/// Issue 12: on a real cluster tests run side by side, each with its own engine and an
/// Application called `nyan`, and each engine pruned the others' objects (their tracking ids
/// name `nyan` too). Like several Argo CD instances on one cluster, engines with their own
/// `installationID` (argocd-cm) stamp what they apply and take only what carries their id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_with_their_own_installation_ids_never_take_each_others_objects() {
    let lab = Lab::new().await;
    // A second installation on the same cluster: its own Applications namespace and id, an
    // Application of the same name, objects of the same names in its own namespace.
    let other_apps = lab.tc.ns("argocd-b");
    let other_dest = lab.tc.ns("app-b");
    for ns in [&other_apps, &other_dest] {
        lab.apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"homelab.dev/lab": lab.tc.lab}}}))
            .await;
    }
    lab.set_installation_id(&other_apps, &format!("{}-b", lab.tc.lab))
        .await;
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    let mut other_spec = lab.app_spec("app");
    other_spec["destination"]["namespace"] = json!(other_dest);
    let other_app: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "nyan", "namespace": other_apps},
        "spec": other_spec,
    }))
    .unwrap();
    let other_api: Api<DynamicObject> =
        Api::namespaced_with(lab.tc.client.clone(), &other_apps, &app_resource());
    other_api
        .create(&PostParams::default(), &other_app)
        .await
        .unwrap();
    let mut cfg = lab.engine_config();
    cfg.app_namespace = other_apps.clone();
    cfg.work_dir = lab.temp.path().join("work-b");
    let (other, _t2) = lab.engine_with(cfg);
    let other_reconcile = || async {
        let o = other_api.get("nyan").await.unwrap();
        let mut v = serde_json::to_value(o).unwrap();
        v["apiVersion"] = json!("argoproj.io/v1alpha1");
        v["kind"] = json!("Application");
        other.reconcile(&v, Mode::Auto).await.unwrap()
    };
    assert_eq!(other_reconcile().await.applied, 1);
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        (o.applied, o.pruned, o.sync),
        (1, 0, SyncCode::Synced),
        "{}",
        cond_text(&o)
    );
    let cm = lab.live("v1", "ConfigMap", "a").await.unwrap();
    assert_eq!(
        cm["metadata"]["annotations"]["argocd.argoproj.io/installation-id"],
        lab.tc.lab.as_str()
    );
    // Git drops `a`: each engine prunes its own `a`, and only that.
    lab.repo.remove("app/a.json");
    lab.commit_config_maps(&["b"], "swap");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        (o.applied, o.pruned, o.sync),
        (1, 1, SyncCode::Synced),
        "{}",
        cond_text(&o)
    );
    let r = lab
        .applier
        .discovery()
        .resolve("v1", "ConfigMap")
        .await
        .unwrap()
        .unwrap();
    let theirs = lab.applier.api(&r, &other_dest);
    assert!(
        theirs.get_opt("a").await.unwrap().is_some(),
        "the other installation's `a` was pruned"
    );
    let o = other_reconcile().await;
    assert_eq!(
        (o.applied, o.pruned, o.sync),
        (1, 1, SyncCode::Synced),
        "{}",
        cond_text(&o)
    );
    assert!(lab.live("v1", "ConfigMap", "b").await.is_some());
}

/// Issue 12 (design target: a first sync costs at most 1.1 requests per object): the watch
/// cache knows which names are free, so no GET precedes each server-side apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_only_a_first_sync_sends_no_get_before_each_apply() {
    let lab = Lab::new().await;
    let Some(fake) = lab.tc.fake_only(
        "fake_only_a_first_sync_sends_no_get_before_each_apply",
        "counts requests in the fake's log",
    ) else {
        return;
    };
    let n = 100;
    for i in 0..n {
        lab.repo.write(
            &format!("app/cm-{i}.json"),
            &config_map(&format!("cm-{i}"), json!({"i": i.to_string()})),
        );
    }
    lab.repo.commit("many");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _t) = lab.engine();
    fake.clear_requests();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        (o.applied, o.sync),
        (n, SyncCode::Synced),
        "{}",
        cond_text(&o)
    );
    let reqs = fake.requests();
    let object_gets: Vec<&String> = reqs
        .iter()
        .filter(|r| r.verb == "get" && r.path.contains("/configmaps/cm-"))
        .map(|r| &r.path)
        .collect();
    assert!(
        object_gets.is_empty(),
        "a GET before each apply: {object_gets:?}"
    );
    let total = reqs.iter().filter(|r| !r.fault).count();
    assert!(
        total as f64 <= 1.1 * n as f64,
        "{total} requests for {n} new objects: {:?}",
        fake.verb_counts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_only_a_watch_ending_in_410_gone_relists_and_misses_no_change() {
    let lab = Lab::new().await;
    let Some(fake) = lab.tc.fake_only(
        "fake_only_a_watch_ending_in_410_gone_relists_and_misses_no_change",
        "needs the fake's watch-history compaction",
    ) else {
        return;
    };
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    let (engine, mut touched) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 1);
    while touched.try_recv().is_ok() {}
    // The watch breaks and history is compacted; the change happens while it is down.
    fake.compact();
    fake.inject(
        Fault::new(FaultAction::Gone, 1)
            .verb("watch")
            .path("configmaps"),
    );
    fake.inject(
        Fault::new(FaultAction::Drop, 1)
            .verb("watch")
            .path("configmaps"),
    );
    lab.meddle("v1", "ConfigMap", "a", json!({"data": {"k": "changed"}}))
        .await;
    let t = tokio::time::timeout(Duration::from_secs(20), touched.recv()).await;
    assert_eq!(t.unwrap().unwrap().app_key, "nyan");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.applied,
        1,
        "the change made while the watch was down was seen: {}",
        cond_text(&o)
    );
    assert_eq!(
        lab.live("v1", "ConfigMap", "a").await.unwrap()["data"]["k"],
        "v"
    );
    assert!(fake.verb_counts().get("list").copied().unwrap_or(0) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_only_429_and_5xx_are_retried_with_backoff() {
    let lab = Lab::new().await;
    let Some(fake) = lab.tc.fake_only(
        "fake_only_429_and_5xx_are_retried_with_backoff",
        "injects faults",
    ) else {
        return;
    };
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    fake.inject(
        Fault::status(429, Some(0), 2)
            .verb("patch")
            .path("configmaps"),
    );
    fake.inject(Fault::status(503, None, 1).verb("patch").path("configmaps"));
    fake.inject(Fault::status(500, None, 1).verb("list").path("configmaps"));
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 1);
    assert_eq!(fake.pending_faults(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_only_a_kill_between_apply_and_status_write_converges_without_duplicate_work() {
    let lab = Lab::new().await;
    let Some(fake) = lab.tc.fake_only(
        "fake_only_a_kill_between_apply_and_status_write_converges_without_duplicate_work",
        "fails the status write by fault injection",
    ) else {
        return;
    };
    for i in 0..5 {
        lab.repo.write(
            &format!("app/cm-{i}.json"),
            &config_map(&format!("cm-{i}"), json!({"i": "x"})),
        );
    }
    let rev = lab.repo.commit("five");
    lab.create_app("nyan", lab.app_spec("app")).await;
    // Every status write fails (all retries): the engine "dies" after applying, before recording
    // anything.
    fake.inject(
        Fault::new(FaultAction::Drop, 6)
            .verb("patch")
            .path("/applications/"),
    );
    let (engine, _t) = lab.engine();
    let app = lab.app("nyan").await;
    assert!(engine.reconcile(&app, Mode::Auto).await.is_err());
    assert_eq!(fake.pending_faults(), 0);
    assert!(lab.app("nyan").await["status"].is_null());
    assert!(lab.live("v1", "ConfigMap", "cm-4").await.is_some());
    drop(engine);
    // "Restart": a new engine with nothing in memory.
    let (engine, _t) = lab.engine();
    fake.clear_requests();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 0);
    let writes: Vec<String> = fake
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert_eq!(writes.len(), 1, "only the status write: {writes:?}");
    assert!(writes[0].contains("/applications/nyan"), "{writes:?}");
    assert_eq!(
        lab.app("nyan").await["status"]["sync"]["revision"],
        rev.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_field_change_is_a_clear_error_or_a_replace_when_asked() {
    let lab = Lab::new().await;
    lab.repo.write(
        "app/web.yaml",
        &deployment("web", "registry.k8s.io/pause:3.10", "web"),
    );
    lab.repo.commit("one");
    let mut spec = lab.app_spec("app");
    spec["syncPolicy"]["retry"] = json!({"limit": 0});
    lab.create_app("nyan", spec).await;
    let (engine, _t) = lab.engine();
    assert_eq!(lab.reconcile(&engine, "nyan").await.applied, 1);
    let uid = lab.live("apps/v1", "Deployment", "web").await.unwrap()["metadata"]["uid"].clone();

    // The selector is immutable.
    lab.repo.write(
        "app/web.yaml",
        &deployment("web", "registry.k8s.io/pause:3.10", "web2"),
    );
    lab.repo.commit("new selector");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Failed)
    );
    let text = cond_text(&o);
    assert!(text.contains("SyncError: `Deployment/web`"), "{text}");
    assert!(text.contains("immutable"), "{text}");
    assert!(
        text.contains("add the sync option `Replace=true`"),
        "{text}"
    );
    let app = lab.app("nyan").await;
    assert_eq!(app["status"]["operationState"]["phase"], "Failed");
    assert_eq!(
        app["status"]["operationState"]["syncResult"]["resources"][0]["status"],
        "SyncFailed"
    );
    lab.validate_apps(&[app]);

    // Asked to replace: deleted and recreated.
    let mut text = deployment("web", "registry.k8s.io/pause:3.10", "web2");
    text = text.replace("metadata:\n  name: web\n", "metadata:\n  name: web\n  annotations:\n    argocd.argoproj.io/sync-options: Replace=true\n");
    lab.repo.write("app/web.yaml", &text);
    lab.repo.commit("replace");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 1);
    let live = lab.live("apps/v1", "Deployment", "web").await.unwrap();
    assert_ne!(live["metadata"]["uid"], uid);
    assert_eq!(live["spec"]["selector"]["matchLabels"]["app"], "web2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_field_manager_is_healed_with_backoff_not_in_a_hot_loop() {
    let lab = Lab::new().await;
    lab.repo
        .write("app/a.json", &config_map("a", json!({"k": "git"})));
    lab.repo.commit("one");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let mut cfg = lab.engine_config();
    cfg.self_heal.base = Duration::from_millis(200);
    let (engine, touched) = lab.engine_with(cfg);
    let (trig_tx, trig_rx) = mpsc::unbounded_channel();
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(true);
    let (ready_tx, _ready_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(homelab::sync::run::run(
        engine.clone(),
        Default::default(),
        trig_rx,
        touched,
        leader_rx,
        ready_tx,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    // Wait for the first sync.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.live("v1", "ConfigMap", "a").await.is_none() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = engine
        .stats
        .syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    // Let the startup reconciles (first list, own writes) settle before counting git fetches.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetches_before = engine
        .stats
        .fetches
        .load(std::sync::atomic::Ordering::Relaxed);
    // Another writer keeps changing the field for 4 s.
    let fight_until = Instant::now() + Duration::from_secs(4);
    let mut meddles = 0;
    while Instant::now() < fight_until {
        lab.meddle(
            "v1",
            "ConfigMap",
            "a",
            json!({"data": {"k": format!("other-{meddles}")}}),
        )
        .await;
        meddles += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heals = engine
        .stats
        .syncs
        .load(std::sync::atomic::Ordering::Relaxed)
        - base;
    // 200 ms × 3ⁿ from the last sync: at most ~4 heals in 4 s, against ~80 changes.
    assert!(heals >= 1, "never healed");
    assert!(
        heals <= 5,
        "{heals} heals for {meddles} changes: a hot loop"
    );
    // Drift is an event on a managed object: the desired state is known, git is not asked.
    let fetches = engine
        .stats
        .fetches
        .load(std::sync::atomic::Ordering::Relaxed)
        - fetches_before;
    assert_eq!(fetches, 0, "git fetched on object events");
    drop(trig_tx);
    let _ = stop_tx.send(true);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_only_the_lease_holder_acts() {
    use homelab::sync::lease::{Leader, LeaseConfig};
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a"], "one").await;

    let mut engines = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for id in ["engine-a", "engine-b"] {
        let (engine, touched) = lab.engine();
        let mut lc = LeaseConfig::new(id);
        lc.namespace = lab.lease_ns.clone();
        lc.duration = Duration::from_secs(3);
        lc.renew_every = Duration::from_millis(500);
        let (leader, leader_rx) = Leader::new(lab.tc.client.clone(), lc);
        let leader = Arc::new(leader);
        let (_trig_tx, trig_rx) = mpsc::unbounded_channel();
        let (ready_tx, _r) = tokio::sync::watch::channel(false);
        let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let l2 = leader.clone();
        let s = stop(stop_rx.clone());
        tasks.push(tokio::spawn(async move { l2.run(s).await }));
        tasks.push(tokio::spawn(homelab::sync::run::run(
            engine.clone(),
            Default::default(),
            trig_rx,
            touched,
            leader_rx.clone(),
            ready_tx,
            stop(stop_rx.clone()),
        )));
        engines.push((engine, leader_rx, _trig_tx));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.live("v1", "ConfigMap", "a").await.is_none() {
        assert!(Instant::now() < deadline, "nobody synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaders: Vec<bool> = engines.iter().map(|(_, rx, _)| *rx.borrow()).collect();
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    for (engine, rx, _) in &engines {
        let n = engine
            .stats
            .reconciles
            .load(std::sync::atomic::Ordering::Relaxed);
        if *rx.borrow() {
            assert!(n >= 1);
        } else {
            assert_eq!(n, 0, "the standby reconciled");
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_fetches_branches_tags_and_commits_over_file_and_smart_http_with_a_token() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("srv");
    let repo = Repo::new(&root.join("lab/gitops.git"));
    repo.write("app/a.yaml", "v: 1\n");
    let c1 = repo.commit("one");
    repo.tag("v1.0.0");
    repo.write("app/a.yaml", "v: 2\n");
    let c2 = repo.commit("two");
    repo.branch("release");
    let token = "tok-3f9a-secret";
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("lab-admin:{token}")
        )
    );
    let http = GitHttp::start(&root, Some(basic.clone())).await;
    let http_url = format!("{}/lab/gitops.git", http.base);
    let auth = GitAuth {
        username: Some("lab-admin".into()),
        password: Some(homelab::edges::redact::Secret::new(token)),
        ca_pem: None,
    };
    let read = |c: &homelab::sync::source::Checkout| {
        (
            c.commit.clone(),
            std::fs::read_to_string(c.dir.join("app/a.yaml")).unwrap(),
        )
    };
    for (url, auth) in [
        (repo.url(), GitAuth::default()),
        (http_url.clone(), auth.clone()),
    ] {
        let src = GitSource::new(temp.path().join(format!("work-{}", url.len())));
        for (rev, want, text) in [
            ("main", &c2, "v: 2\n"),
            ("HEAD", &c2, "v: 2\n"),
            ("v1.0.0", &c1, "v: 1\n"),
            ("release", &c2, "v: 2\n"),
            (c1.as_str(), &c1, "v: 1\n"),
        ] {
            let (commit, content) = src
                .with_checkout(&url, rev, &auth, read)
                .await
                .unwrap_or_else(|e| panic!("{url} {rev}: {e}"));
            assert_eq!((&commit, content.as_str()), (want, text), "{url} at {rev}");
        }
        let err = src
            .with_checkout(&url, "nope", &auth, read)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SourceError::RevisionNotFound { .. }),
            "{url}: {err}"
        );
    }
    // The token went in a header, never in a URL; without it the server refuses.
    let seen = http.seen.all();
    assert!(
        seen.iter()
            .all(|s| !s.path.contains(token) && !s.query.contains(token))
    );
    assert!(
        seen.iter()
            .any(|s| s.authorization.as_deref() == Some(basic.as_str()))
    );
    let src = GitSource::new(temp.path().join("work-noauth"));
    let err = src
        .with_checkout(&http_url, "main", &GitAuth::default(), read)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_http_repository_with_credentials_from_an_argo_repository_secret() {
    let lab = Lab::new().await;
    let root = lab.temp.path().join("srv");
    let repo = Repo::new(&root.join("lab/gitops.git"));
    repo.write("app/a.json", &config_map("a", json!({"k": "v"})));
    repo.commit("one");
    let token = "tok-repo-secret";
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("lab-admin:{token}")
        )
    );
    let http = GitHttp::start(&root, Some(basic)).await;
    if lab.tc.is_real() {
        eprintln!(
            "SKIPPED on the real cluster: the HTTP git server listens on this machine's 127.0.0.1; the laptop engine would reach it, but the secret-based part is identical to the fake run"
        );
    }
    let url = format!("{}/lab/gitops.git", http.base);
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    lab.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "gitops-repo", "namespace": lab.apps_ns,
            "labels": {"argocd.argoproj.io/secret-type": "repository"}},
        "data": {"url": b64(&url), "username": b64("lab-admin"), "password": b64(token)}}))
        .await;
    let mut spec = lab.app_spec("app");
    spec["source"]["repoURL"] = json!(url);
    lab.create_app("nyan", spec).await;
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waves_apply_in_order_and_wait_for_health() {
    let lab = Lab::new().await;
    if !lab
        .runs_pods("sync_waves_apply_in_order_and_wait_for_health")
        .await
    {
        return;
    }
    if let Some(fake) = lab.tc.fake() {
        fake.controllers(Controllers::ready_after(Duration::from_millis(300)).enabled());
    }
    let wave = |name: &str, w: i64| {
        serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "annotations": {"argocd.argoproj.io/sync-wave": w.to_string()}}, "data": {"w": w.to_string()}}))
        .unwrap()
    };
    lab.repo.write("app/late.json", &wave("late", 1));
    lab.repo.write(
        "app/db.yaml",
        &deployment("db", "registry.k8s.io/pause:3.10", "db").replace(
            "metadata:\n  name: db\n",
            "metadata:\n  name: db\n  annotations: {argocd.argoproj.io/sync-wave: \"-1\"}\n",
        ),
    );
    lab.repo.write("app/mid.json", &wave("mid", 0));
    lab.repo.commit("waves");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 3);
    let created = |v: &Value| {
        v["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let db = lab.live("apps/v1", "Deployment", "db").await.unwrap();
    let mid = lab.live("v1", "ConfigMap", "mid").await.unwrap();
    let late = lab.live("v1", "ConfigMap", "late").await.unwrap();
    // Wave 0 only after wave -1 was healthy (the Deployment is ready), wave 1 after wave 0.
    assert!(db["status"]["availableReplicas"].as_i64().unwrap_or(0) >= 1 || lab.tc.is_real());
    assert!(created(&db) <= created(&mid) && created(&mid) <= created(&late));
    if let Some(fake) = lab.tc.fake() {
        let order: Vec<String> = fake
            .writes()
            .iter()
            .filter(|r| r.apply && r.field_manager.as_deref() == Some("homelab"))
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(order, vec!["db", "mid", "late"]);
        let ready = fake.ready_events();
        let db_ready = ready
            .iter()
            .find(|e| e.name == "db")
            .expect("db became ready")
            .at;
        let mid_at = fake.writes().iter().find(|r| r.name == "mid").unwrap().at;
        assert!(
            db_ready <= mid_at,
            "wave 0 started before wave -1 was healthy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_sync_operation_and_create_namespace_and_cascading_delete() {
    let lab = Lab::new().await;
    lab.commit_config_maps(&["a"], "one");
    let ns = lab.tc.ns("created");
    let mut spec = lab.app_spec("app");
    spec["destination"]["namespace"] = json!(ns);
    spec["syncPolicy"] = json!({
        "syncOptions": ["CreateNamespace=true"],
        "managedNamespaceMetadata": {"labels": {"homelab.dev/lab": lab.tc.lab}},
    });
    lab.create_app("manual", spec).await;
    let (engine, _t) = lab.engine();
    // Not automated: compared, not synced.
    let o = lab.reconcile(&engine, "manual").await;
    assert_eq!(
        (o.applied, o.sync),
        (0, SyncCode::OutOfSync),
        "{}",
        cond_text(&o)
    );
    // `argocd app sync` writes an operation; the engine runs it and clears it.
    let patch =
        json!({"operation": {"sync": {"prune": true}, "initiatedBy": {"username": "teacher"}}});
    lab.patch_app("manual", &patch).await;
    let o = lab.reconcile(&engine, "manual").await;
    assert_applied_and_synced(&o, 1);
    let app = lab.app("manual").await;
    assert!(app["operation"].is_null());
    assert_eq!(
        app["status"]["operationState"]["operation"]["initiatedBy"]["username"],
        "teacher"
    );
    lab.validate_apps(std::slice::from_ref(&app));

    // Cascading delete through Argo's finalizer.
    let patch = json!({"metadata": {"finalizers": ["resources-finalizer.argocd.argoproj.io"]}});
    lab.patch_app("manual", &patch).await;
    lab.apps_api()
        .delete("manual", &Default::default())
        .await
        .unwrap();
    let o = lab.reconcile(&engine, "manual").await;
    assert_eq!(o.pruned, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.apps_api().get_opt("manual").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the Application kept its finalizer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_endpoint_rejects_and_counts_bad_signatures_oversized_bodies_and_replays() {
    use homelab::sync::run::Trigger;
    use homelab::sync::server::{ServerState, serve};
    use homelab::sync::webhook::{Webhook, WebhookConfig, sign};
    let lab = Lab::new().await;
    let (engine, _t) = lab.engine();
    let (trig_tx, mut trig_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(true);
    let hook = Arc::new(Webhook::new(WebhookConfig {
        secret: homelab::edges::redact::Secret::new("hook-secret"),
        max_body: 4096,
        remembered: 100,
    }));
    let state = Arc::new(ServerState {
        engine: engine.clone(),
        webhook: Some(hook.clone()),
        triggers: trig_tx,
        ready: ready_rx,
        leader: leader_rx,
        page: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("{base}{p}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    ready_tx.send(true).unwrap();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": "abc",
        "repository": {"clone_url": lab.repo.url(), "html_url": "http://gitea/x"}}))
    .unwrap();
    let post = |body: Vec<u8>, sig: Option<String>, delivery: &str| {
        let mut r = http
            .post(format!("{base}/webhook"))
            .header("X-Gitea-Event", "push")
            .header("X-Gitea-Delivery", delivery)
            .body(body);
        if let Some(s) = sig {
            r = r.header("X-Gitea-Signature", s);
        }
        r.send()
    };
    let good = sign(b"hook-secret", &body);
    assert_eq!(
        post(body.clone(), Some(sign(b"wrong", &body)), "d1")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(body.clone(), None, "d1").await.unwrap().status(), 401);
    let big = vec![b' '; 5000];
    assert_eq!(
        post(big.clone(), Some(sign(b"hook-secret", &big)), "d2")
            .await
            .unwrap()
            .status(),
        413
    );
    assert_eq!(
        post(body.clone(), Some(good.clone()), "d1")
            .await
            .unwrap()
            .status(),
        202
    );
    match tokio::time::timeout(Duration::from_secs(5), trig_rx.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Trigger::Push(p) => {
            assert_eq!(p.after, "abc");
            assert!(p.concerns(&lab.repo.url()));
        }
        other => panic!("{other:?}"),
    }
    // Argo CD's webhook path is the same endpoint (a replayed delivery there is caught too).
    let replay = http
        .post(format!("{base}/api/webhook"))
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Delivery", "d1")
        .header("X-Gitea-Signature", good.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 409);
    assert_eq!(
        post(body.clone(), Some(good), "d1").await.unwrap().status(),
        409
    );
    assert!(
        trig_rx.try_recv().is_err(),
        "a rejected delivery triggered work"
    );
    let c = hook.counters.snapshot();
    assert_eq!(
        (c.accepted, c.bad_signature, c.oversized, c.replayed),
        (1, 2, 1, 2)
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("homelab_sync_webhooks_total{outcome=\"bad_signature\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homelab_sync_webhooks_total{outcome=\"replayed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("homelab_sync_leader 1"), "{metrics}");
    let _ = stop_tx.send(true);
    let _ = server.await;
}

/// Run `homelab` off the async runtime (the fake API server lives on it).
async fn homelab_cli(ctx: Arc<common::TestContext>, args: Vec<String>) -> common::Run {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ctx.homelab(&a)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_apps_and_diff_commands() {
    let lab = Lab::new().await;
    lab.repo.write(
        "app/config.json",
        &config_map("settings", json!({"color": "blue"})),
    );
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let secret = |v: &str| {
        serde_json::to_string(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
            "type": "Opaque", "data": {"password": b64(v)}}),
        )
        .unwrap()
    };
    lab.repo.write("app/secret.json", &secret("hunter2-old"));
    let rev = lab.repo.commit("one");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let ctx = Arc::new(common::TestContext::new());
    let kube = |extra: &[&str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--kubeconfig".to_string(),
            lab.tc.kubeconfig.display().to_string(),
            "--app-namespace".into(),
            lab.apps_ns.clone(),
        ]);
        v
    };
    let work = lab.temp.path().join("cli-work").display().to_string();

    let mut args = kube(&["sync", "--once", "--work-dir", &work]);
    // Never the developer's own environment: POD_NAMESPACE is only read in the cluster anyway.
    args.extend(["--lease-namespace".to_string(), lab.lease_ns.clone()]);
    let run = homelab_cli(ctx.clone(), args.clone()).await;
    run.success();
    assert!(run.stdout.starts_with("nyan "), "{}", run.stdout);
    assert!(
        run.stdout.contains(" Synced ") && run.stdout.contains("applied 2"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&rev[..8]), "{}", run.stdout);

    let run = homelab_cli(ctx.clone(), kube(&["apps"])).await;
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SYNC") && lines[0].contains("HEALTH"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with("nyan") && lines[1].contains("Synced") && lines[1].contains("Healthy"),
        "{}",
        run.stdout
    );
    let run = homelab_cli(ctx.clone(), kube(&["apps", "--output", "json"])).await;
    run.success();
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["sync"], "Synced");
    assert_eq!(v[0]["revision"], rev.as_str());

    // Nothing to show, exit 0.
    let run = homelab_cli(ctx.clone(), kube(&["diff", "nyan", "--work-dir", &work])).await;
    run.success();
    assert!(run.stderr.contains("`nyan` matches git"), "{}", run.stderr);

    // Changes: exit 1, a readable diff, secrets redacted.
    lab.repo.write(
        "app/config.json",
        &config_map("settings", json!({"color": "red"})),
    );
    lab.repo.write("app/secret.json", &secret("hunter2-new"));
    lab.repo
        .write("app/new.json", &config_map("extra", json!({"a": "b"})));
    lab.repo.commit("two");
    let run = homelab_cli(ctx.clone(), kube(&["diff", "nyan", "--work-dir", &work])).await;
    run.failure(1);
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "==== ConfigMap/settings in {} would change ====",
            lab.dest_ns
        )),
        "{out}"
    );
    assert!(out.contains("-  color: blue\n+  color: red\n"), "{out}");
    assert!(
        out.contains(&format!(
            "==== ConfigMap/extra in {} would be created ====",
            lab.dest_ns
        )),
        "{out}"
    );
    assert!(
        out.contains("-  password: '<redacted: live>'\n+  password: '<redacted: git>'"),
        "{out}"
    );
    assert!(
        !out.contains(&b64("hunter2-old")) && !out.contains(&b64("hunter2-new")),
        "{out}"
    );
    assert!(!out.contains("homelab.dev/applied-hash"), "{out}");
    // The diff wrote nothing.
    assert_eq!(
        lab.live("v1", "ConfigMap", "settings").await.unwrap()["data"]["color"],
        "blue"
    );

    // Another engine holds the Lease: `--once` refuses, naming it.
    lab.apply(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "homelab-sync-engine", "namespace": lab.lease_ns},
        "spec": {"holderIdentity": "homelab-sync-7d9f-abcde", "leaseDurationSeconds": 3600,
                 "renewTime": homelab::sync::status::now().replace('Z', ".000000Z")}}),
    )
    .await;
    let run = homelab_cli(ctx.clone(), args).await;
    run.failure(1);
    assert!(
        run.stderr.contains(&format!("error: another sync engine (`homelab-sync-7d9f-abcde`) holds the Lease `{}/homelab-sync-engine`", lab.lease_ns)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: the in-cluster engine is running"),
        "{}",
        run.stderr
    );
    assert_eq!(
        lab.live("v1", "ConfigMap", "settings").await.unwrap()["data"]["color"],
        "blue"
    );
}

#[test]
fn the_side_load_image_runs_the_engine_and_git() {
    use homelab::sync::image::{EngineImageConfig, engine_image, write_archive};
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_homelab"));
    let spec = engine_image(
        exe,
        &EngineImageConfig {
            reference: "localhost/homelab:test".into(),
            git: None,
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("engine.tar");
    let info = write_archive(&spec, &mut std::fs::File::create(&archive).unwrap()).unwrap();
    // Unpack the archive and its layer with the system tar, as a container runtime would.
    let root = dir.path().join("rootfs");
    let oci = dir.path().join("oci");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&oci).unwrap();
    let tar = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("tar")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tar(&[
        "-xf".as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        oci.as_os_str(),
    ]);
    let layer = oci
        .join("blobs/sha256")
        .join(info.layer_digest.trim_start_matches("sha256:"));
    tar(&[
        "-xf".as_ref(),
        layer.as_os_str(),
        "-C".as_ref(),
        root.as_os_str(),
    ]);
    assert!(root.join("usr/local/bin/homelab").exists());
    // Running inside the unpacked root needs chroot, i.e. root; elsewhere the content checks above
    // are what this test can prove.
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIPPED running inside the image: chroot needs root");
        return;
    }
    let chroot = which::which("chroot").expect("chroot is installed");
    // A container runtime provides /dev; a bare chroot does not.
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let mknod = std::process::Command::new(which::which("mknod").unwrap())
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success());
    for argv in [
        vec!["/usr/local/bin/homelab", "--version"],
        vec!["/usr/bin/git", "--version"],
    ] {
        let out = std::process::Command::new(&chroot)
            .arg(&root)
            .args(&argv)
            .env_clear()
            .env("HOME", "/tmp")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{argv:?} in the image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // git can fetch over HTTP(S) inside the image: its helper and libraries load.
    let out = std::process::Command::new(&chroot)
        .arg(&root)
        .args(["/usr/bin/git", "ls-remote", "http://127.0.0.1:9/none.git"])
        .env_clear()
        .env("HOME", "/tmp")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Failed to connect")
            || stderr.contains("Could not connect")
            || stderr.contains("Connection refused"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_and_its_custom_resources_sync_together() {
    let lab = Lab::new().await;
    let group = format!("{}.example.test", lab.tc.lab);
    lab.repo.write(
        "app/crd.json",
        &serde_json::to_string(&json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}"), "labels": {"homelab.dev/lab": lab.tc.lab}},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap(),
    );
    lab.repo.write(
        "app/widget.json",
        &serde_json::to_string(
            &json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"size": 3}}),
        )
        .unwrap(),
    );
    lab.repo.commit("crd and cr");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.applied, 2, "{}", cond_text(&o));
    // The next reconcile compares the custom resource too: nothing left to do.
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 0);
    let w = lab
        .live(&format!("{group}/v1"), "Widget", "w1")
        .await
        .unwrap();
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(
        w["metadata"]["annotations"][TRACKING_ID],
        format!("nyan:{group}/Widget:{}/w1", lab.dest_ns)
    );
}

/// A running `homelab sync …` process, stopped with SIGTERM when dropped.
struct EngineProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl EngineProcess {
    fn start(
        lab: &Lab,
        ctx: &common::TestContext,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> EngineProcess {
        let log = lab.temp.path().join(format!(
            "engine-{}.log",
            extra.join("_").replace(['/', ':', '.'], "-")
        ));
        let mut cmd = ctx.command();
        cmd.arg("sync")
            .args(extra)
            .arg("--kubeconfig")
            .arg(&lab.tc.kubeconfig)
            .args([
                "--app-namespace",
                &lab.apps_ns,
                "--lease-namespace",
                &lab.lease_ns,
                "--work-dir",
            ])
            .arg(lab.temp.path().join(format!("work-{}", extra.len())))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        EngineProcess {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// SIGTERM, then the exit code and what it logged.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (code, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homelab_sync_watch_keeps_the_cluster_in_line_through_create_change_drift_and_delete() {
    let lab = Lab::new().await;
    lab.repo
        .write("app/a.json", &config_map("a", json!({"color": "blue"})));
    lab.repo.commit("one");
    lab.create_app("nyan", lab.app_spec("app")).await;
    let ctx = common::TestContext::new();
    let engine = EngineProcess::start(&lab, &ctx, &["--watch", "--poll", "1s"], &[]);
    let color = || async {
        lab.live("v1", "ConfigMap", "a")
            .await
            .and_then(|v| v["data"]["color"].as_str().map(str::to_string))
    };
    eventually("create", 30, || async {
        color().await.as_deref() == Some("blue")
    })
    .await;
    lab.repo
        .write("app/a.json", &config_map("a", json!({"color": "red"})));
    lab.repo.commit("red");
    eventually("change (by polling)", 30, || async {
        color().await.as_deref() == Some("red")
    })
    .await;
    lab.meddle("v1", "ConfigMap", "a", json!({"data": {"color": "green"}}))
        .await;
    eventually("drift healed", 30, || async {
        color().await.as_deref() == Some("red")
    })
    .await;
    lab.repo.remove("app/a.json");
    lab.repo
        .write("app/b.json", &config_map("b", json!({"x": "y"})));
    lab.repo.commit("swap");
    eventually("delete (prune)", 30, || async {
        lab.live("v1", "ConfigMap", "a").await.is_none()
    })
    .await;
    eventually("status", 30, || async {
        let s = &lab.app("nyan").await["status"];
        s["sync"]["status"] == "Synced" && s["resources"].as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    let (code, log) = engine.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("reconciled"), "{log}");
    lab.validate_apps(&[lab.app("nyan").await]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homelab_sync_in_cluster_serves_probes_and_webhooks_logs_json_and_releases_the_lease() {
    use homelab::sync::webhook::sign;
    let lab = Lab::new().await;
    lab.repo
        .write("app/a.json", &config_map("a", json!({"v": "1"})));
    lab.repo.commit("one");
    let mut spec = lab.app_spec("app");
    // Long polling: only the webhook can bring the change in time.
    spec["syncPolicy"]["automated"]["selfHeal"] = json!(false);
    lab.create_app("nyan", spec).await;
    let listen = common::free_loopback_addr().to_string();
    let ctx = common::TestContext::new();
    let engine = EngineProcess::start(
        &lab,
        &ctx,
        &["--in-cluster", "--listen", &listen, "--poll", "10m"],
        &[
            ("HOMELAB_SYNC_WEBHOOK_SECRET", "in-cluster-secret"),
            ("POD_NAME", "homelab-sync-test-pod"),
        ],
    );
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    eventually("/readyz", 30, || async {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    eventually("first sync", 30, || async {
        lab.live("v1", "ConfigMap", "a").await.is_some()
    })
    .await;

    lab.repo
        .write("app/a.json", &config_map("a", json!({"v": "2"})));
    let rev = lab.repo.commit("two");
    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": rev,
        "repository": {"clone_url": lab.repo.url()}}))
    .unwrap();
    let resp = http
        .post(format!("{base}/webhook"))
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Delivery", "delivery-1")
        .header("X-Gitea-Signature", sign(b"in-cluster-secret", &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    eventually("webhook → applied", 10, || async {
        lab.live("v1", "ConfigMap", "a")
            .await
            .is_some_and(|v| v["data"]["v"] == "2")
    })
    .await;
    let lease: Api<DynamicObject> = Api::namespaced_with(
        lab.tc.client.clone(),
        &lab.lease_ns,
        &kube::discovery::ApiResource {
            group: "coordination.k8s.io".into(),
            version: "v1".into(),
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            plural: "leases".into(),
        },
    );
    let holder =
        |l: DynamicObject| serde_json::to_value(l).unwrap()["spec"]["holderIdentity"].clone();
    assert_eq!(
        holder(lease.get("homelab-sync-engine").await.unwrap()),
        json!("homelab-sync-test-pod")
    );

    let (code, log) = engine.stop();
    assert_eq!(code, Some(0), "{log}");
    // Structured logs: every line is a JSON object.
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(log.contains("\"message\":\"reconciled\""), "{log}");
    assert!(
        !log.contains("in-cluster-secret"),
        "the webhook secret was logged"
    );
    // Released on the way out: a successor need not wait for it to expire.
    assert_eq!(
        holder(lease.get("homelab-sync-engine").await.unwrap()),
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_engine_watches_and_manages_only_its_namespaces() {
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    let mut cfg = lab.engine_config();
    cfg.namespaces = Some(vec![lab.dest_ns.clone()]);
    let (engine, _t) = lab.engine_with(cfg);
    if let Some(f) = lab.tc.fake() {
        f.clear_requests();
    }
    let o = lab.reconcile(&engine, "nyan").await;
    assert_applied_and_synced(&o, 1);
    if let Some(f) = lab.tc.fake() {
        let lists: Vec<String> = f
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .map(|r| r.path.clone())
            .collect();
        assert!(
            lists
                .iter()
                .all(|p| p.contains(&format!("/namespaces/{}/", lab.dest_ns))
                    || p.contains("/applications")),
            "a cluster-wide LIST: {lists:?}"
        );
    }
    // An object in another namespace, and a cluster-scoped one: refused, naming the file.
    lab.repo.write(
        "app/elsewhere.json",
        &serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": lab.apps_ns}}))
        .unwrap(),
    );
    lab.repo.commit("elsewhere");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!((o.applied, o.pruned, o.sync), (0, 0, SyncCode::OutOfSync));
    assert!(
        cond_text(&o).contains(&format!(
            "`elsewhere.json:1`: `ConfigMap/x` in `{}` is outside the namespaces the engine may manage (`{}`)",
            lab.apps_ns, lab.dest_ns
        )),
        "{}",
        cond_text(&o)
    );
    lab.repo.remove("app/elsewhere.json");
    lab.repo.write(
        "app/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: some-ns}\n",
    );
    lab.repo.commit("cluster-scoped");
    let o = lab.reconcile(&engine, "nyan").await;
    assert_condition(
        &o,
        "`ns.yaml:1`: `Namespace/some-ns` is cluster-scoped; the engine may manage only namespaced objects in",
    );
    assert!(lab.live("v1", "ConfigMap", "a").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_over_https_trusts_the_lab_ca_it_is_given_and_nothing_else() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("srv");
    let repo = Repo::new(&root.join("lab/gitops.git"));
    repo.write("app/a.yaml", "v: 1\n");
    let c1 = repo.commit("one");
    // A lab CA (its names constrained to the defaults and localhost) and a server certificate
    // for localhost from it.
    let ca = lab_ca("t", Some("localhost"));
    let (cert_pem, key_pem) = leaf(&ca, "localhost");
    let token = "tok-over-tls";
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("git:{token}")
        )
    );
    let https = GitHttp::start_tls(&root, Some(basic.clone()), &cert_pem, &key_pem).await;
    let url = format!("{}/lab/gitops.git", https.base);
    let read = |c: &homelab::sync::source::Checkout| c.commit.clone();
    let with_ca = GitAuth {
        username: None,
        password: Some(homelab::edges::redact::Secret::new(token)),
        ca_pem: Some(ca.cert_pem.clone()),
    };
    let src = GitSource::new(temp.path().join("work-ca"));
    let got = src
        .with_checkout(&url, "main", &with_ca, read)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, c1);
    assert!(
        https
            .seen
            .all()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(basic.as_str()))
    );
    // Without the CA the certificate is not trusted (the system roots do not include it).
    let without = GitAuth {
        ca_pem: None,
        ..with_ca
    };
    let src = GitSource::new(temp.path().join("work-noca"));
    let err = src
        .with_checkout(&url, "main", &without, read)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains(token), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_retried_with_the_applications_backoff() {
    let lab = Lab::new().await;
    let missing = lab.tc.ns("later");
    lab.repo.write(
        "app/a.json",
        &serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": missing}, "data": {"k": "v"}}))
        .unwrap(),
    );
    lab.repo.commit("into a namespace that does not exist yet");
    let mut spec = lab.app_spec("app");
    spec["syncPolicy"]["retry"] =
        json!({"limit": 2, "backoff": {"duration": "2s", "factor": 2, "maxDuration": "10s"}});
    lab.create_app("nyan", spec).await;
    let (engine, _t) = lab.engine();
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Failed),
        "{}",
        cond_text(&o)
    );
    assert_eq!(o.wake_in, Some(Duration::from_secs(2)));
    // Too early: the backoff holds.
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(o.operation, None);
    assert!(o.wake_in.unwrap() <= Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Failed)
    );
    assert_eq!(
        lab.app("nyan").await["status"]["operationState"]["retryCount"],
        1
    );
    // The namespace appears; the next retry (after 4 s) succeeds.
    lab.apply(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": missing, "labels": {"homelab.dev/lab": lab.tc.lab}}}))
        .await;
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let o = lab.reconcile(&engine, "nyan").await;
    assert_eq!(
        o.operation,
        Some(homelab::sync::status::OperationPhase::Succeeded),
        "{}",
        cond_text(&o)
    );
    let app = lab.app("nyan").await;
    assert_eq!(app["status"]["operationState"]["retryCount"], 0);
    assert!(
        app["status"]["conditions"].as_array().unwrap().is_empty(),
        "{app:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_engine_hands_a_webhook_to_the_lease_holder_through_the_refresh_annotation() {
    use homelab::sync::app::REFRESH_ANNOTATION;
    use homelab::sync::server::{ServerState, serve};
    use homelab::sync::webhook::{Webhook, WebhookConfig, sign};
    let lab = Lab::new().await;
    lab.create_nyan_over_config_maps(&["a"], "one").await;
    let mut other = lab.app_spec("app");
    other["source"]["repoURL"] = json!("https://gitea.example.test/lab/other.git");
    lab.create_app("other", other).await;
    let (engine, _t) = lab.engine();
    let (trig_tx, mut trig_rx) = mpsc::unbounded_channel();
    let (_ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let state = Arc::new(ServerState {
        engine: engine.clone(),
        webhook: Some(Arc::new(Webhook::new(WebhookConfig {
            secret: homelab::edges::redact::Secret::new("s"),
            max_body: 1 << 20,
            remembered: 16,
        }))),
        triggers: trig_tx,
        ready: ready_rx,
        leader: leader_rx,
        page: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": "x",
        "repository": {"clone_url": format!("{}.git", lab.repo.url())}}))
    .unwrap();
    let resp = reqwest::Client::new()
        .post(&url)
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", sign(b"s", &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.text().await.unwrap(),
        "refresh requested for 1 Applications\n"
    );
    assert!(trig_rx.try_recv().is_err(), "a standby queued work itself");
    let app = lab.app("nyan").await;
    assert_eq!(app["metadata"]["annotations"][REFRESH_ANNOTATION], "normal");
    assert!(lab.app("other").await["metadata"]["annotations"][REFRESH_ANNOTATION].is_null());
    // The holder's reconcile consumes the request.
    let o = lab.reconcile(&engine, "nyan").await;
    assert!(o.wrote_status);
    assert!(lab.app("nyan").await["metadata"]["annotations"][REFRESH_ANNOTATION].is_null());
    let _ = stop_tx.send(true);
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homelab_sync_watch_fails_fast_when_the_lease_namespace_is_missing() {
    let lab = Lab::new().await;
    let ctx = Arc::new(common::TestContext::new());
    let args: Vec<String> = [
        "sync",
        "--watch",
        "--kubeconfig",
        &lab.tc.kubeconfig.display().to_string(),
        "--app-namespace",
        &lab.apps_ns,
        "--lease-namespace",
        &lab.tc.ns("no-such-namespace"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = homelab_cli(ctx, args).await;
    run.failure(1);
    assert!(
        run.stderr.contains(&format!(
            "error: namespace `{}` for the sync engine's Lease does not exist",
            lab.tc.ns("no-such-namespace")
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: create it (`kubectl create namespace"),
        "{}",
        run.stderr
    );
}

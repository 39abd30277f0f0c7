//! The engine: one reconcile of one Application — fetch → read → normalise → diff → decide →
//! apply in waves (through the apply engine) → prune → health → status — and the helpers the
//! long-running loop ([`super::run`]) and the commands (`sync`, `diff`, `apps`) share.
//!
//! Place in the data flow: the effectful shell around the pure core in `app`, `manifests`,
//! `diff`, `plan`, `health` and `status`.
//!
//! Architecture invariant: nothing is written to a managed object unless the comparison says it
//! is out of sync, and nothing is deleted unless the plan (which only holds objects tracked to
//! this Application, within this engine's installation id) says so; an object being deleted is
//! never written nor deleted again, only waited for (by watch, bounded); every failure becomes a
//! condition on the Application and leaves the cluster as it was, so a reconcile can be
//! interrupted anywhere and the next one converges without repeating finished work.
//!
//! Layout, one file per phase of a reconcile (`reconcile` strings them together):
//!
//! ```text
//! reconcile   admit (spec, installation id) → compare → warnings → plan → decide → sync → observe → finish
//! compare     read the desired state (git, or memory) → resolve kinds → prepare objects → watch → compare with live
//! decide      sync now, later (backoff) or not at all: policies, retries, self-heal
//! execute     apply the plan's waves, kind by kind, each wave healthy before the next
//! prune       delete what git dropped, and wait until it is gone
//! finalize    the cascading delete of an Application being deleted
//! observe     per-object status and health from the watch cache, and diffs for `homelab diff`
//! finish      build `.status` and write it (unless previewing or unchanged)
//! creds       repository credentials and the installation id, read from the cluster
//! ```
//!
//! This module holds the public API: [`Engine`], [`EngineConfig`], [`Mode`], [`Outcome`] and
//! what the commands and the loop read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::app;
use super::backoff::{self, SelfHealBackoff};
use super::cache::Cache;
use super::manifests::Manifest;
use super::source::GitSource;
use super::status::{Condition, Health, OperationPhase, SyncCode};
use super::tracking::{self, Owner};
use crate::cluster::apply::{Applier, FIELD_MANAGER};
use crate::cluster::kube::describe;
use crate::edges::error::Diagnostic;
use crate::model::kinds::ObjectRef;

mod compare;
mod creds;
mod decide;
mod execute;
mod finalize;
mod finish;
mod observe;
mod prune;
mod reconcile;

pub use finish::replacing_patch;

/// The Application API resource.
pub fn app_resource() -> ApiResource {
    ApiResource {
        group: app::GROUP.into(),
        version: "v1alpha1".into(),
        api_version: app::API_VERSION.into(),
        kind: app::KIND.into(),
        plural: app::PLURAL.into(),
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Namespace the Applications live in.
    pub app_namespace: String,
    /// Where git checkouts are kept.
    pub work_dir: PathBuf,
    /// Polling fallback.
    pub poll: Duration,
    /// Server-side-apply field manager.
    pub field_manager: String,
    /// Self-heal backoff.
    pub self_heal: SelfHealBackoff,
    /// How long a wave may take to become healthy before the next one.
    pub wave_timeout: Duration,
    /// Objects applied at once.
    pub concurrency: usize,
    /// Extra CA (PEM) trusted for every git repository (the lab CA).
    pub ca_pem: Option<String>,
    /// A status that changed nothing but `reconciledAt` is written at most this often.
    pub status_refresh: Duration,
    /// Namespace-scoped mode (the engine's RBAC covers only these namespaces): objects are
    /// watched there only, and objects elsewhere or cluster-scoped are refused with a condition.
    pub namespaces: Option<Vec<String>>,
}

impl EngineConfig {
    /// Defaults for Applications in `argocd` and checkouts under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            app_namespace: tracking::CONTROL_NAMESPACE.into(),
            work_dir: work_dir.into(),
            poll: backoff::DEFAULT_POLL,
            field_manager: FIELD_MANAGER.into(),
            self_heal: SelfHealBackoff::default(),
            wave_timeout: Duration::from_secs(300),
            concurrency: 16,
            ca_pem: None,
            status_refresh: backoff::DEFAULT_POLL,
            namespaces: None,
        }
    }
}

/// Whether a reconcile asks git for the latest commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Always (Application changes, webhooks, polling, commands).
    Always,
    /// Only when the manifests of the Application's last compared commit are not in memory
    /// (events on the objects it manages: the desired state did not change, the live one did).
    IfNeeded,
}

/// What a reconcile may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As the engine does on its own: automated policies, self-heal, retries, `operation`.
    Auto,
    /// A sync asked for by hand (`homelab sync <app>`), whatever the policy says.
    Manual {
        /// Prune too.
        prune: bool,
    },
    /// Compare only; write nothing, not even status (`homelab diff`).
    Preview,
}

/// One object's difference, for `homelab diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectDiff {
    /// The object.
    pub key: ObjectRef,
    /// `OutOfSync`, `Missing` or `Prune`.
    pub change: &'static str,
    /// Unified diff (live → git), secrets redacted; empty for prunes.
    pub text: String,
}

/// What one reconcile found and did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Application name.
    pub name: String,
    /// Sync status written.
    pub sync: SyncCode,
    /// Health written.
    pub health: Health,
    /// Commit compared.
    pub revision: Option<String>,
    /// The sync that ran, if one did.
    pub operation: Option<OperationPhase>,
    /// Objects written.
    pub applied: usize,
    /// Objects deleted.
    pub pruned: usize,
    /// Conditions written.
    pub conditions: Vec<Condition>,
    /// Differences (Preview).
    pub diffs: Vec<ObjectDiff>,
    /// When this app wants its next reconcile even without an event.
    pub wake_in: Option<Duration>,
    /// That wake-up is the polling interval (ask git), not a backoff (self-heal, retry).
    pub wake_is_poll: bool,
    /// Whether `.status` was written.
    pub wrote_status: bool,
}

/// Counters for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reconciles run.
    pub reconciles: std::sync::atomic::AtomicU64,
    /// Syncs (operations) run.
    pub syncs: std::sync::atomic::AtomicU64,
    /// Objects written.
    pub applied: std::sync::atomic::AtomicU64,
    /// Objects pruned.
    pub pruned: std::sync::atomic::AtomicU64,
    /// Git fetches (reconciles that asked git for the latest commit).
    pub fetches: std::sync::atomic::AtomicU64,
}

/// An error that kept a reconcile from even writing status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Application could not be read or its status written.
    #[error("{action} Application `{namespace}/{name}`: {message}")]
    App {
        /// What.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        message: String,
    },
    /// Applications could not be listed.
    #[error("list Applications in `{namespace}`: {message}")]
    List {
        /// Namespace.
        namespace: String,
        /// Why.
        message: String,
    },
}

impl Diagnostic for EngineError {
    fn hints(&self) -> Vec<String> {
        vec![
            "check that the Application CRD is installed (`kubectl get crd applications.argoproj.io`) and that you may read and patch Applications".into(),
        ]
    }
}

#[derive(Default)]
struct AppRuntime {
    self_heal_attempts: u32,
    last_self_heal: Option<Instant>,
    revision_of_attempts: Option<String>,
    /// When this process last finished a sync of the app: `finishedAt` has whole seconds only,
    /// too coarse for backoffs of a second or two.
    last_finished: Option<Instant>,
}

/// Repository Secrets and the TLS ConfigMap, with when they were read.
type Creds = (Instant, Arc<Vec<Value>>, Arc<Value>);

/// Manifests as read at a commit.
type ReadAt = (String, Arc<Vec<Manifest>>);

/// The engine's installation id (argocd-cm `installationID`), with when it was read.
type InstallationRead = (Instant, Option<String>);

/// repoURL, targetRevision, path, recurse, include, exclude.
type ManifestKey = (String, String, String, bool, Option<String>, Option<String>);

/// The sync engine for one cluster.
pub struct Engine {
    client: kube::Client,
    applier: Arc<Applier>,
    cache: Arc<Cache>,
    source: GitSource,
    cfg: EngineConfig,
    apps: Api<DynamicObject>,
    runtime: Mutex<HashMap<String, AppRuntime>>,
    /// Parsed manifests of the last commit read per source, with that commit.
    manifests: Mutex<HashMap<ManifestKey, ReadAt>>,
    creds: Mutex<Option<Creds>>,
    installation: Mutex<Option<InstallationRead>>,
    /// Counters.
    pub stats: Stats,
    /// The last syncs, for the lab page.
    pub history: crate::sync::page::History,
}

/// Whose objects are this Application's: its tracking-id key, within this engine's installation.
struct Ident {
    /// The `<app>` part of tracking ids.
    key: String,
    /// argocd-cm `installationID` of the Applications namespace, if set.
    installation: Option<String>,
}

impl Ident {
    fn owner(&self, live: &Value) -> Owner {
        tracking::owner_in(&self.key, self.installation.as_deref(), live)
    }
}

impl Engine {
    /// An engine on `client`; `touched` receives events about tracked objects (self-heal).
    pub fn new(
        client: kube::Client,
        cfg: EngineConfig,
        touched: tokio::sync::mpsc::UnboundedSender<super::cache::Touched>,
    ) -> Engine {
        let applier = Arc::new(Applier::new(client.clone()));
        let cache = Arc::new(Cache::new(client.clone(), touched, cfg.namespaces.clone()));
        let apps = Api::namespaced_with(client.clone(), &cfg.app_namespace, &app_resource());
        Engine {
            source: GitSource::new(cfg.work_dir.join("repos")),
            client,
            applier,
            cache,
            cfg,
            apps,
            runtime: Mutex::default(),
            manifests: Mutex::default(),
            creds: Mutex::default(),
            installation: Mutex::default(),
            stats: Stats::default(),
            history: Default::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The Applications API.
    pub fn apps_api(&self) -> &Api<DynamicObject> {
        &self.apps
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Every Application in the engine's namespace.
    pub async fn list_apps(&self) -> Result<Vec<Value>, EngineError> {
        let lp = ListParams::default();
        let list = crate::cluster::kube::retry(&Default::default(), || self.apps.list(&lp))
            .await
            .map_err(|e| EngineError::List {
                namespace: self.cfg.app_namespace.clone(),
                message: describe(&e),
            })?;
        let mut out: Vec<Value> = list
            .items
            .iter()
            .map(|o| {
                let mut v = serde_json::to_value(o).expect("objects serialize");
                v["apiVersion"] = json!(app::API_VERSION);
                v["kind"] = json!(app::KIND);
                v
            })
            .collect();
        out.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        Ok(out)
    }

    /// Reconcile one Application, fetching git first.
    pub async fn reconcile(&self, app: &Value, mode: Mode) -> Result<Outcome, EngineError> {
        self.reconcile_with(app, mode, Fetch::Always).await
    }
}

/// Random bits for jittered polling intervals.
fn random() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

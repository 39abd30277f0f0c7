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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::app::{self, AppSpec, Propagation};
use super::backoff::{self, SelfHealBackoff};
use super::cache::{Cache, Known};
use super::diff::{self, CompareConfig, Comparison, RenderConfig};
use super::health;
use super::manifests::{self, Manifest, ManifestError};
use super::plan::{self, Action, Desired, PlanConfig, SyncPlan, Tracked};
use super::source::{GitAuth, GitSource};
use super::status::{
    self, Condition, ConditionType, Deployed, Health, HealthCode, InitiatedBy, OperationInput,
    OperationPhase, OperationState, ResourceResult, ResourceStatus, ResultCode, StatusInput,
    SyncCode,
};
use super::tracking::{self, Owner, app_key, resource_options, sync_wave};
use crate::apply::{self, Applier, ApplyError, ApplyOptions, FIELD_MANAGER, Resolved};
use crate::error::Diagnostic;
use crate::kinds::{ObjectRef, kind_rank};
use crate::kube::{describe, status_code};
use crate::redact::Secret;

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
}

/// A desired object on its way through a reconcile.
struct Item {
    origin: String,
    key: ObjectRef,
    resolved: Option<Resolved>,
    object: Value,
    wave: i64,
    options: tracking::ResourceOptions,
    live: Option<Arc<Value>>,
    owner: Owner,
    comparison: Comparison,
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

/// The comparison of one Application.
struct Compared {
    revision: String,
    items: Vec<Item>,
    kinds: Vec<Resolved>,
    tracked: Vec<(Resolved, Arc<Value>)>,
    /// What the manifests ask for that we do not do (resource hooks).
    warnings: Vec<Condition>,
}

/// A failure before anything could be compared.
struct Stop {
    sync: SyncCode,
    health: Option<Health>,
    revision: Option<String>,
    condition: Condition,
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
        let list = crate::kube::retry(&Default::default(), || self.apps.list(&lp))
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

    /// Reconcile one Application; `fetch` says whether git must be asked for a new commit.
    pub async fn reconcile_with(
        &self,
        app: &Value,
        mode: Mode,
        fetch: Fetch,
    ) -> Result<Outcome, EngineError> {
        let started = Instant::now();
        self.stats
            .reconciles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let parsed = app::parse(app);
        let prev = app["status"].clone();
        let mut conditions = parsed.conditions.clone();
        let blocked = parsed.blocked();
        let spec = match parsed.spec {
            Some(s) if !blocked => s,
            _ => {
                // Nothing we may act on: report why, keep the last known health.
                let health = previous_health(&prev);
                return self
                    .finish(
                        app,
                        mode,
                        Finish::stopped(SyncCode::Unknown, health, None, conditions),
                    )
                    .await;
            }
        };
        let installation = match self.installation_id().await {
            Ok(i) => i,
            Err(message) => {
                conditions.push(Condition::new(ConditionType::ComparisonError, message));
                return self
                    .finish(
                        app,
                        mode,
                        Finish::stopped(
                            SyncCode::Unknown,
                            previous_health(&prev),
                            None,
                            conditions,
                        ),
                    )
                    .await;
            }
        };
        let id = Ident {
            key: app_key(&spec.name, &spec.namespace, &self.cfg.app_namespace),
            installation,
        };
        let key = id.key.clone();

        if spec.deleting {
            if mode == Mode::Preview {
                // `homelab diff` never deletes, not even for an Application being deleted.
                return self
                    .finish(
                        app,
                        mode,
                        Finish::stopped(
                            SyncCode::Unknown,
                            previous_health(&prev),
                            None,
                            conditions,
                        ),
                    )
                    .await;
            }
            return self.finalize(app, &spec, &id).await;
        }

        let compared = match self.compare(&spec, &id, &prev, fetch).await {
            Ok(c) => {
                conditions.extend(c.warnings.iter().cloned());
                c
            }
            Err(stop) => {
                conditions.push(stop.condition);
                let health = match stop.health {
                    Some(h) => h,
                    None => self.tracked_health(&id, &prev).await,
                };
                return self
                    .finish(
                        app,
                        mode,
                        Finish::stopped(stop.sync, health, stop.revision, conditions),
                    )
                    .await;
            }
        };
        for (i, item) in compared.items.iter().enumerate() {
            if let Owner::Other(other) = &item.owner {
                conditions.push(Condition::new(
                    ConditionType::SharedResourceWarning,
                    format!(
                        "{} (`{}`) is also tracked by Application `{other}`",
                        item.key, item.origin
                    ),
                ));
            }
            if compared.items[..i].iter().any(|o| o.key == item.key) {
                conditions.push(Condition::new(
                    ConditionType::RepeatedResourceWarning,
                    format!(
                        "{} is defined more than once (last: `{}`)",
                        item.key, item.origin
                    ),
                ));
            }
        }

        // Decide.
        let manual_prune = match mode {
            Mode::Manual { prune } => Some(prune),
            _ => None,
        };
        let requested = if mode == Mode::Auto {
            spec.operation.clone()
        } else {
            None
        };
        let prune = manual_prune
            .or(requested.as_ref().map(|o| o.prune))
            .unwrap_or_else(|| spec.automated.is_some_and(|a| a.prune));
        let plan = plan::build(
            &compared
                .items
                .iter()
                .map(|i| Desired {
                    key: i.key.clone(),
                    object: i.object.clone(),
                    wave: i.wave,
                    status: i.comparison.status,
                    options: i.options.clone(),
                })
                .collect::<Vec<_>>(),
            &compared
                .tracked
                .iter()
                .map(|(_, v)| Tracked {
                    key: ObjectRef::of(v).expect("cached objects have identity"),
                    api_version: v["apiVersion"].as_str().unwrap_or_default().to_string(),
                    wave: sync_wave(v).unwrap_or(0),
                    options: resource_options(v),
                })
                .collect::<Vec<_>>(),
            PlanConfig {
                prune,
                allow_empty: spec.automated.is_some_and(|a| a.allow_empty),
                prune_last: spec.options.prune_last,
                replace: spec.options.replace,
            },
        );
        for item in &compared.items {
            if !item.options.unsupported.is_empty() {
                conditions.push(Condition::new(
                    ConditionType::UnsupportedFieldWarning,
                    format!(
                        "{} (`{}`): sync options {} are not supported and have no effect",
                        item.key,
                        item.origin,
                        item.options.unsupported.join(", ")
                    ),
                ));
            }
        }

        let decision = self.decide(&spec, mode, &compared, &plan, &prev, requested.is_some());
        let mut wake_in = decision.wake_in;
        let mut wake_is_poll = decision.poll;
        let mut op_state = None;
        let mut deployed = None;
        let mut applied = 0;
        let mut pruned = 0;
        let mut diffs = Vec::new();
        if let Some(refusal) = &plan.prune_refused
            && matches!(decision.action, Act::Sync { .. })
        {
            conditions.push(Condition::new(ConditionType::SyncError, refusal.clone()));
        }
        let refused = plan.prune_refused.is_some();
        match decision.action {
            Act::Sync {
                initiated_by,
                retry_count,
            } if !refused => {
                self.stats
                    .syncs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sync_started = status::now();
                let outcome = self.execute(&spec, &key, &compared, &plan).await;
                self.runtime
                    .lock()
                    .expect("runtime")
                    .entry(spec.name.clone())
                    .or_default()
                    .last_finished = Some(Instant::now());
                applied = outcome.applied;
                pruned = outcome.pruned;
                let phase = if outcome.error.is_some() {
                    OperationPhase::Failed
                } else {
                    OperationPhase::Succeeded
                };
                if let Some(e) = &outcome.error {
                    conditions.push(Condition::new(ConditionType::SyncError, e.clone()));
                    if let Some(d) = backoff::retry_delay(&spec.retry, retry_count as u32)
                        && wake_in.is_none_or(|w| d < w)
                    {
                        wake_in = Some(d);
                        wake_is_poll = false;
                    }
                }
                let message = match &outcome.error {
                    Some(e) => e.clone(),
                    None => format!(
                        "successfully synced (all tasks run): {} applied, {} pruned",
                        outcome.applied, outcome.pruned
                    ),
                };
                let source_value = app["spec"]["source"].clone();
                op_state = Some(OperationState::build(OperationInput {
                    revision: &compared.revision,
                    source: &source_value,
                    prune,
                    sync_options: &spec.options.raw,
                    initiated_by: initiated_by.clone(),
                    phase,
                    message,
                    started_at: sync_started.clone(),
                    finished_at: Some(status::now()),
                    retry_count: if phase == OperationPhase::Failed {
                        retry_count
                    } else {
                        0
                    },
                    results: outcome.results,
                }));
                if phase == OperationPhase::Succeeded {
                    deployed = Some((compared.revision.clone(), sync_started, initiated_by));
                }
            }
            Act::Sync { .. } | Act::Nothing => {}
        }

        // Status from the cache as it is now (the engine's own writes are already in it).
        let mut resources = Vec::new();
        let mut healths = Vec::new();
        let mut any_out = false;
        for item in &compared.items {
            let live = item
                .resolved
                .as_ref()
                .and_then(|r| self.cache.get(r, &item.key));
            let cmp = if op_state.is_some() {
                diff::compare(&item.object, live.as_deref(), self.compare_cfg(&spec))
            } else {
                item.comparison.clone()
            };
            let h = match &live {
                Some(l) => health::assess(l),
                None => Some(Health::new(HealthCode::Missing, "")),
            };
            if let Some(h) = &h {
                healths.push(h.clone());
            }
            any_out |= cmp.status != SyncCode::Synced;
            if mode == Mode::Preview && cmp.status != SyncCode::Synced {
                let live_view = match &live {
                    // A copy being deleted is as good as gone: the sync would create git's anew.
                    Some(l) if is_deleting(l) => None,
                    Some(l) => Some(l.as_ref().clone()),
                    None => self.get_untracked(item).await.filter(|v| !is_deleting(v)),
                };
                diffs.push(ObjectDiff {
                    key: item.key.clone(),
                    change: if live_view.is_some() {
                        "OutOfSync"
                    } else {
                        "Missing"
                    },
                    text: diff::render(
                        &strip_hash(&item.object),
                        live_view.map(|v| strip_hash(&v)).as_ref(),
                        &self.cfg.field_manager,
                        RenderConfig { context: 3 },
                    ),
                });
            }
            resources.push(ResourceStatus {
                group: item.key.group.clone(),
                version: tracking::gv(&item.object).1,
                kind: item.key.kind.clone(),
                namespace: item.key.namespace.clone(),
                name: item.key.name.clone(),
                status: cmp.status,
                health: h,
                requires_pruning: false,
                sync_wave: item.wave,
            });
        }
        let desired_keys: HashSet<&ObjectRef> = compared.items.iter().map(|i| &i.key).collect();
        for (r, v) in self.cache.tracked_by(&key, &compared.kinds) {
            let Some(k) = ObjectRef::of(&v) else { continue };
            if desired_keys.contains(&k) || id.owner(&v) != Owner::This {
                continue;
            }
            any_out = true;
            if mode == Mode::Preview {
                diffs.push(ObjectDiff {
                    key: k.clone(),
                    change: "Prune",
                    text: String::new(),
                });
            }
            // As in Argo (argo-cd `setApplicationHealth` walks every managed resource, those
            // that require pruning too): one still being deleted keeps the app Progressing.
            let h = health::assess(&v);
            healths.extend(h.clone());
            resources.push(ResourceStatus {
                group: k.group.clone(),
                version: r.resource.version.clone(),
                kind: k.kind.clone(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                status: SyncCode::OutOfSync,
                health: h,
                requires_pruning: true,
                sync_wave: sync_wave(&v).unwrap_or(0),
            });
        }
        resources.sort_by(|a, b| {
            (
                a.sync_wave,
                kind_rank(&a.kind),
                &a.kind,
                &a.namespace,
                &a.name,
            )
                .cmp(&(
                    b.sync_wave,
                    kind_rank(&b.kind),
                    &b.kind,
                    &b.namespace,
                    &b.name,
                ))
        });
        let app_health = health::aggregate(&healths);
        let sync = if any_out {
            SyncCode::OutOfSync
        } else {
            SyncCode::Synced
        };
        if sync == SyncCode::Synced
            && let Some(rt) = self.runtime.lock().expect("runtime").get_mut(&name)
            && rt
                .last_self_heal
                .is_some_and(|t| t.elapsed() > self.cfg.self_heal.max + Duration::from_secs(30))
        {
            // Argo's cooldown: a long quiet spell forgets the self-heal backoff.
            rt.self_heal_attempts = 0;
        }
        tracing::info!(
            app = %name,
            revision = %short(&compared.revision),
            sync = sync.as_str(),
            health = app_health.status.as_str(),
            applied,
            pruned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        let mut fin = Finish::stopped(
            sync,
            app_health,
            Some(compared.revision.clone()),
            conditions,
        );
        fin.resources = resources;
        fin.operation = op_state;
        fin.deployed = deployed;
        fin.clear_operation = requested.is_some();
        fin.applied = applied;
        fin.pruned = pruned;
        fin.diffs = diffs;
        fin.wake_in = wake_in;
        fin.wake_is_poll = wake_is_poll;
        self.finish(app, mode, fin).await
    }

    fn compare_cfg<'a>(&'a self, spec: &'a AppSpec) -> CompareConfig<'a> {
        CompareConfig {
            manager: &self.cfg.field_manager,
            ignore: &spec.ignore_differences,
        }
    }

    /// Fetch, read, resolve, normalise and compare.
    async fn compare(
        &self,
        spec: &AppSpec,
        id: &Ident,
        prev: &Value,
        fetch: Fetch,
    ) -> Result<Compared, Stop> {
        let mkey: ManifestKey = (
            spec.source.repo_url.clone(),
            spec.source.target_revision.clone(),
            spec.source.path.clone(),
            spec.source.recurse,
            spec.source.include.clone(),
            spec.source.exclude.clone(),
        );
        let cached = self
            .manifests
            .lock()
            .expect("manifest cache")
            .get(&mkey)
            .cloned();
        let last = prev["sync"]["revision"].as_str();
        let fetched = match &cached {
            // The desired state did not change: no need to ask git.
            Some((commit, m)) if fetch == Fetch::IfNeeded && last == Some(commit.as_str()) => {
                Ok((commit.clone(), Ok(m.clone())))
            }
            _ => {
                self.stats
                    .fetches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let auth = self.repo_auth(&spec.source.repo_url).await;
                let src = spec.source.clone();
                self.source
                    .with_checkout(
                        &spec.source.repo_url,
                        &spec.source.target_revision,
                        &auth,
                        |c| {
                            // Parsed manifests are reused while the commit stays the same.
                            let read = match &cached {
                                Some((commit, m)) if *commit == c.commit => Ok(m.clone()),
                                _ => manifests::read(&c.dir, &src).map(Arc::new),
                            };
                            (c.commit.clone(), read)
                        },
                    )
                    .await
            }
        };
        let (revision, read) = match fetched {
            Ok(x) => x,
            Err(e) => {
                return Err(Stop {
                    sync: SyncCode::Unknown,
                    health: None,
                    revision: None,
                    condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
                });
            }
        };
        let manifests = match read {
            Ok(m) => m,
            Err(e) => return Err(bad_manifests(&e, &revision)),
        };
        self.manifests
            .lock()
            .expect("manifest cache")
            .insert(mkey, (revision.clone(), manifests.clone()));

        // Resolve kinds; a kind the cluster does not serve and no CRD here defines is an error
        // naming the file.
        let discovery = self.applier.discovery();
        let mut resolved: Vec<Option<Resolved>> = Vec::with_capacity(manifests.len());
        let mut known: HashMap<(String, String), bool> = HashMap::new();
        for m in manifests.iter() {
            let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
            let kind = m.object["kind"].as_str().unwrap_or_default();
            let r = discovery
                .resolve(api_version, kind)
                .await
                .map_err(|e| Stop {
                    sync: SyncCode::Unknown,
                    health: None,
                    revision: Some(revision.clone()),
                    condition: Condition::new(
                        ConditionType::ComparisonError,
                        format!("discover `{api_version}`: {}", describe(&e)),
                    ),
                })?;
            known.insert((api_version.into(), kind.into()), r.is_some());
            resolved.push(r);
        }
        manifests::check_kinds(&manifests, |a, k| {
            known
                .get(&(a.to_string(), k.to_string()))
                .copied()
                .unwrap_or(false)
        })
        .map_err(|e| bad_manifests(&e, &revision))?;

        let mut items = Vec::with_capacity(manifests.len());
        let mut warnings = Vec::new();
        for (m, r) in manifests.iter().zip(resolved) {
            if let Some(hook) = tracking::annotation(&m.object, tracking::HOOK) {
                // `Skip` means "never apply"; other hooks would need a hook runner.
                if hook != "Skip" {
                    let oref = ObjectRef::of(&m.object).expect("manifests have identity");
                    warnings.push(Condition::new(
                        ConditionType::UnsupportedFieldWarning,
                        format!(
                            "`{}`: {oref} is an Argo CD resource hook (`{hook}`); hooks are not supported by homelab's sync engine, so it was not applied",
                            m.origin()
                        ),
                    ));
                }
                continue;
            }
            let mut obj = m.object.clone();
            // Kinds a CRD of this set defines are namespaced unless proven otherwise.
            let namespaced = r
                .as_ref()
                .map(|r| r.namespaced)
                .unwrap_or_else(|| crd_scope(&manifests, &obj).unwrap_or(true));
            diff::normalize(
                &mut obj,
                &id.key,
                spec.destination_namespace.as_deref(),
                namespaced,
            );
            tracking::stamp_installation(&mut obj, id.installation.as_deref());
            let obj = apply::diff::prepare(&obj);
            let oref = ObjectRef::of(&obj).expect("manifests have identity");
            if !self.cache.allows(&oref.namespace) {
                let scope = self
                    .cfg
                    .namespaces
                    .iter()
                    .flatten()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let msg = if oref.namespace.is_empty() {
                    format!(
                        "`{}`: {oref} is cluster-scoped; the engine may manage only namespaced objects in {scope}",
                        m.origin()
                    )
                } else {
                    format!(
                        "`{}`: {oref} is outside the namespaces the engine may manage ({scope})",
                        m.origin()
                    )
                };
                return Err(Stop {
                    sync: SyncCode::OutOfSync,
                    health: Some(Health::new(HealthCode::Degraded, msg.clone())),
                    revision: Some(revision.clone()),
                    condition: Condition::new(ConditionType::ComparisonError, msg),
                });
            }
            if namespaced && oref.namespace.is_empty() {
                return Err(Stop {
                    sync: SyncCode::OutOfSync,
                    health: Some(Health::new(
                        HealthCode::Degraded,
                        format!("`{}`: {oref} names no namespace", m.origin()),
                    )),
                    revision: Some(revision.clone()),
                    condition: Condition::new(
                        ConditionType::ComparisonError,
                        format!(
                            "`{}`: {oref} is namespaced but neither it nor `spec.destination.namespace` names a namespace",
                            m.origin()
                        ),
                    ),
                });
            }
            items.push(Item {
                origin: m.origin(),
                wave: sync_wave(&obj).unwrap_or(0),
                options: resource_options(&obj),
                key: oref,
                resolved: r,
                object: obj,
                live: None,
                owner: Owner::Untracked,
                comparison: Comparison {
                    status: SyncCode::OutOfSync,
                    first_difference: None,
                },
            });
        }

        // Kinds to watch: what git has now, and what the app tracked before (to find prunes).
        let mut kinds: BTreeMap<String, Resolved> = BTreeMap::new();
        for r in items.iter().filter_map(|i| i.resolved.clone()) {
            kinds
                .entry(format!("{}/{}", r.resource.api_version, r.resource.kind))
                .or_insert(r);
        }
        for r in self.previous_kinds(prev).await {
            kinds
                .entry(format!("{}/{}", r.resource.api_version, r.resource.kind))
                .or_insert(r);
        }
        let kinds: Vec<Resolved> = kinds.into_values().collect();
        // All watches start at once; then each first LIST is awaited.
        for r in &kinds {
            self.cache.watch(r);
        }
        let mut ensure = Vec::with_capacity(kinds.len());
        for r in &kinds {
            ensure.push(self.cache.ensure(r).await);
        }
        if let Some(Err(e)) = ensure.into_iter().find(|r| r.is_err()) {
            return Err(Stop {
                sync: SyncCode::Unknown,
                health: None,
                revision: Some(revision.clone()),
                condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
            });
        }
        let cfg = self.compare_cfg(spec);
        for item in &mut items {
            item.live = item
                .resolved
                .as_ref()
                .and_then(|r| self.cache.get(r, &item.key));
            item.owner = item
                .live
                .as_ref()
                .map(|l| id.owner(l))
                .unwrap_or(Owner::Untracked);
            item.comparison = diff::compare(&item.object, item.live.as_deref(), cfg);
            if let Some(d) = &item.comparison.first_difference {
                tracing::debug!(object = %item.key, difference = %d, "out of sync");
            }
        }
        let tracked = self
            .cache
            .tracked_by(&id.key, &kinds)
            .into_iter()
            .filter(|(_, v)| id.owner(v) == Owner::This)
            .collect();
        Ok(Compared {
            revision,
            items,
            kinds,
            tracked,
            warnings,
        })
    }

    /// Kinds listed in the previous status's resources.
    async fn previous_kinds(&self, prev: &Value) -> Vec<Resolved> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in prev["resources"].as_array().into_iter().flatten() {
            let group = r["group"].as_str().unwrap_or_default();
            let version = r["version"].as_str().unwrap_or_default();
            let kind = r["kind"].as_str().unwrap_or_default();
            if version.is_empty() || kind.is_empty() {
                continue;
            }
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            if !seen.insert((api_version.clone(), kind.to_string())) {
                continue;
            }
            if let Ok(Some(r)) = self.applier.discovery().resolve(&api_version, kind).await {
                out.push(r);
            }
        }
        out
    }

    /// Health from the objects the app tracks, when git could not be read.
    async fn tracked_health(&self, id: &Ident, prev: &Value) -> Health {
        let kinds = self.previous_kinds(prev).await;
        for r in &kinds {
            let _ = self.cache.ensure(r).await;
        }
        let hs: Vec<Health> = self
            .cache
            .tracked_by(&id.key, &kinds)
            .iter()
            .filter(|(_, v)| id.owner(v) == Owner::This)
            .filter_map(|(_, v)| health::assess(v))
            .collect();
        if hs.is_empty() {
            return previous_health(prev);
        }
        health::aggregate(&hs)
    }

    async fn get_untracked(&self, item: &Item) -> Option<Value> {
        let r = item.resolved.as_ref()?;
        let api = self.applier.api(r, &item.key.namespace);
        let o = api.get_opt(&item.key.name).await.ok()??;
        Some(apply::to_value(&o, r))
    }

    fn decide(
        &self,
        spec: &AppSpec,
        mode: Mode,
        compared: &Compared,
        plan: &SyncPlan,
        prev: &Value,
        requested: bool,
    ) -> Decision {
        let poll = backoff::poll_interval(self.cfg.poll, random());
        let nothing = Decision {
            action: Act::Nothing,
            wake_in: Some(poll),
            poll: true,
        };
        let user = || InitiatedBy {
            automated: false,
            username: spec
                .operation
                .as_ref()
                .and_then(|o| o.username.clone())
                .or_else(|| std::env::var("USER").ok()),
        };
        match mode {
            Mode::Preview => return nothing,
            Mode::Manual { .. } => {
                return Decision {
                    action: Act::Sync {
                        initiated_by: user(),
                        retry_count: 0,
                    },
                    wake_in: Some(poll),
                    poll: true,
                };
            }
            Mode::Auto if requested => {
                return Decision {
                    action: Act::Sync {
                        initiated_by: user(),
                        retry_count: 0,
                    },
                    wake_in: Some(poll),
                    poll: true,
                };
            }
            Mode::Auto => {}
        }
        let Some(auto) = spec.automated else {
            return nothing;
        };
        let actionable = plan.waves.iter().map(|(_, t)| t.len()).sum::<usize>()
            + if auto.prune { plan.prunes.len() } else { 0 }
            + usize::from(plan.prune_refused.is_some());
        if actionable == 0 {
            return nothing;
        }
        let auto_by = InitiatedBy {
            automated: true,
            username: None,
        };
        let op = &prev["operationState"];
        let last_rev = op["syncResult"]["revision"].as_str();
        let finished = op["finishedAt"].as_str().and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
        let mut rt = self.runtime.lock().expect("runtime");
        let rt = rt.entry(spec.name.clone()).or_default();
        let since_finish = match rt.last_finished {
            Some(t) => t.elapsed(),
            None => finished
                .map(|f| {
                    (OffsetDateTime::now_utc() - f)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::MAX),
        };
        if last_rev != Some(compared.revision.as_str()) {
            rt.self_heal_attempts = 0;
            rt.revision_of_attempts = Some(compared.revision.clone());
            return Decision {
                action: Act::Sync {
                    initiated_by: auto_by,
                    retry_count: 0,
                },
                wake_in: Some(poll),
                poll: true,
            };
        }
        if matches!(op["phase"].as_str(), Some("Failed" | "Error")) {
            let retries = op["retryCount"].as_i64().unwrap_or(0);
            return match backoff::retry_delay(&spec.retry, retries as u32) {
                None => nothing,
                Some(d) if since_finish >= d => Decision {
                    action: Act::Sync {
                        initiated_by: auto_by,
                        retry_count: retries + 1,
                    },
                    wake_in: Some(poll),
                    poll: true,
                },
                Some(d) => Decision {
                    action: Act::Nothing,
                    wake_in: Some(d - since_finish),
                    poll: false,
                },
            };
        }
        if !auto.self_heal {
            return nothing;
        }
        let delay = self.cfg.self_heal.delay(rt.self_heal_attempts);
        let since_heal = rt
            .last_self_heal
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        let waited = since_finish.min(since_heal);
        if waited < delay {
            return Decision {
                action: Act::Nothing,
                wake_in: Some(delay - waited),
                poll: false,
            };
        }
        rt.self_heal_attempts += 1;
        rt.last_self_heal = Some(Instant::now());
        tracing::info!(app = %spec.name, attempt = rt.self_heal_attempts, "self-healing drift");
        Decision {
            action: Act::Sync {
                initiated_by: auto_by,
                retry_count: 0,
            },
            wake_in: Some(poll),
            poll: true,
        }
    }

    /// Run the plan: waves in order (waiting for each to be healthy before the next), then
    /// prunes.
    async fn execute(
        &self,
        spec: &AppSpec,
        key: &str,
        compared: &Compared,
        plan: &SyncPlan,
    ) -> Executed {
        let mut out = Executed::default();
        let by_key: HashMap<&ObjectRef, &Item> =
            compared.items.iter().map(|i| (&i.key, i)).collect();
        if spec.options.create_namespace
            && let Some(ns) = &spec.destination_namespace
            && let Err(e) = self.create_namespace(spec, ns).await
        {
            out.error = Some(e);
            return out;
        }
        let last_wave = plan.waves.last().map(|(w, _)| *w);
        for (wave, tasks) in &plan.waves {
            // Kind by kind (Namespaces and CRDs before what they hold), each kind concurrently.
            let mut groups: BTreeMap<usize, Vec<&plan::ApplyTask>> = BTreeMap::new();
            for t in tasks {
                groups.entry(kind_rank(&t.key.kind)).or_default().push(t);
            }
            for (_, group) in groups {
                let mut futs = Vec::with_capacity(group.len());
                for t in group {
                    let item = by_key.get(&t.key).copied();
                    futs.push(self.apply_task(t, item));
                }
                let results = futures::stream::iter(futs)
                    .buffer_unordered(self.cfg.concurrency.max(1))
                    .collect::<Vec<_>>()
                    .await;
                for r in results {
                    if r.status == ResultCode::Synced {
                        out.applied += 1;
                    } else if out.error.is_none() {
                        out.error = Some(r.message.clone());
                    }
                    out.results.push(r);
                }
            }
            if out.error.is_some() {
                return out;
            }
            // Like Argo: the next wave starts once this one is healthy (prunes do not wait).
            if Some(*wave) != last_wave
                && let Err(e) = self.wait_wave_healthy(key, *wave, tasks).await
            {
                out.error = Some(e);
                return out;
            }
        }
        self.stats
            .applied
            .fetch_add(out.applied as u64, std::sync::atomic::Ordering::Relaxed);
        // Like Argo's sync context: a group of prunes (one wave; PruneLast ones last) is done
        // when its objects are gone, not when the API server accepted the DELETE — with
        // foreground propagation they stay, with a deletionTimestamp, until the garbage collector
        // has removed their dependents.
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        let mut i = 0;
        while i < plan.prunes.len() {
            let group = (plan.prunes[i].last, plan.prunes[i].wave);
            let mut going = Vec::new();
            while i < plan.prunes.len() && (plan.prunes[i].last, plan.prunes[i].wave) == group {
                let (r, pending) = self.prune(spec, compared, &plan.prunes[i]).await;
                match r.status {
                    ResultCode::Pruned => out.pruned += 1,
                    _ => {
                        if out.error.is_none() {
                            out.error = Some(r.message.clone());
                        }
                    }
                }
                going.extend(pending);
                out.results.push(r);
                i += 1;
            }
            if out.error.is_none()
                && let Err(e) = self.wait_deleted(&going, deadline).await
            {
                out.error = Some(e);
            }
            if out.error.is_some() {
                break;
            }
        }
        self.stats
            .pruned
            .fetch_add(out.pruned as u64, std::sync::atomic::Ordering::Relaxed);
        for k in &plan.prune_skipped {
            out.results.push(result(
                k,
                "",
                ResultCode::PruneSkipped,
                "ignored (requires pruning)",
            ));
        }
        out
    }

    async fn create_namespace(&self, spec: &AppSpec, ns: &str) -> Result<(), String> {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        if let Some(md) = &spec.namespace_metadata {
            if !md.labels.is_empty() {
                obj["metadata"]["labels"] = json!(md.labels);
            }
            if !md.annotations.is_empty() {
                obj["metadata"]["annotations"] = json!(md.annotations);
            }
        }
        let opts = ApplyOptions {
            field_manager: self.cfg.field_manager.clone(),
            ..Default::default()
        };
        let m = apply::Manifest {
            origin: "CreateNamespace=true".into(),
            object: obj,
        };
        self.applier
            .apply(&[m], &opts)
            .await
            .map(|_| ())
            .map_err(|e| format!("create namespace `{ns}`: {e}"))
    }

    async fn apply_task(&self, t: &plan::ApplyTask, item: Option<&Item>) -> ResourceResult {
        let origin = item.map(|i| i.origin.clone()).unwrap_or_default();
        let version = tracking::gv(&t.object).1;
        // Ours (tracked to this app, or new): take fields back from other writers (self-heal).
        // Someone else's: never force; a conflict is reported.
        let ours = item.is_none_or(|i| i.owner == Owner::This || i.live.is_none());
        let opts = ApplyOptions {
            field_manager: self.cfg.field_manager.clone(),
            concurrency: 1,
            force_conflicts: ours,
            ..Default::default()
        };
        let m = apply::Manifest {
            origin: origin.clone(),
            object: t.object.clone(),
        };
        let resolved = item.and_then(|i| i.resolved.as_ref());
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        // The copy in the cluster is being deleted: an apply would change an object that is
        // about to go. Wait for it to go, then create the object anew.
        if let Some(r) = resolved
            && let Known::Tracked(live) = self.cache.knows(r, &t.key)
            && is_deleting(&live)
        {
            let going = Going {
                resolved: r.clone(),
                key: t.key.clone(),
                uid: live["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            if let Err(e) = self.wait_deleted(&[going], deadline).await {
                return result(&t.key, &version, ResultCode::SyncFailed, &e);
            }
        }
        // What the watch cache knows saves the GET before the apply.
        let known = || match resolved.map(|r| self.cache.knows(r, &t.key)) {
            Some(Known::Tracked(v)) => Some(Some(v.as_ref().clone())),
            Some(Known::Absent) => Some(None),
            _ => None,
        };
        let mut attempt = self.applier.apply_known(&m, known(), &opts).await;
        if let Err(ApplyError::Object {
            code: Some(422),
            message,
            ..
        }) = &attempt
            && is_immutable(message)
        {
            if t.action == Action::Replace {
                tracing::info!(object = %t.key, "immutable field changed; replacing (Replace=true)");
                if let Err(e) = self.delete_and_wait(item, &t.key, &t.object).await {
                    return result(&t.key, &version, ResultCode::SyncFailed, &e);
                }
                attempt = self.applier.apply_known(&m, None, &opts).await;
            } else {
                return result(
                    &t.key,
                    &version,
                    ResultCode::SyncFailed,
                    &format!(
                        "{} (`{origin}`): {message}; the field cannot change in place: add the sync option `Replace=true` (annotation `argocd.argoproj.io/sync-options: Replace=true` on the object, or in the Application's syncOptions) to let the engine delete and recreate it",
                        t.key
                    ),
                );
            }
        }
        // The apply landed on an object being deleted that the cache did not know of (it was
        // not ours yet): wait for it to go, then create ours.
        if let Ok(report) = &attempt
            && let Some(a) = report.objects.iter().find(|a| is_deleting(&a.live))
        {
            let uid = a.live["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api = self.applier.api(&a.resolved, &t.key.namespace);
            let gone = kube::runtime::wait::await_condition(
                api,
                &t.key.name,
                kube::runtime::wait::conditions::is_deleted(&uid),
            );
            match tokio::time::timeout_at(deadline, gone).await {
                Ok(Ok(_)) => attempt = self.applier.apply_known(&m, None, &opts).await,
                Ok(Err(e)) => {
                    return result(
                        &t.key,
                        &version,
                        ResultCode::SyncFailed,
                        &format!("{}: wait for its deletion: {e}", t.key),
                    );
                }
                Err(_) => {
                    return result(
                        &t.key,
                        &version,
                        ResultCode::SyncFailed,
                        &still_deleting(&t.key, &a.live, self.cfg.wave_timeout),
                    );
                }
            }
        }
        match attempt {
            Ok(report) => {
                let mut message = "unchanged".to_string();
                for a in report.objects {
                    message = match a.change {
                        apply::Change::Created => "created".into(),
                        apply::Change::Configured => "configured".into(),
                        apply::Change::Unchanged => "unchanged".into(),
                    };
                    self.cache.remember(&a.resolved, a.live);
                }
                result(&t.key, &version, ResultCode::Synced, &message)
            }
            Err(e) => result(&t.key, &version, ResultCode::SyncFailed, &e.to_string()),
        }
    }

    async fn delete_and_wait(
        &self,
        item: Option<&Item>,
        key: &ObjectRef,
        obj: &Value,
    ) -> Result<(), String> {
        let r = match item.and_then(|i| i.resolved.clone()) {
            Some(r) => r,
            None => self
                .applier
                .discovery()
                .resolve(obj["apiVersion"].as_str().unwrap_or_default(), &key.kind)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| format!("replace {key}: kind not served"))?,
        };
        let api = self.applier.api(&r, &key.namespace);
        let uid = match api.get_opt(&key.name).await {
            Ok(Some(o)) => o.metadata.uid.clone(),
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("replace {key}: {}", describe(&e))),
        };
        match api.delete(&key.name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(format!("replace {key}: delete: {}", describe(&e))),
        }
        let gone = kube::runtime::wait::await_condition(
            api,
            &key.name,
            kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
        );
        match tokio::time::timeout(self.cfg.wave_timeout, gone).await {
            Ok(Ok(_)) => {
                self.cache.forget(&r, key);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("replace {key}: wait for deletion: {e}")),
            Err(_) => Err(format!(
                "replace {key}: still not deleted after {} s",
                self.cfg.wave_timeout.as_secs()
            )),
        }
    }

    /// Wait, by cache notifications (the watch), until every object of a wave is healthy.
    async fn wait_wave_healthy(
        &self,
        _key: &str,
        wave: i64,
        tasks: &[plan::ApplyTask],
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        let changed = self.cache.changed();
        loop {
            let notified = changed.notified();
            let mut waiting = None;
            for t in tasks {
                let r = self
                    .applier
                    .discovery()
                    .resolve(
                        t.object["apiVersion"].as_str().unwrap_or_default(),
                        &t.key.kind,
                    )
                    .await
                    .ok()
                    .flatten();
                let Some(r) = r else { continue };
                let _ = self.cache.ensure(&r).await;
                match self.cache.get(&r, &t.key).and_then(|l| health::assess(&l)) {
                    Some(h) if h.status == HealthCode::Degraded => {
                        return Err(format!("wave {wave}: {} is Degraded: {}", t.key, h.message));
                    }
                    Some(h) if h.status != HealthCode::Healthy => {
                        waiting = Some((t.key.clone(), h));
                        break;
                    }
                    _ => {}
                }
            }
            let Some((k, h)) = waiting else {
                return Ok(());
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "wave {wave} was not healthy within {} s: {k} is {} {}",
                    self.cfg.wave_timeout.as_secs(),
                    h.status.as_str(),
                    h.message
                ));
            }
        }
    }

    /// Delete one object git dropped. Returns the result and, when the object is still there
    /// being deleted (finalizers), what to wait for.
    async fn prune(
        &self,
        spec: &AppSpec,
        compared: &Compared,
        p: &plan::PruneTask,
    ) -> (ResourceResult, Option<Going>) {
        let version = crate::kinds::group_version(&p.api_version).1.to_string();
        let Some((r, live)) = compared
            .tracked
            .iter()
            .find(|(_, v)| ObjectRef::of(v).as_ref() == Some(&p.key))
        else {
            return (
                result(
                    &p.key,
                    &version,
                    ResultCode::SyncFailed,
                    "vanished before pruning",
                ),
                None,
            );
        };
        let going = Going {
            resolved: r.clone(),
            key: p.key.clone(),
            uid: live["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        if is_deleting(live) {
            // gitops-engine `pruneObject`: an object already being deleted is not deleted again
            // (that would only bump it and wake every watcher); its deletion is waited for.
            return (
                result(&p.key, &version, ResultCode::Pruned, "pruned"),
                Some(going),
            );
        }
        let api = self.applier.api(r, &p.key.namespace);
        let dp = match spec.options.propagation {
            Propagation::Foreground => DeleteParams::foreground(),
            Propagation::Background => DeleteParams::background(),
            Propagation::Orphan => DeleteParams::orphan(),
        };
        match crate::kube::retry(&Default::default(), || api.delete(&p.key.name, &dp)).await {
            // The server answers with the object while finalizers hold it (foreground and orphan
            // propagation add one), with a Status once it is gone.
            Ok(answer) if answer.is_left() => (
                result(&p.key, &version, ResultCode::Pruned, "pruned"),
                Some(going),
            ),
            Ok(_) => {
                self.cache.forget(r, &p.key);
                (result(&p.key, &version, ResultCode::Pruned, "pruned"), None)
            }
            Err(e) if status_code(&e) == Some(404) => {
                self.cache.forget(r, &p.key);
                (
                    result(
                        &p.key,
                        &version,
                        ResultCode::Pruned,
                        "pruned (already gone)",
                    ),
                    None,
                )
            }
            Err(e) => (
                result(
                    &p.key,
                    &version,
                    ResultCode::SyncFailed,
                    &format!("prune {}: {}", p.key, describe(&e)),
                ),
                None,
            ),
        }
    }

    /// Wait, by the watch cache, until every object in `going` has left it (by uid: a new
    /// object of the same name is another object), or `deadline`.
    async fn wait_deleted(
        &self,
        going: &[Going],
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        let changed = self.cache.changed();
        loop {
            let notified = changed.notified();
            let left = going.iter().find_map(|g| {
                self.cache
                    .get(&g.resolved, &g.key)
                    .filter(|v| v["metadata"]["uid"] == g.uid.as_str())
                    .map(|v| (g, v))
            });
            let Some((g, live)) = left else {
                return Ok(());
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(still_deleting(&g.key, &live, self.cfg.wave_timeout));
            }
        }
    }

    /// Cascading delete of an Application with Argo's resources finalizer: delete everything it
    /// tracks, wait until it is gone (argo-cd `finalizeApplicationDeletion` keeps the finalizer
    /// while objects remain), then drop the finalizer.
    async fn finalize(
        &self,
        app: &Value,
        spec: &AppSpec,
        id: &Ident,
    ) -> Result<Outcome, EngineError> {
        let name = spec.name.clone();
        let mut outcome = Outcome {
            name: name.clone(),
            sync: SyncCode::Unknown,
            health: previous_health(&app["status"]),
            revision: None,
            operation: None,
            applied: 0,
            pruned: 0,
            conditions: Vec::new(),
            diffs: Vec::new(),
            wake_in: None,
            wake_is_poll: false,
            wrote_status: false,
        };
        let Some(finalizer) = &spec.finalizer else {
            return Ok(outcome);
        };
        let kinds = self.previous_kinds(&app["status"]).await;
        for r in &kinds {
            let _ = self.cache.ensure(r).await;
        }
        let mut tracked = self.cache.tracked_by(&id.key, &kinds);
        tracked.retain(|(_, v)| id.owner(v) == Owner::This);
        tracked.sort_by_key(|(_, v)| {
            std::cmp::Reverse((
                sync_wave(v).unwrap_or(0),
                kind_rank(v["kind"].as_str().unwrap_or_default()),
            ))
        });
        let dp = if finalizer.ends_with("/background") {
            DeleteParams::background()
        } else {
            DeleteParams::foreground()
        };
        let mut going = Vec::new();
        for (r, v) in &tracked {
            let Some(k) = ObjectRef::of(v) else { continue };
            let g = Going {
                resolved: r.clone(),
                key: k.clone(),
                uid: v["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            if is_deleting(v) {
                going.push(g);
                continue;
            }
            let api = self.applier.api(r, &k.namespace);
            match api.delete(&k.name, &dp).await {
                Ok(answer) => {
                    outcome.pruned += 1;
                    if answer.is_left() {
                        going.push(g);
                        continue;
                    }
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(EngineError::App {
                        action: "delete the resources of",
                        namespace: spec.namespace.clone(),
                        name,
                        message: format!("{k}: {}", describe(&e)),
                    });
                }
            }
            self.cache.forget(r, &k);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        if let Err(e) = self.wait_deleted(&going, deadline).await {
            // The finalizer stays until the resources are gone; the next reconcile looks again.
            tracing::warn!(app = %name, "deleting the Application's resources: {e}");
            outcome.wake_in = Some(backoff::poll_interval(self.cfg.poll, random()));
            outcome.wake_is_poll = true;
            return Ok(outcome);
        }
        let remaining: Vec<Value> = app["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f.as_str() != Some(finalizer.as_str()))
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": remaining}});
        self.apps
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| EngineError::App {
                action: "remove the finalizer of",
                namespace: spec.namespace.clone(),
                name: name.clone(),
                message: describe(&e),
            })?;
        tracing::info!(app = %name, pruned = outcome.pruned, "deleted the Application's resources");
        Ok(outcome)
    }

    /// Build and (unless previewing or unchanged) write `.status`.
    async fn finish(&self, app: &Value, mode: Mode, f: Finish) -> Result<Outcome, EngineError> {
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = app["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let prev = &app["status"];
        let now = status::now();
        let source = app["spec"]["source"].clone();
        let history_limit = app["spec"]["revisionHistoryLimit"].as_u64().unwrap_or(10) as usize;
        let operation_phase = f.operation.as_ref().map(|o| o.phase);
        let deployed = f.deployed.as_ref().map(|(rev, started, by)| Deployed {
            revision: rev,
            started_at: started,
            initiated_by: by.clone(),
        });
        let new = status::build(StatusInput {
            previous: prev,
            source: &source,
            destination: &app["spec"]["destination"],
            sync: f.sync,
            revision: f.revision.as_deref(),
            health: f.health.clone(),
            resources: f.resources,
            operation: f.operation,
            deployed,
            history_limit,
            conditions: f.conditions.clone(),
            now: &now,
        });
        let mut wrote = false;
        if mode != Mode::Preview {
            let fresh = prev["reconciledAt"]
                .as_str()
                .and_then(|s| {
                    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_some_and(|t| {
                    OffsetDateTime::now_utc() - t
                        < time::Duration::try_from(self.cfg.status_refresh).unwrap_or_default()
                });
            let same = without_timestamps(prev) == without_timestamps(&new);
            let refresh = !app["metadata"]["annotations"][super::run::REFRESH_ANNOTATION].is_null();
            if !(same && fresh) || f.clear_operation || refresh {
                let mut patch = json!({"status": replacing_patch(prev, &new)});
                if f.clear_operation {
                    patch["operation"] = Value::Null;
                }
                if !app["metadata"]["annotations"][super::run::REFRESH_ANNOTATION].is_null() {
                    // A refresh asked for (by a standby engine or `argocd app get --refresh`) is done.
                    patch["metadata"] =
                        json!({"annotations": {super::run::REFRESH_ANNOTATION: null}});
                }
                let pp = PatchParams::default();
                let merge = Patch::Merge(&patch);
                crate::kube::retry(&Default::default(), || self.apps.patch(&name, &pp, &merge))
                    .await
                    .map_err(|e| EngineError::App {
                        action: "write the status of",
                        namespace: namespace.clone(),
                        name: name.clone(),
                        message: describe(&e),
                    })?;
                wrote = true;
            }
        }
        Ok(Outcome {
            name,
            sync: f.sync,
            health: f.health,
            revision: f.revision,
            operation: operation_phase,
            applied: f.applied,
            pruned: f.pruned,
            conditions: f.conditions,
            diffs: f.diffs,
            // An Application that stopped early (unreadable repo, invalid spec) is polled too.
            wake_in: f
                .wake_in
                .or_else(|| Some(backoff::poll_interval(self.cfg.poll, random()))),
            wake_is_poll: f.wake_in.is_none() || f.wake_is_poll,
            wrote_status: wrote,
        })
    }

    /// Credentials for a repository, the way Argo CD stores them: Secrets in the Applications'
    /// namespace labelled `argocd.argoproj.io/secret-type: repository` (exact `url`) or
    /// `repo-creds` (`url` prefix), with `username`/`password`; CAs from the ConfigMap
    /// `argocd-tls-certs-cm` (one key per host); plus the engine's own CA (the lab CA).
    async fn repo_auth(&self, url: &str) -> GitAuth {
        let mut auth = GitAuth {
            ca_pem: self.cfg.ca_pem.clone(),
            ..Default::default()
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return auth;
        }
        let (secrets, tls) = self.creds().await;
        let norm = super::webhook::normalize_repo_url(url);
        let decode = |s: &Value, k: &str| -> Option<String> {
            let b = s["data"][k].as_str()?;
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()?;
            String::from_utf8(bytes).ok()
        };
        let exact = secrets.iter().find(|s| {
            s["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repository"
                && decode(s, "url").is_some_and(|u| super::webhook::normalize_repo_url(&u) == norm)
        });
        let prefix = || {
            secrets
                .iter()
                .filter(|s| {
                    s["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repo-creds"
                })
                .filter_map(|s| decode(s, "url").map(|u| (u, s)))
                .filter(|(u, _)| url.starts_with(u.as_str()))
                .max_by_key(|(u, _)| u.len())
                .map(|(_, s)| s)
        };
        if let Some(s) = exact.or_else(prefix) {
            auth.username = decode(s, "username");
            auth.password = decode(s, "password").map(Secret::new);
        }
        if let Some(host) = url.split("://").nth(1).and_then(|r| r.split('/').next()) {
            let host = host.rsplit('@').next().unwrap_or(host);
            let host = host.split(':').next().unwrap_or(host);
            if let Some(pem) = tls["data"][host].as_str() {
                let mut all = auth.ca_pem.take().unwrap_or_default();
                all.push_str(pem);
                auth.ca_pem = Some(all);
            }
        }
        auth
    }

    /// The engine's installation id: `installationID` of the ConfigMap `argocd-cm` in the
    /// Applications namespace, where Argo CD reads it (none without the ConfigMap or the key).
    /// Read at most every 30 s. A failed read keeps the last value; with none known it stops the
    /// reconcile (guessing could take another installation's objects for ours, or ours for
    /// another's).
    async fn installation_id(&self) -> Result<Option<String>, String> {
        let last = self.installation.lock().expect("installation").clone();
        if let Some((at, id)) = &last
            && at.elapsed() < Duration::from_secs(30)
        {
            return Ok(id.clone());
        }
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let read = crate::kube::retry(&Default::default(), || {
            cms.get_opt(tracking::SETTINGS_CONFIG_MAP)
        })
        .await;
        let id = match read {
            Ok(cm) => cm
                .and_then(|cm| cm.data)
                .and_then(|d| d.get("installationID").cloned())
                .filter(|id| !id.is_empty()),
            Err(e) => {
                return match last {
                    Some((_, id)) => Ok(id),
                    None => Err(format!(
                        "read the installation id (`{}` in `{}`): {}",
                        tracking::SETTINGS_CONFIG_MAP,
                        self.cfg.app_namespace,
                        describe(&e)
                    )),
                };
            }
        };
        *self.installation.lock().expect("installation") = Some((Instant::now(), id.clone()));
        Ok(id)
    }

    async fn creds(&self) -> (Arc<Vec<Value>>, Arc<Value>) {
        if let Some((at, s, t)) = self.creds.lock().expect("creds").as_ref()
            && at.elapsed() < Duration::from_secs(30)
        {
            return (s.clone(), t.clone());
        }
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let lp = ListParams::default()
            .labels("argocd.argoproj.io/secret-type in (repository,repo-creds)");
        let list: Vec<Value> = match secrets.list(&lp).await {
            Ok(l) => l
                .items
                .iter()
                .map(|s| serde_json::to_value(s).expect("secrets serialize"))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %describe(&e), "no repository credentials readable");
                Vec::new()
            }
        };
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let tls = match cms.get_opt("argocd-tls-certs-cm").await {
            Ok(Some(cm)) => serde_json::to_value(cm).expect("configmaps serialize"),
            _ => Value::Null,
        };
        let (s, t) = (Arc::new(list), Arc::new(tls));
        *self.creds.lock().expect("creds") = Some((Instant::now(), s.clone(), t.clone()));
        (s, t)
    }
}

/// An object whose deletion is under way.
struct Going {
    resolved: Resolved,
    key: ObjectRef,
    uid: String,
}

/// The object is being deleted (it has a `deletionTimestamp`; finalizers hold it).
fn is_deleting(v: &Value) -> bool {
    v["metadata"]["deletionTimestamp"].is_string()
}

/// Why an object is still there after `waited`: its finalizers, and what to do.
fn still_deleting(key: &ObjectRef, live: &Value, waited: Duration) -> String {
    let finalizers: Vec<String> = live["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(|f| format!("`{f}`")))
        .collect();
    let held = if finalizers.is_empty() {
        String::new()
    } else {
        format!(" (finalizers {})", finalizers.join(", "))
    };
    format!(
        "{key} is still being deleted after {} s{held}: the controller that owns a finalizer removes it when its work is done (`foregroundDeletion` waits for the object's dependents); the next sync waits again",
        waited.as_secs()
    )
}

#[derive(Default)]
struct Executed {
    applied: usize,
    pruned: usize,
    results: Vec<ResourceResult>,
    error: Option<String>,
}

enum Act {
    Nothing,
    Sync {
        initiated_by: InitiatedBy,
        retry_count: i64,
    },
}

struct Decision {
    action: Act,
    wake_in: Option<Duration>,
    /// The wake-up is the polling interval (git is asked then), not a backoff.
    poll: bool,
}

struct Finish {
    sync: SyncCode,
    health: Health,
    revision: Option<String>,
    conditions: Vec<Condition>,
    resources: Vec<ResourceStatus>,
    operation: Option<OperationState>,
    deployed: Option<(String, String, InitiatedBy)>,
    clear_operation: bool,
    applied: usize,
    pruned: usize,
    diffs: Vec<ObjectDiff>,
    wake_in: Option<Duration>,
    wake_is_poll: bool,
}

impl Finish {
    fn stopped(
        sync: SyncCode,
        health: Health,
        revision: Option<String>,
        conditions: Vec<Condition>,
    ) -> Finish {
        Finish {
            sync,
            health,
            revision,
            conditions,
            resources: Vec::new(),
            operation: None,
            deployed: None,
            clear_operation: false,
            applied: 0,
            pruned: 0,
            diffs: Vec::new(),
            wake_in: None,
            wake_is_poll: true,
        }
    }
}

fn result(k: &ObjectRef, version: &str, status: ResultCode, message: &str) -> ResourceResult {
    ResourceResult {
        group: k.group.clone(),
        version: version.to_string(),
        kind: k.kind.clone(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        status,
        message: message.to_string(),
        sync_phase: "Sync".into(),
    }
}

fn bad_manifests(e: &ManifestError, revision: &str) -> Stop {
    Stop {
        sync: SyncCode::OutOfSync,
        health: Some(Health::new(HealthCode::Degraded, e.to_string())),
        revision: Some(revision.to_string()),
        condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
    }
}

fn is_immutable(message: &str) -> bool {
    message.contains("immutable")
}

fn previous_health(prev: &Value) -> Health {
    let code = match prev["health"]["status"].as_str() {
        Some("Healthy") => HealthCode::Healthy,
        Some("Suspended") => HealthCode::Suspended,
        Some("Progressing") => HealthCode::Progressing,
        Some("Missing") => HealthCode::Missing,
        Some("Degraded") => HealthCode::Degraded,
        _ => HealthCode::Unknown,
    };
    Health::new(code, prev["health"]["message"].as_str().unwrap_or_default())
}

/// Scope of a kind that a CRD in the same set defines.
fn crd_scope(manifests: &[Manifest], obj: &Value) -> Option<bool> {
    let (group, _) = crate::kinds::group_version(obj["apiVersion"].as_str()?);
    let kind = obj["kind"].as_str()?;
    manifests.iter().find_map(|m| {
        let spec = &m.object["spec"];
        (m.object["kind"] == "CustomResourceDefinition"
            && spec["group"] == group
            && spec["names"]["kind"] == kind)
            .then(|| spec["scope"] != "Cluster")
    })
}

fn strip_hash(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(a) = v["metadata"]["annotations"].as_object_mut() {
        a.remove(apply::diff::HASH_ANNOTATION);
    }
    v
}

fn without_timestamps(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("reconciledAt");
        m.remove("observedAt");
    }
    s
}

/// A JSON merge patch turning `old` into `new`: keys `new` lacks are set to null.
pub fn replacing_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, ov) in o {
                match n.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(nv) => {
                        if ov != nv {
                            out.insert(k.clone(), replacing_patch(ov, nv));
                        }
                    }
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    out.insert(k.clone(), nv.clone());
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(8)]
}

fn random() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_patch_nulls_what_went_away() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let new = json!({"b": {"c": 2}, "e": [2], "f": "x"});
        assert_eq!(
            replacing_patch(&old, &new),
            json!({"a": null, "b": {"d": null}, "e": [2], "f": "x"})
        );
    }
}

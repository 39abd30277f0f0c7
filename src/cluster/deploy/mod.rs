//! Deploy: the rendered stack → the cluster, component by component along the stack's `needs`,
//! independent components at the same time; then prune what the lab no longer renders.
//!
//! Data flow: `Manifests` (render) + `Stack` + a `kube::Client` (provider) → per component:
//! wait for its needs → apply (the `apply` engine; a write an admission webhook cannot take yet
//! is tried again) → wait for readiness by watches, both within the component's timeout →
//! [`DeployReport`]. [`health`] is the one-shot view `status` shows.
//!
//! Architecture invariant: a component starts only when everything it needs is ready, and a
//! failure stops only the components that depend on it. Prune touches only objects labelled with
//! this lab and a component that either left the stack or was deployed successfully in this run.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::apply::readiness::Readiness;
use crate::cluster::apply::wait::{self, AdmissionWait, Waiting};
use crate::cluster::apply::{
    Applier, ApplyError, ApplyOptions, Change, Manifest, PruneReport, PruneScope,
};
use crate::cluster::kube::{WebhookUnreachable, describe};
use crate::edges::error::Diagnostic;
use crate::edges::output::{Outcome, Progress, human_duration};
use crate::model::kinds::ObjectRef;
use crate::model::render::{LABEL_COMPONENT, LABEL_LAB, Manifests};
use crate::model::stack::Stack;

mod diagnose;

pub use diagnose::diagnose;

/// How to deploy.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// The lab (ownership label value).
    pub lab: String,
    /// Readiness timeout for components that set none.
    pub default_timeout: Duration,
    /// Objects applied at once within a component.
    pub concurrency: usize,
    /// Delete objects of removed components and objects removed from templates.
    pub prune: bool,
}

impl DeployOptions {
    /// Defaults for a lab: 300 s per component, 16 objects at once, prune on.
    pub fn new(lab: &str) -> DeployOptions {
        DeployOptions {
            lab: lab.to_string(),
            default_timeout: Duration::from_secs(300),
            concurrency: 16,
            prune: true,
        }
    }
}

/// How one component ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum ComponentOutcome {
    /// Applied and ready.
    Ready,
    /// A microk8s addon: enabled by the provider, nothing to apply here.
    Addon,
    /// Failed; the message names the object.
    Failed(String),
    /// Not started because a component it needs failed.
    Blocked(String),
}

/// One component's deploy.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentReport {
    /// Component name.
    pub name: String,
    /// How it ended.
    pub outcome: ComponentOutcome,
    /// Objects created.
    pub created: usize,
    /// Objects changed.
    pub configured: usize,
    /// Objects that already matched (no write).
    pub unchanged: usize,
    /// From its start (needs ready) to ready or failure.
    #[serde(with = "millis")]
    pub elapsed: Duration,
    /// When it started applying (after its needs were ready).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// When it was ready.
    #[serde(skip)]
    pub ready: Option<Instant>,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

/// The whole deploy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeployReport {
    /// Per component, in stack order.
    pub components: Vec<ComponentReport>,
    /// Objects pruned (`Kind/name` in `ns`).
    pub pruned: Vec<String>,
    /// Objects prune left in place, with why.
    pub kept: Vec<String>,
}

impl DeployReport {
    /// Objects written (created + configured) plus pruned.
    pub fn writes(&self) -> usize {
        self.components
            .iter()
            .map(|c| c.created + c.configured)
            .sum::<usize>()
            + self.pruned.len()
    }

    /// The final table: component, state, objects, duration.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<18} {:<9} {:>7} {:>7} {:>9} {:>8}\n",
            "COMPONENT", "STATE", "CREATED", "CHANGED", "UNCHANGED", "TIME"
        );
        for c in &self.components {
            let state = match &c.outcome {
                ComponentOutcome::Ready => "ready",
                ComponentOutcome::Addon => "addon",
                ComponentOutcome::Failed(_) => "failed",
                ComponentOutcome::Blocked(_) => "blocked",
            };
            out.push_str(&format!(
                "{:<18} {:<9} {:>7} {:>7} {:>9} {:>8}\n",
                c.name,
                state,
                c.created,
                c.configured,
                c.unchanged,
                human_duration(c.elapsed)
            ));
        }
        out
    }
}

/// Deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Components failed (and others were blocked by them).
    #[error("{}", failures_message(.report))]
    Components {
        /// Everything that happened, failures included.
        report: Box<DeployReport>,
    },
    /// Prune failed.
    #[error("prune objects the lab no longer renders")]
    Prune {
        /// Why.
        #[source]
        source: ApplyError,
    },
}

fn failures_message(report: &DeployReport) -> String {
    let failed: Vec<String> = report
        .components
        .iter()
        .filter_map(|c| match &c.outcome {
            ComponentOutcome::Failed(m) => Some(format!("component `{}`: {m}", c.name)),
            _ => None,
        })
        .collect();
    let blocked: Vec<String> = report
        .components
        .iter()
        .filter(|c| matches!(c.outcome, ComponentOutcome::Blocked(_)))
        .map(|c| format!("`{}`", c.name))
        .collect();
    let mut out = failed.join("\n");
    if !blocked.is_empty() {
        out.push_str(&format!(
            "\nnot started because of that: {}",
            blocked.join(", ")
        ));
    }
    out
}

impl Diagnostic for DeployError {
    fn hints(&self) -> Vec<String> {
        match self {
            DeployError::Components { .. } => vec![
                "fix what is named above and run `homelab up` again: what is already in place is left alone".into(),
            ],
            DeployError::Prune { source } => source.hints(),
        }
    }
}

/// Deploy the rendered stack.
pub async fn deploy(
    client: &::kube::Client,
    manifests: &Manifests,
    stack: &Stack,
    opts: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DeployReport, DeployError> {
    let applier = Applier::new(client.clone());
    let mut senders = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    for c in &manifests.components {
        let (tx, rx) = tokio::sync::watch::channel(None::<bool>);
        senders.insert(c.name.clone(), tx);
        receivers.insert(c.name.clone(), rx);
    }
    let runs = manifests.components.iter().map(|cm| {
        let needs: Vec<String> = stack
            .component(&cm.name)
            .map(|c| c.needs.clone())
            .unwrap_or_default();
        let need_rx: Vec<(String, tokio::sync::watch::Receiver<Option<bool>>)> = needs
            .iter()
            .filter_map(|n| receivers.get(n).map(|r| (n.clone(), r.clone())))
            .collect();
        let tx = senders.remove(&cm.name).expect("one sender per component");
        let applier = &applier;
        async move {
            let report = run_component(applier, cm, stack, need_rx, opts, progress).await;
            let _ = tx.send(Some(matches!(
                report.0.outcome,
                ComponentOutcome::Ready | ComponentOutcome::Addon
            )));
            report
        }
    });
    let results = join_all(runs).await;
    let mut report = DeployReport::default();
    let mut applied_ok: BTreeSet<String> = BTreeSet::new();
    let mut keep: BTreeSet<ObjectRef> = BTreeSet::new();
    for (r, objects) in results {
        if r.outcome == ComponentOutcome::Ready {
            applied_ok.insert(r.name.clone());
        }
        keep.extend(objects);
        report.components.push(r);
    }
    // Desired objects of components that did not finish are kept too (never pruned).
    for c in &manifests.components {
        for o in &c.objects {
            if let Some(r) = ObjectRef::of(o) {
                keep.insert(r);
            }
        }
    }
    let failed = report.components.iter().any(|c| {
        matches!(
            c.outcome,
            ComponentOutcome::Failed(_) | ComponentOutcome::Blocked(_)
        )
    });
    if opts.prune {
        let in_stack: BTreeSet<String> = stack.components.iter().map(|c| c.name.clone()).collect();
        let lab = opts.lab.clone();
        let owns = move |v: &Value| {
            let labels = v.pointer("/metadata/labels");
            let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            get(LABEL_LAB) == Some(lab.as_str())
                && get(LABEL_COMPONENT)
                    .is_some_and(|c| !in_stack.contains(c) || applied_ok.contains(c))
                && v.pointer(&format!(
                    "/metadata/annotations/{}",
                    crate::cluster::apply::diff::HASH_ANNOTATION.replace('/', "~1")
                ))
                .is_some()
        };
        let selector = format!("{LABEL_LAB}={}", opts.lab);
        let started = Instant::now();
        let pruned = applier
            .prune(
                &keep,
                &PruneScope {
                    selector: &selector,
                    owns: &owns,
                },
            )
            .await
            .map_err(|source| DeployError::Prune { source })?;
        report.pruned = pruned.deleted.iter().map(|o| o.to_string()).collect();
        report.kept = pruned
            .kept
            .iter()
            .map(|(o, why)| format!("{o}: {why}"))
            .collect();
        if !pruned.deleted.is_empty() {
            progress.finish(
                "prune",
                Outcome::Done,
                started.elapsed(),
                &format!(
                    "deleted {} objects the lab no longer renders",
                    pruned.deleted.len()
                ),
            );
        }
        for k in &report.kept {
            progress.update("prune", &format!("kept {k}"));
        }
    }
    if failed {
        return Err(DeployError::Components {
            report: Box::new(report),
        });
    }
    Ok(report)
}

type ComponentRun = (ComponentReport, Vec<ObjectRef>);

async fn run_component(
    applier: &Applier,
    cm: &crate::model::render::ComponentManifests,
    stack: &Stack,
    needs: Vec<(String, tokio::sync::watch::Receiver<Option<bool>>)>,
    opts: &DeployOptions,
    progress: &dyn Progress,
) -> ComponentRun {
    let name = cm.name.as_str();
    let component = stack.component(name);
    let mut report = ComponentReport {
        name: name.to_string(),
        outcome: ComponentOutcome::Ready,
        created: 0,
        configured: 0,
        unchanged: 0,
        elapsed: Duration::ZERO,
        started: None,
        ready: None,
    };
    if !needs.is_empty() {
        let names: Vec<&str> = needs.iter().map(|(n, _)| n.as_str()).collect();
        progress.start(name, &format!("waiting on {}", names.join(", ")));
    }
    for (need, mut rx) in needs {
        let ok = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => false,
        };
        if !ok {
            report.outcome = ComponentOutcome::Blocked(format!("`{need}` failed"));
            progress.finish(
                name,
                Outcome::Failed,
                Duration::ZERO,
                &format!("not started: `{need}` failed"),
            );
            return (report, Vec::new());
        }
    }
    let started = Instant::now();
    report.started = Some(started);
    if component.is_some_and(|c| c.is_addon()) {
        report.outcome = ComponentOutcome::Addon;
        report.ready = Some(started);
        progress.finish(
            name,
            Outcome::Skipped,
            Duration::ZERO,
            "microk8s addon, enabled by the provider",
        );
        return (report, Vec::new());
    }
    if cm.objects.is_empty() && component.is_some_and(|c| c.source.upstream.is_some()) {
        let msg = format!(
            "its upstream manifest is not downloaded; run `homelab prepare` first ({})",
            cm.note.clone().unwrap_or_default()
        );
        report.outcome = ComponentOutcome::Failed(msg.clone());
        progress.finish(name, Outcome::Failed, Duration::ZERO, &msg);
        return (report, Vec::new());
    }
    progress.start(name, &format!("applying {} objects", cm.objects.len()));
    let manifests: Vec<Manifest> = cm
        .objects
        .iter()
        .map(|o| Manifest {
            origin: format!("component {name}"),
            object: o.clone(),
        })
        .collect();
    // One budget per component: the apply (which may wait for an admission webhook) and the
    // readiness wait share the component's timeout.
    let timeout = match component.and_then(|c| c.timeout) {
        Some(t) if t > 0 => Duration::from_secs(t),
        _ => opts.default_timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let waiting = Arc::new(Waiting::default());
    let mut notices = waiting.subscribe();
    // An adopted object (a microk8s addon created it) carries no lab labels: it is read by GET,
    // and the fields homelab renders are taken from the addon's field manager (issue 12).
    let adopts = component.is_some_and(|c| c.adopts);
    let apply_opts = ApplyOptions {
        default_namespace: component.and_then(|c| c.namespace.clone()),
        concurrency: opts.concurrency,
        ownership: BTreeMap::from([
            (LABEL_LAB.to_string(), opts.lab.clone()),
            (LABEL_COMPONENT.to_string(), name.to_string()),
        ]),
        live_selector: (!adopts).then(|| format!("{LABEL_LAB}={}", opts.lab)),
        force_conflicts: adopts,
        admission: Some(AdmissionWait {
            deadline,
            waiting: waiting.clone(),
        }),
        ..ApplyOptions::default()
    };
    let applied = match reporting(
        name,
        progress,
        &mut notices,
        applier.apply(&manifests, &apply_opts),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let mut msg = e.to_string();
            if let ApplyError::Object {
                code: Some(500),
                message,
                ..
            } = &e
                && let Some(w) = WebhookUnreachable::from_message(message)
            {
                msg.push_str(&format!(
                    "\n  the admission webhook `{}` could not be called for {}s: {}",
                    w.webhook,
                    timeout.as_secs(),
                    w.advice()
                ));
            }
            report.outcome = ComponentOutcome::Failed(msg.clone());
            report.elapsed = started.elapsed();
            progress.finish(name, Outcome::Failed, report.elapsed, &msg);
            return (report, Vec::new());
        }
    };
    report.created = applied.count(Change::Created);
    report.configured = applied.count(Change::Configured);
    report.unchanged = applied.count(Change::Unchanged);
    let refs: Vec<ObjectRef> = applied.objects.iter().map(|a| a.object.clone()).collect();
    progress.update(
        name,
        &format!(
            "applied {} objects ({} created, {} changed, {} unchanged); waiting until ready",
            applied.objects.len(),
            report.created,
            report.configured,
            report.unchanged
        ),
    );
    let all = futures::future::try_join_all(applied.objects.iter().map(|a| {
        let waiting = &waiting;
        async move {
            wait::until_ready(applier, a, waiting)
                .await
                .map_err(|why| format!("{}: {why}", a.object))
        }
    }));
    let waited = reporting(
        name,
        progress,
        &mut notices,
        tokio::time::timeout_at(deadline, all),
    )
    .await;
    match waited {
        Ok(Ok(_)) => {
            report.elapsed = started.elapsed();
            report.ready = Some(Instant::now());
            let detail = if applied.unchanged() {
                format!("ready, unchanged ({} objects)", applied.objects.len())
            } else {
                format!("ready in {}", human_duration(report.elapsed))
            };
            progress.finish(name, Outcome::Done, report.elapsed, &detail);
        }
        Ok(Err(why)) => {
            report.elapsed = started.elapsed();
            report.outcome = ComponentOutcome::Failed(why.clone());
            progress.finish(name, Outcome::Failed, report.elapsed, &why);
        }
        Err(_) => {
            report.elapsed = started.elapsed();
            let diagnosis = diagnose(applier, &applied.objects, &waiting.snapshot()).await;
            let msg = format!("not ready after {}s\n{diagnosis}", timeout.as_secs());
            report.outcome = ComponentOutcome::Failed(msg.clone());
            progress.finish(
                name,
                Outcome::Failed,
                report.elapsed,
                &format!("not ready after {}s", timeout.as_secs()),
            );
        }
    }
    (report, refs)
}

/// Run `work`, showing each notice (an admission webhook waited for) as a progress line of `step`.
async fn reporting<F: Future>(
    step: &str,
    progress: &dyn Progress,
    notices: &mut tokio::sync::watch::Receiver<String>,
    work: F,
) -> F::Output {
    let mut work = pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            changed = notices.changed() => {
                if changed.is_err() {
                    return work.await;
                }
                let text = notices.borrow_and_update().clone();
                if !text.is_empty() {
                    progress.update(step, &text);
                }
            }
        }
    }
}

/// Delete every object of lab `lab` from the cluster (`down` on an existing cluster): what
/// carries the lab's label and homelab's applied-hash annotation, with the same protections as
/// prune (objects with owners, and Namespaces or CRDs still holding foreign objects, are kept).
pub async fn remove_lab(client: &::kube::Client, lab: &str) -> Result<PruneReport, ApplyError> {
    let applier = Applier::new(client.clone());
    let lab_owned = lab.to_string();
    let owns = move |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(|l| l.get(LABEL_LAB))
            .and_then(Value::as_str)
            == Some(lab_owned.as_str())
            && v.pointer(&format!(
                "/metadata/annotations/{}",
                crate::cluster::apply::diff::HASH_ANNOTATION.replace('/', "~1")
            ))
            .is_some()
    };
    let selector = format!("{LABEL_LAB}={lab}");
    applier
        .prune(
            &BTreeSet::new(),
            &PruneScope {
                selector: &selector,
                owns: &owns,
            },
        )
        .await
}

/// A component's health for `homelab status`.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentHealth {
    /// Component name.
    pub name: String,
    /// `healthy`, `progressing`, `missing`, `degraded`, `addon`.
    pub state: String,
    /// Objects not healthy, with why.
    pub problems: Vec<String>,
    /// The component's Applications as their engine reported them (either engine: the
    /// standard status fields); reported only, they do not change `state`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<ApplicationHealth>,
}

/// An Application's status for `homelab status`.
#[derive(Clone, Debug, Serialize)]
pub struct ApplicationHealth {
    /// `Application ns/name`, as objects are named elsewhere.
    pub application: String,
    /// `status.sync.revision` (empty before its first comparison).
    pub revision: String,
    /// `Synced and Healthy`, or the status in one line.
    pub summary: String,
}

/// One-shot health of every component (reads only: one GET per object plus what readiness needs).
pub async fn health(
    client: &::kube::Client,
    manifests: &Manifests,
    stack: &Stack,
) -> Result<Vec<ComponentHealth>, ApplyError> {
    let applier = Applier::new(client.clone());
    let mut out = Vec::new();
    for cm in &manifests.components {
        let component = stack.component(&cm.name);
        if component.is_some_and(|c| c.is_addon()) {
            out.push(ComponentHealth {
                name: cm.name.clone(),
                state: "addon".into(),
                problems: Vec::new(),
                applications: Vec::new(),
            });
            continue;
        }
        let mut state = "healthy";
        let mut problems = Vec::new();
        let mut applications = Vec::new();
        for obj in &cm.objects {
            let api_version = obj["apiVersion"].as_str().unwrap_or_default();
            let kind = obj["kind"].as_str().unwrap_or_default();
            let Some(mut oref) = ObjectRef::of(obj) else {
                continue;
            };
            let resolved = applier.resolve(api_version, kind).await?;
            let Some(resolved) = resolved else {
                problems.push(format!("{oref}: kind not served by the cluster"));
                state = "missing";
                continue;
            };
            if resolved.namespaced && oref.namespace.is_empty() {
                oref.namespace = component
                    .and_then(|c| c.namespace.clone())
                    .unwrap_or_default();
            }
            let api = applier.api(&resolved, &oref.namespace);
            match api.get_opt(&oref.name).await {
                Ok(Some(live)) => {
                    let live = crate::cluster::apply::to_value(&live, &resolved);
                    // An Application is judged by what its engine (either) wrote in its status.
                    let readiness =
                        if resolved.resource.group == "argoproj.io" && kind == "Application" {
                            let r = crate::cluster::apply::readiness::application(&live);
                            let line = match &r {
                                Readiness::Ready => "Synced and Healthy".to_string(),
                                Readiness::Waiting(w) | Readiness::Failed(w) => w.clone(),
                            };
                            let revision = live
                                .pointer("/status/sync/revision")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            applications.push(ApplicationHealth {
                                application: oref.to_string(),
                                revision: revision.to_string(),
                                summary: line,
                            });
                            // Reported, not judged: the component is its objects, and an
                            // Application waits on the pipeline (a lab `up --no-verify` built has
                            // no image yet), which must not hold up `up`'s snapshot.
                            Readiness::Ready
                        } else {
                            wait::check(&applier, &resolved, &live).await
                        };
                    match readiness {
                        Readiness::Ready => {}
                        Readiness::Waiting(why) => {
                            problems.push(format!("{oref}: {why}"));
                            if state == "healthy" {
                                state = "progressing";
                            }
                        }
                        Readiness::Failed(why) => {
                            problems.push(format!("{oref}: {why}"));
                            state = "degraded";
                        }
                    }
                }
                Ok(None) => {
                    problems.push(format!("{oref}: missing"));
                    if state != "degraded" {
                        state = "missing";
                    }
                }
                Err(e) => {
                    return Err(ApplyError::Api {
                        action: format!("read {oref}"),
                        message: describe(&e),
                    });
                }
            }
        }
        out.push(ComponentHealth {
            name: cm.name.clone(),
            state: state.into(),
            problems,
            applications,
        });
    }
    Ok(out)
}

//! The `up` pipeline: named steps with declared needs, each started as soon as what it needs is
//! done, so work that does not need the VM (secrets, CA, rendering, downloads) runs while it
//! boots. Later issues extend it with their own steps (deploy, wire, verify).
//!
//! Architecture invariant: a step never trusts a marker. Every run, each step looks at reality
//! (the VM, the cluster, the files) and returns [`StepReport::skipped`] when what it makes is
//! already true, so re-running `up` on a healthy lab writes nothing. The runner records each
//! finished step in `up.json` (atomically, only when that record changes) for `status` and for
//! steps that want to know what an earlier run did; a kill at any point leaves files that are
//! either old or new, never half-written, and the next run simply looks again.
//!
//! # Adding a step
//!
//! ```text
//! struct Deploy;
//! impl Step for Deploy {
//!     fn name(&self) -> &'static str { "deploy" }
//!     fn needs(&self) -> &'static [&'static str] { &[up::CLUSTER_READY, "ca"] }
//!     fn describe(&self) -> String { "deploy the stack's components".into() }
//!     fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
//!         Box::pin(async move {
//!             let cluster = cx.get::<provider::Cluster>()?;   // put there by an earlier step
//!             cx.update("applying wave 1 of 4");
//!             Ok(StepReport::done("12 objects applied"))
//!         })
//!     }
//! }
//! // in `pipeline()`: p.add(Deploy);
//! ```

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

mod lab;

pub use lab::{LabOutputs, UpstreamTexts};

use crate::error::{Error, Result};
use crate::output::{Outcome, Progress};
use crate::provider;
use crate::render::{self, Domain, RenderInput};
use crate::settings::{ProviderKind, Settings};
use crate::stack::Stack;
use crate::state::{LabState, SECRETS_FILE, Secrets, StateError};
use crate::templates::Templates;
use crate::tls::{self, CA_CERT_FILE, CA_KEY_FILE, LabCa};

/// Where the runner records finished steps.
pub const UP_STATE_FILE: &str = "up.json";
/// The name of every provider's last step: after it, the cluster answers and can take the
/// lab. Later steps that talk to the cluster need this one.
pub const CLUSTER_READY: &str = "ready";

/// The steps an earlier run finished, with when and how long they took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpRecord {
    /// By step name.
    #[serde(default)]
    pub steps: BTreeMap<String, StepRecord>,
}

/// One finished step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// RFC 3339, UTC.
    pub completed_at: String,
    /// How long it took that time.
    pub duration_ms: u64,
}

impl UpRecord {
    /// The record in the lab state (empty when none).
    pub fn load(state: &LabState) -> Result<UpRecord, StateError> {
        Ok(state.read_json(UP_STATE_FILE)?.unwrap_or_default())
    }
}

/// What a step found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// [`Outcome::Done`] when it changed something, [`Outcome::Skipped`] when all was true.
    pub outcome: Outcome,
    /// One line for people.
    pub detail: String,
}

impl StepReport {
    /// It changed something.
    pub fn done(detail: impl Into<String>) -> StepReport {
        StepReport {
            outcome: Outcome::Done,
            detail: detail.into(),
        }
    }

    /// Everything was already as it should be; nothing was written.
    pub fn skipped(detail: impl Into<String>) -> StepReport {
        StepReport {
            outcome: Outcome::Skipped,
            detail: detail.into(),
        }
    }
}

/// One named step of `up`.
pub trait Step: Send + Sync {
    /// Stable name: shown in progress, recorded in `up.json`, used in `needs`.
    fn name(&self) -> &'static str;
    /// Steps that must have finished first (they must be added before this one).
    fn needs(&self) -> &'static [&'static str];
    /// What it does, shown when it starts.
    fn describe(&self) -> String;
    /// Look at reality, make it right, report.
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>>;
}

/// How long `up` waits for things, and how often it looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waits {
    /// First pause between two looks; doubles up to `poll_max`.
    pub poll: Duration,
    /// Longest pause between two looks.
    pub poll_max: Duration,
    /// A VM that is starting must run within this.
    pub vm_running: Duration,
    /// cloud-init (snap install of microk8s) must finish within this.
    pub provisioned: Duration,
    /// The API must answer and every node be Ready within this.
    pub ready: Duration,
    /// One `multipass exec` may take this long.
    pub exec: Duration,
    /// How long a command waits for another that holds the lab's command lock.
    pub lock: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            poll: Duration::from_secs(1),
            poll_max: Duration::from_secs(5),
            vm_running: Duration::from_secs(10 * 60),
            // Installing the snap on a slow network takes a while; Multipass itself gives up
            // after 5 minutes, which is why this wait exists at all.
            provisioned: Duration::from_secs(30 * 60),
            ready: Duration::from_secs(10 * 60),
            exec: Duration::from_secs(120),
            // Long enough for a short command (`trust --apply`, `ca regenerate`) to finish;
            // an `up` takes minutes, and the message says to run again once it is done.
            lock: Duration::from_secs(30),
        }
    }
}

impl Waits {
    /// The defaults, overridden by `HOMELAB_TEST_WAITS` (`poll_ms=5,ready_ms=300,…`; keys
    /// `poll_ms`, `poll_max_ms`, `vm_running_ms`, `provisioned_ms`, `ready_ms`, `exec_ms`,
    /// `lock_ms`).
    /// Meant for tests and very slow networks.
    pub fn from_env(value: Option<&str>) -> Result<Waits> {
        let mut w = Waits::default();
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return Ok(w);
        };
        for pair in value.split(',') {
            let bad = || {
                Error::msg(format!("invalid `HOMELAB_TEST_WAITS` entry `{pair}`")).hint(
                    "write `key_ms=N` pairs separated by commas, e.g. `poll_ms=10,ready_ms=500`",
                )
            };
            let (k, v) = pair.trim().split_once('=').ok_or_else(bad)?;
            let ms: u64 = v.trim().parse().map_err(|_| bad())?;
            let d = Duration::from_millis(ms);
            match k.trim() {
                "poll_ms" => w.poll = d,
                "poll_max_ms" => w.poll_max = d,
                "vm_running_ms" => w.vm_running = d,
                "provisioned_ms" => w.provisioned = d,
                "ready_ms" => w.ready = d,
                "exec_ms" => w.exec = d,
                "lock_ms" => w.lock = d,
                _ => return Err(bad()),
            }
        }
        w.poll_max = w.poll_max.max(w.poll);
        Ok(w)
    }

    /// The pause before look number `attempt` (0-based): `poll`, doubling, at most `poll_max`.
    pub fn pause(&self, attempt: u32) -> Duration {
        self.poll
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.poll_max)
    }
}

/// Options of this `up` run that are not settings.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// `--recreate`: delete and launch the lab's VMs again.
    pub recreate: bool,
    /// `--no-verify`: skip the final end-to-end check of the loop.
    pub no_verify: bool,
}

/// Present in the outputs once a step of this run reported [`Outcome::Done`] (it changed
/// something); steps that should only run after a change (verify) look for it.
#[derive(Clone, Copy, Debug)]
pub struct ChangedThisRun;

/// What every step can see.
pub struct UpEnv<'a> {
    /// Resolved settings.
    pub settings: &'a Settings,
    /// The lab's state directory.
    pub state: &'a LabState,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Where warnings go (shown even with `--quiet`).
    pub warn: &'a (dyn Fn(&str) + Sync),
    /// Where notes for people go (what the run will and won't do; hidden by `--quiet`).
    pub note: &'a (dyn Fn(&str) + Sync),
    /// Waits.
    pub waits: Waits,
    /// Options.
    pub options: UpOptions,
}

/// Values steps hand to later steps, one per type (`Secrets`, `LabCa`, `provider::Cluster`, …).
#[derive(Default)]
pub struct Outputs {
    values: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Outputs {
    /// Store a value, replacing one of the same type.
    pub fn put<T: Any + Send + Sync>(&self, value: T) {
        self.values
            .lock()
            .unwrap()
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if a step stored one.
    pub fn try_get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let v = self.values.lock().unwrap().get(&TypeId::of::<T>())?.clone();
        v.downcast::<T>().ok()
    }
}

/// A step's view of the run.
pub struct StepCx<'a> {
    name: &'static str,
    env: &'a UpEnv<'a>,
    outputs: &'a Outputs,
    previous: Option<StepRecord>,
}

impl<'a> StepCx<'a> {
    /// Resolved settings.
    pub fn settings(&self) -> &Settings {
        self.env.settings
    }

    /// The lab state.
    pub fn state(&self) -> &LabState {
        self.env.state
    }

    /// Waits.
    pub fn waits(&self) -> &Waits {
        &self.env.waits
    }

    /// Options of this run.
    pub fn options(&self) -> &UpOptions {
        &self.env.options
    }

    /// Where progress goes, for library code that reports its own sub-steps (one line per
    /// component while deploying).
    pub fn progress(&self) -> &dyn Progress {
        self.env.progress
    }

    /// Say what the step is doing now (replaces the spinner's message, or prints a line).
    pub fn update(&self, detail: &str) {
        self.env.progress.update(self.name, detail);
    }

    /// Warn the user about something they should know (shown even with `--quiet`).
    pub fn warn(&self, message: &str) {
        (self.env.warn)(message);
    }

    /// Tell the user something worth reading that is not a warning.
    pub fn note(&self, message: &str) {
        (self.env.note)(message);
    }

    /// This step's record from an earlier run, if it finished then.
    pub fn previous(&self) -> Option<&StepRecord> {
        self.previous.as_ref()
    }

    /// Hand a value to later steps.
    pub fn put<T: Any + Send + Sync>(&self, value: T) {
        self.outputs.put(value);
    }

    /// Whether an earlier step of this run changed something.
    pub fn changed_this_run(&self) -> bool {
        self.outputs.try_get::<ChangedThisRun>().is_some()
    }

    /// A value an earlier step handed over, if one did (optional inputs).
    pub fn try_get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.outputs.try_get::<T>()
    }

    /// A value an earlier step (or the caller) handed over.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<Arc<T>> {
        self.outputs.try_get::<T>().ok_or_else(|| {
            Error::msg(format!(
                "step `{}` needs a `{}` that no earlier step provided",
                self.name,
                std::any::type_name::<T>()
            ))
            .hint("this is a bug in homelab's step order; please report it")
        })
    }
}

/// How a step ended in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// Changed something.
    Done,
    /// Already true.
    Skipped,
    /// Failed.
    Failed,
    /// Stopped because another step failed or the run was interrupted.
    Stopped,
    /// Never started.
    NotRun,
}

/// One step in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// Step name.
    pub name: String,
    /// Outcome.
    pub outcome: StepOutcome,
    /// Milliseconds it ran.
    pub elapsed_ms: u128,
    /// One line for people.
    pub detail: String,
}

/// The summary of a run.
#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    /// Lab name.
    pub lab: String,
    /// True when every step succeeded.
    pub ok: bool,
    /// Every step in pipeline order.
    pub steps: Vec<StepResult>,
    /// Milliseconds in total.
    pub elapsed_ms: u128,
}

/// Why a run stopped early.
#[derive(Debug)]
pub enum UpStop {
    /// A step failed.
    Failed {
        /// The step.
        step: String,
        /// Its error.
        error: Error,
    },
    /// Ctrl-C (or another interruption).
    Interrupted,
}

/// An ordered set of steps.
#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Step>>,
}

impl Pipeline {
    /// No steps.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Append a step.
    ///
    /// # Panics
    ///
    /// When its name is taken or it needs a step not added before it: both are bugs in how the
    /// pipeline is put together, and adding in order keeps it free of cycles.
    pub fn add(&mut self, step: impl Step + 'static) -> &mut Pipeline {
        let name = step.name();
        assert!(
            !self.steps.iter().any(|s| s.name() == name),
            "step `{name}` added twice"
        );
        for need in step.needs() {
            assert!(
                self.steps.iter().any(|s| s.name() == *need),
                "step `{name}` needs `{need}`, which is not added before it"
            );
        }
        self.steps.push(Box::new(step));
        self
    }

    /// Keep the steps up to and including `last`, in pipeline order; drop the rest.
    pub fn until(mut self, last: &str) -> Result<Pipeline> {
        let Some(pos) = self.steps.iter().position(|s| s.name() == last) else {
            return Err(
                Error::msg(format!("`up` has no step `{last}`")).hint(format!(
                    "the steps are {}",
                    self.names()
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        };
        // Needs always point backwards (`add` checks), so a prefix keeps every need.
        self.steps.truncate(pos + 1);
        Ok(self)
    }

    /// Step names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// Run every step, each as soon as its needs are done, until all finished, one failed, or
    /// `interrupt` completes. Progress goes to `env.progress`; the report covers every step.
    pub async fn run(
        &self,
        env: &UpEnv<'_>,
        outputs: &Outputs,
        interrupt: impl Future<Output = ()>,
    ) -> (UpReport, Result<(), UpStop>) {
        let started_all = Instant::now();
        let n = self.steps.len();
        let mut results: Vec<Option<StepResult>> = vec![None; n];
        let mut record = match UpRecord::load(env.state) {
            Ok(r) => r,
            Err(e) => {
                let report = self.report(env, results, started_all);
                return (
                    report,
                    Err(UpStop::Failed {
                        step: "state".into(),
                        error: e.into(),
                    }),
                );
            }
        };
        let cxs: Vec<StepCx<'_>> = self
            .steps
            .iter()
            .map(|s| StepCx {
                name: s.name(),
                env,
                outputs,
                previous: record.steps.get(s.name()).cloned(),
            })
            .collect();
        let mut started: Vec<Option<Instant>> = vec![None; n];
        let mut done: HashSet<&'static str> = HashSet::new();
        let mut running = FuturesUnordered::new();
        let mut stop: Option<UpStop> = None;
        let mut interrupt = std::pin::pin!(interrupt);

        loop {
            for (i, step) in self.steps.iter().enumerate() {
                if started[i].is_none() && step.needs().iter().all(|d| done.contains(d)) {
                    started[i] = Some(Instant::now());
                    env.progress.start(step.name(), &step.describe());
                    let cx = &cxs[i];
                    running.push(async move {
                        let t = Instant::now();
                        let r = step.run(cx).await;
                        (i, r, t.elapsed())
                    });
                }
            }
            if running.is_empty() {
                break;
            }
            let next = tokio::select! {
                next = running.next() => next,
                () = &mut interrupt => {
                    stop = Some(UpStop::Interrupted);
                    None
                }
            };
            let Some((i, result, elapsed)) = next else {
                break;
            };
            let name = self.steps[i].name();
            match result {
                Ok(report) => {
                    env.progress
                        .finish(name, report.outcome.clone(), elapsed, &report.detail);
                    if report.outcome == Outcome::Done {
                        outputs.put(ChangedThisRun);
                    }
                    let write = report.outcome == Outcome::Done || !record.steps.contains_key(name);
                    let recorded = if write {
                        record.steps.insert(
                            name.to_string(),
                            StepRecord {
                                completed_at: now_rfc3339(),
                                duration_ms: elapsed.as_millis() as u64,
                            },
                        );
                        env.state.write_json(UP_STATE_FILE, &record)
                    } else {
                        Ok(())
                    };
                    results[i] = Some(StepResult {
                        name: name.to_string(),
                        outcome: match report.outcome {
                            Outcome::Done => StepOutcome::Done,
                            _ => StepOutcome::Skipped,
                        },
                        elapsed_ms: elapsed.as_millis(),
                        detail: report.detail,
                    });
                    match recorded {
                        Ok(()) => {
                            done.insert(name);
                        }
                        Err(e) => {
                            stop = Some(UpStop::Failed {
                                step: name.to_string(),
                                error: Error::from(e).context(format!("record step `{name}`")),
                            });
                            break;
                        }
                    }
                }
                Err(error) => {
                    let first = error.message().lines().next().unwrap_or("").to_string();
                    env.progress.finish(name, Outcome::Failed, elapsed, &first);
                    results[i] = Some(StepResult {
                        name: name.to_string(),
                        outcome: StepOutcome::Failed,
                        elapsed_ms: elapsed.as_millis(),
                        detail: first,
                    });
                    // A failed step is not true any more, whatever an earlier run recorded.
                    if record.steps.remove(name).is_some() {
                        let _ = env.state.write_json(UP_STATE_FILE, &record);
                    }
                    stop = Some(UpStop::Failed {
                        step: name.to_string(),
                        error,
                    });
                    break;
                }
            }
        }
        drop(running);

        // Steps still running when the run stopped are cancelled (their futures dropped).
        let why = match &stop {
            Some(UpStop::Failed { step, .. }) => format!("stopped: `{step}` failed"),
            Some(UpStop::Interrupted) => "interrupted".to_string(),
            None => String::new(),
        };
        for (i, step) in self.steps.iter().enumerate() {
            if results[i].is_none()
                && let Some(t) = started[i]
            {
                let elapsed = t.elapsed();
                env.progress
                    .finish(step.name(), Outcome::Failed, elapsed, &why);
                results[i] = Some(StepResult {
                    name: step.name().to_string(),
                    outcome: StepOutcome::Stopped,
                    elapsed_ms: elapsed.as_millis(),
                    detail: why.clone(),
                });
            }
        }
        let report = self.report(env, results, started_all);
        match stop {
            None => (report, Ok(())),
            Some(s) => (report, Err(s)),
        }
    }

    fn report(
        &self,
        env: &UpEnv<'_>,
        results: Vec<Option<StepResult>>,
        started: Instant,
    ) -> UpReport {
        let steps: Vec<StepResult> = self
            .steps
            .iter()
            .zip(results)
            .map(|(s, r)| {
                r.unwrap_or_else(|| StepResult {
                    name: s.name().to_string(),
                    outcome: StepOutcome::NotRun,
                    elapsed_ms: 0,
                    detail: String::new(),
                })
            })
            .collect();
        UpReport {
            lab: env.settings.lab.clone(),
            ok: steps
                .iter()
                .all(|s| matches!(s.outcome, StepOutcome::Done | StepOutcome::Skipped)),
            steps,
            elapsed_ms: started.elapsed().as_millis(),
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

/// The steps of `homelab up` for these settings, in order.
///
/// Later issues add theirs at the end, e.g. `p.add(deploy::Deploy)` needing [`CLUSTER_READY`].
pub fn pipeline(settings: &Settings) -> Pipeline {
    let mut p = Pipeline::new();
    p.add(SecretsStep).add(CaStep);
    match settings.provider {
        ProviderKind::Multipass => {
            p.add(CloudInitStep);
            provider::multipass::add_steps(&mut p);
        }
        ProviderKind::Existing => provider::existing::add_steps(&mut p),
    }
    lab::add_steps(&mut p);
    p
}

/// `secrets`: generate the lab's secrets once (OS CSPRNG), reuse them afterwards.
pub struct SecretsStep;

impl Step for SecretsStep {
    fn name(&self) -> &'static str {
        "secrets"
    }
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }
    fn describe(&self) -> String {
        "generate or reuse the lab's secrets".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let before = cx.state().read(SECRETS_FILE)?;
            let mut secrets = cx.state().secrets()?;
            let after = cx.state().read(SECRETS_FILE)?;
            if let Some(pw) = &cx.settings().gitea_admin_password {
                secrets = secrets.with("gitea_admin_password", pw.clone());
            }
            let count = secrets.iter().count();
            cx.put(secrets);
            Ok(if before == after {
                StepReport::skipped(format!("{count} secrets reused"))
            } else if before.is_none() {
                StepReport::done(format!(
                    "{count} secrets generated into `{}`",
                    cx.state().path(SECRETS_FILE).display()
                ))
            } else {
                StepReport::done("missing secrets generated")
            })
        })
    }
}

/// `ca`: create the lab CA once, reuse it afterwards (so browser trust survives rebuilds).
pub struct CaStep;

impl Step for CaStep {
    fn name(&self) -> &'static str {
        "ca"
    }
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }
    fn describe(&self) -> String {
        "create or reuse the lab CA".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let state = cx.state();
            let existed = state.path(CA_CERT_FILE).exists() && state.path(CA_KEY_FILE).exists();
            let ca = tls::load_or_create(state, cx.settings().domain.as_deref())?;
            cx.put(ca);
            Ok(if existed {
                StepReport::skipped("lab CA reused")
            } else {
                StepReport::done(format!(
                    "lab CA created in `{}`",
                    state.path(CA_CERT_FILE).display()
                ))
            })
        })
    }
}

/// The cloud-init user-data every lab VM is launched with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInit(pub String);

/// File in the lab state holding the cloud-init the VMs were last launched with.
pub const CLOUD_INIT_FILE: &str = "cloud-init.yaml";

/// `cloud-init`: render the VMs' cloud-init (microk8s launch configuration, lab CA). Pure: it is
/// written to the lab state only when a VM is launched with it.
pub struct CloudInitStep;

impl Step for CloudInitStep {
    fn name(&self) -> &'static str {
        "cloud-init"
    }
    fn needs(&self) -> &'static [&'static str] {
        &["secrets", "ca"]
    }
    fn describe(&self) -> String {
        "render the VMs' cloud-init".into()
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        Box::pin(async move {
            let settings = cx.settings();
            let stack = cx.get::<Stack>()?;
            let secrets = cx.get::<Secrets>()?;
            let ca = cx.get::<LabCa>()?;
            let channel = settings.channel(&stack);
            // The node IP is not known before launch; hostnames that depend on it reach the
            // VM later, through the cluster.
            let domain = Domain::resolve(settings.domain.as_deref(), None);
            let templates = Templates::embedded()?;
            let upstream = BTreeMap::new();
            let text = render::render_cloud_init(
                &templates,
                &RenderInput::for_lab(settings, &stack, &domain, &secrets, &ca, None, &upstream),
            )?;
            let launched_with = cx.state().read(CLOUD_INIT_FILE)?;
            let report = match launched_with {
                Some(old) if old == text.as_bytes() => {
                    StepReport::skipped("unchanged since the VMs were launched")
                }
                Some(_) => StepReport::skipped(
                    "changed since the VMs were launched; new VMs get it (`--recreate` rebuilds the others)",
                ),
                None => StepReport::done(format!("microk8s {channel}, lab CA trusted")),
            };
            cx.put(CloudInit(text));
            Ok(report)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Silent;
    use crate::settings::Inputs;

    struct Fake {
        name: &'static str,
        needs: &'static [&'static str],
        fail: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Step for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn needs(&self) -> &'static [&'static str] {
            self.needs
        }
        fn describe(&self) -> String {
            format!("fake {}", self.name)
        }
        fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
            Box::pin(async move {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("start {}", self.name));
                // Yield so that steps without a dependency between them overlap.
                tokio::task::yield_now().await;
                self.log.lock().unwrap().push(format!("end {}", self.name));
                if self.fail {
                    return Err(Error::msg(format!("{} broke", self.name)));
                }
                if cx.previous().is_some() {
                    Ok(StepReport::skipped("was done"))
                } else {
                    Ok(StepReport::done("did it"))
                }
            })
        }
    }

    fn env_parts() -> (tempfile::TempDir, Settings, LabState) {
        let tmp = tempfile::tempdir().unwrap();
        let settings = Settings::resolve(&Inputs {
            cwd: tmp.path().into(),
            ..Inputs::default()
        })
        .unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        (tmp, settings, state)
    }

    fn fake(
        log: &Arc<Mutex<Vec<String>>>,
        name: &'static str,
        needs: &'static [&'static str],
        fail: bool,
    ) -> Fake {
        Fake {
            name,
            needs,
            fail,
            log: log.clone(),
        }
    }

    #[tokio::test]
    async fn independent_steps_overlap_and_records_are_written_once() {
        let (_tmp, settings, state) = env_parts();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = Pipeline::new();
        p.add(fake(&log, "a", &[], false))
            .add(fake(&log, "b", &[], false))
            .add(fake(&log, "c", &["a", "b"], false));
        let warn = |_: &str| {};
        let env = UpEnv {
            settings: &settings,
            state: &state,
            progress: &Silent,
            warn: &warn,
            note: &warn,
            waits: Waits::default(),
            options: UpOptions::default(),
        };
        let (report, result) = p
            .run(&env, &Outputs::default(), std::future::pending())
            .await;
        result.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log[..2], ["start a", "start b"], "a and b overlap: {log:?}");
        assert_eq!(log[4..], ["start c", "end c"], "c waits for both: {log:?}");
        assert!(report.ok);
        let first = std::fs::read(state.path(UP_STATE_FILE)).unwrap();
        assert_eq!(UpRecord::load(&state).unwrap().steps.len(), 3);

        let (report, result) = p
            .run(&env, &Outputs::default(), std::future::pending())
            .await;
        result.unwrap();
        assert!(
            report
                .steps
                .iter()
                .all(|s| s.outcome == StepOutcome::Skipped)
        );
        assert_eq!(
            std::fs::read(state.path(UP_STATE_FILE)).unwrap(),
            first,
            "a run that skips every step writes nothing"
        );
    }

    #[tokio::test]
    async fn a_failure_stops_the_run_and_forgets_the_failed_steps_record() {
        let (_tmp, settings, state) = env_parts();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut record = UpRecord::default();
        record.steps.insert(
            "b".into(),
            StepRecord {
                completed_at: "2026-01-01T00:00:00Z".into(),
                duration_ms: 1,
            },
        );
        state.write_json(UP_STATE_FILE, &record).unwrap();
        let mut p = Pipeline::new();
        p.add(fake(&log, "a", &[], false))
            .add(fake(&log, "b", &["a"], true))
            .add(fake(&log, "c", &["b"], false));
        let warn = |_: &str| {};
        let env = UpEnv {
            settings: &settings,
            state: &state,
            progress: &Silent,
            warn: &warn,
            note: &warn,
            waits: Waits::default(),
            options: UpOptions::default(),
        };
        let (report, result) = p
            .run(&env, &Outputs::default(), std::future::pending())
            .await;
        let Err(UpStop::Failed { step, error }) = result else {
            panic!("expected a failure");
        };
        assert_eq!((step.as_str(), error.message()), ("b", "b broke"));
        let outcomes: Vec<_> = report.steps.iter().map(|s| s.outcome).collect();
        assert_eq!(
            outcomes,
            [StepOutcome::Done, StepOutcome::Failed, StepOutcome::NotRun]
        );
        let names: Vec<_> = UpRecord::load(&state).unwrap().steps.into_keys().collect();
        assert_eq!(names, ["a"]);
    }

    #[tokio::test]
    async fn an_interrupt_stops_running_steps() {
        struct Forever;
        impl Step for Forever {
            fn name(&self) -> &'static str {
                "forever"
            }
            fn needs(&self) -> &'static [&'static str] {
                &[]
            }
            fn describe(&self) -> String {
                "never ends".into()
            }
            fn run<'a>(&'a self, _: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
                Box::pin(std::future::pending())
            }
        }
        let (_tmp, settings, state) = env_parts();
        let mut p = Pipeline::new();
        p.add(Forever);
        let warn = |_: &str| {};
        let env = UpEnv {
            settings: &settings,
            state: &state,
            progress: &Silent,
            warn: &warn,
            note: &warn,
            waits: Waits::default(),
            options: UpOptions::default(),
        };
        let (report, result) = p
            .run(&env, &Outputs::default(), std::future::ready(()))
            .await;
        assert!(matches!(result, Err(UpStop::Interrupted)));
        assert_eq!(report.steps[0].outcome, StepOutcome::Stopped);
        assert!(!state.path(UP_STATE_FILE).exists());
    }

    #[test]
    #[should_panic(expected = "step `c` needs `z`, which is not added before it")]
    fn needs_must_be_added_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        Pipeline::new().add(fake(&log, "c", &["z"], false));
    }

    #[test]
    fn waits_from_the_environment() {
        let w = Waits::from_env(Some("poll_ms=5, ready_ms=300")).unwrap();
        assert_eq!(w.poll, Duration::from_millis(5));
        assert_eq!(w.ready, Duration::from_millis(300));
        assert_eq!(w.pause(0), Duration::from_millis(5));
        assert_eq!(w.pause(1), Duration::from_millis(10));
        assert_eq!(w.pause(30), w.poll_max);
        let e = Waits::from_env(Some("ready=3")).unwrap_err();
        assert_eq!(e.message(), "invalid `HOMELAB_TEST_WAITS` entry `ready=3`");
    }
}

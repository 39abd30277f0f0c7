//! The step graph and its runner: steps added in order, each with one name, a description and
//! typed inputs, run each as soon as what it needs is done.
//!
//! Architecture invariant: a step's inputs are the outputs of steps added before it, named by
//! the handle ([`Out`]) adding that step returned; a step can only be added with handles that
//! exist, so an input nobody produces is a compile error, and the graph is free of cycles by
//! construction. What a step needs is exactly the steps its handles name: the runner waits for
//! those, and `homelab plan` lists them ([`Pipeline::planned`]).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use super::UpEnv;
use crate::edges::error::{Error, Result};
use crate::edges::output::{Outcome, Progress, Within};
use crate::edges::state::{LabState, StateError};
use crate::model::plan::PlannedStep;
use crate::model::settings::Settings;
use crate::model::stack::Stack;
use crate::provider::op::{OpCx, StepReport, Waits};

/// Where the runner records finished steps.
pub const UP_STATE_FILE: &str = "up.json";

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

/// What a step hands to the steps after it, in this run.
type Slot<T> = Mutex<Option<Arc<T>>>;

/// The output of one step of a [`Pipeline`]: what later steps name as an input.
pub struct Out<T> {
    name: &'static str,
    slot: Arc<Slot<T>>,
}

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        Out {
            name: self.name,
            slot: self.slot.clone(),
        }
    }
}

impl<T> Out<T> {
    /// The step that produces it.
    pub fn step(&self) -> &'static str {
        self.name
    }

    /// What the step produced in the run that `_ran` reports (`None` when it did not finish).
    pub fn value(&self, _ran: &UpReport) -> Option<Arc<T>> {
        self.slot.lock().unwrap().clone()
    }

    fn take(&self) -> Arc<T> {
        self.slot
            .lock()
            .unwrap()
            .clone()
            .expect("the runner starts a step only once the steps it needs finished")
    }
}

/// The inputs of a step: a tuple of [`Out`] references, `()` for none.
pub trait Needs {
    /// The values the step function gets (`Arc`s, in the tuple's order).
    type Values: Send + 'static;
    /// The steps they come from.
    fn steps(&self) -> Vec<&'static str>;
    /// Owned handles, kept by the step.
    fn fetcher(&self) -> Box<dyn Fn() -> Self::Values + Send + Sync>;
}

impl Needs for () {
    type Values = ();
    fn steps(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn fetcher(&self) -> Box<dyn Fn() + Send + Sync> {
        Box::new(|| ())
    }
}

macro_rules! needs_tuple {
    ($($t:ident $v:ident),+) => {
        impl<$($t: Send + Sync + 'static),+> Needs for ($(&Out<$t>,)+) {
            type Values = ($(Arc<$t>,)+);
            fn steps(&self) -> Vec<&'static str> {
                let ($($v,)+) = self;
                vec![$($v.name),+]
            }
            fn fetcher(&self) -> Box<dyn Fn() -> Self::Values + Send + Sync> {
                let ($($v,)+) = self;
                let ($($v,)+) = ($((*$v).clone(),)+);
                Box::new(move || ($($v.take(),)+))
            }
        }
    };
}

needs_tuple!(A a);
needs_tuple!(A a, B b);
needs_tuple!(A a, B b, C c);
needs_tuple!(A a, B b, C c, D d);

/// What a step function returns: its report and its output.
pub type Made<'a, T> = BoxFuture<'a, Result<(StepReport, T)>>;

/// One step with its types erased, as the runner walks it.
trait Node: Send + Sync {
    fn name(&self) -> &'static str;
    fn needs(&self) -> &[&'static str];
    fn describe(&self) -> &'static str;
    fn reset(&self);
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>>;
}

type StepFn<V, T> = dyn for<'a> Fn(&'a StepCx<'a>, V) -> Made<'a, T> + Send + Sync;

struct TypedNode<V, T> {
    name: &'static str,
    describe: &'static str,
    needs: Vec<&'static str>,
    fetch: Box<dyn Fn() -> V + Send + Sync>,
    slot: Arc<Slot<T>>,
    run: Box<StepFn<V, T>>,
}

impl<V: Send + 'static, T: Send + Sync + 'static> Node for TypedNode<V, T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn needs(&self) -> &[&'static str] {
        &self.needs
    }
    fn describe(&self) -> &'static str {
        self.describe
    }
    fn reset(&self) {
        *self.slot.lock().unwrap() = None;
    }
    fn run<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, Result<StepReport>> {
        let inputs = (self.fetch)();
        Box::pin(async move {
            let (report, output) = (self.run)(cx, inputs).await?;
            *self.slot.lock().unwrap() = Some(Arc::new(output));
            Ok(report)
        })
    }
}

/// A step's view of the run.
pub struct StepCx<'a> {
    name: &'static str,
    env: &'a UpEnv<'a>,
    /// What library code this step calls reports: sub-steps of this step.
    within: Within<'a>,
    changed: &'a AtomicBool,
    previous: Option<StepRecord>,
}

impl<'a> StepCx<'a> {
    /// Resolved settings.
    pub fn settings(&self) -> &Settings {
        self.env.settings
    }

    /// The stack the lab is built from.
    pub fn stack(&self) -> &Stack {
        self.env.stack
    }

    /// The Ubuntu image new VMs get.
    pub fn vm_image(&self) -> &str {
        self.env.vm_image
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
    pub fn options(&self) -> &super::UpOptions {
        &self.env.options
    }

    /// Where progress goes, for library code that reports its own sub-steps (a component
    /// while deploying): they are reported as sub-steps of this step.
    pub fn progress(&self) -> &dyn Progress {
        &self.within
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

    /// Whether an earlier step of this run changed something.
    pub fn changed_this_run(&self) -> bool {
        self.changed.load(Ordering::SeqCst)
    }
}

impl OpCx for StepCx<'_> {
    fn settings(&self) -> &Settings {
        StepCx::settings(self)
    }
    fn state(&self) -> &LabState {
        StepCx::state(self)
    }
    fn waits(&self) -> &Waits {
        StepCx::waits(self)
    }
    fn update(&self, detail: &str) {
        StepCx::update(self, detail)
    }
    fn warn(&self, message: &str) {
        StepCx::warn(self, message)
    }
    fn note(&self, message: &str) {
        StepCx::note(self, message)
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
    steps: Vec<Box<dyn Node>>,
}

impl Pipeline {
    /// No steps.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Append step `name` (`describe`: what it does, shown when it starts and by `plan`), which
    /// takes the outputs `needs` of earlier steps and produces a `T` for later ones.
    ///
    /// # Panics
    ///
    /// When its name is taken or a handle in `needs` comes from another pipeline: both are bugs
    /// in how the pipeline is put together.
    pub fn step<N, T, F>(
        &mut self,
        name: &'static str,
        describe: &'static str,
        needs: N,
        run: F,
    ) -> Out<T>
    where
        N: Needs,
        T: Send + Sync + 'static,
        F: for<'a> Fn(&'a StepCx<'a>, N::Values) -> Made<'a, T> + Send + Sync + 'static,
    {
        assert!(
            !self.steps.iter().any(|s| s.name() == name),
            "step `{name}` added twice"
        );
        let names = needs.steps();
        for need in &names {
            assert!(
                self.steps.iter().any(|s| s.name() == *need),
                "step `{name}` needs `{need}`, which is not added before it"
            );
        }
        let slot: Arc<Slot<T>> = Arc::new(Mutex::new(None));
        self.steps.push(Box::new(TypedNode {
            name,
            describe,
            needs: names,
            fetch: needs.fetcher(),
            slot: slot.clone(),
            run: Box::new(run),
        }));
        Out { name, slot }
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
        // Needs always point backwards (`step` checks), so a prefix keeps every need.
        self.steps.truncate(pos + 1);
        Ok(self)
    }

    /// Step names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// The steps in order, each with what it does and what it needs, as `plan` shows them.
    pub fn planned(&self) -> Vec<PlannedStep> {
        self.steps
            .iter()
            .map(|s| PlannedStep {
                name: s.name().to_string(),
                description: s.describe().to_string(),
                needs: s.needs().iter().map(|n| n.to_string()).collect(),
            })
            .collect()
    }

    /// Run every step, each as soon as its needs are done, until all finished, one failed, or
    /// `interrupt` completes. Progress goes to `env.progress`; the report covers every step.
    pub async fn run(
        &self,
        env: &UpEnv<'_>,
        interrupt: impl Future<Output = ()>,
    ) -> (UpReport, Result<(), UpStop>) {
        let started_all = Instant::now();
        let n = self.steps.len();
        for s in &self.steps {
            s.reset();
        }
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
        let changed = AtomicBool::new(false);
        let cxs: Vec<StepCx<'_>> = self
            .steps
            .iter()
            .map(|s| StepCx {
                name: s.name(),
                env,
                within: Within {
                    parent: s.name(),
                    inner: env.progress,
                },
                changed: &changed,
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
                    env.progress.start(step.name(), step.describe());
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
                        changed.store(true, Ordering::SeqCst);
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

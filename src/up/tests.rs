//! Unit tests of the step graph's runner, with fake steps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::edges::error::{Error, Result};
use crate::edges::output::Silent;
use crate::model::settings::Inputs;

type Log = Arc<Mutex<Vec<String>>>;

/// A fake step function: logs its start and end, yields in between (so that steps without a
/// dependency between them overlap), fails when told to.
fn fake(
    log: &Log,
    name: &'static str,
    fail: bool,
) -> impl for<'a> Fn(&'a StepCx<'a>) -> Made<'a, ()> + Send + Sync + 'static {
    let log = log.clone();
    move |cx: &StepCx<'_>| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push(format!("start {name}"));
            tokio::task::yield_now().await;
            log.lock().unwrap().push(format!("end {name}"));
            if fail {
                return Err(Error::msg(format!("{name} broke")));
            }
            let report = if cx.previous().is_some() {
                StepReport::skipped("was done")
            } else {
                StepReport::done("did it")
            };
            Ok((report, ()))
        })
    }
}

fn env_parts() -> (tempfile::TempDir, Settings, Stack, LabState) {
    let tmp = tempfile::tempdir().unwrap();
    let settings = Settings::resolve(&Inputs {
        cwd: tmp.path().into(),
        ..Inputs::default()
    })
    .unwrap();
    let stack = crate::model::stack::load("default", std::path::Path::new(".")).unwrap();
    let state = LabState::at("t", tmp.path().join("t"));
    (tmp, settings, stack, state)
}

fn env<'a>(
    settings: &'a Settings,
    stack: &'a Stack,
    state: &'a LabState,
    warn: &'a (dyn Fn(&str) + Sync),
) -> UpEnv<'a> {
    UpEnv {
        settings,
        stack,
        vm_image: "24.04",
        state,
        progress: &Silent,
        warn,
        note: warn,
        waits: Waits::default(),
        options: UpOptions::default(),
    }
}

/// `a` and `b` need nothing, `c` needs both.
fn diamond(log: &Log, fail_b: bool) -> Pipeline {
    let mut p = Pipeline::new();
    let a = p.step("a", "fake a", (), {
        let f = fake(log, "a", false);
        move |cx, ()| f(cx)
    });
    let b = p.step("b", "fake b", (&a,), {
        let f = fake(log, "b", fail_b);
        move |cx, _| f(cx)
    });
    p.step("c", "fake c", (&b,), {
        let f = fake(log, "c", false);
        move |cx, _| f(cx)
    });
    p
}

#[tokio::test]
async fn independent_steps_overlap_and_records_are_written_once() {
    let (_tmp, settings, stack, state) = env_parts();
    let log: Log = Arc::default();
    let mut p = Pipeline::new();
    let a = p.step("a", "fake a", (), {
        let f = fake(&log, "a", false);
        move |cx, ()| f(cx)
    });
    let b = p.step("b", "fake b", (), {
        let f = fake(&log, "b", false);
        move |cx, ()| f(cx)
    });
    p.step("c", "fake c", (&a, &b), {
        let f = fake(&log, "c", false);
        move |cx, _| f(cx)
    });
    let warn = |_: &str| {};
    let env = env(&settings, &stack, &state, &warn);
    let (report, result) = p.run(&env, std::future::pending()).await;
    result.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(log[..2], ["start a", "start b"], "a and b overlap: {log:?}");
    assert_eq!(log[4..], ["start c", "end c"], "c waits for both: {log:?}");
    assert!(report.ok);
    let first = std::fs::read(state.path(UP_STATE_FILE)).unwrap();
    assert_eq!(UpRecord::load(&state).unwrap().steps.len(), 3);

    let (report, result) = p.run(&env, std::future::pending()).await;
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
    let (_tmp, settings, stack, state) = env_parts();
    let log: Log = Arc::default();
    let mut record = UpRecord::default();
    record.steps.insert(
        "b".into(),
        StepRecord {
            completed_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 1,
        },
    );
    state.write_json(UP_STATE_FILE, &record).unwrap();
    let p = diamond(&log, true);
    let warn = |_: &str| {};
    let env = env(&settings, &stack, &state, &warn);
    let (report, result) = p.run(&env, std::future::pending()).await;
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
    let (_tmp, settings, stack, state) = env_parts();
    let mut p = Pipeline::new();
    p.step(
        "forever",
        "never ends",
        (),
        |_: &StepCx<'_>, ()| -> Made<'_, ()> { Box::pin(std::future::pending()) },
    );
    let warn = |_: &str| {};
    let env = env(&settings, &stack, &state, &warn);
    let (report, result) = p.run(&env, std::future::ready(())).await;
    assert!(matches!(result, Err(UpStop::Interrupted)));
    assert_eq!(report.steps[0].outcome, StepOutcome::Stopped);
    assert!(!state.path(UP_STATE_FILE).exists());
}

#[tokio::test]
async fn a_step_gets_the_outputs_of_the_steps_it_needs() {
    let (_tmp, settings, stack, state) = env_parts();
    let mut p = Pipeline::new();
    let two = p.step("two", "make 2", (), |_: &StepCx<'_>, ()| -> Made<'_, u32> {
        Box::pin(async { Ok((StepReport::done("2"), 2)) })
    });
    let word = p.step(
        "word",
        "make a word",
        (),
        |_: &StepCx<'_>, ()| -> Made<'_, String> {
            Box::pin(async { Ok((StepReport::done("x"), "x".to_string())) })
        },
    );
    let both = p.step(
        "both",
        "repeat the word",
        (&two, &word),
        |_: &StepCx<'_>, (n, w): (Arc<u32>, Arc<String>)| -> Made<'_, String> {
            Box::pin(async move { Ok((StepReport::done("xx"), w.repeat(*n as usize))) })
        },
    );
    assert_eq!(p.planned()[2].needs, ["two", "word"]);
    let warn = |_: &str| {};
    let env = env(&settings, &stack, &state, &warn);
    let (report, result) = p.run(&env, std::future::pending()).await;
    result.unwrap();
    assert_eq!(
        both.value(&report).as_deref().map(String::as_str),
        Some("xx")
    );
}

#[test]
#[should_panic(expected = "step `c` needs `z`, which is not added before it")]
fn needs_must_be_added_first() {
    let log: Log = Arc::default();
    // A handle is only had by adding its step, so only one of another pipeline can be wrong.
    let z = Pipeline::new().step("z", "fake z", (), {
        let f = fake(&log, "z", false);
        move |cx, ()| f(cx)
    });
    Pipeline::new().step("c", "fake c", (&z,), {
        let f = fake(&log, "c", false);
        move |cx, _| f(cx)
    });
}

#[test]
fn the_multipass_and_existing_graphs_keep_their_steps_and_needs() {
    let (_tmp, mut settings, _stack, _state) = env_parts();
    settings.provider = ProviderKind::Multipass;
    let needs = |p: &Pipeline| -> Vec<(String, Vec<String>)> {
        p.planned().into_iter().map(|s| (s.name, s.needs)).collect()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // `images` sits between `render` and `deploy`; it needs the VMs only where there are VMs.
    let lab = |images: Vec<String>| {
        [
            ("prepare", s(&[])),
            ("render", s(&["secrets", "ca", "prepare", "ready"])),
            ("images", images),
            ("deploy", s(&["render", "images"])),
            ("wire-gitea", s(&["deploy"])),
            ("wire-ci", s(&["wire-gitea"])),
            ("verify", s(&["wire-ci"])),
        ]
    };
    let mut want: Vec<(String, Vec<String>)> = [
        ("secrets", s(&[])),
        ("ca", s(&[])),
        ("cloud-init", s(&["secrets", "ca"])),
        ("vms", s(&["cloud-init"])),
        ("provisioned", s(&["vms"])),
        ("join", s(&["provisioned"])),
        ("kubeconfig", s(&["provisioned"])),
        ("engine-image", s(&["join"])),
        ("ready", s(&["join", "kubeconfig", "engine-image"])),
        ("node-names", s(&["provisioned"])),
    ]
    .into_iter()
    .chain(lab(s(&["join", "render"])))
    // The lab as proven, snapshotted for `homelab reset` (Multipass only).
    .chain([("snapshot", s(&["vms", "wire-ci", "verify"]))])
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(needs(&pipeline(&settings)), want);
    settings.provider = ProviderKind::Existing;
    want = [("secrets", s(&[])), ("ca", s(&[])), ("ready", s(&[]))]
        .into_iter()
        .chain(lab(s(&["render"])))
        .map(|(n, d)| (n.to_string(), d))
        .collect();
    assert_eq!(needs(&pipeline(&settings)), want);
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
    let _: Result<()> = Ok(());
}

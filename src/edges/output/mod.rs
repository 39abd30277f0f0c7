//! Where output goes: data (YAML, JSON, tables) to stdout, messages and progress to stderr, and
//! the one progress seam library code reports steps through.
//!
//! Architecture invariant: library modules never print. They report through [`Progress`]; the
//! CLI's [`Printer`] decides how that looks (spinner on a TTY, plain lines otherwise, JSON events
//! with `--output json`, nothing with `--quiet`).

pub mod human;
pub mod live;
pub mod steps;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

/// How the CLI talks.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// Data format.
    pub format: OutputFormat,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    /// Spinners allowed (TTY, not `--no-progress`, not verbose, not quiet).
    pub progress: bool,
    /// Colour allowed (TTY and no `NO_COLOR`).
    pub color: bool,
    /// stdout is a terminal too: with `progress`, what stderr drew live is on the same screen,
    /// so summaries on stdout do not repeat it.
    pub stdout_tty: bool,
}

impl Ui {
    /// Decide from flags and the environment.
    pub fn new(format: OutputFormat, verbose: u8, quiet: bool, no_progress: bool) -> Ui {
        let tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let verbosity = if quiet { -1 } else { verbose.min(3) as i8 };
        Ui {
            format,
            verbosity,
            progress: tty && !no_progress && verbosity == 0 && format == OutputFormat::Text,
            color: tty && !no_color,
            stdout_tty: std::io::stdout().is_terminal(),
        }
    }

    /// Whether each step was already shown on the screen as it ran and ended (live lines on a
    /// terminal that stdout shares): a summary then says each step once, by not listing them
    /// again (issue 16). Off a terminal, or with stdout in a file, summaries list every step.
    pub fn steps_shown_live(&self) -> bool {
        self.progress && self.stdout_tty
    }
}

/// Outcome of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Did work.
    Done,
    /// Was already true; nothing written.
    Skipped,
    /// Failed.
    Failed,
}

/// The progress seam: library code reports named steps; the CLI draws them.
pub trait Progress: Send + Sync {
    /// A step started.
    fn start(&self, step: &str, detail: &str);
    /// Something worth a line while a step runs (waiting on …, applying n objects).
    fn update(&self, step: &str, detail: &str);
    /// A step ended.
    fn finish(&self, step: &str, outcome: Outcome, elapsed: Duration, detail: &str);

    /// A sub-step of the running step `parent` started (a component while deploying, a call
    /// while wiring). Unless a reporter says otherwise, a step like any other.
    fn sub_start(&self, parent: &str, step: &str, detail: &str) {
        let _ = parent;
        self.start(step, detail)
    }
    /// A line about a sub-step of `parent`.
    fn sub_update(&self, parent: &str, step: &str, detail: &str) {
        let _ = parent;
        self.update(step, detail)
    }
    /// A sub-step of `parent` ended.
    fn sub_finish(
        &self,
        parent: &str,
        step: &str,
        outcome: Outcome,
        elapsed: Duration,
        detail: &str,
    ) {
        let _ = parent;
        self.finish(step, outcome, elapsed, detail)
    }
}

/// The progress seam as a step hands it to the library code it calls: what that code reports
/// as steps are sub-steps of `parent`.
pub struct Within<'a> {
    /// The step the work belongs to.
    pub parent: &'static str,
    /// Where progress goes.
    pub inner: &'a dyn Progress,
}

impl Progress for Within<'_> {
    fn start(&self, step: &str, detail: &str) {
        self.inner.sub_start(self.parent, step, detail)
    }
    fn update(&self, step: &str, detail: &str) {
        self.inner.sub_update(self.parent, step, detail)
    }
    fn finish(&self, step: &str, outcome: Outcome, elapsed: Duration, detail: &str) {
        self.inner
            .sub_finish(self.parent, step, outcome, elapsed, detail)
    }
}

/// Progress that goes nowhere (tests, `--quiet`).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: &str) {}
    fn update(&self, _: &str, _: &str) {}
    fn finish(&self, _: &str, _: Outcome, _: Duration, _: &str) {}
}

/// The CLI's printer and progress reporter.
pub struct Printer {
    ui: Ui,
    /// Live lines, when `ui.progress`.
    live: Option<live::Live>,
}

#[derive(Serialize)]
struct Event<'a> {
    event: &'a str,
    step: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u128>,
    detail: &'a str,
}

impl Printer {
    /// A printer for these UI settings.
    pub fn new(ui: Ui) -> Printer {
        Printer {
            ui,
            live: ui.progress.then(|| live::Live::new(ui.color)),
        }
    }

    /// The UI settings.
    pub fn ui(&self) -> Ui {
        self.ui
    }

    /// Write data to stdout (always, even with `--quiet`).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
    }

    /// Write a value as pretty JSON to stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        self.data(&serde_json::to_string_pretty(value).expect("output values serialize"));
    }

    /// A message for people on stderr, unless quiet.
    pub fn info(&self, msg: &str) {
        if self.ui.verbosity >= 0 {
            self.line(msg);
        }
    }

    /// A warning on stderr (shown even when quiet).
    pub fn warn(&self, msg: &str) {
        self.line(&format!("{} {msg}", self.paint("warning:", "33")));
    }

    fn line(&self, msg: &str) {
        // Messages are for people: files under the home directory read `~/…` (issue 16).
        let msg = human::tilde_in(msg);
        if let Some(live) = &self.live {
            live.println(&msg);
        } else {
            eprintln!("{msg}");
        }
    }

    /// A path printed alone on stdout as a command's result (`ca path`, `export logs`): `~/…` on
    /// a terminal, where a person reads it; whole in a pipe, where a script uses it.
    pub fn path(&self, path: &std::path::Path) -> String {
        if self.ui.stdout_tty {
            human::tilde(path)
        } else {
            path.display().to_string()
        }
    }

    /// Wrap text in an ANSI colour when colour is on.
    pub fn paint(&self, text: &str, code: &str) -> String {
        if self.ui.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn event(
        &self,
        event: &str,
        step: &str,
        outcome: Option<&Outcome>,
        elapsed: Option<Duration>,
        detail: &str,
    ) {
        let e = Event {
            event,
            step,
            outcome,
            elapsed_ms: elapsed.map(|d| d.as_millis()),
            detail,
        };
        eprintln!("{}", serde_json::to_string(&e).expect("events serialize"));
    }
}

/// `1.2s`, `2m03s` (see [`human::duration`]).
pub fn human_duration(d: Duration) -> String {
    human::duration(d)
}

impl Printer {
    /// A step's `start` or `update` note: a JSON event, the live line, or a plain line; nothing
    /// when quiet.
    fn note(&self, event: &str, step: &str, detail: &str, live: fn(&live::Live, &str, &str)) {
        if self.ui.format == OutputFormat::Json {
            return self.event(event, step, None, None, detail);
        }
        if self.ui.verbosity < 0 {
            return;
        }
        if let Some(l) = &self.live {
            live(l, step, detail);
        } else {
            eprintln!("{step:<16} {detail}");
        }
    }
}

impl Progress for Printer {
    fn start(&self, step: &str, detail: &str) {
        self.note("start", step, detail, live::Live::start);
    }

    fn update(&self, step: &str, detail: &str) {
        self.note("update", step, detail, live::Live::update);
    }

    fn finish(&self, step: &str, outcome: Outcome, elapsed: Duration, detail: &str) {
        if self.ui.format == OutputFormat::Json {
            return self.event("finish", step, Some(&outcome), Some(elapsed), detail);
        }
        if let Some(live) = &self.live {
            return live.finish(step, outcome, elapsed, detail);
        }
        let mark = match outcome {
            Outcome::Done => self.paint("✓", "32"),
            Outcome::Skipped => self.paint("=", "2"),
            Outcome::Failed => self.paint("✗", "31"),
        };
        let line = format!("{mark} {step:<16} {detail} ({})", human_duration(elapsed));
        if self.ui.verbosity >= 0 || outcome == Outcome::Failed {
            self.line(&line);
        }
    }

    // On a terminal, sub-steps are their parent's current action (one line per step); JSON
    // events and plain lines stay as they were: one event or line per sub-step.
    fn sub_start(&self, parent: &str, step: &str, detail: &str) {
        match &self.live {
            Some(live) if live.has(parent) => live.sub_update(parent, step, detail, true),
            _ => self.start(step, detail),
        }
    }

    fn sub_update(&self, parent: &str, step: &str, detail: &str) {
        match &self.live {
            Some(live) if live.has(parent) => live.sub_update(parent, step, detail, false),
            _ => self.update(step, detail),
        }
    }

    fn sub_finish(
        &self,
        parent: &str,
        step: &str,
        outcome: Outcome,
        elapsed: Duration,
        detail: &str,
    ) {
        match &self.live {
            Some(live) if live.has(parent) => live.sub_finish(parent, step, outcome, detail),
            _ => self.finish(step, outcome, elapsed, detail),
        }
    }
}

//! Where output goes: data (YAML, JSON, tables) to stdout, messages and progress to stderr, and
//! the one progress seam library code reports steps through.
//!
//! Architecture invariant: library modules never print. They report through [`Progress`]; the
//! CLI's [`Printer`] decides how that looks (spinner on a TTY, plain lines otherwise, JSON events
//! with `--output json`, nothing with `--quiet`).

pub mod steps;

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
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
        }
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
    spinners: Mutex<Vec<(String, indicatif::ProgressBar)>>,
    multi: indicatif::MultiProgress,
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
            spinners: Mutex::new(Vec::new()),
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
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
        if self.ui.progress {
            let _ = self.multi.println(msg);
        } else {
            eprintln!("{msg}");
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

/// `1.2s`, `2m03s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress for Printer {
    fn start(&self, step: &str, detail: &str) {
        if self.ui.format == OutputFormat::Json {
            return self.event("start", step, None, None, detail);
        }
        if self.ui.verbosity < 0 {
            return;
        }
        if self.ui.progress {
            let pb = self.multi.add(indicatif::ProgressBar::new_spinner());
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix:<16} {msg} {elapsed}")
                    .expect("valid template"),
            );
            pb.set_prefix(step.to_string());
            pb.set_message(detail.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            self.spinners.lock().unwrap().push((step.to_string(), pb));
        } else {
            eprintln!("{step:<16} {detail}");
        }
    }

    fn update(&self, step: &str, detail: &str) {
        if self.ui.format == OutputFormat::Json {
            return self.event("update", step, None, None, detail);
        }
        if self.ui.verbosity < 0 {
            return;
        }
        if self.ui.progress {
            if let Some((_, pb)) = self
                .spinners
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| s == step)
            {
                pb.set_message(detail.to_string());
            }
        } else {
            eprintln!("{step:<16} {detail}");
        }
    }

    fn finish(&self, step: &str, outcome: Outcome, elapsed: Duration, detail: &str) {
        if self.ui.format == OutputFormat::Json {
            return self.event("finish", step, Some(&outcome), Some(elapsed), detail);
        }
        let mark = match outcome {
            Outcome::Done => self.paint("✓", "32"),
            Outcome::Skipped => self.paint("=", "2"),
            Outcome::Failed => self.paint("✗", "31"),
        };
        let line = format!("{mark} {step:<16} {detail} ({})", human_duration(elapsed));
        let pb = {
            let mut spinners = self.spinners.lock().unwrap();
            spinners
                .iter()
                .position(|(s, _)| s == step)
                .map(|i| spinners.remove(i).1)
        };
        if let Some(pb) = pb {
            pb.finish_and_clear();
            self.multi.remove(&pb);
        }
        if self.ui.verbosity >= 0 || outcome == Outcome::Failed {
            self.line(&line);
        }
    }
}

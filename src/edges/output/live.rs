//! Steps drawn live on a terminal: one line per running step that updates in place (spinner,
//! name, elapsed time, what it is doing now — its latest sub-step), replaced when it ends by one
//! permanent line (`✓`/`–`/`✗`, name, duration, result), so each step shows exactly once.
//!
//! Place in the data flow: the [`super::Printer`]'s way of drawing [`super::Progress`] events
//! when stderr is a terminal (not with `--quiet`, `--verbose`, `--no-progress` or JSON).
//! Sub-steps (a component while deploying, a call while wiring Gitea) never get lines of their
//! own: they are the parent's current action, and only a failed one is kept, under its parent.
//!
//! Architecture invariant: the permanent lines come from the pure [`finished_lines`], never
//! wider than the terminal and wrapped between words only.

use std::sync::Mutex;
use std::time::Duration;

use super::Outcome;
use super::human;

/// Column of step names: the longest name of `up` (`engine-image`) fits.
const NAME: usize = 12;
/// Column of durations (`12m03s` fits).
const TOOK: usize = 6;

/// Marks: kind's ✓/✗ for done and failed; an en dash for "already so, nothing to do"
/// (skipped), which must not read as a change.
pub fn mark(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "✓",
        Outcome::Skipped => "–",
        Outcome::Failed => "✗",
    }
}

/// The permanent line(s) of a finished step: mark, name, duration, then the result wrapped to
/// `width` columns under itself. `paint` colours the mark.
pub fn finished_lines(
    mark: &str,
    step: &str,
    elapsed: Duration,
    detail: &str,
    width: usize,
) -> Vec<String> {
    let head = format!(
        "{mark} {step:<NAME$}  {:>TOOK$}  ",
        human::duration(elapsed)
    );
    let indent = 2 + NAME + 2 + TOOK + 2;
    human::wrap(&head, detail, indent, width)
}

/// The line of a failed sub-step, kept under its parent's line.
pub fn failed_sub_lines(step: &str, detail: &str, width: usize) -> Vec<String> {
    let head = format!("    ✗ {step}: ");
    human::wrap(&head, detail, 6, width)
}

struct Bar {
    step: String,
    pb: indicatif::ProgressBar,
    /// The step's own latest action.
    detail: String,
    /// Running sub-steps and their latest action, the most recent last.
    subs: Vec<(String, String)>,
    /// Sub-steps that ended well.
    subs_done: usize,
    /// Failed sub-steps, printed under the step's line when it ends.
    failed: Vec<(String, String)>,
}

impl Bar {
    /// What the live line says the step is doing now.
    fn message(&self) -> String {
        match self.subs.last() {
            None => self.detail.clone(),
            Some((sub, detail)) => {
                let mut m = format!("{sub}: {detail}");
                let others = self.subs.len() - 1;
                if others > 0 || self.subs_done > 0 {
                    m.push_str(&format!(
                        "  ({} done, {} running)",
                        self.subs_done,
                        others + 1
                    ));
                }
                m
            }
        }
    }

    fn refresh(&self) {
        self.pb.set_message(human::tilde_in(&self.message()));
    }
}

/// The live area on stderr.
pub struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<Vec<Bar>>,
    color: bool,
}

impl Live {
    /// A live area drawn on stderr.
    pub fn new(color: bool) -> Live {
        Live {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: Mutex::new(Vec::new()),
            color,
        }
    }

    fn width() -> usize {
        human::terminal_width().unwrap_or(80).max(40)
    }

    /// A line above the live area (notes, warnings, finished steps). Written while the live
    /// lines are lifted off, as a plain line: indicatif's own `println` pads every line to the
    /// terminal's width, which leaves trailing spaces in what people copy and breaks each line in
    /// two when the window gets narrower.
    pub fn println(&self, line: &str) {
        // A message wider than the terminal wraps between words, under itself (issue 16: nothing
        // wider than the terminal, never a break mid-word).
        let width = Self::width();
        // Line by line: a finished step arrives already wrapped under its own column, and
        // wrapping the joined text again collapsed that column's spaces.
        let lines: Vec<String> = line
            .lines()
            .flat_map(|l| {
                if human::width(l) <= width {
                    vec![l.to_string()]
                } else {
                    human::wrap("", l, 2, width)
                }
            })
            .collect();
        self.multi.suspend(|| {
            for l in &lines {
                eprintln!("{l}");
            }
        });
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A step started: a live line.
    pub fn start(&self, step: &str, detail: &str) {
        let pb = self.multi.add(indicatif::ProgressBar::new_spinner());
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{NAME}}}  {{took:>{TOOK}}}  {{wide_msg}}"
        ))
        .expect("valid template")
        .with_key(
            "took",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&human::duration(s.elapsed()));
            },
        );
        pb.set_style(style);
        pb.set_prefix(step.to_string());
        pb.set_message(human::tilde_in(detail));
        pb.enable_steady_tick(Duration::from_millis(120));
        self.bars.lock().unwrap().push(Bar {
            step: step.to_string(),
            pb,
            detail: detail.to_string(),
            subs: Vec::new(),
            subs_done: 0,
            failed: Vec::new(),
        });
    }

    /// A running step says what it does now.
    pub fn update(&self, step: &str, detail: &str) {
        let mut bars = self.bars.lock().unwrap();
        if let Some(bar) = bars.iter_mut().find(|b| b.step == step) {
            bar.detail = detail.to_string();
            bar.refresh();
        }
    }

    /// A step ended: its live line becomes one permanent line (and its failed sub-steps').
    pub fn finish(&self, step: &str, outcome: Outcome, elapsed: Duration, detail: &str) {
        let bar = {
            let mut bars = self.bars.lock().unwrap();
            bars.iter()
                .position(|b| b.step == step)
                .map(|i| bars.remove(i))
        };
        let failed = match &bar {
            Some(bar) => {
                bar.pb.finish_and_clear();
                self.multi.remove(&bar.pb);
                bar.failed.clone()
            }
            None => Vec::new(),
        };
        let code = match outcome {
            Outcome::Done => "32",
            Outcome::Skipped => "2",
            Outcome::Failed => "31",
        };
        let width = Self::width();
        let mut lines = finished_lines(
            &self.paint(mark(&outcome), code),
            step,
            elapsed,
            &human::tilde_in(detail),
            width,
        );
        for (sub, why) in &failed {
            lines.extend(failed_sub_lines(sub, &human::tilde_in(why), width));
        }
        self.println(&lines.join("\n"));
    }

    /// Whether `parent` has a live line (sub-steps of anything else are steps of their own).
    pub fn has(&self, parent: &str) -> bool {
        self.bars.lock().unwrap().iter().any(|b| b.step == parent)
    }

    /// A sub-step of `parent` started or says what it does now: the parent's current action.
    pub fn sub_update(&self, parent: &str, step: &str, detail: &str, started: bool) {
        let mut bars = self.bars.lock().unwrap();
        let Some(bar) = bars.iter_mut().find(|b| b.step == parent) else {
            return;
        };
        let known = bar.subs.iter().position(|(s, _)| s == step);
        match known {
            Some(i) => {
                bar.subs.remove(i);
                bar.subs.push((step.to_string(), detail.to_string()));
            }
            // A remark about something that is not running (what pruning kept): the
            // parent's action, not a running sub-step.
            None if !started => bar.detail = format!("{step}: {detail}"),
            None => bar.subs.push((step.to_string(), detail.to_string())),
        }
        bar.refresh();
    }

    /// A sub-step of `parent` ended: counted, or kept to show under the parent when it failed.
    pub fn sub_finish(&self, parent: &str, step: &str, outcome: Outcome, detail: &str) {
        let mut bars = self.bars.lock().unwrap();
        let Some(bar) = bars.iter_mut().find(|b| b.step == parent) else {
            return;
        };
        bar.subs.retain(|(s, _)| s != step);
        if outcome == Outcome::Failed {
            bar.failed.push((step.to_string(), detail.to_string()));
        } else {
            bar.subs_done += 1;
        }
        bar.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_step_is_one_aligned_line() {
        assert_eq!(
            finished_lines(
                "✓",
                "vms",
                Duration::from_millis(4200),
                "launched homelab-t-1",
                110
            ),
            ["✓ vms             4.2s  launched homelab-t-1"]
        );
        assert_eq!(
            finished_lines(
                "–",
                "engine-image",
                Duration::from_secs(75),
                "already loaded",
                110
            ),
            ["– engine-image   1m15s  already loaded"]
        );
    }

    #[test]
    fn a_long_result_wraps_under_itself_within_the_width() {
        let detail = "waiting for cloud-init to finish on homelab-t-1: status running, last stage modules-final";
        let lines = finished_lines("✗", "provisioned", Duration::from_secs(5), detail, 60);
        assert_eq!(
            lines,
            [
                "✗ provisioned     5.0s  waiting for cloud-init to finish on",
                "                        homelab-t-1: status running, last",
                "                        stage modules-final",
            ]
        );
        assert!(lines.iter().all(|l| human::width(l) <= 60));
    }

    #[test]
    fn the_live_message_names_the_latest_sub_step_and_counts_the_rest() {
        let bar = Bar {
            step: "deploy".into(),
            pb: indicatif::ProgressBar::hidden(),
            detail: "apply the stack".into(),
            subs: vec![
                ("cert-manager".into(), "applying 48 objects".into()),
                ("gitea".into(), "waiting on cert-manager".into()),
            ],
            subs_done: 3,
            failed: Vec::new(),
        };
        assert_eq!(
            bar.message(),
            "gitea: waiting on cert-manager  (3 done, 2 running)"
        );
        let alone = Bar {
            subs: vec![("gitea admin".into(), "homelab".into())],
            subs_done: 0,
            ..bar
        };
        assert_eq!(alone.message(), "gitea admin: homelab");
    }
}

//! Issue 16, what people see: `up` on a terminal (a pseudo-terminal of 110 columns) shows each
//! step once — live lines that end as one `✓`/`–`/`✗` line each — then one short closing block;
//! off a terminal the plain lines are as before; `status` reads in ages.
//!
//! The screen is rebuilt from the bytes `up` drew ([`common::terminal::Screen`]: cursor moves and
//! line clears applied), so what is asserted is what a person sees at the end, not the stream.
//! Steps that run at the same time (`secrets` and `ca`, `join` and `kubeconfig`) end in whatever
//! order they finish; the snapshots put those lines in pipeline order, and nothing else moves.

use crate::provision::Lab;
use crate::support::common;

use common::terminal::{COLUMNS, Screen, run_on_terminal, without_durations};

/// The steps `up --until ready` runs on Multipass, in pipeline order.
const STEPS: &[&str] = crate::provision::UNTIL_READY;

const SPINNER: &str = "⠁⠂⠄⡀⢀⠠⠐⠈⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

/// The step a line is about: its second word, when that is a step of `up`.
fn step_of(line: &str) -> Option<usize> {
    let mut words = line.split_whitespace();
    words.next()?;
    let name = words.next()?;
    STEPS.iter().position(|s| *s == name)
}

/// Lines about steps put in pipeline order (a stable sort, so a step's own lines keep their
/// order); every other line stays where it was.
fn in_pipeline_order(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let slots: Vec<usize> = (0..lines.len())
        .filter(|i| step_of(lines[*i]).is_some())
        .collect();
    let mut about: Vec<&str> = slots.iter().map(|i| lines[*i]).collect();
    about.sort_by_key(|l| step_of(l));
    let mut out = lines.clone();
    for (slot, line) in slots.into_iter().zip(about) {
        out[slot] = line;
    }
    out.join("\n")
}

/// `up` under a terminal: the final screen, checked for what a person must see.
fn up_on_terminal(lab: &Lab) -> String {
    let mut cmd = lab.ctx.command();
    cmd.args(["up", "--until", "ready"]);
    let (raw, code) = run_on_terminal(&cmd);
    let raw = lab.ctx.filter(&raw);
    assert_eq!(code, Some(0), "up failed on the terminal:\n{raw}");
    assert!(
        raw.contains("\x1b["),
        "on a terminal `up` draws live lines (cursor moves):\n{raw:?}"
    );
    let mut screen = Screen::new(COLUMNS);
    screen.feed(&raw);
    let text = screen.text();
    assert!(
        screen.overflows().is_empty(),
        "lines wider than {COLUMNS} columns: {:#?}",
        screen.overflows()
    );
    for step in STEPS {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(step))
            .collect();
        assert_eq!(lines.len(), 1, "`{step}` shows once:\n{text}");
        assert!(
            ["✓", "–"].contains(&lines[0].split_whitespace().next().unwrap()),
            "{}",
            lines[0]
        );
    }
    assert!(
        !text.lines().any(|l| l.starts_with(|c| SPINNER.contains(c))),
        "no live line is left behind:\n{text}"
    );
    text
}

#[test]
fn up_on_a_terminal_shows_each_step_once_then_a_short_closing_block() {
    let lab = Lab::new();
    let first = up_on_terminal(&lab);
    assert_eq!(
        first.matches("Lab `t` is up").count(),
        1,
        "one closing block:\n{first}"
    );
    insta::assert_snapshot!(
        "up-terminal-first",
        in_pipeline_order(&without_durations(&first))
    );

    let again = up_on_terminal(&lab);
    assert!(
        again.contains("Lab `t` was already up; nothing changed"),
        "{again}"
    );
    insta::assert_snapshot!(
        "up-terminal-again",
        in_pipeline_order(&without_durations(&again))
    );

    // `status` on a terminal: ages and durations, never a raw timestamp.
    let mut cmd = lab.ctx.command();
    cmd.arg("status");
    let (raw, code) = run_on_terminal(&cmd);
    assert_eq!(code, Some(0), "{raw}");
    let mut screen = Screen::new(COLUMNS);
    screen.feed(&lab.ctx.filter(&raw));
    let status = screen.text();
    assert!(
        !status.contains("T0") && !status.contains("Z\n"),
        "{status}"
    );
    insta::assert_snapshot!("status-terminal", without_ages(&without_durations(&status)));
}

#[test]
fn up_off_a_terminal_prints_plain_lines_and_the_full_summary() {
    let lab = Lab::new();
    let run = lab.homelab(&["up"]);
    run.success();
    // Every step starts and ends on a line of its own on stderr, no escape sequence anywhere.
    assert!(!run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'));
    for step in STEPS {
        let lines = |f: &dyn Fn(&str) -> bool| run.stderr.lines().filter(|l| f(l)).count();
        let started = lines(&|l| l.split_whitespace().next() == Some(step));
        let ended = lines(&|l| {
            let mut w = l.split_whitespace();
            ["✓", "=", "✗"].contains(&w.next().unwrap_or("")) && w.next() == Some(step)
        });
        assert!(started >= 1, "`{step}` starts:\n{}", run.stderr);
        assert_eq!(ended, 1, "`{step}` ends once:\n{}", run.stderr);
    }
    insta::assert_snapshot!(
        "up-plain-stderr",
        in_pipeline_order_plain(&without_durations(&run.stderr))
    );
    insta::assert_snapshot!("up-plain-stdout", without_durations(&run.stdout));
}

/// Plain lines: `step  what it does` when it starts, `✓ step  result (time)` when it ends; those
/// of steps running at the same time put in pipeline order (start before end).
fn in_pipeline_order_plain(text: &str) -> String {
    let key = |l: &str| {
        let first = l.split_whitespace().next().unwrap_or("");
        match STEPS.iter().position(|s| *s == first) {
            Some(i) => (i, 0),
            None => (step_of(l).unwrap_or(usize::MAX), 1),
        }
    };
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| key(l));
    lines.join("\n")
}

#[test]
fn status_text_reads_in_ages_and_json_keeps_full_timestamps() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    let text = lab.homelab(&["status"]);
    text.success();
    for line in text.stdout.lines().filter(|l| l.contains(" done ")) {
        assert!(line.contains(", took "), "{line}");
        assert!(!line.contains("20"), "no raw timestamp: {line}");
    }
    let json = lab.homelab(&["status", "--output", "json"]);
    json.success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let at = v["steps"][0]["completed_at"].as_str().unwrap();
    assert!(
        at.starts_with("20") && at.ends_with('Z') && at.contains('T'),
        "{at}"
    );
    assert_eq!(
        v["steps"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["completed_at", "done", "name"],
        "the JSON keeps its shape"
    );
}

/// `done just now` / `done 12 s ago` as `done [AGE]`: how long ago depends on how fast the
/// machine ran the test (the wording itself is unit-tested with a fixed "now").
fn without_ages(text: &str) -> String {
    text.lines()
        .map(|l| match (l.find(" done "), l.find(", took ")) {
            (Some(a), Some(b)) if a < b => {
                let age = &l[a + 6..b];
                assert!(
                    age == "just now" || age.ends_with(" s ago") || age.ends_with(" min ago"),
                    "{l}"
                );
                format!("{} done [AGE]{}", &l[..a], &l[b..])
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole `up` (every step, against the lab simulator) on a terminal: deploying's
/// components and wiring's calls are their step's current action, never lines of their own;
/// the closing block has the lab's URLs and what to do next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_up_on_a_terminal_ends_with_the_urls_and_what_to_do_next() {
    use crate::support::lab_sim::{LAB, Provider, Sim};
    let sim = Sim::start(Provider::Multipass, 4).await;
    let mut cmd = sim.ctx.command();
    cmd.arg("up");
    let (raw, code) = tokio::task::spawn_blocking(move || run_on_terminal(&cmd))
        .await
        .unwrap();
    let raw = sim.ctx.filter(&raw);
    assert_eq!(code, Some(0), "up failed on the terminal:\n{raw}");
    let mut screen = Screen::new(COLUMNS);
    screen.feed(&raw);
    let text = screen.text();
    assert!(screen.overflows().is_empty(), "{:#?}", screen.overflows());
    let plan = sim.homelab(&["plan", "--output", "json"]).await;
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let steps: Vec<&str> = plan["pipeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 18, "{steps:?}");
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(['✓', '–', '✗']))
        .collect();
    // One line per step of `up`, and nothing else drawn as a step: no component, no call.
    assert_eq!(marked.len(), steps.len(), "{text}");
    for step in &steps {
        let n = marked
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(step))
            .count();
        assert_eq!(n, 1, "`{step}` shows once:\n{text}");
    }
    // A result wrapped to the next line keeps the columns of its step's line (mark, name padded,
    // duration) and leaves no empty line behind.
    for line in &marked {
        let step = line.split_whitespace().nth(1).unwrap();
        assert!(
            line.contains(&format!(" {step}  ")),
            "columns kept: {line:?}\n{text}"
        );
    }
    let steps_area: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with(&format!("Lab `{LAB}` is up")))
        .collect();
    assert!(
        steps_area.iter().all(|l| !l.trim().is_empty()),
        "no empty line among the steps:\n{text}"
    );
    let closing: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("Lab `{LAB}` is up")))
        .collect();
    assert!(!closing.is_empty(), "{text}");
    for expected in [
        format!("https://gitea.{}", sim.domain),
        format!("https://nyan.{}", sim.domain),
        format!("https://lab.{}", sim.domain),
        "homelab trust --apply".to_string(),
        "homelab open".to_string(),
        "homelab credentials".to_string(),
    ] {
        assert!(
            closing.iter().any(|l| l.contains(&expected)),
            "the closing block names `{expected}`:\n{}",
            closing.join("\n")
        );
    }
    assert!(
        closing.len() <= 14,
        "a short closing block:\n{}",
        closing.join("\n")
    );
}

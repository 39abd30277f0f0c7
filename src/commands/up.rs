//! `homelab up`: build the plan, walk the `up` pipeline with progress, print the summary.

use super::{Ctx, ExitStatus};
use crate::cli::UpArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::{OutputFormat, human_duration};
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::host::doctor;
use crate::host::trust::Ledger;
use crate::model::plan::{self, Known};
use crate::model::render::Domain;
use crate::model::stack::Stack;
use crate::model::tls::CA_CERT_FILE;
use crate::provider::multipass::decide::preflight_demand;
use crate::provider::{self, Cluster, LabRecord};
use crate::services::wire::access::{AccessInput, LabAccess};
use crate::up::{self, StepOutcome, UpEnv, UpOptions, UpReport, UpStop, Waits};

pub(super) async fn run(ctx: &Ctx, args: &UpArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let stack = ctx.stack()?;
    let state = LabState::locate(&settings.lab)?;
    let record = LabRecord::load(&state)?;
    provider::check_provider_switch(settings, record.as_ref())?;
    let known = Known {
        ca: state.path(CA_CERT_FILE).exists(),
        secrets: state.path(SECRETS_FILE).exists(),
    };
    let domain = Domain::resolve(settings.domain.as_deref(), None);
    let mut graph = up::graph_for(settings);
    let the_plan = plan::plan(settings, &stack, &domain, known, graph.pipeline.planned());
    let provision = the_plan
        .steps
        .iter()
        .find_map(|s| match s {
            plan::Step::Provision(p) => Some(p.clone()),
            _ => None,
        })
        .expect("every plan provisions first");
    let waits = Waits::from_env(settings.test_waits.as_deref())?;
    if let Some(last) = &args.until {
        graph.pipeline = graph.pipeline.until(last)?;
    }
    // Before anything is built: a lab whose engine image cannot exist would fail minutes later
    // in an image pull (issue 12). Runs that stop before deploying need no image.
    if graph.pipeline.names().contains(&up::steps::DEPLOY) {
        the_plan.check()?;
    }
    // Then the computer, then the lock: bad input is named first (it reads nothing but the
    // lab state), and a computer that cannot run the lab is told so before anything is
    // written, not even the lab directory the lock lives in (issue 12).
    doctor::preflight(settings, preflight_demand(settings, record.as_ref()))?;
    let _lock = super::lock_lab(ctx, &state, "up")?;
    // Later commands without `--stack` read the lab with the stack it was built with.
    let ran = super::StackRecord::of(&settings.stack, &ctx.cwd);
    if state
        .read_json::<super::StackRecord>(super::STACK_RECORD_FILE)?
        .as_ref()
        != Some(&ran)
    {
        state.write_json(super::STACK_RECORD_FILE, &ran)?;
    }

    let warn = |m: &str| ctx.printer.warn(m);
    let note = |m: &str| ctx.printer.info(m);
    let env = UpEnv {
        settings,
        stack: &stack,
        vm_image: &provision.image,
        state: &state,
        progress: &ctx.printer,
        warn: &warn,
        note: &note,
        waits,
        options: UpOptions {
            recreate: args.recreate,
            no_verify: args.no_verify,
            no_snapshot: args.no_snapshot,
        },
    };
    let interrupt = async {
        // If no handler can be installed, never report an interruption.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let (report, result) = graph.pipeline.run(&env, interrupt).await;
    let cluster = graph.cluster(&report);
    let deployed = graph.deployed(&report);
    let access = match (&result, graph.domain(&report)) {
        (Ok(()), Some(domain)) => Some(lab_access(ctx, &state, &stack, &domain)?),
        _ => None,
    };
    let card = access.as_ref().map(LabAccess::summary_card);
    match ctx.printer.ui().format {
        // On a terminal each step was drawn once as it ran: one short closing block, not the
        // steps again (issue 16).
        OutputFormat::Text if ctx.printer.ui().steps_shown_live() => {
            let trusted = !Ledger::load(&state)?.entries.is_empty();
            let closing = Closing {
                lab: &report.lab,
                outcome: closing_outcome(&report, &result),
                urls: access
                    .as_ref()
                    .map(|a| {
                        let mut rows: Vec<(String, String)> = a
                            .urls
                            .iter()
                            .map(|u| (u.component.clone(), u.url.clone()))
                            .collect();
                        if !a.repos.is_empty() {
                            rows.push(("repos".into(), a.repos.join(", ")));
                        }
                        rows
                    })
                    .unwrap_or_default(),
                next: next_steps(
                    result.is_ok(),
                    access.is_some(),
                    trusted,
                    access.as_ref().is_some_and(|a| {
                        a.urls.iter().any(|u| u.component == super::open::LAB_PAGE)
                    }),
                    cluster.as_ref(),
                ),
            };
            ctx.printer.data(&closing.render());
        }
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({
            "report": report,
            "cluster": cluster.as_ref(),
            "deploy": deployed.as_ref(),
        })),
        OutputFormat::Text => {
            let mut text = summary(&report, cluster.as_ref(), &result);
            if let Some(d) = deployed.as_ref().filter(|d| d.writes() > 0) {
                text.push('\n');
                text.push_str(&d.table());
            }
            if let Some(card) = card {
                text.push('\n');
                text.push_str(&card);
            }
            ctx.printer.data(&text);
        }
    }
    match result {
        Ok(()) => Ok(ExitStatus::Success),
        Err(UpStop::Failed { error, .. }) => Err(error),
        Err(UpStop::Interrupted) => Err(Error::msg(format!(
            "`homelab up` for lab `{}` was interrupted",
            settings.lab
        ))
        .hint("run `homelab up` again: it looks at what exists and resumes where it stopped")),
    }
}

/// URLs of the lab and where to get the logins (never the secrets themselves).
fn lab_access(ctx: &Ctx, state: &LabState, stack: &Stack, domain: &Domain) -> Result<LabAccess> {
    let secrets = state.stored_secrets()?;
    let access = LabAccess::new(AccessInput {
        lab: &ctx.settings.lab,
        stack,
        domain: Some(domain),
        admin_user: &ctx.settings.gitea_admin_user,
        admin_password: secrets
            .as_ref()
            .map(|s| s.get("gitea_admin_password"))
            .unwrap_or_default(),
        token_stored: secrets
            .as_ref()
            .is_some_and(|s| !s.get("gitea_token").is_empty()),
        secrets_file: state.path(SECRETS_FILE),
        argocd_admin_password: secrets.as_ref().map(|s| s.get("argocd_admin_password")),
    });
    Ok(access)
}

fn summary(report: &UpReport, cluster: Option<&Cluster>, result: &Result<(), UpStop>) -> String {
    let total = human_duration(std::time::Duration::from_millis(report.elapsed_ms as u64));
    let changed = report.steps.iter().any(|s| s.outcome == StepOutcome::Done);
    let mut out = match result {
        Ok(()) if changed => format!("Lab `{}` is up ({total})\n", report.lab),
        Ok(()) => format!(
            "Lab `{}` was already up; nothing changed ({total})\n",
            report.lab
        ),
        Err(UpStop::Failed { step, .. }) => format!(
            "Lab `{}` stopped at step `{step}` after {total}\n",
            report.lab
        ),
        Err(UpStop::Interrupted) => {
            format!("Lab `{}`: interrupted after {total}\n", report.lab)
        }
    };
    let width = report.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &report.steps {
        let mark = match s.outcome {
            StepOutcome::Done => "✓",
            StepOutcome::Skipped => "=",
            StepOutcome::Failed => "✗",
            StepOutcome::Stopped => "!",
            StepOutcome::NotRun => "-",
        };
        let took = match s.outcome {
            StepOutcome::NotRun => "not run".to_string(),
            _ => human_duration(std::time::Duration::from_millis(s.elapsed_ms as u64)),
        };
        let line = format!("  {mark} {:<width$}  {took:>7}  {}", s.name, s.detail);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if result.is_ok()
        && let Some(c) = cluster
    {
        out.push_str(&format!(
            "\nkube context `{}`: `kubectl --context {} get nodes`\n",
            c.context, c.context
        ));
    }
    out
}

/// How a run ended, for the closing block.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ClosingOutcome {
    /// Every step succeeded; `changed` of `steps` steps wrote something.
    Up {
        changed: usize,
        steps: usize,
        total: String,
    },
    /// A step failed (or Ctrl-C): what never ran.
    Stopped {
        why: String,
        total: String,
        not_run: Vec<String>,
    },
}

fn closing_outcome(report: &UpReport, result: &Result<(), UpStop>) -> ClosingOutcome {
    let total = human_duration(std::time::Duration::from_millis(report.elapsed_ms as u64));
    match result {
        Ok(()) => ClosingOutcome::Up {
            changed: report
                .steps
                .iter()
                .filter(|s| s.outcome == StepOutcome::Done)
                .count(),
            steps: report.steps.len(),
            total,
        },
        Err(stop) => ClosingOutcome::Stopped {
            why: match stop {
                UpStop::Failed { step, .. } => format!("stopped at step `{step}`"),
                UpStop::Interrupted => "interrupted".into(),
            },
            total,
            not_run: report
                .steps
                .iter()
                .filter(|s| s.outcome == StepOutcome::NotRun)
                .map(|s| s.name.clone())
                .collect(),
        },
    }
}

/// What to do next: the commands a person runs after this `up`, with why.
fn next_steps(
    ok: bool,
    wired: bool,
    trusted: bool,
    lab_page: bool,
    cluster: Option<&Cluster>,
) -> Vec<(String, String)> {
    let mut next = Vec::new();
    if !ok {
        return next;
    }
    if wired && !trusted {
        next.push((
            "homelab trust --apply".into(),
            "make this computer's browsers and git trust the lab CA".into(),
        ));
    }
    if wired && lab_page {
        next.push((
            "homelab open".into(),
            "the lab page: every component, the syncs and the last verify".into(),
        ));
    }
    if wired {
        next.push((
            "homelab credentials".into(),
            "the logins, passwords and the API token".into(),
        ));
    }
    if let Some(c) = cluster {
        next.push((
            format!("kubectl --context {} get nodes", c.context),
            "the cluster".into(),
        ));
    }
    next
}

/// The short block `up` ends with on a terminal, where every step was already shown once:
/// what changed and how long it took, the lab's URLs, what to do next. Never a secret.
struct Closing<'a> {
    lab: &'a str,
    outcome: ClosingOutcome,
    /// (label, URL) rows: the stack's hostnames (every component with one), then the repos.
    urls: Vec<(String, String)>,
    /// (command, why) rows.
    next: Vec<(String, String)>,
}

impl Closing<'_> {
    fn render(&self) -> String {
        let mut out = match &self.outcome {
            ClosingOutcome::Up {
                changed: 0, total, ..
            } => format!(
                "Lab `{}` was already up; nothing changed ({total})\n",
                self.lab
            ),
            ClosingOutcome::Up {
                changed,
                steps,
                total,
            } => format!(
                "Lab `{}` is up ({total}): {changed} of {steps} steps changed something\n",
                self.lab
            ),
            ClosingOutcome::Stopped {
                why,
                total,
                not_run,
            } => {
                let mut s = format!("Lab `{}`: {why} after {total}\n", self.lab);
                if !not_run.is_empty() {
                    s.push_str(&format!("  not run: {}\n", not_run.join(", ")));
                }
                s
            }
        };
        let w = self.urls.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, url) in &self.urls {
            out.push_str(&format!("  {label:<w$}  {url}\n"));
        }
        if !self.next.is_empty() {
            out.push_str("Next\n");
            let w = self
                .next
                .iter()
                .map(|(c, _)| c.len())
                .filter(|l| *l <= 24)
                .max()
                .unwrap_or(0);
            for (cmd, why) in &self.next {
                if cmd.len() > w {
                    out.push_str(&format!("  {cmd}\n"));
                } else {
                    out.push_str(&format!("  {cmd:<w$}  {why}\n"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod closing_tests {
    use super::*;

    fn urls() -> Vec<(String, String)> {
        vec![
            ("gitea".into(), "https://gitea.10.0.0.5.sslip.io".into()),
            ("nyan-cat".into(), "https://nyan.10.0.0.5.sslip.io".into()),
            ("repos".into(), "lab/gitops, lab/nyan-cat".into()),
        ]
    }

    #[test]
    fn a_lab_that_came_up_says_what_changed_where_it_is_and_what_next() {
        let closing = Closing {
            lab: "t",
            outcome: ClosingOutcome::Up {
                changed: 12,
                steps: 16,
                total: "4m12s".into(),
            },
            urls: urls(),
            next: vec![
                ("homelab trust --apply".into(), "trust the CA".into()),
                ("homelab credentials".into(), "the logins".into()),
                (
                    "kubectl --context homelab-t get nodes".into(),
                    "the cluster".into(),
                ),
            ],
        };
        assert_eq!(
            closing.render(),
            "Lab `t` is up (4m12s): 12 of 16 steps changed something
  gitea     https://gitea.10.0.0.5.sslip.io
  nyan-cat  https://nyan.10.0.0.5.sslip.io
  repos     lab/gitops, lab/nyan-cat
Next
  homelab trust --apply  trust the CA
  homelab credentials    the logins
  kubectl --context homelab-t get nodes
"
        );
    }

    #[test]
    fn a_stopped_run_names_the_step_and_what_never_ran() {
        let closing = Closing {
            lab: "t",
            outcome: ClosingOutcome::Stopped {
                why: "stopped at step `deploy`".into(),
                total: "2m03s".into(),
                not_run: vec!["wire-gitea".into(), "wire-ci".into()],
            },
            urls: Vec::new(),
            next: next_steps(false, false, false, false, None),
        };
        assert_eq!(
            closing.render(),
            "Lab `t`: stopped at step `deploy` after 2m03s\n  not run: wire-gitea, wire-ci\n"
        );
    }

    #[test]
    fn trust_is_suggested_only_until_this_computer_trusts_the_lab() {
        let cmds = |trusted| {
            next_steps(true, true, trusted, false, None)
                .into_iter()
                .map(|(c, _)| c)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cmds(false),
            ["homelab trust --apply", "homelab credentials"]
        );
        assert_eq!(cmds(true), ["homelab credentials"]);
        let with_page: Vec<String> = next_steps(true, true, true, true, None)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(with_page, ["homelab open", "homelab credentials"]);
    }
}

//! `homelab up`: build the plan, walk the `up` pipeline with progress, print the summary.

use super::{Ctx, ExitStatus};
use crate::cli::UpArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::{OutputFormat, human_duration};
use crate::edges::state::{LabState, SECRETS_FILE};
use crate::host::doctor;
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
    let card = match (&result, graph.domain(&report)) {
        (Ok(()), Some(domain)) => Some(access_card(ctx, &state, &stack, &domain)?),
        _ => None,
    };
    match ctx.printer.ui().format {
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
fn access_card(ctx: &Ctx, state: &LabState, stack: &Stack, domain: &Domain) -> Result<String> {
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
    Ok(access.summary_card())
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

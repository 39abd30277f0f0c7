//! One file per command: each resolves what it needs, calls library services, and prints.
//!
//! Architecture invariant: commands hold no domain logic; they are the effectful shell around
//! the pure modules, and the only place output is produced.

use std::path::PathBuf;

use crate::cli::{CaCommand, Cli, Command, ConfigCommand, ExportCommand};
use crate::edges::error::Result;
use crate::edges::output::{Printer, human_duration};
use crate::edges::state::{LabLock, LabState, LockHolder};
use crate::model::settings::{Inputs, Origin, Settings};
use crate::model::stack::{self, Stack};
use crate::up::Waits;

mod apps;
mod ca;
mod completions;
mod config;
mod credentials;
mod diff;
mod doctor;
mod down;
mod export;
mod kube_target;
mod open;
mod plan;
mod prepare;
mod render;
mod reset;
mod status;
mod sync;
mod trust;
mod up;
mod verify;

/// How a command ended when it did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exit 0.
    Success,
    /// Exit 1 without an error message (e.g. `doctor` found a blocker and said so).
    Failure,
}

/// What every command gets.
pub struct Ctx {
    /// Resolved settings.
    pub settings: Settings,
    /// Where output goes.
    pub printer: Printer,
    /// The working directory (for relative paths).
    pub cwd: PathBuf,
}

impl Ctx {
    /// The stack the settings name, as it runs with their provider, with settings overrides
    /// applied.
    pub fn stack(&self) -> Result<Stack> {
        let mut stack =
            stack::load(&self.settings.stack, &self.cwd)?.for_provider(self.settings.provider);
        if let Some(image) = &self.settings.sync_image
            && let Some(c) = stack
                .components
                .iter_mut()
                .find(|c| c.name == "gitops-engine")
            && c.images.contains_key("engine")
        {
            stack::check_image_pinned(image).map_err(|why| {
                crate::edges::error::Error::msg(format!("`sync.image` `{image}` {why}"))
                    .hint("pin the sync engine image to a version tag or a digest")
            })?;
            c.images.insert("engine".into(), image.clone());
        }
        Ok(stack)
    }
}

/// Take the lab's command lock for `command` (issue 12): one command changes a lab at a time.
/// While another holds it, say which and wait (30 s, `lock_ms` in `HOMELAB_TEST_WAITS`), then
/// give up naming it. Every command that writes the lab state holds it until it returns.
fn lock_lab(ctx: &Ctx, state: &LabState, command: &str) -> Result<LabLock> {
    let wait = Waits::from_env(ctx.settings.test_waits.as_deref())?.lock;
    let tell = |holder: Option<&LockHolder>| {
        let who = holder.map_or("another homelab command".to_string(), |h| {
            format!(
                "`homelab {}` (process {}, since {})",
                h.command, h.pid, h.since
            )
        });
        ctx.printer.info(&format!(
            "lab `{}` is busy: {who} is changing it; waiting up to {} for it to finish",
            state.lab(),
            human_duration(wait)
        ));
    };
    Ok(state.lock(command, wait, &tell)?)
}

/// The lab state's record of the stack its last `up` ran (issue 15: `up --stack argocd`, then
/// `status`, `verify` or `credentials` without the flag must read that lab, not the default one).
pub const STACK_RECORD_FILE: &str = "stack.json";

/// What `up` records of its stack.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StackRecord {
    /// An embedded stack's name, or a stack file's absolute path.
    pub stack: String,
}

impl StackRecord {
    /// The record for `stack` as the settings name it: a file path made absolute against `cwd`,
    /// so a later command from another directory finds the same file.
    pub fn of(stack: &str, cwd: &std::path::Path) -> StackRecord {
        StackRecord {
            stack: if crate::model::stack::looks_like_path(stack) {
                cwd.join(stack).display().to_string()
            } else {
                stack.to_string()
            },
        }
    }
}

/// When no flag, variable or config file names the stack, the lab's own record does: the stack
/// its last `up` ran with.
fn remembered_stack(settings: &mut Settings, cwd: &std::path::Path) -> Result<()> {
    if settings.origins.get("stack") != Some(&Origin::Default) {
        return Ok(());
    }
    let Ok(state) = LabState::locate(&settings.lab) else {
        return Ok(());
    };
    if !state.exists() {
        return Ok(());
    }
    if let Some(record) = state.read_json::<StackRecord>(STACK_RECORD_FILE)? {
        settings.stack = StackRecord::of(&record.stack, cwd).stack;
        settings.origins.insert("stack", Origin::Lab);
    }
    Ok(())
}

/// Run the parsed command line.
pub async fn run(cli: Cli, printer: Printer) -> Result<ExitStatus> {
    if let Command::Completions { shell } = &cli.command {
        return completions::run(*shell);
    }
    let inputs = Inputs::from_process(cli.global.config.clone(), cli.layer());
    let mut settings = Settings::resolve(&inputs)?;
    remembered_stack(&mut settings, &inputs.cwd)?;
    let ctx = Ctx {
        settings,
        printer,
        cwd: inputs.cwd,
    };
    match &cli.command {
        // Whatever stopped `up` once it began, the next thing to do is the same: one archive to
        // learn why. Bad input and a failed preflight left nothing to look at, and their own
        // hints say what to do.
        Command::Up(args) => up::run(&ctx, args).await.map_err(|e| {
            let preflight = e
                .downcast_ref::<crate::host::doctor::PreflightError>()
                .is_some();
            let stored = LabState::locate(&ctx.settings.lab)
                .is_ok_and(|s| s.exists() && !s.holds_only_the_lock().unwrap_or(true));
            if preflight || !stored {
                e
            } else {
                e.hint(export::hint(&ctx.settings.lab))
            }
        }),
        Command::Down(args) => down::run(&ctx, args).await,
        Command::Status(_) => status::run(&ctx).await,
        Command::Reset(args) => reset::run(&ctx, args).await,
        Command::Render(args) => render::run(&ctx, args),
        Command::Plan(_) => plan::run(&ctx),
        Command::Prepare(a) => prepare::run(&ctx, a.serve.as_deref(), a.manifests_only).await,
        Command::Doctor(a) if a.offline => doctor::offline(&ctx),
        Command::Doctor(_) => doctor::run(&ctx),
        Command::Config(ConfigCommand::Show(_)) => config::show(&ctx),
        Command::Trust(args) => trust::trust(&ctx, args),
        Command::Untrust => trust::untrust(&ctx),
        Command::Ca(CaCommand::Path(args)) => ca::path(&ctx, args),
        Command::Ca(CaCommand::Show) => ca::show(&ctx),
        Command::Ca(CaCommand::Regenerate(_)) => ca::regenerate(&ctx),
        Command::Credentials(_) => credentials::run(&ctx),
        Command::Open(args) => open::run(&ctx, args),
        Command::Verify(_) => verify::run(&ctx).await,
        Command::Sync(args) => sync::run(&ctx, args).await,
        Command::Apps(args) => apps::run(&ctx, args).await,
        Command::Diff(args) => diff::run(&ctx, args).await,
        Command::Export(ExportCommand::Logs(args)) => export::logs(&ctx, args).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

//! `homelab open`: the lab page, `https://lab.<domain>`, in the default browser.
//!
//! Architecture invariant: a thin shell — the URL comes from the stack's `lab-page` hostname and
//! the lab's domain (as `homelab credentials` finds it); the browser is started through
//! [`crate::edges::process::Cmd`] with the OS's own opener. The URL is printed first, always, so
//! a missing opener or a headless machine still leaves the person with the address.

use super::{Ctx, ExitStatus};
use crate::cli::OpenArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::edges::process::Cmd;
use crate::edges::state::LabState;
use crate::edges::tools::Os;
use crate::model::render::{self, Domain};
use crate::services::gitea::decide::{GITEA_RECORD_FILE, GiteaRecord};
use crate::services::wire::access::domain_from_gitea_url;

/// The stack component that serves the page.
pub const LAB_PAGE: &str = "lab-page";

/// The program (and its leading arguments) that opens a URL in the default browser on `os`.
pub fn opener(os: Os) -> Option<(&'static str, &'static [&'static str])> {
    match os {
        Os::Linux | Os::Other => Some(("xdg-open", &[])),
        Os::Macos => Some(("open", &[])),
        // `start`'s first quoted argument is the window title: an empty one, so the URL is not
        // taken for it.
        Os::Windows => Some(("cmd", &["/C", "start", ""])),
    }
}

pub(super) fn run(ctx: &Ctx, args: &OpenArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let stack = ctx.stack()?;
    if stack.component(LAB_PAGE).is_none() {
        return Err(Error::msg(format!(
            "the stack `{}` has no lab page (component `{LAB_PAGE}`)",
            stack.name
        ))
        .hint("the lab page is served by homelab's own sync engine, in the `default` stack"));
    }
    let domain = match &settings.domain {
        Some(d) => Domain::resolve(Some(d), None),
        None => {
            let state = LabState::locate(&settings.lab)?;
            let record: Option<GiteaRecord> = state.read_json(GITEA_RECORD_FILE)?;
            record
                .as_ref()
                .and_then(|r| domain_from_gitea_url(&stack, &r.url))
                .ok_or_else(|| {
                    Error::msg(format!(
                        "the address of lab `{}` is not known yet",
                        settings.lab
                    ))
                    .hint("run `homelab up` first; `--lab NAME` picks another lab, `--domain` names its domain")
                })?
        }
    };
    let host = render::hosts(&stack, &domain)
        .remove(LAB_PAGE)
        .expect("the component has a hostname");
    let url = format!("https://{host}");
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&serde_json::json!({"url": url})),
        OutputFormat::Text => ctx.printer.data(&format!("{url}\n")),
    }
    if args.print {
        return Ok(ExitStatus::Success);
    }
    let (program, lead) = opener(Os::current()).expect("every OS has an opener");
    Cmd::new(program, "open the lab page in the default browser")
        .args(lead)
        .arg(&url)
        .run()
        .map_err(|e| {
            let hint = if matches!(e, crate::edges::process::ProcessError::Spawn { .. }) {
                format!("`{program}` could not be started: open {url} by hand, or use `homelab open --print`")
            } else {
                format!("open {url} by hand; `homelab open --print` only prints it")
            };
            Error::from(e).hint(hint)
        })?;
    Ok(ExitStatus::Success)
}

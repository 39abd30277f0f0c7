//! `homelab completions <shell>`: print a completion script.

use clap::CommandFactory;

use super::ExitStatus;
use crate::cli::Cli;
use crate::edges::error::Result;

pub(super) fn run(shell: clap_complete::Shell) -> Result<ExitStatus> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "homelab", &mut std::io::stdout());
    Ok(ExitStatus::Success)
}

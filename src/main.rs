//! The `homelab` binary: parse, set up logging, run, print errors with hints.

use std::process::ExitCode;

use clap::Parser;

use homelab::cli::Cli;
use homelab::commands::{self, ExitStatus};
use homelab::edges::output::{Printer, Ui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(
        cli.global.output,
        cli.global.verbose,
        cli.global.quiet,
        cli.global.no_progress,
    );
    // The long-running sync engine logs each reconcile; in the cluster as JSON lines.
    let (engine_logs, json_logs) = match &cli.command {
        homelab::cli::Command::Sync(a) => (a.watch || a.in_cluster, a.in_cluster),
        _ => (false, false),
    };
    init_logging(
        ui.verbosity,
        ui.color,
        LogStyle {
            engine_logs,
            json_logs,
        },
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts");
    let printer = Printer::new(ui);
    match runtime.block_on(commands::run(cli, printer)) {
        Ok(ExitStatus::Success) => ExitCode::SUCCESS,
        Ok(ExitStatus::Failure) => ExitCode::from(1),
        Err(err) => {
            // For people: files under the home directory read `~/…` (issue 16).
            let text = homelab::edges::output::human::tilde_in(&err.render());
            if ui.color {
                let text = text
                    .replacen("error:", "\x1b[1;31merror:\x1b[0m", 1)
                    .replace("\nhint:", "\n\x1b[1;36mhint:\x1b[0m");
                eprintln!("{text}");
            } else {
                eprintln!("{text}");
            }
            ExitCode::from(1)
        }
    }
}

/// How logs look beyond the verbosity.
struct LogStyle {
    /// INFO by default (a long-running engine reports what it does).
    engine_logs: bool,
    /// One JSON object per line (the in-cluster engine).
    json_logs: bool,
}

fn init_logging(verbosity: i8, color: bool, style: LogStyle) {
    let level = match verbosity {
        i8::MIN..=0 if style.engine_logs && verbosity == 0 => tracing::Level::INFO,
        i8::MIN..=0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    if style.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_current_span(false)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(verbosity >= 2)
        .without_time()
        .init();
}

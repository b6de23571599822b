//! Entry point: parse the command line, run the command, map the outcome to messages and an exit code.

use std::process::ExitCode;

use clap::Parser;
use destination_redis::cli::{Cli, Command};
use destination_redis::config::Settings;
use destination_redis::error::Failure;
use destination_redis::protocol::output::{self, Level, Output};
use destination_redis::{check, load, spec, write};

fn main() -> ExitCode {
    // One crypto provider for rustls, chosen explicitly (redis-rs picks none).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Command::Load(args) = &cli.command {
        return run_load(args);
    }
    let out = Output::start(std::io::stdout());
    let code = match cli.command {
        Command::Spec => {
            out.send(output::spec_line(spec::spec()));
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            let result = Settings::from_file(&config)
                .map_err(Failure::from)
                .and_then(|s| {
                    log_ignored_fields(&s, &out);
                    check::run(&s)
                });
            match &result {
                Ok(report) => {
                    report.facts.iter().for_each(|f| out.log(Level::Info, f));
                    report.warnings.iter().for_each(|w| out.log(Level::Warn, w));
                }
                Err(f) => out.log(
                    Level::Warn,
                    format!("Check failed: {} ({})", f.message, f.internal),
                ),
            }
            out.send(output::connection_status_line(&result.map(|_| ())));
            ExitCode::SUCCESS
        }
        Command::Load(_) => ExitCode::SUCCESS,
        Command::Write { config, catalog } => {
            let result = Settings::from_file(&config)
                .map_err(Failure::from)
                .and_then(|s| {
                    log_ignored_fields(&s, &out);
                    write::run(&s, &catalog, std::io::stdin(), &out)
                });
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(f) => {
                    out.send(output::trace_error_line(&f));
                    ExitCode::FAILURE
                }
            }
        }
    };
    if out.finish().is_err() {
        return ExitCode::FAILURE;
    }
    code
}

/// `load`: messages on stderr, plain; exit 1 on failure, 2 for `--status` of an unknown load.
fn run_load(args: &destination_redis::cli::LoadArgs) -> ExitCode {
    let log = Output::plain(std::io::stderr(), args.quiet);
    let result = load::run(args, &log);
    let code = match result {
        Ok(load::Outcome::Done) => ExitCode::SUCCESS,
        Ok(load::Outcome::UnknownLoad) => ExitCode::from(2),
        Err(f) => {
            log.send(format!("error: {}", f.message));
            ExitCode::FAILURE
        }
    };
    let _ = log.finish();
    code
}

fn log_ignored_fields(settings: &Settings, out: &Output) {
    for w in &settings.warnings {
        out.log(Level::Warn, w);
    }
    if !settings.ignored_fields.is_empty() {
        out.log(
            Level::Warn,
            format!(
                "Ignoring config fields this version does not use: {}.",
                settings.ignored_fields.join(", ")
            ),
        );
    }
}

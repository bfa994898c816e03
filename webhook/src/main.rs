//! `gatehouse-webhook` entry point: parse the command line, check it, run.

use std::process::ExitCode;

use clap::Parser as _;
use gatehouse_webhook::config::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::DeadLetters { action }) = &args.command {
        let client = match args.redis_client() {
            Ok(client) => client,
            Err(e) => {
                eprintln!("gatehouse-webhook: {e}");
                return ExitCode::from(2);
            }
        };
        return match tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(gatehouse_webhook::dead_letters_command(client, action)))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse-webhook: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = args.validate() {
        eprintln!("gatehouse-webhook: {e}");
        return ExitCode::from(2);
    }
    // Fail at start, in one line, on unreadable secrets or a bad Redis URL.
    if let Err(e) = args.redis_client() {
        eprintln!("gatehouse-webhook: {e}");
        return ExitCode::from(2);
    }
    if args.role.receives()
        && let Err(e) = gatehouse_webhook::secrets::load(&args.webhook_secret_files)
    {
        eprintln!("gatehouse-webhook: {e}");
        return ExitCode::from(2);
    }
    gatehouse_webhook::init_logging(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse-webhook: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gatehouse_webhook::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "gatehouse-webhook stopped");
            eprintln!("gatehouse-webhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `gatehouse-operator`: parses the command line and runs the operator (see [`gatehouse_operator::run`]).

use clap::{Parser, Subcommand};

/// Gatehouse operator: turns ScanRequests into scanner Jobs and GitHub Check Runs.
#[derive(Parser, Debug)]
#[command(
    name = "gatehouse-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Option<gatehouse_operator::run::RunArgs>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the default).
    Run(gatehouse_operator::run::RunArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let json = std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let ((Some(Command::Run(args)), _) | (None, Some(args))) = (cli.command, cli.run) else {
        eprintln!("gatehouse-operator: nothing to do (see --help)");
        std::process::exit(2);
    };
    if let Err(error) = gatehouse_operator::run::run(args).await {
        eprintln!("gatehouse-operator: {error}");
        std::process::exit(1);
    }
}

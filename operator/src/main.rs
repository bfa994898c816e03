//! `gatehouse-operator`: parses the command line and runs the operator (see
//! [`gatehouse_operator::run`]) or one of its offline tools (see [`gatehouse_operator::offline`]).

use clap::{Parser, Subcommand};
use gatehouse_operator::offline;

/// Gatehouse operator: turns ScanRequests into scanner Jobs and GitHub Check Runs.
#[derive(Parser, Debug)]
#[command(name = "gatehouse-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The command line with `run` supplied when no subcommand is named (`gatehouse-operator
/// --github-app-id ...` runs the operator). Done on the words, not with a flattened optional
/// `run`: with settings in the environment, clap would see those top-level flags as given and
/// refuse an explicit `run`.
fn arguments() -> Vec<std::ffi::OsString> {
    let mut words: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = words.get(1).and_then(|w| w.to_str()).map(str::to_owned);
    let names_one = first.as_deref().is_some_and(|w| {
        matches!(
            w,
            "run" | "check-policy" | "preview" | "help" | "-h" | "--help" | "-V" | "--version"
        )
    });
    // No words at all is `run` too: a Deployment may give only environment variables.
    if !names_one {
        words.insert(1.min(words.len()), "run".into());
    }
    words
}

// Parsed once at start: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the default).
    Run(gatehouse_operator::run::RunArgs),
    /// Validate ScanPolicy YAML files offline (schema, CEL rules, globs, image digests): one line
    /// per problem; exit 1 on problems, 2 on unreadable files or invalid YAML.
    CheckPolicy(offline::CheckPolicyArgs),
    /// Print, as YAML, the per-scan Secret (values redacted) and the Jobs the operator would
    /// create for a ScanRequest under a ScanPolicy, without a cluster or GitHub.
    Preview(offline::PreviewArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse_from(arguments());
    let args = match cli.command {
        Command::CheckPolicy(args) => std::process::exit(offline::check_policy_command(&args)),
        Command::Preview(args) => std::process::exit(offline::preview_command(&args)),
        Command::Run(args) => args,
    };
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
    if let Err(error) = gatehouse_operator::run::run(args).await {
        eprintln!("gatehouse-operator: {error}");
        std::process::exit(1);
    }
}

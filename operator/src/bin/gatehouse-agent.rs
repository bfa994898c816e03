//! `gatehouse-agent`: runs inside scan pods (see [`gatehouse_operator::agent`]).

use clap::Parser;

fn main() {
    let cli = gatehouse_operator::agent::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse-agent: failed to start: {error}");
            std::process::exit(gatehouse_operator::agent::EXIT_TRANSIENT);
        }
    };
    let status = runtime.block_on(gatehouse_operator::agent::main(cli));
    std::process::exit(status);
}

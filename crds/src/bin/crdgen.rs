//! Prints the files generated from the Gatehouse API types:
//!
//! - no argument: the CRDs as YAML, committed in `charts/gatehouse/crds/gatehouse.dev.yaml`;
//!   regenerate it with
//!   `cargo run -p gatehouse-crds --bin crdgen > charts/gatehouse/crds/gatehouse.dev.yaml`;
//! - `policy-reference`: the ScanPolicy field reference, committed in
//!   `docs/policy-reference.md`; regenerate it with
//!   `cargo run -p gatehouse-crds --bin crdgen -- policy-reference > docs/policy-reference.md`.

use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [policy-reference]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => match gatehouse_crds::crd_yaml() {
            Ok(yaml) => yaml,
            Err(e) => {
                eprintln!("crdgen: failed to render the CRDs as YAML: {e}");
                return ExitCode::FAILURE;
            }
        },
        ["policy-reference"] => gatehouse_crds::reference::policy_reference(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::io::stdout().write_all(text.as_bytes()) {
        eprintln!("crdgen: failed to write: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

//! Prints the Gatehouse CRDs as YAML. The committed copy lives in
//! `charts/gatehouse/crds/gatehouse.dev.yaml`; regenerate it with
//! `cargo run -p gatehouse-crds --bin crdgen > charts/gatehouse/crds/gatehouse.dev.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match gatehouse_crds::crd_yaml() {
        Ok(yaml) => {
            if let Err(e) = std::io::stdout().write_all(yaml.as_bytes()) {
                eprintln!("crdgen: failed to write the CRDs: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: failed to render the CRDs as YAML: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Runs the Kubernetes API emulator with the sample resources loaded, so `kubectl` can be pointed
//! at it by hand: `cargo run -p gatehouse-tests --example kube-emulator -- [seconds]`, then
//! `kubectl --kubeconfig target/emulator.kubeconfig get gatehouse -A`. Stops after `seconds`
//! (default 600) or Ctrl-C.

use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::KubeEmulator;
use kube::api::{Api, Patch, PatchParams, PostParams};

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> anyhow::Result<T> {
    let path = format!("{}/../deploy/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(600), |s| s.parse())?;
    let k8s = KubeEmulator::start().await?;
    let client = k8s.client();
    let ns = "gatehouse-scans";
    let policies: Api<ScanPolicy> = Api::namespaced(client.clone(), ns);
    for file in ["scanpolicy-kics.yaml", "scanpolicy-kics-blackduck.yaml"] {
        policies
            .create(&PostParams::default(), &sample(file)?)
            .await?;
    }
    let requests: Api<ScanRequest> = Api::namespaced(client, ns);
    let created = requests
        .create(&PostParams::default(), &sample("scanrequest.yaml")?)
        .await?;
    let status = serde_json::json!({"status": {"phase": "Running", "commit": "ec26c3e",
        "findings": {"critical": 0, "high": 2, "medium": 5, "low": 1, "info": 0}}});
    requests
        .patch_status(
            created.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await?;
    let kubeconfig = format!(
        "{}/../target/emulator.kubeconfig",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&kubeconfig, k8s.kubeconfig())?;
    println!(
        "emulator at {} for {seconds}s; kubeconfig: {kubeconfig}",
        k8s.url()
    );
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

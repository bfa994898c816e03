//! Runs the Kubernetes API emulator with the sample resources loaded, so `kubectl` (or the
//! Gatehouse binaries) can be pointed at it by hand:
//! `cargo run -p gatehouse-tests --example kube-emulator -- [seconds] [--policies-only]
//! [--kubeconfig PATH] [--print-writes]`, then
//! `kubectl --kubeconfig target/emulator.kubeconfig get gatehouse -A`. Stops after `seconds`
//! (default 600) or Ctrl-C.
//!
//! By default it loads both sample ScanPolicies and a sample ScanRequest with a made-up status
//! (to look at). `--policies-only` loads only the KICS sample policy (`acme-iac`, which covers
//! the sample deliveries' repository) and no ScanRequest, for running the webhook and operator
//! against it (`scripts/dev`). `--kubeconfig` writes the kubeconfig there instead of
//! `target/emulator.kubeconfig`; it is written aside and renamed once everything is loaded, so a
//! script that sees the file can use the emulator. `--print-writes` prints one line per write a
//! client makes (but Events), so what the webhook and operator do shows.

use std::path::PathBuf;
use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::KubeEmulator;
use kube::api::{Api, Patch, PatchParams, PostParams};

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> anyhow::Result<T> {
    let path = format!("{}/../deploy/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

/// The command line.
struct Options {
    seconds: u64,
    policies_only: bool,
    kubeconfig: PathBuf,
    print_writes: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 600,
        policies_only: false,
        kubeconfig: PathBuf::from(format!(
            "{}/../target/emulator.kubeconfig",
            env!("CARGO_MANIFEST_DIR")
        )),
        print_writes: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--policies-only" => options.policies_only = true,
            "--print-writes" => options.print_writes = true,
            "--kubeconfig" => {
                options.kubeconfig = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--kubeconfig needs a path"))?
                    .into();
            }
            _ => {
                if let Some(path) = arg.strip_prefix("--kubeconfig=") {
                    options.kubeconfig = path.into();
                } else {
                    options.seconds = arg.parse().map_err(|e| {
                        anyhow::anyhow!(
                            "expected seconds, --policies-only, --print-writes or --kubeconfig PATH, got {arg:?}: {e}"
                        )
                    })?;
                }
            }
        }
    }
    Ok(options)
}

/// Loads both sample policies and a sample ScanRequest with a made-up status.
async fn load_samples(client: kube::Client, ns: &str) -> anyhow::Result<()> {
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
    Ok(())
}

/// Prints the writes made since the last call (but Events), one line each.
fn print_writes(k8s: &KubeEmulator, seen: &mut usize) {
    let writes = k8s.writes();
    for write in writes.iter().skip(*seen) {
        if write.path.contains("/events") {
            continue;
        }
        let created = if write.method == "POST" {
            write
                .body
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .map(|name| format!(" ({name})"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let how = if write.content_type.contains("apply-patch") {
            " [apply]"
        } else {
            ""
        };
        println!(
            "kube: {} {}{created}{how} -> {}",
            write.method, write.path, write.status
        );
    }
    *seen = writes.len();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let k8s = KubeEmulator::start().await?;
    let ns = "gatehouse-scans";
    if options.policies_only {
        Api::<ScanPolicy>::namespaced(k8s.client(), ns)
            .create(&PostParams::default(), &sample("scanpolicy-kics.yaml")?)
            .await?;
    } else {
        load_samples(k8s.client(), ns).await?;
    }
    // Written aside and renamed, so a reader sees no file or the whole kubeconfig.
    let mut partial = options.kubeconfig.clone().into_os_string();
    partial.push(".partial");
    std::fs::write(&partial, k8s.kubeconfig())?;
    std::fs::rename(&partial, &options.kubeconfig)?;
    println!(
        "emulator at {} for {}s; kubeconfig: {}",
        k8s.url(),
        options.seconds,
        options.kubeconfig.display()
    );
    // What was loaded is not news.
    let mut seen = k8s.writes().len();
    let mut deadline = std::pin::pin!(tokio::time::sleep(Duration::from_secs(options.seconds)));
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                if options.print_writes {
                    print_writes(&k8s, &mut seen);
                }
            }
        }
    }
    Ok(())
}

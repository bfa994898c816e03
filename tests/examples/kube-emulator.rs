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
//!
//! `--run-scans AGENT REDIS_URL REPORT SOURCE_DIR` plays the cluster's part for scan Jobs, with a
//! STAND-IN for the scanner container: each new Job's pod "starts", then the Job's own `report`
//! step runs for real (the `gatehouse-agent` binary AGENT, with the Job's arguments and the
//! per-scan Secret's signing key) on REPORT, a real KICS report from the fixtures, as if the
//! scanner had written it (SOURCE_DIR is where that report's scan saw its files), publishing to
//! REDIS_URL; the Job then succeeds (or fails when the report step does).

use std::collections::HashSet;

use base64::Engine as _;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::{JobState, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
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
    run_scans: Option<ScanStandIn>,
}

/// What `--run-scans` runs.
#[derive(Clone)]
struct ScanStandIn {
    agent: PathBuf,
    redis_url: String,
    report: PathBuf,
    source_dir: String,
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
        run_scans: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--policies-only" => options.policies_only = true,
            "--print-writes" => options.print_writes = true,
            "--run-scans" => {
                let mut next = |what: &str| {
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--run-scans needs {what}"))
                };
                options.run_scans = Some(ScanStandIn {
                    agent: next("AGENT")?.into(),
                    redis_url: next("REDIS_URL")?,
                    report: next("REPORT")?.into(),
                    source_dir: next("SOURCE_DIR")?,
                });
            }
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

/// Plays each new scan Job through: its pod starts, its real `report` step publishes the
/// stand-in report, the Job succeeds (or fails as the report step did).
fn run_scans(k8s: &KubeEmulator, stand_in: &ScanStandIn, done: &mut HashSet<String>, ns: &str) {
    for name in k8s.names::<Job>(ns) {
        if done.contains(&name) {
            continue;
        }
        done.insert(name.clone());
        let Some(job) = k8s.get::<Job>(ns, &name) else {
            continue;
        };
        let outcome = match run_report(k8s, stand_in, &job, ns) {
            Ok(said) => {
                println!("scan stand-in: Job {name}: gatehouse-agent report {said}");
                JobState::Succeeded
            }
            Err(error) => {
                println!("scan stand-in: Job {name}: the report step failed: {error}");
                JobState::Failed {
                    reason: "BackoffLimitExceeded".to_owned(),
                    message: "Job has reached the specified backoff limit".to_owned(),
                }
            }
        };
        let _ = k8s.set_job_status(ns, &name, &outcome);
    }
}

/// Runs the Job's `report` step with its own arguments: the stand-in report in an output
/// directory, the per-scan Secret's signing key in a file, the given Redis.
fn run_report(
    k8s: &KubeEmulator,
    stand_in: &ScanStandIn,
    job: &serde_json::Value,
    ns: &str,
) -> anyhow::Result<String> {
    let pod = &job["spec"]["template"]["spec"];
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    k8s.set_job_status(ns, name, &JobState::Active)
        .map_err(|e| anyhow::anyhow!("start: {e}"))?;
    let report = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "report"))
        .ok_or_else(|| anyhow::anyhow!("no report step"))?;
    let secret = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "signing-key"))
        .and_then(|v| v["secret"]["secretName"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no signing-key volume"))?;
    let key = k8s
        .get::<Secret>(ns, secret)
        .and_then(|s| s["data"]["signing-key"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no signing key in Secret {secret}"))?;
    let work = tempfile::tempdir()?;
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    std::fs::copy(&stand_in.report, out.join("results.json"))?;
    let key_file = work.path().join("signing-key");
    std::fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.decode(key)?,
    )?;
    let mut args: Vec<String> = report["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for (flag, value) in [
        ("--output-dir", out.display().to_string()),
        ("--key-file", key_file.display().to_string()),
        ("--redis-url", stand_in.redis_url.clone()),
        ("--source-dir", stand_in.source_dir.clone()),
    ] {
        match args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < args.len() => args[at + 1] = value,
            _ => args.extend([flag.to_owned(), value]),
        }
    }
    let output = std::process::Command::new(&stand_in.agent)
        .args(&args)
        .output()?;
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        Ok(format!(
            "on {} (a STAND-IN for the scanner's report): {said}",
            stand_in.report.display()
        ))
    } else {
        anyhow::bail!("{}: {said}", output.status)
    }
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
    let mut ran = HashSet::new();
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                if options.print_writes {
                    print_writes(&k8s, &mut seen);
                }
                if let Some(stand_in) = &options.run_scans {
                    run_scans(&k8s, stand_in, &mut ran, ns);
                }
            }
        }
    }
    Ok(())
}

//! Benchmarks of the results path (issue 10); numbers in `docs/benchmarks.md`.
//!
//! - `parse-100k [N]`: a KICS report of N findings (default 100,000: the Terraform fixture's 17
//!   repeated, each copy with its own fingerprints) is written to a temporary file, then read
//!   as the agent's `report` step reads it (parse, normalise), made into the signed, compressed
//!   stream entry, and rendered as the operator renders it (conclusion, summary, annotations).
//!   Prints the time of each stage and this process's peak resident memory: run it alone.
//! - `report-latency [RUNS]`: the operator's results consumer against a private Redis, the
//!   Kubernetes API emulator and the GitHub stand-in, all in this process: RUNS scans (default
//!   20), each publishing a result of 500 annotatable findings; per scan, the time from the
//!   `XADD` to its check run completed at the stand-in (10 batches of 50 annotations, the last
//!   with the conclusion).
//!
//! `cargo build --release --workspace --examples && target/release/examples/bench-results
//! parse-100k` (and `report-latency`).

// Figures for people: megabytes and percentiles as floats lose nothing that matters here.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::{ScanPolicy, ScannerKind};
use gatehouse_crds::severity::{FailOn, SeverityCounts};
use gatehouse_crds::stream::Finding;
use gatehouse_operator::agent::report;
use gatehouse_operator::verdict::{self, Comparison};
use gatehouse_tests::JobState;
use gatehouse_tests::kube_support::sample;
use gatehouse_tests::operator::{NS, OperatorHarness};
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

/// Peak and current resident memory of this process, in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Writes the report in one child process and measures the reading in another, so that the
/// memory measured is the reading's alone.
fn parse_100k(n: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    std::fs::create_dir(&out)?;
    let me = std::env::current_exe()?;
    let status = std::process::Command::new(&me)
        .arg("generate-kics")
        .arg(n.to_string())
        .arg(out.join("results.json"))
        .status()?;
    anyhow::ensure!(status.success(), "generating the report: {status}");
    let child = std::process::Command::new(&me)
        .arg("parse-dir")
        .arg(&out)
        .output()?;
    anyhow::ensure!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    Ok(serde_json::from_slice(&child.stdout)?)
}

/// Reads `out/results.json` as the agent's report step does, encodes and signs it, renders it.
fn parse_dir(out: &std::path::Path) -> anyhow::Result<Value> {
    let report_bytes = std::fs::metadata(out.join("results.json"))?.len();
    let (before_hwm, _) = memory();

    let started = Instant::now();
    let read = report::read_output(ScannerKind::Kics, 0, out, "/path/e2e/fixtures/samples");
    let parsed_in = started.elapsed();
    let identity = report::Identity {
        namespace: NS.to_owned(),
        scan_request: "bench".to_owned(),
        uid: "5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50".to_owned(),
        scanner: "kics".to_owned(),
        head_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".to_owned(),
        attempt: 1,
    };
    let result = report::result(
        &identity,
        "0123456789abcdef0123456789abcdef".to_owned(),
        read,
        None,
        usize::MAX,
    );
    let key = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )?
    .scan_key(&identity.uid);
    let at = Instant::now();
    let entry = report::entry(&result, &key)?;
    let entry_in = at.elapsed();
    let at = Instant::now();
    let v = verdict::verdict(&result, FailOn::High, 500, &Comparison::Off, "(reproduce)");
    let render_in = at.elapsed();
    let total = started.elapsed();
    let (hwm, rss) = memory();
    Ok(json!({
        "scenario": "parse-100k",
        "findings": result.findings.len(),
        "report_mb": round(report_bytes as f64 / 1e6, 1),
        "parse_normalise_ms": ms(parsed_in),
        "sign_and_compress_ms": ms(entry_in),
        "entry_mb": round(entry.payload.len() as f64 / 1e6, 2),
        "render_ms": ms(render_in),
        "total_ms": ms(total),
        "summary_chars": v.summary.chars().count(),
        "annotations": v.annotations.len(),
        "peak_rss_mb_before": round(before_hwm, 1),
        "peak_rss_mb": round(hwm, 1),
        "rss_mb_end": round(rss, 1),
    }))
}

async fn report_latency(runs: usize) -> anyhow::Result<Value> {
    let policy: ScanPolicy = sample("scanpolicy-kics.yaml");
    let mut h = OperatorHarness::start(vec![policy]).await?;
    h.start_results().await?;
    h.start_operator()?;
    let template: ScanRequest = sample("scanrequest.yaml");
    let mut latencies = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("bench-{i:03}");
        let mut request = gatehouse_tests::operator::request(&name, 'e');
        request.spec.pull_request.number = 100 + i64::try_from(i)?;
        request.spec.pull_request.head_sha = format!("{:040x}", 0xbe00 + i);
        if let Some(labels) = request.metadata.labels.as_mut() {
            labels.insert(
                gatehouse_crds::labels::HEAD_SHA.to_owned(),
                request.spec.pull_request.head_sha.clone(),
            );
        }
        request.spec.repository = template.spec.repository.clone();
        h.create(&request).await?;
        let job = format!("{name}-kics");
        h.until("the Job", |h| h.k8s.get::<Job>(NS, &job).is_some())
            .await?;
        h.until("its queued run", |h| {
            h.request(&name)
                .and_then(|r| r.status)
                .is_some_and(|s| s.scanners[0].check_run_id.is_some())
        })
        .await?;
        h.k8s
            .set_job_status(NS, &job, &JobState::Succeeded)
            .map_err(anyhow::Error::msg)?;
        let stored = h.request(&name).context("the request")?;
        let mut result = h.kics_result(
            &stored,
            "kics-v2_mixed-17-findings-terraform_e2e086.json",
            "/path/e2e/fixtures/samples",
            1,
        )?;
        let one = result.findings[0].clone();
        result.findings = (0..500_u32)
            .map(|line| Finding {
                fingerprint: format!("f{line:04}"),
                start_line: Some(line + 1),
                end_line: Some(line + 1),
                ..one.clone()
            })
            .collect();
        result.counts = SeverityCounts {
            high: 500,
            ..SeverityCounts::default()
        };
        let published = Instant::now();
        h.publish(&result).await?;
        let id = name.clone();
        h.until("the run concluded", |h| {
            h.github
                .check_runs()
                .iter()
                .any(|r| r.external_id.contains(&id) && r.status == "completed")
        })
        .await?;
        latencies.push(published.elapsed());
        let run = h
            .github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains(&name))
            .context("the run")?;
        anyhow::ensure!(
            run.annotations.len() == 500,
            "{} annotations",
            run.annotations.len()
        );
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(json!({
        "scenario": "report-latency",
        "runs": runs,
        "annotations_per_run": 500,
        "requests_per_run": "GET + 9 PATCH (annotations) + 1 PATCH (last 50 and the conclusion)",
        "p50_ms": ms(pick(0.5)),
        "p95_ms": ms(pick(0.95)),
        "max_ms": ms(*latencies.last().context("runs")?),
    }))
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 1)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10_f64.powi(digits);
    (x * f).round() / f
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scenario = args
        .next()
        .context("usage: bench-results parse-100k [N] | report-latency [RUNS]")?;
    let value = match scenario.as_str() {
        "parse-100k" => parse_100k(args.next().map_or(Ok(100_000), |n| n.parse())?)?,
        "generate-kics" => {
            let n: usize = args.next().context("N")?.parse()?;
            let file = args.next().context("FILE")?;
            std::fs::write(&file, gatehouse_tests::reports::repeated_kics_report(n)?)?;
            return Ok(());
        }
        "parse-dir" => parse_dir(std::path::Path::new(&args.next().context("DIR")?))?,
        "report-latency" => report_latency(args.next().map_or(Ok(20), |n| n.parse())?).await?,
        other => anyhow::bail!("unknown scenario {other:?}"),
    };
    println!("{value}");
    Ok(())
}

//! Benchmarks of `gatehouse-operator` (issue 9). The operator under test is the real release
//! binary, started as a child process against the Kubernetes API emulator and the GitHub
//! stand-in, which both run in this process; so the CPU time (`utime + stime` from
//! `/proc/<pid>/stat`) and the memory (`VmHWM`, `VmRSS` from `/proc/<pid>/status`) reported are
//! the operator's alone. Everything shares the machine's cores, so the wall times include the
//! emulator's, the stand-in's and (for `delivery-latency`) Redis's and the webhook's own work.
//!
//! `cargo run --release -p gatehouse-tests --example bench-operator -- <scenario> [options]`
//!
//! - `create-1000`: a policy with two KICS scanners and limits that never queue; 1,000
//!   ScanRequests (20 repositories) created as fast as the client goes, with `--concurrency`
//!   creates in flight; reports the wall time and the operator's CPU seconds from the first
//!   create to the 2,000th Job, then to the last check run (the wait for check runs ends when
//!   none has appeared for 30 s: the stand-in counts GitHub's 5,000 calls an hour, and at 0 the
//!   operator holds its calls), and its peak RSS.
//! - `delivery-latency`: Redis, the webhook's receive role and one ingest consumer (in this
//!   process) in front of the operator: 100 signed `pull_request` `opened` deliveries, one every
//!   50 ms; per delivery the time from its `202` to its Job existing (polled every 5 ms).
//! - `cached-10000`: 10,000 finished ScanRequests with the status the operator writes (scanners
//!   skipped by their path filters, check runs reported) exist before the operator starts;
//!   reports its RSS once it has reconciled them all.
//!
//! Options: `--count N` (requests or deliveries), `--repositories N`, `--concurrency N`,
//! `--interval-ms N`, `--finalizers present|absent` (cached: whether an earlier operator already
//! added its finalizer), `--operator PATH` (default: `gatehouse-operator` next to this example's
//! directory), `--timeout-seconds N` (every wait is bounded by it; default 300).
//! `BENCH_OPERATOR_LOG=<RUST_LOG>` sets the operator's log filter (default `warn`) and keeps its
//! log in the temporary directory.
//!
//! The emulator's in-cluster controllers (garbage collector, TTL, Job deadline) are held: nothing
//! here finishes or is deleted, and their passes would only add the emulator's cost.
//!
//! Progress goes to stderr; one JSON line per scenario to stdout. Loopback only. No warm-up: the
//! operator starts fresh for each scenario, and what it does before the measured interval
//! (start-up, the first lists) is not counted in that interval's CPU time but is in its peak RSS.

// Seconds, megabytes and percentiles of small counts: the casts lose nothing that matters.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use gatehouse_crds::naming::{self, TriggerKey};
use gatehouse_crds::{ScanPolicy, ScanRequest, labels};
use gatehouse_operator::checks;
use gatehouse_operator::controller::FINALIZER;
use gatehouse_operator::decide::{self, ChangedFiles};
use gatehouse_operator::jobs::FIELD_MANAGER;
use gatehouse_tests::github::FakeGitHub;
use gatehouse_tests::ingest::{Harness, fixture};
use gatehouse_tests::kube_support::sample;
use gatehouse_tests::operator::{MASTER_KEY, NS};
use gatehouse_tests::{Controller, ControllerHold, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The policy of every scenario (`deploy/samples/scanpolicy-kics.yaml`).
const POLICY: &str = "acme-iac";
/// Limits high enough that nothing ever queues (the schema has no upper bound).
const NO_LIMIT: i32 = 100_000;

/// Command line.
struct Options {
    scenario: String,
    count: Option<usize>,
    repositories: usize,
    concurrency: usize,
    interval: Duration,
    finalizers_present: bool,
    operator: PathBuf,
    timeout: Duration,
}

fn parse() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let scenario = args
        .next()
        .context("usage: bench-operator create-1000|delivery-latency|cached-10000 [options]")?;
    let mut options = Options {
        scenario,
        count: None,
        repositories: 20,
        concurrency: 32,
        interval: Duration::from_millis(50),
        finalizers_present: true,
        operator: default_operator()?,
        timeout: Duration::from_secs(300),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => options.count = Some(value()?.parse()?),
            "--repositories" => options.repositories = value()?.parse::<usize>()?.max(1),
            "--concurrency" => options.concurrency = value()?.parse::<usize>()?.max(1),
            "--interval-ms" => options.interval = Duration::from_millis(value()?.parse()?),
            "--finalizers" => {
                options.finalizers_present = match value()?.as_str() {
                    "present" => true,
                    "absent" => false,
                    other => bail!("--finalizers takes present or absent, not {other}"),
                }
            }
            "--operator" => options.operator = PathBuf::from(value()?),
            "--timeout-seconds" => {
                options.timeout = Duration::from_secs(value()?.parse::<u64>()?.clamp(10, 1800));
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(options)
}

/// `target/<profile>/gatehouse-operator`, next to `target/<profile>/examples/`.
fn default_operator() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .context("the example's directory has no parent")?;
    Ok(profile.join("gatehouse-operator"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse()?;
    if !options.operator.exists() {
        bail!(
            "{} not built; run cargo build --workspace --release --bins --examples",
            options.operator.display()
        );
    }
    let result = match options.scenario.as_str() {
        "create-1000" => create(&options).await?,
        "delivery-latency" => delivery_latency(&options).await?,
        "cached-10000" => cached(&options).await?,
        other => bail!("unknown scenario {other}"),
    };
    println!("{result}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The operator process and what /proc says about it.

/// The operator's CPU time and memory at one moment.
#[derive(Clone, Copy, Debug)]
struct Usage {
    /// `utime + stime`, seconds.
    cpu_seconds: f64,
    /// `VmRSS`, kB.
    rss_kb: u64,
    /// `VmHWM` (peak RSS), kB.
    hwm_kb: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

fn usage(pid: u32, ticks: f64) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields are counted after its last `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?)
    };
    Ok(Usage {
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_kb: kb("VmRSS:")?,
        hwm_kb: kb("VmHWM:")?,
    })
}

fn mb(kb: u64) -> f64 {
    round(kb as f64 / 1024.0, 1)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A running `gatehouse-operator run`, killed when dropped.
struct Operator {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    ticks: f64,
    _dir: tempfile::TempDir,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("BENCH_OPERATOR_LOG").is_some() {
            let kept = std::env::temp_dir().join(format!("bench-operator-{}.log", self.child.id()));
            if std::fs::copy(&self.log, &kept).is_ok() {
                eprintln!("operator log kept in {}", kept.display());
            }
        }
    }
}

impl Operator {
    /// Starts the operator against `kubeconfig` and the GitHub at `github_url`, without leader
    /// election, with an operator-wide limit that never queues.
    fn start(binary: &Path, kubeconfig: &str, github_url: &str) -> anyhow::Result<Operator> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("kubeconfig");
        let key = dir.path().join("master-key");
        let log = dir.path().join("operator.log");
        std::fs::write(&config, kubeconfig)?;
        std::fs::write(&key, MASTER_KEY)?;
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(binary)
            .args(["run", "--leader-election", "false"])
            .args(["--github-app-id", "4242", "--github-private-key-file"])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/github-app/test-app-key.pem"
            ))
            .args(["--github-api-url", github_url])
            .arg("--master-key-file")
            .arg(&key)
            .args(["--listen", &addr.to_string()])
            .args(["--max-running", "100000"])
            .env("KUBECONFIG", &config)
            // BENCH_OPERATOR_LOG overrides the level, to look into a run (it costs time).
            .env(
                "RUST_LOG",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Operator {
            child,
            addr,
            log,
            ticks: clock_ticks(),
            _dir: dir,
        })
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.child.id(), self.ticks)
    }

    /// Fails if the process has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the operator exited ({status}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Waits until `/healthz` answers 200.
    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.alive()?;
            if let Ok(response) =
                gatehouse_tests::http::request(self.addr, "GET", "/healthz", &[], b"").await
                && response.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the operator's /healthz did not answer within {timeout:?}")
    }

    /// The sum of `gatehouse_operator_reconciles_total` over its results.
    async fn reconciles(&self) -> anyhow::Result<u64> {
        let response = gatehouse_tests::http::request(self.addr, "GET", "/metrics", &[], b"")
            .await
            .context("GET /metrics")?;
        Ok(response
            .text()
            .lines()
            .filter(|l| l.starts_with("gatehouse_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Lines the operator logged (at `warn` and above).
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Prints the operator's log lines (the first few) to stderr and returns how many there were.
fn report_log(operator: &Operator) -> usize {
    let lines = operator.log_lines();
    if !lines.is_empty() {
        eprintln!("operator logged {} line(s); the first:", lines.len());
        for line in lines.iter().take(5) {
            eprintln!("  {line}");
        }
    }
    lines.len()
}

// ---------------------------------------------------------------------------------------------
// Objects.

/// The sample policy with a second KICS scanner `kics-b` (same image) and limits that never
/// queue; `paths` (if any) on both scanners.
fn policy(paths: &[&str]) -> ScanPolicy {
    let mut policy: ScanPolicy = sample("scanpolicy-kics.yaml");
    let mut second = policy.spec.scanners[0].clone();
    "kics-b".clone_into(&mut second.name);
    policy.spec.scanners.push(second);
    for scanner in &mut policy.spec.scanners {
        scanner.paths = paths.iter().map(|p| (*p).to_owned()).collect();
    }
    policy.spec.concurrency.max_running = NO_LIMIT;
    policy.spec.concurrency.max_running_per_repository = NO_LIMIT;
    policy
}

/// A distinct 40-digit head commit for request `index`.
fn sha(index: usize) -> String {
    let mixed = (index as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("{index:08x}{mixed:032x}")
}

/// A GUID-shaped delivery id for request `index`.
fn delivery_id(index: usize) -> String {
    format!("b3a1c0de-0000-4000-8000-{index:012x}")
}

/// The sample ScanRequest for request `index`: its own pull request (`1000 + index`) and head
/// commit in repository `Codertocat/repo-NN` (`index % repositories`), named as ingest names it.
fn request(template: &ScanRequest, index: usize, repositories: usize) -> ScanRequest {
    let mut request = template.clone();
    let repo = index % repositories;
    let spec = &mut request.spec;
    spec.repository.name = format!("repo-{repo:02}");
    spec.repository.id = 900_000 + repo as i64;
    spec.pull_request.number = 1000 + index as i64;
    spec.pull_request.head_sha = sha(index);
    spec.trigger.delivery_id = delivery_id(index);
    let updated = spec
        .pull_request
        .updated_at
        .clone()
        .unwrap_or_else(|| spec.trigger.delivery_id.clone());
    request.metadata.name = Some(naming::scan_request_name(
        &spec.repository.name,
        spec.repository.id,
        spec.pull_request.number,
        &spec.pull_request.head_sha,
        TriggerKey::Change(&updated),
    ));
    request.metadata.labels = Some(labels::scan_request_labels(&request.spec));
    request.metadata.resource_version = None;
    request
}

/// The emulator with `policy` created in [`NS`].
async fn emulator_with(policy: &ScanPolicy) -> anyhow::Result<KubeEmulator> {
    let k8s = KubeEmulator::start().await?;
    Api::<ScanPolicy>::namespaced(k8s.client(), NS)
        .create(&PostParams::default(), policy)
        .await?;
    Ok(k8s)
}

/// The emulator's write requests from index `from` on, counted by method, resource (`jobs`,
/// `scanrequests/status`, ...) and answer: what the operator wrote while measured.
fn writes_since(k8s: &KubeEmulator, from: usize) -> (usize, Value) {
    let writes = k8s.writes();
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for write in writes.iter().skip(from) {
        let segments: Vec<&str> = write.path.split('/').collect();
        let resource = segments
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| segments.get(i + 2))
            .copied()
            .unwrap_or("?");
        let sub = if write.path.ends_with("/status") {
            "/status"
        } else {
            ""
        };
        *counts
            .entry(format!("{} {resource}{sub} {}", write.method, write.status))
            .or_default() += 1;
    }
    (writes.len(), json!(counts))
}

/// Holds the emulator's in-cluster controllers (garbage collector, TTL after finished, Job
/// deadline) while alive. In these scenarios nothing is deleted, no Job starts or finishes and
/// no owner disappears, so they have nothing to do; the emulator would still run their passes
/// over every stored object after every write, in this process, on the cores the operator uses.
fn hold_controllers(k8s: &KubeEmulator) -> Vec<ControllerHold> {
    [
        Controller::GarbageCollector,
        Controller::TtlAfterFinished,
        Controller::JobDeadline,
    ]
    .into_iter()
    .map(|c| k8s.hold(c))
    .collect()
}

/// Waits until the operator's policy controller has written the policy's `Ready` condition: its
/// watches are running.
async fn wait_policy_ready(
    k8s: &KubeEmulator,
    operator: &mut Operator,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        operator.alive()?;
        let ready = k8s
            .get::<ScanPolicy>(NS, POLICY)
            .and_then(|p| p.pointer("/status/conditions").cloned())
            .and_then(|c| c.as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the operator did not write the policy's status within {timeout:?}")
}

/// Creates `requests` through the API with `concurrency` creates in flight; returns the stored
/// objects in the order given.
async fn create_all(
    client: kube::Client,
    requests: Vec<ScanRequest>,
    concurrency: usize,
) -> anyhow::Result<Vec<ScanRequest>> {
    let api: Api<ScanRequest> = Api::namespaced(client, NS);
    let total = requests.len();
    let mut created: Vec<Option<ScanRequest>> = vec![None; total];
    let mut stream = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(i, request)| {
            let api = api.clone();
            async move { (i, api.create(&PostParams::default(), &request).await) }
        })
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some((i, result)) = stream.next().await {
        created[i] = Some(result.with_context(|| format!("create ScanRequest {i}"))?);
        done += 1;
        if done % 1000 == 0 || done == total {
            eprintln!("  created {done}/{total}");
        }
    }
    created
        .into_iter()
        .map(|r| r.context("a create did not answer"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: 1,000 ScanRequests at once.

async fn create(options: &Options) -> anyhow::Result<Value> {
    let count = options.count.unwrap_or(1000);
    let policy = policy(&[]);
    let scanners = policy.spec.scanners.len();
    let k8s = emulator_with(&policy).await?;
    let _held = hold_controllers(&k8s);
    let github = FakeGitHub::start().await?;
    let template: ScanRequest = sample("scanrequest.yaml");
    let requests: Vec<ScanRequest> = (0..count)
        .map(|i| request(&template, i, options.repositories))
        .collect();

    let mut operator = Operator::start(&options.operator, &k8s.kubeconfig(), &github.url())?;
    operator.wait_healthy(options.timeout).await?;
    wait_policy_ready(&k8s, &mut operator, options.timeout).await?;
    // Its watches are up; what starting cost is not part of the interval.
    let before = operator.usage()?;
    eprintln!(
        "create-1000: operator ready (RSS {} MB); creating {count} ScanRequests, {} in flight",
        mb(before.rss_kb),
        options.concurrency
    );

    let (writes_before, _) = writes_since(&k8s, usize::MAX);
    let started = Instant::now();
    let creating = tokio::spawn(create_all(k8s.client(), requests, options.concurrency));
    let want_jobs = count * scanners;
    let deadline = started + options.timeout;
    let mut created_after = None;
    let mut last_report = Instant::now();
    let jobs_after = loop {
        let jobs = k8s.names::<Job>(NS).len();
        if jobs >= want_jobs {
            break started.elapsed();
        }
        if created_after.is_none() && creating.is_finished() {
            created_after = Some(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("only {jobs}/{want_jobs} Jobs after {:?}", options.timeout);
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  {jobs}/{want_jobs} Jobs");
            last_report = Instant::now();
        }
        operator.alive()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let at_jobs = operator.usage()?;
    creating.await??;
    let created_after = created_after.unwrap_or(jobs_after);
    eprintln!("  {want_jobs} Jobs after {jobs_after:?}; waiting for their check runs");

    // The check runs follow their Jobs. The stand-in counts calls against GitHub's 5,000 per
    // hour, and at 0 the operator rightly holds every call until the window resets: stop waiting
    // when no check run has appeared for 30 s and report how many there are.
    let mut runs = 0;
    let mut checks_after = jobs_after;
    let mut at_checks = at_jobs;
    let mut changed = Instant::now();
    while runs < want_jobs
        && changed.elapsed() < Duration::from_secs(30)
        && Instant::now() < deadline
    {
        operator.alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = github.check_runs().len();
        if now != runs {
            runs = now;
            changed = Instant::now();
            checks_after = started.elapsed();
            at_checks = operator.usage()?;
        }
    }
    let end = operator.usage()?;
    let reconciles = operator.reconciles().await?;
    let calls = github.calls();
    let repos_calls = calls
        .iter()
        .filter(|c| c.path.starts_with("/repos/"))
        .count();
    let log_lines = report_log(&operator);
    Ok(json!({
        "scenario": "create-1000",
        "requests": count,
        "scanners": scanners,
        "repositories": options.repositories,
        "create_concurrency": options.concurrency,
        "jobs": want_jobs,
        "creates_done_s": round(created_after.as_secs_f64(), 3),
        "wall_to_last_job_s": round(jobs_after.as_secs_f64(), 3),
        "operator_cpu_to_last_job_s": round(at_jobs.cpu_seconds - before.cpu_seconds, 2),
        "check_runs": runs,
        "wall_to_last_check_run_s": round(checks_after.as_secs_f64(), 3),
        "operator_cpu_to_last_check_run_s": round(at_checks.cpu_seconds - before.cpu_seconds, 2),
        "operator_rss_ready_mb": mb(before.rss_kb),
        "operator_peak_rss_mb": mb(end.hwm_kb),
        "operator_rss_end_mb": mb(end.rss_kb),
        "reconciles": reconciles,
        "api_writes": writes_since(&k8s, writes_before).1,
        "github_calls": calls.len(),
        "github_rate_limited_calls": repos_calls,
        "github_rate_limit_remaining": 5000usize.saturating_sub(repos_calls),
        "operator_log_lines": log_lines,
    }))
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: delivery to Job.

/// The latency at quantile `q` (nearest rank) of sorted `sorted`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 1)
}

async fn delivery_latency(options: &Options) -> anyhow::Result<Value> {
    let count = options.count.unwrap_or(100);
    // The sample policy as it is (one KICS scanner) with limits that never queue: the deliveries
    // are 100 pull requests of one repository.
    let mut policy: ScanPolicy = sample("scanpolicy-kics.yaml");
    policy.spec.concurrency.max_running = NO_LIMIT;
    policy.spec.concurrency.max_running_per_repository = NO_LIMIT;
    let mut front = Harness::start(vec![policy]).await?;
    let _held = hold_controllers(&front.k8s);
    front
        .start_consumer("ingest-0", Duration::from_secs(30))
        .await?;
    let github = FakeGitHub::start().await?;
    let mut operator = Operator::start(&options.operator, &front.k8s.kubeconfig(), &github.url())?;
    operator.wait_healthy(options.timeout).await?;
    wait_policy_ready(&front.k8s, &mut operator, options.timeout).await?;
    let before = operator.usage()?;
    eprintln!(
        "delivery-latency: operator ready; {count} deliveries, one every {:?}",
        options.interval
    );

    let (answered, seen) = tokio::try_join!(
        send_deliveries(&front, count, options.interval),
        poll_jobs(
            &front.k8s,
            count,
            options.interval * u32::try_from(count)? + options.timeout
        )
    )?;
    operator.alive()?;
    let after = operator.usage()?;
    let mut latencies: Vec<Duration> = answered
        .iter()
        .map(|(head, at)| {
            seen.get(head)
                .map(|s| s.saturating_duration_since(*at))
                .context("a Job for an unknown commit")
        })
        .collect::<anyhow::Result<_>>()?;
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len().max(1))?;
    let log_lines = report_log(&operator);
    Ok(json!({
        "scenario": "delivery-latency",
        "deliveries": count,
        "interval_ms": options.interval.as_millis(),
        "poll_ms": 5,
        "p50_ms": ms(quantile(&latencies, 0.50)),
        "p95_ms": ms(quantile(&latencies, 0.95)),
        "max_ms": ms(latencies.last().copied().unwrap_or_default()),
        "min_ms": ms(latencies.first().copied().unwrap_or_default()),
        "mean_ms": ms(mean),
        "operator_cpu_s": round(after.cpu_seconds - before.cpu_seconds, 2),
        "operator_peak_rss_mb": mb(after.hwm_kb),
        "redis": redis_version(),
        "operator_log_lines": log_lines,
    }))
}

/// Sends `count` signed `pull_request` `opened` deliveries (each its own pull request and head
/// commit), one every `interval` on a fixed schedule; returns each head commit with the moment
/// its `202` arrived.
async fn send_deliveries(
    front: &Harness,
    count: usize,
    interval: Duration,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let opened = fixture("pull_request.opened.octokit.json");
    let started = tokio::time::Instant::now();
    let mut answered = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(started + interval * u32::try_from(i)?).await;
        let mut payload = opened.clone();
        let number = 1000 + i as i64;
        let head = sha(i);
        payload["number"] = json!(number);
        payload["pull_request"]["number"] = json!(number);
        payload["pull_request"]["head"]["sha"] = json!(head);
        let body = serde_json::to_vec(&payload)?;
        let response = front
            .receiver
            .deliver(
                "pull_request",
                &delivery_id(i),
                &body,
                gatehouse_tests::webhook::SECRET,
            )
            .await?;
        let at = Instant::now();
        if response.status != 202 {
            bail!(
                "delivery {i} answered {}: {}",
                response.status,
                response.text()
            );
        }
        answered.push((head, at));
    }
    eprintln!("  {count} deliveries answered 202");
    Ok(answered)
}

/// Reads the emulator's store directly (no HTTP) every 5 ms until `count` Jobs exist: for each
/// new Job its head commit label, and when it was first seen.
async fn poll_jobs(
    k8s: &KubeEmulator,
    count: usize,
    within: Duration,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + within;
    while seen.len() < count {
        ticker.tick().await;
        let now = Instant::now();
        for name in k8s.names::<Job>(NS) {
            if known.contains(&name) {
                continue;
            }
            let head = k8s
                .get::<Job>(NS, &name)
                .and_then(|job| {
                    job.pointer("/metadata/labels")
                        .and_then(|l| l.get(labels::HEAD_SHA))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .with_context(|| format!("Job {name} has no head commit label"))?;
            seen.entry(head).or_insert(now);
            known.insert(name);
        }
        if Instant::now() > deadline {
            bail!("only {}/{count} Jobs after {within:?}", seen.len());
        }
    }
    Ok(seen)
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: 10,000 finished ScanRequests in the cache.

async fn cached(options: &Options) -> anyhow::Result<Value> {
    let count = options.count.unwrap_or(10_000);
    // KICS scanners that look at Terraform and YAML only; every request changed README.md, so
    // both were skipped: a finished request as the operator writes it today (results of real
    // scans arrive with issue 10). Retention keeps everything: each request is its own pull
    // request's only one, and none is older than a year.
    let mut policy = policy(&["**/*.tf", "**/*.yaml"]);
    policy.spec.retention.max_age_hours = 24 * 365;
    policy.spec.retention.keep_per_pull_request = 5;
    let k8s = emulator_with(&policy).await?;
    let _held = hold_controllers(&k8s);
    let stored_policy: ScanPolicy = serde_json::from_value(
        k8s.get::<ScanPolicy>(NS, POLICY)
            .context("the policy as stored")?,
    )?;
    let template: ScanRequest = sample("scanrequest.yaml");
    let requests: Vec<ScanRequest> = (0..count)
        .map(|i| {
            let mut r = request(&template, i, options.repositories);
            if options.finalizers_present {
                r.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
            }
            r
        })
        .collect();
    eprintln!("cached-10000: creating {count} ScanRequests");
    let created = create_all(k8s.client(), requests, options.concurrency).await?;
    eprintln!("  writing their finished status");
    let status_bytes =
        write_finished_statuses(k8s.client(), &stored_policy, &created, options.concurrency)
            .await?;
    let sample_size = k8s
        .get::<ScanRequest>(NS, created[0].metadata.name.as_deref().unwrap_or_default())
        .map_or(0, |v| v.to_string().len());

    let github = FakeGitHub::start().await?;
    let (writes_before, _) = writes_since(&k8s, usize::MAX);
    let started = Instant::now();
    let mut operator = Operator::start(&options.operator, &k8s.kubeconfig(), &github.url())?;
    operator.wait_healthy(options.timeout).await?;
    eprintln!("  operator started; waiting until it has reconciled every request");
    // With the finalizer already there, one reconcile per request (it writes nothing); without
    // it, one that adds it and one more for the change.
    let want = if options.finalizers_present {
        count as u64
    } else {
        2 * count as u64
    };
    let (reconciles, reached) =
        wait_reconciled(&mut operator, want, started + options.timeout).await?;
    let reached = reached.duration_since(started);
    let with_finalizer = created
        .iter()
        .filter(|r| {
            k8s.get::<ScanRequest>(NS, r.metadata.name.as_deref().unwrap_or_default())
                .and_then(|v| v.pointer("/metadata/finalizers").cloned())
                .is_some_and(|f| f.as_array().is_some_and(|f| f.contains(&json!(FINALIZER))))
        })
        .count();
    if with_finalizer != count {
        bail!("only {with_finalizer}/{count} requests carry the finalizer");
    }
    let after = operator.usage()?;
    let log_lines = report_log(&operator);
    let (_, operator_writes) = writes_since(&k8s, writes_before);
    if std::env::var_os("BENCH_DUMP_WRITE").is_some()
        && let Some(write) = k8s.writes().get(writes_before)
    {
        eprintln!(
            "first write: {} {} {}",
            write.method, write.path, write.body
        );
    }
    Ok(json!({
        "scenario": "cached-10000",
        "operator_writes": operator_writes,
        "requests": count,
        "finalizers_before_start": if options.finalizers_present { "present" } else { "absent" },
        "request_json_bytes": sample_size,
        "status_json_bytes_mean": status_bytes / count.max(1),
        "reconciles": reconciles,
        "reconciled_all_after_s": round(reached.as_secs_f64(), 2),
        "operator_cpu_s": round(after.cpu_seconds, 2),
        "operator_rss_mb": mb(after.rss_kb),
        "operator_peak_rss_mb": mb(after.hwm_kb),
        "github_calls": github.calls().len(),
        "operator_log_lines": log_lines,
    }))
}

/// Writes on every request of `created` the status the operator writes for a request whose
/// scanners were all skipped by their path filters (README.md changed), with the check run ids
/// and reported states it records once GitHub has the check runs. Written as the operator writes
/// it (server-side apply of the status as field manager `gatehouse-operator`), so the managed
/// fields are the operator's own and its first reconcile finds nothing to change; a status set
/// behind the API's back would cost one extra write and reconcile per request. Returns the
/// statuses' JSON size in bytes, summed.
async fn write_finished_statuses(
    client: kube::Client,
    policy: &ScanPolicy,
    created: &[ScanRequest],
    concurrency: usize,
) -> anyhow::Result<usize> {
    let changed = ChangedFiles {
        paths: vec!["README.md".to_owned()],
        complete: true,
    };
    let mut bodies = Vec::with_capacity(created.len());
    let mut bytes = 0usize;
    for (i, request) in created.iter().enumerate() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let snapshot = decide::snapshot(request, policy)?;
        let mut status = decide::first_status(request, policy, snapshot, Some(&changed), &now)?;
        if status.phase != Some(gatehouse_crds::scanrequest::ScanPhase::Succeeded) {
            bail!("expected a finished status, got {:?}", status.phase);
        }
        let mut view = request.clone();
        view.status = Some(status.clone());
        let github_now = now.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for (j, scanner) in status.scanners.iter_mut().enumerate() {
            let desired = checks::desired(&view, scanner, &github_now)
                .context("a finished scanner has a check run")?;
            scanner.check_run_id = Some(10_000_000 + (i * 8 + j) as i64);
            scanner.reported = Some(desired.key());
        }
        let status = serde_json::to_value(&status)?;
        bytes += status.to_string().len();
        let name = request.metadata.name.clone().unwrap_or_default();
        bodies.push((
            name,
            json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest", "status": status}),
        ));
    }
    let api: Api<ScanRequest> = Api::namespaced(client, NS);
    let total = bodies.len();
    let mut stream = futures::stream::iter(bodies)
        .map(|(name, body)| {
            let api = api.clone();
            async move {
                api.patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .with_context(|| format!("write the status of {name}"))
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some(result) = stream.next().await {
        result?;
        done += 1;
        if done % 2000 == 0 || done == total {
            eprintln!("  {done}/{total} statuses");
        }
    }
    Ok(bytes)
}

/// Waits until the operator's reconcile count reaches `want` and then stays unchanged for 3 s;
/// returns the count and when it reached `want`.
async fn wait_reconciled(
    operator: &mut Operator,
    want: u64,
    deadline: Instant,
) -> anyhow::Result<(u64, Instant)> {
    let mut last = 0;
    let mut reached = None;
    let mut stable_since = Instant::now();
    loop {
        operator.alive()?;
        let n = operator.reconciles().await?;
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        if reached.is_none() && n >= want {
            reached = Some(Instant::now());
            eprintln!("  {n} reconciles");
        }
        if let Some(at) = reached
            && stable_since.elapsed() >= Duration::from_secs(3)
        {
            return Ok((last, at));
        }
        if Instant::now() > deadline {
            bail!("{n}/{want} reconciles before the deadline; not settled");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

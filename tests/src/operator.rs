//! The operator under test: the Kubernetes API emulator with policies, the GitHub stand-in, and
//! `gatehouse-operator`'s real controllers running in this process (started, stopped and
//! restarted by the test; a stop drops every in-memory state, like a crashed pod).

use std::sync::Arc;
use std::time::Duration;

use gatehouse_crds::stream::{ResultEntry, ScanResult};
use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_operator::controller::Settings;
use gatehouse_operator::github::GitHub;
use gatehouse_operator::jobs::BuildSettings;
use gatehouse_operator::keys::MasterKey;
use gatehouse_operator::metrics::Metrics;
use gatehouse_operator::run::Watches;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::KubeEmulator;
use crate::github::FakeGitHub;

/// Namespace of the sample policies and requests.
pub const NS: &str = "gatehouse-scans";
/// App id of the test App (`tests/fixtures/github-app`).
pub const APP_ID: u64 = 4242;
/// Master key of the tests.
pub const MASTER_KEY: &[u8] = b"master-key-for-tests-0123456789abcdef";
/// The agent image the tests' Jobs use.
pub const AGENT_IMAGE: &str = "ghcr.io/gatehouse-dev/gatehouse@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A running operator and what it talks to.
pub struct OperatorHarness {
    /// Kubernetes.
    pub k8s: KubeEmulator,
    /// GitHub.
    pub github: FakeGitHub,
    /// The operator's metrics (replaced on each start).
    pub metrics: Arc<Metrics>,
    /// Operator-wide limit of running ScanRequests for the next start.
    pub max_running: usize,
    /// Namespaces the next start watches, each with its own controller (`None`: all).
    pub namespaces: Vec<Option<String>>,
    /// Whether the next start's Kubernetes client retries failed calls itself (kube's default);
    /// without, every injected failure reaches the operator's own code.
    pub client_retries: bool,
    /// How long the next start waits for a result before failing a scanner.
    pub result_timeout: Duration,
    /// Redis of the results stream, once [`Self::start_results`] started it.
    pub redis: Option<crate::RedisServer>,
    /// Whether that Redis runs with the Helm chart's ACL users (set before it starts): the
    /// operator then connects as `gatehouse`, its Jobs' report steps get the URL and password
    /// of `gatehouse-scan`, and [`Self::publish`] publishes as a report step would, with the
    /// password from the per-scan Secret.
    pub redis_acl: bool,
    /// The per-request locks the operator's controller and results consumer share.
    locks: Arc<gatehouse_operator::locks::RequestLocks>,
    results: Vec<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
    running: Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Drop for OperatorHarness {
    fn drop(&mut self) {
        for (_, task) in &self.running {
            task.abort();
        }
        for (_, task) in &self.results {
            task.abort();
        }
    }
}

impl OperatorHarness {
    /// Starts the emulator with `policies` (in their namespaces) and the GitHub stand-in; the
    /// operator is started with [`Self::start_operator`].
    pub async fn start(policies: Vec<ScanPolicy>) -> anyhow::Result<OperatorHarness> {
        let k8s = KubeEmulator::start().await?;
        for policy in policies {
            let ns = policy.metadata.namespace.clone().unwrap_or_default();
            Api::<ScanPolicy>::namespaced(k8s.client(), &ns)
                .create(&PostParams::default(), &policy)
                .await?;
        }
        let github = FakeGitHub::start().await?;
        Ok(OperatorHarness {
            k8s,
            github,
            metrics: Arc::new(Metrics::default()),
            max_running: 50,
            namespaces: vec![None],
            client_retries: true,
            result_timeout: Duration::from_secs(600),
            redis: None,
            redis_acl: false,
            locks: Arc::default(),
            results: Vec::new(),
            running: Vec::new(),
        })
    }

    /// Starts one operator (watching [`Self::namespaces`]).
    /// Must be called inside the Tokio runtime (the GitHub client starts a task).
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        let metrics = Arc::new(Metrics::default());
        let client = if self.client_retries {
            self.k8s.client()
        } else {
            self.k8s.client_without_retries()
        };
        if self.redis_acl {
            self.start_redis()?;
        }
        let baseline_cache = match &self.redis {
            Some(redis) => Some(redis::Client::open(redis.url())?),
            None => None,
        };
        let scan_redis = match &self.redis {
            Some(redis) if self.redis_acl => ScanRedis::acl_user(redis),
            _ => ScanRedis::default(),
        };
        let running = spawn_operator(
            client,
            &self.github.url(),
            Start {
                max_running: self.max_running,
                namespaces: &self.namespaces,
                result_timeout: self.result_timeout,
                baseline_cache,
                locks: Arc::clone(&self.locks),
                scan_redis,
            },
            metrics.clone(),
        )?;
        self.metrics = metrics;
        self.running.push(running);
        Ok(())
    }

    /// Kills every running operator at once (no graceful shutdown): what a crash does.
    pub fn crash_operator(&mut self) {
        for (_, task) in self.running.drain(..) {
            task.abort();
        }
    }

    /// Starts a private Redis (once) and the operator's results consumer on it, with short
    /// retry waits (200 ms, doubling).
    pub async fn start_results(&mut self) -> anyhow::Result<()> {
        self.start_redis()?;
        let redis = redis::Client::open(self.redis_url())?;
        let key = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/github-app/test-app-key.pem"
        ))?;
        let github = Arc::new(GitHub::new(APP_ID, &key, &self.github.url())?);
        let consumer = gatehouse_operator::results::Consumer::new(
            &redis,
            gatehouse_operator::results::Parts {
                client: self.k8s.client(),
                github,
                master_key: MasterKey::from_file_contents(MASTER_KEY)?,
                metrics: self.metrics.clone(),
                locks: Arc::clone(&self.locks),
            },
            gatehouse_operator::results::ResultsConfig {
                consumer: format!("test-{}", self.results.len()),
                block: Duration::from_millis(200),
                first_retry: Duration::from_millis(200),
                longest_retry: Duration::from_secs(2),
                breaker_hold: Duration::from_secs(1),
                trim_every: Duration::from_millis(300),
                details_url: Some("https://gatehouse.example/scans".to_owned()),
                ..gatehouse_operator::results::ResultsConfig::default()
            },
        )
        .await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(consumer.run(stopped));
        self.results.push((stop, task));
        Ok(())
    }

    /// Starts the results Redis once (with the chart's ACL users when [`Self::redis_acl`]).
    fn start_redis(&mut self) -> anyhow::Result<()> {
        if self.redis.is_none() {
            self.redis = Some(crate::RedisServer::start_with(crate::RedisOptions {
                acl: self.redis_acl,
                ..crate::RedisOptions::default()
            })?);
        }
        Ok(())
    }

    /// Kills the results consumers at once: what a crash does.
    pub fn crash_results(&mut self) {
        for (_, task) in self.results.drain(..) {
            task.abort();
        }
    }

    /// The URL of the results Redis.
    pub fn redis_url(&self) -> String {
        self.redis
            .as_ref()
            .map(crate::RedisServer::url)
            .unwrap_or_default()
    }

    /// Publishes `result` as an agent would: signed with its ScanRequest's key (derived from the
    /// tests' master key), through the agent's own encoding and `XADD`. With
    /// [`Self::redis_acl`], as the report step of the request's Job: the user of the URL its
    /// arguments name, the password from the per-scan Secret.
    pub async fn publish(&self, result: &ScanResult) -> anyhow::Result<String> {
        let key = MasterKey::from_file_contents(MASTER_KEY)?.scan_key(&result.uid);
        let entry = gatehouse_operator::agent::report::entry(result, &key)?;
        if !self.redis_acl {
            return self.publish_entry(&entry).await;
        }
        let client = report_step_redis(&self.k8s, &result.namespace, &result.scan_request)?;
        Ok(gatehouse_operator::agent::report::publish(&client, &entry, 1).await?)
    }

    /// Publishes an entry as given (a forged or replayed one, say); as `gatehouse-scan` with
    /// [`Self::redis_acl`].
    pub async fn publish_entry(&self, entry: &ResultEntry) -> anyhow::Result<String> {
        let url = match &self.redis {
            Some(redis) if self.redis_acl => redis.url_as(crate::redis_acl::SCAN_USER),
            _ => self.redis_url(),
        };
        let client = redis::Client::open(url)?;
        Ok(gatehouse_operator::agent::report::publish(&client, entry, 1).await?)
    }

    /// The results dead-letter stream: each entry's reason.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<String>> {
        let client = redis::Client::open(self.redis_url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(gatehouse_crds::stream::RESULTS_DEAD_STREAM)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|id| id.get::<String>("reason").unwrap_or_default())
            .collect())
    }

    /// The result a KICS scan of the request's Job would publish, made by the agent's own
    /// `report` code from a real KICS report in `tests/fixtures/kics/` (paths relative to
    /// `source_dir`, where that report's scan saw the repository).
    pub fn kics_result(
        &self,
        request: &ScanRequest,
        fixture: &str,
        source_dir: &str,
        attempt: i32,
    ) -> anyhow::Result<ScanResult> {
        let out = tempfile::tempdir()?;
        std::fs::copy(
            format!("{}/fixtures/kics/{fixture}", env!("CARGO_MANIFEST_DIR")),
            out.path().join("results.json"),
        )?;
        let read = gatehouse_operator::agent::report::read_output(
            gatehouse_crds::scanpolicy::ScannerKind::Kics,
            0,
            out.path(),
            source_dir,
        );
        Ok(gatehouse_operator::agent::report::result(
            &gatehouse_operator::agent::report::Identity {
                namespace: request.metadata.namespace.clone().unwrap_or_default(),
                scan_request: request.metadata.name.clone().unwrap_or_default(),
                uid: request.metadata.uid.clone().unwrap_or_default(),
                scanner: "kics".to_owned(),
                head_sha: request.spec.pull_request.head_sha.clone(),
                attempt,
            },
            format!("{:032x}", rand_id()),
            read,
            None,
            20_000,
        ))
    }

    /// Creates a ScanRequest.
    pub async fn create(&self, request: &ScanRequest) -> anyhow::Result<ScanRequest> {
        let ns = request
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| NS.to_owned());
        Ok(Api::<ScanRequest>::namespaced(self.k8s.client(), &ns)
            .create(&PostParams::default(), request)
            .await?)
    }

    /// A ScanRequest as stored, if it exists.
    pub fn request(&self, name: &str) -> Option<ScanRequest> {
        self.k8s
            .get::<ScanRequest>(NS, name)
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// The phase of a ScanRequest, as text (`None` before the operator wrote one).
    pub fn phase(&self, name: &str) -> Option<String> {
        self.k8s.get::<ScanRequest>(NS, name).and_then(|v| {
            v.pointer("/status/phase")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    }

    /// Waits until `check` holds, polling every 20 ms for up to 20 s.
    pub async fn until(
        &self,
        what: &str,
        check: impl Fn(&OperatorHarness) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if check(self) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "timed out waiting for {what}; check runs: {:#?}",
            self.github.check_runs()
        )
    }
}

/// The operator's real controllers running in this process against an emulator and a GitHub
/// stand-in that something else started (the whole-path test's front door owns the emulator).
/// Dropping it kills them, like a killed pod.
pub struct InProcessOperator {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    running: (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    results: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
    locks: Arc<gatehouse_operator::locks::RequestLocks>,
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        self.running.1.abort();
        if let Some((_, task)) = &self.results {
            task.abort();
        }
    }
}

impl InProcessOperator {
    /// Also runs the operator's results consumer on the Redis at `redis_url` (the results
    /// stream), as `run` does.
    pub async fn with_results(
        mut self,
        k8s: &KubeEmulator,
        github: &FakeGitHub,
        redis_url: &str,
    ) -> anyhow::Result<InProcessOperator> {
        let key = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/github-app/test-app-key.pem"
        ))?;
        let consumer = gatehouse_operator::results::Consumer::new(
            &redis::Client::open(redis_url)?,
            gatehouse_operator::results::Parts {
                client: k8s.client(),
                github: Arc::new(GitHub::new(APP_ID, &key, &github.url())?),
                master_key: MasterKey::from_file_contents(MASTER_KEY)?,
                metrics: self.metrics.clone(),
                locks: Arc::clone(&self.locks),
            },
            gatehouse_operator::results::ResultsConfig {
                consumer: "in-process".to_owned(),
                block: Duration::from_millis(200),
                first_retry: Duration::from_millis(200),
                ..gatehouse_operator::results::ResultsConfig::default()
            },
        )
        .await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        self.results = Some((stop, tokio::spawn(consumer.run(stopped))));
        Ok(self)
    }

    /// Starts one operator (all namespaces, the settings of [`OperatorHarness`]) against `k8s`
    /// and `github`. Must be called inside the Tokio runtime (the GitHub client starts a task).
    pub fn start(k8s: &KubeEmulator, github: &FakeGitHub) -> anyhow::Result<InProcessOperator> {
        InProcessOperator::start_with(k8s, github, ScanRedis::default())
    }

    /// As [`Self::start`], its Jobs' report steps publishing to `scan_redis`.
    pub fn start_with(
        k8s: &KubeEmulator,
        github: &FakeGitHub,
        scan_redis: ScanRedis,
    ) -> anyhow::Result<InProcessOperator> {
        let metrics = Arc::new(Metrics::default());
        let locks = Arc::new(gatehouse_operator::locks::RequestLocks::default());
        let running = spawn_operator(
            k8s.client(),
            &github.url(),
            Start {
                max_running: 50,
                namespaces: &[None],
                result_timeout: Duration::from_secs(600),
                baseline_cache: None,
                locks: Arc::clone(&locks),
                scan_redis,
            },
            metrics.clone(),
        )?;
        Ok(InProcessOperator {
            metrics,
            running,
            results: None,
            locks,
        })
    }
}

/// Where the operator's scan Jobs publish results (`--results-redis-url` and
/// `--results-redis-password-file`).
#[derive(Clone, Debug)]
pub struct ScanRedis {
    /// The URL, with the user and without the password.
    pub url: String,
    /// The password the operator puts into each per-scan Secret.
    pub password: Option<String>,
}

impl Default for ScanRedis {
    fn default() -> ScanRedis {
        ScanRedis {
            url: "redis://127.0.0.1:6379".to_owned(),
            password: None,
        }
    }
}

impl ScanRedis {
    /// The chart's scan user `gatehouse-scan` on `redis` (started with `RedisOptions::acl`).
    pub fn acl_user(redis: &crate::RedisServer) -> ScanRedis {
        let user = crate::redis_acl::SCAN_USER;
        ScanRedis {
            url: format!("redis://{user}@127.0.0.1:{}/0", redis.port()),
            password: Some(crate::redis_acl::password(user)),
        }
    }
}

/// The Redis client a scan pod's `report` step connects with, read from the cluster as the pod
/// gets it: the URL (and its user) from its Job's `--redis-url`, the password from the per-scan
/// Secret's `redis-password` key (mounted as the file its `--redis-password-file` names).
pub fn report_step_redis(
    k8s: &KubeEmulator,
    namespace: &str,
    scan_request: &str,
) -> anyhow::Result<redis::Client> {
    use base64::Engine as _;
    use gatehouse_operator::jobs;
    let job = k8s
        .names::<k8s_openapi::api::batch::v1::Job>(namespace)
        .into_iter()
        .filter_map(|name| k8s.get::<k8s_openapi::api::batch::v1::Job>(namespace, &name))
        .find(|job| {
            job.pointer("/metadata/labels")
                .and_then(|l| l.get(gatehouse_crds::labels::SCAN_REQUEST))
                .and_then(Value::as_str)
                == Some(scan_request)
        })
        .ok_or_else(|| anyhow::anyhow!("no Job of {namespace}/{scan_request}"))?;
    let args: Vec<String> = job
        .pointer("/spec/template/spec/containers/0/args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the report step has no {flag}: {args:?}"))
    };
    let url = after("--redis-url")?;
    let file = after("--redis-password-file")?;
    let key = file.rsplit('/').next().unwrap_or_default();
    anyhow::ensure!(
        key == jobs::secret_keys::REDIS_PASSWORD,
        "the report step reads {file}"
    );
    let secret = k8s
        .get::<k8s_openapi::api::core::v1::Secret>(namespace, &jobs::secret_name(scan_request))
        .ok_or_else(|| anyhow::anyhow!("no per-scan Secret of {namespace}/{scan_request}"))?;
    let encoded = secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the per-scan Secret has no {key}"))?;
    let password = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded)?)?;
    // As the agent does: the URL's user, the password from the file.
    let mut info: redis::ConnectionInfo = url.parse()?;
    let settings = info.redis_settings().clone().set_password(password);
    info = info.set_redis_settings(settings);
    Ok(redis::Client::open(info)?)
}

/// Spawns the operator's controllers with the tests' settings; the sender stops them gracefully.
/// What differs between the tests' operator starts.
struct Start<'a> {
    max_running: usize,
    namespaces: &'a [Option<String>],
    result_timeout: Duration,
    baseline_cache: Option<redis::Client>,
    locks: Arc<gatehouse_operator::locks::RequestLocks>,
    scan_redis: ScanRedis,
}

fn spawn_operator(
    client: kube::Client,
    github_url: &str,
    start: Start<'_>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    ))?;
    let github = Arc::new(GitHub::new(APP_ID, &key, github_url)?);
    let master_key = MasterKey::from_file_contents(MASTER_KEY)?;
    let settings = Settings {
        build: BuildSettings {
            agent_image: AGENT_IMAGE.to_owned(),
            ttl_seconds_after_finished: 600,
            results_redis_url: start.scan_redis.url,
            results_redis_password: start
                .scan_redis
                .password
                .map(gatehouse_operator::jobs::RedisPassword::new),
            results_redis_ca: None,
            github_api_url: github_url.to_owned(),
        },
        baseline_cache: start.baseline_cache,
        locks: start.locks,
        max_running: start.max_running,
        details_url: Some("https://gatehouse.example/scans".to_owned()),
        queue_poll: Duration::from_millis(200),
        result_timeout: start.result_timeout,
    };
    let watches = Watches::new(&client, start.namespaces, 16);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        watches
            .operate(
                client,
                github,
                master_key,
                settings,
                metrics,
                "test-operator",
                async {
                    let _ = rx.await;
                },
            )
            .await;
    });
    Ok((tx, task))
}

/// The sample KICS policy (`deploy/samples/scanpolicy-kics.yaml`, `acme-iac`).
pub fn kics_policy() -> ScanPolicy {
    crate::kube_support::sample("scanpolicy-kics.yaml")
}

/// The sample ScanRequest (`deploy/samples/scanrequest.yaml`), ready to create.
pub fn sample_request() -> ScanRequest {
    let mut request: ScanRequest = crate::kube_support::sample("scanrequest.yaml");
    request.metadata.resource_version = None;
    request
}

/// A ScanRequest for the sample pull request with another name, commit and trigger.
pub fn request(name: &str, sha_digit: char) -> ScanRequest {
    let mut request: ScanRequest = crate::kube_support::sample("scanrequest.yaml");
    request.metadata.name = Some(name.to_owned());
    request.metadata.resource_version = None;
    let sha: String = std::iter::repeat_n(sha_digit, 40).collect();
    request.spec.pull_request.head_sha.clone_from(&sha);
    if let Some(labels) = request.metadata.labels.as_mut() {
        labels.insert(gatehouse_crds::labels::HEAD_SHA.to_owned(), sha);
    }
    request
}

/// A number that differs between calls (result ids in tests).
fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos ^ u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

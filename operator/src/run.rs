//! `gatehouse-operator run`: configuration, start-up checks, leader election, the controllers,
//! and the health and metrics server. Misconfiguration fails at start with one clear line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::{FutureExt, StreamExt};
use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::ScanPolicy;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::controller::{self, Context, Settings};
use crate::github::GitHub;
use crate::jobs::{self, BuildSettings};
use crate::keys::MasterKey;
use crate::metrics::Metrics;

/// Flags of `gatehouse-operator run`; each also reads an environment variable.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// GitHub App id.
    #[arg(long, env = "GATEHOUSE_GITHUB_APP_ID")]
    pub github_app_id: u64,
    /// File holding the GitHub App's private key (PEM), e.g. a mounted Secret.
    #[arg(long, env = "GATEHOUSE_GITHUB_PRIVATE_KEY_FILE")]
    pub github_private_key_file: PathBuf,
    /// GitHub API URL (`https://<host>/api/v3` for GitHub Enterprise Server).
    #[arg(
        long,
        env = "GATEHOUSE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// File holding the master key (at least 32 bytes) the per-scan signing keys derive from.
    #[arg(long, env = "GATEHOUSE_MASTER_KEY_FILE")]
    pub master_key_file: PathBuf,
    /// Namespaces to watch (repeat, or comma-separate); none means all namespaces.
    #[arg(
        long = "namespace",
        env = "GATEHOUSE_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Most ScanRequests running at once across all policies.
    #[arg(long, env = "GATEHOUSE_MAX_RUNNING", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_running: u32,
    /// Image of gatehouse-agent (the checkout and report steps of scan pods); pin it by digest.
    #[arg(long, env = "GATEHOUSE_AGENT_IMAGE", default_value = concat!("ghcr.io/gatehouse-dev/gatehouse:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// Seconds a finished scan Job and its pod (with its logs) are kept.
    #[arg(long, env = "GATEHOUSE_JOB_TTL_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(i32).range(0..=2_592_000))]
    pub job_ttl_seconds: i32,
    /// Redis URL scan pods publish results to (no password in it; the ACL user in it, as
    /// redis://gatehouse-scan@host:6379).
    #[arg(
        long,
        env = "GATEHOUSE_RESULTS_REDIS_URL",
        default_value = "redis://gatehouse-redis:6379"
    )]
    pub results_redis_url: String,
    /// File holding the password of the user in --results-redis-url: put into each per-scan
    /// Secret and mounted into the scan pod's report step alone.
    #[arg(long, env = "GATEHOUSE_RESULTS_REDIS_PASSWORD_FILE")]
    pub results_redis_password_file: Option<PathBuf>,
    /// PEM bundle of the CA certificates scan pods verify a rediss:// --results-redis-url with
    /// (a private CA): put into each per-scan Secret and mounted into the report step alone.
    #[arg(long, env = "GATEHOUSE_RESULTS_REDIS_CA_FILE")]
    pub results_redis_ca_file: Option<PathBuf>,
    /// Redis the operator reads scan results from (the results stream's consumer group
    /// `report`) and keeps baseline findings in; no password in it (rediss:// for TLS).
    #[arg(
        long,
        env = "GATEHOUSE_REDIS_URL",
        default_value = "redis://gatehouse-redis:6379"
    )]
    pub redis_url: String,
    /// File holding the Redis password (ACL user: give it in the URL as redis://user@host).
    #[arg(long, env = "GATEHOUSE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// Hours the base commit's findings are kept for baseline mode.
    #[arg(long, env = "GATEHOUSE_BASELINE_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub baseline_ttl_hours: u64,
    /// Base URL of the check runs' "Details" link: `<url>/<namespace>/<scanrequest>`.
    #[arg(long, env = "GATEHOUSE_DETAILS_URL")]
    pub details_url: Option<String>,
    /// Most ScanRequests reconciled at once per watch (each `--namespace`, or all namespaces):
    /// bounds the operator's memory and its bursts of API calls after a start.
    #[arg(long, env = "GATEHOUSE_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
    /// Seconds between a queued ScanRequest's looks for a free slot.
    #[arg(long, env = "GATEHOUSE_QUEUE_POLL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub queue_poll_seconds: u64,
    /// Seconds a scanner whose Job succeeded waits for its published result before it fails
    /// (a report step that could not reach Redis).
    #[arg(long, env = "GATEHOUSE_RESULT_TIMEOUT_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub result_timeout_seconds: u64,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// At start, apply the CRDs this binary was built with (server-side apply) unless the
    /// cluster holds ones applied by a newer version, and wait until they are Established.
    #[arg(long, env = "GATEHOUSE_APPLY_CRDS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub apply_crds: bool,
    /// Seconds --apply-crds waits for each CRD to be Established before the start fails.
    #[arg(long, env = "GATEHOUSE_APPLY_CRDS_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub apply_crds_timeout_seconds: u64,
    /// Elect a leader through a Lease, so only one replica acts.
    #[arg(long, env = "GATEHOUSE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "gatehouse")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "GATEHOUSE_LEASE_NAME",
        default_value = "gatehouse-operator"
    )]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal: the longest a standby waits to take over.
    #[arg(long, env = "GATEHOUSE_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_seconds: u64,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// The Redis client of `url`, with the password from its file; checked at start (a bad URL or
/// an unreadable file is a start-up error), connected later.
fn redis_client(
    url: &str,
    password_file: Option<&std::path::Path>,
) -> Result<redis::Client, StartError> {
    let mut info: redis::ConnectionInfo =
        url.parse()
            .map_err(|e: redis::RedisError| StartError::Flag {
                flag: "redis-url",
                reason: e.to_string(),
            })?;
    if let Some(path) = password_file {
        let password = std::fs::read_to_string(path).map_err(|source| StartError::ReadFile {
            what: "the Redis password",
            path: path.display().to_string(),
            source,
        })?;
        let settings = info.redis_settings().clone().set_password(password.trim());
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).map_err(|e| StartError::Flag {
        flag: "redis-url",
        reason: e.to_string(),
    })
}

/// The scan pods' Redis password from its file (trailing newline trimmed, as a mounted Secret
/// may have one); an unreadable or empty file is a start-up error. The value is never logged.
fn results_redis_password(
    path: Option<&std::path::Path>,
) -> Result<Option<jobs::RedisPassword>, StartError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| StartError::ReadFile {
        what: "the results Redis password",
        path: path.display().to_string(),
        source,
    })?;
    let password = text.trim();
    if password.is_empty() {
        return Err(StartError::Flag {
            flag: "results-redis-password-file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(Some(jobs::RedisPassword::new(password)))
}

/// Largest `--results-redis-ca-file`: the bundle is copied into every per-scan Secret, and a
/// Secret holds at most 1 MiB.
pub const MAX_RESULTS_REDIS_CA_BYTES: usize = 512 << 10;

/// The CA bundle scan pods verify Redis with, from its file, checked as the `report` step will
/// use it: an unreadable or empty file, one larger than [`MAX_RESULTS_REDIS_CA_BYTES`], one
/// without PEM certificates or with one that does not parse, and a `--results-redis-url` that is
/// not `rediss://` are start-up errors.
pub fn results_redis_ca(
    path: Option<&std::path::Path>,
    results_redis_url: &str,
) -> Result<Option<jobs::RedisCa>, StartError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|source| StartError::ReadFile {
        what: "the results Redis CA bundle",
        path: path.display().to_string(),
        source,
    })?;
    let invalid = |reason: String| StartError::Flag {
        flag: "results-redis-ca-file",
        reason,
    };
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    if pem.len() > MAX_RESULTS_REDIS_CA_BYTES {
        return Err(invalid(format!(
            "{} is {} bytes, more than {MAX_RESULTS_REDIS_CA_BYTES} (it is copied into every \
             per-scan Secret): keep only the CA certificates that sign Redis's certificate",
            path.display(),
            pem.len()
        )));
    }
    let info: redis::ConnectionInfo =
        results_redis_url
            .parse()
            .map_err(|e: redis::RedisError| StartError::Flag {
                flag: "results-redis-url",
                reason: e.to_string(),
            })?;
    match crate::agent::redis_tls_client(info, &pem) {
        Ok(_) => Ok(Some(jobs::RedisCa::new(pem))),
        Err(crate::agent::RedisCaError::NotTls) => Err(invalid(format!(
            "--results-redis-url {results_redis_url} is not rediss:// (TLS), so scan pods would \
             not use the CA bundle"
        ))),
        Err(error) => Err(invalid(format!("{}: {error}", path.display()))),
    }
}

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file could not be read.
    #[error("failed to read {what} from {path}: {source}")]
    ReadFile {
        /// What the file holds.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The master key is unusable.
    #[error("failed to load the master key from {path}: {source}")]
    MasterKey {
        /// Where.
        path: String,
        /// Why.
        source: crate::keys::KeyError,
    },
    /// The GitHub App client could not be set up.
    #[error("failed to set up the GitHub App: {0}")]
    GitHub(#[from] crate::github::GitHubError),
    /// No Kubernetes client.
    #[error("failed to configure the Kubernetes client: {0}")]
    Kube(String),
    /// The listener could not be bound.
    #[error("failed to listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A flag's value is unusable.
    #[error("invalid --{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// Leader election failed.
    #[error("leader election failed: {0}")]
    Lease(String),
    /// `--apply-crds` failed.
    #[error("{0}")]
    Crds(#[from] crate::crd_upgrade::CrdError),
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    requests: Vec<Store<ScanRequest>>,
    github: Arc<GitHub>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs the operator until SIGTERM or a lost leadership.
// Start-up is one ordered sequence of checks and steps.
#[allow(clippy::too_many_lines)]
pub async fn run(args: RunArgs) -> Result<(), StartError> {
    if args.agent_image.trim().is_empty() {
        return Err(StartError::Flag {
            flag: "agent-image",
            reason: "empty".to_owned(),
        });
    }
    if let Some(url) = &args.details_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(StartError::Flag {
            flag: "details-url",
            reason: format!("{url:?} is not an http(s) URL"),
        });
    }
    let pem = read("the GitHub App private key", &args.github_private_key_file)?;
    let github = Arc::new(GitHub::new(args.github_app_id, &pem, &args.github_api_url)?);
    let master_key = MasterKey::from_file_contents(&read("the master key", &args.master_key_file)?)
        .map_err(|source| StartError::MasterKey {
            path: args.master_key_file.display().to_string(),
            source,
        })?;
    let redis = redis_client(&args.redis_url, args.redis_password_file.as_deref())?;
    let results_redis_password =
        results_redis_password(args.results_redis_password_file.as_deref())?;
    let results_redis_ca = results_redis_ca(
        args.results_redis_ca_file.as_deref(),
        &args.results_redis_url,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Listen {
            address: args.listen,
            source,
        })?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| StartError::Kube(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A namespace named twice would get two controllers racing on the same objects.
    let mut namespaces: Vec<Option<String>> = Vec::new();
    for namespace in args
        .namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        if !namespaces.iter().flatten().any(|known| known == namespace) {
            namespaces.push(Some(namespace.to_owned()));
        }
    }
    if namespaces.is_empty() {
        namespaces.push(None);
    }
    let watches = Watches::new(&client, &namespaces, args.reconcile_concurrency);
    let request_stores = watches.request_stores();
    let health = Health {
        metrics: metrics.clone(),
        requests: request_stores.clone(),
        github: github.clone(),
        ready: ready.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    // Every replica, leading or not: the CRDs must be served before any controller watches
    // them, and a replica of an older version leaves a newer one's CRDs alone.
    if args.apply_crds {
        crate::crd_upgrade::apply(
            &client,
            Duration::from_secs(args.apply_crds_timeout_seconds),
        )
        .await?;
    }
    // Ready once configured, leading or not: readiness tied to the lease would keep a new
    // replica unready while the old one leads, and a rolling update would wait forever.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("gatehouse-operator-{}", std::process::id()));
    let mut leadership = None;
    let mut fence_task = None;
    if args.leader_election {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.lease_namespace)
                .with_identity(&identity)
                .with_duration(args.lease_seconds)
                // Renewed a third of the way into the lease: two failed renewals still leave
                // time, and the fence below has slack.
                .with_grace((args.lease_seconds * 2 / 3).max(1))
                .with_field_manager(jobs::FIELD_MANAGER)
                .build()
                .await
                .map_err(|e| StartError::Lease(e.to_string()))?;
        let (mut leading, task) = manager.watch().await;
        tracing::info!(identity, lease = %args.lease_name, "waiting to lead");
        tokio::select! {
            changed = leading.wait_for(|l| *l) => {
                changed.map_err(|e| StartError::Lease(e.to_string()))?;
            }
            () = shutdown_signal() => {
                return Ok(());
            }
        }
        tracing::info!(identity, "leading");
        fence_task = Some(tokio::spawn(fence(
            Api::namespaced(client.clone(), &args.lease_namespace),
            args.lease_name.clone(),
            identity.clone(),
            Duration::from_secs(args.lease_seconds),
        )));
        leadership = Some((leading, task));
    }
    metrics.set_leader(true);

    let locks = Arc::new(crate::locks::RequestLocks::default());
    let settings = Settings {
        build: BuildSettings {
            agent_image: args.agent_image.clone(),
            ttl_seconds_after_finished: args.job_ttl_seconds,
            results_redis_url: args.results_redis_url.clone(),
            results_redis_password,
            results_redis_ca,
            github_api_url: args.github_api_url.clone(),
        },
        baseline_cache: Some(redis.clone()),
        locks: Arc::clone(&locks),
        max_running: usize::try_from(args.max_running).unwrap_or(usize::MAX),
        details_url: args.details_url.clone(),
        queue_poll: Duration::from_secs(args.queue_poll_seconds),
        result_timeout: Duration::from_secs(args.result_timeout_seconds),
    };
    let (results_stop, results_stopped) = tokio::sync::watch::channel(false);
    let results = tokio::spawn(consume_results(
        redis,
        crate::results::Parts {
            client: client.clone(),
            github: github.clone(),
            master_key: master_key.clone(),
            metrics: metrics.clone(),
            locks,
        },
        crate::results::ResultsConfig {
            consumer: identity.clone(),
            details_url: args.details_url.clone(),
            baseline_ttl: Duration::from_secs(args.baseline_ttl_hours * 3600),
            ..crate::results::ResultsConfig::default()
        },
        results_stopped,
    ));
    let operate = watches.operate(
        client.clone(),
        github,
        master_key,
        settings,
        metrics.clone(),
        &identity,
        shutdown_signal(),
    );
    let lost = async {
        match &mut leadership {
            Some((leading, _)) => {
                let _ = leading.wait_for(|l| !*l).await;
            }
            None => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = operate => {
            // Shutting down: the result in hand is finished first, then the lease is released,
            // which the fence must not take for a loss.
            let _ = results_stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(20), results).await;
            if let Some(fence) = fence_task.take() {
                fence.abort();
            }
        }
        () = lost => {
            tracing::error!("lost the leader lease; exiting so a fresh replica stands by");
            std::process::exit(1);
        }
    }
    drop(server);
    Ok(())
}

/// Stops this process once the lease may have passed to another replica. The lease manager
/// reports a loss only when it can read the Lease: a leader cut off from the API server would go
/// on acting while a standby takes over after the lease expires. So a task reads the Lease over
/// and over, and each renewal it sees (the Lease's `renewTime`, written by this process's own
/// clock) moves a deadline on the monotonic clock to the end of the lease less a fifth of it;
/// another task exits the process once the deadline passes, however long a read hangs. A Lease
/// held by another replica, or gone, exits at once. The manager renews a third of the way into
/// the lease, so a healthy leader has two thirds of it as slack.
async fn fence(
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    name: String,
    identity: String,
    duration: Duration,
) {
    let margin = (duration / 5).max(Duration::from_millis(500));
    let valid_for = duration.saturating_sub(margin);
    let deadline = Arc::new(std::sync::Mutex::new(std::time::Instant::now() + valid_for));
    let every = (duration / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let watched = Arc::clone(&deadline);
    let lease_name = name.clone();
    let reader = async move {
        let mut seen = None;
        loop {
            match leases.get_opt(&lease_name).await {
                Ok(Some(lease)) => {
                    let spec = lease.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                        fenced(&lease_name, "the leader lease is held by another replica");
                    }
                    if let Some(renewed) = spec.renew_time
                        && seen.as_ref() != Some(&renewed)
                    {
                        let age = std::time::SystemTime::now()
                            .duration_since(std::time::SystemTime::from(renewed.0))
                            .unwrap_or_default();
                        let until = std::time::Instant::now() + valid_for.saturating_sub(age);
                        let mut at = watched
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        *at = (*at).max(until);
                        seen = Some(renewed);
                    }
                }
                Ok(None) => fenced(&lease_name, "the leader lease is gone"),
                Err(error) => tracing::warn!(%error, "reading the leader lease failed"),
            }
            tokio::time::sleep(every).await;
        }
    };
    let clock = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let at = *deadline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if std::time::Instant::now() > at {
                fenced(
                    &name,
                    "the leader lease was not renewed in time (API server unreachable?)",
                );
            }
        }
    };
    // One future: stopping the fence (at shutdown, before the lease is released) stops both.
    tokio::select! {
        () = reader => {}
        () = clock => {}
    }
}

/// Exits so that only one replica acts; the process restarts as a standby.
fn fenced(lease: &str, why: &str) -> ! {
    tracing::error!(%lease, why, "exiting so that only one replica acts");
    std::process::exit(1);
}

/// Runs the results consumer, connecting (again) until Redis answers.
async fn consume_results(
    redis: redis::Client,
    parts: crate::results::Parts,
    config: crate::results::ResultsConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match crate::results::Consumer::new(&redis, parts.clone(), config.clone()).await {
            Ok(consumer) => return consumer.run(stop).await,
            Err(error) => {
                tracing::warn!(%error, "results consumer not started; trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// The watches of one operator: a ScanRequest controller (owning Jobs) and a ScanPolicy
/// reflector per watched namespace (or one for all namespaces).
pub struct Watches {
    controllers: Vec<Controller<ScanRequest>>,
    /// Per ScanRequest watch: whether its first full list has reached its cache.
    listed: Vec<Arc<AtomicBool>>,
    policy_stores: Vec<Store<ScanPolicy>>,
    /// Per ScanPolicy watch: the same.
    policies_listed: Vec<Arc<AtomicBool>>,
    policy_tasks: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").finish_non_exhaustive()
    }
}

impl Watches {
    /// The watches of `namespaces` (`None`: all namespaces), each reconciling at most
    /// `concurrency` requests at once. Nothing runs until [`Self::operate`].
    pub fn new(client: &kube::Client, namespaces: &[Option<String>], concurrency: u16) -> Watches {
        let mut controllers = Vec::new();
        let mut listed = Vec::new();
        let mut policy_stores = Vec::new();
        let mut policies_listed = Vec::new();
        let mut policy_tasks = Vec::new();
        for namespace in namespaces {
            let requests: Api<ScanRequest> = namespaced(client, namespace.as_deref());
            let jobs_api: Api<Job> = namespaced(client, namespace.as_deref());
            // The cache keeps what reconciles read: managedFields (about a third of a stored
            // request) and kubectl's last-applied copy are dropped on the way in.
            let (stream, reader, done) =
                listed_watch(requests, watcher::Config::default().any_semantic(), slim);
            listed.push(done);
            controllers.push(
                Controller::for_stream(stream, reader)
                    .with_config(ControllerConfig::default().concurrency(concurrency))
                    .owns(
                        jobs_api,
                        watcher::Config::default().labels(&format!(
                            "{}={}",
                            gatehouse_crds::labels::MANAGED_BY,
                            jobs::MANAGED_BY
                        )),
                    ),
            );
            // The policies' controller writes their status; its cache gives admission the
            // policies' limits and retention.
            let api: Api<ScanPolicy> = namespaced(client, namespace.as_deref());
            let (stream, reader, done) = listed_watch(api, watcher::Config::default(), |_| {});
            policies_listed.push(done);
            let policies = Controller::for_stream(stream, reader);
            policy_stores.push(policies.store());
            let client = Arc::new(client.clone());
            policy_tasks.push(
                policies
                    .run(
                        crate::policy_status::reconcile,
                        crate::policy_status::error_policy,
                        client,
                    )
                    .for_each(|_| futures::future::ready(()))
                    .boxed(),
            );
        }
        Watches {
            controllers,
            listed,
            policy_stores,
            policies_listed,
            policy_tasks,
        }
    }

    /// The ScanRequest caches (for metrics).
    pub fn request_stores(&self) -> Vec<Store<ScanRequest>> {
        self.controllers.iter().map(Controller::store).collect()
    }

    /// Reconciles until `shutdown` resolves (in-flight reconciles finish first).
    #[allow(clippy::too_many_arguments)]
    pub async fn operate(
        self,
        client: kube::Client,
        github: Arc<GitHub>,
        master_key: MasterKey,
        settings: Settings,
        metrics: Arc<Metrics>,
        identity: &str,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let ctx = Arc::new(Context::new(
            client.clone(),
            github,
            master_key,
            settings,
            self.request_stores(),
            self.listed,
            self.policy_stores,
            self.policies_listed,
            Recorder::new(
                client,
                Reporter {
                    controller: "gatehouse-operator".to_owned(),
                    instance: Some(identity.to_owned()),
                },
            ),
            metrics,
        ));
        let controllers = self.controllers.into_iter().map(|controller| {
            let mut stop = stop_rx.clone();
            controller
                .graceful_shutdown_on(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .run(controller::reconcile, controller::error_policy, ctx.clone())
                .for_each(|_| futures::future::ready(()))
        });
        let policies = futures::future::join_all(self.policy_tasks);
        tokio::select! {
            _ = futures::future::join_all(controllers) => {}
            _ = policies => {}
        }
    }
}

/// A watch of `api` into a cache, each object trimmed by `trim` on the way in, and a flag set
/// once the cache holds the first full list (kube-runtime 5's own store readiness wakes one
/// waiter only, so the stream marks its own `InitDone`).
fn listed_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
    Arc<AtomicBool>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                flag.store(true, Ordering::Release);
            }
        })
        .applied_objects();
    (stream, reader, done)
}

/// What the cache need not hold of a ScanRequest: the operator never reads managed fields or
/// kubectl's copy of the last applied object.
fn slim(request: &mut ScanRequest) {
    request.metadata.managed_fields = None;
    if let Some(annotations) = request.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn namespaced<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_text(State(health): State<Health>) -> String {
    health
        .metrics
        .render(&health.requests, health.github.rate_limit_remaining())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

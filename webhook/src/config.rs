//! Command line and environment of `gatehouse-webhook`. Every flag has an environment variable;
//! secrets are only ever read from files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Which roles this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// HTTP in, verify, store in Redis. Needs no Kubernetes access.
    Receive,
    /// Redis stream to ScanRequests. Needs Kubernetes access.
    Ingest,
    /// Both.
    All,
}

impl Role {
    /// Whether the receive role runs.
    pub fn receives(self) -> bool {
        matches!(self, Role::Receive | Role::All)
    }

    /// Whether the ingest role runs.
    pub fn ingests(self) -> bool {
        matches!(self, Role::Ingest | Role::All)
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable (terminals).
    Text,
}

/// gatehouse-webhook: receives GitHub App webhooks into a Redis stream (`receive`) and turns
/// them into ScanRequests (`ingest`).
#[derive(Clone, Debug, Parser)]
#[command(name = "gatehouse-webhook", version, about, long_about = None)]
pub struct Args {
    /// Roles to run: receive, ingest or all.
    #[arg(long, env = "GATEHOUSE_ROLE", value_enum, default_value = "all")]
    pub role: Role,

    /// Address for the webhook, health and (without --metrics-listen) metrics endpoints.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve /metrics on this address instead of the main listener.
    #[arg(long, env = "GATEHOUSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Redis URL: redis://host:port/db, or rediss:// for TLS. Put no password here; use
    /// --redis-password-file. Required.
    #[arg(long, env = "GATEHOUSE_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// File holding the Redis password (ACL user: give it in the URL as redis://user@host).
    #[arg(long, env = "GATEHOUSE_REDIS_PASSWORD_FILE", global = true)]
    pub redis_password_file: Option<PathBuf>,

    /// File(s) holding webhook secrets, one per non-empty line; repeat the flag (or separate
    /// with commas) to accept several during rotation. Reloaded on change and on SIGHUP.
    #[arg(
        long = "webhook-secret-file",
        env = "GATEHOUSE_WEBHOOK_SECRET_FILE",
        value_delimiter = ','
    )]
    pub webhook_secret_files: Vec<PathBuf>,

    /// Refuse deliveries (503) while this many stored deliveries are not yet processed by ingest
    /// (pending plus undelivered; the whole stream before any ingest has run).
    #[arg(long, env = "GATEHOUSE_MAX_BACKLOG", default_value_t = 100_000)]
    pub max_backlog: u64,

    /// How long a delivery id is remembered to recognise redeliveries, in hours (GitHub
    /// redelivers for 3 days; GitHub Enterprise Server for 7, so use 168 there).
    #[arg(long, env = "GATEHOUSE_DEDUP_TTL_HOURS", default_value_t = 72)]
    pub dedup_ttl_hours: u64,

    /// Seconds a client may take to send a request body.
    #[arg(long, env = "GATEHOUSE_BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub body_timeout_seconds: u64,

    /// Seconds a client may take to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "GATEHOUSE_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,

    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Request body memory held at once, in MiB (bodies are held before they can be verified);
    /// past it deliveries get 503 with Retry-After.
    #[arg(long, env = "GATEHOUSE_BODY_MEMORY_MIB", default_value_t = 128)]
    pub body_memory_mib: usize,

    /// Request bodies read at once; past it deliveries get 503 with Retry-After.
    #[arg(long, env = "GATEHOUSE_MAX_CONCURRENT_BODIES", default_value_t = 256)]
    pub max_concurrent_bodies: usize,

    /// Seconds between checks of the secret files for changes (SIGHUP reloads at once).
    #[arg(long, env = "GATEHOUSE_SECRET_CHECK_SECONDS", default_value_t = 10)]
    pub secret_check_seconds: u64,

    /// Seconds requests in flight may take to finish after SIGTERM.
    #[arg(long, env = "GATEHOUSE_DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,

    /// Consumer name in the ingest group; defaults to $POD_NAME, then the host name.
    #[arg(long, env = "GATEHOUSE_CONSUMER_NAME")]
    pub consumer_name: Option<String>,

    /// Pending entries idle this long (another consumer died, or processing failed) are claimed
    /// and retried, in seconds: the first retry's delay; each later one doubles, up to
    /// --max-backoff-seconds.
    #[arg(long, env = "GATEHOUSE_CLAIM_IDLE_SECONDS", default_value_t = 60)]
    pub claim_idle_seconds: u64,

    /// The longest delay between two attempts at a failing entry, in seconds.
    #[arg(long, env = "GATEHOUSE_MAX_BACKOFF_SECONDS", default_value_t = 300)]
    pub max_backoff_seconds: u64,

    /// An entry failing for a reason that may pass (API server or GitHub unavailable, timeouts,
    /// 5xx, 429) is retried until it is this many hours old, then moved to
    /// {gatehouse}:events:dead. Entries that can never succeed move there at once.
    #[arg(long, env = "GATEHOUSE_RETRY_WINDOW_HOURS", default_value_t = 24)]
    pub retry_window_hours: u64,

    /// The longest one entry's work may take, in seconds; must be below --claim-idle-seconds so
    /// no other consumer takes over an entry still being worked on. Default: 30, or half the
    /// claim idle time when that is shorter.
    #[arg(long, env = "GATEHOUSE_ENTRY_DEADLINE_SECONDS")]
    pub entry_deadline_seconds: Option<u64>,

    /// Pull request triggers older than this many days (by the pull request's updated_at) are
    /// refused, and what ingest remembers of a pull request (open or closed, latest trigger) is
    /// kept this long: a replayed old delivery cannot start a scan of a pull request closed
    /// since.
    #[arg(long, env = "GATEHOUSE_MAX_TRIGGER_AGE_DAYS", default_value_t = 30)]
    pub max_trigger_age_days: u64,

    /// Watch ScanPolicies, and look for ScanRequests, in these namespaces only (repeat or
    /// comma-separate; default: all namespaces). A namespaced installation (Roles, no
    /// ClusterRole) must name its namespaces here.
    #[arg(long, env = "GATEHOUSE_POLICY_NAMESPACE", value_delimiter = ',')]
    pub policy_namespace: Vec<String>,

    /// GitHub App id (ingest: reading pull requests for comment commands).
    #[arg(long, env = "GATEHOUSE_GITHUB_APP_ID")]
    pub github_app_id: Option<u64>,

    /// File holding the GitHub App private key (PEM).
    #[arg(long, env = "GATEHOUSE_GITHUB_PRIVATE_KEY_FILE")]
    pub github_private_key_file: Option<PathBuf>,

    /// GitHub API base URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(
        long,
        env = "GATEHOUSE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// A maintenance command instead of running the roles.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Show or replay deliveries ingest gave up on ({gatehouse}:events:dead).
    DeadLetters {
        /// What to do.
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

/// What to do with dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum DeadLetterAction {
    /// Print dead letters, oldest first, one per line: id, delivery, event, attempts, reason.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Put dead letters back on {gatehouse}:events for ingest to process again (their delivery
    /// ids are not checked against those already seen), removing them from the dead letters.
    Replay {
        /// The dead letter's id (as `list` prints it); repeat for several.
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// The configuration is unusable; the message is the one line printed at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The receive role has nothing to verify signatures with.
    #[error("--webhook-secret-file (GATEHOUSE_WEBHOOK_SECRET_FILE) is required for role receive")]
    NoSecretFile,
    /// The secrets cannot be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// No Redis URL.
    #[error("--redis-url (GATEHOUSE_REDIS_URL) is required")]
    NoRedisUrl,
    /// The Redis URL does not parse.
    #[error("invalid --redis-url: {0}")]
    RedisUrl(String),
    /// The Redis password file cannot be read.
    #[error("failed to read --redis-password-file {path}: {source}")]
    RedisPassword {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The dedup TTL is shorter than GitHub's redelivery window.
    #[error("--dedup-ttl-hours must be at least 72 (GitHub redelivers for 3 days), got {0}")]
    DedupTtl(u64),
    /// A duration too large to compute with.
    #[error("{name} is too large (at most {max}), got {value}")]
    TooLarge {
        /// The flag.
        name: &'static str,
        /// Its largest accepted value.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// The entry deadline does not leave the entry with its consumer.
    #[error(
        "--entry-deadline-seconds ({deadline}) must be below --claim-idle-seconds ({claim_idle})"
    )]
    EntryDeadline {
        /// The deadline.
        deadline: u64,
        /// The claim idle time.
        claim_idle: u64,
    },
    /// A limit that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A `--policy-namespace` that is not a namespace name.
    #[error("--policy-namespace {0:?} is not a namespace name (a DNS label)")]
    PolicyNamespace(String),
}

/// A Kubernetes namespace name: at most 63 lowercase letters, digits and `-`, starting and
/// ending with a letter or digit.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// Ten years: anything above is a typo, and every product with it stays far from overflow.
const MAX_HOURS: u64 = 10 * 366 * 24;
/// Ten years in seconds.
const MAX_SECONDS: u64 = MAX_HOURS * 3600;

impl Args {
    /// Static checks that need no network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.role.receives() && self.webhook_secret_files.is_empty() {
            return Err(ConfigError::NoSecretFile);
        }
        if self.dedup_ttl_hours < 72 {
            return Err(ConfigError::DedupTtl(self.dedup_ttl_hours));
        }
        for (name, value) in [
            ("--max-backlog", self.max_backlog),
            ("--body-timeout-seconds", self.body_timeout_seconds),
            ("--header-timeout-seconds", self.header_timeout_seconds),
            ("--max-connections", self.max_connections as u64),
            ("--body-memory-mib", self.body_memory_mib as u64),
            ("--max-concurrent-bodies", self.max_concurrent_bodies as u64),
            ("--secret-check-seconds", self.secret_check_seconds),
            ("--claim-idle-seconds", self.claim_idle_seconds),
            ("--max-backoff-seconds", self.max_backoff_seconds),
            ("--retry-window-hours", self.retry_window_hours),
            ("--max-trigger-age-days", self.max_trigger_age_days),
            (
                "--entry-deadline-seconds",
                self.entry_deadline_seconds.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value, max) in [
            ("--dedup-ttl-hours", self.dedup_ttl_hours, MAX_HOURS),
            ("--retry-window-hours", self.retry_window_hours, MAX_HOURS),
            (
                "--max-trigger-age-days",
                self.max_trigger_age_days,
                100 * 366,
            ),
            (
                "--body-timeout-seconds",
                self.body_timeout_seconds,
                MAX_SECONDS,
            ),
            ("--claim-idle-seconds", self.claim_idle_seconds, MAX_SECONDS),
            (
                "--header-timeout-seconds",
                self.header_timeout_seconds,
                MAX_SECONDS,
            ),
            (
                "--secret-check-seconds",
                self.secret_check_seconds,
                MAX_SECONDS,
            ),
            ("--drain-seconds", self.drain_seconds, MAX_SECONDS),
            // A body can be at most 26 MiB; a budget beyond 64 GiB is a typo.
            ("--body-memory-mib", self.body_memory_mib as u64, 64 * 1024),
            // Each is a semaphore permit (at most 2^61 - 1); a million is far past any pod.
            ("--max-connections", self.max_connections as u64, 1_000_000),
            (
                "--max-concurrent-bodies",
                self.max_concurrent_bodies as u64,
                1_000_000,
            ),
            (
                "--max-backoff-seconds",
                self.max_backoff_seconds,
                MAX_SECONDS,
            ),
            (
                "--entry-deadline-seconds",
                self.entry_deadline_seconds.unwrap_or(0),
                MAX_SECONDS,
            ),
        ] {
            if value > max {
                return Err(ConfigError::TooLarge { name, max, value });
            }
        }
        if let Some(deadline) = self.entry_deadline_seconds
            && deadline >= self.claim_idle_seconds
        {
            return Err(ConfigError::EntryDeadline {
                deadline,
                claim_idle: self.claim_idle_seconds,
            });
        }
        if let Some(bad) = self.policy_namespace.iter().find(|ns| !is_dns_label(ns)) {
            return Err(ConfigError::PolicyNamespace(bad.clone()));
        }
        Ok(())
    }

    /// The Redis connection info, with the password from its file.
    pub fn redis_client(&self) -> Result<redis::Client, ConfigError> {
        let mut info: redis::ConnectionInfo = self
            .redis_url
            .as_deref()
            .ok_or(ConfigError::NoRedisUrl)?
            .parse()
            .map_err(|e: redis::RedisError| ConfigError::RedisUrl(e.to_string()))?;
        if let Some(path) = &self.redis_password_file {
            let password =
                std::fs::read_to_string(path).map_err(|source| ConfigError::RedisPassword {
                    path: path.clone(),
                    source,
                })?;
            let redis_settings = info.redis_settings().clone().set_password(password.trim());
            info = info.set_redis_settings(redis_settings);
        }
        redis::Client::open(info).map_err(|e| ConfigError::RedisUrl(e.to_string()))
    }

    /// Dedup TTL.
    pub fn dedup_ttl(&self) -> Duration {
        Duration::from_secs(self.dedup_ttl_hours.saturating_mul(3600))
    }

    /// The per-entry deadline: as given, else 30 s or half the claim idle time if shorter.
    pub fn entry_deadline(&self) -> Duration {
        self.entry_deadline_seconds.map_or_else(
            || crate::ingest::ENTRY_DEADLINE.min(Duration::from_secs(self.claim_idle_seconds) / 2),
            Duration::from_secs,
        )
    }

    /// The body memory budget, in bytes.
    pub fn body_memory_bytes(&self) -> usize {
        self.body_memory_mib.saturating_mul(1024 * 1024)
    }

    /// The oldest pull request trigger accepted, and how long pull request records are kept.
    pub fn max_trigger_age(&self) -> Duration {
        Duration::from_secs(self.max_trigger_age_days.saturating_mul(86_400))
    }

    /// Retry window.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.retry_window_hours.saturating_mul(3600))
    }

    /// This process's consumer name in the ingest group.
    pub fn consumer(&self) -> String {
        self.consumer_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("ingest-{}", std::process::id()))
    }
}

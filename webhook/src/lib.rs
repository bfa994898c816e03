//! gatehouse-webhook: receives GitHub App webhook deliveries, verifies them and buffers them in
//! the `{gatehouse}:events` Redis stream (`receive` role), then turns them into ScanRequests
//! (`ingest` role). It never talks to GitHub in the request path and never creates Jobs.

pub mod config;
pub mod dead_letters;
pub mod events;
pub mod ingest;
pub mod metrics;
pub mod receive;
pub mod secrets;
pub mod serve;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use config::{Args, DeadLetterAction, LogFormat};

/// Sets up logging: JSON lines or human text, level from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// How long ingest's XREADGROUP blocks waiting for new entries.
pub const INGEST_BLOCK: Duration = Duration::from_secs(2);

/// Connects to Redis with automatic reconnection; retries until Redis answers once.
///
/// Each role gets its own connection: a multiplexed connection runs commands in order, so the
/// ingest role's blocking XREADGROUP would hold up every delivery the receive role stores on the
/// same connection. `response_timeout` must exceed any blocking time used on the connection.
pub async fn connect_redis(client: redis::Client, response_timeout: Duration) -> ConnectionManager {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(response_timeout));
    let mut delay = Duration::from_millis(200);
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "redis not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub use gatehouse_crds::stream_group::unix_millis;

/// Runs `dead-letters list | replay`, printing to stdout.
pub async fn dead_letters_command(
    client: redis::Client,
    action: &DeadLetterAction,
) -> anyhow::Result<()> {
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("redis did not answer within 10 s")?
    .context("failed to connect to redis")?;
    match action {
        DeadLetterAction::List { count } => {
            let letters = dead_letters::list(&mut conn, None, *count).await?;
            for letter in &letters {
                println!("{}", letter.line());
            }
            eprintln!("{} dead letter(s) shown", letters.len());
        }
        DeadLetterAction::Replay { ids, all } => {
            let replayed = if *all {
                dead_letters::replay_all(&mut conn).await?
            } else {
                let mut replayed = Vec::new();
                for id in ids {
                    replayed.push((id.clone(), dead_letters::replay(&mut conn, id).await?));
                }
                replayed
            };
            for (dead, new) in &replayed {
                println!("replayed {dead} as {new}");
            }
            eprintln!("{} dead letter(s) replayed", replayed.len());
        }
    }
    Ok(())
}

/// Runs the configured roles until SIGTERM or Ctrl-C.
///
/// Listeners are bound first, before Redis or Kubernetes answer, so `/healthz` works (and
/// deliveries get 503) while dependencies are still coming up. SIGTERM during start-up ends the
/// process cleanly. Once running, any task that ends on its own (a listener error, the policy
/// watch) is an error: the process exits non-zero so Kubernetes restarts it. On SIGTERM the
/// listeners stop accepting, requests in flight finish (within `--drain-seconds`), and the
/// process exits at once.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // SIGHUP's default action ends the process: take it over before anything can wait (Redis,
    // the Kubernetes API), so a reload signal during start-up is harmless. Tokio keeps the
    // handler for the life of the process; the roles listen for the signal themselves.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("failed to install the SIGHUP handler")?;
    drop(hangup);
    let redis_client = args.redis_client()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut running = Running::default();
    let stopped_during_start = {
        let started = start(&args, redis_client, &metrics, &stop_rx, &mut running);
        tokio::select! {
            result = started => {
                result?;
                false
            }
            () = &mut shutdown => true,
        }
    };
    if stopped_during_start {
        // The listener may already take deliveries (receive is up while ingest still waits for
        // the Kubernetes API): let them finish like any other stop.
        tracing::info!("stopped during start-up");
        stop(running, &stop_tx).await;
        return Ok(());
    }
    supervise(running, shutdown, &stop_tx).await
}

/// Signals `stop`, lets the listeners drain their requests in flight and end, and stops the
/// rest: nothing else needs to finish (ingest stops where it is: an unacknowledged entry is
/// claimed by another consumer).
async fn stop(mut running: Running, stop: &tokio::sync::watch::Sender<bool>) {
    let _ = stop.send(true);
    while running.servers.join_next().await.is_some() {}
    running.workers.shutdown().await;
    running.helpers.shutdown().await;
}

/// Runs until `shutdown` (Ok) or until any task ends on its own (an error: nothing of a running
/// process ends by itself); then signals `stop`, lets the listeners drain and end, and stops the
/// rest.
async fn supervise(
    mut running: Running,
    shutdown: impl std::future::Future<Output = ()>,
    stop: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let outcome = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(done) = running.servers.join_next() => Err(ended(done)),
        Some(done) = running.workers.join_next() => Err(ended(done)),
    };
    self::stop(running, stop).await;
    outcome
}

fn ended(done: Result<&'static str, tokio::task::JoinError>) -> anyhow::Error {
    match done {
        Ok(name) => anyhow::anyhow!("{name} ended unexpectedly"),
        Err(e) => anyhow::anyhow!("a task failed: {e}"),
    }
}

/// The tasks of a running process.
#[derive(Default)]
struct Running {
    /// Listeners: they end after the stop signal, once drained; earlier is a failure.
    servers: tokio::task::JoinSet<&'static str>,
    /// Loops that never end (ingest, watches, reloads); ending is a failure.
    workers: tokio::task::JoinSet<&'static str>,
    /// Tasks that end when done (connecting to Redis).
    helpers: tokio::task::JoinSet<()>,
}

/// Binds the listeners, then starts the roles.
async fn start(
    args: &Args,
    redis_client: redis::Client,
    metrics: &Arc<metrics::Metrics>,
    stop: &tokio::sync::watch::Receiver<bool>,
    running: &mut Running,
) -> anyhow::Result<()> {
    let limits = serve::Limits {
        header_timeout: Duration::from_secs(args.header_timeout_seconds),
        max_connections: args.max_connections,
        drain: Duration::from_secs(args.drain_seconds),
    };
    // Ready while progress was made within the longest work on a batch entry plus a read.
    let health = Arc::new(ingest::Health::new(
        Duration::from_secs(args.claim_idle_seconds) + INGEST_BLOCK * 3,
    ));
    let main_router = if args.role.receives() {
        let verifier = secrets::SharedVerifier::load(args.webhook_secret_files.clone())?;
        tracing::info!(secrets = verifier.get().len(), "webhook secrets loaded");
        running.workers.spawn({
            let verifier = verifier.clone();
            let every = Duration::from_secs(args.secret_check_seconds);
            async move {
                verifier.watch(every).await;
                "secret reloading"
            }
        });
        let writer = receive::Writer::default();
        running.helpers.spawn({
            let writer = writer.clone();
            let client = redis_client.clone();
            let (backlog, ttl) = (args.max_backlog, args.dedup_ttl());
            async move {
                let conn = connect_redis(client, Duration::from_secs(5)).await;
                warn_unless_noeviction(&conn).await;
                writer.set(events::EventWriter::new(conn, backlog, ttl));
                tracing::info!("redis connected (receive)");
            }
        });
        let state = receive::ReceiveState {
            verifier,
            writer,
            metrics: Arc::clone(metrics),
            body_timeout: Duration::from_secs(args.body_timeout_seconds),
            budget: Arc::new(receive::BodyBudget::new(
                args.body_memory_bytes(),
                args.max_concurrent_bodies,
            )),
        };
        if let Some(addr) = args.metrics_listen {
            let listener = bind(addr).await?;
            spawn_server(
                running,
                "metrics listener",
                listener,
                receive::metrics_router(state.clone()),
                limits,
                stop,
            );
        }
        tracing::info!(listen = %args.listen, "receiving webhooks on POST /webhook");
        receive::router(state, args.metrics_listen.is_none())
    } else {
        tracing::info!(listen = %args.listen, "serving /healthz, /readyz and /metrics");
        ingest::health_router(Arc::clone(&health), Arc::clone(metrics))
    };
    let listener = bind(args.listen).await?;
    spawn_server(running, "listener", listener, main_router, limits, stop);
    if args.role.ingests() {
        // Its own connection: its blocking reads must not delay receive's writes.
        let conn = connect_redis(redis_client, INGEST_BLOCK * 3).await;
        warn_unless_noeviction(&conn).await;
        tracing::info!("redis connected (ingest)");
        start_ingest(args, conn, Arc::clone(metrics), health, running).await?;
    }
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr}"))
}

fn spawn_server(
    running: &mut Running,
    name: &'static str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: serve::Limits,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    let connections = Arc::new(serve::Connections::default());
    running.servers.spawn(async move {
        let signal = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        serve::serve(listener, router, limits, connections, signal).await;
        name
    });
}

/// Warns when Redis may evict keys: the stream, pending entries and delivery ids must never be
/// evicted (acknowledged deliveries would be lost, or stored twice). Managed Redis that hides
/// `INFO` gets no warning.
async fn warn_unless_noeviction(conn: &ConnectionManager) {
    let mut conn = conn.clone();
    let info: Result<String, _> = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await;
    let Ok(info) = info else {
        return;
    };
    if let Some(policy) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("maxmemory_policy:"))
        && policy != "noeviction"
    {
        tracing::warn!(
            maxmemory_policy = policy,
            "redis may evict keys under memory pressure; set maxmemory-policy noeviction, or deliveries can be lost"
        );
    }
}

/// Timeouts for a Kubernetes client whose every call is awaited by ingest's work on an entry:
/// connecting, and each read and write on the connection, so one half-open connection fails the
/// call (and the entry is retried) instead of hanging.
pub fn with_call_timeouts(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    config.write_timeout = Some(Duration::from_secs(15));
    config
}

/// Watches ScanPolicies, connects to GitHub when configured, and starts the consumer loop.
async fn start_ingest(
    args: &Args,
    conn: ConnectionManager,
    metrics: Arc<metrics::Metrics>,
    health: Arc<ingest::Health>,
    running: &mut Running,
) -> anyhow::Result<()> {
    let config = kube::Config::infer()
        .await
        .context("role ingest needs Kubernetes access (in-cluster or a kubeconfig)")?;
    // The policy watch keeps kube's defaults (its reads idle up to the watch timeout); the
    // writes ingest waits on get short timeouts.
    let client =
        kube::Client::try_from(config.clone()).context("failed to build the Kubernetes client")?;
    let writer = kube::Client::try_from(with_call_timeouts(config))
        .context("failed to build the Kubernetes client")?;
    let (store, watch) = ingest::watch_policies_in(&client, &args.policy_namespace);
    running.workers.spawn(async move {
        watch.await;
        "ScanPolicy watch"
    });
    // Acting before the first list completed would mistake every pull request for uncovered.
    store
        .wait_until_ready()
        .await
        .context("the ScanPolicy watch stopped before its first list")?;
    health.policies_synced();
    tracing::info!(policies = store.state().len(), "ScanPolicies loaded");

    let github = if let (Some(app_id), Some(key_file)) =
        (&args.github_app_id, &args.github_private_key_file)
    {
        let key = std::fs::read(key_file).with_context(|| {
            format!(
                "failed to read --github-private-key-file {}",
                key_file.display()
            )
        })?;
        let github = Arc::new(ingest::github::GitHub::new(
            *app_id,
            &key,
            &args.github_api_url,
        )?);
        running.workers.spawn(reload_github_key_on_hangup(
            Arc::clone(&github),
            key_file.clone(),
        ));
        Some(github)
    } else {
        tracing::warn!(
            "no GitHub App credentials: /gatehouse comment commands and re-runs of deleted scans are ignored"
        );
        None
    };
    let memory = ingest::state::Memory::new(conn.clone(), args.max_trigger_age());
    let applier = ingest::apply::Applier::new(writer, store, memory, github);
    let consumer = ingest::consumer::Consumer::new(
        conn,
        ingest::consumer::ConsumerConfig {
            name: args.consumer(),
            claim_idle: Duration::from_secs(args.claim_idle_seconds),
            max_backoff: Duration::from_secs(args.max_backoff_seconds),
            retry_window: args.retry_window(),
            batch: 32,
            block: INGEST_BLOCK,
        },
    )
    .await?;
    tracing::info!(consumer = %args.consumer(), "ingesting from {{gatehouse}}:events");
    let ingest = ingest::Ingest::new(applier, metrics)
        .with_entry_deadline(args.entry_deadline())
        .with_health(health);
    running.workers.spawn(async move {
        ingest.run(consumer).await;
        "ingest"
    });
    Ok(())
}

/// Re-reads the GitHub App private key on SIGHUP (a rotated key); a key that does not load
/// leaves the old one in use.
async fn reload_github_key_on_hangup(
    github: Arc<ingest::github::GitHub>,
    key_file: std::path::PathBuf,
) -> &'static str {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        std::future::pending::<()>().await;
        return "GitHub key reloading";
    };
    while hangup.recv().await.is_some() {
        let reloaded = std::fs::read(&key_file)
            .map_err(|e| e.to_string())
            .and_then(|key| github.reload_key(&key).map_err(|e| e.to_string()));
        if let Err(e) = reloaded {
            tracing::error!(file = %key_file.display(), error = %e, "GitHub App private key not reloaded; keeping the previous one");
        } else {
            tracing::info!(file = %key_file.display(), "GitHub App private key reloaded");
        }
    }
    "GitHub key reloading"
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_on_its_own_fails_the_process() {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let mut running = Running::default();
        running.workers.spawn(async { "ScanPolicy watch" });
        running.servers.spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            "listener"
        });
        let outcome = supervise(running, std::future::pending(), &stop).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "ScanPolicy watch ended unexpectedly"
        );
        assert!(*stop.borrow(), "the listeners were told to stop");
    }

    #[tokio::test]
    async fn shutdown_drains_the_listeners_and_stops_the_rest() {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let mut running = Running::default();
        running.workers.spawn(async {
            std::future::pending::<()>().await;
            "ingest"
        });
        running.servers.spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            "listener"
        });
        supervise(running, async {}, &stop).await.unwrap();
    }
}

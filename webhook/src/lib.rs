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
pub async fn run(args: Args) -> anyhow::Result<()> {
    let redis_client = args.redis_client()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if args.role.receives() {
        let conn = connect_redis(redis_client.clone(), Duration::from_secs(5)).await;
        tracing::info!("redis connected (receive)");
        let verifier = secrets::SharedVerifier::load(args.webhook_secret_files.clone())?;
        tracing::info!(secrets = verifier.get().len(), "webhook secrets loaded");
        tasks.spawn(verifier.clone().watch(Duration::from_secs(10)));
        let state = receive::ReceiveState {
            verifier,
            writer: events::EventWriter::new(conn, args.max_backlog, args.dedup_ttl()),
            metrics: Arc::clone(&metrics),
            body_timeout: Duration::from_secs(args.body_timeout_seconds),
        };
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on {addr}"))?;
            let router = receive::metrics_router(state.clone());
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        // Answers are small and latency-bound: do not let Nagle hold them back.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tracing::info!(listen = %args.listen, "receiving webhooks on POST /webhook");
        let router = receive::router(state, args.metrics_listen.is_none());
        let mut stopping = stop_rx.clone();
        tasks.spawn(async move {
            let graceful = async move {
                let _ = stopping.changed().await;
            };
            // In-flight deliveries finish (and get their answer) before the listener closes.
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!(error = %e, "webhook listener failed");
            }
        });
    }
    if args.role.ingests() {
        // Its own connection: its blocking reads must not delay receive's writes.
        let ingest_conn = connect_redis(redis_client.clone(), INGEST_BLOCK * 3).await;
        tracing::info!("redis connected (ingest)");
        let ingest = start_ingest(&args, ingest_conn, Arc::clone(&metrics), &mut tasks).await?;
        tasks.spawn(ingest);
    }
    tokio::select! {
        () = &mut shutdown => tracing::info!("shutting down"),
        Some(done) = tasks.join_next() => {
            if let Err(e) = done {
                anyhow::bail!("a task failed: {e}");
            }
        }
    }
    // Let in-flight requests finish, for at most a few seconds; ingest stops where it is (an
    // unacknowledged entry is claimed by another consumer).
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = tasks.join_next().await {
            if done.is_err() {
                break;
            }
        }
    })
    .await;
    Ok(())
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

/// Watches ScanPolicies, connects to GitHub when configured, and returns the consumer loop.
async fn start_ingest(
    args: &Args,
    conn: ConnectionManager,
    metrics: Arc<metrics::Metrics>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<impl std::future::Future<Output = ()> + use<>> {
    let config = kube::Config::infer()
        .await
        .context("role ingest needs Kubernetes access (in-cluster or a kubeconfig)")?;
    // The policy watch keeps kube's defaults (its reads idle up to the watch timeout); the
    // writes ingest waits on get short timeouts.
    let client =
        kube::Client::try_from(config.clone()).context("failed to build the Kubernetes client")?;
    let writer = kube::Client::try_from(with_call_timeouts(config))
        .context("failed to build the Kubernetes client")?;
    let policies: kube::Api<gatehouse_crds::ScanPolicy> = match &args.policy_namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let (store, watch) = ingest::watch_policies(policies);
    tasks.spawn(watch);
    // Acting before the first list completed would mistake every pull request for uncovered.
    store
        .wait_until_ready()
        .await
        .context("the ScanPolicy watch stopped before its first list")?;
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
        Some(Arc::new(ingest::github::GitHub::new(
            *app_id,
            &key,
            &args.github_api_url,
        )?))
    } else {
        tracing::warn!(
            "no GitHub App credentials: /gatehouse comment commands and re-runs of deleted scans are ignored"
        );
        None
    };
    let memory = ingest::state::Memory::new(conn.clone());
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
    Ok(ingest::Ingest::new(applier, metrics)
        .with_entry_deadline(args.entry_deadline())
        .run(consumer))
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

//! The `ingest` role: reads `{gatehouse}:events` as consumer group `ingest` and turns deliveries
//! into ScanRequests. Entries are acknowledged only after their work is done (or found to be
//! nothing); failures stay pending and are retried, and after too many attempts an entry moves to
//! `{gatehouse}:events:dead` with the reason.

pub mod apply;
pub mod consumer;
pub mod github;
pub mod payload;
pub mod plan;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_crds::stream::EventEntry;
use tracing::Instrument as _;

use crate::metrics::{Metrics, event_label};
use apply::{Applier, Delivery};
use consumer::{Consumer, Handled};

/// The ScanPolicies ingest selects from: one reflector store per watched namespace (or one for
/// all namespaces), and the namespaces ScanRequests are looked for in.
#[derive(Clone)]
pub struct Policies {
    stores: Vec<kube::runtime::reflector::Store<gatehouse_crds::ScanPolicy>>,
    namespaces: Option<Vec<String>>,
}

impl From<kube::runtime::reflector::Store<gatehouse_crds::ScanPolicy>> for Policies {
    /// Policies of every namespace, from one store.
    fn from(store: kube::runtime::reflector::Store<gatehouse_crds::ScanPolicy>) -> Policies {
        Policies {
            stores: vec![store],
            namespaces: None,
        }
    }
}

impl Policies {
    /// Every policy held now, from every store.
    pub fn state(&self) -> Vec<Arc<gatehouse_crds::ScanPolicy>> {
        self.stores
            .iter()
            .flat_map(kube::runtime::reflector::Store::state)
            .collect()
    }

    /// The namespaces watched, or `None` for all: ScanRequests are listed in these only (a
    /// namespaced installation has no right to list them cluster-wide).
    pub fn namespaces(&self) -> Option<&[String]> {
        self.namespaces.as_deref()
    }

    /// Waits until every store holds its first full list.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        for store in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Policies of `namespaces` (all namespaces when empty), kept current by one watch per
/// namespace, and the task that runs the watches (spawn it; wait for
/// `policies.wait_until_ready()` before selecting policies).
pub fn watch_policies_in(
    client: &kube::Client,
    namespaces: &[String],
) -> (
    Policies,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    if namespaces.is_empty() {
        let (store, task) = watch_policies(kube::Api::all(client.clone()));
        return (store.into(), futures::future::Either::Left(task));
    }
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for namespace in namespaces {
        let (store, task) = watch_policies(kube::Api::namespaced(client.clone(), namespace));
        stores.push(store);
        tasks.push(task);
    }
    let all = async move {
        futures::future::join_all(tasks).await;
    };
    (
        Policies {
            stores,
            namespaces: Some(namespaces.to_vec()),
        },
        futures::future::Either::Right(all),
    )
}

/// A store of the ScanPolicies `api` reaches, kept current by a watch, and the task that keeps
/// it so (spawn it; wait for `store.wait_until_ready()` before selecting policies).
pub fn watch_policies(
    api: kube::Api<gatehouse_crds::ScanPolicy>,
) -> (
    kube::runtime::reflector::Store<gatehouse_crds::ScanPolicy>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, reflector, watcher};
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = stream.for_each(|policy| async move {
        if let Err(e) = policy {
            tracing::warn!(error = %e, "ScanPolicy watch error; retrying");
        }
    });
    (store, task)
}

/// What the ingest role's `/readyz` reports: the ScanPolicy cache has synced, and the consumer
/// loop made progress (read the stream, or finished an entry) recently.
#[derive(Debug)]
pub struct Health {
    synced: AtomicBool,
    last_progress_ms: AtomicU64,
    stale_after: Duration,
}

impl Default for Health {
    fn default() -> Health {
        Health::new(Duration::from_secs(90))
    }
}

impl Health {
    /// Not ready until synced, nor when no progress was made for `stale_after` (it must exceed
    /// the longest work on one entry plus a blocking read).
    pub fn new(stale_after: Duration) -> Health {
        Health {
            synced: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            stale_after,
        }
    }

    /// The ScanPolicy cache has listed every policy.
    pub fn policies_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// The consumer loop made progress now.
    pub fn progress(&self) {
        self.last_progress_ms
            .store(crate::unix_millis(), Ordering::Relaxed);
    }

    /// Ready, or why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.synced.load(Ordering::Relaxed) {
            return Err("ScanPolicy cache not synced yet");
        }
        let last = self.last_progress_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("the stream has not been read yet");
        }
        let stale = u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        if crate::unix_millis().saturating_sub(last) > stale {
            return Err("no progress reading the stream recently");
        }
        Ok(())
    }
}

/// `/healthz`, `/readyz` and `/metrics` of the ingest-only role.
pub fn health_router(health: Arc<Health>, metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = Arc::clone(&health);
                async move {
                    match health.ready() {
                        Ok(()) => (StatusCode::OK, "ok").into_response(),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render_own(),
                    )
                }
            }),
        )
}

/// Handles decoded entries.
#[derive(Debug, Clone)]
pub struct Ingest {
    applier: Applier,
    metrics: Arc<Metrics>,
    entry_deadline: Duration,
    health: Arc<Health>,
}

/// The longest one entry's work may take by default (each Kubernetes and GitHub call also has
/// its own timeouts).
pub const ENTRY_DEADLINE: Duration = Duration::from_secs(30);

impl Ingest {
    /// An ingest handler.
    pub fn new(applier: Applier, metrics: Arc<Metrics>) -> Ingest {
        Ingest {
            applier,
            metrics,
            entry_deadline: ENTRY_DEADLINE,
            health: Arc::default(),
        }
    }

    /// The same handler reporting its progress to `health`.
    #[must_use]
    pub fn with_health(mut self, health: Arc<Health>) -> Ingest {
        self.health = health;
        self
    }

    /// The same handler with another per-entry deadline (it is also kept below the claim idle
    /// time).
    #[must_use]
    pub fn with_entry_deadline(mut self, deadline: Duration) -> Ingest {
        self.entry_deadline = deadline;
        self
    }

    /// Does the work one entry asks for. Every log line carries the delivery id and event.
    pub async fn handle(&self, entry: &EventEntry) -> Handled {
        let span =
            tracing::info_span!("ingest", delivery = %entry.delivery_id, event = %entry.event);
        self.handle_in_span(entry).instrument(span).await
    }

    async fn handle_in_span(&self, entry: &EventEntry) -> Handled {
        let event = event_label(&entry.event);
        let payload = match crate::events::payload(entry) {
            Ok(payload) => payload,
            Err(reason) => {
                self.metrics.ingested(event, "malformed");
                return Handled::Dead(reason);
            }
        };
        let (common, intent) = match plan::plan(&entry.event, &entry.delivery_id, &payload) {
            Ok(planned) => planned,
            Err(e) => {
                self.metrics.ingested(event, "malformed");
                return Handled::Dead(e.to_string());
            }
        };
        let delivery = Delivery {
            id: entry.delivery_id.clone(),
            trigger: plan::trigger(&entry.event, &entry.delivery_id, &common),
        };
        match self.applier.apply(intent, &delivery).await {
            Ok(outcome) => {
                tracing::debug!(outcome = ?outcome, "entry handled");
                self.metrics.ingested(event, outcome.label());
                Handled::Done
            }
            Err(e) if e.is_transient() => {
                self.metrics.ingested(event, "retry");
                Handled::Retry(e.to_string())
            }
            Err(e) => {
                self.metrics.ingested(event, "failed");
                Handled::Dead(e.to_string())
            }
        }
    }

    /// Consumes entries until the task is dropped. Redis errors are logged and retried with
    /// backoff; nothing is acknowledged that was not handled.
    pub async fn run(self, mut consumer: Consumer) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let batch = match consumer.next_batch().await {
                Ok(batch) => {
                    backoff = Duration::from_millis(200);
                    self.health.progress();
                    batch
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "ingest cannot read the stream");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            for event in consumer.take_expired() {
                self.metrics.ingested(event_label(&event), "dead_lettered");
            }
            let read_at = consumer.read_at();
            let claim_idle = consumer.config().claim_idle;
            for pending in batch {
                // Every entry of the batch is pending with this consumer from the read on; once
                // it has been idle for claim_idle another consumer may take it over. Work on an
                // entry ends before that (a half-open connection cannot hold it longer), and
                // what the batch has no time left for stays pending for the next claim.
                let left = claim_idle
                    .saturating_sub(read_at.elapsed())
                    .saturating_sub(claim_idle / 10);
                if left < claim_idle / 4 {
                    tracing::info!(entry = %pending.id(), delivery = pending.delivery(), "batch out of time; entry left pending for the next claim");
                    continue;
                }
                let handled = match &pending.entry {
                    Ok(entry) => {
                        let deadline = left.min(self.entry_deadline);
                        if let Ok(handled) =
                            tokio::time::timeout(deadline, self.handle(entry)).await
                        {
                            handled
                        } else {
                            self.metrics.ingested(event_label(&entry.event), "timeout");
                            Handled::Retry(format!(
                                "not handled within {:.1}s (a Kubernetes or GitHub call hung)",
                                deadline.as_secs_f64()
                            ))
                        }
                    }
                    Err(reason) => {
                        self.metrics.ingested("other", "malformed");
                        Handled::Dead(reason.clone())
                    }
                };
                if let Err(e) = consumer.settle(&pending, handled).await {
                    // Not acknowledged: it stays pending and is claimed again later.
                    tracing::warn!(entry = %pending.id(), delivery = pending.delivery(), error = %e, "entry not settled; it will be retried");
                }
                self.health.progress();
            }
        }
    }
}

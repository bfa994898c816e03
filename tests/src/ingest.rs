//! A whole front door for a test: private Redis, the receive role on loopback, the Kubernetes API
//! emulator, a wiremock "GitHub", and ingest consumers started on demand.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_webhook::ingest::apply::Applier;
use gatehouse_webhook::ingest::consumer::{Consumer, ConsumerConfig};
use gatehouse_webhook::ingest::github::GitHub;
use gatehouse_webhook::ingest::{Ingest, watch_policies};
use gatehouse_webhook::metrics::Metrics;
use kube::api::{Api, PostParams};

use crate::webhook::{Receiver, ReceiverOptions};
use crate::{KubeEmulator, RedisServer};

/// The test App's installation id and private key (`tests/fixtures/github-app`).
pub const INSTALLATION_ID: i64 = 1;
/// App id of the test App.
pub const APP_ID: u64 = 4242;

/// Everything ingest talks to, running.
pub struct Harness {
    /// Redis.
    pub redis: RedisServer,
    /// Kubernetes.
    pub k8s: KubeEmulator,
    /// The receive role.
    pub receiver: Receiver,
    /// GitHub's REST API, mocked.
    pub github: wiremock::MockServer,
    /// Metrics shared by the ingest consumers.
    pub metrics: Arc<Metrics>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    policy_watch: tokio::task::JoinHandle<()>,
    applier: Applier,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.consumers {
            task.abort();
        }
        self.policy_watch.abort();
    }
}

impl Harness {
    /// Starts everything but the consumers; `policies` are created before policy watching starts.
    pub async fn start(policies: Vec<ScanPolicy>) -> anyhow::Result<Harness> {
        let redis = RedisServer::start_with(crate::RedisOptions { append_only: true })?;
        let k8s = KubeEmulator::start().await?;
        for policy in policies {
            let ns = policy.metadata.namespace.clone().unwrap_or_default();
            Api::<ScanPolicy>::namespaced(k8s.client(), &ns)
                .create(&PostParams::default(), &policy)
                .await?;
        }
        let receiver = Receiver::start(&redis, ReceiverOptions::default()).await?;
        let github_server = wiremock::MockServer::start().await;
        let key = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/github-app/test-app-key.pem"
        ))?;
        let github = Arc::new(GitHub::new(APP_ID, &key, &github_server.uri())?);
        let (store, watch) = watch_policies(Api::all(k8s.client()));
        let policy_watch = tokio::spawn(watch);
        tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await??;
        let applier = Applier::new(k8s.client(), store, Some(github));
        Ok(Harness {
            redis,
            k8s,
            receiver,
            github: github_server,
            metrics: Arc::new(Metrics::default()),
            consumers: Vec::new(),
            policy_watch,
            applier,
        })
    }

    /// The ingest handler the consumers use (to play a consumer by hand).
    pub fn ingest(&self) -> Ingest {
        Ingest::new(self.applier.clone(), Arc::clone(&self.metrics))
    }

    /// A consumer connection with test-friendly timings.
    pub async fn consumer(&self, name: &str, claim_idle: Duration) -> anyhow::Result<Consumer> {
        let conn = gatehouse_webhook::connect_redis(
            redis::Client::open(self.redis.url())?,
            gatehouse_webhook::INGEST_BLOCK * 3,
        )
        .await;
        Ok(Consumer::new(
            conn,
            ConsumerConfig {
                name: name.to_owned(),
                claim_idle,
                max_attempts: 3,
                batch: 16,
                block: Duration::from_millis(100),
            },
        )
        .await?)
    }

    /// Starts an ingest consumer in the background.
    pub async fn start_consumer(&mut self, name: &str, claim_idle: Duration) -> anyhow::Result<()> {
        let consumer = self.consumer(name, claim_idle).await?;
        self.consumers
            .push(tokio::spawn(self.ingest().run(consumer)));
        Ok(())
    }

    /// ScanRequests in a namespace, by name.
    pub async fn scan_requests(&self, namespace: &str) -> Vec<ScanRequest> {
        Api::<ScanRequest>::namespaced(self.k8s.client(), namespace)
            .list(&kube::api::ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// A Redis connection for inspecting streams.
    #[allow(clippy::expect_used)] // test support: an unreachable local Redis is a failed test
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .expect("redis URL of the test server")
            .get_multiplexed_async_connection()
            .await
            .expect("connection to the test redis-server")
    }

    /// Entries delivered to the ingest group and not acknowledged.
    pub async fn pending(&self) -> u64 {
        let mut conn = self.redis_conn().await;
        let reply: redis::streams::StreamPendingReply = redis::AsyncCommands::xpending(
            &mut conn,
            gatehouse_crds::stream::EVENTS_STREAM,
            gatehouse_crds::stream::INGEST_GROUP,
        )
        .await
        .unwrap_or(redis::streams::StreamPendingReply::Empty);
        u64::try_from(reply.count()).unwrap_or(u64::MAX)
    }

    /// Mocks GitHub's token endpoint and `GET /repos/{owner}/{repo}/pulls/{number}`.
    pub async fn mock_pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: i64,
        pull_request: serde_json::Value,
    ) {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{INSTALLATION_ID}/access_tokens"
            )))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "token": "ghs_test_installation_token",
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": {"pull_requests": "read", "checks": "write", "contents": "read"},
                "repository_selection": "selected",
            })))
            .mount(&self.github)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/repos/{owner}/{repo}/pulls/{number}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(pull_request))
            .mount(&self.github)
            .await;
    }
}

/// Polls `check` until it holds; fails after a generous bound (a wait, not a timing claim).
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for: {what}")
}

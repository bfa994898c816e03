//! A whole front door for a test: private Redis, the receive role on loopback, the Kubernetes API
//! emulator, a wiremock "GitHub", and ingest consumers started on demand.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_crds::stream::EVENTS_STREAM;
use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_webhook::ingest::apply::Applier;
use gatehouse_webhook::ingest::consumer::{Consumer, ConsumerConfig};
use gatehouse_webhook::ingest::github::GitHub;
use gatehouse_webhook::ingest::state::Memory;
use gatehouse_webhook::ingest::{Ingest, watch_policies_in};
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
    github_model: std::sync::Mutex<GitHubModel>,
    /// Retry window of consumers started from now on (long by default).
    pub retry_window: Duration,
    /// The longest wait between attempts of consumers started from now on (default: twice
    /// their claim idle time).
    pub max_backoff: Option<Duration>,
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
        Harness::start_in(policies, &[]).await
    }

    /// Starts everything but the consumers, with ingest limited to `namespaces` (all when
    /// empty), as `--policy-namespace` does; `policies` are created first, wherever they are.
    pub async fn start_in(
        policies: Vec<ScanPolicy>,
        namespaces: &[&str],
    ) -> anyhow::Result<Harness> {
        // Redis as the Helm chart runs it: the default user off, the receive role and ingest
        // as `gatehouse` with the chart's rules (a permission they lack fails the test), the
        // test's own looks (`redis_conn`) as an administrator.
        let redis = RedisServer::start_with(crate::RedisOptions {
            append_only: true,
            acl: true,
            ..Default::default()
        })?;
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
        let namespaces: Vec<String> = namespaces.iter().map(|&n| n.to_owned()).collect();
        let (store, watch) = watch_policies_in(&k8s.client(), &namespaces);
        let policy_watch = tokio::spawn(watch);
        tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await??;
        // The fixtures are from 2019: accept triggers of any age (a test of the default limit
        // builds its own memory).
        let memory = Memory::new(
            gatehouse_webhook::connect_redis(
                redis::Client::open(redis.url())?,
                Duration::from_secs(5),
            )
            .await,
            Duration::from_secs(100 * 366 * 86_400),
        );
        let applier = Applier::new(k8s.client(), store, memory, Some(github));
        Ok(Harness {
            redis,
            k8s,
            receiver,
            github: github_server,
            metrics: Arc::new(Metrics::default()),
            consumers: Vec::new(),
            policy_watch,
            applier,
            github_model: std::sync::Mutex::default(),
            retry_window: Duration::from_secs(3600),
            max_backoff: None,
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
                max_backoff: self.max_backoff.unwrap_or(claim_idle * 2),
                retry_window: self.retry_window,
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
        redis::Client::open(self.redis.admin_url())
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

    /// Makes "GitHub" answer `GET /repos/{owner}/{repo}/pulls/{number}` with `pull_request`
    /// from now on (replacing an earlier answer for it).
    pub async fn mock_pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: i64,
        pull_request: serde_json::Value,
    ) {
        self.lock_github().pulls.insert(
            format!("/repos/{owner}/{repo}/pulls/{number}"),
            pull_request,
        );
        self.remount_github().await;
    }

    /// Makes "GitHub" report `login`'s permission on `owner/repo`: `permission` (admin, write,
    /// read, none) and `role_name` (admin, maintain, write, triage, read or a custom role).
    pub async fn mock_permission(
        &self,
        owner: &str,
        repo: &str,
        login: &str,
        permission: &str,
        role_name: &str,
    ) {
        self.lock_github().permissions.insert(
            format!("/repos/{owner}/{repo}/collaborators/{login}/permission"),
            serde_json::json!({
                "permission": permission,
                "role_name": role_name,
                "user": {"login": login, "type": "User"},
            }),
        );
        self.remount_github().await;
    }

    /// How many requests "GitHub" received whose path starts with `prefix`.
    pub async fn github_requests(&self, prefix: &str) -> usize {
        let earlier = self
            .lock_github()
            .seen
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count();
        earlier
            + self
                .github
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.url.path().starts_with(prefix))
                .count()
    }

    fn lock_github(&self) -> std::sync::MutexGuard<'_, GitHubModel> {
        self.github_model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mounts the token endpoint and every answer set so far (wiremock cannot replace one mock).
    async fn remount_github(&self) {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        // reset() also forgets the requests received: keep their paths for github_requests.
        let received = self.github.received_requests().await.unwrap_or_default();
        let model = {
            let mut model = self.lock_github();
            model
                .seen
                .extend(received.iter().map(|r| r.url.path().to_owned()));
            model.clone()
        };
        self.github.reset().await;
        // Any installation: payloads of other installations (the check_suite fixture's) work too.
        Mock::given(method("POST"))
            .and(wiremock::matchers::path_regex(
                r"^/app/installations/[0-9]+/access_tokens$",
            ))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "token": "ghs_test_installation_token",
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": {"pull_requests": "read", "checks": "write", "contents": "read", "metadata": "read"},
                "repository_selection": "selected",
            })))
            .mount(&self.github)
            .await;
        for (route, body) in model.pulls.iter().chain(model.permissions.iter()) {
            Mock::given(method("GET"))
                .and(path(route.as_str()))
                .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
                .mount(&self.github)
                .await;
        }
    }

    /// Delivers a signed payload through the receive role; returns the HTTP status.
    #[allow(clippy::expect_used)] // test support: a failed delivery is a failed test
    pub async fn deliver(&self, event: &str, delivery: &str, payload: &serde_json::Value) -> u16 {
        let body = serde_json::to_vec(payload).expect("payload serialises");
        self.receiver
            .deliver(event, delivery, &body, crate::webhook::SECRET)
            .await
            .expect("delivery reaches the receiver")
            .status
    }

    /// Waits until the stream has entries and every one was read and acknowledged. The lag is
    /// read before the pending count: read the other way round, an entry read between the two
    /// reads counts as neither waiting nor pending.
    pub async fn wait_until_drained(&self) -> anyhow::Result<()> {
        eventually("every entry acknowledged", || async {
            let mut conn = self.redis_conn().await;
            let length: u64 = redis::AsyncCommands::xlen(&mut conn, EVENTS_STREAM)
                .await
                .unwrap_or(0);
            let groups: Result<redis::streams::StreamInfoGroupsReply, _> =
                redis::AsyncCommands::xinfo_groups(&mut conn, EVENTS_STREAM).await;
            let all_read = groups.is_ok_and(|g| g.groups.iter().all(|g| g.lag == Some(0)));
            length > 0 && all_read && self.pending().await == 0
        })
        .await
    }

    /// Every ScanRequest in every namespace.
    pub async fn all_scan_requests(&self) -> Vec<ScanRequest> {
        Api::<ScanRequest>::all(self.k8s.client())
            .list(&kube::api::ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }
}

/// What the wiremock "GitHub" answers, by route.
#[derive(Clone, Debug, Default)]
struct GitHubModel {
    pulls: std::collections::BTreeMap<String, serde_json::Value>,
    permissions: std::collections::BTreeMap<String, serde_json::Value>,
    seen: Vec<String>,
}

/// Namespace of the sample policy.
pub const NS: &str = "gatehouse-scans";
/// Head commit of the fixture pull request (Codertocat/Hello-World#2).
pub const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// The sample policy `deploy/samples/scanpolicy-kics.yaml`.
#[allow(clippy::expect_used)] // test support: a broken sample is a failed test
pub fn sample_policy() -> ScanPolicy {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/samples/scanpolicy-kics.yaml"
    ))
    .expect("sample policy");
    serde_yaml::from_str(&text).expect("sample policy parses")
}

/// A GitHub payload from `tests/fixtures/github`.
#[allow(clippy::expect_used)] // test support: a missing fixture is a failed test
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/fixtures/github/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture is JSON")
}

/// A `pull_request` event of the fixture pull request with another action, head and time.
/// Derived from the real `synchronize` fixture (only these fields change).
pub fn pull_request_event(action: &str, sha: &str, updated_at: &str) -> serde_json::Value {
    let mut payload = fixture("pull_request.synchronize.octokit.json");
    payload["action"] = serde_json::json!(action);
    payload["pull_request"]["head"]["sha"] = serde_json::json!(sha);
    payload["pull_request"]["updated_at"] = serde_json::json!(updated_at);
    if action == "synchronize" {
        payload["after"] = serde_json::json!(sha);
    }
    payload
}

/// The payload as a fork's pull request by a first-time contributor would carry it (derived:
/// the head moved to another repository).
pub fn fork_of(mut payload: serde_json::Value) -> serde_json::Value {
    payload["pull_request"]["head"]["repo"]["id"] = serde_json::json!(999_999);
    payload["pull_request"]["head"]["repo"]["full_name"] =
        serde_json::json!("stranger/Hello-World");
    payload["pull_request"]["author_association"] = serde_json::json!("FIRST_TIME_CONTRIBUTOR");
    payload["pull_request"]["user"]["login"] = serde_json::json!("stranger");
    payload
}

/// An `issue_comment.created` on the fixture pull request by `login`, derived from the real
/// zulip pull request comment (moved to the fixture repository, with an installation).
pub fn comment(body: &str, comment_id: i64, login: &str) -> serde_json::Value {
    let mut payload = fixture("issue_comment.created.on_pull_request.zulip.json");
    let opened = fixture("pull_request.opened.octokit.json");
    payload["repository"] = opened["repository"].clone();
    payload["installation"] = serde_json::json!({"id": INSTALLATION_ID});
    payload["issue"]["number"] = serde_json::json!(2);
    payload["comment"]["id"] = serde_json::json!(comment_id);
    payload["comment"]["body"] = serde_json::json!(body);
    payload["comment"]["author_association"] = serde_json::json!("MEMBER");
    payload["comment"]["user"]["login"] = serde_json::json!(login);
    payload["sender"]["login"] = serde_json::json!(login);
    payload
}

/// ScanRequests neither stopped nor finished: the ones the operator runs.
pub fn live(requests: &[ScanRequest]) -> Vec<&ScanRequest> {
    requests
        .iter()
        .filter(|r| {
            let scan = gatehouse_crds::lifecycle::Scan::of(r);
            !scan.stopped && !scan.finished
        })
        .collect()
}

/// A ScanRequest's stop request, if it has one.
pub fn stop_of(request: &ScanRequest) -> Option<gatehouse_crds::lifecycle::StopRequest> {
    gatehouse_crds::lifecycle::StopRequest::of(&request.metadata)
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

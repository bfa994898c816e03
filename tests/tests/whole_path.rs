//! The whole path a pull request takes, every part real but GitHub and the cluster: a signed
//! `pull_request.opened` delivery goes through the receive role into a private Redis, a real
//! ingest consumer turns it into a ScanRequest in the Kubernetes API emulator, the operator's
//! real controllers turn that into the per-scan Secret, the scanner Job and a `queued` check run
//! at the GitHub stand-in; then (the test playing the cluster's Job controller and the scanner)
//! the agent's report code publishes a real KICS report signed with the key from the per-scan
//! Secret, and the operator's results consumer concludes the check run from it. Redis runs as
//! the Helm chart runs it: every part authenticates as the ACL user the chart gives it.
//!
//! The same path with every part the real binary in its own process, each authenticating to the
//! Kubernetes API as the ServiceAccount the chart gives it, carried on through a pull request's
//! whole life (a finished Job, pushes, a superseded scan, a failed Job, retention, a deletion by
//! hand): every request each process made must be allowed by the RBAC the chart renders for
//! its ServiceAccount, cluster-wide and namespaced; rules never used are printed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::binaries::Process;
use gatehouse_tests::github::FakeGitHub;
use gatehouse_tests::ingest::{
    Harness, NS, SHA, eventually, fixture, pull_request_event, sample_policy,
};
use gatehouse_tests::operator::{
    AGENT_IMAGE, InProcessOperator, MASTER_KEY, ScanRedis, report_step_redis,
};
use gatehouse_tests::rbac::{self, Rbac};
use gatehouse_tests::{KubeEmulator, RedisOptions, RedisServer, redis_acl};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The delivery id GitHub would send (a GUID); a redelivery repeats it.
const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

/// The front door (Redis, receive role, ingest consumer, emulator with the sample policy), the
/// GitHub stand-in, and the operator on the front door's emulator.
struct WholePath {
    // Declared first: dropped (killed) before what it talks to.
    _operator: InProcessOperator,
    github: FakeGitHub,
    front: Harness,
}

impl WholePath {
    async fn start() -> WholePath {
        // Ingest needs no GitHub for `opened` (only for comment commands and re-runs): the front
        // door's wiremock stays unused, and the operator talks to the stand-in.
        // Redis as the Helm chart runs it (the front door's harness): the default user off,
        // the webhook and the operator as `gatehouse`, the scan pods' report step as
        // `gatehouse-scan` (charts/gatehouse/files/redis-acl-rules.conf: a permission missing
        // there fails here).
        let mut front = Harness::start(vec![sample_policy()]).await.unwrap();
        front
            .start_consumer("ingest-0", Duration::from_millis(300))
            .await
            .unwrap();
        let github = FakeGitHub::start().await.unwrap();
        let operator =
            InProcessOperator::start_with(&front.k8s, &github, ScanRedis::acl_user(&front.redis))
                .unwrap()
                .with_results(&front.k8s, &github, &front.redis.url())
                .await
                .unwrap();
        WholePath {
            _operator: operator,
            github,
            front,
        }
    }

    async fn deliver_opened(&self, delivery: &str) -> u16 {
        self.front
            .deliver(
                "pull_request",
                delivery,
                &fixture("pull_request.opened.octokit.json"),
            )
            .await
    }

    /// Waits for the end of the path: the scanner Job exists and a `gatehouse/kics` check run
    /// is `queued`.
    async fn wait_for_job_and_queued_check_run(&self) {
        self.github
            .wait_for(
                "a queued gatehouse/kics check run",
                Duration::from_secs(30),
                |g| {
                    g.check_runs()
                        .iter()
                        .any(|r| r.name == "gatehouse/kics" && r.status == "queued")
                },
            )
            .await
            .unwrap();
        eventually("the scanner Job", || async { !self.jobs().is_empty() })
            .await
            .unwrap();
    }

    async fn scan_requests(&self) -> Vec<ScanRequest> {
        self.front.scan_requests(NS).await
    }

    fn jobs(&self) -> Vec<String> {
        self.front.k8s.names::<Job>(NS)
    }

    fn check_run_creations(&self) -> usize {
        self.github
            .calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/check-runs") && c.status == 201)
            .count()
    }

    /// Asserts what one delivered `opened` leaves behind: one ScanRequest, its one Job, its
    /// Secret, one queued check run, created once.
    async fn assert_one_scan(&self) {
        let requests = self.scan_requests().await;
        assert_eq!(requests.len(), 1, "one ScanRequest");
        let name = requests[0].metadata.name.clone().unwrap();
        assert_eq!(self.jobs(), [format!("{name}-kics")], "one Job");
        let runs = self.github.check_runs();
        assert_eq!(runs.len(), 1, "one check run: {runs:#?}");
        assert_eq!(runs[0].history, ["queued"]);
        assert_eq!(self.check_run_creations(), 1, "created once");
        assert_eq!(
            self.front.k8s.names::<Secret>(NS),
            [format!("{name}-scan")],
            "one per-scan Secret"
        );
    }
}

#[tokio::test]
async fn a_signed_pull_request_opened_delivery_becomes_a_scanner_job_and_a_queued_check_run_on_its_head_commit()
 {
    let w = WholePath::start().await;
    assert_eq!(
        w.deliver_opened(DELIVERY).await,
        202,
        "stored and acknowledged"
    );
    w.wait_for_job_and_queued_check_run().await;

    let requests = w.scan_requests().await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let name = request.metadata.name.clone().unwrap();
    assert_eq!(
        request.spec.repository.full_name(),
        "Codertocat/Hello-World"
    );
    assert_eq!(request.spec.trigger.delivery_id, DELIVERY);
    assert_eq!(request.spec.policy_ref.name, "acme-iac");

    // The scanner Job, owned by the ScanRequest, running the policy's pinned KICS image.
    let job_name = format!("{name}-kics");
    let job = w.front.k8s.get::<Job>(NS, &job_name).expect("the KICS Job");
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], name.as_str());
    let scan = job["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "scan")
        .expect("a scan step");
    assert_eq!(
        scan["image"],
        sample_policy().spec.scanners[0].image.as_str()
    );

    // The per-scan Secret: a token for this repository and the derived signing key.
    let secret = w
        .front
        .k8s
        .get::<Secret>(NS, &format!("{name}-scan"))
        .expect("the per-scan Secret");
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["kics.config", "redis-password", "signing-key", "token"]
    );

    // The check run on the pull request's head commit, at the stand-in.
    let runs = w.github.check_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(
        (run.owner.as_str(), run.repo.as_str()),
        ("Codertocat", "Hello-World")
    );
    assert_eq!(run.name, "gatehouse/kics");
    assert_eq!(run.head_sha, SHA);
    assert_eq!(run.status, "queued");
    let uid = w
        .front
        .k8s
        .get::<ScanRequest>(NS, &name)
        .and_then(|r| {
            r.pointer("/metadata/uid")
                .and_then(|u| u.as_str())
                .map(str::to_owned)
        })
        .unwrap();
    assert_eq!(run.external_id, format!("{NS}/{name}/2/kics/{uid}"));

    eventually("the ScanRequest Running", || async {
        w.front
            .k8s
            .get::<ScanRequest>(NS, &name)
            .is_some_and(|r| r.pointer("/status/phase") == Some(&json!("Running")))
    })
    .await
    .unwrap();

    // GitHub redelivers the same delivery: acknowledged, nothing stored, nothing doubled.
    assert_eq!(w.deliver_opened(DELIVERY).await, 200, "a duplicate");
    w.front.wait_until_drained().await.unwrap();
    // Room for a wrong second Job or check run to appear (a wait, not a timing claim).
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.assert_one_scan().await;
}

#[tokio::test]
async fn the_same_pull_request_event_under_a_new_delivery_id_makes_no_second_job_or_check_run() {
    let w = WholePath::start().await;
    assert_eq!(w.deliver_opened(DELIVERY).await, 202);
    w.wait_for_job_and_queued_check_run().await;
    // A second webhook of the same event (another delivery id, same payload): ingest stores and
    // processes it, and finds the ScanRequest it names already there.
    assert_eq!(
        w.deliver_opened("9a1e4a70-cc78-11e3-81ab-4c9367dc0958")
            .await,
        202
    );
    w.front.wait_until_drained().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.assert_one_scan().await;
}

#[tokio::test]
async fn a_delivery_ends_as_a_concluded_check_run_with_the_scanners_findings_annotated() {
    let w = WholePath::start().await;
    assert_eq!(w.deliver_opened(DELIVERY).await, 202);
    w.wait_for_job_and_queued_check_run().await;
    let request = w.scan_requests().await.remove(0);
    let name = request.metadata.name.clone().unwrap();
    let job = format!("{name}-kics");

    // The cluster runs the Job: its pod starts, then the scan and its report step finish.
    w.front
        .k8s
        .set_job_status(NS, &job, &gatehouse_tests::JobState::Active)
        .unwrap();
    publish_kics_report(&w.front.k8s, &request).await;
    w.front
        .k8s
        .set_job_status(NS, &job, &gatehouse_tests::JobState::Succeeded)
        .unwrap();

    w.github
        .wait_for("the concluded check run", Duration::from_secs(30), |g| {
            g.check_runs().iter().any(|r| r.status == "completed")
        })
        .await
        .unwrap();
    let run = w.github.check_runs().remove(0);
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(run.title.as_deref(), Some("2 findings: 2 critical"));
    assert_eq!(run.annotations.len(), 2);
    assert_eq!(
        run.annotations[0]["path"],
        "path/test/fixtures/test_critical_severity/run_block_injection/test/positive1.yaml"
    );
    assert_eq!(run.annotations[0]["start_line"], 10);
    assert_eq!(run.history.first().map(String::as_str), Some("queued"));
    assert_eq!(
        run.history.last().map(String::as_str),
        Some("completed/failure")
    );
    eventually("the ScanRequest Failed with its counts", || async {
        w.front.k8s.get::<ScanRequest>(NS, &name).is_some_and(|r| {
            r.pointer("/status/phase") == Some(&json!("Failed"))
                && r.pointer("/status/findings/critical") == Some(&json!(2))
        })
    })
    .await
    .unwrap();
}

/// The report step of `request`'s KICS Job: the agent's own code reads a real KICS report (two
/// critical findings), signs it with the key the operator put into the per-scan Secret, and
/// publishes it as the report step connects: the user of its `--redis-url` (gatehouse-scan),
/// the password from the per-scan Secret.
async fn publish_kics_report(k8s: &KubeEmulator, request: &ScanRequest) {
    let name = request.metadata.name.clone().unwrap();
    let ns = request.metadata.namespace.clone().unwrap();
    let secret = k8s.get::<Secret>(&ns, &format!("{name}-scan")).unwrap();
    let key_hex = base64_decode(secret["data"]["signing-key"].as_str().unwrap());
    let key = gatehouse_operator::keys::ScanKey::from_hex(&key_hex).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!(
            "{}/fixtures/kics/kics-v2_critical-2-findings-cicd_e2e089.json",
            env!("CARGO_MANIFEST_DIR")
        ),
        out.path().join("results.json"),
    )
    .unwrap();
    let read = gatehouse_operator::agent::report::read_output(
        gatehouse_crds::scanpolicy::ScannerKind::Kics,
        0,
        out.path(),
        "/workspace/src",
    );
    let result = gatehouse_operator::agent::report::result(
        &gatehouse_operator::agent::report::Identity {
            namespace: ns.clone(),
            scan_request: name.clone(),
            uid: request.metadata.uid.clone().unwrap(),
            scanner: "kics".to_owned(),
            head_sha: request.spec.pull_request.head_sha.clone(),
            attempt: 1,
        },
        "5eeded5eeded5eeded5eeded5eeded5e".to_owned(),
        read,
        None,
        20_000,
    );
    let entry = gatehouse_operator::agent::report::entry(&result, &key).unwrap();
    gatehouse_operator::agent::report::publish(
        &report_step_redis(k8s, &ns, &name).unwrap(),
        &entry,
        1,
    )
    .await
    .unwrap();
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

/// The head commit of the pull request after a push (the `synchronize` delivery).
const PUSHED_SHA: &str = "0123456789abcdef0123456789abcdef01234567";
/// The head commit after a second push.
const LATEST_SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// The namespace a namespaced installation also watches, where nothing happens.
const OTHER_NS: &str = "team-b";

/// The whole path with each part the real binary in a process of its own, authenticating to
/// the Kubernetes API as the ServiceAccount the chart gives it: `gatehouse-webhook --role all`
/// as `gatehouse-webhook`, `gatehouse-operator run` (leader election, results consumer) as
/// `gatehouse-operator`. Redis as the chart runs it (ACL users, passwords in files).
struct AsProcesses {
    // Declared first: killed before what they talk to.
    operator: Process,
    webhook: Process,
    webhook_addr: std::net::SocketAddr,
    github: FakeGitHub,
    k8s: KubeEmulator,
    _redis: RedisServer,
    _files: tempfile::TempDir,
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The files and Redis URLs the processes are given, as the chart mounts and sets them: the
/// ACL users' passwords in files, no password in a URL.
struct Secrets {
    webhook_secret: String,
    redis_password: String,
    scan_password: String,
    master_key: String,
    redis_url: String,
    scan_redis_url: String,
}

impl Secrets {
    fn write(dir: &std::path::Path, redis_port: u16) -> Secrets {
        let file = |name: &str, content: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            path.to_string_lossy().into_owned()
        };
        Secrets {
            webhook_secret: file(
                "webhook-secret",
                gatehouse_tests::webhook::SECRET.as_bytes(),
            ),
            redis_password: file(
                "redis-password",
                redis_acl::password(redis_acl::USER).as_bytes(),
            ),
            scan_password: file(
                "scan-redis-password",
                redis_acl::password(redis_acl::SCAN_USER).as_bytes(),
            ),
            master_key: file("master-key", MASTER_KEY),
            redis_url: format!("redis://{}@127.0.0.1:{redis_port}/0", redis_acl::USER),
            scan_redis_url: format!("redis://{}@127.0.0.1:{redis_port}/0", redis_acl::SCAN_USER),
        }
    }

    /// `gatehouse-webhook --role all`, ingest limited to `namespaces` when given.
    fn webhook_args(&self, listen: std::net::SocketAddr, namespaces: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--role",
            "all",
            "--listen",
            &listen.to_string(),
            "--redis-url",
            &self.redis_url,
            "--redis-password-file",
            &self.redis_password,
            "--webhook-secret-file",
            &self.webhook_secret,
            "--consumer-name",
            "rbac-0",
            "--claim-idle-seconds",
            "2",
            // The fixture payloads are from 2019.
            "--max-trigger-age-days",
            "36500",
        ]
        .map(str::to_owned)
        .to_vec();
        for ns in namespaces {
            args.extend(["--policy-namespace".to_owned(), (*ns).to_owned()]);
        }
        args
    }

    /// `gatehouse-operator run` with leader election on the chart's Lease, watching
    /// `namespaces` when given.
    fn operator_args(&self, github_url: &str, namespaces: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--github-app-id",
            "4242",
            "--github-private-key-file",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/github-app/test-app-key.pem"
            ),
            "--github-api-url",
            github_url,
            "--master-key-file",
            &self.master_key,
            "--agent-image",
            AGENT_IMAGE,
            "--redis-url",
            &self.redis_url,
            "--redis-password-file",
            &self.redis_password,
            "--results-redis-url",
            &self.scan_redis_url,
            "--results-redis-password-file",
            &self.scan_password,
            "--listen",
            &free_addr().to_string(),
            "--queue-poll-seconds",
            "1",
            // The chart's: the release namespace, the Lease its Role names.
            "--lease-namespace",
            rbac::RELEASE_NAMESPACE,
            "--lease-name",
            "gatehouse-operator",
            "--identity",
            "gatehouse-operator-0",
        ]
        .map(str::to_owned)
        .to_vec();
        for ns in namespaces {
            args.extend(["--namespace".to_owned(), (*ns).to_owned()]);
        }
        args
    }
}

impl AsProcesses {
    /// Starts everything; `namespaces` empty: the processes watch every namespace, else only
    /// these (`--namespace`, `--policy-namespace`), as the chart's `watch.namespaces` sets them.
    async fn start(namespaces: &[&str]) -> AsProcesses {
        let redis = RedisServer::start_with(RedisOptions {
            append_only: true,
            acl: true,
            ..RedisOptions::default()
        })
        .unwrap();
        let k8s = KubeEmulator::start().await.unwrap();
        let mut policy = sample_policy();
        // One finished ScanRequest per pull request: a newer one's result deletes the older.
        policy.spec.retention.keep_per_pull_request = 1;
        Api::<ScanPolicy>::namespaced(k8s.client(), NS)
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        let github = FakeGitHub::start().await.unwrap();

        let files = tempfile::tempdir().unwrap();
        let secrets = Secrets::write(files.path(), redis.port());
        let webhook_addr = free_addr();
        let webhook = Process::start(
            &gatehouse_tests::binaries::webhook(),
            &secrets.webhook_args(webhook_addr, namespaces),
            &[("RUST_LOG", "info")],
            Some(&k8s.kubeconfig_as(rbac::WEBHOOK)),
        )
        .unwrap();
        let operator = Process::start(
            &gatehouse_tests::binaries::operator(),
            &secrets.operator_args(&github.url(), namespaces),
            &[("RUST_LOG", "info")],
            Some(&k8s.kubeconfig_as(rbac::OPERATOR)),
        )
        .unwrap();
        let p = AsProcesses {
            operator,
            webhook,
            webhook_addr,
            github,
            k8s,
            _redis: redis,
            _files: files,
        };
        let addr = p.webhook_addr;
        p.until("the webhook ready", || async move {
            gatehouse_tests::http::request(addr, "GET", "/readyz", &[], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        p
    }

    /// Polls `check` until it holds (30 s at most: a wait, not a timing claim); on timeout
    /// fails with both processes' output.
    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let requests: Vec<(String, Option<String>)> = self
            .k8s
            .names::<ScanRequest>(NS)
            .into_iter()
            .map(|n| (self.phase(&n), n))
            .map(|(phase, n)| (n, phase))
            .collect();
        let runs: Vec<(String, Vec<String>)> = self
            .github
            .check_runs()
            .into_iter()
            .map(|r| (r.head_sha, r.history))
            .collect();
        panic!(
            "timed out waiting for {what}\nScanRequests: {requests:?}\nJobs: {:?}\ncheck runs: \
             {runs:?}\n\nwebhook {}\n\noperator {}",
            self.k8s.names::<Job>(NS),
            self.webhook.output(),
            self.operator.output()
        );
    }

    async fn deliver(&self, event: &str, delivery: &str, payload: &serde_json::Value) -> u16 {
        let body = serde_json::to_vec(payload).unwrap();
        let signature =
            gatehouse_webhook::signature::sign(gatehouse_tests::webhook::SECRET.as_bytes(), &body);
        gatehouse_tests::http::request(
            self.webhook_addr,
            "POST",
            "/webhook",
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &signature),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
        .map_or(0, |r| r.status)
    }

    /// The ScanRequest of a head commit, once it exists.
    fn request_of(&self, sha: &str) -> Option<ScanRequest> {
        self.k8s
            .names::<ScanRequest>(NS)
            .into_iter()
            .filter_map(|name| self.k8s.get::<ScanRequest>(NS, &name))
            .filter_map(|v| serde_json::from_value::<ScanRequest>(v).ok())
            .find(|r| r.spec.pull_request.head_sha == sha)
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.k8s.get::<ScanRequest>(NS, name).and_then(|r| {
            r.pointer("/status/phase")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        })
    }

    fn run_history(&self, sha: &str) -> Vec<String> {
        self.github
            .check_runs()
            .into_iter()
            .find(|r| r.head_sha == sha)
            .map(|r| r.history)
            .unwrap_or_default()
    }

    /// A push of `sha` (a `synchronize` delivery updated at `at`, delivery id starting with
    /// `delivery`): its ScanRequest's name, once its Job exists.
    async fn push(&self, sha: &str, at: &str, delivery: &str) -> String {
        // Retention orders a pull request's ScanRequests by creation time (seconds), then by
        // name: each push's ScanRequest is created later than the one before.
        self.k8s.advance_clock(Duration::from_secs(5));
        let payload = pull_request_event("synchronize", sha, at);
        assert_eq!(
            self.deliver(
                "pull_request",
                &format!("{delivery}-cc78-11e3-81ab-4c9367dc0958"),
                &payload
            )
            .await,
            202
        );
        self.until("the pushed commit's Job", || async {
            self.request_of(sha).is_some_and(|r| {
                self.k8s
                    .get::<Job>(NS, &format!("{}-kics", r.metadata.name.unwrap_or_default()))
                    .is_some()
            })
        })
        .await;
        self.request_of(sha).unwrap().metadata.name.unwrap()
    }

    /// A pull request's life through every part: opened, scanned (the Job runs, its report
    /// step publishes, the check run is concluded from the findings); a push, then another
    /// that supersedes the first push's scan (stop request, Job deleted); the latest scan's
    /// Job fails (its pods are looked at), and its result makes the policy's retention delete
    /// the older ScanRequests (a finished Job deleted, finalizers removed); then the latest
    /// deleted by hand (`kubectl delete sr`).
    async fn play_a_pull_request(&self) {
        assert_eq!(
            self.deliver(
                "pull_request",
                DELIVERY,
                &fixture("pull_request.opened.octokit.json")
            )
            .await,
            202
        );
        self.until("the first scan's queued check run", || async {
            self.run_history(SHA) == ["queued"]
        })
        .await;
        let first = self.request_of(SHA).unwrap();
        let first_name = first.metadata.name.clone().unwrap();
        let first_job = format!("{first_name}-kics");
        self.until("the first scan's Job", || async {
            self.k8s.get::<Job>(NS, &first_job).is_some()
        })
        .await;

        // The cluster runs the Job; its report step publishes; the Job completes.
        self.k8s
            .set_job_status(NS, &first_job, &gatehouse_tests::JobState::Active)
            .unwrap();
        publish_kics_report(&self.k8s, &first).await;
        self.k8s
            .set_job_status(NS, &first_job, &gatehouse_tests::JobState::Succeeded)
            .unwrap();
        self.until(
            "the first check run concluded from the findings",
            || async {
                self.run_history(SHA).last().map(String::as_str) == Some("completed/failure")
                    && self.phase(&first_name).as_deref() == Some("Failed")
            },
        )
        .await;

        // A push: a new head commit, a new scan; another push before its Job finished
        // supersedes it (the webhook writes the stop request, the operator deletes the Job).
        let second = self
            .push(PUSHED_SHA, "2019-05-15T16:00:00Z", "9a1e4a70")
            .await;
        let third = self
            .push(LATEST_SHA, "2019-05-15T17:00:00Z", "9a1e4a71")
            .await;
        // Its cancelled check run reported and recorded before the latest scan finishes: the
        // latest's retention then judges it (else it waits for its own hourly look).
        self.until(
            "the second scan superseded, reported, its Job deleted",
            || async {
                self.phase(&second).as_deref() == Some("Superseded")
                    && self.k8s.get::<Job>(NS, &format!("{second}-kics")).is_none()
                    && self
                        .k8s
                        .get::<ScanRequest>(NS, &second)
                        .and_then(|v| serde_json::from_value::<ScanRequest>(v).ok())
                        .is_some_and(|r| gatehouse_operator::checks::fully_reported(&r))
            },
        )
        .await;
        // The latest scan's Job fails: its pods are looked at for the scanner's exit.
        self.k8s
            .set_job_status(
                NS,
                &format!("{third}-kics"),
                &gatehouse_tests::JobState::Failed {
                    reason: "DeadlineExceeded".to_owned(),
                    message: "Job was active longer than specified deadline".to_owned(),
                },
            )
            .unwrap();
        self.until("the latest check run timed out", || async {
            self.run_history(LATEST_SHA).last().map(String::as_str) == Some("completed/timed_out")
        })
        .await;
        // Retention keeps one finished ScanRequest of the pull request: the latest.
        self.until(
            "the older ScanRequests and the first Job deleted",
            || async {
                self.k8s.get::<ScanRequest>(NS, &first_name).is_none()
                    && self.k8s.get::<ScanRequest>(NS, &second).is_none()
                    && self.k8s.get::<Job>(NS, &first_job).is_none()
            },
        )
        .await;

        // Deleted by hand (`kubectl delete sr`): its failed Job goes with it.
        Api::<ScanRequest>::namespaced(self.k8s.client(), NS)
            .delete(&third, &kube::api::DeleteParams::default())
            .await
            .unwrap();
        self.until("the latest ScanRequest and its Job deleted", || async {
            self.k8s.get::<ScanRequest>(NS, &third).is_none()
                && self.k8s.names::<Job>(NS).is_empty()
        })
        .await;
    }

    /// Compares every request each process made with the chart's RBAC rendered with `chart`:
    /// each must be allowed by a rule bound to its ServiceAccount; rules never used are
    /// printed. The operator's requests must include the calls the path exists to exercise.
    fn assert_the_charts_rbac_allows_every_request(&self, what: &str, chart: &[&str]) {
        let rbac = Rbac::from_manifest(&rbac::render_chart(chart).unwrap()).unwrap();
        let requests = self.k8s.requests();
        rbac.assert_allows_all(what, rbac::WEBHOOK, &requests);
        rbac.assert_allows_all(what, rbac::OPERATOR, &requests);
        let made = |user: &str, verb: &str, group: &str, resource: &str, sub: &str| {
            requests.iter().any(|r| {
                r.user.as_deref() == Some(user)
                    && (r.verb.as_str(), r.api_group.as_str(), r.resource.as_str())
                        == (verb, group, resource)
                    && r.subresource == sub
                    && r.status < 300
            })
        };
        for (verb, group, resource, sub) in [
            ("create", "batch", "jobs", ""),
            ("delete", "batch", "jobs", ""),
            ("list", "", "pods", ""),
            ("patch", "", "secrets", ""),
            ("create", "", "secrets", ""),
            ("patch", "gatehouse.dev", "scanrequests", ""),
            ("patch", "gatehouse.dev", "scanrequests", "status"),
            ("delete", "gatehouse.dev", "scanrequests", ""),
            ("patch", "gatehouse.dev", "scanpolicies", "status"),
            ("create", "events.k8s.io", "events", ""),
            ("patch", "coordination.k8s.io", "leases", ""),
        ] {
            assert!(
                made(rbac::OPERATOR, verb, group, resource, sub),
                "{what}: the operator never made {verb} {group} {resource}/{sub}: the path did \
                 not exercise it"
            );
        }
        for (verb, resource) in [("create", "scanrequests"), ("patch", "scanrequests")] {
            assert!(
                made(rbac::WEBHOOK, verb, "gatehouse.dev", resource, ""),
                "{what}: the webhook never made {verb} {resource}"
            );
        }
    }
}

#[tokio::test]
async fn as_processes_with_their_own_service_accounts_every_api_call_of_a_pull_requests_life_is_allowed_by_the_charts_rbac()
 {
    let p = AsProcesses::start(&[]).await;
    p.play_a_pull_request().await;
    p.assert_the_charts_rbac_allows_every_request("cluster-wide installation", &[]);
}

#[tokio::test]
async fn a_namespaced_installation_calls_only_what_the_charts_roles_in_its_namespaces_allow() {
    let p = AsProcesses::start(&[NS, OTHER_NS]).await;
    p.play_a_pull_request().await;
    let namespaces = format!("watch.namespaces={{{NS},{OTHER_NS}}}");
    p.assert_the_charts_rbac_allows_every_request(
        "namespaced installation",
        &["--set", &namespaces],
    );
    // Nothing cluster-wide but the CRD rule (not used without --apply-crds).
    let wide: Vec<String> = p
        .k8s
        .requests()
        .iter()
        .filter(|r| r.user.is_some() && r.resource_request && r.namespace.is_none())
        .map(gatehouse_tests::RequestRecord::describe)
        .collect();
    assert!(wide.is_empty(), "{wide:#?}");
}

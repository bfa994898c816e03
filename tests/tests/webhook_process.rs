//! `gatehouse-webhook` as a real process, the way it is deployed: configured by environment,
//! secrets in files, JSON logs on stderr, SIGHUP reloads secrets, SIGTERM stops it cleanly; with
//! `--role all` and a kubeconfig pointing at the Kubernetes API emulator, a signed delivery
//! becomes a ScanRequest.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use gatehouse_crds::ScanPolicy;
use gatehouse_tests::http::request;
use gatehouse_tests::ingest::eventually;
use gatehouse_tests::{KubeEmulator, RedisOptions, RedisServer};
use kube::api::{Api, PostParams};

fn binary() -> PathBuf {
    gatehouse_tests::binaries::webhook()
}

fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Process {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn start(redis: &RedisServer, role: &str, kubeconfig: Option<&str>) -> Process {
        Process::start_with(&redis.url(), role, kubeconfig, &[])
    }

    /// Starts the binary; `env` adds to (or overrides) the test's environment.
    fn start_with(
        redis_url: &str,
        role: &str,
        kubeconfig: Option<&str>,
        env: &[(&str, &str)],
    ) -> Process {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "first-secret\n").unwrap();
        let addr = free_addr();
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("GATEHOUSE_ROLE", role)
            .env("GATEHOUSE_LISTEN", addr.to_string())
            .env("GATEHOUSE_REDIS_URL", redis_url)
            .env("GATEHOUSE_WEBHOOK_SECRET_FILE", dir.path().join("secret"))
            .env("GATEHOUSE_CONSUMER_NAME", "process-test")
            .env("GATEHOUSE_CLAIM_IDLE_SECONDS", "1")
            // The fixture payloads are from 2019.
            .env("GATEHOUSE_MAX_TRIGGER_AGE_DAYS", "36500")
            // Secret files are reloaded on SIGHUP only, so a test sees what the signal did.
            .env("GATEHOUSE_SECRET_CHECK_SECONDS", "3600")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).unwrap(),
            ));
        if let Some(config) = kubeconfig {
            std::fs::write(dir.path().join("kubeconfig"), config).unwrap();
            command.env("KUBECONFIG", dir.path().join("kubeconfig"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        Process {
            child: command.spawn().unwrap(),
            addr,
            dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn deliver(&self, delivery: &str, secret: &str) -> u16 {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/github/pull_request.opened.octokit.json"
        ))
        .unwrap();
        let signature = gatehouse_webhook::signature::sign(secret.as_bytes(), &body);
        request(
            self.addr,
            "POST",
            "/webhook",
            &[
                ("X-GitHub-Event", "pull_request"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &signature),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
        .map_or(0, |r| r.status)
    }

    /// Waits until `/healthz` answers (the listener is up; dependencies may not be).
    async fn wait_healthy(&self, what: &str) {
        let addr = self.addr;
        eventually(what, || async move { get(addr, "/healthz").await == 200 })
            .await
            .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr()));
    }

    async fn wait_ready(&self) {
        let addr = self.addr;
        eventually("webhook ready", || async move {
            request(addr, "GET", "/readyz", &[], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr()));
    }
}

#[tokio::test]
async fn receive_process_verifies_reloads_secrets_on_sighup_logs_json_and_stops_on_sigterm() {
    let redis = RedisServer::start().unwrap();
    let mut process = Process::start(&redis, "receive", None);
    process.wait_ready().await;
    assert_eq!(process.deliver("proc-1", "first-secret").await, 202);

    std::fs::write(process.dir.path().join("secret"), "second-secret\n").unwrap();
    process.signal("HUP");
    eventually("new secret accepted after SIGHUP", || async {
        process
            .deliver(&format!("proc-{}", rand_suffix()), "second-secret")
            .await
            == 202
    })
    .await
    .unwrap();
    assert_eq!(process.deliver("proc-old", "first-secret").await, 401);

    process.signal("TERM");
    let (status, process) = tokio::task::spawn_blocking(move || {
        let status = process.child.wait().unwrap();
        (status, process)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status}");

    let logs = process.stderr();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    // The file check runs hourly here: the signal did the reload.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "webhook secrets reloaded" && l["trigger"] == "SIGHUP"),
        "{logs}"
    );
    // The refusal of the old secret is logged with its delivery id.
    let refused = lines
        .iter()
        .find(|l| l["message"] == "delivery refused" && l["span"]["delivery"] == "proc-old")
        .unwrap_or_else(|| panic!("no refusal of proc-old logged:\n{logs}"));
    assert_eq!(refused["status"], 401, "{refused}");
    assert!(
        !logs.contains("first-secret") && !logs.contains("second-secret"),
        "a secret was logged"
    );
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn all_roles_process_turns_a_delivery_into_a_scanrequest_in_the_cluster() {
    let redis = RedisServer::start().unwrap();
    let k8s = KubeEmulator::start().await.unwrap();
    let policy: ScanPolicy = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/samples/scanpolicy-kics.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    Api::<ScanPolicy>::namespaced(k8s.client(), "gatehouse-scans")
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let process = Process::start(&redis, "all", Some(&k8s.kubeconfig()));
    process.wait_ready().await;
    let status = process.deliver("proc-all-1", "first-secret").await;
    assert_eq!(status, 202, "stderr:\n{}", process.stderr());
    eventually("ScanRequest created by the process", || async {
        k8s.get::<gatehouse_crds::ScanRequest>(
            "gatehouse-scans",
            "hello-world-pr2-ec26c3e-016643a9",
        )
        .is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", process.stderr()));
    // Every ingest log line about a delivery says which: in its span, or as a field.
    let logs = process.stderr();
    let ingest_lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("gatehouse_webhook::ingest"))
                && (l.get("entry").is_some() || l["span"]["name"] == "ingest")
        })
        .collect();
    assert!(
        ingest_lines
            .iter()
            .any(|l| l["message"] == "ScanRequest created"),
        "{logs}"
    );
    for line in &ingest_lines {
        let delivery = line["span"]["delivery"]
            .as_str()
            .or_else(|| line["delivery"].as_str())
            .unwrap_or("");
        assert_eq!(delivery, "proc-all-1", "{line}");
    }
}

/// Runs `gatehouse-webhook <args>` against `redis`; returns (exit code, stdout, stderr).
fn run_command(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .env("GATEHOUSE_REDIS_URL", redis.url())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_the_command() {
    use gatehouse_crds::stream::{EVENTS_DEAD_STREAM, EVENTS_STREAM};
    use redis::AsyncTypedCommands as _;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Two dead letters as ingest writes them: the entry's fields plus the three it adds.
    let mut ids = Vec::new();
    for (delivery, reason) in [("d-1", "line one\nline two"), ("d-2", "gone")] {
        let entry = gatehouse_webhook::events::encode(delivery, "pull_request", 1, b"{}");
        let mut xadd = redis::cmd("XADD");
        xadd.arg(EVENTS_DEAD_STREAM).arg("*");
        for (k, v) in &entry.to_fields() {
            xadd.arg(*k).arg(v.as_ref());
        }
        xadd.arg("source_id")
            .arg("1-0")
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg("7");
        ids.push(xadd.query_async::<String>(&mut conn).await.unwrap());
    }
    let (code, stdout, stderr) = run_command(&redis, &["dead-letters", "list"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line each, the newline escaped: {stdout}"
    );
    assert_eq!(
        lines[0],
        format!(
            "{}\tdelivery=d-1\tevent=pull_request\tattempts=7\treason=line one\\nline two",
            ids[0]
        )
    );
    let (code, stdout, _) = run_command(&redis, &["dead-letters", "list", "--count", "1"]);
    assert_eq!((code, stdout.lines().count()), (0, 1));

    let (code, stdout, stderr) = run_command(&redis, &["dead-letters", "replay", "--id", &ids[0]]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("replayed {} as ", ids[0])),
        "{stdout}"
    );
    assert_eq!(conn.xlen(EVENTS_STREAM).await.unwrap(), 1);
    assert_eq!(conn.xlen(EVENTS_DEAD_STREAM).await.unwrap(), 1);
    // The replayed entry is the original: it decodes to the same delivery, without the
    // dead-letter fields.
    let events = conn.xrange_all(EVENTS_STREAM).await.unwrap();
    let replayed = gatehouse_webhook::events::entry_from_stream(&events.ids[0]).unwrap();
    assert_eq!(replayed.delivery_id, "d-1");
    assert!(!events.ids[0].map.contains_key("reason"));
    // Replaying it again: nothing there, a clear error, nothing added.
    let (code, _, stderr) = run_command(&redis, &["dead-letters", "replay", "--id", &ids[0]]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("no dead letter with id {}", ids[0])),
        "{stderr}"
    );
    assert_eq!(conn.xlen(EVENTS_STREAM).await.unwrap(), 1);
    let (code, stdout, _) = run_command(&redis, &["dead-letters", "replay", "--all"]);
    assert_eq!((code, stdout.lines().count()), (0, 1));
    assert_eq!(conn.xlen(EVENTS_DEAD_STREAM).await.unwrap(), 0);
    assert_eq!(conn.xlen(EVENTS_STREAM).await.unwrap(), 2);
    // --id or --all is required.
    let (code, _, stderr) = run_command(&redis, &["dead-letters", "replay"]);
    assert_eq!(code, 2, "{stderr}");
}

/// Waits for the process to exit; returns its status and how long it took.
async fn wait_exit(process: Process) -> (std::process::ExitStatus, std::time::Duration, Process) {
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut process = process;
        let status = process.child.wait().unwrap();
        (status, started.elapsed(), process)
    })
    .await
    .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    request(addr, "GET", path, &[], b"")
        .await
        .map_or(0, |r| r.status)
}

/// A loopback address nothing listens on.
fn dead_redis_url() -> String {
    format!("redis://{}/0", free_addr())
}

#[tokio::test]
async fn an_idle_process_exits_at_once_on_sigterm() {
    let redis = RedisServer::start().unwrap();
    let process = Process::start(&redis, "receive", None);
    process.wait_ready().await;
    process.signal("TERM");
    let (status, took, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
    // Nothing is in flight: no waiting for the 20 s drain, nor for background tasks.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_before_the_process_exits() {
    let redis = RedisServer::start().unwrap();
    let process = Process::start(&redis, "receive", None);
    process.wait_ready().await;
    a_request_in_flight_finishes_after_sigterm(process).await;
}

#[tokio::test]
async fn sigterm_while_ingest_still_starts_lets_a_delivery_in_flight_finish() {
    // Role all: receive is up (Redis answers), ingest waits for a Kubernetes API that is not
    // there. A stop now is still a stop with a drain, not a reset of the open requests.
    let redis = RedisServer::start().unwrap();
    let dead_api = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://{}\n\
         contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: nobody\n\
         current-context: gone\nusers:\n- name: nobody\n  user: {{}}\n",
        free_addr()
    );
    let process = Process::start(&redis, "all", Some(&dead_api));
    process.wait_ready().await;
    assert_eq!(process.deliver("starting-1", "first-secret").await, 202);
    assert!(
        !process.stderr().contains("ScanPolicies loaded"),
        "ingest must still be starting: {}",
        process.stderr()
    );
    a_request_in_flight_finishes_after_sigterm(process).await;
}

/// Sends half a delivery, SIGTERM, then the rest: the answer is 202 and the process exits 0,
/// after which nothing is accepted.
async fn a_request_in_flight_finishes_after_sigterm(process: Process) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github/pull_request.opened.octokit.json"
    ))
    .unwrap();
    let signature = gatehouse_webhook::signature::sign(b"first-secret", &body);
    let mut stream = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: in-flight-1\r\nX-Hub-Signature-256: {signature}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..100]).await.unwrap();
    // Let the server start reading the body, then ask it to stop.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    process.signal("TERM");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stream.write_all(&body[100..]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let (status, _, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
    // New connections are refused once it stopped.
    assert_eq!(get(process.addr, "/healthz").await, 0);
}

#[tokio::test]
async fn without_redis_at_start_health_is_served_and_deliveries_get_503() {
    let process = Process::start_with(&dead_redis_url(), "receive", None, &[]);
    let addr = process.addr;
    process.wait_healthy("listening before redis answers").await;
    assert_eq!(get(addr, "/readyz").await, 503);
    assert_eq!(process.deliver("no-redis-1", "first-secret").await, 503);
    process.signal("TERM");
    let (status, _, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
}

#[tokio::test]
async fn sigterm_during_start_up_exits_cleanly() {
    // The ingest role waits for Redis at start, forever: SIGTERM must still end it.
    let process = Process::start_with(&dead_redis_url(), "ingest", None, &[]);
    let addr = process.addr;
    process.wait_healthy("health listener up").await;
    assert_eq!(get(addr, "/readyz").await, 503, "not ready while starting");
    process.signal("TERM");
    let (status, took, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert!(process.stderr().contains("stopped during start-up"));
}

#[tokio::test]
async fn huge_header_values_reach_the_log_only_as_a_bounded_prefix() {
    let redis = RedisServer::start().unwrap();
    let process = Process::start(&redis, "receive", None);
    process.wait_ready().await;
    let (event, delivery) = ("e".repeat(10_000), "d".repeat(10_000));
    let response = request(
        process.addr,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", event.as_str()),
            ("X-GitHub-Delivery", delivery.as_str()),
            ("X-Hub-Signature-256", "sha256=00"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .await
    .unwrap();
    assert_eq!(response.status, 400, "{}", response.text());
    process.signal("TERM");
    let (status, _, process) = wait_exit(process).await;
    assert!(status.success(), "{status}");
    let log = process.stderr();
    // The refusal was logged, with the values cut short.
    assert!(log.contains("malformed X-GitHub-Delivery header"), "{log}");
    assert!(log.contains(&"d".repeat(64)), "a prefix is kept: {log}");
    for long in ["e".repeat(100), "d".repeat(100)] {
        assert!(
            !log.contains(&long),
            "a header value at full length in the log"
        );
    }
}

#[tokio::test]
async fn sighup_during_start_up_does_not_end_the_process() {
    // Ingest-only, waiting for Redis: a reload signal now (a rotated key) must not kill it.
    let process = Process::start_with(&dead_redis_url(), "ingest", None, &[]);
    let addr = process.addr;
    process.wait_healthy("health listener up").await;
    process.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(get(addr, "/healthz").await, 200, "{}", process.stderr());
    process.signal("TERM");
    let (status, _, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
}

#[tokio::test]
async fn the_ingest_role_alone_serves_health_readiness_and_metrics_and_survives_sighup() {
    let redis = RedisServer::start_with(RedisOptions {
        maxmemory_policy: Some("allkeys-lru"),
        ..RedisOptions::default()
    })
    .unwrap();
    let k8s = KubeEmulator::start().await.unwrap();
    let process = Process::start(&redis, "ingest", Some(&k8s.kubeconfig()));
    let addr = process.addr;
    eventually("ingest ready", || async move {
        get(addr, "/readyz").await == 200
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", process.stderr()));
    assert_eq!(get(addr, "/healthz").await, 200);
    let metrics = request(addr, "GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("# TYPE gatehouse_ingest_entries_total counter"),
        "{}",
        metrics.text()
    );
    assert!(
        !metrics.text().contains("gatehouse_redis_up"),
        "no stream view here"
    );
    // SIGHUP's default action would end the process: it must not.
    process.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(get(addr, "/healthz").await, 200, "{}", process.stderr());
    process.signal("TERM");
    let (status, _, process) = wait_exit(process).await;
    assert!(status.success(), "{status}: {}", process.stderr());
    // Redis may evict keys here: the operator is told.
    assert!(
        process.stderr().contains("set maxmemory-policy noeviction"),
        "{}",
        process.stderr()
    );
}

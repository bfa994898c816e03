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
use gatehouse_tests::{KubeEmulator, RedisServer};
use kube::api::{Api, PostParams};

/// The binary cargo built next to this test (`cargo test --workspace` builds every binary).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("gatehouse-webhook");
    assert!(
        path.exists(),
        "{} not built; run cargo test --workspace",
        path.display()
    );
    path
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
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "first-secret\n").unwrap();
        let addr = free_addr();
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("GATEHOUSE_ROLE", role)
            .env("GATEHOUSE_LISTEN", addr.to_string())
            .env("GATEHOUSE_REDIS_URL", redis.url())
            .env("GATEHOUSE_WEBHOOK_SECRET_FILE", dir.path().join("secret"))
            .env("GATEHOUSE_CONSUMER_NAME", "process-test")
            .env("GATEHOUSE_CLAIM_IDLE_SECONDS", "1")
            // The fixture payloads are from 2019.
            .env("GATEHOUSE_MAX_TRIGGER_AGE_DAYS", "36500")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).unwrap(),
            ));
        if let Some(config) = kubeconfig {
            std::fs::write(dir.path().join("kubeconfig"), config).unwrap();
            command.env("KUBECONFIG", dir.path().join("kubeconfig"));
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
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "webhook secrets reloaded"),
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

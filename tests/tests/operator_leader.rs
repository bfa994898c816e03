//! Two `gatehouse-operator` processes against one Kubernetes API emulator and one GitHub
//! stand-in: only the Lease holder acts, and the standby takes over when the leader dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::github::FakeGitHub;
use gatehouse_tests::kube_support::sample;
use gatehouse_tests::operator::{MASTER_KEY, NS, request};
use gatehouse_tests::{Failure, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

fn binary() -> PathBuf {
    gatehouse_tests::binaries::operator()
}

struct Operator(Child, u16);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Operator {
    /// The operator's `/metrics` text.
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.1)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }
}

fn operator(dir: &tempfile::TempDir, github: &FakeGitHub, identity: &str) -> Operator {
    operator_with_lease(dir, github, identity, 3)
}

fn operator_with_lease(
    dir: &tempfile::TempDir,
    github: &FakeGitHub,
    identity: &str,
    lease_seconds: u64,
) -> Operator {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary())
        .args([
            "run",
            "--github-app-id",
            "4242",
            "--github-private-key-file",
            key,
        ])
        .args(["--github-api-url", &github.url()])
        .arg("--master-key-file")
        .arg(dir.path().join("master-key"))
        .args([
            "--leader-election",
            "true",
            "--lease-namespace",
            "gatehouse",
        ])
        .args(["--lease-seconds", &lease_seconds.to_string()])
        .args(["--identity", identity])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--queue-poll-seconds", "1"])
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Operator(child, port)
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn holder(k8s: &KubeEmulator) -> Option<String> {
    k8s.get::<Lease>("gatehouse", "gatehouse-operator")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn check_run_posts(github: &FakeGitHub) -> usize {
    github
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/check-runs") && c.status == 201)
        .count()
}

#[tokio::test]
async fn of_two_replicas_only_the_leader_acts_and_the_standby_takes_over_when_it_dies() {
    let k8s = KubeEmulator::start().await.unwrap();
    let policy: ScanPolicy = sample("scanpolicy-kics.yaml");
    Api::<ScanPolicy>::namespaced(k8s.client(), NS)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let github = FakeGitHub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), k8s.kubeconfig()).unwrap();
    std::fs::write(dir.path().join("master-key"), MASTER_KEY).unwrap();
    let mut a = Some(operator(&dir, &github, "replica-a"));
    let mut b = Some(operator(&dir, &github, "replica-b"));
    until("a leader", || holder(&k8s).is_some()).await;

    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    requests
        .create(&PostParams::default(), &request("sr-first", 'a'))
        .await
        .unwrap();
    until("the first Job", || {
        k8s.get::<Job>(NS, "sr-first-kics").is_some()
    })
    .await;
    until("its check run", || check_run_posts(&github) == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(check_run_posts(&github), 1, "{:#?}", github.calls());
    assert_eq!(k8s.names::<Job>(NS), ["sr-first-kics"]);
    // The standby has reconciled nothing: it does not even watch before it leads.
    let leader = holder(&k8s).unwrap();
    let standby = if leader == "replica-a" { &b } else { &a };
    let text = standby.as_ref().unwrap().metrics();
    assert!(text.contains("gatehouse_operator_leader 0"), "{text}");
    assert!(
        !text.contains("gatehouse_operator_reconciles_total{"),
        "{text}"
    );

    if leader == "replica-a" {
        drop(a.take());
    } else {
        drop(b.take());
    }
    requests
        .create(&PostParams::default(), &request("sr-second", 'b'))
        .await
        .unwrap();
    let died = std::time::Instant::now();
    until("the standby leads and creates the second Job", || {
        k8s.get::<Job>(NS, "sr-second-kics").is_some()
    })
    .await;
    // Within the lease (3 s) and a little: not at some much later retry.
    assert!(
        died.elapsed() < Duration::from_secs(10),
        "{:?}",
        died.elapsed()
    );
    assert_ne!(holder(&k8s).unwrap(), leader);
    until("its check run", || check_run_posts(&github) == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(check_run_posts(&github), 2);
    drop((a, b));
}

/// The Lease's last renewal, as the wall-clock time it names.
fn renewed_at(k8s: &KubeEmulator) -> std::time::SystemTime {
    let text = k8s
        .get::<Lease>("gatehouse", "gatehouse-operator")
        .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_owned))
        .unwrap();
    let at: k8s_openapi::jiff::Timestamp = text.parse().unwrap();
    std::time::SystemTime::from(at)
}

/// Waits (at most 20 s) for the process to exit; its status and when.
async fn exit_of(process: &mut Operator) -> (std::process::ExitStatus, std::time::SystemTime) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            return (status, std::time::SystemTime::now());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader went on acting without its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_leader_that_cannot_renew_its_lease_stops_before_a_standby_could_take_over() {
    let k8s = KubeEmulator::start().await.unwrap();
    let github = FakeGitHub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), k8s.kubeconfig()).unwrap();
    std::fs::write(dir.path().join("master-key"), MASTER_KEY).unwrap();
    let mut leader = operator(&dir, &github, "replica-a");
    until("it leads", || holder(&k8s).as_deref() == Some("replica-a")).await;
    // A leader whose renewals succeed keeps leading (over several lease periods).
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        leader.0.try_wait().unwrap().is_none(),
        "a healthy leader stopped"
    );
    // From now on the API server refuses every Lease request: the lease manager keeps saying
    // "leading" while its renewals fail, and a standby would take over once the lease expires,
    // 3 s after the last renewal.
    k8s.fail_next(None, "/leases", 100_000, Failure::Unavailable);
    let last_renewal = renewed_at(&k8s);
    let (status, exited) = exit_of(&mut leader).await;
    assert!(!status.success(), "{status:?}");
    let after = exited.duration_since(last_renewal).unwrap();
    assert!(
        after < Duration::from_secs(3),
        "exited {after:?} after the last renewal: a standby could have led already"
    );
}

#[tokio::test]
async fn a_leader_that_sees_its_lease_taken_stops_at_once() {
    let k8s = KubeEmulator::start().await.unwrap();
    let github = FakeGitHub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), k8s.kubeconfig()).unwrap();
    std::fs::write(dir.path().join("master-key"), MASTER_KEY).unwrap();
    // A 15 s lease, renewed every 5 s: the lease manager itself would see the new holder only
    // at its next renewal.
    let mut leader = operator_with_lease(&dir, &github, "replica-a", 15);
    until("it leads", || holder(&k8s).as_deref() == Some("replica-a")).await;
    let first = renewed_at(&k8s);
    until("a renewal", || renewed_at(&k8s) != first).await;
    // Another replica holds it now (a standby whose clock runs ahead took it).
    Api::<Lease>::namespaced(k8s.client(), "gatehouse")
        .patch(
            "gatehouse-operator",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"holderIdentity": "replica-b"}})),
        )
        .await
        .unwrap();
    let taken = std::time::SystemTime::now();
    let (status, exited) = exit_of(&mut leader).await;
    assert!(!status.success(), "{status:?}");
    let after = exited.duration_since(taken).unwrap();
    assert!(after < Duration::from_secs(2), "{after:?}");
}

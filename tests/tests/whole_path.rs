//! The whole path a pull request takes, every part real but GitHub and the cluster: a signed
//! `pull_request.opened` delivery goes through the receive role into a private Redis, a real
//! ingest consumer turns it into a ScanRequest in the Kubernetes API emulator, the operator's
//! real controllers turn that into the per-scan Secret, the scanner Job and a `queued` check run
//! at the GitHub stand-in; then (the test playing the cluster's Job controller and the scanner)
//! the agent's report code publishes a real KICS report signed with the key from the per-scan
//! Secret, and the operator's results consumer concludes the check run from it. Redis runs as
//! the Helm chart runs it: every part authenticates as the ACL user the chart gives it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::ScanRequest;
use gatehouse_tests::github::FakeGitHub;
use gatehouse_tests::ingest::{Harness, NS, SHA, eventually, fixture, sample_policy};
use gatehouse_tests::operator::{InProcessOperator, ScanRedis, report_step_redis};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
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
    // The report step: the agent's own code reads a real KICS report (two critical findings)
    // and signs it with the key the operator put into the per-scan Secret.
    let secret = w
        .front
        .k8s
        .get::<Secret>(NS, &format!("{name}-scan"))
        .unwrap();
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
            namespace: NS.to_owned(),
            scan_request: name.clone(),
            uid: request.metadata.uid.clone().unwrap(),
            scanner: "kics".to_owned(),
            head_sha: SHA.to_owned(),
            attempt: 1,
        },
        "5eeded5eeded5eeded5eeded5eeded5e".to_owned(),
        read,
        None,
        20_000,
    );
    let entry = gatehouse_operator::agent::report::entry(&result, &key).unwrap();
    // As the report step connects: the user of its --redis-url (gatehouse-scan), the password
    // from the per-scan Secret.
    gatehouse_operator::agent::report::publish(
        &report_step_redis(&w.front.k8s, NS, &name).unwrap(),
        &entry,
        1,
    )
    .await
    .unwrap();
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

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

//! Scan results back to GitHub: the operator's results consumer against a real Redis, the
//! Kubernetes API emulator and the GitHub stand-in. Results are made by the agent's own `report`
//! code from real KICS reports (`tests/fixtures/kics/`) and published as an agent publishes them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::time::Duration;

use base64::Engine as _;

use gatehouse_crds::ScanRequest;
use gatehouse_crds::stream::{BodyEncoding, Finding, ResultEntry, ScanResult};
use gatehouse_tests::JobState;
use gatehouse_tests::github::CheckRun;

use gatehouse_tests::operator::{NS, OperatorHarness, kics_policy, sample_request};
use k8s_openapi::api::batch::v1::Job;

const SR: &str = "hello-world-pr2-ec26c3e-016643a9";
const JOB: &str = "hello-world-pr2-ec26c3e-016643a9-kics";
/// Where the e2e scans of KICS's own fixtures saw their files.
const E2E_ROOT: &str = "/path/e2e/fixtures/samples";
const TERRAFORM: &str = "kics-v2_mixed-17-findings-terraform_e2e086.json";

/// A harness with the operator and the results consumer running, the sample request's Job
/// created and finished (its `report` step published, the test publishes in its stead).
async fn scanned() -> (OperatorHarness, ScanRequest) {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // Redis as the Helm chart runs it: the operator as `gatehouse`, the report step as
    // `gatehouse-scan` with the password from the per-scan Secret.
    h.redis_acl = true;
    h.start_operator().unwrap();
    h.start_results().await.unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in progress", |h| {
        run(h).is_some_and(|r| r.status == "in_progress")
    })
    .await
    .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    let request = h.request(SR).unwrap();
    (h, request)
}

fn run(h: &OperatorHarness) -> Option<CheckRun> {
    h.github
        .check_runs()
        .into_iter()
        .find(|r| r.external_id.contains(SR))
}

fn concluded(h: &OperatorHarness) -> bool {
    run(h).is_some_and(|r| r.status == "completed")
}

/// PATCH calls on the run: (annotations sent, whether it concluded).
fn patches(h: &OperatorHarness, id: i64) -> Vec<(usize, bool)> {
    h.github
        .calls()
        .iter()
        .filter(|c| {
            c.method == "PATCH" && c.path.ends_with(&format!("/check-runs/{id}")) && c.status == 200
        })
        .map(|c| {
            (
                c.body["output"]["annotations"]
                    .as_array()
                    .map_or(0, Vec::len),
                c.body["conclusion"].is_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_published_kics_result_concludes_its_check_run_with_counts_title_and_annotations() {
    let (h, request) = scanned().await;
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    let run = run(&h).unwrap();
    // The sample policy fails on high; the report has six high findings.
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(
        run.title.as_deref(),
        Some("17 findings: 6 high, 2 medium, 7 low, 2 info")
    );
    let summary = run.summary.clone().unwrap();
    assert!(
        summary.starts_with("**Failed**: 6 findings at or above **high**"),
        "{summary}"
    );
    assert!(summary.contains("### Reproduce locally"), "{summary}");
    assert_eq!(run.annotations.len(), 17);
    assert_eq!(run.annotations[0]["path"], "terraform.tf");
    assert_eq!(run.annotations[0]["annotation_level"], "failure");
    assert_eq!(
        run.annotations[0]["title"],
        "[high] Redshift Publicly Accessible"
    );
    // Counts and the conclusion in the ScanRequest's status (the printer columns show them).
    h.until("reported", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(
        status.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Failed")
    );
    let scanner = &status.scanners[0];
    assert_eq!(scanner.findings.unwrap().high, 6);
    assert_eq!(
        scanner.result_id.as_deref(),
        Some(result.result_id.as_str())
    );
    assert_eq!(status.findings.unwrap().high, 6);
    // Nothing is dead-lettered, and nothing more is posted on a later look.
    assert!(h.dead_letters().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        patches(&h, run.id).len(),
        2,
        "in_progress, then the conclusion"
    );
}

/// `n` findings from the Terraform report's first, each its own line and fingerprint.
fn with_findings(mut result: ScanResult, n: u32) -> ScanResult {
    let one = result.findings[0].clone();
    result.findings = (0..n)
        .map(|i| Finding {
            fingerprint: format!("f{i:04}"),
            start_line: Some(i + 1),
            end_line: Some(i + 1),
            ..one.clone()
        })
        .collect();
    result.counts = gatehouse_crds::severity::SeverityCounts {
        high: i64::from(n),
        ..Default::default()
    };
    result
}

#[tokio::test]
async fn a_hundred_and_twenty_findings_go_in_three_batches_then_the_conclusion() {
    let (h, request) = scanned().await;
    let result = with_findings(
        h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap(),
        120,
    );
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.annotations.len(), 120);
    let lines: Vec<i64> = run
        .annotations
        .iter()
        .map(|a| a["start_line"].as_i64().unwrap())
        .collect();
    assert_eq!(
        lines,
        (1..=120).collect::<Vec<i64>>(),
        "in order, none twice"
    );
    // After the controller's in_progress: two batches alone (status untouched), then the last
    // twenty with the conclusion.
    let calls = patches(&h, run.id);
    assert_eq!(
        calls[1..],
        [(50, false), (50, false), (20, true)],
        "{calls:?}"
    );
    let batch = h
        .github
        .calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.body["output"]["annotations"].is_array())
        .find(|c| !c.body["conclusion"].is_string())
        .unwrap();
    assert!(batch.body.get("status").is_none(), "{}", batch.body);
}

#[tokio::test]
async fn a_crash_between_the_annotations_and_the_conclusion_sends_no_annotation_twice() {
    let (h, request) = scanned().await;
    let result = with_findings(
        h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap(),
        120,
    );
    let id = run(&h).unwrap().id;
    // Two batches go through; the final request (the last twenty and the conclusion) fails.
    h.github.fail_after(
        "PATCH",
        &format!("/repos/Codertocat/Hello-World/check-runs/{id}"),
        2,
        502,
        1,
    );
    h.publish(&result).await.unwrap();
    h.until("concluded after a retry", concluded).await.unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.annotations.len(), 120, "each annotation once");
    let refused = h.github.calls().iter().filter(|c| c.status == 502).count();
    assert_eq!(refused, 1);
}

#[tokio::test]
async fn a_forged_result_is_dead_lettered_and_changes_nothing() {
    let (h, request) = scanned().await;
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    // Signed with another request's key (a leaked one, say).
    let key = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap()
    .scan_key("another-uid");
    let entry = gatehouse_operator::agent::report::entry(&result, &key).unwrap();
    h.publish_entry(&entry).await.unwrap();
    // And one whose payload was changed after signing.
    let honest = gatehouse_operator::agent::report::entry(
        &result,
        &gatehouse_operator::keys::MasterKey::from_file_contents(
            gatehouse_tests::operator::MASTER_KEY,
        )
        .unwrap()
        .scan_key(&result.uid),
    )
    .unwrap();
    let mut edited = result.clone();
    edited.findings.clear();
    edited.counts = gatehouse_crds::severity::SeverityCounts::default();
    h.publish_entry(&ResultEntry {
        payload: serde_json::to_vec(&edited).unwrap(),
        encoding: BodyEncoding::Identity,
        ..honest
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let reasons = h.dead_letters().await.unwrap();
        if reasons.len() == 2 || tokio::time::Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("forged")),
        "{reasons:?}"
    );
    assert_eq!(run(&h).unwrap().status, "in_progress");
    assert!(
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .result_id
            .is_none()
    );
}

#[tokio::test]
async fn a_second_different_result_is_refused_as_replayed_and_the_same_one_again_changes_nothing() {
    let (h, request) = scanned().await;
    let first = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&first).await.unwrap();
    h.until("reported", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    let calls_before = h.github.calls().len();
    // The same result again (an agent's retried XADD, or a copy): acknowledged, nothing sent.
    h.publish(&first).await.unwrap();
    // Another result for the same attempt, validly signed: a replay of an older scan, or a
    // pod that should not be publishing twice.
    let mut other = h
        .kics_result(&request, "kics-v2_zero-findings_e2e073.json", E2E_ROOT, 1)
        .unwrap();
    other.result_id = "ffffffffffffffffffffffffffffffff".to_owned();
    h.publish(&other).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let reasons = h.dead_letters().await.unwrap();
        if !reasons.is_empty() || tokio::time::Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("replayed"), "{reasons:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = run(&h).unwrap();
    assert_eq!(run.annotations.len(), 17);
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    let writes = h
        .github
        .calls()
        .iter()
        .skip(calls_before)
        .filter(|c| c.method != "GET")
        .count();
    assert_eq!(writes, 0, "{:#?}", &h.github.calls()[calls_before..]);
}

#[tokio::test]
async fn github_refusing_for_a_while_delays_the_report_and_loses_nothing() {
    let (h, request) = scanned().await;
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // A secondary rate limit with retry-after, then two server errors.
    h.github.fail_next(
        "GET",
        &route,
        403,
        vec![("retry-after".to_owned(), "1".to_owned())],
        1,
    );
    h.github.fail_next("GET", &route, 503, vec![], 2);
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    let calls = h.github.calls();
    let limited = calls.iter().find(|c| c.status == 403).unwrap().at;
    let next = calls
        .iter()
        .find(|c| c.at > limited && c.path == route)
        .unwrap()
        .at;
    assert!(
        next.duration_since(limited) >= Duration::from_millis(900),
        "asked again {:?} after retry-after: 1",
        next.duration_since(limited)
    );
    assert_eq!(run(&h).unwrap().annotations.len(), 17);
}

/// Entries of the results stream delivered and not yet acknowledged.
async fn pending(h: &OperatorHarness) -> i64 {
    let mut conn = redis::Client::open(h.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg("{gatehouse-results}:results")
        .arg("report")
        .query_async(&mut conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(fields) => match fields.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// The operator's metrics as exposed.
fn metrics(h: &OperatorHarness) -> String {
    h.metrics.render(&[], None)
}

/// Whether the results consumer's circuit breaker holds GitHub back.
fn circuit_open(h: &OperatorHarness) -> bool {
    metrics(h).contains("\ngatehouse_operator_github_circuit_open 1\n")
}

/// Another pull request (`name`, head SHA of `digit`s, base commit `base` when given), its Job
/// created and finished; returns it as stored.
async fn finished(h: &OperatorHarness, name: &str, digit: char, base: Option<&str>) -> ScanRequest {
    let mut request = gatehouse_tests::operator::request(name, digit);
    request.spec.pull_request.number = 3 + i64::from(u32::from(digit) % 100);
    request.spec.pull_request.base_sha = base.map(str::to_owned);
    h.create(&request).await.unwrap();
    let job = format!("{name}-kics");
    h.until("its Job", |h| h.k8s.get::<Job>(NS, &job).is_some())
        .await
        .unwrap();
    h.k8s
        .set_job_status(NS, &job, &JobState::Succeeded)
        .unwrap();
    h.request(name).unwrap()
}

/// GETs of the check run `id` (only the results consumer reads a run by its id).
fn reads_of(h: &OperatorHarness, id: i64) -> usize {
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    h.github
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path == route)
        .count()
}

#[tokio::test]
async fn while_github_is_down_results_are_recorded_and_reported_once_it_is_back() {
    let (mut h, request) = scanned().await;
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // GitHub is down for request A's run and asks to come back in a minute: the breaker opens
    // on A's result, and stays open through everything below however slow the machine.
    let down = vec![("retry-after".to_owned(), "60".to_owned())];
    h.github.fail_next("GET", &route, 503, down.clone(), 10_000);
    h.github.fail_next("PATCH", &route, 503, down, 10_000);
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("the breaker open", circuit_open).await.unwrap();
    // Request B's scan finishes while the breaker is open: its conclusion is recorded in its
    // status all the same (kubectl shows it), nothing is asked of GitHub.
    let b = finished(&h, "sr-b", 'b', None).await;
    let b_result = h.kics_result(&b, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&b_result).await.unwrap();
    h.until("B's conclusion recorded in its status", |h| {
        h.request("sr-b").unwrap().status.unwrap().scanners[0]
            .conclusion
            .is_some()
    })
    .await
    .unwrap();
    assert!(circuit_open(&h), "recorded while the breaker is open");
    let b_status = h.request("sr-b").unwrap().status.unwrap();
    assert_eq!(b_status.scanners[0].findings.unwrap().high, 6);
    assert_ne!(
        b_status.scanners[0].reported.as_deref(),
        Some("completed/failure")
    );
    let b_id = b_status.scanners[0].check_run_id.unwrap();
    // A result that is dropped (its ScanRequest is gone) says nothing about GitHub: the breaker
    // stays open, and neither run is asked for.
    let mut late = b_result.clone();
    "sr-gone".clone_into(&mut late.scan_request);
    late.result_id = "d".repeat(32);
    let key = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap()
    .scan_key(&late.uid);
    h.publish_entry(&gatehouse_operator::agent::report::entry(&late, &key).unwrap())
        .await
        .unwrap();
    h.until("dropped", |h| {
        metrics(h).contains("gatehouse_operator_results_total{outcome=\"dropped\"} 1")
    })
    .await
    .unwrap();
    let reads = (reads_of(&h, id), reads_of(&h, b_id));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        circuit_open(&h),
        "a dropped result does not close the breaker"
    );
    assert_eq!(
        (reads_of(&h, id), reads_of(&h, b_id)),
        reads,
        "GitHub not asked while the breaker is open"
    );
    assert_eq!(run(&h).unwrap().status, "in_progress");
    assert_eq!(pending(&h).await, 2, "both entries wait in the stream");
    // GitHub is back. The consumer would wait out the minute GitHub asked for (the breaker's
    // hold ending is `a_refusal_for_good_closes_the_breaker…`'s); the operator restarts
    // instead, and the next consumer takes up the entries left pending.
    h.github.clear_faults();
    h.crash_results();
    h.start_results().await.unwrap();
    h.until("both concluded once GitHub is back", |h| {
        h.github
            .check_runs()
            .iter()
            .filter(|r| r.status == "completed")
            .count()
            == 2
    })
    .await
    .unwrap();
    assert_eq!(run(&h).unwrap().annotations.len(), 17);
    h.until("both reported", |h| {
        ["sr-b", SR].iter().all(|name| {
            h.request(name).unwrap().status.unwrap().scanners[0]
                .reported
                .as_deref()
                == Some("completed/failure")
        })
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pending(&h).await != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending(&h).await, 0);
}

#[tokio::test]
async fn a_lost_answer_then_a_crash_is_finished_by_the_next_consumer_without_repeats() {
    let (mut h, request) = scanned().await;
    let result = with_findings(
        h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap(),
        120,
    );
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // GitHub applies the first batch but its answer is lost; the consumer dies right after.
    h.github.lose_answer_next("PATCH", &route, 502, 1);
    h.publish(&result).await.unwrap();
    h.until("the answer lost", |h| {
        h.github.calls().iter().any(|c| c.status == 502)
    })
    .await
    .unwrap();
    h.crash_results();
    let applied = run(&h).unwrap().annotations.len();
    assert!(
        applied >= 50,
        "{applied} annotations applied before the crash"
    );
    // The next consumer has another name: it claims the dead one's entry once idle.
    h.start_results().await.unwrap();
    h.until("concluded by the next consumer", concluded)
        .await
        .unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.annotations.len(), 120, "each annotation once");
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    h.until("reported", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending(&h).await != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pending(&h).await,
        0,
        "the dead consumer's entry acknowledged"
    );
}

#[tokio::test]
async fn a_batch_of_annotations_github_refuses_ends_the_annotations_and_the_conclusion_says_so() {
    let (h, request) = scanned().await;
    let result = with_findings(
        h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap(),
        120,
    );
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // The second batch of fifty is refused as unprocessable, the conclusion after it fails
    // once, and on the retry GitHub refuses that batch again.
    h.github.fail_after("PATCH", &route, 1, 422, 1);
    h.github.fail_after("PATCH", &route, 0, 502, 1);
    h.github.fail_after("PATCH", &route, 0, 422, 1);
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    // The annotations GitHub holds are the first fifty, so its count stays where to resume.
    let lines: Vec<i64> = run
        .annotations
        .iter()
        .map(|a| a["start_line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, (1..=50).collect::<Vec<i64>>());
    let summary = run.summary.unwrap();
    assert!(
        summary.contains("70 of the 120 annotations were not posted"),
        "{summary}"
    );
    assert_eq!(
        h.github.calls().iter().filter(|c| c.status == 422).count(),
        2,
        "no batch after a refused one"
    );
}

#[tokio::test]
async fn a_refused_batch_then_a_lost_conclusion_posts_no_annotation_twice() {
    let (h, request) = scanned().await;
    let result = with_findings(
        h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap(),
        170,
    );
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // GitHub takes the first batch and refuses the second (422); it takes the next request,
    // but that answer is lost (502), and the retry finds GitHub taking everything again. The
    // request after a refused batch must be the conclusion: were the third batch sent instead
    // and its answer lost, the retry would resume at GitHub's count (100) and post 101-150
    // twice, 51-100 never.
    h.github.fail_after("PATCH", &route, 1, 422, 1);
    h.github.lose_answer_after("PATCH", &route, 1, 502, 1);
    h.publish(&result).await.unwrap();
    h.until("reported", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    let run = run(&h).unwrap();
    let lines: Vec<i64> = run
        .annotations
        .iter()
        .map(|a| a["start_line"].as_i64().unwrap())
        .collect();
    assert_eq!(
        lines,
        (1..=170).collect::<Vec<i64>>(),
        "each annotation once, in order"
    );
    let lost: Vec<_> = h
        .github
        .calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path == route && c.status == 502)
        .collect();
    assert_eq!(lost.len(), 1);
    assert!(
        lost[0].body["conclusion"].is_string(),
        "the lost answer is the conclusion's"
    );
    assert_eq!(run.status, "completed");
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    let summary = run.summary.unwrap();
    assert!(
        !summary.contains("were not posted"),
        "the last summary is the retry's, which posted them all: {summary}"
    );
}

#[tokio::test]
async fn a_scan_without_a_report_fails_as_a_scanner_error_never_as_no_findings() {
    let (h, request) = scanned().await;
    let empty = tempfile::tempdir().unwrap();
    let read = gatehouse_operator::agent::report::read_output(
        gatehouse_crds::scanpolicy::ScannerKind::Kics,
        0,
        empty.path(),
        "/workspace/src",
    );
    let result = gatehouse_operator::agent::report::result(
        &gatehouse_operator::agent::report::Identity {
            namespace: NS.to_owned(),
            scan_request: SR.to_owned(),
            uid: request.metadata.uid.clone().unwrap(),
            scanner: "kics".to_owned(),
            head_sha: request.spec.pull_request.head_sha.clone(),
            attempt: 1,
        },
        "0123456789abcdef0123456789abcdef".to_owned(),
        read,
        None,
        100,
    );
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(
        run.title.as_deref(),
        Some("Scanner error: exit code 0, no report")
    );
    assert!(run.summary.unwrap().contains("no report was written"));
}

#[tokio::test]
async fn a_result_that_never_arrives_fails_its_scanner_after_the_timeout() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.result_timeout = Duration::from_secs(2);
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    h.until("concluded", concluded).await.unwrap();
    let run = run(&h).unwrap();
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert!(
        run.title
            .as_deref()
            .unwrap()
            .starts_with("Scanner error: the scan finished but its result never arrived"),
        "{:?}",
        run.title
    );
}

#[tokio::test]
async fn a_result_of_an_earlier_attempt_or_a_deleted_request_is_dropped_not_dead_lettered() {
    let (h, request) = scanned().await;
    let mut old = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    old.attempt = 0;
    h.publish(&old).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!concluded(&h));
    assert!(h.dead_letters().await.unwrap().is_empty());
    assert_eq!(
        pending(&h).await,
        0,
        "dropped: acknowledged, not left pending"
    );
    // The real one still concludes the run.
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
}

/// The names of a Job's init containers, in order.
fn init_steps(h: &OperatorHarness, job: &str) -> Vec<String> {
    h.k8s.get::<Job>(NS, job).unwrap()["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

const BASE: &str = "0000000000000000000000000000000000000bb5";

/// A harness whose policy has baseline mode on, after the sample pull request (on `BASE`) was
/// scanned with its base: the base had every finding but the two "Redshift Publicly
/// Accessible", so two are new.
async fn base_scanned() -> OperatorHarness {
    let mut policy = kics_policy();
    policy.spec.reporting.baseline = true;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.redis_acl = true;
    h.start_results().await.unwrap();
    h.start_operator().unwrap();
    let mut first = sample_request();
    first.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&first).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    // The base commit's findings are not known yet: this pod scans it too, first.
    assert_eq!(init_steps(&h, JOB), ["checkout", "scan-base", "scan"]);
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    let request = h.request(SR).unwrap();
    let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    let mut base: Vec<String> = result
        .findings
        .iter()
        .filter(|f| f.title != "Redshift Publicly Accessible")
        .map(|f| f.fingerprint.clone())
        .collect();
    base.sort();
    result.baseline = Some(gatehouse_crds::stream::Baseline {
        sha: BASE.to_owned(),
        outcome: gatehouse_crds::stream::ScanOutcome::Completed,
        counts: gatehouse_crds::severity::SeverityCounts {
            high: 4,
            medium: 2,
            low: 7,
            info: 2,
            critical: 0,
        },
        fingerprints: base,
    });
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    h
}

/// Another pull request (`name`, head SHA of `digit`s) on `BASE`: its Job must not scan the
/// base again; it finishes with the terraform report changed by `edit`. Returns its run.
async fn on_the_same_base(
    h: &OperatorHarness,
    name: &str,
    digit: char,
    edit: impl FnOnce(&mut ScanResult),
) -> CheckRun {
    let mut request = gatehouse_tests::operator::request(name, digit);
    request.spec.pull_request.number = 3 + i64::from(u32::from(digit) % 100);
    request.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&request).await.unwrap();
    let job = format!("{name}-kics");
    h.until("its Job", |h| h.k8s.get::<Job>(NS, &job).is_some())
        .await
        .unwrap();
    assert_eq!(init_steps(h, &job), ["checkout", "scan"]);
    h.k8s
        .set_job_status(NS, &job, &JobState::Succeeded)
        .unwrap();
    let request = h.request(name).unwrap();
    let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    edit(&mut result);
    h.publish(&result).await.unwrap();
    let done = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains(name) && r.status == "completed")
    };
    h.until("concluded", |h| done(h).is_some()).await.unwrap();
    done(h).unwrap()
}

#[tokio::test]
async fn baseline_mode_scans_the_base_once_and_counts_only_what_each_pull_request_introduces() {
    let h = base_scanned().await;
    let run = run(&h).unwrap();
    assert_eq!(
        run.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(run.annotations.len(), 2);
    assert!(
        run.summary.unwrap().contains("| high | 2 | 4 | 6 |"),
        "both numbers in the summary"
    );
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(status.scanners[0].new_findings.unwrap().high, 2);
    assert_eq!(status.scanners[0].findings.unwrap().high, 6);

    // Another pull request on the same base: no second scan of it, its findings come from
    // what Redis keeps; this one introduces nothing at or above high.
    let second = on_the_same_base(&h, "sr-second", 'c', |result| {
        result
            .findings
            .retain(|f| f.title != "Redshift Publicly Accessible");
        result.counts.high = 4;
    })
    .await;
    assert_eq!(second.conclusion.as_deref(), Some("success"));
    assert_eq!(
        second.title.as_deref(),
        Some("No new findings (15 pre-existing)")
    );
    assert!(second.annotations.is_empty());
}

#[tokio::test]
async fn kept_base_findings_someone_else_rewrote_are_not_trusted() {
    let h = base_scanned().await;
    // Something that is not the operator (a scan pod's Redis access, say) rewrites the kept
    // findings to include the Redshift ones: the value no longer matches its signature.
    let (key, kept, mut conn) = kept_base(&h).await;
    let mut text =
        String::from_utf8(lz4_flex::decompress_size_prepended(&kept[64..]).unwrap()).unwrap();
    let request = h.request(SR).unwrap();
    let findings = h
        .kics_result(&request, TERRAFORM, E2E_ROOT, 1)
        .unwrap()
        .findings;
    for finding in &findings {
        text.push('\n');
        text.push_str(&finding.fingerprint);
    }
    let mut forged = kept[..64].to_vec();
    forged.extend(lz4_flex::compress_prepend_size(text.as_bytes()));
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(forged)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The controller checks the kept findings as the consumer does: the next pull request's
    // Job scans the base again, and the forged value is gone.
    let third = finished(&h, "sr-third", 'd', Some(BASE)).await;
    assert_eq!(
        init_steps(&h, "sr-third-kics"),
        ["checkout", "scan-base", "scan"]
    );
    let gone: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(gone, None);
    let mut result = h.kics_result(&third, TERRAFORM, E2E_ROOT, 1).unwrap();
    let mut base: Vec<String> = findings
        .iter()
        .filter(|f| f.title != "Redshift Publicly Accessible")
        .map(|f| f.fingerprint.clone())
        .collect();
    base.sort();
    result.baseline = Some(gatehouse_crds::stream::Baseline {
        sha: BASE.to_owned(),
        outcome: gatehouse_crds::stream::ScanOutcome::Completed,
        counts: gatehouse_crds::severity::SeverityCounts::default(),
        fingerprints: base,
    });
    h.publish(&result).await.unwrap();
    let done = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains("sr-third") && r.status == "completed")
    };
    h.until("concluded", |h| done(h).is_some()).await.unwrap();
    assert_eq!(
        done(&h).unwrap().title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
    // Its base scan is kept again, signed: the next pull request is spared it.
    let fourth = on_the_same_base(&h, "sr-fourth", 'e', |_| {}).await;
    assert_eq!(
        fourth.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
}

#[tokio::test]
async fn a_result_never_lets_the_controller_reopen_a_concluded_run() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.start_results().await.unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("queued", |h| {
        run(h).is_some_and(|r| r.history == ["queued"])
    })
    .await
    .unwrap();
    // The Job succeeds before its pod was ever seen running: the controller writes Completed
    // and is about to post in_progress; its status write's answer is held meanwhile.
    let mut written = h
        .k8s
        .pause_next_answer("PATCH", &format!("/scanrequests/{SR}/status"));
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    written.arrived().await.unwrap();
    let request = h.request(SR).unwrap();
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    // Time for the consumer to act, were it free to.
    tokio::time::sleep(Duration::from_millis(800)).await;
    written.release();
    h.until("concluded", concluded).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let run = run(&h).unwrap();
    assert_eq!(
        run.history.last().map(String::as_str),
        Some("completed/failure"),
        "{:?}",
        run.history
    );
    assert_eq!(run.status, "completed");
}

#[tokio::test]
async fn with_the_policys_sarif_upload_on_the_report_goes_to_code_scanning_too() {
    let mut policy = kics_policy();
    policy.spec.reporting.sarif_upload = true;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.start_operator().unwrap();
    h.start_results().await.unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    let job = h.k8s.get::<Job>(NS, JOB).unwrap();
    let report_args = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(report_args.contains("--include-sarif"), "{report_args}");
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    // The report step read the scanner's SARIF as well (a real KICS SARIF report).
    let request = h.request(SR).unwrap();
    let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let sarif_fixture = format!(
        "{}/fixtures/kics/kics-v2_high-1-result-cicd_e2e080.sarif",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(&sarif_fixture, out.path().join("results.sarif")).unwrap();
    result.sarif = Some(
        gatehouse_operator::agent::report::sarif_for_upload(
            gatehouse_crds::scanpolicy::ScannerKind::Kics,
            out.path(),
        )
        .unwrap(),
    );
    h.publish(&result).await.unwrap();
    h.until("uploaded", |h| !h.github.sarif_uploads().is_empty())
        .await
        .unwrap();
    assert!(concluded(&h));
    let (repo, body) = h.github.sarif_uploads().remove(0);
    assert_eq!(repo, "Codertocat/Hello-World");
    assert_eq!(body["ref"], "refs/pull/2/head");
    assert_eq!(
        body["commit_sha"],
        request.spec.pull_request.head_sha.as_str()
    );
    assert_eq!(body["tool_name"], "gatehouse/kics");
    let gz = base64::engine::general_purpose::STANDARD
        .decode(body["sarif"].as_str().unwrap())
        .unwrap();
    let mut sarif = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut sarif)
        .unwrap();
    assert_eq!(sarif, std::fs::read_to_string(sarif_fixture).unwrap());
}

#[tokio::test]
async fn an_earlier_attempts_result_arriving_after_the_recorded_one_is_dropped_not_dead_lettered() {
    let (h, request) = scanned().await;
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    // The result of an attempt before the recorded one, delivered late.
    let mut old = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    old.attempt = 0;
    h.publish(&old).await.unwrap();
    h.until("dropped", |h| {
        h.metrics
            .render(&[], None)
            .contains("gatehouse_operator_results_total{outcome=\"dropped\"} 1")
    })
    .await
    .unwrap();
    assert!(h.dead_letters().await.unwrap().is_empty());
    assert_eq!(pending(&h).await, 0, "dropped: acknowledged");
}

#[tokio::test]
async fn a_check_run_github_no_longer_has_is_made_again_and_the_report_goes_into_it() {
    let (h, request) = scanned().await;
    let gone = run(&h).unwrap().id;
    // GitHub answers 404 for the run the status records.
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{gone}");
    h.github.fail_next("GET", &route, 404, vec![], 10_000);
    h.github.fail_next("PATCH", &route, 404, vec![], 10_000);
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    let replacement = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains(SR) && r.id != gone && r.status == "completed")
    };
    h.until("concluded in a new run", |h| replacement(h).is_some())
        .await
        .unwrap();
    let new = replacement(&h).unwrap();
    assert_eq!(new.name, "gatehouse/kics");
    assert_eq!(new.conclusion.as_deref(), Some("failure"));
    assert_eq!(new.annotations.len(), 17);
    h.until("reported", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].check_run_id,
        Some(new.id)
    );
}

/// The kept findings of `BASE` (signed, as the operator keeps them), their key, and a
/// connection to the results Redis.
async fn kept_base(h: &OperatorHarness) -> (String, Vec<u8>, redis::aio::MultiplexedConnection) {
    let key = gatehouse_operator::results::baseline_key(
        sample_request().spec.repository.id,
        BASE,
        &kics_policy().spec.scanners[0],
    );
    let mut conn = redis::Client::open(h.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kept: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    (key, kept, conn)
}

#[tokio::test]
async fn a_redis_failure_while_judging_against_the_base_is_retried_never_taken_for_an_unknown_base()
{
    let h = base_scanned().await;
    let (key, kept, mut conn) = kept_base(&h).await;
    let request = finished(&h, "sr-second", 'c', Some(BASE)).await;
    assert_eq!(init_steps(&h, "sr-second-kics"), ["checkout", "scan"]);
    // Then Redis cannot answer for the kept findings a while (any error; here the key holds a
    // value of another type, so GET fails with WRONGTYPE).
    let () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(0)
        .query_async::<i64>(&mut conn)
        .await
        .map(|_| ())
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("held")
        .arg("by something else")
        .query_async::<i64>(&mut conn)
        .await
        .map(|_| ())
        .unwrap();
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = h.request("sr-second").unwrap().status.unwrap();
    assert!(
        status.scanners[0].conclusion.is_none(),
        "nothing decided while Redis fails: {:?}",
        status.scanners[0]
    );
    // Redis answers again: the result is judged against the kept findings.
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(kept)
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();
    let done = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains("sr-second") && r.status == "completed")
    };
    h.until("concluded", |h| done(h).is_some()).await.unwrap();
    assert_eq!(
        done(&h).unwrap().title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
}

#[tokio::test]
async fn base_findings_from_a_job_that_did_not_scan_the_base_are_ignored_and_replace_nothing() {
    let h = base_scanned().await;
    // The second pull request's Job does not scan the base (its findings are kept); its report
    // step (a per-scan key that leaked, say) sends base findings all the same, listing every
    // finding so that none would be new, for this pull request and every later one.
    let second = on_the_same_base(&h, "sr-second", 'c', |result| {
        result.baseline = Some(gatehouse_crds::stream::Baseline {
            sha: BASE.to_owned(),
            outcome: gatehouse_crds::stream::ScanOutcome::Completed,
            counts: result.counts,
            fingerprints: result
                .findings
                .iter()
                .map(|f| f.fingerprint.clone())
                .collect(),
        });
    })
    .await;
    assert_eq!(
        second.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
    assert_eq!(second.conclusion.as_deref(), Some("failure"));
    let third = on_the_same_base(&h, "sr-third", 'd', |_| {}).await;
    assert_eq!(
        third.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
}

#[tokio::test]
async fn a_second_scan_of_a_base_keeps_the_first_ones_findings() {
    let mut policy = kics_policy();
    policy.spec.reporting.baseline = true;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.start_results().await.unwrap();
    h.start_operator().unwrap();
    // Two pull requests on a base nobody scanned yet, at the same moment: both Jobs scan it.
    let mut first = sample_request();
    first.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&first).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    let mut second = gatehouse_tests::operator::request("sr-second", 'c');
    second.spec.pull_request.number = 7;
    second.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&second).await.unwrap();
    h.until("its Job", |h| {
        h.k8s.get::<Job>(NS, "sr-second-kics").is_some()
    })
    .await
    .unwrap();
    assert_eq!(init_steps(&h, JOB), ["checkout", "scan-base", "scan"]);
    assert_eq!(
        init_steps(&h, "sr-second-kics"),
        ["checkout", "scan-base", "scan"]
    );
    for (name, job) in [(SR, JOB), ("sr-second", "sr-second-kics")] {
        h.k8s.set_job_status(NS, job, &JobState::Succeeded).unwrap();
        let request = h.request(name).unwrap();
        let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
        // The first saw the Redshift findings as new; the second's base scan (say the base
        // changed under a rewritten history, or a report step that lies) saw every finding.
        let fingerprints = result
            .findings
            .iter()
            .filter(|f| name != SR || f.title != "Redshift Publicly Accessible")
            .map(|f| f.fingerprint.clone())
            .collect();
        result.baseline = Some(gatehouse_crds::stream::Baseline {
            sha: BASE.to_owned(),
            outcome: gatehouse_crds::stream::ScanOutcome::Completed,
            counts: result.counts,
            fingerprints,
        });
        h.publish(&result).await.unwrap();
        let done = |h: &OperatorHarness| {
            h.github
                .check_runs()
                .into_iter()
                .any(|r| r.external_id.contains(name) && r.status == "completed")
        };
        h.until("concluded", done).await.unwrap();
    }
    // Each was judged against its own base scan; the findings kept are the first ones.
    let second = h
        .github
        .check_runs()
        .into_iter()
        .find(|r| r.external_id.contains("sr-second"))
        .unwrap();
    assert_eq!(
        second.title.as_deref(),
        Some("No new findings (17 pre-existing)")
    );
    let third = on_the_same_base(&h, "sr-third", 'd', |_| {}).await;
    assert_eq!(
        third.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
}

/// Entries in the results stream.
async fn stream_length(h: &OperatorHarness) -> u64 {
    let client = redis::Client::open(h.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(gatehouse_crds::stream::RESULTS_STREAM)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn handled_results_are_trimmed_from_the_stream_and_recent_ones_kept() {
    let (h, request) = scanned().await;
    // 300 entries from 20 minutes ago (older than the 15 minutes kept for debugging), as a
    // stream that ran for a while holds them; they are not results, so the consumer
    // dead-letters (and acknowledges) each. Redis trims whole nodes of 100 entries.
    let client = redis::Client::open(h.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let old_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 20 * 60 * 1000;
    for i in 0..300 {
        let _: String = redis::cmd("XADD")
            .arg(gatehouse_crds::stream::RESULTS_STREAM)
            .arg(format!("{old_ms}-{i}"))
            .arg("junk")
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.dead_letters().await.unwrap().len() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while stream_length(&h).await > 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handled entries were never trimmed: {} left",
            stream_length(&h).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A result published now is reported, and stays in the stream for a while after.
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = redis::Client::open(h.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let recent: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(gatehouse_crds::stream::RESULTS_STREAM)
        .arg(format!("{}", old_ms + 60_000))
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(recent.ids.len(), 1, "the recent result is kept");
}

/// A value under a kept-findings key that the operator did not write: `signature` (64
/// characters, not the value's) before the LZ4-compressed claim that the base `base` had every
/// one of `fingerprints`, so that nothing would be new.
fn forged_base(signature: &[u8], base: &str, fingerprints: &[String]) -> Vec<u8> {
    let mut text = format!("known\n{base}");
    for fingerprint in fingerprints {
        text.push('\n');
        text.push_str(fingerprint);
    }
    let mut forged = signature[..64].to_vec();
    forged.extend(lz4_flex::compress_prepend_size(text.as_bytes()));
    forged
}

/// Whether `bytes`, kept under `key`, carry the operator's signature.
fn signed_by_the_operator(key: &str, bytes: &[u8]) -> bool {
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    gatehouse_operator::results::is_kept_base(&master, key, bytes)
}

#[tokio::test]
async fn a_forged_base_planted_while_a_job_scans_the_base_is_replaced_by_that_scan() {
    let mut policy = kics_policy();
    policy.spec.reporting.baseline = true;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.redis_acl = true;
    h.start_results().await.unwrap();
    h.start_operator().unwrap();
    let mut first = sample_request();
    first.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&first).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    assert_eq!(init_steps(&h, JOB), ["checkout", "scan-base", "scan"]);
    // Once the Job is planned (the controller checked the key then), something that is not the
    // operator writes findings for the base claiming every finding is pre-existing.
    let request = h.request(SR).unwrap();
    let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    let every: Vec<String> = result
        .findings
        .iter()
        .map(|f| f.fingerprint.clone())
        .collect();
    let key = gatehouse_operator::results::baseline_key(
        request.spec.repository.id,
        BASE,
        &kics_policy().spec.scanners[0],
    );
    let mut conn = redis::Client::open(h.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(forged_base(&[b'0'; 64], BASE, &every))
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The pod scanned the base: every finding but the two Redshift ones was there.
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    let mut base: Vec<String> = result
        .findings
        .iter()
        .filter(|f| f.title != "Redshift Publicly Accessible")
        .map(|f| f.fingerprint.clone())
        .collect();
    base.sort();
    result.baseline = Some(gatehouse_crds::stream::Baseline {
        sha: BASE.to_owned(),
        outcome: gatehouse_crds::stream::ScanOutcome::Completed,
        counts: gatehouse_crds::severity::SeverityCounts::default(),
        fingerprints: base,
    });
    h.publish(&result).await.unwrap();
    h.until("concluded", concluded).await.unwrap();
    // Judged on its own scan of the base, not on the forged value...
    assert_eq!(
        run(&h).unwrap().title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
    // ...which is replaced by that scan's findings, signed...
    let kept: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        signed_by_the_operator(&key, &kept),
        "the forged value was left in place"
    );
    // ...so the next pull request on that base is spared the base scan, and judged on them.
    let second = on_the_same_base(&h, "sr-second", 'c', |_| {}).await;
    assert_eq!(
        second.title.as_deref(),
        Some("2 new findings: 2 high (17 in all)")
    );
}

#[tokio::test]
async fn a_forged_base_planted_after_a_job_was_spared_the_base_scan_counts_every_finding() {
    let h = base_scanned().await;
    let (key, kept, mut conn) = kept_base(&h).await;
    let request = finished(&h, "sr-second", 'c', Some(BASE)).await;
    assert_eq!(init_steps(&h, "sr-second-kics"), ["checkout", "scan"]);
    // After the controller checked the kept findings and spared the Job its base scan,
    // something that is not the operator rewrites them to claim every finding (keeping the
    // old signature, which no longer matches).
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    let every: Vec<String> = result
        .findings
        .iter()
        .map(|f| f.fingerprint.clone())
        .collect();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(forged_base(&kept, BASE, &every))
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();
    h.publish(&result).await.unwrap();
    let done = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .into_iter()
            .find(|r| r.external_id.contains("sr-second") && r.status == "completed")
    };
    h.until("concluded", |h| done(h).is_some()).await.unwrap();
    let run = done(&h).unwrap();
    // The base is not known: every finding counts, and the summary says why; the forged
    // findings are never subtracted.
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(
        run.title.as_deref(),
        Some("17 findings: 6 high, 2 medium, 7 low, 2 info")
    );
    let summary = run.summary.unwrap();
    assert!(
        summary.contains("the base commit's findings are not known"),
        "{summary}"
    );
    assert!(!summary.contains("pre-existing"), "{summary}");
    assert_eq!(run.annotations.len(), 17);
}

/// Deletes the Job `name` and makes it again as it was (owned by its request, with its
/// `scan-base` step), but with `base` in its arguments where it had its own base commit.
async fn remake_job_scanning(h: &OperatorHarness, name: &str, base: &str) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::{Api, DeleteParams, PostParams};
    let jobs: Api<Job> = Api::namespaced(h.k8s.client(), NS);
    let mut job = jobs.get(name).await.unwrap();
    jobs.delete(name, &DeleteParams::default()).await.unwrap();
    h.until("the Job gone", |h| h.k8s.get::<Job>(NS, name).is_none())
        .await
        .unwrap();
    job.metadata = ObjectMeta {
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        owner_references: job.metadata.owner_references.clone(),
        ..ObjectMeta::default()
    };
    job.status = None;
    let spec = job.spec.as_mut().unwrap();
    spec.selector = None;
    if let Some(labels) = spec
        .template
        .metadata
        .as_mut()
        .and_then(|m| m.labels.as_mut())
    {
        labels.retain(|k, _| !k.contains("controller-uid") && !k.contains("job-name"));
    }
    let pod = spec.template.spec.as_mut().unwrap();
    let old_base = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .flat_map(|c| c.args.iter().flatten())
        .skip_while(|a| *a != "--base-sha")
        .nth(1)
        .cloned()
        .unwrap();
    for step in pod
        .init_containers
        .iter_mut()
        .flatten()
        .chain(pod.containers.iter_mut())
    {
        for arg in step.args.iter_mut().flatten() {
            if *arg == old_base {
                base.clone_into(arg);
            }
        }
    }
    jobs.create(&PostParams::default(), &job).await.unwrap();
}

#[tokio::test]
async fn base_findings_from_a_job_not_the_requests_or_not_of_its_base_are_ignored() {
    use kube::api::{Api, Patch, PatchParams};
    const OTHER_BASE: &str = "0000000000000000000000000000000000000bb6";
    const SECOND_JOB: &str = "sr-second-kics";
    let mut policy = kics_policy();
    policy.spec.reporting.baseline = true;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.start_results().await.unwrap();
    h.start_operator().unwrap();
    // Two pull requests on bases nobody scanned yet: each Job scans its base.
    let mut first = sample_request();
    first.spec.pull_request.base_sha = Some(BASE.to_owned());
    h.create(&first).await.unwrap();
    let mut second = gatehouse_tests::operator::request("sr-second", 'c');
    second.spec.pull_request.number = 7;
    second.spec.pull_request.base_sha = Some(OTHER_BASE.to_owned());
    h.create(&second).await.unwrap();
    h.until("both Jobs recorded with their check runs", |h| {
        [SR, "sr-second"].iter().all(|name| {
            h.request(name).and_then(|r| r.status).is_some_and(|s| {
                s.scanners[0].job_name.is_some() && s.scanners[0].check_run_id.is_some()
            })
        })
    })
    .await
    .unwrap();
    assert_eq!(init_steps(&h, JOB), ["checkout", "scan-base", "scan"]);
    assert_eq!(
        init_steps(&h, SECOND_JOB),
        ["checkout", "scan-base", "scan"]
    );
    // The Jobs the statuses name are changed under the operator (stopped meanwhile): the
    // first is no longer owned by its request; the second is made again, owned by its
    // request, scanning another base than the request's.
    h.crash_operator();
    let jobs: Api<Job> = Api::namespaced(h.k8s.client(), NS);
    jobs.patch(
        JOB,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": null}})),
    )
    .await
    .unwrap();
    remake_job_scanning(&h, SECOND_JOB, BASE).await;
    assert_eq!(
        init_steps(&h, SECOND_JOB),
        ["checkout", "scan-base", "scan"]
    );
    // Each result sends base findings that would make every finding pre-existing.
    for name in [SR, "sr-second"] {
        let request = h.request(name).unwrap();
        let mut result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
        result.baseline = Some(gatehouse_crds::stream::Baseline {
            sha: request.spec.pull_request.base_sha.clone().unwrap(),
            outcome: gatehouse_crds::stream::ScanOutcome::Completed,
            counts: result.counts,
            fingerprints: result
                .findings
                .iter()
                .map(|f| f.fingerprint.clone())
                .collect(),
        });
        h.publish(&result).await.unwrap();
        let done = |h: &OperatorHarness| {
            h.github
                .check_runs()
                .into_iter()
                .find(|r| r.external_id.contains(name) && r.status == "completed")
        };
        h.until("concluded", |h| done(h).is_some()).await.unwrap();
        let run = done(&h).unwrap();
        assert_eq!(
            run.title.as_deref(),
            Some("17 findings: 6 high, 2 medium, 7 low, 2 info"),
            "{name}: its base findings ignored"
        );
        assert!(
            run.summary
                .unwrap()
                .contains("the base commit's findings are not known"),
            "{name}"
        );
    }
    // Nor were they kept for the next pull requests.
    let mut conn = redis::Client::open(h.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for base in [BASE, OTHER_BASE] {
        let key = gatehouse_operator::results::baseline_key(
            sample_request().spec.repository.id,
            base,
            &kics_policy().spec.scanners[0],
        );
        let kept: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kept, None, "{base}");
    }
}

#[tokio::test]
async fn a_refusal_for_good_closes_the_breaker_so_one_later_failure_does_not_open_it_again() {
    let (h, request) = scanned().await;
    let id = run(&h).unwrap().id;
    let route = format!("/repos/Codertocat/Hello-World/check-runs/{id}");
    // Five server errors in a row open the breaker; once it lets GitHub be asked again,
    // GitHub refuses the conclusion for good (422, with its annotations and without).
    h.github.fail_next("GET", &route, 503, vec![], 5);
    h.github.fail_next("PATCH", &route, 422, vec![], 2);
    let result = h.kics_result(&request, TERRAFORM, E2E_ROOT, 1).unwrap();
    h.publish(&result).await.unwrap();
    h.until("the breaker open", circuit_open).await.unwrap();
    h.until("refused for good", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0]
            .reported
            .as_deref()
            == Some("completed/failure")
    })
    .await
    .unwrap();
    let dead = h.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].contains("GitHub refused to conclude the check run"),
        "{dead:?}"
    );
    h.until("the breaker closed", |h| !circuit_open(h))
        .await
        .unwrap();
    // GitHub answered: the failures before count no more. The next result meets one server
    // error: a first failure, which does not open the breaker; it is reported at the next try.
    let b = finished(&h, "sr-b", 'b', None).await;
    h.until("B's check run", |h| {
        h.request("sr-b")
            .and_then(|r| r.status)
            .is_some_and(|s| s.scanners.first().is_some_and(|s| s.check_run_id.is_some()))
    })
    .await
    .unwrap();
    let b_id = h.request("sr-b").unwrap().status.unwrap().scanners[0]
        .check_run_id
        .unwrap();
    h.github.fail_next(
        "GET",
        &format!("/repos/Codertocat/Hello-World/check-runs/{b_id}"),
        503,
        vec![],
        1,
    );
    h.publish(&h.kics_result(&b, TERRAFORM, E2E_ROOT, 1).unwrap())
        .await
        .unwrap();
    let b_done = |h: &OperatorHarness| {
        h.github
            .check_runs()
            .iter()
            .any(|r| r.id == b_id && r.status == "completed")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !b_done(&h) {
        assert!(
            !circuit_open(&h),
            "one failure after GitHub's refusal opened the breaker again"
        );
        assert!(tokio::time::Instant::now() < deadline, "B never concluded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reads_of(&h, b_id),
        2,
        "the failed read, then the one that worked"
    );
}

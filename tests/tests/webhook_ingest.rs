//! Ingest end to end: signed deliveries go in through the real receive role and a private Redis;
//! ScanRequests come out in the Kubernetes API emulator, created by real ingest consumers. These
//! tests cover the mechanics (specs, redelivery, crashes, retries, dead letters, policies); the
//! pull request lifecycle's scenarios are in `webhook_lifecycle.rs`. Re-run payloads are derived
//! from the real fixtures at test time and say so where they are made.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::stream::{EVENTS_DEAD_STREAM, EVENTS_STREAM, INGEST_GROUP};
use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::Failure;
use gatehouse_tests::ingest::{Harness, NS, SHA, eventually, fixture, sample_policy};
use gatehouse_webhook::ingest::consumer::Handled;
use redis::AsyncTypedCommands;
use serde_json::{Value, json};

async fn deliver(h: &Harness, event: &str, delivery: &str, payload: &Value) -> u16 {
    h.deliver(event, delivery, payload).await
}

/// Delivers the real pull_request.opened payload.
async fn deliver_opened(h: &Harness, delivery: &str) -> u16 {
    deliver(
        h,
        "pull_request",
        delivery,
        &fixture("pull_request.opened.octokit.json"),
    )
    .await
}

/// A harness whose ScanRequest creations fail `times` times, with one consumer running.
async fn failing_creates(times: usize, claim_idle: Duration) -> Harness {
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    h.k8s
        .fail_next(Some("POST"), "/scanrequests", times, Failure::InternalError);
    h.start_consumer("ingest-0", claim_idle).await.unwrap();
    h
}

/// A harness whose ScanRequest creations fail `times` times with `failure`.
async fn failing_creates_with(times: usize, failure: Failure) -> Harness {
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    h.k8s
        .fail_next(Some("POST"), "/scanrequests", times, failure);
    h.start_consumer("ingest-0", Duration::from_millis(200))
        .await
        .unwrap();
    h
}

async fn running(policies: Vec<ScanPolicy>) -> Harness {
    let mut h = Harness::start(policies).await.unwrap();
    h.start_consumer("ingest-0", Duration::from_millis(300))
        .await
        .unwrap();
    h
}

async fn wait_for_requests(h: &Harness, count: usize) -> Vec<ScanRequest> {
    eventually(&format!("{count} ScanRequests"), || async {
        h.scan_requests(NS).await.len() >= count
    })
    .await
    .unwrap();
    h.scan_requests(NS).await
}

async fn wait_until_drained(h: &Harness) {
    h.wait_until_drained().await.unwrap();
}

#[tokio::test]
async fn signed_pull_request_webhook_becomes_a_scanrequest_with_the_right_spec() {
    let h = running(vec![sample_policy()]).await;
    assert_eq!(deliver_opened(&h, "d-open").await, 202);
    wait_for_requests(&h, 1).await;
    // Acknowledged means every step is done.
    wait_until_drained(&h).await;
    let requests = h.scan_requests(NS).await;
    let request = &requests[0];
    assert_eq!(
        request.metadata.name.as_deref(),
        Some("hello-world-pr2-ec26c3e-016643a9")
    );
    let spec = &request.spec;
    assert_eq!(spec.repository.full_name(), "Codertocat/Hello-World");
    assert_eq!(spec.repository.id, 186_853_002);
    assert_eq!(spec.installation_id, 1);
    assert_eq!(spec.pull_request.number, 2);
    assert_eq!(spec.pull_request.head_sha, SHA);
    assert_eq!(spec.pull_request.base_ref, "master");
    assert!(!spec.pull_request.fork);
    assert_eq!(spec.trigger.event, "pull_request");
    assert_eq!(spec.trigger.action.as_deref(), Some("opened"));
    assert_eq!(spec.trigger.delivery_id, "d-open");
    assert_eq!(spec.policy_ref.name, "acme-iac");
    assert_eq!(spec.scanners, None);
    assert_eq!(
        spec.pull_request.updated_at.as_deref(),
        Some("2019-05-15T15:20:33Z")
    );
    assert_eq!(spec.approval, None);
    // Status is the operator's alone: ingest writes none, and every field it owns is its own.
    assert_eq!(request.status, None);
    let managers: Vec<_> = request
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| m.manager.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(managers, ["gatehouse-webhook"]);
    // The same request as the sample in deploy/samples, which docs present as ingest's output.
    let sample: ScanRequest = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/samples/scanrequest.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(request.metadata.labels, sample.metadata.labels);
    wait_until_drained(&h).await;
}

#[tokio::test]
async fn redeliveries_and_repeated_events_for_one_commit_create_one_scanrequest() {
    let h = running(vec![sample_policy()]).await;
    let opened = fixture("pull_request.opened.octokit.json");
    assert_eq!(deliver(&h, "pull_request", "d-1", &opened).await, 202);
    // GitHub redelivery: same delivery id, acknowledged without a second entry.
    assert_eq!(deliver(&h, "pull_request", "d-1", &opened).await, 200);
    // Another event for the same commit (reopened): a new entry, the same ScanRequest.
    assert_eq!(
        deliver(
            &h,
            "pull_request",
            "d-2",
            &fixture("pull_request.reopened.octokit.json")
        )
        .await,
        202
    );
    wait_until_drained(&h).await;
    assert_eq!(h.scan_requests(NS).await.len(), 1);
    let metrics = h.metrics.render(None);
    assert!(
        metrics.contains(
            "gatehouse_ingest_entries_total{event=\"pull_request\",result=\"created\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("gatehouse_ingest_entries_total{event=\"pull_request\",result=\"exists\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_actions_and_uncovered_repositories_are_acknowledged_without_scans() {
    let h = running(vec![sample_policy()]).await;
    // An action GitHub may add one day: receive filters it, so write it into the stream as an
    // older receive (or a future one) could have.
    let mut stacked = fixture("pull_request.opened.octokit.json");
    stacked["action"] = json!("stacked");
    let entry = gatehouse_webhook::events::encode(
        "d-stacked",
        "pull_request",
        1,
        &serde_json::to_vec(&stacked).unwrap(),
    );
    let mut conn = h.redis_conn().await;
    let mut xadd = redis::cmd("XADD");
    xadd.arg(EVENTS_STREAM).arg("*");
    for (k, v) in &entry.to_fields() {
        xadd.arg(*k).arg(v.as_ref());
    }
    xadd.query_async::<String>(&mut conn).await.unwrap();
    // A repository no policy covers.
    let mut elsewhere = fixture("pull_request.opened.octokit.json");
    elsewhere["repository"]["full_name"] = json!("someone/else");
    elsewhere["repository"]["name"] = json!("else");
    elsewhere["repository"]["owner"]["login"] = json!("someone");
    assert_eq!(
        deliver(&h, "pull_request", "d-uncovered", &elsewhere).await,
        202
    );
    wait_until_drained(&h).await;
    assert!(h.scan_requests(NS).await.is_empty());
    assert_eq!(conn.xlen(EVENTS_DEAD_STREAM).await.unwrap(), 0);
    let metrics = h.metrics.render(None);
    assert!(
        metrics.contains("result=\"action_not_handled\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"no_policy\"} 1"), "{metrics}");
}

#[tokio::test]
async fn check_run_and_check_suite_rerequests_rerun_the_commit() {
    let h = running(vec![sample_policy()]).await;
    assert_eq!(deliver_opened(&h, "d-open").await, 202);
    let original = wait_for_requests(&h, 1).await.remove(0);
    let original_name = original.metadata.name.clone().unwrap();
    // Ingest asks GitHub whether the pull request is still open.
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        fixture("pull_request.opened.octokit.json")["pull_request"].clone(),
    )
    .await;
    // Derived: a re-run of our own check run, as a fork's (no pull_requests list) would come.
    let mut run = fixture("check_run.rerequested.octokit.json");
    let opened = fixture("pull_request.opened.octokit.json");
    run["repository"] = opened["repository"].clone();
    run["check_run"]["name"] = json!("gatehouse/kics");
    run["check_run"]["head_sha"] = json!(SHA);
    run["check_run"]["pull_requests"] = json!([]);
    run["check_run"]["external_id"] = json!(format!("{NS}/{original_name}/2/kics"));
    assert_eq!(deliver(&h, "check_run", "d-rerun", &run).await, 202);
    // The suite fixture is for the same repository and commit.
    assert_eq!(
        deliver(
            &h,
            "check_suite",
            "d-suite",
            &fixture("check_suite.rerequested.octokit.json")
        )
        .await,
        202
    );
    let requests = wait_for_requests(&h, 3).await;
    wait_until_drained(&h).await;
    let by_trigger = |event: &str| {
        requests
            .iter()
            .find(|r| r.spec.trigger.event == event)
            .unwrap()
    };
    let check_run = by_trigger("check_run");
    assert_eq!(check_run.spec.scanners, Some(vec!["kics".to_owned()]));
    assert_eq!(check_run.spec.pull_request, original.spec.pull_request);
    let check_suite = by_trigger("check_suite");
    assert_eq!(check_suite.spec.scanners, None);
    assert_eq!(check_suite.spec.pull_request.number, 2);
}

#[tokio::test]
async fn a_consumer_killed_before_xack_loses_nothing_and_duplicates_nothing() {
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    assert_eq!(deliver_opened(&h, "d-crash").await, 202);
    // Consumer A reads the entry and does its work, then dies before XACK.
    let mut doomed = h
        .consumer("ingest-doomed", Duration::from_millis(300))
        .await
        .unwrap();
    let batch = doomed.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1);
    let handled = h.ingest().handle(batch[0].entry.as_ref().unwrap()).await;
    assert!(matches!(handled, Handled::Done));
    drop(doomed);
    assert_eq!(h.pending().await, 1, "read but never acknowledged");
    // Consumer B takes it over once it is idle and finishes it.
    h.start_consumer("ingest-survivor", Duration::from_millis(300))
        .await
        .unwrap();
    eventually("claimed and acknowledged", || async {
        h.pending().await == 0
    })
    .await
    .unwrap();
    assert_eq!(
        h.scan_requests(NS).await.len(),
        1,
        "exactly one ScanRequest"
    );
    let mut conn = h.redis_conn().await;
    assert_eq!(conn.xlen(EVENTS_DEAD_STREAM).await.unwrap(), 0);
}

#[tokio::test]
async fn a_consumer_killed_right_after_reading_loses_nothing() {
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    assert_eq!(deliver_opened(&h, "d-read-only").await, 202);
    // Consumer A reads the entry and dies before doing anything with it.
    let mut doomed = h
        .consumer("ingest-doomed", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(doomed.next_batch().await.unwrap().len(), 1);
    drop(doomed);
    assert!(h.scan_requests(NS).await.is_empty());
    // Consumer B takes it over and does the work A never did.
    h.start_consumer("ingest-survivor", Duration::from_millis(300))
        .await
        .unwrap();
    eventually("claimed and acknowledged", || async {
        h.pending().await == 0
    })
    .await
    .unwrap();
    assert_eq!(h.scan_requests(NS).await.len(), 1, "the work was done");
}

#[tokio::test]
async fn kubernetes_errors_leave_the_entry_pending_until_it_succeeds() {
    let h = failing_creates(2, Duration::from_millis(200)).await;
    assert_eq!(deliver_opened(&h, "d-retry").await, 202);
    wait_for_requests(&h, 1).await;
    eventually("acknowledged after retries", || async {
        h.pending().await == 0
    })
    .await
    .unwrap();
    let posts = h
        .k8s
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/scanrequests"))
        .count();
    assert_eq!(posts, 3, "two failures, then success");
    assert!(h.metrics.render(None).contains("result=\"retry\"} 2"));
}

/// The dead-letter entries' fields, as text.
async fn dead_letters(h: &Harness) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = h.redis_conn().await;
    let dead = conn.xrange_all(EVENTS_DEAD_STREAM).await.unwrap();
    dead.ids
        .iter()
        .map(|entry| {
            entry
                .map
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn an_outage_longer_than_many_retries_loses_nothing() {
    // The API server refuses writes for a dozen attempts (a control-plane upgrade, compressed in
    // time): the entry stays pending, is retried with backoff, and lands once the API is back.
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    h.k8s
        .fail_next(Some("POST"), "/scanrequests", 12, Failure::Unavailable);
    h.start_consumer("ingest-0", Duration::from_millis(40))
        .await
        .unwrap();
    assert_eq!(deliver_opened(&h, "d-outage").await, 202);
    eventually("created after the outage", || async {
        h.scan_requests(NS).await.len() == 1 && h.pending().await == 0
    })
    .await
    .unwrap();
    assert!(dead_letters(&h).await.is_empty());
    let posts = h
        .k8s
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/scanrequests"))
        .count();
    assert!(posts > 12, "{posts} creates: retried past the outage");
}

#[tokio::test]
async fn retries_of_a_failing_entry_wait_longer_each_time() {
    // The API refuses every create. Attempts come after 300, 600, 1200, 1200 ms... of idle
    // time: about five in four seconds. Retrying every claim interval instead would make a
    // dozen or more.
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    h.max_backoff = Some(Duration::from_millis(1200));
    h.k8s
        .fail_next(Some("POST"), "/scanrequests", 1000, Failure::InternalError);
    h.start_consumer("ingest-0", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(deliver_opened(&h, "d-backoff").await, 202);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Attempts, each ending as a retry (the API's 500; a 500 is not retried inside the
    // client, so an attempt is one create).
    let metrics = h.metrics.render(None);
    let attempts: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("gatehouse_ingest_entries_total{event=\"pull_request\",result=\"retry\"}")
                || l.starts_with(
                    "gatehouse_ingest_entries_total{event=\"pull_request\",result=\"timeout\"}",
                )
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        (3..=7).contains(&attempts),
        "{attempts} attempts in 4 s: {metrics}"
    );
    assert_eq!(h.pending().await, 1, "still pending, not dead-lettered");
}

#[tokio::test]
async fn transient_failures_are_dead_lettered_only_after_the_retry_window_with_the_reason() {
    let mut h = Harness::start(vec![sample_policy()]).await.unwrap();
    h.retry_window = Duration::from_millis(1500);
    h.k8s
        .fail_next(Some("POST"), "/scanrequests", 1000, Failure::InternalError);
    assert_eq!(deliver_opened(&h, "d-doomed").await, 202);
    let started = std::time::Instant::now();
    h.start_consumer("ingest-0", Duration::from_millis(100))
        .await
        .unwrap();
    eventually("dead-lettered", || async {
        dead_letters(&h).await.len() == 1
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the window: {:?}",
        started.elapsed()
    );
    let dead = &dead_letters(&h).await[0];
    assert_eq!(dead["delivery"], "d-doomed");
    assert!(
        dead["reason"].starts_with("retried for "),
        "{}",
        dead["reason"]
    );
    assert!(
        dead["reason"].contains("failed to create ScanRequest"),
        "{}",
        dead["reason"]
    );
    assert!(dead["attempts"].parse::<u64>().unwrap() >= 2);
    // Given up on: counted, so an alert can see it.
    let counted =
        "gatehouse_ingest_entries_total{event=\"pull_request\",result=\"dead_lettered\"} 1";
    eventually("dead letter counted", || async {
        h.metrics.render(None).contains(counted)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", h.metrics.render(None)));
    eventually("acknowledged", || async { h.pending().await == 0 })
        .await
        .unwrap();
    assert!(h.scan_requests(NS).await.is_empty());
    // The reason was read from Redis and removed with the entry.
    let mut conn = h.redis_conn().await;
    assert_eq!(
        conn.hlen(gatehouse_crds::stream::EVENTS_RETRY_REASONS)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_object_the_api_refuses_is_dead_lettered_at_once() {
    let h = failing_creates_with(1, Failure::Invalid).await;
    assert_eq!(deliver_opened(&h, "d-invalid").await, 202);
    eventually("dead-lettered", || async {
        dead_letters(&h).await.len() == 1
    })
    .await
    .unwrap();
    let dead = &dead_letters(&h).await[0];
    assert_eq!(dead["attempts"], "1");
    assert!(
        dead["reason"].contains("422") || dead["reason"].contains("invalid"),
        "{}",
        dead["reason"]
    );
}

#[tokio::test]
async fn a_replayed_dead_letter_is_processed_although_its_delivery_id_was_seen() {
    let h = failing_creates_with(1, Failure::Invalid).await;
    assert_eq!(deliver_opened(&h, "d-dies").await, 202);
    eventually("dead-lettered", || async {
        dead_letters(&h).await.len() == 1
    })
    .await
    .unwrap();
    // The cause is fixed (the injected refusal was used up); the delivery id is still seen.
    assert_eq!(deliver_opened(&h, "d-dies").await, 200);
    let mut conn = h.redis_conn().await;
    let replayed = gatehouse_webhook::dead_letters::replay_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    let requests = wait_for_requests(&h, 1).await;
    assert_eq!(requests[0].spec.trigger.delivery_id, "d-dies");
    assert!(dead_letters(&h).await.is_empty());
}

#[tokio::test]
async fn a_hung_kubernetes_call_does_not_stop_the_consumer() {
    let h = Harness::start(vec![sample_policy()]).await.unwrap();
    // The first create never gets an answer until released.
    let mut hang = h.k8s.pause_next("POST", "/scanrequests");
    let consumer = h
        .consumer("ingest-0", Duration::from_millis(1200))
        .await
        .unwrap();
    let ingest = h.ingest().with_entry_deadline(Duration::from_millis(300));
    let task = tokio::spawn(ingest.run(consumer));
    assert_eq!(deliver_opened(&h, "d-hangs").await, 202);
    hang.arrived().await.unwrap();
    // Another pull request's delivery is handled while the first call hangs.
    let mut other = fixture("pull_request.opened.octokit.json");
    other["number"] = json!(3);
    other["pull_request"]["number"] = json!(3);
    assert_eq!(deliver(&h, "pull_request", "d-other", &other).await, 202);
    eventually("the other pull request scanned", || async {
        h.scan_requests(NS)
            .await
            .iter()
            .any(|r| r.spec.pull_request.number == 3)
    })
    .await
    .unwrap();
    assert!(h.metrics.render(None).contains("result=\"timeout\"} 1"));
    // The hung call is let go (its answer is never read); the retry creates the scan.
    hang.release();
    eventually("the first pull request scanned on retry", || async {
        h.scan_requests(NS).await.len() == 2 && h.pending().await == 0
    })
    .await
    .unwrap();
    task.abort();
}

#[tokio::test]
async fn malformed_payloads_are_dead_lettered_at_once() {
    let h = running(vec![sample_policy()]).await;
    // Valid JSON with the right action, but no pull_request object.
    let broken = json!({"action": "opened", "installation": {"id": 1}, "repository": {"id": 1, "name": "x", "full_name": "a/x"}});
    assert_eq!(deliver(&h, "pull_request", "d-broken", &broken).await, 202);
    let mut conn = h.redis_conn().await;
    eventually("dead-lettered", || {
        let mut conn = conn.clone();
        async move { conn.xlen(EVENTS_DEAD_STREAM).await.unwrap() == 1 }
    })
    .await
    .unwrap();
    let dead = conn.xrange_all(EVENTS_DEAD_STREAM).await.unwrap();
    match dead.ids[0].map.get("reason") {
        Some(redis::Value::BulkString(reason)) => {
            assert!(String::from_utf8_lossy(reason).starts_with("malformed pull_request payload"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.pending().await, 0);
}

#[tokio::test]
async fn trimming_removes_old_acknowledged_entries_and_keeps_every_unacknowledged_one() {
    let h = Harness::start(vec![sample_policy()]).await.unwrap();
    let consumer = h
        .consumer("ingest-reader", Duration::from_secs(3600))
        .await
        .unwrap();
    let mut conn = h.redis_conn().await;
    // 300 entries from 20 minutes ago (older than the 15 minutes kept for debugging), with ids
    // as receive would have given them then; Redis trims whole nodes of 100 entries.
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let old_ms = now_ms - 20 * 60 * 1000;
    let entry = gatehouse_webhook::events::encode("d-old", "pull_request", 1, b"{}");
    let mut ids = Vec::new();
    for i in 0..300 {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(EVENTS_STREAM).arg(format!("{old_ms}-{i}"));
        for (k, v) in &entry.to_fields() {
            xadd.arg(*k).arg(v.as_ref());
        }
        ids.push(xadd.query_async::<String>(&mut conn).await.unwrap());
    }
    // Ingest read the first 250 and acknowledged the first 200; 50 are pending, 50 undelivered.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(INGEST_GROUP)
        .arg("ingest-reader")
        .arg("COUNT")
        .arg(250)
        .arg("STREAMS")
        .arg(EVENTS_STREAM)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: u64 = redis::cmd("XACK")
        .arg(EVENTS_STREAM)
        .arg(INGEST_GROUP)
        .arg(&ids[..200])
        .query_async(&mut conn)
        .await
        .unwrap();
    consumer.trim().await.unwrap();
    let left = conn.xrange_all(EVENTS_STREAM).await.unwrap();
    let left: Vec<&str> = left.ids.iter().map(|e| e.id.as_str()).collect();
    assert!(
        left.len() <= 200,
        "old acknowledged entries were removed: {} left",
        left.len()
    );
    for id in &ids[200..] {
        assert!(
            left.contains(&id.as_str()),
            "{id} (unacknowledged) was trimmed"
        );
    }
}

#[tokio::test]
async fn a_policy_applied_later_governs_the_next_delivery() {
    let h = running(vec![]).await;
    assert_eq!(deliver_opened(&h, "d-before").await, 202);
    wait_until_drained(&h).await;
    assert!(h.scan_requests(NS).await.is_empty(), "no policy yet");
    kube::api::Api::<ScanPolicy>::namespaced(h.k8s.client(), NS)
        .create(&kube::api::PostParams::default(), &sample_policy())
        .await
        .unwrap();
    // The watch picks the policy up; deliveries after that are governed by it.
    let mut attempt = 0;
    eventually("governed once the policy is watched", || {
        attempt += 1;
        let delivery = format!("d-after-{attempt}");
        let h = &h;
        async move {
            deliver_opened(h, &delivery).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            !h.scan_requests(NS).await.is_empty()
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_kubernetes_call_on_a_connection_that_never_answers_times_out() {
    // An API server that accepts connections and then says nothing (half-open, or hung).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let url: http::Uri = format!("http://{addr}").parse().unwrap();
    let config = gatehouse_webhook::with_call_timeouts(kube::Config::new(url));
    let client = kube::Client::try_from(config).unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "default");
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(40), api.get("anything")).await;
    let took = started.elapsed();
    let Ok(outcome) = result else {
        panic!("the call hung for {took:?}: no read timeout");
    };
    assert!(outcome.is_err(), "no answer cannot be a success");
    // The read timeout (15 s) ended it, not something sooner.
    assert!(took >= Duration::from_secs(14), "ended after {took:?}");
    held.abort();
}

#[tokio::test]
async fn a_github_call_on_a_connection_that_never_answers_times_out() {
    // GitHub (or a proxy in front of it) accepts the connection and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    ))
    .unwrap();
    let github = gatehouse_webhook::ingest::github::GitHub::new(
        gatehouse_tests::ingest::APP_ID,
        &key,
        &format!("http://{addr}"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(40),
        github.pull_request(1, "octo", "widgets", 42),
    )
    .await;
    let took = started.elapsed();
    let Ok(outcome) = result else {
        panic!("the call hung for {took:?}: no read timeout");
    };
    let error = outcome.expect_err("no answer cannot be a success");
    assert!(error.is_transient(), "retried, not dead-lettered: {error}");
    assert!(took >= Duration::from_secs(14), "ended after {took:?}");
    held.abort();
}

/// Two calls for one installation mint one installation token: the cached client is shared, not
/// cloned (a clone copies its cached token and would mint a new one for every call).
#[tokio::test]
async fn two_github_calls_of_one_installation_mint_one_token() {
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/app/installations/7/access_tokens$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "token": "ghs_once", "expires_at": "2099-01-01T00:00:00Z",
            "permissions": {}, "repository_selection": "all"})))
        .mount(&server)
        .await;
    for login in ["alice", "bob"] {
        Mock::given(method("GET"))
            .and(path(format!("/repos/o/r/collaborators/{login}/permission")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({"permission": "write", "role_name": "write"}),
                ),
            )
            .mount(&server)
            .await;
    }
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    ))
    .unwrap();
    let github = gatehouse_webhook::ingest::github::GitHub::new(4242, &key, &server.uri()).unwrap();
    for login in ["alice", "bob"] {
        github.permission(7, "o", "r", login).await.unwrap();
    }
    let mints = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/access_tokens"))
        .count();
    assert_eq!(mints, 1);
}

#[tokio::test]
async fn an_ingest_limited_to_namespaces_uses_their_policies_and_lists_scan_requests_only_there() {
    // A namespaced installation (Roles only): ingest watches NS and team-b. A policy in team-c,
    // which it does not watch, covers someone/*; and the API refuses cluster-wide lists of
    // ScanRequests, as RBAC without a ClusterRole does.
    let mut unwatched = sample_policy();
    unwatched.metadata.namespace = Some("team-c".to_owned());
    unwatched.spec.repositories = vec!["someone/*".to_owned()];
    let mut h = Harness::start_in(vec![sample_policy(), unwatched], &[NS, "team-b"])
        .await
        .unwrap();
    h.k8s.fail_next(
        Some("GET"),
        "v1alpha1/scanrequests",
        usize::MAX,
        Failure::Forbidden,
    );
    h.start_consumer("ingest-0", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(deliver_opened(&h, "d-open").await, 202);
    let created = wait_for_requests(&h, 1).await;
    assert_eq!(created.len(), 1);

    let mut elsewhere = fixture("pull_request.opened.octokit.json");
    elsewhere["repository"]["full_name"] = json!("someone/else");
    elsewhere["repository"]["name"] = json!("else");
    elsewhere["repository"]["owner"]["login"] = json!("someone");
    assert_eq!(
        deliver(&h, "pull_request", "d-unwatched", &elsewhere).await,
        202
    );
    wait_until_drained(&h).await;
    assert!(h.scan_requests("team-c").await.is_empty());
    let mut conn = h.redis_conn().await;
    assert_eq!(conn.xlen(EVENTS_DEAD_STREAM).await.unwrap(), 0);
    let metrics = h.metrics.render(None);
    assert!(metrics.contains("result=\"no_policy\"} 1"), "{metrics}");
    assert!(metrics.contains("result=\"created\"} 1"), "{metrics}");
}

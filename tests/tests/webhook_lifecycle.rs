//! The pull request lifecycle end to end: signed deliveries → receive → Redis → ingest →
//! Kubernetes API emulator, with a wiremock GitHub. Each scenario must end with the pull
//! request's head commit scanned, once: exactly one live ScanRequest (no stop request) for the
//! head, every other unfinished one stopped with its reason. Payloads are the real fixtures with
//! the fields a scenario needs changed at test time (see `gatehouse_tests::ingest`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::lifecycle::{ScanRef, StopRequest, approval_covers};
use gatehouse_crds::scanpolicy::Permission;
use gatehouse_crds::stream::EventEntry;
use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::ingest::{
    Harness, NS, SHA, comment, eventually, fixture, fork_of, live, pull_request_event,
    sample_policy, stop_of,
};
use gatehouse_webhook::ingest::consumer::Handled;
use serde_json::json;

const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
const QUEUE_SHA: &str = "dddddddddddddddddddddddddddddddddddddddd";
/// When the fixture pull request was opened.
const OPENED_AT: &str = "2019-05-15T15:20:33Z";
/// When the fixture pull request was closed.
const CLOSED_AT: &str = "2019-05-15T15:21:18Z";

/// A time after the fixture's events, `n` seconds into the next hour.
fn at(n: u32) -> String {
    format!("2019-05-15T16:00:{n:02}Z")
}

/// A pull_request event with `action` for `sha`, updated at second `n` (see [`at`]).
fn event_at(action: &str, sha: &str, n: u32) -> serde_json::Value {
    pull_request_event(action, sha, &at(n))
}

async fn running(policies: Vec<ScanPolicy>) -> Harness {
    let mut h = Harness::start(policies).await.unwrap();
    h.start_consumer("ingest-0", Duration::from_millis(300))
        .await
        .unwrap();
    h
}

/// Delivers, expecting the receive role to accept a new delivery.
async fn send(h: &Harness, event: &str, delivery: &str, payload: &serde_json::Value) {
    assert_eq!(h.deliver(event, delivery, payload).await, 202, "{delivery}");
}

/// Delivers and waits until ingest has handled everything delivered so far.
async fn send_and_settle(h: &Harness, event: &str, delivery: &str, payload: &serde_json::Value) {
    send(h, event, delivery, payload).await;
    h.wait_until_drained().await.unwrap();
}

/// The one live ScanRequest; fails when there is not exactly one.
fn only_live(requests: &[ScanRequest]) -> &ScanRequest {
    let alive = live(requests);
    assert_eq!(
        alive.len(),
        1,
        "exactly one live ScanRequest: {:?}",
        requests
            .iter()
            .map(|r| (r.metadata.name.clone(), stop_of(r)))
            .collect::<Vec<_>>()
    );
    alive[0]
}

fn reference(request: &ScanRequest) -> ScanRef {
    ScanRef {
        namespace: request.metadata.namespace.clone().unwrap(),
        name: request.metadata.name.clone().unwrap(),
    }
}

fn of_sha<'a>(requests: &'a [ScanRequest], sha: &str) -> Vec<&'a ScanRequest> {
    requests
        .iter()
        .filter(|r| r.spec.pull_request.head_sha == sha)
        .collect()
}

fn superseded_by(request: &ScanRequest, head: &ScanRequest) -> bool {
    stop_of(request)
        == Some(StopRequest::Superseded {
            head_sha: head.spec.pull_request.head_sha.clone(),
            by: Some(reference(head)),
        })
}

fn counted(h: &Harness, result: &str) -> bool {
    h.metrics
        .render(None)
        .contains(&format!("result=\"{result}\"}} 1"))
}

/// The fixture pull request as GitHub's REST API would return it with this head.
fn api_pull_request(sha: &str, updated_at: &str, fork: bool) -> serde_json::Value {
    let mut payload = pull_request_event("synchronize", sha, updated_at);
    if fork {
        payload = fork_of(payload);
    }
    payload["pull_request"].clone()
}

/// Scenario 1: push A, push B, force-push A again: the last trigger's A scan is live.
#[tokio::test]
async fn a_force_push_back_scans_the_earlier_commit_again() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-a",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    send_and_settle(&h, "pull_request", "d-b", &event_at("synchronize", B, 1)).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-a-again",
        &event_at("synchronize", SHA, 2),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 3);
    let head = only_live(&requests);
    assert_eq!(head.spec.pull_request.head_sha, SHA);
    assert_eq!(
        head.spec.pull_request.updated_at.as_deref(),
        Some(at(2).as_str())
    );
    let b = of_sha(&requests, B)[0];
    assert!(superseded_by(b, head), "{:?}", stop_of(b));
    let first_a = of_sha(&requests, SHA)
        .into_iter()
        .find(|r| r.spec.pull_request.updated_at.as_deref() == Some(OPENED_AT))
        .unwrap();
    assert!(superseded_by(first_a, b), "{:?}", stop_of(first_a));
}

/// Scenario 2: closing stops the scan; reopening scans the head again.
#[tokio::test]
async fn closing_stops_the_scan_and_reopening_scans_the_head_again() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-close",
        &fixture("pull_request.closed.octokit.json"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert!(live(&requests).is_empty());
    assert_eq!(
        stop_of(&requests[0]),
        Some(StopRequest::Cancelled {
            message: "pull request closed".into()
        })
    );
    send_and_settle(
        &h,
        "pull_request",
        "d-reopen",
        &event_at("reopened", SHA, 1),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 2);
    let head = only_live(&requests);
    assert_eq!(
        (
            head.spec.pull_request.head_sha.as_str(),
            head.spec.pull_request.updated_at.clone()
        ),
        (SHA, Some(at(1)))
    );
}

/// A policy in another namespace that governs pull requests into `release`, ahead of the
/// sample policy.
fn release_policy() -> ScanPolicy {
    let mut policy = sample_policy();
    policy.metadata.name = Some("release-strict".into());
    policy.metadata.namespace = Some("gatehouse-release".into());
    policy.spec.priority = 10;
    policy.spec.base_branches = vec!["release".into()];
    policy
}

/// Scenario 3: the base branch changes: the new base's policy governs a new scan; the old one
/// is superseded across namespaces.
#[tokio::test]
async fn a_changed_base_branch_is_scanned_under_the_new_bases_policy() {
    let h = running(vec![sample_policy(), release_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    let mut edited = event_at("edited", SHA, 1);
    edited["pull_request"]["base"]["ref"] = json!("release");
    edited["changes"] = json!({"base": {"ref": {"from": "master"}, "sha": {"from": SHA}}});
    send_and_settle(&h, "pull_request", "d-edited", &edited).await;
    let requests = h.all_scan_requests().await;
    assert_eq!(requests.len(), 2);
    let head = only_live(&requests);
    assert_eq!(
        head.metadata.namespace.as_deref(),
        Some("gatehouse-release")
    );
    assert_eq!(head.spec.policy_ref.name, "release-strict");
    assert_eq!(head.spec.pull_request.base_ref, "release");
    let old = requests
        .iter()
        .find(|r| r.metadata.namespace.as_deref() == Some(NS))
        .unwrap();
    assert!(superseded_by(old, head), "{:?}", stop_of(old));
}

/// Scenario 4: deliveries out of order, a manual redelivery of an old push, and two pushes in
/// the same second (GitHub decides).
#[tokio::test]
async fn the_real_head_wins_over_late_replayed_and_same_second_deliveries() {
    let h = running(vec![sample_policy()]).await;
    // B's push is processed before the older opened event.
    send_and_settle(&h, "pull_request", "d-b", &event_at("synchronize", B, 5)).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-a",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    let head = only_live(&requests).clone();
    assert_eq!(head.spec.pull_request.head_sha, B);
    assert!(superseded_by(of_sha(&requests, SHA)[0], &head));
    // An old push redelivered by hand (a fresh delivery id): the head stays B.
    send_and_settle(
        &h,
        "pull_request",
        "d-a-redelivered",
        &event_at("synchronize", SHA, 1),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(reference(only_live(&requests)), reference(&head));
    assert_eq!(
        h.github_requests("/repos").await,
        0,
        "times ordered everything so far"
    );
    // C pushed in the same second as B: the times cannot tell. GitHub says B, the one delivered
    // (and created) first: its answer decides, not the processing order.
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(B, &at(5), false),
    )
    .await;
    send_and_settle(&h, "pull_request", "d-c", &event_at("synchronize", C, 5)).await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(only_live(&requests).spec.pull_request.head_sha, B);
    assert!(superseded_by(of_sha(&requests, C)[0], only_live(&requests)));
    assert_eq!(
        h.github_requests("/repos/Codertocat/Hello-World/pulls/2")
            .await,
        1
    );
}

/// GitHub's answer lagging behind the deliveries is not trusted: the entry is retried until
/// GitHub has caught up.
#[tokio::test]
async fn a_stale_answer_from_github_is_retried_not_acted_on() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(&h, "pull_request", "d-b", &event_at("synchronize", B, 5)).await;
    // GitHub still reports the pull request as of before both pushes.
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(B, &at(1), false),
    )
    .await;
    send(&h, "pull_request", "d-c", &event_at("synchronize", C, 5)).await;
    eventually("GitHub asked", || async {
        h.github_requests("/repos/Codertocat/Hello-World/pulls/2")
            .await
            >= 1
    })
    .await
    .unwrap();
    assert!(h.pending().await >= 1, "left pending for a retry");
    assert_eq!(live(&h.scan_requests(NS).await).len(), 2, "nothing stopped");
    // GitHub catches up: C is the head.
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(C, &at(5), false),
    )
    .await;
    h.wait_until_drained().await.unwrap();
    assert_eq!(
        only_live(&h.scan_requests(NS).await)
            .spec
            .pull_request
            .head_sha,
        C
    );
}

/// A force-push back whose trigger a live scan covers still decides the head: a push processed
/// after it (retried, or delivered late) is older and stops itself.
#[tokio::test]
async fn a_covered_force_push_back_still_decides_the_head() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(&h, "pull_request", "d-a", &event_at("synchronize", SHA, 1)).await;
    // A again at 3 (B's push at 2 is delayed): the first A scan still runs and covers it.
    send_and_settle(
        &h,
        "pull_request",
        "d-a-again",
        &event_at("synchronize", SHA, 3),
    )
    .await;
    assert_eq!(h.scan_requests(NS).await.len(), 1);
    send_and_settle(
        &h,
        "pull_request",
        "d-b-late",
        &event_at("synchronize", B, 2),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(only_live(&requests).spec.pull_request.head_sha, SHA);
    assert!(stop_of(of_sha(&requests, B)[0]).is_some());
}

/// A close handled again after a reopen (a retry, or a replayed signed payload) stops only
/// the scans from before the close.
#[tokio::test]
async fn a_close_handled_after_the_reopen_leaves_the_reopened_scan_running() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(&h, "pull_request", "d-open", &event_at("opened", SHA, 1)).await;
    let close = event_at("closed", SHA, 5);
    send_and_settle(&h, "pull_request", "d-close", &close).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-reopen",
        &event_at("reopened", SHA, 6),
    )
    .await;
    let reopened = only_live(&h.scan_requests(NS).await).clone();
    send_and_settle(&h, "pull_request", "d-close-replayed", &close).await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(reference(only_live(&requests)), reference(&reopened));
}

/// A close and a reopen in the same second, the reopen processed first: open wins the second,
/// and the close stops only what came before it.
#[tokio::test]
async fn a_reopen_in_the_closes_second_keeps_its_scan() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(&h, "pull_request", "d-open", &event_at("opened", SHA, 1)).await;
    send_and_settle(&h, "pull_request", "d-push", &event_at("synchronize", B, 3)).await;
    send_and_settle(&h, "pull_request", "d-reopen", &event_at("reopened", B, 5)).await;
    send_and_settle(&h, "pull_request", "d-close", &event_at("closed", B, 5)).await;
    let requests = h.scan_requests(NS).await;
    let head = only_live(&requests);
    assert_eq!(
        (
            head.spec.trigger.action.as_deref(),
            head.spec.pull_request.updated_at.as_deref()
        ),
        (Some("reopened"), Some(at(5).as_str())),
        "the reopen's own scan runs; the push's, from before the close, stopped"
    );
}

/// A Re-run of a check from before a close and reopen carries the original's time: it is
/// admitted because the reopen was recorded.
#[tokio::test]
async fn a_rerun_after_a_reopen_is_admitted() {
    let h = running(vec![sample_policy()]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, &at(6), false),
    )
    .await;
    send_and_settle(&h, "pull_request", "d-open", &event_at("opened", SHA, 1)).await;
    let original = h.scan_requests(NS).await.remove(0);
    send_and_settle(&h, "pull_request", "d-close", &event_at("closed", SHA, 5)).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-reopen",
        &event_at("reopened", SHA, 6),
    )
    .await;
    send_and_settle(&h, "check_run", "d-rerun", &rerun_of(&original, "kics")).await;
    let requests = h.scan_requests(NS).await;
    let rerun = requests
        .iter()
        .find(|r| r.spec.trigger.event == "check_run")
        .expect("the re-run was created");
    assert_eq!(stop_of(rerun), None);
}

/// Scenario 5a: a push retried after the close was handled starts no scan; a reopen does.
#[tokio::test]
async fn a_trigger_from_before_the_close_starts_no_scan_after_it() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-close",
        &fixture("pull_request.closed.octokit.json"),
    )
    .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-late",
        &pull_request_event("synchronize", B, "2019-05-15T15:21:00Z"),
    )
    .await;
    assert!(h.scan_requests(NS).await.is_empty());
    assert!(counted(&h, "pull_request_closed"));
    // At the very second of the close: still before it.
    send_and_settle(
        &h,
        "pull_request",
        "d-same",
        &pull_request_event("synchronize", B, CLOSED_AT),
    )
    .await;
    assert!(h.scan_requests(NS).await.is_empty());
    send_and_settle(&h, "pull_request", "d-reopen", &event_at("reopened", B, 1)).await;
    assert_eq!(
        only_live(&h.scan_requests(NS).await)
            .spec
            .pull_request
            .head_sha,
        B
    );
}

/// Reads the entries delivered so far by hand (no consumer runs).
async fn read_entries(h: &Harness, count: usize) -> Vec<EventEntry> {
    let mut consumer = h
        .consumer("by-hand", Duration::from_secs(3600))
        .await
        .unwrap();
    let batch = consumer.next_batch().await.unwrap();
    assert_eq!(batch.len(), count);
    batch.into_iter().map(|p| p.entry.unwrap()).collect()
}

/// Scenario 5b: two consumers at once: the close is handled while the push's create is in
/// flight, so the close's list misses it; the push's second check stops it.
#[tokio::test]
async fn a_close_handled_during_a_concurrent_create_still_stops_that_scan() {
    let h = Harness::start(vec![sample_policy()]).await.unwrap();
    send(&h, "pull_request", "d-push", &event_at("synchronize", B, 1)).await;
    send(&h, "pull_request", "d-close", &event_at("closed", B, 2)).await;
    let entries = read_entries(&h, 2).await;
    let mut pause = h.k8s.pause_next("POST", "/scanrequests");
    let ingest = h.ingest();
    let push = entries[0].clone();
    let racing = tokio::spawn(async move { ingest.handle(&push).await });
    pause.arrived().await.unwrap();
    assert!(matches!(
        h.ingest().handle(&entries[1]).await,
        Handled::Done
    ));
    pause.release();
    assert!(matches!(racing.await.unwrap(), Handled::Done));
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 1, "the push's create went through");
    assert!(live(&requests).is_empty(), "{:?}", stop_of(&requests[0]));
    assert!(matches!(
        stop_of(&requests[0]),
        Some(StopRequest::Cancelled { .. })
    ));
}

/// Scenario 5c: the close records itself before it lists. Its list is answered late (read
/// before the push, heard of after it): the push must already see the close and create nothing.
#[tokio::test]
async fn a_close_records_itself_before_it_lists_the_scans() {
    let h = Harness::start(vec![sample_policy()]).await.unwrap();
    send(&h, "pull_request", "d-push", &event_at("synchronize", B, 1)).await;
    send(&h, "pull_request", "d-close", &event_at("closed", B, 2)).await;
    let entries = read_entries(&h, 2).await;
    let mut slow_list = h.k8s.pause_next_answer("GET", "/scanrequests");
    let ingest = h.ingest();
    let close = entries[1].clone();
    let closing = tokio::spawn(async move { ingest.handle(&close).await });
    slow_list.arrived().await.unwrap();
    assert!(matches!(
        h.ingest().handle(&entries[0]).await,
        Handled::Done
    ));
    slow_list.release();
    assert!(matches!(closing.await.unwrap(), Handled::Done));
    assert!(
        live(&h.scan_requests(NS).await).is_empty(),
        "no live scan of the closed pull request"
    );
}

/// A ScanRequest in a namespace without the policy it names (planted by someone able to create
/// ScanRequests there) steers nothing: here it claims a far-future trigger of another commit.
#[tokio::test]
async fn scan_requests_outside_the_policies_namespaces_are_ignored() {
    let h = running(vec![sample_policy()]).await;
    let mut planted: ScanRequest = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/samples/scanrequest.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    planted.metadata.namespace = Some("elsewhere".into());
    planted.spec.pull_request.head_sha = C.into();
    planted.spec.pull_request.updated_at = Some("2099-01-01T00:00:00Z".into());
    planted.metadata.labels = Some(gatehouse_crds::labels::scan_request_labels(&planted.spec));
    kube::api::Api::<ScanRequest>::namespaced(h.k8s.client(), "elsewhere")
        .create(&kube::api::PostParams::default(), &planted)
        .await
        .unwrap();
    send_and_settle(&h, "pull_request", "d-b", &event_at("synchronize", B, 1)).await;
    assert_eq!(
        only_live(&h.scan_requests(NS).await)
            .spec
            .pull_request
            .head_sha,
        B
    );
}

/// A captured Re-run replayed under fresh delivery ids names the same scan: it does not
/// restart the head's scan again and again.
#[tokio::test]
async fn a_replayed_rerun_does_not_restart_the_scan() {
    let h = running(vec![sample_policy()]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, OPENED_AT, false),
    )
    .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    let suite = fixture("check_suite.rerequested.octokit.json");
    send_and_settle(&h, "check_suite", "d-suite", &suite).await;
    let rerun = only_live(&h.scan_requests(NS).await).clone();
    assert_eq!(rerun.spec.trigger.event, "check_suite");
    for replay in ["d-suite-2", "d-suite-3"] {
        send_and_settle(&h, "check_suite", replay, &suite).await;
    }
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 2, "the original and one re-run");
    assert_eq!(reference(only_live(&requests)), reference(&rerun));
}

/// The author became trusted after the scan started waiting: the waiting scan (judged by its
/// own spec) still needs the approval, which is accepted.
#[tokio::test]
async fn ok_to_scan_approves_a_waiting_scan_whose_author_became_trusted_since() {
    let h = running(vec![sample_policy()]).await;
    let mut now_trusted = api_pull_request(SHA, OPENED_AT, true);
    now_trusted["author_association"] = json!("COLLABORATOR");
    h.mock_pull_request("Codertocat", "Hello-World", 2, now_trusted)
        .await;
    h.mock_permission("Codertocat", "Hello-World", "maintainer", "write", "write")
        .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-fork",
        &fork_of(fixture("pull_request.opened.octokit.json")),
    )
    .await;
    send_and_settle(
        &h,
        "issue_comment",
        "d-approve",
        &comment(&format!("/gatehouse ok-to-scan {SHA}"), 501, "maintainer"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert!(only_live(&requests).spec.approval.is_some());
}

/// A command finds the pull request closed on GitHub (its close delivery was lost): the close
/// is carried out then.
#[tokio::test]
async fn a_command_on_a_pull_request_closed_on_github_stops_its_scans() {
    let h = running(vec![sample_policy()]).await;
    h.mock_permission("Codertocat", "Hello-World", "maintainer", "write", "write")
        .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        fixture("pull_request.closed.octokit.json")["pull_request"].clone(),
    )
    .await;
    send_and_settle(
        &h,
        "issue_comment",
        "d-rescan",
        &comment("/gatehouse rescan", 601, "maintainer"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 1);
    assert!(live(&requests).is_empty());
    assert!(counted(&h, "pull_request_closed"));
}

/// The base moves to a branch no policy covers: nothing is scanned, and the scan under the old
/// base stops (its commit is not the head's any more).
#[tokio::test]
async fn a_base_moved_out_of_every_policy_stops_the_old_scan() {
    let mut policy = sample_policy();
    policy.spec.base_branches = vec!["master".into()];
    let h = running(vec![policy]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    let mut edited = event_at("edited", SHA, 1);
    edited["pull_request"]["base"]["ref"] = json!("experiments");
    edited["changes"] = json!({"base": {"ref": {"from": "master"}}});
    send_and_settle(&h, "pull_request", "d-edited", &edited).await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 1);
    assert!(live(&requests).is_empty());
    assert!(counted(&h, "no_policy"));
}

/// A scan that finishes between being listed and being stopped keeps its result: the stop
/// request is conditional on what was read, and a finished scan is never stopped.
#[tokio::test]
async fn a_scan_that_finishes_while_being_superseded_keeps_its_result() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-a",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    let a = h.scan_requests(NS).await.remove(0);
    let a_name = a.metadata.name.clone().unwrap();
    let mut stopping = h
        .k8s
        .pause_next("PATCH", &format!("/scanrequests/{a_name}"));
    send(&h, "pull_request", "d-b", &event_at("synchronize", B, 1)).await;
    stopping.arrived().await.unwrap();
    // The operator finishes the scan meanwhile.
    h.k8s
        .set_status::<ScanRequest>(NS, &a_name, json!({"phase": "Succeeded"}))
        .unwrap();
    stopping.release();
    h.wait_until_drained().await.unwrap();
    let requests = h.scan_requests(NS).await;
    let a = requests
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(a_name.as_str()))
        .unwrap();
    assert_eq!(stop_of(a), None, "a finished scan is history");
    assert_eq!(only_live(&requests).spec.pull_request.head_sha, B);
}

fn merge_group(head_sha: &str) -> serde_json::Value {
    // Built from the fixture's repository: no merge_group fixture exists.
    json!({
        "action": "checks_requested",
        "installation": {"id": 1},
        "repository": fixture("pull_request.opened.octokit.json")["repository"],
        "sender": {"login": "Codertocat", "type": "User"},
        "merge_group": {
            "head_sha": head_sha,
            "head_ref": format!("refs/heads/gh-readonly-queue/master/pr-2-{SHA}"),
            "base_ref": "refs/heads/master",
            "base_sha": SHA,
        },
    })
}

/// Scenario 6: merge queue scans and the pull request's own scans never stop each other.
#[tokio::test]
async fn merge_queue_scans_and_pull_request_scans_never_stop_each_other() {
    let h = running(vec![sample_policy()]).await;
    send_and_settle(
        &h,
        "pull_request",
        "d-open",
        &fixture("pull_request.opened.octokit.json"),
    )
    .await;
    send_and_settle(&h, "merge_group", "d-mq", &merge_group(QUEUE_SHA)).await;
    send_and_settle(&h, "merge_group", "d-mq-again", &merge_group(QUEUE_SHA)).await;
    send_and_settle(&h, "pull_request", "d-push", &event_at("synchronize", B, 1)).await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 3, "one merge queue scan per queue commit");
    let queued = of_sha(&requests, QUEUE_SHA)[0];
    assert_eq!(queued.spec.trigger.event, "merge_group");
    assert_eq!(stop_of(queued), None);
    assert!(stop_of(of_sha(&requests, SHA)[0]).is_some());
    assert_eq!(stop_of(of_sha(&requests, B)[0]), None);
    // Merging closes the pull request: its own scans stop, the queue's do not.
    let mut closed = fixture("pull_request.closed.octokit.json");
    closed["pull_request"]["updated_at"] = json!(at(2));
    send_and_settle(&h, "pull_request", "d-close", &closed).await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(
        reference(only_live(&requests)),
        reference(of_sha(&requests, QUEUE_SHA)[0])
    );
}

/// A check_run.rerequested for one of our check runs (derived from the fixture: ours by name
/// and external id, as a fork's arrives without pull_requests).
fn rerun_of(request: &ScanRequest, scanner: &str) -> serde_json::Value {
    let mut run = fixture("check_run.rerequested.octokit.json");
    run["repository"] = fixture("pull_request.opened.octokit.json")["repository"].clone();
    run["check_run"]["name"] = json!(format!("gatehouse/{scanner}"));
    run["check_run"]["head_sha"] = json!(request.spec.pull_request.head_sha);
    run["check_run"]["pull_requests"] = json!([]);
    run["check_run"]["external_id"] = json!(format!(
        "{}/{}/{}/{scanner}",
        request.metadata.namespace.as_deref().unwrap(),
        request.metadata.name.as_deref().unwrap(),
        request.spec.pull_request.number
    ));
    run
}

/// Scenario 7: on an approved fork commit, rescans and Re-run buttons run without a second
/// approval; on an unapproved one they wait.
#[tokio::test]
async fn reruns_of_an_approved_fork_commit_need_no_second_approval() {
    let h = running(vec![sample_policy()]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, OPENED_AT, true),
    )
    .await;
    h.mock_permission("Codertocat", "Hello-World", "maintainer", "write", "write")
        .await;
    let fork = fork_of(fixture("pull_request.opened.octokit.json"));
    send_and_settle(&h, "pull_request", "d-fork", &fork).await;
    let waiting = only_live(&h.scan_requests(NS).await).clone();
    assert_eq!(waiting.spec.approval, None);

    let approve = comment(&format!("/gatehouse ok-to-scan {SHA}"), 101, "maintainer");
    send_and_settle(&h, "issue_comment", "d-approve", &approve).await;
    let requests = h.scan_requests(NS).await;
    let approved = only_live(&requests).clone();
    let approval = approved.spec.approval.clone().unwrap();
    assert_eq!(
        (
            approval.approver.as_str(),
            approval.sha.as_str(),
            approval.comment_id
        ),
        ("maintainer", SHA, Some(101))
    );
    let waiting = requests
        .iter()
        .find(|r| r.metadata.name == waiting.metadata.name)
        .unwrap();
    assert!(superseded_by(waiting, &approved), "{:?}", stop_of(waiting));

    send_and_settle(
        &h,
        "issue_comment",
        "d-rescan",
        &comment("/gatehouse rescan", 102, "maintainer"),
    )
    .await;
    let rescan = only_live(&h.scan_requests(NS).await).clone();
    assert_eq!(rescan.spec.trigger.event, "issue_comment");
    assert_eq!(rescan.spec.approval.as_ref(), Some(&approval));
    send_and_settle(&h, "check_run", "d-rerun", &rerun_of(&rescan, "kics")).await;
    let requests = h.scan_requests(NS).await;
    let rerun = requests
        .iter()
        .find(|r| r.spec.trigger.event == "check_run")
        .unwrap();
    assert_eq!(rerun.spec.approval.as_ref(), Some(&approval));
    assert_eq!(rerun.spec.scanners, Some(vec!["kics".to_owned()]));
    assert!(approval_covers(&rerun.spec));

    // A new push: its commit is not approved, and a rescan of it waits too.
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(B, &at(1), true),
    )
    .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-push",
        &fork_of(event_at("synchronize", B, 1)),
    )
    .await;
    send_and_settle(
        &h,
        "issue_comment",
        "d-rescan-b",
        &comment("/gatehouse rescan", 103, "maintainer"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    let of_b = of_sha(&requests, B);
    assert_eq!(of_b.len(), 2);
    assert!(of_b.iter().all(|r| r.spec.approval.is_none()));
}

/// Scenario 8: redeliveries and replays of signed payloads under fresh delivery ids create
/// nothing.
#[tokio::test]
async fn replayed_deliveries_and_comments_create_nothing() {
    let h = running(vec![sample_policy()]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, OPENED_AT, false),
    )
    .await;
    h.mock_permission("Codertocat", "Hello-World", "maintainer", "admin", "admin")
        .await;
    let opened = fixture("pull_request.opened.octokit.json");
    send_and_settle(&h, "pull_request", "d-open", &opened).await;
    // GitHub's redelivery: the same delivery id.
    assert_eq!(h.deliver("pull_request", "d-open", &opened).await, 200);
    // A captured delivery replayed under a fresh id.
    send_and_settle(&h, "pull_request", "d-open-replay", &opened).await;
    assert_eq!(h.scan_requests(NS).await.len(), 1);
    let rescan = comment("/gatehouse rescan", 201, "maintainer");
    send_and_settle(&h, "issue_comment", "d-comment", &rescan).await;
    assert_eq!(h.scan_requests(NS).await.len(), 2);
    // The head moves on; the captured comment replayed would rescan the new head.
    send_and_settle(&h, "pull_request", "d-push", &event_at("synchronize", B, 1)).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(B, &at(1), false),
    )
    .await;
    send_and_settle(&h, "issue_comment", "d-comment-replay", &rescan).await;
    assert_eq!(h.scan_requests(NS).await.len(), 3, "the push's scan only");
    assert!(counted(&h, "command_replayed"));
}

/// §3: who may approve: the full head SHA only, from someone with the policy's permission.
#[tokio::test]
async fn approval_needs_the_full_head_sha_and_write_permission() {
    let h = running(vec![sample_policy()]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, OPENED_AT, true),
    )
    .await;
    h.mock_permission("Codertocat", "Hello-World", "reader", "read", "read")
        .await;
    h.mock_permission("Codertocat", "Hello-World", "triager", "read", "triage")
        .await;
    h.mock_permission(
        "Codertocat",
        "Hello-World",
        "maintainer",
        "write",
        "maintain",
    )
    .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-fork",
        &fork_of(fixture("pull_request.opened.octokit.json")),
    )
    .await;
    let full = format!("/gatehouse ok-to-scan {SHA}");
    // MEMBER by association (as the comment says), but only read on the repository.
    send_and_settle(
        &h,
        "issue_comment",
        "d-reader",
        &comment(&full, 301, "reader"),
    )
    .await;
    // Triage is below the default minimum (write).
    send_and_settle(
        &h,
        "issue_comment",
        "d-triager",
        &comment(&full, 302, "triager"),
    )
    .await;
    // A 7-character prefix of the head.
    send_and_settle(
        &h,
        "issue_comment",
        "d-prefix",
        &comment("/gatehouse ok-to-scan ec26c3e", 303, "maintainer"),
    )
    .await;
    // The full SHA of another commit.
    send_and_settle(
        &h,
        "issue_comment",
        "d-other",
        &comment(&format!("/gatehouse ok-to-scan {B}"), 304, "maintainer"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(requests.len(), 1, "nothing approved");
    assert_eq!(only_live(&requests).spec.approval, None);
    let metrics = h.metrics.render(None);
    for result in ["approval_not_full_sha", "approval_of_old_commit"] {
        assert!(
            metrics.contains(&format!("result=\"{result}\"}} 1")),
            "{result}: {metrics}"
        );
    }
    assert!(
        metrics.contains("result=\"untrusted_commenter\"} 2"),
        "{metrics}"
    );
    // The maintainer's permission was asked once for two commands (cached).
    assert_eq!(
        h.github_requests("/repos/Codertocat/Hello-World/collaborators/maintainer/permission")
            .await,
        1
    );
    send_and_settle(
        &h,
        "issue_comment",
        "d-approve",
        &comment(&full, 305, "maintainer"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(
        only_live(&requests)
            .spec
            .approval
            .as_ref()
            .unwrap()
            .approver,
        "maintainer"
    );
}

/// §3: the minimum permission is the policy's to set.
#[tokio::test]
async fn a_policy_can_let_triagers_approve() {
    let mut policy = sample_policy();
    policy.spec.commands.minimum_permission = Permission::Triage;
    let h = running(vec![policy]).await;
    h.mock_pull_request(
        "Codertocat",
        "Hello-World",
        2,
        api_pull_request(SHA, OPENED_AT, true),
    )
    .await;
    h.mock_permission("Codertocat", "Hello-World", "triager", "read", "triage")
        .await;
    send_and_settle(
        &h,
        "pull_request",
        "d-fork",
        &fork_of(fixture("pull_request.opened.octokit.json")),
    )
    .await;
    send_and_settle(
        &h,
        "issue_comment",
        "d-triager",
        &comment(&format!("/gatehouse ok-to-scan {SHA}"), 401, "triager"),
    )
    .await;
    let requests = h.scan_requests(NS).await;
    assert_eq!(
        only_live(&requests)
            .spec
            .approval
            .as_ref()
            .unwrap()
            .approver,
        "triager"
    );
}

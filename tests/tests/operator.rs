//! gatehouse-operator against the strict Kubernetes API emulator and the GitHub stand-in: a
//! ScanRequest from creation to Jobs and check runs, as the test plays the Job controller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_crds::lifecycle::{STOP, ScanRef, StopRequest};
use gatehouse_crds::{ScanPolicy, ScanRequest};

use gatehouse_tests::operator::{NS, OperatorHarness, kics_policy, request, sample_request};
use gatehouse_tests::{Controller, Failure, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const SR: &str = "hello-world-pr2-ec26c3e-016643a9";
const JOB: &str = "hello-world-pr2-ec26c3e-016643a9-kics";

fn posts(h: &OperatorHarness) -> usize {
    h.github
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/check-runs") && c.status == 201)
        .count()
}

fn history(h: &OperatorHarness, external_id_part: &str) -> Vec<String> {
    h.github
        .check_runs()
        .iter()
        .find(|r| r.external_id.contains(external_id_part))
        .map(|r| r.history.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_scan_request_is_queued_admitted_run_as_a_hardened_job_and_its_check_run_moves_once_per_step()
 {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();

    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.until("phase Running and a queued check run", |h| {
        h.phase(SR).as_deref() == Some("Running") && history(h, SR) == ["queued"]
    })
    .await
    .unwrap();
    let stored = h.request(SR).unwrap();
    assert!(
        stored
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "gatehouse.dev/cleanup")
    );
    let status = stored.status.unwrap();
    assert_eq!(status.policy.as_ref().unwrap().name, "acme-iac");
    assert_eq!(status.scanners[0].job_name.as_deref(), Some(JOB));
    assert_eq!(status.scanners[0].attempts, 1);
    let run = &h.github.check_runs()[0];
    assert_eq!(run.name, "gatehouse/kics");
    assert_eq!(run.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(
        run.external_id,
        format!(
            "{NS}/{SR}/2/kics/{}",
            stored.metadata.uid.as_deref().unwrap()
        )
    );
    assert_eq!(
        run.details_url.as_deref(),
        Some("https://gatehouse.example/scans/gatehouse-scans/hello-world-pr2-ec26c3e-016643a9")
    );
    // The per-scan Secret: a read-only token for this one repository, the signing key.
    let minted = h.github.tokens_minted();
    assert!(
        minted
            .iter()
            .any(|b| b
                == &json!({"repositories": ["Hello-World"], "permissions": {"contents": "read"}})),
        "{minted:?}"
    );
    let secret = h.k8s.get::<Secret>(NS, &format!("{SR}-scan")).unwrap();
    let data = secret["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["kics.config", "signing-key", "token"]
    );
    let job = h.k8s.get::<Job>(NS, JOB).unwrap();
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 900);
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], SR);

    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in_progress", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    assert!(h.github.check_runs()[0].started_at.is_some());

    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    h.until("the scanner completed", |h| {
        h.request(SR).unwrap().status.unwrap().scanners[0].phase
            == gatehouse_crds::scanrequest::ScannerPhase::Completed
    })
    .await
    .unwrap();
    // Its conclusion depends on the findings (the results step): it stays in progress.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history(&h, SR), ["queued", "in_progress"]);
    assert_eq!(posts(&h), 1, "created once, then only updated");
    let patches = h
        .github
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.contains("/check-runs/"))
        .count();
    assert_eq!(
        patches,
        1,
        "one update per transition: {:#?}",
        h.github.calls()
    );
    assert_eq!(
        h.k8s.names::<Job>(NS),
        [JOB],
        "never a second Job for one scanner"
    );
}

#[tokio::test]
async fn a_job_past_its_deadline_concludes_its_check_run_timed_out_and_fails_the_request() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.k8s
        .set_job_status(
            NS,
            JOB,
            &JobState::Failed {
                reason: "DeadlineExceeded".to_owned(),
                message: "Job was active longer than specified deadline".to_owned(),
            },
        )
        .unwrap();
    h.until("phase Failed", |h| h.phase(SR).as_deref() == Some("Failed"))
        .await
        .unwrap();
    h.until("timed_out", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/timed_out")
    })
    .await
    .unwrap();
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(
        status.conclusion,
        Some(gatehouse_crds::scanrequest::Conclusion::TimedOut)
    );
    let completed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Completed")
        .unwrap();
    assert_eq!(
        (completed.status.as_str(), completed.reason.as_str()),
        ("True", "Failed")
    );
    assert_eq!(h.k8s.names::<Job>(NS), [JOB], "a timeout is not retried");
}

#[tokio::test]
async fn deleting_a_scan_request_cancels_its_open_check_run_and_the_finalizer_lets_it_go() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    Api::<ScanRequest>::namespaced(h.k8s.client(), NS)
        .delete(SR, &DeleteParams::default())
        .await
        .unwrap();
    h.until("cancelled and gone", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/cancelled")
            && h.request(SR).is_none()
    })
    .await
    .unwrap();
    let run = &h.github.check_runs()[0];
    assert_eq!(
        run.title.as_deref(),
        Some("Cancelled: the ScanRequest was deleted")
    );
}

#[tokio::test]
async fn a_superseded_scan_stops_its_job_and_its_check_run_names_what_replaced_it() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in_progress", |h| history(h, SR).len() == 2)
        .await
        .unwrap();
    let stop = StopRequest::Superseded {
        head_sha: "9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2".to_owned(),
        by: Some(ScanRef {
            namespace: NS.to_owned(),
            name: "hello-world-pr2-9f1c2ab-aaaaaaaa".to_owned(),
        }),
    };
    Api::<ScanRequest>::namespaced(h.k8s.client(), NS)
        .patch(
            SR,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {STOP: stop.to_annotation()}}})),
        )
        .await
        .unwrap();
    h.until("superseded", |h| {
        h.phase(SR).as_deref() == Some("Superseded")
    })
    .await
    .unwrap();
    h.until("cancelled check run", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/cancelled")
    })
    .await
    .unwrap();
    let job = h.k8s.get::<Job>(NS, JOB);
    assert!(
        job.is_none_or(|j| j["metadata"]["deletionTimestamp"].is_string()),
        "the Job is being deleted"
    );
    let run = &h.github.check_runs()[0];
    assert_eq!(
        run.title.as_deref(),
        Some(
            "Superseded by commit 9f1c2ab (ScanRequest gatehouse-scans/hello-world-pr2-9f1c2ab-aaaaaaaa)"
        )
    );
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(
        status.superseded_by.as_deref(),
        Some("hello-world-pr2-9f1c2ab-aaaaaaaa")
    );
}

#[tokio::test]
async fn a_check_run_created_before_a_lost_status_write_is_found_again_not_created_twice() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // GitHub creates the check run but its answer is lost: the operator does not know the id,
    // as after a crash between "created at GitHub" and "recorded in status".
    h.github
        .lose_answer_next("POST", "/repos/Codertocat/Hello-World/check-runs", 502, 1);
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the id recorded", |h| {
        h.request(SR)
            .and_then(|r| r.status)
            .is_some_and(|s| s.scanners.first().is_some_and(|s| s.check_run_id.is_some()))
    })
    .await
    .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in_progress", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    let creates = h
        .github
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/check-runs"))
        .count();
    assert_eq!(creates, 1, "never POSTed again: {:#?}", h.github.calls());
    assert_eq!(h.github.check_runs().len(), 1);
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].check_run_id,
        Some(h.github.check_runs()[0].id)
    );
}

#[tokio::test]
async fn an_operator_restarted_mid_flight_continues_without_a_second_job_or_check_run() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // The operator dies after creating the Job and before hearing of it: no status records it.
    let mut created = h.k8s.pause_next_answer("POST", "/jobs");
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    created.arrived().await.unwrap();
    h.crash_operator();
    created.release();
    assert!(h.k8s.get::<Job>(NS, JOB).is_some());
    assert_eq!(
        h.request(SR)
            .and_then(|r| r.status)
            .and_then(|s| s.scanners[0].job_name.clone()),
        None
    );
    h.start_operator().unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].attempts,
        1
    );
    h.crash_operator();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.start_operator().unwrap();
    h.until("in_progress", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    h.k8s
        .set_job_status(
            NS,
            JOB,
            &JobState::Failed {
                reason: "DeadlineExceeded".to_owned(),
                message: "deadline".to_owned(),
            },
        )
        .unwrap();
    h.until("timed out", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/timed_out")
    })
    .await
    .unwrap();
    assert_eq!(posts(&h), 1);
    assert_eq!(h.k8s.names::<Job>(NS), [JOB]);
}

#[tokio::test]
async fn githubs_rate_limit_on_creating_a_check_run_is_waited_out_and_nothing_is_doubled() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.github.fail_next(
        "POST",
        "/repos/Codertocat/Hello-World/check-runs",
        403,
        vec![
            ("retry-after".to_owned(), "3".to_owned()),
            ("x-ratelimit-remaining".to_owned(), "4000".to_owned()),
        ],
        1,
    );
    h.github.fail_next(
        "PATCH",
        "/repos/Codertocat/Hello-World/check-runs",
        502,
        vec![],
        1,
    );
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the refused POST", |h| {
        h.github.calls().iter().any(|c| c.status == 403)
    })
    .await
    .unwrap();
    // Another request arrives during the wait: its calls wait too (one gate for the App).
    h.create(&request("sr-other", 'b')).await.unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    let calls = h.github.calls();
    let refused_at = calls.iter().find(|c| c.status == 403).unwrap().at;
    let after: Vec<_> = calls.iter().filter(|c| c.at > refused_at).collect();
    assert!(!after.is_empty());
    for call in &after {
        assert!(
            call.at.duration_since(refused_at) >= Duration::from_millis(2_900),
            "{} {} went out {:?} after a 403 with retry-after: 3",
            call.method,
            call.path,
            call.at.duration_since(refused_at)
        );
    }
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in_progress after a 502", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    assert_eq!(
        h.github
            .check_runs()
            .iter()
            .filter(|r| r.external_id.contains(SR))
            .count(),
        1
    );
    let refused = h
        .github
        .calls()
        .iter()
        .filter(|c| c.status == 403 || c.status == 502)
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn an_untrusted_fork_gets_an_action_required_check_run_with_the_exact_approval_comment() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    let mut fork = sample_request();
    fork.spec.pull_request.fork = true;
    fork.spec.pull_request.author = "outsider".to_owned();
    fork.spec.pull_request.author_association = "CONTRIBUTOR".to_owned();
    h.create(&fork).await.unwrap();
    h.until("action_required", |h| {
        history(h, SR) == ["completed/action_required"]
    })
    .await
    .unwrap();
    assert_eq!(h.phase(SR).as_deref(), Some("AwaitingApproval"));
    let run = &h.github.check_runs()[0];
    assert!(
        run.summary
            .as_deref()
            .unwrap()
            .contains("/gatehouse ok-to-scan ec26c3e57ca3a959ca5aad62de7213c562f8c821"),
        "{run:?}"
    );
    assert!(
        h.k8s.names::<Job>(NS).is_empty(),
        "nothing runs before approval"
    );
    assert!(
        h.k8s.names::<Secret>(NS).is_empty(),
        "no token is minted either"
    );
}

#[tokio::test]
async fn a_request_whose_policy_does_not_exist_waits_with_ready_false_and_runs_nothing() {
    let mut h = OperatorHarness::start(vec![]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("Ready=False", |h| {
        h.request(SR).and_then(|r| r.status).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "PolicyNotFound")
        })
    })
    .await
    .unwrap();
    assert!(h.github.check_runs().is_empty());
    assert!(h.k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn fifty_requests_in_flight_never_exceed_the_limits_and_all_get_their_turn() {
    let mut policy = kics_policy();
    policy.spec.concurrency.max_running = 6;
    policy.spec.concurrency.max_running_per_repository = 2;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    // The operator-wide limit is the tighter one.
    h.max_running = 5;
    h.start_operator().unwrap();
    // 50 requests over 5 repositories; the first repository has 30 of them.
    for i in 0..50u32 {
        let mut r = request(&format!("sr-{i:02}"), char::from_digit(i % 16, 16).unwrap());
        let repo = if i < 30 { 0 } else { 1 + i % 4 };
        r.spec.repository.id = 1000 + i64::from(repo);
        r.spec.repository.name = format!("repo-{repo}");
        r.spec.pull_request.number = i64::from(i) + 1;
        h.create(&r).await.unwrap();
    }
    let mut finished = 0;
    let mut seen_repositories = std::collections::BTreeSet::new();
    for _round in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Jobs that exist and have not finished, by repository.
        let mut active: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0;
        let mut names = Vec::new();
        for name in h.k8s.names::<Job>(NS) {
            let job = h.k8s.get::<Job>(NS, &name).unwrap();
            let done = job["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"));
            if done {
                continue;
            }
            let repo = job["metadata"]["labels"]["gatehouse.dev/repository-id"]
                .as_str()
                .unwrap()
                .to_owned();
            seen_repositories.insert(repo.clone());
            *active.entry(repo).or_default() += 1;
            total += 1;
            names.push(name.clone());
            // Finish it: the slot frees for the next.
            h.k8s
                .set_job_status(NS, &name, &JobState::Succeeded)
                .unwrap();
            finished += 1;
        }
        assert!(
            total <= 5,
            "--max-running exceeded: {active:?} {names:?} {:?}",
            h.k8s.names::<Job>(NS)
        );
        assert!(
            active.values().all(|n| *n <= 2),
            "maxRunningPerRepository exceeded: {active:?}"
        );
        if finished == 50 {
            break;
        }
    }
    assert_eq!(finished, 50, "every request got its turn");
    assert_eq!(seen_repositories.len(), 5);
    assert_eq!(posts(&h), 50, "one check run each");
}

#[tokio::test]
async fn a_job_deleted_by_its_ttl_after_the_scan_is_recorded_as_finished_is_not_recreated() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    h.until("completed", |h| {
        h.request(SR).and_then(|r| r.status).is_some_and(|s| {
            s.scanners[0].phase == gatehouse_crds::scanrequest::ScannerPhase::Completed
        })
    })
    .await
    .unwrap();
    Api::<Job>::namespaced(h.k8s.client(), NS)
        .delete(JOB, &DeleteParams::background())
        .await
        .unwrap();
    h.until("gone", |h| h.k8s.get::<Job>(NS, JOB).is_none())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.k8s.names::<Job>(NS).is_empty(),
        "{:?}",
        h.k8s.names::<Job>(NS)
    );
    let _: Value = json!(null);
}

#[tokio::test]
async fn finished_requests_beyond_the_policys_count_per_pull_request_are_deleted_oldest_first() {
    let mut policy = kics_policy();
    policy.spec.retention.keep_per_pull_request = 1;
    policy.spec.scanners[0].paths = vec!["**/*.tf".to_owned()];
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    // No changed file matches: each request concludes `skipped` at once and is finished.
    h.github
        .set_changed_files("Codertocat", "Hello-World", 2, vec!["README.md".to_owned()]);
    h.start_operator().unwrap();
    h.create(&request("sr-older", 'a')).await.unwrap();
    h.until("the first finished", |h| {
        h.phase("sr-older").as_deref() == Some("Succeeded")
    })
    .await
    .unwrap();
    h.k8s.advance_clock(Duration::from_secs(5));
    h.create(&request("sr-newer", 'b')).await.unwrap();
    h.until("the older deleted", |h| {
        h.request("sr-older").is_none() && h.phase("sr-newer").as_deref() == Some("Succeeded")
    })
    .await
    .unwrap();
    let history: Vec<Vec<String>> = h
        .github
        .check_runs()
        .iter()
        .map(|r| r.history.clone())
        .collect();
    assert_eq!(
        history,
        [["completed/skipped"], ["completed/skipped"]],
        "each concluded skipped once"
    );
}

#[tokio::test]
async fn a_hand_made_request_for_a_repository_its_policy_does_not_cover_gets_no_token_and_no_check_run()
 {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    let mut foreign = sample_request();
    foreign.spec.repository.owner = "other-org".to_owned();
    foreign.spec.repository.name = "private".to_owned();
    h.create(&foreign).await.unwrap();
    h.until("Ready=False RepositoryNotCovered", |h| {
        h.request(SR).and_then(|r| r.status).is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.reason == "RepositoryNotCovered"
            })
        })
    })
    .await
    .unwrap();
    assert!(h.github.tokens_minted().is_empty());
    assert!(h.github.check_runs().is_empty());
    assert!(h.k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn a_request_naming_an_installation_that_does_not_hold_its_repository_fails_without_a_token()
{
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // The App's installation on Codertocat is 9; the request claims installation 1.
    h.github.set_installation("Codertocat", 9);
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("failure", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/failure")
    })
    .await
    .unwrap();
    let minted: Vec<Value> = h
        .github
        .tokens_minted()
        .into_iter()
        .filter(|b| b.get("repositories").is_some())
        .collect();
    assert!(minted.is_empty(), "{minted:?}");
    assert!(h.k8s.names::<Job>(NS).is_empty());
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(
        status.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Failed")
    );
    assert!(
        status.scanners[0]
            .message
            .as_deref()
            .unwrap()
            .contains("does not hold repository Codertocat/Hello-World"),
        "{:?}",
        status.scanners[0].message
    );
}

#[tokio::test]
async fn a_job_the_api_refuses_concludes_its_check_run_failure_instead_of_retrying_forever() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.k8s
        .fail_next(Some("POST"), "/jobs", 100, Failure::Invalid);
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("failure", |h| {
        history(h, SR).last().map(String::as_str) == Some("completed/failure")
    })
    .await
    .unwrap();
    let run = &h.github.check_runs()[0];
    assert!(
        run.title
            .as_deref()
            .unwrap()
            .starts_with("Could not start the scan"),
        "{run:?}"
    );
    assert_eq!(h.phase(SR).as_deref(), Some("Failed"));
}

#[tokio::test]
async fn deleting_a_request_whose_repository_github_no_longer_serves_does_not_hang() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    // The App lost access to the repository: every call about it is refused for good (a 403
    // that is not a rate limit; a 404 on a PATCH would read as a run GitHub deleted).
    for method in ["GET", "PATCH", "POST"] {
        h.github
            .fail_next(method, "/repos/Codertocat/Hello-World/", 403, vec![], 1000);
    }
    Api::<ScanRequest>::namespaced(h.k8s.client(), NS)
        .delete(SR, &DeleteParams::default())
        .await
        .unwrap();
    h.until("gone", |h| h.request(SR).is_none()).await.unwrap();
    // It went because GitHub refused for good, said so in an event, and the run stayed as it
    // was: nothing pretends it was concluded.
    assert_eq!(history(&h, SR), ["queued"]);
    let reasons: Vec<String> = h
        .k8s
        .names::<k8s_openapi::api::events::v1::Event>(NS)
        .iter()
        .filter_map(|name| {
            h.k8s
                .get::<k8s_openapi::api::events::v1::Event>(NS, name)
                .and_then(|e| e["reason"].as_str().map(str::to_owned))
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r == "CleanupIncomplete"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_check_run_github_deleted_is_created_anew_instead_of_failing_every_update() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    let first = h.github.check_runs()[0].id;
    h.github.fail_next(
        "PATCH",
        &format!("/repos/Codertocat/Hello-World/check-runs/{first}"),
        404,
        vec![],
        1000,
    );
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("a second run, recorded", |h| {
        h.github.check_runs().len() == 2
            && h.request(SR).unwrap().status.unwrap().scanners[0].check_run_id != Some(first)
    })
    .await
    .unwrap();
    let runs = h.github.check_runs();
    let newest = runs.iter().find(|r| r.id != first).unwrap();
    assert_eq!(newest.status, "in_progress");
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].check_run_id,
        Some(newest.id)
    );
}

#[tokio::test]
async fn errors_from_the_api_server_lose_nothing_and_double_nothing() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // No retries inside the client: every failure reaches the operator. Every kind of write
    // fails on its first attempts, some after they took effect (the answer lost): the Job
    // create, the Secret apply, the status write, and a 429 on the Job list.
    h.client_retries = false;
    h.k8s
        .fail_next(Some("POST"), "/jobs", 1, Failure::InternalError);
    h.k8s
        .fail_next_answer(Some("POST"), "/jobs", 1, Failure::InternalError);
    h.k8s
        .fail_next(Some("PATCH"), "/secrets/", 1, Failure::Unavailable);
    h.k8s
        .fail_next_answer(Some("PATCH"), "/status", 1, Failure::Unavailable);
    h.k8s
        .fail_next(Some("PATCH"), "/status", 1, Failure::Conflict);
    h.k8s.fail_next(
        Some("GET"),
        "/jobs?",
        1,
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
    );
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job and a queued check run", |h| {
        h.k8s.get::<Job>(NS, JOB).is_some() && history(h, SR) == ["queued"]
    })
    .await
    .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Active).unwrap();
    h.until("in_progress", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    assert_eq!(h.k8s.names::<Job>(NS), [JOB]);
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].attempts,
        1
    );
    assert_eq!(posts(&h), 1);
    assert_eq!(h.github.check_runs().len(), 1);
}

#[tokio::test]
async fn policies_show_whether_they_are_ready_and_what_is_wrong_with_an_invalid_one() {
    let mut broken = kics_policy();
    broken.metadata.name = Some("broken".to_owned());
    broken.spec.repositories = vec!["acme/[".to_owned()];
    let mut h = OperatorHarness::start(vec![kics_policy(), broken])
        .await
        .unwrap();
    h.start_operator().unwrap();
    let ready = |h: &OperatorHarness, name: &str| {
        h.k8s.get::<ScanPolicy>(NS, name).and_then(|p| {
            p["status"]["conditions"][0]["status"].as_str().map(|s| {
                (
                    s.to_owned(),
                    p["status"]["conditions"][0]["message"].to_string(),
                )
            })
        })
    };
    h.until("both policies have a status", |h| {
        ready(h, "acme-iac").is_some() && ready(h, "broken").is_some()
    })
    .await
    .unwrap();
    assert_eq!(ready(&h, "acme-iac").unwrap().0, "True");
    let (status, message) = ready(&h, "broken").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("acme/["), "{message}");
}

#[tokio::test]
async fn jobs_the_cluster_forbids_fail_their_scans_and_the_queue_moves_on() {
    let mut policy = kics_policy();
    policy.spec.concurrency.max_running = 1;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.k8s
        .fail_next(Some("POST"), "/jobs", 1000, Failure::Forbidden);
    h.start_operator().unwrap();
    h.create(&request("sr-a", 'a')).await.unwrap();
    h.create(&request("sr-b", 'b')).await.unwrap();
    h.until("both failed, neither holding the only slot", |h| {
        h.phase("sr-a").as_deref() == Some("Failed") && h.phase("sr-b").as_deref() == Some("Failed")
    })
    .await
    .unwrap();
    let message = h.request("sr-b").unwrap().status.unwrap().scanners[0]
        .message
        .clone()
        .unwrap();
    assert!(message.contains("denied the request"), "{message}");
}

#[tokio::test]
async fn a_finished_request_is_not_deleted_before_github_has_its_conclusion() {
    let mut policy = kics_policy();
    policy.spec.retention.keep_per_pull_request = 1;
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&request("sr-older", 'a')).await.unwrap();
    h.until("queued", |h| h.github.check_runs().len() == 1)
        .await
        .unwrap();
    // Its timeout cannot reach GitHub for a while (its run is the first, id 1000).
    h.github.fail_next(
        "PATCH",
        "/repos/Codertocat/Hello-World/check-runs/1000",
        502,
        vec![],
        100_000,
    );
    h.k8s
        .set_job_status(
            NS,
            "sr-older-kics",
            &JobState::Failed {
                reason: "DeadlineExceeded".to_owned(),
                message: "deadline".to_owned(),
            },
        )
        .unwrap();
    h.until("failed", |h| {
        h.phase("sr-older").as_deref() == Some("Failed")
    })
    .await
    .unwrap();
    // A newer request of the pull request finishes meanwhile (its Job fails at once too).
    h.k8s.advance_clock(Duration::from_secs(5));
    h.create(&request("sr-newer", 'b')).await.unwrap();
    h.until("the newer Job", |h| {
        h.k8s.get::<Job>(NS, "sr-newer-kics").is_some()
    })
    .await
    .unwrap();
    h.k8s
        .set_job_status(
            NS,
            "sr-newer-kics",
            &JobState::Failed {
                reason: "DeadlineExceeded".to_owned(),
                message: "deadline".to_owned(),
            },
        )
        .unwrap();
    h.until("the newer concluded", |h| {
        history(h, "sr-newer").last().map(String::as_str) == Some("completed/timed_out")
    })
    .await
    .unwrap();
    // Retention would push the older out now, but GitHub has not got its conclusion: it stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let older = h.request("sr-older").unwrap();
    assert!(older.metadata.deletion_timestamp.is_none());
    h.github.clear_faults();
    h.until("the older reported, then deleted", |h| {
        h.request("sr-older").is_none()
    })
    .await
    .unwrap();
    let older = h
        .github
        .check_runs()
        .into_iter()
        .find(|r| r.external_id.contains("sr-older"))
        .unwrap();
    assert_eq!(
        older.history.last().map(String::as_str),
        Some("completed/timed_out")
    );
}

#[tokio::test]
async fn a_request_stopped_before_its_first_status_starts_no_check_run_of_its_own() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    let mut stopped = sample_request();
    stopped.metadata.annotations = Some(
        [(
            STOP.to_owned(),
            StopRequest::Superseded {
                head_sha: "9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2".to_owned(),
                by: None,
            }
            .to_annotation(),
        )]
        .into(),
    );
    h.create(&stopped).await.unwrap();
    h.until("superseded", |h| {
        h.phase(SR).as_deref() == Some("Superseded")
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.github.check_runs().is_empty(),
        "{:#?}",
        h.github.check_runs()
    );
    assert!(h.k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn a_restarted_operator_never_deletes_by_a_retention_its_policy_cache_has_not_loaded_yet() {
    let mut policy = kics_policy();
    policy.spec.retention.keep_per_pull_request = 10;
    policy.spec.scanners[0].paths = vec!["**/*.tf".to_owned()];
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.github
        .set_changed_files("Codertocat", "Hello-World", 2, vec!["README.md".to_owned()]);
    h.start_operator().unwrap();
    let names: Vec<String> = (0..7).map(|i| format!("sr-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        h.k8s.advance_clock(Duration::from_secs(2));
        h.create(&request(
            name,
            char::from_digit(u32::try_from(i).unwrap(), 16).unwrap(),
        ))
        .await
        .unwrap();
    }
    h.until("all finished", |h| {
        names
            .iter()
            .all(|n| h.phase(n).as_deref() == Some("Succeeded"))
    })
    .await
    .unwrap();
    h.crash_operator();
    // The policies' list is held: the operator's policy cache stays empty for a while.
    let held = h
        .k8s
        .pause_next("GET", "/apis/gatehouse.dev/v1alpha1/scanpolicies");
    h.start_operator().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept: Vec<&String> = names.iter().filter(|n| h.request(n).is_some()).collect();
    assert_eq!(
        kept.len(),
        7,
        "deleted under a guessed retention: kept {kept:?}"
    );
    held.release();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names.iter().filter(|n| h.request(n).is_some()).count(), 7);
}

#[tokio::test]
async fn a_restarted_operator_admits_nothing_before_every_watched_namespace_is_listed() {
    const TEAM: &str = "team-b";
    let mut other = kics_policy();
    other.metadata.namespace = Some(TEAM.to_owned());
    let mut h = OperatorHarness::start(vec![kics_policy(), other])
        .await
        .unwrap();
    h.max_running = 1;
    h.namespaces = vec![Some(NS.to_owned()), Some(TEAM.to_owned())];
    h.start_operator().unwrap();
    // One scan runs in the second namespace and holds the operator's only slot.
    let mut running = request("running-b", 'b');
    running.metadata.namespace = Some(TEAM.to_owned());
    h.create(&running).await.unwrap();
    let running_job = "running-b-kics";
    h.until("the second namespace's Job", |h| {
        h.k8s.get::<Job>(TEAM, running_job).is_some()
    })
    .await
    .unwrap();
    h.crash_operator();

    // After a restart, the second namespace's list is slow to arrive.
    let waiting = request("waiting-a", 'a');
    h.create(&waiting).await.unwrap();
    let mut slow_list = h
        .k8s
        .pause_next("GET", &format!("/namespaces/{TEAM}/scanrequests"));
    h.start_operator().unwrap();
    slow_list.arrived().await.unwrap();
    h.until("the first namespace's request decided", |h| {
        h.phase("waiting-a").is_some()
    })
    .await
    .unwrap();
    // Several queue polls go by (200 ms each) while the list is held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.phase("waiting-a").as_deref(), Some("Queued"));
    assert!(
        h.k8s.get::<Job>(NS, "waiting-a-kics").is_none(),
        "admitted while what runs in {TEAM} was unknown"
    );

    // Listed: the slot is seen taken; once that scan ends, the waiting one starts.
    slow_list.release();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.phase("waiting-a").as_deref(), Some("Queued"));
    h.k8s
        .set_job_status(TEAM, running_job, &JobState::Succeeded)
        .unwrap();
    h.until("the waiting request's Job", |h| {
        h.k8s.get::<Job>(NS, "waiting-a-kics").is_some()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_request_deleted_and_made_again_under_the_same_name_runs_anew_with_its_own_check_run() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    h.until("in progress", |h| {
        history(h, SR) == ["queued", "in_progress"]
    })
    .await
    .unwrap();
    let first_uid = h.request(SR).unwrap().metadata.uid.unwrap();
    // The garbage collector is slow: the finished Job outlives its deleted owner for a while.
    let gc = h.k8s.hold(Controller::GarbageCollector);
    Api::<ScanRequest>::namespaced(h.k8s.client(), NS)
        .delete(SR, &DeleteParams::default())
        .await
        .unwrap();
    h.until("gone", |h| h.request(SR).is_none()).await.unwrap();
    // The finalizer deleted its finished Job itself, not leaving it to the collector.
    assert!(
        h.k8s.get::<Job>(NS, JOB).is_none(),
        "the finished Job outlived its request"
    );
    h.create(&sample_request()).await.unwrap();
    h.until("the new request's Job", |h| {
        h.k8s.get::<Job>(NS, JOB).is_some_and(|job| {
            job["metadata"]["ownerReferences"][0]["uid"].as_str() != Some(first_uid.as_str())
        })
    })
    .await
    .unwrap();
    drop(gc);
    h.until("running with a run of its own", |h| {
        h.phase(SR).as_deref() == Some("Running") && h.github.check_runs().len() == 2
    })
    .await
    .unwrap();
    let runs = h.github.check_runs();
    assert_eq!(
        runs[0].history,
        ["queued", "in_progress", "completed/cancelled"],
        "the first request's run is never reopened"
    );
    assert_eq!(runs[1].history, ["queued"]);
    assert_ne!(runs[0].external_id, runs[1].external_id);
    assert_eq!(
        h.request(SR).unwrap().status.unwrap().scanners[0].attempts,
        1
    );
}

#[tokio::test]
async fn a_queued_request_whose_policy_is_deleted_is_cancelled_and_frees_its_place() {
    let mut other = kics_policy();
    other.metadata.name = Some("team-b-iac".to_owned());
    let mut h = OperatorHarness::start(vec![kics_policy(), other])
        .await
        .unwrap();
    h.max_running = 1;
    h.start_operator().unwrap();
    h.create(&request("sr-running", 'a')).await.unwrap();
    h.until("the first Job", |h| {
        h.k8s.get::<Job>(NS, "sr-running-kics").is_some()
    })
    .await
    .unwrap();
    // Waiting behind it: one request of the other policy, then one of the same.
    let mut orphan = request("sr-orphan", 'b');
    orphan.spec.policy_ref.name = "team-b-iac".to_owned();
    h.create(&orphan).await.unwrap();
    h.until("the orphan queued", |h| {
        h.phase("sr-orphan").as_deref() == Some("Queued")
    })
    .await
    .unwrap();
    h.k8s.advance_clock(Duration::from_secs(5));
    h.create(&request("sr-next", 'c')).await.unwrap();
    h.until("the next queued", |h| {
        h.phase("sr-next").as_deref() == Some("Queued")
    })
    .await
    .unwrap();
    Api::<ScanPolicy>::namespaced(h.k8s.client(), NS)
        .delete("team-b-iac", &DeleteParams::default())
        .await
        .unwrap();
    h.until("the orphan cancelled", |h| {
        h.phase("sr-orphan").as_deref() == Some("Cancelled")
            && history(h, "sr-orphan").last().map(String::as_str) == Some("completed/cancelled")
    })
    .await
    .unwrap();
    let run = h
        .github
        .check_runs()
        .into_iter()
        .find(|r| r.external_id.contains("sr-orphan"))
        .unwrap();
    assert_eq!(
        run.title.as_deref(),
        Some(
            "Cancelled: ScanPolicy gatehouse-scans/team-b-iac was deleted before the scan started"
        )
    );
    // The slot frees: the next request starts, not held behind the orphan.
    h.k8s
        .set_job_status(NS, "sr-running-kics", &JobState::Succeeded)
        .unwrap();
    h.until("the next Job", |h| {
        h.k8s.get::<Job>(NS, "sr-next-kics").is_some()
    })
    .await
    .unwrap();
    assert!(h.k8s.get::<Job>(NS, "sr-orphan-kics").is_none());
}

#[tokio::test]
async fn one_scanner_the_cluster_refuses_fails_alone_and_the_others_run() {
    let mut policy = kics_policy();
    let mut bad = policy.spec.scanners[0].clone();
    bad.name = "bad".to_owned();
    bad.resources = Some(serde_json::from_value(json!({"limits": {"cpu": "lots"}})).unwrap());
    policy.spec.scanners.insert(0, bad);
    let mut h = OperatorHarness::start(vec![policy]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the good scanner's Job", |h| {
        h.k8s.get::<Job>(NS, JOB).is_some()
    })
    .await
    .unwrap();
    h.until("the bad scanner concluded", |h| {
        h.github.check_runs().iter().any(|r| {
            r.name == "gatehouse/bad"
                && r.history.last().map(String::as_str) == Some("completed/failure")
        })
    })
    .await
    .unwrap();
    let runs = h.github.check_runs();
    let bad_run = runs.iter().find(|r| r.name == "gatehouse/bad").unwrap();
    let title = bad_run.title.clone().unwrap();
    assert!(
        title.starts_with("Could not start the scan: failed to create Job"),
        "{title}"
    );
    assert!(
        !title.contains("ErrorResponse") && !title.contains("Status {"),
        "{title}"
    );
    let kics_run = runs.iter().find(|r| r.name == "gatehouse/kics").unwrap();
    assert_eq!(kics_run.history, ["queued"]);
    assert_eq!(h.phase(SR).as_deref(), Some("Running"));
    // And the policy says what is wrong with it.
    h.until("the policy invalid", |h| {
        h.k8s.get::<ScanPolicy>(NS, "acme-iac").is_some_and(|p| {
            p["status"]["conditions"][0]["reason"] == "Invalid"
                && p["status"]["conditions"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("spec.scanners[0].resources.limits.cpu"))
        })
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_request_stopped_between_its_status_write_and_its_first_check_run_creates_none() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    // Its first status write is served, and the answer held: meanwhile ingest stops it (a
    // newer commit of the pull request).
    let mut written = h
        .k8s
        .pause_next_answer("PATCH", &format!("/scanrequests/{SR}/status"));
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    written.arrived().await.unwrap();
    let stop = StopRequest::Superseded {
        head_sha: "9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2ab9f1c2".to_owned(),
        by: None,
    };
    Api::<ScanRequest>::namespaced(h.k8s.client(), NS)
        .patch(
            SR,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {STOP: stop.to_annotation()}}})),
        )
        .await
        .unwrap();
    written.release();
    h.until("superseded", |h| {
        h.phase(SR).as_deref() == Some("Superseded")
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.github.check_runs().is_empty(),
        "a run created after the stop would be newer than the live scan's: {:#?}",
        h.github.check_runs()
    );
}

#[tokio::test]
async fn a_request_made_again_after_its_finalizer_was_removed_by_hand_replaces_the_old_job() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("the Job", |h| h.k8s.get::<Job>(NS, JOB).is_some())
        .await
        .unwrap();
    h.k8s.set_job_status(NS, JOB, &JobState::Succeeded).unwrap();
    let first_uid = h.request(SR).unwrap().metadata.uid.unwrap();
    // With the operator down, someone clears the finalizer and deletes the request; the
    // garbage collector has not removed its finished Job yet.
    h.crash_operator();
    let gc = h.k8s.hold(Controller::GarbageCollector);
    let api = Api::<ScanRequest>::namespaced(h.k8s.client(), NS);
    api.patch(
        SR,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    api.delete(SR, &DeleteParams::default()).await.unwrap();
    assert!(h.request(SR).is_none());
    h.create(&sample_request()).await.unwrap();
    h.start_operator().unwrap();
    h.until("a Job of the new request", |h| {
        h.k8s.get::<Job>(NS, JOB).is_some_and(|job| {
            job["metadata"]["ownerReferences"][0]["uid"].as_str() != Some(first_uid.as_str())
        })
    })
    .await
    .unwrap();
    drop(gc);
    h.until("running", |h| h.phase(SR).as_deref() == Some("Running"))
        .await
        .unwrap();
    let status = h.request(SR).unwrap().status.unwrap();
    assert_eq!(status.scanners[0].conclusion, None);
}

#[tokio::test]
async fn a_second_run_a_slow_create_left_behind_is_concluded_with_the_first() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.create(&sample_request()).await.unwrap();
    h.until("queued", |h| history(h, SR) == ["queued"])
        .await
        .unwrap();
    // A create that timed out lands at GitHub after the operator looked for it and made its
    // own: the same name and external_id on the commit, still queued.
    let first = h.github.check_runs()[0].clone();
    let body = json!({
        "name": first.name,
        "head_sha": first.head_sha,
        "external_id": first.external_id,
        "status": "queued",
    })
    .to_string();
    let answer = gatehouse_tests::http::request(
        h.github.addr(),
        "POST",
        "/repos/Codertocat/Hello-World/check-runs",
        &[
            ("authorization", "token ghs_fake1"),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.text());
    h.k8s
        .set_job_status(
            NS,
            JOB,
            &JobState::Failed {
                reason: "DeadlineExceeded".to_owned(),
                message: "deadline".to_owned(),
            },
        )
        .unwrap();
    h.until("both runs concluded", |h| {
        let runs = h.github.check_runs();
        runs.len() == 2
            && runs
                .iter()
                .all(|r| r.history.last().map(String::as_str) == Some("completed/timed_out"))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_request_whose_new_policy_the_cache_has_not_seen_yet_waits_instead_of_being_cancelled() {
    let mut h = OperatorHarness::start(vec![kics_policy()]).await.unwrap();
    h.start_operator().unwrap();
    h.until("the policy ready", |h| {
        h.k8s
            .get::<ScanPolicy>(NS, "acme-iac")
            .is_some_and(|p| p["status"]["conditions"][0]["status"] == "True")
    })
    .await
    .unwrap();
    // The operator's policy watch lags: a policy made now reaches its cache late.
    let stall = h.k8s.stall_watches("scanpolicies");
    let mut newer = kics_policy();
    newer.metadata.name = Some("team-c".to_owned());
    newer.metadata.resource_version = None;
    Api::<ScanPolicy>::namespaced(h.k8s.client(), NS)
        .create(&kube::api::PostParams::default(), &newer)
        .await
        .unwrap();
    let mut r = request("sr-new-policy", 'd');
    r.spec.policy_ref.name = "team-c".to_owned();
    h.create(&r).await.unwrap();
    h.until("decided", |h| h.phase("sr-new-policy").is_some())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.phase("sr-new-policy").as_deref(), Some("Queued"));
    stall.release();
    h.until("its Job", |h| {
        h.k8s.get::<Job>(NS, "sr-new-policy-kics").is_some()
    })
    .await
    .unwrap();
}

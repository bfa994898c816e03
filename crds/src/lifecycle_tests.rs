// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::scanrequest::{PolicyRef, PullRequest, Repository, ScanRequestStatus, Trigger};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

/// A ScanRequest of pull request 42 for `sha` on `main`, from a `pull_request` event at
/// `updated_at`.
fn request(name: &str, sha: &str, updated_at: Option<&str>) -> ScanRequest {
    let spec = ScanRequestSpec {
        repository: Repository {
            owner: "acme".into(),
            name: "widgets".into(),
            id: 7,
        },
        installation_id: 1,
        pull_request: PullRequest {
            number: 42,
            head_sha: sha.into(),
            head_ref: "feature".into(),
            base_ref: "main".into(),
            fork: false,
            draft: false,
            author: "octocat".into(),
            author_association: "MEMBER".into(),
            updated_at: updated_at.map(str::to_owned),
        },
        trigger: Trigger {
            event: "pull_request".into(),
            action: Some("synchronize".into()),
            delivery_id: format!("delivery-{name}"),
            sender: "octocat".into(),
        },
        policy_ref: PolicyRef {
            name: "acme".into(),
        },
        scanners: None,
        approval: None,
    };
    let mut request = ScanRequest::new(name, spec);
    request.metadata.namespace = Some("scans".into());
    request
}

#[allow(clippy::unnecessary_wraps)] // reads as the optional field it fills
fn at(second: u32) -> Option<&'static str> {
    Some(Box::leak(
        format!("2026-11-23T10:00:{second:02}Z").into_boxed_str(),
    ))
}

fn with_phase(mut request: ScanRequest, phase: ScanPhase) -> ScanRequest {
    request.status = Some(ScanRequestStatus {
        phase: Some(phase),
        ..ScanRequestStatus::default()
    });
    request
}

fn stopped(mut request: ScanRequest) -> ScanRequest {
    request.metadata.annotations = Some(
        [(
            STOP.to_owned(),
            StopRequest::Cancelled {
                message: "closed".into(),
            }
            .to_annotation(),
        )]
        .into(),
    );
    request
}

fn approved(mut request: ScanRequest, sha: &str) -> ScanRequest {
    request.spec.approval = Some(Approval {
        approver: "maintainer".into(),
        sha: sha.into(),
        comment_id: Some(99),
    });
    request.spec.trigger.event = "issue_comment".into();
    request
}

fn names(stops: &[(ScanRef, StopRequest)]) -> Vec<&str> {
    stops.iter().map(|(r, _)| r.name.as_str()).collect()
}

fn scans(requests: &[ScanRequest]) -> Vec<Scan<'_>> {
    requests.iter().map(Scan::of).collect()
}

#[test]
fn a_newer_head_supersedes_the_older_unfinished_scan_and_names_itself() {
    let requests = [request("a", A, at(1)), request("b", B, at(2))];
    let stops = settle(&scans(&requests), None).unwrap();
    assert_eq!(names(&stops), ["a"]);
    assert_eq!(
        stops[0].1,
        StopRequest::Superseded {
            head_sha: B.into(),
            by: Some(ScanRef {
                namespace: "scans".into(),
                name: "b".into()
            })
        }
    );
}

#[test]
fn a_force_push_back_to_an_earlier_commit_makes_that_commit_the_head_again() {
    // A, then B, then A again: the first A was superseded; the new A governs, B stops.
    let first_a = stopped(request("a1", A, at(1)));
    let requests = [first_a, request("b", B, at(2)), request("a2", A, at(3))];
    let stops = settle(&scans(&requests), None).unwrap();
    assert_eq!(names(&stops), ["b"]);
    assert!(matches!(&stops[0].1, StopRequest::Superseded { by: Some(r), .. } if r.name == "a2"));
}

#[test]
fn an_older_commit_delivered_late_stops_itself_not_the_head() {
    let requests = [request("b", B, at(2)), request("a-late", A, at(1))];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-late"]);
}

#[test]
fn a_finished_head_still_stops_a_late_older_delivery_and_finished_scans_are_never_stopped() {
    let requests = [
        with_phase(request("b", B, at(2)), ScanPhase::Succeeded),
        request("a-late", A, at(1)),
        with_phase(request("c-old", C, at(0)), ScanPhase::Failed),
    ];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-late"]);
}

#[test]
fn triggers_in_the_same_second_or_without_a_time_need_githubs_head() {
    let tied = [request("a", A, at(5)), request("b", B, at(5))];
    assert_eq!(settle(&scans(&tied), None), Err(NeedHead));
    let untimed = [request("a", A, None), request("b", B, at(5))];
    assert_eq!(settle(&scans(&untimed), None), Err(NeedHead));
    // GitHub says B is the head.
    let head = Head {
        sha: B.into(),
        base_ref: "main".into(),
    };
    assert_eq!(names(&settle(&scans(&tied), Some(&head)).unwrap()), ["a"]);
    // GitHub says neither (a newer head not delivered yet, or GitHub's answer lags): nothing
    // stops until that head's own trigger settles the pull request.
    let head = Head {
        sha: C.into(),
        base_ref: "main".into(),
    };
    assert_eq!(settle(&scans(&tied), Some(&head)), Ok(Vec::new()));
}

#[test]
fn one_commit_scanned_under_a_new_base_supersedes_the_scan_under_the_old_base() {
    let mut moved = request("a-release", A, at(2));
    moved.spec.pull_request.base_ref = "release".into();
    moved.metadata.namespace = Some("release-scans".into());
    let requests = [request("a-main", A, at(1)), moved];
    let stops = settle(&scans(&requests), None).unwrap();
    assert_eq!(names(&stops), ["a-main"]);
    assert!(
        matches!(&stops[0].1, StopRequest::Superseded { by: Some(r), .. } if r.namespace == "release-scans")
    );
}

#[test]
fn of_several_scans_of_the_head_the_approved_one_governs_then_an_explicit_then_the_latest() {
    let waiting = request("a-waiting", A, at(1));
    let approval = approved(request("a-approved", A, at(1)), A);
    let requests = [waiting, approval];
    assert_eq!(
        names(&settle(&scans(&requests), None).unwrap()),
        ["a-waiting"]
    );

    let mut rerun = request("a-rerun", A, at(1));
    rerun.spec.trigger.event = "check_run".into();
    let requests = [request("a", A, at(1)), rerun];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a"]);

    // Two scans of one trigger made by two consumers at once: one governs, the same for both.
    let mut first = request("a-1", A, at(1));
    first.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-23T10:00:01Z".parse().unwrap(),
    ));
    let mut second = request("a-2", A, at(1));
    second.metadata.creation_timestamp = first.metadata.creation_timestamp.clone();
    let requests = [second, first];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-1"]);
}

#[test]
fn a_rerun_of_some_scanners_leaves_the_scan_of_the_others_running() {
    let mut kics = request("a-kics", A, at(1));
    kics.spec.trigger.event = "issue_comment".into();
    kics.spec.scanners = Some(vec!["kics".into()]);
    let requests = [request("a", A, at(1)), kics.clone()];
    assert_eq!(settle(&scans(&requests), None), Ok(Vec::new()));
    // A later re-run of every scanner replaces both.
    let mut all = request("a-all", A, at(1));
    all.spec.trigger.event = "check_suite".into();
    all.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-23T10:00:09Z".parse().unwrap(),
    ));
    let requests = [request("a", A, at(1)), kics, all];
    let stops = settle(&scans(&requests), None).unwrap();
    assert_eq!(names(&stops), ["a", "a-kics"]);
    assert!(stops.iter().all(
        |(_, s)| matches!(s, StopRequest::Superseded { by: Some(by), .. } if by.name == "a-all")
    ));
}

#[test]
fn merge_queue_scans_neither_stop_nor_are_stopped_by_the_pull_requests_scans() {
    let mut queued = request("mq", C, None);
    queued.spec.trigger.event = "merge_group".into();
    let requests = [request("a", A, at(1)), queued, request("b", B, at(2))];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a"]);
    assert_eq!(names(&cancel(&scans(&requests), "closed")), ["a", "b"]);
}

#[test]
fn closing_cancels_every_unstopped_unfinished_scan() {
    let requests = [
        request("a", A, at(1)),
        stopped(request("b", B, at(2))),
        with_phase(request("c", C, at(3)), ScanPhase::Succeeded),
    ];
    let stops = cancel(&scans(&requests), "pull request closed");
    assert_eq!(names(&stops), ["a"]);
    assert_eq!(stops[0].1.phase(), ScanPhase::Cancelled);
}

#[test]
fn a_new_trigger_is_covered_by_an_unstopped_scan_of_its_commit_and_base_unless_explicit() {
    let requests = [request("a", A, at(1))];
    let listed = scans(&requests);
    let again = request("a-ready", A, at(2));
    assert_eq!(
        covering(&again.spec, &listed).map(|r| r.name.as_str()),
        Some("a")
    );
    let mut rerun = request("a-rerun", A, at(2));
    rerun.spec.trigger.event = "check_suite".into();
    assert_eq!(covering(&rerun.spec, &listed), None);
    // An approval is not covered by a scan without one: it takes over.
    let approval = approved(request("a-ok", A, at(2)), A);
    let mut ok = approval.spec.clone();
    ok.trigger.event = "pull_request".into();
    assert_eq!(covering(&ok, &listed), None);
    // A stopped scan covers nothing: the force-push back creates a new one.
    let requests = [stopped(request("a", A, at(1)))];
    assert_eq!(covering(&again.spec, &scans(&requests)), None);
}

#[test]
fn an_approval_covers_only_the_full_sha_it_names() {
    let ok = approved(request("a", A, at(1)), A);
    assert!(approval_covers(&ok.spec));
    let other = approved(request("a", A, at(1)), B);
    assert!(!approval_covers(&other.spec));
    let prefix = approved(request("a", A, at(1)), &A[..7]);
    assert!(!approval_covers(&prefix.spec));
    assert!(!approval_covers(&request("a", A, at(1)).spec));
    assert!(is_full_sha(A) && is_full_sha(&"f".repeat(64)));
    assert!(!is_full_sha(&A[..39]) && !is_full_sha(&A.to_uppercase()));
}

#[test]
fn a_rerun_finds_the_approval_of_its_commit_among_the_pull_requests_scans() {
    let requests = [
        stopped(approved(request("a-ok", A, at(1)), A)),
        request("b", B, at(2)),
    ];
    let listed = scans(&requests);
    assert_eq!(
        approval_for(&listed, A).map(|a| a.approver.as_str()),
        Some("maintainer")
    );
    assert!(approval_for(&listed, B).is_none());
}

#[test]
fn stop_requests_round_trip_and_an_unreadable_one_still_stops() {
    let stop = StopRequest::Superseded {
        head_sha: B.into(),
        by: Some(ScanRef {
            namespace: "scans".into(),
            name: "b".into(),
        }),
    };
    let mut meta = ObjectMeta {
        annotations: Some([(STOP.to_owned(), stop.to_annotation())].into()),
        ..ObjectMeta::default()
    };
    assert_eq!(StopRequest::of(&meta), Some(stop));
    meta.annotations = Some([(STOP.to_owned(), "yes please".to_owned())].into());
    assert!(matches!(
        StopRequest::of(&meta),
        Some(StopRequest::Cancelled { .. })
    ));
    assert_eq!(StopRequest::of(&ObjectMeta::default()), None);
}

#[test]
fn a_closed_pull_request_admits_only_triggers_after_the_close() {
    let closed = PullRequestState {
        open: false,
        at: "2026-11-23T10:00:05Z".into(),
    };
    assert!(!admits(Some(&closed), at(4)));
    assert!(!admits(Some(&closed), at(5)));
    assert!(admits(Some(&closed), at(6)));
    assert!(!admits(Some(&closed), None));
    let open = PullRequestState {
        open: true,
        at: "2026-11-23T10:00:05Z".into(),
    };
    assert!(admits(Some(&open), at(1)));
    assert!(admits(None, None));
}

#[test]
fn only_githubs_own_time_format_orders_triggers() {
    assert!(is_github_time("2019-05-15T15:20:33Z"));
    for text in [
        "2019-05-15T15:20:33.5Z",
        "2019-05-15T15:20:33+00:00",
        "2019-05-15 15:20:33Z",
        "2019-05-15T15:20:3Z",
        "",
    ] {
        assert!(!is_github_time(text), "{text}");
    }
}

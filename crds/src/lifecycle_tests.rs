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
            base_sha: None,
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

/// The request with an approval of `sha` (its trigger unchanged: approval and explicitness are
/// ranked apart).
fn approved(mut request: ScanRequest, sha: &str) -> ScanRequest {
    request.spec.approval = Some(Approval {
        approver: "maintainer".into(),
        sha: sha.into(),
        comment_id: Some(99),
    });
    request
}

fn created(mut request: ScanRequest, second: u32) -> ScanRequest {
    request.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            format!("2026-11-23T11:00:{second:02}Z").parse().unwrap(),
        ));
    request
}

fn certain(sha: &str) -> Head {
    Head {
        sha: sha.into(),
        base_ref: "main".into(),
        certain: true,
    }
}

fn from_github(sha: &str) -> Head {
    Head {
        sha: sha.into(),
        base_ref: "main".into(),
        certain: false,
    }
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
    // GitHub says A (the first listed, created and named) or B: its answer decides.
    assert_eq!(
        names(&settle(&scans(&tied), Some(&from_github(B))).unwrap()),
        ["a"]
    );
    assert_eq!(
        names(&settle(&scans(&tied), Some(&from_github(A))).unwrap()),
        ["b"]
    );
    // GitHub says neither (a newer head not delivered yet, or GitHub's answer lags): nothing
    // stops until that head's own trigger settles the pull request.
    assert_eq!(settle(&scans(&tied), Some(&from_github(C))), Ok(Vec::new()));
}

#[test]
fn the_recorded_latest_trigger_decides_over_the_scans_times() {
    // A at 1, B at 2, then A again at 3, covered by the first A's scan (no new scan): B's times
    // say B, the recorded trigger says A.
    let requests = [request("a", A, at(1)), request("b", B, at(2))];
    assert_eq!(
        names(&settle(&scans(&requests), Some(&certain(A))).unwrap()),
        ["b"]
    );
    // A recorded head with no scan (its trigger was skipped: a draft, a base no policy covers)
    // stops every other scan.
    let stops = settle(&scans(&requests), Some(&certain(C))).unwrap();
    assert_eq!(names(&stops), ["a", "b"]);
    assert!(matches!(&stops[0].1, StopRequest::Superseded { head_sha, by: None } if head_sha == C));
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
    // Each pair is built so every later key would pick the other one: the approved scan is
    // neither explicit, nor the latest created, nor last by name.
    let approval = created(approved(request("a-1", A, at(1)), A), 1);
    let mut explicit_later = created(request("a-9", A, at(1)), 9);
    explicit_later.spec.trigger.event = "check_run".into();
    let requests = [approval, explicit_later];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-9"]);

    // An explicit request governs over a later-created, later-named change trigger.
    let mut rerun = created(request("a-1", A, at(1)), 1);
    rerun.spec.trigger.event = "check_run".into();
    let requests = [rerun, created(request("a-9", A, at(1)), 9)];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-9"]);

    // The latest created governs over a later name.
    let requests = [
        created(request("a-1", A, at(1)), 5),
        created(request("a-9", A, at(1)), 1),
    ];
    assert_eq!(names(&settle(&scans(&requests), None).unwrap()), ["a-9"]);

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
    assert_eq!(
        names(&cancel(&scans(&requests), "closed", None, false)),
        ["a", "b"]
    );
}

#[test]
fn closing_cancels_every_unstopped_unfinished_scan_from_before_the_close() {
    let requests = [
        request("a", A, at(1)),
        stopped(request("b", B, at(2))),
        with_phase(request("c", C, at(3)), ScanPhase::Succeeded),
        request("a-same-second", A, at(5)),
        request("a-reopened", A, at(6)),
        request("a-untimed", A, None),
    ];
    let stops = cancel(&scans(&requests), "pull request closed", at(5), false);
    assert_eq!(names(&stops), ["a", "a-same-second", "a-untimed"]);
    assert_eq!(stops[0].1.phase(), ScanPhase::Cancelled);
    // A reopen recorded in the close's second: the scans of that second are the reopen's.
    let stops = cancel(&scans(&requests), "pull request closed", at(5), true);
    assert_eq!(names(&stops), ["a", "a-untimed"]);
}

#[test]
fn a_new_trigger_is_covered_by_an_unstopped_scan_of_its_commit_and_base_unless_explicit() {
    let requests = [request("a", A, at(1))];
    let listed = scans(&requests);
    let again = request("a-ready", A, at(2));
    assert_eq!(
        covering(&again.spec, &listed, None).map(|r| r.name.as_str()),
        Some("a")
    );
    let mut rerun = request("a-rerun", A, at(2));
    rerun.spec.trigger.event = "check_suite".into();
    assert_eq!(covering(&rerun.spec, &listed, None), None);
    // An approval is not covered by a scan without one: it takes over.
    let ok = approved(request("a-ok", A, at(2)), A);
    assert_eq!(covering(&ok.spec, &listed, None), None);
    // A reopen gets a scan of its own.
    let mut reopen = request("a-reopen", A, at(2));
    reopen.spec.trigger.action = Some("reopened".into());
    assert_eq!(covering(&reopen.spec, &listed, None), None);
    // A stopped scan covers nothing: the force-push back creates a new one.
    let requests = [stopped(request("a", A, at(1)))];
    assert_eq!(covering(&again.spec, &scans(&requests), None), None);
}

#[test]
fn a_scan_covers_only_its_lane_its_scanners_and_triggers_after_the_last_close() {
    let again = request("a-ready", A, at(4));
    // A merge queue scan of the same commit and base is the queue's.
    let mut queued = request("mq", A, None);
    queued.spec.trigger.event = "merge_group".into();
    assert_eq!(covering(&again.spec, &scans(&[queued]), None), None);
    // A scan of one scanner does not cover a trigger for all of them.
    let mut kics = request("a-kics", A, at(1));
    kics.spec.scanners = Some(vec!["kics".into()]);
    assert_eq!(covering(&again.spec, &scans(&[kics]), None), None);
    // A scan from before the last close is the close's to stop (it may be stopping it now).
    let requests = [request("a", A, at(1))];
    assert_eq!(covering(&again.spec, &scans(&requests), at(2)), None);
    assert!(covering(&again.spec, &scans(&[request("a", A, at(3))]), at(2)).is_some());
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
        approval_for(&listed, A, "scans", "acme").map(|a| a.approver.as_str()),
        Some("maintainer")
    );
    assert!(approval_for(&listed, B, "scans", "acme").is_none());
    // Another policy's approval met another bar: not carried over.
    assert!(approval_for(&listed, A, "release-scans", "acme").is_none());
    assert!(approval_for(&listed, A, "scans", "strict").is_none());
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

#[test]
fn a_head_older_than_the_newest_live_trigger_may_not_order_the_scans() {
    let requests = [
        request("a", "aaa", at(1)),
        request("b", "bbb", at(5)),
        // Stopped scans do not count, however new.
        stopped(request("c", "ccc", at(9))),
    ];
    let scans = scans(&requests);
    assert_eq!(newest_trigger(&scans), at(5));
    assert!(is_current(at(5), &scans));
    assert!(is_current(at(6), &scans));
    assert!(!is_current(at(4), &scans));
    assert!(
        !is_current(None, &scans),
        "a head without a time is not known to be current"
    );
    // Without live triggers with a time, any head may order the scans.
    let untimed = [request("d", "ddd", None)];
    assert!(is_current(None, &self::scans(&untimed)));
}

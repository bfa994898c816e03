//! Which finished ScanRequests are deleted: those older than the policy's `maxAgeHours` (counted
//! from creation) and those beyond the newest `keepPerPullRequest` finished ones of their pull
//! request. A plain function of data; the controller deletes (the finalizer then runs) and
//! requeues a kept request until its age runs out. Requests still running are never counted or
//! deleted.

use std::time::Duration;

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::Retention;
use gatehouse_crds::scanrequest::ScanPhase;

/// What to do with a finished ScanRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delete it, for this reason.
    Delete(String),
    /// Keep it; look again after this long.
    KeepFor(Duration),
}

fn finished(request: &ScanRequest) -> bool {
    request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(ScanPhase::is_terminal)
}

fn created(request: &ScanRequest) -> i64 {
    request
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| t.0.as_second())
}

/// The verdict for the finished request `me`, given the other requests of the same namespace
/// (`others`, any pull request; those of other pull requests are ignored), the retention of its
/// policy, and the time now (Unix seconds).
pub fn verdict(
    me: &ScanRequest,
    others: &[&ScanRequest],
    retention: &Retention,
    now: i64,
) -> Verdict {
    let max_age = retention.max_age_hours.max(1).saturating_mul(3600);
    let age = now.saturating_sub(created(me));
    if age >= max_age {
        return Verdict::Delete(format!(
            "finished and older than the policy's retention of {} hours",
            retention.max_age_hours
        ));
    }
    let same_pr = |r: &&&ScanRequest| {
        r.spec.repository.id == me.spec.repository.id
            && r.spec.pull_request.number == me.spec.pull_request.number
            && r.metadata.deletion_timestamp.is_none()
            && finished(r)
    };
    // Newer first: later creation, then name for a stable order.
    let key = |r: &ScanRequest| (std::cmp::Reverse(created(r)), r.metadata.name.clone());
    let mine = key(me);
    let newer = others
        .iter()
        .filter(same_pr)
        .filter(|r| r.metadata.name != me.metadata.name && key(r) < mine)
        .count();
    let keep = usize::try_from(retention.keep_per_pull_request.max(1)).unwrap_or(usize::MAX);
    // The newest scan with a result is the pull request's latest word (and carries what a
    // re-run inherits, such as an approval): stopped re-runs created after it never push it out.
    let result = |r: &ScanRequest| {
        matches!(
            r.status.as_ref().and_then(|s| s.phase),
            Some(ScanPhase::Succeeded | ScanPhase::Failed)
        )
    };
    let newest_result = result(me)
        && !others
            .iter()
            .filter(same_pr)
            .any(|r| r.metadata.name != me.metadata.name && result(r) && key(r) < mine);
    if newer >= keep && !newest_result {
        return Verdict::Delete(format!(
            "{newer} newer finished ScanRequests of this pull request are kept (keepPerPullRequest {})",
            retention.keep_per_pull_request
        ));
    }
    Verdict::KeepFor(Duration::from_secs(
        u64::try_from(max_age.saturating_sub(age))
            .unwrap_or(0)
            .max(1),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_support;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(name: &str, created: &str, phase: ScanPhase) -> ScanRequest {
        let mut r = test_support::request();
        r.metadata.name = Some(name.to_owned());
        r.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        r.status = Some(gatehouse_crds::ScanRequestStatus {
            phase: Some(phase),
            ..Default::default()
        });
        r
    }

    fn seconds(text: &str) -> i64 {
        text.parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    }

    #[test]
    fn a_finished_request_older_than_the_policys_age_is_deleted_and_a_younger_one_waits_its_turn() {
        let retention = Retention {
            max_age_hours: 2,
            keep_per_pull_request: 5,
        };
        let me = at("a", "2026-11-23T10:00:00Z", ScanPhase::Succeeded);
        assert!(matches!(
            verdict(&me, &[], &retention, seconds("2026-11-23T12:00:00Z")),
            Verdict::Delete(_)
        ));
        assert_eq!(
            verdict(&me, &[], &retention, seconds("2026-11-23T11:00:00Z")),
            Verdict::KeepFor(Duration::from_secs(3600))
        );
    }

    #[test]
    fn only_the_newest_finished_requests_of_a_pull_request_are_kept_and_running_ones_do_not_count()
    {
        let retention = Retention {
            max_age_hours: 100,
            keep_per_pull_request: 2,
        };
        let old = at("old", "2026-11-23T10:00:00Z", ScanPhase::Superseded);
        let mid = at("mid", "2026-11-23T10:01:00Z", ScanPhase::Failed);
        let new = at("new", "2026-11-23T10:02:00Z", ScanPhase::Succeeded);
        let running = at("running", "2026-11-23T10:03:00Z", ScanPhase::Running);
        let mut other_pr = at("other", "2026-11-23T10:04:00Z", ScanPhase::Succeeded);
        other_pr.spec.pull_request.number = 99;
        let all = [&old, &mid, &new, &running, &other_pr];
        let now = seconds("2026-11-23T10:05:00Z");
        assert!(matches!(
            verdict(&old, &all, &retention, now),
            Verdict::Delete(_)
        ));
        assert!(matches!(
            verdict(&mid, &all, &retention, now),
            Verdict::KeepFor(_)
        ));
        assert!(matches!(
            verdict(&new, &all, &retention, now),
            Verdict::KeepFor(_)
        ));
    }

    #[test]
    fn the_newest_request_with_a_result_is_kept_whatever_stopped_reruns_came_after_it() {
        let retention = Retention {
            max_age_hours: 100,
            keep_per_pull_request: 1,
        };
        let head = at("head", "2026-11-23T10:00:00Z", ScanPhase::Succeeded);
        let rerun = at("rerun", "2026-11-23T10:01:00Z", ScanPhase::Superseded);
        let all = [&head, &rerun];
        let now = seconds("2026-11-23T10:05:00Z");
        assert!(matches!(
            verdict(&head, &all, &retention, now),
            Verdict::KeepFor(_)
        ));
        let newer_result = at("newer", "2026-11-23T10:02:00Z", ScanPhase::Failed);
        let all = [&head, &rerun, &newer_result];
        assert!(matches!(
            verdict(&head, &all, &retention, now),
            Verdict::Delete(_)
        ));
    }
}

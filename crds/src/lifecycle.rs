//! The scan lifecycle contract: which ScanRequest governs a pull request's head commit, which
//! are stopped and why, how two triggers of one pull request are ordered, and whether an approval
//! covers a commit. Pure functions over typed data, shared by the webhook's ingest role (which
//! creates ScanRequests and writes stop requests) and the operator (which reads them and is the
//! only writer of status).
//!
//! - A ScanRequest is **stopped** once it carries a [`StopRequest`] (written once, by ingest,
//!   never removed) or its phase is `Cancelled`/`Superseded`. A stopped ScanRequest is never
//!   revived: a later trigger for its commit creates a new one.
//! - Scans belong to a [`Lane`]: a pull request's own commits, or its merge queue commits, which
//!   never stop each other.
//! - Triggers are ordered by the pull request's `updatedAt` (whole seconds). Where that does not
//!   order two scans (a tie, or a missing time), nothing is superseded blindly: [`settle`] asks
//!   for the pull request's current head as GitHub reports it.
//! - An [`Approval`] covers exactly the full commit SHA it names; it lives in the immutable spec.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::scanrequest::{Approval, ScanPhase, ScanRequest, ScanRequestSpec};

/// Annotation carrying a ScanRequest's [`StopRequest`] (JSON). Written once, never removed.
pub const STOP: &str = "gatehouse.dev/stop";

/// A ScanRequest by namespace and name (scans of one pull request may live in several
/// namespaces, when a base change moves it under another policy).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScanRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ScanRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a ScanRequest must stop: the request ingest writes and the operator carries out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum StopRequest {
    /// Another commit (or another scan of this one) is the pull request's head now.
    #[serde(rename_all = "camelCase")]
    Superseded {
        /// The head commit that replaces this scan's.
        head_sha: String,
        /// The ScanRequest that governs the head, when there is one yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ScanRef>,
    },
    /// Stopped for a reason of its own (the pull request was closed).
    Cancelled {
        /// Why, for people.
        message: String,
    },
}

impl StopRequest {
    /// The stop request of an object, if it has one. An annotation that does not parse (written
    /// by hand) still stops the scan: a stop request is never ignored.
    pub fn of(meta: &ObjectMeta) -> Option<StopRequest> {
        let text = crate::labels::annotation(meta, STOP)?;
        Some(
            serde_json::from_str(text).unwrap_or_else(|_| StopRequest::Cancelled {
                message: format!("unreadable stop request {text:?}"),
            }),
        )
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The phase a ScanRequest stopped for this reason ends in.
    pub fn phase(&self) -> ScanPhase {
        match self {
            StopRequest::Superseded { .. } => ScanPhase::Superseded,
            StopRequest::Cancelled { .. } => ScanPhase::Cancelled,
        }
    }
}

/// Which sequence of scans a ScanRequest belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The pull request's own head commits.
    PullRequest,
    /// Commits GitHub's merge queue builds (`merge_group` events).
    MergeQueue,
}

/// The lane of a ScanRequest.
pub fn lane(spec: &ScanRequestSpec) -> Lane {
    if spec.trigger.event == "merge_group" {
        Lane::MergeQueue
    } else {
        Lane::PullRequest
    }
}

/// Whether a trigger asked for this scan explicitly (a Re-run button, a `/gatehouse` command)
/// rather than a change of the pull request.
pub fn explicit(spec: &ScanRequestSpec) -> bool {
    matches!(
        spec.trigger.event.as_str(),
        "check_run" | "check_suite" | "issue_comment"
    )
}

/// A full commit SHA: 40 lowercase hex digits, or 64 in SHA-256 repositories.
pub fn is_full_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text` is a time as GitHub writes `updated_at` (`2026-11-23T10:00:05Z`: UTC, whole
/// seconds), the only form whose text order is time order. Other forms are not used to order.
pub fn is_github_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Whether the spec's approval covers its commit: it names exactly the head SHA, in full.
pub fn approval_covers(spec: &ScanRequestSpec) -> bool {
    spec.approval.as_ref().is_some_and(|a| {
        is_full_sha(&a.sha) && a.sha == spec.pull_request.head_sha && !a.approver.is_empty()
    })
}

/// A ScanRequest as the lifecycle sees it.
#[derive(Clone, Debug)]
pub struct Scan<'a> {
    /// Where it is.
    pub reference: ScanRef,
    /// What it scans.
    pub spec: &'a ScanRequestSpec,
    /// Stopped: a stop request, a `Cancelled`/`Superseded` phase, or being deleted.
    pub stopped: bool,
    /// Finished with a result (`Succeeded`/`Failed`): history, never stopped.
    pub finished: bool,
    /// `metadata.creationTimestamp` (RFC 3339), to order scans of one commit.
    pub created: Option<String>,
}

impl<'a> Scan<'a> {
    /// The lifecycle's view of a ScanRequest.
    pub fn of(request: &'a ScanRequest) -> Scan<'a> {
        let phase = request.status.as_ref().and_then(|s| s.phase);
        Scan {
            reference: ScanRef {
                namespace: request.metadata.namespace.clone().unwrap_or_default(),
                name: request.metadata.name.clone().unwrap_or_default(),
            },
            spec: &request.spec,
            stopped: crate::labels::annotation(&request.metadata, STOP).is_some()
                || matches!(phase, Some(ScanPhase::Cancelled | ScanPhase::Superseded))
                || request.metadata.deletion_timestamp.is_some(),
            finished: matches!(phase, Some(ScanPhase::Succeeded | ScanPhase::Failed)),
            created: request
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
        }
    }

    /// The commit and base this scan is for.
    fn target(&self) -> (&str, &str) {
        (
            &self.spec.pull_request.head_sha,
            &self.spec.pull_request.base_ref,
        )
    }
}

/// An approval of `sha` recorded on a ScanRequest of the pull request (stopped or not) under the
/// same policy (`namespace`/`policy`): what a re-run of an approved commit carries over, so it
/// needs no second approval. An approval under another policy met another policy's bar, so it is
/// not carried over.
pub fn approval_for<'a>(
    scans: &[Scan<'a>],
    sha: &str,
    namespace: &str,
    policy: &str,
) -> Option<&'a Approval> {
    scans
        .iter()
        .filter(|s| {
            s.spec.pull_request.head_sha == sha
                && s.reference.namespace == namespace
                && s.spec.policy_ref.name == policy
                && approval_covers(s.spec)
        })
        .find_map(|s| s.spec.approval.as_ref())
}

/// The scan that already covers a new trigger, if any: not stopped, same lane, commit and base,
/// running every scanner the new one would, approved when the new one is, and triggered after
/// the pull request's last close (`last_closed`; a scan from before it is the close's to stop).
/// Explicit requests (re-runs, rescans) are never covered: someone asked for a new scan. Nor is
/// a reopen: a close processed after it (late, or in the same second) stops the scans from
/// before the close, so the reopen needs a scan of its own.
pub fn covering<'s>(
    new: &ScanRequestSpec,
    scans: &'s [Scan<'_>],
    last_closed: Option<&str>,
) -> Option<&'s ScanRef> {
    if explicit(new) || new.trigger.action.as_deref() == Some("reopened") {
        return None;
    }
    scans
        .iter()
        .find(|s| {
            !s.stopped
                && lane(s.spec) == lane(new)
                && s.spec.pull_request.head_sha == new.pull_request.head_sha
                && s.spec.pull_request.base_ref == new.pull_request.base_ref
                && runs_all_of(s.spec, new)
                && (!approval_covers(new) || approval_covers(s.spec))
                && last_closed.is_none_or(|closed| {
                    s.spec
                        .pull_request
                        .updated_at
                        .as_deref()
                        .is_some_and(|at| at > closed)
                })
        })
        .map(|s| &s.reference)
}

/// The latest trigger time among the live scans of the pull request's own lane.
pub fn newest_trigger<'s>(scans: &[Scan<'s>]) -> Option<&'s str> {
    scans
        .iter()
        .filter(|s| !s.stopped && lane(s.spec) == Lane::PullRequest)
        .filter_map(|s| s.spec.pull_request.updated_at.as_deref())
        .max()
}

/// Whether a head known as of `at` (a recorded trigger, or GitHub's `updated_at`) may order
/// these scans: not older than the newest live trigger, which it would otherwise undo. Without
/// live triggers with a time, any head may.
pub fn is_current(at: Option<&str>, scans: &[Scan<'_>]) -> bool {
    newest_trigger(scans).is_none_or(|newest| at.is_some_and(|at| at >= newest))
}

/// The pull request's current head, as known from outside the scans' own times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Head commit SHA.
    pub sha: String,
    /// Base branch.
    pub base_ref: String,
    /// Known for certain (the latest trigger ingest recorded): every other scan stops even when
    /// the head has no scan (its trigger was skipped: a draft, a base no policy covers). Not
    /// certain (GitHub's answer, which may lag behind the deliveries): a head no live scan is for
    /// stops nothing.
    pub certain: bool,
}

/// [`settle`] cannot order the scans from their triggers: ask GitHub for the head and call
/// again with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedHead;

/// The stop requests that leave the head of a pull request scanned once: every unstopped,
/// unfinished scan of the pull request lane that is not for the head commit (and base), and
/// every such scan of the head commit that a higher-ranked scan of the head replaces (ranked:
/// approved first, then explicit requests, then the latest created, then by name; it replaces
/// only scans whose scanners it all runs). Merge queue scans are
/// left alone. `head` is GitHub's answer when [`NeedHead`] was returned; a head no live scan is
/// for stops nothing.
pub fn settle(
    scans: &[Scan<'_>],
    head: Option<&Head>,
) -> Result<Vec<(ScanRef, StopRequest)>, NeedHead> {
    let live: Vec<&Scan<'_>> = scans
        .iter()
        .filter(|s| !s.stopped && lane(s.spec) == Lane::PullRequest)
        .collect();
    let mut targets: Vec<(&str, &str)> = live.iter().map(|s| s.target()).collect();
    targets.sort_unstable();
    targets.dedup();
    let head_target: Option<(String, String)> = match (targets.as_slice(), head) {
        ([], _) => return Ok(Vec::new()),
        (_, Some(head)) => Some((head.sha.clone(), head.base_ref.clone())),
        ([only], None) => Some((only.0.to_owned(), only.1.to_owned())),
        (_, None) => Some(newest_target(&live).ok_or(NeedHead)?),
    };
    let (head_sha, head_base) = head_target.unwrap_or_default();
    if !head.is_some_and(|h| h.certain)
        && !targets.contains(&(head_sha.as_str(), head_base.as_str()))
    {
        // GitHub names a head no live scan is for yet: its own trigger settles the pull request
        // when it comes (GitHub's answer may also lag behind the deliveries). Stop nothing.
        return Ok(Vec::new());
    }
    let mut of_head: Vec<&&Scan<'_>> = live
        .iter()
        .filter(|s| s.target() == (head_sha.as_str(), head_base.as_str()))
        .collect();
    of_head.sort_by(|a, b| governing_key(b).cmp(&governing_key(a)));
    let governing = of_head.first().map(|s| s.reference.clone());
    let mut stops = Vec::new();
    for scan in live.iter().filter(|s| !s.finished) {
        let by = if scan.target() == (head_sha.as_str(), head_base.as_str()) {
            // Of the head's own scans, one stops only for a higher-ranked one that runs all its
            // scanners: a one-scanner re-run leaves the other scanners' scan alone.
            let key = governing_key(scan);
            match of_head
                .iter()
                .find(|g| governing_key(g) > key && runs_all_of(g.spec, scan.spec))
            {
                Some(g) => Some(g.reference.clone()),
                None => continue,
            }
        } else {
            governing.clone()
        };
        stops.push((
            scan.reference.clone(),
            StopRequest::Superseded {
                head_sha: head_sha.clone(),
                by,
            },
        ));
    }
    Ok(stops)
}

/// Whether `a` runs every scanner `b` runs (`None`: all of the policy's).
fn runs_all_of(a: &ScanRequestSpec, b: &ScanRequestSpec) -> bool {
    match (&a.scanners, &b.scanners) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|s| a.contains(s)),
    }
}

/// The target whose latest trigger is strictly newer than every other target's, if the
/// triggers' times tell.
fn newest_target(live: &[&Scan<'_>]) -> Option<(String, String)> {
    let mut latest: Vec<((&str, &str), &str)> = Vec::new();
    for scan in live {
        let at = scan.spec.pull_request.updated_at.as_deref()?;
        match latest.iter_mut().find(|(t, _)| *t == scan.target()) {
            Some((_, seen)) if at > *seen => *seen = at,
            Some(_) => {}
            None => latest.push((scan.target(), at)),
        }
    }
    latest.sort_by(|a, b| b.1.cmp(a.1));
    match latest.as_slice() {
        [first, second, ..] if first.1 == second.1 => None,
        [first, ..] => Some((first.0.0.to_owned(), first.0.1.to_owned())),
        [] => None,
    }
}

fn governing_key<'s>(scan: &'s Scan<'_>) -> (bool, bool, &'s str, &'s str) {
    (
        approval_covers(scan.spec),
        explicit(scan.spec),
        scan.created.as_deref().unwrap_or(""),
        scan.reference.name.as_str(),
    )
}

/// The stop requests for a pull request closed at `closed_at`: every unstopped, unfinished scan
/// of its own commits (merge queue scans are the queue's) triggered before the close. A scan
/// triggered in the very second of the close counts as before it, unless `reopened_same_second`
/// (ingest recorded a reopen in that second: those scans are the reopen's). A scan without a
/// time is stopped; so is every scan when the close has no time.
pub fn cancel(
    scans: &[Scan<'_>],
    message: &str,
    closed_at: Option<&str>,
    reopened_same_second: bool,
) -> Vec<(ScanRef, StopRequest)> {
    let before_close = |s: &Scan<'_>| match (s.spec.pull_request.updated_at.as_deref(), closed_at) {
        (Some(at), Some(closed)) => at < closed || (at == closed && !reopened_same_second),
        _ => true,
    };
    scans
        .iter()
        .filter(|s| !s.stopped && !s.finished && lane(s.spec) == Lane::PullRequest)
        .filter(|s| before_close(s))
        .map(|s| {
            (
                s.reference.clone(),
                StopRequest::Cancelled {
                    message: message.to_owned(),
                },
            )
        })
        .collect()
}

/// Whether a pull request is open or closed, and as of when (its `updatedAt` in the event that
/// said so).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestState {
    /// Open (opened or reopened) or closed.
    pub open: bool,
    /// The pull request's `updatedAt` in that event.
    pub at: String,
}

/// Whether a trigger may start a scan of the pull request given its last known state: not once
/// it was closed, unless the trigger is later than the close (it was reopened since).
pub fn admits(state: Option<&PullRequestState>, updated_at: Option<&str>) -> bool {
    match state {
        None => true,
        Some(s) if s.open => true,
        Some(s) => updated_at.is_some_and(|t| t > s.at.as_str()),
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

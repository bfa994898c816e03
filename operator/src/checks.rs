//! What each scanner's GitHub Check Run should show, from the ScanRequest's status: a plain
//! function of data. The controller compares [`Desired::key`] with what it last reported
//! (`status.scanners[].reported`) and tells GitHub only about changes, so each transition is
//! posted once.
//!
//! `queued` while the request waits for admission, `in_progress` from the moment the scanner's
//! pod is active, `completed` with `skipped`, `cancelled`, `timed_out`, `action_required` or
//! `failure` where the outcome does not depend on findings. A Job that succeeded stays
//! `in_progress` until its published result concludes it.

use gatehouse_crds::ScanRequest;
use gatehouse_crds::external_id::ExternalId;
use gatehouse_crds::naming;
use gatehouse_crds::scanrequest::{Conclusion, ScanPhase, ScannerPhase, ScannerStatus};

/// A check run's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting.
    Queued,
    /// Running, since `started_at` (RFC 3339).
    InProgress {
        /// When the scanner's pod started.
        started_at: String,
    },
    /// Done.
    Completed {
        /// Its conclusion.
        conclusion: Conclusion,
        /// When (RFC 3339).
        completed_at: String,
    },
}

/// Who tells GitHub about a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The controller, from the request's status.
    Controller,
    /// The results consumer, which holds the findings (annotations, the full summary); the
    /// controller posts such a conclusion itself only when the request is going away.
    Results,
}

/// What one check run should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// State and times.
    pub state: State,
    /// Output title.
    pub title: String,
    /// Output summary (Markdown).
    pub summary: String,
    /// Who posts it.
    pub owner: Owner,
}

impl Desired {
    /// A short key of the state, recorded once GitHub has it: a change of key is a change to
    /// report.
    pub fn key(&self) -> String {
        match &self.state {
            State::Queued => "queued".to_owned(),
            State::InProgress { .. } => "in_progress".to_owned(),
            State::Completed { conclusion, .. } => {
                format!("completed/{}", conclusion.as_github())
            }
        }
    }
}

/// The `external_id` of a scanner's check run.
pub fn external_id(request: &ScanRequest, scanner: &str) -> String {
    ExternalId {
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        scan_request: request.metadata.name.clone().unwrap_or_default(),
        pull_request: request.spec.pull_request.number,
        scanner: scanner.to_owned(),
        uid: request.metadata.uid.clone(),
    }
    .to_string()
}

fn time(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>, now: &str) -> String {
    // GitHub wants `YYYY-MM-DDTHH:MM:SSZ`.
    t.map_or_else(
        || now.to_owned(),
        |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// What the check run of `scanner` should show, or `None` when it has nothing to show yet (a
/// request not yet decided). `now` is an RFC 3339 time for transitions without a recorded one.
pub fn desired(request: &ScanRequest, scanner: &ScannerStatus, now: &str) -> Option<Desired> {
    let status = request.status.as_ref()?;
    let phase = status.phase?;
    let sha = &request.spec.pull_request.head_sha;
    if let Some(conclusion) = scanner.conclusion {
        let message = scanner.message.clone().unwrap_or_default();
        let first_line = message.lines().next().unwrap_or_default().to_owned();
        let (title, summary) = match conclusion {
            Conclusion::ActionRequired => (
                "Approval needed to scan this fork's commit".to_owned(),
                format!(
                    "This pull request comes from a fork, and the policy scans a fork's commit \
                     only once someone with the required permission on the repository approves \
                     that exact commit. To approve `{}`, comment:\n\n```\n/gatehouse ok-to-scan {sha}\n```\n\n\
                     A new push needs a new approval.",
                    naming::short_sha(sha)
                ),
            ),
            Conclusion::Skipped => ("Skipped".to_owned(), format!("Not run: {message}.")),
            Conclusion::Cancelled => (
                capitalise(&first_line),
                format!(
                    "{}.\n\nNothing was concluded for commit `{sha}`.",
                    capitalise(&message)
                ),
            ),
            Conclusion::TimedOut => ("Timed out".to_owned(), format!("{}.", capitalise(&message))),
            Conclusion::Failure if scanner.phase == ScannerPhase::Errored => {
                let mut lines = message.lines();
                let head = lines.next().unwrap_or_default();
                let rest: Vec<&str> = lines.collect();
                let mut summary = format!("{}.", capitalise(head));
                if !rest.is_empty() {
                    summary.push_str("\n\nLast lines of the scanner's output:\n\n```\n");
                    summary.push_str(&rest.join("\n").replace("```", "'''"));
                    summary.push_str("\n```");
                }
                (capitalise(head), summary)
            }
            // Success, neutral and failure from findings: the results consumer posts them with
            // their annotations and full summary.
            _ => return Some(from_results(conclusion, first_line, scanner, sha, now)),
        };
        return Some(Desired {
            state: State::Completed {
                conclusion,
                completed_at: time(scanner.finished_at.as_ref(), now),
            },
            title,
            summary,
            owner: Owner::Controller,
        });
    }
    // A retry after its pod had started is still in progress for the pull request.
    let retrying = scanner.started_at.is_some()
        && matches!(scanner.phase, ScannerPhase::Pending | ScannerPhase::Queued);
    match scanner.phase {
        _ if retrying => Some(Desired {
            state: State::InProgress {
                started_at: time(scanner.started_at.as_ref(), now),
            },
            title: "Scanning".to_owned(),
            summary: format!(
                "Scanning commit `{sha}`: attempt {} failed for a reason of the cluster, not of the code; trying again.",
                scanner.attempts.max(1)
            ),
            owner: Owner::Controller,
        }),
        ScannerPhase::Running | ScannerPhase::Completed => Some(Desired {
            state: State::InProgress {
                started_at: time(scanner.started_at.as_ref(), now),
            },
            title: "Scanning".to_owned(),
            summary: format!(
                "Scanning commit `{sha}` (attempt {}).",
                scanner.attempts.max(1)
            ),
            owner: Owner::Controller,
        }),
        ScannerPhase::Pending | ScannerPhase::Queued
            if matches!(phase, ScanPhase::Queued | ScanPhase::Running) =>
        {
            Some(Desired {
                state: State::Queued,
                title: "Queued".to_owned(),
                summary: if phase == ScanPhase::Queued {
                    "Waiting for a free slot under the policy's concurrency limits.".to_owned()
                } else {
                    "Waiting for the scan pod to start.".to_owned()
                },
                owner: Owner::Controller,
            })
        }
        _ => None,
    }
}

/// A conclusion the results consumer posts (the controller only when the request goes away).
fn from_results(
    conclusion: Conclusion,
    title: String,
    scanner: &ScannerStatus,
    sha: &str,
    now: &str,
) -> Desired {
    Desired {
        state: State::Completed {
            conclusion,
            completed_at: time(scanner.finished_at.as_ref(), now),
        },
        title: if title.is_empty() {
            "Concluded".to_owned()
        } else {
            title
        },
        summary: format!(
            "Concluded from the scanner's findings on commit `{sha}`; the full report could not \
             be posted before the ScanRequest went away."
        ),
        owner: Owner::Results,
    }
}

/// Whether GitHub was told what every scanner's check run should show now: a request that is
/// not may be deleted only after it is (else its check run stays open forever).
pub fn fully_reported(request: &ScanRequest) -> bool {
    let now = "1970-01-01T00:00:00Z";
    request.status.as_ref().is_none_or(|status| {
        status.scanners.iter().all(|scanner| {
            desired(request, scanner, now)
                .is_none_or(|d| scanner.reported.as_deref() == Some(d.key().as_str()))
        })
    })
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::decide;
    use crate::test_support::{self, now};
    use gatehouse_crds::ScanRequestStatus;

    const NOW: &str = "2026-11-23T10:00:09Z";

    fn with(status: ScanRequestStatus) -> ScanRequest {
        let mut request = test_support::request();
        request.status = Some(status);
        request
    }

    fn first() -> ScanRequestStatus {
        let request = test_support::request();
        let policy = test_support::kics_policy();
        let snapshot = decide::snapshot(&request, &policy).unwrap();
        decide::first_status(&request, &policy, snapshot, None, &now()).unwrap()
    }

    #[test]
    fn a_queued_request_shows_queued_and_a_running_scanner_in_progress_since_its_start() {
        let status = first();
        let request = with(status.clone());
        let queued = desired(&request, &status.scanners[0], NOW).unwrap();
        assert_eq!(queued.key(), "queued");
        let mut running = status.clone();
        running.phase = Some(ScanPhase::Running);
        running.scanners[0].phase = ScannerPhase::Running;
        running.scanners[0].started_at = Some(now());
        let request = with(running.clone());
        let shown = desired(&request, &running.scanners[0], NOW).unwrap();
        assert_eq!(
            shown.state,
            State::InProgress {
                started_at: "2026-11-23T10:00:05Z".to_owned()
            }
        );
        // A finished Job waits for its findings: still in progress, same key, nothing to post.
        running.scanners[0].phase = ScannerPhase::Completed;
        let request = with(running.clone());
        assert_eq!(
            desired(&request, &running.scanners[0], NOW).unwrap().key(),
            "in_progress"
        );
        // A retry after the pod had started stays in progress rather than going back to queued.
        running.scanners[0].phase = ScannerPhase::Pending;
        let request = with(running.clone());
        assert_eq!(
            desired(&request, &running.scanners[0], NOW).unwrap().key(),
            "in_progress"
        );
    }

    #[test]
    fn a_scanner_error_is_a_failure_titled_with_its_exit_code_and_its_output_in_a_code_block() {
        let mut status = first();
        status.phase = Some(ScanPhase::Failed);
        status.scanners[0].phase = ScannerPhase::Errored;
        status.scanners[0].conclusion = Some(Conclusion::Failure);
        status.scanners[0].message =
            Some("scanner error: exit code 126\nboom\n```injected fence".to_owned());
        let request = with(status.clone());
        let shown = desired(&request, &status.scanners[0], NOW).unwrap();
        assert_eq!(shown.key(), "completed/failure");
        assert_eq!(shown.title, "Scanner error: exit code 126");
        assert!(
            shown.summary.contains("```\nboom\n'''injected fence\n```"),
            "{}",
            shown.summary
        );
    }

    #[test]
    fn conclusions_that_depend_on_findings_are_left_to_the_results_step() {
        let mut status = first();
        status.phase = Some(ScanPhase::Succeeded);
        status.scanners[0].phase = ScannerPhase::Completed;
        status.scanners[0].conclusion = Some(Conclusion::Success);
        let request = with(status.clone());
        let desired = desired(&request, &status.scanners[0], NOW).unwrap();
        assert_eq!(desired.owner, Owner::Results);
        assert_eq!(desired.key(), "completed/success");
    }

    #[test]
    fn the_external_id_names_the_namespace_request_pull_request_scanner_and_uid() {
        let request = test_support::request();
        assert_eq!(
            external_id(&request, "kics"),
            "gatehouse-scans/hello-world-pr2-ec26c3e-016643a9/2/kics/5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50"
        );
    }
}

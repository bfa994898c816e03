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

/// What one check run should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// State and times.
    pub state: State,
    /// Output title.
    pub title: String,
    /// Output summary (Markdown).
    pub summary: String,
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
            // Success, neutral and failure from findings belong to the results reporter.
            _ => return None,
        };
        return Some(Desired {
            state: State::Completed {
                conclusion,
                completed_at: time(scanner.finished_at.as_ref(), now),
            },
            title,
            summary,
        });
    }
    match scanner.phase {
        ScannerPhase::Running | ScannerPhase::Completed => Some(Desired {
            state: State::InProgress {
                started_at: time(scanner.started_at.as_ref(), now),
            },
            title: "Scanning".to_owned(),
            summary: format!(
                "Scanning commit `{sha}` (attempt {}).",
                scanner.attempts.max(1)
            ),
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
            })
        }
        _ => None,
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

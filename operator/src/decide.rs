//! What a ScanRequest's status should be, from what the operator observes: the policy (once),
//! the pull request's changed files (once, when a scanner filters by path), the stop request,
//! the scan Jobs and the pods of failed ones. Plain functions of data, no client and no async;
//! the controller applies what they return.
//!
//! Per scanner: `Pending` (no Job yet: not admitted, waiting for approval, or a retry to start),
//! `Queued` (its Job exists, no pod active yet), `Running`, `Completed` (the Job succeeded: the
//! report is published and its conclusion comes from the results), `Errored` (timed out, scanner
//! error, retries exhausted), `Skipped`, `Cancelled`. Retries are bounded and only for failures
//! of the infrastructure (eviction, OOM kill, a lost Job, the checkout or report step), never
//! because of findings: findings never fail a scanner's process.

use gatehouse_crds::lifecycle::{self, StopRequest};
use gatehouse_crds::scanpolicy::{ForkMode, ScanPolicy, ScannerSpec};
use gatehouse_crds::scanrequest::{
    Conclusion, PolicySnapshot, ScanPhase, ScannerPhase, ScannerStatus,
};
use gatehouse_crds::severity::SeverityCounts;
use gatehouse_crds::{ScanRequest, ScanRequestStatus, naming};
use globset::{GlobBuilder, GlobSetBuilder};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Most Jobs started for one scanner of one ScanRequest (the first and two retries).
pub const MAX_ATTEMPTS: i32 = 3;

/// Condition types.
pub mod conditions {
    /// The request is valid and its policy found.
    pub const READY: &str = "Ready";
    /// The request holds a concurrency slot (or has held one).
    pub const ADMITTED: &str = "Admitted";
    /// Every scanner has a conclusion, or the request was stopped.
    pub const COMPLETED: &str = "Completed";
}

/// A ScanRequest that cannot be decided as it stands; it waits for a change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The request names a scanner its policy does not have.
    #[error("scanner {scanner:?} is not in ScanPolicy {policy:?}")]
    UnknownScanner {
        /// The scanner.
        scanner: String,
        /// The policy.
        policy: String,
    },
    /// The policy does not cover the request's repository or base branch: a hand-made request
    /// may not borrow another team's policy (or the App's access) for a repository it names.
    #[error(
        "ScanPolicy {policy:?} does not cover repository {repository} and base branch {base:?}"
    )]
    NotCovered {
        /// The policy.
        policy: String,
        /// `owner/name`.
        repository: String,
        /// The base branch.
        base: String,
    },
    /// A path glob of the policy does not compile (the policy's own validation should have
    /// refused it).
    #[error("scanner {scanner:?} has an invalid path glob {glob:?}")]
    BadGlob {
        /// The scanner.
        scanner: String,
        /// The glob.
        glob: String,
    },
}

impl Invalid {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::UnknownScanner { .. } => "UnknownScanner",
            Invalid::BadGlob { .. } => "InvalidPolicy",
            Invalid::NotCovered { .. } => "RepositoryNotCovered",
        }
    }
}

/// The snapshot of `policy` for `request`: the scanners it runs (all, or the subset it names, in
/// the policy's order) and the reporting options.
pub fn snapshot(request: &ScanRequest, policy: &ScanPolicy) -> Result<PolicySnapshot, Invalid> {
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    // The same matching selection uses (case-insensitive repositories, `!` exclusions); a
    // scanner's bad `paths` glob is not a coverage question (the policy's status says it).
    let compile = gatehouse_crds::selection::PatternList::compile;
    let covered = compile("spec.repositories", &policy.spec.repositories, true)
        .is_ok_and(|r| r.matches(&request.spec.repository.full_name()))
        && compile("spec.baseBranches", &policy.spec.base_branches, false)
            .is_ok_and(|b| b.matches(&request.spec.pull_request.base_ref));
    if !covered {
        return Err(Invalid::NotCovered {
            policy: policy_name,
            repository: request.spec.repository.full_name(),
            base: request.spec.pull_request.base_ref.clone(),
        });
    }
    let scanners: Vec<ScannerSpec> = match &request.spec.scanners {
        None => policy.spec.scanners.clone(),
        Some(names) => {
            if let Some(missing) = names.iter().find(|n| policy.spec.scanner(n).is_none()) {
                return Err(Invalid::UnknownScanner {
                    scanner: missing.clone(),
                    policy: policy_name,
                });
            }
            policy
                .spec
                .scanners
                .iter()
                .filter(|s| names.contains(&s.name))
                .cloned()
                .collect()
        }
    };
    Ok(PolicySnapshot {
        name: policy_name,
        generation: policy.metadata.generation,
        scanners,
        reporting: policy.spec.reporting.clone(),
    })
}

/// Whether deciding needs the pull request's changed files: some scanner filters by path.
pub fn needs_changed_files(snapshot: &PolicySnapshot) -> bool {
    snapshot.scanners.iter().any(|s| !s.paths.is_empty())
}

/// The files a pull request changes, as far as GitHub lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedFiles {
    /// Repository-relative paths (old and new names of renamed files).
    pub paths: Vec<String>,
    /// False when GitHub's list was cut short (it lists at most 3,000 files): then no scanner
    /// is skipped, since an unlisted file might match.
    pub complete: bool,
}

/// Whether `scanner` is skipped: it filters by path and no changed file matches. Globs match
/// case-sensitively, `*` within a path segment, `**` across. Unknown changes skip nothing.
pub fn skips(scanner: &ScannerSpec, changed: Option<&ChangedFiles>) -> Result<bool, Invalid> {
    if scanner.paths.is_empty() {
        return Ok(false);
    }
    let Some(changed) = changed.filter(|c| c.complete) else {
        return Ok(false);
    };
    let mut set = GlobSetBuilder::new();
    for glob in &scanner.paths {
        let compiled = GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|_| Invalid::BadGlob {
                scanner: scanner.name.clone(),
                glob: glob.clone(),
            })?;
        set.add(compiled);
    }
    let set = set.build().map_err(|_| Invalid::BadGlob {
        scanner: scanner.name.clone(),
        glob: scanner.paths.join(","),
    })?;
    Ok(!changed.paths.iter().any(|p| set.is_match(p)))
}

/// Whether the request waits for a person's approval: a fork under `RequireApproval` whose author
/// the policy does not trust, without an approval of exactly this head commit.
pub fn awaits_approval(request: &ScanRequest, policy: &ScanPolicy) -> bool {
    let pr = &request.spec.pull_request;
    pr.fork
        && policy.spec.forks == ForkMode::RequireApproval
        && !policy
            .spec
            .trusted
            .trusts(&pr.author, &pr.author_association)
        && !lifecycle::approval_covers(&request.spec)
}

/// The comment that approves scanning the request's head commit.
pub fn approval_command(request: &ScanRequest) -> String {
    format!(
        "/gatehouse ok-to-scan {}",
        request.spec.pull_request.head_sha
    )
}

/// The first status of a request: its snapshot, each scanner pending or skipped, and the phase it
/// waits in (AwaitingApproval, or Queued for admission). A fork the policy never scans concludes
/// every scanner `skipped`.
pub fn first_status(
    request: &ScanRequest,
    policy: &ScanPolicy,
    snapshot: PolicySnapshot,
    changed: Option<&ChangedFiles>,
    now: &Time,
) -> Result<ScanRequestStatus, Invalid> {
    let never_forks = request.spec.pull_request.fork && policy.spec.forks == ForkMode::Skip;
    let waits = awaits_approval(request, policy);
    let mut scanners = Vec::with_capacity(snapshot.scanners.len());
    for scanner in &snapshot.scanners {
        let mut status = pending(&scanner.name);
        if never_forks {
            conclude(
                &mut status,
                ScannerPhase::Skipped,
                Conclusion::Skipped,
                "the policy does not scan pull requests from forks",
                now,
            );
        } else if skips(scanner, changed)? {
            conclude(
                &mut status,
                ScannerPhase::Skipped,
                Conclusion::Skipped,
                &format!(
                    "no changed file matches the scanner's paths ({})",
                    scanner.paths.join(", ")
                ),
                now,
            );
        } else if waits {
            status.conclusion = Some(Conclusion::ActionRequired);
            status.message = Some(format!(
                "waiting for approval: someone with the policy's commands permission comments `{}`",
                approval_command(request)
            ));
        }
        scanners.push(status);
    }
    let mut status = ScanRequestStatus {
        commit: Some(naming::short_sha(&request.spec.pull_request.head_sha).to_owned()),
        scanners,
        policy: Some(snapshot),
        ..ScanRequestStatus::default()
    };
    set_condition(
        &mut status.conditions,
        conditions::READY,
        true,
        "Valid",
        "the request is valid and its policy found",
        now,
    );
    let phase = if waits && !never_forks {
        ScanPhase::AwaitingApproval
    } else {
        ScanPhase::Queued
    };
    status.phase = Some(phase);
    Ok(finish(status, request, now))
}

/// A pending entry for every scanner of a snapshot.
pub fn pending_scanners(snapshot: &PolicySnapshot) -> Vec<ScannerStatus> {
    snapshot.scanners.iter().map(|s| pending(&s.name)).collect()
}

/// The status once the Jobs cannot be started for a reason retrying will not fix (the API
/// refuses them, GitHub refuses the token): every scanner without a Job and a conclusion fails
/// with `message`.
pub fn could_not_start(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    message: &str,
    now: &Time,
) -> ScanRequestStatus {
    for scanner in &mut status.scanners {
        if scanner.job_name.is_none() && !concluded(scanner) {
            conclude(
                scanner,
                ScannerPhase::Errored,
                Conclusion::Failure,
                message,
                now,
            );
        }
    }
    finish(status, request, now)
}

/// The status once the Job of `scanner` proved impossible to create (the cluster refuses it for
/// good): that scanner fails with `message`, the others are untouched.
pub fn scanner_could_not_start(
    status: &mut ScanRequestStatus,
    scanner: &str,
    message: &str,
    now: &Time,
) {
    if let Some(s) = status
        .scanners
        .iter_mut()
        .find(|s| s.name == scanner && !concluded(s))
    {
        conclude(s, ScannerPhase::Errored, Conclusion::Failure, message, now);
    }
}

fn pending(name: &str) -> ScannerStatus {
    ScannerStatus {
        name: name.to_owned(),
        phase: ScannerPhase::Pending,
        job_name: None,
        check_run_id: None,
        attempts: 0,
        started_at: None,
        finished_at: None,
        conclusion: None,
        findings: None,
        message: None,
        new_findings: None,
        result_id: None,
        reported: None,
    }
}

fn conclude(
    scanner: &mut ScannerStatus,
    phase: ScannerPhase,
    conclusion: Conclusion,
    message: &str,
    now: &Time,
) {
    scanner.phase = phase;
    scanner.conclusion = Some(conclusion);
    scanner.message = Some(message.to_owned());
    if scanner.finished_at.is_none() {
        scanner.finished_at = Some(now.clone());
    }
}

/// Whether the scanner has its final conclusion (an approval wait is not final).
pub fn concluded(scanner: &ScannerStatus) -> bool {
    scanner.conclusion.is_some() && scanner.conclusion != Some(Conclusion::ActionRequired)
}

/// Whether the scanner holds a concurrency slot: its Job exists and has not finished.
pub fn active(scanner: &ScannerStatus) -> bool {
    matches!(scanner.phase, ScannerPhase::Queued | ScannerPhase::Running)
}

/// The status once the request is stopped: every scanner without a conclusion is cancelled, with
/// a pointer to what replaced it. Its Jobs are deleted by the caller.
pub fn stop(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    stop: &StopRequest,
    now: &Time,
) -> ScanRequestStatus {
    let message = match stop {
        StopRequest::Superseded { head_sha, by } => {
            status.superseded_by = by.as_ref().map(|b| b.name.clone());
            match by {
                Some(by) => format!(
                    "superseded by commit {} (ScanRequest {by})",
                    naming::short_sha(head_sha)
                ),
                None => format!("superseded by commit {}", naming::short_sha(head_sha)),
            }
        }
        StopRequest::Cancelled { message } => format!("cancelled: {message}"),
    };
    for scanner in &mut status.scanners {
        if !concluded(scanner) {
            conclude(
                scanner,
                ScannerPhase::Cancelled,
                Conclusion::Cancelled,
                &message,
                now,
            );
        }
    }
    status.phase = Some(stop.phase());
    status.message = Some(message);
    finish(status, request, now)
}

/// What happened to one Job, from its status and (for a failed one) its pod.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Created, no pod active yet.
    Waiting,
    /// A pod is active.
    Active {
        /// When the Job started.
        started: Option<Time>,
    },
    /// The Job succeeded: the report step published the result.
    Succeeded {
        /// When.
        finished: Option<Time>,
    },
    /// The Job ran past its deadline.
    TimedOut,
    /// The scanner exited with an error code.
    ScannerError {
        /// Its exit code.
        exit_code: i32,
        /// The last lines of its output (its termination message).
        output: String,
    },
    /// The infrastructure failed (eviction, OOM kill, a failed checkout or report step, a lost
    /// pod): worth another attempt.
    Infrastructure {
        /// What failed.
        reason: String,
    },
    /// A step of Gatehouse's refused its input for good (the checkout refused a hostile
    /// archive, exit 2): another attempt would refuse it again.
    Refused {
        /// Which step.
        step: String,
        /// Its message.
        message: String,
    },
}

fn condition_true(job: &Job, kind: &str) -> Option<(Option<String>, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// Classifies a Job, using its pod (if any is still there) to tell a scanner error from a failure
/// of the infrastructure.
pub fn job_outcome(job: &Job, pods: &[Pod]) -> JobOutcome {
    let status = job.status.clone().unwrap_or_default();
    // `SuccessCriteriaMet` (Kubernetes 1.31+) comes before `Complete`: the pod succeeded.
    if condition_true(job, "Complete").is_some()
        || condition_true(job, "SuccessCriteriaMet").is_some()
    {
        return JobOutcome::Succeeded {
            finished: status.completion_time,
        };
    }
    if let Some((reason, message)) =
        condition_true(job, "Failed").or_else(|| condition_true(job, "FailureTarget"))
    {
        if reason.as_deref() == Some("DeadlineExceeded") {
            return JobOutcome::TimedOut;
        }
        return failed_pod_outcome(pods).unwrap_or_else(|| JobOutcome::Infrastructure {
            reason: format!(
                "Job failed ({}{}) and its pod is gone",
                reason.as_deref().unwrap_or("no reason"),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        });
    }
    if status.active.unwrap_or(0) > 0 || status.ready.unwrap_or(0) > 0 {
        return JobOutcome::Active {
            started: status.start_time,
        };
    }
    JobOutcome::Waiting
}

fn failed_pod_outcome(pods: &[Pod]) -> Option<JobOutcome> {
    let pod = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))?;
    let status = pod.status.as_ref()?;
    if status.reason.as_deref() == Some("Evicted") {
        return Some(JobOutcome::Infrastructure {
            reason: format!(
                "the pod was evicted{}",
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        });
    }
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in statuses {
        let Some(terminated) = container.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if terminated.exit_code == 0 {
            continue;
        }
        if terminated.reason.as_deref() == Some("OOMKilled") && container.name == "report" {
            // The report step's memory goes with the report's size: another attempt would
            // read the same report.
            return Some(JobOutcome::Refused {
                step: container.name.clone(),
                message: "the report step ran out of memory reading the scanner's report"
                    .to_owned(),
            });
        }
        if terminated.reason.as_deref() == Some("OOMKilled") {
            return Some(JobOutcome::Infrastructure {
                reason: format!("step {:?} ran out of memory (OOMKilled)", container.name),
            });
        }
        if container.name == "scan" || container.name == crate::jobs::SCAN_BASE_STEP {
            let output = terminated.message.clone().unwrap_or_default();
            return Some(JobOutcome::ScannerError {
                exit_code: terminated.exit_code,
                output: if container.name == crate::jobs::SCAN_BASE_STEP {
                    format!("(while scanning the base commit for baseline mode)\n{output}")
                } else {
                    output
                },
            });
        }
        if container.name == "checkout" && terminated.exit_code == crate::agent::EXIT_REFUSED {
            return Some(JobOutcome::Refused {
                step: container.name.clone(),
                message: format!(
                    "the checkout step refused the repository: {}",
                    last_lines(terminated.message.as_deref().unwrap_or_default(), 5)
                ),
            });
        }
        return Some(JobOutcome::Infrastructure {
            reason: format!(
                "step {:?} failed with exit code {}{}",
                container.name,
                terminated.exit_code,
                terminated
                    .message
                    .as_deref()
                    .map(|m| format!(": {}", last_lines(m, 5)))
                    .unwrap_or_default()
            ),
        });
    }
    None
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// One match over the Job outcomes per scanner; split, the transitions would be scattered.
#[allow(clippy::too_many_lines)]
/// The status after observing the scan Jobs (`jobs`, each with the pods of its name), for a
/// request that is not stopped. Scanners whose Job is not found stay as they are if they never
/// had one; a Job lost while unfinished counts as an infrastructure failure.
pub fn observe(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    jobs: &[(Job, Vec<Pod>)],
    now: &Time,
) -> ScanRequestStatus {
    let timeouts: Vec<(String, i64)> = status
        .policy
        .iter()
        .flat_map(|p| {
            p.scanners
                .iter()
                .map(|s| (s.name.clone(), s.timeout_seconds))
        })
        .collect();
    for scanner in &mut status.scanners {
        if concluded(scanner) || scanner.phase == ScannerPhase::Completed {
            continue;
        }
        if scanner.job_name.is_none() {
            // A Job of the next attempt that exists already was created by a reconcile whose
            // status write was lost (a crash, or a reconcile of a stale cached copy): adopt it,
            // so its state is read instead of a second Job being asked for.
            let next = crate::jobs::job_name(
                request.metadata.name.as_deref().unwrap_or_default(),
                &scanner.name,
                scanner.attempts + 1,
            );
            if jobs
                .iter()
                .any(|(job, _)| job.metadata.name.as_deref() == Some(next.as_str()))
            {
                scanner.attempts += 1;
                scanner.job_name = Some(next);
                scanner.phase = ScannerPhase::Queued;
            }
        }
        let Some(job_name) = scanner.job_name.clone() else {
            continue;
        };
        let found = jobs
            .iter()
            .find(|(job, _)| job.metadata.name.as_deref() == Some(job_name.as_str()));
        let outcome = match found {
            Some((job, pods)) => job_outcome(job, pods),
            None if scanner.phase == ScannerPhase::Pending => continue,
            None => JobOutcome::Infrastructure {
                reason: format!("Job {job_name} disappeared before it finished"),
            },
        };
        match outcome {
            JobOutcome::Waiting => scanner.phase = ScannerPhase::Queued,
            JobOutcome::Active { started } => {
                scanner.phase = ScannerPhase::Running;
                if scanner.started_at.is_none() {
                    scanner.started_at = Some(started.unwrap_or_else(|| now.clone()));
                }
                scanner.message = Some(format!("Job {job_name} is running"));
            }
            JobOutcome::Succeeded { finished } => {
                scanner.phase = ScannerPhase::Completed;
                if scanner.started_at.is_none() {
                    scanner.started_at = Some(now.clone());
                }
                scanner.finished_at = Some(finished.unwrap_or_else(|| now.clone()));
                scanner.message = Some(format!(
                    "Job {job_name} finished; waiting for its published result"
                ));
            }
            JobOutcome::TimedOut => {
                let seconds = timeouts
                    .iter()
                    .find(|(n, _)| *n == scanner.name)
                    .map_or(0, |(_, s)| *s);
                conclude(
                    scanner,
                    ScannerPhase::Errored,
                    Conclusion::TimedOut,
                    &format!("timed out: the scan ran longer than its {seconds} s deadline"),
                    now,
                );
            }
            JobOutcome::ScannerError { exit_code, output } => {
                let tail = last_lines(&output, 20);
                conclude(
                    scanner,
                    ScannerPhase::Errored,
                    Conclusion::Failure,
                    &if tail.is_empty() {
                        format!("scanner error: exit code {exit_code}")
                    } else {
                        format!("scanner error: exit code {exit_code}\n{tail}")
                    },
                    now,
                );
            }
            JobOutcome::Refused { message, .. } => {
                conclude(
                    scanner,
                    ScannerPhase::Errored,
                    Conclusion::Failure,
                    &message,
                    now,
                );
            }
            JobOutcome::Infrastructure { reason } => {
                if scanner.attempts >= MAX_ATTEMPTS {
                    conclude(
                        scanner,
                        ScannerPhase::Errored,
                        Conclusion::Failure,
                        &format!("gave up after {} attempts: {reason}", scanner.attempts),
                        now,
                    );
                } else {
                    // Another attempt: a new Job (the failed one stays for people to inspect).
                    scanner.phase = ScannerPhase::Pending;
                    scanner.job_name = None;
                    scanner.message = Some(format!(
                        "attempt {} failed: {reason}; retrying",
                        scanner.attempts
                    ));
                }
            }
        }
    }
    if status.phase == Some(ScanPhase::Queued)
        && status.scanners.iter().any(|s| s.job_name.is_some())
    {
        // Its Jobs exist (an admission whose status write was lost): it holds its slot.
        return admitted(status, request, now);
    }
    finish(status, request, now)
}

/// The status once the request is admitted: the Jobs of its pending scanners are to be created.
pub fn admitted(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    now: &Time,
) -> ScanRequestStatus {
    set_condition(
        &mut status.conditions,
        conditions::ADMITTED,
        true,
        "Admitted",
        "a concurrency slot was free",
        now,
    );
    status.phase = Some(ScanPhase::Running);
    finish(status, request, now)
}

/// The scanners whose Job is to be created now (admitted request, no Job, no conclusion), with
/// the attempt number it will be.
pub fn jobs_to_create(status: &ScanRequestStatus) -> Vec<(String, i32)> {
    if !is_admitted(status) || status.phase.is_some_and(ScanPhase::is_terminal) {
        return Vec::new();
    }
    status
        .scanners
        .iter()
        .filter(|s| s.phase == ScannerPhase::Pending && s.job_name.is_none() && !concluded(s))
        .map(|s| (s.name.clone(), s.attempts + 1))
        .collect()
}

/// Records that the Job of `scanner`, attempt `attempt`, named `job_name`, exists.
pub fn job_created(status: &mut ScanRequestStatus, scanner: &str, attempt: i32, job_name: &str) {
    if let Some(s) = status.scanners.iter_mut().find(|s| s.name == scanner) {
        s.attempts = attempt;
        s.job_name = Some(job_name.to_owned());
        s.phase = ScannerPhase::Queued;
        s.message = Some(format!("Job {job_name} created (attempt {attempt})"));
    }
}

/// Whether the request has been admitted.
pub fn is_admitted(status: &ScanRequestStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::ADMITTED && c.status == "True")
}

/// The status of a request that will not start after all (its policy was deleted while it
/// waited): every scanner without a conclusion is cancelled with `message`.
pub fn cancel_unstarted(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    message: &str,
    now: &Time,
) -> ScanRequestStatus {
    for scanner in &mut status.scanners {
        if !concluded(scanner) {
            conclude(
                scanner,
                ScannerPhase::Cancelled,
                Conclusion::Cancelled,
                message,
                now,
            );
        }
    }
    status.phase = Some(ScanPhase::Cancelled);
    status.message = Some(message.to_owned());
    finish(status, request, now)
}

/// What a published result concluded for one scanner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concluded {
    /// Its conclusion.
    pub conclusion: Conclusion,
    /// Its title (the scanner's message).
    pub title: String,
    /// Every finding, by severity.
    pub findings: SeverityCounts,
    /// In baseline mode, the new ones.
    pub new_findings: Option<SeverityCounts>,
    /// The result's id.
    pub result_id: String,
    /// Whether the scanner produced no usable report.
    pub scanner_error: bool,
}

/// The status once `scanner`'s result is recorded: its conclusion, counts and result id, and
/// the request's totals and phase derived again.
pub fn record_result(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    scanner: &str,
    concluded: &Concluded,
    now: &Time,
) -> ScanRequestStatus {
    if let Some(s) = status.scanners.iter_mut().find(|s| s.name == scanner) {
        s.phase = ScannerPhase::Completed;
        s.conclusion = Some(concluded.conclusion);
        s.findings = (!concluded.scanner_error).then_some(concluded.findings);
        s.new_findings = concluded.new_findings;
        s.result_id = Some(concluded.result_id.clone());
        s.message = Some(concluded.title.clone());
        if s.finished_at.is_none() {
            s.finished_at = Some(now.clone());
        }
        if s.started_at.is_none() {
            s.started_at = s.finished_at.clone();
        }
    }
    // The request's totals: what decided each scanner (the new findings in baseline mode).
    let mut totals = SeverityCounts::default();
    let mut any = false;
    for s in &status.scanners {
        if let Some(counts) = s.new_findings.or(s.findings) {
            totals = totals.plus(&counts);
            any = true;
        }
    }
    status.findings = any.then_some(totals);
    finish(status, request, now)
}

/// The status once scanners whose Job succeeded waited longer than `timeout` for a result that
/// never came (a report step that could not reach Redis, a result lost with Redis): they fail,
/// so the check run never stays open.
pub fn overdue_results(
    mut status: ScanRequestStatus,
    request: &ScanRequest,
    timeout: std::time::Duration,
    now: &Time,
) -> ScanRequestStatus {
    let mut changed = false;
    for scanner in &mut status.scanners {
        let overdue = scanner.phase == ScannerPhase::Completed
            && scanner.conclusion.is_none()
            && scanner.finished_at.as_ref().is_some_and(|finished| {
                std::time::Duration::try_from(now.0.duration_since(finished.0))
                    .is_ok_and(|waited| waited > timeout)
            });
        if overdue {
            conclude(
                scanner,
                ScannerPhase::Errored,
                Conclusion::Failure,
                &format!(
                    "scanner error: the scan finished but its result never arrived (waited {} s; \
                     see the report step's log)",
                    timeout.as_secs()
                ),
                now,
            );
            changed = true;
        }
    }
    if changed {
        finish(status, request, now)
    } else {
        status
    }
}

/// The overall phase, conclusion and conditions derived again after scanners changed.
pub fn settle(status: ScanRequestStatus, request: &ScanRequest, now: &Time) -> ScanRequestStatus {
    finish(status, request, now)
}

/// How bad a conclusion is, for the overall one: the worst wins.
fn severity(conclusion: Conclusion) -> u8 {
    match conclusion {
        Conclusion::Skipped => 0,
        Conclusion::Success => 1,
        Conclusion::Neutral => 2,
        Conclusion::ActionRequired => 3,
        Conclusion::Cancelled => 4,
        Conclusion::TimedOut => 5,
        Conclusion::Failure => 6,
    }
}

/// Derives the overall phase, conclusion, message and conditions from the scanners.
fn finish(mut status: ScanRequestStatus, request: &ScanRequest, now: &Time) -> ScanRequestStatus {
    status.observed_generation = request.metadata.generation;
    let stopped = matches!(
        status.phase,
        Some(ScanPhase::Cancelled | ScanPhase::Superseded)
    );
    let all_concluded = !status.scanners.is_empty() && status.scanners.iter().all(concluded);
    if !stopped && all_concluded {
        let passed = status.scanners.iter().all(|s| {
            matches!(
                s.conclusion,
                Some(Conclusion::Success | Conclusion::Neutral | Conclusion::Skipped)
            )
        });
        status.phase = Some(if passed {
            ScanPhase::Succeeded
        } else {
            ScanPhase::Failed
        });
        status.message = Some(if passed {
            "every scanner passed or was skipped".to_owned()
        } else {
            let failed: Vec<String> = status
                .scanners
                .iter()
                .filter(|s| {
                    !matches!(
                        s.conclusion,
                        Some(Conclusion::Success | Conclusion::Neutral | Conclusion::Skipped)
                    )
                })
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.name,
                        s.message
                            .as_deref()
                            .unwrap_or("failed")
                            .lines()
                            .next()
                            .unwrap_or_default()
                    )
                })
                .collect();
            failed.join("; ")
        });
    } else if !stopped && status.phase == Some(ScanPhase::Running) {
        status.message = Some("scanning".to_owned());
    } else if status.phase == Some(ScanPhase::Queued) {
        status.message = Some("waiting for a concurrency slot".to_owned());
    } else if status.phase == Some(ScanPhase::AwaitingApproval) {
        status.message = Some(format!(
            "waiting for approval: `{}`",
            approval_command(request)
        ));
    }
    if all_concluded || stopped {
        status.conclusion = status
            .scanners
            .iter()
            .filter_map(|s| s.conclusion)
            .max_by_key(|c| severity(*c));
        if stopped && status.conclusion.is_none() {
            status.conclusion = Some(Conclusion::Cancelled);
        }
    }
    let (completed, reason) = match status.phase {
        Some(phase) if phase.is_terminal() => (true, format!("{phase:?}")),
        Some(phase) => (false, format!("{phase:?}")),
        None => (false, "Pending".to_owned()),
    };
    let message = status.message.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        conditions::COMPLETED,
        completed,
        &reason,
        &message,
        now,
    );
    if !is_admitted(&status) {
        let (reason, message) = match status.phase {
            Some(ScanPhase::AwaitingApproval) => ("AwaitingApproval", "waiting for approval"),
            Some(phase) if phase.is_terminal() => ("NotNeeded", "finished without running a Job"),
            _ => ("Queued", "waiting for a concurrency slot"),
        };
        set_condition(
            &mut status.conditions,
            conditions::ADMITTED,
            false,
            reason,
            message,
            now,
        );
    }
    status
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let status = if value { "True" } else { "False" };
    // Condition messages are limited to 32,768 bytes by the schema; keep them short.
    let message: String = message.chars().take(1024).collect();
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            status.clone_into(&mut existing.status);
            reason.clone_into(&mut existing.reason);
            existing.message = message;
        }
        None => conditions.push(Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: now.clone(),
            observed_generation: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::test_support::{self, now};
    use gatehouse_crds::scanrequest::Approval;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

    fn fork(mut request: ScanRequest) -> ScanRequest {
        request.spec.pull_request.fork = true;
        request.spec.pull_request.author = "outsider".to_owned();
        request.spec.pull_request.author_association = "CONTRIBUTOR".to_owned();
        request
    }

    fn first(
        request: &ScanRequest,
        policy: &ScanPolicy,
        changed: Option<&ChangedFiles>,
    ) -> ScanRequestStatus {
        let snap = snapshot(request, policy).unwrap();
        first_status(request, policy, snap, changed, &now()).unwrap()
    }

    fn job(name: &str, conditions: &[(&str, &str)], active: i32) -> Job {
        Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                active: Some(active),
                start_time: Some(now()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(kind, reason)| JobCondition {
                            type_: (*kind).to_owned(),
                            status: "True".to_owned(),
                            reason: Some((*reason).to_owned()),
                            message: Some("m".to_owned()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn failed_pod(container: &str, exit_code: i32, reason: Option<&str>, message: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Failed".to_owned()),
                init_container_statuses: Some(vec![ContainerStatus {
                    name: container.to_owned(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code,
                            reason: reason.map(str::to_owned),
                            message: Some(message.to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A running request whose kics Job (attempt `attempt`) exists.
    fn running(attempt: i32) -> (ScanRequest, ScanRequestStatus) {
        let request = test_support::request();
        let mut status = admitted(
            first(&request, &test_support::kics_policy(), None),
            &request,
            &now(),
        );
        let (scanner, next) = jobs_to_create(&status)[0].clone();
        assert_eq!(next, 1);
        job_created(&mut status, &scanner, attempt, "job-a");
        (request, status)
    }

    #[test]
    fn a_new_request_snapshots_its_policy_and_queues_every_scanner() {
        let request = test_support::request();
        let status = first(&request, &test_support::kics_policy(), None);
        assert_eq!(status.phase, Some(ScanPhase::Queued));
        assert_eq!(status.commit.as_deref(), Some("ec26c3e"));
        let snap = status.policy.as_ref().unwrap();
        assert_eq!(snap.name, "acme-iac");
        assert_eq!(snap.scanners.len(), 1);
        assert_eq!(status.scanners[0].phase, ScannerPhase::Pending);
        assert!(jobs_to_create(&status).is_empty(), "not admitted yet");
        assert!(!is_admitted(&status));
    }

    #[test]
    fn a_rerun_of_one_scanner_snapshots_only_that_scanner_and_an_unknown_one_is_invalid() {
        let mut request = test_support::payments_request();
        request.spec.scanners = Some(vec!["blackduck".to_owned()]);
        let snap = snapshot(&request, &test_support::payments_policy()).unwrap();
        assert_eq!(
            snap.scanners
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["blackduck"]
        );
        request.spec.scanners = Some(vec!["trivy".to_owned()]);
        let err = snapshot(&request, &test_support::payments_policy()).unwrap_err();
        assert_eq!(err.reason(), "UnknownScanner");
    }

    #[test]
    fn a_scanner_whose_paths_match_no_changed_file_is_skipped_and_unknown_changes_skip_nothing() {
        let request = test_support::payments_request();
        let policy = test_support::payments_policy();
        let changed = ChangedFiles {
            paths: vec!["infra/main.tf".to_owned(), "README.md".to_owned()],
            complete: true,
        };
        let status = first(&request, &policy, Some(&changed));
        let by_name = |n: &str| {
            status
                .scanners
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by_name("kics").phase, ScannerPhase::Pending);
        assert_eq!(by_name("blackduck").phase, ScannerPhase::Skipped);
        assert_eq!(by_name("blackduck").conclusion, Some(Conclusion::Skipped));
        // Root-level files match `**/` globs too.
        let root = ChangedFiles {
            paths: vec!["Cargo.lock".to_owned()],
            complete: true,
        };
        let status = first(&request, &policy, Some(&root));
        assert_eq!(
            status
                .scanners
                .iter()
                .find(|s| s.name == "blackduck")
                .unwrap()
                .phase,
            ScannerPhase::Pending
        );
        // GitHub cut the list short: nothing is skipped.
        let cut = ChangedFiles {
            paths: vec!["README.md".to_owned()],
            complete: false,
        };
        let status = first(&request, &policy, Some(&cut));
        assert!(
            status
                .scanners
                .iter()
                .all(|s| s.phase == ScannerPhase::Pending)
        );
        // Every scanner skipped: the request succeeds without running anything.
        let docs = ChangedFiles {
            paths: vec!["docs/x.md".to_owned()],
            complete: true,
        };
        let status = first(&request, &policy, Some(&docs));
        assert_eq!(status.phase, Some(ScanPhase::Succeeded));
        assert_eq!(status.conclusion, Some(Conclusion::Skipped));
    }

    #[test]
    fn an_untrusted_fork_waits_for_an_approval_of_its_exact_head_and_an_approved_one_is_queued() {
        let policy = test_support::payments_policy();
        let request = fork(test_support::payments_request());
        let status = first(&request, &policy, None);
        assert_eq!(status.phase, Some(ScanPhase::AwaitingApproval));
        assert!(
            status
                .scanners
                .iter()
                .all(|s| s.conclusion == Some(Conclusion::ActionRequired))
        );
        assert!(
            status.scanners[0]
                .message
                .as_deref()
                .unwrap()
                .contains(&format!("/gatehouse ok-to-scan {SHA}"))
        );
        let mut approved = request.clone();
        approved.spec.approval = Some(Approval {
            approver: "maintainer".to_owned(),
            sha: SHA.to_owned(),
            comment_id: Some(1),
        });
        assert_eq!(
            first(&approved, &policy, None).phase,
            Some(ScanPhase::Queued)
        );
        // An approval of another commit approves nothing.
        approved.spec.approval = Some(Approval {
            approver: "maintainer".to_owned(),
            sha: "0".repeat(40),
            comment_id: Some(1),
        });
        assert_eq!(
            first(&approved, &policy, None).phase,
            Some(ScanPhase::AwaitingApproval)
        );
        // A trusted bot's fork is scanned without approval.
        let mut bot = request.clone();
        bot.spec.pull_request.author = "dependabot[bot]".to_owned();
        assert_eq!(first(&bot, &policy, None).phase, Some(ScanPhase::Queued));
        // The KICS-only sample keeps the default (RequireApproval) too.
        assert_eq!(
            first(&request, &test_support::kics_policy(), None).phase,
            Some(ScanPhase::AwaitingApproval)
        );
    }

    #[test]
    fn an_admitted_request_creates_one_job_per_pending_scanner_and_moves_with_its_jobs() {
        let (request, status) = running(1);
        assert_eq!(status.phase, Some(ScanPhase::Running));
        assert_eq!(status.scanners[0].phase, ScannerPhase::Queued);
        assert!(jobs_to_create(&status).is_empty(), "never a second Job");
        let active = observe(
            status.clone(),
            &request,
            &[(job("job-a", &[], 1), vec![])],
            &now(),
        );
        assert_eq!(active.scanners[0].phase, ScannerPhase::Running);
        assert!(active.scanners[0].started_at.is_some());
        let done = observe(
            active,
            &request,
            &[(
                job(
                    "job-a",
                    &[("SuccessCriteriaMet", "x"), ("Complete", "x")],
                    0,
                ),
                vec![],
            )],
            &now(),
        );
        assert_eq!(done.scanners[0].phase, ScannerPhase::Completed);
        assert_eq!(
            done.scanners[0].conclusion, None,
            "findings decide, in the results step"
        );
        assert_eq!(done.phase, Some(ScanPhase::Running));
        assert!(!active_any(&done), "a finished Job holds no slot");
    }

    fn active_any(status: &ScanRequestStatus) -> bool {
        status.scanners.iter().any(active)
    }

    #[test]
    fn a_job_past_its_deadline_concludes_timed_out_and_fails_the_request() {
        let (request, status) = running(1);
        let status = observe(
            status,
            &request,
            &[(
                job(
                    "job-a",
                    &[
                        ("FailureTarget", "DeadlineExceeded"),
                        ("Failed", "DeadlineExceeded"),
                    ],
                    0,
                ),
                vec![],
            )],
            &now(),
        );
        assert_eq!(status.scanners[0].conclusion, Some(Conclusion::TimedOut));
        assert_eq!(status.scanners[0].phase, ScannerPhase::Errored);
        assert!(
            status.scanners[0]
                .message
                .as_deref()
                .unwrap()
                .contains("900 s")
        );
        assert_eq!(status.phase, Some(ScanPhase::Failed));
        assert_eq!(status.conclusion, Some(Conclusion::TimedOut));
        let completed = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Completed")
            .unwrap();
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("True", "Failed")
        );
    }

    #[test]
    fn a_scanner_that_exits_with_an_error_fails_with_its_exit_code_and_output_and_is_not_retried() {
        let (request, status) = running(1);
        let pod = failed_pod(
            "scan",
            126,
            Some("Error"),
            "line 1\nline 2\nengine error: path not found\n",
        );
        let status = observe(
            status,
            &request,
            &[(
                job("job-a", &[("Failed", "BackoffLimitExceeded")], 0),
                vec![pod],
            )],
            &now(),
        );
        let scanner = &status.scanners[0];
        assert_eq!(scanner.conclusion, Some(Conclusion::Failure));
        assert_eq!(scanner.phase, ScannerPhase::Errored);
        let message = scanner.message.as_deref().unwrap();
        assert!(
            message.starts_with("scanner error: exit code 126\n"),
            "{message}"
        );
        assert!(
            message.ends_with("engine error: path not found"),
            "{message}"
        );
        assert!(jobs_to_create(&status).is_empty());
    }

    #[test]
    fn an_oom_kill_or_eviction_is_retried_with_a_new_job_up_to_the_limit() {
        let (request, status) = running(1);
        let oom = failed_pod("scan", 137, Some("OOMKilled"), "");
        let status = observe(
            status,
            &request,
            &[(
                job("job-a", &[("Failed", "BackoffLimitExceeded")], 0),
                vec![oom],
            )],
            &now(),
        );
        assert_eq!(status.scanners[0].phase, ScannerPhase::Pending);
        assert_eq!(status.scanners[0].conclusion, None);
        assert_eq!(jobs_to_create(&status), [("kics".to_owned(), 2)]);
        // The last attempt failing too gives up with the reason.
        let (request, status) = running(MAX_ATTEMPTS);
        let mut evicted = failed_pod("checkout", 0, None, "");
        evicted.status.as_mut().unwrap().reason = Some("Evicted".to_owned());
        let status = observe(
            status,
            &request,
            &[(
                job("job-a", &[("Failed", "BackoffLimitExceeded")], 0),
                vec![evicted],
            )],
            &now(),
        );
        assert_eq!(status.scanners[0].conclusion, Some(Conclusion::Failure));
        assert!(
            status.scanners[0]
                .message
                .as_deref()
                .unwrap()
                .starts_with("gave up after 3 attempts: the pod was evicted")
        );
    }

    #[test]
    fn a_job_lost_before_it_finished_is_retried_but_one_deleted_after_it_finished_is_not_recreated()
    {
        let (request, status) = running(1);
        let lost = observe(status.clone(), &request, &[], &now());
        assert_eq!(jobs_to_create(&lost), [("kics".to_owned(), 2)]);
        let done = observe(
            status,
            &request,
            &[(job("job-a", &[("Complete", "x")], 0), vec![])],
            &now(),
        );
        // Its TTL deleted it afterwards: nothing to do.
        let later = observe(done.clone(), &request, &[], &now());
        assert_eq!(later, done);
        assert!(jobs_to_create(&later).is_empty());
    }

    #[test]
    fn a_job_created_by_a_reconcile_whose_status_write_was_lost_is_adopted_not_asked_for_again() {
        let request = test_support::request();
        let status = admitted(
            first(&request, &test_support::kics_policy(), None),
            &request,
            &now(),
        );
        // The status says no Job yet; the Job exists, and has even finished.
        let name = crate::jobs::job_name("hello-world-pr2-ec26c3e-016643a9", "kics", 1);
        let seen = observe(
            status,
            &request,
            &[(job(&name, &[("Complete", "x")], 0), vec![])],
            &now(),
        );
        assert_eq!(seen.scanners[0].job_name.as_deref(), Some(name.as_str()));
        assert_eq!(seen.scanners[0].attempts, 1);
        assert_eq!(seen.scanners[0].phase, ScannerPhase::Completed);
        assert!(jobs_to_create(&seen).is_empty());
    }

    #[test]
    fn a_queued_request_whose_job_exists_was_admitted_already_and_holds_its_slot() {
        let request = test_support::request();
        let status = first(&request, &test_support::kics_policy(), None);
        assert_eq!(status.phase, Some(ScanPhase::Queued));
        let name = crate::jobs::job_name("hello-world-pr2-ec26c3e-016643a9", "kics", 1);
        let seen = observe(status, &request, &[(job(&name, &[], 1), vec![])], &now());
        assert_eq!(seen.phase, Some(ScanPhase::Running));
        assert!(is_admitted(&seen));
        assert_eq!(seen.scanners[0].phase, ScannerPhase::Running);
    }

    #[test]
    fn a_job_whose_pod_met_its_success_criteria_is_finished_even_before_complete_is_written() {
        let (request, status) = running(1);
        let running_status = observe(status, &request, &[(job("job-a", &[], 1), vec![])], &now());
        let met = observe(
            running_status,
            &request,
            &[(job("job-a", &[("SuccessCriteriaMet", "x")], 0), vec![])],
            &now(),
        );
        assert_eq!(met.scanners[0].phase, ScannerPhase::Completed);
    }

    #[test]
    fn a_request_for_a_repository_or_base_its_policy_does_not_cover_is_invalid() {
        let policy = test_support::payments_policy();
        let err = snapshot(&test_support::request(), &policy).unwrap_err();
        assert_eq!(err.reason(), "RepositoryNotCovered");
        let mut sandbox = test_support::payments_request();
        sandbox.spec.repository.name = "payments-sandbox".to_owned();
        assert_eq!(
            snapshot(&sandbox, &policy).unwrap_err().reason(),
            "RepositoryNotCovered"
        );
        let mut feature = test_support::payments_request();
        feature.spec.pull_request.base_ref = "feature/x".to_owned();
        assert_eq!(
            snapshot(&feature, &policy).unwrap_err().reason(),
            "RepositoryNotCovered"
        );
        assert!(snapshot(&test_support::payments_request(), &policy).is_ok());
    }

    #[test]
    fn a_stop_request_cancels_every_open_scanner_with_a_pointer_to_its_replacement() {
        let (request, status) = running(1);
        let stop_request = StopRequest::Superseded {
            head_sha: "9f1c2ab000000000000000000000000000000000".to_owned(),
            by: Some(lifecycle::ScanRef {
                namespace: "gatehouse-scans".to_owned(),
                name: "hello-world-pr2-9f1c2ab-1".to_owned(),
            }),
        };
        let status = stop(status, &request, &stop_request, &now());
        assert_eq!(status.phase, Some(ScanPhase::Superseded));
        assert_eq!(
            status.superseded_by.as_deref(),
            Some("hello-world-pr2-9f1c2ab-1")
        );
        assert_eq!(status.scanners[0].conclusion, Some(Conclusion::Cancelled));
        assert_eq!(
            status.scanners[0].message.as_deref(),
            Some(
                "superseded by commit 9f1c2ab (ScanRequest gatehouse-scans/hello-world-pr2-9f1c2ab-1)"
            )
        );
        assert!(jobs_to_create(&status).is_empty());
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conditions = Vec::new();
        let t0 = now();
        set_condition(&mut conditions, "Ready", true, "Valid", "a", &t0);
        let later = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-23T11:00:00Z".parse().unwrap(),
        );
        set_condition(&mut conditions, "Ready", true, "Valid", "b", &later);
        assert_eq!(conditions[0].last_transition_time, t0);
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "PolicyNotFound",
            "c",
            &later,
        );
        assert_eq!(conditions[0].last_transition_time, later);
    }
}

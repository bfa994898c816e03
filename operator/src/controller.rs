//! The ScanRequest controller: a thin async driver over the pure steps in [`crate::decide`],
//! [`crate::jobs`] and [`crate::checks`]. Per reconcile: fetch (the policy once, the Jobs and the
//! pods of failed ones), decide, build, apply (Secret by server-side apply, Jobs by create, never
//! re-applied: a Job's pod template is immutable), report check runs, write status (server-side
//! apply under one field manager; the operator is the only status writer).
//!
//! Idempotent under at-least-once: Job names are deterministic (`AlreadyExists` is success), a
//! check run missing from status is looked up by its `external_id` before one is created, and a
//! POST to GitHub is never retried blindly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_crds::lifecycle::StopRequest;
use gatehouse_crds::scanpolicy::ScanPolicy;
use gatehouse_crds::scanrequest::{ScanPhase, ScannerPhase};
use gatehouse_crds::{ScanRequest, ScanRequestStatus, labels};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::admission::{self, PolicyLimits, Running, Waiting};
use crate::checks::{self, State};
use crate::decide::{self, ChangedFiles};
use crate::github::{
    CheckConclusion, CheckOutput, CheckRunUpdate, CheckStatus, GitHub, GitHubError, NewCheckRun,
};
use crate::jobs::{self, BuildSettings, FIELD_MANAGER};
use crate::keys::MasterKey;
use crate::metrics::Metrics;

/// Finalizer on every ScanRequest: deleting one stops its Jobs and concludes its open check runs.
pub const FINALIZER: &str = "gatehouse.dev/cleanup";

/// A reconcile step failed; the request is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("failed to {operation}: {}", describe_kube(source))]
    Kube {
        /// What was being done.
        operation: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// A GitHub call failed.
    #[error("failed to {operation}: {source}")]
    GitHub {
        /// What was being done.
        operation: String,
        /// Why it failed.
        source: Box<GitHubError>,
    },
    /// The object lacks what every stored object has.
    #[error("ScanRequest without {0}")]
    Incomplete(&'static str),
    /// A Job of the expected name belongs to another object.
    #[error("Job {0} exists but is not owned by this ScanRequest")]
    ForeignJob(String),
    /// A Job of the expected name belongs to an earlier ScanRequest of the same name, deleted
    /// but not yet collected; it is being deleted.
    #[error("Job {0} of an earlier ScanRequest of this name is being deleted")]
    PredecessorJob(String),
    /// The request claims what GitHub contradicts (an installation that does not hold its
    /// repository).
    #[error("{0}")]
    Refused(String),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Whether trying again cannot help: the API refuses the object (400, 404, 422) or forbids
    /// it (403: RBAC, an admission webhook, a quota; held as a slot, such a request would block
    /// the queue forever), GitHub refuses for good, or the request is refused.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube { source, .. } => matches!(
                source.as_ref(),
                kube::Error::Api(status) if matches!(status.code, 400 | 403 | 404 | 422)
            ),
            Error::GitHub { source, .. } => !source.is_transient(),
            Error::Refused(_) | Error::ForeignJob(_) => true,
            Error::Incomplete(_) | Error::Finalizer(_) | Error::PredecessorJob(_) => false,
        }
    }

    /// The fixed label of this error for the reconcile metric.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::GitHub { .. } => "github",
            Error::Incomplete(_)
            | Error::ForeignJob(_)
            | Error::PredecessorJob(_)
            | Error::Refused(_) => "invalid",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// When GitHub said when to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::GitHub { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// A Kubernetes error for people: the API server's own message for a refusal (kube's display
/// adds a debug dump of the whole status), the error itself otherwise.
fn describe_kube(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

pub(crate) fn kube_error(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let operation = operation.into();
    move |source| Error::Kube {
        operation,
        source: Box::new(source),
    }
}

fn github_error(operation: impl Into<String>) -> impl FnOnce(GitHubError) -> Error {
    let operation = operation.into();
    move |source| Error::GitHub {
        operation,
        source: Box::new(source),
    }
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How Jobs are built.
    pub build: BuildSettings,
    /// Most ScanRequests running at once, across every policy.
    pub max_running: usize,
    /// Base of the check runs' `details_url`; `<base>/<namespace>/<name>` when set.
    pub details_url: Option<String>,
    /// How often a queued request looks for a free slot again.
    pub queue_poll: Duration,
    /// How long a scanner whose Job succeeded waits for its published result before it fails.
    pub result_timeout: Duration,
    /// Where the base commits' findings are kept (baseline mode): a Job scans the base commit
    /// too unless they are there. `None`: always scan it.
    pub baseline_cache: Option<redis::Client>,
    /// The per-request locks shared with the results consumer.
    pub locks: Arc<crate::locks::RequestLocks>,
}

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// GitHub App client.
    pub github: Arc<GitHub>,
    /// Master key the per-scan signing keys are derived from.
    pub master_key: MasterKey,
    /// Settings.
    pub settings: Settings,
    /// Every watched ScanRequest (one store per watched namespace, or one for all).
    pub requests: Vec<Store<ScanRequest>>,
    /// Per store of `requests`: whether its first full list has arrived. Admission counts what
    /// runs across every store, so it waits for all of them.
    requests_listed: Vec<Arc<AtomicBool>>,
    /// Every watched ScanPolicy.
    pub policies: Vec<Store<ScanPolicy>>,
    /// Per store of `policies`: whether its first full list has arrived.
    policies_listed: Vec<Arc<AtomicBool>>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Requests admitted whose Running status the stores may not show yet, by namespace/name.
    admitted: Mutex<HashMap<String, (Instant, Running)>>,
    /// Consecutive failures per request, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        github: Arc<GitHub>,
        master_key: MasterKey,
        settings: Settings,
        requests: Vec<Store<ScanRequest>>,
        requests_listed: Vec<Arc<AtomicBool>>,
        policies: Vec<Store<ScanPolicy>>,
        policies_listed: Vec<Arc<AtomicBool>>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Context {
        Context {
            client,
            github,
            master_key,
            settings,
            requests,
            requests_listed,
            policies,
            policies_listed,
            recorder,
            metrics,
            admitted: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the ScanPolicy `namespace/name` exists: `Some(false)` only once every policy cache
    /// holds its first full list and none has it; `None` while that is not known.
    fn policy_exists(&self, namespace: &str, name: &str) -> Option<bool> {
        let key = ObjectRef::<ScanPolicy>::new(name).within(namespace);
        if self.policies.iter().any(|s| s.get(&key).is_some()) {
            return Some(true);
        }
        self.policies_listed
            .iter()
            .all(|listed| listed.load(Ordering::Acquire))
            .then_some(false)
    }

    fn policy_limits(&self, namespace: &str, name: &str) -> PolicyLimits {
        let key = ObjectRef::<ScanPolicy>::new(name).within(namespace);
        let concurrency = self
            .policies
            .iter()
            .find_map(|s| s.get(&key))
            .map(|p| p.spec.concurrency.clone())
            .unwrap_or_default();
        PolicyLimits {
            max_running: usize::try_from(concurrency.max_running).unwrap_or(1).max(1),
            max_running_per_repository: usize::try_from(concurrency.max_running_per_repository)
                .unwrap_or(1)
                .max(1),
        }
    }

    /// Whether `request` may start now: admission over every watched request, with requests
    /// admitted by this process but not yet seen as Running counted as running.
    // One pass over the caches and one decision under one lock: split, the lock would span calls.
    #[allow(clippy::too_many_lines)]
    fn try_admit(&self, request: &ScanRequest) -> bool {
        // Until every watched namespace's requests are listed (just after a start), what runs
        // there is unknown: the operator-wide limit could be exceeded.
        if !self
            .requests_listed
            .iter()
            .all(|listed| listed.load(Ordering::Acquire))
        {
            return false;
        }
        // Until the policies' cache has this request's policy (just after a start), its limits
        // are unknown: admit nothing rather than admit under defaults.
        let own_policy = ObjectRef::<ScanPolicy>::new(&request.spec.policy_ref.name)
            .within(&request.namespace().unwrap_or_default());
        if !self.policies.iter().any(|s| s.get(&own_policy).is_some()) {
            return false;
        }
        let me = format!(
            "{}/{}",
            request.namespace().unwrap_or_default(),
            request.name_any()
        );
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut waiting = Vec::new();
        let mut running = Vec::new();
        let mut seen_running = Vec::new();
        for store in &self.requests {
            for other in store.state() {
                // Most cached requests are finished: they are passed over before any work.
                let Some(status) = other.status.as_ref() else {
                    continue;
                };
                if !matches!(status.phase, Some(ScanPhase::Running | ScanPhase::Queued)) {
                    continue;
                }
                let key = format!(
                    "{}/{}",
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                );
                if key == me {
                    // The request being decided waits; it never holds its own slot.
                    continue;
                }
                let Some(policy) = status.policy.as_ref().map(|p| p.name.clone()) else {
                    continue;
                };
                let stopped = StopRequest::of(&other.metadata).is_some()
                    || other.metadata.deletion_timestamp.is_some();
                match status.phase {
                    Some(ScanPhase::Running) => {
                        seen_running.push(key.clone());
                        if status.scanners.iter().any(|s| {
                            decide::active(s)
                                || (s.phase == ScannerPhase::Pending && !decide::concluded(s))
                        }) && !stopped
                        {
                            running.push(Running {
                                namespace: other.namespace().unwrap_or_default(),
                                policy,
                                repository: other.spec.repository.id,
                            });
                        }
                    }
                    // A request whose policy is gone is concluded by its own reconcile; it
                    // must not keep a place in the order that only it could take.
                    Some(ScanPhase::Queued)
                        if !stopped
                            && key != me
                            && !admitted.contains_key(&key)
                            && self.policy_exists(
                                &other.namespace().unwrap_or_default(),
                                &other.spec.policy_ref.name,
                            ) != Some(false) =>
                    {
                        waiting.push(Waiting {
                            namespace: other.namespace().unwrap_or_default(),
                            name: other.name_any(),
                            policy,
                            repository: other.spec.repository.id,
                            created: created_seconds(&other),
                        });
                    }
                    _ => {}
                }
            }
        }
        // Admitted here, not yet Running in the stores (whose copy may even predate the
        // request's first status): they hold their slot.
        admitted.retain(|key, (at, _)| {
            !seen_running.contains(key) && at.elapsed() < Duration::from_secs(120)
        });
        // Not its own entry: a reconcile of a copy older than its own admission must find its
        // slot still its own, not taken by itself.
        running.extend(
            admitted
                .iter()
                .filter(|(key, _)| **key != me)
                .map(|(_, (_, r))| r.clone()),
        );
        let Some(policy) = request
            .status
            .as_ref()
            .and_then(|s| s.policy.as_ref())
            .map(|p| p.name.clone())
        else {
            return false;
        };
        waiting.push(Waiting {
            namespace: request.namespace().unwrap_or_default(),
            name: request.name_any(),
            policy,
            repository: request.spec.repository.id,
            created: created_seconds(request),
        });
        let order = admission::admit(&waiting, &running, self.settings.max_running, |ns, p| {
            self.policy_limits(ns, p)
        });
        let admit = order.iter().any(|w| {
            w.name == request.name_any()
                && Some(w.namespace.as_str()) == request.namespace().as_deref()
        });
        if admit {
            let slot = Running {
                namespace: request.namespace().unwrap_or_default(),
                policy: waiting.last().map(|w| w.policy.clone()).unwrap_or_default(),
                repository: request.spec.repository.id,
            };
            admitted.insert(me, (Instant::now(), slot));
        }
        admit
    }

    fn release(&self, request: &ScanRequest) {
        let me = format!(
            "{}/{}",
            request.namespace().unwrap_or_default(),
            request.name_any()
        );
        self.admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&me);
    }
}

fn created_seconds(request: &ScanRequest) -> i64 {
    request
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| t.0.as_second())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn github_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Reconciles one ScanRequest.
pub async fn reconcile(request: Arc<ScanRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = request
        .namespace()
        .ok_or(Error::Incomplete("metadata.namespace"))?;
    let api: Api<ScanRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The results consumer never works on this request between this reconcile's status write
    // and its report to GitHub (see `locks`).
    let _guard = ctx
        .settings
        .locks
        .lock(&namespace, &request.name_any())
        .await;
    let result = finalizer(&api, FINALIZER, request, |event| async {
        match event {
            finalizer::Event::Apply(request) => apply(&request, &ctx).await,
            finalizer::Event::Cleanup(request) => cleanup(&request, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconciled(
        result.as_ref().err().map_or("ok", Error::label),
        started.elapsed(),
    );
    result
}

/// Requeue policy on errors: GitHub's `retry-after` when it gave one, else exponential backoff
/// per request (1 s doubling, at most 5 minutes).
// The signature is kube's `Controller::run` error policy.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(request: Arc<ScanRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any()
    );
    let failures = {
        let mut map = ctx
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let backoff = Duration::from_secs(1u64 << failures.min(9).saturating_sub(1))
        .min(Duration::from_secs(300));
    let wait = error.retry_after().unwrap_or(backoff);
    tracing::warn!(scanrequest = %key, error = %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

fn succeeded(ctx: &Context, request: &ScanRequest) {
    let key = format!(
        "{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any()
    );
    ctx.failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&key);
}

// One reconcile in order: decide, start, write, report, retain; split, the order would scatter.
#[allow(clippy::too_many_lines)]
async fn apply(request: &ScanRequest, ctx: &Context) -> Result<Action, Error> {
    let namespace = request
        .namespace()
        .ok_or(Error::Incomplete("metadata.namespace"))?;
    let name = request.name_any();
    let time = now();
    let before = request.status.clone().unwrap_or_default();
    let stop = StopRequest::of(&request.metadata);
    let mut status = before.clone();

    if status.policy.is_none() {
        if stop.is_some() {
            // Stopped before its first status was written (or that write was lost): still
            // conclude the check runs it may have, found by their external ids.
            if let Some(snapshot) = policy_snapshot(request, ctx, &namespace).await? {
                status.scanners = decide::pending_scanners(&snapshot);
                status.policy = Some(snapshot);
            }
        } else {
            match first_status(request, ctx, &namespace, &time).await? {
                Ok(first) => status = first,
                Err((reason, message)) => {
                    return wait_invalid(ctx, request, &before, status, reason, &message, &time)
                        .await;
                }
            }
        }
    }

    let mut failure = None;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(stop) = &stop {
        if !status.phase.is_some_and(ScanPhase::is_terminal)
            || !status.scanners.iter().all(decide::concluded)
        {
            status = decide::stop(status, request, stop, &time);
        }
        delete_jobs(&jobs_api, &name, false).await?;
        ctx.release(request);
    } else if !status.phase.is_some_and(ScanPhase::is_terminal) {
        // A request waiting for its slot has no Job unless an admission's status write was
        // lost, and a Job the cached list misses then is found by its create's 409: the API
        // server's watch cache answers (no etcd read per queued request per poll).
        let from_cache = status.phase == Some(ScanPhase::Queued) && !decide::is_admitted(&status);
        let jobs = observed_jobs(
            ctx,
            &namespace,
            &name,
            request.metadata.uid.as_ref(),
            from_cache,
        )
        .await?;
        status = decide::observe(status, request, &jobs, &time);
        status = decide::overdue_results(status, request, ctx.settings.result_timeout, &time);
        if matches!(
            status.phase,
            Some(ScanPhase::Queued | ScanPhase::AwaitingApproval)
        ) && !decide::is_admitted(&status)
            && ctx.policy_exists(&namespace, &request.spec.policy_ref.name) == Some(false)
            && policy_gone(ctx, &namespace, &request.spec.policy_ref.name).await?
        {
            // Its policy was deleted before the scan started: nothing governs it any more, and
            // waiting would keep its check runs open forever.
            let message = format!(
                "cancelled: ScanPolicy {namespace}/{} was deleted before the scan started",
                request.spec.policy_ref.name
            );
            status = decide::cancel_unstarted(status, request, &message, &time);
        }
        if status.phase == Some(ScanPhase::Queued) && ctx.try_admit(&with_status(request, &status))
        {
            status = decide::admitted(status, request, &time);
            let created = request
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(time.0, |t| t.0);
            ctx.metrics.admitted_after(
                Duration::try_from(time.0.duration_since(created)).unwrap_or_default(),
            );
        }
        let to_create = decide::jobs_to_create(&status);
        if !to_create.is_empty() {
            match start_jobs(ctx, request, &namespace, &mut status, to_create).await {
                // A scanner that could not start may have been the last one open.
                Ok(()) => status = decide::settle(status, request, &time),
                Err(error) if error.is_permanent() => {
                    // It will not work by trying again: say so on the pull request.
                    let message = format!("could not start the scan: {error}");
                    status = decide::could_not_start(status, request, &message, &time);
                    event(ctx, request, EventType::Warning, "StartFailed", &message).await;
                }
                Err(error) => failure = Some(error),
            }
        }
    }
    if status.phase.is_some_and(ScanPhase::is_terminal) {
        ctx.release(request);
    }

    // The status first, on the version read: a reconcile of a stale copy gets a conflict here
    // and tells GitHub nothing. Then the check runs, recording progress even when a call fails
    // midway, and the status again if that changed it.
    // Nothing changed and nothing to tell GitHub (a finished request looked at again): no write,
    // or every watched request would cost a write per resync.
    let quiet = status == before
        && request.status.is_some()
        && checks::fully_reported(&with_status(request, &status));
    let version = if quiet {
        request.metadata.resource_version.clone()
    } else {
        write_status(ctx, request, &status, None).await?
    };
    let decided = status.clone();
    let reported = match sync_check_runs(ctx, request, &mut status, stop.is_none()).await {
        // GitHub refuses for good (the repository is gone, the App uninstalled, a commit it
        // does not know): say so once and stop asking, so the request can finish and go.
        Err(error) if error.is_permanent() => {
            let message = format!("GitHub refused the check runs: {error}");
            event(ctx, request, EventType::Warning, "ReportFailed", &message).await;
            let view = with_status(request, &status);
            for scanner in &mut status.scanners {
                if let Some(desired) = checks::desired(&view, scanner, &github_now()) {
                    scanner.reported = Some(desired.key());
                }
            }
            Ok(())
        }
        other => other,
    };
    if status != decided {
        write_status(ctx, request, &status, version).await?;
    }
    transition_events(ctx, request, &before, &status).await;
    if let Some(error) = failure {
        return Err(error);
    }
    reported?;
    succeeded(ctx, request);
    if status.phase.is_some_and(ScanPhase::is_terminal) {
        return retain(ctx, &with_status(request, &status), &namespace).await;
    }
    let awaiting_result = status
        .scanners
        .iter()
        .any(|s| s.phase == ScannerPhase::Completed && s.conclusion.is_none());
    Ok(match status.phase {
        Some(ScanPhase::Queued) => Action::requeue(ctx.settings.queue_poll),
        // A result that never comes must fail its scanner soon after the timeout.
        _ if awaiting_result => Action::requeue(
            (ctx.settings.result_timeout / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
        ),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Records why a request cannot be decided (`Ready=False`) and waits for a change.
async fn wait_invalid(
    ctx: &Context,
    request: &ScanRequest,
    before: &ScanRequestStatus,
    mut status: ScanRequestStatus,
    reason: &'static str,
    message: &str,
    time: &Time,
) -> Result<Action, Error> {
    decide::set_condition(
        &mut status.conditions,
        decide::conditions::READY,
        false,
        reason,
        message,
        time,
    );
    status.phase = Some(status.phase.unwrap_or(ScanPhase::Pending));
    status.message = Some(message.to_owned());
    status.observed_generation = request.metadata.generation;
    write_status(ctx, request, &status, None).await?;
    if before.message.as_deref() != Some(message) {
        event(ctx, request, EventType::Warning, reason, message).await;
    }
    succeeded(ctx, request);
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Applies the per-scan Secret and creates the Jobs of `to_create`, recording each in `status`.
async fn start_jobs(
    ctx: &Context,
    request: &ScanRequest,
    namespace: &str,
    status: &mut ScanRequestStatus,
    to_create: Vec<(String, i32)>,
) -> Result<(), Error> {
    apply_secret(ctx, request, namespace).await?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let mut first_error = None;
    for (scanner, attempt) in to_create {
        let Some(spec) = status
            .policy
            .as_ref()
            .and_then(|p| p.scanners.iter().find(|s| s.name == scanner))
            .cloned()
        else {
            continue;
        };
        let base = baseline_to_scan(ctx, request, status, &spec).await;
        // Built from the status decided so far (its policy snapshot), not the stored one.
        let job = jobs::desired_job(
            &with_status(request, status),
            &spec,
            attempt,
            &ctx.settings.build,
            base.as_deref(),
        );
        let job_name = job.metadata.name.clone().unwrap_or_default();
        match create_job(&jobs_api, request, &job).await {
            Ok(()) => {}
            // One scanner's Job the cluster will never take (an invalid quantity in its
            // settings, a quota): that scanner fails, the others still run.
            Err(error) if error.is_permanent() => {
                let message = format!("could not start the scan: {error}");
                decide::scanner_could_not_start(status, &scanner, &message, &now());
                event(ctx, request, EventType::Warning, "StartFailed", &message).await;
                continue;
            }
            Err(error) => {
                first_error.get_or_insert(error);
                continue;
            }
        }
        decide::job_created(status, &scanner, attempt, &job_name);
        event(
            ctx,
            request,
            EventType::Normal,
            "JobCreated",
            &format!("created Job {job_name} for scanner {scanner} (attempt {attempt})"),
        )
        .await;
    }
    first_error.map_or(Ok(()), Err)
}

/// The base commit a scanner's Job must scan too (baseline mode), unless its findings are kept
/// already from an earlier scan of the same base with the same scanner configuration. When
/// Redis cannot say, the base is scanned: slower, never wrong.
async fn baseline_to_scan(
    ctx: &Context,
    request: &ScanRequest,
    status: &ScanRequestStatus,
    spec: &gatehouse_crds::scanpolicy::ScannerSpec,
) -> Option<String> {
    let on = status.policy.as_ref().is_some_and(|p| p.reporting.baseline);
    let base = request.spec.pull_request.base_sha.clone().filter(|_| on)?;
    let Some(redis) = &ctx.settings.baseline_cache else {
        return Some(base);
    };
    let key = crate::results::baseline_key(request.spec.repository.id, &base, spec);
    // Kept at least until this scan's result can still arrive: the Job's deadline, the wait for
    // its result, and the consumer's retry window.
    let keep = u64::try_from(spec.timeout_seconds.max(0))
        .unwrap_or(0)
        .saturating_mul(2)
        .saturating_add(ctx.settings.result_timeout.as_secs())
        .saturating_add(24 * 3600);
    // Only findings the consumer will trust spare the Job its base scan: the value is checked
    // as the consumer checks it (a value rewritten by something else, or signed under a master
    // key since rotated, would otherwise make every later Job skip the base scan and every
    // finding count). An invalid value is removed (`EXPIRE … 0`: the operator's Redis user may
    // not `DEL`), and the base scanned; a valid one has its lifetime extended.
    let kept = async {
        let mut conn = redis.get_multiplexed_async_connection().await?;
        // Read and extend in one transaction: a value read, then expired before a separate
        // EXPIRE, would spare the Job a base scan whose findings are gone (every finding would
        // count). A value that turns out invalid is removed below.
        let (value, _): (Option<Vec<u8>>, i64) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(keep)
            .arg("GT")
            .query_async(&mut conn)
            .await?;
        let Some(value) = value else {
            return Ok(false);
        };
        if !crate::results::is_kept_base(&ctx.master_key, &key, &value) {
            tracing::warn!(
                key,
                "kept base findings fail their signature; removed, the base is scanned"
            );
            redis::cmd("EXPIRE")
                .arg(&key)
                .arg(0)
                .query_async::<i64>(&mut conn)
                .await?;
            return Ok(false);
        }
        Ok::<bool, redis::RedisError>(true)
    };
    match tokio::time::timeout(Duration::from_secs(5), kept).await {
        Ok(Ok(true)) => None,
        _ => Some(base),
    }
}

async fn delete_request(
    ctx: &Context,
    request: &ScanRequest,
    namespace: &str,
    reason: &str,
) -> Result<(), Error> {
    let name = request.name_any();
    tracing::info!(scanrequest = %format!("{namespace}/{name}"), %reason, "deleting a finished ScanRequest");
    let api: Api<ScanRequest> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error(format!("delete ScanRequest {namespace}/{name}"))(e)),
    }
}

/// Deletes a finished request its policy's retention no longer keeps; otherwise looks again when
/// its age runs out (at least hourly: a newer request may push it out before).
async fn retain(ctx: &Context, request: &ScanRequest, namespace: &str) -> Result<Action, Error> {
    let policy_name = &request.spec.policy_ref.name;
    let key = ObjectRef::<ScanPolicy>::new(policy_name).within(namespace);
    let cached = ctx
        .policies
        .iter()
        .find_map(|s| s.get(&key))
        .map(|p| p.spec.retention.clone());
    // Deleting cannot be undone: never under a retention guessed from a cache still filling.
    let retention = if let Some(retention) = cached {
        retention
    } else {
        let api: Api<ScanPolicy> = Api::namespaced(ctx.client.clone(), namespace);
        let policy = api.get_opt(policy_name).await.map_err(kube_error(format!(
            "get ScanPolicy {namespace}/{policy_name}"
        )))?;
        let Some(policy) = policy else {
            return Ok(Action::requeue(Duration::from_secs(3600)));
        };
        policy.spec.retention
    };
    let others: Vec<Arc<ScanRequest>> = ctx
        .requests
        .iter()
        .flat_map(Store::state)
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace)
                && r.spec.repository.id == request.spec.repository.id
                && r.spec.pull_request.number == request.spec.pull_request.number
        })
        .collect();
    let mut refs: Vec<&ScanRequest> = others
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| r.metadata.name != request.metadata.name)
        .collect();
    refs.push(request);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // A request that just finished may push older ones of its pull request out: judge them too.
    for older in refs.iter().filter(|r| {
        r.metadata.name != request.metadata.name
            && r.metadata.deletion_timestamp.is_none()
            && checks::fully_reported(r)
            && r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(ScanPhase::is_terminal)
    }) {
        if let crate::retention::Verdict::Delete(reason) =
            crate::retention::verdict(older, &refs, &retention, now)
        {
            delete_request(ctx, older, namespace, &reason).await?;
        }
    }
    if !checks::fully_reported(request) {
        // Its check runs first: deleted now, they would stay open on the pull request.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    match crate::retention::verdict(request, &refs, &retention, now) {
        crate::retention::Verdict::KeepFor(wait) => {
            Ok(Action::requeue(wait.min(Duration::from_secs(3600))))
        }
        crate::retention::Verdict::Delete(reason) => {
            delete_request(ctx, request, namespace, &reason).await?;
            Ok(Action::await_change())
        }
    }
}

/// The first status, or why there is none yet (condition reason and message).
async fn first_status(
    request: &ScanRequest,
    ctx: &Context,
    namespace: &str,
    time: &Time,
) -> Result<Result<ScanRequestStatus, (&'static str, String)>, Error> {
    let policy_name = &request.spec.policy_ref.name;
    let policies: Api<ScanPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(policy) = policies
        .get_opt(policy_name)
        .await
        .map_err(kube_error(format!(
            "get ScanPolicy {namespace}/{policy_name}"
        )))?
    else {
        return Ok(Err((
            "PolicyNotFound",
            format!("ScanPolicy {policy_name:?} does not exist in namespace {namespace:?}"),
        )));
    };
    let snapshot = match decide::snapshot(request, &policy) {
        Ok(snapshot) => snapshot,
        Err(invalid) => return Ok(Err((invalid.reason(), invalid.to_string()))),
    };
    let changed = if decide::needs_changed_files(&snapshot) {
        let spec = &request.spec;
        match ctx
            .github
            .changed_files(
                spec.installation_id,
                &spec.repository.owner,
                &spec.repository.name,
                spec.pull_request.number,
            )
            .await
        {
            Ok(files) => Some(ChangedFiles {
                paths: files.paths,
                complete: files.complete,
            }),
            Err(error) if error.is_transient() => {
                return Err(github_error("list the pull request's changed files")(error));
            }
            // GitHub will not list them (gone, no permission): skip nothing rather than wait.
            Err(error) => {
                tracing::warn!(scanrequest = %request.name_any(), %error, "changed files unknown: no scanner is skipped");
                None
            }
        }
    } else {
        None
    };
    Ok(
        decide::first_status(request, &policy, snapshot, changed.as_ref(), time)
            .map_err(|invalid| (invalid.reason(), invalid.to_string())),
    )
}

/// The snapshot of the request's policy, if the policy exists and covers it.
async fn policy_snapshot(
    request: &ScanRequest,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<gatehouse_crds::scanrequest::PolicySnapshot>, Error> {
    let policy_name = &request.spec.policy_ref.name;
    let policies: Api<ScanPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let policy = policies
        .get_opt(policy_name)
        .await
        .map_err(kube_error(format!(
            "get ScanPolicy {namespace}/{policy_name}"
        )))?;
    Ok(policy.and_then(|p| decide::snapshot(request, &p).ok()))
}

fn with_status(request: &ScanRequest, status: &ScanRequestStatus) -> ScanRequest {
    let mut copy = request.clone();
    copy.status = Some(status.clone());
    copy
}

async fn observed_jobs(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: Option<&String>,
    from_cache: bool,
) -> Result<Vec<(Job, Vec<Pod>)>, Error> {
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}={name},{}={}",
        labels::SCAN_REQUEST,
        labels::MANAGED_BY,
        jobs::MANAGED_BY
    );
    let params = ListParams::default().labels(&selector);
    let params = if from_cache {
        params.match_any()
    } else {
        params
    };
    let jobs = jobs_api
        .list(&params)
        .await
        .map_err(kube_error(format!("list the Jobs of {namespace}/{name}")))?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Vec::with_capacity(jobs.items.len());
    // Only this object's Jobs: a ScanRequest deleted and made again under the same name must
    // not adopt its predecessor's Job (garbage collection is asynchronous).
    for job in jobs.items.into_iter().filter(|job| {
        job.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == uid)
    }) {
        let failed = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True"
                })
            });
        let pods = if failed {
            let job_name = job.name_any();
            // By the Job's UID: pods of an earlier Job of the same name (one deleted and made
            // again) may still be terminating, with the same job-name label.
            let selector = job.metadata.uid.as_ref().map_or_else(
                || format!("job-name={job_name}"),
                |uid| format!("batch.kubernetes.io/controller-uid={uid}"),
            );
            pods_api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_error(format!(
                    "list the pods of Job {namespace}/{job_name}"
                )))?
                .items
        } else {
            Vec::new()
        };
        out.push((job, pods));
    }
    Ok(out)
}

async fn create_job(api: &Api<Job>, request: &ScanRequest, job: &Job) -> Result<(), Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    match api.create(&params, job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Created before a crash or by a concurrent reconcile: ours if it names us as owner.
            let existing = api
                .get(&name)
                .await
                .map_err(kube_error(format!("get Job {name}")))?;
            let ours = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == request.metadata.uid.as_ref());
            if ours {
                return Ok(());
            }
            // A ScanRequest deleted and made again under the same name: the first one's Job
            // waits for garbage collection. It names a ScanRequest of this name that no longer
            // exists (names are unique), so it is deleted now, and the create tried again.
            let predecessor = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| {
                    o.kind == "ScanRequest" && Some(&o.name) == request.metadata.name.as_ref()
                });
            if !predecessor {
                return Err(Error::ForeignJob(name));
            }
            let params =
                DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    preconditions: existing.metadata.uid.clone().map(|uid| {
                        kube::api::Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }
                    }),
                    ..DeleteParams::default()
                };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(e) => return Err(kube_error(format!("delete Job {name}"))(e)),
            }
            Err(Error::PredecessorJob(name))
        }
        Err(e) => Err(kube_error(format!("create Job {name}"))(e)),
    }
}

async fn apply_secret(ctx: &Context, request: &ScanRequest, namespace: &str) -> Result<(), Error> {
    let spec = &request.spec;
    let uid = request
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::Incomplete("metadata.uid"))?;
    // The token is scoped by repository name within an installation's account: the request's
    // own installation id must be the one GitHub has on its repository.
    let installation = ctx
        .github
        .repository_installation(&spec.repository.owner, &spec.repository.name)
        .await
        .map_err(github_error(format!(
            "find the App's installation on {}",
            spec.repository.full_name()
        )))?;
    if installation != spec.installation_id {
        return Err(Error::Refused(format!(
            "installation {} does not hold repository {} (GitHub says installation {installation})",
            spec.installation_id,
            spec.repository.full_name()
        )));
    }
    let token = ctx
        .github
        .scan_token(installation, &spec.repository.name)
        .await
        .map_err(github_error("mint the per-scan repository token"))?;
    let key = ctx.master_key.scan_key(uid);
    let secret = jobs::desired_secret(request, &token.token, &key.to_hex(), &ctx.settings.build);
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(kube_error(format!(
        "apply the per-scan Secret {namespace}/{name}"
    )))?;
    Ok(())
}

/// Deletes the request's unfinished Jobs, and with `finished_too` its finished ones as well (a
/// deleted request's Jobs go at once: a request made again under the same name needs the names).
async fn delete_jobs(api: &Api<Job>, name: &str, finished_too: bool) -> Result<(), Error> {
    let selector = format!(
        "{}={name},{}={}",
        labels::SCAN_REQUEST,
        labels::MANAGED_BY,
        jobs::MANAGED_BY
    );
    let jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!("list the Jobs of {name}")))?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in jobs.items {
        let finished = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            });
        if (finished && !finished_too) || job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let job_name = job.name_any();
        match api.delete(&job_name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(kube_error(format!("delete Job {job_name}"))(e)),
        }
    }
    Ok(())
}

fn details_url(ctx: &Context, request: &ScanRequest) -> Option<String> {
    details_url_of(ctx.settings.details_url.as_deref(), request)
}

/// The check run's Details link under `base`: `<base>/<namespace>/<name>`.
pub(crate) fn details_url_of(base: Option<&str>, request: &ScanRequest) -> Option<String> {
    base.map(|base| {
        format!(
            "{}/{}/{}",
            base.trim_end_matches('/'),
            request.namespace().unwrap_or_default(),
            request.name_any()
        )
    })
}

/// Tells GitHub what changed for each scanner's check run, recording ids and reported states in
/// `status` as it goes.
// One sequence per scanner: find or create, then update, recording each step.
#[allow(clippy::too_many_lines)]
async fn sync_check_runs(
    ctx: &Context,
    request: &ScanRequest,
    status: &mut ScanRequestStatus,
    create_missing: bool,
) -> Result<(), Error> {
    let view = with_status(request, status);
    let spec = &request.spec;
    let (owner, repo) = (&spec.repository.owner, &spec.repository.name);
    let now = github_now();
    for index in 0..status.scanners.len() {
        let scanner = status.scanners[index].clone();
        let Some(desired) = checks::desired(&view, &scanner, &now) else {
            continue;
        };
        let key = desired.key();
        if scanner.reported.as_deref() == Some(key.as_str()) {
            continue;
        }
        if desired.owner == checks::Owner::Results && create_missing && !report_overdue(&scanner) {
            // The results consumer posts it, with its annotations; the controller does only
            // for a request going away (stopped or deleted), or when the consumer has not for
            // a day (its result dead-lettered after its retry window), so the run is never left
            // open.
            continue;
        }
        let output = CheckOutput::new(desired.title.clone(), desired.summary.clone());
        let (check_status, started_at, conclusion, completed_at) = match &desired.state {
            State::Queued => (CheckStatus::Queued, None, None, None),
            State::InProgress { started_at } => (
                CheckStatus::InProgress,
                Some(started_at.clone()),
                None,
                None,
            ),
            State::Completed {
                conclusion,
                completed_at,
            } => (
                CheckStatus::Completed,
                scanner
                    .started_at
                    .as_ref()
                    .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                Some(CheckConclusion::from(*conclusion)),
                Some(completed_at.clone()),
            ),
        };
        let name = gatehouse_crds::external_id::check_run_name(&scanner.name);
        let external_id = checks::external_id(request, &scanner.name);
        let mut id = scanner.check_run_id;
        let completing = matches!(desired.state, State::Completed { .. });
        // Created before a crash that lost the status write? Find it, never POST twice. When
        // concluding, look too: a POST that timed out may have created a second run after the
        // first look, and a run left open would hold the pull request's check forever.
        let found = if id.is_none() || completing {
            ctx.github
                .find_check_runs(
                    spec.installation_id,
                    owner,
                    repo,
                    &spec.pull_request.head_sha,
                    &name,
                    &external_id,
                )
                .await
                .map_err(github_error(format!("look up check run {name}")))?
        } else {
            Vec::new()
        };
        if id.is_none() {
            id = found.first().map(|r| r.id);
        }
        let update = CheckRunUpdate {
            status: Some(check_status),
            started_at: started_at.clone(),
            conclusion,
            completed_at: completed_at.clone(),
            details_url: details_url(ctx, request),
            output: Some(output.clone()),
        };
        if let Some(known) = id {
            match ctx
                .github
                .update_check_run(spec.installation_id, owner, repo, known, &update)
                .await
            {
                Ok(()) => status.scanners[index].check_run_id = Some(known),
                // GitHub deleted it (it keeps 1,000 runs of a name per suite): create it anew.
                Err(error) if error.status() == Some(404) => id = None,
                Err(error) => {
                    return Err(github_error(format!("update check run {name} ({known})"))(
                        error,
                    ));
                }
            }
        }
        if completing {
            for orphan in found
                .iter()
                .filter(|r| Some(r.id) != id && r.status != "completed")
            {
                // Best effort: a duplicate GitHub refuses (deleted meanwhile) must not stop the
                // report of the run that counts.
                if let Err(error) = ctx
                    .github
                    .update_check_run(spec.installation_id, owner, repo, orphan.id, &update)
                    .await
                {
                    if error.is_transient() {
                        return Err(github_error(format!(
                            "conclude duplicate check run {name} ({})",
                            orphan.id
                        ))(error));
                    }
                    tracing::warn!(check_run = orphan.id, %error, "a duplicate check run could not be concluded");
                }
            }
        }
        if id.is_none() && !create_missing {
            // A stopped or deleted request concludes the runs it has; it does not start new
            // ones (a newer run of the same name could hide the live scan's on the commit).
            status.scanners[index].reported = Some(key);
            continue;
        }
        if id.is_none() && stopped_meanwhile(ctx, request).await? {
            // Stopped since this reconcile read it (a newer commit's scan may have created its
            // runs already): a run created now would be newer than the live scan's and hide it.
            continue;
        }
        if id.is_none() {
            let created = ctx
                .github
                .create_check_run(
                    spec.installation_id,
                    owner,
                    repo,
                    &NewCheckRun {
                        name: name.clone(),
                        head_sha: spec.pull_request.head_sha.clone(),
                        external_id,
                        details_url: details_url(ctx, request),
                        status: check_status,
                        started_at,
                        conclusion,
                        completed_at,
                        output: Some(output),
                    },
                )
                .await
                .map_err(github_error(format!("create check run {name}")))?;
            status.scanners[index].check_run_id = Some(created.id);
        }
        status.scanners[index].reported = Some(key);
    }
    Ok(())
}

/// How long a conclusion recorded from a result may wait for the results consumer to report
/// it before the controller reports it itself (without annotations): the consumer's retry
/// window and an hour.
const REPORT_GIVE_UP: Duration = Duration::from_secs(25 * 3600);

/// Whether the results consumer has had a day to report the scanner's recorded conclusion.
fn report_overdue(scanner: &gatehouse_crds::scanrequest::ScannerStatus) -> bool {
    scanner.finished_at.as_ref().is_some_and(|finished| {
        Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(finished.0))
            .is_ok_and(|waited| waited > REPORT_GIVE_UP)
    })
}

/// Whether the ScanPolicy is gone, asked of the API: the cache alone may not have it yet (a
/// policy just made, or deleted and made again by a GitOps tool).
async fn policy_gone(ctx: &Context, namespace: &str, name: &str) -> Result<bool, Error> {
    let api: Api<ScanPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get ScanPolicy {namespace}/{name}")))?;
    Ok(found.is_none())
}

/// Whether the request was stopped or is being deleted now, read from the API (not the cache):
/// asked just before a check run is created.
async fn stopped_meanwhile(ctx: &Context, request: &ScanRequest) -> Result<bool, Error> {
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let api: Api<ScanRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = api
        .get_opt(&name)
        .await
        .map_err(kube_error(format!("get ScanRequest {namespace}/{name}")))?;
    Ok(fresh.is_none_or(|fresh| {
        fresh.metadata.uid != request.metadata.uid
            || fresh.metadata.deletion_timestamp.is_some()
            || StopRequest::of(&fresh.metadata).is_some()
    }))
}

/// Writes `status` by server-side apply conditional on the
/// resourceVersion the status was decided from (`version`, else the object's): a decision made
/// from a stale copy gets a conflict and is retried from fresh data. Returns the new version.
async fn write_status(
    ctx: &Context,
    request: &ScanRequest,
    status: &ScanRequestStatus,
    version: Option<String>,
) -> Result<Option<String>, Error> {
    apply_status(&ctx.client, request, status, version).await
}

/// Writes a ScanRequest's whole status by server-side apply under the operator's field manager,
/// conditional on `version` (else the object's own resourceVersion); the operator's writers
/// (controller and results consumer) all go through here. Returns the new version.
pub(crate) async fn apply_status(
    client: &kube::Client,
    request: &ScanRequest,
    status: &ScanRequestStatus,
    version: Option<String>,
) -> Result<Option<String>, Error> {
    let version = version.or_else(|| request.metadata.resource_version.clone());
    // Written even when unchanged: the precondition is what stops a reconcile of a stale copy
    // (an unchanged apply stores nothing and keeps the version).
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let api: Api<ScanRequest> = Api::namespaced(client.clone(), &namespace);
    let mut body = serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "ScanRequest",
        "status": status,
    });
    if let Some(version) = &version {
        body["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_error(format!(
            "write the status of ScanRequest {namespace}/{name}"
        )))?;
    Ok(written.metadata.resource_version)
}

async fn event(ctx: &Context, request: &ScanRequest, kind: EventType, reason: &str, note: &str) {
    // The API limits a note to 1 kB: cut at a character boundary within 1,000 bytes.
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    let note = note[..end].to_owned();
    let result = ctx
        .recorder
        .publish(
            &Event {
                type_: kind,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Reconcile".to_owned(),
                secondary: None,
            },
            &request.object_ref(&()),
        )
        .await;
    if let Err(error) = result {
        tracing::debug!(scanrequest = %request.name_any(), %error, "could not record an event");
    }
}

async fn transition_events(
    ctx: &Context,
    request: &ScanRequest,
    before: &ScanRequestStatus,
    after: &ScanRequestStatus,
) {
    if before.phase != after.phase
        && let Some(phase) = after.phase
    {
        let kind = if matches!(phase, ScanPhase::Failed) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let reason = match phase {
            ScanPhase::Running => "Admitted",
            other => phase_name(other),
        };
        event(
            ctx,
            request,
            kind,
            reason,
            after.message.as_deref().unwrap_or_default(),
        )
        .await;
        ctx.metrics.phase_changed(before.phase, phase);
    }
    for scanner in &after.scanners {
        let old = before.scanners.iter().find(|s| s.name == scanner.name);
        let ended = |s: &gatehouse_crds::scanrequest::ScannerStatus| {
            decide::concluded(s) || s.phase == ScannerPhase::Completed
        };
        if !old.is_some_and(ended)
            && ended(scanner)
            && let (Some(start), Some(end)) = (&scanner.started_at, &scanner.finished_at)
        {
            let outcome = scanner.conclusion.map_or("completed", |c| c.as_github());
            ctx.metrics.scanned(
                &scanner.name,
                outcome,
                Duration::try_from(end.0.duration_since(start.0)).unwrap_or_default(),
            );
        }
        if old.and_then(|o| o.conclusion) != scanner.conclusion
            && let Some(conclusion) = scanner.conclusion
        {
            let kind = if matches!(
                conclusion,
                gatehouse_crds::scanrequest::Conclusion::Failure
                    | gatehouse_crds::scanrequest::Conclusion::TimedOut
            ) {
                EventType::Warning
            } else {
                EventType::Normal
            };
            event(
                ctx,
                request,
                kind,
                "ScannerConcluded",
                &format!(
                    "{}: {} ({})",
                    scanner.name,
                    conclusion.as_github(),
                    scanner
                        .message
                        .as_deref()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                ),
            )
            .await;
        }
    }
}

fn phase_name(phase: ScanPhase) -> &'static str {
    match phase {
        ScanPhase::Pending => "Pending",
        ScanPhase::AwaitingApproval => "AwaitingApproval",
        ScanPhase::Queued => "Queued",
        ScanPhase::Running => "Running",
        ScanPhase::Succeeded => "Succeeded",
        ScanPhase::Failed => "Failed",
        ScanPhase::Cancelled => "Cancelled",
        ScanPhase::Superseded => "Superseded",
    }
}

/// How long a deletion waits for GitHub to take the check runs' conclusion before it lets the
/// ScanRequest go anyway.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(3600);

fn deleting_for(request: &ScanRequest) -> Duration {
    request
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| {
            Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(t.0)).ok()
        })
        .unwrap_or_default()
}

/// Deletion: stop the Jobs and conclude every open check run `cancelled`.
async fn cleanup(request: &ScanRequest, ctx: &Context) -> Result<Action, Error> {
    let namespace = request
        .namespace()
        .ok_or(Error::Incomplete("metadata.namespace"))?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    delete_jobs(&jobs_api, &request.name_any(), true).await?;
    ctx.release(request);
    let before = request.status.clone().unwrap_or_default();
    if before.scanners.iter().all(decide::concluded) && checks::fully_reported(request) {
        return Ok(Action::await_change());
    }
    // Scanners still open are cancelled; concluded ones whose conclusion GitHub has not got yet
    // are reported as they are. Runs that were never created are not created now.
    let mut status = if before.scanners.iter().all(decide::concluded) {
        before
    } else {
        decide::stop(
            before,
            request,
            &StopRequest::Cancelled {
                message: "the ScanRequest was deleted".to_owned(),
            },
            &now(),
        )
    };
    match sync_check_runs(ctx, request, &mut status, false).await {
        Ok(()) => Ok(Action::await_change()),
        // GitHub will never take it (the App was uninstalled, the repository is gone): the
        // deletion must not hang on it.
        Err(error) if error.is_permanent() || deleting_for(request) > CLEANUP_PATIENCE => {
            let message = format!("deleted without concluding its check runs: {error}");
            event(
                ctx,
                request,
                EventType::Warning,
                "CleanupIncomplete",
                &message,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => Err(error),
    }
}

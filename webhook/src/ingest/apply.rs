//! Carrying out an [`Intent`]: a thin driver over the lifecycle contract in
//! [`gatehouse_crds::lifecycle`]. It selects the governing policy, creates the ScanRequest under
//! its trigger's deterministic name (`AlreadyExists` is success), and writes the stop requests
//! the contract decides. It never writes status: that is the operator's alone.
//!
//! Every step is idempotent, so a retried or redelivered entry changes nothing twice:
//!
//! 1. a pull request trigger records itself as the latest trigger if it is (Redis, by
//!    `updated_at`): the head as the deliveries tell it, whatever order they are processed in;
//! 2. a trigger already covered by a live scan of its commit and base creates nothing;
//! 3. a pull request closed after the trigger admits no scan, checked before the create and again
//!    after it (the close handler records the close before it lists, so one of the two sees the
//!    other); a path that finds the pull request closed stops its scans from before the close;
//! 4. after a create (or when a scan covered the trigger), the pull request is settled: one scan
//!    governs its head, the rest stop.
//!
//! Only ScanRequests in namespaces whose ScanPolicy they name are considered, so a ScanRequest
//! planted elsewhere with a pull request's labels steers nothing.

use std::sync::Arc;

use gatehouse_crds::labels::{self, pull_request_selector};
use gatehouse_crds::lifecycle::{
    self, Head, Lane, PullRequestState, Scan, ScanRef, StopRequest, approval_covers, approval_for,
    is_full_sha,
};
use gatehouse_crds::naming::scan_request_name;
use gatehouse_crds::scanrequest::{Approval, PolicyRef, Repository, Trigger};
use gatehouse_crds::selection::{PolicyIndex, PullRequestFacts, Selection, Verdict};
use gatehouse_crds::{ScanRequest, ScanRequestSpec};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::github::{GitHub, GitHubError};
use super::payload::PullRequest as ApiPullRequest;
use super::plan::{
    Command, CommentCommand, Intent, Key, Rerun, ScanFacts, github_time, scan_facts,
};
use super::state::{Memory, PullRequestRecord};

/// The field manager of everything ingest writes.
pub const FIELD_MANAGER: &str = "gatehouse-webhook";

/// Why a closed pull request's scans stop.
const CLOSED: &str = "pull request closed";

/// What was done for an entry; each is a fixed metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A ScanRequest was created.
    Created(ScanRef),
    /// A ScanRequest already covers the trigger (a redelivery, a retry, a repeated event).
    Exists(ScanRef),
    /// Stop was requested on this many ScanRequests (the pull request was closed).
    Cancelled(usize),
    /// Nothing to do, and why.
    Skipped(&'static str),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Exists(_) => "exists",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Skipped(reason) => reason,
        }
    }
}

/// Carrying out an intent failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A Kubernetes API call failed.
    #[error("failed to {operation}: {source}")]
    Kube {
        /// What was being done.
        operation: &'static str,
        /// Why.
        source: Box<kube::Error>,
    },
    /// A GitHub API call failed.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// Redis failed.
    #[error("failed to {operation} in redis: {source}")]
    Redis {
        /// What was being done.
        operation: &'static str,
        /// Why.
        source: redis::RedisError,
    },
    /// Another writer kept changing a ScanRequest between our read and our write.
    #[error("ScanRequest {0} kept changing while a stop request was written")]
    Contended(ScanRef),
    /// GitHub's answer is older than the deliveries already processed (its replicas lag).
    #[error(
        "GitHub reports pull request #{number} as of {github}, older than a delivery of {newest}; retrying"
    )]
    StaleGitHub {
        /// Pull request number.
        number: i64,
        /// GitHub's `updated_at`.
        github: String,
        /// The newest trigger time known.
        newest: String,
    },
}

impl ApplyError {
    /// Whether retrying can help. Requests the API refuses as invalid will be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Kube { source, .. } => {
                !matches!(source.as_ref(), kube::Error::Api(s) if s.code == 400 || s.code == 422)
            }
            ApplyError::GitHub(e) => e.is_transient(),
            ApplyError::Redis { .. }
            | ApplyError::Contended(_)
            | ApplyError::StaleGitHub { .. } => true,
        }
    }
}

fn kube_err(operation: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError::Kube {
        operation,
        source: Box::new(source),
    }
}

fn redis_err(operation: &'static str) -> impl FnOnce(redis::RedisError) -> ApplyError {
    move |source| ApplyError::Redis { operation, source }
}

/// The Kubernetes side of ingest.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    policies: super::Policies,
    github: Option<Arc<GitHub>>,
    memory: Memory,
    index_cache: Arc<std::sync::Mutex<Option<PolicyCache>>>,
}

/// The index and the (uid, resourceVersion) list it was built from.
type PolicyCache = (Vec<(Option<String>, Option<String>)>, Arc<PolicyIndex>);

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

/// A delivery's context: its id and trigger.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// Trigger recorded in created ScanRequests.
    pub trigger: Trigger,
}

/// A scan to create, once its policy wants it.
#[derive(Debug)]
struct NewScan {
    facts: ScanFacts,
    action: Option<String>,
    key: Key,
    scanners: Option<Vec<String>>,
    approval: ApprovalSource,
}

/// Where a new scan's approval comes from.
#[derive(Debug)]
enum ApprovalSource {
    /// None: the policy decides whether it waits.
    None,
    /// The approval of its commit under the same policy, if there is one (re-runs, rescans).
    Inherit,
    /// This approval (`/gatehouse ok-to-scan`).
    Given(Approval),
}

/// The resourceVersion a scan had when it was listed: a stop request is written conditionally on
/// it (a stale one gets a 409, and the scan is read again).
fn listed_version(existing: &[ScanRequest], reference: &ScanRef) -> Option<String> {
    existing
        .iter()
        .find(|r| {
            r.metadata.name.as_deref() == Some(reference.name.as_str())
                && r.metadata.namespace.as_deref() == Some(reference.namespace.as_str())
        })
        .and_then(|r| r.metadata.resource_version.clone())
}

impl Applier {
    /// An applier over a client, the policy stores fed by reflectors, ingest's Redis memory, and
    /// optionally GitHub.
    pub fn new(
        client: kube::Client,
        policies: super::Policies,
        memory: Memory,
        github: Option<Arc<GitHub>>,
    ) -> Applier {
        Applier {
            client,
            policies,
            github,
            memory,
            index_cache: Arc::default(),
        }
    }

    /// The policy index for the current policies. Compiling every policy's globs per delivery
    /// would be wasted work: the index is rebuilt only when a policy was added, changed or
    /// removed (compared by uid and resourceVersion).
    fn index(&self) -> Arc<PolicyIndex> {
        let policies = self.policies.state();
        let mut key: Vec<(Option<String>, Option<String>)> = policies
            .iter()
            .map(|p| (p.metadata.uid.clone(), p.metadata.resource_version.clone()))
            .collect();
        // The store's order is arbitrary.
        key.sort_unstable();
        let mut cache = self
            .index_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.as_ref() {
            Some((cached_key, index)) if *cached_key == key => Arc::clone(index),
            _ => {
                let index = Arc::new(PolicyIndex::build(policies));
                for (policy, problems) in index.rejected() {
                    tracing::warn!(
                        policy = policy.metadata.name.as_deref().unwrap_or(""),
                        namespace = policy.metadata.namespace.as_deref().unwrap_or(""),
                        problems = %problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                        "ScanPolicy left out of selection"
                    );
                }
                *cache = Some((key, Arc::clone(&index)));
                index
            }
        }
    }

    /// Carries out one intent.
    pub async fn apply(&self, intent: Intent, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        match intent {
            Intent::Ignore(reason) => Ok(Outcome::Skipped(reason)),
            Intent::Scan { facts, action, key } => {
                if matches!(action.as_deref(), Some("opened" | "reopened"))
                    && let Some(at) = &facts.pull_request.updated_at
                {
                    let state = PullRequestState {
                        open: true,
                        at: at.clone(),
                    };
                    self.memory
                        .record(facts.repository.id, facts.pull_request.number, &state)
                        .await
                        .map_err(redis_err("record the pull request as open"))?;
                }
                let new = NewScan {
                    facts,
                    action,
                    key,
                    scanners: None,
                    approval: ApprovalSource::None,
                };
                self.scan(new, delivery).await
            }
            Intent::Close {
                repository,
                number,
                updated_at,
            } => self.close(&repository, number, updated_at).await,
            Intent::Rerun(target) => self.rerun(target, delivery).await,
            Intent::Command(request) => self.command(request, delivery).await,
        }
    }

    /// Creates the ScanRequest for a trigger if its policy wants it and nothing covers it, then
    /// settles the pull request.
    #[allow(clippy::too_many_lines)] // one sequence of steps, each commented; split, it reads worse
    async fn scan(&self, new: NewScan, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        let facts = &new.facts;
        let (repository_id, number) = (facts.repository.id, facts.pull_request.number);
        let pull_request_lane = new.key != Key::MergeQueue;
        let at = facts.pull_request.updated_at.as_deref();
        if pull_request_lane {
            if matches!(new.key, Key::Change(_))
                && at.is_some_and(|at| is_stale(at, self.memory.remember()))
            {
                tracing::info!(
                    pr = number,
                    updated_at = at.unwrap_or(""),
                    "trigger older than ingest remembers pull requests; refused"
                );
                return Ok(Outcome::Skipped("stale_trigger"));
            }
            if matches!(new.key, Key::Change(_) | Key::Comment(_))
                && let Some(at) = at
            {
                self.memory
                    .record_head(
                        repository_id,
                        number,
                        &facts.pull_request.head_sha,
                        &facts.pull_request.base_ref,
                        at,
                    )
                    .await
                    .map_err(redis_err("record the latest trigger"))?;
            }
        }
        let full_name = facts.repository.full_name();
        let selection = self
            .index()
            .select(&pr_facts(facts, &full_name, new.action.as_deref()));
        let skipped = match &selection {
            None => Some("no_policy"),
            Some(s) => match s.verdict {
                Verdict::Skip(reason) => Some(reason.as_str()),
                _ => None,
            },
        };
        let Some(selection) = selection.filter(|_| skipped.is_none()) else {
            tracing::debug!(repo = %full_name, pr = number, reason = skipped.unwrap_or(""), "no scan for this trigger");
            // The head moved to something not scanned (a draft, a base no policy covers): what
            // scans the pull request has are not the head's any more.
            if pull_request_lane {
                let record = self.record_of(repository_id, number).await?;
                if record.scanned {
                    self.settle(&facts.repository, facts.installation_id, number, record)
                        .await?;
                }
            }
            return Ok(Outcome::Skipped(skipped.unwrap_or("no_policy")));
        };
        let policy = &selection.policy;
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        let mut spec = ScanRequestSpec {
            repository: facts.repository.clone(),
            installation_id: facts.installation_id,
            pull_request: facts.pull_request.clone(),
            trigger: delivery.trigger.clone(),
            policy_ref: PolicyRef {
                name: policy_name.clone(),
            },
            scanners: new.scanners,
            approval: None,
        };
        let reference = ScanRef {
            namespace: namespace.clone(),
            name: scan_request_name(
                &spec.repository.name,
                spec.repository.id,
                spec.pull_request.number,
                &spec.pull_request.head_sha,
                new.key.as_trigger(),
            ),
        };
        let record = self.record_of(repository_id, number).await?;
        if pull_request_lane && !lifecycle::admits(record.state.as_ref(), at) {
            return self.refuse_closed(&spec.repository, number, &record).await;
        }
        let existing = self.list(repository_id, number).await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        spec.approval = match new.approval {
            ApprovalSource::None => None,
            ApprovalSource::Given(approval) => Some(approval),
            ApprovalSource::Inherit => approval_for(
                &scans,
                &spec.pull_request.head_sha,
                &namespace,
                &policy_name,
            )
            .cloned(),
        };
        let outcome = match lifecycle::covering(&spec, &scans, record.closed_at.as_deref()) {
            Some(covering) => Outcome::Exists(covering.clone()),
            None => self.create(&reference, spec.clone()).await?,
        };
        if pull_request_lane && matches!(outcome, Outcome::Created(_)) {
            self.memory
                .mark_scanned(repository_id, number)
                .await
                .map_err(redis_err("mark the pull request scanned"))?;
        }
        if !pull_request_lane {
            return Ok(outcome);
        }
        // The close may have been handled between the first check and the create, after its
        // list missed this ScanRequest: then this check sees it.
        let record = self.record_of(repository_id, number).await?;
        if !lifecycle::admits(record.state.as_ref(), at) {
            return self.refuse_closed(&spec.repository, number, &record).await;
        }
        // Settled even when the scan existed: a retry after a failure between the create and
        // the settling must finish the settling.
        self.settle(&spec.repository, spec.installation_id, number, record)
            .await?;
        Ok(outcome)
    }

    async fn record_of(
        &self,
        repository_id: i64,
        number: i64,
    ) -> Result<PullRequestRecord, ApplyError> {
        self.memory
            .record_of(repository_id, number)
            .await
            .map_err(redis_err("read the pull request's record"))
    }

    /// A trigger from before the pull request's recorded close: no scan, and the close's work is
    /// done again (a scan this trigger created before a crash, or that a concurrent close missed,
    /// is stopped).
    async fn refuse_closed(
        &self,
        repository: &Repository,
        number: i64,
        record: &PullRequestRecord,
    ) -> Result<Outcome, ApplyError> {
        tracing::info!(
            pr = number,
            "trigger precedes the pull request's close; not scanned"
        );
        let closed_at = record
            .state
            .as_ref()
            .filter(|s| !s.open)
            .map(|s| s.at.clone());
        self.cancel(repository.id, number, closed_at.as_deref(), false)
            .await?;
        Ok(Outcome::Skipped("pull_request_closed"))
    }

    /// Creates a ScanRequest; one already there under the name is this trigger's own (the name
    /// is the trigger's), so it counts as done.
    async fn create(
        &self,
        reference: &ScanRef,
        spec: ScanRequestSpec,
    ) -> Result<Outcome, ApplyError> {
        let mut request = ScanRequest::new(&reference.name, spec);
        request.metadata = ObjectMeta {
            name: Some(reference.name.clone()),
            namespace: Some(reference.namespace.clone()),
            labels: Some(labels::scan_request_labels(&request.spec)),
            ..ObjectMeta::default()
        };
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &reference.namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &request).await {
            Ok(_) => {
                tracing::info!(scanrequest = %reference, sha = %request.spec.pull_request.head_sha, "ScanRequest created");
                Ok(Outcome::Created(reference.clone()))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Exists(reference.clone())),
            Err(e) => Err(kube_err("create ScanRequest")(e)),
        }
    }

    /// Leaves one scan governing the pull request's head and stops the others. The head is the
    /// recorded latest trigger when it is not tied and not older than any scan; else the scans'
    /// own times; where those do not order the scans, GitHub is asked. Without GitHub nothing is
    /// stopped then: two scans run rather than the head going unscanned.
    async fn settle(
        &self,
        repository: &Repository,
        installation_id: i64,
        number: i64,
        record: PullRequestRecord,
    ) -> Result<(), ApplyError> {
        let existing = self.list(repository.id, number).await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        let recorded = record
            .head
            .filter(|h| !h.tied && lifecycle::is_current(Some(&h.at), &scans))
            .map(|h| Head {
                sha: h.sha,
                base_ref: h.base_ref,
                certain: true,
            });
        let stops = if let Ok(stops) = lifecycle::settle(&scans, recorded.as_ref()) {
            stops
        } else {
            let Some(github) = &self.github else {
                tracing::warn!(pr = number, repo = %repository.full_name(), "scans of several commits and no order known without GitHub access; none superseded");
                return Ok(());
            };
            let pr = github
                .pull_request(installation_id, &repository.owner, &repository.name, number)
                .await?;
            let github_at = github_time(pr.updated_at.as_deref());
            if !lifecycle::is_current(github_at.as_deref(), &scans) {
                return Err(ApplyError::StaleGitHub {
                    number,
                    github: github_at.unwrap_or_default(),
                    newest: lifecycle::newest_trigger(&scans)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            let head = Head {
                sha: pr.head.sha.to_ascii_lowercase(),
                base_ref: pr.base.ref_.clone(),
                certain: false,
            };
            tracing::debug!(pr = number, head = %head.sha, "ordered the pull request's scans by GitHub's head");
            lifecycle::settle(&scans, Some(&head)).unwrap_or_default()
        };
        for (reference, stop) in &stops {
            self.stop(reference, stop, listed_version(&existing, reference))
                .await?;
        }
        Ok(())
    }

    /// Records the close, then stops the pull request's unfinished scans from before it.
    async fn close(
        &self,
        repository: &Repository,
        number: i64,
        updated_at: Option<String>,
    ) -> Result<Outcome, ApplyError> {
        // First the record, then the list: a scan created concurrently is either listed here or
        // sees the record in its own second check.
        let mut reopened_same_second = false;
        if let Some(at) = &updated_at {
            let state = PullRequestState {
                open: false,
                at: at.clone(),
            };
            let now = self
                .memory
                .record(repository.id, number, &state)
                .await
                .map_err(redis_err("record the pull request as closed"))?;
            reopened_same_second = now.open && now.at == *at;
        } else {
            tracing::warn!(
                pr = number,
                "closed event without updated_at; its close is not recorded against late scans"
            );
        }
        let count = self
            .cancel(
                repository.id,
                number,
                updated_at.as_deref(),
                reopened_same_second,
            )
            .await?;
        Ok(Outcome::Cancelled(count))
    }

    /// Stops the pull request's unfinished scans from before `closed_at`; returns how many.
    async fn cancel(
        &self,
        repository_id: i64,
        number: i64,
        closed_at: Option<&str>,
        reopened_same_second: bool,
    ) -> Result<usize, ApplyError> {
        let existing = self.list(repository_id, number).await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        let stops = lifecycle::cancel(&scans, CLOSED, closed_at, reopened_same_second);
        for (reference, stop) in &stops {
            self.stop(reference, stop, listed_version(&existing, reference))
                .await?;
        }
        Ok(stops.len())
    }

    /// GitHub says the pull request is closed: record that and stop its scans.
    async fn closed_on_github(
        &self,
        repository: &Repository,
        number: i64,
        pr: &ApiPullRequest,
    ) -> Result<Outcome, ApplyError> {
        let at = github_time(pr.updated_at.as_deref());
        self.close(repository, number, at).await?;
        Ok(Outcome::Skipped("pull_request_closed"))
    }

    /// Re-runs the scan of a commit (Re-run buttons): the original's facts, including its
    /// trigger time, and its commit's approval under the same policy, under a new name.
    async fn rerun(&self, target: Rerun, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        let found = self.find_original(&target).await?;
        if let Some(original) = &found
            && lifecycle::lane(&original.spec) == Lane::MergeQueue
        {
            // A re-run would leave the queue's lane; the queue builds a new group instead.
            return Ok(Outcome::Skipped("rerun_of_merge_queue_check"));
        }
        let number = found
            .as_ref()
            .map(|o| o.spec.pull_request.number)
            .or(target.number);
        // Whether the pull request is still open is GitHub's to say (a Re-run button works on
        // a closed pull request's checks too).
        let current = match (&self.github, number) {
            (Some(github), Some(number)) => Some(
                github
                    .pull_request(
                        target.installation_id,
                        &target.repository.owner,
                        &target.repository.name,
                        number,
                    )
                    .await?,
            ),
            _ => None,
        };
        if let (Some(pr), Some(number)) = (&current, number)
            && pr.state.as_deref() == Some("closed")
        {
            return self.closed_on_github(&target.repository, number, pr).await;
        }
        let facts = if let Some(original) = found {
            ScanFacts {
                repository: original.spec.repository,
                installation_id: original.spec.installation_id,
                pull_request: original.spec.pull_request,
            }
        } else {
            let Some(pr) = &current else {
                return Ok(Outcome::Skipped("rerun_without_original"));
            };
            let facts = scan_facts(target.repository.clone(), target.installation_id, pr);
            if facts.pull_request.head_sha != target.head_sha {
                return Ok(Outcome::Skipped("rerun_of_old_commit"));
            }
            facts
        };
        let new = NewScan {
            facts,
            action: None,
            key: target.key,
            scanners: target.scanner.map(|s| vec![s]),
            approval: ApprovalSource::Inherit,
        };
        self.scan(new, delivery).await
    }

    /// A `/gatehouse` command from a pull request comment. Each comment is carried out at most
    /// once, whatever delivery id it arrives under.
    async fn command(
        &self,
        request: CommentCommand,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let repository_id = request.repository.id;
        let comment_id = request.comment_id;
        if self
            .memory
            .command_done(repository_id, comment_id)
            .await
            .map_err(redis_err("look up the comment"))?
        {
            tracing::info!(
                comment = comment_id,
                "comment command already carried out; replay ignored"
            );
            return Ok(Outcome::Skipped("command_replayed"));
        }
        let outcome = self.command_once(request, delivery).await?;
        self.memory
            .mark_command_done(repository_id, comment_id)
            .await
            .map_err(redis_err("remember the comment"))?;
        Ok(outcome)
    }

    async fn command_once(
        &self,
        request: CommentCommand,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let Some(github) = &self.github else {
            return Ok(Outcome::Skipped("command_without_github_access"));
        };
        let repository = &request.repository;
        let pr = github
            .pull_request(
                request.installation_id,
                &repository.owner,
                &repository.name,
                request.number,
            )
            .await?;
        if pr.state.as_deref() == Some("closed") {
            return self.closed_on_github(repository, request.number, &pr).await;
        }
        let facts = scan_facts(repository.clone(), request.installation_id, &pr);
        let full_name = repository.full_name();
        let Some(selection) = self.index().select(&pr_facts(&facts, &full_name, None)) else {
            return Ok(Outcome::Skipped("no_policy"));
        };
        if !self.may_command(github, &request, &selection).await? {
            return Ok(Outcome::Skipped("untrusted_commenter"));
        }
        let key = Key::Comment(request.comment_id);
        match request.command {
            Command::Rescan(scanner) => {
                if let Some(name) = &scanner
                    && selection.policy.spec.scanner(name).is_none()
                {
                    return Ok(Outcome::Skipped("unknown_scanner"));
                }
                let new = NewScan {
                    facts,
                    action: None,
                    key,
                    scanners: scanner.map(|s| vec![s]),
                    approval: ApprovalSource::Inherit,
                };
                self.scan(new, delivery).await
            }
            Command::OkToScan(sha) => {
                if !is_full_sha(&sha) {
                    tracing::info!(commenter = %request.commenter, sha = %sha, "ok-to-scan refused: it must name the full commit SHA");
                    return Ok(Outcome::Skipped("approval_not_full_sha"));
                }
                if sha != facts.pull_request.head_sha {
                    tracing::info!(commenter = %request.commenter, sha = %sha, head = %facts.pull_request.head_sha, "ok-to-scan refused: not the pull request's head");
                    return Ok(Outcome::Skipped("approval_of_old_commit"));
                }
                if !self.awaits_approval(&facts, &selection).await? {
                    return Ok(Outcome::Skipped("approval_not_needed"));
                }
                let approval = Approval {
                    approver: request.commenter.clone(),
                    sha,
                    comment_id: Some(request.comment_id),
                };
                let new = NewScan {
                    facts,
                    action: None,
                    key,
                    scanners: None,
                    approval: ApprovalSource::Given(approval),
                };
                self.scan(new, delivery).await
            }
        }
    }

    /// Whether the head commit waits for an approval: a live scan of it waits (judged by its own
    /// spec, which the operator judges too), or, with none, the policy would make a new one wait.
    async fn awaits_approval(
        &self,
        facts: &ScanFacts,
        selection: &Selection,
    ) -> Result<bool, ApplyError> {
        let existing = self
            .list(facts.repository.id, facts.pull_request.number)
            .await?;
        let index = self.index();
        let full_name = facts.repository.full_name();
        let live_of_head: Vec<&ScanRequest> = existing
            .iter()
            .filter(|r| {
                let scan = Scan::of(r);
                !scan.stopped
                    && !scan.finished
                    && lifecycle::lane(&r.spec) == Lane::PullRequest
                    && r.spec.pull_request.head_sha == facts.pull_request.head_sha
            })
            .collect();
        if live_of_head.is_empty() {
            return Ok(selection.verdict == Verdict::AwaitApproval);
        }
        Ok(live_of_head.iter().any(|r| {
            let spec_facts = ScanFacts {
                repository: r.spec.repository.clone(),
                installation_id: r.spec.installation_id,
                pull_request: r.spec.pull_request.clone(),
            };
            !approval_covers(&r.spec)
                && index
                    .select(&pr_facts(&spec_facts, &full_name, None))
                    .is_some_and(|s| s.verdict == Verdict::AwaitApproval)
        }))
    }

    /// Whether the commenter's permission on the repository is at least the policy's minimum.
    async fn may_command(
        &self,
        github: &GitHub,
        request: &CommentCommand,
        selection: &Selection,
    ) -> Result<bool, ApplyError> {
        let required = selection.policy.spec.commands.minimum_permission;
        let permission = github
            .permission(
                request.installation_id,
                &request.repository.owner,
                &request.repository.name,
                &request.commenter,
            )
            .await?;
        if permission < required {
            tracing::info!(commenter = %request.commenter, permission = ?permission, required = ?required, "command refused: the commenter's permission on the repository is too low");
            return Ok(false);
        }
        Ok(true)
    }

    /// The ScanRequests with these labels: in every namespace, or in each watched one when
    /// ingest is limited to namespaces (where it may not list cluster-wide).
    async fn list_labelled(
        &self,
        selector: &str,
        what: &'static str,
    ) -> Result<Vec<ScanRequest>, ApplyError> {
        let params = ListParams::default().labels(selector);
        let Some(namespaces) = self.policies.namespaces() else {
            let all: Api<ScanRequest> = Api::all(self.client.clone());
            return Ok(all.list(&params).await.map_err(kube_err(what))?.items);
        };
        let mut found = Vec::new();
        for namespace in namespaces {
            let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), namespace);
            found.extend(api.list(&params).await.map_err(kube_err(what))?.items);
        }
        Ok(found)
    }

    /// The ScanRequests of one pull request, in every namespace that holds the ScanPolicy each
    /// names: a ScanRequest elsewhere is not Gatehouse's to act on.
    async fn list(&self, repository_id: i64, number: i64) -> Result<Vec<ScanRequest>, ApplyError> {
        let list = self
            .list_labelled(
                &pull_request_selector(repository_id, number),
                "list ScanRequests of the pull request",
            )
            .await?;
        let policies = self.policies.state();
        Ok(list
            .into_iter()
            .filter(|r| {
                policies.iter().any(|p| {
                    p.metadata.namespace == r.metadata.namespace
                        && p.metadata.name.as_deref() == Some(r.spec.policy_ref.name.as_str())
                })
            })
            .collect())
    }

    /// Writes a stop request unless the ScanRequest has one or has finished: the first writer
    /// wins, and a stop request is never replaced or removed. The write is conditional on the
    /// resourceVersion read, so two writers cannot both believe theirs landed, and a scan that
    /// finished meanwhile keeps its result.
    async fn stop(
        &self,
        reference: &ScanRef,
        stop: &StopRequest,
        mut version: Option<String>,
    ) -> Result<(), ApplyError> {
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &reference.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        for _ in 0..5 {
            let current_version = if let Some(version) = version.take() {
                version
            } else {
                let Some(current) = api
                    .get_opt(&reference.name)
                    .await
                    .map_err(kube_err("read a ScanRequest to stop"))?
                else {
                    return Ok(());
                };
                let scan = Scan::of(&current);
                if scan.stopped || scan.finished {
                    return Ok(());
                }
                current.metadata.resource_version.unwrap_or_default()
            };
            let patch = json!({"metadata": {
                "resourceVersion": current_version,
                "annotations": {lifecycle::STOP: stop.to_annotation()},
            }});
            match api
                .patch(&reference.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(scanrequest = %reference, stop = %stop.to_annotation(), "stop requested");
                    return Ok(());
                }
                // Changed since read (or deleted): read again.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(kube_err("write a stop request")(e)),
            }
        }
        Err(ApplyError::Contended(reference.clone()))
    }

    async fn find_original(&self, target: &Rerun) -> Result<Option<ScanRequest>, ApplyError> {
        if let Some(id) = &target.original {
            let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &id.namespace);
            let found = api
                .get_opt(&id.scan_request)
                .await
                .map_err(kube_err("get the re-run's ScanRequest"))?;
            if let Some(found) = found
                && found.spec.repository.id == target.repository.id
                && found.spec.pull_request.head_sha == target.head_sha
            {
                return Ok(Some(found));
            }
            tracing::info!(scanrequest = %id.scan_request, "the re-run's ScanRequest is gone; looking for another of the commit");
        }
        let mut selector = format!(
            "{}={},{}={}",
            labels::REPOSITORY_ID,
            target.repository.id,
            labels::HEAD_SHA,
            target.head_sha.chars().take(40).collect::<String>()
        );
        if let Some(number) = target.number {
            use std::fmt::Write as _;
            let _ = write!(selector, ",{}={number}", labels::PULL_REQUEST);
        }
        let list = self
            .list_labelled(&selector, "list ScanRequests of the commit")
            .await?;
        Ok(list
            .into_iter()
            .filter(|r| r.spec.pull_request.head_sha == target.head_sha)
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            }))
    }
}

/// Whether a trigger time is older than ingest remembers pull requests: its close may be
/// forgotten, so it is not trusted to start a scan.
fn is_stale(updated_at: &str, remember: std::time::Duration) -> bool {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let horizon = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(
            i64::try_from(remember.as_secs()).unwrap_or(i64::MAX),
        ))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    updated_at < horizon.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().as_str()
}

fn pr_facts<'a>(
    facts: &'a ScanFacts,
    full_name: &'a str,
    action: Option<&'a str>,
) -> PullRequestFacts<'a> {
    PullRequestFacts {
        repository: full_name,
        base_ref: &facts.pull_request.base_ref,
        action,
        draft: facts.pull_request.draft,
        fork: facts.pull_request.fork,
        author: &facts.pull_request.author,
        author_association: &facts.pull_request.author_association,
    }
}
